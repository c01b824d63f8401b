//! Consensus: openraft's type configuration, the replicated state machine's content, the
//! durable redb store and the gRPC network. The rest of quorate reaches openraft only
//! through this module.

pub mod network;
pub mod rejoin;
pub mod state;
pub mod store;
pub mod types;

use std::time::Duration;

use openraft::{RaftMetrics, SnapshotPolicy};

use crate::config::RaftTiming;
use crate::consensus::types::{Member, NodeId};

/// True when a node has never held anything: no vote, no log entry, nothing applied.
/// Bootstrap forms a new cluster only when every member reports this.
pub fn is_pristine(metrics: &RaftMetrics<NodeId, Member>) -> bool {
    metrics.vote.leader_id().term == 0
        && metrics.last_log_index.is_none()
        && metrics.last_applied.is_none()
        && metrics.snapshot.is_none()
}

/// openraft's config for `cluster` with quorate's timing.
pub fn raft_config(cluster: &str, timing: &RaftTiming) -> Result<openraft::Config, String> {
    let config = openraft::Config {
        cluster_name: cluster.to_string(),
        heartbeat_interval: timing.heartbeat_interval_ms,
        election_timeout_min: timing.election_timeout_min_ms,
        election_timeout_max: timing.election_timeout_max_ms,
        // Snapshots are a few kilobytes; a generous timeout avoids retry loops on a slow disk.
        install_snapshot_timeout: 3000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(1000),
        max_in_snapshot_log_to_keep: 1000,
        ..Default::default()
    };
    config.validate().map_err(|e| e.to_string())
}

/// How long openraft waits before retrying a peer whose connection failed.
pub fn unreachable_backoff(timing: &RaftTiming) -> Duration {
    Duration::from_millis(timing.heartbeat_interval_ms * 2)
}

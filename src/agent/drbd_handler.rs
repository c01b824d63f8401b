//! DRBD's `fence-peer` and `unfence-peer` handlers, as `quorate-agent fence-peer` and
//! `quorate-agent unfence-peer`.
//!
//! When the owner's DRBD loses its peer it freezes I/O and runs `fence-peer`. quorate's handler
//! commits "peer outdated" through the cluster and only then lets DRBD resume (exit 4,
//! "peer outdated"), so a node that missed writes can never be promoted automatically. If it
//! cannot commit (no quorum) it fails: I/O stays frozen and the owner's lease runs out. After
//! a resync DRBD runs `unfence-peer`, which clears the mark.
//!
//! The mark is a compare-and-set ([`crate::core::state::Command::OutdatePeer`]): the handler
//! names the owner and epoch it believes it holds, and the state machine outdates the peer only
//! if that is still so where the entry lands in the log. The handler learns that epoch once,
//! when DRBD calls it, from its own member's committed state, and keeps it for the whole run.
//! That reading may be stale (this node may have been cut off while the leader moved the
//! group); the compare-and-set is what makes it safe: an old owner whose partition heals while
//! the handler retries finds its entry refused, exits [`FENCE_PEER_FAILED`], and DRBD keeps
//! its I/O frozen instead of resuming beside the new owner. Keeping the epoch for the run means
//! a run that began under one epoch never acts for a later one.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::consensus::types::Role;
use crate::rpc::admin::AdminClient;

/// `fence-peer` exit status: the peer's disk is now marked Outdated.
pub const FENCE_PEER_OUTDATED: u8 = 4;
/// Exit status for "could not fence": DRBD keeps I/O frozen.
pub const FENCE_PEER_FAILED: u8 = 1;

/// The other management node of this config, by name.
fn peer_name(config: &Config) -> Option<String> {
    config
        .members
        .iter()
        .find(|m| m.role == Role::Management && m.id != config.node_id)
        .map(|m| m.name.clone())
}

fn my_endpoint(config: &Config) -> String {
    config.me().map(|m| m.address.clone()).unwrap_or_default()
}

/// Runs the `fence-peer` handler; retries until `timeout` before giving up.
pub async fn fence_peer(config: &Config, resource: &str, timeout: Duration) -> ExitCode {
    let Some(peer) = peer_name(config) else {
        eprintln!("fence-peer: the config names no other management node");
        return ExitCode::from(FENCE_PEER_FAILED);
    };
    let me = config.me().map(|m| m.name.clone()).unwrap_or_default();
    let reason =
        format!("DRBD on {me} lost its peer (resource {resource}); fence-peer outdated {peer}");
    let started = Instant::now();
    let mut last_error = String::from("no attempt");
    // The epoch this node owns as it saw it when DRBD called; learnt once (see the module doc).
    let mut epoch = None;
    while started.elapsed() < timeout {
        match attempt_fence(config, &me, &peer, &reason, &mut epoch).await {
            Ok(()) => {
                tracing::warn!(%peer, resource, "fence-peer: peer marked outdated");
                println!("{peer} marked outdated");
                return ExitCode::from(FENCE_PEER_OUTDATED);
            }
            Err(Attempt::Final(why)) => {
                eprintln!("fence-peer: {why}; DRBD keeps I/O frozen");
                return ExitCode::from(FENCE_PEER_FAILED);
            }
            Err(Attempt::Retry(why)) => last_error = why,
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!(
        "fence-peer: could not mark {peer} outdated within {:?} ({last_error}); DRBD keeps I/O frozen and this node's lease will run out",
        timeout
    );
    ExitCode::from(FENCE_PEER_FAILED)
}

enum Attempt {
    Retry(String),
    Final(String),
}

async fn attempt_fence(
    config: &Config,
    me: &str,
    peer: &str,
    reason: &str,
    epoch: &mut Option<u64>,
) -> Result<(), Attempt> {
    let mut client = AdminClient::new(&my_endpoint(config), Duration::from_secs(2))
        .map_err(|e| Attempt::Final(e.to_string()))?;
    let epoch = match *epoch {
        Some(epoch) => epoch,
        None => {
            let status = client
                .status()
                .await
                .map_err(|e| Attempt::Retry(e.to_string()))?;
            if status.owner.as_deref() != Some(me) || status.released {
                return Err(Attempt::Final(format!(
                    "{me} does not own the group (owner: {}); it must not outdate {peer}",
                    status.owner.as_deref().unwrap_or("none")
                )));
            }
            *epoch = Some(status.epoch);
            status.epoch
        }
    };
    // Always committed, even when the peer already shows as outdated: only the state
    // machine's compare-and-set may say that this node still owns `epoch`.
    match client.fence_peer(me, epoch, peer, reason).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(refused)) => Err(Attempt::Final(format!(
            "the cluster refused to outdate {peer}: {refused}"
        ))),
        Err(e) => Err(Attempt::Retry(e.to_string())),
    }
}

/// Runs the `unfence-peer` handler: clears the peer's outdated mark after a resync.
pub async fn unfence_peer(config: &Config, resource: &str, timeout: Duration) -> ExitCode {
    let Some(peer) = peer_name(config) else {
        eprintln!("unfence-peer: the config names no other management node");
        return ExitCode::from(1);
    };
    let me = config.me().map(|m| m.name.clone()).unwrap_or_default();
    let reason = format!("DRBD on {me} finished resyncing {peer} (resource {resource})");
    let started = Instant::now();
    let mut last_error = String::from("no attempt");
    while started.elapsed() < timeout {
        let result = match AdminClient::new(&my_endpoint(config), Duration::from_secs(2)) {
            Ok(mut client) => client.set_outdated(&peer, false, &reason).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(_) => {
                println!("{peer} is no longer marked outdated");
                return ExitCode::SUCCESS;
            }
            Err(e) => last_error = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!(
        "unfence-peer: could not clear {peer}'s outdated mark within {timeout:?}: {last_error}"
    );
    ExitCode::from(1)
}

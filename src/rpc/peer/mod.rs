//! The peer service: openraft's RPCs between arbiters, lease reports, forwarded proposals,
//! the lease-horizon question and the bootstrap probe.
//!
//! The service is split by direction so that dependencies run one way:
//! - [`client`] calls peers. The Raft network (`consensus::network`) and the arbiter use it;
//!   it depends on nothing above `consensus`. Test fault injection ([`client::Faults`]) lives
//!   there, since the client is what applies it.
//! - [`server`] answers peers. It reaches the arbiter only through [`server::PeerHandler`],
//!   a trait the arbiter implements, so it never names the arbiter's types.
//!
//! This file holds what both directions share: who this node is ([`Identity`]) and how an
//! envelope is stamped and checked, the gate a pristine node applies to incoming log traffic
//! ([`AppendGate`]), and the answer to a lease report ([`ReportError`]).

pub mod client;
pub mod server;

use std::collections::BTreeSet;
use std::time::Duration;

use tonic::Status;

use super::pb;
use crate::consensus::types::NodeId;

/// How long a forwarded proposal may take to commit on the leader.
pub const PROPOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Who this node is, for checking incoming envelopes and stamping outgoing ones.
#[derive(Clone, Debug)]
pub struct Identity {
    /// The cluster name from the config.
    pub cluster: String,
    /// This node's id.
    pub node_id: NodeId,
    /// Every member id allowed to talk to this node.
    pub members: BTreeSet<NodeId>,
}

impl Identity {
    /// The envelope of a message from this node to `to`.
    fn envelope_to(&self, to: NodeId) -> pb::Envelope {
        pb::Envelope {
            cluster: self.cluster.clone(),
            from: self.node_id,
            to,
        }
    }

    /// Accepts an envelope only when it names this cluster, this node and a member sender;
    /// returns the sender.
    fn check(&self, envelope: Option<&pb::Envelope>) -> Result<NodeId, Status> {
        let Some(envelope) = envelope else {
            return Err(Status::invalid_argument("peer request without an envelope"));
        };
        if envelope.cluster != self.cluster {
            return Err(Status::failed_precondition(format!(
                "request for cluster {:?} reached a member of cluster {:?}",
                envelope.cluster, self.cluster
            )));
        }
        if envelope.to != self.node_id {
            return Err(Status::failed_precondition(format!(
                "request addressed to node {} reached node {}; check the member addresses",
                envelope.to, self.node_id
            )));
        }
        if !self.members.contains(&envelope.from) {
            return Err(Status::permission_denied(format!(
                "node {} is not a member of cluster {:?}",
                envelope.from, self.cluster
            )));
        }
        Ok(envelope.from)
    }
}

/// Which leaders a pristine node may take the log from.
///
/// openraft 0.9 panics on a leader that remembers entries a follower acknowledged when that
/// follower answers as if it had none (its store was wiped). A node whose store is empty
/// therefore accepts appends and snapshots only from senders that said, in a bootstrap probe,
/// that they remember nothing of it. Once the node holds anything the gate is moot.
///
/// The arbiter's bootstrap sets it; the peer server applies it.
#[derive(Debug, Default)]
pub struct AppendGate {
    cleared: std::sync::Mutex<BTreeSet<NodeId>>,
}

impl AppendGate {
    /// Replaces the set of senders a pristine node may take the log from.
    pub fn set_cleared(&self, senders: BTreeSet<NodeId>) {
        if let Ok(mut cleared) = self.cleared.lock() {
            *cleared = senders;
        }
    }

    /// True when a pristine node may take the log from `sender`.
    fn allows(&self, sender: NodeId) -> bool {
        self.cleared
            .lock()
            .map(|c| c.contains(&sender))
            .unwrap_or(false)
    }
}

/// Why a report did not renew a lease.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    /// This node could not decide: it does not lead, or could not confirm its quorum. The
    /// asker keeps its lease until it runs out and asks again.
    #[error("{0}")]
    Undecided(String),
    /// The leader confirmed its quorum and the asker is not the owner under that epoch: the
    /// asker must stop trusting its lease at once.
    #[error("{0}")]
    Refused(String),
}

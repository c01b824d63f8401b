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
use std::sync::Arc;
use std::time::Duration;

use tonic::Status;

use super::pb;
use crate::config::{value_or_unset, TimingFingerprint};
use crate::consensus::types::NodeId;
use crate::status::TimingMismatches;

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
    /// This node's `[raft]` and `[lease]` timing: stamped on every envelope, and required of
    /// every incoming one.
    pub timing: TimingFingerprint,
    /// Where refused senders' timing is noted for `status` (the node's notes share it).
    pub mismatches: Arc<TimingMismatches>,
}

impl Identity {
    /// The envelope of a message from this node to `to`.
    fn envelope_to(&self, to: NodeId) -> pb::Envelope {
        pb::Envelope {
            cluster: self.cluster.clone(),
            from: self.node_id,
            to,
            timing: self.timing.as_str().to_string(),
        }
    }

    /// Accepts an envelope only when it names this cluster, this node and a member sender
    /// that runs this node's timing; returns the sender.
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
        self.check_timing(envelope.from, &envelope.timing)?;
        Ok(envelope.from)
    }

    /// Refuses a member whose `[raft]`/`[lease]` timing differs from this node's, and notes
    /// the difference for `status` (or clears the note once the sender matches).
    ///
    /// Why this is a safety check and not a courtesy: the lease arithmetic of
    /// docs/PROTOCOL.md ("The lease", "Timing") compares durations measured on different
    /// members. The leader grants for its `lease.duration_ms`, the owner trusts the lease for
    /// its own, and a new leader waits out old leases with its own duration, drift and fence
    /// margin; the Raft election timeouts bound how soon a new leader can exist. If the owner
    /// trusted a longer lease than the leader waits out, the group could move while the old
    /// owner still runs it. Refusing every request of a differing member before openraft or
    /// the ownership code sees it keeps it out of the quorum: it can neither vote, append,
    /// renew a lease nor propose, so every decision is taken by members with one timing.
    ///
    /// An envelope without timing comes from a member older than this check. Its timing is
    /// unknown, so it is refused like a differing one (the sender must be upgraded): accepting
    /// it would let a member whose lease arithmetic nobody can check vote and renew. During a
    /// rolling upgrade older members do not check, so an upgraded member can still lead them,
    /// but an older member's own requests (votes, reports) to an upgraded one are refused;
    /// once two members are upgraded they form the quorum on their own.
    fn check_timing(&self, from: NodeId, timing: &str) -> Result<(), Status> {
        const RULE: &str = "every member must run the same [lease] and [raft] timing";
        if timing.is_empty() {
            let note = "states no timing (an older quorate): upgrade it".to_string();
            if self.mismatches.record(from, Some(note)) {
                tracing::warn!(sender = from, "refusing a member that states no timing");
            }
            return Err(Status::failed_precondition(format!(
                "node {from} sent no [raft]/[lease] timing in its envelope: it runs an older \
                 quorate and must be upgraded; {RULE}"
            )));
        }
        let differences = self.timing.compare(timing);
        if differences.is_empty() {
            if self.mismatches.record(from, None) {
                tracing::info!(sender = from, "member's timing matches again");
            }
            return Ok(());
        }
        let note = differences
            .iter()
            .map(|d| d.describe())
            .collect::<Vec<_>>()
            .join(", ");
        if self.mismatches.record(from, Some(note.clone())) {
            tracing::warn!(
                sender = from,
                "refusing a member whose timing differs: {note}"
            );
        }
        let named: Vec<String> = differences
            .iter()
            .map(|d| {
                format!(
                    "{}: node {from} sent {}, this node runs {}",
                    d.setting,
                    value_or_unset(&d.theirs),
                    value_or_unset(&d.ours)
                )
            })
            .collect();
        Err(Status::failed_precondition(format!(
            "{}; {RULE}",
            named.join("; ")
        )))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LeaseTiming, RaftTiming};

    fn identity(lease: LeaseTiming) -> Identity {
        Identity {
            cluster: "prod".into(),
            node_id: 1,
            members: [1, 2, 3].into_iter().collect(),
            timing: TimingFingerprint::of(&RaftTiming::default(), &lease),
            mismatches: Arc::new(TimingMismatches::default()),
        }
    }

    fn long_lease() -> LeaseTiming {
        LeaseTiming {
            duration_ms: 3000,
            ..LeaseTiming::default()
        }
    }

    #[test]
    fn a_member_with_the_same_timing_is_accepted() {
        let here = identity(LeaseTiming::default());
        let there = Identity {
            node_id: 2,
            ..identity(LeaseTiming::default())
        };
        assert_eq!(here.check(Some(&there.envelope_to(1))).unwrap(), 2);
        assert_eq!(here.mismatches.of(2), None);
    }

    #[test]
    fn a_member_with_another_lease_duration_is_refused_and_named() {
        let here = identity(LeaseTiming::default());
        let there = Identity {
            node_id: 2,
            ..identity(long_lease())
        };
        let refused = here.check(Some(&there.envelope_to(1))).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
        assert_eq!(
            refused.message(),
            "lease.duration_ms: node 2 sent 3000, this node runs 1500; every member must run \
             the same [lease] and [raft] timing"
        );
        assert_eq!(
            here.mismatches.of(2).as_deref(),
            Some("lease.duration_ms 3000 there, 1500 here")
        );
        // Once the sender runs the same timing again, the note goes away.
        let fixed = Identity {
            node_id: 2,
            ..identity(LeaseTiming::default())
        };
        assert_eq!(here.check(Some(&fixed.envelope_to(1))).unwrap(), 2);
        assert_eq!(here.mismatches.of(2), None);
    }

    #[test]
    fn an_envelope_without_timing_is_refused_as_from_an_older_member() {
        let here = identity(LeaseTiming::default());
        let envelope = pb::Envelope {
            cluster: "prod".into(),
            from: 3,
            to: 1,
            timing: String::new(),
        };
        let refused = here.check(Some(&envelope)).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
        assert!(
            refused.message().contains("must be upgraded"),
            "{}",
            refused.message()
        );
        assert!(here.mismatches.of(3).is_some());
    }
}

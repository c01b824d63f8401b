//! What `quoratectl status` shows: quorate's own status types, independent of the wire format.
//! The admin service fills them in; the CLI renders them as a table or as JSON.

use serde::{Deserialize, Serialize};

/// The cluster as one member sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The cluster's name.
    pub cluster: String,
    /// The Raft term the answering member is in.
    pub term: u64,
    /// The leader's member name, when one is known.
    pub leader: Option<String>,
    /// The leader's id, when one is known.
    pub leader_id: Option<u64>,
    /// The name of the member that answered.
    pub answered_by: String,
    /// Why the answering member waits, if it does (bootstrap, lost data).
    pub waiting: Option<String>,
    /// The owner's member name, when a node owns the group.
    pub owner: Option<String>,
    /// The owner epoch (the fencing token); 0 when no node ever owned the group.
    pub epoch: u64,
    /// True when the owner released its epoch in order and a handoff is due.
    pub released: bool,
    /// What is left of the owner's lease, by the owner's own clock.
    pub lease_remaining_ms: Option<u64>,
    /// Maintenance mode: no automatic actions.
    pub paused: bool,
    /// A pending planned switchover: the target's name.
    pub switchover_to: Option<String>,
    /// The leader's latest ownership decision, as a sentence.
    pub leader_says: Option<String>,
    /// Every member, in id order.
    pub members: Vec<MemberStatus>,
}

/// One member as seen by the node that answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    /// Member id.
    pub id: u64,
    /// Member name.
    pub name: String,
    /// `management` or `witness`.
    pub role: String,
    /// gRPC address.
    pub address: String,
    /// Raft state the member reports (`leader`, `follower`, `candidate`, `learner`,
    /// `shutdown`), or `unknown` when it did not answer.
    pub state: String,
    /// Whether the answering member reached it just now.
    pub reachable: bool,
    /// The member's Raft term (0 when it did not answer).
    pub term: u64,
    /// Index of its last log entry.
    pub last_log_index: Option<u64>,
    /// Index of the last entry it applied.
    pub applied_index: Option<u64>,
    /// An operator set it to standby: it never takes ownership.
    pub standby: bool,
    /// Its data may be stale: it is never promoted automatically.
    pub outdated: bool,
    /// Failed attempts to run the group there since the last reset.
    pub fail_count: u32,
    /// What its agent is doing, as a sentence (management nodes that answered).
    pub doing: Option<String>,
    /// Its resources in start order with their states (name, state).
    pub resources: Vec<(String, String)>,
    /// What is left of the lease it holds, by its own clock.
    pub lease_remaining_ms: Option<u64>,
    /// How its `[raft]`/`[lease]` timing differs from the answering member's, when the
    /// answering member refused its requests for that (for example
    /// `lease.duration_ms 3000 there, 1500 here`).
    #[serde(default)]
    pub timing_mismatch: Option<String>,
}

/// One line of the ownership and admin history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryLine {
    /// Log index of the change.
    pub index: u64,
    /// The proposer's wall-clock time, milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// What happened.
    pub what: String,
    /// Why.
    pub reason: String,
    /// Who asked.
    pub requested_by: String,
}

/// What this node's own loops note down for the admin service: facts openraft does not keep.
#[derive(Debug, Default)]
pub struct NodeNotes {
    /// Why this node is waiting, if it is (set by bootstrap).
    pub waiting: std::sync::Mutex<Option<String>>,
    /// The agent's latest view of its own group, on a management node.
    pub agent: std::sync::Mutex<Option<AgentNote>>,
    /// Senders whose timing this node's peer server refused (shared with that server).
    pub timing: std::sync::Arc<TimingMismatches>,
}

/// The last timing mismatch the peer server saw from each sender, for `status`.
///
/// A sender's entry is set when its request is refused for its timing and cleared when a
/// later request of its matches, so `status` shows only members that differ now.
#[derive(Debug, Default)]
pub struct TimingMismatches {
    by_sender: std::sync::Mutex<std::collections::BTreeMap<u64, String>>,
}

impl TimingMismatches {
    /// Records how `sender`'s timing differs (`None`: it matches); returns true when that
    /// changed what was recorded.
    pub fn record(&self, sender: u64, mismatch: Option<String>) -> bool {
        let Ok(mut by_sender) = self.by_sender.lock() else {
            return false;
        };
        let previous = match mismatch {
            Some(text) => by_sender
                .insert(sender, text.clone())
                .filter(|p| *p == text),
            None => {
                if by_sender.remove(&sender).is_none() {
                    return false;
                }
                None
            }
        };
        previous.is_none()
    }

    /// How `sender`'s timing differs, if its last request was refused for that.
    pub fn of(&self, sender: u64) -> Option<String> {
        self.by_sender
            .lock()
            .ok()
            .and_then(|m| m.get(&sender).cloned())
    }
}

impl NodeNotes {
    /// Sets or clears the waiting reason; returns true when it changed.
    pub fn set_waiting(&self, reason: Option<String>) -> bool {
        match self.waiting.lock() {
            Ok(mut current) if *current != reason => {
                *current = reason;
                true
            }
            _ => false,
        }
    }

    /// The waiting reason, if any.
    pub fn waiting(&self) -> Option<String> {
        self.waiting.lock().ok().and_then(|w| w.clone())
    }

    /// Replaces the agent's note.
    pub fn set_agent(&self, note: AgentNote) {
        if let Ok(mut agent) = self.agent.lock() {
            *agent = Some(note);
        }
    }

    /// The agent's note, if this node runs an agent.
    pub fn agent(&self) -> Option<AgentNote> {
        self.agent.lock().ok().and_then(|a| a.clone())
    }
}

/// A management node's agent, as it last saw itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentNote {
    /// The agent's latest decision, as a sentence.
    pub reason: String,
    /// The epoch of the lease this node holds, if it holds one.
    pub lease_epoch: Option<u64>,
    /// When that lease ends, on this process's clock (milliseconds).
    pub lease_until: Option<u64>,
    /// Each resource of the group in start order, with its state as last monitored.
    pub resources: Vec<(String, String)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timing_mismatch_is_kept_per_sender_until_it_matches_again() {
        let notes = TimingMismatches::default();
        assert!(notes.record(3, Some("lease.duration_ms 3000 there, 1500 here".into())));
        // The same mismatch again changes nothing (the caller logs only changes).
        assert!(!notes.record(3, Some("lease.duration_ms 3000 there, 1500 here".into())));
        assert!(notes.record(3, Some("lease.duration_ms 2000 there, 1500 here".into())));
        assert_eq!(
            notes.of(3).as_deref(),
            Some("lease.duration_ms 2000 there, 1500 here")
        );
        assert_eq!(notes.of(2), None);
        assert!(notes.record(3, None));
        assert!(!notes.record(3, None));
        assert_eq!(notes.of(3), None);
    }
}

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
}

/// What this node's own loops note down for the admin service: facts openraft does not keep.
#[derive(Debug, Default)]
pub struct NodeNotes {
    /// Why this node is waiting, if it is (set by bootstrap).
    pub waiting: std::sync::Mutex<Option<String>>,
    /// The agent's latest view of its own group, on a management node.
    pub agent: std::sync::Mutex<Option<AgentNote>>,
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

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

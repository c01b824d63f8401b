//! The openraft type configuration: what a log entry carries and what a member is.
//!
//! Everything openraft is generic over is fixed here, so the rest of quorate names
//! `TypeConfig` and never repeats openraft's generic parameters.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::core::state::{Request, Response};

/// The core's node id and role, which openraft and the membership use as they are.
pub use crate::core::view::{NodeId, Role};

/// A member as recorded in the Raft membership: its name, peer address and role.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Human name, unique in the cluster (`node1`, `witness`).
    pub name: String,
    /// `host:port` of its gRPC endpoint (peer and admin services).
    pub addr: String,
    /// Management node or witness.
    pub role: Role,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}, {})", self.name, self.role, self.addr)
    }
}

openraft::declare_raft_types!(
    /// quorate's openraft type configuration.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = Member,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The Raft handle quorate runs.
pub type Raft = openraft::Raft<TypeConfig>;
/// A log id in quorate's configuration.
pub type LogId = openraft::LogId<NodeId>;
/// A stored membership in quorate's configuration.
pub type StoredMembership = openraft::StoredMembership<NodeId, Member>;

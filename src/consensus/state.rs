//! The replicated state machine's content as the Raft log and snapshots carry it.
//!
//! The content itself (requests, commands, the state and its deterministic `apply`) is pure
//! and lives in [`crate::core::state`], where the decision core's tests run it; this module
//! keeps the path the store, the agents and the RPC services name.

pub use crate::core::state::{
    ClusterState, Command, HistoryRecord, NodeMarks, Request, Response, HISTORY_LIMIT,
};

//! Helpers shared by the store tests: identities, entries, and opening a store in a tempdir.

use std::path::Path;

use openraft::{CommittedLeaderId, EntryPayload, LogId};
use quorate::consensus::state::{Command, Request};
use quorate::consensus::store::{self, LogStore, StateMachineStore, StoreError, StoreIdentity};
use quorate::consensus::types::{NodeId, TypeConfig};

/// The identity of node `node_id` in the test cluster.
pub fn identity(node_id: NodeId) -> StoreIdentity {
    StoreIdentity {
        cluster: "test-cluster".into(),
        node_id,
    }
}

/// A log id at `index` written by node 1 in `term`.
pub fn log_id(term: u64, index: u64) -> LogId<NodeId> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

/// A normal entry whose reason names its index, so a reader can check it is the right one.
pub fn entry(term: u64, index: u64) -> openraft::Entry<TypeConfig> {
    openraft::Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(request(index)),
    }
}

/// The request carried by [`entry`] at `index`.
pub fn request(index: u64) -> Request {
    Request {
        command: Command::Noop,
        requested_by: "store-test".into(),
        reason: format!("entry {index}"),
        at_unix_ms: 1_700_000_000_000 + index,
    }
}

/// Opens the store in `dir` as node 1.
pub fn open(dir: &Path) -> Result<(LogStore, StateMachineStore), StoreError> {
    store::open(dir, &identity(1))
}

/// A multi-threaded tokio runtime for plain `#[test]`s.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

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

/// Writes, in `dir`, the store an older quorate kept in sled (format 1) for node `node_id`:
/// a vote in term 2, entries 1..=5 of term 2, the commit index at 5 and an applied state at
/// 5, and the marker file (only with `marker`). The values are the JSON the sled store wrote.
pub fn write_sled_store(dir: &Path, node_id: NodeId, marker: bool) {
    use quorate::consensus::store::AppliedState;
    let db = sled::open(dir).expect("create a sled database");
    let meta = db.open_tree("meta").expect("meta tree");
    meta.insert("format_version", b"1".to_vec())
        .expect("insert");
    meta.insert("identity", json(&identity(node_id)))
        .expect("insert");
    meta.insert("vote", json(&openraft::Vote::new_committed(2, 1)))
        .expect("insert");
    meta.insert("committed", json(&log_id(2, 5)))
        .expect("insert");
    let log = db.open_tree("log").expect("log tree");
    for index in 1..=5u64 {
        log.insert(index.to_be_bytes(), json(&entry(2, index)))
            .expect("insert");
    }
    let applied = AppliedState {
        last_applied: Some(log_id(2, 5)),
        ..AppliedState::default()
    };
    db.open_tree("machine")
        .expect("machine tree")
        .insert("applied", json(&applied))
        .expect("insert");
    db.flush().expect("flush sled");
    drop(db);
    if marker {
        let marker =
            format!(r#"{{"format_version":1,"cluster":"test-cluster","node_id":{node_id}}}"#);
        std::fs::write(dir.join(store::MARKER_FILE), marker).expect("write the marker");
    }
}

/// `value` as JSON bytes, the way the sled store encoded its values.
fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("encode JSON")
}

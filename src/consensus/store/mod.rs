//! The durable Raft store: votes, the Raft log and the applied state machine, kept in one
//! sled 0.34.7 database in the node's data directory.
//!
//! Raft's safety rests on a member never forgetting what it acknowledged: a vote it granted,
//! a log entry it told the leader it holds, the commit index it reported. If a node forgets
//! after a crash, two leaders can be elected in one term or a committed entry can vanish,
//! and quorate's promise that no two nodes ever hold the resource group falls with it.
//!
//! # Durability design
//!
//! Every write that openraft treats as durable — `save_vote`, `append` (before its
//! `LogFlushed` callback fires), `truncate`, `purge`, `save_committed`, and snapshot build and
//! install — runs the same way, one at a time under one writer lock, on a blocking thread:
//!
//! 1. write the change into sled (one atomic batch or transaction);
//! 2. `sled::Db::flush`, which writes sled's buffers with `sync_file_range`;
//! 3. fsync the sled files and directories that changed (see `disk.rs` for why step 2 is not
//!    enough against power loss, and which files that is);
//! 4. only then call the callback or return.
//!
//! Applying committed entries to the state machine is written without the flush: the log and
//! the commit index are already durable, so after a crash openraft re-applies from the log.
//! Every later durable write flushes those buffered writes too, and sled recovers a prefix of
//! its own log, so the state machine never runs ahead of a durable snapshot or purge.
//!
//! Once any step of a durable write fails, the store refuses every later write: after a failed
//! fsync the kernel may have dropped dirty pages, so retrying could acknowledge data that is
//! not on disk. The node must be restarted, and recovery reads what really is on disk.
//!
//! # Layout
//!
//! ```text
//! <data_dir>/quorate-store.json   marker: format version and identity, written once at creation
//! <data_dir>/{db,conf,blobs/,snap.*}   sled's own files
//! sled tree `meta`:    format_version, identity, vote, committed, last_purged  (JSON values)
//! sled tree `log`:     u64 big-endian log index -> JSON openraft entry
//! sled tree `machine`: applied, snapshot_meta, snapshot_data, snapshot_seq
//! ```
//!
//! The marker file exists so that a damaged sled database can never pass for a new one: if the
//! marker says the store was initialized and sled comes up empty, [`open`] refuses to start.
//!
//! # Refusing to start
//!
//! [`open`] checks everything before handing the store to openraft: the directory is readable
//! and holds only a quorate store, the format is not from a newer quorate, the identity
//! (cluster name and node id) matches this node's config, and every stored value decodes
//! (each log entry too, and the log has no holes). Any problem is a [`StoreError`] naming the
//! file or key; the store never quietly starts empty when data was there.

mod disk;
mod log;
mod open;
mod state_machine;

pub use log::{Entry, LogReader, LogStore};
pub use open::open;
pub use state_machine::{AppliedState, SnapshotBuilder, StateMachineStore};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageError, StorageIOError};

use crate::consensus::types::{LogId, NodeId};
use disk::DiskSync;

/// The on-disk format this quorate writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Name of the marker file beside sled's files.
pub const MARKER_FILE: &str = "quorate-store.json";
const MARKER_TMP: &str = "quorate-store.json.tmp";

const META_TREE: &str = "meta";
const LOG_TREE: &str = "log";
const MACHINE_TREE: &str = "machine";
const OUR_TREES: [&str; 3] = [META_TREE, LOG_TREE, MACHINE_TREE];

const KEY_FORMAT: &str = "format_version";
const KEY_IDENTITY: &str = "identity";
const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_LAST_PURGED: &str = "last_purged";

/// Which cluster and which member a store belongs to; checked at every open so that a config
/// pointing at another node's data directory cannot start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreIdentity {
    /// The cluster's name, as in the config.
    pub cluster: String,
    /// This member's node id, as in the config.
    pub node_id: NodeId,
}

impl fmt::Display for StoreIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cluster `{}`, node {}", self.cluster, self.node_id)
    }
}

/// Why the store cannot open, read or write, and what the operator should do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory is missing and could not be created.
    #[error("cannot create the Raft store directory {dir}: {source}; check data_dir and the permissions of its parent")]
    CreateDir {
        /// The data directory.
        dir: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The data directory or a file in it cannot be read or written.
    #[error("cannot access {path} of the Raft store: {source}; fix its permissions or ownership (quorate needs to read and write it)")]
    Unreadable {
        /// The directory or file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The data directory path names something that is not a directory.
    #[error(
        "the Raft store path {path} exists but is not a directory; point data_dir at a directory"
    )]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// The data directory holds something other than a quorate store.
    #[error("{dir} is not a quorate Raft store: {why}; point data_dir at an empty directory or at this node's store")]
    NotAStore {
        /// The data directory.
        dir: PathBuf,
        /// What was found there.
        why: String,
    },
    /// sled refused to open its database.
    #[error("cannot open the sled database in {dir}: {source}; if another quorate runs on this directory stop it, otherwise the store is damaged: restore it from a backup or rebuild this member")]
    Sled {
        /// The data directory.
        dir: PathBuf,
        /// sled's error.
        source: sled::Error,
    },
    /// A stored value or file does not decode or contradicts the rest of the store.
    #[error("the Raft store in {dir} is damaged at {key}: {problem}; do not delete it blindly: restore it from a backup or remove this member and re-add it with an empty store")]
    Corrupt {
        /// The data directory.
        dir: PathBuf,
        /// The file, or `tree/key`, that is damaged.
        key: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The store was written by a newer quorate.
    #[error("the Raft store in {dir} has format version {found}, but this quorate only understands up to {supported}; run the newer quorate that wrote it")]
    FutureFormat {
        /// The data directory.
        dir: PathBuf,
        /// The version found on disk.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// The store belongs to another cluster or another node.
    #[error("the Raft store in {dir} belongs to {stored}, but this node is {expected}; check data_dir and node_id in this node's config")]
    IdentityMismatch {
        /// The data directory.
        dir: PathBuf,
        /// The identity recorded in the store.
        stored: StoreIdentity,
        /// The identity from this node's config.
        expected: StoreIdentity,
    },
    /// An I/O operation on the store failed.
    #[error("I/O error while {action} in the Raft store {dir}: {source}; check the disk and restart the node")]
    Io {
        /// The data directory.
        dir: PathBuf,
        /// What the store was doing.
        action: String,
        /// The error.
        source: io::Error,
    },
    /// sled failed while reading or writing.
    #[error("sled failed while {action} in the Raft store {dir}: {source}; check the disk and restart the node")]
    SledIo {
        /// The data directory.
        dir: PathBuf,
        /// What the store was doing.
        action: String,
        /// sled's error.
        source: sled::Error,
    },
    /// An earlier durable write failed; the store no longer accepts writes.
    #[error("the Raft store in {dir} refuses writes since an earlier flush failed ({first}); restart the node so it recovers from what is on disk")]
    Broken {
        /// The data directory.
        dir: PathBuf,
        /// The first failure.
        first: String,
    },
    /// A value could not be encoded.
    #[error("cannot encode {what}: {source}; this is a bug in quorate")]
    Encode {
        /// What was being encoded.
        what: String,
        /// serde_json's error.
        source: serde_json::Error,
    },
    /// A snapshot received from the leader is not one quorate can install.
    #[error("cannot install snapshot {snapshot_id}: {problem}; the leader runs an incompatible quorate or sent damaged data")]
    BadSnapshot {
        /// The snapshot's id.
        snapshot_id: String,
        /// What is wrong.
        problem: String,
    },
    /// The blocking writer task panicked or was cancelled.
    #[error("the Raft store's writer task failed: {0}; restart the node")]
    WriterFailed(String),
}

impl StoreError {
    /// Wraps this error as openraft's storage error for `subject` and `verb`.
    pub fn into_storage(
        self,
        subject: ErrorSubject<NodeId>,
        verb: ErrorVerb,
    ) -> StorageError<NodeId> {
        StorageIOError::new(subject, verb, AnyError::new(&self)).into()
    }
}

/// The sled database and the state every handle on it shares.
pub(crate) struct Shared {
    dir: PathBuf,
    db: sled::Db,
    meta: sled::Tree,
    log: sled::Tree,
    machine: sled::Tree,
    /// The writer lock: every write to sled happens under it, durable ones include the fsync.
    writer: Mutex<DiskSync>,
}

impl Shared {
    /// Runs `write` and then flushes and fsyncs, under the writer lock, on a blocking thread.
    /// Returns only once everything `write` did (and every earlier write) is on disk.
    pub(crate) async fn write_durably<T, F>(self: &Arc<Self>, write: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Shared) -> Result<T, StoreError> + Send + 'static,
    {
        self.write_with(true, write).await
    }

    /// Runs `write` under the writer lock without waiting for the disk.
    pub(crate) async fn write_buffered<T, F>(self: &Arc<Self>, write: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Shared) -> Result<T, StoreError> + Send + 'static,
    {
        self.write_with(false, write).await
    }

    async fn write_with<T, F>(self: &Arc<Self>, durable: bool, write: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Shared) -> Result<T, StoreError> + Send + 'static,
    {
        let shared = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let mut disk = shared.writer.lock().map_err(|_| {
                StoreError::WriterFailed("a writer panicked while holding the lock".into())
            })?;
            disk.check_usable()?;
            let out = write(&shared)?;
            if durable {
                disk.sync(&shared.db)?;
            }
            Ok(out)
        })
        .await
        .map_err(|e| StoreError::WriterFailed(e.to_string()))?
    }

    /// A sled error while `action`, naming this store.
    pub(crate) fn sled_err(
        &self,
        action: impl Into<String>,
    ) -> impl FnOnce(sled::Error) -> StoreError + '_ {
        let action = action.into();
        move |source| StoreError::SledIo {
            dir: self.dir.clone(),
            action,
            source,
        }
    }

    /// Decodes the JSON value stored at `tree/key`, naming it if it does not decode.
    pub(crate) fn decode<T: DeserializeOwned>(
        &self,
        tree: &str,
        key: &str,
        bytes: &[u8],
    ) -> Result<T, StoreError> {
        decode(&self.dir, tree, key, bytes)
    }

    /// Reads and decodes `tree/key`, or `None` when absent.
    pub(crate) fn get_json<T: DeserializeOwned>(
        &self,
        tree: &sled::Tree,
        tree_name: &str,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        match tree
            .get(key)
            .map_err(self.sled_err(format!("reading {tree_name}/{key}")))?
        {
            None => Ok(None),
            Some(bytes) => self.decode(tree_name, key, &bytes).map(Some),
        }
    }

    /// The greatest purged log id, if any.
    pub(crate) fn last_purged(&self) -> Result<Option<LogId>, StoreError> {
        self.get_json(&self.meta, META_TREE, KEY_LAST_PURGED)
    }
}

/// Encodes `value` as JSON.
pub(crate) fn encode<T: Serialize>(what: &str, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|source| StoreError::Encode {
        what: what.to_string(),
        source,
    })
}

fn decode<T: DeserializeOwned>(
    dir: &Path,
    tree: &str,
    key: &str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        dir: dir.to_path_buf(),
        key: format!("{tree}/{key}"),
        problem: format!("the value does not decode: {e}"),
    })
}

/// The sled key of log index `index`: big-endian, so sled's byte order is index order.
pub(crate) fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// The log index of a sled key, or `None` if the key is not 8 bytes long.
pub(crate) fn key_index(key: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(key).ok().map(u64::from_be_bytes)
}

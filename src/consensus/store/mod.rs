//! The durable Raft store: votes, the Raft log and the applied state machine, kept in one
//! redb database file in the node's data directory.
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
//! 1. open one redb write transaction and make the whole change in it;
//! 2. commit it with `Durability::Immediate` and redb's two-phase commit: redb writes the new
//!    pages and the new commit slot, calls `fdatasync`, then flips the header's primary bit to
//!    the new slot (recording that it was a two-phase commit) and calls `fdatasync` again,
//!    all before `commit` returns;
//! 3. only then call the callback or return.
//!
//! So when `save_vote` returns or an append's callback fires, the change is on the device,
//! cache flushed, together with the file size and block mapping it needs (`fdatasync` commits
//! those). The file's name in the directory is made durable once, when the store is created
//! (`disk.rs`); later writes never rename or create files.
//!
//! Why two-phase. redb writes every page with a checksum and keeps two commit slots. After a
//! one-phase commit (redb's default) the primary bit may point at a slot whose pages never
//! reached the disk, so on open redb checks the primary's checksums and, if they fail, quietly
//! falls back to the other slot: the commit before. That fallback cannot tell a torn commit
//! from an acknowledged one whose pages were damaged later (a bad sector, a lying cache, a
//! stray write), and for a Raft member rolling back an acknowledged commit is forgetting: a
//! node that opened at the commit before `save_vote(term 5)` could grant a second vote in term
//! 5, and two leaders could be elected. After a two-phase commit the primary slot was durable
//! before it became the primary, so redb knows a primary that fails its checksums is damaged,
//! not torn, and refuses to open it (`Corrupted`: "Primary is corrupted despite 2-phase
//! commit"). The store then stops with [`StoreError::Database`], and the member must be
//! restored or rebuilt, which Raft tolerates, instead of running on with a forgotten vote,
//! which it does not. The integrity check at every open (`open.rs`) goes through the same
//! refusal. The price is a second `fdatasync` per durable write (see the README's measured
//! figures).
//!
//! Applying committed entries to the state machine is committed with `Durability::None`: the
//! log and the commit index are already durable, so after a crash openraft re-applies from the
//! log. redb makes such a commit durable with the next `Immediate` one, in commit order, so the
//! state machine never runs ahead of a durable snapshot or purge.
//!
//! The stored purge mark never passes the stored applied state, in any durable state: a
//! purge removes entries only up to the applied state it reads in its own transaction, and a
//! snapshot install removes the log it covers in the commit that stores the snapshot's applied
//! state (`log.rs`, `state_machine.rs`). openraft 0.9 runs a follower's purge up to a received
//! snapshot in parallel with the install; without this rule a crash between the two would
//! leave entries that exist nowhere, and the store could never open again.
//!
//! Once a durable commit fails, the store refuses every later write: after a failed fsync the
//! kernel may have dropped dirty pages, so retrying could acknowledge data that is not on
//! disk (redb itself also refuses further I/O after such an error). The node must be
//! restarted, and recovery reads what really is on disk.
//!
//! # Layout
//!
//! ```text
//! <data_dir>/quorate-store.json   marker: format version and identity, written once at creation
//! <data_dir>/store.redb           the redb database
//! table `meta`:    format_version, identity, vote, committed, last_purged  (JSON values)
//! table `log`:     u64 log index -> JSON openraft entry
//! table `machine`: applied, snapshot_meta, snapshot_data, snapshot_seq
//! ```
//!
//! The data directory itself is locked (`flock`, exclusive) from before [`open`] reads it until
//! the store is dropped, so two processes never run, or migrate, one store at once
//! ([`StoreError::InUse`]).
//!
//! The marker file exists so that a lost or emptied database can never pass for a new one: if
//! the marker says the store was created and `store.redb` is missing, empty, or holds no
//! quorate tables, [`open`] refuses to start.
//!
//! Format 1 was the same tables and values in a sled 0.34 database. [`open`] migrates such a
//! store once, the first time it sees it (`migrate.rs`), and moves sled's files aside, for an
//! inspection only: restoring them would roll the node back to the migration.
//!
//! # Refusing to start
//!
//! [`open`] checks everything before handing the store to openraft: the directory is readable
//! and holds only a quorate store, the format is not from a newer quorate, the identity
//! (cluster name and node id) matches this node's config, redb's checksums hold, and every
//! stored value decodes (each log entry too, and the log has no holes). Any problem is a
//! [`StoreError`] naming the file or key; the store never quietly starts empty when data was
//! there.

mod checks;
mod disk;
mod log;
mod migrate;
mod open;
mod state_machine;

pub use log::{Entry, LogReader, LogStore};
pub use open::open;
pub use state_machine::{AppliedState, SnapshotBuilder, StateMachineStore};

use redb::{Database, Durability, ReadableTable, TableDefinition, WriteTransaction};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageError, StorageIOError};

use crate::consensus::types::{LogId, NodeId};

/// The on-disk format this quorate writes and reads: 2 is redb, 1 was sled (migrated on open).
pub const FORMAT_VERSION: u32 = 2;

/// The format of a store kept in sled, which [`open`] migrates.
const SLED_FORMAT_VERSION: u32 = 1;

/// Name of the marker file beside the database.
pub const MARKER_FILE: &str = "quorate-store.json";
const MARKER_TMP: &str = "quorate-store.json.tmp";

/// Name of the redb database file in the data directory.
pub const DB_FILE: &str = "store.redb";
/// Where a migration writes the database before renaming it to [`DB_FILE`].
const DB_MIGRATING: &str = "store.redb.migrating";
/// The directory a migration moves sled's files into, kept for an inspection only. Not for a
/// downgrade: they hold the store as it was at the migration, and a node that runs on them
/// again has forgotten every vote and entry it acknowledged since, which Raft cannot tolerate
/// (to go back, give the older quorate an empty data directory; see the README).
pub const SLED_ASIDE: &str = "sled-format-1";

const META_TREE: &str = "meta";
const LOG_TREE: &str = "log";
const MACHINE_TREE: &str = "machine";
const OUR_TREES: [&str; 3] = [META_TREE, LOG_TREE, MACHINE_TREE];

/// The `meta` table: key name to JSON value.
const META: TableDefinition<'static, &'static str, &'static [u8]> = TableDefinition::new(META_TREE);
/// The `log` table: log index to the JSON entry.
const LOG: TableDefinition<'static, u64, &'static [u8]> = TableDefinition::new(LOG_TREE);
/// The `machine` table: key name to JSON value (the snapshot data is stored as it is sent).
const MACHINE: TableDefinition<'static, &'static str, &'static [u8]> =
    TableDefinition::new(MACHINE_TREE);

const KEY_FORMAT: &str = "format_version";
const KEY_IDENTITY: &str = "identity";
const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_LAST_PURGED: &str = "last_purged";
/// The `machine` table's key of the applied state.
const KEY_APPLIED: &str = "applied";

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
    /// Another process, or another open in this one, holds the data directory.
    #[error("the Raft store in {dir} is in use: another quorate process (or another open in this one) holds the directory's lock; stop it before starting this one, and never point two nodes at one data_dir")]
    InUse {
        /// The data directory.
        dir: PathBuf,
    },
    /// redb refused to open the database file.
    #[error("cannot open the database {DB_FILE} in {dir}: {source}; if another quorate runs on this directory stop it, otherwise the store is damaged: restore it from a backup or rebuild this member")]
    Database {
        /// The data directory.
        dir: PathBuf,
        /// redb's error.
        source: redb::DatabaseError,
    },
    /// sled refused to open the database of a format-1 store that is to be migrated.
    #[error("cannot open the sled database in {dir} to migrate it to redb: {source}; if an older quorate still runs on this directory stop it, otherwise the store is damaged: restore it from a backup or rebuild this member")]
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
    /// A migration from sled would replace files an earlier one moved aside.
    #[error("cannot finish the migration of the Raft store in {dir} from sled: {SLED_ASIDE}/{name} already exists, from an earlier migration; move {SLED_ASIDE} out of the data directory (keep it if it may be the only copy of an older store) and start again")]
    AsideOccupied {
        /// The data directory.
        dir: PathBuf,
        /// The name that is already in the aside directory.
        name: String,
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
    /// redb failed while reading or writing.
    #[error("the database failed while {action} in the Raft store {dir}: {source}; check the disk and restart the node")]
    DatabaseIo {
        /// The data directory.
        dir: PathBuf,
        /// What the store was doing.
        action: String,
        /// redb's error.
        source: redb::Error,
    },
    /// sled failed while a format-1 store was read for its migration.
    #[error("sled failed while {action} in the Raft store {dir}: {source}; the store was not migrated and is unchanged; check the disk and restart the node")]
    SledIo {
        /// The data directory.
        dir: PathBuf,
        /// What the migration was doing.
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

/// The redb database and the state every handle on it shares.
pub(crate) struct Shared {
    dir: PathBuf,
    db: Database,
    /// The writer lock: every write transaction runs under it. Holds the first failure of a
    /// durable commit; once set, the store takes no more writes.
    writer: Mutex<Option<String>>,
    /// The exclusive lock on the data directory, released when the last handle goes (after
    /// `db` is closed: fields drop in declaration order).
    _dir_lock: nix::fcntl::Flock<std::fs::File>,
    /// The greatest log id openraft asked this process to purge up to. The store may keep
    /// entries at or below it on disk (a purge never goes past the stored applied state, see
    /// `log.rs`), but reports them as purged and never returns them, as openraft expects.
    /// Kept in memory only: after a restart the stored purge mark is what holds.
    purge_requested: Mutex<Option<LogId>>,
}

impl Shared {
    /// Runs `write` in one write transaction and commits it with `Durability::Immediate`,
    /// under the writer lock, on a blocking thread. Returns only once everything `write` did
    /// (and every earlier write) is on disk.
    pub(crate) async fn write_durably<T, F>(self: &Arc<Self>, write: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Shared, &WriteTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        self.write_with(Durability::Immediate, write).await
    }

    /// Runs `write` in one write transaction committed without waiting for the disk; the next
    /// durable commit makes it durable too.
    pub(crate) async fn write_buffered<T, F>(self: &Arc<Self>, write: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Shared, &WriteTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        self.write_with(Durability::None, write).await
    }

    async fn write_with<T, F>(
        self: &Arc<Self>,
        durability: Durability,
        write: F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Shared, &WriteTransaction) -> Result<T, StoreError> + Send + 'static,
    {
        let shared = Arc::clone(self);
        tokio::task::spawn_blocking(move || shared.write_now(durability, write))
            .await
            .map_err(|e| StoreError::WriterFailed(e.to_string()))?
    }

    /// Runs one write transaction on this thread, under the writer lock.
    pub(crate) fn write_now<T, F>(&self, durability: Durability, write: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Shared, &WriteTransaction) -> Result<T, StoreError>,
    {
        let mut broken = self.writer.lock().map_err(|_| {
            StoreError::WriterFailed("a writer panicked while holding the lock".into())
        })?;
        if let Some(first) = broken.as_ref() {
            return Err(StoreError::Broken {
                dir: self.dir.clone(),
                first: first.clone(),
            });
        }
        let mut txn = self
            .db
            .begin_write()
            .map_err(|e| self.db_io("starting a write transaction", e))?;
        txn.set_durability(durability)
            .map_err(|e| self.db_io("choosing the durability of a commit", e))?;
        // Two-phase, so that an acknowledged commit whose pages are damaged later is refused
        // at the next open rather than silently rolled back (see "Why two-phase" above). It
        // only matters for `Immediate` commits: a `None` commit writes no commit slot, and the
        // next durable commit, two-phase too, carries it.
        txn.set_two_phase_commit(true);
        // An error here drops the transaction, which rolls it back; nothing reached the disk.
        let out = write(self, &txn)?;
        if let Err(e) = txn.commit() {
            let e = self.db_io("committing", e);
            tracing::error!(dir = %self.dir.display(), error = %e, "durable write failed; the store refuses further writes");
            *broken = Some(e.to_string());
            return Err(e);
        }
        Ok(out)
    }

    /// Runs `read` in one read transaction: a consistent view of the last commit.
    pub(crate) fn read<T>(
        &self,
        read: impl FnOnce(&redb::ReadTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        use redb::ReadableDatabase;
        let txn = self
            .db
            .begin_read()
            .map_err(|e| self.db_io("starting a read transaction", e))?;
        read(&txn)
    }

    /// A redb error while `action`, naming this store.
    pub(crate) fn db_io(&self, action: impl Into<String>, e: impl Into<redb::Error>) -> StoreError {
        StoreError::DatabaseIo {
            dir: self.dir.clone(),
            action: action.into(),
            source: e.into(),
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

    /// Reads and decodes `key` of the named-key table `table` (`meta` or `machine`), or
    /// `None` when absent.
    pub(crate) fn get_json<T: DeserializeOwned>(
        &self,
        table: &impl ReadableTable<&'static str, &'static [u8]>,
        tree_name: &str,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        match table
            .get(key)
            .map_err(|e| self.db_io(format!("reading {tree_name}/{key}"), e))?
        {
            None => Ok(None),
            Some(bytes) => self.decode(tree_name, key, bytes.value()).map(Some),
        }
    }

    /// Opens the `meta` table for reading in `txn`.
    pub(crate) fn meta_table(
        &self,
        txn: &redb::ReadTransaction,
    ) -> Result<redb::ReadOnlyTable<&'static str, &'static [u8]>, StoreError> {
        txn.open_table(META)
            .map_err(|e| self.db_io("opening the meta table", e))
    }

    /// Opens the `log` table for reading in `txn`.
    pub(crate) fn log_table(
        &self,
        txn: &redb::ReadTransaction,
    ) -> Result<redb::ReadOnlyTable<u64, &'static [u8]>, StoreError> {
        txn.open_table(LOG)
            .map_err(|e| self.db_io("opening the log table", e))
    }

    /// Opens the `machine` table for reading in `txn`.
    pub(crate) fn machine_table(
        &self,
        txn: &redb::ReadTransaction,
    ) -> Result<redb::ReadOnlyTable<&'static str, &'static [u8]>, StoreError> {
        txn.open_table(MACHINE)
            .map_err(|e| self.db_io("opening the machine table", e))
    }

    /// Opens a table for writing in `txn`, naming it if that fails.
    pub(crate) fn open_for_write<'txn, K: redb::Key + 'static>(
        &self,
        txn: &'txn WriteTransaction,
        table: TableDefinition<'_, K, &'static [u8]>,
    ) -> Result<redb::Table<'txn, K, &'static [u8]>, StoreError> {
        txn.open_table(table)
            .map_err(|e| self.db_io(format!("opening the {} table", table_name(&table)), e))
    }

    /// The greatest purged log id stored on disk, if any.
    pub(crate) fn last_purged(&self) -> Result<Option<LogId>, StoreError> {
        self.read(|txn| self.get_json(&self.meta_table(txn)?, META_TREE, KEY_LAST_PURGED))
    }

    /// Reads the last applied log id stored in `txn`'s view, including an apply committed with
    /// `Durability::None` before it. The rest of the applied state is not decoded.
    pub(crate) fn stored_last_applied(
        &self,
        txn: &WriteTransaction,
    ) -> Result<Option<LogId>, StoreError> {
        /// The one field of the stored applied state this reads.
        #[derive(Deserialize)]
        struct LastApplied {
            last_applied: Option<LogId>,
        }
        let machine = self.open_for_write(txn, MACHINE)?;
        Ok(self
            .get_json::<LastApplied>(&machine, MACHINE_TREE, KEY_APPLIED)?
            .and_then(|a| a.last_applied))
    }

    /// Removes the entries up to `upto` and records it as the last purged log id, in `txn`,
    /// unless the store is purged that far already. Returns the new mark, `None` if nothing
    /// changed.
    pub(crate) fn purge_upto(
        &self,
        txn: &WriteTransaction,
        upto: LogId,
    ) -> Result<Option<LogId>, StoreError> {
        let mut meta = self.open_for_write(txn, META)?;
        let stored: Option<LogId> = self.get_json(&meta, META_TREE, KEY_LAST_PURGED)?;
        if stored.is_some_and(|p| p.index >= upto.index) {
            return Ok(None);
        }
        // One transaction: the purge mark and the removal land together or not at all.
        let purged = encode("the last purged log id", &upto)?;
        meta.insert(KEY_LAST_PURGED, &purged[..])
            .map_err(|e| self.db_io("purging the log", e))?;
        self.open_for_write(txn, LOG)?
            .retain_in(..=upto.index, |_, _| false)
            .map_err(|e| self.db_io("purging the log", e))?;
        Ok(Some(upto))
    }

    /// The greatest log id openraft asked this process to purge up to, if any.
    pub(crate) fn purge_requested(&self) -> Option<LogId> {
        *self
            .purge_requested
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records that openraft asked to purge up to `log_id`.
    pub(crate) fn request_purge(&self, log_id: LogId) {
        let mut requested = self
            .purge_requested
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if requested.is_none_or(|r| r.index < log_id.index) {
            *requested = Some(log_id);
        }
    }
}

/// The name of a table definition.
fn table_name<K: redb::Key + 'static>(table: &TableDefinition<'_, K, &'static [u8]>) -> String {
    use redb::TableHandle;
    table.name().to_string()
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

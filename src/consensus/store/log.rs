//! openraft's log storage over the store's redb tables: the vote, the commit index and the log
//! entries themselves, each write committed durably before it is acknowledged.
//!
//! Entries live in the `log` table under their index as a `u64` key, so the table's key order
//! is log order and ranges map directly onto index ranges.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, LogState, RaftLogReader, StorageError, Vote};
use redb::{ReadableTable, ReadableTableMetadata};

use super::{
    encode, Shared, StoreError, KEY_COMMITTED, KEY_LAST_PURGED, KEY_VOTE, LOG, LOG_TREE, META,
    META_TREE,
};
use crate::consensus::types::{LogId, NodeId, TypeConfig};

/// A Raft log entry in quorate's configuration.
pub type Entry = openraft::Entry<TypeConfig>;

/// The log half of the store, handed to `openraft::Raft::new`.
pub struct LogStore {
    shared: Arc<Shared>,
}

/// A read-only handle on the log, which openraft uses to replicate entries to followers.
#[derive(Clone)]
pub struct LogReader {
    shared: Arc<Shared>,
}

impl LogStore {
    pub(super) fn new(shared: Arc<Shared>) -> LogStore {
        LogStore { shared }
    }

    /// The store's data directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Whether this store never took part in a cluster: no vote, no log entry (none purged
    /// either), no commit index and nothing applied. Bootstrap initializes only a pristine
    /// store; a store with any history must rejoin, never be initialized again.
    pub fn is_pristine(&self) -> Result<bool, StoreError> {
        let s = &self.shared;
        s.read(|txn| {
            let meta = s.meta_table(txn)?;
            let has = |key: &str| {
                meta.get(key)
                    .map(|v| v.is_some())
                    .map_err(|e| s.db_io(format!("reading {META_TREE}/{key}"), e))
            };
            let empty = |len: Result<u64, redb::StorageError>, table: &str| {
                len.map(|n| n == 0)
                    .map_err(|e| s.db_io(format!("reading the {table} table"), e))
            };
            Ok(!has(KEY_VOTE)?
                && !has(KEY_COMMITTED)?
                && !has(KEY_LAST_PURGED)?
                && empty(s.log_table(txn)?.len(), LOG_TREE)?
                && empty(s.machine_table(txn)?.len(), super::MACHINE_TREE)?)
        })
    }
}

/// Checks every log entry at open: each key is 8 bytes, each value decodes and carries the
/// index of its key, no entry is at or below the last purged index, and there is no hole.
pub(super) fn validate(shared: &Shared) -> Result<(), StoreError> {
    let last_purged = shared.last_purged()?;
    let mut previous: Option<u64> = last_purged.map(|id| id.index);
    shared.read(|txn| {
        let log = shared.log_table(txn)?;
        for item in log.iter().map_err(|e| shared.db_io("reading the log", e))? {
            let (key, value) = item.map_err(|e| shared.db_io("reading the log", e))?;
            let index = key.value();
            let corrupt = |key: String, problem: String| StoreError::Corrupt {
                dir: shared.dir.clone(),
                key,
                problem,
            };
            let entry: Entry = shared.decode(LOG_TREE, &index.to_string(), value.value())?;
            let name = format!("{LOG_TREE}/{index}");
            if entry.log_id.index != index {
                return Err(corrupt(
                    name,
                    format!("it holds the entry of index {}", entry.log_id.index),
                ));
            }
            match previous {
                Some(p) if index <= p => {
                    return Err(corrupt(
                        name,
                        format!("the entry is at or below the last purged index {p}"),
                    ));
                }
                Some(p) if index != p + 1 => {
                    return Err(corrupt(
                        name,
                        format!("the log has a hole: entries {}..{index} are missing", p + 1),
                    ));
                }
                _ => {}
            }
            previous = Some(index);
        }
        Ok(())
    })
}

/// Reads the entries whose indexes fall in `range`, in order.
fn read_entries<RB: RangeBounds<u64>>(
    shared: &Shared,
    range: RB,
) -> Result<Vec<Entry>, StoreError> {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => match s.checked_add(1) {
            Some(s) => s,
            None => return Ok(Vec::new()),
        },
        Bound::Unbounded => 0,
    };
    // Entries openraft asked to purge may still be on disk (see `purge`); they are not its.
    let start = match shared.purge_requested() {
        Some(purged) => start.max(purged.index.saturating_add(1)),
        None => start,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) if e < start => return Ok(Vec::new()),
        Bound::Excluded(&e) if e <= start => return Ok(Vec::new()),
        Bound::Included(&e) => Bound::Included(e),
        Bound::Excluded(&e) => Bound::Excluded(e),
        Bound::Unbounded => Bound::Unbounded,
    };
    let start = Bound::Included(start);
    shared.read(|txn| {
        let log = shared.log_table(txn)?;
        let mut entries = Vec::new();
        let range = log
            .range((start, end))
            .map_err(|e| shared.db_io("reading the log", e))?;
        for item in range {
            let (key, value) = item.map_err(|e| shared.db_io("reading the log", e))?;
            entries.push(shared.decode(LOG_TREE, &key.value().to_string(), value.value())?);
        }
        Ok(entries)
    })
}

/// The log id of the last entry, or the last purged one when the log is empty. The last
/// purged one is the greater of the stored mark and the one openraft asked this process for.
fn log_state(shared: &Shared) -> Result<LogState<TypeConfig>, StoreError> {
    let last_purged = shared.last_purged()?.max(shared.purge_requested());
    let last = shared.read(|txn| {
        let log = shared.log_table(txn)?;
        let last = log
            .last()
            .map_err(|e| shared.db_io("reading the last log entry", e))?;
        match last {
            None => Ok(last_purged),
            Some((key, value)) => {
                let entry: Entry =
                    shared.decode(LOG_TREE, &key.value().to_string(), value.value())?;
                Ok(Some(entry.log_id).max(last_purged))
            }
        }
    })?;
    Ok(LogState {
        last_purged_log_id: last_purged,
        last_log_id: last,
    })
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError<NodeId>> {
        read_entries(&self.shared, range)
            .map_err(|e| e.into_storage(ErrorSubject::Logs, ErrorVerb::Read))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError<NodeId>> {
        read_entries(&self.shared, range)
            .map_err(|e| e.into_storage(ErrorSubject::Logs, ErrorVerb::Read))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        log_state(&self.shared).map_err(|e| e.into_storage(ErrorSubject::Logs, ErrorVerb::Read))
    }

    async fn get_log_reader(&mut self) -> LogReader {
        LogReader {
            shared: Arc::clone(&self.shared),
        }
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let to_storage = |e: StoreError| e.into_storage(ErrorSubject::Vote, ErrorVerb::Write);
        let bytes = encode("the vote", vote).map_err(to_storage)?;
        self.shared
            .write_durably(move |s, txn| {
                s.open_for_write(txn, META)?
                    .insert(KEY_VOTE, &bytes[..])
                    .map_err(|e| s.db_io("writing the vote", e))?;
                Ok(())
            })
            .await
            .map_err(to_storage)?;
        tracing::debug!(%vote, "vote saved");
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        let s = &self.shared;
        s.read(|txn| s.get_json(&s.meta_table(txn)?, META_TREE, KEY_VOTE))
            .map_err(|e| e.into_storage(ErrorSubject::Vote, ErrorVerb::Read))
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId>,
    ) -> Result<(), StorageError<NodeId>> {
        let to_storage = |e: StoreError| e.into_storage(ErrorSubject::Store, ErrorVerb::Write);
        let bytes = committed
            .map(|c| encode("the commit index", &c))
            .transpose()
            .map_err(to_storage)?;
        self.shared
            .write_durably(move |s, txn| {
                let mut meta = s.open_for_write(txn, META)?;
                let result = match bytes {
                    Some(bytes) => meta.insert(KEY_COMMITTED, &bytes[..]).map(drop),
                    None => meta.remove(KEY_COMMITTED).map(drop),
                };
                result.map_err(|e| s.db_io("writing the commit index", e))?;
                Ok(())
            })
            .await
            .map_err(to_storage)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError<NodeId>> {
        let s = &self.shared;
        s.read(|txn| s.get_json(&s.meta_table(txn)?, META_TREE, KEY_COMMITTED))
            .map_err(|e| e.into_storage(ErrorSubject::Store, ErrorVerb::Read))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let to_storage = |e: StoreError| e.into_storage(ErrorSubject::Logs, ErrorVerb::Write);
        let mut batch = Vec::new();
        let mut last = None;
        for entry in entries {
            let bytes = encode("a log entry", &entry).map_err(to_storage)?;
            batch.push((entry.log_id.index, bytes));
            last = Some(entry.log_id);
        }
        self.shared
            .write_durably(move |s, txn| {
                let mut log = s.open_for_write(txn, LOG)?;
                for (index, bytes) in &batch {
                    log.insert(index, &bytes[..])
                        .map_err(|e| s.db_io("appending to the log", e))?;
                }
                Ok(())
            })
            .await
            .map_err(to_storage)?;
        // Committed with `Durability::Immediate`, so fsynced: only now may openraft count these entries as stored.
        callback.log_io_completed(Ok(()));
        tracing::trace!(last = ?last, "log entries appended");
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError<NodeId>> {
        let from = log_id.index;
        self.shared
            .write_durably(move |s, txn| {
                s.open_for_write(txn, LOG)?
                    .retain_in(from.., |_, _| false)
                    .map_err(|e| s.db_io("truncating the log", e))
            })
            .await
            .map_err(|e| e.into_storage(ErrorSubject::Log(log_id), ErrorVerb::Delete))?;
        tracing::debug!(%log_id, "log truncated from this entry on");
        Ok(())
    }

    /// Purges the log up to `log_id`, but on disk never beyond the stored applied state.
    ///
    /// openraft 0.9 runs a follower's purge up to a received snapshot in parallel with the
    /// state machine's install of that snapshot. Purging up to the snapshot before the install
    /// is durable would let a crash leave a log purged beyond the applied state, with the
    /// entries in between stored nowhere, which `open` must then refuse for good. So this
    /// transaction reads the applied state and removes entries only up to it (the install
    /// removes the rest, in its own transaction, see `state_machine.rs`). Entries kept this
    /// way are never handed to openraft: it reads only above the purge point it asked for,
    /// and this store hides them and reports that point (`Shared::purge_requested`).
    ///
    /// The invariant, stored purge mark <= stored applied state, holds in every durable state:
    /// every write runs under one writer lock, so this transaction reads the latest applied
    /// state, including one committed with `Durability::None`, and its durable commit makes
    /// that applied state durable with it (redb makes commits durable in commit order).
    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError<NodeId>> {
        let to_storage =
            |e: StoreError| e.into_storage(ErrorSubject::Log(log_id), ErrorVerb::Delete);
        let purged = self
            .shared
            .write_durably(move |s, txn| {
                let applied = s.stored_last_applied(txn)?;
                // Up to the applied state at most; nothing at all before anything is applied.
                let Some(upto) = applied.map(|a| if a.index < log_id.index { a } else { log_id })
                else {
                    return Ok(None);
                };
                s.purge_upto(txn, upto)
            })
            .await
            .map_err(to_storage)?;
        self.shared.request_purge(log_id);
        tracing::debug!(%log_id, on_disk = ?purged, "log purged up to this entry (on disk, up to the applied state at most)");
        Ok(())
    }
}

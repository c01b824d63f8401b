//! openraft's log storage over the store's sled trees: the vote, the commit index and the log
//! entries themselves, each write made durable before it is acknowledged.
//!
//! Entries live in the `log` tree under their index as a big-endian `u64`, so sled's key
//! order is log order and ranges map directly onto index ranges.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, LogState, RaftLogReader, StorageError, Vote};
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use super::{
    encode, key_index, log_key, Shared, StoreError, KEY_COMMITTED, KEY_LAST_PURGED, KEY_VOTE,
    LOG_TREE, META_TREE,
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
        let has = |key: &str| {
            s.meta
                .contains_key(key)
                .map_err(s.sled_err(format!("reading {META_TREE}/{key}")))
        };
        Ok(!has(KEY_VOTE)?
            && !has(KEY_COMMITTED)?
            && !has(KEY_LAST_PURGED)?
            && s.log.is_empty()
            && s.machine.is_empty())
    }
}

/// Checks every log entry at open: each key is 8 bytes, each value decodes and carries the
/// index of its key, no entry is at or below the last purged index, and there is no hole.
pub(super) fn validate(shared: &Shared) -> Result<(), StoreError> {
    let last_purged = shared.last_purged()?;
    let mut previous: Option<u64> = last_purged.map(|id| id.index);
    for item in shared.log.iter() {
        let (key, value) = item.map_err(shared.sled_err("reading the log"))?;
        let corrupt = |key: String, problem: String| StoreError::Corrupt {
            dir: shared.dir.clone(),
            key,
            problem,
        };
        let Some(index) = key_index(&key) else {
            return Err(corrupt(
                format!("{LOG_TREE}/{key:02x?}"),
                "a log key must be 8 bytes".into(),
            ));
        };
        let entry: Entry = shared.decode(LOG_TREE, &index.to_string(), &value)?;
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
    let end = match range.end_bound() {
        Bound::Included(&e) if e < start => return Ok(Vec::new()),
        Bound::Excluded(&e) if e <= start => return Ok(Vec::new()),
        Bound::Included(&e) => Bound::Included(log_key(e)),
        Bound::Excluded(&e) => Bound::Excluded(log_key(e)),
        Bound::Unbounded => Bound::Unbounded,
    };
    let mut entries = Vec::new();
    for item in shared.log.range((Bound::Included(log_key(start)), end)) {
        let (key, value) = item.map_err(shared.sled_err("reading the log"))?;
        let index = key_index(&key).map_or_else(|| format!("{key:02x?}"), |i| i.to_string());
        entries.push(shared.decode(LOG_TREE, &index, &value)?);
    }
    Ok(entries)
}

/// The log id of the last entry, or the last purged one when the log is empty.
fn log_state(shared: &Shared) -> Result<LogState<TypeConfig>, StoreError> {
    let last_purged = shared.last_purged()?;
    let last = match shared
        .log
        .last()
        .map_err(shared.sled_err("reading the last log entry"))?
    {
        None => last_purged,
        Some((key, value)) => {
            let index = key_index(&key).map_or_else(|| format!("{key:02x?}"), |i| i.to_string());
            let entry: Entry = shared.decode(LOG_TREE, &index, &value)?;
            Some(entry.log_id)
        }
    };
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
            .write_durably(move |s| {
                s.meta
                    .insert(KEY_VOTE, bytes)
                    .map_err(s.sled_err("writing the vote"))?;
                Ok(())
            })
            .await
            .map_err(to_storage)?;
        tracing::debug!(%vote, "vote saved");
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        let s = &self.shared;
        s.get_json(&s.meta, META_TREE, KEY_VOTE)
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
            .write_durably(move |s| {
                let result = match bytes {
                    Some(bytes) => s.meta.insert(KEY_COMMITTED, bytes),
                    None => s.meta.remove(KEY_COMMITTED),
                };
                result.map_err(s.sled_err("writing the commit index"))?;
                Ok(())
            })
            .await
            .map_err(to_storage)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError<NodeId>> {
        let s = &self.shared;
        s.get_json(&s.meta, META_TREE, KEY_COMMITTED)
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
        let mut batch = sled::Batch::default();
        let mut last = None;
        for entry in entries {
            let bytes = encode("a log entry", &entry).map_err(to_storage)?;
            batch.insert(&log_key(entry.log_id.index)[..], bytes);
            last = Some(entry.log_id);
        }
        self.shared
            .write_durably(move |s| {
                s.log
                    .apply_batch(batch)
                    .map_err(s.sled_err("appending to the log"))
            })
            .await
            .map_err(to_storage)?;
        // Written, flushed and fsynced: only now may openraft count these entries as stored.
        callback.log_io_completed(Ok(()));
        tracing::trace!(last = ?last, "log entries appended");
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError<NodeId>> {
        let from = log_id.index;
        self.shared
            .write_durably(move |s| {
                let mut batch = sled::Batch::default();
                for key in s.log.range(log_key(from)..).keys() {
                    batch.remove(key.map_err(s.sled_err("reading the log"))?);
                }
                s.log
                    .apply_batch(batch)
                    .map_err(s.sled_err("truncating the log"))
            })
            .await
            .map_err(|e| e.into_storage(ErrorSubject::Log(log_id), ErrorVerb::Delete))?;
        tracing::debug!(%log_id, "log truncated from this entry on");
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError<NodeId>> {
        let to_storage =
            |e: StoreError| e.into_storage(ErrorSubject::Log(log_id), ErrorVerb::Delete);
        let purged = encode("the last purged log id", &log_id).map_err(to_storage)?;
        self.shared
            .write_durably(move |s| {
                if s.last_purged()?.is_some_and(|p| p.index >= log_id.index) {
                    return Ok(());
                }
                let mut batch = sled::Batch::default();
                for key in s.log.range(..=log_key(log_id.index)).keys() {
                    batch.remove(key.map_err(s.sled_err("reading the log"))?);
                }
                // One transaction: the purge mark and the removal land together or not at all.
                (&s.meta, &s.log)
                    .transaction(|(meta, log)| {
                        meta.insert(KEY_LAST_PURGED, purged.clone())?;
                        log.apply_batch(&batch)?;
                        Ok::<(), ConflictableTransactionError<()>>(())
                    })
                    .map_err(|e| match e {
                        TransactionError::Storage(source) => s.sled_err("purging the log")(source),
                        TransactionError::Abort(()) => {
                            StoreError::WriterFailed("the purge transaction aborted".into())
                        }
                    })
            })
            .await
            .map_err(to_storage)?;
        tracing::debug!(%log_id, "log purged up to this entry");
        Ok(())
    }
}

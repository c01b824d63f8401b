//! openraft's state machine over the store: applies committed entries to [`ClusterState`],
//! keeps the result in redb, builds and installs snapshots, and publishes every new applied
//! state on a watch channel for the admin API and the agent loop.
//!
//! The applied state (cluster state, last applied log id, membership) is one stored value,
//! replaced whole after each applied batch, so it is always consistent with itself.

use serde::{Deserialize, Serialize};
use std::io::Cursor;
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{
    EntryPayload, ErrorSubject, ErrorVerb, RaftSnapshotBuilder, Snapshot, SnapshotMeta,
    StorageError,
};
use redb::ReadableTable;
use tokio::sync::watch;

use super::log::Entry;
use super::{encode, Shared, StoreError, KEY_APPLIED, MACHINE, MACHINE_TREE};
use crate::consensus::state::{ClusterState, Response};
use crate::consensus::types::{LogId, Member, NodeId, StoredMembership, TypeConfig};

const KEY_SNAPSHOT_META: &str = "snapshot_meta";
const KEY_SNAPSHOT_DATA: &str = "snapshot_data";
const KEY_SNAPSHOT_SEQ: &str = "snapshot_seq";

/// The format of a snapshot's data as sent between members. Kept apart from the store's
/// format: a snapshot looks the same whatever a member keeps its store in, so members on sled
/// (format 1) and on redb (format 2) can send each other snapshots during a rolling upgrade.
const SNAPSHOT_FORMAT_VERSION: u32 = 1;

/// Snapshot metadata in quorate's configuration.
type SnapshotMetaOf = SnapshotMeta<NodeId, Member>;

/// Everything the state machine holds: what the cluster agreed on, up to which entry, and
/// under which membership.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedState {
    /// The last entry applied, `None` before the first.
    pub last_applied: Option<LogId>,
    /// The membership of the last applied membership entry.
    pub membership: StoredMembership,
    /// The replicated cluster state.
    pub state: ClusterState,
}

/// What a snapshot carries: the applied state and the format it was written in.
#[derive(Serialize, Deserialize)]
struct SnapshotPayload<A> {
    format_version: u32,
    applied: A,
}

/// The state machine half of the store, handed to `openraft::Raft::new`.
pub struct StateMachineStore {
    shared: Arc<Shared>,
    applied: watch::Sender<Arc<AppliedState>>,
}

/// Builds a snapshot of the applied state as it was when the builder was made.
pub struct SnapshotBuilder {
    shared: Arc<Shared>,
    applied: Arc<AppliedState>,
}

/// Loads the applied state at open and checks the stored snapshot against it.
pub(super) fn load(shared: &Shared) -> Result<AppliedState, StoreError> {
    shared.read(|txn| {
        let machine = shared.machine_table(txn)?;
        let applied: AppliedState = shared
            .get_json(&machine, MACHINE_TREE, KEY_APPLIED)?
            .unwrap_or_default();
        let meta: Option<SnapshotMetaOf> =
            shared.get_json(&machine, MACHINE_TREE, KEY_SNAPSHOT_META)?;
        let _: Option<u64> = shared.get_json(&machine, MACHINE_TREE, KEY_SNAPSHOT_SEQ)?;
        if let Some(meta) = meta {
            let data = machine
                .get(KEY_SNAPSHOT_DATA)
                .map_err(|e| shared.db_io("reading the snapshot", e))?
                .ok_or_else(|| StoreError::Corrupt {
                    dir: shared.dir.clone(),
                    key: format!("{MACHINE_TREE}/{KEY_SNAPSHOT_DATA}"),
                    problem: "the key is missing although the snapshot's metadata is there".into(),
                })?;
            let _: SnapshotPayload<AppliedState> =
                shared.decode(MACHINE_TREE, KEY_SNAPSHOT_DATA, data.value())?;
            if meta.last_log_id > applied.last_applied {
                return Err(StoreError::Corrupt {
                    dir: shared.dir.clone(),
                    key: format!("{MACHINE_TREE}/{KEY_APPLIED}"),
                    problem: format!(
                        "the applied state ends at {:?}, before the stored snapshot's {:?}",
                        applied.last_applied, meta.last_log_id
                    ),
                });
            }
        }
        Ok(applied)
    })
}

/// Reads the stored snapshot, if any.
fn current_snapshot(shared: &Shared) -> Result<Option<Snapshot<TypeConfig>>, StoreError> {
    shared.read(|txn| {
        let machine = shared.machine_table(txn)?;
        let Some(meta) =
            shared.get_json::<SnapshotMetaOf>(&machine, MACHINE_TREE, KEY_SNAPSHOT_META)?
        else {
            return Ok(None);
        };
        let data = machine
            .get(KEY_SNAPSHOT_DATA)
            .map_err(|e| shared.db_io("reading the snapshot", e))?
            .map(|d| d.value().to_vec())
            .unwrap_or_default();
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    })
}

impl StateMachineStore {
    pub(super) fn new(shared: Arc<Shared>, applied: AppliedState) -> StateMachineStore {
        let (applied, _) = watch::channel(Arc::new(applied));
        StateMachineStore { shared, applied }
    }

    /// A receiver that sees the applied state after every apply and snapshot install.
    /// Take it before handing the store to openraft.
    pub fn subscribe(&self) -> watch::Receiver<Arc<AppliedState>> {
        self.applied.subscribe()
    }

    /// The applied state now.
    pub fn applied(&self) -> Arc<AppliedState> {
        Arc::clone(&self.applied.borrow())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let to_storage =
            |e: StoreError| e.into_storage(ErrorSubject::Snapshot(None), ErrorVerb::Write);
        let applied = Arc::clone(&self.applied);
        let payload = SnapshotPayload {
            format_version: SNAPSHOT_FORMAT_VERSION,
            applied: &*applied,
        };
        let data = encode("a snapshot", &payload).map_err(to_storage)?;
        let (meta, data) = self
            .shared
            .write_durably(move |s, txn| {
                let mut machine = s.open_for_write(txn, MACHINE)?;
                let seq = s
                    .get_json::<u64>(&machine, MACHINE_TREE, KEY_SNAPSHOT_SEQ)?
                    .unwrap_or(0)
                    + 1;
                let last = applied.last_applied;
                let meta = SnapshotMetaOf {
                    last_log_id: last,
                    last_membership: applied.membership.clone(),
                    snapshot_id: match last {
                        Some(id) => format!("{id}-{seq}"),
                        None => format!("empty-{seq}"),
                    },
                };
                let stored: Option<SnapshotMetaOf> =
                    s.get_json(&machine, MACHINE_TREE, KEY_SNAPSHOT_META)?;
                let store_err = |e: redb::StorageError| s.db_io("storing a snapshot", e);
                let seq_bytes = encode("the snapshot sequence", &seq)?;
                machine
                    .insert(KEY_SNAPSHOT_SEQ, &seq_bytes[..])
                    .map_err(store_err)?;
                // A snapshot installed meanwhile may be newer than this one; keep the newer.
                if stored.is_none_or(|m| m.last_log_id <= last) {
                    let meta_bytes = encode("the snapshot metadata", &meta)?;
                    machine
                        .insert(KEY_SNAPSHOT_META, &meta_bytes[..])
                        .map_err(store_err)?;
                    machine
                        .insert(KEY_SNAPSHOT_DATA, &data[..])
                        .map_err(store_err)?;
                }
                Ok((meta, data))
            })
            .await
            .map_err(to_storage)?;
        tracing::info!(snapshot_id = %meta.snapshot_id, bytes = data.len(), "snapshot built");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership), StorageError<NodeId>> {
        let applied = self.applied.borrow();
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut next = AppliedState::clone(&self.applied.borrow());
        let mut responses = Vec::new();
        for entry in entries {
            let index = entry.log_id.index;
            next.last_applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => Response {
                    index,
                    refused: None,
                },
                EntryPayload::Normal(request) => {
                    // The membership applied so far, in log order like the state: every
                    // member re-checks a grant's target against the same roles.
                    let roles = next
                        .membership
                        .membership()
                        .nodes()
                        .map(|(id, member)| (*id, member.role))
                        .collect();
                    next.state.apply(index, &request, &roles)
                }
                EntryPayload::Membership(membership) => {
                    next.membership = StoredMembership::new(Some(entry.log_id), membership);
                    Response {
                        index,
                        refused: None,
                    }
                }
            };
            responses.push(response);
        }
        let Some(last) = next.last_applied.filter(|_| !responses.is_empty()) else {
            return Ok(responses);
        };
        let to_storage =
            |e: StoreError| e.into_storage(ErrorSubject::Apply(last), ErrorVerb::Write);
        let bytes = encode("the applied state", &next).map_err(to_storage)?;
        // Not fsynced: the log and commit index are durable, so openraft re-applies after a
        // crash; the next durable write flushes this one too.
        self.shared
            .write_buffered(move |s, txn| {
                s.open_for_write(txn, MACHINE)?
                    .insert(KEY_APPLIED, &bytes[..])
                    .map_err(|e| s.db_io("writing the applied state", e))?;
                Ok(())
            })
            .await
            .map_err(to_storage)?;
        self.applied.send_replace(Arc::new(next));
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            shared: Arc::clone(&self.shared),
            applied: self.applied(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMetaOf,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let signature = Some(meta.signature());
        let to_storage = |e: StoreError| {
            e.into_storage(ErrorSubject::Snapshot(signature.clone()), ErrorVerb::Write)
        };
        let data = snapshot.into_inner();
        let applied = check_snapshot(meta, &data).map_err(to_storage)?;
        let meta_bytes = encode("the snapshot metadata", meta).map_err(to_storage)?;
        let applied_bytes = encode("the applied state", &applied).map_err(to_storage)?;
        let last = meta.last_log_id;
        self.shared
            .write_durably(move |s, txn| {
                {
                    let mut machine = s.open_for_write(txn, MACHINE)?;
                    for (key, value) in [
                        (KEY_APPLIED, &applied_bytes[..]),
                        (KEY_SNAPSHOT_META, &meta_bytes[..]),
                        (KEY_SNAPSHOT_DATA, &data[..]),
                    ] {
                        machine
                            .insert(key, value)
                            .map_err(|e| s.db_io("installing a snapshot", e))?;
                    }
                }
                // The log up to the snapshot goes in the same transaction as the applied state
                // it is replaced by: openraft purges it right after the install anyway, but
                // its purge never runs ahead of the stored applied state (`log.rs`), so the
                // install is what lets the entries go, atomically, whatever the crash.
                if let Some(last) = last {
                    s.purge_upto(txn, last)?;
                }
                Ok(())
            })
            .await
            .map_err(to_storage)?;
        tracing::info!(snapshot_id = %meta.snapshot_id, last = ?meta.last_log_id, "snapshot installed");
        self.applied.send_replace(Arc::new(applied));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        current_snapshot(&self.shared)
            .map_err(|e| e.into_storage(ErrorSubject::Snapshot(None), ErrorVerb::Read))
    }
}

/// Decodes a received snapshot and checks that it says what its metadata says.
fn check_snapshot(meta: &SnapshotMetaOf, data: &[u8]) -> Result<AppliedState, StoreError> {
    let bad = |problem: String| StoreError::BadSnapshot {
        snapshot_id: meta.snapshot_id.clone(),
        problem,
    };
    let payload: SnapshotPayload<AppliedState> =
        serde_json::from_slice(data).map_err(|e| bad(format!("the data does not decode: {e}")))?;
    if payload.format_version > SNAPSHOT_FORMAT_VERSION {
        return Err(bad(format!(
            "it has format version {}, newer than this quorate's {SNAPSHOT_FORMAT_VERSION}",
            payload.format_version
        )));
    }
    if payload.applied.last_applied != meta.last_log_id
        || payload.applied.membership != meta.last_membership
    {
        return Err(bad(format!(
            "its data ends at {:?}, but its metadata says {:?}",
            payload.applied.last_applied, meta.last_log_id
        )));
    }
    Ok(payload.applied)
}

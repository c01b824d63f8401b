//! Runs openraft's own storage conformance suite against quorate's redb store.

use openraft::testing::{StoreBuilder, Suite};
use openraft::{ErrorSubject, ErrorVerb, StorageError};
use quorate::consensus::store::{self, LogStore, StateMachineStore, StoreIdentity};
use quorate::consensus::types::{NodeId, TypeConfig};
use tempfile::TempDir;

/// Builds each suite case a fresh store in its own temporary directory; the directory is
/// the guard, removed when the case ends.
struct TempStoreBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for TempStoreBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<NodeId>> {
        let dir = tempfile::tempdir()
            .map_err(|e| StorageError::from_io_error(ErrorSubject::Store, ErrorVerb::Write, e))?;
        let identity = StoreIdentity {
            cluster: "suite".into(),
            node_id: 0,
        };
        let (log, sm) = store::open(&dir.path().join("raft"), &identity)
            .map_err(|e| e.into_storage(ErrorSubject::Store, ErrorVerb::Read))?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite_passes() {
    Suite::test_all(TempStoreBuilder).expect("openraft's storage suite");
}

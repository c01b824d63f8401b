//! The checks and refusals that both ways into a store share: opening a redb store
//! (`open.rs`) and migrating a sled one (`migrate.rs`). They live apart from both so that
//! opening may hand over to the migration while the migration checks with the same words,
//! and neither file depends on the other's internals.

use std::path::Path;
use std::time::Duration;

use super::{
    StoreError, StoreIdentity, DB_FILE, FORMAT_VERSION, KEY_FORMAT, MARKER_FILE, META_TREE,
};

/// How long opening waits for the database file's lock. A store closed a moment ago in
/// this process can still be held for a moment by a task that is ending (a blocking write in
/// flight, a log reader of a replication task); a store that another live process holds is
/// still refused, after the wait.
pub(super) const LOCK_WAIT: Duration = Duration::from_secs(2);

/// The refusal of a directory that holds something other than a quorate store.
pub(super) fn not_a_store(dir: &Path, why: String) -> StoreError {
    StoreError::NotAStore {
        dir: dir.to_path_buf(),
        why,
    }
}

/// The refusal of a store whose database came up empty although the marker says it was made.
pub(super) fn emptied(dir: &Path) -> StoreError {
    StoreError::Corrupt {
        dir: dir.to_path_buf(),
        key: DB_FILE.into(),
        problem: format!(
            "the database is empty, but {MARKER_FILE} says the store was created; its data is lost"
        ),
    }
}

/// Refuses a format newer than this quorate's, and format 0, which no quorate wrote.
pub(super) fn check_format(dir: &Path, found: u32) -> Result<(), StoreError> {
    if found > FORMAT_VERSION {
        return Err(StoreError::FutureFormat {
            dir: dir.to_path_buf(),
            found,
            supported: FORMAT_VERSION,
        });
    }
    if found == 0 {
        return Err(StoreError::Corrupt {
            dir: dir.to_path_buf(),
            key: format!("{META_TREE}/{KEY_FORMAT}"),
            problem: "format version 0 was never written by quorate".into(),
        });
    }
    Ok(())
}

/// Refuses a store whose recorded identity is not this node's.
pub(super) fn check_identity(
    dir: &Path,
    stored: &StoreIdentity,
    expected: &StoreIdentity,
) -> Result<(), StoreError> {
    if stored != expected {
        return Err(StoreError::IdentityMismatch {
            dir: dir.to_path_buf(),
            stored: stored.clone(),
            expected: expected.clone(),
        });
    }
    Ok(())
}

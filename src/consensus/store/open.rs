//! Opening the store: every check that must pass before openraft may rely on what is on
//! disk, the creation of a new store, and the hand-over to `migrate.rs` for a store that is
//! still in sled.
//!
//! The order matters. The directory is inspected before redb touches it (redb would create
//! its file in any directory), the marker file is checked before the database opens (a newer
//! format may not even be redb's), a format-1 store is migrated before it is opened as redb,
//! and only then are the database's tables classified and every value decoded.

use redb::{Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableHandle};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::checks::{check_format, check_identity, emptied, not_a_store, LOCK_WAIT};
use super::disk::{create_dir_durably, sync_dir, sync_dir_and_parent};
use super::{
    encode, log, migrate, state_machine, LogStore, Shared, StateMachineStore, StoreError,
    StoreIdentity, DB_FILE, DB_MIGRATING, FORMAT_VERSION, KEY_COMMITTED, KEY_FORMAT, KEY_IDENTITY,
    KEY_LAST_PURGED, KEY_VOTE, LOG, MACHINE, MARKER_FILE, MARKER_TMP, META, META_TREE, OUR_TREES,
    SLED_ASIDE,
};
use crate::consensus::types::{LogId, NodeId};

/// The marker file's content.
#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    format_version: u32,
    #[serde(flatten)]
    identity: StoreIdentity,
}

/// What [`inspect_dir`] found in the data directory.
struct DirState {
    marker: Option<Marker>,
    /// Whether `store.redb` exists.
    has_db: bool,
    /// The names of a format-1 (sled) store found in the directory.
    sled_names: Vec<String>,
    /// Whether `sled-format-1/` exists: a migration ran here.
    has_aside: bool,
}

/// The names sled 0.34 creates in its directory.
pub(super) fn is_sled_name(name: &str) -> bool {
    matches!(name, "db" | "conf" | "blobs") || name.starts_with("snap.")
}

/// Opens (or creates) the Raft store in `dir` for the node `identity`, and returns its log
/// store and state machine for `openraft::Raft::new`.
///
/// Blocks while it checks and fsyncs the store; call it before starting the runtime's work or
/// from `spawn_blocking`. Refuses, with an error naming the file or key, any directory that is
/// unreadable, holds something else, was written by a newer quorate, belongs to another node,
/// or holds a value that does not decode. A store that an older quorate kept in sled is
/// migrated to redb first, once, and sled's files are moved into `sled-format-1/`.
pub fn open(
    dir: &Path,
    identity: &StoreIdentity,
) -> Result<(LogStore, StateMachineStore), StoreError> {
    ensure_dir(dir)?;
    // Held from before the directory is read until the store is dropped: a second quorate on
    // the same directory (or a second open in this process) is refused, never let to migrate
    // or write beside this one.
    let dir_lock = lock_dir(dir)?;
    let mut dir_state = inspect_dir(dir)?;
    if let Some(marker) = &dir_state.marker {
        check_format(dir, marker.format_version)?;
        check_identity(dir, &marker.identity, identity)?;
    }

    // sled's files moved aside show that a store was migrated here; without its database and
    // its marker it is lost, not new.
    if dir_state.has_aside && !dir_state.has_db && dir_state.marker.is_none() {
        return Err(StoreError::Corrupt {
            dir: dir.to_path_buf(),
            key: DB_FILE.to_string(),
            problem: format!(
                "the database and {MARKER_FILE} are missing, but {SLED_ASIDE}/ shows that a \
                 store was migrated here"
            ),
        });
    }

    // sled's files beside a marker of the current format, with no database, are not this
    // store: its database is lost, and migrating sled would bring back an older state.
    let migrating = !dir_state.sled_names.is_empty()
        && (dir_state.has_db
            || dir_state
                .marker
                .as_ref()
                .is_none_or(|m| m.format_version < FORMAT_VERSION));
    if migrating {
        dir_state.has_db = migrate::migrate(
            dir,
            identity,
            dir_state.marker.is_some(),
            dir_state.has_db,
            &dir_state.sled_names,
        )?;
    }

    if dir_state.marker.is_some() {
        let path = dir.join(DB_FILE);
        if !dir_state.has_db {
            return Err(StoreError::Corrupt {
                dir: dir.to_path_buf(),
                key: DB_FILE.to_string(),
                problem: format!(
                    "the database file is missing, but {MARKER_FILE} says the store was created"
                ),
            });
        }
        let len = fs::metadata(&path)
            .map_err(|source| StoreError::Unreadable {
                path: path.clone(),
                source,
            })?
            .len();
        if len == 0 {
            return Err(emptied(dir));
        }
    }

    let creating = !dir_state.has_db;
    let db = open_db(dir)?;
    if creating {
        // The new file's name (and the directory's, if it was just made) must survive.
        sync_dir_and_parent(dir).map_err(|source| StoreError::Io {
            dir: dir.to_path_buf(),
            action: "syncing the directory of a new database".into(),
            source,
        })?;
    }
    let shared = Shared {
        dir: dir.to_path_buf(),
        db,
        writer: Mutex::new(None),
        purge_requested: Mutex::new(None),
        _dir_lock: dir_lock,
    };
    let fresh = classify_tables(&shared, dir_state.marker.is_some())?;

    if fresh {
        initialize(&shared, identity)?;
    }
    check_meta(&shared, identity)?;
    if migrating {
        migrate::move_sled_aside(dir)?;
    }
    if dir_state
        .marker
        .as_ref()
        .is_none_or(|m| m.format_version != FORMAT_VERSION)
    {
        write_marker(&shared, identity)?;
    }
    log::validate(&shared)?;
    let applied = state_machine::load(&shared)?;
    check_purged_is_applied(&shared, applied.last_applied)?;

    let shared = Arc::new(shared);
    let log_store = LogStore::new(Arc::clone(&shared));
    tracing::info!(
        dir = %dir.display(),
        identity = %identity,
        created = fresh,
        last_applied = ?applied.last_applied,
        "opened the Raft store"
    );
    Ok((log_store, StateMachineStore::new(shared, applied)))
}

/// redb's page cache. The store holds a bounded log (snapshots purge it) and one small
/// snapshot, a few megabytes at most, so redb's default of 1 GiB would only be a ceiling; this
/// one keeps a daemon's memory predictable and still holds the whole store.
const CACHE_BYTES: usize = 32 * 1024 * 1024;

/// Opens (or creates) `store.redb` in `dir`, verifying every page's checksum, and waiting up
/// to [`LOCK_WAIT`] for the file lock.
fn open_db(dir: &Path) -> Result<redb::Database, StoreError> {
    let path = dir.join(DB_FILE);
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        // The store is small (a bounded log and a snapshot of a few kilobytes), so checking
        // every checksum at each open is cheap, and a damaged file is refused instead of used.
        match redb::Builder::new()
            .set_check_integrity_on_open(true)
            .set_cache_size(CACHE_BYTES)
            .create(&path)
        {
            Ok(db) => return Ok(db),
            Err(redb::DatabaseError::DatabaseAlreadyOpen) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(redb::DatabaseError::Storage(redb::StorageError::Io(source)))
                if source.kind() == io::ErrorKind::PermissionDenied =>
            {
                return Err(StoreError::Unreadable { path, source });
            }
            Err(source) => {
                return Err(StoreError::Database {
                    dir: dir.to_path_buf(),
                    source,
                })
            }
        }
    }
}

/// Creates the data directory if it is missing, and refuses a path that is not a directory.
fn ensure_dir(dir: &Path) -> Result<(), StoreError> {
    match fs::metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            create_dir_durably(dir).map_err(|source| StoreError::CreateDir {
                dir: dir.to_path_buf(),
                source,
            })
        }
        Err(source) => Err(StoreError::Unreadable {
            path: dir.to_path_buf(),
            source,
        }),
        Ok(m) if !m.is_dir() => Err(StoreError::NotADirectory {
            path: dir.to_path_buf(),
        }),
        Ok(_) => Ok(()),
    }
}

/// Takes an exclusive `flock` on the data directory itself, waiting up to [`LOCK_WAIT`] (a
/// store closed a moment ago in this process can still be held by a task that is ending).
///
/// The lock is on the directory, not on a file in it, so it covers everything the store does
/// there, the migration from sled included (sled's and redb's own locks each cover one file
/// and come and go during a migration), and it adds no file to a directory that may turn out
/// not to be a store. `flock` locks belong to an open file description, so a second open in
/// the same process is refused like another process, and the kernel drops the lock when the
/// process dies, so a crash leaves nothing to clean up. The descriptor is close-on-exec, so
/// the commands quorate runs do not inherit the lock.
fn lock_dir(dir: &Path) -> Result<Flock<fs::File>, StoreError> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        let file = fs::File::open(dir).map_err(|source| StoreError::Unreadable {
            path: dir.to_path_buf(),
            source,
        })?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(lock),
            Err((_, Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err((_, Errno::EWOULDBLOCK)) => {
                return Err(StoreError::InUse {
                    dir: dir.to_path_buf(),
                })
            }
            Err((_, errno)) => {
                return Err(StoreError::Io {
                    dir: dir.to_path_buf(),
                    action: "locking the data directory".into(),
                    source: io::Error::from(errno),
                })
            }
        }
    }
}

/// Checks the directory before redb touches it: refuses one that is unreadable or holds files
/// that are not a quorate store's.
fn inspect_dir(dir: &Path) -> Result<DirState, StoreError> {
    let unreadable = |source| StoreError::Unreadable {
        path: dir.to_path_buf(),
        source,
    };
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(unreadable)? {
        let name = entry.map_err(unreadable)?.file_name();
        let Some(name) = name.to_str().map(str::to_owned) else {
            return Err(not_a_store(
                dir,
                format!(
                    "it holds `{}`, which is not part of one",
                    name.to_string_lossy()
                ),
            ));
        };
        let ours = matches!(
            name.as_str(),
            DB_FILE | DB_MIGRATING | SLED_ASIDE | MARKER_FILE | MARKER_TMP
        ) || is_sled_name(&name);
        if !ours {
            return Err(not_a_store(
                dir,
                format!("it holds `{name}`, which is not part of one"),
            ));
        }
        names.push(name);
    }
    let has = |n: &str| names.iter().any(|x| x == n);

    // Every existing file must be readable and writable; say which one is not.
    for file in [DB_FILE, "db", "conf"] {
        if has(file) {
            let path = dir.join(file);
            fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|source| StoreError::Unreadable { path, source })?;
        }
    }
    if has("blobs") {
        let path = dir.join("blobs");
        fs::read_dir(&path).map_err(|source| StoreError::Unreadable { path, source })?;
    }
    if has(MARKER_TMP) {
        // A marker write that crashed before its rename; the marker is rewritten below.
        let path = dir.join(MARKER_TMP);
        fs::remove_file(&path).map_err(|source| StoreError::Unreadable { path, source })?;
    }

    let marker = if has(MARKER_FILE) {
        let path = dir.join(MARKER_FILE);
        let bytes = fs::read(&path).map_err(|source| StoreError::Unreadable { path, source })?;
        let marker: Marker = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
            dir: dir.to_path_buf(),
            key: MARKER_FILE.to_string(),
            problem: format!("the file does not decode: {e}"),
        })?;
        Some(marker)
    } else {
        None
    };
    let mut sled_names: Vec<String> = names.iter().filter(|n| is_sled_name(n)).cloned().collect();
    sled_names.sort();
    Ok(DirState {
        marker,
        has_db: has(DB_FILE),
        sled_names,
        has_aside: has(SLED_ASIDE),
    })
}

/// Decides from the database's tables whether the store is new (`true`), ours (`false`), or
/// foreign.
fn classify_tables(shared: &Shared, has_marker: bool) -> Result<bool, StoreError> {
    let dir = &shared.dir;
    let txn = shared
        .db
        .begin_read()
        .map_err(|e| shared.db_io("starting a read transaction", e))?;
    let mut ours_hold_data = false;
    let mut has_meta = false;
    let tables = txn
        .list_tables()
        .map_err(|e| shared.db_io("listing the tables", e))?;
    for table in tables {
        let name = table.name().to_string();
        if !OUR_TREES.contains(&name.as_str()) {
            return Err(not_a_store(
                dir,
                format!("its database has a table `{name}` that quorate does not use"),
            ));
        }
        let len = match name.as_str() {
            META_TREE => {
                has_meta = true;
                txn.open_table(META).and_then(|t| Ok(t.len()?))
            }
            super::LOG_TREE => txn.open_table(LOG).and_then(|t| Ok(t.len()?)),
            _ => txn.open_table(MACHINE).and_then(|t| Ok(t.len()?)),
        };
        let len = match len {
            Ok(len) => len,
            Err(redb::TableError::TableTypeMismatch(_)) => {
                return Err(not_a_store(
                    dir,
                    format!(
                        "its table `{name}` does not have the key and value types of quorate's"
                    ),
                ))
            }
            Err(e) => return Err(shared.db_io(format!("reading the {name} table"), e)),
        };
        ours_hold_data |= len > 0;
    }
    if txn
        .list_multimap_tables()
        .map_err(|e| shared.db_io("listing the tables", e))?
        .next()
        .is_some()
    {
        return Err(not_a_store(
            dir,
            "its database has multimap tables, which quorate does not use".into(),
        ));
    }
    let meta_has_format = has_meta
        && shared
            .meta_table(&txn)?
            .get(KEY_FORMAT)
            .map_err(|e| shared.db_io("reading meta/format_version", e))?
            .is_some();
    match (meta_has_format, ours_hold_data, has_marker) {
        (true, _, _) => Ok(false),
        (false, false, false) => Ok(true),
        (false, false, true) => Err(emptied(dir)),
        (false, true, _) => Err(StoreError::Corrupt {
            dir: dir.to_path_buf(),
            key: format!("{META_TREE}/{KEY_FORMAT}"),
            problem: "the key is missing although the store holds data".into(),
        }),
    }
}

/// Writes the format version and identity into a new store, creates every table, and makes
/// them durable.
fn initialize(shared: &Shared, identity: &StoreIdentity) -> Result<(), StoreError> {
    let format = encode("the format version", &FORMAT_VERSION)?;
    let identity = encode("the store identity", identity)?;
    shared.write_now(Durability::Immediate, |s, txn| {
        let mut meta = s.open_for_write(txn, META)?;
        meta.insert(KEY_FORMAT, &format[..])
            .map_err(|e| s.db_io("initializing the meta table", e))?;
        meta.insert(KEY_IDENTITY, &identity[..])
            .map_err(|e| s.db_io("initializing the meta table", e))?;
        s.open_for_write(txn, LOG)?;
        s.open_for_write(txn, MACHINE)?;
        Ok(())
    })
}

/// Writes the marker file atomically: temporary file, fsync, rename, fsync the directory.
fn write_marker(shared: &Shared, identity: &StoreIdentity) -> Result<(), StoreError> {
    let marker = Marker {
        format_version: FORMAT_VERSION,
        identity: identity.clone(),
    };
    let bytes = encode("the store marker", &marker)?;
    let io_err = |action: &str| {
        let action = action.to_string();
        move |source| StoreError::Io {
            dir: shared.dir.clone(),
            action,
            source,
        }
    };
    let tmp = shared.dir.join(MARKER_TMP);
    let mut file = fs::File::create(&tmp).map_err(io_err("creating the marker file"))?;
    file.write_all(&bytes)
        .map_err(io_err("writing the marker file"))?;
    file.sync_all().map_err(io_err("syncing the marker file"))?;
    fs::rename(&tmp, shared.dir.join(MARKER_FILE)).map_err(io_err("renaming the marker file"))?;
    sync_dir(&shared.dir).map_err(io_err("syncing the directory after writing the marker"))
}

/// Checks the meta table: format, identity, and that vote, committed and last purged decode.
fn check_meta(shared: &Shared, identity: &StoreIdentity) -> Result<(), StoreError> {
    let missing = |key: &str| StoreError::Corrupt {
        dir: shared.dir.clone(),
        key: format!("{META_TREE}/{key}"),
        problem: "the key is missing".into(),
    };
    shared.read(|txn| {
        let meta = shared.meta_table(txn)?;
        let format: u32 = shared
            .get_json(&meta, META_TREE, KEY_FORMAT)?
            .ok_or_else(|| missing(KEY_FORMAT))?;
        check_format(&shared.dir, format)?;
        if format != FORMAT_VERSION {
            // Only sled held format 1; a migration writes format 2 into redb.
            return Err(StoreError::Corrupt {
                dir: shared.dir.clone(),
                key: format!("{META_TREE}/{KEY_FORMAT}"),
                problem: format!("format {format} was never kept in redb"),
            });
        }
        let stored: StoreIdentity = shared
            .get_json(&meta, META_TREE, KEY_IDENTITY)?
            .ok_or_else(|| missing(KEY_IDENTITY))?;
        check_identity(&shared.dir, &stored, identity)?;
        let _: Option<openraft::Vote<NodeId>> = shared.get_json(&meta, META_TREE, KEY_VOTE)?;
        let _: Option<LogId> = shared.get_json(&meta, META_TREE, KEY_COMMITTED)?;
        let _: Option<LogId> = shared.get_json(&meta, META_TREE, KEY_LAST_PURGED)?;
        Ok(())
    })
}

/// Refuses a log purged beyond what the state machine holds: the entries in between exist
/// nowhere any more. The store never writes this state (a purge stops at the stored applied
/// state, and a snapshot install moves both in one commit, see `log.rs`), so finding it means
/// damage or a store written by another program.
fn check_purged_is_applied(shared: &Shared, last_applied: Option<LogId>) -> Result<(), StoreError> {
    let Some(purged) = shared.last_purged()? else {
        return Ok(());
    };
    if Some(purged.index) > last_applied.map(|a| a.index) {
        return Err(StoreError::Corrupt {
            dir: shared.dir.clone(),
            key: format!("{META_TREE}/{KEY_LAST_PURGED}"),
            problem: format!(
                "the log is purged up to {purged} but the state machine only reached {}, so the entries \
                 in between are lost (a crash during a snapshot install can cause this)",
                last_applied.map_or_else(|| "nothing".to_string(), |a| a.to_string())
            ),
        });
    }
    Ok(())
}

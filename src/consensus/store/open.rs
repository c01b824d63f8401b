//! Opening the store: every check that must pass before openraft may rely on what is on
//! disk, and the creation of a new store.
//!
//! The order matters. The directory is inspected before sled touches it (sled would create
//! files in any directory), the marker file is checked before sled opens (a newer format may
//! not even be sled's), and only then are sled's trees classified and every value decoded.

use serde::{Deserialize, Serialize};
use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::disk::DiskSync;
use super::{
    encode, log, state_machine, LogStore, Shared, StateMachineStore, StoreError, StoreIdentity,
    FORMAT_VERSION, KEY_COMMITTED, KEY_FORMAT, KEY_IDENTITY, KEY_LAST_PURGED, KEY_VOTE, LOG_TREE,
    MACHINE_TREE, MARKER_FILE, MARKER_TMP, META_TREE, OUR_TREES,
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
}

/// Opens (or creates) the Raft store in `dir` for the node `identity`, and returns its log
/// store and state machine for `openraft::Raft::new`.
///
/// Blocks while it checks and fsyncs the store; call it before starting the runtime's work or
/// from `spawn_blocking`. Refuses, with an error naming the file or key, any directory that is
/// unreadable, holds something else, was written by a newer quorate, belongs to another node,
/// or holds a value that does not decode.
pub fn open(
    dir: &Path,
    identity: &StoreIdentity,
) -> Result<(LogStore, StateMachineStore), StoreError> {
    let dir_state = inspect_dir(dir)?;
    if let Some(marker) = &dir_state.marker {
        check_format(dir, marker.format_version)?;
        check_identity(dir, &marker.identity, identity)?;
    }

    let db = open_sled(dir)?;
    let disk = DiskSync::open(dir)?;
    let fresh = classify_trees(dir, &db, dir_state.marker.is_some())?;

    let open_tree = |name: &str| {
        db.open_tree(name).map_err(|source| StoreError::SledIo {
            dir: dir.to_path_buf(),
            action: format!("opening tree {name}"),
            source,
        })
    };
    let shared = Shared {
        dir: dir.to_path_buf(),
        meta: open_tree(META_TREE)?,
        log: open_tree(LOG_TREE)?,
        machine: open_tree(MACHINE_TREE)?,
        db,
        writer: Mutex::new(disk),
    };

    if fresh {
        initialize(&shared, identity)?;
    }
    check_meta(&shared, identity)?;
    if dir_state.marker.is_none() {
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

/// How long [`open_sled`] waits for sled's lock on the database file.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Opens sled in `dir`, waiting up to [`LOCK_WAIT`] for its file lock. A database closed a
/// moment ago in this process can still be held by sled's background flusher, which lets go
/// asynchronously; a store that another live process holds is still refused, after the wait.
fn open_sled(dir: &Path) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match sled::Config::new().path(dir).open() {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(source) => {
                return Err(StoreError::Sled {
                    dir: dir.to_path_buf(),
                    source,
                })
            }
        }
    }
}

/// Checks the directory before sled touches it: creates it if missing, refuses anything that
/// is not a directory, is unreadable, or holds files that are not a quorate store's.
fn inspect_dir(dir: &Path) -> Result<DirState, StoreError> {
    match fs::metadata(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            create_dir_durably(dir).map_err(|source| StoreError::CreateDir {
                dir: dir.to_path_buf(),
                source,
            })?;
            return Ok(DirState { marker: None });
        }
        Err(source) => {
            return Err(StoreError::Unreadable {
                path: dir.to_path_buf(),
                source,
            })
        }
        Ok(m) if !m.is_dir() => {
            return Err(StoreError::NotADirectory {
                path: dir.to_path_buf(),
            })
        }
        Ok(_) => {}
    }

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
            "db" | "conf" | "blobs" | MARKER_FILE | MARKER_TMP
        ) || name.starts_with("snap.");
        if !ours {
            return Err(not_a_store(
                dir,
                format!("it holds `{name}`, which is not part of one"),
            ));
        }
        names.push(name);
    }
    let has = |n: &str| names.iter().any(|x| x == n);

    // Every existing sled file must be readable and writable; say which one is not.
    for file in ["db", "conf"] {
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
        if !has("db") {
            return Err(StoreError::Corrupt {
                dir: dir.to_path_buf(),
                key: "db".to_string(),
                problem: format!(
                    "sled's data file is missing, but {MARKER_FILE} says the store was created"
                ),
            });
        }
        Some(marker)
    } else {
        None
    };
    Ok(DirState { marker })
}

/// Creates `dir` and its missing ancestors, and fsyncs the parent of each one created, so
/// the new directory's name survives a power cut.
fn create_dir_durably(dir: &Path) -> io::Result<()> {
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && !a.exists())
        .collect();
    fs::create_dir_all(dir)?;
    for created in missing {
        let parent = created
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

fn not_a_store(dir: &Path, why: String) -> StoreError {
    StoreError::NotAStore {
        dir: dir.to_path_buf(),
        why,
    }
}

/// Decides from sled's trees whether the store is new (`true`), ours (`false`), or foreign.
fn classify_trees(dir: &Path, db: &sled::Db, has_marker: bool) -> Result<bool, StoreError> {
    let sled_err = |action: &str| {
        let action = action.to_string();
        move |source| StoreError::SledIo {
            dir: dir.to_path_buf(),
            action,
            source,
        }
    };
    if !db.is_empty() {
        return Err(not_a_store(
            dir,
            "sled's default tree holds keys, and quorate never writes there".into(),
        ));
    }
    let default_name = db.name();
    let mut ours_hold_data = false;
    for name in db.tree_names() {
        if name == default_name {
            continue;
        }
        let Some(known) = OUR_TREES.iter().find(|t| t.as_bytes() == &name[..]) else {
            return Err(not_a_store(
                dir,
                format!(
                    "its sled database has a tree `{}` that quorate does not use",
                    String::from_utf8_lossy(&name)
                ),
            ));
        };
        let tree = db.open_tree(known).map_err(sled_err("opening a tree"))?;
        ours_hold_data |= !tree.is_empty();
    }
    let meta_has_format = match db.tree_names().iter().any(|n| n == META_TREE.as_bytes()) {
        true => db
            .open_tree(META_TREE)
            .and_then(|t| t.contains_key(KEY_FORMAT))
            .map_err(sled_err("reading meta/format_version"))?,
        false => false,
    };
    match (meta_has_format, ours_hold_data, has_marker) {
        (true, _, _) => Ok(false),
        (false, false, false) => Ok(true),
        (false, false, true) => Err(StoreError::Corrupt {
            dir: dir.to_path_buf(),
            key: "db".into(),
            problem: format!("the sled database is empty, but {MARKER_FILE} says the store was created; its data is lost"),
        }),
        (false, true, _) => Err(StoreError::Corrupt {
            dir: dir.to_path_buf(),
            key: format!("{META_TREE}/{KEY_FORMAT}"),
            problem: "the key is missing although the store holds data".into(),
        }),
    }
}

/// Writes the format version and identity into a new store and makes them durable.
fn initialize(shared: &Shared, identity: &StoreIdentity) -> Result<(), StoreError> {
    let mut batch = sled::Batch::default();
    batch.insert(KEY_FORMAT, encode("the format version", &FORMAT_VERSION)?);
    batch.insert(KEY_IDENTITY, encode("the store identity", identity)?);
    shared
        .meta
        .apply_batch(batch)
        .map_err(shared.sled_err("initializing the meta tree"))?;
    let mut disk = shared
        .writer
        .lock()
        .map_err(|_| StoreError::WriterFailed("lock poisoned".into()))?;
    disk.sync(&shared.db)
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
    let mut disk = shared
        .writer
        .lock()
        .map_err(|_| StoreError::WriterFailed("lock poisoned".into()))?;
    disk.sync(&shared.db)
}

fn check_format(dir: &Path, found: u32) -> Result<(), StoreError> {
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

fn check_identity(
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

/// Checks the meta tree: format, identity, and that vote, committed and last purged decode.
fn check_meta(shared: &Shared, identity: &StoreIdentity) -> Result<(), StoreError> {
    let missing = |key: &str| StoreError::Corrupt {
        dir: shared.dir.clone(),
        key: format!("{META_TREE}/{key}"),
        problem: "the key is missing".into(),
    };
    let format: u32 = shared
        .get_json(&shared.meta, META_TREE, KEY_FORMAT)?
        .ok_or_else(|| missing(KEY_FORMAT))?;
    check_format(&shared.dir, format)?;
    let stored: StoreIdentity = shared
        .get_json(&shared.meta, META_TREE, KEY_IDENTITY)?
        .ok_or_else(|| missing(KEY_IDENTITY))?;
    check_identity(&shared.dir, &stored, identity)?;
    let _: Option<openraft::Vote<NodeId>> = shared.get_json(&shared.meta, META_TREE, KEY_VOTE)?;
    let _: Option<LogId> = shared.get_json(&shared.meta, META_TREE, KEY_COMMITTED)?;
    let _: Option<LogId> = shared.last_purged()?;
    Ok(())
}

/// Refuses a log purged beyond what the state machine holds: the entries in between exist
/// nowhere any more. openraft 0.9 purges a follower's log right after it hands a received
/// snapshot to the state machine task, so a crash between the two can leave this state.
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

//! The one-time migration of a format-1 store, which quorate kept in sled 0.34, to redb.
//!
//! An operator upgrading quorate should not have to run anything by hand on each member, and a
//! member must never come back empty because its store changed format (an empty member that
//! votes can forget what it acknowledged). So [`open`](super::open) migrates on its own, the
//! first time it finds sled's files, and keeps them:
//!
//! 1. sled's database is opened and checked as before (only quorate's trees, the format and the
//!    identity match); quorate writes nothing to it (sled itself may add a `snap.*` file of its
//!    own page table while it is open);
//! 2. every key and value of the `meta`, `log` and `machine` trees is copied, byte for byte,
//!    into a new redb file `store.redb.migrating`, with the format version set to 2, in one
//!    commit with `Durability::Immediate`;
//! 3. that file is linked as `store.redb`, which fails rather than replace an existing
//!    database, its temporary name is removed and the directory is fsynced;
//! 4. the usual open follows: the database's tables, format and identity are checked;
//! 5. only then are sled's files (`db`, `conf`, `blobs/`, `snap.*`) moved into
//!    `sled-format-1/`, which quorate never reads again (delete it once the cluster runs well
//!    on the new version); a name already there, from an earlier migration, is refused, never
//!    replaced;
//! 6. every value copied is decoded and checked, and the marker file is rewritten with
//!    format 2, which an older quorate refuses as a newer format.
//!
//! A crash at any point is picked up by the next open: before step 3 the sled store is still
//! the store and the half-written `store.redb.migrating` is discarded; after it, `store.redb`
//! is complete and only the move of sled's files is finished (and a temporary name left by a
//! crash right after the link is removed).
//!
//! The whole migration runs under the lock `open` holds on the data directory, so two
//! processes never migrate one store at once.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::Instant;

use redb::{Durability, TableDefinition};

use super::checks::{check_format, check_identity, emptied, not_a_store, LOCK_WAIT};
use super::disk::{create_dir_durably, sync_dir};
use super::{
    encode, StoreError, StoreIdentity, DB_FILE, DB_MIGRATING, FORMAT_VERSION, KEY_FORMAT,
    KEY_IDENTITY, LOG, LOG_TREE, MACHINE, META, META_TREE, OUR_TREES, SLED_ASIDE,
    SLED_FORMAT_VERSION,
};

/// What a format-1 store held, tree by tree, as raw bytes.
#[derive(Default)]
struct SledContent {
    meta: BTreeMap<String, Vec<u8>>,
    log: BTreeMap<u64, Vec<u8>>,
    machine: BTreeMap<String, Vec<u8>>,
}

/// Copies the format-1 store in `dir`, whose sled files are `sled_names`, into a new
/// `store.redb`, or, when a crash interrupted a migration after that (`has_db`: `store.redb`
/// already exists), only clears what the crash left. Returns whether `store.redb` now exists:
/// an empty sled database that never became a store copies nothing, and the caller creates a
/// new store. Moves nothing: the caller moves sled's files aside with [`move_sled_aside`]
/// once the database in place has passed its checks.
pub(super) fn migrate(
    dir: &Path,
    identity: &StoreIdentity,
    has_marker: bool,
    has_db: bool,
    sled_names: &[String],
) -> Result<bool, StoreError> {
    // Refused before anything is written, so that the directory stays as it was.
    check_aside_free(dir, sled_names)?;
    let mut created = has_db;
    if has_db {
        // A crash between the link to `store.redb` and the removal of the temporary name.
        remove_if_present(dir, DB_MIGRATING)?;
    }
    if !has_db {
        if has_marker && !sled_names.iter().any(|n| n == "db") {
            return Err(StoreError::Corrupt {
                dir: dir.to_path_buf(),
                key: "db".to_string(),
                problem: format!(
                    "sled's data file is missing, but {} says the store was created",
                    super::MARKER_FILE
                ),
            });
        }
        let content = read_sled(dir, identity, has_marker);
        // sled lets go of its files on its own threads after the handle is dropped, and may
        // write a last snapshot file meanwhile: wait for that before anything moves.
        wait_for_sled_to_close(dir)?;
        if let Some(content) = content? {
            write_redb(dir, &content)?;
            created = true;
        }
    }
    Ok(created)
}

/// The last step of a migration: moves sled's files into `sled-format-1/`. Called by `open`
/// only once the database in place passed the checks of its format and identity, so a store
/// that is refused (another node's `store.redb` beside this node's sled files, say) is left
/// as it was found.
pub(super) fn move_sled_aside(dir: &Path) -> Result<(), StoreError> {
    // Listed again: sled may have added or removed `snap.*` files while it was open.
    let sled_names = list_sled_names(dir).map_err(|source| StoreError::Unreadable {
        path: dir.to_path_buf(),
        source,
    })?;
    check_aside_free(dir, &sled_names)?;
    move_aside(dir, &sled_names)?;
    tracing::warn!(
        dir = %dir.display(),
        aside = %dir.join(SLED_ASIDE).display(),
        "migrated the Raft store from sled (format 1) to redb (format {FORMAT_VERSION}); sled's files were moved aside and can be deleted once the cluster runs well"
    );
    Ok(())
}

/// Refuses a migration whose files would replace files an earlier migration moved aside:
/// `rename` replaces a file silently, and what is in `sled-format-1/` may be the only copy of
/// an older store.
fn check_aside_free(dir: &Path, sled_names: &[String]) -> Result<(), StoreError> {
    let aside = dir.join(SLED_ASIDE);
    for name in sled_names {
        let path = aside.join(name);
        match fs::symlink_metadata(&path) {
            Ok(_) => {
                return Err(StoreError::AsideOccupied {
                    dir: dir.to_path_buf(),
                    name: name.clone(),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(StoreError::Unreadable { path, source }),
        }
    }
    Ok(())
}

/// Opens sled in `dir`, waiting up to [`LOCK_WAIT`] for its file lock (an older quorate that
/// is stopping may still hold it a moment).
fn open_sled(dir: &Path) -> Result<sled::Db, StoreError> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match sled::Config::new().path(dir).open() {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && Instant::now() < deadline =>
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

/// Waits until no sled instance holds the lock on `dir/db`, that is until every sled thread
/// has let go of the store, for at most [`LOCK_WAIT`].
fn wait_for_sled_to_close(dir: &Path) -> Result<(), StoreError> {
    use std::os::fd::AsRawFd;
    let path = dir.join("db");
    let file = match fs::File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(StoreError::Unreadable { path, source }),
    };
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        // SAFETY: flock on a descriptor this function owns; it takes no pointers.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            // Closing `file` releases the lock.
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(StoreError::Io {
                dir: dir.to_path_buf(),
                action: "waiting for sled to close the store it migrated".into(),
                source: std::io::Error::last_os_error(),
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// The names of sled's files in `dir` now.
fn list_sled_names(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir)? {
        if let Some(name) = entry?.file_name().to_str() {
            if super::open::is_sled_name(name) {
                names.push(name.to_string());
            }
        }
    }
    names.sort();
    Ok(names)
}

/// Reads and checks the sled store: `None` when sled holds no store at all (an older quorate
/// stopped between creating sled's files and writing the first key).
fn read_sled(
    dir: &Path,
    identity: &StoreIdentity,
    has_marker: bool,
) -> Result<Option<SledContent>, StoreError> {
    let sled_err = |action: &str| {
        let action = action.to_string();
        move |source| StoreError::SledIo {
            dir: dir.to_path_buf(),
            action,
            source,
        }
    };
    let db = open_sled(dir)?;
    if !db.is_empty() {
        return Err(not_a_store(
            dir,
            "sled's default tree holds keys, and quorate never writes there".into(),
        ));
    }
    let default_name = db.name();
    let mut content = SledContent::default();
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
        for item in tree.iter() {
            let (key, value) = item.map_err(sled_err(&format!("reading the {known} tree")))?;
            let value = value.to_vec();
            if *known == LOG_TREE {
                let Ok(index) = <[u8; 8]>::try_from(&key[..]).map(u64::from_be_bytes) else {
                    return Err(StoreError::Corrupt {
                        dir: dir.to_path_buf(),
                        key: format!("{LOG_TREE}/{:02x?}", &key[..]),
                        problem: "a log key must be 8 bytes".into(),
                    });
                };
                content.log.insert(index, value);
                continue;
            }
            let Ok(key) = String::from_utf8(key.to_vec()) else {
                return Err(StoreError::Corrupt {
                    dir: dir.to_path_buf(),
                    key: format!("{known}/{:02x?}", &key[..]),
                    problem: "the key is not a name quorate writes".into(),
                });
            };
            match *known {
                META_TREE => content.meta.insert(key, value),
                _ => content.machine.insert(key, value),
            };
        }
    }
    drop(db);

    let holds_data =
        !content.meta.is_empty() || !content.log.is_empty() || !content.machine.is_empty();
    let Some(format) = content.meta.get(KEY_FORMAT) else {
        return match (holds_data, has_marker) {
            (false, false) => Ok(None),
            (false, true) => Err(emptied(dir)),
            (true, _) => Err(StoreError::Corrupt {
                dir: dir.to_path_buf(),
                key: format!("{META_TREE}/{KEY_FORMAT}"),
                problem: "the key is missing although the store holds data".into(),
            }),
        };
    };
    let format: u32 = super::decode(dir, META_TREE, KEY_FORMAT, format)?;
    check_format(dir, format)?;
    if format != SLED_FORMAT_VERSION {
        return Err(StoreError::Corrupt {
            dir: dir.to_path_buf(),
            key: format!("{META_TREE}/{KEY_FORMAT}"),
            problem: format!("format {format} was never kept in sled"),
        });
    }
    let stored = content
        .meta
        .get(KEY_IDENTITY)
        .ok_or_else(|| StoreError::Corrupt {
            dir: dir.to_path_buf(),
            key: format!("{META_TREE}/{KEY_IDENTITY}"),
            problem: "the key is missing".into(),
        })?;
    let stored: StoreIdentity = super::decode(dir, META_TREE, KEY_IDENTITY, stored)?;
    check_identity(dir, &stored, identity)?;
    Ok(Some(content))
}

/// Writes `content` into `store.redb.migrating` in one durable commit, then renames it to
/// `store.redb` and fsyncs the directory.
fn write_redb(dir: &Path, content: &SledContent) -> Result<(), StoreError> {
    let db_err = |action: &str| {
        let action = action.to_string();
        move |e: redb::Error| StoreError::DatabaseIo {
            dir: dir.to_path_buf(),
            action,
            source: e,
        }
    };
    let io_err = |action: &str| {
        let action = action.to_string();
        move |source| StoreError::Io {
            dir: dir.to_path_buf(),
            action,
            source,
        }
    };
    let tmp = dir.join(DB_MIGRATING);
    remove_if_present(dir, DB_MIGRATING)?;
    let format = encode("the format version", &FORMAT_VERSION)?;
    {
        let db = redb::Database::create(&tmp).map_err(|source| StoreError::Database {
            dir: dir.to_path_buf(),
            source,
        })?;
        let mut txn = db
            .begin_write()
            .map_err(|e| db_err("starting the migration")(e.into()))?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| db_err("starting the migration")(e.into()))?;
        // Two-phase like every durable commit of the store (see the store's module doc).
        txn.set_two_phase_commit(true);
        copy_named(&txn, META, &content.meta, Some(&format[..]))
            .map_err(db_err("copying the meta tree"))?;
        copy_named(&txn, MACHINE, &content.machine, None)
            .map_err(db_err("copying the machine tree"))?;
        {
            let mut log = txn
                .open_table(LOG)
                .map_err(|e| db_err("copying the log tree")(e.into()))?;
            for (index, value) in &content.log {
                log.insert(index, &value[..])
                    .map_err(|e| db_err("copying the log tree")(e.into()))?;
            }
        }
        txn.commit()
            .map_err(|e| db_err("committing the migration")(e.into()))?;
    }
    // Never over an existing store.redb: link fails if the name exists, where a rename would
    // replace it, and a process still writing into the replaced file would write into an
    // unlinked inode (the directory lock excludes that; this refusal does not rely on it).
    fs::hard_link(&tmp, dir.join(DB_FILE))
        .map_err(io_err("putting the migrated database in place"))?;
    fs::remove_file(&tmp).map_err(io_err("removing the migrated database's temporary name"))?;
    sync_dir(dir).map_err(io_err("syncing the directory after the migration"))
}

/// Removes `dir/name`, a leftover of an unfinished migration, if it is there.
fn remove_if_present(dir: &Path, name: &str) -> Result<(), StoreError> {
    match fs::remove_file(dir.join(name)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StoreError::Io {
            dir: dir.to_path_buf(),
            action: format!("removing `{name}`, left by an unfinished migration"),
            source,
        }),
    }
}

/// Copies a named-key tree into its table; `format`, if given, replaces `format_version`.
fn copy_named(
    txn: &redb::WriteTransaction,
    table: TableDefinition<'static, &'static str, &'static [u8]>,
    content: &BTreeMap<String, Vec<u8>>,
    format: Option<&[u8]>,
) -> Result<(), redb::Error> {
    let mut table = txn.open_table(table)?;
    for (key, value) in content {
        let value = match format {
            Some(format) if key == KEY_FORMAT => format,
            _ => &value[..],
        };
        table.insert(key.as_str(), value)?;
    }
    Ok(())
}

/// Moves sled's files into `sled-format-1/` and makes the moves durable.
fn move_aside(dir: &Path, sled_names: &[String]) -> Result<(), StoreError> {
    let io_err = |action: String| {
        move |source| StoreError::Io {
            dir: dir.to_path_buf(),
            action,
            source,
        }
    };
    let aside = dir.join(SLED_ASIDE);
    create_dir_durably(&aside).map_err(io_err(format!("creating {}", aside.display())))?;
    for name in sled_names {
        fs::rename(dir.join(name), aside.join(name))
            .map_err(io_err(format!("moving sled's `{name}` into {SLED_ASIDE}")))?;
    }
    sync_dir(&aside).map_err(io_err(format!("syncing {}", aside.display())))?;
    sync_dir(dir).map_err(io_err(
        "syncing the directory after moving sled's files".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_migrated_database_never_replaces_an_existing_one() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        fs::write(dir.join(DB_FILE), b"the store another process writes").expect("write");
        let err = write_redb(dir, &SledContent::default())
            .expect_err("a migration must not put its database over an existing one");
        assert!(
            matches!(&err, StoreError::Io { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists),
            "{err:?}"
        );
        assert_eq!(
            fs::read(dir.join(DB_FILE)).expect("read"),
            b"the store another process writes",
            "the existing database was replaced"
        );
    }
}

//! The store refuses to start on anything but its own, intact data, and says what is wrong:
//! another node's store, a newer format, undecodable values, a damaged or emptied database
//! file (and damaged sled files of a store still to be migrated), foreign directories,
//! unreadable directories, a store already in use.

mod support;
use support::store as common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{entry, identity, log_id, runtime};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::Vote;
use quorate::consensus::store::{self, StoreError, StoreIdentity};

/// Creates a store in `dir` as node 1 with a vote, five entries, a commit index and an
/// applied state, then closes it.
fn populate(dir: &Path) {
    runtime().block_on(async {
        let (mut log, mut sm) = common::open(dir).expect("open a new store");
        log.save_vote(&Vote::new_committed(2, 1))
            .await
            .expect("save vote");
        log.blocking_append((1..=5).map(|i| entry(2, i)))
            .await
            .expect("append");
        log.save_committed(Some(log_id(2, 5)))
            .await
            .expect("save committed");
        sm.apply((1..=5).map(|i| entry(2, i))).await.expect("apply");
    });
}

/// Writes (or with `None` removes) one raw key straight into the redb database, with the
/// store closed. In the `log` table the key is the index as 8 big-endian bytes.
fn poke(dir: &Path, tree: &str, key: &[u8], value: Option<&[u8]>) {
    let db = redb::Database::open(dir.join(store::DB_FILE)).expect("open redb directly");
    let txn = db.begin_write().expect("write transaction");
    {
        if tree == "log" {
            let index = u64::from_be_bytes(key.try_into().expect("an 8-byte log key"));
            let mut table = txn
                .open_table(redb::TableDefinition::<u64, &[u8]>::new("log"))
                .expect("open table");
            match value {
                Some(v) => table.insert(index, v).map(drop),
                None => table.remove(index).map(drop),
            }
            .expect("poke a key");
        } else {
            let key = std::str::from_utf8(key).expect("a text key");
            let mut table = txn
                .open_table(redb::TableDefinition::<&str, &[u8]>::new(tree))
                .expect("open table");
            match value {
                Some(v) => table.insert(key, v).map(drop),
                None => table.remove(key).map(drop),
            }
            .expect("poke a key");
        }
    }
    txn.commit().expect("commit");
}

/// Opens `dir` as node 1 and returns the error, failing the test if it opened.
fn open_err(dir: &Path) -> StoreError {
    match common::open(dir) {
        Ok(_) => panic!(
            "the store in {} opened although it must be refused",
            dir.display()
        ),
        Err(e) => e,
    }
}

/// A populated store in a fresh temporary directory.
fn populated() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("raft");
    populate(&dir);
    (tmp, dir)
}

fn assert_names(err: &StoreError, what: &Path) {
    let message = err.to_string();
    assert!(
        message.contains(&what.display().to_string()),
        "error does not name {}: {message}",
        what.display()
    );
}

#[test]
fn refuses_another_nodes_store() {
    let (_tmp, dir) = populated();
    let err = store::open(&dir, &identity(2))
        .err()
        .expect("node 2 must not open node 1's store");
    assert!(
        matches!(&err, StoreError::IdentityMismatch { stored, expected, .. }
        if stored.node_id == 1 && expected.node_id == 2),
        "{err:?}"
    );
    assert_names(&err, &dir);
    assert!(
        err.to_string().contains("node 1") && err.to_string().contains("node 2"),
        "{err}"
    );

    let other_cluster = StoreIdentity {
        cluster: "other".into(),
        node_id: 1,
    };
    let err = store::open(&dir, &other_cluster)
        .err()
        .expect("another cluster must not open it");
    assert!(
        matches!(err, StoreError::IdentityMismatch { .. }),
        "{err:?}"
    );

    // Even without the marker file, the identity in the database itself is checked.
    fs::remove_file(dir.join(store::MARKER_FILE)).expect("remove marker");
    let err = store::open(&dir, &identity(2))
        .err()
        .expect("node 2 must not open node 1's store");
    assert!(
        matches!(err, StoreError::IdentityMismatch { .. }),
        "{err:?}"
    );
}

#[test]
fn refuses_a_format_from_the_future() {
    let (_tmp, dir) = populated();
    poke(&dir, "meta", b"format_version", Some(b"99"));
    let err = open_err(&dir);
    assert!(
        matches!(err, StoreError::FutureFormat { found: 99, .. }),
        "{err:?}"
    );
    assert_names(&err, &dir);

    // The marker file is read before the database is opened, and refused the same way.
    let marker = r#"{"format_version":7,"cluster":"test-cluster","node_id":1}"#;
    fs::write(dir.join(store::MARKER_FILE), marker).expect("rewrite marker");
    let err = open_err(&dir);
    assert!(
        matches!(err, StoreError::FutureFormat { found: 7, .. }),
        "{err:?}"
    );
}

#[test]
fn refuses_an_undecodable_vote() {
    let (_tmp, dir) = populated();
    poke(&dir, "meta", b"vote", Some(b"{not json"));
    let err = open_err(&dir);
    assert!(
        matches!(&err, StoreError::Corrupt { key, .. } if key == "meta/vote"),
        "{err:?}"
    );
    assert_names(&err, &dir);
    assert!(err.to_string().contains("meta/vote"), "{err}");
}

#[test]
fn refuses_an_undecodable_log_entry() {
    let (_tmp, dir) = populated();
    poke(&dir, "log", &3u64.to_be_bytes(), Some(b"\xff\x00garbage"));
    let err = open_err(&dir);
    assert!(
        matches!(&err, StoreError::Corrupt { key, .. } if key == "log/3"),
        "{err:?}"
    );
    assert!(err.to_string().contains("log/3"), "{err}");
}

#[test]
fn refuses_a_log_with_a_hole() {
    let (_tmp, dir) = populated();
    poke(&dir, "log", &3u64.to_be_bytes(), None);
    let err = open_err(&dir);
    assert!(
        matches!(&err, StoreError::Corrupt { key, problem, .. } if key == "log/4" && problem.contains("hole")),
        "{err:?}"
    );
}

#[test]
fn refuses_an_undecodable_applied_state() {
    let (_tmp, dir) = populated();
    poke(&dir, "machine", b"applied", Some(b"[1,2,3]"));
    let err = open_err(&dir);
    assert!(
        matches!(&err, StoreError::Corrupt { key, .. } if key == "machine/applied"),
        "{err:?}"
    );
    assert!(err.to_string().contains("machine/applied"), "{err}");
}

#[test]
fn refuses_a_damaged_database_file() {
    // The database file overwritten with garbage, of its own length and cut short.
    for (fill, short) in [(0u8, false), (0u8, true), (0x5a, false), (0x5a, true)] {
        let (_tmp, dir) = populated();
        let path = dir.join(store::DB_FILE);
        let len = fs::metadata(&path).expect("database file").len() as usize;
        let len = if short { 4096 } else { len.max(4096) };
        fs::write(&path, vec![fill; len]).expect("overwrite the database");
        let err = open_err(&dir);
        assert!(
            matches!(
                err,
                StoreError::Database { .. } | StoreError::Corrupt { .. }
            ),
            "{err:?}"
        );
        assert_names(&err, &dir);
    }

    // One page in the middle of a valid file damaged: redb's checksums catch it.
    let (_tmp, dir) = populated();
    let path = dir.join(store::DB_FILE);
    let mut bytes = fs::read(&path).expect("read the database");
    let flipped = (4096..bytes.len()).step_by(4096).count();
    let end = bytes.len();
    for page in (4096..end).step_by(4096) {
        for b in &mut bytes[page + 64..(page + 256).min(end)] {
            *b ^= 0xff;
        }
    }
    assert!(flipped > 0, "the database has only its header page");
    fs::write(&path, bytes).expect("write the damaged database");
    let err = open_err(&dir);
    assert!(
        matches!(
            err,
            StoreError::Database { .. } | StoreError::Corrupt { .. }
        ),
        "{err:?}"
    );
    assert_names(&err, &dir);
}

#[test]
fn refuses_damaged_sled_files_of_a_store_to_migrate() {
    // sled's data file overwritten with garbage, with and without sled's page-table snapshot.
    for (fill, drop_snapshots) in [(0u8, false), (0u8, true), (0x5a, false), (0x5a, true)] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("raft");
        common::write_sled_store(&dir, 1, true);
        let len = fs::metadata(dir.join("db")).expect("db file").len() as usize;
        fs::write(dir.join("db"), vec![fill; len.max(4096)]).expect("overwrite db");
        if drop_snapshots {
            for entry in fs::read_dir(&dir).expect("list dir") {
                let path = entry.expect("entry").path();
                if path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("snap."))
                {
                    fs::remove_file(path).expect("remove snapshot");
                }
            }
        }
        let err = open_err(&dir);
        assert!(
            matches!(err, StoreError::Sled { .. } | StoreError::Corrupt { .. }),
            "{err:?}"
        );
        assert_names(&err, &dir);
        assert!(
            !dir.join(store::DB_FILE).exists(),
            "a refused migration left a database behind"
        );
    }
}

#[test]
fn refuses_a_store_whose_data_vanished() {
    // The database removed but the marker kept: redb would happily create an empty database.
    let (_tmp, dir) = populated();
    for entry in fs::read_dir(&dir).expect("list dir") {
        let path = entry.expect("entry").path();
        if path.file_name().is_some_and(|n| n != store::MARKER_FILE) {
            if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            }
            .expect("remove");
        }
    }
    let err = open_err(&dir);
    assert!(
        matches!(&err, StoreError::Corrupt { key, .. } if key == store::DB_FILE),
        "{err:?}"
    );
    assert!(
        !dir.join(store::DB_FILE).exists(),
        "the refusal created a database"
    );

    // An empty file in its place (a truncation) is refused, and left as it is.
    fs::write(dir.join(store::DB_FILE), b"").expect("create an empty file");
    let err = open_err(&dir);
    assert!(
        matches!(&err, StoreError::Corrupt { problem, .. } if problem.contains("lost")),
        "{err:?}"
    );
    assert_eq!(
        fs::metadata(dir.join(store::DB_FILE)).expect("stat").len(),
        0,
        "the refusal wrote into the empty file"
    );

    // An empty redb database in place of the real one is refused too.
    fs::remove_file(dir.join(store::DB_FILE)).expect("remove");
    drop(redb::Database::create(dir.join(store::DB_FILE)).expect("create an empty database"));
    let err = open_err(&dir);
    assert!(
        matches!(&err, StoreError::Corrupt { problem, .. } if problem.contains("lost")),
        "{err:?}"
    );

    // So is an empty sled database behind a marker of the sled format.
    let (_tmp, dir) = populated();
    fs::remove_file(dir.join(store::DB_FILE)).expect("remove the database");
    let marker = r#"{"format_version":1,"cluster":"test-cluster","node_id":1}"#;
    fs::write(dir.join(store::MARKER_FILE), marker).expect("rewrite marker");
    drop(sled::open(&dir).expect("create an empty sled database"));
    let err = open_err(&dir);
    assert!(
        matches!(&err, StoreError::Corrupt { problem, .. } if problem.contains("lost")),
        "{err:?}"
    );
}

#[test]
fn refuses_a_directory_that_is_not_a_store() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("raft");
    fs::create_dir(&dir).expect("mkdir");
    fs::write(dir.join("notes.txt"), "hello").expect("write");
    let err = open_err(&dir);
    assert!(
        matches!(&err, StoreError::NotAStore { why, .. } if why.contains("notes.txt")),
        "{err:?}"
    );
    assert_names(&err, &dir);
    assert!(
        dir.join("notes.txt").exists() && !dir.join(store::DB_FILE).exists(),
        "the foreign directory was touched"
    );

    // Another program's redb database under the store's file name.
    let other_redb = tmp.path().join("other-redb");
    fs::create_dir(&other_redb).expect("mkdir");
    {
        let db = redb::Database::create(other_redb.join(store::DB_FILE)).expect("redb");
        let txn = db.begin_write().expect("write transaction");
        txn.open_table(redb::TableDefinition::<&str, &str>::new("users"))
            .expect("table")
            .insert("alice", "x")
            .expect("insert");
        txn.commit().expect("commit");
    }
    let err = open_err(&other_redb);
    assert!(
        matches!(&err, StoreError::NotAStore { why, .. } if why.contains("users")),
        "{err:?}"
    );

    // A table with quorate's name but other types.
    let wrong_types = tmp.path().join("wrong-types");
    fs::create_dir(&wrong_types).expect("mkdir");
    {
        let db = redb::Database::create(wrong_types.join(store::DB_FILE)).expect("redb");
        let txn = db.begin_write().expect("write transaction");
        txn.open_table(redb::TableDefinition::<u32, u32>::new("meta"))
            .expect("table")
            .insert(1, 2)
            .expect("insert");
        txn.commit().expect("commit");
    }
    let err = open_err(&wrong_types);
    assert!(
        matches!(&err, StoreError::NotAStore { why, .. } if why.contains("meta")),
        "{err:?}"
    );

    // Another program's sled database (sled's files are read as a store still to be migrated).
    let other = tmp.path().join("other-sled");
    {
        let db = sled::open(&other).expect("sled");
        db.open_tree("users")
            .expect("tree")
            .insert("alice", "x")
            .expect("insert");
        db.flush().expect("flush");
    }
    let err = open_err(&other);
    assert!(
        matches!(&err, StoreError::NotAStore { why, .. } if why.contains("users")),
        "{err:?}"
    );

    // Keys in sled's default tree, which quorate never writes.
    let default_tree = tmp.path().join("default-tree");
    {
        let db = sled::open(&default_tree).expect("sled");
        db.insert("k", "v").expect("insert");
        db.flush().expect("flush");
    }
    let err = open_err(&default_tree);
    assert!(matches!(err, StoreError::NotAStore { .. }), "{err:?}");
}

#[test]
fn refuses_a_file_as_data_dir() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("raft");
    fs::write(&path, "not a directory").expect("write");
    let err = open_err(&path);
    assert!(matches!(err, StoreError::NotADirectory { .. }), "{err:?}");
    assert_names(&err, &path);
}

#[test]
fn refuses_a_store_already_in_use() {
    let (_tmp, dir) = populated();
    let _first = common::open(&dir).expect("first open");
    let err = open_err(&dir);
    assert!(matches!(err, StoreError::InUse { .. }), "{err:?}");
    assert_names(&err, &dir);
}

#[test]
fn a_second_open_from_another_thread_is_refused_as_in_use() {
    let (_tmp, dir) = populated();
    let _first = common::open(&dir).expect("first open");
    let second = std::thread::spawn({
        let dir = dir.clone();
        move || common::open(&dir).err()
    })
    .join()
    .expect("the second open's thread")
    .expect("a second open of a store in use must be refused");
    assert!(matches!(second, StoreError::InUse { .. }), "{second:?}");
    assert!(second.to_string().contains("in use"), "{second}");
    assert_names(&second, &dir);
}

#[test]
fn finishes_an_interrupted_creation() {
    // A crash after redb created its file but before quorate wrote anything.
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("raft");
    fs::create_dir(&dir).expect("mkdir");
    drop(redb::Database::create(dir.join(store::DB_FILE)).expect("redb"));
    let (log, _sm) = common::open(&dir).expect("an empty database is a store being created");
    assert!(log.is_pristine().expect("pristine"));
    drop((log, _sm));
    assert!(dir.join(store::MARKER_FILE).exists());

    // The same crash of an older quorate, which created sled's files: they are moved aside.
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("raft");
    drop(sled::open(&dir).expect("sled"));
    let (log, _sm) = common::open(&dir).expect("an empty sled database is a store being created");
    assert!(log.is_pristine().expect("pristine"));
    drop((log, _sm));
    assert!(dir.join(store::MARKER_FILE).exists());
    assert!(!dir.join("db").exists() && dir.join(store::SLED_ASIDE).join("db").exists());

    // A crash after the meta table was written but before the marker was.
    let (_tmp, dir) = populated();
    fs::remove_file(dir.join(store::MARKER_FILE)).expect("remove marker");
    let (log, sm) = common::open(&dir).expect("a store without its marker still opens");
    assert!(!log.is_pristine().expect("pristine"));
    assert_eq!(sm.applied().last_applied, Some(log_id(2, 5)));
    assert!(
        dir.join(store::MARKER_FILE).exists(),
        "the marker was not rewritten"
    );
}

const UNREADABLE_ENV: &str = "QUORATE_TEST_UNREADABLE_DIR";

#[test]
fn refuses_an_unreadable_directory() {
    let tmp = tempfile::tempdir().expect("tempdir");
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).expect("chmod tempdir");
    let dir = tmp.path().join("raft");
    populate(&dir);
    let guard = RestoreMode(dir.clone());
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o000)).expect("chmod 000");

    if fs::read_dir(&dir).is_err() {
        // Unprivileged: the permission check applies to us.
        let err = open_err(&dir);
        assert!(matches!(err, StoreError::Unreadable { .. }), "{err:?}");
        assert_names(&err, &dir);
        return;
    }

    // Running as root, which reads anything: check from a child running as `nobody`. The
    // child runs a copy of this test binary placed in the world-readable temporary directory:
    // the checkout (and so `target/`) may lie inside a directory only root can enter, such as
    // one made by `mktemp -d`, where `nobody` could not execute the original.
    let exe = tmp.path().join("store_refuse_child");
    fs::copy(std::env::current_exe().expect("current exe"), &exe).expect("copy the test binary");
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).expect("chmod the copy");
    let spawned = Command::new(&exe)
        .args([
            "--exact",
            "child_opens_unreadable_store",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(UNREADABLE_ENV, &dir)
        .uid(65534)
        .gid(65534)
        .output();
    let output = match spawned {
        Ok(output) => output,
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!("cannot run a child as uid 65534 to test permissions: {e}")
        }
        Err(e) => {
            println!("SKIPPED: cannot run a child as uid 65534 to test permissions ({e})");
            return;
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    // libtest prints the test's name on the same line, before the child's own output.
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("REFUSED: ").map(|(_, r)| r))
        .unwrap_or_else(|| {
            panic!(
                "the child did not report a refusal:\n{stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    assert!(output.status.success(), "the child failed:\n{stdout}");
    assert!(
        line.contains(&dir.display().to_string()) && line.contains("ermission"),
        "{line}"
    );
    drop(guard);
}

/// Helper process of `refuses_an_unreadable_directory`; does nothing useful on its own.
#[test]
#[ignore = "helper process for refuses_an_unreadable_directory"]
fn child_opens_unreadable_store() {
    let dir = std::env::var_os(UNREADABLE_ENV).expect("run by refuses_an_unreadable_directory");
    match common::open(Path::new(&dir)) {
        Ok(_) => panic!("the unreadable store opened"),
        Err(e @ StoreError::Unreadable { .. }) => println!("REFUSED: {e}"),
        Err(e) => panic!("wrong error for an unreadable store: {e:?}"),
    }
}

/// Gives the directory its permissions back so the tempdir can be removed, even on failure.
struct RestoreMode(PathBuf);

impl Drop for RestoreMode {
    fn drop(&mut self) {
        let _ = fs::set_permissions(&self.0, fs::Permissions::from_mode(0o755));
    }
}

#[test]
fn refuses_a_log_purged_beyond_the_applied_state() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("raft");
    runtime().block_on(async {
        let (mut log, mut sm) = common::open(&dir).expect("open");
        log.blocking_append((1..=5).map(|i| entry(2, i)))
            .await
            .expect("append");
        sm.apply((1..=3).map(|i| entry(2, i))).await.expect("apply");
    });
    // The store's own purge never goes past the applied state: write the damage directly.
    let purged = serde_json::to_vec(&log_id(2, 5)).expect("encode");
    poke(&dir, "meta", b"last_purged", Some(&purged));
    for index in 1..=5u64 {
        poke(&dir, "log", &index.to_be_bytes(), None);
    }
    let err = open_err(&dir);
    assert!(
        matches!(&err, StoreError::Corrupt { key, .. } if key == "meta/last_purged"),
        "{err:?}"
    );
    assert!(err.to_string().contains("lost"), "{err}");
}

#[test]
fn refuses_a_store_whose_last_acknowledged_vote_was_damaged() {
    // A crash right after `save_vote(term 5)` returned, and the pages of that commit damaged
    // since (a bad sector, a lying cache). Falling back to the commit before would forget the
    // vote, and the node could vote again in term 5: the store must refuse to open instead.
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("raft");
    let path = dir.join(store::DB_FILE);
    let rt = runtime();
    let (before, mut after) = rt.block_on(async {
        let (mut log, _sm) = common::open(&dir).expect("open");
        log.save_vote(&Vote::new(4, 1))
            .await
            .expect("vote in term 4");
        // Each commit returned after its fdatasync, so the file as read now is what a crash
        // at this point leaves on disk.
        let before = fs::read(&path).expect("read the database");
        log.save_vote(&Vote::new(5, 2))
            .await
            .expect("vote in term 5");
        let after = fs::read(&path).expect("read the database");
        (before, after)
    });
    // The store is closed; put back the file as the crash left it (a clean close commits once
    // more, which a crash does not).

    // Damage only the pages that the last commit changed, and leave the header page alone: it
    // is the data of the acknowledged commit that is damaged.
    const PAGE: usize = 4096;
    let mut damaged = 0;
    for start in (PAGE..after.len()).step_by(PAGE) {
        let end = (start + PAGE).min(after.len());
        if before.get(start..end) == Some(&after[start..end]) {
            continue;
        }
        for b in &mut after[start + 64..(start + 256).min(end)] {
            *b ^= 0xff;
        }
        damaged += 1;
    }
    assert!(
        damaged > 0,
        "the last commit changed no page but the header"
    );
    fs::write(&path, &after).expect("write the damaged database");

    match common::open(&dir) {
        Ok((mut log, _sm)) => {
            let vote = rt.block_on(log.read_vote()).expect("read the vote");
            panic!("the damaged store opened, with the vote {vote:?} ({damaged} pages damaged)");
        }
        Err(err) => {
            assert!(matches!(err, StoreError::Database { .. }), "{err:?}");
            assert!(err.to_string().contains("2-phase"), "{err}");
            assert_names(&err, &dir);
        }
    }
}

#[test]
fn refuses_a_migrated_store_whose_database_and_marker_are_gone() {
    // sled-format-1/ shows a store lived here; an empty store in its place would forget it.
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("raft");
    common::write_sled_store(&dir, 1, true);
    drop(common::open(&dir).expect("migrate the sled store"));
    fs::remove_file(dir.join(store::DB_FILE)).expect("lose the database");
    fs::remove_file(dir.join(store::MARKER_FILE)).expect("lose the marker");
    let err = open_err(&dir);
    assert!(
        matches!(&err, StoreError::Corrupt { key, problem, .. }
            if key == store::DB_FILE && problem.contains(store::SLED_ASIDE)),
        "{err:?}"
    );
    assert!(
        !dir.join(store::DB_FILE).exists(),
        "the refusal created a database"
    );
}

#[test]
fn refuses_a_redb_store_that_claims_the_sled_format() {
    // Format 1 was only ever kept in sled; a redb database saying 1 is not one quorate wrote.
    let (_tmp, dir) = populated();
    poke(&dir, "meta", b"format_version", Some(b"1"));
    let err = open_err(&dir);
    assert!(
        matches!(&err, StoreError::Corrupt { key, .. } if key == "meta/format_version"),
        "{err:?}"
    );
}

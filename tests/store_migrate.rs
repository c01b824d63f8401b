//! A store that an older quorate kept in sled (format 1) is migrated to redb the first time it
//! is opened: everything it held is there afterwards, sled's files are kept aside, a second
//! open does not migrate again, a migration cut short by a crash is finished, and a store
//! that must be refused is refused before anything is changed.

mod support;
use support::store as common;

use std::fs;
use std::path::Path;

use common::{identity, log_id, runtime, write_sled_store};
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{EntryPayload, RaftLogReader, Vote};
use quorate::consensus::store::{self, StoreError, FORMAT_VERSION};

/// Opens `dir` as node 1 and checks it holds exactly what [`write_sled_store`] wrote.
fn assert_holds_the_sled_content(dir: &Path) {
    runtime().block_on(async {
        let (mut log, mut sm) = common::open(dir).expect("open the store");
        assert!(!log.is_pristine().expect("pristine"));
        assert_eq!(
            log.read_vote().await.expect("vote"),
            Some(Vote::new_committed(2, 1))
        );
        assert_eq!(
            log.read_committed().await.expect("committed"),
            Some(log_id(2, 5))
        );
        let state = log.get_log_state().await.expect("log state");
        assert_eq!(state.last_purged_log_id, None);
        assert_eq!(state.last_log_id, Some(log_id(2, 5)));
        let entries = log.try_get_log_entries(0..100).await.expect("read the log");
        assert_eq!(entries.len(), 5);
        for (e, index) in entries.iter().zip(1..) {
            assert_eq!(e.log_id, log_id(2, index));
            match &e.payload {
                EntryPayload::Normal(request) => assert_eq!(request, &common::request(index)),
                other => panic!("entry {index} holds {other:?}"),
            }
        }
        let (last_applied, _) = sm.applied_state().await.expect("applied state");
        assert_eq!(last_applied, Some(log_id(2, 5)));
        assert_eq!(sm.applied().last_applied, Some(log_id(2, 5)));
    });
}

/// The format version the marker file records.
fn marker_format(dir: &Path) -> u64 {
    let bytes = fs::read(dir.join(store::MARKER_FILE)).expect("read the marker");
    let marker: serde_json::Value = serde_json::from_slice(&bytes).expect("marker is JSON");
    marker["format_version"].as_u64().expect("a format version")
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("list dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_sled_store_is_migrated_once_and_its_files_kept_aside() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("raft");
    write_sled_store(&dir, 1, true);
    let sled_files: Vec<String> = names(&dir)
        .into_iter()
        .filter(|n| n != store::MARKER_FILE)
        .collect();
    assert!(sled_files.iter().any(|n| n == "db"), "{sled_files:?}");

    assert_holds_the_sled_content(&dir);
    assert_eq!(
        names(&dir),
        [store::MARKER_FILE, store::SLED_ASIDE, store::DB_FILE],
        "after the migration only the database, the marker and sled's old files remain"
    );
    let aside = names(&dir.join(store::SLED_ASIDE));
    for name in ["blobs", "conf", "db"] {
        assert!(
            aside.iter().any(|n| n == name),
            "{name} not kept: {aside:?}"
        );
    }
    assert!(
        aside
            .iter()
            .all(|n| sled_files.contains(n) || n.starts_with("snap.")),
        "{aside:?}"
    );
    assert_eq!(marker_format(&dir), u64::from(FORMAT_VERSION));

    // The second open reads redb only; sled's files aside are not read again.
    fs::remove_file(dir.join(store::SLED_ASIDE).join("db")).expect("remove sled's db aside");
    assert_holds_the_sled_content(&dir);

    // A migrated store keeps working: a write after the migration survives a reopen.
    runtime().block_on(async {
        let (mut log, _sm) = common::open(&dir).expect("open");
        log.save_vote(&Vote::new_committed(3, 1))
            .await
            .expect("save vote");
    });
    runtime().block_on(async {
        let (mut log, _sm) = common::open(&dir).expect("reopen");
        assert_eq!(
            log.read_vote().await.expect("vote"),
            Some(Vote::new_committed(3, 1))
        );
    });
}

#[test]
fn a_sled_store_without_its_marker_is_migrated_too() {
    // An older quorate that crashed after writing sled but before its marker.
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("raft");
    write_sled_store(&dir, 1, false);
    assert_holds_the_sled_content(&dir);
    assert_eq!(marker_format(&dir), u64::from(FORMAT_VERSION));
    assert!(dir.join(store::SLED_ASIDE).join("db").exists());
}

#[test]
fn a_migration_cut_short_is_finished() {
    // A crash while the new database was being written: the half-written file is discarded
    // and the migration starts over from sled, which is unchanged.
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("raft");
    write_sled_store(&dir, 1, true);
    fs::write(dir.join("store.redb.migrating"), vec![0x5a; 8192]).expect("a half-written file");
    assert_holds_the_sled_content(&dir);
    assert!(!dir.join("store.redb.migrating").exists());

    // A crash after the new database was in place but before sled's files were moved and the
    // marker rewritten: the next open only finishes the move and the marker.
    let aside = dir.join(store::SLED_ASIDE);
    for name in names(&aside) {
        fs::rename(aside.join(&name), dir.join(&name)).expect("move a sled file back");
    }
    fs::remove_dir(&aside).expect("remove the aside directory");
    let marker = r#"{"format_version":1,"cluster":"test-cluster","node_id":1}"#;
    fs::write(dir.join(store::MARKER_FILE), marker).expect("rewrite the format-1 marker");
    // Whatever sled holds now is not read again: the database in place is the store.
    fs::write(dir.join("db"), vec![0u8; 4096]).expect("damage sled's db");
    assert_holds_the_sled_content(&dir);
    assert_eq!(
        names(&dir),
        [store::MARKER_FILE, store::SLED_ASIDE, store::DB_FILE]
    );
    assert_eq!(marker_format(&dir), u64::from(FORMAT_VERSION));
}

#[test]
fn a_sled_store_of_another_node_is_refused_unchanged() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("raft");
    write_sled_store(&dir, 2, true);
    let untouched = |dir: &Path| {
        let now = names(dir);
        for name in ["conf", "db", store::MARKER_FILE] {
            assert!(now.iter().any(|n| n == name), "{name} is gone: {now:?}");
        }
        assert!(
            !now.iter()
                .any(|n| n == store::DB_FILE || n == store::SLED_ASIDE),
            "a refused store was migrated: {now:?}"
        );
    };
    let err = common::open(&dir)
        .err()
        .expect("node 1 must not open node 2's store");
    assert!(
        matches!(&err, StoreError::IdentityMismatch { stored, .. } if stored.node_id == 2),
        "{err:?}"
    );
    untouched(&dir);

    // Without the marker the identity in sled's meta tree is checked.
    let marker = fs::read(dir.join(store::MARKER_FILE)).expect("read the marker");
    fs::remove_file(dir.join(store::MARKER_FILE)).expect("remove the marker");
    let err = store::open(&dir, &identity(1))
        .err()
        .expect("node 1 must not open node 2's store");
    assert!(
        matches!(&err, StoreError::IdentityMismatch { stored, .. } if stored.node_id == 2),
        "{err:?}"
    );
    fs::write(dir.join(store::MARKER_FILE), marker).expect("put the marker back");
    untouched(&dir);

    // Its own node migrates it.
    let (log, _sm) = store::open(&dir, &identity(2)).expect("node 2 opens its store");
    assert!(!log.is_pristine().expect("pristine"));
}

#[test]
fn a_sled_store_with_an_undecodable_entry_is_refused_after_the_copy() {
    // Values are copied as they are and then checked like any store's: the error names the
    // key, and sled's files stay aside for an inspection.
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("raft");
    write_sled_store(&dir, 1, true);
    {
        let db = sled::open(&dir).expect("open sled");
        db.open_tree("log")
            .expect("log tree")
            .insert(3u64.to_be_bytes(), b"\xff\x00garbage".to_vec())
            .expect("insert");
        db.flush().expect("flush");
    }
    let err = common::open(&dir)
        .err()
        .expect("a damaged entry must be refused");
    assert!(
        matches!(&err, StoreError::Corrupt { key, .. } if key == "log/3"),
        "{err:?}"
    );
    assert!(dir.join(store::SLED_ASIDE).join("db").exists());
    let again = common::open(&dir).err().expect("still refused");
    assert!(matches!(again, StoreError::Corrupt { .. }), "{again:?}");
}

#[test]
fn sled_files_beside_a_lost_redb_database_are_not_migrated() {
    // The marker says the store is redb; its database is gone and some sled files are there
    // (restored from an old backup, say). Migrating them would bring back an older state.
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("raft");
    drop(common::open(&dir).expect("create a redb store"));
    fs::remove_file(dir.join(store::DB_FILE)).expect("lose the database");
    write_sled_store(&dir, 1, false);
    let err = common::open(&dir).err().expect("must be refused");
    assert!(
        matches!(&err, StoreError::Corrupt { key, .. } if key == store::DB_FILE),
        "{err:?}"
    );
    assert!(dir.join("db").exists() && !dir.join(store::SLED_ASIDE).exists());
}

#[test]
fn a_sled_store_that_another_process_holds_is_not_migrated() {
    // Another quorate holds the data directory (here: its lock taken the way a running store
    // takes it), for instance in the middle of its own migration. A second process must not
    // migrate beside it: it could put a second store.redb over the first.
    use nix::fcntl::{Flock, FlockArg};
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("raft");
    write_sled_store(&dir, 1, true);
    let before = names(&dir);
    let held = Flock::lock(
        fs::File::open(&dir).expect("open the directory"),
        FlockArg::LockExclusiveNonblock,
    )
    .map_err(|(_, e)| e)
    .expect("lock the directory");
    let err = common::open(&dir)
        .err()
        .expect("a store another process holds must be refused");
    assert!(matches!(err, StoreError::InUse { .. }), "{err:?}");
    assert_eq!(
        names(&dir),
        before,
        "the refused open changed the directory"
    );
    drop(held);
    assert_holds_the_sled_content(&dir);
}

#[test]
fn this_nodes_sled_store_beside_another_nodes_database_is_refused_unchanged() {
    // A crash between the link of store.redb and the move of sled's files looks like this,
    // except that here store.redb is another node's (a copied file, a wrong restore): it must
    // be refused before sled's files, the only copy of this node's store, are moved.
    let tmp = tempfile::tempdir().expect("tempdir");
    let other = tmp.path().join("other");
    drop(store::open(&other, &identity(2)).expect("create node 2's store"));
    let dir = tmp.path().join("raft");
    write_sled_store(&dir, 1, true);
    fs::copy(other.join(store::DB_FILE), dir.join(store::DB_FILE)).expect("copy node 2's db");
    let before = names(&dir);

    let err = common::open(&dir)
        .err()
        .expect("node 1 must not open node 2's database");
    assert!(
        matches!(&err, StoreError::IdentityMismatch { stored, .. } if stored.node_id == 2),
        "{err:?}"
    );
    assert_eq!(
        names(&dir),
        before,
        "the refused open changed the directory"
    );
}

#[test]
fn a_migration_never_replaces_what_an_earlier_one_moved_aside() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("raft");
    write_sled_store(&dir, 1, true);
    let aside = dir.join(store::SLED_ASIDE);
    fs::create_dir(&aside).expect("mkdir the aside directory");
    fs::write(aside.join("conf"), b"an earlier migration's conf").expect("write");
    let before = names(&dir);

    let err = common::open(&dir)
        .err()
        .expect("a migration onto an occupied aside directory must be refused");
    assert!(
        matches!(&err, StoreError::AsideOccupied { name, .. } if name == "conf"),
        "{err:?}"
    );
    assert!(err.to_string().contains(store::SLED_ASIDE), "{err}");
    assert_eq!(
        names(&dir),
        before,
        "the refused open changed the directory"
    );
    assert_eq!(
        fs::read(aside.join("conf")).expect("read"),
        b"an earlier migration's conf",
        "the earlier migration's file was replaced"
    );
}

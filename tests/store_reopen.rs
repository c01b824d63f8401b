//! Closing and reopening the store keeps everything openraft relies on: vote, commit index,
//! log (with its purge and truncation), applied state, membership and snapshot; and the
//! applied state is published on the watch channel after applies and snapshot installs. Also:
//! applying a grant checks its target against the membership applied before it.

mod support;
use support::store as common;

use std::collections::{BTreeMap, BTreeSet};

use common::{entry, log_id, runtime};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine, StorageHelper};
use openraft::{EntryPayload, Membership, RaftLogReader, RaftSnapshotBuilder, Vote};
use quorate::consensus::types::{Member, Role, StoredMembership, TypeConfig};

/// A membership entry at `index` with the test cluster's three members.
fn membership_entry(term: u64, index: u64) -> openraft::Entry<TypeConfig> {
    let member = |name: &str, role| Member {
        name: name.into(),
        addr: format!("{name}:7000"),
        role,
    };
    let nodes = BTreeMap::from([
        (1, member("node1", Role::Management)),
        (2, member("node2", Role::Management)),
        (3, member("witness", Role::Witness)),
    ]);
    openraft::Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Membership(Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes)),
    }
}

/// Entries 1..=`last`: a membership entry at 1, normal entries after it.
fn entries(term: u64, last: u64) -> Vec<openraft::Entry<TypeConfig>> {
    std::iter::once(membership_entry(term, 1))
        .chain((2..=last).map(|i| entry(term, i)))
        .collect()
}

#[test]
fn reopen_keeps_vote_commit_log_applied_state_and_snapshot() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("raft");
    let rt = runtime();

    let (applied_before, snapshot_before) = rt.block_on(async {
        let (mut log, mut sm) = common::open(&dir).expect("open");
        assert!(
            log.is_pristine().expect("pristine"),
            "a new store must be pristine"
        );
        let mut watch = sm.subscribe();

        log.save_vote(&Vote::new_committed(3, 1))
            .await
            .expect("save vote");
        assert!(
            !log.is_pristine().expect("pristine"),
            "a store with a vote is not pristine"
        );
        log.blocking_append(entries(3, 20)).await.expect("append");
        log.save_committed(Some(log_id(3, 15)))
            .await
            .expect("save committed");
        sm.apply(entries(3, 15)).await.expect("apply");

        assert!(
            watch.has_changed().expect("watch open"),
            "apply did not publish the applied state"
        );
        let published = watch.borrow_and_update().clone();
        assert_eq!(published.last_applied, Some(log_id(3, 15)));
        assert_eq!(published.membership.log_id(), &Some(log_id(3, 1)));

        let snapshot = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("build snapshot");
        log.purge(log_id(3, 4)).await.expect("purge");
        log.truncate(log_id(3, 19)).await.expect("truncate");
        (published, snapshot.meta)
    });

    rt.block_on(async {
        let (mut log, mut sm) = common::open(&dir).expect("reopen");
        assert!(!log.is_pristine().expect("pristine"));
        assert_eq!(
            log.read_vote().await.expect("vote"),
            Some(Vote::new_committed(3, 1))
        );
        assert_eq!(
            log.read_committed().await.expect("committed"),
            Some(log_id(3, 15))
        );

        let state = log.get_log_state().await.expect("log state");
        assert_eq!(state.last_purged_log_id, Some(log_id(3, 4)));
        assert_eq!(
            state.last_log_id,
            Some(log_id(3, 18)),
            "truncate from 19 must remove 19 and 20"
        );
        let read = log.try_get_log_entries(0..100).await.expect("read log");
        let indexes: Vec<u64> = read.iter().map(|e| e.log_id.index).collect();
        assert_eq!(indexes, (5..=18).collect::<Vec<_>>());
        for e in &read {
            match &e.payload {
                EntryPayload::Normal(request) => {
                    assert_eq!(request, &common::request(e.log_id.index))
                }
                other => panic!("entry {} has payload {other:?}", e.log_id.index),
            }
        }

        assert_eq!(
            sm.applied(),
            applied_before,
            "the applied state changed across reopen"
        );
        assert_eq!(
            *sm.subscribe().borrow(),
            applied_before,
            "the watch starts from the stored state"
        );
        let (last_applied, membership) = sm.applied_state().await.expect("applied state");
        assert_eq!(last_applied, Some(log_id(3, 15)));
        assert_eq!(membership, applied_before.membership);

        let snapshot = sm
            .get_current_snapshot()
            .await
            .expect("snapshot")
            .expect("a stored snapshot");
        assert_eq!(snapshot.meta, snapshot_before);
    });
}

#[test]
fn installed_snapshot_is_published_and_survives_reopen() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let leader_dir = tmp.path().join("leader");
    let follower_dir = tmp.path().join("follower");
    let rt = runtime();

    let (meta, applied) = rt.block_on(async {
        let (_log, mut leader) = common::open(&leader_dir).expect("open leader");
        leader.apply(entries(2, 30)).await.expect("apply");
        let snapshot = leader
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("build");

        let (_flog, mut follower) = common::open(&follower_dir).expect("open follower");
        let mut watch = follower.subscribe();
        let mut data = follower.begin_receiving_snapshot().await.expect("begin");
        *data = *snapshot.snapshot;
        follower
            .install_snapshot(&snapshot.meta, data)
            .await
            .expect("install");
        assert!(
            watch.has_changed().expect("watch open"),
            "install did not publish the applied state"
        );
        assert_eq!(*watch.borrow_and_update(), leader.applied());
        (snapshot.meta, leader.applied())
    });

    rt.block_on(async {
        let (_log, mut follower) = common::open(&follower_dir).expect("reopen follower");
        assert_eq!(follower.applied(), applied);
        assert_eq!(follower.applied().last_applied, Some(log_id(2, 30)));
        let current = follower
            .get_current_snapshot()
            .await
            .expect("snapshot")
            .expect("a stored snapshot");
        assert_eq!(current.meta, meta);
    });
}

#[test]
fn a_snapshot_that_contradicts_its_metadata_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let rt = runtime();
    rt.block_on(async {
        let (_log, mut sm) = common::open(&tmp.path().join("raft")).expect("open");
        sm.apply(entries(2, 3)).await.expect("apply");
        let snapshot = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("build");

        let mut meta = snapshot.meta.clone();
        meta.last_log_id = Some(log_id(2, 99));
        let err = sm
            .install_snapshot(&meta, snapshot.snapshot)
            .await
            .expect_err("a lying snapshot must be refused");
        assert!(err.to_string().contains("metadata"), "{err}");

        let garbage = Box::new(std::io::Cursor::new(b"not a snapshot".to_vec()));
        let err = sm
            .install_snapshot(&snapshot.meta, garbage)
            .await
            .expect_err("garbage must be refused");
        assert!(err.to_string().contains("does not decode"), "{err}");
        assert_eq!(
            sm.applied().last_applied,
            Some(log_id(2, 3)),
            "a refused install changed the state"
        );
        assert_eq!(
            sm.applied().membership,
            StoredMembership::new(
                Some(log_id(2, 1)),
                match membership_entry(2, 1).payload {
                    EntryPayload::Membership(m) => m,
                    _ => unreachable!("membership_entry builds a membership entry"),
                }
            )
        );
    });
}

#[test]
fn a_new_store_is_created_with_missing_parent_directories() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("var/lib/quorate/raft");
    let (log, sm) = common::open(&dir).expect("open a store under missing directories");
    assert!(log.is_pristine().expect("pristine"));
    assert_eq!(sm.applied().last_applied, None);
    assert!(dir.join(quorate::consensus::store::MARKER_FILE).is_file());
    assert!(dir.join(quorate::consensus::store::DB_FILE).is_file());
}

#[test]
fn the_state_machine_checks_a_grant_against_the_membership_it_applied() {
    use quorate::consensus::state::Command;
    let tmp = tempfile::tempdir().expect("tempdir");
    let rt = runtime();
    rt.block_on(async {
        let (_log, mut sm) = common::open(&tmp.path().join("raft")).expect("open");
        let grant = |index, node| openraft::Entry {
            log_id: log_id(2, index),
            payload: EntryPayload::Normal(quorate::consensus::state::Request {
                command: Command::GrantOwnership {
                    node,
                    expected: None,
                    recheck: true,
                },
                ..common::request(index)
            }),
        };
        let responses = sm
            .apply(vec![membership_entry(2, 1), grant(2, 3), grant(3, 1)])
            .await
            .expect("apply");
        // The membership applied at index 1 names node 3 a witness: its grant is refused.
        let refused = responses[1].refused.clone().expect("a witness is refused");
        assert!(refused.contains("node#3 is a witness"), "{refused}");
        assert_eq!(responses[2].refused, None);
        let owner = sm.applied().state.owner.expect("owner");
        assert_eq!((owner.node, owner.epoch), (1, 3));
    });
}

#[test]
fn a_purge_ahead_of_the_applied_state_survives_a_restart() {
    // openraft 0.9 purges a follower's log up to a received snapshot while the state machine
    // is still installing it. A crash after the purge and before the install must leave a
    // store that opens and still holds the committed entries the state machine lacks.
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("raft");
    let rt = runtime();
    rt.block_on(async {
        let (mut log, mut sm) = common::open(&dir).expect("open");
        log.blocking_append(entries(2, 5)).await.expect("append");
        log.save_committed(Some(log_id(2, 5)))
            .await
            .expect("save committed");
        sm.apply(entries(2, 3)).await.expect("apply");
        log.purge(log_id(2, 5)).await.expect("purge");
        // openraft sees the purge it asked for.
        let state = log.get_log_state().await.expect("log state");
        assert_eq!(state.last_purged_log_id, Some(log_id(2, 5)));
        assert_eq!(state.last_log_id, Some(log_id(2, 5)));
        assert!(log
            .try_get_log_entries(0..100)
            .await
            .expect("read log")
            .is_empty());
    });

    rt.block_on(async {
        let (mut log, mut sm) = common::open(&dir)
            .expect("a purge ahead of the applied state must not make the store unopenable");
        let state = log.get_log_state().await.expect("log state");
        assert_eq!(state.last_purged_log_id, Some(log_id(2, 3)));
        assert_eq!(state.last_log_id, Some(log_id(2, 5)));
        let read = log.try_get_log_entries(0..100).await.expect("read log");
        let indexes: Vec<u64> = read.iter().map(|e| e.log_id.index).collect();
        assert_eq!(indexes, [4, 5]);
        // openraft's start-up re-applies the committed entries that the purge kept.
        StorageHelper::new(&mut log, &mut sm)
            .get_initial_state()
            .await
            .expect("openraft's initial state");
        assert_eq!(sm.applied().last_applied, Some(log_id(2, 5)));
    });
}

#[test]
fn a_snapshot_install_purges_the_log_it_covers_in_the_same_commit() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let leader_dir = tmp.path().join("leader");
    let follower_dir = tmp.path().join("follower");
    let rt = runtime();
    rt.block_on(async {
        let (_log, mut leader) = common::open(&leader_dir).expect("open leader");
        leader.apply(entries(2, 5)).await.expect("apply");
        let snapshot = leader
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("build");

        let (mut flog, mut follower) = common::open(&follower_dir).expect("open follower");
        flog.blocking_append(entries(2, 7)).await.expect("append");
        follower.apply(entries(2, 2)).await.expect("apply");
        let mut data = follower.begin_receiving_snapshot().await.expect("begin");
        *data = *snapshot.snapshot;
        follower
            .install_snapshot(&snapshot.meta, data)
            .await
            .expect("install");
    });

    // No purge from openraft: the install alone purged what the snapshot covers.
    rt.block_on(async {
        let (mut log, sm) = common::open(&follower_dir).expect("reopen follower");
        assert_eq!(sm.applied().last_applied, Some(log_id(2, 5)));
        let state = log.get_log_state().await.expect("log state");
        assert_eq!(state.last_purged_log_id, Some(log_id(2, 5)));
        assert_eq!(state.last_log_id, Some(log_id(2, 7)));
        let read = log.try_get_log_entries(0..100).await.expect("read log");
        let indexes: Vec<u64> = read.iter().map(|e| e.log_id.index).collect();
        assert_eq!(indexes, [6, 7]);
    });
}

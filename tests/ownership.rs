//! Ownership in one process: two agents with Dummy groups and a witness, real Raft over
//! loopback gRPC, links cut through the fault table. Every test checks from the shared
//! ledger that no two nodes ever held the group at once.

mod support;

use std::time::Duration;

use quorate::consensus::state::Command;
use quorate::resources::dummy::{DummyFault, MONITOR_HANGING};
use quorate::resources::ledger::{self, LedgerAction};
use support::cluster::{other, request, TestCluster};
use support::eventually;

const SETTLE: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_start_gives_the_group_to_exactly_one_node() {
    let cluster = TestCluster::start_with_agents().await;
    let owner = cluster.settled_owner(SETTLE).await;
    let intervals = cluster.assert_ledger_clean();
    assert_eq!(intervals.len(), 1, "{intervals:?}");
    assert!(cluster.owner_seen_by(3).is_some_and(|(n, _)| n == owner));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_moves_the_group_both_ways() {
    let cluster = TestCluster::start_with_agents().await;
    let first = cluster.settled_owner(SETTLE).await;
    for target in [other(first), first] {
        let leader = cluster.agreed_leader(&[1, 2, 3], SETTLE).await;
        let response = cluster
            .node(leader)
            .raft()
            .client_write(request(Command::RequestSwitchover { to: target }))
            .await
            .expect("switchover request commits");
        assert_eq!(response.data.refused, None);
        let holder = eventually("the group to reach the target", SETTLE, || async {
            let holder = cluster.settled_owner(SETTLE).await;
            (holder == target).then_some(holder)
        })
        .await;
        assert_eq!(holder, target);
    }
    let intervals = cluster.assert_ledger_clean();
    assert_eq!(intervals.len(), 3, "{intervals:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cleanly_stopped_owner_releases_and_the_other_node_takes_over() {
    let mut cluster = TestCluster::start_with_agents().await;
    let owner = cluster.settled_owner(SETTLE).await;
    let (_, epoch) = cluster.owner_seen_by(3).unwrap();
    cluster.stop(owner).await;
    let holder = cluster.settled_owner(SETTLE).await;
    assert_eq!(holder, other(owner));
    let (_, new_epoch) = cluster.owner_seen_by(3).unwrap();
    assert!(new_epoch > epoch);
    cluster.assert_ledger_clean();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cleanly_stopped_owner_whose_stop_fails_fences_and_does_not_release() {
    let mut cluster = TestCluster::start_with_agents().await;
    let owner = cluster.settled_owner(SETTLE).await;
    let (_, epoch) = cluster.owner_seen_by(3).unwrap();
    DummyFault::FailStop
        .set(&cluster.fault_dir(owner))
        .expect("set the fault knob");
    cluster.stop(owner).await;
    // The shutdown fenced what the failed stop left running.
    assert!(!cluster.dummy_state(owner).exists());
    let events = ledger::read_ledger(&cluster.ledger_path()).expect("ledger readable");
    let name = format!("node{owner}");
    let last = events.iter().rev().find(|e| e.node == name);
    assert_eq!(
        last.map(|e| (e.epoch, e.action)),
        Some((epoch, LedgerAction::Fence)),
        "{events:?}"
    );
    // The group still moves, after the lease, but no `Released` was ever committed for it.
    let holder = cluster.settled_owner(SETTLE).await;
    assert_eq!(holder, other(owner));
    let state = cluster.node(3).arbiter().applied().borrow().state.clone();
    assert!(state.owner.is_some_and(|o| o.epoch > epoch));
    assert_ne!(state.released, Some(epoch));
    let released: Vec<_> = state
        .history
        .iter()
        .filter(|h| h.what.contains("released the group"))
        .collect();
    assert!(released.is_empty(), "{released:?}");
    cluster.assert_ledger_clean();
    cluster.shutdown().await;
}

/// The shutdown waits for the step each task has in hand; a monitor look that takes longer
/// than the lease must neither hold the hand-over up past the lease nor stop the renewals, or
/// the clean stop degrades into a lease-wait handoff with no `Released`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cleanly_stopped_owner_with_a_slow_monitor_still_releases() {
    let mut cluster = TestCluster::start_with_agents().await;
    let owner = cluster.settled_owner(SETTLE).await;
    let (_, epoch) = cluster.owner_seen_by(3).unwrap();
    let faults = cluster.fault_dir(owner);
    std::fs::create_dir_all(&faults).expect("fault dir");
    // One look takes 4 s, well past the 1.5 s lease.
    DummyFault::MonitorHangMs(4_000)
        .set(&faults)
        .expect("set the fault knob");
    eventually("the owner's monitor to be in a slow look", SETTLE, || {
        let hanging = faults.join(MONITOR_HANGING);
        async move { hanging.exists().then_some(()) }
    })
    .await;
    cluster.stop(owner).await;
    let holder = cluster.settled_owner(SETTLE).await;
    assert_eq!(holder, other(owner));
    let state = cluster.node(3).arbiter().applied().borrow().state.clone();
    let released: Vec<_> = state
        .history
        .iter()
        .filter(|h| {
            h.what
                .contains(&format!("released the group (epoch {epoch})"))
        })
        .collect();
    assert_eq!(
        released.len(),
        1,
        "no Released for epoch {epoch}: {:?}",
        state.history
    );
    cluster.assert_ledger_clean();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_owner_fences_itself_before_the_other_node_starts() {
    let cluster = TestCluster::start_with_agents().await;
    let owner = cluster.settled_owner(SETTLE).await;
    let others: Vec<u64> = [1u64, 2, 3].into_iter().filter(|id| *id != owner).collect();
    cluster.faults.isolate(owner, &others);
    eventually(
        "the group to move away from the isolated owner",
        SETTLE,
        || async {
            let holders = cluster.holders();
            (holders == vec![other(owner)]).then_some(())
        },
    )
    .await;
    let intervals = cluster.assert_ledger_clean();
    assert_eq!(intervals.len(), 2, "{intervals:?}");
    cluster.faults.heal();
    // After healing, the old owner stays down and the group stays where it is.
    let holder = cluster.settled_owner(SETTLE).await;
    assert_eq!(holder, other(owner));
    cluster.assert_ledger_clean();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_powered_off_owner_is_replaced_after_its_lease() {
    let mut cluster = TestCluster::start_with_agents().await;
    let owner = cluster.settled_owner(SETTLE).await;
    cluster.power_off(owner).await;
    let holder = cluster.settled_owner(SETTLE).await;
    assert_eq!(holder, other(owner));
    cluster.assert_ledger_clean();
    cluster.shutdown().await;
}

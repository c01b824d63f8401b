//! Ownership under faults, in one process: two agents with Dummy groups and a witness, real
//! Raft over loopback gRPC, links cut through the fault table, resource faults switched by the
//! Dummy's knob files. Every scenario proves from the shared ledger that no two nodes ever
//! held the group at once, and says where the group must end: on exactly one node, or on none
//! where no node may hold it.
//!
//! The fault table cuts Raft messages only (see `quorate::rpc::peer::client::Faults`); lease
//! reports and forwarded proposals travel over their own peer clients and are never cut. The
//! one-way partition scenarios therefore exercise one-way Raft partitions, not one-way loss of
//! every message.

mod support;

use std::time::{Duration, Instant};

use openraft::ServerState;
use quorate::config::Config;
use quorate::consensus::state::{ClusterState, Command};
use quorate::core::time::Timing;
use quorate::resources::dummy::DummyFault;
use quorate::resources::ledger::{self, LedgerAction, LedgerEvent};
use support::cluster::{other, request, TestCluster};
use support::eventually;

/// Time allowed for any one move of the group (elections, lease waits, starts).
const SETTLE: Duration = Duration::from_secs(25);

/// Logs to the test's captured output when `RUST_LOG` is set.
fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// The lease settings the cluster runs with (every node has the same).
fn timing(cluster: &TestCluster) -> Timing {
    Config::load(&cluster.config_path(1))
        .expect("node 1 config")
        .timing()
}

/// Long enough for any lease granted before it started to have run out and for the leader's
/// wait (`lease·(1+ρ) + fence_margin`) to have passed, plus one more lease for renewals.
fn window(cluster: &TestCluster) -> Duration {
    let t = timing(cluster);
    Duration::from_millis(t.leader_lease_ms() + t.fence_margin_ms + t.lease_ms)
}

fn name(id: u64) -> String {
    format!("node{id}")
}

/// The committed state as node `id` applied it.
fn state_seen_by(cluster: &TestCluster, id: u64) -> ClusterState {
    cluster.node(id).arbiter().applied().borrow().state.clone()
}

fn ledger_events(cluster: &TestCluster) -> Vec<LedgerEvent> {
    ledger::read_ledger(&cluster.ledger_path()).expect("ledger readable")
}

fn leads(cluster: &TestCluster, id: u64) -> bool {
    cluster.node(id).raft().metrics().borrow().state == ServerState::Leader
}

/// Triggers elections on `id` until it leads and every running member follows it.
///
/// Only a candidate whose log is as long as every other member's can win; one that is
/// behind must first catch up from a leader, and a candidate blocks that (the leader's
/// appends fail on its higher term). So an election is triggered only while `id` has the
/// newest log; otherwise this waits for replication.
async fn make_leader(cluster: &TestCluster, id: u64) {
    let running = cluster.running();
    eventually(&format!("node {id} to lead"), SETTLE, || async {
        let followed = running
            .iter()
            .all(|n| cluster.node(*n).raft().metrics().borrow().current_leader == Some(id));
        if leads(cluster, id) && followed {
            return Some(());
        }
        let newest = running
            .iter()
            .map(|n| cluster.node(*n).raft().metrics().borrow().last_log_index)
            .max()
            .flatten();
        let raft = cluster.node(id).raft();
        let mine = raft.metrics().borrow().last_log_index;
        if !leads(cluster, id) && mine >= newest {
            let _ = raft.trigger().elect().await;
            // The first round usually loses: the others still honour the old leader's lease
            // (openraft refuses votes while a committed vote is fresh), but the old leader
            // steps down on seeing the higher term. Asking again soon, before the others'
            // own election timers fire, wins the next round.
            let _ = raft
                .wait(Some(Duration::from_millis(100)))
                .state(ServerState::Leader, "elected")
                .await;
        }
        None
    })
    .await;
}

/// Waits until `leader` (leading) has granted `owner` a lease that is still running: the
/// leader renews the owner in the current term.
async fn renewed_by(cluster: &TestCluster, leader: u64, owner: u64) {
    eventually(
        &format!("leader {leader} to renew the lease of node {owner}"),
        SETTLE,
        || async {
            let ownership = cluster.node(leader).arbiter().ownership();
            (leads(cluster, leader)
                && ownership
                    .granted_remaining_ms(owner)
                    .is_some_and(|ms| ms > 0))
            .then_some(())
        },
    )
    .await;
}

/// Checks `check` every 20 ms for `window` and panics with its complaint at the first
/// violation. For conditions that must *stay* true (nothing moves, nothing starts).
async fn stays(what: &str, window: Duration, mut check: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + window;
    while Instant::now() < deadline {
        if let Err(why) = check() {
            panic!("{what} stopped holding: {why}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The last ledger event of node `id`.
fn last_event_of(events: &[LedgerEvent], id: u64) -> Option<&LedgerEvent> {
    events.iter().rev().find(|e| e.node == name(id))
}

/// (a) The owner also leads Raft and is cut off from both peers: it cannot confirm a quorum,
/// so its lease runs out and it fences itself; the other two elect a leader that waits out the
/// old lease and gives the group to the other node. The new leader counts the old lease from
/// the last round the majority (the successor and the witness) took part in, before the cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_owner_that_leads_fences_and_the_other_node_takes_over() {
    isolated_leading_owner(
        "",
        "a whole lease after a majority last heard the previous leader",
    )
    .await;
}

/// (a') The same with `lease.old_lease_bound = "election"`: the new leader counts the old
/// lease from its own election, as docs/PROTOCOL.md's rule 4 says to the letter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_election_bound_the_new_leader_counts_from_its_election() {
    isolated_leading_owner(
        "[lease]\nold_lease_bound = \"election\"\n",
        "a whole lease from this leader's election",
    )
    .await;
}

/// Isolates the owner after making it the leader (every member's config gets `common`), checks
/// the handover, and that the grant's history record names `bound` as the old lease's end.
async fn isolated_leading_owner(common: &str, bound: &str) {
    logs();
    let cluster = TestCluster::start_with_agents_and(common).await;
    let owner = cluster.settled_owner(SETTLE).await;
    let (_, epoch) = cluster.owner_seen_by(3).unwrap();
    make_leader(&cluster, owner).await;
    renewed_by(&cluster, owner, owner).await;
    assert_eq!(
        cluster.holders(),
        vec![owner],
        "leadership alone moved the group"
    );
    assert_eq!(cluster.owner_seen_by(3), Some((owner, epoch)));

    let successor = other(owner);
    cluster.faults.isolate(owner, &[successor, 3]);
    eventually("the group to reach the other node", SETTLE, || async {
        (cluster.holders() == vec![successor]).then_some(())
    })
    .await;
    let intervals = cluster.assert_ledger_clean();
    assert_eq!(intervals.len(), 2, "{intervals:?}");

    // The old owner fenced (lease expiry, not an ordered stop) before the successor started.
    let events = ledger_events(&cluster);
    let fenced = last_event_of(&events, owner).expect("the old owner's events");
    assert_eq!(fenced.action, LedgerAction::Fence, "{events:?}");
    assert_eq!(fenced.epoch, epoch);
    let started = last_event_of(&events, successor).expect("the successor's start");
    assert_eq!(started.action, LedgerAction::Start);
    assert!(started.epoch > epoch, "{events:?}");
    assert!(fenced.mono_ns <= started.mono_ns, "{events:?}");
    eventually("the witness to apply the new owner", SETTLE, || async {
        (cluster.owner_seen_by(3) == Some((successor, started.epoch))).then_some(())
    })
    .await;
    assert_eq!(
        cluster.owner_seen_by(successor),
        Some((successor, started.epoch))
    );
    // The grant's history record says what the old lease's end was counted from.
    let history = state_seen_by(&cluster, successor).history;
    let grant = history
        .iter()
        .find(|record| record.index == started.epoch)
        .expect("the grant's history record");
    assert!(grant.reason.contains(bound), "{grant:?}");

    // Healed, the old leader steps down, learns the new owner and stays stopped.
    cluster.faults.heal();
    assert_eq!(cluster.settled_owner(SETTLE).await, successor);
    let intervals = cluster.assert_ledger_clean();
    assert_eq!(intervals.len(), 2, "{intervals:?}");
    cluster.shutdown().await;
}

/// (b) The witness takes the leadership from the owner: the owner keeps renewing through the
/// new leader and nothing moves, not even a restart of the group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_witness_taking_the_lead_moves_nothing() {
    logs();
    let cluster = TestCluster::start_with_agents().await;
    let owner = cluster.settled_owner(SETTLE).await;
    let (_, epoch) = cluster.owner_seen_by(3).unwrap();
    // Start from the owner leading, so the witness takes the leadership away from it.
    make_leader(&cluster, owner).await;
    make_leader(&cluster, 3).await;
    assert!(!leads(&cluster, owner));
    renewed_by(&cluster, 3, owner).await;

    stays(
        "the group on the owner under the same epoch",
        window(&cluster),
        || {
            let holders = cluster.holders();
            if holders != vec![owner] {
                return Err(format!("holders are {holders:?}"));
            }
            for id in [1, 2, 3] {
                let seen = cluster.owner_seen_by(id);
                if seen != Some((owner, epoch)) {
                    return Err(format!("node {id} sees owner {seen:?}"));
                }
            }
            Ok(())
        },
    )
    .await;
    // The witness still leads and still renews the owner.
    renewed_by(&cluster, 3, owner).await;
    let intervals = cluster.assert_ledger_clean();
    assert_eq!(intervals.len(), 1, "no new holding interval: {intervals:?}");
    assert_eq!(intervals[0].until_ns, None);
    cluster.shutdown().await;
}

/// (c) Losing the witness moves nothing. Losing the owner as well leaves one management node
/// alone, without a quorum: the owner fences at the end of its lease and nothing starts
/// anywhere, however long one waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_quorum_nothing_starts_anywhere() {
    logs();
    let mut cluster = TestCluster::start_with_agents().await;
    let owner = cluster.settled_owner(SETTLE).await;
    let (_, epoch) = cluster.owner_seen_by(3).unwrap();
    let survivor = other(owner);

    cluster.power_off(3).await;
    let leader = cluster.agreed_leader(&[1, 2], SETTLE).await;
    renewed_by(&cluster, leader, owner).await;
    stays("the group on the owner", window(&cluster), || {
        let holders = cluster.holders();
        if holders != vec![owner] {
            return Err(format!("holders are {holders:?}"));
        }
        for id in [1, 2] {
            if cluster.owner_seen_by(id) != Some((owner, epoch)) {
                return Err(format!("node {id} sees {:?}", cluster.owner_seen_by(id)));
            }
        }
        Ok(())
    })
    .await;
    assert_eq!(cluster.assert_ledger_clean().len(), 1);

    // Now the owner is lost too (cut off, still running): no quorum anywhere.
    cluster.faults.isolate(owner, &[survivor, 3]);
    eventually(
        "the owner to fence at the end of its lease",
        SETTLE,
        || async { cluster.holders().is_empty().then_some(()) },
    )
    .await;
    let events = ledger_events(&cluster);
    let fenced = last_event_of(&events, owner).expect("the owner's events");
    assert_eq!(fenced.action, LedgerAction::Fence, "{events:?}");
    stays("no node holding the group", window(&cluster), || {
        let holders = cluster.holders();
        if !holders.is_empty() {
            return Err(format!("holders are {holders:?}"));
        }
        // No grant can commit without a quorum.
        let seen = cluster.owner_seen_by(survivor);
        if seen != Some((owner, epoch)) {
            return Err(format!("the survivor sees owner {seen:?}"));
        }
        Ok(())
    })
    .await;
    let events = ledger_events(&cluster);
    assert!(
        !events.iter().any(|e| e.node == name(survivor)),
        "the survivor acted without a quorum: {events:?}"
    );
    assert_eq!(cluster.assert_ledger_clean().len(), 1);
    cluster.faults.heal();
    cluster.shutdown().await;
}

/// Runs a one-way Raft partition between the owner and the leader (the witness leads, the
/// owner follows): `block(from, to)`. While it lasts at most one node may hold the group; once
/// it settles exactly one node holds it, the node the majority (other node and witness)
/// committed as owner. After healing the group stays there.
async fn one_way_partition(owner_to_leader: bool) {
    logs();
    let cluster = TestCluster::start_with_agents().await;
    let owner = cluster.settled_owner(SETTLE).await;
    make_leader(&cluster, 3).await;
    renewed_by(&cluster, 3, owner).await;
    let (from, to) = if owner_to_leader {
        (owner, 3)
    } else {
        (3, owner)
    };
    cluster.faults.block(from, to);

    stays("at most one holder", window(&cluster), || {
        let holders = cluster.holders();
        if holders.len() > 1 {
            return Err(format!("holders are {holders:?}"));
        }
        Ok(())
    })
    .await;
    let majority = other(owner);
    let holder = eventually(
        "exactly one holder, the majority's owner",
        SETTLE,
        || async {
            let holders = cluster.holders();
            let [holder] = holders[..] else { return None };
            let committed = cluster.owner_seen_by(majority).map(|(n, _)| n);
            let witness = cluster.owner_seen_by(3).map(|(n, _)| n);
            (committed == Some(holder) && witness == Some(holder)).then_some(holder)
        },
    )
    .await;
    cluster.assert_ledger_clean();
    eprintln!("one-way partition {from}->{to} dropped: owner {owner}, group ends on node {holder}");

    cluster.faults.heal();
    assert_eq!(cluster.settled_owner(SETTLE).await, holder);
    cluster.assert_ledger_clean();
    cluster.shutdown().await;
}

/// (d) Messages from the owner to the leader are dropped (the leader's requests reach the
/// owner, the owner's answers do not come back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_to_leader_dropped_keeps_one_holder() {
    one_way_partition(true).await;
}

/// (d) Messages from the leader to the owner are dropped: the owner stops hearing the leader
/// and its elections cannot win.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_to_owner_dropped_keeps_one_holder() {
    one_way_partition(false).await;
}

/// (e) A switchover to a node whose start fails: the target retries in place, gives up,
/// records one failure and releases; the leader hands the group back to the original owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_target_that_cannot_start_gives_the_group_back() {
    logs();
    let cluster = TestCluster::start_with_agents().await;
    let original = cluster.settled_owner(SETTLE).await;
    let (_, epoch) = cluster.owner_seen_by(3).unwrap();
    let target = other(original);
    DummyFault::FailStart
        .set(&cluster.fault_dir(target))
        .expect("set fail-start");

    let leader = cluster.agreed_leader(&[1, 2, 3], SETTLE).await;
    let response = cluster
        .node(leader)
        .raft()
        .client_write(request(Command::RequestSwitchover { to: target }))
        .await
        .expect("switchover request commits");
    assert_eq!(response.data.refused, None);

    // The group ends on the original owner, not nowhere: after the target released, the
    // leader prefers any eligible node other than the one that released, and the original
    // owner is eligible (reachable, healthy, not outdated, no failures). The target stays
    // eligible too (one failure is below the migration threshold), but comes second.
    let back = eventually(
        "the group back on the original owner after the failed switchover",
        SETTLE,
        || async {
            let state = state_seen_by(&cluster, 3);
            let owner = state.owner?;
            let failed = state.marks(target).fail_count >= 1;
            (failed && owner.node == original && owner.epoch > epoch && !state.owner_released())
                .then_some(owner)
        },
    )
    .await;
    let (holder, new_epoch) = (back.node, back.epoch);
    assert_eq!(cluster.settled_owner(SETTLE).await, holder);
    assert_eq!(cluster.owner_seen_by(3), Some((original, new_epoch)));

    let state = state_seen_by(&cluster, 3);
    assert_eq!(state.marks(target).fail_count, 1, "one failure per epoch");
    assert_eq!(state.marks(original).fail_count, 0);
    assert_eq!(state.switchover_to, None);
    // The failed start touched nothing: the target never held the group.
    assert!(!cluster.dummy_state(target).exists());
    let events = ledger_events(&cluster);
    assert!(
        !events.iter().any(|e| e.node == name(target)),
        "the target started something: {events:?}"
    );
    let intervals = cluster.assert_ledger_clean();
    assert_eq!(intervals.len(), 2, "{intervals:?}");
    assert!(intervals.iter().all(|i| i.node == name(original)));
    assert_eq!(intervals[1].epoch, new_epoch);
    DummyFault::FailStart
        .clear(&cluster.fault_dir(target))
        .expect("clear fail-start");
    cluster.shutdown().await;
}

/// (f) The owner's resource keeps failing its monitor (a crashing mysqld): the owner restarts
/// it in place up to its limit, then gives up, records the failure and releases, and the
/// other node takes the group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_that_keeps_failing_is_restarted_in_place_then_moves() {
    logs();
    let cluster = TestCluster::start_with_agents().await;
    let owner = cluster.settled_owner(SETTLE).await;
    let (_, epoch) = cluster.owner_seen_by(3).unwrap();
    let successor = other(owner);
    let max_restarts = Config::load(&cluster.config_path(owner))
        .expect("config")
        .group
        .max_restarts_in_place as usize;
    eventually(
        "the owner's monitor to see its group running",
        SETTLE,
        || async {
            let note = cluster.node(owner).notes().agent()?;
            (note.resources == vec![("db".to_string(), "running".to_string())]).then_some(())
        },
    )
    .await;
    DummyFault::FailMonitor
        .set(&cluster.fault_dir(owner))
        .expect("set fail-monitor");

    eventually("the group to move to the other node", SETTLE, || async {
        (cluster.holders() == vec![successor]).then_some(())
    })
    .await;
    let intervals = cluster.assert_ledger_clean();
    let on_owner = intervals
        .iter()
        .filter(|i| i.node == name(owner) && i.epoch == epoch)
        .count();
    // One interval for the first start, one more per restart in place: at least one restart
    // happened, and no more than allowed. (Fewer than the maximum when a start that raced
    // with the knob failed its post-start check: a failed start is a recovery too.)
    assert!(
        (2..=1 + max_restarts).contains(&on_owner),
        "{on_owner} intervals on the owner: {intervals:?}"
    );
    // The successor applied the grant before it started, and the failure before that.
    let state = state_seen_by(&cluster, successor);
    assert_eq!(state.marks(owner).fail_count, 1);
    let new_owner = state.owner.expect("an owner");
    assert_eq!(new_owner.node, successor);
    assert!(new_owner.epoch > epoch);

    // The failed node stays stopped even once its resource looks healthy again.
    DummyFault::FailMonitor
        .clear(&cluster.fault_dir(owner))
        .expect("clear fail-monitor");
    assert_eq!(cluster.settled_owner(SETTLE).await, successor);
    stays(
        "the group on the other node",
        window(&cluster),
        || match cluster.holders()[..] {
            [h] if h == successor => Ok(()),
            ref other => Err(format!("holders are {other:?}")),
        },
    )
    .await;
    let intervals = cluster.assert_ledger_clean();
    assert_eq!(intervals.len(), on_owner + 1, "{intervals:?}");
    cluster.shutdown().await;
}

/// (g) Issue 9, finding 2: the owner's stop fails for good (an unkillable holder) when a
/// switchover asks it to stop. Reissuing the stop forever while renewing would keep the group
/// down and the lease held. Instead the owner gives its epoch up: it renews no more, fences,
/// says so in `status`, and the other node gets the group once the lease has ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_that_keeps_failing_stops_renewals_and_the_other_node_takes_over() {
    logs();
    let cluster = TestCluster::start_with_agents().await;
    let owner = cluster.settled_owner(SETTLE).await;
    let (_, epoch) = cluster.owner_seen_by(3).unwrap();
    let target = other(owner);
    DummyFault::FailStop
        .set(&cluster.fault_dir(owner))
        .expect("set fail-stop");

    let leader = cluster.agreed_leader(&[1, 2, 3], SETTLE).await;
    let response = cluster
        .node(leader)
        .raft()
        .client_write(request(Command::RequestSwitchover { to: target }))
        .await
        .expect("switchover request commits");
    assert_eq!(response.data.refused, None);

    // While the lease runs out, the owner's `status` line says it gave the epoch up.
    let mut said_so = false;
    let seen = &cluster;
    let moved = eventually(
        "the group to move to the other node although the owner cannot stop",
        SETTLE,
        || {
            let note = seen.node(owner).notes().agent();
            said_so |= note.is_some_and(|n| n.reason.contains(&format!("gave up epoch {epoch}")));
            async move {
                let state = state_seen_by(seen, 3);
                let new_owner = state.owner?;
                (new_owner.node == target && new_owner.epoch > epoch).then_some(new_owner)
            }
        },
    )
    .await;
    assert!(said_so, "the owner never said it gave up epoch {epoch}");
    assert_eq!(cluster.settled_owner(SETTLE).await, target);
    // Not released: the leader waited for the lease. The owner fenced its group meanwhile.
    let state = state_seen_by(&cluster, target);
    assert_eq!(state.owner.map(|o| o.epoch), Some(moved.epoch));
    assert!(!cluster.dummy_state(owner).exists());
    let events = ledger_events(&cluster);
    assert!(
        events
            .iter()
            .any(|e| e.node == name(owner) && e.epoch == epoch && e.action == LedgerAction::Fence),
        "the owner did not fence: {events:?}"
    );
    let intervals = cluster.assert_ledger_clean();
    assert_eq!(intervals.last().map(|i| i.node.clone()), Some(name(target)));
    DummyFault::FailStop
        .clear(&cluster.fault_dir(owner))
        .expect("clear fail-stop");
    cluster.shutdown().await;
}

/// (h) The owner is cut off from both peers while a start step hangs, and is shut down
/// cleanly meanwhile. Its applied view still says "owner", but its lease runs out and the
/// leader grants the other node: the shutdown must fence when the lease ends rather than wait
/// for the step, and must neither stop in order nor commit `Released` on that stale view. The
/// ledger shows one holder at a time and no `Released` by the cut-off node is ever committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_shutdown_cut_off_during_a_start_fences_at_the_lease_end_and_does_not_release() {
    logs();
    let mut cluster = TestCluster::start_with_agents().await;
    let original = cluster.settled_owner(SETTLE).await;
    let target = other(original);
    // The target leads Raft, so once cut off it cannot renew its own lease.
    make_leader(&cluster, target).await;
    DummyFault::HangMs(8_000)
        .set(&cluster.fault_dir(target))
        .expect("set hang-ms");
    let response = cluster
        .node(target)
        .raft()
        .client_write(request(Command::RequestSwitchover { to: target }))
        .await
        .expect("switchover request commits");
    assert_eq!(response.data.refused, None);

    // The target owns a new epoch, holds its lease and its decision loop has seen it: the
    // start is in hand (it hangs), the original has stopped.
    let epoch = eventually("the target's start to be in hand", SETTLE, || async {
        let (owner, epoch) = cluster.owner_seen_by(target)?;
        let note = cluster.node(target).notes().agent()?;
        (owner == target && note.lease_epoch == Some(epoch) && cluster.holders().is_empty())
            .then_some(epoch)
    })
    .await;

    cluster.faults.isolate(target, &[original, 3]);
    cluster.stop(target).await;

    eventually(
        "the group to come back to the original node",
        SETTLE,
        || async { (cluster.holders() == vec![original]).then_some(()) },
    )
    .await;
    let intervals = cluster.assert_ledger_clean();
    assert!(
        intervals.iter().all(|i| i.node == name(original)),
        "the cut-off node held the group: {intervals:?}"
    );
    let released = format!("node {target} released the group (epoch {epoch})");
    let history = state_seen_by(&cluster, original).history;
    assert!(
        !history.iter().any(|record| record.what == released),
        "the cut-off node committed Released: {history:?}"
    );
    DummyFault::HangMs(0)
        .clear(&cluster.fault_dir(target))
        .expect("clear hang-ms");
    cluster.faults.heal();
    cluster.shutdown().await;
}

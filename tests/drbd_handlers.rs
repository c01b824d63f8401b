//! DRBD's fence-peer and unfence-peer handlers (`quorate-agent fence-peer|unfence-peer`)
//! against a real cluster: the owner outdates its peer through Raft, an outdated node
//! cannot be switched to, the mark clears after a resync, without a quorum the handler
//! fails so DRBD keeps I/O frozen, and an old owner whose view is stale cannot outdate the
//! new owner.

mod support;

use std::process::{Command, Output};
use std::time::Duration;

use openraft::ServerState;
use support::cluster::{other, TestCluster};
use support::procs::{bin, ctl, status_json, ProcessCluster};
use support::{eventually, eventually_blocking};

fn handler(cluster: &ProcessCluster, node: &str, verb: &str, timeout_ms: u64) -> Output {
    Command::new(bin("quorate-agent"))
        .arg("--config")
        .arg(cluster.dir.path().join(format!("{node}.toml")))
        .args([verb, "--timeout-ms", &timeout_ms.to_string()])
        .env("DRBD_RESOURCE", "r0")
        .output()
        .expect("run the handler")
}

fn settled_owner(cluster: &ProcessCluster) -> String {
    eventually_blocking("an owner", Duration::from_secs(30), || {
        status_json(cluster.port(1))?["owner"]
            .as_str()
            .map(str::to_string)
    })
}

fn outdated(port: u16, node: &str) -> Option<bool> {
    let status = status_json(port)?;
    status["members"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == node)?["outdated"]
        .as_bool()
}

#[test]
fn fence_peer_outdates_the_peer_and_unfence_peer_clears_it() {
    let cluster = ProcessCluster::start_with(true);
    let owner = settled_owner(&cluster);
    let peer = if owner == "node1" { "node2" } else { "node1" };

    // Only the owner may outdate its peer.
    let out = handler(&cluster, peer, "fence-peer", 5_000);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not own the group"));
    assert_eq!(outdated(cluster.port(3), &owner), Some(false));

    let out = handler(&cluster, &owner, "fence-peer", 10_000);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The mark is committed: every member sees it, and the peer cannot be switched to.
    assert_eq!(outdated(cluster.port(3), peer), Some(true));
    let refused = ctl(cluster.port(1), &["switchover", "--to", peer]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("outdated"));
    // Running it again is harmless.
    assert_eq!(
        handler(&cluster, &owner, "fence-peer", 10_000)
            .status
            .code(),
        Some(4)
    );

    let out = handler(&cluster, &owner, "unfence-peer", 10_000);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(outdated(cluster.port(3), peer), Some(false));
    let history = ctl(cluster.port(2), &["history"]);
    let history = String::from_utf8_lossy(&history.stdout);
    assert!(
        history.contains("marked outdated") && history.contains("fence-peer"),
        "{history}"
    );
}

#[test]
fn fence_peer_fails_without_a_quorum() {
    let mut cluster = ProcessCluster::start_with(true);
    let owner = settled_owner(&cluster);
    let owner_id = if owner == "node1" { 1 } else { 2 };
    let peer_id = 3 - owner_id;
    cluster.daemons.get_mut(&peer_id).unwrap().kill();
    cluster.daemons.get_mut(&3).unwrap().kill();
    let out = handler(&cluster, &owner, "fence-peer", 3_000);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("keeps I/O frozen"), "{err}");
}

/// The old owner was cut off, the group moved to the other node, and the old owner's member
/// still shows it as the owner (its Raft log is stale, its member still follows the leader it
/// knew). Its fence-peer handler must not outdate the new owner: the state machine refuses
/// the compare-and-set and the handler exits 1, so DRBD keeps the old owner's I/O frozen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fence_peer_on_a_stale_old_owner_cannot_outdate_the_new_owner() {
    const SETTLE: Duration = Duration::from_secs(25);
    let cluster = TestCluster::start_with_agents().await;
    let old = cluster.settled_owner(SETTLE).await;
    let new = other(old);
    let (_, old_epoch) = cluster.owner_seen_by(old).expect("an owner");

    // The old owner must follow another leader and never campaign: cut off, it then keeps
    // that leader as its own (so its admin service forwards there) with a stale log.
    cluster.node(old).raft().runtime_config().elect(false);
    let leader = eventually("a leader other than the owner", SETTLE, || async {
        let leader = cluster.agreed_leader(&[1, 2, 3], SETTLE).await;
        if leader != old {
            return Some(leader);
        }
        let witness = cluster.node(3).raft();
        let _ = witness.trigger().elect().await;
        let _ = witness
            .wait(Some(Duration::from_millis(100)))
            .state(ServerState::Leader, "elected")
            .await;
        None
    })
    .await;

    cluster.faults.isolate(old, &[new, 3]);
    let new_epoch = eventually("the group to move to the other node", SETTLE, || async {
        let moved = cluster.holders() == vec![new];
        match cluster.owner_seen_by(leader) {
            Some((owner, epoch)) if moved && owner == new => Some(epoch),
            _ => None,
        }
    })
    .await;
    assert!(new_epoch > old_epoch);
    // The precondition of the test: the old owner's own member still says it owns the group
    // and still knows the leader.
    assert_eq!(cluster.owner_seen_by(old), Some((old, old_epoch)));
    let metrics = cluster.node(old).raft().metrics().borrow().clone();
    assert_eq!(metrics.current_leader, Some(leader));

    let out = tokio::process::Command::new(bin("quorate-agent"))
        .arg("--config")
        .arg(cluster.config_path(old))
        .args(["fence-peer", "--timeout-ms", "5000"])
        .env("DRBD_RESOURCE", "r0")
        .output()
        .await
        .expect("run the handler");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("keeps I/O frozen"), "{stderr}");
    assert!(stderr.contains("does not hold epoch"), "{stderr}");
    let committed = cluster
        .node(leader)
        .arbiter()
        .applied()
        .borrow()
        .state
        .clone();
    assert_eq!(committed.owner.map(|o| o.node), Some(new));
    assert!(!committed.marks(new).outdated, "the new owner was outdated");

    cluster.faults.heal();
    cluster.node(old).raft().runtime_config().elect(true);
    cluster.assert_ledger_clean();
    cluster.shutdown().await;
}

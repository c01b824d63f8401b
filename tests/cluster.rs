//! The arbiter cluster in one process: real stores, real gRPC on loopback, links cut through
//! the fault table. Covers leader election, failover of the leader, the witness's part in the
//! quorum, restarts and bootstrap.

mod support;

use std::time::Duration;

use openraft::ServerState;
use quorate::consensus::state::{Command, Request};
use support::cluster::TestCluster;
use support::eventually;

const ELECTION: Duration = Duration::from_secs(10);

fn noop() -> Request {
    Request {
        command: Command::Noop,
        requested_by: "test".into(),
        reason: "check that the cluster commits".into(),
        at_unix_ms: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_a_leader_and_replace_it_when_it_stops() {
    let mut cluster = TestCluster::start().await;
    let first = cluster.agreed_leader(&[1, 2, 3], ELECTION).await;
    let first_term = cluster.term(first);
    assert!(first_term >= 1);

    cluster.stop(first).await;
    let rest: Vec<u64> = cluster.running();
    let second = cluster.agreed_leader(&rest, ELECTION).await;
    assert_ne!(second, first);
    assert!(cluster.term(second) > first_term);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn witness_and_one_management_node_keep_a_quorum() {
    let mut cluster = TestCluster::start().await;
    cluster.agreed_leader(&[1, 2, 3], ELECTION).await;
    // Whichever management node leads or not, stop node1: node2 and the witness remain.
    cluster.stop(1).await;
    let leader = cluster.agreed_leader(&[2, 3], ELECTION).await;
    let written = tokio::time::timeout(
        Duration::from_secs(5),
        cluster.node(leader).raft().client_write(noop()),
    )
    .await
    .expect("the write commits in time")
    .expect("the write commits");
    let index = written.log_id.index;
    eventually(
        "node2 and the witness to apply the write",
        ELECTION,
        || async {
            [2u64, 3]
                .iter()
                .all(|id| {
                    cluster
                        .node(*id)
                        .raft()
                        .metrics()
                        .borrow()
                        .last_applied
                        .map(|l| l.index)
                        >= Some(index)
                })
                .then_some(())
        },
    )
    .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_witness_can_lead() {
    let cluster = TestCluster::start().await;
    cluster.agreed_leader(&[1, 2, 3], ELECTION).await;
    eventually("the witness to win an election", ELECTION, || async {
        if cluster.node(3).raft().metrics().borrow().state == ServerState::Leader {
            return Some(());
        }
        let _ = cluster.node(3).raft().trigger().elect().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        None
    })
    .await;
    assert_eq!(cluster.agreed_leader(&[1, 2, 3], ELECTION).await, 3);
    // A witness-led cluster commits like any other.
    cluster
        .node(3)
        .raft()
        .client_write(noop())
        .await
        .expect("the witness commits as leader");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_node_rejoins_and_its_term_never_goes_backwards() {
    let mut cluster = TestCluster::start().await;
    let leader = cluster.agreed_leader(&[1, 2, 3], ELECTION).await;
    let follower = [1u64, 2].into_iter().find(|id| *id != leader).unwrap_or(3);
    let term_before = cluster.term(follower);
    cluster.stop(follower).await;
    // Move the cluster on while the follower is down.
    cluster
        .node(leader)
        .raft()
        .client_write(noop())
        .await
        .expect("commit while one member is down");
    cluster.restart(follower).await;
    // Straight after restart the term comes from the durable vote, not from zero.
    let restored = cluster
        .node(follower)
        .raft()
        .with_raft_state(|state| state.vote_ref().leader_id().term)
        .await
        .expect("raft state");
    assert!(restored >= term_before, "{restored} < {term_before}");
    let leader_log = cluster
        .node(leader)
        .raft()
        .metrics()
        .borrow()
        .last_log_index;
    eventually("the restarted node to catch up", ELECTION, || async {
        let m = cluster.node(follower).raft().metrics().borrow().clone();
        (m.last_log_index >= leader_log && m.current_leader.is_some()).then_some(())
    })
    .await;
    assert!(cluster.term(follower) >= term_before);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_cluster_forms_only_when_every_member_answers() {
    let mut cluster = TestCluster::start_some(&[1, 3]).await;
    let reason = eventually("node1 to say why it waits", ELECTION, || async {
        let waiting = cluster.node(1).notes().waiting.lock().unwrap().clone()?;
        waiting.contains("did not answer").then_some(waiting)
    })
    .await;
    assert!(reason.contains("node2"), "{reason}");
    assert!(cluster
        .node(1)
        .raft()
        .metrics()
        .borrow()
        .current_leader
        .is_none());
    assert_eq!(cluster.term(1), 0);

    cluster.restart(2).await;
    let leader = cluster.agreed_leader(&[1, 2, 3], ELECTION).await;
    assert!(cluster.term(leader) >= 1);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_never_initializes_and_says_why_it_waits() {
    let mut cluster = TestCluster::start().await;
    let leader = cluster.agreed_leader(&[1, 2, 3], ELECTION).await;
    let victim = if leader == 2 { 1 } else { 2 };
    let other = [1u64, 2, 3]
        .into_iter()
        .find(|id| *id != leader && *id != victim)
        .unwrap();
    cluster.stop(victim).await;
    std::fs::remove_dir_all(cluster.data_dir(victim)).expect("wipe the store");
    // While the leader cannot be asked, the wiped node only sees that a cluster exists.
    cluster.faults.partition(leader, victim);
    cluster.restart(victim).await;
    let reason = eventually("the wiped node to say why it waits", ELECTION, || async {
        let waiting = cluster
            .node(victim)
            .notes()
            .waiting
            .lock()
            .unwrap()
            .clone()?;
        waiting
            .contains("already has cluster state")
            .then_some(waiting)
    })
    .await;
    assert!(reason.contains("will not initialize"), "{reason}");
    assert_eq!(
        cluster.term(victim),
        0,
        "the wiped node must not start a cluster of its own"
    );

    // Once it can ask, the leader says it remembers entries this node acknowledged: the node
    // knows it lost its data and refuses that leader's log, which keeps the leader healthy.
    cluster.faults.heal();
    let reason = eventually("the wiped node to learn it lost data", ELECTION, || async {
        let waiting = cluster
            .node(victim)
            .notes()
            .waiting
            .lock()
            .unwrap()
            .clone()?;
        waiting.contains("data was lost").then_some(waiting)
    })
    .await;
    assert!(
        reason.contains(&format!("node{leader}")) || reason.contains("witness"),
        "{reason}"
    );
    let written = tokio::time::timeout(
        Duration::from_secs(5),
        cluster.node(leader).raft().client_write(noop()),
    )
    .await
    .expect("the leader still commits in time");
    written.expect("the leader still commits with the other member");
    assert_eq!(cluster.term(victim), 0);

    // Without the old leader, the wiped node and the other one must elect nobody: the wiped
    // node forgot what it acknowledged, so it votes only once it has caught up again.
    cluster.stop(leader).await;
    let campaigning_from = cluster.term(other);
    let no_leader = |cluster: &TestCluster| {
        [victim, other]
            .into_iter()
            .all(|id| cluster.node(id).raft().metrics().borrow().state != ServerState::Leader)
    };
    eventually("the other node to campaign", ELECTION, || async {
        assert!(
            no_leader(&cluster),
            "a leader was elected with the wiped node's vote"
        );
        (cluster.term(other) > campaigning_from + 1).then_some(())
    })
    .await;
    let window = std::time::Instant::now() + Duration::from_millis(1_500);
    while std::time::Instant::now() < window {
        assert!(
            no_leader(&cluster),
            "a leader was elected with the wiped node's vote"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(cluster.term(victim), 0, "the wiped node granted no vote");

    // With the old leader back, a leader is elected without the wiped node; a change of
    // leader forgets the old replication progress, and the leader brings the wiped node up to
    // date from scratch.
    cluster.restart(leader).await;
    eventually(
        "the wiped node to be brought up to date",
        ELECTION,
        || async {
            let m = cluster.node(victim).raft().metrics().borrow().clone();
            let waiting = cluster.node(victim).notes().waiting.lock().unwrap().clone();
            (m.current_leader.is_some() && m.last_applied.is_some() && waiting.is_none())
                .then_some(())
        },
    )
    .await;
    cluster.shutdown().await;
}

/// A follower answers a new leader's question "when did you last take part in a round of an
/// earlier term" only from its own term: asked about a term it has not reached, it says so
/// (the asker ignores such answers); asked about its own term, it counts the current leader's
/// heartbeats, which keep arriving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_report_how_long_ago_they_took_part_in_an_earlier_term() {
    let cluster = TestCluster::start().await;
    let leader = cluster.agreed_leader(&[1, 2, 3], ELECTION).await;
    let follower = [1u64, 2, 3].into_iter().find(|id| *id != leader).unwrap();
    let term = cluster.term(follower);
    let asker = cluster.node(leader).arbiter();
    let mut client = quorate::rpc::peer::client::PeerClient::new(
        asker.identity().clone(),
        follower,
        &format!("127.0.0.1:{}", cluster.ports[(follower - 1) as usize]),
        asker.client_options().clone(),
    )
    .expect("a client");
    let timeout = Duration::from_secs(2);
    let ahead = eventually("a recent heartbeat of the current term", ELECTION, || {
        let mut client = client.clone();
        async move {
            let reply = client.horizon(term + 1, timeout).await.ok()?;
            (reply.age_ms < 1_000).then_some(reply)
        }
    })
    .await;
    assert_eq!(
        ahead.term, term,
        "the follower's own term, below the asked one"
    );
    let own = client.horizon(term, timeout).await.expect("an answer");
    assert_eq!(own.term, term);
    assert!(
        own.age_ms >= ahead.age_ms,
        "rounds below the current term cannot be more recent than the current term's: \
         {own:?} vs {ahead:?}"
    );
    cluster.shutdown().await;
}

/// A member started with another lease duration is kept out: the other two refuse its
/// requests (and it refuses theirs), keep their leader and commit, and `status` names the
/// setting with both values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_with_another_lease_duration_is_refused_and_named_in_status() {
    let mut cluster = TestCluster::start().await;
    cluster.agreed_leader(&[1, 2, 3], ELECTION).await;
    // The witness is stopped, its lease duration edited alone, and started again.
    cluster.stop(3).await;
    let leader = cluster.agreed_leader(&[1, 2], ELECTION).await;
    let path = cluster.config_path(3);
    let mut text = std::fs::read_to_string(&path).expect("read node3's config");
    text.push_str("\n[lease]\nduration_ms = 3000\n");
    std::fs::write(&path, text).expect("write node3's config");
    cluster.restart(3).await;

    // node1 and node2 keep their leader and commit without the witness.
    let written = tokio::time::timeout(
        Duration::from_secs(5),
        cluster.node(leader).raft().client_write(noop()),
    )
    .await
    .expect("the write commits in time")
    .expect("the write commits");
    let index = written.log_id.index;
    assert_eq!(cluster.agreed_leader(&[1, 2], ELECTION).await, leader);

    // The leader's appends reach the witness: it either takes the write (the unsafe
    // outcome: it would vote and count in the quorum) or refuses them for their timing.
    eventually(
        "the witness to take or refuse the log",
        ELECTION,
        || async {
            let took = cluster.node(3).raft().metrics().borrow().last_log_index >= Some(index);
            let refused = cluster.node(3).notes().timing.of(leader).is_some();
            (took || refused).then_some(())
        },
    )
    .await;
    // Every append since the witness restarted was refused, so it cannot have the write.
    let witness = cluster.node(3).raft().metrics().borrow().clone();
    assert!(
        witness.last_log_index < Some(index),
        "the witness took the log although its lease duration differs: {witness:?}"
    );
    // The witness's own requests (votes, probes) reach node1 and are refused there too.
    eventually("node1 to refuse the witness's timing", ELECTION, || async {
        cluster.node(1).notes().timing.of(3)
    })
    .await;

    // status (and status --json, the same struct) names the member and both values.
    let endpoint = format!("127.0.0.1:{}", cluster.ports[0]);
    let mut admin = quorate::rpc::admin::AdminClient::new(&endpoint, Duration::from_secs(2))
        .expect("admin client");
    let status = admin.status().await.expect("status");
    let witness = status
        .members
        .iter()
        .find(|m| m.id == 3)
        .expect("the witness in status");
    assert_eq!(
        witness.timing_mismatch.as_deref(),
        Some("lease.duration_ms 3000 there, 1500 here")
    );
    let json = serde_json::to_value(&status).expect("status as JSON");
    assert_eq!(
        json["members"][2]["timing_mismatch"],
        "lease.duration_ms 3000 there, 1500 here"
    );
    assert!(status
        .members
        .iter()
        .filter(|m| m.id != 3)
        .all(|m| m.timing_mismatch.is_none()));
    cluster.shutdown().await;
}

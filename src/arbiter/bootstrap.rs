//! Forming a brand-new cluster, and keeping elections from tying forever.
//!
//! A new cluster forms only when every member is reachable and every member's store is
//! pristine; then the management node with the lowest id calls openraft's `initialize` with
//! the full membership from the config (the same on every node), and the others simply vote.
//! A node whose store is empty while a peer already has state does not initialize: its data
//! was lost or it is new, and re-initializing would fork the cluster. It says so and waits
//! for the leader to replicate the log to it, but takes the log only from a leader that says
//! it remembers nothing of this node (see [`AppendGate`]): openraft 0.9 stops a leader whose
//! follower forgot acknowledged entries.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, RaftTiming};
use crate::consensus::is_pristine;
use crate::consensus::types::{NodeId, Raft, Role};
use crate::rpc::peer::client::{ClientOptions, PeerClient, ProbeAnswer};
use crate::rpc::peer::{AppendGate, Identity};
use crate::status::NodeNotes;

/// How often a pristine node asks its peers about their stores.
const PROBE_INTERVAL: Duration = Duration::from_millis(200);
/// How long one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// What a pristine node learned from one round of probes.
#[derive(Debug, PartialEq, Eq)]
enum Round {
    /// Every peer answered and is pristine too.
    AllPristine,
    /// A leader remembers log entries this node acknowledged: this node lost its data.
    DataLost(Vec<String>),
    /// At least one peer already has cluster state.
    ClusterExists(Vec<String>),
    /// Some peers did not answer.
    Unreachable(Vec<String>),
}

/// Runs until this node's store is no longer pristine, or until `stop` is cancelled (then it
/// ends after the probe round in hand).
pub async fn run(
    raft: Raft,
    config: Config,
    identity: Arc<Identity>,
    notes: Arc<NodeNotes>,
    options: ClientOptions,
    gate: Arc<AppendGate>,
    stop: CancellationToken,
) {
    let initializer = config
        .members
        .iter()
        .filter(|m| m.role == Role::Management)
        .map(|m| m.id)
        .min();
    let initializer_name = config
        .members
        .iter()
        .find(|m| Some(m.id) == initializer)
        .map(|m| m.name.clone())
        .unwrap_or_default();
    let mut peers: Vec<(NodeId, String, PeerClient)> = Vec::new();
    for member in config.members.iter().filter(|m| m.id != config.node_id) {
        match PeerClient::new(
            identity.clone(),
            member.id,
            &member.address,
            ClientOptions {
                connect: PROBE_TIMEOUT,
                ..options.clone()
            },
        ) {
            Ok(client) => peers.push((member.id, member.name.clone(), client)),
            Err(e) => tracing::error!(peer = %member.name, error = %e, "cannot build a client"),
        }
    }
    loop {
        if !is_pristine(&raft.metrics().borrow()) {
            if notes.set_waiting(None) {
                tracing::info!("this node has cluster state; bootstrap is over");
            }
            return;
        }
        let (round, cleared) = probe_round(&mut peers).await;
        gate.set_cleared(cleared);
        let waiting = match round {
            Round::AllPristine if Some(config.node_id) == initializer => {
                tracing::info!(
                    members = config.members.len(),
                    "every member is reachable and empty: forming a new cluster"
                );
                match raft.initialize(config.membership()).await {
                    Ok(()) => {
                        // The membership entry is in this node's store: it has cluster state
                        // now, and nothing is left to wait for.
                        notes.set_waiting(None);
                        tracing::info!("cluster formed here; bootstrap is over");
                        return;
                    }
                    Err(e) => tracing::warn!(error = %e, "initialize refused"),
                }
                Some("forming a new cluster".to_string())
            }
            Round::AllPristine => Some(format!(
                "every member is empty; waiting for {initializer_name} to form the new cluster"
            )),
            Round::DataLost(leaders) => Some(format!(
                "this node's store is empty, but {leaders} leads and remembers log entries this \
                 node acknowledged: its data was lost. It takes no log from that leader (which \
                 would stop replication) and votes for nobody until a new leader has brought it \
                 up to date, so the cluster cannot fail over meanwhile. Restart the arbiter on \
                 {leaders} (quorate-agent or quorate-witness) to change leaders now",
                leaders = leaders.join(", ")
            )),
            Round::ClusterExists(holders) => Some(format!(
                "this node's store is empty but {} already has cluster state; it will not \
                 initialize a new cluster and waits for the leader to replicate the log to it",
                holders.join(", ")
            )),
            Round::Unreachable(missing) => Some(format!(
                "this node's store is empty; a new cluster forms only when every member is \
                 reachable, and {} did not answer",
                missing.join(", ")
            )),
        };
        if notes.set_waiting(waiting.clone()) {
            if let Some(reason) = &waiting {
                tracing::info!(reason = %reason, "bootstrap waiting");
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(PROBE_INTERVAL) => {}
        }
    }
}

/// Probes every peer once; returns what was learned and the peers this pristine node may
/// take the log from (those that answered and remember nothing of it).
async fn probe_round(peers: &mut [(NodeId, String, PeerClient)]) -> (Round, BTreeSet<NodeId>) {
    let asks = peers.iter_mut().map(|(id, name, client)| async move {
        let answer = client.probe(PROBE_TIMEOUT).await.ok();
        (*id, name.clone(), answer)
    });
    let answers = futures::future::join_all(asks).await;
    let cleared: BTreeSet<NodeId> = answers
        .iter()
        .filter(|(_, _, a)| a.as_ref().is_some_and(|a| !a.matched_you))
        .map(|(id, _, _)| *id)
        .collect();
    let names = |keep: &dyn Fn(&Option<ProbeAnswer>) -> bool| -> Vec<String> {
        answers
            .iter()
            .filter(|(_, _, a)| keep(a))
            .map(|(_, n, _)| n.clone())
            .collect()
    };
    let remembering = names(&|a| a.as_ref().is_some_and(|a| a.matched_you));
    if !remembering.is_empty() {
        return (Round::DataLost(remembering), cleared);
    }
    let holders = names(&|a| a.as_ref().is_some_and(|a| !a.pristine));
    if !holders.is_empty() {
        return (Round::ClusterExists(holders), cleared);
    }
    let missing = names(&|a| a.is_none());
    if missing.is_empty() {
        (Round::AllPristine, cleared)
    } else {
        (Round::Unreachable(missing), cleared)
    }
}

/// Starts an election after a random pause when no leader has been known for several
/// election timeouts. openraft 0.9 draws each node's election timeout once per process, so
/// two candidates whose draws are close can split the vote round after round; a fresh random
/// pause breaks the tie. Runs until `stop` is cancelled.
pub async fn nudge_elections(raft: Raft, timing: RaftTiming, stop: CancellationToken) {
    let patience = Duration::from_millis(timing.election_timeout_max_ms * 4);
    let mut leaderless_since: Option<tokio::time::Instant> = None;
    let mut metrics = raft.metrics();
    loop {
        let (has_leader, pristine) = {
            let m = metrics.borrow();
            (m.current_leader.is_some(), is_pristine(&m))
        };
        if has_leader || pristine {
            leaderless_since = None;
        } else {
            let since = *leaderless_since.get_or_insert_with(tokio::time::Instant::now);
            if since.elapsed() >= patience {
                let pause = rand::thread_rng().gen_range(0..timing.election_timeout_max_ms);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(pause)) => {}
                }
                if metrics.borrow().current_leader.is_none() {
                    tracing::info!(
                        leaderless_ms = since.elapsed().as_millis() as u64,
                        "no leader for several election timeouts; starting an election"
                    );
                    let _ = raft.trigger().elect().await;
                }
                leaderless_since = Some(tokio::time::Instant::now());
            }
        }
        // Wake on every metrics change, and at least every election timeout.
        let wait = Duration::from_millis(timing.election_timeout_min_ms);
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = tokio::time::timeout(wait, metrics.changed()) => match changed {
                Ok(Err(_)) => return,
                _ => continue,
            },
        }
    }
}

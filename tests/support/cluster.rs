//! An in-process three-node cluster: real arbiters, real sled stores in a temp dir, real gRPC
//! on loopback, with a fault table to cut links.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use quorate::agent::{Agent, AgentOptions};
use quorate::arbiter::{Arbiter, RunOptions};
use quorate::config::Config;
use quorate::rpc::peer::client::Faults;
use tokio::net::TcpListener;

use super::{config_toml, eventually};

/// One in-process member: an agent on a management node, a bare arbiter on the witness.
pub enum Member {
    /// A management node's agent (with its arbiter).
    Agent(Box<Agent>),
    /// The witness's arbiter.
    Arbiter(Arbiter),
}

impl Member {
    /// The arbiter underneath.
    pub fn arbiter(&self) -> &Arbiter {
        match self {
            Member::Agent(agent) => agent.arbiter(),
            Member::Arbiter(arbiter) => arbiter,
        }
    }

    /// The Raft handle.
    pub fn raft(&self) -> &quorate::consensus::types::Raft {
        self.arbiter().raft()
    }

    /// Notes for the admin service.
    pub fn notes(&self) -> &Arc<quorate::status::NodeNotes> {
        self.arbiter().notes()
    }

    async fn shutdown(self) {
        match self {
            Member::Agent(agent) => agent.shutdown().await.expect("agent shutdown"),
            Member::Arbiter(arbiter) => arbiter.shutdown().await.expect("arbiter shutdown"),
        }
    }
}

/// A running (or partly stopped) in-process cluster.
pub struct TestCluster {
    /// Holds every node's config and data.
    pub dir: tempfile::TempDir,
    /// Member ports in id order.
    pub ports: [u16; 3],
    /// Links cut on purpose.
    pub faults: Arc<Faults>,
    nodes: BTreeMap<u64, Member>,
    with_agents: bool,
}

impl TestCluster {
    /// Starts all three members and returns once the listeners are up.
    pub async fn start() -> TestCluster {
        Self::start_some(&[1, 2, 3]).await
    }

    /// Writes all three configs but starts only the members in `ids`; the others can be
    /// started later with [`TestCluster::restart`].
    pub async fn start_some(ids: &[u64]) -> TestCluster {
        Self::start_with_options(ids, false, "").await
    }

    /// Starts all three members, the management nodes as agents each with a Dummy resource
    /// group whose starts and stops go to one shared ledger (`ledger_path`).
    pub async fn start_with_agents() -> TestCluster {
        Self::start_with_options(&[1, 2, 3], true, "").await
    }

    /// Like [`TestCluster::start_with_agents`], with `common` (TOML tables such as `[lease]`)
    /// added to every member's config.
    pub async fn start_with_agents_and(common: &str) -> TestCluster {
        Self::start_with_options(&[1, 2, 3], true, common).await
    }

    async fn start_with_options(ids: &[u64], with_agents: bool, common: &str) -> TestCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut listeners = Vec::new();
        for _ in 0..3 {
            listeners.push(TcpListener::bind("127.0.0.1:0").await.expect("bind"));
        }
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        let ports = [ports[0], ports[1], ports[2]];
        let mut cluster = TestCluster {
            dir,
            ports,
            faults: Faults::new(),
            nodes: BTreeMap::new(),
            with_agents,
        };
        for (i, listener) in listeners.into_iter().enumerate() {
            let id = i as u64 + 1;
            let group = if with_agents && id != 3 {
                dummy_group(cluster.dir.path(), id)
            } else {
                String::new()
            };
            let extra = format!("{group}\n{common}");
            std::fs::write(
                cluster.config_path(id),
                config_toml("test", id, &ports, &extra),
            )
            .expect("write config");
            if ids.contains(&id) {
                cluster.start_with(id, listener).await;
            }
        }
        cluster
    }

    /// Path of node `id`'s config file.
    pub fn config_path(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node{id}.toml"))
    }

    /// Path of node `id`'s data directory.
    pub fn data_dir(&self, id: u64) -> PathBuf {
        Config::load(&self.config_path(id))
            .expect("config")
            .data_dir
    }

    async fn start_with(&mut self, id: u64, listener: TcpListener) {
        let config = Config::load(&self.config_path(id)).expect("load config");
        let run = RunOptions {
            faults: Some(self.faults.clone()),
            ..RunOptions::default()
        };
        let member = if self.with_agents && id != 3 {
            let options = AgentOptions {
                run,
                guard_command: None,
            };
            Member::Agent(Box::new(
                Agent::start(&config, listener, options)
                    .await
                    .expect("start agent"),
            ))
        } else {
            Member::Arbiter(
                Arbiter::start(&config, listener, run)
                    .await
                    .expect("start arbiter"),
            )
        };
        self.nodes.insert(id, member);
    }

    /// The shared ledger of every Dummy start and stop.
    pub fn ledger_path(&self) -> PathBuf {
        self.dir.path().join("ledger.jsonl")
    }

    /// The Dummy state file of node `id` (it exists while the Dummy runs there).
    pub fn dummy_state(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node{id}/dummy.state"))
    }

    /// The Dummy fault directory of node `id`.
    pub fn fault_dir(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node{id}/faults"))
    }

    /// The nodes whose Dummy runs right now.
    pub fn holders(&self) -> Vec<u64> {
        [1u64, 2]
            .into_iter()
            .filter(|id| self.dummy_state(*id).exists())
            .collect()
    }

    /// The committed owner and epoch as node `id` applied them.
    pub fn owner_seen_by(&self, id: u64) -> Option<(u64, u64)> {
        let applied = self.node(id).arbiter().applied();
        let owner = applied.borrow().state.owner;
        owner.map(|o| (o.node, o.epoch))
    }

    /// Waits until exactly one node holds the group and every running member agrees it owns
    /// it, and returns that node.
    pub async fn settled_owner(&self, timeout: Duration) -> u64 {
        eventually("exactly one node to hold the group", timeout, || async {
            let holders = self.holders();
            let [holder] = holders[..] else { return None };
            let agree = self
                .running()
                .iter()
                .all(|id| self.owner_seen_by(*id).map(|(n, _)| n) == Some(holder));
            agree.then_some(holder)
        })
        .await
    }

    /// Checks the shared ledger: no two nodes ever held the group at once, and epochs never
    /// went backwards. Returns the holding intervals.
    pub fn assert_ledger_clean(&self) -> Vec<quorate::resources::ledger::HoldingInterval> {
        let events =
            quorate::resources::ledger::read_ledger(&self.ledger_path()).unwrap_or_default();
        let intervals = quorate::resources::ledger::holding_intervals(events.iter());
        quorate::resources::ledger::assert_no_overlap(&intervals);
        let regressions = quorate::resources::ledger::epoch_regressions(events.iter());
        assert!(
            regressions.is_empty(),
            "epochs went backwards: {regressions:?}"
        );
        intervals
    }

    /// Stops node `id` without any clean-up, like a crash of the whole node: Raft stops
    /// answering, and its Dummy state file (the "running database") is removed as a power
    /// cut would end it, with a ledger line saying so.
    pub async fn power_off(&mut self, id: u64) {
        if let Some(member) = self.nodes.remove(&id) {
            match member {
                Member::Agent(agent) => {
                    agent.abandon().await;
                }
                Member::Arbiter(arbiter) => arbiter.shutdown().await.expect("shutdown"),
            }
        }
    }

    /// Starts node `id` again on its old port.
    pub async fn restart(&mut self, id: u64) {
        let port = self.ports[(id - 1) as usize];
        let listener = super::eventually(
            "the old port to be free again",
            Duration::from_secs(10),
            || async move { TcpListener::bind(("127.0.0.1", port)).await.ok() },
        )
        .await;
        self.start_with(id, listener).await;
    }

    /// Stops node `id` (clean shutdown of Raft and the server).
    pub async fn stop(&mut self, id: u64) {
        if let Some(node) = self.nodes.remove(&id) {
            node.shutdown().await;
        }
    }

    /// The running member `id`.
    pub fn node(&self, id: u64) -> &Member {
        self.nodes.get(&id).expect("node is running")
    }

    /// Ids of running nodes.
    pub fn running(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// Waits until every running node in `among` agrees on one leader that is itself in
    /// `among`, and returns it.
    pub async fn agreed_leader(&self, among: &[u64], timeout: Duration) -> u64 {
        eventually("the nodes to agree on a leader", timeout, || async {
            let leaders: Vec<Option<u64>> = among
                .iter()
                .map(|id| self.node(*id).raft().metrics().borrow().current_leader)
                .collect();
            let first = leaders.first().copied().flatten()?;
            if !self.nodes.contains_key(&first) {
                return None;
            }
            let leader_state = self.node(first).raft().metrics().borrow().state;
            (among.contains(&first)
                && leaders.iter().all(|l| *l == Some(first))
                && leader_state == openraft::ServerState::Leader)
                .then_some(first)
        })
        .await
    }

    /// Node `id`'s current term.
    pub fn term(&self, id: u64) -> u64 {
        self.node(id).raft().metrics().borrow().current_term
    }

    /// Stops every node.
    pub async fn shutdown(mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.stop(id).await;
        }
    }
}

/// The `[group]` section of a management node's config in an agent cluster: one Dummy.
fn dummy_group(dir: &std::path::Path, id: u64) -> String {
    let node_dir = dir.join(format!("node{id}"));
    std::fs::create_dir_all(node_dir.join("faults")).expect("node dir");
    format!(
        "[guard]\nenabled = false\n\n[group]\nstate_dir = \"node{id}/state\"\nmonitor_interval_ms = 100\n\n[[group.resources]]\nkind = \"dummy\"\nname = \"db\"\nstate_file = \"node{id}/dummy.state\"\nledger_file = \"ledger.jsonl\"\nfault_dir = \"node{id}/faults\"\n"
    )
}

/// The other management node.
pub fn other(id: u64) -> u64 {
    if id == 1 {
        2
    } else {
        1
    }
}

/// A request as a test proposes it.
pub fn request(command: quorate::consensus::state::Command) -> quorate::consensus::state::Request {
    quorate::consensus::state::Request {
        command,
        requested_by: "test".into(),
        reason: "test".into(),
        at_unix_ms: 0,
    }
}

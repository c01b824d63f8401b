//! An in-process three-node cluster: real arbiters, real sled stores in a temp dir, real gRPC
//! on loopback, with a fault table to cut links.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use quorate::arbiter::{Arbiter, RunOptions};
use quorate::config::Config;
use quorate::consensus::network::Faults;
use tokio::net::TcpListener;

use super::{config_toml, eventually};

/// A running (or partly stopped) in-process cluster.
pub struct TestCluster {
    /// Holds every node's config and data.
    pub dir: tempfile::TempDir,
    /// Member ports in id order.
    pub ports: [u16; 3],
    /// Links cut on purpose.
    pub faults: Arc<Faults>,
    nodes: BTreeMap<u64, Arbiter>,
}

impl TestCluster {
    /// Starts all three members and returns once the listeners are up.
    pub async fn start() -> TestCluster {
        Self::start_some(&[1, 2, 3]).await
    }

    /// Writes all three configs but starts only the members in `ids`; the others can be
    /// started later with [`TestCluster::restart`].
    pub async fn start_some(ids: &[u64]) -> TestCluster {
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
        };
        for (i, listener) in listeners.into_iter().enumerate() {
            let id = i as u64 + 1;
            std::fs::write(cluster.config_path(id), config_toml("test", id, &ports, ""))
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
        let arbiter = Arbiter::start(
            &config,
            listener,
            RunOptions {
                faults: Some(self.faults.clone()),
            },
        )
        .await
        .expect("start arbiter");
        self.nodes.insert(id, arbiter);
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
            node.shutdown().await.expect("shutdown");
        }
    }

    /// The running arbiter `id`.
    pub fn node(&self, id: u64) -> &Arbiter {
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

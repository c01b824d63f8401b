//! Shared helpers for quorate's integration tests: polling with a deadline, test cluster
//! configs on free loopback ports, and an in-process three-node cluster.
#![allow(dead_code)]

pub mod cluster;
pub mod loopdev;
pub mod netns;
pub mod prereq;
pub mod procs;
pub mod standin;
pub mod store;
pub mod testbed;

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Blocking variant of [`eventually`] for process-level tests.
pub fn eventually_blocking<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Three member names and roles in id order: two management nodes and the witness.
pub const MEMBERS: [(u64, &str, &str); 3] = [
    (1, "node1", "management"),
    (2, "node2", "management"),
    (3, "witness", "witness"),
];

/// The TOML config of node `id` for a cluster whose members listen on `ports` (in id order).
pub fn config_toml(cluster: &str, id: u64, ports: &[u16; 3], extra: &str) -> String {
    let name = MEMBERS
        .iter()
        .find(|m| m.0 == id)
        .map(|m| m.1.to_string())
        .unwrap_or_else(|| format!("node{id}"));
    let mut text =
        format!("cluster = \"{cluster}\"\nnode_id = {id}\ndata_dir = \"data/{name}\"\n{extra}\n");
    for ((member, name, role), port) in MEMBERS.iter().zip(ports) {
        text.push_str(&format!(
            "\n[[members]]\nid = {member}\nname = \"{name}\"\naddress = \"127.0.0.1:{port}\"\nrole = \"{role}\"\n"
        ));
    }
    text
}

/// Ports that were free a moment ago (for processes that bind by themselves).
pub fn free_ports() -> [u16; 3] {
    let listeners: Vec<std::net::TcpListener> = (0..3)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    let ports: Vec<u16> = listeners
        .iter()
        .map(|l| l.local_addr().expect("local address").port())
        .collect();
    [ports[0], ports[1], ports[2]]
}

//! DRBD's fence-peer and unfence-peer handlers (`quorate-agent fence-peer|unfence-peer`)
//! against a real process cluster: the owner outdates its peer through Raft, an outdated node
//! cannot be switched to, the mark clears after a resync, and without a quorum the handler
//! fails so DRBD keeps I/O frozen.

mod support;

use std::process::{Command, Output};
use std::time::Duration;

use support::eventually_blocking;
use support::procs::{bin, ctl, status_json, ProcessCluster};

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

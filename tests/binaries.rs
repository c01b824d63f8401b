//! The real binaries, started from config files in a temp dir, observed through `quoratectl`.

mod support;

use std::time::Duration;

use support::procs::{ctl, quoratectl, status_json, ProcessCluster};
use support::{config_toml, eventually_blocking, free_ports, MEMBERS};

#[test]
fn three_binaries_form_a_cluster_and_fail_over_on_sigkill() {
    let mut cluster = ProcessCluster::start();
    let status = cluster.status_with_leader(1, None);
    assert_eq!(status["cluster"], "proc", "{status}");
    assert!(status["term"].as_u64().unwrap_or(0) >= 1, "{status}");
    let members = status["members"].as_array().expect("members");
    assert_eq!(members.len(), 3);
    for ((id, name, role), member) in MEMBERS.iter().zip(members) {
        assert_eq!(member["id"], *id);
        assert_eq!(member["name"], *name);
        assert_eq!(member["role"], *role);
        assert_eq!(
            member["address"],
            format!("127.0.0.1:{}", cluster.port(*id)).as_str()
        );
        assert!(member["state"].is_string());
        assert_eq!(member["reachable"], true, "{status}");
    }
    let leader = status["leader"].as_str().unwrap().to_string();

    // The scripting commands agree with the JSON. Node 2 may learn of the leader a moment
    // after node 1 reported it (`leader` exits 1 until it knows one): poll with a deadline.
    let endpoint = format!("127.0.0.1:{}", cluster.port(2));
    let named = eventually_blocking("node 2 to name the leader", Duration::from_secs(10), || {
        let out = quoratectl(&["--endpoint", &endpoint, "leader"]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    });
    assert_eq!(named, leader);
    let out = quoratectl(&["--endpoint", &endpoint, "term"]);
    let term: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(term >= 1);
    let out = quoratectl(&["--endpoint", &endpoint, "status"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains(&format!("leader:   {leader}")), "{table}");
    assert!(table.contains("witness"), "{table}");

    // SIGKILL the leader's process; the survivors elect another.
    let leader_id = MEMBERS.iter().find(|m| m.1 == leader).unwrap().0;
    cluster.daemons.get_mut(&leader_id).unwrap().kill();
    let survivor = if leader_id == 1 { 2 } else { 1 };
    let after = cluster.status_with_leader(survivor, Some(&leader));
    assert!(after["term"].as_u64().unwrap() > status["term"].as_u64().unwrap());
    let dead = &after["members"].as_array().unwrap()[(leader_id - 1) as usize];
    assert_eq!(dead["reachable"], false, "{after}\n{}", cluster.logs());
}

#[test]
fn check_config_lists_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.toml");
    let text = config_toml("bad cluster", 9, &[7101, 7101, 0], "");
    std::fs::write(&file, text).unwrap();
    let out = quoratectl(&["check-config", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for expect in [
        "cluster = \"bad cluster\"",
        "node_id 9 is not the id",
        "address \"127.0.0.1:7101\" appears more than once",
        "port \"0\"",
    ] {
        assert!(err.contains(expect), "missing {expect:?} in:\n{err}");
    }
    assert!(err.contains("4 problem(s)"), "{err}");

    let good = dir.path().join("good.toml");
    std::fs::write(&good, config_toml("ok", 3, &[7101, 7102, 7103], "")).unwrap();
    let out = quoratectl(&["check-config", good.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("witness (witness)"));
}

/// Runs `check-config` on each named config in `cluster-configs/<set>/`; returns that directory.
fn check_shipped_configs(set: &str, names: &[&str]) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("cluster-configs")
        .join(set);
    for name in names {
        let file = dir.join(format!("{name}.toml"));
        let out = quoratectl(&["check-config", file.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    dir
}

#[test]
fn the_shipped_local_configs_are_valid() {
    check_shipped_configs("local", &["node1", "node2", "witness"]);
}

#[test]
fn an_unreachable_endpoint_is_a_one_line_error() {
    let port = free_ports()[0];
    let endpoint = format!("127.0.0.1:{port}");
    let out = quoratectl(&["--endpoint", &endpoint, "--timeout-ms", "500", "status"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains(&endpoint), "{err}");
    let out = quoratectl(&["--endpoint", "not an endpoint", "status"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad endpoint"));
}

#[test]
fn a_daemon_refuses_a_config_for_another_role() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("witness.toml");
    std::fs::write(&file, config_toml("roles", 3, &free_ports(), "")).unwrap();
    let out = std::process::Command::new(support::procs::bin("quorate-agent"))
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("has role witness"), "{err}");
}

#[test]
fn quoratectl_switches_over_refuses_with_reasons_and_keeps_history() {
    let cluster = ProcessCluster::start_with(true);
    let owner = eventually_blocking(
        "an owner with its group up",
        Duration::from_secs(30),
        || {
            let status = status_json(cluster.port(1))?;
            let owner = status["owner"].as_str()?.to_string();
            let running = status["members"].as_array()?.iter().any(|m| {
                m["name"] == owner.as_str() && m["resources"][0][1].as_str() == Some("running")
            });
            running.then_some(owner)
        },
    );
    let target = if owner == "node1" { "node2" } else { "node1" };

    // Refusals name the reason and change nothing.
    for (args, expect) in [
        (vec!["switchover", "--to", "witness"], "witness"),
        (vec!["switchover", "--to", owner.as_str()], "already owns"),
        (vec!["switchover", "--to", "nobody"], "no member is named"),
    ] {
        let out = ctl(cluster.port(1), &args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{args:?}: {err}");
    }
    assert!(ctl(cluster.port(2), &["standby", target]).status.success());
    let out = ctl(cluster.port(1), &["switchover", "--to", target]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("standby"));
    assert!(ctl(cluster.port(1), &["unstandby", target])
        .status
        .success());
    assert!(ctl(cluster.port(3), &["pause", "--reason", "maintenance"])
        .status
        .success());
    let paused = status_json(cluster.port(2)).expect("status");
    assert_eq!(paused["paused"], true);
    let out = ctl(cluster.port(1), &["switchover", "--to", target]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("paused"));
    assert!(ctl(cluster.port(1), &["resume"]).status.success());

    // The switchover itself, followed step by step, asked through the witness.
    let out = ctl(
        cluster.port(3),
        &["switchover", "--to", target, "--reason", "test"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("switchover done: {target} owns the group")),
        "{text}"
    );
    let status = status_json(cluster.port(1)).expect("status");
    assert_eq!(status["owner"], target);
    assert!(status["epoch"].as_u64().unwrap() > 0);
    assert!(status["lease_remaining_ms"].is_u64(), "{status}");
    for member in status["members"].as_array().unwrap() {
        assert!(member["standby"].is_boolean() && member["outdated"].is_boolean());
        assert!(member["fail_count"].is_u64());
    }

    // The ledger shows the group moved without overlap, and the history tells the story.
    let events = quorate::resources::ledger::read_ledger(&cluster.dir.path().join("ledger.jsonl"))
        .expect("ledger");
    let intervals = quorate::resources::ledger::holding_intervals(events.iter());
    quorate::resources::ledger::assert_no_overlap(&intervals);
    assert_eq!(intervals.len(), 2, "{intervals:?}");
    let out = ctl(cluster.port(2), &["history"]);
    let history = String::from_utf8_lossy(&out.stdout);
    for expect in [
        "switchover to node",
        "released the group",
        "ownership moved",
        "cluster paused",
        "maintenance",
        "set to standby",
        "started the group (epoch",
        "after it saw the grant",
    ] {
        assert!(history.contains(expect), "missing {expect:?}:\n{history}");
    }
}

#[test]
fn the_reference_configs_are_complete_and_valid() {
    let dir = check_shipped_configs("reference", &["node-a", "node-b", "witness"]);
    for name in ["node-a", "node-b"] {
        let config = quorate::config::Config::load(&dir.join(format!("{name}.toml"))).unwrap();
        let kinds: Vec<&str> = config.group.resources.iter().map(|r| r.kind()).collect();
        assert_eq!(kinds, ["drbd", "filesystem", "mysql", "vip"], "{name}");
        assert!(config.guard.enabled);
    }
    // A typo inside a resource entry is an error that names the field.
    let text = std::fs::read_to_string(dir.join("node-a.toml"))
        .unwrap()
        .replace("umount_attempts = 3", "umount_atempts = 3");
    let tmp = tempfile::tempdir().unwrap();
    let broken = tmp.path().join("broken.toml");
    std::fs::write(&broken, text).unwrap();
    let out = quoratectl(&["check-config", broken.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("umount_atempts"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_witness_binary_links_no_resource_agent_code() {
    // Defined functions of the agents' code (nm, from binutils, which the Rust toolchain's
    // linker needs anyway); the agent binary is the control.
    let symbols = |binary: &str| {
        let out = std::process::Command::new("nm")
            .args(["--defined-only", "--demangle"])
            .arg(support::procs::bin(binary))
            .output()
            .expect("run nm (binutils)");
        assert!(out.status.success(), "nm failed on {binary}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let agent = symbols("quorate-agent");
    let witness = symbols("quorate-witness");
    for name in [
        "VipAgent",
        "MysqlAgent",
        "FilesystemAgent",
        "DrbdAgent",
        "mysql_async",
    ] {
        assert!(
            agent.contains(name),
            "control: {name} missing from the agent"
        );
        assert!(!witness.contains(name), "{name} is linked into the witness");
    }
}

//! The lease guard against a frozen agent, with the real binaries: two `quorate-agent`
//! processes (each with a Dummy group and its guard child) and a `quorate-witness` on
//! loopback. The owner's agent process alone is stopped with SIGSTOP; its guard, in its own
//! process group, keeps running and must fence the Dummy when the lease runs out, before the
//! other node's Dummy starts. After SIGCONT the old owner must not start its group again.
//!
//! Everything is read from outside: the Dummy state files, the shared ledger (every start,
//! stop and fence with the writing process's id) and `quoratectl status --json`. Every
//! process this test starts, the guards included, is killed when the test ends, also on panic.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{getpgid, Pid};
use quorate::config::Config;
use quorate::resources::ledger::{self, LedgerAction, LedgerEvent};
use support::procs::{status_json, Daemon};
use support::{config_toml, eventually_blocking, free_ports, MEMBERS};

/// Time allowed for any one move of the group across real processes.
const SETTLE: Duration = Duration::from_secs(30);

/// Two agents with guards and a witness, from configs in a temp dir.
struct ProcCluster {
    dir: tempfile::TempDir,
    ports: [u16; 3],
    daemons: BTreeMap<u64, Daemon>,
}

impl ProcCluster {
    fn start() -> ProcCluster {
        // Guards outlive their agents on purpose. As a subreaper this test inherits the guards
        // of agents it kills and can reap them, instead of leaving zombies to an init that
        // may not reap.
        nix::sys::prctl::set_child_subreaper(true).expect("become a child subreaper");
        let dir = tempfile::tempdir().expect("temp dir");
        let ports = free_ports();
        let mut cluster = ProcCluster {
            dir,
            ports,
            daemons: BTreeMap::new(),
        };
        for (id, name, role) in MEMBERS {
            let extra = if role == "witness" {
                String::new()
            } else {
                std::fs::create_dir_all(cluster.dir.path().join(format!("{name}/faults")))
                    .expect("node dir");
                dummy_group(name)
            };
            std::fs::write(
                cluster.config(id),
                config_toml("sigstop", id, &ports, &extra),
            )
            .expect("write config");
            let binary = if role == "witness" {
                "quorate-witness"
            } else {
                "quorate-agent"
            };
            let log = cluster.dir.path().join(format!("{name}.log"));
            let daemon = Daemon::start(binary, &cluster.config(id), &log);
            cluster.daemons.insert(id, daemon);
        }
        cluster
    }

    fn config(&self, id: u64) -> PathBuf {
        self.dir
            .path()
            .join(format!("{}.toml", MEMBERS[(id - 1) as usize].1))
    }

    fn port(&self, id: u64) -> u16 {
        self.ports[(id - 1) as usize]
    }

    fn dummy_state(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node{id}/dummy.state"))
    }

    fn holders(&self) -> Vec<u64> {
        [1u64, 2]
            .into_iter()
            .filter(|id| self.dummy_state(*id).exists())
            .collect()
    }

    fn ledger(&self) -> Vec<LedgerEvent> {
        ledger::read_ledger(&self.dir.path().join("ledger.jsonl")).expect("ledger readable")
    }

    fn agent_pid(&self, id: u64) -> Pid {
        Pid::from_raw(self.daemons[&id].pid() as i32)
    }

    /// The guard process of node `id`: `quorate-agent guard --config <its config>`.
    fn guard_pid(&self, id: u64) -> Option<Pid> {
        let config = self.config(id).display().to_string();
        processes_mentioning(self.dir.path())
            .into_iter()
            .find(|(_, args)| args.iter().any(|a| a == "guard") && args.contains(&config))
            .map(|(pid, _)| pid)
    }

    /// Every daemon's log, for a failure message.
    fn logs(&self) -> String {
        let mut out = String::new();
        for (_, name, _) in MEMBERS {
            let text = std::fs::read_to_string(self.dir.path().join(format!("{name}.log")))
                .unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!(
                "--- {name} (last 40 lines) ---\n{}\n",
                lines[lines.len().saturating_sub(40)..].join("\n")
            ));
        }
        out
    }
}

impl Drop for ProcCluster {
    fn drop(&mut self) {
        // SIGKILL works on a stopped process too; the daemons are our children and reaped.
        for daemon in self.daemons.values_mut() {
            daemon.kill();
        }
        // The guards are the agents' children, in their own process groups, and outlive
        // their agents on purpose: find them by the temp dir in their command line.
        for (pid, _) in processes_mentioning(self.dir.path()) {
            if kill(pid, Signal::SIGKILL).is_ok() {
                // Ours since its agent died (see `start`); ECHILD otherwise, harmless.
                let _ = waitpid(pid, None);
            }
        }
        // A guard that exited by itself has no command line left to find it by; reap every
        // remaining zombie child (the daemons themselves were reaped above).
        while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            if status == WaitStatus::StillAlive {
                break;
            }
        }
    }
}

/// Processes (other than this one) whose command line mentions `dir`, with their arguments.
fn processes_mentioning(dir: &Path) -> Vec<(Pid, Vec<String>)> {
    let needle = dir.display().to_string();
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter_map(|pid| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let args: Vec<String> = raw
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            args.iter()
                .any(|a| a.contains(&needle))
                .then_some((Pid::from_raw(pid as i32), args))
        })
        .collect()
}

/// The `[guard]` and `[group]` sections of management node `name`: one Dummy, guard on.
fn dummy_group(name: &str) -> String {
    format!(
        "[guard]\nenabled = true\n\n[group]\nstate_dir = \"{name}/state\"\nmonitor_interval_ms = 100\n\n[[group.resources]]\nkind = \"dummy\"\nname = \"db\"\nstate_file = \"{name}/dummy.state\"\nledger_file = \"ledger.jsonl\"\nfault_dir = \"{name}/faults\"\n"
    )
}

fn monotonic_ns() -> u64 {
    quorate::clock::monotonic_ns()
}

fn other(id: u64) -> u64 {
    if id == 1 {
        2
    } else {
        1
    }
}

#[test]
fn the_guard_fences_a_stopped_agent_before_the_other_node_starts() {
    let cluster = ProcCluster::start();
    let timing = Config::load(&cluster.config(1)).expect("config").timing();
    let owner = eventually_blocking("exactly one Dummy running", SETTLE, || {
        match cluster.holders()[..] {
            [holder] => Some(holder),
            _ => None,
        }
    });
    let successor = other(owner);
    let agent = cluster.agent_pid(owner);
    let guard = eventually_blocking("the owner's guard process", SETTLE, || {
        cluster.guard_pid(owner)
    });
    assert_ne!(guard, agent);
    assert_eq!(
        getpgid(Some(guard)).expect("guard's process group"),
        guard,
        "the guard leads its own process group"
    );
    assert_ne!(getpgid(Some(agent)).expect("agent's process group"), guard);
    let epoch = cluster
        .ledger()
        .iter()
        .rev()
        .find(|e| e.node == format!("node{owner}") && e.action == LedgerAction::Start)
        .map(|e| e.epoch)
        .expect("the owner's start in the ledger");

    // Whether the owner also leads Raft decides whether an election comes first; both cases
    // must pass, and the line printed below says which one ran.
    let led = status_json(cluster.port(owner))
        .and_then(|s| s["leader"].as_str().map(|l| l == format!("node{owner}")));

    // Freeze the owner's agent only: no renewals, no fencing from the agent itself.
    let stopped_at = monotonic_ns();
    kill(agent, Signal::SIGSTOP).expect("SIGSTOP the owner's agent");
    let started_at = Instant::now();
    eventually_blocking("the other node's Dummy to start", SETTLE, || {
        (cluster.holders() == vec![successor]).then_some(())
    });
    let moved_after = started_at.elapsed();

    let events = cluster.ledger();
    let intervals = ledger::holding_intervals(events.iter());
    ledger::assert_no_overlap(&intervals);
    assert!(
        ledger::epoch_regressions(events.iter()).is_empty(),
        "{events:?}"
    );
    let fence = events
        .iter()
        .find(|e| e.node == format!("node{owner}") && e.mono_ns > stopped_at)
        .unwrap_or_else(|| panic!("no fence by the owner: {events:?}\n{}", cluster.logs()));
    assert_eq!(fence.action, LedgerAction::Fence, "{events:?}");
    assert_eq!(fence.epoch, epoch);
    assert_eq!(
        fence.pid,
        guard.as_raw() as u32,
        "the guard, not the frozen agent, fenced: {events:?}"
    );
    let start = events
        .iter()
        .find(|e| e.node == format!("node{successor}") && e.action == LedgerAction::Start)
        .expect("the successor's start");
    assert!(start.epoch > epoch);
    assert!(fence.mono_ns < start.mono_ns, "{events:?}");
    let fenced_after_ms = (fence.mono_ns - stopped_at) / 1_000_000;
    // The guard's deadline is the owner's lease, counted from before the last renewal.
    assert!(
        fenced_after_ms <= timing.owner_lease_ms() + 500,
        "the guard fenced {fenced_after_ms} ms after the stop"
    );
    eprintln!(
        "owner led Raft: {led:?}; SIGSTOP -> guard fence {fenced_after_ms} ms; fence -> successor start {} ms; \
         successor's state file seen after {moved_after:?}",
        (start.mono_ns - fence.mono_ns) / 1_000_000
    );

    // Thaw the old owner: it catches up, sees the new owner and starts nothing.
    let resumed_at = monotonic_ns();
    kill(agent, Signal::SIGCONT).expect("SIGCONT the owner's agent");
    eventually_blocking("the old owner to apply the new grant", SETTLE, || {
        let status = status_json(cluster.port(owner))?;
        let me = &status["members"].as_array()?[(owner - 1) as usize];
        (me["applied_index"].as_u64()? >= start.epoch).then_some(())
    });
    let window =
        Duration::from_millis(timing.leader_lease_ms() + timing.fence_margin_ms + timing.lease_ms);
    let until = Instant::now() + window;
    while Instant::now() < until {
        assert_eq!(
            cluster.holders(),
            vec![successor],
            "after SIGCONT\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let events = cluster.ledger();
    assert!(
        !events
            .iter()
            .any(|e| e.node == format!("node{owner}") && e.mono_ns > resumed_at),
        "the old owner acted after SIGCONT: {events:?}"
    );
    let intervals = ledger::holding_intervals(events.iter());
    ledger::assert_no_overlap(&intervals);
    assert!(ledger::epoch_regressions(events.iter()).is_empty());
    assert_eq!(intervals.len(), 2, "{intervals:?}");
    assert_eq!(intervals[1].until_ns, None, "the successor still holds");
}

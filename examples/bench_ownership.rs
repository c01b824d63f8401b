//! Benchmarks how long the resource group is without a holder when ownership moves.
//!
//! `cargo build --release --bins && cargo run --release --example bench_ownership -- [--runs N]
//! [--switchovers M] [--out FILE]` prints one JSON object (also written to FILE):
//!
//! - `owner_kill`: three real release binaries (two `quorate-agent` with one Dummy resource each
//!   and the lease guard enabled, one `quorate-witness`) on free loopback ports, default timing
//!   (reported under `lease`). Each of N runs waits for a settled cluster (exactly one Dummy
//!   state file, all three members name that node as owner and see every member reachable),
//!   SIGKILLs the owner's agent process only, and measures from just before the kill:
//!   `guard_fence_ms`, when the old owner's guard (which outlives its agent) wrote its fence
//!   line to the shared ledger: about one owner lease after the last renewal, since nothing
//!   else can stop the Dummy; `ledger_start_ms`, when the other node wrote its start line;
//!   `state_file_ms`, when the test saw the other node's state file (polled every 5 ms).
//!   `killed_led_raft` says whether the killed agent also led Raft (then an election comes
//!   first). The killed agent is restarted before the next run. Every run also checks from the ledger
//!   that no two nodes held the Dummy at once; an overlap aborts the benchmark.
//!   With the defaults the expected floor is about `lease·(1+ρ) + fence_margin` plus the
//!   part of a renewal interval that had passed at the kill, plus an election when the killed
//!   agent also led Raft.
//! - `switchover`: there is no stable client for a planned switchover yet, so this part runs
//!   in one process through the library: two `Agent`s (Dummy groups, no guard) and a witness
//!   `Arbiter` over loopback gRPC. Each of M runs commits `RequestSwitchover` to the other node
//!   on the leader and measures `total_ms` (commit request to the target's state file seen)
//!   and `gap_ms` (ledger: the old owner's stop line to the new owner's start line, i.e. the
//!   time no node held the group). A planned move waits for no lease, so these are
//!   stop + commit `Released` + grant + renewal + start. `back_to_back` starts each switchover
//!   as soon as the previous one is done; `spaced_1s` waits a second first. They differ because
//!   after each batch of actions the agent's loop waits up to 500 ms for a fresh monitor
//!   report before it decides again, so a node that has just released answers a grant late.
//!
//! Times are milliseconds: p50 and p99 by nearest rank, min, max, mean. On a small shared
//! machine the tails mostly measure the neighbours; compare runs from the same machine only.

#[path = "bench_support/mod.rs"]
mod bench_support;
use bench_support::*;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use quorate::agent::{Agent, AgentOptions};
use quorate::arbiter::{Arbiter, RunOptions};
use quorate::config::Config;
use quorate::consensus::state::{Command as RaftCommand, Request};
use quorate::resources::ledger::{self, LedgerAction, LedgerEvent};
use serde_json::{json, Value};

/// Command-line options of the benchmark.
#[derive(Debug, Parser)]
#[command(about = "Measure how long quorate's resource group is without a holder when it moves")]
struct Args {
    /// Owner kills to measure.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Planned switchovers to measure.
    #[arg(long, default_value_t = 20)]
    switchovers: usize,
    /// Also write the JSON result to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Guards outlive their killed agents; as a subreaper this process can reap them.
    nix::sys::prctl::set_child_subreaper(true)?;
    let bins = binaries_dir()?;
    eprintln!(
        "owner kill: {} runs, binaries from {}",
        args.runs,
        bins.display()
    );
    let kills = owner_kill(&bins, args.runs)?;
    eprintln!("switchover: {} runs in process", args.switchovers);
    let runtime = tokio::runtime::Runtime::new()?;
    let back_to_back = runtime.block_on(switchover(args.switchovers, Duration::ZERO))?;
    let spaced = runtime.block_on(switchover(args.switchovers, Duration::from_secs(1)))?;
    let lease = quorate::config::LeaseTiming::default();
    let result = json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "lease": { "duration_ms": lease.duration_ms, "renew_interval_ms": lease.renew_interval_ms,
                   "fence_margin_ms": lease.fence_margin_ms, "drift_permille": lease.drift_permille },
        "owner_kill": kills,
        "switchover": { "back_to_back": back_to_back, "spaced_1s": spaced },
    });
    let text = serde_json::to_string_pretty(&result)?;
    println!("{text}");
    if let Some(out) = &args.out {
        std::fs::write(out, format!("{text}\n"))?;
    }
    Ok(())
}

/// Member `id`'s config: a Dummy group (state, ledger and faults under `dir`) on management
/// nodes, with or without the guard.
fn config_toml(id: u64, ports: &[u16; 3], guard: bool) -> String {
    let name = MEMBERS[(id - 1) as usize].1;
    let mut text = format!("cluster = \"bench\"\nnode_id = {id}\ndata_dir = \"data/{name}\"\n");
    if id != 3 {
        text.push_str(&format!(
            "[guard]\nenabled = {guard}\n\n[group]\nstate_dir = \"{name}/state\"\nmonitor_interval_ms = 100\n\n\
             [[group.resources]]\nkind = \"dummy\"\nname = \"db\"\nstate_file = \"{name}/dummy.state\"\n\
             ledger_file = \"ledger.jsonl\"\n"
        ));
    }
    for ((member, name, role, _), port) in MEMBERS.iter().zip(ports) {
        text.push_str(&format!(
            "\n[[members]]\nid = {member}\nname = \"{name}\"\naddress = \"127.0.0.1:{port}\"\nrole = \"{role}\"\n"
        ));
    }
    text
}

/// Writes the three configs into `dir` and returns the ports (free a moment ago).
fn write_configs(dir: &Path, guard: bool) -> anyhow::Result<[u16; 3]> {
    let listeners = (0..3)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    let mut ports = [0u16; 3];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr()?.port();
    }
    for (id, name, _, _) in MEMBERS {
        if id != 3 {
            std::fs::create_dir_all(dir.join(name))?;
        }
        std::fs::write(
            dir.join(format!("{name}.toml")),
            config_toml(id, &ports, guard),
        )?;
    }
    Ok(ports)
}

/// Nodes whose Dummy state file exists under `dir`.
fn holders(dir: &Path) -> Vec<u64> {
    [1u64, 2]
        .into_iter()
        .filter(|id| dir.join(format!("node{id}/dummy.state")).exists())
        .collect()
}

/// The ledger under `dir`, after checking that no two holding intervals overlap.
fn checked_ledger(dir: &Path) -> anyhow::Result<Vec<LedgerEvent>> {
    let events = ledger::read_ledger(&dir.join("ledger.jsonl"))?;
    let overlaps = ledger::overlaps(&ledger::holding_intervals(events.iter()));
    if !overlaps.is_empty() {
        anyhow::bail!("two holders at once: {overlaps:?}");
    }
    Ok(events)
}

/// The first ledger line of `action` by `node` after `after_ns`.
fn event_after(
    events: &[LedgerEvent],
    node: u64,
    action: LedgerAction,
    after_ns: u64,
) -> Option<u64> {
    events
        .iter()
        .find(|e| e.node == format!("node{node}") && e.action == action && e.mono_ns > after_ns)
        .map(|e| e.mono_ns)
}

/// The real daemons of one cluster. Dropping it kills them, their guards, and reaps all.
struct ProcCluster {
    dir: tempfile::TempDir,
    ports: [u16; 3],
    bins: PathBuf,
    daemons: [Option<Child>; 3],
}

impl ProcCluster {
    fn start(bins: &Path) -> anyhow::Result<ProcCluster> {
        let dir = tempfile::tempdir()?;
        let ports = write_configs(dir.path(), true)?;
        let mut cluster = ProcCluster {
            dir,
            ports,
            bins: bins.into(),
            daemons: [None, None, None],
        };
        for (id, _, _, _) in MEMBERS {
            cluster.spawn(id)?;
        }
        Ok(cluster)
    }

    /// Starts member `id` once its port can be bound again.
    fn spawn(&mut self, id: u64) -> anyhow::Result<()> {
        let (_, name, _, binary) = MEMBERS[(id - 1) as usize];
        let port = self.ports[(id - 1) as usize];
        poll("the port to be free", Duration::from_millis(10), || {
            std::net::TcpListener::bind(("127.0.0.1", port))
                .ok()
                .map(drop)
        })?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{name}.log")))?;
        let child = Command::new(self.bins.join(binary))
            .arg("--config")
            .arg(self.dir.path().join(format!("{name}.toml")))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.daemons[(id - 1) as usize] = Some(child);
        Ok(())
    }

    /// SIGKILLs member `id`'s process (not its guard) and reaps it.
    fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.daemons[(id - 1) as usize].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn status(&self, id: u64) -> Option<Value> {
        let endpoint = format!("127.0.0.1:{}", self.ports[(id - 1) as usize]);
        let out = Command::new(self.bins.join("quoratectl"))
            .args(["--endpoint", &endpoint, "--timeout-ms", "1000"])
            .args(["status", "--json"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())?
    }

    /// Waits until one node holds the Dummy and all members agree it owns the group; returns
    /// the holder and whether it also leads Raft.
    fn settled(&self) -> anyhow::Result<(u64, bool)> {
        poll("a settled owner", Duration::from_millis(50), || {
            let [holder] = holders(self.dir.path())[..] else {
                return None;
            };
            for (id, _, _, _) in MEMBERS {
                let status = self.status(id)?;
                let reachable = status["members"]
                    .as_array()?
                    .iter()
                    .all(|m| m["reachable"] == true);
                if !reachable || status["owner"].as_str()? != format!("node{holder}") {
                    return None;
                }
            }
            let leader = self.status(holder)?["leader"].as_str().map(str::to_string);
            Some((holder, leader == Some(format!("node{holder}"))))
        })
    }
}

impl Drop for ProcCluster {
    fn drop(&mut self) {
        for id in [1, 2, 3] {
            self.kill(id);
        }
        // Guards have no daemon handle: find them by the temp dir in their command line.
        let needle = self.dir.path().display().to_string();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if pid != std::process::id() as i32
                && String::from_utf8_lossy(&cmdline).contains(&needle)
            {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                let _ = waitpid(Pid::from_raw(pid), None);
            }
        }
        reap_zombies();
    }
}

/// Reaps every child that already exited (guards reparented to this subreaper).
fn reap_zombies() {
    while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
}

/// SIGKILLs the owner's agent `runs` times and measures until the other node holds the group.
fn owner_kill(bins: &Path, runs: usize) -> anyhow::Result<Value> {
    let mut cluster = ProcCluster::start(bins)?;
    let (mut fences, mut starts, mut files, mut detail) = (vec![], vec![], vec![], vec![]);
    for run in 0..runs {
        let (owner, led) = cluster.settled()?;
        let successor = 3 - owner;
        let t0 = quorate::clock::monotonic_ns();
        let start = Instant::now();
        cluster.kill(owner);
        poll("the other node's Dummy", Duration::from_millis(5), || {
            (holders(cluster.dir.path()) == vec![successor]).then_some(())
        })?;
        let file_ms = start.elapsed().as_secs_f64() * 1000.0;
        let events = checked_ledger(cluster.dir.path())?;
        let ms = |at: Option<u64>| at.map(|at| at.saturating_sub(t0) as f64 / 1e6);
        let fence_ms = ms(event_after(&events, owner, LedgerAction::Fence, t0));
        let start_ms = ms(event_after(&events, successor, LedgerAction::Start, t0))
            .ok_or_else(|| anyhow::anyhow!("no start line by node{successor}"))?;
        eprintln!(
            "run {:>2}: killed node{owner}, node{successor} started after {start_ms:.0} ms",
            run + 1
        );
        fences.extend(fence_ms);
        starts.push(start_ms);
        files.push(file_ms);
        detail.push(json!({ "killed": owner, "killed_led_raft": led, "guard_fence_ms": fence_ms, "ledger_start_ms": start_ms, "state_file_ms": file_ms }));
        cluster.spawn(owner)?;
        reap_zombies();
    }
    Ok(json!({
        "guard_fence_ms": summary(&fences),
        "ledger_start_ms": summary(&starts),
        "state_file_ms": summary(&files),
        "runs": detail,
    }))
}

/// Commits `runs` planned switchovers in an in-process cluster, each `spacing` after the
/// previous one ended, and times each.
async fn switchover(runs: usize, spacing: Duration) -> anyhow::Result<Value> {
    let dir = tempfile::tempdir()?;
    let ports = write_configs(dir.path(), false)?;
    let (mut agents, mut witness) = (Vec::new(), None);
    for (id, name, _, _) in MEMBERS {
        let config = Config::load(&dir.path().join(format!("{name}.toml")))?;
        let listener =
            tokio::net::TcpListener::bind(("127.0.0.1", ports[(id - 1) as usize])).await?;
        if id == 3 {
            witness = Some(Arbiter::start(&config, listener, RunOptions::default()).await?);
        } else {
            agents.push(Agent::start(&config, listener, AgentOptions::default()).await?);
        }
    }
    let witness = witness.ok_or_else(|| anyhow::anyhow!("no witness"))?;
    let (mut totals, mut gaps) = (vec![], vec![]);
    for run in 0..runs {
        tokio::time::sleep(spacing).await;
        let owner = poll_async("one holder", || {
            let [holder] = holders(dir.path())[..] else {
                return None;
            };
            let seen = witness.applied().borrow().state.owner.map(|o| o.node);
            (seen == Some(holder)).then_some(holder)
        })
        .await?;
        let target = 3 - owner;
        let leader = poll_async("a leader", || {
            witness.raft().metrics().borrow().current_leader
        })
        .await?;
        let raft = match leader {
            3 => witness.raft(),
            id => agents[(id - 1) as usize].arbiter().raft(),
        };
        let t0 = quorate::clock::monotonic_ns();
        let start = Instant::now();
        let command = RaftCommand::RequestSwitchover { to: target };
        let (requested_by, reason) = ("bench".to_string(), "bench".to_string());
        raft.client_write(Request {
            command,
            requested_by,
            reason,
            at_unix_ms: 0,
        })
        .await?;
        poll_async("the target's Dummy", || {
            (holders(dir.path()) == vec![target]).then_some(())
        })
        .await?;
        let total = start.elapsed().as_secs_f64() * 1000.0;
        let events = checked_ledger(dir.path())?;
        let stop = event_after(&events, owner, LedgerAction::Stop, t0);
        let began = event_after(&events, target, LedgerAction::Start, t0);
        let gap = match (stop, began) {
            (Some(stop), Some(began)) => began.saturating_sub(stop) as f64 / 1e6,
            _ => anyhow::bail!("run {run}: no stop/start pair in the ledger"),
        };
        totals.push(total);
        gaps.push(gap);
    }
    for agent in agents {
        agent.shutdown().await?;
    }
    witness.shutdown().await?;
    Ok(json!({ "total_ms": summary(&totals), "gap_ms": summary(&gaps) }))
}

//! Benchmarks the two numbers that decide how fast quorate reacts: how long the cluster is
//! without a Raft leader after the leader's process dies, and how long one replicated,
//! durable commit takes.
//!
//! `cargo build --release --bins && cargo run --release --example bench_arbiter -- [--runs N]
//! [--commits M] [--out FILE]` prints one JSON object (also written to FILE):
//!
//! - `leader_failover`: three real release binaries (two `quorate-agent`, one
//!   `quorate-witness`) on free loopback ports, configs and data in a fresh temp dir, default
//!   Raft timing (reported under `raft_timing`). Each run waits until all three members answer
//!   `quoratectl status --json` with the same leader, every member reachable and every log
//!   caught up (same last and applied index), SIGKILLs the leader's process group, and
//!   measures from just before the kill until `quoratectl --endpoint <survivor> leader` (the
//!   two survivors polled in turn, ~10 ms apart, 30 s deadline) names a member other than the
//!   killed one. The killed node is restarted before
//!   the next run, so one cluster serves every run. openraft 0.9 lets a follower campaign only
//!   `max + ET` after the last leader message (`max` = `election_timeout_max`, the lease in
//!   which it refuses votes; ET drawn once per process from `min..max`), so expect
//!   `raft_timing.expected_detection_ms` = [min+max, 2*max), plus up to one tick (1.5 x the
//!   heartbeat interval), a vote round trip with fsyncs, and the polling resolution: `final_poll` is how long the `quoratectl leader` call that saw
//!   the new leader took (process start, gRPC connect, the member asking its peers), so a
//!   sample is late by at most that plus the 10 ms poll interval.
//! - `commit_latency`: an in-process three-node cluster (library API, sled stores in a temp
//!   dir with quorate's fsync, gRPC on loopback), M sequential `client_write` of a small Noop
//!   on the leader after 10 unmeasured warm-up writes. One sample is the time until the entry
//!   is durable on a majority, committed and applied on the leader.
//!
//! Latencies are in milliseconds: p50 and p99 by nearest rank, min, max, mean. `machine` says
//! where the numbers come from; on a shared or small machine the tails mostly measure the
//! neighbours, so compare runs only from the same machine and the same disk (the temp dir).

#[path = "bench_support/mod.rs"]
mod bench_support;
use bench_support::*;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use quorate::arbiter::{Arbiter, RunOptions};
use quorate::config::Config;
use quorate::consensus::state::{Command as RaftCommand, Request};
use serde_json::{json, Value};

/// Command-line options of the benchmark.
#[derive(Debug, Parser)]
#[command(about = "Measure quorate's leader failover time and commit latency")]
struct Args {
    /// Leader kills to measure.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Sequential commits to measure.
    #[arg(long, default_value_t = 500)]
    commits: usize,
    /// Also write the JSON result to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_arbiter: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs both benchmarks and prints the JSON result.
fn run(args: Args) -> anyhow::Result<()> {
    let bins = binaries_dir()?;
    let machine = machine();
    eprintln!(
        "leader failover: {} runs with binaries from {}",
        args.runs,
        bins.display()
    );
    let failover = leader_failover(&bins, args.runs)?;
    eprintln!("commit latency: {} commits", args.commits);
    let runtime = tokio::runtime::Runtime::new()?;
    let commits = runtime.block_on(commit_latency(args.commits))?;
    let result = json!({
        "machine": machine,
        "loadavg_at_end": loadavg(),
        "leader_failover": failover,
        "commit_latency": commits,
    });
    let text = serde_json::to_string_pretty(&result)?;
    println!("{text}");
    if let Some(out) = &args.out {
        std::fs::write(out, format!("{text}\n"))
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", out.display()))?;
    }
    Ok(())
}

/// The shared summary of duration samples, in milliseconds.
fn summary_of(samples: &[Duration]) -> Value {
    summary(&samples.iter().map(|d| ms(*d)).collect::<Vec<_>>())
}

/// The TOML config of member `id` for a cluster listening on `ports` (default timing).
fn config_toml(cluster: &str, id: u64, ports: &[u16; 3]) -> String {
    let name = MEMBERS[(id - 1) as usize].1;
    let mut text = format!("cluster = \"{cluster}\"\nnode_id = {id}\ndata_dir = \"data/{name}\"\n");
    for ((member, name, role, _), port) in MEMBERS.iter().zip(ports) {
        text.push_str(&format!(
            "\n[[members]]\nid = {member}\nname = \"{name}\"\naddress = \"127.0.0.1:{port}\"\nrole = \"{role}\"\n"
        ));
    }
    text
}

/// Binds three loopback listeners and returns them with their ports.
fn bind_three() -> anyhow::Result<(Vec<std::net::TcpListener>, [u16; 3])> {
    let listeners = (0..3)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    let mut ports = [0u16; 3];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr()?.port();
    }
    Ok((listeners, ports))
}

/// A daemon in its own process group; the whole group is SIGKILLed and reaped on drop.
struct Daemon {
    child: Child,
    reaped: bool,
}

impl Daemon {
    /// SIGKILLs the process group (the node "loses power") and reaps the daemon, once: after
    /// the reap the id may belong to someone else.
    fn kill(&mut self) {
        if self.reaped {
            return;
        }
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) with a negative pid signals only the group this daemon leads; the
        // daemon is not reaped yet, so the id is still ours.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        let _ = self.child.wait();
        self.reaped = true;
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three real daemons from configs in a temp dir; every daemon dies with this value.
struct ProcessCluster {
    daemons: [Option<Daemon>; 3],
    ports: [u16; 3],
    bins: PathBuf,
    dir: tempfile::TempDir,
}

impl ProcessCluster {
    fn start(bins: &Path) -> anyhow::Result<ProcessCluster> {
        let dir = tempfile::tempdir()?;
        let (listeners, ports) = bind_three()?;
        drop(listeners);
        for (id, name, _, _) in MEMBERS {
            std::fs::write(
                dir.path().join(format!("{name}.toml")),
                config_toml("bench", id, &ports),
            )?;
        }
        let mut cluster = ProcessCluster {
            daemons: [None, None, None],
            ports,
            bins: bins.into(),
            dir,
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
        let free = || {
            std::net::TcpListener::bind(("127.0.0.1", port))
                .ok()
                .map(drop)
        };
        poll(
            &format!("port {port} to be free"),
            Duration::from_millis(10),
            free,
        )?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{name}.log")))?;
        let child = std::os::unix::process::CommandExt::process_group(
            Command::new(self.bins.join(binary))
                .arg("--config")
                .arg(self.dir.path().join(format!("{name}.toml")))
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log),
            0,
        )
        .spawn()?;
        self.daemons[(id - 1) as usize] = Some(Daemon {
            child,
            reaped: false,
        });
        Ok(())
    }

    /// `quoratectl --endpoint <member id> ARGS`; stdout on success.
    fn ctl(&self, id: u64, args: &[&str]) -> Option<String> {
        let endpoint = format!("127.0.0.1:{}", self.ports[(id - 1) as usize]);
        let out = Command::new(self.bins.join("quoratectl"))
            .args(["--endpoint", &endpoint, "--timeout-ms", "1000"])
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Waits until all three members name the same leader, see every member reachable, and
    /// every member has the same last log index and has applied it; returns the leader's name.
    /// Without the log check a just-restarted member may still lack the leader's entries when
    /// the leader is killed; it then campaigns with a short log, and the vote it gives itself
    /// makes it refuse the up-to-date survivor for another lease, which is a different
    /// scenario (failover right after a restart) from the one measured here.
    fn wait_stable(&self) -> anyhow::Result<String> {
        poll(
            "all three members to agree on a leader and a caught-up log",
            Duration::from_millis(50),
            || {
                let mut leaders = Vec::new();
                for (id, _, _, _) in MEMBERS {
                    let status: Value =
                        serde_json::from_str(&self.ctl(id, &["status", "--json"])?).ok()?;
                    let members = status["members"].as_array()?;
                    let last = members.first()?["last_log_index"].as_u64()?;
                    let caught_up = |m: &Value| {
                        m["reachable"] == true
                            && m["last_log_index"] == last
                            && m["applied_index"] == last
                    };
                    if members.len() != 3 || !members.iter().all(caught_up) {
                        return None;
                    }
                    leaders.push(status["leader"].as_str()?.to_string());
                }
                leaders
                    .iter()
                    .all(|l| *l == leaders[0])
                    .then(|| leaders[0].clone())
            },
        )
    }

    /// The last lines of every member's log, for an error report.
    fn log_tails(&self) -> String {
        let mut out = String::new();
        for (_, name, _, _) in MEMBERS {
            let text = std::fs::read_to_string(self.dir.path().join(format!("{name}.log")))
                .unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!(
                "--- {name} ---\n{}\n",
                lines[lines.len().saturating_sub(15)..].join("\n")
            ));
        }
        out
    }
}

/// Kills the leader `runs` times and measures until a survivor names a new one.
fn leader_failover(bins: &Path, runs: usize) -> anyhow::Result<Value> {
    let mut cluster = ProcessCluster::start(bins)?;
    let timing = Config::load(&cluster.dir.path().join("node1.toml"))?.raft;
    let with_logs =
        |e: anyhow::Error, c: &ProcessCluster| anyhow::anyhow!("{e}\n{}", c.log_tails());
    cluster.wait_stable().map_err(|e| with_logs(e, &cluster))?;

    let (mut samples, mut final_polls, mut detail) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        let old = cluster.wait_stable().map_err(|e| with_logs(e, &cluster))?;
        let Some(&(killed, ..)) = MEMBERS.iter().find(|m| m.1 == old) else {
            anyhow::bail!("status names an unknown leader {old:?}");
        };
        let survivors: Vec<u64> = (1..=3).filter(|id| *id != killed).collect();
        let start = Instant::now();
        if let Some(daemon) = cluster.daemons[(killed - 1) as usize].as_mut() {
            daemon.kill();
        }
        // The poll that saw the new leader took `last_poll` itself: the sample is late by at
        // most that plus one poll interval.
        let (mut polls, mut last_poll) = (0u32, Duration::ZERO);
        let new = poll(
            "a survivor to name a new leader",
            Duration::from_millis(10),
            || {
                polls += 1;
                let asked = Instant::now();
                let answer = cluster.ctl(survivors[polls as usize % 2], &["leader"]);
                last_poll = asked.elapsed();
                answer.filter(|a| !a.is_empty() && *a != old)
            },
        )
        .map_err(|e| with_logs(e, &cluster))?;
        let elapsed = start.elapsed();
        eprintln!(
            "run {:>2}: killed {old}, {new} leads after {elapsed:.1?} ({polls} polls)",
            run + 1
        );
        samples.push(elapsed);
        final_polls.push(last_poll);
        detail.push(json!({
            "killed": old, "new_leader": new, "ms": ms(elapsed),
            "polls": polls, "last_poll_ms": ms(last_poll),
        }));
        cluster.daemons[(killed - 1) as usize] = None;
        cluster.spawn(killed)?;
    }
    Ok(json!({
        "summary": summary_of(&samples),
        "final_poll": summary_of(&final_polls),
        "raft_timing": {
            "heartbeat_interval_ms": timing.heartbeat_interval_ms,
            "election_timeout_min_ms": timing.election_timeout_min_ms,
            "election_timeout_max_ms": timing.election_timeout_max_ms,
            "expected_detection_ms": [
                timing.election_timeout_min_ms + timing.election_timeout_max_ms,
                2 * timing.election_timeout_max_ms,
            ],
        },
        "runs": detail,
    }))
}

/// Times `commits` sequential Noop writes on the leader of an in-process cluster.
async fn commit_latency(commits: usize) -> anyhow::Result<Value> {
    let dir = tempfile::tempdir()?;
    let (listeners, ports) = bind_three()?;
    let mut nodes = Vec::new();
    for ((id, name, _, _), listener) in MEMBERS.into_iter().zip(listeners) {
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, config_toml("bench-commit", id, &ports))?;
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        nodes.push(Arbiter::start(&Config::load(&path)?, listener, RunOptions::default()).await?);
    }
    let deadline = Instant::now() + DEADLINE;
    let leader = loop {
        let seen = nodes[0].raft().metrics().borrow().current_leader;
        if let Some(node) = seen.and_then(|id| nodes.iter().find(|n| n.node_id() == id)) {
            if node.raft().metrics().borrow().state == openraft::ServerState::Leader {
                break node;
            }
        }
        if Instant::now() >= deadline {
            anyhow::bail!("no leader in the in-process cluster after {DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let request = || Request {
        command: RaftCommand::Noop,
        requested_by: "bench".into(),
        reason: "commit latency sample".into(),
        at_unix_ms: 0,
    };
    for _ in 0..10 {
        leader.raft().client_write(request()).await?;
    }
    let mut samples = Vec::with_capacity(commits);
    for _ in 0..commits {
        let start = Instant::now();
        leader.raft().client_write(request()).await?;
        samples.push(start.elapsed());
    }
    let leader_name = MEMBERS[(leader.node_id() - 1) as usize].1;
    for node in nodes {
        node.shutdown().await?;
    }
    Ok(json!({ "summary": summary_of(&samples), "leader": leader_name, "warmup_commits": 10 }))
}

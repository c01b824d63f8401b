//! Process-level tests of the lease guard: real processes, real pipes, real signals.
//!
//! This binary plays three roles, chosen by its arguments:
//! - no `--role`: the test runner; it runs every scenario and prints `N passed, N failed`;
//! - `--role agent --dir D`: a stand-in agent that spawns the guard through `GuardHandle` and
//!   renews a 300 ms lease every 50 ms, printing each deadline, until it is stopped or killed;
//! - `--role guard --dir D`: the guard, running `run_guard` on stdin with two fake resource
//!   agents (`vip`, `mysql`) whose fence appends `name epoch lease_clock_ns pid` to `D/fence.log`;
//!   when `run_guard` returns it writes the outcome as JSON to `D/outcome.json`.
//!
//! Every wait polls with a deadline; every process started here is killed and reaped by a drop
//! guard if a scenario fails.

use async_trait::async_trait;
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{getpgid, Pid};
use quorate::clock::lease_now_ns;
use quorate::guard::{run_guard, GuardHandle, GuardSettings};
use quorate::resources::agent::{ActionContext, AgentError, ResourceAgent, ResourceState};
use std::io::{BufRead, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

const LEASE_MS: u64 = 300;
const RENEW_MS: u64 = 50;

type Outcome = Result<String, String>;
/// A named scenario.
type Scenario = (&'static str, fn() -> Outcome);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let role = arg(&args, "--role");
    let dir = arg(&args, "--dir").map(PathBuf::from);
    match (role.as_deref(), dir) {
        (Some("guard"), Some(dir)) => guard_role(&dir),
        (Some("agent"), Some(dir)) => agent_role(&dir),
        (Some(other), _) => {
            eprintln!("unknown role {other:?} or missing --dir");
            std::process::exit(2);
        }
        (None, _) => run_scenarios(),
    }
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn now_ns() -> u64 {
    lease_now_ns().expect("lease clock")
}

// ---------------------------------------------------------------- the guard role

struct MarkerAgent {
    name: &'static str,
    log: PathBuf,
}

#[async_trait]
impl ResourceAgent for MarkerAgent {
    fn name(&self) -> &str {
        self.name
    }
    fn kind(&self) -> &'static str {
        "dummy"
    }
    fn validate(&self) -> Vec<String> {
        Vec::new()
    }
    async fn start(&self, _ctx: &ActionContext) -> Result<(), AgentError> {
        Ok(())
    }
    async fn stop(&self, _ctx: &ActionContext) -> Result<(), AgentError> {
        Ok(())
    }
    async fn monitor(&self) -> ResourceState {
        ResourceState::Stopped
    }
    async fn fence(&self, ctx: &ActionContext) -> Result<(), AgentError> {
        let line = format!(
            "{} {} {} {}\n",
            self.name,
            ctx.epoch,
            now_ns(),
            std::process::id()
        );
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| {
                AgentError::new(
                    self.name,
                    quorate::resources::agent::Recovery::Fence,
                    e.to_string(),
                )
            })?;
        file.write_all(line.as_bytes()).map_err(|e| {
            AgentError::new(
                self.name,
                quorate::resources::agent::Recovery::Fence,
                e.to_string(),
            )
        })
    }
}

fn guard_role(dir: &Path) {
    let filter = std::env::var("QUORATE_TEST_LOG").unwrap_or_else(|_| "error".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let log = dir.join("fence.log");
    let agents: Vec<Arc<dyn ResourceAgent>> = vec![
        Arc::new(MarkerAgent {
            name: "vip",
            log: log.clone(),
        }),
        Arc::new(MarkerAgent { name: "mysql", log }),
    ];
    let settings = GuardSettings {
        node: "node-a".into(),
        pet_interval: Duration::from_millis(50),
        fence_timeout: Duration::from_secs(2),
        watchdog_timeout_s: None,
    };
    let outcome = runtime().block_on(async {
        let stdin = tokio::io::BufReader::new(tokio::io::stdin());
        run_guard(stdin, agents, None, settings).await
    });
    let json = serde_json::to_string(&outcome).expect("outcome as JSON");
    let temporary = dir.join("outcome.json.tmp");
    std::fs::write(&temporary, json).expect("write outcome");
    std::fs::rename(&temporary, dir.join("outcome.json")).expect("publish outcome");
    // tokio's stdin reader thread may still be parked; leave without waiting for it.
    std::process::exit(0);
}

// ---------------------------------------------------------------- the agent role

fn agent_role(dir: &Path) {
    let dir_arg = dir.display().to_string();
    runtime().block_on(async {
        let mut guard = GuardHandle::spawn_current_exe(["--role", "guard", "--dir", &dir_arg])
            .expect("spawn guard");
        let mut stdout = std::io::stdout();
        writeln!(stdout, "guard_pid {}", guard.pid()).expect("stdout");
        stdout.flush().expect("stdout");
        // Bounded life, so a failed test run cannot leave this agent behind for long.
        let give_up = Instant::now() + Duration::from_secs(20);
        while Instant::now() < give_up {
            let deadline = now_ns() + LEASE_MS * 1_000_000;
            guard.arm(deadline, 7).await.expect("arm guard");
            if writeln!(stdout, "armed {deadline}")
                .and_then(|_| stdout.flush())
                .is_err()
            {
                break; // the test went away
            }
            tokio::time::sleep(Duration::from_millis(RENEW_MS)).await;
        }
        let _ = guard.disarm(7).await;
        let _ = guard.close().await;
    });
}

// ---------------------------------------------------------------- the test runner

fn run_scenarios() {
    let scenarios: [Scenario; 3] = [
        (
            "agent_that_never_renews_is_fenced_by_the_guard_process",
            never_renews,
        ),
        (
            "sigstopped_agent_group_is_fenced_by_its_guard",
            sigstopped_agent,
        ),
        (
            "crashed_agent_is_fenced_at_the_deadline_then_the_guard_exits",
            crashed_agent,
        ),
    ];
    // Orphaned guards (their agent died) are re-parented to this process, so it can reap them.
    nix::sys::prctl::set_child_subreaper(true).expect("become child subreaper");
    let (mut passed, mut failed) = (0, 0);
    for (name, scenario) in scenarios {
        match scenario() {
            Ok(measured) => {
                passed += 1;
                println!("test {name} ... ok ({measured})");
            }
            Err(why) => {
                failed += 1;
                println!("test {name} ... FAILED: {why}");
            }
        }
    }
    println!("guard_process: {passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}

fn ensure(condition: bool, why: impl FnOnce() -> String) -> Result<(), String> {
    if condition {
        Ok(())
    } else {
        Err(why())
    }
}

/// Polls `probe` every 5 ms until it yields a value or `limit` passes.
fn poll<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> Result<T, String> {
    let started = Instant::now();
    loop {
        if let Some(value) = probe() {
            return Ok(value);
        }
        if started.elapsed() > limit {
            return Err(format!("timed out after {limit:?} waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// One fence marker written by the guard's fake agents.
#[derive(Debug)]
struct Marker {
    name: String,
    epoch: u64,
    at_ns: u64,
    pid: i32,
}

fn markers(dir: &Path) -> Vec<Marker> {
    let text = std::fs::read_to_string(dir.join("fence.log")).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            Some(Marker {
                name: f.first()?.to_string(),
                epoch: f.get(1)?.parse().ok()?,
                at_ns: f.get(2)?.parse().ok()?,
                pid: f.get(3)?.parse().ok()?,
            })
        })
        .collect()
}

fn outcome(dir: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("outcome.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// Process state letter from /proc (R, S, T for stopped, Z, ...).
fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

/// Kills and reaps the processes a scenario started, whatever happens to the scenario.
#[derive(Default)]
struct Reaper {
    groups: Vec<Pid>,
    pids: Vec<Pid>,
}

impl Reaper {
    /// Waits (bounded) for `pid`, a child of this process, to exit; returns its status.
    fn wait(&mut self, pid: Pid, limit: Duration) -> Result<WaitStatus, String> {
        let status = poll(&format!("pid {pid} to exit"), limit, || {
            match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => None,
                other => Some(other),
            }
        })?;
        self.pids.retain(|p| *p != pid);
        self.groups.retain(|p| *p != pid);
        status.map_err(|e| format!("waitpid {pid}: {e}"))
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        for group in &self.groups {
            let _ = killpg(*group, Signal::SIGKILL);
        }
        for pid in &self.pids {
            let _ = kill(*pid, Signal::SIGKILL);
        }
        for pid in self.groups.iter().chain(&self.pids) {
            let _ = poll("reap", Duration::from_secs(2), || {
                match waitpid(*pid, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) => None,
                    _ => Some(()),
                }
            });
        }
    }
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// The test process is the agent: it arms a 300 ms deadline once and never renews.
fn never_renews() -> Outcome {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let dir_arg = dir.path().display().to_string();
    let mut reaper = Reaper::default();
    runtime().block_on(async {
        let mut guard = GuardHandle::spawn_current_exe(["--role", "guard", "--dir", &dir_arg])
            .map_err(|e| e.to_string())?;
        let guard_pid = Pid::from_raw(guard.pid() as i32);
        reaper.pids.push(guard_pid);
        let own_group = getpgid(None).map_err(|e| e.to_string())?;
        let guard_group = getpgid(Some(guard_pid)).map_err(|e| e.to_string())?;
        ensure(guard_group == guard_pid && guard_group != own_group, || {
            format!("guard pgid {guard_group}, expected its own group {guard_pid} apart from {own_group}")
        })?;

        let deadline = now_ns() + LEASE_MS * 1_000_000;
        guard.arm(deadline, 3).await.map_err(|e| e.to_string())?;
        let fenced = poll("two fence markers", Duration::from_secs(5), || {
            let m = markers(dir.path());
            (m.len() >= 2).then_some(m)
        })?;
        let names: Vec<&str> = fenced.iter().map(|m| m.name.as_str()).collect();
        ensure(names == ["vip", "mysql"], || format!("fence order {names:?}"))?;
        ensure(fenced.iter().all(|m| m.epoch == 3 && m.pid == guard_pid.as_raw()), || {
            format!("markers {fenced:?} not from guard {guard_pid} at epoch 3")
        })?;
        ensure(fenced[0].at_ns >= deadline, || "fenced before the deadline".into())?;
        let late = fenced[0].at_ns - deadline;

        let status = guard.close().await.map_err(|e| e.to_string())?;
        reaper.pids.clear();
        ensure(status.success(), || format!("guard exited with {status}"))?;
        let outcome = outcome(dir.path()).ok_or("no outcome.json")?;
        ensure(outcome["fences"].as_array().map(Vec::len) == Some(1), || format!("{outcome}"))?;
        ensure(outcome["fences"][0]["deadline_ns"].as_u64() == Some(deadline), || format!("{outcome}"))?;
        Ok(format!("first fence action {:.2} ms after the deadline", ms(late)))
    })
}

/// Starts the stand-in agent in its own process group; returns it, its stdout lines and the
/// guard's pid.
fn start_agent(
    dir: &Path,
    reaper: &mut Reaper,
) -> Result<(Pid, mpsc::Receiver<String>, Pid), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .args(["--role", "agent", "--dir"])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("spawn agent: {e}"))?;
    let agent = Pid::from_raw(child.id() as i32);
    reaper.groups.push(agent);
    let stdout = child.stdout.take().ok_or("agent stdout")?;
    let (sender, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let first = lines
        .recv_timeout(Duration::from_secs(5))
        .map_err(|_| "agent did not report its guard".to_string())?;
    let guard: i32 = first
        .strip_prefix("guard_pid ")
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("unexpected agent line {first:?}"))?;
    let guard = Pid::from_raw(guard);
    reaper.pids.push(guard);
    Ok((agent, lines, guard))
}

/// Reads `armed <deadline>` lines until `count` renewals were seen; returns the last deadline.
fn renewals(lines: &mpsc::Receiver<String>, count: usize) -> Result<u64, String> {
    let mut last = 0;
    for _ in 0..count {
        let line = lines
            .recv_timeout(Duration::from_secs(5))
            .map_err(|_| "agent stopped renewing".to_string())?;
        last = line
            .strip_prefix("armed ")
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| format!("unexpected agent line {line:?}"))?;
    }
    Ok(last)
}

/// The agent renews for a while, then its whole process group is stopped with SIGSTOP; the
/// guard, in a group of its own, must keep running and fence at the last armed deadline.
fn sigstopped_agent() -> Outcome {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut reaper = Reaper::default();
    let (agent, lines, guard) = start_agent(dir.path(), &mut reaper)?;
    let renewed_before_stop = renewals(&lines, 4)?;
    ensure(markers(dir.path()).is_empty(), || {
        "fenced while the agent renewed".into()
    })?;

    killpg(agent, Signal::SIGSTOP).map_err(|e| format!("SIGSTOP agent group: {e}"))?;
    let stopped_at = now_ns();
    poll("agent stopped", Duration::from_secs(2), || {
        (proc_state(agent.as_raw()) == Some('T')).then_some(())
    })?;
    let fenced = poll("two fence markers", Duration::from_secs(5), || {
        let m = markers(dir.path());
        (m.len() >= 2).then_some(m)
    })?;
    ensure(proc_state(guard.as_raw()) != Some('T'), || {
        "the guard was stopped with the agent".into()
    })?;
    ensure(
        fenced
            .iter()
            .all(|m| m.pid == guard.as_raw() && m.epoch == 7),
        || format!("markers {fenced:?}"),
    )?;
    ensure(fenced[0].at_ns >= renewed_before_stop, || {
        "fenced before a deadline the agent had renewed".into()
    })?;

    // Kill the stopped agent: the guard sees its input close, is disarmed already, and exits.
    killpg(agent, Signal::SIGKILL).map_err(|e| format!("SIGKILL agent group: {e}"))?;
    reaper.wait(agent, Duration::from_secs(5))?;
    let status = reaper.wait(guard, Duration::from_secs(5))?;
    ensure(status == WaitStatus::Exited(guard, 0), || {
        format!("guard ended with {status:?}")
    })?;
    let outcome = outcome(dir.path()).ok_or("no outcome.json")?;
    let fences = outcome["fences"].as_array().cloned().unwrap_or_default();
    ensure(fences.len() == 1, || format!("{outcome}"))?;
    let deadline = fences[0]["deadline_ns"].as_u64().ok_or("deadline_ns")?;
    ensure(
        deadline >= renewed_before_stop && fenced[0].at_ns >= deadline,
        || format!("{outcome}"),
    )?;
    Ok(format!(
        "fenced {:.2} ms after the armed deadline, {:.2} ms after SIGSTOP",
        ms(fenced[0].at_ns - deadline),
        ms(fenced[0].at_ns.saturating_sub(stopped_at))
    ))
}

/// The agent is killed outright: the guard's input closes while armed, so it must wait for the
/// deadline, fence, and then exit by itself.
fn crashed_agent() -> Outcome {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut reaper = Reaper::default();
    let (agent, lines, guard) = start_agent(dir.path(), &mut reaper)?;
    let last_seen = renewals(&lines, 3)?;
    killpg(agent, Signal::SIGKILL).map_err(|e| format!("SIGKILL agent group: {e}"))?;
    let killed_at = now_ns();
    reaper.wait(agent, Duration::from_secs(5))?;
    // Exit code 0 (not a signal) proves the guard outlived its agent and ended on its own.
    let status = reaper.wait(guard, Duration::from_secs(5))?;
    ensure(status == WaitStatus::Exited(guard, 0), || {
        format!("guard ended with {status:?}")
    })?;
    let fenced = markers(dir.path());
    ensure(fenced.len() == 2, || format!("markers {fenced:?}"))?;
    let outcome = outcome(dir.path()).ok_or("no outcome.json")?;
    ensure(outcome["exit"] == "InputClosedAfterFence", || {
        format!("{outcome}")
    })?;
    let deadline = outcome["fences"][0]["deadline_ns"]
        .as_u64()
        .ok_or("deadline_ns")?;
    ensure(deadline >= last_seen && fenced[0].at_ns >= deadline, || {
        format!("{outcome}")
    })?;
    Ok(format!(
        "fenced {:.2} ms after the deadline ({:.2} ms after the kill)",
        ms(fenced[0].at_ns - deadline),
        ms(fenced[0].at_ns.saturating_sub(killed_at))
    ))
}

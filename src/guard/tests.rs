//! In-process tests of the guard loop: real clock, short deadlines, fake agents that record
//! every fence call with the lease-clock time it happened.

use super::*;
use crate::resources::agent::{AgentError, Recovery, ResourceState};
use async_trait::async_trait;
use std::path::Path;
use std::sync::Mutex;
use tokio::io::{AsyncWriteExt, BufReader, DuplexStream};
use tokio::task::JoinHandle;

/// What a fake agent does when fenced.
#[derive(Clone, Copy)]
enum Behaviour {
    Succeed,
    Fail,
    Hang,
}

/// One fence call: which agent, which epoch, when (lease-clock ns).
#[derive(Clone, Debug)]
struct Call {
    name: String,
    epoch: u64,
    at_ns: u64,
}

type Calls = Arc<Mutex<Vec<Call>>>;

struct FakeAgent {
    name: String,
    behaviour: Behaviour,
    calls: Calls,
}

#[async_trait]
impl ResourceAgent for FakeAgent {
    fn name(&self) -> &str {
        &self.name
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
        self.calls.lock().expect("calls").push(Call {
            name: self.name.clone(),
            epoch: ctx.epoch,
            at_ns: now(),
        });
        match self.behaviour {
            Behaviour::Succeed => Ok(()),
            Behaviour::Fail => Err(AgentError::new(&self.name, Recovery::Fence, "cannot stop")),
            Behaviour::Hang => std::future::pending().await,
        }
    }
}

fn agents(spec: &[(&str, Behaviour)]) -> (Vec<Arc<dyn ResourceAgent>>, Calls) {
    let calls = Calls::default();
    let agents = spec
        .iter()
        .map(|&(name, behaviour)| {
            Arc::new(FakeAgent {
                name: name.to_string(),
                behaviour,
                calls: calls.clone(),
            }) as Arc<dyn ResourceAgent>
        })
        .collect();
    (agents, calls)
}

fn now() -> u64 {
    clock::lease_now_ns().expect("clock")
}

fn ms(n: u64) -> u64 {
    n * 1_000_000
}

fn settings() -> GuardSettings {
    GuardSettings {
        node: "node-a".into(),
        pet_interval: Duration::from_millis(20),
        fence_timeout: Duration::from_millis(200),
        watchdog_timeout_s: None,
    }
}

/// A guard running in a task, fed through an in-memory pipe.
struct Running {
    writer: Option<DuplexStream>,
    task: JoinHandle<GuardOutcome>,
}

impl Running {
    fn start(
        agents: Vec<Arc<dyn ResourceAgent>>,
        watchdog: Option<PathBuf>,
        settings: GuardSettings,
    ) -> Running {
        let (writer, reader) = tokio::io::duplex(4096);
        let task = tokio::spawn(run_guard(
            BufReader::new(reader),
            agents,
            watchdog,
            settings,
        ));
        Running {
            writer: Some(writer),
            task,
        }
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        let writer = self.writer.as_mut().expect("input still open");
        writer.write_all(bytes).await.expect("write to guard");
    }

    async fn send(&mut self, command: GuardCommand) {
        self.send_raw(command.to_line().as_bytes()).await;
    }

    fn close_input(&mut self) {
        self.writer = None;
    }

    /// Closes the input and waits (bounded) for the guard to return.
    async fn finish(mut self) -> GuardOutcome {
        self.close_input();
        tokio::time::timeout(Duration::from_secs(5), &mut self.task)
            .await
            .expect("guard returned within 5 s")
            .expect("guard task did not panic")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Polls `condition` every 5 ms until it holds or `limit` passes.
async fn wait_for(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let started = tokio::time::Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Asserts `invariant` on every poll until the lease clock reaches `until_ns`.
async fn hold_until(what: &str, until_ns: u64, mut invariant: impl FnMut() -> bool) {
    while now() < until_ns {
        assert!(invariant(), "{what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(invariant(), "{what}");
}

fn arm(deadline_ns: u64, epoch: u64) -> GuardCommand {
    GuardCommand::Arm { deadline_ns, epoch }
}

fn calls_len(calls: &Calls) -> usize {
    calls.lock().expect("calls").len()
}

#[tokio::test]
async fn passed_deadline_fences_once_in_order() {
    let (agents, calls) = agents(&[("vip", Behaviour::Succeed), ("mysql", Behaviour::Succeed)]);
    let mut guard = Running::start(agents, None, settings());
    let deadline = now() + ms(200);
    guard.send(arm(deadline, 7)).await;
    wait_for("both fence calls", Duration::from_secs(3), || {
        calls_len(&calls) == 2
    })
    .await;
    let outcome = guard.finish().await;

    let calls = calls.lock().expect("calls").clone();
    let names: Vec<&str> = calls.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        ["vip", "mysql"],
        "fenced in the given order, once each"
    );
    assert!(calls.iter().all(|c| c.epoch == 7 && c.at_ns >= deadline));
    assert_eq!(outcome.exit, GuardExit::InputClosedAfterFence);
    assert_eq!(outcome.fences.len(), 1);
    let fence = &outcome.fences[0];
    assert_eq!((fence.epoch, fence.deadline_ns), (7, deadline));
    assert!(fence.failures.is_empty());
    assert_eq!(fence.late_ns, fence.started_ns - deadline);
    println!(
        "in-process fence late by {:.2} ms",
        fence.late_ns as f64 / 1e6
    );
}

#[tokio::test]
async fn renewals_before_the_deadline_prevent_fencing() {
    let (agents, calls) = agents(&[("vip", Behaviour::Succeed)]);
    let mut guard = Running::start(agents, None, settings());
    let lease = ms(300);
    let first_deadline = now() + lease;
    guard.send(arm(first_deadline, 3)).await;
    // Renew every 50 ms (lease/6) until well past the first deadline.
    while now() < first_deadline + ms(300) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(calls_len(&calls), 0, "fenced although renewed");
        guard.send(arm(now() + lease, 3)).await;
    }
    guard.send(GuardCommand::Disarm { epoch: 3 }).await;
    let outcome = guard.finish().await;
    assert_eq!(calls_len(&calls), 0);
    assert!(outcome.fences.is_empty());
    assert_eq!(outcome.exit, GuardExit::InputClosedDisarmed);
}

#[tokio::test]
async fn disarm_prevents_fencing() {
    let (agents, calls) = agents(&[("vip", Behaviour::Succeed)]);
    let mut guard = Running::start(agents, None, settings());
    let deadline = now() + ms(150);
    guard.send(arm(deadline, 2)).await;
    guard.send(GuardCommand::Disarm { epoch: 2 }).await;
    hold_until("no fence after disarm", deadline + ms(250), || {
        calls_len(&calls) == 0
    })
    .await;
    let outcome = guard.finish().await;
    assert!(outcome.fences.is_empty());
    assert_eq!(outcome.exit, GuardExit::InputClosedDisarmed);
}

#[tokio::test]
async fn input_closed_while_armed_fences_at_the_deadline_then_returns() {
    let (agents, calls) = agents(&[("vip", Behaviour::Succeed), ("mysql", Behaviour::Succeed)]);
    let mut guard = Running::start(agents, None, settings());
    let deadline = now() + ms(300);
    guard.send(arm(deadline, 9)).await;
    let outcome = guard.finish().await;
    let returned_ns = now();
    assert!(returned_ns >= deadline, "returned before the deadline");
    assert_eq!(calls_len(&calls), 2);
    assert_eq!(outcome.exit, GuardExit::InputClosedAfterFence);
    let late = outcome.fences[0].late_ns;
    assert!(late < ms(1_000), "fenced {late} ns late");
    println!("EOF-while-armed fence late by {:.2} ms", late as f64 / 1e6);
}

#[tokio::test]
async fn input_closed_while_disarmed_returns_at_once() {
    for armed_then_disarmed in [false, true] {
        let (agents, calls) = agents(&[("vip", Behaviour::Succeed)]);
        let mut guard = Running::start(agents, None, settings());
        if armed_then_disarmed {
            guard.send(arm(now() + ms(10_000), 4)).await;
            guard.send(GuardCommand::Disarm { epoch: 4 }).await;
        }
        let started = now();
        let outcome = guard.finish().await;
        let took = now() - started;
        assert!(took < ms(1_000), "took {took} ns to return");
        assert_eq!(outcome.exit, GuardExit::InputClosedDisarmed);
        assert_eq!(calls_len(&calls), 0);
    }
}

#[tokio::test]
async fn stale_epochs_and_bad_lines_do_not_move_the_deadline() {
    let (agents, calls) = agents(&[("vip", Behaviour::Succeed)]);
    let mut guard = Running::start(agents, None, settings());
    let deadline = now() + ms(250);
    guard.send(arm(deadline, 5)).await;
    guard.send(arm(now() + ms(60_000), 4)).await; // older epoch: ignored
    guard.send(GuardCommand::Disarm { epoch: 4 }).await; // older epoch: ignored
    guard
        .send_raw(b"arm +99999999999999 5\nfence now\n\narm 1 2 3\n")
        .await;
    guard.send_raw(&[b'7'; 500]).await;
    guard.send_raw(b"\nping\n").await;
    wait_for(
        "fence at epoch 5's deadline",
        Duration::from_secs(3),
        || calls_len(&calls) == 1,
    )
    .await;
    let outcome = guard.finish().await;
    let call = calls.lock().expect("calls")[0].clone();
    assert_eq!(call.epoch, 5);
    assert!(call.at_ns >= deadline && call.at_ns < deadline + ms(1_000));
    assert_eq!(outcome.ignored, 2);
    assert_eq!(outcome.bad_lines, 5);
}

#[tokio::test]
async fn fencing_continues_past_failures_and_hangs() {
    let (agents, calls) = agents(&[
        ("vip", Behaviour::Fail),
        ("mysql", Behaviour::Hang),
        ("last", Behaviour::Succeed),
    ]);
    let mut guard = Running::start(agents, None, settings());
    guard.send(arm(now() + ms(50), 1)).await;
    wait_for("all three fence calls", Duration::from_secs(3), || {
        calls_len(&calls) == 3
    })
    .await;
    let outcome = guard.finish().await;
    let names: Vec<String> = calls
        .lock()
        .expect("calls")
        .iter()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(names, ["vip", "mysql", "last"]);
    let failures = &outcome.fences[0].failures;
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert!(
        failures[0].contains("vip") && failures[1].contains("mysql"),
        "{failures:?}"
    );
}

fn watchdog_file(dir: &tempfile::TempDir) -> PathBuf {
    let path = dir.path().join("watchdog");
    std::fs::write(&path, b"").expect("create watchdog stand-in");
    path
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).expect("watchdog file").len()
}

#[tokio::test]
async fn watchdog_is_petted_while_valid_and_not_after_a_failed_fence() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = watchdog_file(&dir);
    let (agents, calls) = agents(&[("vip", Behaviour::Fail)]);
    let mut guard = Running::start(agents, Some(path.clone()), settings());
    let deadline = now() + ms(400);
    guard.send(arm(deadline, 1)).await;
    // Petting while the lease is valid: the file grows, twice over.
    let first = file_len(&path);
    wait_for("a pet", Duration::from_millis(300), || {
        file_len(&path) > first
    })
    .await;
    let second = file_len(&path);
    wait_for("another pet", Duration::from_millis(300), || {
        file_len(&path) > second
    })
    .await;
    assert!(
        now() < deadline,
        "the pets above must happen inside the lease"
    );
    wait_for("the fence", Duration::from_secs(3), || {
        calls_len(&calls) == 1
    })
    .await;
    let at_fence = file_len(&path);
    // Ten pet intervals after the failed fence: no byte more.
    hold_until("no pet after a failed fence", now() + ms(200), || {
        file_len(&path) == at_fence
    })
    .await;
    let outcome = guard.finish().await;
    assert_eq!(outcome.watchdog, WatchdogEnd::LeftRunning);
    let bytes = std::fs::read(&path).expect("read");
    assert_eq!(
        bytes.len() as u64,
        at_fence,
        "no magic close after a failed fence"
    );
    assert!(bytes.iter().all(|&b| b == watchdog::PET_BYTE));
    assert_eq!(outcome.pets, at_fence);
}

#[tokio::test]
async fn watchdog_petting_resumes_after_a_clean_fence_and_ends_with_magic_close() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = watchdog_file(&dir);
    let (agents, calls) = agents(&[("vip", Behaviour::Succeed)]);
    let mut guard = Running::start(agents, Some(path.clone()), settings());
    guard.send(arm(now() + ms(100), 1)).await;
    wait_for("the fence", Duration::from_secs(3), || {
        calls_len(&calls) == 1
    })
    .await;
    let at_fence = file_len(&path);
    wait_for("pets after a clean fence", Duration::from_secs(1), || {
        file_len(&path) > at_fence
    })
    .await;
    let outcome = guard.finish().await;
    assert_eq!(outcome.watchdog, WatchdogEnd::MagicClosed);
    let bytes = std::fs::read(&path).expect("read");
    assert_eq!(
        bytes.last(),
        Some(&watchdog::MAGIC_CLOSE),
        "clean stop ends with 'V'"
    );
    assert_eq!(
        bytes
            .iter()
            .filter(|&&b| b == watchdog::MAGIC_CLOSE)
            .count(),
        1
    );
}

#[tokio::test]
async fn watchdog_magic_close_on_clean_stop_while_disarmed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = watchdog_file(&dir);
    let (agents, _calls) = agents(&[("vip", Behaviour::Succeed)]);
    let mut guard = Running::start(agents, Some(path.clone()), settings());
    guard.send(arm(now() + ms(10_000), 2)).await;
    wait_for("a pet", Duration::from_secs(1), || file_len(&path) > 0).await;
    guard.send(GuardCommand::Disarm { epoch: 2 }).await;
    let outcome = guard.finish().await;
    assert_eq!(outcome.watchdog, WatchdogEnd::MagicClosed);
    assert!(outcome.fences.is_empty());
    let bytes = std::fs::read(&path).expect("read");
    assert_eq!(bytes.last(), Some(&b'V'));
}

#[tokio::test]
async fn a_missing_watchdog_does_not_stop_fencing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (agents, calls) = agents(&[("vip", Behaviour::Succeed)]);
    let mut guard = Running::start(agents, Some(dir.path().join("absent")), settings());
    guard.send(arm(now() + ms(50), 1)).await;
    wait_for("the fence", Duration::from_secs(3), || {
        calls_len(&calls) == 1
    })
    .await;
    let outcome = guard.finish().await;
    assert!(matches!(outcome.watchdog, WatchdogEnd::OpenFailed(ref e) if e.contains("absent")));
}

#[tokio::test]
async fn a_watchdog_whose_timeout_cannot_be_set_is_still_petted_and_magic_closed() {
    // A plain file takes no WDIOC_SETTIMEOUT; the guard keeps it (a real device's timer would
    // already run) and pets it as usual.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = watchdog_file(&dir);
    let mut guard = Running::start(
        Vec::new(),
        Some(path.clone()),
        GuardSettings {
            watchdog_timeout_s: Some(5),
            ..settings()
        },
    );
    guard.send(arm(now() + ms(10_000), 1)).await;
    wait_for("pets", Duration::from_secs(3), || file_len(&path) >= 2).await;
    guard.send(GuardCommand::Disarm { epoch: 1 }).await;
    let outcome = guard.finish().await;
    assert_eq!(outcome.watchdog, WatchdogEnd::MagicClosed);
    assert_eq!(std::fs::read(&path).expect("read").last(), Some(&b'V'));
}

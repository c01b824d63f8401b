//! The resource group over Dummy agents: ordering, rollback, fencing, timeouts and the epoch gate.

use quorate::resources::agent::{ActionContext, Recovery, ResourceAgent, ResourceState};
use quorate::resources::dummy::{DummyAgent, DummyConfig, DummyFault};
use quorate::resources::group::{GroupError, ResourceGroup};
use quorate::resources::ledger::{self, LedgerAction, LedgerEvent};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Three Dummy resources a, b, c sharing one ledger, each with its own fault directory.
struct Fixture {
    dir: tempfile::TempDir,
    agents: Vec<Arc<DummyAgent>>,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("state")).unwrap();
        let agents = ["a", "b", "c"]
            .iter()
            .map(|name| {
                let faults = dir.path().join(format!("faults-{name}"));
                std::fs::create_dir(&faults).unwrap();
                Arc::new(DummyAgent::new(
                    name,
                    DummyConfig {
                        state_file: dir.path().join(format!("{name}.state")),
                        ledger_file: dir.path().join("ledger.jsonl"),
                        fault_dir: Some(faults),
                        ..DummyConfig::default()
                    },
                ))
            })
            .collect();
        Fixture { dir, agents }
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn faults(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("faults-{name}"))
    }

    fn group(&self) -> ResourceGroup {
        let agents: Vec<Arc<dyn ResourceAgent>> = self
            .agents
            .iter()
            .map(|a| a.clone() as Arc<dyn ResourceAgent>)
            .collect();
        ResourceGroup::new("g", agents, &self.state_dir()).unwrap()
    }

    fn ledger(&self) -> Vec<LedgerEvent> {
        ledger::read_ledger(&self.dir.path().join("ledger.jsonl")).unwrap()
    }

    /// The ledger as "action:resource" in the order written.
    fn story(&self) -> Vec<String> {
        self.ledger()
            .iter()
            .map(|e| format!("{:?}:{}", e.action, e.resource).to_lowercase())
            .collect()
    }
}

fn ctx(epoch: u64) -> ActionContext {
    ActionContext {
        epoch,
        node: "node-a".into(),
    }
}

fn states(found: &[quorate::resources::group::GroupResourceStatus]) -> Vec<ResourceState> {
    found.iter().map(|s| s.state.clone()).collect()
}

#[tokio::test]
async fn starts_in_order_and_stops_in_reverse() {
    let f = Fixture::new();
    let group = f.group();
    assert!(group.validate().is_empty(), "{:?}", group.validate());
    group.start(&ctx(1)).await.unwrap();
    assert_eq!(
        states(&group.monitor_all().await),
        vec![ResourceState::Running; 3]
    );
    group.start(&ctx(1)).await.unwrap();
    group.stop(&ctx(1)).await.unwrap();
    assert_eq!(
        states(&group.monitor_all().await),
        vec![ResourceState::Stopped; 3]
    );
    assert_eq!(
        f.story(),
        ["start:a", "start:b", "start:c", "stop:c", "stop:b", "stop:a"],
        "a repeated start adds no line"
    );
    let events = f.ledger();
    assert!(events.windows(2).all(|w| w[0].mono_ns <= w[1].mono_ns));
    assert!(events.iter().all(|e| e.node == "node-a" && e.epoch == 1));
}

#[tokio::test]
async fn a_failed_start_rolls_back_and_names_the_resource() {
    let f = Fixture::new();
    let group = f.group();
    DummyFault::FailStart.set(&f.faults("b")).unwrap();
    let err = group.start(&ctx(1)).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("start failed at b"), "{text}");
    assert!(text.contains("fail-start"), "{text}");
    assert!(text.contains("rolled back"), "{text}");
    assert_eq!(err.recovery(), Some(Recovery::MoveAway));
    assert_eq!(f.story(), ["start:a", "stop:a"]);
    assert_eq!(
        states(&group.monitor_all().await),
        vec![ResourceState::Stopped; 3]
    );

    DummyFault::FailStart.clear(&f.faults("b")).unwrap();
    group.start(&ctx(1)).await.unwrap();
    assert_eq!(
        states(&group.monitor_all().await),
        vec![ResourceState::Running; 3]
    );
}

#[tokio::test]
async fn a_start_that_monitor_does_not_confirm_is_a_failure() {
    let f = Fixture::new();
    let group = f.group();
    DummyFault::FailMonitor.set(&f.faults("c")).unwrap();
    let err = group.start(&ctx(1)).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("start failed at c"), "{text}");
    assert!(text.contains("monitor says failed"), "{text}");
    assert_eq!(
        f.story(),
        ["start:a", "start:b", "start:c", "stop:c", "stop:b", "stop:a"]
    );
}

#[tokio::test]
async fn a_hanging_stop_times_out_and_asks_for_fencing() {
    let f = Fixture::new();
    let group = f.group().with_action_timeout(Duration::from_millis(300));
    group.start(&ctx(1)).await.unwrap();
    DummyFault::HangMs(60_000).set(&f.faults("b")).unwrap();
    let err = group.stop(&ctx(1)).await.unwrap_err();
    assert!(
        matches!(&err, GroupError::StopFailed { cause, .. } if cause.resource == "b"),
        "{err}"
    );
    assert!(err.to_string().contains("did not finish within"), "{err}");
    assert_eq!(err.recovery(), Some(Recovery::Fence));
    // c went down, b and a were left as they were.
    assert_eq!(
        states(&group.monitor_all().await),
        [
            ResourceState::Running,
            ResourceState::Running,
            ResourceState::Stopped
        ]
    );
    DummyFault::HangMs(0).clear(&f.faults("b")).unwrap();
    group.stop(&ctx(1)).await.unwrap();
    assert_eq!(
        states(&group.monitor_all().await),
        vec![ResourceState::Stopped; 3]
    );
}

#[tokio::test]
async fn removing_the_hang_knob_releases_a_hung_start() {
    let f = Fixture::new();
    let agent = f.agents[0].clone();
    DummyFault::HangMs(60_000).set(&f.faults("a")).unwrap();
    let started = tokio::spawn(async move { agent.start(&ctx(1)).await });
    // The start is hanging: still not running while the knob is set.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!started.is_finished());
    assert_eq!(f.agents[0].monitor().await, ResourceState::Stopped);
    DummyFault::HangMs(0).clear(&f.faults("a")).unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(5), started)
        .await
        .expect("start ends once the knob is gone");
    outcome.unwrap().unwrap();
    assert_eq!(f.agents[0].monitor().await, ResourceState::Running);
}

#[tokio::test]
async fn fence_goes_in_reverse_past_failures_and_reports_them() {
    let f = Fixture::new();
    let group = f.group();
    group.start(&ctx(1)).await.unwrap();
    DummyFault::FailFence.set(&f.faults("b")).unwrap();
    let err = group.fence(&ctx(1)).await.unwrap_err();
    match &err {
        GroupError::FenceIncomplete { failures, .. } => {
            assert_eq!(failures.len(), 1);
            assert_eq!(failures[0].resource, "b");
        }
        other => panic!("expected an incomplete fence, got {other}"),
    }
    assert_eq!(err.recovery(), Some(Recovery::Fence));
    assert_eq!(
        f.story(),
        ["start:a", "start:b", "start:c", "fence:c", "fence:a"]
    );
    assert_eq!(
        states(&group.monitor_all().await),
        [
            ResourceState::Stopped,
            ResourceState::Running,
            ResourceState::Stopped
        ]
    );
}

/// Collects formatted log output so a test can read what was logged.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn stale_epochs_are_refused_logged_and_still_refused_after_a_restart() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let f = Fixture::new();
    let group = f.group();
    group.start(&ctx(5)).await.unwrap();
    let err = group.stop(&ctx(4)).await.unwrap_err();
    assert!(matches!(err, GroupError::Refused { .. }), "{err}");
    assert_eq!(err.recovery(), None);
    assert_eq!(
        states(&group.monitor_all().await),
        vec![ResourceState::Running; 3]
    );
    let log = captured.text();
    let line = log
        .lines()
        .find(|l| l.contains("refusing group action"))
        .unwrap_or_else(|| panic!("no refusal logged in:\n{log}"));
    for field in [
        "epoch=4",
        "last_epoch=5",
        "resource=a,b,c",
        "action=\"stop\"",
    ] {
        assert!(line.contains(field), "missing {field} in {line}");
    }

    // A new process: the mark comes back from the state directory.
    drop(group);
    let group = f.group();
    assert_eq!(group.last_epoch(), 5);
    // A stale start is refused; a stale fence is not (see the fence tests below).
    assert!(matches!(
        group.start(&ctx(3)).await,
        Err(GroupError::Refused { .. })
    ));
    assert_eq!(
        states(&group.monitor_all().await),
        vec![ResourceState::Running; 3]
    );
    group.stop(&ctx(5)).await.unwrap();
    group.start(&ctx(7)).await.unwrap();
    assert!(group.start(&ctx(6)).await.is_err());
    assert_eq!(
        std::fs::read_to_string(f.state_dir().join("g.epoch"))
            .unwrap()
            .trim(),
        "7"
    );
    let epochs: Vec<u64> = f.ledger().iter().map(|e| e.epoch).collect();
    assert_eq!(epochs, [5, 5, 5, 5, 5, 5, 7, 7, 7]);
    assert!(ledger::epoch_regressions(&f.ledger()).is_empty());
}

/// Issue 9, finding 3: a state directory that cannot take the epoch (full, read-only, gone)
/// must not stop a fence; it is logged loudly, and starts stay refused until it is fixed.
#[tokio::test]
async fn a_fence_runs_every_step_when_its_epoch_cannot_be_written() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let f = Fixture::new();
    let group = f.group();
    group.start(&ctx(1)).await.unwrap();
    // Root ignores permission bits, so the write is made to fail another way: a directory
    // stands where the epoch's temporary file is created.
    std::fs::create_dir(f.state_dir().join("g.epoch.tmp")).unwrap();

    group
        .fence(&ctx(2))
        .await
        .expect("the fence runs although its epoch cannot be written");
    assert_eq!(
        f.story(),
        ["start:a", "start:b", "start:c", "fence:c", "fence:b", "fence:a"]
    );
    assert_eq!(
        states(&group.monitor_all().await),
        vec![ResourceState::Stopped; 3]
    );
    let log = captured.text();
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains("EPOCH COULD NOT BE WRITTEN")),
        "no loud error in:\n{log}"
    );
    assert_eq!(
        std::fs::read_to_string(f.state_dir().join("g.epoch"))
            .unwrap()
            .trim(),
        "1"
    );

    // Starts keep the gate: the stale one is refused, and the new one needs the write first.
    assert!(matches!(
        group.start(&ctx(1)).await,
        Err(GroupError::Refused { .. })
    ));
    assert!(matches!(
        group.start(&ctx(2)).await,
        Err(GroupError::Refused { .. })
    ));
    assert_eq!(
        states(&group.monitor_all().await),
        vec![ResourceState::Stopped; 3]
    );
    std::fs::remove_dir(f.state_dir().join("g.epoch.tmp")).unwrap();
    group.start(&ctx(2)).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(f.state_dir().join("g.epoch"))
            .unwrap()
            .trim(),
        "2"
    );
}

/// Issue 9, finding 3: a fence under epoch 0 (a wiped store) or an older epoch runs every
/// step, and leaves the mark where it was, so stale starts stay refused.
#[tokio::test]
async fn a_fence_under_epoch_zero_or_a_stale_epoch_runs_every_step() {
    let f = Fixture::new();
    let group = f.group();
    group.start(&ctx(5)).await.unwrap();
    group
        .fence(&ctx(0))
        .await
        .expect("a fence under epoch 0 runs");
    assert_eq!(
        states(&group.monitor_all().await),
        vec![ResourceState::Stopped; 3]
    );
    assert_eq!(
        f.story(),
        ["start:a", "start:b", "start:c", "fence:c", "fence:b", "fence:a"]
    );

    // A new process (the gate read back from its file) fences under an older epoch too.
    drop(group);
    let group = f.group();
    group.start(&ctx(5)).await.unwrap();
    group
        .fence(&ctx(3))
        .await
        .expect("a fence under a stale epoch runs");
    assert_eq!(
        states(&group.monitor_all().await),
        vec![ResourceState::Stopped; 3]
    );
    assert_eq!(group.last_epoch(), 5);
    assert!(matches!(
        group.start(&ctx(4)).await,
        Err(GroupError::Refused { .. })
    ));
    assert_eq!(
        std::fs::read_to_string(f.state_dir().join("g.epoch"))
            .unwrap()
            .trim(),
        "5"
    );
}

#[tokio::test]
async fn two_nodes_on_one_ledger_show_a_clean_handover_and_a_double_hold() {
    let dir = tempfile::tempdir().unwrap();
    let ledger_file = dir.path().join("ledger.jsonl");
    let agent = |state: &str| {
        DummyAgent::new(
            "dummy",
            DummyConfig {
                state_file: dir.path().join(state),
                ledger_file: ledger_file.clone(),
                ..DummyConfig::default()
            },
        )
    };
    let on_a = agent("a.state");
    let on_b = agent("b.state");
    let at = |node: &str, epoch| ActionContext {
        epoch,
        node: node.into(),
    };
    on_a.start(&at("a", 1)).await.unwrap();
    on_a.stop(&at("a", 1)).await.unwrap();
    on_b.start(&at("b", 2)).await.unwrap();
    let events = ledger::read_ledgers(&[&ledger_file]).unwrap();
    let intervals = ledger::holding_intervals(&events);
    assert_eq!(intervals.len(), 2);
    ledger::assert_no_overlap(&intervals);

    on_a.start(&at("a", 3)).await.unwrap();
    let events = ledger::read_ledgers(&[&ledger_file]).unwrap();
    let found = ledger::overlaps(&ledger::holding_intervals(&events));
    assert_eq!(found.len(), 1, "b still holds while a starts again");
    assert_eq!(
        (found[0].first.node.as_str(), found[0].second.node.as_str()),
        ("b", "a")
    );
    assert!(events
        .iter()
        .any(|e| e.action == LedgerAction::Start && e.epoch == 3));
}

#[test]
fn validate_and_config_report_problems() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    // A fault directory that is a plain file is a problem; one that does not exist yet is not.
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, b"").unwrap();
    let bad = DummyAgent::new(
        "d",
        DummyConfig {
            state_file: missing.join("state"),
            ledger_file: missing.join("state"),
            fault_dir: Some(not_a_dir),
            ..DummyConfig::default()
        },
    );
    let problems = bad.validate();
    assert_eq!(problems.len(), 4, "{problems:?}");
    let absent = DummyAgent::new(
        "d",
        DummyConfig {
            state_file: dir.path().join("s1"),
            ledger_file: dir.path().join("l1"),
            fault_dir: Some(missing.clone()),
            ..DummyConfig::default()
        },
    );
    assert!(absent.validate().is_empty(), "{:?}", absent.validate());
    let agents: Vec<Arc<dyn ResourceAgent>> = vec![
        Arc::new(bad),
        Arc::new(DummyAgent::new(
            "d",
            DummyConfig {
                state_file: dir.path().join("s"),
                ledger_file: dir.path().join("l"),
                ..DummyConfig::default()
            },
        )),
    ];
    let group = ResourceGroup::new("g", agents, dir.path()).unwrap();
    let problems = group.validate();
    assert!(
        problems.iter().any(|p| p.contains("used twice")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("d (dummy): fault_dir")),
        "{problems:?}"
    );

    let err = serde_json::from_str::<DummyConfig>(
        r#"{"state_file":"/s","ledger_file":"/l","fail_strat":true}"#,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("unknown field `fail_strat`"),
        "{err}"
    );
    assert!(ResourceGroup::new("g", Vec::new(), Path::new("/nonexistent/quorate")).is_err());
}

/// A Dummy whose start, before it begins, says so and then waits until the test lets it go:
/// a start step that stalls for as long as the test wants.
struct HeldStart {
    inner: Arc<DummyAgent>,
    entered: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    release: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl ResourceAgent for HeldStart {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    fn validate(&self) -> Vec<String> {
        self.inner.validate()
    }
    async fn start(
        &self,
        ctx: &ActionContext,
    ) -> Result<(), quorate::resources::agent::AgentError> {
        let entered = self.entered.lock().unwrap().take();
        if let Some(entered) = entered {
            let _ = entered.send(());
            self.release.notified().await;
        }
        self.inner.start(ctx).await
    }
    async fn stop(&self, ctx: &ActionContext) -> Result<(), quorate::resources::agent::AgentError> {
        self.inner.stop(ctx).await
    }
    async fn monitor(&self) -> ResourceState {
        self.inner.monitor().await
    }
    async fn fence(
        &self,
        ctx: &ActionContext,
    ) -> Result<(), quorate::resources::agent::AgentError> {
        self.inner.fence(ctx).await
    }
}

/// Issue 9, finding 8: a start stalls in its second step while the lease ends. The step in
/// hand finishes, but no later step begins: the lease is checked before each step, not once
/// for the whole start. Nothing is rolled back either; what was started is the fence's.
#[tokio::test]
async fn a_start_stalled_past_the_lease_begins_no_further_step() {
    let f = Fixture::new();
    let (entered_tx, entered_rx) = tokio::sync::oneshot::channel();
    let held = Arc::new(HeldStart {
        inner: f.agents[1].clone(),
        entered: Mutex::new(Some(entered_tx)),
        release: tokio::sync::Notify::new(),
    });
    let agents: Vec<Arc<dyn ResourceAgent>> =
        vec![f.agents[0].clone(), held.clone(), f.agents[2].clone()];
    let group = Arc::new(ResourceGroup::new("g", agents, &f.state_dir()).unwrap());
    let lease_valid = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let start = tokio::spawn({
        let group = group.clone();
        let lease_valid = lease_valid.clone();
        async move {
            let check = move || {
                if lease_valid.load(std::sync::atomic::Ordering::SeqCst) {
                    Ok(())
                } else {
                    Err("the lease of epoch 1 ended".to_string())
                }
            };
            group.start_checked(&ctx(1), &check).await
        }
    });
    tokio::time::timeout(Duration::from_secs(5), entered_rx)
        .await
        .expect("the start reaches b")
        .expect("b's start says it began");
    // The lease ends while b's start is stalled; then b's start goes on.
    lease_valid.store(false, std::sync::atomic::Ordering::SeqCst);
    held.release.notify_one();
    let err = tokio::time::timeout(Duration::from_secs(5), start)
        .await
        .expect("the start ends")
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(&err, GroupError::StartInterrupted { before, .. } if before == "c"),
        "{err}"
    );
    assert!(err.to_string().contains("lease of epoch 1 ended"), "{err}");
    assert_eq!(err.recovery(), None);
    assert_eq!(
        f.story(),
        ["start:a", "start:b"],
        "c must not start after the lease ended, and nothing is rolled back"
    );
    // The fence the node owes without a lease takes down what was started.
    group.fence(&ctx(1)).await.unwrap();
    assert_eq!(
        states(&group.monitor_all().await),
        vec![ResourceState::Stopped; 3]
    );
}

//! The Dummy agent: a resource that is nothing but a state file, for tests of everything above
//! the agents (the group, the decide/act loop, the lease, the failover scenarios).
//!
//! "Running" means the state file exists. Every start and stop is appended to a ledger (see
//! [`crate::resources::ledger`]) so a test can prove that two nodes never held it at once. Faults
//! are switched by knobs read at the moment of each action, from the config or from files in a
//! fault directory, so a test can flip them while the agent runs in another process:
//!
//! | knob file (in `fault_dir`) | config field   | effect |
//! |----------------------------|----------------|--------|
//! | `fail-start`               | `fail_start`   | start fails (move away), touching nothing |
//! | `fail-stop`                | `fail_stop`    | stop fails (fence), the state file stays |
//! | `fail-fence`               | `fail_fence`   | fence fails, the state file stays |
//! | `fail-monitor`             | `fail_monitor` | monitor says failed |
//! | `hang-ms` (holds a number) | `hang_ms`      | start and stop sleep that long first; removing the file ends the sleep |
//! | `monitor-hang-ms` (a number) | `monitor_hang_ms` | monitor sleeps that long first (a slow look); while it does, a `monitor-hanging` file in `fault_dir` tells a test so |

use crate::resources::agent::{ActionContext, AgentError, Recovery, ResourceAgent, ResourceState};
use crate::resources::ledger::{self, LedgerAction, LedgerEvent};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The Dummy agent's settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DummyConfig {
    /// The file whose presence means the resource runs.
    pub state_file: PathBuf,
    /// The ledger every start and stop is appended to.
    pub ledger_file: PathBuf,
    /// A directory whose knob files switch faults on while they exist.
    #[serde(default)]
    pub fault_dir: Option<PathBuf>,
    /// Start always fails.
    #[serde(default)]
    pub fail_start: bool,
    /// Stop always fails.
    #[serde(default)]
    pub fail_stop: bool,
    /// Fence always fails.
    #[serde(default)]
    pub fail_fence: bool,
    /// Monitor always says failed.
    #[serde(default)]
    pub fail_monitor: bool,
    /// Start and stop first sleep this many milliseconds (0: no hang).
    #[serde(default)]
    pub hang_ms: u64,
    /// Monitor first sleeps this many milliseconds (0: no hang).
    #[serde(default)]
    pub monitor_hang_ms: u64,
}

/// The file in the fault directory that a monitor hanging for its knob writes as it begins.
pub const MONITOR_HANGING: &str = "monitor-hanging";

/// A fault of the Dummy agent that a knob file switches on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DummyFault {
    /// Start fails.
    FailStart,
    /// Stop fails.
    FailStop,
    /// Fence fails.
    FailFence,
    /// Monitor says failed.
    FailMonitor,
    /// Start and stop sleep this many milliseconds first.
    HangMs(u64),
    /// Monitor sleeps this many milliseconds first.
    MonitorHangMs(u64),
}

impl DummyFault {
    /// The knob file's name inside the fault directory.
    pub fn file_name(self) -> &'static str {
        match self {
            DummyFault::FailStart => "fail-start",
            DummyFault::FailStop => "fail-stop",
            DummyFault::FailFence => "fail-fence",
            DummyFault::FailMonitor => "fail-monitor",
            DummyFault::HangMs(_) => "hang-ms",
            DummyFault::MonitorHangMs(_) => "monitor-hang-ms",
        }
    }

    /// Switches the fault on by writing its knob file into `fault_dir`.
    pub fn set(self, fault_dir: &Path) -> std::io::Result<()> {
        let content = match self {
            DummyFault::HangMs(ms) | DummyFault::MonitorHangMs(ms) => ms.to_string(),
            _ => String::new(),
        };
        std::fs::write(fault_dir.join(self.file_name()), content)
    }

    /// Switches the fault off by removing its knob file (no error if it was off).
    pub fn clear(self, fault_dir: &Path) -> std::io::Result<()> {
        match std::fs::remove_file(fault_dir.join(self.file_name())) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// What the state file holds while the Dummy runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct DummyState {
    node: String,
    epoch: u64,
    mono_ns: u64,
}

/// A resource that is a state file plus a ledger, with switchable faults.
#[derive(Debug)]
pub struct DummyAgent {
    name: String,
    config: DummyConfig,
}

impl DummyAgent {
    /// A Dummy resource called `name`.
    pub fn new(name: &str, config: DummyConfig) -> Self {
        DummyAgent {
            name: name.to_string(),
            config,
        }
    }

    /// The agent's settings.
    pub fn config(&self) -> &DummyConfig {
        &self.config
    }

    fn knob(&self, fault: DummyFault) -> bool {
        let configured = match fault {
            DummyFault::FailStart => self.config.fail_start,
            DummyFault::FailStop => self.config.fail_stop,
            DummyFault::FailFence => self.config.fail_fence,
            DummyFault::FailMonitor => self.config.fail_monitor,
            DummyFault::HangMs(_) => self.config.hang_ms > 0,
            DummyFault::MonitorHangMs(_) => self.config.monitor_hang_ms > 0,
        };
        configured || self.knob_file(fault).is_some_and(|p| p.exists())
    }

    fn knob_file(&self, fault: DummyFault) -> Option<PathBuf> {
        self.config
            .fault_dir
            .as_ref()
            .map(|d| d.join(fault.file_name()))
    }

    /// Sleeps for the hang knob: the config's `hang_ms`, or the knob file's value until the file
    /// goes away.
    async fn hang(&self, action: &str, ctx: &ActionContext) {
        let from_file = self.knob_file(DummyFault::HangMs(0)).and_then(|path| {
            let text = std::fs::read_to_string(&path).ok()?;
            Some((path, text.trim().parse::<u64>().unwrap_or(0)))
        });
        let ms = from_file
            .as_ref()
            .map_or(0, |(_, ms)| *ms)
            .max(self.config.hang_ms);
        if ms == 0 {
            return;
        }
        tracing::warn!(resource = %self.name, epoch = ctx.epoch, action, hang_ms = ms, "fault knob: hanging");
        let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
        while tokio::time::Instant::now() < deadline {
            if let Some((path, _)) = &from_file {
                if self.config.hang_ms == 0 && !path.exists() {
                    break;
                }
            }
            tokio::time::sleep_until(
                deadline.min(tokio::time::Instant::now() + Duration::from_millis(20)),
            )
            .await;
        }
    }

    fn fail(&self, ctx: &ActionContext, recovery: Recovery, reason: String) -> AgentError {
        tracing::error!(resource = %self.name, epoch = ctx.epoch, reason = %reason, "dummy action failed");
        AgentError::new(&self.name, recovery, reason)
    }

    fn record(&self, ctx: &ActionContext, action: LedgerAction) -> Result<(), String> {
        let event = LedgerEvent::now(&self.name, &ctx.node, ctx.epoch, action);
        ledger::append(&self.config.ledger_file, &event).map_err(|e| e.to_string())
    }

    fn write_state(&self, ctx: &ActionContext) -> std::io::Result<()> {
        let state = DummyState {
            node: ctx.node.clone(),
            epoch: ctx.epoch,
            mono_ns: crate::clock::monotonic_ns(),
        };
        let tmp = self.config.state_file.with_extension("tmp");
        {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&serde_json::to_vec(&state).map_err(std::io::Error::other)?)?;
            file.sync_all()?;
        }
        std::fs::rename(&tmp, &self.config.state_file)?;
        sync_parent(&self.config.state_file)
    }

    fn remove_state(&self) -> std::io::Result<bool> {
        match std::fs::remove_file(&self.config.state_file) {
            Ok(()) => sync_parent(&self.config.state_file).map(|_| true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn read_state(&self) -> ResourceState {
        match std::fs::read(&self.config.state_file) {
            Ok(bytes) => match serde_json::from_slice::<DummyState>(&bytes) {
                Ok(_) => ResourceState::Running,
                Err(e) => ResourceState::Failed(format!(
                    "state file {} is unreadable: {e}",
                    self.config.state_file.display()
                )),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ResourceState::Stopped,
            Err(e) => ResourceState::Failed(format!(
                "cannot read state file {}: {e}",
                self.config.state_file.display()
            )),
        }
    }

    /// Removes the state file and records `action`; shared by stop and fence.
    fn take_down(&self, ctx: &ActionContext, action: LedgerAction) -> Result<(), AgentError> {
        match self.remove_state() {
            Ok(false) => Ok(()),
            Ok(true) => self
                .record(ctx, action)
                .map_err(|e| self.fail(ctx, Recovery::Fence, format!("stopped, but {e}"))),
            Err(e) => Err(self.fail(
                ctx,
                Recovery::Fence,
                format!(
                    "cannot remove state file {}: {e}",
                    self.config.state_file.display()
                ),
            )),
        }
    }
}

fn sync_parent(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}

fn check_parent(what: &str, path: &Path, problems: &mut Vec<String>) {
    if path.as_os_str().is_empty() {
        problems.push(format!("{what} is empty"));
        return;
    }
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => problems.push(format!(
            "{what} {}: directory {} does not exist",
            path.display(),
            dir.display()
        )),
        _ => {}
    }
}

#[async_trait]
impl ResourceAgent for DummyAgent {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "dummy"
    }

    fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        check_parent("state_file", &self.config.state_file, &mut problems);
        check_parent("ledger_file", &self.config.ledger_file, &mut problems);
        if let Some(dir) = &self.config.fault_dir {
            // A fault directory that does not exist yet simply has no knob switched on.
            if dir.exists() && !dir.is_dir() {
                problems.push(format!("fault_dir {} is not a directory", dir.display()));
            }
        }
        if self.config.state_file == self.config.ledger_file {
            problems.push("state_file and ledger_file are the same file".to_string());
        }
        problems
    }

    async fn start(&self, ctx: &ActionContext) -> Result<(), AgentError> {
        if self.read_state() == ResourceState::Running {
            tracing::info!(resource = %self.name, epoch = ctx.epoch, "already running");
            return Ok(());
        }
        if self.knob(DummyFault::FailStart) {
            return Err(self.fail(
                ctx,
                Recovery::MoveAway,
                "fault knob fail-start is set".into(),
            ));
        }
        self.hang("start", ctx).await;
        // The ledger line goes first: the holding interval may start early, never late.
        self.record(ctx, LedgerAction::Start)
            .map_err(|e| self.fail(ctx, Recovery::MoveAway, e))?;
        self.write_state(ctx).map_err(|e| {
            self.fail(
                ctx,
                Recovery::MoveAway,
                format!(
                    "cannot write state file {}: {e}",
                    self.config.state_file.display()
                ),
            )
        })?;
        tracing::info!(resource = %self.name, epoch = ctx.epoch, node = %ctx.node, "dummy started");
        Ok(())
    }

    async fn stop(&self, ctx: &ActionContext) -> Result<(), AgentError> {
        if self.read_state() == ResourceState::Stopped {
            return Ok(());
        }
        if self.knob(DummyFault::FailStop) {
            return Err(self.fail(ctx, Recovery::Fence, "fault knob fail-stop is set".into()));
        }
        self.hang("stop", ctx).await;
        self.take_down(ctx, LedgerAction::Stop)?;
        tracing::info!(resource = %self.name, epoch = ctx.epoch, node = %ctx.node, "dummy stopped");
        Ok(())
    }

    async fn monitor(&self) -> ResourceState {
        let hang_ms = self
            .knob_file(DummyFault::MonitorHangMs(0))
            .and_then(|path| std::fs::read_to_string(path).ok())
            .and_then(|text| text.trim().parse::<u64>().ok())
            .unwrap_or(0)
            .max(self.config.monitor_hang_ms);
        if hang_ms > 0 {
            if let Some(dir) = &self.config.fault_dir {
                let _ = std::fs::write(dir.join(MONITOR_HANGING), b"");
            }
            tokio::time::sleep(Duration::from_millis(hang_ms)).await;
        }
        if self.knob(DummyFault::FailMonitor) {
            return ResourceState::Failed("fault knob fail-monitor is set".into());
        }
        self.read_state()
    }

    async fn fence(&self, ctx: &ActionContext) -> Result<(), AgentError> {
        if self.knob(DummyFault::FailFence) {
            return Err(self.fail(ctx, Recovery::Fence, "fault knob fail-fence is set".into()));
        }
        self.take_down(ctx, LedgerAction::Fence)?;
        tracing::warn!(resource = %self.name, epoch = ctx.epoch, node = %ctx.node, "dummy fenced");
        Ok(())
    }
}

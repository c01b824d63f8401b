//! The MySQL agent: runs MariaDB/MySQL on the owner node and makes sure it is down everywhere else.
//!
//! mysqld is launched one of two ways:
//! - **command**: quorate spawns a configured command line that runs mysqld in the foreground,
//!   in its own process group, with output appended to a log file, and tracks it in a pid file
//!   (pid plus start time, so a reused pid is never mistaken for it, even after quorate restarts);
//! - **systemd**: `systemctl start|stop|kill` on a configured unit.
//!
//! Either way, "running" means the server accepts a login with the configured user and answers
//! `SELECT 1` ([`crate::resources::mysql_probe`]). Start returns only then, or fails within the
//! start timeout; a start that fails after spawning stops what it spawned, so no half-started
//! mysqld stays behind. Stop is graceful (SIGTERM or `systemctl stop`, which let InnoDB flush and
//! close cleanly) until its deadline, then SIGKILL; a process that survives even that makes stop
//! fail with [`Recovery::Fence`]. Fence is SIGKILL at once: when the lease ran out, the fastest way
//! to stop accepting writes wins over a clean shutdown, and InnoDB recovers on the next start.

use crate::command::CommandRunner;
use crate::resources::agent::{ActionContext, AgentError, Recovery, ResourceAgent, ResourceState};
use crate::resources::mysql_config::Launch;
pub use crate::resources::mysql_config::MysqlConfig;
use crate::resources::mysql_probe::{probe, Endpoint, ProbeError};
use crate::resources::procs::{self, ProcessId};
use async_trait::async_trait;
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use std::io::{Read, Seek, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// What the pid file says about the process quorate started.
#[derive(Debug)]
enum Tracked {
    /// No pid file: quorate has nothing running.
    None,
    /// The recorded process is gone (crashed or killed without a stop).
    Gone(ProcessId),
    /// The recorded process runs.
    Alive(ProcessId),
    /// The pid file cannot be read.
    Unreadable(String),
}

#[derive(Debug, Serialize, Deserialize)]
struct PidRecord {
    pid: i32,
    start_ticks: u64,
}

/// Starts, stops, watches and fences one MySQL/MariaDB server.
pub struct MysqlAgent {
    name: String,
    config: MysqlConfig,
    runner: Arc<dyn CommandRunner>,
    /// The mysqld this process spawned, kept so it can be reaped and its exit seen at once.
    child: tokio::sync::Mutex<Option<tokio::process::Child>>,
}

impl MysqlAgent {
    /// A MySQL resource called `name`; systemd commands go through `runner`.
    pub fn new(name: &str, config: MysqlConfig, runner: Arc<dyn CommandRunner>) -> Self {
        MysqlAgent {
            name: name.to_string(),
            config,
            runner,
            child: tokio::sync::Mutex::new(None),
        }
    }

    /// The agent's settings.
    pub fn config(&self) -> &MysqlConfig {
        &self.config
    }

    fn timeout(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    fn fail(&self, ctx: &ActionContext, recovery: Recovery, reason: String) -> AgentError {
        tracing::error!(resource = %self.name, epoch = ctx.epoch, reason = %reason, "mysql action failed");
        AgentError::new(&self.name, recovery, reason)
    }

    fn bad_config(&self, ctx: &ActionContext, problem: String) -> AgentError {
        self.fail(
            ctx,
            Recovery::MoveAway,
            format!("invalid config: {problem}"),
        )
    }

    async fn probe(&self, endpoint: &Endpoint) -> Result<(), ProbeError> {
        probe(
            endpoint,
            &self.config.user,
            &self.config.password,
            Self::timeout(self.config.monitor_timeout_ms),
        )
        .await
    }

    // ---- command mode: the pid file and the process -------------------------------------

    async fn tracked(&self, pid_file: &Path) -> Tracked {
        if let Some(child) = self.child.lock().await.as_mut() {
            // Reap our own child if it ended, so it is seen as gone, not as a zombie.
            let _ = child.try_wait();
        }
        let text = match std::fs::read_to_string(pid_file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Tracked::None,
            Err(e) => return Tracked::Unreadable(format!("{}: {e}", pid_file.display())),
        };
        match serde_json::from_str::<PidRecord>(&text) {
            Ok(r) if r.pid <= 1 => Tracked::Unreadable(format!(
                "{} names pid {}, which is not a mysqld",
                pid_file.display(),
                r.pid
            )),
            Ok(r) => {
                let id = ProcessId {
                    pid: r.pid,
                    start_ticks: r.start_ticks,
                };
                if procs::is_alive(id) {
                    Tracked::Alive(id)
                } else {
                    Tracked::Gone(id)
                }
            }
            Err(e) => Tracked::Unreadable(format!("{}: {e}", pid_file.display())),
        }
    }

    fn write_pid_file(pid_file: &Path, id: ProcessId) -> std::io::Result<()> {
        let record = PidRecord {
            pid: id.pid,
            start_ticks: id.start_ticks,
        };
        let tmp = pid_file.with_extension("tmp");
        {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&serde_json::to_vec(&record).map_err(std::io::Error::other)?)?;
            file.sync_all()?;
        }
        std::fs::rename(&tmp, pid_file)
    }

    fn remove_pid_file(pid_file: &Path) {
        let _ = std::fs::remove_file(pid_file);
    }

    /// The end of the log file written since `offset`, for error messages.
    fn log_tail(log_file: &Path, offset: u64) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(log_file) {
            let _ = file.seek(std::io::SeekFrom::Start(offset));
            let _ = file.take(64 * 1024).read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = &lines[lines.len().saturating_sub(6)..];
        if tail.is_empty() {
            format!("nothing in {}", log_file.display())
        } else {
            tail.join(" | ")
        }
    }

    async fn spawn(
        &self,
        ctx: &ActionContext,
        argv: &[String],
        pid_file: &Path,
        log_file: &Path,
    ) -> Result<(ProcessId, u64), AgentError> {
        let open_log = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log_file)
        };
        let log = open_log().map_err(|e| {
            self.fail(
                ctx,
                Recovery::MoveAway,
                format!("cannot open log file {}: {e}", log_file.display()),
            )
        })?;
        let offset = log.metadata().map(|m| m.len()).unwrap_or(0);
        let log_err = log.try_clone().map_err(|e| {
            self.fail(
                ctx,
                Recovery::Retry,
                format!("cannot duplicate log file handle: {e}"),
            )
        })?;
        tracing::info!(resource = %self.name, epoch = ctx.epoch, command = ?argv, "spawning mysqld");
        let child = tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0)
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| {
                self.fail(
                    ctx,
                    Recovery::MoveAway,
                    format!("cannot run {}: {e}", argv[0]),
                )
            })?;
        let pid = child.id().map(|p| p as i32).unwrap_or(0);
        let id = procs::identify(pid).unwrap_or(ProcessId {
            pid,
            start_ticks: 0,
        });
        *self.child.lock().await = Some(child);
        if let Err(e) = Self::write_pid_file(pid_file, id) {
            procs::signal(id, Signal::SIGKILL, true);
            return Err(self.fail(
                ctx,
                Recovery::MoveAway,
                format!(
                    "cannot write pid file {}: {e}; killed the mysqld just started",
                    pid_file.display()
                ),
            ));
        }
        Ok((id, offset))
    }

    /// Waits until the server answers, our process dies, or the deadline passes.
    async fn wait_ready(
        &self,
        ctx: &ActionContext,
        endpoint: &Endpoint,
        id: Option<ProcessId>,
        deadline: Instant,
    ) -> Result<(), String> {
        loop {
            if let Some(id) = id {
                if let Some(child) = self.child.lock().await.as_mut() {
                    if let Ok(Some(status)) = child.try_wait() {
                        return Err(format!(
                            "mysqld (pid {}) exited during start: {status}",
                            id.pid
                        ));
                    }
                }
                if !procs::is_alive(id) {
                    return Err(format!("mysqld (pid {}) exited during start", id.pid));
                }
            }
            let last = match self.probe(endpoint).await {
                Ok(()) => return Ok(()),
                Err(e @ ProbeError::Refused { .. }) => return Err(e.to_string()),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(format!(
                    "not ready within {:?}: {last}",
                    Self::timeout(self.config.start_timeout_ms)
                ));
            }
            tracing::debug!(resource = %self.name, epoch = ctx.epoch, reason = %last, "waiting for mysqld");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Ends the tracked process: SIGTERM and `grace` (none: SIGKILL at once), then SIGKILL.
    async fn end_process(
        &self,
        ctx: &ActionContext,
        id: ProcessId,
        grace: Duration,
    ) -> Result<(), AgentError> {
        let kill_wait = Self::timeout(self.config.kill_timeout_ms);
        if !procs::is_alive(id) {
            return Ok(());
        }
        let signal = if grace.is_zero() {
            Signal::SIGKILL
        } else {
            Signal::SIGTERM
        };
        tracing::info!(resource = %self.name, epoch = ctx.epoch, pid = id.pid, signal = %signal, "signalling mysqld");
        procs::signal(id, signal, signal == Signal::SIGKILL);
        let mut left = self
            .wait_gone(id, if grace.is_zero() { kill_wait } else { grace })
            .await;
        if left && !grace.is_zero() {
            tracing::warn!(resource = %self.name, epoch = ctx.epoch, pid = id.pid, "mysqld did not stop within {grace:?}; sending SIGKILL");
            procs::signal(id, Signal::SIGKILL, true);
            left = self.wait_gone(id, kill_wait).await;
        }
        if left {
            return Err(self.fail(
                ctx,
                Recovery::Fence,
                format!(
                    "mysqld (pid {}) survived SIGKILL (stuck in the kernel?)",
                    id.pid
                ),
            ));
        }
        Ok(())
    }

    async fn wait_gone(&self, id: ProcessId, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if let Some(child) = self.child.lock().await.as_mut() {
                let _ = child.try_wait();
            }
            if !procs::is_alive(id) {
                return false;
            }
            if Instant::now() >= deadline {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn forget_child(&self) {
        if let Some(mut child) = self.child.lock().await.take() {
            let _ = child.try_wait();
        }
    }

    async fn start_command(
        &self,
        ctx: &ActionContext,
        endpoint: &Endpoint,
        argv: &[String],
        pid_file: &Path,
        log_file: &Path,
    ) -> Result<(), AgentError> {
        let deadline = Instant::now() + Self::timeout(self.config.start_timeout_ms);
        let (id, offset) = match self.tracked(pid_file).await {
            Tracked::Alive(id) => {
                tracing::info!(resource = %self.name, epoch = ctx.epoch, pid = id.pid, "mysqld already runs; waiting until it answers");
                let ready = self.wait_ready(ctx, endpoint, Some(id), deadline).await;
                return ready.map_err(|why| self.fail(ctx, Recovery::MoveAway, why));
            }
            Tracked::Unreadable(why) => {
                return Err(self.fail(
                    ctx,
                    Recovery::MoveAway,
                    format!("pid file unreadable: {why}"),
                ))
            }
            Tracked::Gone(id) => {
                tracing::warn!(resource = %self.name, epoch = ctx.epoch, pid = id.pid, "previous mysqld is gone without a stop; starting anew (crash recovery)");
                Self::remove_pid_file(pid_file);
                self.refuse_foreign(ctx, endpoint).await?;
                self.spawn(ctx, argv, pid_file, log_file).await?
            }
            Tracked::None => {
                self.refuse_foreign(ctx, endpoint).await?;
                self.spawn(ctx, argv, pid_file, log_file).await?
            }
        };
        match self.wait_ready(ctx, endpoint, Some(id), deadline).await {
            Ok(()) => {
                tracing::info!(resource = %self.name, epoch = ctx.epoch, pid = id.pid, "mysqld answers");
                Ok(())
            }
            Err(why) => {
                // Leave nothing behind: stop what this start spawned.
                let cleanup = self
                    .end_process(ctx, id, Self::timeout(self.config.stop_timeout_ms))
                    .await;
                self.forget_child().await;
                Self::remove_pid_file(pid_file);
                let tail = Self::log_tail(log_file, offset);
                let mut message = format!("start failed: {why}; log: {tail}");
                if let Err(e) = cleanup {
                    message.push_str(&format!("; and cleanup failed: {}", e.message));
                    return Err(self.fail(ctx, Recovery::Fence, message));
                }
                Err(self.fail(ctx, Recovery::MoveAway, message))
            }
        }
    }

    /// Refuses to start a second server where one that quorate did not start already answers.
    async fn refuse_foreign(
        &self,
        ctx: &ActionContext,
        endpoint: &Endpoint,
    ) -> Result<(), AgentError> {
        match self.probe(endpoint).await {
            Ok(()) | Err(ProbeError::Refused { .. }) => Err(self.fail(
                ctx,
                Recovery::MoveAway,
                format!("a MySQL server that quorate did not start already answers on {endpoint}; stop it first"),
            )),
            Err(_) => Ok(()),
        }
    }

    async fn stop_command(
        &self,
        ctx: &ActionContext,
        pid_file: &Path,
        grace: Duration,
    ) -> Result<(), AgentError> {
        match self.tracked(pid_file).await {
            Tracked::None => Ok(()),
            Tracked::Gone(id) => {
                tracing::info!(resource = %self.name, epoch = ctx.epoch, pid = id.pid, "mysqld already gone");
                Self::remove_pid_file(pid_file);
                self.forget_child().await;
                Ok(())
            }
            Tracked::Alive(id) => {
                self.end_process(ctx, id, grace).await?;
                Self::remove_pid_file(pid_file);
                self.forget_child().await;
                Ok(())
            }
            Tracked::Unreadable(why) => Err(self.fail(
                ctx,
                Recovery::Fence,
                format!("pid file unreadable, cannot tell what to stop: {why}"),
            )),
        }
    }

    async fn monitor_command(&self, endpoint: &Endpoint, pid_file: &Path) -> ResourceState {
        match self.tracked(pid_file).await {
            Tracked::None => match self.probe(endpoint).await {
                Ok(()) => ResourceState::Failed(format!(
                    "a server answers on {endpoint} but quorate did not start it"
                )),
                Err(_) => ResourceState::Stopped,
            },
            Tracked::Gone(id) => ResourceState::Failed(format!(
                "mysqld (pid {}) is gone without a stop (crashed or killed)",
                id.pid
            )),
            Tracked::Alive(id) => match self.probe(endpoint).await {
                Ok(()) => ResourceState::Running,
                Err(e) => ResourceState::Failed(format!(
                    "mysqld (pid {}) runs but does not answer: {e}",
                    id.pid
                )),
            },
            Tracked::Unreadable(why) => {
                ResourceState::Failed(format!("pid file unreadable: {why}"))
            }
        }
    }

    // ---- systemd mode ----------------------------------------------------------------------

    async fn systemctl(
        &self,
        ctx: Option<&ActionContext>,
        args: &[&str],
        timeout: Duration,
    ) -> Result<String, String> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        tracing::info!(resource = %self.name, epoch = ctx.map(|c| c.epoch), command = ?args, "systemctl");
        match self.runner.run("systemctl", &args, timeout).await {
            Ok(out) if out.success() => Ok(out.stdout.trim().to_string()),
            Ok(out) => Err(format!(
                "systemctl {} failed ({:?}): {}{}",
                args.join(" "),
                out.code,
                out.stdout.trim(),
                out.stderr.trim()
            )),
            Err(e) => Err(e.to_string()),
        }
    }

    /// `systemctl is-active`: "active", "inactive", "failed", "activating", ... (exit code aside).
    async fn unit_state(&self, unit: &str) -> String {
        let args = vec!["is-active".to_string(), unit.to_string()];
        let timeout = Self::timeout(self.config.monitor_timeout_ms);
        match self.runner.run("systemctl", &args, timeout).await {
            Ok(out) => out.stdout.trim().to_string(),
            Err(e) => format!("unknown ({e})"),
        }
    }

    async fn stop_systemd(
        &self,
        ctx: &ActionContext,
        unit: &str,
        hard: bool,
    ) -> Result<(), AgentError> {
        let kill_wait = Self::timeout(self.config.kill_timeout_ms);
        if hard {
            if let Err(e) = self
                .systemctl(Some(ctx), &["kill", "--signal=SIGKILL", unit], kill_wait)
                .await
            {
                tracing::warn!(resource = %self.name, epoch = ctx.epoch, reason = %e, "systemctl kill failed; stopping the unit");
            }
        }
        // `stop` also cancels any restart the unit would do after the kill.
        let grace = if hard {
            kill_wait
        } else {
            Self::timeout(self.config.stop_timeout_ms)
        };
        if let Err(e) = self.systemctl(Some(ctx), &["stop", unit], grace).await {
            tracing::warn!(resource = %self.name, epoch = ctx.epoch, reason = %e, "graceful stop failed; killing the unit");
            let _ = self
                .systemctl(Some(ctx), &["kill", "--signal=SIGKILL", unit], kill_wait)
                .await;
            let _ = self.systemctl(Some(ctx), &["stop", unit], kill_wait).await;
        }
        match self.unit_state(unit).await.as_str() {
            "inactive" | "failed" => Ok(()),
            other => Err(self.fail(
                ctx,
                Recovery::Fence,
                format!("unit {unit} is still {other} after stop and SIGKILL"),
            )),
        }
    }
}

#[async_trait]
impl ResourceAgent for MysqlAgent {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "mysql"
    }

    fn validate(&self) -> Vec<String> {
        self.config.problems()
    }

    async fn start(&self, ctx: &ActionContext) -> Result<(), AgentError> {
        let endpoint = self
            .config
            .endpoint()
            .map_err(|e| self.bad_config(ctx, e))?;
        match self.config.launch().map_err(|e| self.bad_config(ctx, e))? {
            Launch::Command {
                argv,
                pid_file,
                log_file,
            } => {
                self.start_command(ctx, &endpoint, argv, pid_file, log_file)
                    .await
            }
            Launch::Systemd { unit } => {
                let deadline = Instant::now() + Self::timeout(self.config.start_timeout_ms);
                self.systemctl(
                    Some(ctx),
                    &["start", unit],
                    Self::timeout(self.config.start_timeout_ms),
                )
                .await
                .map_err(|e| self.fail(ctx, Recovery::MoveAway, e))?;
                self.wait_ready(ctx, &endpoint, None, deadline)
                    .await
                    .map_err(|why| {
                        self.fail(ctx, Recovery::MoveAway, format!("start failed: {why}"))
                    })
            }
        }
    }

    async fn stop(&self, ctx: &ActionContext) -> Result<(), AgentError> {
        match self.config.launch().map_err(|e| self.bad_config(ctx, e))? {
            Launch::Command { pid_file, .. } => {
                self.stop_command(ctx, pid_file, Self::timeout(self.config.stop_timeout_ms))
                    .await?
            }
            Launch::Systemd { unit } => self.stop_systemd(ctx, unit, false).await?,
        }
        tracing::info!(resource = %self.name, epoch = ctx.epoch, "mysqld stopped");
        Ok(())
    }

    async fn monitor(&self) -> ResourceState {
        let endpoint = match self.config.endpoint() {
            Ok(e) => e,
            Err(e) => return ResourceState::Failed(format!("invalid config: {e}")),
        };
        let work = async {
            match self.config.launch() {
                Err(e) => ResourceState::Failed(format!("invalid config: {e}")),
                Ok(Launch::Command { pid_file, .. }) => {
                    self.monitor_command(&endpoint, pid_file).await
                }
                Ok(Launch::Systemd { unit }) => match self.unit_state(unit).await.as_str() {
                    "active" => match self.probe(&endpoint).await {
                        Ok(()) => ResourceState::Running,
                        Err(e) => ResourceState::Failed(format!("unit {unit} is active but {e}")),
                    },
                    "inactive" => ResourceState::Stopped,
                    other => ResourceState::Failed(format!("unit {unit} is {other}")),
                },
            }
        };
        // One probe may use the whole monitor timeout; the pid and unit checks get a little more.
        let limit = Self::timeout(self.config.monitor_timeout_ms) + Duration::from_secs(1);
        match tokio::time::timeout(limit, work).await {
            Ok(state) => state,
            Err(_) => ResourceState::Failed(format!("monitor took longer than {limit:?}")),
        }
    }

    async fn fence(&self, ctx: &ActionContext) -> Result<(), AgentError> {
        match self.config.launch().map_err(|e| self.bad_config(ctx, e))? {
            Launch::Command { pid_file, .. } => {
                self.stop_command(ctx, pid_file, Duration::ZERO).await?
            }
            Launch::Systemd { unit } => self.stop_systemd(ctx, unit, true).await?,
        }
        tracing::warn!(resource = %self.name, epoch = ctx.epoch, "mysqld killed (fence)");
        Ok(())
    }
}

//! The MySQL agent: runs MariaDB/MySQL on the owner node and makes sure it is down everywhere else.
//!
//! mysqld is launched one of two ways, chosen by the config ([`config`]):
//! - **command** (`command.rs`): quorate spawns a configured command line that runs mysqld in the
//!   foreground, in its own process group, with output appended to a log file, and tracks it in a
//!   pid file (pid plus start time, so a reused pid is never mistaken for it, even after quorate
//!   restarts);
//! - **systemd** (`systemd.rs`): `systemctl start|stop|kill` on a configured unit.
//!
//! Either way, "running" means the server accepts a login with the configured user and answers
//! `SELECT 1` ([`probe`](mod@probe)). Start returns only then, or fails within the start timeout;
//! a start that fails after spawning stops what it spawned, so no half-started mysqld stays
//! behind. Stop is graceful (SIGTERM or `systemctl stop`, which let InnoDB flush and
//! close cleanly) until its deadline, then SIGKILL; a process that survives even that makes stop
//! fail with [`Recovery::Fence`]. Fence is SIGKILL at once: when the lease ran out, the fastest way
//! to stop accepting writes wins over a clean shutdown, and InnoDB recovers on the next start.
//!
//! This file holds the agent, what both launchers share (failure reports, the probe, the wait for
//! readiness) and the dispatch on [`config::MysqlConfig`]'s launch mode; each launcher adds its
//! own methods to [`MysqlAgent`] in its own file.

mod command;
pub mod config;
pub mod probe;
mod systemd;

use crate::command::CommandRunner;
use crate::resources::agent::{ActionContext, AgentError, Recovery, ResourceAgent, ResourceState};
use crate::resources::mysql::config::{Launch, MysqlConfig};
use crate::resources::mysql::probe::{probe, Endpoint, ProbeError};
use crate::resources::procs::ProcessId;
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

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

    /// Waits until the server answers, our process dies, or the deadline passes (both launchers;
    /// `id` is the process the command launcher spawned).
    async fn wait_ready(
        &self,
        ctx: &ActionContext,
        endpoint: &Endpoint,
        id: Option<ProcessId>,
        deadline: Instant,
    ) -> Result<(), String> {
        loop {
            if let Some(id) = id {
                if let Some(why) = self.exited_during_start(id).await {
                    return Err(why);
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
            Launch::Systemd { unit } => self.start_systemd(ctx, &endpoint, unit).await,
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
                Ok(Launch::Systemd { unit }) => self.monitor_systemd(&endpoint, unit).await,
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

//! The systemd launcher of the MySQL agent: mysqld is a unit, and quorate drives it through
//! `systemctl` (start, stop, kill, is-active), every call through the agent's
//! [`CommandRunner`](crate::command::CommandRunner).
//!
//! Stop is `systemctl stop` (graceful) until the stop timeout; fence is `systemctl kill
//! --signal=SIGKILL` and then `systemctl stop`, which also cancels any restart the unit would do
//! after the kill. Either fails with fencing when the unit is still not down.

use crate::resources::agent::{ActionContext, AgentError, Recovery, ResourceState};
use crate::resources::mysql::probe::Endpoint;
use crate::resources::mysql::MysqlAgent;
use std::time::Duration;
use tokio::time::Instant;

impl MysqlAgent {
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

    /// `systemctl start`, then waits until the server answers or the start timeout passes.
    pub(super) async fn start_systemd(
        &self,
        ctx: &ActionContext,
        endpoint: &Endpoint,
        unit: &str,
    ) -> Result<(), AgentError> {
        let deadline = Instant::now() + Self::timeout(self.config.start_timeout_ms);
        self.systemctl(
            Some(ctx),
            &["start", unit],
            Self::timeout(self.config.start_timeout_ms),
        )
        .await
        .map_err(|e| self.fail(ctx, Recovery::MoveAway, e))?;
        self.wait_ready(ctx, endpoint, None, deadline)
            .await
            .map_err(|why| self.fail(ctx, Recovery::MoveAway, format!("start failed: {why}")))
    }

    /// Stops the unit (`hard`: SIGKILL first, for fencing); fails when it is still not down.
    pub(super) async fn stop_systemd(
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

    /// Running when the unit is active and the server answers; stopped when it is inactive.
    pub(super) async fn monitor_systemd(&self, endpoint: &Endpoint, unit: &str) -> ResourceState {
        match self.unit_state(unit).await.as_str() {
            "active" => match self.probe(endpoint).await {
                Ok(()) => ResourceState::Running,
                Err(e) => ResourceState::Failed(format!("unit {unit} is active but {e}")),
            },
            "inactive" => ResourceState::Stopped,
            other => ResourceState::Failed(format!("unit {unit} is {other}")),
        }
    }
}

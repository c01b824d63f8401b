//! The DRBD agent: makes this node's replica of the data Primary for the owner and Secondary
//! everywhere else.
//!
//! Commands, all through the [`CommandRunner`] (program paths come from the config, so tests can
//! point them at the stand-in):
//!
//! | action | command |
//! |---|---|
//! | read state | `drbdsetup status <res> --json` (parsed once, see [`status`]) |
//! | promote | `drbdadm primary <res>` |
//! | forced promote | `drbdadm primary --force <res>` |
//! | demote | `drbdadm secondary <res>` |
//!
//! `start` decides with [`plan_promotion`] before it runs anything: it never promotes an
//! Outdated or Inconsistent disk (the data may miss acknowledged writes: move away), never
//! promotes while a connected peer is Primary, and uses `--force` only as the `force_primary`
//! policy allows:
//!
//! | `force_primary` | when `--force` is used |
//! |---|---|
//! | `never` (default) | never; a merely Consistent disk is refused |
//! | `when_peer_outdated` | local disk Consistent (not known to be newest) and every peer's disk is known to DRBD as Outdated, Inconsistent or Diskless, i.e. the fence-peer handler outdated the peer, so no peer can hold newer data |
//!
//! An explicit admin promotion of an Outdated node goes through [`DrbdAgent::force_promote`].
//! `monitor`: Primary with every volume UpToDate is running, Secondary is stopped, anything else
//! failed. `stop` and `fence` demote; a demotion that fails (device still open) asks for fencing.
//!
//! This folder holds the agent (here), the parser of `drbdsetup status --json` ([`status`]) and
//! the agent's unit tests (`tests.rs`).

pub mod status;

use crate::command::{CommandOutput, CommandRunner, RunError};
use crate::resources::agent::{ActionContext, AgentError, Recovery, ResourceAgent, ResourceState};
use crate::resources::drbd::status::{
    parse_status, DiskState, DrbdRole, DrbdStatus, StatusParseError,
};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// When `start` may add `--force` to the promotion.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForcePrimary {
    /// Never force.
    #[default]
    Never,
    /// Force a Consistent disk when DRBD knows every peer's disk is Outdated/Inconsistent/Diskless.
    WhenPeerOutdated,
}

/// Settings of one DRBD resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrbdConfig {
    /// The DRBD resource name as in the DRBD configuration, e.g. `r0`.
    pub resource: String,
    /// Path of `drbdadm` (absolute).
    #[serde(default = "default_drbdadm")]
    pub drbdadm: String,
    /// Path of `drbdsetup` (absolute).
    #[serde(default = "default_drbdsetup")]
    pub drbdsetup: String,
    /// When `start` may promote with `--force`; see the module docs.
    #[serde(default)]
    pub force_primary: ForcePrimary,
    /// Deadline for one command, in milliseconds. 100 to 300000.
    #[serde(default = "default_command_timeout_ms")]
    pub command_timeout_ms: u64,
    /// How long `start` waits after a successful promotion for the status to show Primary and
    /// UpToDate, in milliseconds. 0 to 300000.
    #[serde(default = "default_settle_timeout_ms")]
    pub settle_timeout_ms: u64,
}

fn default_drbdadm() -> String {
    "/usr/sbin/drbdadm".into()
}
fn default_drbdsetup() -> String {
    "/usr/sbin/drbdsetup".into()
}
fn default_command_timeout_ms() -> u64 {
    30_000
}
fn default_settle_timeout_ms() -> u64 {
    5_000
}

/// What `start` should do, given the status and the force policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PromotionPlan {
    /// Primary and UpToDate already: nothing to do.
    AlreadyPrimary,
    /// Run `drbdadm primary <res>`.
    Promote,
    /// Run `drbdadm primary --force <res>`, for the reason given.
    PromoteForced(String),
    /// Do not promote yet: a connected peer is still Primary and must be demoted first.
    /// Retrying here is right; moving the group away would not help.
    WaitForPeer(String),
    /// Do not promote, for the reason given.
    Refuse(String),
}

/// Decides how (and whether) to promote; pure, so every rule has a test.
pub fn plan_promotion(status: &DrbdStatus, policy: ForcePrimary) -> PromotionPlan {
    let disk = status.local_disk();
    if status.role == DrbdRole::Primary {
        return if disk == DiskState::UpToDate {
            PromotionPlan::AlreadyPrimary
        } else {
            PromotionPlan::Refuse(format!(
                "this node is Primary but its disk is {disk}, not UpToDate; demote it and move away"
            ))
        };
    }
    if let Some(peer) = status.connected_primaries().next() {
        return PromotionPlan::WaitForPeer(format!(
            "connected peer {} is Primary; it must be demoted first",
            peer.name
        ));
    }
    match disk {
        DiskState::UpToDate => PromotionPlan::Promote,
        DiskState::Consistent => {
            let blocking: Vec<String> = status
                .peers
                .iter()
                .filter(|p| {
                    !matches!(
                        p.disk(),
                        DiskState::Outdated | DiskState::Inconsistent | DiskState::Diskless
                    )
                })
                .map(|p| format!("{}: {}", p.name, p.disk()))
                .collect();
            match policy {
                ForcePrimary::WhenPeerOutdated if blocking.is_empty() => {
                    PromotionPlan::PromoteForced(
                        "local disk is Consistent and every peer's disk is known outdated"
                            .to_string(),
                    )
                }
                ForcePrimary::WhenPeerOutdated => PromotionPlan::Refuse(format!(
                    "local disk is Consistent, not UpToDate, and a peer may hold newer data ({})",
                    blocking.join(", ")
                )),
                ForcePrimary::Never => PromotionPlan::Refuse(
                    "local disk is Consistent, not UpToDate, and force_primary is never"
                        .to_string(),
                ),
            }
        }
        DiskState::Outdated | DiskState::Inconsistent => PromotionPlan::Refuse(format!(
            "local disk is {disk}: this node may lack acknowledged writes; \
             only an explicit forced promotion may make it Primary"
        )),
        other => PromotionPlan::Refuse(format!(
            "local disk is {other}; there is no usable data here"
        )),
    }
}

/// Why reading the status failed.
#[derive(Debug, thiserror::Error)]
pub enum DrbdStatusError {
    /// The command could not run or timed out.
    #[error(transparent)]
    Run(#[from] RunError),
    /// The command ran and failed.
    #[error("{program} status failed (exit {code:?}): {stderr}")]
    Failed {
        /// The program.
        program: String,
        /// Its exit code.
        code: Option<i32>,
        /// What it said.
        stderr: String,
    },
    /// Its output made no sense, or the resource is not up.
    #[error(transparent)]
    Parse(#[from] StatusParseError),
}

/// The DRBD agent; see the module docs.
pub struct DrbdAgent {
    name: String,
    config: DrbdConfig,
    runner: Arc<dyn CommandRunner>,
}

impl DrbdAgent {
    /// Builds the agent; problems in `config` are reported by `validate`.
    pub fn new(
        name: impl Into<String>,
        config: DrbdConfig,
        runner: Arc<dyn CommandRunner>,
    ) -> Self {
        DrbdAgent {
            name: name.into(),
            config,
            runner,
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.command_timeout_ms)
    }

    fn error(&self, recovery: Recovery, message: impl Into<String>) -> AgentError {
        AgentError::new(&self.name, recovery, message)
    }

    /// Runs one command, logging it with the resource and epoch (no epoch for monitoring).
    async fn run(
        &self,
        epoch: Option<u64>,
        program: &str,
        args: &[&str],
    ) -> Result<CommandOutput, RunError> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let command = format!("{program} {}", args.join(" "));
        if epoch.is_some() {
            tracing::info!(resource = %self.name, epoch, %command, "running DRBD command");
        } else {
            tracing::debug!(resource = %self.name, %command, "running DRBD command");
        }
        let result = self.runner.run(program, &args, self.timeout()).await;
        match &result {
            Ok(out) if !out.success() => tracing::warn!(resource = %self.name, epoch, %command,
                code = ?out.code, stderr = %out.stderr.trim(), "DRBD command failed"),
            Err(e) => tracing::warn!(resource = %self.name, epoch, %command, reason = %e,
                "DRBD command did not run"),
            Ok(_) => {}
        }
        result
    }

    /// Reads and parses `drbdsetup status <res> --json`.
    pub async fn status(&self, epoch: Option<u64>) -> Result<DrbdStatus, DrbdStatusError> {
        let program = self.config.drbdsetup.clone();
        let out = self
            .run(
                epoch,
                &program,
                &["status", &self.config.resource, "--json"],
            )
            .await?;
        if !out.success() {
            let stderr = out.stderr.trim().to_string();
            // drbdsetup says "No such resource" (exit 10) for a resource that is not up.
            if stderr.contains("No such resource") || stderr.contains("Unknown resource") {
                return Err(StatusParseError::NotFound(self.config.resource.clone()).into());
            }
            return Err(DrbdStatusError::Failed {
                program,
                code: out.code,
                stderr,
            });
        }
        Ok(parse_status(&out.stdout, &self.config.resource)?)
    }

    /// Runs `drbdadm primary [--force] <res>`; maps failure to `recovery`.
    async fn promote(&self, ctx: &ActionContext, force: bool) -> Result<(), AgentError> {
        let resource = self.config.resource.as_str();
        let args: &[&str] = if force {
            &["primary", "--force", resource]
        } else {
            &["primary", resource]
        };
        match self.run(Some(ctx.epoch), &self.config.drbdadm, args).await {
            Ok(out) if out.success() => Ok(()),
            Ok(out) => Err(self.error(
                Recovery::MoveAway,
                format!(
                    "drbdadm {} refused (exit {:?}): {}",
                    args.join(" "),
                    out.code,
                    out.stderr.trim()
                ),
            )),
            Err(e @ RunError::Timeout { .. }) => Err(self.error(Recovery::Retry, e.to_string())),
            Err(e) => Err(self.error(Recovery::MoveAway, e.to_string())),
        }
    }

    /// Waits until the status shows Primary with UpToDate disks, up to `settle_timeout_ms`.
    async fn wait_serving(&self, ctx: &ActionContext) -> Result<(), AgentError> {
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(self.config.settle_timeout_ms);
        loop {
            let seen = match self.status(Some(ctx.epoch)).await {
                Ok(status) if status.is_serving() => return Ok(()),
                Ok(status) => status.summary(),
                Err(e) => e.to_string(),
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(self.error(
                    Recovery::Retry,
                    format!("promoted, but DRBD does not show Primary/UpToDate: {seen}"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The explicit admin promotion: `drbdadm primary --force` whatever the local disk state.
    /// Only for an operator who accepts losing writes the other node may have; logged loudly.
    pub async fn force_promote(&self, ctx: &ActionContext, reason: &str) -> Result<(), AgentError> {
        tracing::warn!(resource = %self.name, epoch = ctx.epoch, action = "force_promote", reason,
            "forcing DRBD Primary on operator request");
        self.promote(ctx, true)
            .await
            .map_err(|e| self.logged(ctx, "force_promote", e))?;
        self.wait_serving(ctx)
            .await
            .map_err(|e| self.logged(ctx, "force_promote", e))
    }

    fn logged(&self, ctx: &ActionContext, action: &'static str, error: AgentError) -> AgentError {
        tracing::warn!(resource = %self.name, epoch = ctx.epoch, action,
            recovery = ?error.recovery, reason = %error.message, "DRBD action failed");
        error
    }

    /// Demotes; shared by `stop` and `fence`. Any failure asks for fencing.
    async fn demote(&self, ctx: &ActionContext, action: &'static str) -> Result<(), AgentError> {
        match self.status(Some(ctx.epoch)).await {
            Ok(status) if status.role != DrbdRole::Primary => {
                tracing::info!(resource = %self.name, epoch = ctx.epoch, action,
                    state = %status.summary(), "DRBD already not Primary");
                return Ok(());
            }
            Err(DrbdStatusError::Parse(StatusParseError::NotFound(_))) => {
                tracing::info!(resource = %self.name, epoch = ctx.epoch, action,
                    "DRBD resource not up here, so not Primary");
                return Ok(());
            }
            // Primary, or unknown: try to demote either way.
            _ => {}
        }
        let resource = self.config.resource.as_str();
        let failure = match self
            .run(
                Some(ctx.epoch),
                &self.config.drbdadm,
                &["secondary", resource],
            )
            .await
        {
            Ok(out) if out.success() => None,
            Ok(out) => Some(format!(
                "drbdadm secondary failed (exit {:?}): {}; is the device still mounted or open?",
                out.code,
                out.stderr.trim()
            )),
            Err(e) => Some(e.to_string()),
        };
        if let Some(why) = failure {
            return Err(self.logged(
                ctx,
                action,
                self.error(
                    Recovery::Fence,
                    format!("cannot demote DRBD: {why}; fence this node"),
                ),
            ));
        }
        match self.status(Some(ctx.epoch)).await {
            Ok(status) if status.role == DrbdRole::Secondary => {
                tracing::info!(resource = %self.name, epoch = ctx.epoch, action, "DRBD Secondary");
                Ok(())
            }
            Ok(status) => Err(self.logged(
                ctx,
                action,
                self.error(
                    Recovery::Fence,
                    format!("demoted, but status says {}", status.summary()),
                ),
            )),
            Err(e) => Err(self.logged(
                ctx,
                action,
                self.error(Recovery::Fence, format!("demoted, but cannot confirm: {e}")),
            )),
        }
    }
}

fn check_program(problems: &mut Vec<String>, prefix: &str, field: &str, path: &str) {
    let p = Path::new(path);
    if !p.is_absolute() {
        problems.push(format!("{prefix}{field} {path:?} must be an absolute path"));
        return;
    }
    match std::fs::metadata(p) {
        Err(e) => problems.push(format!("{prefix}{field} {path:?} cannot be used: {e}")),
        Ok(meta) if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 => problems.push(
            format!("{prefix}{field} {path:?} is not an executable file"),
        ),
        Ok(_) => {}
    }
}

#[async_trait]
impl ResourceAgent for DrbdAgent {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "drbd"
    }

    fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let prefix = format!("{}: ", self.name);
        let resource = &self.config.resource;
        if resource.is_empty()
            || resource.starts_with('-')
            || !resource
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c))
        {
            problems.push(format!(
                "{prefix}resource {resource:?} must be a DRBD resource name: letters, digits, '.', '_', '+', '-', not starting with '-'"
            ));
        }
        check_program(&mut problems, &prefix, "drbdadm", &self.config.drbdadm);
        check_program(&mut problems, &prefix, "drbdsetup", &self.config.drbdsetup);
        if !(100..=300_000).contains(&self.config.command_timeout_ms) {
            problems.push(format!(
                "{prefix}command_timeout_ms {} must be from 100 to 300000",
                self.config.command_timeout_ms
            ));
        }
        if self.config.settle_timeout_ms > 300_000 {
            problems.push(format!(
                "{prefix}settle_timeout_ms {} must be at most 300000",
                self.config.settle_timeout_ms
            ));
        }
        problems
    }

    async fn start(&self, ctx: &ActionContext) -> Result<(), AgentError> {
        let status = self.status(Some(ctx.epoch)).await.map_err(|e| {
            let recovery = match e {
                DrbdStatusError::Run(RunError::Timeout { .. }) => Recovery::Retry,
                _ => Recovery::MoveAway,
            };
            self.logged(ctx, "start", self.error(recovery, e.to_string()))
        })?;
        let plan = plan_promotion(&status, self.config.force_primary);
        tracing::info!(resource = %self.name, epoch = ctx.epoch, action = "start",
            state = %status.summary(), ?plan, "DRBD promotion plan");
        match plan {
            PromotionPlan::AlreadyPrimary => return Ok(()),
            PromotionPlan::Refuse(why) => {
                return Err(self.logged(
                    ctx,
                    "start",
                    self.error(Recovery::MoveAway, format!("refusing to promote: {why}")),
                ))
            }
            PromotionPlan::WaitForPeer(why) => {
                return Err(self.logged(
                    ctx,
                    "start",
                    self.error(Recovery::Retry, format!("not promoting yet: {why}")),
                ))
            }
            PromotionPlan::Promote => self.promote(ctx, false).await,
            PromotionPlan::PromoteForced(why) => {
                tracing::warn!(resource = %self.name, epoch = ctx.epoch, action = "start",
                    reason = %why, "promoting DRBD with --force");
                self.promote(ctx, true).await
            }
        }
        .map_err(|e| self.logged(ctx, "start", e))?;
        self.wait_serving(ctx)
            .await
            .map_err(|e| self.logged(ctx, "start", e))
    }

    async fn stop(&self, ctx: &ActionContext) -> Result<(), AgentError> {
        self.demote(ctx, "stop").await
    }

    async fn monitor(&self) -> ResourceState {
        match self.status(None).await {
            Ok(status) if status.is_serving() => ResourceState::Running,
            Ok(status) if status.role == DrbdRole::Secondary => ResourceState::Stopped,
            Ok(status) => ResourceState::Failed(status.summary()),
            Err(e) => ResourceState::Failed(e.to_string()),
        }
    }

    async fn fence(&self, ctx: &ActionContext) -> Result<(), AgentError> {
        self.demote(ctx, "fence").await
    }
}

#[cfg(test)]
mod tests;

//! The resource group: the ordered list of agents the owner runs (DRBD, mount, MySQL, VIP).
//!
//! The group turns one decision ("start", "stop", "fence") into the right sequence of agent
//! actions: start in order, each step confirmed by `monitor` before the next; stop in reverse;
//! a failed start rolls back, in reverse, everything it brought up (the failed resource too,
//! since it may be partly up); fence goes through every agent in reverse and does not stop at a
//! failure, because a hard stop must take down as much as it can.
//!
//! Start, stop and restart pass the [`EpochGate`] first: an action whose owner epoch is older
//! than one the group already acted on is refused and logged, and that mark survives a restart of
//! the process. A fence is never refused: it runs every step whatever its epoch and whatever the
//! state directory says, and notes its epoch afterwards, best-effort
//! (see [`ResourceGroup::fence`]).
//! Start and stop take a lock so two of them never interleave; fence does not wait for that lock,
//! because it must not queue behind a start that hangs.
//!
//! A start (and the start half of a restart) may also be given a check that is asked before
//! each step, the first included: the agent checks its lease there, so a start that stalled
//! past its lease begins no further step (see [`ResourceGroup::start_checked`]).

use crate::resources::agent::{ActionContext, AgentError, Recovery, ResourceAgent, ResourceState};
use crate::resources::fencing::{EpochError, EpochGate};
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How long one agent action may take before the group gives up on it, unless set otherwise.
pub const DEFAULT_ACTION_TIMEOUT: Duration = Duration::from_secs(300);

/// Asked before each start step, the first included: `Ok` lets the step begin, `Err(why)`
/// ends the start there. The agent passes a check of its lease (still valid, same epoch).
pub type StartCheck<'a> = &'a (dyn Fn() -> Result<(), String> + Send + Sync);

/// The check of a start that nothing but the epoch gate limits (tests, tools).
fn always() -> Result<(), String> {
    Ok(())
}

/// A group action that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    /// The start, stop or restart's epoch is stale, or could not be recorded; nothing was
    /// touched. Drop the request. (A fence is never refused.)
    #[error("group {group}: {action} refused: {source}")]
    Refused {
        /// The group's name.
        group: String,
        /// The refused action.
        action: &'static str,
        /// The gate's reason.
        source: EpochError,
    },
    /// A resource failed to start; the steps already done were rolled back.
    #[error("group {group}: start failed at {cause}{}", rollback_note(.rollback_failures))]
    StartFailed {
        /// The group's name.
        group: String,
        /// Which resource failed (`cause.resource`) and why.
        cause: AgentError,
        /// Stops of the rollback that failed too; if any, the node must be fenced.
        rollback_failures: Vec<AgentError>,
    },
    /// A resource failed to stop; the resources started before it were left running.
    #[error("group {group}: stop failed at {cause}; resources below it were left running")]
    StopFailed {
        /// The group's name.
        group: String,
        /// Which resource failed (`cause.resource`) and why.
        cause: AgentError,
    },
    /// The start's lease check said no before `before` was started (the lease ended or
    /// belongs to another epoch): nothing more was started and nothing was rolled back,
    /// because an ordered stop is not what a node without a lease owes; the fence is.
    #[error("group {group}: start stopped before {before}: {why}")]
    StartInterrupted {
        /// The group's name.
        group: String,
        /// The resource that was not started.
        before: String,
        /// Why the check said no.
        why: String,
    },
    /// Fence went through every resource but some failed; fence the node by other means.
    #[error("group {group}: fence incomplete: {}", list(.failures))]
    FenceIncomplete {
        /// The group's name.
        group: String,
        /// Every agent fence that failed, in the order tried.
        failures: Vec<AgentError>,
    },
}

fn rollback_note(failures: &[AgentError]) -> String {
    if failures.is_empty() {
        "; rolled back".to_string()
    } else {
        format!("; rollback failed too: {}", list(failures))
    }
}

fn list(failures: &[AgentError]) -> String {
    let parts: Vec<String> = failures.iter().map(|f| f.to_string()).collect();
    parts.join("; ")
}

impl GroupError {
    /// What the caller should do next; `None` for a refused stale request (drop it, touch
    /// nothing: a newer owner term is in charge) and for a start the lease check ended (the
    /// decision loop fences what it started once it sees the lease gone).
    pub fn recovery(&self) -> Option<Recovery> {
        match self {
            GroupError::Refused { .. } | GroupError::StartInterrupted { .. } => None,
            GroupError::StartFailed {
                cause,
                rollback_failures,
                ..
            } => Some(if rollback_failures.is_empty() {
                cause.recovery
            } else {
                Recovery::Fence
            }),
            GroupError::StopFailed { .. } | GroupError::FenceIncomplete { .. } => {
                Some(Recovery::Fence)
            }
        }
    }
}

/// One group member's state as `monitor_all` found it, with the agent kind for logs and
/// `status` (the core's [`crate::core::ResourceStatus`] is the name and state alone).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupResourceStatus {
    /// The resource's name.
    pub resource: String,
    /// The agent kind.
    pub kind: &'static str,
    /// What `monitor` said.
    pub state: ResourceState,
}

impl fmt::Display for GroupResourceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.resource, self.kind, self.state)
    }
}

/// An ordered list of agents started in order and stopped in reverse.
pub struct ResourceGroup {
    name: String,
    agents: Vec<Arc<dyn ResourceAgent>>,
    gate: EpochGate,
    action_timeout: Duration,
    actions: tokio::sync::Mutex<()>,
}

impl ResourceGroup {
    /// A group named `name` over `agents` (start order), keeping its epoch mark in `state_dir`.
    pub fn new(
        name: &str,
        agents: Vec<Arc<dyn ResourceAgent>>,
        state_dir: &Path,
    ) -> Result<Self, EpochError> {
        Ok(ResourceGroup {
            name: name.to_string(),
            gate: EpochGate::open(state_dir, name)?,
            agents,
            action_timeout: DEFAULT_ACTION_TIMEOUT,
            actions: tokio::sync::Mutex::new(()),
        })
    }

    /// Sets how long one agent action may run; a start past it fails, a stop past it fences.
    pub fn with_action_timeout(mut self, timeout: Duration) -> Self {
        self.action_timeout = timeout;
        self
    }

    /// The group's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The highest epoch this group has acted on.
    pub fn last_epoch(&self) -> u64 {
        self.gate.last()
    }

    /// The resources' names in start order.
    pub fn resource_names(&self) -> Vec<String> {
        self.agents.iter().map(|a| a.name().to_string()).collect()
    }

    /// Every problem with the group and its agents, one line each, prefixed by the resource.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.agents.is_empty() {
            problems.push(format!("group {}: has no resources", self.name));
        }
        let names = self.resource_names();
        for (i, name) in names.iter().enumerate() {
            if names[..i].contains(name) {
                problems.push(format!(
                    "group {}: resource name {name} is used twice",
                    self.name
                ));
            }
        }
        for agent in &self.agents {
            for problem in agent.validate() {
                problems.push(format!("{} ({}): {problem}", agent.name(), agent.kind()));
            }
        }
        problems
    }

    fn admit(&self, action: &'static str, ctx: &ActionContext) -> Result<(), GroupError> {
        self.gate.admit(ctx.epoch).map_err(|source| {
            let last = self.gate.last();
            tracing::warn!(
                group = %self.name,
                resource = %self.resource_names().join(","),
                action,
                epoch = ctx.epoch,
                last_epoch = last,
                node = %ctx.node,
                reason = %source,
                "refusing group action"
            );
            GroupError::Refused {
                group: self.name.clone(),
                action,
                source,
            }
        })
    }

    /// Starts every resource in order; on a failure rolls back and says which one failed and why.
    /// Returns how long each resource took to start, in start order.
    pub async fn start(&self, ctx: &ActionContext) -> Result<Vec<(String, Duration)>, GroupError> {
        self.start_checked(ctx, &always).await
    }

    /// Like [`ResourceGroup::start`], asking `check` before each step; when it says no, the
    /// start ends there with [`GroupError::StartInterrupted`] and leaves what it started.
    pub async fn start_checked(
        &self,
        ctx: &ActionContext,
        check: StartCheck<'_>,
    ) -> Result<Vec<(String, Duration)>, GroupError> {
        let _serial = self.actions.lock().await;
        self.admit("start", ctx)?;
        tracing::info!(group = %self.name, epoch = ctx.epoch, node = %ctx.node, "starting group");
        let phases = self.start_from(0, ctx, check).await?;
        tracing::info!(group = %self.name, epoch = ctx.epoch, "group started");
        Ok(phases)
    }

    /// Starts `agents[from..]` in order; on a failure stops those of them already started
    /// (and the failed one, which may be partly up), in reverse.
    ///
    /// `check` is asked right before each step, not once for the whole start: a start can
    /// stall for long in one step (a slow DRBD promotion, a process stopped by SIGSTOP), and
    /// by the time it goes on the lease may have ended and the guard or the decision loop
    /// fenced the group. A step begun after that would undo the fence (a VIP added back). When
    /// the check says no the start stops without rolling back: the steps already done are left
    /// to the fence, which a node without a valid lease owes anyway. What the check cannot
    /// cover is a step that began under a valid lease and is still running at its end; that
    /// one is the guard's and the watchdog's to contain.
    async fn start_from(
        &self,
        from: usize,
        ctx: &ActionContext,
        check: StartCheck<'_>,
    ) -> Result<Vec<(String, Duration)>, GroupError> {
        let mut phases = Vec::new();
        for (index, agent) in self.agents.iter().enumerate().skip(from) {
            if let Err(why) = check() {
                tracing::warn!(
                    group = %self.name,
                    resource = %agent.name(),
                    epoch = ctx.epoch,
                    reason = %why,
                    "start stopped: the lease check said no"
                );
                return Err(GroupError::StartInterrupted {
                    group: self.name.clone(),
                    before: agent.name().to_string(),
                    why,
                });
            }
            let began = std::time::Instant::now();
            if let Err(cause) = self.start_one(agent.as_ref(), ctx).await {
                tracing::error!(
                    group = %self.name,
                    resource = %agent.name(),
                    epoch = ctx.epoch,
                    reason = %cause,
                    "start failed; rolling back"
                );
                let mut rollback_failures = Vec::new();
                for done in self.agents[from..=index].iter().rev() {
                    if let Err(e) = self.stop_one(done.as_ref(), ctx).await {
                        tracing::error!(
                            group = %self.name,
                            resource = %done.name(),
                            epoch = ctx.epoch,
                            reason = %e,
                            "rollback stop failed"
                        );
                        rollback_failures.push(e);
                    }
                }
                return Err(GroupError::StartFailed {
                    group: self.name.clone(),
                    cause,
                    rollback_failures,
                });
            }
            phases.push((agent.name().to_string(), began.elapsed()));
        }
        Ok(phases)
    }

    /// Stops every resource in reverse order, stopping at the first that cannot be stopped.
    pub async fn stop(&self, ctx: &ActionContext) -> Result<(), GroupError> {
        let _serial = self.actions.lock().await;
        self.admit("stop", ctx)?;
        tracing::info!(group = %self.name, epoch = ctx.epoch, node = %ctx.node, "stopping group");
        for agent in self.agents.iter().rev() {
            if let Err(cause) = self.stop_one(agent.as_ref(), ctx).await {
                tracing::error!(
                    group = %self.name,
                    resource = %agent.name(),
                    epoch = ctx.epoch,
                    reason = %cause,
                    "stop failed; leaving the resources below it running"
                );
                return Err(GroupError::StopFailed {
                    group: self.name.clone(),
                    cause,
                });
            }
        }
        tracing::info!(group = %self.name, epoch = ctx.epoch, "group stopped");
        Ok(())
    }

    /// Recovers in place: stops `name` and every resource after it (reverse order), then starts
    /// them again in order. The resources before `name` keep running. A failed start rolls back
    /// only the restarted part.
    pub async fn restart_from(&self, name: &str, ctx: &ActionContext) -> Result<(), GroupError> {
        self.restart_from_checked(name, ctx, &always).await
    }

    /// Like [`ResourceGroup::restart_from`], asking `check` before each start step (see
    /// [`ResourceGroup::start_checked`]); the stops of the restart are never held back.
    pub async fn restart_from_checked(
        &self,
        name: &str,
        ctx: &ActionContext,
        check: StartCheck<'_>,
    ) -> Result<(), GroupError> {
        let _serial = self.actions.lock().await;
        self.admit("restart", ctx)?;
        let from = self
            .agents
            .iter()
            .position(|a| a.name() == name)
            .unwrap_or(0);
        tracing::info!(group = %self.name, resource = name, epoch = ctx.epoch, "restarting in place");
        for agent in self.agents[from..].iter().rev() {
            if let Err(cause) = self.stop_one(agent.as_ref(), ctx).await {
                return Err(GroupError::StopFailed {
                    group: self.name.clone(),
                    cause,
                });
            }
        }
        self.start_from(from, ctx, check).await?;
        Ok(())
    }

    /// Hard-stops every resource in reverse order, going on past failures and listing them.
    ///
    /// Never refused, whatever `ctx.epoch`. The epoch gate exists so a
    /// stale request cannot bring something *up*; a fence only takes things down, so no epoch,
    /// stale or 0 (a wiped store), can make it unsafe, while refusing it can: an owner whose
    /// lease ran out would keep the group running next to the new owner. For the same reason
    /// the epoch is noted only after every step ran, and a failure to write it (a full,
    /// read-only or vanished state directory) is logged, not returned: the fence's outcome is
    /// its steps' outcome. What a stale fence can cost is availability (it takes down a group
    /// held under a newer epoch, which the next start brings back), never a second holder.
    pub async fn fence(&self, ctx: &ActionContext) -> Result<(), GroupError> {
        let last_epoch = self.gate.last();
        if ctx.epoch < last_epoch {
            tracing::warn!(
                group = %self.name,
                epoch = ctx.epoch,
                last_epoch,
                "fencing under an epoch older than one acted on: a fence is never refused"
            );
        }
        tracing::warn!(group = %self.name, epoch = ctx.epoch, node = %ctx.node, "fencing group");
        let mut failures = Vec::new();
        for agent in self.agents.iter().rev() {
            let outcome = match tokio::time::timeout(self.action_timeout, agent.fence(ctx)).await {
                Ok(outcome) => outcome,
                Err(_) => Err(AgentError::new(
                    agent.name(),
                    Recovery::Fence,
                    format!("fence did not finish within {:?}", self.action_timeout),
                )),
            };
            if let Err(e) = outcome {
                tracing::error!(
                    group = %self.name,
                    resource = %agent.name(),
                    epoch = ctx.epoch,
                    reason = %e,
                    "fence failed; going on with the rest"
                );
                failures.push(e);
            }
        }
        if let Err(error) = self.gate.note_fence(ctx.epoch) {
            tracing::error!(
                group = %self.name,
                epoch = ctx.epoch,
                file = %self.gate.path().display(),
                %error,
                "FENCE RAN BUT ITS EPOCH COULD NOT BE WRITTEN: fix the state directory; \
                 starts stay refused until the epoch file can be written"
            );
        }
        if failures.is_empty() {
            tracing::warn!(group = %self.name, epoch = ctx.epoch, "group fenced");
            Ok(())
        } else {
            Err(GroupError::FenceIncomplete {
                group: self.name.clone(),
                failures,
            })
        }
    }

    /// Every resource's state, in start order.
    pub async fn monitor_all(&self) -> Vec<GroupResourceStatus> {
        let mut states = Vec::with_capacity(self.agents.len());
        for agent in &self.agents {
            states.push(GroupResourceStatus {
                resource: agent.name().to_string(),
                kind: agent.kind(),
                state: agent.monitor().await,
            });
        }
        states
    }

    async fn start_one(
        &self,
        agent: &dyn ResourceAgent,
        ctx: &ActionContext,
    ) -> Result<(), AgentError> {
        tracing::info!(resource = %agent.name(), epoch = ctx.epoch, "starting resource");
        match tokio::time::timeout(self.action_timeout, agent.start(ctx)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(AgentError::new(
                    agent.name(),
                    Recovery::MoveAway,
                    format!("start did not finish within {:?}", self.action_timeout),
                ))
            }
        }
        match agent.monitor().await {
            ResourceState::Running => Ok(()),
            other => Err(AgentError::new(
                agent.name(),
                Recovery::MoveAway,
                format!("start returned but monitor says {other}"),
            )),
        }
    }

    async fn stop_one(
        &self,
        agent: &dyn ResourceAgent,
        ctx: &ActionContext,
    ) -> Result<(), AgentError> {
        tracing::info!(resource = %agent.name(), epoch = ctx.epoch, "stopping resource");
        match tokio::time::timeout(self.action_timeout, agent.stop(ctx)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(AgentError::new(
                    agent.name(),
                    Recovery::Fence,
                    format!("stop did not finish within {:?}", self.action_timeout),
                ))
            }
        }
        // The contract says a stop never reports success while the resource runs; hold the
        // agent to it, since the next step (unmount, demote) depends on it.
        match agent.monitor().await {
            ResourceState::Running => Err(AgentError::new(
                agent.name(),
                Recovery::Fence,
                "stop returned but monitor still says running",
            )),
            _ => Ok(()),
        }
    }
}

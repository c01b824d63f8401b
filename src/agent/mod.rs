//! The agent of a management node: an arbiter plus the resource side.
//!
//! Beside the Raft voter it runs four tasks: the renewer (reports to the leader and renews
//! the lease when this node owns the group), the monitor (looks at every resource every
//! `monitor_interval`), the reconciler (the observe-decide-act loop) and, in production, a
//! guard child process that fences by itself when the agent stops renewing. On a clean
//! shutdown an owner stops its group in order and commits `Released`, so the other node can
//! take over at once instead of waiting out the lease. Only a stop that succeeded is followed
//! by `Released`: after a failed stop the owner fences and exits without releasing, and the
//! other node waits for the lease as if this one had died.
//!
//! Shutdown is structured ([`Lifetime`]): every task, the reconciler's action executor
//! included, is spawned on one task tracker. A clean shutdown cancels the stop token and waits
//! until each task has ended the step in hand (the monitor's look, read-only, is cut at once);
//! only then does the owner hand the group over, so no action of the loop runs beside the
//! hand-over. The renewer is the exception: it runs outside the tracker, on its own token, and
//! keeps the lease renewed until the ordered stop is done and `Released` committed, because the
//! node is still the owner until then and the wait for the step in hand plus the stop easily
//! outlast one lease. A power cut ([`Agent::abandon`]) cancels the cut token instead, which
//! drops every task, the renewer included, where it stands.

pub mod drbd_handler;
pub mod lease;
pub mod reconcile;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, Mutex, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::arbiter::view::cluster_view;
use crate::arbiter::{Arbiter, ArbiterError, RunOptions};
use crate::config::Config;
use crate::consensus::state::Command;
use crate::consensus::types::NodeId;
use crate::core::view::{self, ResourceState, ResourceStatus};
use crate::guard::GuardHandle;
use crate::resources::agent::ActionContext;
use crate::resources::group::ResourceGroup;
use lease::Renewer;
use reconcile::{core_status, HandOver, LeaseHold, Reconciler, StepAbandoned};

/// Why an agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The arbiter (store, Raft, server) failed.
    #[error(transparent)]
    Arbiter(#[from] ArbiterError),
    /// The resource group cannot be set up (for example its state directory).
    #[error("resource group: {0}")]
    Group(String),
    /// The guard process could not be started.
    #[error("lease guard: {0}")]
    Guard(String),
}

/// How the agent starts its guard, if at all.
#[derive(Clone, Debug, Default)]
pub struct AgentOptions {
    /// Options for the arbiter.
    pub run: RunOptions,
    /// The guard's program and arguments (normally `quorate-agent guard --config FILE`).
    /// `None`: no guard (in-process tests).
    pub guard_command: Option<(PathBuf, Vec<String>)>,
}

/// How the agent's tasks learn that it stops, and where they are tracked.
#[derive(Clone, Debug)]
pub struct Lifetime {
    /// Cancelled by a clean shutdown: each task ends after the step in hand.
    pub stop: CancellationToken,
    /// Cancelled by a power cut: each task is dropped where it stands. Cancelling it cancels
    /// `stop` too.
    pub cut: CancellationToken,
    /// Every task of the agent but the renewer (see [`Agent::shutdown`]), so shutdown can
    /// wait for them.
    pub tasks: TaskTracker,
}

impl Lifetime {
    /// A fresh lifetime: nothing cancelled, no task.
    pub fn new() -> Lifetime {
        let cut = CancellationToken::new();
        Lifetime {
            stop: cut.child_token(),
            cut,
            tasks: TaskTracker::new(),
        }
    }

    /// Spawns `task` on the tracker; a power cut drops it where it stands (`None`).
    pub fn spawn<F>(&self, task: F) -> JoinHandle<Option<F::Output>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tasks
            .spawn(self.cut.clone().run_until_cancelled_owned(task))
    }

    /// Cancels `token` (the stop or the cut token) and waits until every task has ended.
    async fn end(&self, token: &CancellationToken) {
        token.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

impl Default for Lifetime {
    fn default() -> Self {
        Lifetime::new()
    }
}

/// The renewer's task, which a clean shutdown ends last (see [`Agent::hand_over`]).
struct RenewerTask {
    /// Cancelled to end the renewals; a child of the power cut's token.
    stop: CancellationToken,
    task: JoinHandle<Option<()>>,
}

impl RenewerTask {
    /// Ends the renewals and waits until the renewer is gone: once this returns no renewal
    /// is asked and the guard is armed by no one any more.
    async fn end(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// A running agent.
pub struct Agent {
    arbiter: Arbiter,
    /// Taken by the shutdown or the power cut.
    renewer: Option<RenewerTask>,
    group: Arc<ResourceGroup>,
    guard: Option<Arc<Mutex<GuardHandle>>>,
    /// The lease, the given-up epoch and the abandoned-step flag, as the hand-over reads them.
    hold: LeaseHold,
    lifetime: Lifetime,
    config: Config,
    /// Whether this node could run the group; fixed at start-up from the agents' checks.
    _healthy: watch::Sender<bool>,
}

impl Agent {
    /// Starts the arbiter and the agent's tasks.
    pub async fn start(
        config: &Config,
        listener: TcpListener,
        options: AgentOptions,
    ) -> Result<Agent, AgentError> {
        let commands = options.run.command_runner();
        let agents: Vec<_> = config
            .group
            .resources
            .iter()
            .map(|r| r.build(commands.clone()))
            .collect();
        std::fs::create_dir_all(&config.group.state_dir).map_err(|e| {
            AgentError::Group(format!(
                "cannot create state_dir {}: {e}",
                config.group.state_dir.display()
            ))
        })?;
        let group = Arc::new(
            ResourceGroup::new("group", agents, &config.group.state_dir)
                .map_err(|e| AgentError::Group(e.to_string()))?,
        );
        let problems = group.validate();
        for problem in &problems {
            tracing::error!(%problem, "resource group problem: this node will not take ownership");
        }
        let guard = match &options.guard_command {
            Some((program, args)) if config.guard.enabled => Some(Arc::new(Mutex::new(
                GuardHandle::spawn(program, args).map_err(|e| AgentError::Guard(e.to_string()))?,
            ))),
            _ => None,
        };

        let arbiter = Arbiter::start(config, listener, options.run).await?;
        let members = config.membership();
        let timing = config.timing();
        let me = members
            .get(&config.node_id)
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let (lease_tx, lease_rx) = watch::channel(None);
        let (healthy_tx, healthy_rx) = watch::channel(problems.is_empty());
        let initial: Vec<ResourceStatus> = group
            .resource_names()
            .into_iter()
            .map(|name| ResourceStatus {
                name,
                state: ResourceState::Unknown,
            })
            .collect();
        let (monitored_tx, monitored_rx) = watch::channel(initial);
        let monitor_now = Arc::new(Notify::new());
        let (gave_up_tx, gave_up_rx) = watch::channel(None);
        let gave_up_tx = Arc::new(gave_up_tx);
        let abandoned = StepAbandoned::default();
        let hold = LeaseHold::new(lease_rx.clone(), gave_up_tx.clone(), abandoned.clone());

        let renewer = Renewer {
            raft: arbiter.raft().clone(),
            me: config.node_id,
            members: members.clone(),
            timing: timing.clone(),
            interval: Duration::from_millis(config.lease.renew_interval_ms),
            applied: arbiter.applied(),
            ownership: arbiter.ownership().clone(),
            identity: arbiter.identity().clone(),
            client_options: arbiter.client_options().clone(),
            lease: lease_tx,
            healthy: healthy_rx,
            guard: guard.clone(),
            gave_up: gave_up_rx,
        };
        let reconciler = Reconciler {
            me: config.node_id,
            name: me,
            members,
            timing,
            applied: arbiter.applied(),
            lease: lease_rx,
            monitored: monitored_rx,
            monitor_now: monitor_now.clone(),
            group: group.clone(),
            proposer: arbiter.proposer().clone(),
            notes: arbiter.notes().clone(),
            guard: guard.clone(),
            gave_up: gave_up_tx,
            abandoned,
        };
        let lifetime = Lifetime::new();
        // Not on the tracker: the renewals go on through the hand-over (see the module note).
        let renewing = lifetime.cut.child_token();
        let renewer = RenewerTask {
            task: tokio::spawn(
                lifetime
                    .cut
                    .clone()
                    .run_until_cancelled_owned(renewer.run(renewing.clone())),
            ),
            stop: renewing,
        };
        lifetime.spawn(monitor(
            group.clone(),
            monitored_tx,
            monitor_now,
            Duration::from_millis(config.group.monitor_interval_ms),
            lifetime.stop.clone(),
        ));
        lifetime.spawn(reconciler.run(lifetime.clone()));
        Ok(Agent {
            arbiter,
            renewer: Some(renewer),
            group,
            guard,
            hold,
            lifetime,
            config: config.clone(),
            _healthy: healthy_tx,
        })
    }

    /// The arbiter underneath.
    pub fn arbiter(&self) -> &Arbiter {
        &self.arbiter
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.arbiter.node_id()
    }

    /// Stops the agent. Its tasks end the step in hand (see [`reconcile`] for the action
    /// executor); then an owner stops its group in order and commits `Released` (bounded by
    /// a timeout), so the other node takes over without waiting for the lease. The lease is
    /// renewed all along, until `Released` is committed (see the module note); a node
    /// that is no longer the owner fences whatever its group may still hold. When the stop
    /// fails the owner fences and does not release; if the fence failed too, the guard stays
    /// armed and closing it waits until it has fenced at the lease deadline.
    pub async fn shutdown(mut self) -> Result<(), AgentError> {
        self.lifetime.end(&self.lifetime.stop).await;
        if let Some(renewer) = self.renewer.take() {
            self.hand_over(renewer).await;
        }
        if let Some(guard) = self.guard {
            if let Ok(guard) = Arc::try_unwrap(guard) {
                let _ = guard.into_inner().close().await;
            }
        }
        self.arbiter.shutdown().await?;
        Ok(())
    }

    /// Test support for a power cut: the agent's tasks stop at once, the resources die
    /// where they stand (recorded as a fence at the last epoch acted on), and the arbiter
    /// stops without releasing anything.
    pub async fn abandon(mut self) {
        // Dropping every task where it stands is the point: a power cut lets no step finish.
        self.lifetime.end(&self.lifetime.cut).await;
        if let Some(renewer) = self.renewer.take() {
            // Already dropped by the cut; this waits until it is gone.
            let _ = renewer.task.await;
        }
        let ctx = ActionContext {
            epoch: self.group.last_epoch(),
            node: self.config.me().map(|m| m.name.clone()).unwrap_or_default(),
        };
        let _ = self.group.fence(&ctx).await;
        let _ = self.arbiter.shutdown().await;
    }

    /// Hands the group over at a clean shutdown, then ends `renewer`.
    ///
    /// Safety (the guard and the renewals): until the ordered stop is done this node is the
    /// legitimate owner, so its renewals go on and keep re-arming the guard; the guard, armed
    /// with the last deadline, still fences if a renewal fails and the stop outlasts the lease.
    /// The renewer is ended before the guard is disarmed, and waited for, so no renewal in
    /// flight can re-arm it after; and the guard is disarmed only after a stop that succeeded
    /// (or a fence). After a stop that failed, the renewer is ended before the fence: the epoch
    /// is given up and its lease runs out, as for the executor's escalation.
    async fn hand_over(&self, renewer: RenewerTask) {
        let state = self.arbiter.applied().borrow().clone();
        let view = cluster_view(&state.state, &self.config.membership());
        let Some(owner) =
            crate::core::node::renewal_due(self.config.node_id, view::Role::Management, &view)
        else {
            renewer.end().await;
            self.fence_if_holding().await;
            return;
        };
        let ctx = ActionContext {
            epoch: owner.epoch,
            node: self.config.me().map(|m| m.name.clone()).unwrap_or_default(),
        };
        // Safety: the applied view says "owner", but it may be stale: a node cut off from the
        // leader keeps it while the leader, once this node's lease has run out, grants the
        // other node. So the lease decides, not the view (see `LeaseHold::hand_over`): without
        // a running lease of this epoch, or after a start step was let go, this node fences and
        // does not release.
        if let HandOver::Fence(why) = self.hold.hand_over(owner.epoch) {
            renewer.end().await;
            self.fence_without_releasing(&ctx, owner.epoch, &why).await;
            return;
        }
        tracing::info!(
            epoch = owner.epoch,
            "shutting down: stopping the group and releasing"
        );
        // Safety: `Released` tells the leader that this node holds nothing, and the leader then
        // grants the group at once, with no lease wait. So it is committed only after an
        // ordered stop that succeeded within the lease. After a failed stop this node fences
        // and shuts down without releasing: its renewals ended with its tasks above, so the
        // leader moves the group only once this node's lease must have run out (plus the fence
        // margin), the same wait as for a node that died; meanwhile the guard, still armed
        // unless the fence succeeded, fences at the deadline by itself. The stop races the
        // lease: the renewer keeps it running while this node is reachable, and if it ends
        // mid-stop (cut off, refused) the stop is dropped and the group fenced, since from
        // `fence_margin` later the other node may be starting.
        let stopping = tokio::time::timeout(Duration::from_secs(60), self.group.stop(&ctx));
        let failure = tokio::select! {
            stopped = stopping => match stopped {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some("the ordered stop did not finish within 60 s".to_string()),
            },
            why = self.hold.lease_ended(owner.epoch) => {
                Some(format!("the lease ended during the ordered stop: {why}"))
            }
        };
        // Asked again: the lease may have ended, or a step been let go, while the group
        // stopped.
        let failure = failure.or_else(|| match self.hold.hand_over(owner.epoch) {
            HandOver::Stop => None,
            HandOver::Fence(why) => Some(why),
        });
        if let Some(why) = failure {
            renewer.end().await;
            self.fence_without_releasing(&ctx, owner.epoch, &why).await;
            return;
        }
        // A refusal by the state machine is reported, not taken for a release.
        match reconcile::propose(
            self.arbiter.proposer().as_ref(),
            self.config.node_id,
            &ctx.node,
            Command::Release {
                node: self.config.node_id,
                epoch: owner.epoch,
            },
            "the agent is shutting down",
        )
        .await
        {
            Ok(()) => tracing::info!(epoch = owner.epoch, "released the group"),
            Err(e) => {
                tracing::warn!(error = %e, "could not commit the release; the lease will run out")
            }
        }
        // The group is stopped: no renewal is needed any more, and none may re-arm the guard
        // once it is disarmed below.
        renewer.end().await;
        if let Some(guard) = &self.guard {
            let _ = guard.lock().await.disarm(owner.epoch).await;
        }
    }

    /// At a shutdown of a node that is not the owner (any more): fence when the group may
    /// still hold anything. The decision loop may have aborted a start for a fence and the
    /// fence may have been cut short, or this node may have lost the group moments ago; the
    /// group's resources must not outlive the agent until the guard's deadline (or forever
    /// when no guard runs). A fence takes things down only, so it is safe whoever owns.
    ///
    /// After a start step was let go ([`StepAbandoned`]) it fences unconditionally: the step
    /// may still bring a resource up after any look.
    async fn fence_if_holding(&self) {
        let looked = self.group.monitor_all().await;
        if !self.hold.step_abandoned()
            && looked
                .iter()
                .all(|r| matches!(r.state, ResourceState::Stopped))
        {
            return;
        }
        let ctx = ActionContext {
            epoch: self.group.last_epoch(),
            node: self.config.me().map(|m| m.name.clone()).unwrap_or_default(),
        };
        let held: Vec<String> = looked.iter().map(|r| r.to_string()).collect();
        tracing::warn!(
            epoch = ctx.epoch,
            resources = %held.join(", "),
            "shutting down as a non-owner that may still hold part of the group: fencing"
        );
        if let Err(e) = self.group.fence(&ctx).await {
            tracing::error!(
                error = %e,
                "the fence failed; the guard, if armed, fences at its deadline"
            );
        }
    }

    /// When the hand-over may not release (an ordered stop that failed or outlived the lease,
    /// no running lease, a step let go): fence, and do NOT commit `Released` (see
    /// [`Agent::hand_over`]). The guard is disarmed only when the fence succeeded, so a node
    /// that may still hold something is left to the guard and its watchdog.
    async fn fence_without_releasing(&self, ctx: &ActionContext, epoch: u64, why: &str) {
        tracing::error!(
            epoch,
            error = %why,
            "shutting down WITHOUT releasing the group: the other node may take over only after this node's lease has run out; fencing"
        );
        match self.group.fence(ctx).await {
            Ok(()) => {
                if let Some(guard) = &self.guard {
                    let _ = guard.lock().await.disarm(epoch).await;
                }
            }
            Err(e) => tracing::error!(
                epoch,
                error = %e,
                "the fence failed too; the guard stays armed and fences by itself at the lease deadline"
            ),
        }
    }
}

/// Monitors every resource every `interval`, or at once when asked, until `stop` is
/// cancelled (then it ends at once, dropping the look in hand).
async fn monitor(
    group: Arc<ResourceGroup>,
    out: watch::Sender<Vec<ResourceStatus>>,
    now: Arc<Notify>,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut asked = false;
    loop {
        // A look is read-only, so a shutdown cuts it where it stands rather than wait for
        // every resource's monitor timeout while the hand-over waits.
        let Some(looked) = stop.run_until_cancelled(group.monitor_all()).await else {
            return;
        };
        let states: Vec<ResourceStatus> = looked.iter().map(core_status).collect();
        if asked {
            // Someone waits for this fresh look: publish it even when nothing changed.
            out.send_replace(states);
        } else {
            out.send_if_modified(|current| {
                let changed = *current != states;
                *current = states;
                changed
            });
        }
        asked = tokio::select! {
            _ = stop.cancelled() => return,
            _ = now.notified() => true,
            _ = tokio::time::sleep(interval) => false,
        };
    }
}

/// Runs an agent until `shutdown` resolves.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    options: AgentOptions,
) -> Result<(), AgentError> {
    let agent = Agent::start(&config, listener, options).await?;
    shutdown.await;
    tracing::info!("shutting down");
    agent.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Sets its flag when dropped: tells whether a task's future is gone.
    struct DropFlag(Arc<AtomicBool>);

    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_clean_stop_waits_for_the_step_in_hand() {
        let lifetime = Lifetime::new();
        let (step_tx, step_rx) = tokio::sync::oneshot::channel::<()>();
        let (began_tx, began_rx) = tokio::sync::oneshot::channel::<()>();
        let finished = Arc::new(AtomicBool::new(false));
        let stop = lifetime.stop.clone();
        let flag = finished.clone();
        lifetime.spawn(async move {
            // One step that waits for the test, then the loop's wait for the stop token.
            let _ = began_tx.send(());
            let _ = step_rx.await;
            flag.store(true, Ordering::SeqCst);
            stop.cancelled().await;
        });
        began_rx.await.expect("the task began its step");
        let ending = tokio::spawn({
            let lifetime = lifetime.clone();
            async move { lifetime.end(&lifetime.stop).await }
        });
        // The stop is asked for while the step is in hand: shutdown must not end it.
        tokio::task::yield_now().await;
        assert!(!ending.is_finished());
        step_tx.send(()).expect("the task waits for its step");
        tokio::time::timeout(Duration::from_secs(5), ending)
            .await
            .expect("the shutdown ends once the step is done")
            .expect("shutdown task");
        assert!(finished.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_power_cut_drops_every_task_where_it_stands() {
        let lifetime = Lifetime::new();
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = DropFlag(dropped.clone());
        lifetime.spawn(async move {
            let _flag = flag;
            // A step that never ends on its own.
            std::future::pending::<()>().await;
        });
        tokio::time::timeout(Duration::from_secs(5), lifetime.end(&lifetime.cut))
            .await
            .expect("a power cut does not wait for any step");
        assert!(dropped.load(Ordering::SeqCst));
        assert!(lifetime.stop.is_cancelled(), "a cut also cancels the stop");
    }
}

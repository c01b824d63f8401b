//! The node's observe-decide-act loop.
//!
//! Observe: the committed state, this node's lease and the last monitor results. Decide:
//! [`crate::core::node::decide`], a pure function. Act: hand the ordered actions to an
//! executor task, so a slow start or stop never blocks the loop; only a fence may pre-empt a
//! running action. The loop wakes on every input change and at the decision's `wake_at`, so
//! a lease that runs out is acted on at once.
//!
//! On a clean shutdown (the agent's stop token) the loop ends at its next wait and the
//! executor, which runs on the agent's task tracker, starts no further action but a fence.
//! The action in hand finishes (a stop, a fence or a commit is bounded by its timeouts). A
//! start or a restart ends between two steps: its per-step check says no once the agent
//! stops, and the step in hand is waited for, because a step cannot be stopped from outside
//! (a mount(2) in `spawn_blocking`, a DRBD promotion run as a command go on when their future
//! is dropped) and one that completed after the hand-over's stop would leave a resource up
//! after `Released`. Only a step still running [`STOPPING_START_GRACE`] after the stop was
//! asked for, or when the lease of its epoch ends, is let go: the executor fences and sets
//! [`StepAbandoned`], so the hand-over fences and never releases; the renewer keeps the lease
//! meanwhile (see [`super::Agent::shutdown`]).
//!
//! A fence is never skipped at shutdown, decided then or earlier: it only takes things down,
//! it is bounded by the action timeout, and the loop may already have aborted a running start
//! for it, so skipping it would leave what that start brought up running, with no stop to come
//! if this node is no longer the owner.
//!
//! A failed stop escalates. By the agent contract a stop succeeds or fails for good (it has
//! already escalated inside the agent and within its timeout), so the group answers every
//! failed stop with [`agent::Recovery::Fence`]. Reissuing it would hold MySQL and the VIP
//! down while the lease, renewed all along, keeps the other node out: no failover, ever. So
//! the first action that fails asking for a fence (a stop, a restart's stop, a start whose
//! rollback could not stop) makes the node give up the epoch ([`GaveUp`]): it asks for no
//! more renewals, runs the group's fence, and trusts its lease no longer. The leader, hearing
//! no renewal, moves the group once the lease has ended (it never picks the silent owner).
//! If the fence fails too, the guard fences at the lease deadline it was last armed with, and
//! when that fails as well it stops petting the watchdog, so the node is reset. Meanwhile
//! `status` shows, as this node's doing, the epoch given up and why.
//!
//! A start asks before each step whether the lease is still valid under the start's epoch
//! (`LeaseHold::may_start`), so a start that stalled past its lease begins no further step
//! beside the fence (see [`ResourceGroup::start_checked`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{watch, Mutex, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::lease::{GaveUp, Lease};
use super::Lifetime;
use crate::arbiter::propose::Proposer;
use crate::arbiter::view::cluster_view;
use crate::clock;
use crate::consensus::state::{Command, Request, Response};
use crate::consensus::store::AppliedState;
use crate::consensus::types::{Member, NodeId};
use crate::core::node::{self, NodeAction, NodeInput};
use crate::core::time::Timing;
use crate::core::view::{self, ResourceState, ResourceStatus};
use crate::guard::GuardHandle;
use crate::resources::agent::{self, ActionContext};
use crate::resources::group::{GroupError, GroupResourceStatus, ResourceGroup};
use crate::status::{AgentNote, NodeNotes};

/// Everything the loop reads and drives.
pub struct Reconciler {
    /// This node.
    pub me: NodeId,
    /// This node's name.
    pub name: String,
    /// The members.
    pub members: std::collections::BTreeMap<NodeId, Member>,
    /// Lease and supervision settings.
    pub timing: Timing,
    /// The committed state.
    pub applied: watch::Receiver<Arc<AppliedState>>,
    /// This node's lease.
    pub lease: watch::Receiver<Option<Lease>>,
    /// The last monitor results, in start order.
    pub monitored: watch::Receiver<Vec<ResourceStatus>>,
    /// Asks the monitor for a fresh look now.
    pub monitor_now: Arc<Notify>,
    /// The group.
    pub group: Arc<ResourceGroup>,
    /// Commits `Released` and failure counts.
    pub proposer: Arc<Proposer>,
    /// Where the loop notes what it does, for `status`.
    pub notes: Arc<NodeNotes>,
    /// The guard, when one runs.
    pub guard: Option<Arc<Mutex<GuardHandle>>>,
    /// The epoch this node gave up, if any; the executor sets it, the renewer obeys it.
    pub gave_up: Arc<watch::Sender<Option<GaveUp>>>,
    /// Set when a start step is let go at shutdown; the hand-over reads it.
    pub abandoned: StepAbandoned,
}

/// How long a start or restart step in hand may still run once the agent stops, before it is
/// dropped anyway so the hand-over can stop the group. Steps are bounded by the action timeout
/// already; this bounds the shutdown tighter, and only a step that overran it can complete
/// beside the hand-over's stop (the guard and the watchdog cover that case, as for any hang).
pub const STOPPING_START_GRACE: Duration = Duration::from_secs(20);

/// Set once a start or restart step was let go at shutdown while it may still be running (the
/// grace ran out, or the lease of its epoch ended): a blocking step (a mount in
/// `spawn_blocking`, a DRBD promotion) goes on when its future is dropped, so it may bring a
/// resource up after any stop. From then on this process never trusts an ordered stop to
/// leave the group down: the hand-over fences and never releases (see
/// [`LeaseHold::hand_over`]), and a non-owner's shutdown fences unconditionally.
#[derive(Clone, Debug, Default)]
pub struct StepAbandoned(Arc<AtomicBool>);

impl StepAbandoned {
    /// Records that a step was let go; it stays set for the life of the process.
    pub fn set(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether a step was let go.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// What a clean shutdown does with the group it owns (see [`LeaseHold::hand_over`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandOver {
    /// Stop the group in order and, once stopped, commit `Released`.
    Stop,
    /// Fence the group and do not release (the reason): the other node waits out the lease.
    Fence(String),
}

/// Where the executor commits its records: the agent's [`Proposer`], a stand-in in tests.
#[async_trait]
pub(super) trait Commit: Send + Sync {
    /// Commits `request` through the leader; the state machine's answer, or why not.
    async fn commit(&self, request: Request) -> Result<Response, String>;
}

#[async_trait]
impl Commit for Proposer {
    async fn commit(&self, request: Request) -> Result<Response, String> {
        self.propose(request).await.map_err(|e| e.to_string())
    }
}

/// What one batch of actions came to.
struct Outcome {
    /// The epoch of the batch.
    epoch: u64,
    /// Recoveries in place the batch used (failed starts, restarts).
    recoveries: u32,
}

impl Reconciler {
    /// Runs until the agent stops; actions run as tasks of `lifetime`.
    pub async fn run(self, lifetime: Lifetime) {
        let mut applied = self.applied.clone();
        let mut lease = self.lease.clone();
        let mut monitored = self.monitored.clone();
        let mut running: Option<(JoinHandle<Option<Outcome>>, bool)> = None;
        let mut restarts: (u64, u32) = (0, 0);
        let mut last_reason = String::new();
        let mut disarmed: Option<u64> = None;
        // When this process first saw the current owner epoch committed.
        let mut epoch_seen: (u64, crate::core::time::Millis) = (0, clock::now());
        loop {
            let state = self.applied.borrow().clone();
            let view = cluster_view(&state.state, &self.members);
            let current_lease = *self.lease.borrow();
            let owner_epoch = view.owner.map(|o| o.epoch).unwrap_or(0);
            if restarts.0 != owner_epoch {
                restarts = (owner_epoch, 0);
            }
            if epoch_seen.0 != owner_epoch {
                epoch_seen = (owner_epoch, clock::now());
            }
            let gave_up = self.gave_up.borrow().clone();
            // A lease of a given-up epoch is not trusted a moment longer, though it has not
            // run out: the node decides as one without a lease, so it fences and starts
            // nothing. Distrusting a lease early is always safe; only trusting one too long
            // is not.
            let lease_until = current_lease
                .filter(|l| Some(l.epoch) == view.owner.map(|o| o.epoch))
                .filter(|l| gave_up.as_ref().is_none_or(|g| g.epoch != l.epoch))
                .map(|l| l.until);
            let resources = self.monitored.borrow().clone();
            let now = clock::now();
            let input = NodeInput {
                me: self.me,
                role: view::Role::Management,
                now,
                view: &view,
                timing: &self.timing,
                lease_until,
                resources: &resources,
                executor_busy: running.is_some(),
                restarts_in_place: restarts.1,
            };
            let decision = node::decide(&input);
            let mut text = decision.reason.to_string();
            let due = node::renewal_due(self.me, view::Role::Management, &view).map(|o| o.epoch);
            if let Some(g) = gave_up.filter(|g| Some(g.epoch) == due) {
                text = format!(
                    "gave up epoch {} after a failed action ({}): not renewing the lease, \
                     which the guard enforces at its deadline; the leader moves the group \
                     once it ends. {text}",
                    g.epoch, g.why
                );
            }
            // Log when the kind of decision or the epoch changes, not when only the lease
            // countdown in the sentence moved.
            let key = format!(
                "{:?}/{owner_epoch}/{}",
                decision.code(),
                decision.actions.len()
            );
            if key != last_reason {
                tracing::info!(
                    epoch = owner_epoch,
                    code = ?decision.code(),
                    lease_ms = lease_until.map(|u| now.until(u)),
                    "{text}"
                );
                last_reason = key;
            }
            self.notes.set_agent(AgentNote {
                reason: text,
                lease_epoch: current_lease.map(|l| l.epoch),
                lease_until: current_lease.map(|l| l.until.0),
                resources: resources
                    .iter()
                    .map(|r| (r.name.clone(), r.state.to_string()))
                    .collect(),
            });
            if !decision.actions.is_empty() {
                let fencing = decision
                    .actions
                    .iter()
                    .all(|a| matches!(a, NodeAction::Fence { .. }));
                match &running {
                    None => {
                        running = Some((
                            self.spawn(&lifetime, decision.actions, epoch_seen.1),
                            fencing,
                        ))
                    }
                    Some((task, false)) if fencing => {
                        // Aborting is the intended, fence-fast behaviour: a fence must not
                        // wait for a start or stop that may hang, and the fence itself makes
                        // whatever the aborted action left behind safe.
                        tracing::warn!("fencing pre-empts the running action");
                        task.abort();
                        running =
                            Some((self.spawn(&lifetime, decision.actions, epoch_seen.1), true));
                    }
                    Some(_) => {}
                }
            }
            self.maybe_disarm_guard(&view, &resources, current_lease, &mut disarmed)
                .await;

            let sleep = decision
                .wake_at
                .map(|at| clock::until(at).min(Duration::from_secs(1)))
                .unwrap_or(Duration::from_secs(1));
            tokio::select! {
                _ = lifetime.stop.cancelled() => return,
                changed = applied.changed() => if changed.is_err() { return },
                changed = lease.changed() => if changed.is_err() { return },
                changed = monitored.changed() => if changed.is_err() { return },
                done = async { running.as_mut().map(|(t, _)| t).unwrap().await }, if running.is_some() => {
                    running = None;
                    if let Ok(Some(outcome)) = done {
                        if outcome.epoch == restarts.0 {
                            restarts.1 += outcome.recoveries;
                        }
                    }
                    self.monitor_now.notify_one();
                    // Let the monitor report before deciding again.
                    let _ = tokio::time::timeout(Duration::from_millis(500), monitored.changed()).await;
                }
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    }

    /// Tells the guard this node holds nothing any more, once the group is fully stopped
    /// and this node is not the owner.
    async fn maybe_disarm_guard(
        &self,
        view: &view::ClusterView,
        resources: &[ResourceStatus],
        lease: Option<Lease>,
        disarmed: &mut Option<u64>,
    ) {
        let Some(guard) = &self.guard else { return };
        let Some(lease) = lease else { return };
        let owner_here = node::renewal_due(self.me, view::Role::Management, view).is_some();
        let all_stopped = resources
            .iter()
            .all(|r| matches!(r.state, ResourceState::Stopped));
        if !owner_here && all_stopped && *disarmed != Some(lease.epoch) {
            if let Err(e) = guard.lock().await.disarm(lease.epoch).await {
                tracing::error!(error = %e, "cannot disarm the lease guard");
            } else {
                *disarmed = Some(lease.epoch);
            }
        }
    }

    /// Runs `actions` as a task of `lifetime`, beside the loop.
    fn spawn(
        &self,
        lifetime: &Lifetime,
        actions: Vec<NodeAction>,
        epoch_seen_at: crate::core::time::Millis,
    ) -> JoinHandle<Option<Outcome>> {
        let executor = Executor {
            group: self.group.clone(),
            proposer: self.proposer.clone() as Arc<dyn Commit>,
            me: self.me,
            name: self.name.clone(),
            stop: lifetime.stop.clone(),
            hold: LeaseHold::new(
                self.lease.clone(),
                self.gave_up.clone(),
                self.abandoned.clone(),
            ),
            grace: STOPPING_START_GRACE,
        };
        lifetime.spawn(async move { execute(&executor, actions, epoch_seen_at).await })
    }
}

/// The lease as the executor and the hand-over see it: what a start checks before each step,
/// where a failed stop gives the epoch up, and whether a step was let go at shutdown.
pub struct LeaseHold {
    lease: watch::Receiver<Option<Lease>>,
    gave_up: Arc<watch::Sender<Option<GaveUp>>>,
    abandoned: StepAbandoned,
}

impl LeaseHold {
    /// The lease as published by the renewer, the given-up epoch and the abandoned-step flag.
    pub fn new(
        lease: watch::Receiver<Option<Lease>>,
        gave_up: Arc<watch::Sender<Option<GaveUp>>>,
        abandoned: StepAbandoned,
    ) -> LeaseHold {
        LeaseHold {
            lease,
            gave_up,
            abandoned,
        }
    }

    /// Whether a start or restart step was let go at shutdown (see [`StepAbandoned`]).
    pub fn step_abandoned(&self) -> bool {
        self.abandoned.is_set()
    }

    /// What a clean shutdown may do with the group of `epoch` right now.
    ///
    /// Safety: `Released` lets the leader grant the other node at once, with no lease wait, so
    /// it is only for a node that (a) still holds a running lease of `epoch`, not refused
    /// (the renewer drops a refused lease), nor given up, and (b) let no step go that may
    /// still bring a resource up after the stop. Without (a) the leader may already have
    /// granted the other node (it waits `lease·(1+ρ) + fence_margin` after the last grant it
    /// counted, and our `until` is never later than that lease, see `LeaseHold::may_start`):
    /// this node's applied view, still saying "owner", is stale, and only a fence, which
    /// takes things down and commits nothing, is safe. Without (b) a stop that succeeds proves
    /// nothing. Asked before the ordered stop and again before `Released`.
    pub fn hand_over(&self, epoch: u64) -> HandOver {
        if self.abandoned.is_set() {
            return HandOver::Fence(
                "a start step was let go at shutdown and may still bring a resource up".into(),
            );
        }
        match self.may_start(epoch) {
            Ok(()) => HandOver::Stop,
            Err(why) => HandOver::Fence(why),
        }
    }

    /// Resolves once this node no longer holds a running lease of `epoch` (it ran out, was
    /// refused, is of another epoch or the epoch was given up), with the reason.
    ///
    /// The lease is looked at every 50 ms at most and at its `until`, so this resolves at
    /// most 50 ms after the lease ends on this process's clock; the leader's wait adds the
    /// fence margin (at least the guard's minimum, far above 50 ms) after that, so what the
    /// caller does then (a fence) begins before the other node can be granted.
    pub async fn lease_ended(&self, epoch: u64) -> String {
        loop {
            if let Err(why) = self.may_start(epoch) {
                return why;
            }
            let left = self
                .lease
                .borrow()
                .map(|l| clock::until(l.until))
                .unwrap_or_default();
            tokio::time::sleep(left.min(Duration::from_millis(50))).await;
        }
    }

    /// Whether a start step under `epoch` may begin now: this node holds a lease of that
    /// epoch, it has not run out, and the epoch was not given up.
    ///
    /// `until` is on this process's clock ([`clock::now`]) and was computed from a `t0` taken
    /// before the renewal was asked (see [`super::lease`]), so it never ends later than the
    /// lease the leader counts; the guard is armed with the same deadline. A step that passes
    /// this check therefore begins before the guard or the decision loop can have fenced.
    fn may_start(&self, epoch: u64) -> Result<(), String> {
        if self
            .gave_up
            .borrow()
            .as_ref()
            .is_some_and(|g| g.epoch == epoch)
        {
            return Err(format!("this node gave up epoch {epoch}"));
        }
        let now = clock::now();
        match *self.lease.borrow() {
            None => Err(format!("no lease held for epoch {epoch}")),
            Some(lease) if lease.epoch != epoch => Err(format!(
                "the lease held is of epoch {}, not {epoch}",
                lease.epoch
            )),
            Some(lease) if now < lease.until => Ok(()),
            Some(lease) => Err(format!(
                "the lease of epoch {epoch} ended {} ms ago",
                lease.until.until(now)
            )),
        }
    }

    /// Gives up `epoch` (`why` says what failed): no renewal is asked for it from now on.
    /// Returns false when it was given up already.
    fn give_up(&self, epoch: u64, why: &str) -> bool {
        self.gave_up.send_if_modified(|current| {
            if current.as_ref().is_some_and(|g| g.epoch >= epoch) {
                return false;
            }
            *current = Some(GaveUp {
                epoch,
                why: why.to_string(),
            });
            true
        })
    }
}

/// What one batch of actions runs with.
struct Executor {
    group: Arc<ResourceGroup>,
    proposer: Arc<dyn Commit>,
    me: NodeId,
    name: String,
    /// The agent's stop token: see the module's note on shutdown.
    stop: CancellationToken,
    hold: LeaseHold,
    /// How long a start step may still run after the stop ([`STOPPING_START_GRACE`]).
    grace: Duration,
}

/// Carries out `actions` in order, stopping at the first that fails or, for any action but
/// a fence, once the agent's stop token is cancelled: see the module's note on shutdown. A failure that asks for
/// fencing gives the epoch up and fences first ([`Executor::escalate`]).
async fn execute(
    executor: &Executor,
    actions: Vec<NodeAction>,
    epoch_seen_at: crate::core::time::Millis,
) -> Outcome {
    let (group, proposer, me, name, stop) = (
        executor.group.as_ref(),
        executor.proposer.as_ref(),
        executor.me,
        executor.name.as_str(),
        &executor.stop,
    );
    let mut outcome = Outcome {
        epoch: 0,
        recoveries: 0,
    };
    for action in actions {
        // A fence still runs at shutdown: see the module's note.
        if stop.is_cancelled() && !matches!(action, NodeAction::Fence { .. }) {
            tracing::info!(action = ?action, "shutting down: not starting the next action");
            break;
        }
        let epoch = action_epoch(&action);
        outcome.epoch = epoch;
        let ctx = ActionContext {
            epoch,
            node: name.to_string(),
        };
        // Asked before each start step: the lease (see `LeaseHold::may_start`), and whether
        // the agent stops, so a start ends between two steps at shutdown, never within one.
        let may_start = || {
            if stop.is_cancelled() {
                return Err("the agent is shutting down".to_string());
            }
            executor.hold.may_start(epoch)
        };
        // Whether the failure asks for this node to be fenced (a stop that failed).
        let mut fence_me = false;
        let result: Result<(), String> = match &action {
            NodeAction::StartGroup { .. } => {
                let start = group.start_checked(&ctx, &may_start);
                match finish_step(executor, epoch, start).await {
                    None => {
                        executor.fence_let_go(&ctx).await;
                        break;
                    }
                    Some(Ok(phases)) => {
                        let since_grant_ms = clock::now().since(epoch_seen_at);
                        let phases = phases
                            .into_iter()
                            .map(|(n, d)| (n, u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
                            .collect();
                        let record = Command::RecordStarted {
                            node: me,
                            epoch,
                            phases,
                            since_grant_ms,
                        };
                        if let Err(e) = propose(proposer, me, name, record, "the group is up").await
                        {
                            tracing::warn!(error = %e, "could not record the start in the history");
                        }
                        Ok(())
                    }
                    Some(Err(e)) => {
                        // A passing problem (a peer that still holds DRBD Primary) is
                        // retried here without using up a recovery: moving the group would
                        // not help. Nor does a start the lease check ended count: the
                        // resources did not fail.
                        if e.recovery() != Some(agent::Recovery::Retry)
                            && !matches!(e, GroupError::StartInterrupted { .. })
                        {
                            outcome.recoveries += 1;
                        }
                        fence_me = e.recovery() == Some(agent::Recovery::Fence);
                        Err(e.to_string())
                    }
                }
            }
            NodeAction::StopGroup { .. } => group.stop(&ctx).await.map_err(|e| {
                fence_me = e.recovery() == Some(agent::Recovery::Fence);
                e.to_string()
            }),
            // A fence that fails is already the last step the agent has: the guard and
            // the watchdog take it from there.
            NodeAction::Fence { .. } => group.fence(&ctx).await.map_err(|e| e.to_string()),
            NodeAction::RestartResource { name: resource, .. } => {
                outcome.recoveries += 1;
                let restart = group.restart_from_checked(resource, &ctx, &may_start);
                match finish_step(executor, epoch, restart).await {
                    None => {
                        executor.fence_let_go(&ctx).await;
                        break;
                    }
                    Some(restarted) => restarted.map_err(|e| {
                        fence_me = e.recovery() == Some(agent::Recovery::Fence);
                        e.to_string()
                    }),
                }
            }
            NodeAction::CommitReleased { .. } => {
                propose(
                    proposer,
                    me,
                    name,
                    Command::Release { node: me, epoch },
                    "the group is stopped in order",
                )
                .await
            }
            NodeAction::RecordFailure { .. } => {
                propose(
                    proposer,
                    me,
                    name,
                    Command::RecordFailure { node: me, epoch },
                    "the group could not be kept running here",
                )
                .await
            }
        };
        match result {
            Ok(()) => tracing::info!(epoch, action = ?action, "done"),
            Err(error) => {
                tracing::error!(epoch, action = ?action, %error, "action failed");
                if fence_me {
                    executor.escalate(&ctx, &error).await;
                }
                break;
            }
        }
    }
    outcome
}

impl Executor {
    /// After a start step was let go at shutdown ([`finish_step`]): fence the group, which
    /// only takes things down and so is safe whoever owns it now.
    async fn fence_let_go(&self, ctx: &ActionContext) {
        if let Err(e) = self.group.fence(ctx).await {
            tracing::error!(
                epoch = ctx.epoch,
                error = %e,
                "the fence after a step let go failed; the guard fences at the lease deadline"
            );
        }
    }

    /// An action under `ctx.epoch` failed asking for a fence (`why`): give the epoch up, so
    /// no renewal is asked for it any more, then fence the group at once.
    ///
    /// Giving up comes first: the fence may take up to the action timeout per resource, and
    /// the lease must be running out meanwhile, not renewed. Not releasing is deliberate: a
    /// release lets the leader grant at once, with no lease wait, which only a stop that
    /// succeeded may allow. Here the other node gets the group once the lease has ended, by
    /// when either this fence or, failing it, the guard has fenced (and failing that too, the
    /// watchdog resets the node).
    async fn escalate(&self, ctx: &ActionContext, why: &str) {
        if self.hold.give_up(ctx.epoch, why) {
            tracing::error!(
                epoch = ctx.epoch,
                reason = %why,
                "giving up the epoch: no more lease renewals; fencing the group"
            );
        }
        match self.group.fence(ctx).await {
            Ok(()) => tracing::warn!(
                epoch = ctx.epoch,
                "group fenced after the failure; the lease runs out and the leader moves the group"
            ),
            Err(e) => tracing::error!(
                epoch = ctx.epoch,
                error = %e,
                "the fence failed too: the guard fences at the lease deadline and, if that \
                 fails as well, stops petting the watchdog so the node is reset"
            ),
        }
    }
}

/// Runs a start or a restart of `epoch` to its end. Once the agent stops, the start's check
/// ends it before its next step and the step in hand is waited for, but no longer than the
/// executor's grace ([`STOPPING_START_GRACE`]) and no longer than this node holds a running
/// lease of `epoch`. Past either it is let go (`None`): the [`StepAbandoned`] flag is set and
/// the caller fences.
///
/// Safety: while the agent runs, the decision loop fences when the lease ends, pre-empting
/// the start; at shutdown that loop is gone, so this wait is what keeps the lease in force. A
/// step still running when the lease ends may complete later (nothing can stop a blocking
/// step), and the leader may grant the other node `fence_margin` after that: so the flag
/// forbids the hand-over to release, and the fence (the guard, in production) takes down
/// whatever the step has brought up so far.
async fn finish_step<T>(
    executor: &Executor,
    epoch: u64,
    step: impl std::future::Future<Output = T>,
) -> Option<T> {
    let stop = &executor.stop;
    let overran = async {
        stop.cancelled().await;
        tokio::time::sleep(executor.grace).await;
        format!("it did not end within {:?}", executor.grace)
    };
    let lease_ended = async {
        stop.cancelled().await;
        executor.hold.lease_ended(epoch).await
    };
    let why = tokio::select! {
        done = step => return Some(done),
        why = overran => why,
        why = lease_ended => why,
    };
    executor.hold.abandoned.set();
    tracing::warn!(
        epoch,
        reason = %why,
        "shutting down: the start step in hand is let go ({why}); fencing, and the hand-over \
         will not release"
    );
    None
}

/// Commits `command` as this node's request; a refusal by the state machine is an error.
pub(super) async fn propose(
    proposer: &dyn Commit,
    me: NodeId,
    name: &str,
    command: Command,
    reason: &str,
) -> Result<(), String> {
    let request = Request {
        command,
        requested_by: format!("node {name} ({me})"),
        reason: reason.to_string(),
        at_unix_ms: clock::wall_ms(),
    };
    match proposer.commit(request).await {
        Ok(response) => match response.refused {
            None => Ok(()),
            Some(why) => Err(format!("refused: {why}")),
        },
        Err(e) => Err(e),
    }
}

fn action_epoch(action: &NodeAction) -> u64 {
    match action {
        NodeAction::StartGroup { epoch }
        | NodeAction::StopGroup { epoch }
        | NodeAction::Fence { epoch }
        | NodeAction::RestartResource { epoch, .. }
        | NodeAction::CommitReleased { epoch }
        | NodeAction::RecordFailure { epoch } => *epoch,
    }
}

/// The core's picture of one monitor result.
pub fn core_status(status: &GroupResourceStatus) -> ResourceStatus {
    ResourceStatus {
        name: status.resource.clone(),
        state: status.state.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::agent::{AgentError, ResourceAgent};
    use crate::resources::dummy::{DummyAgent, DummyConfig};
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Commits every request (the executor's records are not what these tests look at).
    struct Accepts;

    #[async_trait]
    impl Commit for Accepts {
        async fn commit(&self, _request: Request) -> Result<Response, String> {
            Ok(Response::default())
        }
    }

    /// An executor over `group` with a lease of epoch `epoch` good for a minute.
    fn executor(group: Arc<ResourceGroup>, epoch: u64) -> Executor {
        let (_, lease) = watch::channel(Some(Lease {
            epoch,
            until: clock::now().plus(60_000),
        }));
        let (gave_up, _) = watch::channel(None);
        Executor {
            group,
            proposer: Arc::new(Accepts),
            me: 1,
            name: "node1".into(),
            stop: CancellationToken::new(),
            hold: LeaseHold::new(lease, Arc::new(gave_up), StepAbandoned::default()),
            grace: STOPPING_START_GRACE,
        }
    }

    fn dummy_group(dir: &Path) -> (Arc<ResourceGroup>, PathBuf) {
        let state_file = dir.join("db.state");
        let dummy = DummyAgent::new(
            "db",
            DummyConfig {
                state_file: state_file.clone(),
                ledger_file: dir.join("ledger"),
                ..DummyConfig::default()
            },
        );
        let group = ResourceGroup::new("group", vec![Arc::new(dummy)], dir).expect("group");
        (Arc::new(group), state_file)
    }

    #[tokio::test]
    async fn a_fence_decided_during_shutdown_still_runs() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (group, state_file) = dummy_group(dir.path());
        let ctx = ActionContext {
            epoch: 3,
            node: "node1".into(),
        };
        group.start(&ctx).await.expect("the dummy starts");
        assert!(state_file.exists());
        let executor = executor(group, 3);
        executor.stop.cancel();
        execute(
            &executor,
            vec![NodeAction::Fence { epoch: 3 }],
            clock::now(),
        )
        .await;
        assert!(
            !state_file.exists(),
            "a fence decided at shutdown was skipped: the group still holds its resource"
        );
    }

    /// A resource whose start is one blocking step that no dropped future can stop: it
    /// sleeps, then creates its marker.
    struct BlockingStart {
        marker: PathBuf,
        began: Arc<tokio::sync::Notify>,
        step_ended: Arc<AtomicBool>,
        /// How long the blocking step takes.
        step_ms: u64,
    }

    #[async_trait]
    impl ResourceAgent for BlockingStart {
        fn name(&self) -> &str {
            "mount"
        }

        fn kind(&self) -> &'static str {
            "test"
        }

        fn validate(&self) -> Vec<String> {
            Vec::new()
        }

        async fn start(&self, _ctx: &ActionContext) -> Result<(), AgentError> {
            self.began.notify_one();
            let (marker, ended) = (self.marker.clone(), self.step_ended.clone());
            let step_ms = self.step_ms;
            tokio::task::spawn_blocking(move || {
                std::thread::sleep(Duration::from_millis(step_ms));
                std::fs::write(&marker, b"mounted").expect("write the marker");
                ended.store(true, Ordering::SeqCst);
            })
            .await
            .expect("the blocking step");
            Ok(())
        }

        async fn stop(&self, _ctx: &ActionContext) -> Result<(), AgentError> {
            match std::fs::remove_file(&self.marker) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(AgentError::new(
                    "mount",
                    agent::Recovery::Fence,
                    e.to_string(),
                )),
                _ => Ok(()),
            }
        }

        async fn monitor(&self) -> ResourceState {
            if self.marker.exists() {
                ResourceState::Running
            } else {
                ResourceState::Stopped
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_shutdown_during_a_start_step_waits_for_it_before_the_hand_over_stops() {
        let dir = tempfile::tempdir().expect("temp dir");
        let marker = dir.path().join("mounted");
        let began = Arc::new(tokio::sync::Notify::new());
        let step_ended = Arc::new(AtomicBool::new(false));
        let resource = BlockingStart {
            marker: marker.clone(),
            began: began.clone(),
            step_ended: step_ended.clone(),
            step_ms: 300,
        };
        let group = Arc::new(
            ResourceGroup::new("group", vec![Arc::new(resource)], dir.path()).expect("group"),
        );
        let executor = Arc::new(executor(group.clone(), 5));
        let began_wait = began.notified();
        let running = tokio::spawn({
            let executor = executor.clone();
            async move {
                execute(
                    &executor,
                    vec![NodeAction::StartGroup { epoch: 5 }],
                    clock::now(),
                )
                .await
            }
        });
        began_wait.await;
        // The agent shuts down while the blocking step is in hand; the executor's task ends,
        // then the hand-over stops the group in order (and would commit `Released`).
        tokio::time::sleep(Duration::from_millis(50)).await;
        executor.stop.cancel();
        running.await.expect("the executor task");
        let ctx = ActionContext {
            epoch: 5,
            node: "node1".into(),
        };
        group.stop(&ctx).await.expect("the hand-over's stop");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !step_ended.load(Ordering::SeqCst) {
            assert!(std::time::Instant::now() < deadline, "the step never ended");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            !marker.exists(),
            "the start's step completed after the hand-over's stop: its resource is up after Released"
        );
    }

    /// A group of one [`BlockingStart`] whose step takes `step_ms`, with its marker, its
    /// "began" signal and its "step ended" flag.
    fn blocking_group(
        dir: &Path,
        step_ms: u64,
    ) -> (
        Arc<ResourceGroup>,
        PathBuf,
        Arc<tokio::sync::Notify>,
        Arc<AtomicBool>,
    ) {
        let marker = dir.join("mounted");
        let began = Arc::new(tokio::sync::Notify::new());
        let step_ended = Arc::new(AtomicBool::new(false));
        let resource = BlockingStart {
            marker: marker.clone(),
            began: began.clone(),
            step_ended: step_ended.clone(),
            step_ms,
        };
        let group =
            Arc::new(ResourceGroup::new("group", vec![Arc::new(resource)], dir).expect("group"));
        (group, marker, began, step_ended)
    }

    /// Runs a start of epoch 5 on `executor` until its blocking step began, then stops the
    /// agent; returns once the executor's task has ended.
    async fn shut_down_during_the_step(executor: Arc<Executor>, began: &tokio::sync::Notify) {
        let began_wait = began.notified();
        let running = tokio::spawn({
            let executor = executor.clone();
            async move {
                execute(
                    &executor,
                    vec![NodeAction::StartGroup { epoch: 5 }],
                    clock::now(),
                )
                .await
            }
        });
        began_wait.await;
        executor.stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), running)
            .await
            .expect("the executor lets the step go")
            .expect("the executor task");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_step_let_go_after_the_grace_forbids_the_release() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (group, _marker, began, step_ended) = blocking_group(dir.path(), 1_000);
        let mut executor = executor(group, 5);
        executor.grace = Duration::from_millis(50);
        let executor = Arc::new(executor);
        shut_down_during_the_step(executor.clone(), &began).await;
        assert!(
            !step_ended.load(Ordering::SeqCst),
            "the grace did not fire: the step ended first"
        );
        // The lease is still good for a minute: only the step let go forbids the release.
        assert_eq!(executor.hold.may_start(5), Ok(()));
        assert!(executor.hold.step_abandoned());
        assert!(
            matches!(executor.hold.hand_over(5), HandOver::Fence(_)),
            "a step let go may still bring a resource up after the stop, yet the hand-over \
             would release"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_step_in_hand_at_shutdown_is_let_go_when_its_lease_ends() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (group, _marker, began, step_ended) = blocking_group(dir.path(), 1_000);
        let mut executor = executor(group, 5);
        let (lease_tx, lease) = watch::channel(Some(Lease {
            epoch: 5,
            until: clock::now().plus(60_000),
        }));
        executor.hold.lease = lease;
        let executor = Arc::new(executor);
        let waited = std::time::Instant::now();
        let shutting = tokio::spawn({
            let executor = executor.clone();
            let began = began.clone();
            async move { shut_down_during_the_step(executor, &began).await }
        });
        // A renewal refused while the step is in hand: the lease is gone.
        eventually_true(|| executor.stop.is_cancelled()).await;
        lease_tx.send_replace(None);
        shutting.await.expect("the shutdown task");
        assert!(
            waited.elapsed() < Duration::from_millis(900),
            "the executor waited for the step beyond the lease"
        );
        assert!(executor.hold.step_abandoned());
        assert!(
            !step_ended.load(Ordering::SeqCst),
            "the step ended before the lease did"
        );
        assert!(matches!(executor.hold.hand_over(5), HandOver::Fence(_)));
    }

    /// Polls `check` every 5 ms for up to 5 s.
    async fn eventually_true(check: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !check() {
            assert!(std::time::Instant::now() < deadline, "condition never held");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn hold(lease: Option<Lease>) -> (watch::Sender<Option<Lease>>, LeaseHold) {
        let (lease_tx, lease) = watch::channel(lease);
        let (gave_up, _) = watch::channel(None);
        let hold = LeaseHold::new(lease, Arc::new(gave_up), StepAbandoned::default());
        (lease_tx, hold)
    }

    #[test]
    fn a_start_step_needs_a_running_lease_of_its_own_epoch() {
        let now = clock::now();
        let (lease, hold) = hold(None);
        assert!(hold.may_start(4).unwrap_err().contains("no lease"));
        lease.send_replace(Some(Lease {
            epoch: 4,
            until: now.plus(60_000),
        }));
        assert_eq!(hold.may_start(4), Ok(()));
        let other = hold.may_start(5).unwrap_err();
        assert!(other.contains("epoch 4, not 5"), "{other}");
        lease.send_replace(Some(Lease {
            epoch: 4,
            until: now,
        }));
        let ended = hold.may_start(4).unwrap_err();
        assert!(ended.contains("ended"), "{ended}");
    }

    #[test]
    fn a_given_up_epoch_starts_nothing_and_is_given_up_once() {
        let (_lease, hold) = hold(Some(Lease {
            epoch: 4,
            until: clock::now().plus(60_000),
        }));
        assert!(hold.give_up(4, "stop failed at db"));
        assert!(!hold.give_up(4, "stop failed again"), "already given up");
        assert!(!hold.give_up(3, "an older epoch"), "never goes back");
        let refused = hold.may_start(4).unwrap_err();
        assert!(refused.contains("gave up epoch 4"), "{refused}");
        assert_eq!(
            hold.gave_up.borrow().clone(),
            Some(GaveUp {
                epoch: 4,
                why: "stop failed at db".into()
            })
        );
    }
}

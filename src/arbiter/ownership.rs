//! The leader's side of ownership: answering lease renewals and moving ownership.
//!
//! Every arbiter runs this (the witness too, since any member may lead); it acts only while
//! its node is the Raft leader. It keeps, for the current term only, when this node became
//! leader, the leases it granted and when it last heard from each management node. Each
//! cycle it hands those to [`crate::core::leader::decide`] and carries out the decision:
//! commit a `GrantOwnership` (compare-and-set on the epoch), or run the fencing hook.
//!
//! A new leader decides nothing until it has applied an entry of its own term (before that,
//! its applied state may lag behind the committed one). A grant's claim on the epoch it
//! replaces is kept until the grant's outcome is known (see `Ownership::grant`).
//!
//! A renewal is granted only after `ensure_linearizable` (a quorum round that starts after
//! the request arrived) and only if the committed owner is the asker under that epoch.
//!
//! On entering a term it asks every member when it last took part in a round of an earlier
//! term ([`super::horizon`]); once a majority (itself included) answered, the latest answer
//! bounds every lease granted before this term. With `lease.old_lease_bound = "election"` it
//! does not ask, and only the election bounds them.
//!
//! The fencing hook runs through the node's [`CommandRunner`] like every other external
//! command. The loop, the horizon questions and the hook run on the arbiter's task tracker and
//! end after the step in hand when the arbiter stops (see [`Running`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::ServerState;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::horizon::Horizon;
use super::view::cluster_view;
use crate::clock;
use crate::command::{CommandRunner, RunError};
use crate::config::{Config, FenceHookConfig, OldLeaseBound};
use crate::consensus::state::{Command, Request};
use crate::consensus::store::AppliedState;
use crate::consensus::types::{LogId, Member, NodeId, Raft};
use crate::core::leader::{self, LeaderAction, LeaderInput};
use crate::core::time::{Millis, Timing};
use crate::core::view::{self, FenceHook, PeerHealth};
use crate::rpc::peer::client::{ClientOptions, PeerClient, PeerClients};
use crate::rpc::peer::{Identity, ReportError};

/// What this leader knows that is not in the replicated state. Reset on every new term.
#[derive(Debug, Default)]
struct LeaderBook {
    /// The term this book belongs to and when this node saw itself lead it.
    term: Option<(u64, Millis)>,
    granted_until: BTreeMap<NodeId, Millis>,
    peers: BTreeMap<NodeId, PeerHealth>,
    /// The owner and epoch last seen committed, and since when.
    owner_seen: Option<(Option<view::Owner>, Millis)>,
    fence_hook: FenceHook,
    /// Whether the members were asked about earlier-term rounds in this term.
    horizon_asked: bool,
    /// Their answers, mapped onto this node's clock.
    horizon_answers: BTreeMap<NodeId, Millis>,
    /// The latest answer, once a majority answered.
    earlier_rounds: Option<Millis>,
    /// The epoch a grant is being committed to replace: its renewals are refused until the
    /// grant's outcome is known (see [`LeaderBook::claim_move`] and [`Ownership::grant`]).
    moving: Option<u64>,
}

/// The leader-side ownership service of one arbiter.
pub struct Ownership {
    raft: Raft,
    node_id: NodeId,
    members: BTreeMap<NodeId, Member>,
    timing: Timing,
    renew_interval: Duration,
    applied: watch::Receiver<Arc<AppliedState>>,
    fence_hook: Option<FenceHookConfig>,
    book: Mutex<LeaderBook>,
    wake: Notify,
    reason: Mutex<Option<String>>,
    horizon: Arc<Horizon>,
    /// Whether to ask the members for their horizon (`lease.old_lease_bound = "horizon"`).
    ask_members: bool,
    clients: PeerClients,
    running: Running,
}

/// What the ownership service runs with: the runner for the fencing hook, and the arbiter's
/// stop signal and task tracker for the tasks it starts.
#[derive(Clone)]
pub struct Running {
    /// Runs the fencing hook.
    pub commands: Arc<dyn CommandRunner>,
    /// Cancelled when the arbiter stops: the loop and the horizon questions end after the
    /// step in hand, and no new fencing hook starts.
    pub stop: CancellationToken,
    /// Where the loop's own tasks (horizon questions, fencing hooks) are tracked.
    pub tasks: TaskTracker,
}

impl Ownership {
    /// The ownership service for the node `config` describes. It notes its grants in
    /// `horizon`, asks the members (as `identity`, with `client_options`) for theirs, and runs
    /// its tasks and the fencing hook as `running` says.
    pub fn new(
        config: &Config,
        raft: Raft,
        applied: watch::Receiver<Arc<AppliedState>>,
        horizon: Arc<Horizon>,
        identity: Arc<Identity>,
        client_options: ClientOptions,
        running: Running,
    ) -> Arc<Ownership> {
        Arc::new(Ownership {
            raft,
            node_id: config.node_id,
            members: config.membership(),
            timing: config.timing(),
            renew_interval: Duration::from_millis(config.lease.renew_interval_ms),
            applied,
            fence_hook: config.fence_hook.clone(),
            book: Mutex::new(LeaderBook::default()),
            wake: Notify::new(),
            reason: Mutex::new(None),
            horizon,
            ask_members: config.lease.old_lease_bound == OldLeaseBound::Horizon,
            clients: PeerClients::new(identity, config.membership(), client_options),
            running,
        })
    }

    /// The leader's latest decision, as a sentence, while this node leads.
    pub fn reason(&self) -> Option<String> {
        self.reason.lock().ok().and_then(|r| r.clone())
    }

    /// Milliseconds left on the lease this leader granted `node`, if any.
    pub fn granted_remaining_ms(&self, node: NodeId) -> Option<u64> {
        let book = self.book.lock().ok()?;
        let until = book.granted_until.get(&node)?;
        Some(clock::now().until(*until))
    }

    /// Handles a management node's report; for the owner, renews its lease. Returns `Ok(true)`
    /// when a lease was granted, `Ok(false)` when none was asked for, and the reason when the
    /// renewal was refused.
    pub async fn report(
        &self,
        from: NodeId,
        renew_epoch: u64,
        healthy: bool,
    ) -> Result<bool, ReportError> {
        let term = self.current_leader_term().map_err(ReportError::Undecided)?;
        self.note_heard(term, from, healthy);
        if renew_epoch == 0 {
            return Ok(false);
        }
        // This node takes part in a round of `term` after the asker's t0. Noted before the
        // round: if a new leader's horizon question got here first, this node had already
        // left `term` and the round below fails.
        self.horizon.note(term);
        // A quorum round that starts now: if it succeeds, a quorum acknowledged this leader
        // after the owner took its t0, and no other leader can have been elected since.
        let timeout = Duration::from_millis(self.timing.lease_ms / 2);
        match tokio::time::timeout(timeout, self.raft.ensure_linearizable()).await {
            Err(_) => {
                return Err(ReportError::Undecided(
                    "the leader could not confirm a quorum in time".into(),
                ))
            }
            Ok(Err(e)) => {
                return Err(ReportError::Undecided(format!(
                    "the leader could not confirm a quorum: {e}"
                )))
            }
            Ok(Ok(_)) => {}
        }
        // Decide and record under the book's lock, reading the applied state there too: a
        // grant that replaces this owner claims the book before it writes and releases it
        // only once the grant's outcome is known (see `Ownership::grant`), so a renewal
        // either lands before the claim (and the grant backs off) or sees the claim or the
        // new owner (and is refused).
        let now = clock::now_ceiling();
        let mut book = self
            .book
            .lock()
            .map_err(|_| ReportError::Undecided("leader book poisoned".into()))?;
        if book.term.map(|(t, _)| t) != Some(term) {
            return Err(ReportError::Undecided(
                "leadership changed during the renewal".into(),
            ));
        }
        if book.moving == Some(renew_epoch) {
            return Err(ReportError::Undecided(format!(
                "the leader is committing a new owner to replace epoch {renew_epoch}"
            )));
        }
        let state = self.applied.borrow().clone();
        let view = cluster_view(&state.state, &self.members);
        match leader::answer_renewal(&view, &self.timing, now, from, renew_epoch) {
            Ok(until) => {
                let entry = book.granted_until.entry(from).or_insert(until);
                *entry = (*entry).max(until);
                Ok(true)
            }
            Err(refusal) => Err(ReportError::Refused(refusal.to_string())),
        }
    }

    fn current_leader_term(&self) -> Result<u64, String> {
        let metrics = self.raft.metrics().borrow().clone();
        if metrics.state != ServerState::Leader {
            let leader = metrics
                .current_leader
                .and_then(|id| self.members.get(&id))
                .map(|m| m.name.clone())
                .unwrap_or_else(|| "unknown".into());
            return Err(format!("not the leader (the leader is {leader})"));
        }
        Ok(metrics.current_term)
    }

    fn note_heard(&self, term: u64, from: NodeId, healthy: bool) {
        let now = clock::now();
        if let Ok(mut book) = self.book.lock() {
            book.enter_term(term, now, self.fence_hook.is_some());
            book.peers.insert(
                from,
                PeerHealth {
                    last_heard: Some(now),
                    can_run_group: healthy,
                },
            );
        }
    }

    /// Runs the leader loop until the arbiter stops (then it ends after the cycle in hand).
    pub async fn run(self: Arc<Self>) {
        let mut metrics = self.raft.metrics();
        let mut applied = self.applied.clone();
        let mut last_reason = String::new();
        loop {
            let wake_at = self.cycle(&mut last_reason).await;
            let sleep = match wake_at {
                Some(at) => clock::until(at).min(self.renew_interval),
                None => self.renew_interval,
            };
            tokio::select! {
                _ = self.running.stop.cancelled() => return,
                changed = metrics.changed() => if changed.is_err() { return },
                changed = applied.changed() => if changed.is_err() { return },
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    }

    /// One observe-decide-act cycle; returns when to decide again at the latest.
    async fn cycle(self: &Arc<Self>, last_reason: &mut String) -> Option<Millis> {
        let metrics = self.raft.metrics().borrow().clone();
        if metrics.state != ServerState::Leader {
            if let Ok(mut book) = self.book.lock() {
                *book = LeaderBook::default();
            }
            if let Ok(mut reason) = self.reason.lock() {
                *reason = None;
            }
            last_reason.clear();
            return None;
        }
        let now = clock::now();
        let state = self.applied.borrow().clone();
        let view = cluster_view(&state.state, &self.members);
        let (decision, elected_at, owner_grant_seen) = {
            let Ok(mut book) = self.book.lock() else {
                return None;
            };
            book.enter_term(metrics.current_term, now, self.fence_hook.is_some());
            if self.ask_members && !book.horizon_asked {
                book.horizon_asked = true;
                self.ask_horizon(metrics.current_term);
            }
            let elected_at = book.term.map(|(_, at)| at).unwrap_or(now);
            match book.owner_seen {
                Some((owner, _)) if owner == view.owner => {}
                _ => {
                    book.owner_seen = Some((view.owner, now));
                    if self.fence_hook.is_some() {
                        book.fence_hook = FenceHook::Idle;
                    }
                }
            }
            let owner_since = book.owner_seen.map(|(_, at)| at).unwrap_or(now);
            let input = LeaderInput {
                view: &view,
                own_entry_applied: applied_own_entry(metrics.current_term, state.last_applied),
                timing: &self.timing,
                now,
                elected_at,
                owner_since,
                earlier_rounds: book.earlier_rounds,
                granted_until: &book.granted_until,
                peers: &book.peers,
                fence_hook: &book.fence_hook,
            };
            let owner_grant_seen = view
                .owner
                .and_then(|owner| book.granted_until.get(&owner.node).copied());
            (leader::decide(&input), elected_at, owner_grant_seen)
        };
        let text = decision.reason.to_string();
        let key = format!(
            "{:?}/{:?}/{}",
            decision.code(),
            view.owner,
            decision.actions.len()
        );
        if key != *last_reason {
            tracing::info!(
                term = metrics.current_term,
                elected_ms_ago = now.since(elected_at),
                owner = ?view.owner,
                code = ?decision.code(),
                "leader: {text}"
            );
            *last_reason = key;
        }
        if let Ok(mut reason) = self.reason.lock() {
            *reason = Some(text);
        }
        for action in decision.actions {
            match action {
                LeaderAction::GrantOwnership { node, replaces } => {
                    let claim = Claim {
                        term: metrics.current_term,
                        replaces,
                        grant_seen: owner_grant_seen,
                    };
                    self.grant(node, claim, &decision.reason.to_string()).await;
                }
                LeaderAction::RunFenceHook { node, epoch } => {
                    self.start_fence_hook(node, epoch);
                }
            }
        }
        decision.wake_at
    }

    /// Claims the move, writes the grant, and keeps the claim until the grant's outcome is
    /// known.
    ///
    /// Safety: while the claim holds, renewals of the replaced epoch are refused. Releasing
    /// it while the grant's entry can still commit would let the old owner renew on the
    /// pre-grant state and then hold a fresh lease while the new owner starts. So the claim
    /// is released only when
    /// - the entry was applied: its [`crate::consensus::state::Response`] came back, granted
    ///   (the applied owner is no longer the replaced epoch, and `answer_renewal` refuses it)
    ///   or refused (the owner stays, and may renew again);
    /// - or the write failed: this node stopped leading, or its entry was truncated from the
    ///   log (openraft answers `ForwardToLeader`). A later leader, this node included in a
    ///   later term, renews only after `ensure_linearizable`, that is after applying its own
    ///   first entry, which comes after this grant's entry if that ever commits; and while
    ///   its metrics still show it leading the lost term, `ensure_linearizable` fails there;
    /// - or the term of the claim is over (the book is reset), for the same reason.
    ///
    /// A write that is not answered within a lease is logged and followed in the background
    /// until it ends (the claim kept meanwhile); no second grant is claimed in this term
    /// until then.
    async fn grant(self: &Arc<Self>, node: NodeId, claim: Claim, reason: &str) {
        let claimed = match self.book.lock() {
            Ok(mut book) => book.claim_move(&claim),
            Err(_) => Err("leader book poisoned".to_string()),
        };
        if let Err(why) = claimed {
            tracing::info!(node, why, "grant not proposed");
            return;
        }
        let expected = claim.replaces.map(|o| o.epoch);
        let request = self.grant_request(node, expected, reason);
        let raft = self.raft.clone();
        let write = async move { raft.client_write(request).await };
        let patience = Duration::from_millis(self.timing.lease_ms);
        let this = self.clone();
        let settle = move |result| this.settle_grant(node, &claim, result);
        if !await_or_follow(write, patience, &self.running, settle).await {
            tracing::warn!(
                node,
                replaces = ?claim.replaces,
                "grant not committed in time; renewals of the replaced epoch stay refused \
                 until its outcome is known"
            );
        }
    }

    /// Logs how the write of a grant ended and releases its claim (see [`Ownership::grant`]).
    fn settle_grant(&self, node: NodeId, claim: &Claim, result: GrantWrite) {
        match result {
            Ok(response) => match response.data.refused {
                None => tracing::info!(node, epoch = response.log_id.index, "ownership granted"),
                Some(why) => tracing::warn!(node, why, "grant refused by the state machine"),
            },
            Err(e) => tracing::warn!(node, error = %e, "grant not committed"),
        }
        if let Ok(mut book) = self.book.lock() {
            book.settle_move(claim);
        }
        self.wake.notify_one();
    }

    fn grant_request(&self, node: NodeId, expected: Option<u64>, reason: &str) -> Request {
        Request {
            command: Command::GrantOwnership {
                node,
                expected,
                recheck: true,
            },
            requested_by: self
                .members
                .get(&self.node_id)
                .map(|m| format!("leader {}", m.name))
                .unwrap_or_else(|| "leader".into()),
            reason: reason.to_string(),
            at_unix_ms: clock::wall_ms(),
        }
    }

    /// Asks every member, until a majority (this node included) answered from `term` or
    /// later, when it last took part in a round of an earlier term. Stops when this node no
    /// longer leads `term` or the arbiter stops.
    fn ask_horizon(self: &Arc<Self>, term: u64) {
        let this = self.clone();
        self.running.tasks.spawn(async move {
            this.note_horizon(term, this.node_id, this.horizon.before(term));
            let timeout = this.renew_interval.max(Duration::from_millis(100));
            loop {
                let leads = {
                    let metrics = this.raft.metrics().borrow().clone();
                    metrics.state == ServerState::Leader && metrics.current_term == term
                };
                if !leads {
                    return;
                }
                let pending: Vec<(NodeId, PeerClient)> = {
                    let Ok(book) = this.book.lock() else { return };
                    if book.term.map(|(t, _)| t) != Some(term) || book.earlier_rounds.is_some() {
                        return;
                    }
                    this.members
                        .keys()
                        .filter(|id| !book.horizon_answers.contains_key(id))
                        .filter_map(|id| this.client(*id).map(|c| (*id, c)))
                        .collect()
                };
                // Each answer is noted as it arrives: the receipt instant is part of the
                // bound, and a silent member must not hold up the others.
                let asks = pending.into_iter().map(|(id, mut client)| {
                    let this = this.clone();
                    async move {
                        match client.horizon(term, timeout).await {
                            Ok(reply) if reply.term >= term => {
                                // The round happened at least `age_ms` (its clock, rounded
                                // down) before now (this clock, rounded up): see `Horizon`.
                                let at = clock::now_ceiling().minus(reply.age_ms);
                                this.note_horizon(term, id, at);
                            }
                            Ok(reply) => tracing::debug!(
                                node = id,
                                their_term = reply.term,
                                "horizon: the member has not yet seen this term"
                            ),
                            Err(e) => {
                                tracing::debug!(node = id, error = %e, "horizon: no answer")
                            }
                        }
                    }
                });
                futures::future::join_all(asks).await;
                tokio::select! {
                    _ = this.running.stop.cancelled() => return,
                    _ = tokio::time::sleep(this.renew_interval) => {}
                }
            }
        });
    }

    fn note_horizon(&self, term: u64, from: NodeId, at: Millis) {
        let majority = self.members.len() / 2 + 1;
        let Ok(mut book) = self.book.lock() else {
            return;
        };
        if book.term.map(|(t, _)| t) != Some(term) || book.earlier_rounds.is_some() {
            return;
        }
        book.horizon_answers.insert(from, at);
        if book.horizon_answers.len() >= majority {
            let latest = book.horizon_answers.values().copied().max();
            book.earlier_rounds = latest;
            tracing::info!(
                term,
                answered = ?book.horizon_answers.keys().collect::<Vec<_>>(),
                ms_ago = latest.map(|at| clock::now().since(at)),
                "a majority last took part in an earlier term's round"
            );
            drop(book);
            self.wake.notify_one();
        }
    }

    fn client(&self, target: NodeId) -> Option<PeerClient> {
        if target == self.node_id {
            return None;
        }
        self.clients.get(target).ok()
    }

    /// Starts the fencing hook against `node`; once started it runs to its end (bounded by
    /// its timeout) even when the arbiter stops, so a node is never left half-fenced.
    fn start_fence_hook(self: &Arc<Self>, node: NodeId, epoch: u64) {
        let Some(hook) = self.fence_hook.clone() else {
            return;
        };
        if self.running.stop.is_cancelled() {
            return;
        }
        let target = view::Owner { node, epoch };
        if let Ok(mut book) = self.book.lock() {
            book.fence_hook = FenceHook::Running { target };
        }
        let name = self
            .members
            .get(&node)
            .map(|m| m.name.clone())
            .unwrap_or_else(|| node.to_string());
        let this = self.clone();
        self.running.tasks.spawn(async move {
            let outcome = run_fence_hook(this.running.commands.as_ref(), &hook, &name, epoch).await;
            if let Ok(mut book) = this.book.lock() {
                if book.fence_hook == (FenceHook::Running { target }) {
                    book.fence_hook = match outcome {
                        Ok(()) => FenceHook::Confirmed { target },
                        Err(message) => FenceHook::Failed { target, message },
                    };
                }
            }
            this.wake.notify_one();
        });
    }
}

/// What a grant decision rested on, checked again just before the grant is written.
#[derive(Clone, Copy, Debug)]
struct Claim {
    /// The term the decision was made in.
    term: u64,
    /// The owner the grant replaces.
    replaces: Option<view::Owner>,
    /// The end of that owner's latest lease from this leader, as the decision saw it.
    grant_seen: Option<Millis>,
}

impl LeaderBook {
    /// Claims the move `claim` describes, or says why not: this node no longer leads the
    /// term of the decision, an earlier grant's outcome is not known yet, or the owner being
    /// replaced renewed since. While the claim holds (until [`LeaderBook::settle_move`]),
    /// renewals of the replaced epoch are refused.
    fn claim_move(&mut self, claim: &Claim) -> Result<(), String> {
        if self.term.map(|(t, _)| t) != Some(claim.term) {
            return Err(format!("term {} is over", claim.term));
        }
        if let Some(epoch) = self.moving {
            return Err(format!(
                "the grant replacing epoch {epoch} has no known outcome yet"
            ));
        }
        if let Some(old) = claim.replaces {
            if self.granted_until.get(&old.node).copied() > claim.grant_seen {
                return Err(format!(
                    "owner {} (epoch {}) renewed its lease after the decision",
                    old.node, old.epoch
                ));
            }
            self.moving = Some(old.epoch);
        }
        Ok(())
    }

    /// Releases the claim of `claim` once its grant's outcome is known; a claim of an
    /// earlier term (its book already reset) or of another epoch is left alone.
    fn settle_move(&mut self, claim: &Claim) {
        if self.term.map(|(t, _)| t) != Some(claim.term) {
            return;
        }
        if let Some(old) = claim.replaces {
            if self.moving == Some(old.epoch) {
                self.moving = None;
            }
        }
    }

    /// Starts a fresh book when `term` is new: nothing granted, nothing heard.
    fn enter_term(&mut self, term: u64, now: Millis, hook_configured: bool) {
        if self.term.map(|(t, _)| t) != Some(term) {
            *self = LeaderBook {
                term: Some((term, now)),
                fence_hook: if hook_configured {
                    FenceHook::Idle
                } else {
                    FenceHook::NotConfigured
                },
                ..LeaderBook::default()
            };
        }
    }
}

/// How the write of a grant ended: the state machine's answer once applied, or why it failed.
type GrantWrite = Result<
    openraft::raft::ClientWriteResponse<crate::consensus::types::TypeConfig>,
    openraft::error::RaftError<NodeId, openraft::error::ClientWriteError<NodeId, Member>>,
>;

/// Awaits `write` for up to `patience` and passes its result to `settled`. Returns `true`
/// when it ended in time; otherwise leaves it running on `running`'s task tracker, where it
/// is awaited to its end (its result then passed to `settled`) or until the arbiter stops.
/// Dropping it instead would lose the only sign of its outcome while its entry can still
/// commit.
async fn await_or_follow<T, F, S>(
    write: F,
    patience: Duration,
    running: &Running,
    settled: S,
) -> bool
where
    T: Send + 'static,
    F: std::future::Future<Output = T> + Send + 'static,
    S: FnOnce(T) + Send + 'static,
{
    let mut write = Box::pin(write);
    match tokio::time::timeout(patience, &mut write).await {
        Ok(result) => {
            settled(result);
            true
        }
        Err(_) => {
            let stop = running.stop.clone();
            running.tasks.spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    result = write => settled(result),
                }
            });
            false
        }
    }
}

/// Whether `last_applied` is an entry of `term` or later. For the leader of `term` this
/// means its own blank first entry is applied, and with it every entry committed in an
/// earlier term (entries apply in log order). Until then the applied state may lag behind
/// the committed one, and the leader decides nothing about ownership. Renewals need no such
/// check: `ensure_linearizable` already waits until that first entry is applied.
fn applied_own_entry(term: u64, last_applied: Option<LogId>) -> bool {
    last_applied.is_some_and(|applied| applied.leader_id.term >= term)
}

/// Runs the fencing hook against `node` with `commands`; `Ok` only when it exited 0 in time.
/// A hook that misses its timeout is killed (see [`CommandRunner::run`]).
async fn run_fence_hook(
    commands: &dyn CommandRunner,
    hook: &FenceHookConfig,
    node: &str,
    epoch: u64,
) -> Result<(), String> {
    let args: Vec<String> = hook
        .command
        .iter()
        .map(|a| {
            a.replace("{node}", node)
                .replace("{epoch}", &epoch.to_string())
        })
        .collect();
    let Some((program, rest)) = args.split_first() else {
        return Err("fence_hook.command is empty".into());
    };
    tracing::warn!(node, epoch, program, "running the fencing hook");
    let timeout = Duration::from_millis(hook.timeout_ms);
    match commands.run(program, rest, timeout).await {
        Err(RunError::Timeout { .. }) => Err(format!("timed out after {} ms", hook.timeout_ms)),
        // "cannot run {program}: {reason}"
        Err(spawn @ RunError::Spawn { .. }) => Err(spawn.to_string()),
        Ok(out) if out.success() => {
            tracing::warn!(node, epoch, "fencing hook confirmed the node is off");
            Ok(())
        }
        Ok(out) => {
            let status = match out.code {
                Some(code) => format!("exit status: {code}"),
                None => "a signal".to_string(),
            };
            Err(format!("exited with {status}: {}", out.stderr.trim()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{CommandOutput, RecordedCommand, RecordingRunner};

    /// Answers every command with the same result, as a stand-in for the hook's program.
    struct Answer(Result<CommandOutput, RunError>);

    #[async_trait::async_trait]
    impl CommandRunner for Answer {
        async fn run(
            &self,
            _program: &str,
            _args: &[String],
            _timeout: Duration,
        ) -> Result<CommandOutput, RunError> {
            self.0.clone()
        }
    }

    fn hook() -> FenceHookConfig {
        FenceHookConfig {
            command: vec![
                "/usr/local/sbin/power-off".into(),
                "{node}".into(),
                "--epoch={epoch}".into(),
            ],
            timeout_ms: 250,
        }
    }

    async fn fence_with(answer: Result<CommandOutput, RunError>) -> Result<(), String> {
        run_fence_hook(&Answer(answer), &hook(), "node-b", 7).await
    }

    #[tokio::test]
    async fn the_fence_hook_runs_through_the_command_runner() {
        let off = CommandOutput {
            code: Some(0),
            ..CommandOutput::default()
        };
        let recorder = RecordingRunner::new(Arc::new(Answer(Ok(off))));
        assert_eq!(
            run_fence_hook(&recorder, &hook(), "node-b", 7).await,
            Ok(())
        );
        assert_eq!(
            recorder.commands(),
            vec![RecordedCommand {
                program: "/usr/local/sbin/power-off".into(),
                args: vec!["node-b".into(), "--epoch=7".into()],
            }]
        );
    }

    #[tokio::test]
    async fn a_fence_hook_that_fails_says_why() {
        let refused = CommandOutput {
            code: Some(3),
            stderr: "no such node\n".into(),
            ..CommandOutput::default()
        };
        assert_eq!(
            fence_with(Ok(refused)).await,
            Err("exited with exit status: 3: no such node".into())
        );
        let timeout = RunError::Timeout {
            program: "/usr/local/sbin/power-off".into(),
            timeout: Duration::from_millis(250),
        };
        assert_eq!(
            fence_with(Err(timeout)).await,
            Err("timed out after 250 ms".into())
        );
        let missing = RunError::Spawn {
            program: "/usr/local/sbin/power-off".into(),
            message: "No such file or directory (os error 2)".into(),
        };
        assert_eq!(
            fence_with(Err(missing)).await,
            Err(
                "cannot run /usr/local/sbin/power-off: No such file or directory (os error 2)"
                    .into()
            )
        );
        let empty = FenceHookConfig {
            command: Vec::new(),
            timeout_ms: 250,
        };
        let never = Answer(Ok(CommandOutput::default()));
        assert_eq!(
            run_fence_hook(&never, &empty, "node-b", 7).await,
            Err("fence_hook.command is empty".into())
        );
    }

    #[test]
    fn a_leader_counts_as_caught_up_only_once_an_entry_of_its_term_is_applied() {
        let at = |term, index| Some(LogId::new(openraft::CommittedLeaderId::new(term, 1), index));
        assert!(!applied_own_entry(4, None));
        // Entries of earlier terms, however many: a later one may be committed unseen.
        assert!(!applied_own_entry(4, at(3, 120)));
        assert!(applied_own_entry(4, at(4, 121)));
        assert!(applied_own_entry(4, at(5, 130)));
    }

    fn book(term: u64) -> LeaderBook {
        let mut book = LeaderBook::default();
        book.enter_term(term, Millis(1_000), false);
        book
    }

    fn owner(epoch: u64) -> Option<view::Owner> {
        Some(view::Owner { node: 1, epoch })
    }

    #[test]
    fn a_move_is_claimed_only_in_the_decision_term_and_only_if_the_owner_did_not_renew() {
        let mut b = book(7);
        b.granted_until.insert(1, Millis(5_000));
        let claim = Claim {
            term: 7,
            replaces: owner(40),
            grant_seen: Some(Millis(5_000)),
        };

        let stale_term = Claim { term: 6, ..claim };
        assert!(b.claim_move(&stale_term).unwrap_err().contains("term 6"));
        assert_eq!(b.moving, None);

        // The owner renewed between the decision and the write: the renewal wins.
        b.granted_until.insert(1, Millis(6_500));
        assert!(b.claim_move(&claim).unwrap_err().contains("renewed"));
        assert_eq!(b.moving, None);

        // Nothing renewed since the decision: the claim holds the replaced epoch.
        let fresh = Claim {
            grant_seen: Some(Millis(6_500)),
            ..claim
        };
        assert_eq!(b.claim_move(&fresh), Ok(()));
        assert_eq!(b.moving, Some(40));
    }

    fn running() -> Running {
        Running {
            commands: Arc::new(Answer(Ok(CommandOutput::default()))),
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
        }
    }

    #[tokio::test]
    async fn a_grant_not_answered_in_time_keeps_the_old_owner_refused_until_it_ends() {
        let book = Arc::new(Mutex::new(book(7)));
        let claim = Claim {
            term: 7,
            replaces: owner(40),
            grant_seen: None,
        };
        book.lock().unwrap().claim_move(&claim).unwrap();
        // The grant's write: its entry commits and applies only after the leader's patience.
        let (commit, committed) = tokio::sync::oneshot::channel::<()>();
        let write = async move { committed.await.is_ok() };
        let settled = {
            let book = book.clone();
            move |_applied: bool| book.lock().unwrap().settle_move(&claim)
        };
        let running = running();
        let in_time = await_or_follow(write, Duration::from_millis(20), &running, settled).await;
        assert!(!in_time);
        // The entry can still commit: epoch 40 may not renew, and no second move starts.
        assert_eq!(book.lock().unwrap().moving, Some(40));
        let again = book.lock().unwrap().claim_move(&claim).unwrap_err();
        assert!(again.contains("no known outcome"), "{again}");
        // The entry applied: the outcome is known and the claim is released.
        commit.send(()).unwrap();
        running.tasks.close();
        running.tasks.wait().await;
        assert_eq!(book.lock().unwrap().moving, None);
    }

    #[test]
    fn a_grant_outcome_of_an_earlier_term_leaves_the_new_terms_claim_alone() {
        let mut b = book(7);
        let old = Claim {
            term: 7,
            replaces: owner(40),
            grant_seen: None,
        };
        b.claim_move(&old).unwrap();
        b.enter_term(8, Millis(2_000), false);
        let new = Claim { term: 8, ..old };
        b.claim_move(&new).unwrap();
        b.settle_move(&old);
        assert_eq!(b.moving, Some(40));
        b.settle_move(&new);
        assert_eq!(b.moving, None);
    }

    #[test]
    fn a_first_renewal_after_the_decision_also_stops_the_move() {
        // The decision saw no grant from this leader at all (say, right after its election).
        let mut b = book(3);
        let claim = Claim {
            term: 3,
            replaces: owner(9),
            grant_seen: None,
        };
        b.granted_until.insert(1, Millis(2_000));
        assert!(b.claim_move(&claim).is_err());
        // A cold start replaces nobody: only the term matters.
        let cold = Claim {
            term: 3,
            replaces: None,
            grant_seen: None,
        };
        assert_eq!(b.claim_move(&cold), Ok(()));
        assert_eq!(b.moving, None);
    }
}

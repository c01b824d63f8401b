//! The Raft leader's decision: whether ownership of the resource group moves, and to whom.
//!
//! The leader is the only member that proposes a change of owner. It runs [`decide`] every
//! cycle (level-triggered: the same inputs give the same decision, and repeating an action
//! is harmless because a grant names the owner it replaces). The guards, in order:
//!
//! 1. **Paused**: nothing moves.
//! 2. **No owner (cold start)**: grant to the best eligible node at once.
//! 3. **Owner released its epoch (planned handoff)**: grant at once, to the switchover
//!    target if it is eligible, else to the best eligible node (the releasing node last).
//! 4. **Owner renews**: nothing moves; a pending switchover waits for the owner to release,
//!    or is reported refused when its target may not take the group.
//! 5. **Owner silent** (no renewal for [`Timing::silence_ms`] since the later of its last
//!    renewal and the moment this leader saw it own): with a fencing hook, run it first and
//!    move at once on confirmation; otherwise (or when the hook failed) move only once
//!    `max(granted_until[old], min(elected_at, earlier_rounds) + lease·(1+ρ)) + fence_margin`
//!    has passed. `earlier_rounds` is the last quorum round of an earlier term that a
//!    majority took part in ([`crate::arbiter::horizon`]); until a majority answered, only
//!    `elected_at` counts.
//!
//! Eligible means: a management node that is a member, not outdated, not on standby, below
//! the migration threshold, heard from within one lease, reporting it can run the group,
//! and, for an unplanned move, not the silent owner. Among eligible nodes the choice is
//! deterministic: the switchover target first, then (after a release) any node other than
//! the one that released, then the fewest failures, then the lowest id.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

use super::reason::{Exclusion, Holder, LeaseBound, Reason, Vacancy};
use super::time::{Millis, Timing};
use super::view::{
    node_label, ClusterView, FenceHook, Ineligible, NodeId, Owner, PeerHealth, Role,
};
use super::Decision;

/// What the leader's executor does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaderAction {
    /// Commit a change of owner to `node`; the new epoch is the log index of that entry.
    /// The state machine refuses it unless the committed owner is still `replaces`
    /// (compare-and-set), so a repeated or late proposal cannot undo a newer change.
    GrantOwnership {
        /// The new owner.
        node: NodeId,
        /// The owner this grant replaces; `None` at cold start.
        replaces: Option<Owner>,
    },
    /// Run the configured fencing hook against the silent owner and report the outcome
    /// as [`FenceHook::Confirmed`] or [`FenceHook::Failed`] (bounded by a timeout).
    RunFenceHook {
        /// The node to fence.
        node: NodeId,
        /// Its epoch, stamped on the hook's log lines.
        epoch: u64,
    },
}

/// Everything the leader's decision reads. All instants are on the leader's own clock.
#[derive(Clone, Copy, Debug)]
pub struct LeaderInput<'a> {
    /// The committed state as this leader applied it.
    pub view: &'a ClusterView,
    /// Timing settings.
    pub timing: &'a Timing,
    /// The leader's current time.
    pub now: Millis,
    /// When this node became Raft leader.
    pub elected_at: Millis,
    /// When this process first saw the current owner and epoch committed. Pass `elected_at`
    /// (or anything earlier) if it was already committed then; the core uses the later one.
    pub owner_since: Millis,
    /// The latest instant, mapped onto this leader's clock, at which a majority of members
    /// (this leader included) took part in a quorum round of an earlier term; `None` until a
    /// majority answered. No lease granted in an earlier term started after it.
    pub earlier_rounds: Option<Millis>,
    /// The leases this leader granted: node to the end of its latest grant.
    pub granted_until: &'a BTreeMap<NodeId, Millis>,
    /// Per node liveness and readiness as seen by this leader; a missing node is unreachable.
    pub peers: &'a BTreeMap<NodeId, PeerHealth>,
    /// The fencing hook and its outcome for the current owner.
    pub fence_hook: &'a FenceHook,
}

/// Decides whether and to whom ownership moves. Call only while this node leads.
pub fn decide(input: &LeaderInput<'_>) -> Decision<LeaderAction> {
    let view = input.view;
    if view.paused {
        return Decision::new(
            Reason::LeaderPaused {
                owner: view.owner.map(|owner| holder(view, owner)),
            },
            Vec::new(),
        );
    }
    let Some(owner) = view.owner else {
        return cold_start(input);
    };
    if view.owner_released() {
        return handoff(input, owner);
    }
    owner_holds(input, owner)
}

fn cold_start(input: &LeaderInput<'_>) -> Decision<LeaderAction> {
    let choice = choose(input, None, None);
    match choice.chosen {
        Ok(node) => Decision::new(
            Reason::GrantColdStart {
                to: input.view.name_of(node),
            },
            vec![LeaderAction::GrantOwnership {
                node,
                replaces: None,
            }],
        ),
        Err(excluded) => no_eligible(Vacancy::ColdStart, excluded),
    }
}

fn handoff(input: &LeaderInput<'_>, owner: Owner) -> Decision<LeaderAction> {
    let from = holder(input.view, owner);
    let choice = choose(input, None, Some(owner.node));
    match choice.chosen {
        Ok(node) => Decision::new(
            Reason::GrantHandoff {
                from,
                to: input.view.name_of(node),
                target_refused: choice.target_refused,
            },
            vec![LeaderAction::GrantOwnership {
                node,
                replaces: Some(owner),
            }],
        ),
        Err(excluded) => no_eligible(Vacancy::Released(from), excluded),
    }
}

fn owner_holds(input: &LeaderInput<'_>, owner: Owner) -> Decision<LeaderAction> {
    let view = input.view;
    let timing = input.timing;
    let now = input.now;
    let granted = input.granted_until.get(&owner.node).copied();
    let since = input.elected_at.max(input.owner_since);
    let last_renewal = granted.map(|until| until.minus(timing.leader_lease_ms()));
    let last_sign_of_life = last_renewal.map_or(since, |renewed| renewed.max(since));
    let silent_at = last_sign_of_life.plus(timing.silence_ms());

    if now < silent_at {
        let pending_target = view.switchover_to.filter(|target| *target != owner.node);
        let reason = match pending_target {
            Some(target) => match ineligible(input, target, None) {
                Some(why) => Reason::SwitchoverRefused {
                    owner: holder(view, owner),
                    target: view.name_of(target),
                    why,
                },
                None => Reason::SwitchoverPending {
                    owner: holder(view, owner),
                    target: view.name_of(target),
                },
            },
            None => Reason::OwnerRenewing {
                owner: holder(view, owner),
                lease_left_ms: granted
                    .filter(|until| *until > now)
                    .map(|until| now.until(until)),
                silent_in_ms: now.until(silent_at),
            },
        };
        return Decision::new(reason, Vec::new()).wake_at(silent_at);
    }

    let old = holder(view, owner);
    let successor = match choose(input, Some(owner.node), None).chosen {
        Ok(node) => node,
        Err(excluded) => return no_eligible(Vacancy::OwnerSilent(old), excluded),
    };
    let grant = vec![LeaderAction::GrantOwnership {
        node: successor,
        replaces: Some(owner),
    }];
    let fence_failed = match input.fence_hook {
        FenceHook::Confirmed { target } if *target == owner => {
            return Decision::new(
                Reason::GrantAfterFence {
                    from: old,
                    to: view.name_of(successor),
                },
                grant,
            );
        }
        FenceHook::Running { target } if *target == owner => {
            return Decision::new(Reason::WaitingForFenceHook { owner: old }, Vec::new());
        }
        FenceHook::Failed { target, message } if *target == owner => Some(message.clone()),
        FenceHook::NotConfigured => None,
        // Idle, or an outcome that belongs to an earlier owner or epoch: fence this one.
        _ => {
            return Decision::new(
                Reason::FencingOldOwner {
                    owner: old,
                    successor: view.name_of(successor),
                },
                vec![LeaderAction::RunFenceHook {
                    node: owner.node,
                    epoch: owner.epoch,
                }],
            );
        }
    };

    // Leases of earlier terms started before both the election and the last earlier-term
    // round a majority saw; leases of this term end at what this leader granted.
    let (earlier_start, earlier_bound) = match input.earlier_rounds {
        Some(rounds) if rounds < input.elected_at => (rounds, LeaseBound::EarlierRounds),
        _ => (input.elected_at, LeaseBound::Election),
    };
    let earlier_end = earlier_start.plus(timing.leader_lease_ms());
    let (lease_end, bound) = match granted {
        Some(until) if until >= earlier_end => (until, LeaseBound::Granted),
        _ => (earlier_end, earlier_bound),
    };
    let deadline = lease_end.plus(timing.fence_margin_ms);
    if now < deadline {
        return Decision::new(
            Reason::WaitingForOldLease {
                owner: old,
                wait_ms: now.until(deadline),
                bound,
                fence_failed,
            },
            Vec::new(),
        )
        .wake_at(deadline);
    }
    Decision::new(
        Reason::GrantAfterLeaseExpiry {
            from: old,
            to: view.name_of(successor),
            bound,
        },
        grant,
    )
}

fn no_eligible(vacancy: Vacancy, excluded: Vec<Exclusion>) -> Decision<LeaderAction> {
    Decision::new(Reason::NoEligibleNode { vacancy, excluded }, Vec::new())
}

fn holder(view: &ClusterView, owner: Owner) -> Holder {
    Holder {
        name: view.name_of(owner.node),
        epoch: owner.epoch,
    }
}

/// The outcome of looking for a new owner.
struct Choice {
    /// The chosen node, or every member with the reason it was refused.
    chosen: Result<NodeId, Vec<Exclusion>>,
    /// The switchover target, when one is pending and it may not take the group.
    target_refused: Option<Exclusion>,
}

/// Picks the best eligible node. `silent_owner` is never chosen; `released_by` only when
/// no other node is eligible.
fn choose(
    input: &LeaderInput<'_>,
    silent_owner: Option<NodeId>,
    released_by: Option<NodeId>,
) -> Choice {
    let view = input.view;
    let target = view.switchover_to;
    let mut eligible = Vec::new();
    let mut excluded = Vec::new();
    for (&id, node) in &view.nodes {
        match ineligible(input, id, silent_owner) {
            None => eligible.push((id, node.fail_count)),
            Some(why) => excluded.push(Exclusion {
                name: node.name.clone(),
                why,
            }),
        }
    }
    let target_refused = target.and_then(|target| {
        ineligible(input, target, silent_owner).map(|why| Exclusion {
            name: view.name_of(target),
            why,
        })
    });
    let best = eligible.iter().min_by_key(|(id, fail_count)| {
        (
            Some(*id) != target,
            Some(*id) == released_by,
            *fail_count,
            *id,
        )
    });
    Choice {
        chosen: best.map(|(id, _)| *id).ok_or(excluded),
        target_refused,
    }
}

/// Why `id` may not be given ownership now, or `None` if it may.
fn ineligible(
    input: &LeaderInput<'_>,
    id: NodeId,
    silent_owner: Option<NodeId>,
) -> Option<Ineligible> {
    if Some(id) == silent_owner {
        return Some(Ineligible::SilentOwner);
    }
    if let Some(why) = input.view.marks_exclude(id, input.timing) {
        return Some(why);
    }
    let health = input.peers.get(&id).copied().unwrap_or_default();
    let Some(last_heard) = health.last_heard else {
        return Some(Ineligible::Unreachable { silent_ms: None });
    };
    let silent_ms = input.now.since(last_heard);
    if silent_ms > input.timing.reachable_within_ms() {
        return Some(Ineligible::Unreachable {
            silent_ms: Some(silent_ms),
        });
    }
    if !health.can_run_group {
        return Some(Ineligible::NotReady);
    }
    None
}

/// Why the leader refuses a lease renewal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RenewalRefusal {
    /// The asker is not the committed owner under that epoch: it must fence now.
    NotOwner {
        /// The committed owner, if any.
        owner: Option<Owner>,
    },
    /// The asker released that epoch: it keeps its group stopped and needs no lease.
    Released {
        /// The released epoch.
        epoch: u64,
    },
    /// The asker is a witness, which never holds the group.
    Witness,
}

impl fmt::Display for RenewalRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RenewalRefusal::NotOwner { owner: Some(owner) } => write!(
                f,
                "not the owner: {} owns the group under epoch {}; stop holding anything",
                node_label(owner.node),
                owner.epoch
            ),
            RenewalRefusal::NotOwner { owner: None } => {
                f.write_str("not the owner: no node owns the group; stop holding anything")
            }
            RenewalRefusal::Released { epoch } => write!(
                f,
                "epoch {epoch} was released; keep the group stopped until ownership is granted again"
            ),
            RenewalRefusal::Witness => f.write_str("a witness never holds a lease"),
        }
    }
}

impl std::error::Error for RenewalRefusal {}

/// Answers `RenewLease { node, epoch }`. Call only after a quorum round confirmed this
/// node still leads (a round that started after the request arrived). On success the
/// caller records the returned instant as `granted_until[node]`. Pausing does not stop
/// renewals: a paused owner keeps its group and its lease.
pub fn answer_renewal(
    view: &ClusterView,
    timing: &Timing,
    now: Millis,
    node: NodeId,
    epoch: u64,
) -> Result<Millis, RenewalRefusal> {
    if view.node(node).map(|n| n.role) == Some(Role::Witness) {
        return Err(RenewalRefusal::Witness);
    }
    match view.owner {
        Some(owner) if owner.node == node && owner.epoch == epoch => {
            if view.released == Some(epoch) {
                Err(RenewalRefusal::Released { epoch })
            } else {
                Ok(timing.leader_granted_until(now))
            }
        }
        owner => Err(RenewalRefusal::NotOwner { owner }),
    }
}

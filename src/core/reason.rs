//! Why a decision is what it is, as one human sentence with the facts.
//!
//! A [`Reason`] is the log line when a decision changes, the text `status` shows, and the
//! oracle tests assert on. Each variant carries the facts (names, epochs, milliseconds) and
//! has a stable [`ReasonCode`] that survives rewording of the sentence. Names are resolved
//! from the view when the reason is built, so `Display` needs nothing else.

use serde::{Deserialize, Serialize};
use std::fmt;

use super::view::Ineligible;

/// A node named together with the epoch it holds or held.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The owner's name.
    pub name: String,
    /// Its epoch.
    pub epoch: u64,
}

/// What the leader's estimate of a silent owner's lease end rests on (the latest of them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseBound {
    /// The end of the lease this leader granted itself.
    Granted,
    /// A whole lease from this leader's election.
    Election,
    /// A whole lease from the last quorum round of an earlier term that a majority took
    /// part in (learned from that majority after the election).
    EarlierRounds,
}

impl fmt::Display for LeaseBound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LeaseBound::Granted => "the end of the lease this leader granted",
            LeaseBound::Election => "a whole lease from this leader's election",
            LeaseBound::EarlierRounds => {
                "a whole lease after a majority last heard the previous leader"
            }
        })
    }
}

/// One node the leader could not choose, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exclusion {
    /// The node's name.
    pub name: String,
    /// Why it may not take ownership now.
    pub why: Ineligible,
}

/// The situation in which the leader looked for a new owner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Vacancy {
    /// No node owns the group (a fresh cluster).
    ColdStart,
    /// The owner released its epoch in order.
    Released(Holder),
    /// The owner stopped renewing its lease.
    OwnerSilent(Holder),
}

/// Why a decision is what it is. `Display` gives the sentence, [`Reason::code`] the code.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reason {
    /// Leader: newly elected and its own first entry is not applied yet; its applied state
    /// may be behind the committed one, so it decides nothing about ownership.
    LeaderCatchingUp,
    /// Leader: maintenance mode, nothing moves.
    LeaderPaused {
        /// The current owner, if any.
        owner: Option<Holder>,
    },
    /// Leader: the owner renews (or has not yet had time to).
    OwnerRenewing {
        /// The owner.
        owner: Holder,
        /// How long the latest grant still runs; `None` if this leader granted none yet.
        lease_left_ms: Option<u64>,
        /// How long until the owner counts as silent if it does not renew.
        silent_in_ms: u64,
    },
    /// Leader: an operator's switchover waits for the owner to stop and release.
    SwitchoverPending {
        /// The owner.
        owner: Holder,
        /// The requested next owner.
        target: String,
    },
    /// Leader or owner: the requested switchover target may not take the group.
    SwitchoverRefused {
        /// The owner, who keeps the group.
        owner: Holder,
        /// The requested next owner.
        target: String,
        /// Why the target may not take it.
        why: Ineligible,
    },
    /// Leader: runs the fencing hook against the silent owner before moving the group.
    FencingOldOwner {
        /// The silent owner.
        owner: Holder,
        /// Who would get the group.
        successor: String,
    },
    /// Leader: the fencing hook is still running against the silent owner.
    WaitingForFenceHook {
        /// The silent owner.
        owner: Holder,
    },
    /// Leader: the owner is silent but its lease may still run.
    WaitingForOldLease {
        /// The silent owner.
        owner: Holder,
        /// How long until the lease has surely run out, fence margin included.
        wait_ms: u64,
        /// What that estimate rests on.
        bound: LeaseBound,
        /// The fencing hook's failure message, if it was tried and failed.
        fence_failed: Option<String>,
    },
    /// Leader: the silent owner's lease has surely run out; ownership moves.
    GrantAfterLeaseExpiry {
        /// The silent owner.
        from: Holder,
        /// The new owner.
        to: String,
        /// What the lease's end was estimated from.
        bound: LeaseBound,
    },
    /// Leader: the fencing hook confirmed the silent owner is down; ownership moves at once.
    GrantAfterFence {
        /// The fenced owner.
        from: Holder,
        /// The new owner.
        to: String,
    },
    /// Leader: the owner released in order; ownership moves at once.
    GrantHandoff {
        /// The owner that released.
        from: Holder,
        /// The new owner.
        to: String,
        /// The requested switchover target when it could not be chosen, and why.
        target_refused: Option<Exclusion>,
    },
    /// Leader: nobody owns the group; ownership goes to the best eligible node.
    GrantColdStart {
        /// The new owner.
        to: String,
    },
    /// Leader: ownership should move but no node may take it.
    NoEligibleNode {
        /// Why ownership is vacant or must move.
        vacancy: Vacancy,
        /// Every node considered, and why it was refused.
        excluded: Vec<Exclusion>,
    },
    /// Node: a witness never holds the group.
    Witness {
        /// This node.
        me: String,
    },
    /// Node: not the owner, nothing runs.
    StandingBy {
        /// This node.
        me: String,
        /// The current owner, if any.
        owner: Option<Holder>,
    },
    /// Node: this node released its epoch and keeps its group stopped.
    ReleasedStopped {
        /// This node, with the epoch it released.
        me: Holder,
    },
    /// Node: not the owner, still holds a valid lease, and something runs: ordered stop.
    StoppingLeftovers {
        /// This node.
        me: String,
        /// The current owner, if any.
        owner: Option<Holder>,
        /// The resources that are not stopped.
        active: Vec<String>,
    },
    /// Node: not the owner, no valid lease, and something runs: hard fence.
    FencingWithoutLease {
        /// This node.
        me: String,
        /// The current owner, if any.
        owner: Option<Holder>,
        /// The resources that are not stopped.
        active: Vec<String>,
    },
    /// Node: the owner has no valid lease while something runs: hard fence at once.
    LeaseExpiredFencing {
        /// This node as owner.
        me: Holder,
        /// How long ago the lease ran out; `None` if this process never held one.
        expired_ms_ago: Option<u64>,
        /// The resources that are not stopped.
        active: Vec<String>,
    },
    /// Node: the owner has no valid lease and nothing runs: start nothing, wait.
    AwaitingLease {
        /// This node as owner.
        me: Holder,
        /// How long ago the lease ran out; `None` if this process never held one.
        expired_ms_ago: Option<u64>,
    },
    /// Node: maintenance mode, the group is left as it is.
    PausedHolding {
        /// This node.
        me: String,
        /// Resources running.
        running: usize,
        /// Resources in the group.
        total: usize,
    },
    /// Node: the owner reached the migration threshold and gives the group up.
    OverMigrationThreshold {
        /// This node as owner.
        me: Holder,
        /// Its committed fail count.
        fail_count: u32,
        /// The configured threshold.
        threshold: u32,
        /// True once the group is stopped and the release is committed.
        stopped: bool,
    },
    /// Node: a switchover is requested; the owner stops its group in order.
    SwitchoverStopping {
        /// This node as owner.
        me: Holder,
        /// The requested next owner.
        target: String,
    },
    /// Node: a switchover is requested and the group is stopped; commit the release.
    SwitchoverReleasing {
        /// This node as owner.
        me: Holder,
        /// The requested next owner.
        target: String,
    },
    /// Node: a resource failed; restart it in place.
    RestartingInPlace {
        /// This node as owner.
        me: Holder,
        /// The failed resource.
        resource: String,
        /// What its monitor said.
        failure: String,
        /// This attempt's number, from 1.
        attempt: u32,
        /// The configured bound.
        max: u32,
    },
    /// Node: in-place recovery is exhausted; stop the group to release it.
    RestartsExhausted {
        /// This node as owner.
        me: Holder,
        /// The failed resource, if one is failed now.
        resource: Option<String>,
        /// The configured bound.
        max: u32,
    },
    /// Node: in-place recovery is exhausted and the group stopped; record and release.
    ReleasingAfterFailure {
        /// This node as owner.
        me: Holder,
        /// The configured bound.
        max: u32,
    },
    /// Node: the owner with a valid lease brings its group up.
    StartingGroup {
        /// This node as owner.
        me: Holder,
        /// How long the lease still runs.
        lease_left_ms: u64,
        /// The resources not yet running, in start order.
        pending: Vec<String>,
    },
    /// Node: the owner with a valid lease has its whole group running.
    GroupRunning {
        /// This node as owner.
        me: Holder,
        /// How long the lease still runs.
        lease_left_ms: u64,
        /// Resources in the group.
        count: usize,
    },
    /// Node: the executor is still busy; the next decision's actions wait for it.
    ExecutorBusy {
        /// What the node would do next.
        next: Box<Reason>,
    },
}

/// A stable short name for each kind of [`Reason`], for tests, metrics and JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReasonCode {
    /// See [`Reason::LeaderCatchingUp`].
    LeaderCatchingUp,
    /// See [`Reason::LeaderPaused`].
    LeaderPaused,
    /// See [`Reason::OwnerRenewing`].
    OwnerRenewing,
    /// See [`Reason::SwitchoverPending`].
    SwitchoverPending,
    /// See [`Reason::SwitchoverRefused`].
    SwitchoverRefused,
    /// See [`Reason::FencingOldOwner`].
    FencingOldOwner,
    /// See [`Reason::WaitingForFenceHook`].
    WaitingForFenceHook,
    /// See [`Reason::WaitingForOldLease`].
    WaitingForOldLease,
    /// See [`Reason::GrantAfterLeaseExpiry`].
    GrantAfterLeaseExpiry,
    /// See [`Reason::GrantAfterFence`].
    GrantAfterFence,
    /// See [`Reason::GrantHandoff`].
    GrantHandoff,
    /// See [`Reason::GrantColdStart`].
    GrantColdStart,
    /// See [`Reason::NoEligibleNode`].
    NoEligibleNode,
    /// See [`Reason::Witness`].
    Witness,
    /// See [`Reason::StandingBy`].
    StandingBy,
    /// See [`Reason::ReleasedStopped`].
    ReleasedStopped,
    /// See [`Reason::StoppingLeftovers`].
    StoppingLeftovers,
    /// See [`Reason::FencingWithoutLease`].
    FencingWithoutLease,
    /// See [`Reason::LeaseExpiredFencing`].
    LeaseExpiredFencing,
    /// See [`Reason::AwaitingLease`].
    AwaitingLease,
    /// See [`Reason::PausedHolding`].
    PausedHolding,
    /// See [`Reason::OverMigrationThreshold`].
    OverMigrationThreshold,
    /// See [`Reason::SwitchoverStopping`].
    SwitchoverStopping,
    /// See [`Reason::SwitchoverReleasing`].
    SwitchoverReleasing,
    /// See [`Reason::RestartingInPlace`].
    RestartingInPlace,
    /// See [`Reason::RestartsExhausted`].
    RestartsExhausted,
    /// See [`Reason::ReleasingAfterFailure`].
    ReleasingAfterFailure,
    /// See [`Reason::StartingGroup`].
    StartingGroup,
    /// See [`Reason::GroupRunning`].
    GroupRunning,
    /// See [`Reason::ExecutorBusy`].
    ExecutorBusy,
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl Reason {
    /// The stable code of this reason.
    pub fn code(&self) -> ReasonCode {
        match self {
            Reason::LeaderCatchingUp => ReasonCode::LeaderCatchingUp,
            Reason::LeaderPaused { .. } => ReasonCode::LeaderPaused,
            Reason::OwnerRenewing { .. } => ReasonCode::OwnerRenewing,
            Reason::SwitchoverPending { .. } => ReasonCode::SwitchoverPending,
            Reason::SwitchoverRefused { .. } => ReasonCode::SwitchoverRefused,
            Reason::FencingOldOwner { .. } => ReasonCode::FencingOldOwner,
            Reason::WaitingForFenceHook { .. } => ReasonCode::WaitingForFenceHook,
            Reason::WaitingForOldLease { .. } => ReasonCode::WaitingForOldLease,
            Reason::GrantAfterLeaseExpiry { .. } => ReasonCode::GrantAfterLeaseExpiry,
            Reason::GrantAfterFence { .. } => ReasonCode::GrantAfterFence,
            Reason::GrantHandoff { .. } => ReasonCode::GrantHandoff,
            Reason::GrantColdStart { .. } => ReasonCode::GrantColdStart,
            Reason::NoEligibleNode { .. } => ReasonCode::NoEligibleNode,
            Reason::Witness { .. } => ReasonCode::Witness,
            Reason::StandingBy { .. } => ReasonCode::StandingBy,
            Reason::ReleasedStopped { .. } => ReasonCode::ReleasedStopped,
            Reason::StoppingLeftovers { .. } => ReasonCode::StoppingLeftovers,
            Reason::FencingWithoutLease { .. } => ReasonCode::FencingWithoutLease,
            Reason::LeaseExpiredFencing { .. } => ReasonCode::LeaseExpiredFencing,
            Reason::AwaitingLease { .. } => ReasonCode::AwaitingLease,
            Reason::PausedHolding { .. } => ReasonCode::PausedHolding,
            Reason::OverMigrationThreshold { .. } => ReasonCode::OverMigrationThreshold,
            Reason::SwitchoverStopping { .. } => ReasonCode::SwitchoverStopping,
            Reason::SwitchoverReleasing { .. } => ReasonCode::SwitchoverReleasing,
            Reason::RestartingInPlace { .. } => ReasonCode::RestartingInPlace,
            Reason::RestartsExhausted { .. } => ReasonCode::RestartsExhausted,
            Reason::ReleasingAfterFailure { .. } => ReasonCode::ReleasingAfterFailure,
            Reason::StartingGroup { .. } => ReasonCode::StartingGroup,
            Reason::GroupRunning { .. } => ReasonCode::GroupRunning,
            Reason::ExecutorBusy { .. } => ReasonCode::ExecutorBusy,
        }
    }
}

/// "node1 (epoch 7)".
impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (epoch {})", self.name, self.epoch)
    }
}

/// "node2 is outdated".
impl fmt::Display for Exclusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name, self.why)
    }
}

impl fmt::Display for Vacancy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Vacancy::ColdStart => f.write_str("no node owns the group"),
            Vacancy::Released(from) => write!(f, "{from} released the group"),
            Vacancy::OwnerSilent(from) => write!(f, "owner {from} stopped renewing"),
        }
    }
}

/// `(node1 owns it, epoch 7)` or `(no node owns the group)`.
struct OwnerClause<'a>(&'a Option<Holder>);

impl fmt::Display for OwnerClause<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(owner) => write!(f, "({} owns it, epoch {})", owner.name, owner.epoch),
            None => f.write_str("(no node owns the group)"),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::LeaderCatchingUp => f.write_str(
                "newly elected; deciding nothing about ownership until this leader's first \
                 entry is applied (its applied state may be behind the committed one)",
            ),
            Reason::LeaderPaused { owner: Some(owner) } => write!(
                f,
                "cluster is paused; ownership stays with {owner} and nothing moves"
            ),
            Reason::LeaderPaused { owner: None } => {
                f.write_str("cluster is paused; no node owns the group and none is chosen")
            }
            Reason::OwnerRenewing {
                owner,
                lease_left_ms: Some(left),
                ..
            } => write!(
                f,
                "{} owns the group (epoch {}); lease granted for another {left} ms",
                owner.name, owner.epoch
            ),
            Reason::OwnerRenewing {
                owner,
                lease_left_ms: None,
                silent_in_ms,
            } => write!(
                f,
                "{} owns the group (epoch {}); no renewal from it yet, it counts as silent in {silent_in_ms} ms",
                owner.name, owner.epoch
            ),
            Reason::SwitchoverPending { owner, target } => write!(
                f,
                "switchover from {owner} to {target} pending; waiting for {} to stop the group and release it",
                owner.name
            ),
            Reason::SwitchoverRefused { owner, target, why } => write!(
                f,
                "switchover to {target} refused: {target} {why}; {} keeps the group (epoch {})",
                owner.name, owner.epoch
            ),
            Reason::FencingOldOwner { owner, successor } => write!(
                f,
                "owner {owner} stopped renewing; running the fencing hook against it before moving the group to {successor}"
            ),
            Reason::WaitingForFenceHook { owner } => write!(
                f,
                "the fencing hook is running against silent owner {owner}; waiting for its result before moving the group"
            ),
            Reason::WaitingForOldLease {
                owner,
                wait_ms,
                bound,
                fence_failed,
            } => {
                write!(
                    f,
                    "owner {} stopped renewing; waiting {wait_ms} ms for its lease to run out ({bound}) before moving the group",
                    owner.name
                )?;
                if let Some(message) = fence_failed {
                    write!(f, " (the fencing hook failed: {message})")?;
                }
                Ok(())
            }
            Reason::GrantAfterLeaseExpiry { from, to, bound } => write!(
                f,
                "owner {from} stopped renewing and its lease has run out ({bound}); giving the group to {to}"
            ),
            Reason::GrantAfterFence { from, to } => write!(
                f,
                "the fencing hook confirmed {from} is down; giving the group to {to} without waiting for its lease"
            ),
            Reason::GrantHandoff {
                from,
                to,
                target_refused: None,
            } => write!(f, "{from} released the group; handing it to {to} at once"),
            Reason::GrantHandoff {
                from,
                to,
                target_refused: Some(refused),
            } => write!(
                f,
                "{from} released the group; switchover target {refused}, so handing it to {to} instead"
            ),
            Reason::GrantColdStart { to } => {
                write!(f, "no node owns the group; giving it to {to}")
            }
            Reason::NoEligibleNode { vacancy, excluded } => {
                write!(f, "{vacancy}, but no node can take the group")?;
                for (index, exclusion) in excluded.iter().enumerate() {
                    let separator = if index == 0 { ": " } else { ", " };
                    write!(f, "{separator}{exclusion}")?;
                }
                f.write_str("; doing nothing")
            }
            Reason::Witness { me } => write!(f, "{me} is a witness; it never holds the group"),
            Reason::StandingBy { me, owner } => write!(
                f,
                "{me} is not the owner {}; its group stays stopped",
                OwnerClause(owner)
            ),
            Reason::ReleasedStopped { me } => write!(
                f,
                "{me} released the group; it stays stopped until the leader hands it on"
            ),
            Reason::StoppingLeftovers { me, owner, active } => write!(
                f,
                "{me} is not the owner {} but {} still run; stopping them in order",
                OwnerClause(owner),
                active.join(", ")
            ),
            Reason::FencingWithoutLease { me, owner, active } => write!(
                f,
                "{me} is not the owner {} and holds no valid lease, but {} still run; fencing at once",
                OwnerClause(owner),
                active.join(", ")
            ),
            Reason::LeaseExpiredFencing {
                me,
                expired_ms_ago: Some(ago),
                active,
            } => write!(
                f,
                "{} owns the group (epoch {}) but its lease ran out {ago} ms ago with {} not stopped; fencing at once",
                me.name,
                me.epoch,
                active.join(", ")
            ),
            Reason::LeaseExpiredFencing {
                me,
                expired_ms_ago: None,
                active,
            } => write!(
                f,
                "{} owns the group (epoch {}) but holds no lease since this process started, with {} not stopped; fencing at once",
                me.name,
                me.epoch,
                active.join(", ")
            ),
            Reason::AwaitingLease { me, .. } => write!(
                f,
                "{} owns the group (epoch {}) but holds no valid lease; starting nothing until the leader confirms it",
                me.name, me.epoch
            ),
            Reason::PausedHolding { me, running, total } => write!(
                f,
                "cluster is paused; {me} leaves its group as it is ({running} of {total} resources running)"
            ),
            Reason::OverMigrationThreshold {
                me,
                fail_count,
                threshold,
                stopped: false,
            } => write!(
                f,
                "{} has failed {fail_count} times (threshold {threshold}); stopping the group (epoch {}) to release it",
                me.name, me.epoch
            ),
            Reason::OverMigrationThreshold {
                me,
                fail_count,
                threshold,
                stopped: true,
            } => write!(
                f,
                "{} has failed {fail_count} times (threshold {threshold}); its group is stopped, releasing ownership (epoch {})",
                me.name, me.epoch
            ),
            Reason::SwitchoverStopping { me, target } => write!(
                f,
                "switchover to {target} requested; {} stops the group (epoch {}) in order, then releases it",
                me.name, me.epoch
            ),
            Reason::SwitchoverReleasing { me, target } => write!(
                f,
                "switchover to {target} requested; {}'s group is stopped, releasing ownership (epoch {})",
                me.name, me.epoch
            ),
            Reason::RestartingInPlace {
                me,
                resource,
                failure,
                attempt,
                max,
            } => write!(
                f,
                "{resource} failed on {} (epoch {}): {failure}; restarting it in place (attempt {attempt} of {max})",
                me.name, me.epoch
            ),
            Reason::RestartsExhausted {
                me,
                resource: Some(resource),
                max,
            } => write!(
                f,
                "{resource} failed on {} (epoch {}) after {max} recoveries in place; stopping the group to release it",
                me.name, me.epoch
            ),
            Reason::RestartsExhausted {
                me,
                resource: None,
                max,
            } => write!(
                f,
                "{} used all {max} recoveries in place and its group is not fully up; stopping the group (epoch {}) to release it",
                me.name, me.epoch
            ),
            Reason::ReleasingAfterFailure { me, max } => write!(
                f,
                "{} gave the group up after {max} recoveries in place; it is stopped, recording the failure and releasing ownership (epoch {})",
                me.name, me.epoch
            ),
            Reason::StartingGroup {
                me,
                lease_left_ms,
                pending,
            } => write!(
                f,
                "{} owns the group (epoch {}); lease valid for another {lease_left_ms} ms; starting {}",
                me.name,
                me.epoch,
                pending.join(", ")
            ),
            Reason::GroupRunning {
                me,
                lease_left_ms,
                count,
            } => write!(
                f,
                "{} owns the group (epoch {}); lease valid for another {lease_left_ms} ms; all {count} resources running",
                me.name, me.epoch
            ),
            Reason::ExecutorBusy { next } => {
                write!(f, "waiting for the running action to finish; next: {next}")
            }
        }
    }
}

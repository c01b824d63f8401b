//! quorate's pure decision layer: observation in, [`Decision`] out.
//!
//! # The protocol this core implements
//!
//! Two management nodes and a witness run Raft. The replicated state names one **owner**
//! `{ node, epoch }`: the only management node allowed to hold the resource group (DRBD
//! Primary, the mounted filesystem, MySQL, the VIP). The epoch is the log index of the entry
//! that granted ownership; it strictly increases and is stamped on every action as the
//! fencing token. The promise above all others: at no instant do two nodes hold the group.
//!
//! **Leases.** The owner renews every `lease/4` or so: it notes `t0` on its own steady
//! clock, asks the leader, and on success trusts its lease until `t0 + lease·(1−ρ)`. The
//! leader answers only after a quorum round confirmed its leadership and only if the committed
//! owner is the asker under that epoch ([`leader::answer_renewal`]); it notes
//! `granted_until = now + lease·(1+ρ)` on *its* clock. A newly elected leader assumes any
//! lease of an earlier term may run until `min(elected_at, earlier_rounds) + lease·(1+ρ)`,
//! where `earlier_rounds` is the last quorum round of an earlier term that a majority took
//! part in: each member reports how many milliseconds ago that was, and the leader maps the
//! age onto its own clock (`now − age`, which can only err late). No instant ever crosses
//! between processes, only such ages; [`time::Timing`] holds the lease arithmetic.
//!
//! **The leader** ([`leader::decide`]) moves ownership in three situations and no other:
//! cold start (no owner: grant to the best node that is not outdated), planned handoff (the
//! owner committed `Released { epoch }` after stopping: grant at once, to the switchover
//! target if eligible), and an unplanned move (the owner stopped renewing: grant only once
//! `max(granted_until[old], min(elected_at, earlier_rounds) + lease·(1+ρ)) + fence_margin`
//! has passed, or at once
//! if the fencing hook confirmed the old owner down). A witness, an outdated, standby or
//! over-threshold node, an unreachable or not-ready node never gets ownership automatically.
//! A change of leader alone never moves anything; a paused cluster moves nothing.
//!
//! **Every node** ([`node::decide`]) reconciles its own group, level-triggered, also right
//! after a restart: the owner with a valid lease brings the group up and keeps it up
//! (restarting failed resources in place a bounded number of times, then giving up and
//! releasing); an owner without a valid lease fences at once if anything runs and otherwise
//! starts nothing; every other node keeps everything stopped, fencing hard when it holds no
//! valid lease. Paused freezes everything except lease-loss fencing.
//!
//! Each decision carries a [`reason::Reason`]: one human sentence with the facts, which is the
//! log line and what `status` shows, plus a stable [`reason::ReasonCode`] tests assert on.
//!
//! The committed state itself is [`state::ClusterState`]: its `apply` is the replicated state
//! machine's deterministic transition, kept here so the scenario tests run it for real.
//!
//! The core reads no clock, does no I/O and starts no thread; time is an input. The caller
//! (the agent's observe-decide-act loop) converts its committed state, peer reports and
//! monitor results into the [`view`] types, runs the decision, hands the actions to an
//! executor that never blocks the loop, and re-runs the decision at the latest at
//! [`Decision::wake_at`].
//!
//! # Limitations (honest list)
//!
//! - Safety rests on inputs the core cannot check: that the view is a committed state, that
//!   every instant comes from one process's steady clock, that clock rates differ by at most
//!   `ρ`, that the lease guard outside the agent enforces the same deadline, and that the
//!   fencing hook's "confirmed" really means the node is down.
//! - A restarted agent has no lease (its predecessor's deadline lives in another process), so
//!   an owner whose agent restarts while its group runs fences it and starts it again once
//!   renewed: an agent restart costs a short outage rather than risking two holders.
//! - A fencing hook that fails does not block failover: the leader falls back to the lease
//!   wait. That keeps the cluster available but leaves a whole-VM freeze covered only by the
//!   guard and DRBD quorum. The hook runs only when a successor exists.
//! - The owner checks a switchover target only against committed marks (membership, role,
//!   outdated, standby, fail count); reachability and readiness are known to the leader only.
//!   If the target cannot take the group after the owner released, the leader hands it to the
//!   best other node, possibly back to the releasing node (under a new epoch).
//! - The core keeps no memory: the caller counts recoveries in place per epoch and tracks the
//!   fencing hook's outcome. `RecordFailure` must be counted at most once per (node, epoch)
//!   by the state machine, because a repeated decision repeats the action.
//! - Once recoveries in place are used up, a group that is not fully up is given up even if
//!   the cause was benign; a resource observed `Stopped` on the owner is simply started again
//!   and not counted as a failure. Fail counts never decay here; an operator resets them.
//! - "Reachable" means heard from within one lease, and "silent owner" means no renewal for
//!   half a lease; neither is configurable separately.
//! - At cold start the choice is by fewest failures then lowest id; the view does not say which
//!   node owned the group last, so a previous owner is not preferred.

use serde::{Deserialize, Serialize};

pub mod leader;
pub mod node;
pub mod reason;
pub mod state;
pub mod time;
pub mod view;

#[cfg(test)]
mod tests;

pub use leader::{LeaderAction, LeaderInput};
pub use node::{NodeAction, NodeInput};
pub use reason::{Reason, ReasonCode};
pub use time::{Millis, Timing};
pub use view::{
    ClusterView, FenceHook, Ineligible, NodeId, NodeView, Owner, PeerHealth, ResourceState,
    ResourceStatus, Role,
};

/// The outcome of one decision: why, what to do, and when to decide again at the latest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision<A> {
    /// Why: the log line and the `status` text.
    pub reason: Reason,
    /// What to do, in order; empty when nothing is to be done.
    pub actions: Vec<A>,
    /// The decision may change by the passing of time alone at this instant (the caller's
    /// clock); decide again then, or earlier when an input changes.
    pub wake_at: Option<Millis>,
}

impl<A> Decision<A> {
    /// A decision that needs no time-based re-check.
    pub fn new(reason: Reason, actions: Vec<A>) -> Self {
        Decision {
            reason,
            actions,
            wake_at: None,
        }
    }

    /// The same decision, to be re-checked at `at` at the latest.
    pub fn wake_at(mut self, at: Millis) -> Self {
        self.wake_at = Some(at);
        self
    }

    /// The stable code of the reason.
    pub fn code(&self) -> ReasonCode {
        self.reason.code()
    }
}

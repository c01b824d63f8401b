//! Each node's own decision: what its local resource group should do right now.
//!
//! Every node (witness included) runs [`decide`] every cycle, and right after the agent
//! starts: it is level-triggered, so a restarted agent needs no memory to pick up where the
//! last one stopped. The ladder of guards, first match wins:
//!
//! 1. **Not the owner** (a witness, another node owns, or this node released its epoch):
//!    keep everything stopped; a hard [`NodeAction::Fence`] when this node holds no valid
//!    lease, an ordered [`NodeAction::StopGroup`] when it still does (a planned handoff).
//!    While paused, leftovers under a still valid lease are left until the lease runs out.
//! 2. **Owner without a valid lease**: if anything is not stopped, fence at once (the lease
//!    ran out, or this process never had one since it started); otherwise start nothing.
//! 3. **Paused**: leave the group as it is. Nothing is started, restarted, stopped in order
//!    or released while paused; only the lease-loss fencing above still happens, because
//!    the promise that no two nodes hold the group outranks maintenance mode.
//! 4. **At the migration threshold**: stop in order, then release.
//! 5. **Switchover to an eligible node pending**: stop in order, then release. A target that
//!    is not a member, a witness, outdated, on standby or at the threshold is refused and
//!    the owner keeps its group.
//! 6. **A resource failed**: restart it in place while recoveries remain, else stop in order,
//!    record the failure and release. Once recoveries are used up (and at least one was
//!    made) a group that is not fully up is never started again in this epoch.
//! 7. **Otherwise**: start whatever is not running, or report the group running.
//!
//! A [`NodeAction::CommitReleased`] only ever follows a [`NodeAction::StopGroup`] in the same
//! ordered list (the executor stops at the first failure, and by the agent contract a stop
//! succeeds only when nothing runs) or a group observed fully stopped. While the executor is
//! busy only a [`NodeAction::Fence`] is issued; it must preempt whatever runs. Every action
//! carries the epoch it serves (the fencing token).

use serde::{Deserialize, Serialize};

use super::reason::{Holder, Reason};
use super::time::{Millis, Timing};
use super::view::{ClusterView, NodeId, Owner, ResourceState, ResourceStatus, Role};
use super::Decision;

/// What the node's executor does, in the order given; it stops at the first failure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeAction {
    /// Start every resource that is not running, in start order; on failure roll back the
    /// ones started, in reverse, and count one recovery in place.
    StartGroup {
        /// The epoch served.
        epoch: u64,
    },
    /// Stop every resource in reverse start order (OCF stop: succeeds or escalates).
    StopGroup {
        /// The epoch served.
        epoch: u64,
    },
    /// Hard stop at once: drop the VIP, stop MySQL hard, unmount, DRBD Secondary.
    /// Preempts anything the executor is doing.
    Fence {
        /// The epoch served.
        epoch: u64,
    },
    /// Recover in place: stop `name` and every resource after it (reverse order), then
    /// start the group again in order. Counts one recovery in place.
    RestartResource {
        /// The failed resource.
        name: String,
        /// The epoch served.
        epoch: u64,
    },
    /// Commit `Released { epoch }` through the leader.
    CommitReleased {
        /// The epoch released.
        epoch: u64,
    },
    /// Commit one more failure for this node. The state machine should count it at most
    /// once per (node, epoch), so a repeated decision cannot count twice.
    RecordFailure {
        /// The epoch whose ownership failed.
        epoch: u64,
    },
}

/// Everything a node's decision reads. Instants are on this node's own clock.
#[derive(Clone, Copy, Debug)]
pub struct NodeInput<'a> {
    /// This node.
    pub me: NodeId,
    /// This node's role from its own config.
    pub role: Role,
    /// This process's current time.
    pub now: Millis,
    /// The committed state as this node applied it.
    pub view: &'a ClusterView,
    /// Timing settings.
    pub timing: &'a Timing,
    /// The end of this node's lease; valid iff `now < lease_until`. `None` when this
    /// process has not been granted one since it started.
    pub lease_until: Option<Millis>,
    /// The local group, in start order, as last monitored.
    pub resources: &'a [ResourceStatus],
    /// The executor is still carrying out earlier actions.
    pub executor_busy: bool,
    /// Recoveries in place this epoch: resource restarts and failed starts. The caller
    /// counts them and resets the count when the epoch changes.
    pub restarts_in_place: u32,
}

/// Decides what this node's group should do now.
pub fn decide(input: &NodeInput<'_>) -> Decision<NodeAction> {
    let decision = decide_ignoring_executor(input);
    let only_fencing = decision
        .actions
        .iter()
        .all(|action| matches!(action, NodeAction::Fence { .. }));
    if input.executor_busy && !only_fencing {
        return Decision {
            reason: Reason::ExecutorBusy {
                next: Box::new(decision.reason),
            },
            actions: Vec::new(),
            wake_at: decision.wake_at,
        };
    }
    decision
}

/// The owner and epoch this node should renew its lease for, if any: it is the committed
/// owner, a management node, and has not released that epoch.
pub fn renewal_due(me: NodeId, role: Role, view: &ClusterView) -> Option<Owner> {
    let owner = view.owner?;
    let mine = owner.node == me && role == Role::Management && !view.owner_released();
    mine.then_some(owner)
}

fn decide_ignoring_executor(input: &NodeInput<'_>) -> Decision<NodeAction> {
    let Some(owner) = renewal_due(input.me, input.role, input.view) else {
        return not_owner(input);
    };
    let me = Holder {
        name: input.view.name_of(input.me),
        epoch: owner.epoch,
    };
    let epoch = owner.epoch;
    let active = active_names(input.resources);
    let lease_until = match input.lease_until {
        Some(until) if input.now < until => until,
        expired => {
            let expired_ms_ago = expired.map(|until| until.until(input.now));
            if active.is_empty() {
                return Decision::new(Reason::AwaitingLease { me, expired_ms_ago }, Vec::new());
            }
            return Decision::new(
                Reason::LeaseExpiredFencing {
                    me,
                    expired_ms_ago,
                    active,
                },
                vec![NodeAction::Fence { epoch }],
            );
        }
    };
    owner_with_lease(input, me, lease_until, &active).wake_at(lease_until)
}

fn not_owner(input: &NodeInput<'_>) -> Decision<NodeAction> {
    let view = input.view;
    let me = view.name_of(input.me);
    let owner = view.owner.map(|owner| Holder {
        name: view.name_of(owner.node),
        epoch: owner.epoch,
    });
    // Stamp the current epoch (or the released one, or 0) on anything done here.
    let epoch = view.owner.map_or(view.released.unwrap_or(0), |o| o.epoch);
    let active = active_names(input.resources);
    let lease_until = input.lease_until.filter(|until| input.now < *until);

    if active.is_empty() {
        let i_released = view.owner.is_some_and(|o| o.node == input.me) && view.owner_released();
        let reason = if input.role == Role::Witness {
            Reason::Witness { me }
        } else if i_released {
            Reason::ReleasedStopped {
                me: Holder { name: me, epoch },
            }
        } else {
            Reason::StandingBy { me, owner }
        };
        return Decision::new(reason, Vec::new());
    }
    match lease_until {
        None => Decision::new(
            Reason::FencingWithoutLease { me, owner, active },
            vec![NodeAction::Fence { epoch }],
        ),
        Some(until) if view.paused => Decision::new(
            Reason::PausedHolding {
                me,
                running: running_count(input.resources),
                total: input.resources.len(),
            },
            Vec::new(),
        )
        .wake_at(until),
        Some(until) => Decision::new(
            Reason::StoppingLeftovers { me, owner, active },
            vec![NodeAction::StopGroup { epoch }],
        )
        .wake_at(until),
    }
}

fn owner_with_lease(
    input: &NodeInput<'_>,
    me: Holder,
    lease_until: Millis,
    active: &[String],
) -> Decision<NodeAction> {
    let view = input.view;
    let timing = input.timing;
    let epoch = me.epoch;
    let resources = input.resources;
    let all_stopped = active.is_empty();

    if view.paused {
        return Decision::new(
            Reason::PausedHolding {
                me: me.name,
                running: running_count(resources),
                total: resources.len(),
            },
            Vec::new(),
        );
    }

    let fail_count = view.node(input.me).map_or(0, |node| node.fail_count);
    if fail_count >= timing.migration_threshold {
        return Decision::new(
            Reason::OverMigrationThreshold {
                me,
                fail_count,
                threshold: timing.migration_threshold,
                stopped: all_stopped,
            },
            stop_then_release(all_stopped, epoch),
        );
    }

    let mut refused_switchover = None;
    if let Some(target) = view.switchover_to.filter(|target| *target != input.me) {
        let target_name = view.name_of(target);
        match view.marks_exclude(target, timing) {
            None => {
                let reason = if all_stopped {
                    Reason::SwitchoverReleasing {
                        me,
                        target: target_name,
                    }
                } else {
                    Reason::SwitchoverStopping {
                        me,
                        target: target_name,
                    }
                };
                return Decision::new(reason, stop_then_release(all_stopped, epoch));
            }
            Some(why) => {
                refused_switchover = Some(Reason::SwitchoverRefused {
                    owner: me.clone(),
                    target: target_name,
                    why,
                });
            }
        }
    }

    let max = timing.max_restarts_in_place;
    let exhausted = input.restarts_in_place >= max;
    let first_failed = resources.iter().find_map(|resource| match &resource.state {
        ResourceState::Failed(why) => Some((resource.name.clone(), why.clone())),
        _ => None,
    });
    let give_up = vec![
        NodeAction::StopGroup { epoch },
        NodeAction::RecordFailure { epoch },
        NodeAction::CommitReleased { epoch },
    ];
    if let Some((resource, failure)) = first_failed {
        if exhausted {
            return Decision::new(
                Reason::RestartsExhausted {
                    me,
                    resource: Some(resource),
                    max,
                },
                give_up,
            );
        }
        return Decision::new(
            Reason::RestartingInPlace {
                me,
                resource: resource.clone(),
                failure,
                attempt: input.restarts_in_place + 1,
                max,
            },
            vec![NodeAction::RestartResource {
                name: resource,
                epoch,
            }],
        );
    }

    let pending: Vec<String> = resources
        .iter()
        .filter(|resource| resource.state != ResourceState::Running)
        .map(|resource| resource.name.clone())
        .collect();
    // Recoveries were used up and the group is not fully up: an earlier give-up stopped it
    // (or the last retried start failed and rolled back). Finish giving up; never start again.
    if exhausted && input.restarts_in_place > 0 && !pending.is_empty() {
        if all_stopped {
            return Decision::new(
                Reason::ReleasingAfterFailure { me, max },
                vec![
                    NodeAction::RecordFailure { epoch },
                    NodeAction::CommitReleased { epoch },
                ],
            );
        }
        return Decision::new(
            Reason::RestartsExhausted {
                me,
                resource: None,
                max,
            },
            give_up,
        );
    }

    let lease_left_ms = input.now.until(lease_until);
    if !pending.is_empty() {
        return Decision::new(
            Reason::StartingGroup {
                me,
                lease_left_ms,
                pending,
            },
            vec![NodeAction::StartGroup { epoch }],
        );
    }
    let reason = refused_switchover.unwrap_or(Reason::GroupRunning {
        me,
        lease_left_ms,
        count: resources.len(),
    });
    Decision::new(reason, Vec::new())
}

/// Stop in order (unless observed stopped already), then release.
fn stop_then_release(all_stopped: bool, epoch: u64) -> Vec<NodeAction> {
    let mut actions = Vec::with_capacity(2);
    if !all_stopped {
        actions.push(NodeAction::StopGroup { epoch });
    }
    actions.push(NodeAction::CommitReleased { epoch });
    actions
}

/// Names of the resources that are not known to be stopped, in start order. Failed and
/// unknown resources count: they may hold part of the group.
fn active_names(resources: &[ResourceStatus]) -> Vec<String> {
    resources
        .iter()
        .filter(|resource| resource.state != ResourceState::Stopped)
        .map(|resource| resource.name.clone())
        .collect()
}

fn running_count(resources: &[ResourceStatus]) -> usize {
    resources
        .iter()
        .filter(|resource| resource.state == ResourceState::Running)
        .count()
}

//! Each node's decisions about its own group: the owner's life cycle, non-owners, pause,
//! recoveries in place, switchover, and the executor being busy.

use super::support::*;
use crate::core::node::{renewal_due, NodeAction};
use crate::core::{Millis, Owner, ReasonCode, ResourceState, Role, Timing};

use NodeAction::{CommitReleased, Fence, RecordFailure, RestartResource, StartGroup, StopGroup};

// ---- the owner with a valid lease -------------------------------------------------------

#[test]
fn owner_with_valid_lease_starts_group() {
    let d = node(N1, cluster().owned_by(N1, 7)).lease_left(840).decide();
    assert_eq!(d.actions, vec![StartGroup { epoch: 7 }]);
    assert_eq!(d.code(), ReasonCode::StartingGroup);
    assert_eq!(
        d.reason.to_string(),
        "node1 owns the group (epoch 7); lease valid for another 840 ms; starting drbd, fs, mysql, vip"
    );
    assert_eq!(d.wake_at, Some(Millis(100_840)));
}

#[test]
fn owner_keeps_running_group() {
    let d = node(N1, cluster().owned_by(N1, 7))
        .lease_left(840)
        .running()
        .decide();
    assert!(d.actions.is_empty());
    assert_eq!(d.code(), ReasonCode::GroupRunning);
    assert_eq!(
        d.reason.to_string(),
        "node1 owns the group (epoch 7); lease valid for another 840 ms; all 4 resources running"
    );
}

#[test]
fn owner_starts_group_when_a_resource_stopped_or_is_unknown() {
    let d = node(N1, cluster().owned_by(N1, 7))
        .lease_left(2000)
        .running()
        .with("vip", ResourceState::Stopped)
        .with("mysql", ResourceState::Unknown)
        .decide();
    assert_eq!(d.actions, vec![StartGroup { epoch: 7 }]);
    assert!(d.reason.to_string().ends_with("; starting mysql, vip"));
}

// ---- the owner without a valid lease ----------------------------------------------------

#[test]
fn owner_lease_expired_with_mysql_running_fences_at_once() {
    let d = node(N1, cluster().owned_by(N1, 7))
        .lease_expired_ago(12)
        .with("drbd", ResourceState::Running)
        .with("fs", ResourceState::Running)
        .with("mysql", ResourceState::Running)
        .decide();
    assert_eq!(d.actions, vec![Fence { epoch: 7 }]);
    assert_eq!(d.code(), ReasonCode::LeaseExpiredFencing);
    assert_eq!(
        d.reason.to_string(),
        "node1 owns the group (epoch 7) but its lease ran out 12 ms ago with drbd, fs, mysql \
         not stopped; fencing at once"
    );
}

#[test]
fn lease_is_invalid_at_its_exact_end() {
    let scene = || node(N1, cluster().owned_by(N1, 7)).running();
    assert_eq!(scene().lease_left(1).decide().actions, vec![]);
    assert_eq!(
        scene().lease_left(0).decide().actions,
        vec![Fence { epoch: 7 }]
    );
}

#[test]
fn owner_without_lease_yet_waits() {
    let d = node(N1, cluster().owned_by(N1, 7)).decide();
    assert!(d.actions.is_empty());
    assert_eq!(d.code(), ReasonCode::AwaitingLease);
    assert_eq!(
        d.reason.to_string(),
        "node1 owns the group (epoch 7) but holds no valid lease; starting nothing until the \
         leader confirms it"
    );
}

#[test]
fn owner_lease_expired_with_everything_stopped_waits() {
    let d = node(N1, cluster().owned_by(N1, 7))
        .lease_expired_ago(5_000)
        .decide();
    assert!(d.actions.is_empty());
    assert_eq!(d.code(), ReasonCode::AwaitingLease);
}

#[test]
fn restarted_owner_with_stale_group_fences_before_anything_else() {
    // The agent restarted: no lease in this process, nothing monitored yet.
    let d = node(N1, cluster().owned_by(N1, 7)).unknown().decide();
    assert_eq!(d.actions, vec![Fence { epoch: 7 }]);
    assert_eq!(
        d.reason.to_string(),
        "node1 owns the group (epoch 7) but holds no lease since this process started, with \
         drbd, fs, mysql, vip not stopped; fencing at once"
    );
}

#[test]
fn failed_resource_without_lease_is_fenced_not_restarted() {
    let d = node(N1, cluster().owned_by(N1, 7))
        .lease_expired_ago(1)
        .failed("mysql", "crashed")
        .decide();
    assert_eq!(d.actions, vec![Fence { epoch: 7 }]);
}

// ---- recoveries in place ----------------------------------------------------------------

#[test]
fn failed_resource_restarts_in_place() {
    let d = node(N1, cluster().owned_by(N1, 7))
        .lease_left(2000)
        .running()
        .failed("mysql", "not accepting connections")
        .decide();
    assert_eq!(
        d.actions,
        vec![RestartResource {
            name: "mysql".into(),
            epoch: 7
        }]
    );
    assert_eq!(d.code(), ReasonCode::RestartingInPlace);
    assert_eq!(
        d.reason.to_string(),
        "mysql failed on node1 (epoch 7): not accepting connections; restarting it in place \
         (attempt 1 of 2)"
    );
}

#[test]
fn restart_picks_first_failed_in_start_order() {
    let d = node(N1, cluster().owned_by(N1, 7))
        .lease_left(2000)
        .running()
        .failed("vip", "address missing")
        .failed("fs", "read-only")
        .restarts(1)
        .decide();
    assert_eq!(
        d.actions,
        vec![RestartResource {
            name: "fs".into(),
            epoch: 7
        }]
    );
    assert!(d.reason.to_string().contains("(attempt 2 of 2)"));
}

#[test]
fn restarts_exhausted_stops_records_and_releases() {
    let d = node(N1, cluster().owned_by(N1, 7))
        .lease_left(2000)
        .running()
        .failed("mysql", "crashed")
        .restarts(2)
        .decide();
    assert_eq!(
        d.actions,
        vec![
            StopGroup { epoch: 7 },
            RecordFailure { epoch: 7 },
            CommitReleased { epoch: 7 }
        ]
    );
    assert_eq!(d.code(), ReasonCode::RestartsExhausted);
    assert_eq!(
        d.reason.to_string(),
        "mysql failed on node1 (epoch 7) after 2 recoveries in place; stopping the group to \
         release it"
    );
}

#[test]
fn after_giving_up_stopped_group_is_not_started_again() {
    let d = node(N1, cluster().owned_by(N1, 7))
        .lease_left(2000)
        .restarts(2)
        .decide();
    assert_eq!(
        d.actions,
        vec![RecordFailure { epoch: 7 }, CommitReleased { epoch: 7 }]
    );
    assert_eq!(d.code(), ReasonCode::ReleasingAfterFailure);
}

#[test]
fn failed_start_is_retried_while_recoveries_remain() {
    // One start failed and rolled back: everything stopped, one recovery used.
    let d = node(N1, cluster().owned_by(N1, 7))
        .lease_left(2000)
        .restarts(1)
        .decide();
    assert_eq!(d.actions, vec![StartGroup { epoch: 7 }]);
}

#[test]
fn exhausted_owner_keeps_a_fully_running_group() {
    let d = node(N1, cluster().owned_by(N1, 7))
        .lease_left(2000)
        .running()
        .restarts(2)
        .decide();
    assert!(d.actions.is_empty());
    assert_eq!(d.code(), ReasonCode::GroupRunning);
}

#[test]
fn no_recoveries_allowed_gives_up_at_first_failure_but_starts_a_fresh_group() {
    let no_restarts = Timing {
        max_restarts_in_place: 0,
        ..timing()
    };
    let fresh = node(N1, cluster().owned_by(N1, 7))
        .timing(no_restarts.clone())
        .lease_left(2000)
        .decide();
    assert_eq!(fresh.actions, vec![StartGroup { epoch: 7 }]);

    let failed = node(N1, cluster().owned_by(N1, 7))
        .timing(no_restarts)
        .lease_left(2000)
        .running()
        .failed("drbd", "diskless")
        .decide();
    assert_eq!(failed.code(), ReasonCode::RestartsExhausted);
    assert_eq!(failed.actions.len(), 3);
}

// ---- migration threshold ----------------------------------------------------------------

#[test]
fn owner_over_migration_threshold_stops_then_releases() {
    let d = node(N1, cluster().owned_by(N1, 7).fails(N1, 3))
        .lease_left(2000)
        .running()
        .decide();
    assert_eq!(
        d.actions,
        vec![StopGroup { epoch: 7 }, CommitReleased { epoch: 7 }]
    );
    assert_eq!(d.code(), ReasonCode::OverMigrationThreshold);
    assert_eq!(
        d.reason.to_string(),
        "node1 has failed 3 times (threshold 3); stopping the group (epoch 7) to release it"
    );
}

#[test]
fn owner_over_migration_threshold_with_group_stopped_only_releases() {
    let d = node(N1, cluster().owned_by(N1, 7).fails(N1, 4))
        .lease_left(2000)
        .decide();
    assert_eq!(d.actions, vec![CommitReleased { epoch: 7 }]);
    assert_eq!(d.code(), ReasonCode::OverMigrationThreshold);
}

// ---- switchover -------------------------------------------------------------------------

#[test]
fn switchover_makes_owner_stop_in_order_then_release() {
    let d = node(N1, cluster().owned_by(N1, 7).switchover_to(N2))
        .lease_left(2000)
        .running()
        .decide();
    assert_eq!(
        d.actions,
        vec![StopGroup { epoch: 7 }, CommitReleased { epoch: 7 }]
    );
    assert_eq!(d.code(), ReasonCode::SwitchoverStopping);
}

#[test]
fn switchover_with_group_stopped_commits_release() {
    let d = node(N1, cluster().owned_by(N1, 7).switchover_to(N2))
        .lease_left(2000)
        .decide();
    assert_eq!(d.actions, vec![CommitReleased { epoch: 7 }]);
    assert_eq!(d.code(), ReasonCode::SwitchoverReleasing);
}

#[test]
fn switchover_to_standby_target_refused_owner_keeps_group() {
    let d = node(N1, cluster().owned_by(N1, 7).switchover_to(N2).standby(N2))
        .lease_left(2000)
        .running()
        .decide();
    assert!(d.actions.is_empty());
    assert_eq!(d.code(), ReasonCode::SwitchoverRefused);
    assert_eq!(
        d.reason.to_string(),
        "switchover to node2 refused: node2 is on standby; node1 keeps the group (epoch 7)"
    );
}

#[test]
fn switchover_to_outdated_target_refused_and_group_still_started() {
    let d = node(N1, cluster().owned_by(N1, 7).switchover_to(N2).outdated(N2))
        .lease_left(2000)
        .decide();
    assert_eq!(d.actions, vec![StartGroup { epoch: 7 }]);
}

#[test]
fn switchover_to_witness_refused() {
    let d = node(N1, cluster().owned_by(N1, 7).switchover_to(W))
        .lease_left(2000)
        .running()
        .decide();
    assert!(d.actions.is_empty());
    assert!(d.reason.to_string().contains("witness is a witness"));
}

#[test]
fn switchover_to_self_is_ignored() {
    let d = node(N1, cluster().owned_by(N1, 7).switchover_to(N1))
        .lease_left(2000)
        .running()
        .decide();
    assert!(d.actions.is_empty());
    assert_eq!(d.code(), ReasonCode::GroupRunning);
}

// ---- non-owners ------------------------------------------------------------------------

#[test]
fn non_owner_keeps_group_stopped() {
    let d = node(N2, cluster().owned_by(N1, 7)).decide();
    assert!(d.actions.is_empty());
    assert_eq!(d.code(), ReasonCode::StandingBy);
    assert_eq!(
        d.reason.to_string(),
        "node2 is not the owner (node1 owns it, epoch 7); its group stays stopped"
    );
}

#[test]
fn non_owner_without_lease_fences_leftovers() {
    let d = node(N2, cluster().owned_by(N1, 7))
        .with("vip", ResourceState::Running)
        .decide();
    assert_eq!(d.actions, vec![Fence { epoch: 7 }]);
    assert_eq!(d.code(), ReasonCode::FencingWithoutLease);
    assert_eq!(
        d.reason.to_string(),
        "node2 is not the owner (node1 owns it, epoch 7) and holds no valid lease, but vip \
         still run; fencing at once"
    );
}

#[test]
fn old_owner_with_valid_lease_after_handoff_stops_in_order() {
    let d = node(N1, cluster().owned_by(N2, 9))
        .lease_left(1000)
        .running()
        .decide();
    assert_eq!(d.actions, vec![StopGroup { epoch: 9 }]);
    assert_eq!(d.code(), ReasonCode::StoppingLeftovers);
}

#[test]
fn released_owner_stays_stopped() {
    let d = node(N1, cluster().owned_by(N1, 7).released())
        .lease_left(1000)
        .decide();
    assert!(d.actions.is_empty());
    assert_eq!(d.code(), ReasonCode::ReleasedStopped);
    assert_eq!(
        d.reason.to_string(),
        "node1 (epoch 7) released the group; it stays stopped until the leader hands it on"
    );
}

#[test]
fn released_owner_with_leftovers_stops_them() {
    let d = node(N1, cluster().owned_by(N1, 7).released())
        .lease_left(1000)
        .with("drbd", ResourceState::Running)
        .decide();
    assert_eq!(d.actions, vec![StopGroup { epoch: 7 }]);
}

#[test]
fn witness_never_starts_anything() {
    // Even a (corrupt) view naming the witness as owner, with a lease, starts nothing.
    let d = node(W, cluster().owned_by(W, 7)).lease_left(2000).decide();
    assert!(d.actions.is_empty());
    assert_eq!(d.code(), ReasonCode::Witness);
    assert_eq!(
        d.reason.to_string(),
        "witness is a witness; it never holds the group"
    );
    // A management node whose own config says witness is treated the same.
    let d = node(N1, cluster().owned_by(N1, 7))
        .configured_as_witness()
        .lease_left(2000)
        .decide();
    assert_eq!(d.code(), ReasonCode::Witness);
}

// ---- paused -----------------------------------------------------------------------------

#[test]
fn paused_owner_starts_nothing() {
    let d = node(N1, cluster().owned_by(N1, 7).paused())
        .lease_left(2000)
        .with("drbd", ResourceState::Running)
        .with("fs", ResourceState::Running)
        .decide();
    assert!(d.actions.is_empty());
    assert_eq!(d.code(), ReasonCode::PausedHolding);
    assert_eq!(
        d.reason.to_string(),
        "cluster is paused; node1 leaves its group as it is (2 of 4 resources running)"
    );
}

#[test]
fn paused_owner_does_not_restart_release_or_switch_over() {
    let view = cluster()
        .owned_by(N1, 7)
        .paused()
        .fails(N1, 5)
        .switchover_to(N2);
    let d = node(N1, view)
        .lease_left(2000)
        .running()
        .failed("mysql", "crashed")
        .restarts(2)
        .decide();
    assert!(d.actions.is_empty());
    assert_eq!(d.code(), ReasonCode::PausedHolding);
}

#[test]
fn paused_owner_whose_lease_ran_out_still_fences() {
    let d = node(N1, cluster().owned_by(N1, 7).paused())
        .lease_expired_ago(3)
        .running()
        .decide();
    assert_eq!(d.actions, vec![Fence { epoch: 7 }]);
}

#[test]
fn paused_non_owner_fences_without_lease_but_leaves_with_one() {
    let view = cluster().owned_by(N2, 9).paused();
    let d = node(N1, view.clone()).running().decide();
    assert_eq!(d.actions, vec![Fence { epoch: 9 }]);
    let d = node(N1, view).lease_left(500).running().decide();
    assert!(d.actions.is_empty());
    assert_eq!(d.code(), ReasonCode::PausedHolding);
}

// ---- the executor -----------------------------------------------------------------------

#[test]
fn busy_executor_defers_start() {
    let d = node(N1, cluster().owned_by(N1, 7))
        .lease_left(840)
        .busy()
        .decide();
    assert!(d.actions.is_empty());
    assert_eq!(d.code(), ReasonCode::ExecutorBusy);
    assert_eq!(
        d.reason.to_string(),
        "waiting for the running action to finish; next: node1 owns the group (epoch 7); lease \
         valid for another 840 ms; starting drbd, fs, mysql, vip"
    );
}

#[test]
fn busy_executor_does_not_delay_fencing() {
    let d = node(N1, cluster().owned_by(N1, 7))
        .lease_expired_ago(1)
        .running()
        .busy()
        .decide();
    assert_eq!(d.actions, vec![Fence { epoch: 7 }]);
    assert_eq!(d.code(), ReasonCode::LeaseExpiredFencing);
}

#[test]
fn busy_executor_with_nothing_to_do_reports_the_steady_state() {
    let d = node(N2, cluster().owned_by(N1, 7)).busy().decide();
    assert_eq!(d.code(), ReasonCode::StandingBy);
}

// ---- renewal ----------------------------------------------------------------------------

#[test]
fn renewal_due_only_for_unreleased_management_owner() {
    let view = cluster().owned_by(N1, 7);
    assert_eq!(
        renewal_due(N1, Role::Management, &view),
        Some(Owner { node: N1, epoch: 7 })
    );
    assert_eq!(renewal_due(N2, Role::Management, &view), None);
    assert_eq!(renewal_due(N1, Role::Witness, &view), None);
    assert_eq!(renewal_due(N1, Role::Management, &view.released()), None);
    assert_eq!(renewal_due(N1, Role::Management, &cluster()), None);
}

//! Both sides together: the leader's and the nodes' decisions fed into each other through the
//! replicated state machine's real `apply` ([`commit_leader`], [`commit_node`]).

use super::support::*;
use crate::core::leader::{answer_renewal, LeaderAction, RenewalRefusal};
use crate::core::node::{renewal_due, NodeAction};
use crate::core::{Millis, Owner, ReasonCode};

use NodeAction::{CommitReleased, Fence, RecordFailure, StartGroup, StopGroup};

#[test]
fn planned_switchover_end_to_end() {
    let t = timing();
    let mut view = cluster().owned_by(N1, 7).switchover_to(N2);
    let fresh_grant = 102_500;

    let d = leader(view.clone()).granted(N1, fresh_grant).decide();
    assert_eq!(d.code(), ReasonCode::SwitchoverPending);

    let d = node(N1, view.clone()).lease_left(2000).running().decide();
    assert_eq!(
        d.actions,
        vec![StopGroup { epoch: 7 }, CommitReleased { epoch: 7 }]
    );
    commit_node(&mut view, N1, &d.actions);
    assert_eq!(view.released, Some(7));

    // node1 stopped and released: it keeps still, and it no longer renews.
    let d = node(N1, view.clone()).lease_left(1500).decide();
    assert_eq!(d.code(), ReasonCode::ReleasedStopped);
    assert_eq!(renewal_due(N1, crate::core::Role::Management, &view), None);

    // The leader grants at once although node1's grant still runs.
    let d = leader(view.clone()).granted(N1, fresh_grant).decide();
    assert_eq!(d.actions, vec![grant(N2, Some((N1, 7)))]);
    assert!(commit_leader(&mut view, &d.actions[0], 8));

    // node2 owns epoch 8 but starts only once its first renewal is answered.
    let d = node(N2, view.clone()).decide();
    assert_eq!(d.code(), ReasonCode::AwaitingLease);
    let until = answer_renewal(&view, &t, Millis(100_000), N2, 8).expect("node2 owns epoch 8");
    assert_eq!(until, Millis(103_030));
    let d = node(N2, view.clone())
        .lease_until(t.owner_lease_until(Millis(100_000)))
        .decide();
    assert_eq!(d.actions, vec![StartGroup { epoch: 8 }]);

    // node1's late renewal for epoch 7 is refused; it stands by.
    assert_eq!(
        answer_renewal(&view, &t, Millis(100_000), N1, 7),
        Err(RenewalRefusal::NotOwner {
            owner: Some(Owner { node: N2, epoch: 8 })
        })
    );
    assert_eq!(node(N1, view).decide().code(), ReasonCode::StandingBy);
}

#[test]
fn partitioned_owner_fences_before_the_leader_moves_under_worst_drift() {
    // Real time r in ms. The owner's clock runs 1 % slow, the leader's 1 % fast: the owner's
    // lease lasts longest and the leader's wait is shortest in real time.
    let t = timing();
    let owner_clock = |r: u64| r * 990 / 1000;
    let leader_clock = |r: u64| r * 1010 / 1000;
    let view = cluster().owned_by(N1, 7);
    let last_renewal = 50_000;
    let lease_until = t.owner_lease_until(Millis(owner_clock(last_renewal)));
    let granted_until = t.leader_granted_until(Millis(leader_clock(last_renewal)));

    let mut fenced_at = None;
    let mut granted_at = None;
    for r in last_renewal..last_renewal + 10_000 {
        if fenced_at.is_none() {
            let d = node(N1, view.clone())
                .at(owner_clock(r))
                .lease_until(lease_until)
                .running()
                .decide();
            if d.actions == vec![Fence { epoch: 7 }] {
                fenced_at = Some(r);
            } else {
                assert_eq!(d.code(), ReasonCode::GroupRunning, "at real {r}");
            }
        }
        if granted_at.is_none() {
            let d = leader(view.clone())
                .at(leader_clock(r))
                .granted(N1, granted_until.0)
                .decide();
            if !d.actions.is_empty() {
                assert_eq!(d.actions, vec![grant(N2, Some((N1, 7)))]);
                granted_at = Some(r);
            }
        }
    }
    let fenced_at = fenced_at.expect("the owner fences");
    let granted_at = granted_at.expect("the leader moves the group");
    assert!(
        granted_at >= fenced_at + t.fence_margin_ms * 990 / 1010,
        "owner fenced at real {fenced_at} ms, leader granted at real {granted_at} ms"
    );
}

#[test]
fn restart_of_owner_with_stale_lease_fences_then_recovers() {
    let t = timing();
    let view = cluster().owned_by(N1, 7);
    // node1's agent (which also led) restarted: node2 became leader at 10 000 on its clock.
    let d = node(N1, view.clone()).at(200).unknown().decide();
    assert_eq!(d.actions, vec![Fence { epoch: 7 }]);
    let d = leader(view.clone()).elected(10_000).at(10_300).decide();
    assert!(
        d.actions.is_empty(),
        "a new leader must not move a possibly renewing owner"
    );
    assert_eq!(d.code(), ReasonCode::OwnerRenewing);

    // Fenced, no lease yet: node1 waits and asks for one.
    let d = node(N1, view.clone()).at(400).decide();
    assert_eq!(d.code(), ReasonCode::AwaitingLease);
    assert_eq!(
        renewal_due(N1, crate::core::Role::Management, &view),
        Some(Owner { node: N1, epoch: 7 })
    );
    let granted = answer_renewal(&view, &t, Millis(10_500), N1, 7).expect("node1 still owns");

    let d = leader(view.clone())
        .elected(10_000)
        .at(10_600)
        .granted(N1, granted.0)
        .decide();
    assert_eq!(d.code(), ReasonCode::OwnerRenewing);
    let d = node(N1, view)
        .at(450)
        .lease_until(t.owner_lease_until(Millis(400)))
        .decide();
    assert_eq!(d.actions, vec![StartGroup { epoch: 7 }]);
}

#[test]
fn both_sides_after_full_restart_without_the_old_owner() {
    let t = timing();
    let mut view = cluster().owned_by(N1, 7);
    let scene = |view: &crate::core::ClusterView, now: u64| {
        leader(view.clone()).elected(1_000).at(now).never_heard(N1)
    };
    assert_eq!(
        scene(&view, 2_499).decide().code(),
        ReasonCode::OwnerRenewing
    );
    let d = scene(&view, 2_500).decide();
    assert_eq!(d.code(), ReasonCode::WaitingForOldLease);
    assert_eq!(d.wake_at, Some(Millis(4_530)));
    assert_eq!(
        node(N2, view.clone()).decide().code(),
        ReasonCode::StandingBy
    );

    let d = scene(&view, 4_530).decide();
    assert_eq!(d.actions, vec![grant(N2, Some((N1, 7)))]);
    assert!(commit_leader(&mut view, &d.actions[0], 20));

    let d = node(N2, view.clone()).decide();
    assert_eq!(d.code(), ReasonCode::AwaitingLease);
    answer_renewal(&view, &t, Millis(4_600), N2, 20).expect("node2 owns epoch 20");
    let d = node(N2, view.clone()).lease_left(2_970).decide();
    assert_eq!(d.actions, vec![StartGroup { epoch: 20 }]);

    // node1 comes back with whatever it had: it is not the owner and holds no lease.
    let d = node(N1, view.clone()).unknown().decide();
    assert_eq!(d.actions, vec![Fence { epoch: 20 }]);
    assert!(answer_renewal(&view, &t, Millis(9_000), N1, 7).is_err());
}

#[test]
fn just_elected_leader_does_not_steal_from_renewing_owner() {
    let t = timing();
    let view = cluster().owned_by(N1, 7);
    let elected = 100_000;
    let mut granted_until = None;
    for step in 0..40u64 {
        let now = elected + step * 250;
        if step % 3 == 1 {
            // The owner renews every 750 ms, starting 250 ms after the election.
            granted_until = Some(answer_renewal(&view, &t, Millis(now), N1, 7).unwrap());
        }
        let mut scene = leader(view.clone()).elected(elected).at(now);
        if let Some(until) = granted_until {
            scene = scene.granted(N1, until.0);
        }
        let d = scene.decide();
        assert!(d.actions.is_empty(), "moved at {now}: {}", d.reason);
        assert_eq!(d.code(), ReasonCode::OwnerRenewing);
    }
}

#[test]
fn leader_does_not_regrant_after_its_grant_commits() {
    let mut view = cluster().owned_by(N1, 7);
    let d = leader(view.clone()).decide();
    assert!(commit_leader(&mut view, &d.actions[0], 8));
    // The same leader, next cycle: node2 owns since now and has not renewed yet.
    let d = leader(view.clone())
        .owner_since(100_000)
        .at(100_010)
        .decide();
    assert!(d.actions.is_empty());
    assert_eq!(d.code(), ReasonCode::OwnerRenewing);
    // A late duplicate of the first grant would be refused by compare-and-set.
    assert!(!commit_leader(
        &mut view,
        &LeaderAction::GrantOwnership {
            node: N2,
            replaces: Some(Owner { node: N1, epoch: 7 }),
        },
        9
    ));
}

#[test]
fn migration_threshold_round_trip() {
    let mut view = cluster().owned_by(N1, 7).fails(N1, 2);
    let d = node(N1, view.clone())
        .lease_left(2_000)
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
    commit_node(&mut view, N1, &d.actions);
    assert_eq!(view.node(N1).unwrap().fail_count, 3);

    let d = leader(view.clone()).decide();
    assert_eq!(d.actions, vec![grant(N2, Some((N1, 7)))]);
    assert!(commit_leader(&mut view, &d.actions[0], 8));

    // Later node2 goes silent: node1, at the threshold, is not taken back.
    let d = leader(view).granted(N2, 1_000).decide();
    assert!(d.actions.is_empty());
    assert!(d
        .reason
        .to_string()
        .contains("node1 has failed 3 times (threshold 3)"));
}

#[test]
fn switchover_to_outdated_target_refused_on_both_sides() {
    let view = cluster().owned_by(N1, 7).switchover_to(N2).outdated(N2);
    let d = leader(view.clone()).granted(N1, 102_500).decide();
    assert_eq!(d.code(), ReasonCode::SwitchoverRefused);
    let d = node(N1, view).lease_left(2_000).running().decide();
    assert!(d.actions.is_empty());
    assert_eq!(d.code(), ReasonCode::SwitchoverRefused);
}

#[test]
fn failed_start_on_new_owner_hands_group_back_after_recoveries() {
    // node2 took over (epoch 8) but its MySQL will not start: two failed starts, then it
    // gives up; node1 (not at the threshold) gets the group back under a new epoch.
    let mut view = cluster().owned_by(N2, 8);
    let d = node(N2, view.clone())
        .lease_left(2_000)
        .restarts(1)
        .decide();
    assert_eq!(d.actions, vec![StartGroup { epoch: 8 }]);
    let d = node(N2, view.clone())
        .lease_left(2_000)
        .restarts(2)
        .decide();
    assert_eq!(
        d.actions,
        vec![RecordFailure { epoch: 8 }, CommitReleased { epoch: 8 }]
    );
    commit_node(&mut view, N2, &d.actions);
    let d = leader(view.clone()).decide();
    assert_eq!(d.actions, vec![grant(N1, Some((N2, 8)))]);
    assert_eq!(d.code(), ReasonCode::GrantHandoff);
}

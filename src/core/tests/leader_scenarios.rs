//! The leader's decisions: cold start, planned handoff, unplanned failover, fencing hook.

use super::support::*;
use crate::core::leader::{answer_renewal, LeaderAction, RenewalRefusal};
use crate::core::{FenceHook, Millis, Owner, ReasonCode};

fn owner(node: crate::core::NodeId, epoch: u64) -> Owner {
    Owner { node, epoch }
}

// ---- cold start -------------------------------------------------------------------------

#[test]
fn cold_start_grants_to_lowest_id_when_all_equal() {
    let d = leader(cluster()).decide();
    assert_eq!(d.actions, vec![grant(N1, None)]);
    assert_eq!(d.code(), ReasonCode::GrantColdStart);
    assert_eq!(
        d.reason.to_string(),
        "no node owns the group; giving it to node1"
    );
}

#[test]
fn cold_start_prefers_fewer_failures() {
    let d = leader(cluster().fails(N1, 2).fails(N2, 1)).decide();
    assert_eq!(d.actions, vec![grant(N2, None)]);
    assert_eq!(d.code(), ReasonCode::GrantColdStart);
}

#[test]
fn outdated_node_never_chosen_at_cold_start() {
    let d = leader(cluster().outdated(N1)).decide();
    assert_eq!(d.actions, vec![grant(N2, None)]);

    let d = leader(cluster().outdated(N1).outdated(N2)).decide();
    assert!(d.actions.is_empty());
    assert_eq!(d.code(), ReasonCode::NoEligibleNode);
}

#[test]
fn witness_never_chosen() {
    let d = leader(cluster().outdated(N1).standby(N2)).decide();
    assert!(d.actions.is_empty());
    assert_eq!(d.code(), ReasonCode::NoEligibleNode);
    assert_eq!(
        d.reason.to_string(),
        "no node owns the group, but no node can take the group: node1 is outdated, \
         node2 is on standby, witness is a witness; doing nothing"
    );
}

#[test]
fn cold_start_skips_unreachable_and_unready_nodes() {
    let d = leader(cluster()).never_heard(N1).decide();
    assert_eq!(d.actions, vec![grant(N2, None)]);

    let d = leader(cluster()).never_heard(N1).not_ready(N2).decide();
    assert!(d.actions.is_empty());
    assert_eq!(
        d.reason.to_string(),
        "no node owns the group, but no node can take the group: node1 has never been heard \
         from, node2 reports it cannot run the group, witness is a witness; doing nothing"
    );
}

#[test]
fn paused_cluster_does_not_cold_start() {
    let d = leader(cluster().paused()).decide();
    assert!(d.actions.is_empty());
    assert_eq!(d.code(), ReasonCode::LeaderPaused);
    assert_eq!(
        d.reason.to_string(),
        "cluster is paused; no node owns the group and none is chosen"
    );
}

// ---- a new leader ------------------------------------------------------------------------

#[test]
fn a_new_leader_decides_nothing_until_its_own_first_entry_is_applied() {
    // Its applied state shows no owner, but an earlier leader's grant may be committed and
    // not yet applied here: a cold start now could give the group to a second node.
    let d = leader(cluster()).own_entry_not_applied().decide();
    assert!(d.actions.is_empty());
    assert_eq!(d.code(), ReasonCode::LeaderCatchingUp);
    assert_eq!(
        d.reason.to_string(),
        "newly elected; deciding nothing about ownership until this leader's first entry is \
         applied (its applied state may be behind the committed one)"
    );
    // The same for a release it applied: a later grant may already have been committed.
    let released = cluster().owned_by(N1, 5).released();
    let d = leader(released.clone()).own_entry_not_applied().decide();
    assert!(d.actions.is_empty());
    assert_eq!(d.code(), ReasonCode::LeaderCatchingUp);
    // And for a silent owner, however long ago it was heard.
    let d = leader(cluster().owned_by(N1, 5))
        .silent_for(N1, 60_000)
        .own_entry_not_applied()
        .decide();
    assert!(d.actions.is_empty());
    // Once its own entry is applied, the same states decide as they always did.
    assert_eq!(leader(cluster()).decide().actions, vec![grant(N1, None)]);
    assert_eq!(leader(released).decide().code(), ReasonCode::GrantHandoff);
}

// ---- owner renewing ---------------------------------------------------------------------

#[test]
fn healthy_owner_keeps_group() {
    let d = leader(cluster().owned_by(N1, 7))
        .at(50_000)
        .granted(N1, 52_500)
        .decide();
    assert!(d.actions.is_empty());
    assert_eq!(d.code(), ReasonCode::OwnerRenewing);
    assert_eq!(
        d.reason.to_string(),
        "node1 owns the group (epoch 7); lease granted for another 2500 ms"
    );
    // Renewed at 52 500 − 3030 = 49 470; silent 1500 ms later unless it renews again.
    assert_eq!(d.wake_at, Some(Millis(50_970)));
}

#[test]
fn change_of_leader_alone_moves_nothing() {
    // Elected 1000 ms ago, no renewal heard yet: the owner is not silent.
    let d = leader(cluster().owned_by(N1, 7)).elected(99_000).decide();
    assert!(d.actions.is_empty());
    assert_eq!(d.code(), ReasonCode::OwnerRenewing);
    assert_eq!(
        d.reason.to_string(),
        "node1 owns the group (epoch 7); no renewal from it yet, it counts as silent in 500 ms"
    );
}

#[test]
fn newly_granted_owner_gets_time_to_renew() {
    // The leader granted ownership to node2 at 99 500; node2 has not renewed yet, and an old
    // grant to node2 from an earlier ownership must not count as a renewal.
    let d = leader(cluster().owned_by(N2, 12))
        .elected(10_000)
        .owner_since(99_500)
        .granted(N2, 40_000)
        .decide();
    assert!(d.actions.is_empty());
    assert_eq!(d.code(), ReasonCode::OwnerRenewing);
    assert_eq!(d.wake_at, Some(Millis(101_000)));
}

// ---- unplanned failover -----------------------------------------------------------------

#[test]
fn new_leader_waits_full_lease_from_election_before_moving() {
    let scene = || leader(cluster().owned_by(N1, 7)).elected(10_000);
    // Silent from 11 500 (election + lease/2); the lease may run until 10 000 + 3030.
    let d = scene().at(11_500).decide();
    assert!(d.actions.is_empty());
    assert_eq!(d.code(), ReasonCode::WaitingForOldLease);
    assert_eq!(d.wake_at, Some(Millis(13_530)));

    let d = scene().at(13_529).decide();
    assert!(d.actions.is_empty());
    assert_eq!(
        d.reason.to_string(),
        "owner node1 stopped renewing; waiting 1 ms for its lease to run out (a whole lease from \
         this leader's election) before moving the group"
    );

    let d = scene().at(13_530).decide();
    assert_eq!(d.actions, vec![grant(N2, Some((N1, 7)))]);
    assert_eq!(d.code(), ReasonCode::GrantAfterLeaseExpiry);
    assert_eq!(
        d.reason.to_string(),
        "owner node1 (epoch 7) stopped renewing and its lease has run out (a whole lease from \
         this leader's election); giving the group to node2"
    );
}

#[test]
fn silent_owner_waits_for_its_granted_lease_plus_margin() {
    let scene = || leader(cluster().owned_by(N1, 7)).granted(N1, 50_000);
    let d = scene().at(50_080).decide();
    assert!(d.actions.is_empty());
    assert_eq!(d.code(), ReasonCode::WaitingForOldLease);
    assert_eq!(
        d.reason.to_string(),
        "owner node1 stopped renewing; waiting 420 ms for its lease to run out (the end of the \
         lease this leader granted) before moving the group"
    );
    let d = scene().at(50_500).decide();
    assert_eq!(d.actions, vec![grant(N2, Some((N1, 7)))]);
}

#[test]
fn wait_uses_election_when_it_ends_later_than_the_grant() {
    // A grant recorded by this leader ends at 20 000, but it was (re-)elected at 19 000:
    // any lease may run until 22 030.
    let d = leader(cluster().owned_by(N1, 7))
        .granted(N1, 20_000)
        .elected(19_000)
        .at(22_000)
        .decide();
    assert!(d.actions.is_empty());
    assert_eq!(d.wake_at, Some(Millis(22_530)));
}

#[test]
fn new_leader_counts_the_lease_from_the_last_round_a_majority_saw() {
    // The owner also led and died; a majority last took part in one of its rounds at 9 200
    // and this node was elected at 10 000. No lease of the old term started after 9 200, so
    // it has surely run out at 9 200 + 3030, not 10 000 + 3030.
    let scene = || {
        leader(cluster().owned_by(N1, 7))
            .elected(10_000)
            .earlier_rounds(9_200)
    };
    let d = scene().at(11_500).decide();
    assert!(d.actions.is_empty());
    assert_eq!(d.code(), ReasonCode::WaitingForOldLease);
    assert_eq!(d.wake_at, Some(Millis(12_730)));
    assert_eq!(
        d.reason.to_string(),
        "owner node1 stopped renewing; waiting 1230 ms for its lease to run out (a whole lease \
         after a majority last heard the previous leader) before moving the group"
    );
    assert!(scene().at(12_729).decide().actions.is_empty());
    let d = scene().at(12_730).decide();
    assert_eq!(d.actions, vec![grant(N2, Some((N1, 7)))]);
    assert_eq!(d.code(), ReasonCode::GrantAfterLeaseExpiry);
}

#[test]
fn earlier_rounds_never_shorten_a_lease_of_this_term_or_outlast_the_election_bound() {
    // A round "after" the election (clock mapping slack) changes nothing: the election
    // bound is the earlier one.
    let d = leader(cluster().owned_by(N1, 7))
        .elected(10_000)
        .earlier_rounds(10_400)
        .at(11_500)
        .decide();
    assert_eq!(d.wake_at, Some(Millis(13_530)));
    // A lease this leader granted in its own term still runs to its end.
    let d = leader(cluster().owned_by(N1, 7))
        .elected(10_000)
        .earlier_rounds(9_200)
        .granted(N1, 14_000)
        .at(14_000)
        .decide();
    assert!(d.actions.is_empty());
    assert_eq!(d.wake_at, Some(Millis(14_500)));
    assert!(d
        .reason
        .to_string()
        .contains("(the end of the lease this leader granted)"));
}

#[test]
fn zero_fence_margin_moves_exactly_when_the_lease_may_have_ended() {
    let no_margin = crate::core::Timing {
        fence_margin_ms: 0,
        ..timing()
    };
    let scene = || {
        leader(cluster().owned_by(N1, 7))
            .timing(no_margin.clone())
            .granted(N1, 50_000)
    };
    assert!(scene().at(49_999).decide().actions.is_empty());
    assert_eq!(
        scene().at(50_000).decide().actions,
        vec![grant(N2, Some((N1, 7)))]
    );
}

#[test]
fn unplanned_move_never_returns_group_to_silent_owner() {
    let d = leader(cluster().owned_by(N1, 7).outdated(N2)).decide();
    assert!(d.actions.is_empty());
    assert_eq!(d.code(), ReasonCode::NoEligibleNode);
    assert_eq!(
        d.reason.to_string(),
        "owner node1 (epoch 7) stopped renewing, but no node can take the group: node1 is the \
         owner that stopped renewing, node2 is outdated, witness is a witness; doing nothing"
    );
}

#[test]
fn unreachable_candidate_not_chosen() {
    let d = leader(cluster().owned_by(N1, 7))
        .silent_for(N2, 3001)
        .decide();
    assert!(d.actions.is_empty());
    assert!(d
        .reason
        .to_string()
        .contains("node2 has not been heard from for 3001 ms"));

    let d = leader(cluster().owned_by(N1, 7))
        .silent_for(N2, 3000)
        .decide();
    assert_eq!(d.actions, vec![grant(N2, Some((N1, 7)))]);
}

#[test]
fn not_ready_candidate_not_chosen() {
    let d = leader(cluster().owned_by(N1, 7)).not_ready(N2).decide();
    assert!(d.actions.is_empty());
    assert_eq!(d.code(), ReasonCode::NoEligibleNode);
}

#[test]
fn standby_node_not_chosen_for_failover() {
    let d = leader(cluster().owned_by(N1, 7).standby(N2)).decide();
    assert!(d.actions.is_empty());
    assert!(d.reason.to_string().contains("node2 is on standby"));
}

#[test]
fn node_at_migration_threshold_not_chosen() {
    let d = leader(cluster().owned_by(N1, 7).fails(N2, 3)).decide();
    assert!(d.actions.is_empty());
    assert!(d
        .reason
        .to_string()
        .contains("node2 has failed 3 times (threshold 3)"));

    let d = leader(cluster().owned_by(N1, 7).fails(N2, 2)).decide();
    assert_eq!(d.actions, vec![grant(N2, Some((N1, 7)))]);
}

#[test]
fn paused_cluster_moves_nothing() {
    // Owner silent for long past every deadline, a fencing hook ready: still nothing.
    let d = leader(cluster().owned_by(N1, 7).paused())
        .granted(N1, 1_000)
        .hook(FenceHook::Idle)
        .decide();
    assert!(d.actions.is_empty());
    assert_eq!(d.code(), ReasonCode::LeaderPaused);
    assert_eq!(
        d.reason.to_string(),
        "cluster is paused; ownership stays with node1 (epoch 7) and nothing moves"
    );
}

// ---- fencing hook -----------------------------------------------------------------------

#[test]
fn fence_hook_runs_before_moving_silent_owner() {
    let d = leader(cluster().owned_by(N1, 7))
        .granted(N1, 99_000)
        .hook(FenceHook::Idle)
        .decide();
    assert_eq!(
        d.actions,
        vec![LeaderAction::RunFenceHook { node: N1, epoch: 7 }]
    );
    assert_eq!(d.code(), ReasonCode::FencingOldOwner);
    assert_eq!(
        d.reason.to_string(),
        "owner node1 (epoch 7) stopped renewing; running the fencing hook against it before \
         moving the group to node2"
    );
}

#[test]
fn confirmed_fence_skips_lease_wait() {
    // The grant still runs for 1000 ms; the confirmed fence lets the leader move at once.
    let d = leader(cluster().owned_by(N1, 7))
        .granted(N1, 101_000)
        .hook(FenceHook::Confirmed {
            target: owner(N1, 7),
        })
        .decide();
    // Renewed at 97 970, silent from 99 470: moves now despite the running grant.
    assert_eq!(d.actions, vec![grant(N2, Some((N1, 7)))]);
    assert_eq!(d.code(), ReasonCode::GrantAfterFence);
}

#[test]
fn running_fence_hook_holds_the_move_even_after_lease() {
    let d = leader(cluster().owned_by(N1, 7))
        .granted(N1, 1_000)
        .hook(FenceHook::Running {
            target: owner(N1, 7),
        })
        .decide();
    assert!(d.actions.is_empty());
    assert_eq!(d.code(), ReasonCode::WaitingForFenceHook);
}

#[test]
fn failed_fence_hook_falls_back_to_lease_wait() {
    let failed = FenceHook::Failed {
        target: owner(N1, 7),
        message: "ipmi timed out".into(),
    };
    let d = leader(cluster().owned_by(N1, 7))
        .granted(N1, 50_000)
        .at(50_080)
        .hook(failed.clone())
        .decide();
    assert!(d.actions.is_empty());
    assert_eq!(
        d.reason.to_string(),
        "owner node1 stopped renewing; waiting 420 ms for its lease to run out (the end of the \
         lease this leader granted) before moving the group (the fencing hook failed: ipmi \
         timed out)"
    );
    let d = leader(cluster().owned_by(N1, 7))
        .granted(N1, 50_000)
        .at(50_500)
        .hook(failed)
        .decide();
    assert_eq!(d.actions, vec![grant(N2, Some((N1, 7)))]);
}

#[test]
fn fence_outcome_for_older_epoch_is_not_trusted() {
    let d = leader(cluster().owned_by(N1, 9))
        .granted(N1, 1_000)
        .hook(FenceHook::Confirmed {
            target: owner(N1, 5),
        })
        .decide();
    assert_eq!(
        d.actions,
        vec![LeaderAction::RunFenceHook { node: N1, epoch: 9 }]
    );
}

#[test]
fn fence_hook_not_run_when_no_successor() {
    let d = leader(cluster().owned_by(N1, 7).outdated(N2))
        .hook(FenceHook::Idle)
        .decide();
    assert!(d.actions.is_empty());
    assert_eq!(d.code(), ReasonCode::NoEligibleNode);
}

// ---- planned handoff and switchover -----------------------------------------------------

#[test]
fn released_owner_hands_over_without_waiting() {
    // node1's grant runs for another 2 s and this leader was elected just now: no wait.
    let d = leader(cluster().owned_by(N1, 7).released())
        .granted(N1, 102_000)
        .elected(99_990)
        .decide();
    assert_eq!(d.actions, vec![grant(N2, Some((N1, 7)))]);
    assert_eq!(d.code(), ReasonCode::GrantHandoff);
    assert_eq!(
        d.reason.to_string(),
        "node1 (epoch 7) released the group; handing it to node2 at once"
    );
}

#[test]
fn handoff_goes_to_switchover_target() {
    let view = cluster()
        .with_node4()
        .owned_by(N1, 7)
        .switchover_to(N4)
        .released();
    let d = leader(view).decide();
    assert_eq!(d.actions, vec![grant(N4, Some((N1, 7)))]);
}

#[test]
fn switchover_to_standby_target_refused_at_handoff_falls_back() {
    let view = cluster()
        .with_node4()
        .standby(N4)
        .owned_by(N1, 7)
        .switchover_to(N4)
        .released();
    let d = leader(view).decide();
    assert_eq!(d.actions, vec![grant(N2, Some((N1, 7)))]);
    assert_eq!(
        d.reason.to_string(),
        "node1 (epoch 7) released the group; switchover target node4 is on standby, so \
         handing it to node2 instead"
    );
}

#[test]
fn handoff_prefers_other_node_over_releasing_owner() {
    let d = leader(cluster().owned_by(N1, 7).released().fails(N2, 2)).decide();
    assert_eq!(d.actions, vec![grant(N2, Some((N1, 7)))]);
}

#[test]
fn released_owner_gets_group_back_only_as_last_resort() {
    let d = leader(cluster().owned_by(N1, 7).released().outdated(N2)).decide();
    assert_eq!(d.actions, vec![grant(N1, Some((N1, 7)))]);
    assert_eq!(d.code(), ReasonCode::GrantHandoff);

    let d = leader(
        cluster()
            .owned_by(N1, 7)
            .released()
            .fails(N1, 3)
            .outdated(N2),
    )
    .decide();
    assert!(d.actions.is_empty());
    assert_eq!(d.code(), ReasonCode::NoEligibleNode);
}

#[test]
fn pending_switchover_waits_for_owner_release() {
    let d = leader(cluster().owned_by(N1, 7).switchover_to(N2))
        .granted(N1, 102_500)
        .decide();
    assert!(d.actions.is_empty());
    assert_eq!(d.code(), ReasonCode::SwitchoverPending);
    assert_eq!(
        d.reason.to_string(),
        "switchover from node1 (epoch 7) to node2 pending; waiting for node1 to stop the group \
         and release it"
    );
}

#[test]
fn switchover_to_outdated_target_refused_while_owner_renews() {
    let d = leader(cluster().owned_by(N1, 7).switchover_to(N2).outdated(N2))
        .granted(N1, 102_500)
        .decide();
    assert!(d.actions.is_empty());
    assert_eq!(d.code(), ReasonCode::SwitchoverRefused);
    assert_eq!(
        d.reason.to_string(),
        "switchover to node2 refused: node2 is outdated; node1 keeps the group (epoch 7)"
    );
}

#[test]
fn silent_owner_with_pending_switchover_fails_over_to_target() {
    let view = cluster().with_node4().owned_by(N1, 7).switchover_to(N4);
    let d = leader(view).granted(N1, 1_000).decide();
    assert_eq!(d.actions, vec![grant(N4, Some((N1, 7)))]);
    assert_eq!(d.code(), ReasonCode::GrantAfterLeaseExpiry);
}

// ---- lease renewals ---------------------------------------------------------------------

#[test]
fn renewal_granted_only_to_committed_owner_and_epoch() {
    let view = cluster().owned_by(N1, 7);
    let t = timing();
    assert_eq!(
        answer_renewal(&view, &t, Millis(1_000), N1, 7),
        Ok(Millis(4_030))
    );
    assert_eq!(
        answer_renewal(&view, &t, Millis(1_000), N1, 6),
        Err(RenewalRefusal::NotOwner {
            owner: Some(owner(N1, 7))
        })
    );
    assert_eq!(
        answer_renewal(&view, &t, Millis(1_000), N2, 7),
        Err(RenewalRefusal::NotOwner {
            owner: Some(owner(N1, 7))
        })
    );
    assert_eq!(
        answer_renewal(&view, &t, Millis(1_000), W, 7),
        Err(RenewalRefusal::Witness)
    );
}

#[test]
fn renewal_refused_after_release_but_not_while_paused() {
    let t = timing();
    let released = cluster().owned_by(N1, 7).released();
    assert_eq!(
        answer_renewal(&released, &t, Millis(0), N1, 7),
        Err(RenewalRefusal::Released { epoch: 7 })
    );
    let paused = cluster().owned_by(N1, 7).paused();
    assert_eq!(
        answer_renewal(&paused, &t, Millis(0), N1, 7),
        Ok(Millis(3_030))
    );
}

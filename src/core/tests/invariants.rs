//! Rules that must hold in every situation, checked over many generated situations.
//!
//! A small deterministic generator (xorshift) builds views, clocks, grants, peer reports,
//! lease ends and resource states; each test asserts the protocol's hard rules on every
//! decision. The seed is fixed, so a failure reproduces exactly.

use std::collections::BTreeMap;

use crate::core::leader::{self, LeaderAction, LeaderInput};
use crate::core::node::{self, NodeAction, NodeInput};
use crate::core::view::node_label;
use crate::core::{
    ClusterView, FenceHook, Millis, NodeView, Owner, PeerHealth, ResourceState, ResourceStatus,
    Role,
};

use super::support::timing;

const CASES: usize = 20_000;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn random_view(rng: &mut Rng) -> ClusterView {
    let mut view = ClusterView::default();
    for (id, name, role) in [
        (1, "node1", Role::Management),
        (2, "node2", Role::Management),
        (3, "witness", Role::Witness),
        (4, "node4", Role::Management),
    ] {
        if id == 4 && rng.chance(50) {
            continue;
        }
        view.nodes.insert(
            id,
            NodeView {
                name: name.into(),
                role,
                standby: rng.chance(15),
                outdated: rng.chance(15),
                fail_count: rng.below(5) as u32,
            },
        );
    }
    if rng.chance(85) {
        let epoch = 1 + rng.below(20);
        view.owner = Some(Owner {
            node: 1 + rng.below(4),
            epoch,
        });
        if rng.chance(25) {
            view.released = Some(if rng.chance(80) { epoch } else { epoch - 1 });
        }
    }
    view.paused = rng.chance(15);
    if rng.chance(25) {
        view.switchover_to = Some(1 + rng.below(5));
    }
    view
}

#[test]
fn leader_never_grants_unsafely() {
    let t = timing();
    let mut rng = Rng(0x5eed_1eade5);
    for case in 0..CASES {
        let view = random_view(&mut rng);
        let now = Millis(20_000 + rng.below(20_000));
        let elected_at = now.minus(rng.below(15_000));
        let owner_since = now.minus(rng.below(20_000));
        let earlier_rounds = rng
            .chance(60)
            .then(|| elected_at.minus(2_000).plus(rng.below(4_000)));
        let mut granted_until = BTreeMap::new();
        let mut peers = BTreeMap::new();
        for &id in view.nodes.keys() {
            if rng.chance(60) {
                granted_until.insert(id, now.minus(4_000).plus(rng.below(8_000)));
            }
            if rng.chance(85) {
                let heard = now.minus(rng.below(4_000));
                peers.insert(
                    id,
                    PeerHealth {
                        last_heard: Some(heard),
                        can_run_group: rng.chance(85),
                    },
                );
            }
        }
        let hook = match (view.owner, rng.below(5)) {
            (_, 0) => FenceHook::NotConfigured,
            (_, 1) => FenceHook::Idle,
            (Some(owner), 2) => FenceHook::Confirmed { target: owner },
            (Some(owner), 3) => FenceHook::Running { target: owner },
            (Some(owner), _) => FenceHook::Failed {
                target: owner,
                message: "no".into(),
            },
            (None, _) => FenceHook::Idle,
        };
        let input = LeaderInput {
            view: &view,
            timing: &t,
            now,
            elected_at,
            owner_since,
            earlier_rounds,
            granted_until: &granted_until,
            peers: &peers,
            fence_hook: &hook,
        };
        let d = leader::decide(&input);
        let context = format!("case {case}: {view:?} now {now:?} -> {}", d.reason);
        assert!(d.actions.len() <= 1, "{context}");
        if view.paused {
            assert!(d.actions.is_empty(), "{context}");
        }
        for action in &d.actions {
            match action {
                LeaderAction::GrantOwnership { node, replaces } => {
                    assert_eq!(*replaces, view.owner, "{context}");
                    let marks = view.node(*node).expect("a member");
                    assert_eq!(marks.role, Role::Management, "{context}");
                    assert!(!marks.outdated && !marks.standby, "{context}");
                    assert!(marks.fail_count < t.migration_threshold, "{context}");
                    let health = peers.get(node).expect("heard from");
                    assert!(health.can_run_group, "{context}");
                    assert!(
                        now.since(health.last_heard.unwrap()) <= t.lease_ms,
                        "{context}"
                    );
                    if let Some(owner) = view.owner.filter(|_| !view.owner_released()) {
                        assert_ne!(*node, owner.node, "{context}");
                        // Leases of earlier terms started before the election and before
                        // the last earlier-term round a majority saw, whichever is first.
                        let earlier_start =
                            earlier_rounds.map_or(elected_at, |r| r.min(elected_at));
                        let lease_end = granted_until
                            .get(&owner.node)
                            .copied()
                            .unwrap_or_default()
                            .max(earlier_start.plus(t.leader_lease_ms()));
                        let fenced = hook == FenceHook::Confirmed { target: owner };
                        assert!(
                            fenced || now >= lease_end.plus(t.fence_margin_ms),
                            "{context}"
                        );
                    }
                }
                LeaderAction::RunFenceHook { node, epoch } => {
                    let owner = view.owner.expect("an owner to fence");
                    assert_eq!((*node, *epoch), (owner.node, owner.epoch), "{context}");
                    assert!(!view.owner_released(), "{context}");
                }
            }
        }
    }
}

#[test]
fn node_never_holds_without_lease_or_ownership() {
    let t = timing();
    let mut rng = Rng(0x0dd_ba11);
    let states = |rng: &mut Rng| match rng.below(4) {
        0 => ResourceState::Running,
        1 => ResourceState::Stopped,
        2 => ResourceState::Failed("boom".into()),
        _ => ResourceState::Unknown,
    };
    for case in 0..CASES {
        let view = random_view(&mut rng);
        let me = 1 + rng.below(4);
        let role = if me == 3 {
            Role::Witness
        } else {
            Role::Management
        };
        let now = Millis(10_000 + rng.below(10_000));
        let lease_until = rng
            .chance(70)
            .then(|| now.minus(3_000).plus(rng.below(6_000)));
        let all_stopped = rng.chance(30);
        let resources: Vec<ResourceStatus> = ["drbd", "fs", "mysql", "vip"]
            .iter()
            .map(|name| ResourceStatus {
                name: name.to_string(),
                state: if all_stopped {
                    ResourceState::Stopped
                } else {
                    states(&mut rng)
                },
            })
            .collect();
        let input = NodeInput {
            me,
            role,
            now,
            view: &view,
            timing: &t,
            lease_until,
            resources: &resources,
            executor_busy: rng.chance(20),
            restarts_in_place: rng.below(4) as u32,
        };
        let d = node::decide(&input);
        let context = format!(
            "case {case}: me {} {view:?} lease {lease_until:?} {resources:?} -> {}",
            node_label(me),
            d.reason
        );
        let lease_valid = lease_until.is_some_and(|until| now < until);
        let anything_up = resources.iter().any(|r| r.state != ResourceState::Stopped);
        let owns = view.owner.is_some_and(|o| o.node == me)
            && !view.owner_released()
            && role == Role::Management;

        if !lease_valid && anything_up {
            assert_eq!(d.actions.len(), 1, "{context}");
            assert!(
                matches!(d.actions[0], NodeAction::Fence { .. }),
                "{context}"
            );
        }
        if input.executor_busy {
            assert!(
                d.actions
                    .iter()
                    .all(|a| matches!(a, NodeAction::Fence { .. })),
                "{context}"
            );
        }
        for (index, action) in d.actions.iter().enumerate() {
            match action {
                NodeAction::StartGroup { epoch } | NodeAction::RestartResource { epoch, .. } => {
                    assert!(owns && lease_valid && !view.paused, "{context}");
                    assert_eq!(Some(*epoch), view.owner.map(|o| o.epoch), "{context}");
                }
                NodeAction::Fence { .. } => assert!(!lease_valid, "{context}"),
                NodeAction::CommitReleased { epoch } => {
                    assert!(owns && !view.paused, "{context}");
                    assert_eq!(Some(*epoch), view.owner.map(|o| o.epoch), "{context}");
                    let stopped_first = d.actions[..index]
                        .iter()
                        .any(|a| matches!(a, NodeAction::StopGroup { .. }));
                    assert!(stopped_first || !anything_up, "{context}");
                }
                NodeAction::StopGroup { .. } => assert!(!view.paused && lease_valid, "{context}"),
                NodeAction::RecordFailure { .. } => assert!(owns, "{context}"),
            }
        }
    }
}

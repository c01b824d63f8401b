//! Scenario builders, so each test reads as the situation it covers in a few lines.
//!
//! The standard cluster is `node1` and `node2` (management) and `witness`. The standard
//! timing is a 3000 ms lease, ρ = 1 % (the leader assumes 3030 ms, the owner trusts
//! 2970 ms), a 500 ms fence margin, migration threshold 3 and 2 recoveries in place. An
//! owner counts as silent after 1500 ms without renewal; a peer is reachable when heard
//! within 3000 ms.

use std::collections::BTreeMap;

use crate::core::leader::{self, LeaderAction, LeaderInput};
use crate::core::node::{self, NodeAction, NodeInput};
use crate::core::state::{ClusterState, Command, NodeMarks, Request};
use crate::core::{
    ClusterView, Decision, FenceHook, Millis, NodeId, NodeView, Owner, PeerHealth, ResourceState,
    ResourceStatus, Role, Timing,
};

/// Management node `node1`.
pub const N1: NodeId = 1;
/// Management node `node2`.
pub const N2: NodeId = 2;
/// The witness.
pub const W: NodeId = 3;
/// An optional third management node `node4` (see [`ViewExt::with_node4`]).
pub const N4: NodeId = 4;

/// The group's resources in start order.
pub const GROUP: [&str; 4] = ["drbd", "fs", "mysql", "vip"];

/// The standard timing settings.
pub fn timing() -> Timing {
    Timing {
        lease_ms: 3000,
        rho_permille: 10,
        fence_margin_ms: 500,
        migration_threshold: 3,
        max_restarts_in_place: 2,
    }
}

fn member(name: &str, role: Role) -> NodeView {
    NodeView {
        name: name.to_string(),
        role,
        standby: false,
        outdated: false,
        fail_count: 0,
    }
}

/// node1 + node2 + witness, no owner, nothing marked.
pub fn cluster() -> ClusterView {
    let mut view = ClusterView::default();
    view.nodes.insert(N1, member("node1", Role::Management));
    view.nodes.insert(N2, member("node2", Role::Management));
    view.nodes.insert(W, member("witness", Role::Witness));
    view
}

/// Chained edits of a view, each named after the committed fact it sets.
pub trait ViewExt: Sized {
    /// `node` owns the group under `epoch`.
    fn owned_by(self, node: NodeId, epoch: u64) -> Self;
    /// The current owner released its epoch.
    fn released(self) -> Self;
    /// Maintenance mode.
    fn paused(self) -> Self;
    /// An operator asked for a switchover to `target`.
    fn switchover_to(self, target: NodeId) -> Self;
    /// `node`'s data may be stale.
    fn outdated(self, node: NodeId) -> Self;
    /// `node` is on standby.
    fn standby(self, node: NodeId) -> Self;
    /// `node` has failed `count` times.
    fn fails(self, node: NodeId, count: u32) -> Self;
    /// Adds a third management node `node4`.
    fn with_node4(self) -> Self;
}

impl ViewExt for ClusterView {
    fn owned_by(mut self, node: NodeId, epoch: u64) -> Self {
        self.owner = Some(Owner { node, epoch });
        self
    }
    fn released(mut self) -> Self {
        self.released = self.owner.map(|owner| owner.epoch);
        self
    }
    fn paused(mut self) -> Self {
        self.paused = true;
        self
    }
    fn switchover_to(mut self, target: NodeId) -> Self {
        self.switchover_to = Some(target);
        self
    }
    fn outdated(mut self, node: NodeId) -> Self {
        self.nodes.get_mut(&node).expect("member").outdated = true;
        self
    }
    fn standby(mut self, node: NodeId) -> Self {
        self.nodes.get_mut(&node).expect("member").standby = true;
        self
    }
    fn fails(mut self, node: NodeId, count: u32) -> Self {
        self.nodes.get_mut(&node).expect("member").fail_count = count;
        self
    }
    fn with_node4(mut self) -> Self {
        self.nodes.insert(N4, member("node4", Role::Management));
        self
    }
}

/// How the leader hears a peer.
#[derive(Clone, Copy, Debug)]
enum Heard {
    /// Heard this many ms before `now`, ready or not.
    Ago { ms: u64, ready: bool },
    /// Never heard.
    Never,
}

/// A leader's situation. Defaults: now = 100 000, elected at 0, owner seen since 0, no grants,
/// every member heard 100 ms ago and ready, no fencing hook.
pub struct LeaderScene {
    /// The committed state.
    pub view: ClusterView,
    /// Timing settings.
    pub timing: Timing,
    now: u64,
    elected_at: u64,
    owner_since: u64,
    earlier_rounds: Option<u64>,
    granted: BTreeMap<NodeId, Millis>,
    heard: BTreeMap<NodeId, Heard>,
    hook: FenceHook,
    own_entry_applied: bool,
}

/// A leader looking at `view`.
pub fn leader(view: ClusterView) -> LeaderScene {
    LeaderScene {
        view,
        timing: timing(),
        now: 100_000,
        elected_at: 0,
        owner_since: 0,
        earlier_rounds: None,
        granted: BTreeMap::new(),
        heard: BTreeMap::new(),
        hook: FenceHook::NotConfigured,
        own_entry_applied: true,
    }
}

impl LeaderScene {
    /// The leader was just elected and has not applied its own first entry yet.
    pub fn own_entry_not_applied(mut self) -> Self {
        self.own_entry_applied = false;
        self
    }

    /// The leader's clock reads `now`.
    pub fn at(mut self, now: u64) -> Self {
        self.now = now;
        self
    }
    /// This node became leader at `at`.
    pub fn elected(mut self, at: u64) -> Self {
        self.elected_at = at;
        self
    }
    /// A majority last took part in a round of an earlier term at `at`.
    pub fn earlier_rounds(mut self, at: u64) -> Self {
        self.earlier_rounds = Some(at);
        self
    }
    /// The leader first saw the current owner at `at`.
    pub fn owner_since(mut self, at: u64) -> Self {
        self.owner_since = at;
        self
    }
    /// This leader's latest grant to `node` runs until `until`.
    pub fn granted(mut self, node: NodeId, until: u64) -> Self {
        self.granted.insert(node, Millis(until));
        self
    }
    /// `node` was last heard `ms` before now.
    pub fn silent_for(mut self, node: NodeId, ms: u64) -> Self {
        self.heard.insert(node, Heard::Ago { ms, ready: true });
        self
    }
    /// `node` was never heard.
    pub fn never_heard(mut self, node: NodeId) -> Self {
        self.heard.insert(node, Heard::Never);
        self
    }
    /// `node` reports it cannot run the group.
    pub fn not_ready(mut self, node: NodeId) -> Self {
        self.heard.insert(
            node,
            Heard::Ago {
                ms: 100,
                ready: false,
            },
        );
        self
    }
    /// The fencing hook's state.
    pub fn hook(mut self, hook: FenceHook) -> Self {
        self.hook = hook;
        self
    }
    /// Settings other than the standard ones.
    pub fn timing(mut self, timing: Timing) -> Self {
        self.timing = timing;
        self
    }

    fn peers(&self) -> BTreeMap<NodeId, PeerHealth> {
        self.view
            .nodes
            .keys()
            .filter_map(|id| {
                let heard = self.heard.get(id).copied().unwrap_or(Heard::Ago {
                    ms: 100,
                    ready: true,
                });
                match heard {
                    Heard::Never => None,
                    Heard::Ago { ms, ready } => Some((
                        *id,
                        PeerHealth {
                            last_heard: Some(Millis(self.now).minus(ms)),
                            can_run_group: ready,
                        },
                    )),
                }
            })
            .collect()
    }

    /// Runs the leader's decision.
    pub fn decide(&self) -> Decision<LeaderAction> {
        let peers = self.peers();
        leader::decide(&LeaderInput {
            view: &self.view,
            own_entry_applied: self.own_entry_applied,
            timing: &self.timing,
            now: Millis(self.now),
            elected_at: Millis(self.elected_at),
            owner_since: Millis(self.owner_since),
            earlier_rounds: self.earlier_rounds.map(Millis),
            granted_until: &self.granted,
            peers: &peers,
            fence_hook: &self.hook,
        })
    }
}

/// The grant action for `node`, replacing `replaces` (node, epoch).
pub fn grant(node: NodeId, replaces: Option<(NodeId, u64)>) -> LeaderAction {
    LeaderAction::GrantOwnership {
        node,
        replaces: replaces.map(|(node, epoch)| Owner { node, epoch }),
    }
}

/// A node's situation. Defaults: now = 100 000, role from the view, no lease, the standard
/// group all stopped, executor idle, no recoveries in place.
pub struct NodeScene {
    me: NodeId,
    role: Role,
    /// The committed state.
    pub view: ClusterView,
    /// Timing settings.
    pub timing: Timing,
    now: u64,
    lease_until: Option<Millis>,
    resources: Vec<ResourceStatus>,
    busy: bool,
    restarts: u32,
}

/// Node `me` looking at `view`.
pub fn node(me: NodeId, view: ClusterView) -> NodeScene {
    let role = view.node(me).map_or(Role::Management, |n| n.role);
    NodeScene {
        me,
        role,
        view,
        timing: timing(),
        now: 100_000,
        lease_until: None,
        resources: states(ResourceState::Stopped),
        busy: false,
        restarts: 0,
    }
}

fn states(state: ResourceState) -> Vec<ResourceStatus> {
    GROUP
        .iter()
        .map(|name| ResourceStatus {
            name: name.to_string(),
            state: state.clone(),
        })
        .collect()
}

impl NodeScene {
    /// The node's clock reads `now` (the lease, if any, keeps its absolute end).
    pub fn at(mut self, now: u64) -> Self {
        self.now = now;
        self
    }
    /// Its lease is valid for another `ms`.
    pub fn lease_left(mut self, ms: u64) -> Self {
        self.lease_until = Some(Millis(self.now + ms));
        self
    }
    /// Its lease ends at `until` on its own clock.
    pub fn lease_until(mut self, until: Millis) -> Self {
        self.lease_until = Some(until);
        self
    }
    /// Its lease ran out `ms` ago.
    pub fn lease_expired_ago(mut self, ms: u64) -> Self {
        self.lease_until = Some(Millis(self.now - ms));
        self
    }
    /// Every resource running.
    pub fn running(mut self) -> Self {
        self.resources = states(ResourceState::Running);
        self
    }
    /// Every resource not monitored yet.
    pub fn unknown(mut self) -> Self {
        self.resources = states(ResourceState::Unknown);
        self
    }
    /// One resource in the given state.
    pub fn with(mut self, name: &str, state: ResourceState) -> Self {
        let resource = self
            .resources
            .iter_mut()
            .find(|r| r.name == name)
            .expect("a resource of the standard group");
        resource.state = state;
        self
    }
    /// One resource failed with `why`.
    pub fn failed(self, name: &str, why: &str) -> Self {
        self.with(name, ResourceState::Failed(why.to_string()))
    }
    /// The executor is busy.
    pub fn busy(mut self) -> Self {
        self.busy = true;
        self
    }
    /// `count` recoveries in place were made this epoch.
    pub fn restarts(mut self, count: u32) -> Self {
        self.restarts = count;
        self
    }
    /// The node's own config says it is a witness.
    pub fn configured_as_witness(mut self) -> Self {
        self.role = Role::Witness;
        self
    }
    /// Settings other than the standard ones.
    pub fn timing(mut self, timing: Timing) -> Self {
        self.timing = timing;
        self
    }

    /// Runs the node's decision.
    pub fn decide(&self) -> Decision<NodeAction> {
        node::decide(&NodeInput {
            me: self.me,
            role: self.role,
            now: Millis(self.now),
            view: &self.view,
            timing: &self.timing,
            lease_until: self.lease_until,
            resources: &self.resources,
            executor_busy: self.busy,
            restarts_in_place: self.restarts,
        })
    }
}

/// The replicated state `view` was made from: its owner, marks, pause and switchover. The
/// view does not carry which epoch a failure was last counted for, so none is.
fn state_of(view: &ClusterView) -> ClusterState {
    ClusterState {
        owner: view.owner,
        released: view.released,
        paused: view.paused,
        switchover_to: view.switchover_to,
        nodes: view
            .nodes
            .iter()
            .map(|(id, node)| {
                let marks = NodeMarks {
                    standby: node.standby,
                    outdated: node.outdated,
                    fail_count: node.fail_count,
                    last_failed_epoch: None,
                };
                (*id, marks)
            })
            .collect(),
        history: Default::default(),
    }
}

/// Commits `command` at log `index` through the real state machine and refreshes `view`
/// from the result, keeping its members. True when the state machine applied it.
fn commit(view: &mut ClusterView, index: u64, command: Command) -> bool {
    let mut state = state_of(view);
    let request = Request {
        command,
        requested_by: "test".into(),
        reason: "scenario".into(),
        at_unix_ms: 0,
    };
    let roles = view
        .nodes
        .iter()
        .map(|(id, node)| (*id, node.role))
        .collect();
    let response = state.apply(index, &request, &roles);
    let members: Vec<(NodeId, String, Role)> = view
        .nodes
        .iter()
        .map(|(id, node)| (*id, node.name.clone(), node.role))
        .collect();
    *view = state.view(
        members
            .iter()
            .map(|(id, name, role)| (*id, name.as_str(), *role)),
    );
    response.refused.is_none()
}

/// Commits a leader action at log `index` as the leader proposes it and the state machine
/// applies it. A grant whose `replaces` no longer matches is refused (returns false); the
/// fencing hook commits nothing.
pub fn commit_leader(view: &mut ClusterView, action: &LeaderAction, index: u64) -> bool {
    match action {
        LeaderAction::GrantOwnership { node, replaces } => commit(
            view,
            index,
            Command::GrantOwnership {
                node: *node,
                expected: replaces.map(|owner| owner.epoch),
                recheck: true,
            },
        ),
        LeaderAction::RunFenceHook { .. } => false,
    }
}

/// Commits `me`'s committing actions (release, failure) to `view` as the node proposes them
/// and the state machine applies them, each at the next log index.
pub fn commit_node(view: &mut ClusterView, me: NodeId, actions: &[NodeAction]) {
    let mut index = view.owner.map_or(0, |owner| owner.epoch);
    for action in actions {
        let command = match action {
            NodeAction::CommitReleased { epoch } => Command::Release {
                node: me,
                epoch: *epoch,
            },
            NodeAction::RecordFailure { epoch } => Command::RecordFailure {
                node: me,
                epoch: *epoch,
            },
            _ => continue,
        };
        index += 1;
        commit(view, index, command);
    }
}

//! Turns the committed state and the static membership into the decision core's view.

use std::collections::BTreeMap;

use crate::consensus::state::ClusterState;
use crate::consensus::types::{Member, NodeId, Role};
use crate::core::view::{self, ClusterView, NodeView, Owner};

/// The core's view of `state` for a cluster whose members are `members`.
pub fn cluster_view(state: &ClusterState, members: &BTreeMap<NodeId, Member>) -> ClusterView {
    ClusterView {
        owner: state.owner.map(|o| Owner {
            node: view::NodeId(o.node),
            epoch: o.epoch,
        }),
        released: state.released,
        paused: state.paused,
        switchover_to: state.switchover_to.map(view::NodeId),
        nodes: members
            .iter()
            .map(|(id, member)| {
                let marks = state.marks(*id);
                (
                    view::NodeId(*id),
                    NodeView {
                        name: member.name.clone(),
                        role: core_role(member.role),
                        standby: marks.standby,
                        outdated: marks.outdated,
                        fail_count: marks.fail_count,
                    },
                )
            })
            .collect(),
    }
}

/// The core's name for a role.
pub fn core_role(role: Role) -> view::Role {
    match role {
        Role::Management => view::Role::Management,
        Role::Witness => view::Role::Witness,
    }
}

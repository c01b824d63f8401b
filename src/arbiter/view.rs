//! Turns the committed state and the static membership into the decision core's view.

use std::collections::BTreeMap;

use crate::consensus::state::ClusterState;
use crate::consensus::types::{Member, NodeId};
use crate::core::view::ClusterView;

/// The core's view of `state` for a cluster whose members are `members`.
pub fn cluster_view(state: &ClusterState, members: &BTreeMap<NodeId, Member>) -> ClusterView {
    state.view(
        members
            .iter()
            .map(|(id, member)| (*id, member.name.as_str(), member.role)),
    )
}

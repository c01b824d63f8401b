//! Conversions between the admin service's protobuf messages and quorate's own types.
//!
//! Protobuf has no optional strings here: an empty string means "absent". The client side
//! turns those back into `Option`s; the server side builds messages from the committed
//! state and the notes this node keeps.

use crate::consensus::state::HistoryRecord;
use crate::rpc::pb;
use crate::status::{ClusterStatus, HistoryLine, MemberStatus};

/// The lower-case name of an openraft server state.
pub fn server_state_name(state: openraft::ServerState) -> &'static str {
    match state {
        openraft::ServerState::Leader => "leader",
        openraft::ServerState::Follower => "follower",
        openraft::ServerState::Candidate => "candidate",
        openraft::ServerState::Learner => "learner",
        openraft::ServerState::Shutdown => "shutdown",
    }
}

/// One committed history record, as the admin service sends it.
pub fn history_entry(h: &HistoryRecord) -> pb::HistoryEntry {
    pb::HistoryEntry {
        index: h.index,
        at_unix_ms: h.at_unix_ms,
        what: h.what.clone(),
        reason: h.reason.clone(),
        requested_by: h.requested_by.clone(),
    }
}

/// One history record a member sent, in quorate's terms.
pub fn history_line(e: pb::HistoryEntry) -> HistoryLine {
    HistoryLine {
        index: e.index,
        at_unix_ms: e.at_unix_ms,
        what: e.what,
        reason: e.reason,
        requested_by: e.requested_by,
    }
}

/// This node's resources as the admin service sends them, in start order.
pub fn resource_states(resources: Vec<(String, String)>) -> Vec<pb::ResourceState> {
    resources
        .into_iter()
        .map(|(name, state)| pb::ResourceState { name, state })
        .collect()
}

/// `None` for the empty string protobuf uses for "absent".
fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

/// The cluster status a member answered, in quorate's terms.
pub fn cluster_status(reply: pb::StatusReply) -> ClusterStatus {
    let answered_by = reply
        .members
        .iter()
        .find(|m| m.id == reply.answered_by)
        .map(|m| m.name.clone())
        .unwrap_or_else(|| reply.answered_by.to_string());
    ClusterStatus {
        cluster: reply.cluster,
        term: reply.term,
        leader: non_empty(reply.leader_name),
        leader_id: reply.leader_id,
        answered_by,
        waiting: non_empty(reply.waiting_reason),
        owner: non_empty(reply.owner),
        epoch: reply.epoch,
        released: reply.released,
        lease_remaining_ms: reply.lease_remaining_ms,
        paused: reply.paused,
        switchover_to: non_empty(reply.switchover_to),
        leader_says: non_empty(reply.leader_says),
        members: reply
            .members
            .into_iter()
            .map(|m| MemberStatus {
                id: m.id,
                name: m.name,
                role: m.role,
                address: m.address,
                state: m.state,
                reachable: m.reachable,
                term: m.term,
                last_log_index: m.last_log_index,
                applied_index: m.applied_index,
                standby: m.standby,
                outdated: m.outdated,
                fail_count: m.fail_count,
                doing: non_empty(m.doing),
                resources: m.resources.into_iter().map(|r| (r.name, r.state)).collect(),
                lease_remaining_ms: m.lease_remaining_ms,
                timing_mismatch: non_empty(m.timing_mismatch),
            })
            .collect(),
    }
}

//! The admin server: answers what operators and `quoratectl` ask any member.
//!
//! `Status` is answered by whichever member is asked: it reports itself and asks every other
//! member for its `LocalStatus` in parallel, each with a short deadline, so an unreachable
//! member shows up as unreachable instead of stalling the answer. Changes (switchover,
//! pause, standby, failure reset) are checked here against the committed state, then
//! committed through the leader; a refusal names the reason. A switchover target that the
//! committed marks exclude is refused in the words of [`Ineligible`], the same the leader
//! uses when it declines a switchover by itself. DRBD's fence-peer is the exception: its
//! compare-and-set on the owner and epoch is decided by the state machine where the entry lands
//! in the log (`Command::OutdatePeer`), never here, where the committed state may be stale.
//!
//! The server reaches the arbiter (the leader's reason, committing a change) only through
//! [`AdminHandler`], which the arbiter implements.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::convert::{history_entry, resource_states, server_state_name};
use crate::arbiter::view::cluster_view;
use crate::clock::{self, wall_ms};
use crate::consensus::state::{self, ClusterState, Command};
use crate::consensus::store::AppliedState;
use crate::consensus::types::{Member, NodeId, Raft, Role};
use crate::core::time::{Millis, Timing};
use crate::core::view::Ineligible;
use crate::rpc::pb::{self, admin_client, admin_server};
use crate::rpc::peer::client::lazy_channel;
use crate::rpc::peer::PROPOSE_TIMEOUT;
use crate::status::NodeNotes;

/// What the admin server asks of the arbiter it serves.
#[async_trait::async_trait]
pub trait AdminHandler: Send + Sync + 'static {
    /// The leader's latest decision, as a sentence, while this node leads.
    fn leader_says(&self) -> Option<String>;

    /// Commits `request` through the leader and returns the state machine's answer (which
    /// may be a refusal, in `Response::refused`), or why it was not committed.
    async fn propose(&self, request: state::Request) -> Result<state::Response, String>;
}

/// How long `Status` waits for each other member.
const MEMBER_STATUS_TIMEOUT: Duration = Duration::from_millis(700);

/// What the admin service of one member reads and uses.
pub struct AdminContext {
    /// The Raft handle.
    pub raft: Raft,
    /// The cluster name.
    pub cluster: String,
    /// This member's id.
    pub node_id: NodeId,
    /// Every member.
    pub members: BTreeMap<NodeId, Member>,
    /// Notes from bootstrap and the agent.
    pub notes: Arc<NodeNotes>,
    /// The committed state.
    pub applied: watch::Receiver<Arc<AppliedState>>,
    /// The arbiter: the leader's reason, and commits through the leader.
    pub handler: Arc<dyn AdminHandler>,
    /// The cluster's timing, for the marks that exclude a switchover target (the migration
    /// threshold).
    pub timing: Timing,
}

/// Serves the admin API of one member.
pub struct AdminService {
    context: AdminContext,
    clients: Vec<(NodeId, admin_client::AdminClient<Channel>)>,
}

impl AdminService {
    /// The admin service over `context`.
    pub fn new(context: AdminContext) -> Self {
        let clients = context
            .members
            .iter()
            .filter(|(id, _)| **id != context.node_id)
            .filter_map(|(id, member)| {
                lazy_channel(&member.addr, MEMBER_STATUS_TIMEOUT)
                    .ok()
                    .map(|channel| (*id, admin_client::AdminClient::new(channel)))
            })
            .collect();
        AdminService { context, clients }
    }

    /// The tonic server wrapper.
    pub fn into_server(self) -> admin_server::AdminServer<Self> {
        admin_server::AdminServer::new(self)
    }

    fn local(&self) -> pb::LocalStatusReply {
        let c = &self.context;
        let m = c.raft.metrics().borrow().clone();
        let agent = c.notes.agent();
        let now = clock::now();
        let lease_remaining_ms = agent
            .as_ref()
            .and_then(|a| a.lease_until)
            .map(|until| now.until(Millis(until)))
            .filter(|ms| *ms > 0);
        pb::LocalStatusReply {
            node_id: c.node_id,
            state: server_state_name(m.state).to_string(),
            term: m.current_term,
            leader_id: m.current_leader,
            last_log_index: m.last_log_index,
            applied_index: m.last_applied.map(|id| id.index),
            waiting_reason: c.notes.waiting().unwrap_or_default(),
            doing: agent.as_ref().map(|a| a.reason.clone()).unwrap_or_default(),
            resources: agent
                .map(|a| resource_states(a.resources))
                .unwrap_or_default(),
            lease_remaining_ms,
            leader_says: c.handler.leader_says().unwrap_or_default(),
        }
    }

    async fn ask(&self, id: NodeId) -> Option<pb::LocalStatusReply> {
        let (_, client) = self.clients.iter().find(|(peer, _)| *peer == id)?;
        let mut client = client.clone();
        let mut request = Request::new(pb::LocalStatusRequest {});
        request.set_timeout(MEMBER_STATUS_TIMEOUT);
        let reply = tokio::time::timeout(MEMBER_STATUS_TIMEOUT, client.local_status(request))
            .await
            .ok()?
            .ok()?
            .into_inner();
        // A member that answers with another id is not the member we meant to ask.
        (reply.node_id == id).then_some(reply)
    }

    async fn ask_all(&self) -> Vec<Option<pb::LocalStatusReply>> {
        let asks = self.context.members.keys().map(|id| async move {
            if *id == self.context.node_id {
                Some(self.local())
            } else {
                self.ask(*id).await
            }
        });
        futures::future::join_all(asks).await
    }

    fn member_by_name(&self, name: &str) -> Result<(NodeId, &Member), Status> {
        self.context
            .members
            .iter()
            .find(|(_, m)| m.name == name)
            .map(|(id, m)| (*id, m))
            .ok_or_else(|| {
                let names: Vec<&str> = self
                    .context
                    .members
                    .values()
                    .map(|m| m.name.as_str())
                    .collect();
                Status::not_found(format!(
                    "no member is named {name:?}; members: {}",
                    names.join(", ")
                ))
            })
    }

    fn name_of(&self, id: NodeId) -> String {
        self.context
            .members
            .get(&id)
            .map(|m| m.name.clone())
            .unwrap_or_else(|| format!("node {id}"))
    }

    /// Where a change must be decided: `None` when this member leads (after confirming that
    /// with a quorum round, so its committed state is current), or a client of the leader.
    async fn route(&self) -> Result<Option<admin_client::AdminClient<Channel>>, Status> {
        let metrics = self.context.raft.metrics().borrow().clone();
        if metrics.state == openraft::ServerState::Leader {
            let confirm =
                tokio::time::timeout(PROPOSE_TIMEOUT, self.context.raft.ensure_linearizable())
                    .await;
            return match confirm {
                Ok(Ok(_)) => Ok(None),
                Ok(Err(e)) => Err(Status::aborted(format!(
                    "this member could not confirm it still leads: {e}"
                ))),
                Err(_) => Err(Status::aborted(
                    "this member could not confirm it still leads in time",
                )),
            };
        }
        let leader = metrics.current_leader.ok_or_else(|| {
            Status::aborted("no leader is known; the cluster may have lost its quorum")
        })?;
        self.clients
            .iter()
            .find(|(id, _)| *id == leader)
            .map(|(_, client)| Some(client.clone()))
            .ok_or_else(|| Status::aborted(format!("no client for the leader (node {leader})")))
    }

    async fn commit(
        &self,
        command: Command,
        reason: String,
        who: String,
    ) -> Result<Response<pb::AdminReply>, Status> {
        let request = state::Request {
            command,
            requested_by: who,
            reason: if reason.is_empty() {
                "asked by an operator".into()
            } else {
                reason
            },
            at_unix_ms: wall_ms(),
        };
        match self.context.handler.propose(request).await {
            Ok(response) => match response.refused {
                None => Ok(Response::new(pb::AdminReply {
                    index: response.index,
                    message: "committed".into(),
                })),
                Some(why) => Err(Status::failed_precondition(why)),
            },
            Err(e) => Err(Status::aborted(e)),
        }
    }
}

/// Why a switchover to `target` must be refused on the committed `state` alone, or `None`
/// when only the target's reachability is left to check. Marks that exclude the target are
/// worded by core's [`Ineligible::sentence`]: the leader's reason, then what the operator can do.
fn switchover_refusal(
    state: &ClusterState,
    members: &BTreeMap<NodeId, Member>,
    target: NodeId,
    timing: &Timing,
) -> Option<String> {
    let view = cluster_view(state, members);
    let name = view.name_of(target);
    let excluded = view.marks_exclude(target, timing);
    // A target that can never hold the group is named first, whatever else holds.
    if let Some(why @ (Ineligible::NotAMember | Ineligible::Witness)) = &excluded {
        return Some(why.sentence(&name));
    }
    if view.paused {
        return Some("the cluster is paused; resume it first".into());
    }
    let Some(owner) = view.owner else {
        return Some(
            "no node owns the group yet; the leader gives it to the best node by itself".into(),
        );
    };
    if owner.node == target && !view.owner_released() {
        return Some(format!("{name} already owns the group"));
    }
    excluded.map(|why| why.sentence(&name))
}

/// The metadata key a forwarding member uses to pass on who asked.
const REQUESTED_BY: &str = "quorate-requested-by";

/// Who asked: the name a forwarding member passed on, or the caller's address.
fn requester<T>(request: &Request<T>) -> String {
    if let Some(who) = request
        .metadata()
        .get(REQUESTED_BY)
        .and_then(|v| v.to_str().ok())
    {
        return who.chars().take(120).collect();
    }
    match request.remote_addr() {
        Some(addr) => format!("admin:{addr}"),
        None => "admin".into(),
    }
}

/// The same request, to be sent on to the leader with who asked.
fn onward<T>(who: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(FORWARD_TIMEOUT);
    if let Ok(value) = who.parse() {
        request.metadata_mut().insert(REQUESTED_BY, value);
    }
    request
}

/// How long a change forwarded to the leader may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(8);

#[tonic::async_trait]
impl admin_server::Admin for AdminService {
    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusReply>, Status> {
        let local = self.local();
        let replies = self.ask_all().await;
        let leader_says = local.leader_id.and_then(|leader| {
            self.context
                .members
                .keys()
                .zip(&replies)
                .find(|(id, _)| **id == leader)
                .and_then(|(_, reply)| reply.as_ref())
                .map(|reply| reply.leader_says.clone())
        });
        let applied = self.context.applied.borrow().clone();
        let cluster_state = &applied.state;
        let members: Vec<pb::MemberStatus> = self
            .context
            .members
            .iter()
            .zip(replies)
            .map(|((id, member), reply)| {
                let marks = cluster_state.marks(*id);
                pb::MemberStatus {
                    id: *id,
                    name: member.name.clone(),
                    role: member.role.to_string(),
                    address: member.addr.clone(),
                    state: reply
                        .as_ref()
                        .map(|r| r.state.clone())
                        .unwrap_or_else(|| "unknown".into()),
                    reachable: reply.is_some(),
                    term: reply.as_ref().map(|r| r.term).unwrap_or(0),
                    last_log_index: reply.as_ref().and_then(|r| r.last_log_index),
                    applied_index: reply.as_ref().and_then(|r| r.applied_index),
                    standby: marks.standby,
                    outdated: marks.outdated,
                    fail_count: marks.fail_count,
                    doing: reply.as_ref().map(|r| r.doing.clone()).unwrap_or_default(),
                    resources: reply
                        .as_ref()
                        .map(|r| r.resources.clone())
                        .unwrap_or_default(),
                    lease_remaining_ms: reply.as_ref().and_then(|r| r.lease_remaining_ms),
                    timing_mismatch: self.context.notes.timing.of(*id).unwrap_or_default(),
                }
            })
            .collect();
        let owner = cluster_state.owner;
        let lease_remaining_ms = owner.and_then(|o| {
            members
                .iter()
                .find(|m| m.id == o.node)
                .and_then(|m| m.lease_remaining_ms)
        });
        let leader_name = local.leader_id.map(|l| self.name_of(l)).unwrap_or_default();
        Ok(Response::new(pb::StatusReply {
            cluster: self.context.cluster.clone(),
            term: local.term,
            leader_id: local.leader_id,
            leader_name,
            answered_by: self.context.node_id,
            members,
            waiting_reason: local.waiting_reason,
            owner: owner.map(|o| self.name_of(o.node)).unwrap_or_default(),
            epoch: owner.map(|o| o.epoch).unwrap_or(0),
            released: cluster_state.owner_released(),
            paused: cluster_state.paused,
            switchover_to: cluster_state
                .switchover_to
                .map(|t| self.name_of(t))
                .unwrap_or_default(),
            lease_remaining_ms,
            leader_says: leader_says.unwrap_or_default(),
        }))
    }

    async fn local_status(
        &self,
        _request: Request<pb::LocalStatusRequest>,
    ) -> Result<Response<pb::LocalStatusReply>, Status> {
        Ok(Response::new(self.local()))
    }

    async fn switchover(
        &self,
        request: Request<pb::SwitchoverRequest>,
    ) -> Result<Response<pb::AdminReply>, Status> {
        let who = requester(&request);
        let request = request.into_inner();
        if let Some(mut leader) = self.route().await? {
            return leader.switchover(onward(&who, request)).await;
        }
        let (target, member) = self.member_by_name(&request.to)?;
        let applied = self.context.applied.borrow().clone();
        let refuse = |why: String| Err(Status::failed_precondition(why));
        let committed = switchover_refusal(
            &applied.state,
            &self.context.members,
            target,
            &self.context.timing,
        );
        if let Some(why) = committed {
            return refuse(why);
        }
        let reachable = if target == self.context.node_id {
            true
        } else {
            self.ask(target).await.is_some()
        };
        if !reachable {
            return refuse(format!("{} is unreachable", member.name));
        }
        self.commit(
            Command::RequestSwitchover { to: target },
            request.reason,
            who,
        )
        .await
    }

    async fn set_paused(
        &self,
        request: Request<pb::SetPausedRequest>,
    ) -> Result<Response<pb::AdminReply>, Status> {
        let who = requester(&request);
        let request = request.into_inner();
        if let Some(mut leader) = self.route().await? {
            return leader.set_paused(onward(&who, request)).await;
        }
        self.commit(
            Command::SetPaused {
                paused: request.paused,
            },
            request.reason,
            who,
        )
        .await
    }

    async fn set_standby(
        &self,
        request: Request<pb::SetStandbyRequest>,
    ) -> Result<Response<pb::AdminReply>, Status> {
        let who = requester(&request);
        let request = request.into_inner();
        if let Some(mut leader) = self.route().await? {
            return leader.set_standby(onward(&who, request)).await;
        }
        let (node, member) = self.member_by_name(&request.node)?;
        if member.role != Role::Management {
            return Err(Status::failed_precondition(format!(
                "{} is a witness; standby applies to management nodes",
                member.name
            )));
        }
        self.commit(
            Command::SetStandby {
                node,
                standby: request.standby,
            },
            request.reason,
            who,
        )
        .await
    }

    async fn reset_failures(
        &self,
        request: Request<pb::ResetFailuresRequest>,
    ) -> Result<Response<pb::AdminReply>, Status> {
        let who = requester(&request);
        let request = request.into_inner();
        if let Some(mut leader) = self.route().await? {
            return leader.reset_failures(onward(&who, request)).await;
        }
        let (node, _) = self.member_by_name(&request.node)?;
        self.commit(Command::ResetFailures { node }, request.reason, who)
            .await
    }

    async fn set_outdated(
        &self,
        request: Request<pb::SetOutdatedRequest>,
    ) -> Result<Response<pb::AdminReply>, Status> {
        let who = requester(&request);
        let request = request.into_inner();
        if let Some(mut leader) = self.route().await? {
            return leader.set_outdated(onward(&who, request)).await;
        }
        let (node, member) = self.member_by_name(&request.node)?;
        if member.role != Role::Management {
            return Err(Status::failed_precondition(format!(
                "{} is a witness; it has no data to outdate",
                member.name
            )));
        }
        self.commit(
            Command::SetOutdated {
                node,
                outdated: request.outdated,
            },
            request.reason,
            who,
        )
        .await
    }

    async fn fence_peer(
        &self,
        request: Request<pb::FencePeerRequest>,
    ) -> Result<Response<pb::AdminReply>, Status> {
        let who = requester(&request);
        let request = request.into_inner();
        if let Some(mut leader) = self.route().await? {
            return leader.fence_peer(onward(&who, request)).await;
        }
        let (owner, _) = self.member_by_name(&request.owner)?;
        let (peer, member) = self.member_by_name(&request.peer)?;
        if member.role != Role::Management {
            return Err(Status::failed_precondition(format!(
                "{} is a witness; it has no data to outdate",
                member.name
            )));
        }
        // No check against the committed state here: it would race with a grant. The state
        // machine decides where the entry lands in the log (`Command::OutdatePeer`).
        self.commit(
            Command::OutdatePeer {
                owner,
                epoch: request.epoch,
                peer,
            },
            request.reason,
            who,
        )
        .await
    }

    async fn history(
        &self,
        _request: Request<pb::HistoryRequest>,
    ) -> Result<Response<pb::HistoryReply>, Status> {
        let applied = self.context.applied.borrow().clone();
        Ok(Response::new(pb::HistoryReply {
            entries: applied.state.history.iter().map(history_entry).collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::state::NodeMarks;
    use crate::core::view::Owner;

    fn members() -> BTreeMap<NodeId, Member> {
        [
            (1, "node1", Role::Management),
            (2, "node2", Role::Management),
            (3, "witness", Role::Witness),
        ]
        .into_iter()
        .map(|(id, name, role)| {
            let member = Member {
                name: name.into(),
                addr: format!("127.0.0.1:{}", 7000 + id),
                role,
            };
            (id, member)
        })
        .collect()
    }

    fn timing() -> Timing {
        Timing {
            lease_ms: 3_000,
            rho_permille: 10,
            fence_margin_ms: 500,
            migration_threshold: 3,
            max_restarts_in_place: 2,
        }
    }

    fn owned_by_node1() -> ClusterState {
        ClusterState {
            owner: Some(Owner { node: 1, epoch: 7 }),
            ..ClusterState::default()
        }
    }

    fn with_marks(marks: NodeMarks) -> ClusterState {
        let mut state = owned_by_node1();
        state.nodes.insert(2, marks);
        state
    }

    fn refusal(state: &ClusterState, target: NodeId) -> Option<String> {
        switchover_refusal(state, &members(), target, &timing())
    }

    #[test]
    fn a_clean_target_is_left_to_the_reachability_check() {
        assert_eq!(refusal(&owned_by_node1(), 2), None);
        // The owner itself, once it released its epoch, may be asked for again.
        let released = ClusterState {
            released: Some(7),
            ..owned_by_node1()
        };
        assert_eq!(refusal(&released, 1), None);
    }

    #[test]
    fn excluded_targets_are_refused_in_the_words_of_core() {
        let standby = with_marks(NodeMarks {
            standby: true,
            ..NodeMarks::default()
        });
        assert_eq!(
            refusal(&standby, 2),
            Some("node2 is on standby; unstandby it first".into())
        );
        let outdated = with_marks(NodeMarks {
            outdated: true,
            ..NodeMarks::default()
        });
        assert_eq!(
            refusal(&outdated, 2),
            Some(Ineligible::Outdated.sentence("node2"))
        );
        let failing = with_marks(NodeMarks {
            fail_count: 3,
            ..NodeMarks::default()
        });
        assert_eq!(
            refusal(&failing, 2),
            Some(
                "node2 has failed 3 times (threshold 3); fix the cause, then reset its failures"
                    .into()
            )
        );
        assert_eq!(
            refusal(&owned_by_node1(), 3),
            Some(Ineligible::Witness.sentence("witness"))
        );
    }

    #[test]
    fn a_witness_is_named_first_and_the_cluster_state_before_the_marks() {
        let paused = ClusterState {
            paused: true,
            ..with_marks(NodeMarks {
                standby: true,
                ..NodeMarks::default()
            })
        };
        assert_eq!(
            refusal(&paused, 3),
            Some(Ineligible::Witness.sentence("witness"))
        );
        assert!(refusal(&paused, 2).unwrap().contains("paused"));
        assert!(refusal(&ClusterState::default(), 2)
            .unwrap()
            .contains("no node owns the group yet"));
        assert_eq!(
            refusal(&owned_by_node1(), 1),
            Some("node1 already owns the group".into())
        );
    }
}

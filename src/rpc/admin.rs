//! The admin service: what operators and `quoratectl` ask any member.
//!
//! `Status` is answered by whichever member is asked: it reports itself and asks every other
//! member for its `LocalStatus` in parallel, each with a short deadline, so an unreachable
//! member shows up as unreachable instead of stalling the answer. Changes (switchover,
//! pause, standby, failure reset) are checked here against the committed state, then
//! committed through the leader; a refusal names the reason.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::pb::{self, admin_client, admin_server};
use super::peer::lazy_channel;
use crate::arbiter::ownership::Ownership;
use crate::arbiter::propose::Proposer;
use crate::clock::{self, wall_ms as unix_ms};
use crate::consensus::state::{self, Command};
use crate::consensus::store::AppliedState;
use crate::consensus::types::{Member, NodeId, Raft, Role};
use crate::status::{ClusterStatus, HistoryLine, MemberStatus, NodeNotes};

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
    /// Commits changes through the leader.
    pub proposer: Arc<Proposer>,
    /// The leader-side ownership service (for the leader's reason).
    pub ownership: Arc<Ownership>,
    /// Failures after which a node is no longer given the group.
    pub migration_threshold: u32,
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
            .map(|until| now.until(crate::core::time::Millis(until)))
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
                .map(|a| {
                    a.resources
                        .into_iter()
                        .map(|(name, state)| pb::ResourceState { name, state })
                        .collect()
                })
                .unwrap_or_default(),
            lease_remaining_ms,
            leader_says: c.ownership.reason().unwrap_or_default(),
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
            let confirm = tokio::time::timeout(
                super::peer::PROPOSE_TIMEOUT,
                self.context.raft.ensure_linearizable(),
            )
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
            at_unix_ms: unix_ms(),
        };
        match self.context.proposer.propose(request).await {
            Ok(response) => match response.refused {
                None => Ok(Response::new(pb::AdminReply {
                    index: response.index,
                    message: "committed".into(),
                })),
                Some(why) => Err(Status::failed_precondition(why)),
            },
            Err(e) => Err(Status::aborted(e.to_string())),
        }
    }
}

/// The metadata key a forwarding member uses to pass on who asked.
const REQUESTED_BY: &str = "quorate-requested-by";

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
        let cluster_state = &applied.state;
        let marks = cluster_state.marks(target);
        let refuse = |why: String| Err(Status::failed_precondition(why));
        if member.role != Role::Management {
            return refuse(format!(
                "{} is a witness, which never holds the group",
                member.name
            ));
        }
        if cluster_state.paused {
            return refuse("the cluster is paused; resume it first".into());
        }
        let Some(owner) = cluster_state.owner else {
            return refuse(
                "no node owns the group yet; the leader gives it to the best node by itself".into(),
            );
        };
        if owner.node == target && !cluster_state.owner_released() {
            return refuse(format!("{} already owns the group", member.name));
        }
        if marks.outdated {
            return refuse(format!(
                "{} is marked outdated (its data may be stale); it cannot take the group",
                member.name
            ));
        }
        if marks.standby {
            return refuse(format!("{} is in standby; unstandby it first", member.name));
        }
        if marks.fail_count >= self.context.migration_threshold {
            return refuse(format!(
                "{} failed {} times (migration threshold {}); reset its failures first",
                member.name, marks.fail_count, self.context.migration_threshold
            ));
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

    async fn history(
        &self,
        _request: Request<pb::HistoryRequest>,
    ) -> Result<Response<pb::HistoryReply>, Status> {
        let applied = self.context.applied.borrow().clone();
        Ok(Response::new(pb::HistoryReply {
            entries: applied
                .state
                .history
                .iter()
                .map(|h| pb::HistoryEntry {
                    index: h.index,
                    at_unix_ms: h.at_unix_ms,
                    what: h.what.clone(),
                    reason: h.reason.clone(),
                    requested_by: h.requested_by.clone(),
                })
                .collect(),
        }))
    }
}

/// Why an admin call failed, in words fit for a one-line CLI error.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The endpoint string is not usable.
    #[error("bad endpoint {0:?}: expected host:port")]
    BadEndpoint(String),
    /// Nothing answered at the endpoint.
    #[error("cannot reach {endpoint}: {message}")]
    Unreachable {
        /// The endpoint.
        endpoint: String,
        /// What the transport said.
        message: String,
    },
    /// The member answered with an error.
    #[error("refused: {message}")]
    Refused {
        /// The endpoint.
        endpoint: String,
        /// The member's reason.
        message: String,
    },
}

/// A client of one member's admin service.
pub struct AdminClient {
    endpoint: String,
    timeout: Duration,
    client: admin_client::AdminClient<Channel>,
}

impl AdminClient {
    /// A client for `endpoint` (`host:port`); every call gives up after `timeout`.
    pub fn new(endpoint: &str, timeout: Duration) -> Result<Self, AdminError> {
        if crate::config::check_host_port(endpoint).is_err() {
            return Err(AdminError::BadEndpoint(endpoint.to_string()));
        }
        let channel = lazy_channel(endpoint, timeout)
            .map_err(|_| AdminError::BadEndpoint(endpoint.to_string()))?;
        Ok(AdminClient {
            endpoint: endpoint.to_string(),
            timeout,
            client: admin_client::AdminClient::new(channel),
        })
    }

    fn fail(&self, status: Status) -> AdminError {
        let transport =
            status.code() == tonic::Code::Unknown && status.message().contains("transport error");
        match status.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                AdminError::Unreachable {
                    endpoint: self.endpoint.clone(),
                    message: first_line(status.message()),
                }
            }
            _ if transport => AdminError::Unreachable {
                endpoint: self.endpoint.clone(),
                message: first_line(status.message()),
            },
            _ => AdminError::Refused {
                endpoint: self.endpoint.clone(),
                message: first_line(status.message()),
            },
        }
    }

    async fn call<T, F>(&mut self, call: F) -> Result<T, AdminError>
    where
        F: std::future::Future<Output = Result<Response<T>, Status>>,
    {
        match tokio::time::timeout(self.timeout, call).await {
            Err(_) => Err(AdminError::Unreachable {
                endpoint: self.endpoint.clone(),
                message: format!("no answer within {:?}", self.timeout),
            }),
            Ok(result) => result.map(Response::into_inner).map_err(|s| self.fail(s)),
        }
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(self.timeout);
        request
    }

    /// The cluster status as the member at the endpoint sees it.
    pub async fn status(&mut self) -> Result<ClusterStatus, AdminError> {
        let request = self.request(pb::StatusRequest {});
        let mut client = self.client.clone();
        let reply = self.call(client.status(request)).await?;
        Ok(cluster_status(reply))
    }

    /// Asks for a planned switchover to `to`; returns the commit index.
    pub async fn switchover(&mut self, to: &str, reason: &str) -> Result<u64, AdminError> {
        let request = self.request(pb::SwitchoverRequest {
            to: to.to_string(),
            reason: reason.to_string(),
        });
        let mut client = self.client.clone();
        Ok(self.call(client.switchover(request)).await?.index)
    }

    /// Pauses or resumes automatic actions; returns the commit index.
    pub async fn set_paused(&mut self, paused: bool, reason: &str) -> Result<u64, AdminError> {
        let request = self.request(pb::SetPausedRequest {
            paused,
            reason: reason.to_string(),
        });
        let mut client = self.client.clone();
        Ok(self.call(client.set_paused(request)).await?.index)
    }

    /// Sets or clears a node's standby mark; returns the commit index.
    pub async fn set_standby(
        &mut self,
        node: &str,
        standby: bool,
        reason: &str,
    ) -> Result<u64, AdminError> {
        let request = self.request(pb::SetStandbyRequest {
            node: node.to_string(),
            standby,
            reason: reason.to_string(),
        });
        let mut client = self.client.clone();
        Ok(self.call(client.set_standby(request)).await?.index)
    }

    /// Sets or clears a node's outdated mark; returns the commit index.
    pub async fn set_outdated(
        &mut self,
        node: &str,
        outdated: bool,
        reason: &str,
    ) -> Result<u64, AdminError> {
        let request = self.request(pb::SetOutdatedRequest {
            node: node.to_string(),
            outdated,
            reason: reason.to_string(),
        });
        let mut client = self.client.clone();
        Ok(self.call(client.set_outdated(request)).await?.index)
    }

    /// Clears a node's failure count; returns the commit index.
    pub async fn reset_failures(&mut self, node: &str, reason: &str) -> Result<u64, AdminError> {
        let request = self.request(pb::ResetFailuresRequest {
            node: node.to_string(),
            reason: reason.to_string(),
        });
        let mut client = self.client.clone();
        Ok(self.call(client.reset_failures(request)).await?.index)
    }

    /// The bounded history of ownership changes and admin actions, oldest first.
    pub async fn history(&mut self) -> Result<Vec<HistoryLine>, AdminError> {
        let request = self.request(pb::HistoryRequest {});
        let mut client = self.client.clone();
        let reply = self.call(client.history(request)).await?;
        Ok(reply
            .entries
            .into_iter()
            .map(|e| HistoryLine {
                index: e.index,
                at_unix_ms: e.at_unix_ms,
                what: e.what,
                reason: e.reason,
                requested_by: e.requested_by,
            })
            .collect())
    }
}

fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or("").trim();
    if line.is_empty() {
        "connection failed".to_string()
    } else {
        line.to_string()
    }
}

fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

fn cluster_status(reply: pb::StatusReply) -> ClusterStatus {
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
            })
            .collect(),
    }
}

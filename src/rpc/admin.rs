//! The admin service: what operators and `quoratectl` ask any member.
//!
//! `Status` is answered by whichever member is asked: it reports itself and asks every other
//! member for its `LocalStatus` in parallel, each with a short deadline, so an unreachable
//! member shows up as unreachable instead of stalling the answer.

use std::sync::Arc;
use std::time::Duration;

use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::pb::{self, admin_client, admin_server};
use super::peer::lazy_channel;
use crate::consensus::types::{Member, NodeId, Raft};
use crate::status::{ClusterStatus, MemberStatus, NodeNotes};

/// How long `Status` waits for each other member.
const MEMBER_STATUS_TIMEOUT: Duration = Duration::from_millis(700);

/// Serves the admin API of one member.
pub struct AdminService {
    raft: Raft,
    cluster: String,
    node_id: NodeId,
    members: Vec<(NodeId, Member)>,
    clients: Vec<(NodeId, admin_client::AdminClient<Channel>)>,
    notes: Arc<NodeNotes>,
}

impl AdminService {
    /// The admin service of `node_id` in `cluster`, whose members are `members`.
    pub fn new(
        raft: Raft,
        cluster: String,
        node_id: NodeId,
        members: Vec<(NodeId, Member)>,
        notes: Arc<NodeNotes>,
    ) -> Self {
        let clients = members
            .iter()
            .filter(|(id, _)| *id != node_id)
            .filter_map(|(id, member)| {
                lazy_channel(&member.addr, MEMBER_STATUS_TIMEOUT)
                    .ok()
                    .map(|channel| (*id, admin_client::AdminClient::new(channel)))
            })
            .collect();
        AdminService {
            raft,
            cluster,
            node_id,
            members,
            clients,
            notes,
        }
    }

    /// The tonic server wrapper.
    pub fn into_server(self) -> admin_server::AdminServer<Self> {
        admin_server::AdminServer::new(self)
    }

    fn local(&self) -> pb::LocalStatusReply {
        let m = self.raft.metrics().borrow().clone();
        pb::LocalStatusReply {
            node_id: self.node_id,
            state: server_state_name(m.state).to_string(),
            term: m.current_term,
            leader_id: m.current_leader,
            last_log_index: m.last_log_index,
            applied_index: m.last_applied.map(|id| id.index),
            waiting_reason: self.notes.waiting().unwrap_or_default(),
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
}

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
        let asks = self.members.iter().map(|(id, _)| async move {
            if *id == self.node_id {
                Some(self.local())
            } else {
                self.ask(*id).await
            }
        });
        let replies = futures::future::join_all(asks).await;
        let members = self
            .members
            .iter()
            .zip(replies)
            .map(|((id, member), reply)| pb::MemberStatus {
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
            })
            .collect();
        let leader_name = local
            .leader_id
            .and_then(|l| self.members.iter().find(|(id, _)| *id == l))
            .map(|(_, m)| m.name.clone())
            .unwrap_or_default();
        Ok(Response::new(pb::StatusReply {
            cluster: self.cluster.clone(),
            term: local.term,
            leader_id: local.leader_id,
            leader_name,
            answered_by: self.node_id,
            members,
            waiting_reason: local.waiting_reason,
        }))
    }

    async fn local_status(
        &self,
        _request: Request<pb::LocalStatusRequest>,
    ) -> Result<Response<pb::LocalStatusReply>, Status> {
        Ok(Response::new(self.local()))
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
    #[error("{endpoint} refused: {message}")]
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
        match status.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                AdminError::Unreachable {
                    endpoint: self.endpoint.clone(),
                    message: first_line(status.message()),
                }
            }
            _ => AdminError::Refused {
                endpoint: self.endpoint.clone(),
                message: first_line(status.message()),
            },
        }
    }

    /// The cluster status as the member at the endpoint sees it.
    pub async fn status(&mut self) -> Result<ClusterStatus, AdminError> {
        let mut request = Request::new(pb::StatusRequest {});
        request.set_timeout(self.timeout);
        let reply = match tokio::time::timeout(self.timeout, self.client.status(request)).await {
            Err(_) => {
                return Err(AdminError::Unreachable {
                    endpoint: self.endpoint.clone(),
                    message: format!("no answer within {:?}", self.timeout),
                })
            }
            Ok(result) => result.map_err(|s| self.fail(s))?.into_inner(),
        };
        Ok(cluster_status(reply))
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
        leader: (!reply.leader_name.is_empty()).then_some(reply.leader_name),
        leader_id: reply.leader_id,
        answered_by,
        waiting: (!reply.waiting_reason.is_empty()).then_some(reply.waiting_reason),
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
            })
            .collect(),
    }
}

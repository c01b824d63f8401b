//! The peer service: openraft's RPCs between arbiters, plus the bootstrap probe.
//!
//! Server side, every request is checked before openraft sees it: it must name this cluster,
//! be addressed to this node's id, and come from a member. Client side, [`PeerClient`] keeps
//! one lazily connected channel per peer and turns transport failures into [`CallError`]s that
//! the Raft network maps onto openraft's error kinds.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status};

use super::pb::{self, peer_client, peer_server};
use super::{decode, encode, MAX_MESSAGE_BYTES};
use crate::arbiter::horizon::Horizon;
use crate::arbiter::ownership::{Ownership, ReportError};
use crate::consensus::network::Faults;
use crate::consensus::rejoin::{Progress, RejoinGuard};
use crate::consensus::state::{Request as Proposal, Response as Outcome};
use crate::consensus::types::{NodeId, Raft, TypeConfig};

/// How long a forwarded proposal may take to commit on the leader.
pub const PROPOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Who this node is, for checking incoming envelopes and stamping outgoing ones.
#[derive(Clone, Debug)]
pub struct Identity {
    /// The cluster name from the config.
    pub cluster: String,
    /// This node's id.
    pub node_id: NodeId,
    /// Every member id allowed to talk to this node.
    pub members: BTreeSet<NodeId>,
}

impl Identity {
    fn envelope_to(&self, to: NodeId) -> pb::Envelope {
        pb::Envelope {
            cluster: self.cluster.clone(),
            from: self.node_id,
            to,
        }
    }

    /// Accepts an envelope only when it names this cluster, this node and a member sender;
    /// returns the sender.
    fn check(&self, envelope: Option<&pb::Envelope>) -> Result<NodeId, Status> {
        let Some(envelope) = envelope else {
            return Err(Status::invalid_argument("peer request without an envelope"));
        };
        if envelope.cluster != self.cluster {
            return Err(Status::failed_precondition(format!(
                "request for cluster {:?} reached a member of cluster {:?}",
                envelope.cluster, self.cluster
            )));
        }
        if envelope.to != self.node_id {
            return Err(Status::failed_precondition(format!(
                "request addressed to node {} reached node {}; check the member addresses",
                envelope.to, self.node_id
            )));
        }
        if !self.members.contains(&envelope.from) {
            return Err(Status::permission_denied(format!(
                "node {} is not a member of cluster {:?}",
                envelope.from, self.cluster
            )));
        }
        Ok(envelope.from)
    }
}

/// Which leaders a pristine node may take the log from.
///
/// openraft 0.9 panics on a leader that remembers entries a follower acknowledged when that
/// follower answers as if it had none (its store was wiped). A node whose store is empty
/// therefore accepts appends and snapshots only from senders that said, in a bootstrap probe,
/// that they remember nothing of it. Once the node holds anything the gate is moot.
#[derive(Debug, Default)]
pub struct AppendGate {
    cleared: std::sync::Mutex<BTreeSet<NodeId>>,
}

impl AppendGate {
    /// Replaces the set of senders a pristine node may take the log from.
    pub fn set_cleared(&self, senders: BTreeSet<NodeId>) {
        if let Ok(mut cleared) = self.cleared.lock() {
            *cleared = senders;
        }
    }

    fn allows(&self, sender: NodeId) -> bool {
        self.cleared
            .lock()
            .map(|c| c.contains(&sender))
            .unwrap_or(false)
    }
}

/// Serves openraft's RPCs, the bootstrap probe, reports and forwarded proposals.
pub struct PeerService {
    raft: Raft,
    identity: Identity,
    ownership: Arc<Ownership>,
    gate: Arc<AppendGate>,
    horizon: Arc<Horizon>,
    rejoin: Arc<RejoinGuard>,
}

impl PeerService {
    /// A service that checks envelopes against `identity` and hands requests to `raft`, and
    /// reports to `ownership`. Every AppendEntries and snapshot is noted in `horizon` as it
    /// arrives, before openraft handles it; votes pass `rejoin` first.
    pub fn new(
        raft: Raft,
        identity: Identity,
        ownership: Arc<Ownership>,
        gate: Arc<AppendGate>,
        horizon: Arc<Horizon>,
        rejoin: Arc<RejoinGuard>,
    ) -> Self {
        PeerService {
            raft,
            identity,
            ownership,
            gate,
            horizon,
            rejoin,
        }
    }

    /// Refuses the log from `sender` while this node is pristine and `sender` was not cleared.
    fn check_gate(&self, sender: NodeId) -> Result<(), Status> {
        let pristine = crate::consensus::is_pristine(&self.raft.metrics().borrow());
        if pristine && !self.gate.allows(sender) {
            return Err(Status::failed_precondition(format!(
                "node {} has an empty store and has not yet confirmed that node {sender} \
                 remembers nothing of it; it takes no log entries until then",
                self.identity.node_id
            )));
        }
        Ok(())
    }

    /// The tonic server wrapper, with quorate's message size limits.
    pub fn into_server(self) -> peer_server::PeerServer<Self> {
        peer_server::PeerServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// Checks the envelope (and, for log traffic, the append gate), decodes the payload,
    /// runs `call` on it and encodes its result for the sender.
    async fn relay<Req, Resp, F, Fut>(
        &self,
        request: Request<pb::RaftMessage>,
        log_traffic: bool,
        call: F,
    ) -> Result<Response<pb::RaftMessage>, Status>
    where
        Req: serde::de::DeserializeOwned,
        Resp: serde::Serialize,
        F: FnOnce(Req) -> Fut,
        Fut: std::future::Future<Output = Resp>,
    {
        let message = request.into_inner();
        let from = self.identity.check(message.envelope.as_ref())?;
        if log_traffic {
            self.check_gate(from)?;
        }
        let rpc = decode(&message.payload).map_err(bad_payload)?;
        let result = call(rpc).await;
        Ok(self.reply(from, &result))
    }

    fn reply<T: serde::Serialize>(&self, from: NodeId, value: &T) -> Response<pb::RaftMessage> {
        Response::new(pb::RaftMessage {
            envelope: Some(self.identity.envelope_to(from)),
            payload: encode(value),
        })
    }
}

fn bad_payload(e: super::PayloadError) -> Status {
    Status::invalid_argument(format!("peer message: {e}"))
}

#[tonic::async_trait]
impl peer_server::Peer for PeerService {
    async fn vote(
        &self,
        request: Request<pb::RaftMessage>,
    ) -> Result<Response<pb::RaftMessage>, Status> {
        let message = request.into_inner();
        let from = self.identity.check(message.envelope.as_ref())?;
        let rpc: openraft::raft::VoteRequest<NodeId> =
            decode(&message.payload).map_err(bad_payload)?;
        let term = rpc.vote.leader_id().get_term();
        let progress = Progress::of(&self.raft.metrics().borrow());
        if let Err(why) = self.rejoin.may_vote(term, progress) {
            tracing::warn!(candidate = from, term, "vote refused: {why}");
            return Err(Status::failed_precondition(why));
        }
        Ok(self.reply(from, &self.raft.vote(rpc).await))
    }

    async fn append_entries(
        &self,
        request: Request<pb::RaftMessage>,
    ) -> Result<Response<pb::RaftMessage>, Status> {
        self.relay(
            request,
            true,
            |rpc: openraft::raft::AppendEntriesRequest<TypeConfig>| {
                self.horizon.note(rpc.vote.leader_id().get_term());
                self.rejoin
                    .took_append(rpc.leader_commit.map(|log_id| log_id.index));
                self.raft.append_entries(rpc)
            },
        )
        .await
    }

    async fn install_snapshot(
        &self,
        request: Request<pb::RaftMessage>,
    ) -> Result<Response<pb::RaftMessage>, Status> {
        self.relay(
            request,
            true,
            |rpc: openraft::raft::InstallSnapshotRequest<TypeConfig>| {
                self.horizon.note(rpc.vote.leader_id().get_term());
                self.raft.install_snapshot(rpc)
            },
        )
        .await
    }

    async fn probe(
        &self,
        request: Request<pb::ProbeRequest>,
    ) -> Result<Response<pb::ProbeReply>, Status> {
        let from = self.identity.check(request.get_ref().envelope.as_ref())?;
        let metrics = self.raft.metrics().borrow().clone();
        let matched_you = metrics
            .replication
            .as_ref()
            .and_then(|r| r.get(&from).cloned())
            .flatten()
            .is_some();
        Ok(Response::new(pb::ProbeReply {
            node_id: self.identity.node_id,
            pristine: crate::consensus::is_pristine(&metrics),
            matched_you,
        }))
    }

    async fn report(
        &self,
        request: Request<pb::ReportRequest>,
    ) -> Result<Response<pb::ReportReply>, Status> {
        let report = request.into_inner();
        let from = self.identity.check(report.envelope.as_ref())?;
        let reply = match self
            .ownership
            .report(from, report.renew_epoch, report.healthy)
            .await
        {
            Ok(granted) => pb::ReportReply {
                granted,
                refused: String::new(),
                definitive: false,
            },
            Err(e) => pb::ReportReply {
                granted: false,
                definitive: matches!(e, ReportError::Refused(_)),
                refused: e.to_string(),
            },
        };
        Ok(Response::new(reply))
    }

    async fn horizon(
        &self,
        request: Request<pb::HorizonRequest>,
    ) -> Result<Response<pb::HorizonReply>, Status> {
        let asked = request.into_inner();
        self.identity.check(asked.envelope.as_ref())?;
        // Read the term first: once this node is in `asked.term`, openraft refuses every
        // round of an earlier term, and every one it took part in was noted before that.
        let term = self.raft.metrics().borrow().current_term;
        Ok(Response::new(pb::HorizonReply {
            term,
            age_ms: self.horizon.age_before(asked.term),
        }))
    }

    async fn propose(
        &self,
        request: Request<pb::RaftMessage>,
    ) -> Result<Response<pb::RaftMessage>, Status> {
        self.relay(request, false, |proposal: Proposal| async move {
            let written =
                tokio::time::timeout(PROPOSE_TIMEOUT, self.raft.client_write(proposal)).await;
            let result: Result<Outcome, String> = match written {
                Err(_) => Err(format!("not committed within {PROPOSE_TIMEOUT:?}")),
                Ok(Err(e)) => Err(e.to_string()),
                Ok(Ok(written)) => Ok(written.data),
            };
            result
        })
        .await
    }
}

/// Why a call to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No connection could be made: the peer is down or cut off.
    #[error("peer unreachable: {0}")]
    Unreachable(String),
    /// The peer did not answer in time.
    #[error("peer did not answer within {0:?}")]
    Timeout(Duration),
    /// The peer answered with an error status, or with something that does not decode.
    #[error("peer call failed: {0}")]
    Failed(String),
}

/// Settings for calls to peers.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Limit for establishing a TCP connection.
    pub connect: Duration,
    /// Links cut on purpose by tests; `None` in production.
    pub faults: Option<Arc<Faults>>,
}

/// One cached [`PeerClient`] per member, built on first use.
pub struct PeerClients {
    identity: Arc<Identity>,
    members: std::collections::BTreeMap<NodeId, crate::consensus::types::Member>,
    options: ClientOptions,
    cache: std::sync::Mutex<std::collections::HashMap<NodeId, PeerClient>>,
}

impl PeerClients {
    /// Clients from `identity` to `members`, with `options`.
    pub fn new(
        identity: Arc<Identity>,
        members: std::collections::BTreeMap<NodeId, crate::consensus::types::Member>,
        options: ClientOptions,
    ) -> Self {
        PeerClients {
            identity,
            members,
            options,
            cache: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// The client for member `target`.
    pub fn get(&self, target: NodeId) -> Result<PeerClient, CallError> {
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(client) = cache.get(&target) {
            return Ok(client.clone());
        }
        let member = self
            .members
            .get(&target)
            .ok_or_else(|| CallError::Failed(format!("node {target} is not a member")))?;
        let client = PeerClient::new(
            self.identity.clone(),
            target,
            &member.addr,
            self.options.clone(),
        )?;
        cache.insert(target, client.clone());
        Ok(client)
    }
}

/// A cached, lazily connected channel to one peer's gRPC endpoint.
#[derive(Clone)]
pub struct PeerClient {
    target: NodeId,
    identity: Arc<Identity>,
    client: peer_client::PeerClient<Channel>,
    faults: Option<Arc<Faults>>,
}

impl PeerClient {
    /// A client for `target` at `addr` (`host:port`). Connecting happens on first use.
    pub fn new(
        identity: Arc<Identity>,
        target: NodeId,
        addr: &str,
        options: ClientOptions,
    ) -> Result<Self, CallError> {
        let channel = lazy_channel(addr, options.connect)?;
        let client = peer_client::PeerClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Ok(PeerClient {
            target,
            identity,
            client,
            faults: options.faults,
        })
    }

    /// A test fault drops what this node sends to the target.
    fn cut_out(&self) -> Result<(), CallError> {
        match &self.faults {
            Some(f) if f.is_blocked(self.identity.node_id, self.target) => {
                Err(CallError::Unreachable("link cut by a test fault".into()))
            }
            _ => Ok(()),
        }
    }

    /// A test fault drops the target's answers: the call went through, the answer is lost.
    fn cut_back(&self, timeout: Duration) -> Result<(), CallError> {
        match &self.faults {
            Some(f) if f.is_blocked(self.target, self.identity.node_id) => {
                Err(CallError::Timeout(timeout))
            }
            _ => Ok(()),
        }
    }

    /// Sends one openraft request to `method` and decodes the peer's `Result`.
    pub async fn call<Req, Resp>(
        &mut self,
        method: PeerMethod,
        rpc: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
    {
        self.cut_out()?;
        let mut request = Request::new(pb::RaftMessage {
            envelope: Some(self.identity.envelope_to(self.target)),
            payload: encode(rpc),
        });
        request.set_timeout(timeout);
        let call = async {
            match method {
                PeerMethod::Vote => self.client.vote(request).await,
                PeerMethod::AppendEntries => self.client.append_entries(request).await,
                PeerMethod::InstallSnapshot => self.client.install_snapshot(request).await,
                PeerMethod::Propose => self.client.propose(request).await,
            }
        };
        let response = match tokio::time::timeout(timeout, call).await {
            Err(_) => return Err(CallError::Timeout(timeout)),
            Ok(result) => result.map_err(|status| status_to_error(status, timeout))?,
        };
        self.cut_back(timeout)?;
        decode(&response.into_inner().payload).map_err(|e| CallError::Failed(e.to_string()))
    }

    /// Reports to the peer (the leader); `renew_epoch > 0` asks for a lease. `Ok(Ok(granted))`
    /// when the leader answered, `Ok(Err(why))` when it did not renew the lease.
    pub async fn report(
        &mut self,
        renew_epoch: u64,
        healthy: bool,
        health_reason: &str,
        timeout: Duration,
    ) -> Result<Result<bool, ReportError>, CallError> {
        self.cut_out()?;
        let mut request = Request::new(pb::ReportRequest {
            envelope: Some(self.identity.envelope_to(self.target)),
            renew_epoch,
            healthy,
            health_reason: health_reason.to_string(),
        });
        request.set_timeout(timeout);
        match tokio::time::timeout(timeout, self.client.report(request)).await {
            Err(_) => Err(CallError::Timeout(timeout)),
            Ok(Err(status)) => Err(status_to_error(status, timeout)),
            Ok(Ok(reply)) => {
                self.cut_back(timeout)?;
                let reply = reply.into_inner();
                if reply.refused.is_empty() {
                    Ok(Ok(reply.granted))
                } else if reply.definitive {
                    Ok(Err(ReportError::Refused(reply.refused)))
                } else {
                    Ok(Err(ReportError::Undecided(reply.refused)))
                }
            }
        }
    }

    /// Asks the peer when it last took part in a quorum round of a term below `term`.
    pub async fn horizon(
        &mut self,
        term: u64,
        timeout: Duration,
    ) -> Result<pb::HorizonReply, CallError> {
        self.cut_out()?;
        let mut request = Request::new(pb::HorizonRequest {
            envelope: Some(self.identity.envelope_to(self.target)),
            term,
        });
        request.set_timeout(timeout);
        match tokio::time::timeout(timeout, self.client.horizon(request)).await {
            Err(_) => Err(CallError::Timeout(timeout)),
            Ok(Err(status)) => Err(status_to_error(status, timeout)),
            Ok(Ok(reply)) => {
                self.cut_back(timeout)?;
                Ok(reply.into_inner())
            }
        }
    }

    /// Asks the peer whether its store is pristine and whether it remembers this node's log
    /// (bootstrap).
    pub async fn probe(&mut self, timeout: Duration) -> Result<pb::ProbeReply, CallError> {
        self.cut_out()?;
        let mut request = Request::new(pb::ProbeRequest {
            envelope: Some(self.identity.envelope_to(self.target)),
        });
        request.set_timeout(timeout);
        match tokio::time::timeout(timeout, self.client.probe(request)).await {
            Err(_) => Err(CallError::Timeout(timeout)),
            Ok(Err(status)) => Err(status_to_error(status, timeout)),
            Ok(Ok(reply)) => {
                self.cut_back(timeout)?;
                Ok(reply.into_inner())
            }
        }
    }
}

/// The peer RPC being called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerMethod {
    /// RequestVote.
    Vote,
    /// AppendEntries (also heartbeats).
    AppendEntries,
    /// One snapshot chunk.
    InstallSnapshot,
    /// A proposal forwarded to the leader.
    Propose,
}

/// A channel to `addr` that connects on first use, with quorate's transport settings.
pub fn lazy_channel(addr: &str, connect_timeout: Duration) -> Result<Channel, CallError> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| CallError::Failed(format!("bad peer address {addr:?}: {e}")))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    Ok(endpoint.connect_lazy())
}

fn status_to_error(status: Status, timeout: Duration) -> CallError {
    match status.code() {
        Code::Unavailable => CallError::Unreachable(status.message().to_string()),
        Code::DeadlineExceeded | Code::Cancelled => CallError::Timeout(timeout),
        _ => CallError::Failed(format!("{:?}: {}", status.code(), status.message())),
    }
}

//! The peer server: answers other arbiters' peer calls.
//!
//! Every request is checked before openraft sees it: it must name this cluster, be addressed
//! to this node's id, and come from a member. Log traffic to a pristine node must also pass
//! the [`AppendGate`], and votes the [`RejoinGuard`].
//!
//! The server reaches the arbiter (lease reports, the lease horizon) only through
//! [`PeerHandler`], which the arbiter implements: this file names no arbiter type, so the
//! arbiter may use the peer client without a cycle through here.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{AppendGate, Identity, ReportError, PROPOSE_TIMEOUT};
use crate::consensus::rejoin::{Progress, RejoinGuard};
use crate::consensus::state::{Request as Proposal, Response as Outcome};
use crate::consensus::types::{NodeId, Raft, TypeConfig};
use crate::rpc::pb::{self, peer_server};
use crate::rpc::{decode, encode, PayloadError, MAX_MESSAGE_BYTES};

/// What the peer server asks of the arbiter it serves.
#[async_trait::async_trait]
pub trait PeerHandler: Send + Sync + 'static {
    /// Notes that this node takes part in a quorum round of `term` now: an AppendEntries or
    /// snapshot of `term` arrived and is about to be handled and answered.
    fn note_round(&self, term: u64);

    /// Milliseconds (this node's clock, rounded down) since this node last took part in a
    /// quorum round of a term below `term`.
    fn age_before(&self, term: u64) -> u64;

    /// Handles management node `from`'s report; `renew_epoch > 0` asks for a lease. Returns
    /// `Ok(true)` when a lease was granted, `Ok(false)` when none was asked for, and the
    /// reason when the renewal was refused.
    async fn report(
        &self,
        from: NodeId,
        renew_epoch: u64,
        healthy: bool,
    ) -> Result<bool, ReportError>;
}

/// Serves openraft's RPCs, the bootstrap probe, reports and forwarded proposals.
pub struct PeerService {
    raft: Raft,
    identity: Identity,
    handler: Arc<dyn PeerHandler>,
    gate: Arc<AppendGate>,
    rejoin: Arc<RejoinGuard>,
}

impl PeerService {
    /// A service that checks envelopes against `identity` and hands requests to `raft`, and
    /// reports to `handler`. Every AppendEntries and snapshot is noted with `handler` as it
    /// arrives, before openraft handles it; log traffic passes `gate` and votes pass `rejoin`
    /// first.
    pub fn new(
        raft: Raft,
        identity: Identity,
        handler: Arc<dyn PeerHandler>,
        gate: Arc<AppendGate>,
        rejoin: Arc<RejoinGuard>,
    ) -> Self {
        PeerService {
            raft,
            identity,
            handler,
            gate,
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

fn bad_payload(e: PayloadError) -> Status {
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
                self.handler.note_round(rpc.vote.leader_id().get_term());
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
                self.handler.note_round(rpc.vote.leader_id().get_term());
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
            .handler
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
            age_ms: self.handler.age_before(asked.term),
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

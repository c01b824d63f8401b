//! The peer client: calls to other arbiters' peer service.
//!
//! [`PeerClient`] keeps one lazily connected channel per peer and turns transport failures
//! into [`CallError`]s, which the Raft network maps onto openraft's error kinds. Its methods
//! take and return quorate's types only ([`ProbeAnswer`], [`HorizonAnswer`], [`ReportError`]);
//! the generated protobuf messages stay in this file.
//!
//! In-process tests can cut links with [`Faults`]: a blocked `(from, to)` pair drops requests
//! from `from` to `to`, and a blocked `(to, from)` pair drops the answer. The client applies
//! the table to every peer call (Raft, lease reports, proposals, horizon questions, bootstrap
//! probes).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use super::{Identity, ReportError};
use crate::consensus::types::{Member, NodeId};
use crate::rpc::pb::{self, peer_client};
use crate::rpc::{decode, encode, MAX_MESSAGE_BYTES};

/// Links cut on purpose, for tests. Empty in production.
#[derive(Debug, Default)]
pub struct Faults {
    blocked: RwLock<BTreeSet<(NodeId, NodeId)>>,
}

impl Faults {
    /// A fault table with every link working.
    pub fn new() -> Arc<Self> {
        Arc::new(Faults::default())
    }

    /// Drops every message from `from` to `to` (one way).
    pub fn block(&self, from: NodeId, to: NodeId) {
        if let Ok(mut set) = self.blocked.write() {
            set.insert((from, to));
        }
    }

    /// Cuts `a` from `b` both ways.
    pub fn partition(&self, a: NodeId, b: NodeId) {
        self.block(a, b);
        self.block(b, a);
    }

    /// Cuts `node` from every id in `others`, both ways.
    pub fn isolate(&self, node: NodeId, others: &[NodeId]) {
        for &other in others {
            self.partition(node, other);
        }
    }

    /// Restores every link.
    pub fn heal(&self) {
        if let Ok(mut set) = self.blocked.write() {
            set.clear();
        }
    }

    /// True when messages from `from` to `to` are dropped.
    pub fn is_blocked(&self, from: NodeId, to: NodeId) -> bool {
        self.blocked
            .read()
            .map(|set| set.contains(&(from, to)))
            .unwrap_or(false)
    }
}

/// A peer's answer to the bootstrap probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeAnswer {
    /// The id the peer answered as.
    pub node_id: NodeId,
    /// Its store holds nothing.
    pub pristine: bool,
    /// It leads and remembers log entries the asker acknowledged.
    pub matched_you: bool,
}

/// A peer's answer to "when did you last take part in a quorum round of a term below `T`".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HorizonAnswer {
    /// The peer's current term when it answered.
    pub term: u64,
    /// Milliseconds, on the peer's clock and rounded down, since that round.
    pub age_ms: u64,
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
    members: BTreeMap<NodeId, Member>,
    options: ClientOptions,
    cache: Mutex<HashMap<NodeId, PeerClient>>,
}

impl PeerClients {
    /// Clients from `identity` to `members`, with `options`.
    pub fn new(
        identity: Arc<Identity>,
        members: BTreeMap<NodeId, Member>,
        options: ClientOptions,
    ) -> Self {
        PeerClients {
            identity,
            members,
            options,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The client for member `target`.
    pub fn get(&self, target: NodeId) -> Result<PeerClient, CallError> {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
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
    ) -> Result<HorizonAnswer, CallError> {
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
                let reply = reply.into_inner();
                Ok(HorizonAnswer {
                    term: reply.term,
                    age_ms: reply.age_ms,
                })
            }
        }
    }

    /// Asks the peer whether its store is pristine and whether it remembers this node's log
    /// (bootstrap).
    pub async fn probe(&mut self, timeout: Duration) -> Result<ProbeAnswer, CallError> {
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
                let reply = reply.into_inner();
                Ok(ProbeAnswer {
                    node_id: reply.node_id,
                    pristine: reply.pristine,
                    matched_you: reply.matched_you,
                })
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

/// The kind of failure a peer's error status stands for.
fn status_to_error(status: Status, timeout: Duration) -> CallError {
    match status.code() {
        Code::Unavailable => CallError::Unreachable(status.message().to_string()),
        Code::DeadlineExceeded | Code::Cancelled => CallError::Timeout(timeout),
        _ => CallError::Failed(format!("{:?}: {}", status.code(), status.message())),
    }
}

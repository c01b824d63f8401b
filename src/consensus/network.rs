//! openraft's network, over the gRPC peer service.
//!
//! The factory keeps one [`PeerClient`] (one HTTP/2 channel) per peer and hands clones to
//! openraft, which asks for a client per replication stream, per election and per leadership
//! check. Failures map onto openraft's kinds so that only a failed connection counts as
//! `Unreachable` (which makes openraft back off); a slow peer is a `Timeout`.
//!
//! Links cut by tests are applied by the peer client itself (see
//! [`crate::rpc::peer::client::Faults`]), so this file sees them as ordinary failures.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{Backoff, RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

use crate::consensus::types::{Member, NodeId, TypeConfig};
use crate::rpc::peer::client::{CallError, ClientOptions, PeerClient, PeerMethod};
use crate::rpc::peer::Identity;

/// Hands openraft a client per peer, reusing one channel per `(id, address)`.
#[derive(Clone)]
pub struct Network {
    identity: Arc<Identity>,
    options: ClientOptions,
    backoff: Duration,
    clients: Arc<Mutex<HashMap<(NodeId, String), PeerClient>>>,
}

impl Network {
    /// A network for the node `identity` describes. `backoff` is how long openraft waits
    /// before retrying an unreachable peer.
    pub fn new(identity: Arc<Identity>, options: ClientOptions, backoff: Duration) -> Self {
        Network {
            identity,
            options,
            backoff,
            clients: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    fn client_for(&self, target: NodeId, addr: &str) -> Result<PeerClient, CallError> {
        let key = (target, addr.to_string());
        let mut clients = self
            .clients
            .lock()
            .map_err(|_| CallError::Failed("peer client cache poisoned".into()))?;
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        let client = PeerClient::new(self.identity.clone(), target, addr, self.options.clone())?;
        clients.insert(key, client.clone());
        Ok(client)
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> Self::Network {
        Connection {
            me: self.identity.node_id,
            target,
            client: self.client_for(target, &node.addr),
            backoff: self.backoff,
        }
    }
}

/// openraft's view of one peer.
pub struct Connection {
    me: NodeId,
    target: NodeId,
    client: Result<PeerClient, CallError>,
    backoff: Duration,
}

impl Connection {
    async fn call<Req, Resp, E>(
        &mut self,
        method: PeerMethod,
        action: RPCTypes,
        rpc: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, Member, E>>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
        Result<Resp, E>: serde::de::DeserializeOwned,
        E: std::error::Error,
    {
        let timeout = option.hard_ttl();
        let timed_out = || {
            RPCError::Timeout(Timeout {
                action,
                id: self.me,
                target: self.target,
                timeout,
            })
        };
        let client = match &mut self.client {
            Ok(client) => client,
            Err(e) => return Err(RPCError::Unreachable(Unreachable::new(e))),
        };
        let result: Result<Result<Resp, E>, CallError> = client.call(method, rpc, timeout).await;
        match result {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(remote)) => Err(RPCError::RemoteError(RemoteError::new(self.target, remote))),
            Err(CallError::Timeout(_)) => Err(timed_out()),
            Err(e @ CallError::Unreachable(_)) => Err(RPCError::Unreachable(Unreachable::new(&e))),
            Err(e @ CallError::Failed(_)) => Err(RPCError::Network(NetworkError::new(&e))),
        }
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        self.call(
            PeerMethod::AppendEntries,
            RPCTypes::AppendEntries,
            &rpc,
            &option,
        )
        .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Member, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(
            PeerMethod::InstallSnapshot,
            RPCTypes::InstallSnapshot,
            &rpc,
            &option,
        )
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        self.call(PeerMethod::Vote, RPCTypes::Vote, &rpc, &option)
            .await
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(self.backoff))
    }
}

//! Proposing changes to the replicated state from any member: locally when this node leads,
//! otherwise forwarded to the leader over the peer service. Used by the agent (release,
//! failure counts) and by the admin service (switchover, pause, standby).

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::ServerState;

use crate::consensus::state::{Request, Response};
use crate::consensus::types::{Member, NodeId, Raft};
use crate::rpc::peer::client::{ClientOptions, PeerClient, PeerClients, PeerMethod};
use crate::rpc::peer::{Identity, PROPOSE_TIMEOUT};

/// Why a proposal was not committed.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    /// No leader is known right now; try again shortly.
    #[error("no leader is known; the cluster may have lost its quorum")]
    NoLeader,
    /// The leader did not commit it (no quorum, timeout, leadership changed).
    #[error("not committed: {0}")]
    NotCommitted(String),
}

/// Proposes requests to whichever member leads.
pub struct Proposer {
    raft: Raft,
    identity: Arc<Identity>,
    clients: PeerClients,
}

impl Proposer {
    /// A proposer for the node `identity` names.
    pub fn new(
        raft: Raft,
        identity: Arc<Identity>,
        members: std::collections::BTreeMap<NodeId, Member>,
        options: ClientOptions,
    ) -> Self {
        let options = ClientOptions {
            connect: Duration::from_millis(500),
            ..options
        };
        Proposer {
            raft,
            clients: PeerClients::new(identity.clone(), members, options),
            identity,
        }
    }

    /// Commits `request` through the leader and returns the state machine's answer (which
    /// may be a refusal, in `Response::refused`).
    pub async fn propose(&self, request: Request) -> Result<Response, ProposeError> {
        let metrics = self.raft.metrics().borrow().clone();
        if metrics.state == ServerState::Leader {
            match tokio::time::timeout(PROPOSE_TIMEOUT, self.raft.client_write(request.clone()))
                .await
            {
                Err(_) => {
                    return Err(ProposeError::NotCommitted(format!(
                        "no commit within {PROPOSE_TIMEOUT:?}"
                    )))
                }
                Ok(Ok(written)) => return Ok(written.data),
                Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {}
                Ok(Err(e)) => return Err(ProposeError::NotCommitted(e.to_string())),
            }
        }
        let leader = self
            .raft
            .metrics()
            .borrow()
            .current_leader
            .filter(|l| *l != self.identity.node_id)
            .ok_or(ProposeError::NoLeader)?;
        let mut client = self.client(leader)?;
        let answer: Result<Response, String> = client
            .call(PeerMethod::Propose, &request, PROPOSE_TIMEOUT)
            .await
            .map_err(|e| ProposeError::NotCommitted(e.to_string()))?;
        answer.map_err(ProposeError::NotCommitted)
    }

    fn client(&self, target: NodeId) -> Result<PeerClient, ProposeError> {
        self.clients
            .get(target)
            .map_err(|e| ProposeError::NotCommitted(e.to_string()))
    }
}

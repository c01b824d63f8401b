//! The arbiter's side of the rpc servers: it implements the traits through which the peer
//! and admin servers reach the arbiter ([`PeerHandler`], [`AdminHandler`]).
//!
//! This is the one arbiter file that names the rpc servers. The rest of the arbiter uses
//! only the peer client, and the servers name no arbiter type, so the file-level order stays
//! rpc client, then the arbiter's services, then the servers, then this wiring.

use std::sync::Arc;

use super::horizon::Horizon;
use super::ownership::Ownership;
use super::propose::Proposer;
use crate::consensus::state::{Request, Response};
use crate::consensus::types::NodeId;
use crate::rpc::admin::server::AdminHandler;
use crate::rpc::peer::server::PeerHandler;
use crate::rpc::peer::ReportError;

/// The arbiter's services, as the rpc servers see them.
pub struct ArbiterPorts {
    /// Answers lease reports and knows the leader's latest decision.
    pub ownership: Arc<Ownership>,
    /// When this node last took part in a quorum round of each term.
    pub horizon: Arc<Horizon>,
    /// Commits changes through the leader.
    pub proposer: Arc<Proposer>,
}

#[async_trait::async_trait]
impl PeerHandler for ArbiterPorts {
    fn note_round(&self, term: u64) {
        self.horizon.note(term);
    }

    fn age_before(&self, term: u64) -> u64 {
        self.horizon.age_before(term)
    }

    async fn report(
        &self,
        from: NodeId,
        renew_epoch: u64,
        healthy: bool,
    ) -> Result<bool, ReportError> {
        self.ownership.report(from, renew_epoch, healthy).await
    }
}

#[async_trait::async_trait]
impl AdminHandler for ArbiterPorts {
    fn leader_says(&self) -> Option<String> {
        self.ownership.reason()
    }

    async fn propose(&self, request: Request) -> Result<Response, String> {
        self.proposer
            .propose(request)
            .await
            .map_err(|e| e.to_string())
    }
}

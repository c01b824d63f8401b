//! The admin client: one member's admin service, as `quoratectl` and the DRBD handlers call
//! it. Every method returns quorate's own types; a failure is an [`AdminError`] worded for a
//! one-line CLI error.

use std::time::Duration;

use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::convert::{cluster_status, history_line};
use crate::rpc::pb::{self, admin_client};
use crate::rpc::peer::client::lazy_channel;
use crate::status::{ClusterStatus, HistoryLine};

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

    /// DRBD's fence-peer: asks that `peer` be marked outdated only if `owner` still holds
    /// `epoch` where the entry lands in the log. `Ok(Ok(index))` when the mark is committed,
    /// `Ok(Err(why))` when the cluster refused it for good (the group moved or was released,
    /// or a name is wrong), `Err` for what may pass (no leader, unreachable).
    pub async fn fence_peer(
        &mut self,
        owner: &str,
        epoch: u64,
        peer: &str,
        reason: &str,
    ) -> Result<Result<u64, String>, AdminError> {
        let request = self.request(pb::FencePeerRequest {
            owner: owner.to_string(),
            epoch,
            peer: peer.to_string(),
            reason: reason.to_string(),
        });
        let mut client = self.client.clone();
        let call = client.fence_peer(request);
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Err(status))
                if matches!(
                    status.code(),
                    tonic::Code::FailedPrecondition | tonic::Code::NotFound
                ) =>
            {
                Ok(Err(first_line(status.message())))
            }
            Ok(result) => Ok(Ok(result
                .map(Response::into_inner)
                .map_err(|s| self.fail(s))?
                .index)),
            Err(_) => Err(AdminError::Unreachable {
                endpoint: self.endpoint.clone(),
                message: format!("no answer within {:?}", self.timeout),
            }),
        }
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
        Ok(reply.entries.into_iter().map(history_line).collect())
    }
}

/// The first line of a status message, or a stand-in when it is empty.
fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or("").trim();
    if line.is_empty() {
        "connection failed".to_string()
    } else {
        line.to_string()
    }
}

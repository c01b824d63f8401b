//! The arbiter: one openraft voter with its durable store and its gRPC server. Management
//! nodes and the witness both run one; the agent adds the resource side on top.
//!
//! [`Arbiter::start`] opens the store (refusing a corrupt one), starts Raft, serves the peer
//! and admin services on a listener the caller bound, and starts its background tasks:
//! bootstrap (form a brand-new cluster once every member is reachable and empty), the
//! election nudge (breaks the rare tie where two candidates keep timing out together, since
//! openraft 0.9 draws each node's election timeout only once per process), the leader's
//! ownership loop and the rejoin watch.
//!
//! Shutdown is structured: every task is spawned on one [`TaskTracker`] and watches one
//! [`CancellationToken`]. [`Arbiter::shutdown`] cancels the token, so each task ends after
//! the step in hand (a step waiting on Raft is released by Raft's own shutdown), and waits
//! for all of them.

mod bootstrap;
pub mod horizon;
pub mod ownership;
mod ports;
pub mod propose;
pub mod view;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::command::{CommandRunner, SystemRunner};
use crate::config::Config;
use crate::consensus::network::Network;
use crate::consensus::store::{self, AppliedState, StoreIdentity};
use crate::consensus::types::{NodeId, Raft};
use crate::rpc::admin::server::{AdminContext, AdminService};
use crate::rpc::peer::client::{ClientOptions, Faults};
use crate::rpc::peer::server::PeerService;
use crate::rpc::peer::{AppendGate, Identity};
use crate::status::NodeNotes;
use ownership::Ownership;
use ports::ArbiterPorts;
use propose::Proposer;

/// Why an arbiter could not start.
#[derive(Debug, thiserror::Error)]
pub enum ArbiterError {
    /// The Raft store is unusable; the node refuses to start rather than serve from it.
    #[error("{0}")]
    Store(#[from] store::StoreError),
    /// openraft refused the timing or failed to start.
    #[error("raft: {0}")]
    Raft(String),
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Serve(String),
}

/// Options for tests; production uses the default.
#[derive(Clone, Default)]
pub struct RunOptions {
    /// Links to cut on purpose.
    pub faults: Option<Arc<Faults>>,
    /// Runs the node's external commands (the fencing hook, and on an agent the resource
    /// agents' commands), so tests can record or script them; `None`: [`SystemRunner`].
    pub commands: Option<Arc<dyn CommandRunner>>,
}

impl RunOptions {
    /// The runner for this node's external commands.
    pub fn command_runner(&self) -> Arc<dyn CommandRunner> {
        self.commands
            .clone()
            .unwrap_or_else(|| Arc::new(SystemRunner))
    }
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("faults", &self.faults)
            .field("commands", &self.commands.as_ref().map(|_| "custom runner"))
            .finish()
    }
}

/// A running arbiter.
pub struct Arbiter {
    raft: Raft,
    node_id: NodeId,
    applied: watch::Receiver<Arc<AppliedState>>,
    notes: Arc<NodeNotes>,
    ownership: Arc<Ownership>,
    proposer: Arc<Proposer>,
    identity: Arc<Identity>,
    client_options: ClientOptions,
    /// Cancelled when the arbiter stops: the server and every task end.
    stop: CancellationToken,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    /// Every background task, so shutdown can wait for them.
    tasks: TaskTracker,
}

impl Arbiter {
    /// Opens the store, starts Raft and serves gRPC on `listener`.
    pub async fn start(
        config: &Config,
        listener: TcpListener,
        options: RunOptions,
    ) -> Result<Arbiter, ArbiterError> {
        // Before Raft starts: every round this node takes part in from now on is noted, and
        // every earlier one happened before this instant.
        let horizon = Arc::new(horizon::Horizon::new());
        let identity = StoreIdentity {
            cluster: config.cluster.clone(),
            node_id: config.node_id,
        };
        // The open blocks (fsyncs, a migration, waits for a lock): off the async workers.
        let (log_store, state_machine) = tokio::task::spawn_blocking({
            let dir = config.data_dir.clone();
            let identity = identity.clone();
            move || store::open(&dir, &identity)
        })
        .await
        .map_err(|e| store::StoreError::WriterFailed(format!("opening the store: {e}")))??;
        // Read from the store itself: openraft's metrics show the loaded state only once its
        // core task has run, so right after `Raft::new` they may still look empty.
        let started_empty = log_store.is_pristine()?;
        let applied = state_machine.subscribe();

        let raft_config = crate::consensus::raft_config(&config.cluster, &config.raft)
            .map_err(ArbiterError::Raft)?;
        let notes = Arc::new(NodeNotes::default());
        let peer_identity = Arc::new(Identity {
            cluster: config.cluster.clone(),
            node_id: config.node_id,
            members: config.members.iter().map(|m| m.id).collect(),
            timing: config.timing_fingerprint(),
            mismatches: notes.timing.clone(),
        });
        let client_options = ClientOptions {
            connect: Duration::from_millis(config.raft.heartbeat_interval_ms.max(100)),
            faults: options.faults.clone(),
        };
        let network = Network::new(
            peer_identity.clone(),
            client_options.clone(),
            crate::consensus::unreachable_backoff(&config.raft),
        );
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            network,
            log_store,
            state_machine,
        )
        .await
        .map_err(|e| ArbiterError::Raft(e.to_string()))?;

        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let ownership = Ownership::new(
            config,
            raft.clone(),
            applied.clone(),
            horizon.clone(),
            peer_identity.clone(),
            client_options.clone(),
            ownership::Running {
                commands: options.command_runner(),
                stop: stop.clone(),
                tasks: tasks.clone(),
            },
        );
        let proposer = Arc::new(Proposer::new(
            raft.clone(),
            peer_identity.clone(),
            config.membership(),
            client_options.clone(),
        ));
        let gate = Arc::new(AppendGate::default());
        let rejoin = Arc::new(crate::consensus::rejoin::RejoinGuard::new(
            config.node_id,
            started_empty,
        ));
        let ports = Arc::new(ArbiterPorts {
            ownership: ownership.clone(),
            horizon,
            proposer: proposer.clone(),
        });
        let peer = PeerService::new(
            raft.clone(),
            (*peer_identity).clone(),
            ports.clone(),
            gate.clone(),
            rejoin.clone(),
        );
        let admin = AdminService::new(AdminContext {
            raft: raft.clone(),
            cluster: config.cluster.clone(),
            node_id: config.node_id,
            members: config.membership(),
            notes: notes.clone(),
            applied: applied.clone(),
            handler: ports,
            timing: config.timing(),
        });
        // Options on the builder do not reach sockets accepted from our own listener: set
        // TCP_NODELAY here, or small answers wait for Nagle's algorithm (about 40 ms).
        let incoming = tonic::transport::server::TcpIncoming::from(listener)
            .with_nodelay(Some(true))
            .with_keepalive(Some(Duration::from_secs(10)));
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(peer.into_server())
                .add_service(admin.into_server())
                .serve_with_incoming_shutdown(incoming, stop.clone().cancelled_owned()),
        );

        let peer_identity_for_handle = peer_identity.clone();
        tasks.spawn(bootstrap::run(
            raft.clone(),
            config.clone(),
            peer_identity,
            notes.clone(),
            client_options.clone(),
            gate,
            stop.clone(),
        ));
        tasks.spawn(bootstrap::nudge_elections(
            raft.clone(),
            config.raft.clone(),
            stop.clone(),
        ));
        tasks.spawn(ownership.clone().run());
        // The rejoin watch only waits between its (synchronous) steps, so dropping it at
        // its wait when the arbiter stops ends it between steps.
        tasks.spawn(
            stop.clone()
                .run_until_cancelled_owned(crate::consensus::rejoin::watch(rejoin, raft.clone())),
        );
        tracing::info!(node = config.node_id, cluster = %config.cluster, "arbiter started");
        Ok(Arbiter {
            raft,
            node_id: config.node_id,
            applied,
            notes,
            ownership,
            proposer,
            identity: peer_identity_for_handle,
            client_options,
            stop,
            server,
            tasks,
        })
    }

    /// The Raft handle.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The state machine's applied state, updated after every apply.
    pub fn applied(&self) -> watch::Receiver<Arc<AppliedState>> {
        self.applied.clone()
    }

    /// The leader-side ownership service.
    pub fn ownership(&self) -> &Arc<Ownership> {
        &self.ownership
    }

    /// Proposes changes through whichever member leads.
    pub fn proposer(&self) -> &Arc<Proposer> {
        &self.proposer
    }

    /// Who this node is on the peer service.
    pub fn identity(&self) -> &Arc<Identity> {
        &self.identity
    }

    /// Settings for calls to peers (connect timeout, test faults).
    pub fn client_options(&self) -> &ClientOptions {
        &self.client_options
    }

    /// Why this node waits, if it does.
    pub fn notes(&self) -> &Arc<NodeNotes> {
        &self.notes
    }

    /// Tells the server and every task to stop, then stops Raft while the tasks end their
    /// steps: a step waiting on Raft (a grant being committed, a cluster being formed) is
    /// released by Raft's shutdown, every other step is bounded by its own timeout.
    async fn stop_tasks_and_raft(&self) -> Result<(), ArbiterError> {
        self.stop.cancel();
        self.tasks.close();
        let (raft_result, ()) = tokio::join!(self.raft.shutdown(), self.tasks.wait());
        raft_result.map_err(|e| ArbiterError::Raft(e.to_string()))
    }

    /// Stops serving, stops Raft and waits for both and for every task to end its step.
    pub async fn shutdown(mut self) -> Result<(), ArbiterError> {
        let raft_result = self.stop_tasks_and_raft().await;
        let served = (&mut self.server).await;
        raft_result?;
        match served {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ArbiterError::Serve(e.to_string())),
            Err(e) => Err(ArbiterError::Serve(e.to_string())),
        }
    }
}

/// Runs an arbiter until `shutdown` resolves or the gRPC server fails.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    options: RunOptions,
) -> Result<(), ArbiterError> {
    let mut arbiter = Arbiter::start(&config, listener, options).await?;
    tokio::select! {
        _ = shutdown => {
            tracing::info!("shutting down");
            arbiter.shutdown().await
        }
        served = &mut arbiter.server => {
            let message = match served {
                Ok(Ok(())) => "gRPC server stopped".to_string(),
                Ok(Err(e)) => e.to_string(),
                Err(e) => e.to_string(),
            };
            let _ = arbiter.stop_tasks_and_raft().await;
            Err(ArbiterError::Serve(message))
        }
    }
}

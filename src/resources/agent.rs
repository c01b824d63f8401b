//! The contract every resource agent keeps, modelled on the OCF resource-agent contract.
//!
//! - `start` is idempotent and returns only once `monitor` says running.
//! - `stop` always succeeds or escalates (kill, then fail so the node fences); it never
//!   reports stopped while anything of the resource still runs.
//! - `monitor` says running, stopped or failed, within a bounded time.
//! - `fence` is the hard stop used when the lease ran out: fastest path to "not active".
//!
//! Every action carries an [`ActionContext`] with the owner epoch (the fencing token).

use async_trait::async_trait;

/// What `monitor` found: `Running`, `Stopped` or `Failed` (an agent never answers `Unknown`).
/// The decision core's type, so a monitor result reaches the core unconverted.
pub use crate::core::view::ResourceState;

/// Who asks for an action and under which fencing token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionContext {
    /// The owner epoch this action serves; stamped on every log line about it.
    pub epoch: u64,
    /// The local node's name.
    pub node: String,
}

/// What the caller should do about a failed action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recovery {
    /// A passing problem: the same action may succeed if tried again here.
    Retry,
    /// This node cannot run the resource: give the group to another node.
    MoveAway,
    /// The resource could not be stopped for sure: fence this node and alert.
    Fence,
}

/// A failed agent action.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{resource}: {message}")]
pub struct AgentError {
    /// The resource's name.
    pub resource: String,
    /// What went wrong, for the log and `status`.
    pub message: String,
    /// What to do next.
    pub recovery: Recovery,
}

impl AgentError {
    /// Builds an error for `resource` with the given recovery.
    pub fn new(resource: &str, recovery: Recovery, message: impl Into<String>) -> Self {
        AgentError {
            resource: resource.to_string(),
            message: message.into(),
            recovery,
        }
    }
}

/// One resource of the group: DRBD, a filesystem, MySQL, the VIP, or the Dummy.
#[async_trait]
pub trait ResourceAgent: Send + Sync {
    /// The resource's name from the config (`drbd`, `fs`, `mysql`, `vip`, ...).
    fn name(&self) -> &str;

    /// The agent kind (`drbd`, `filesystem`, `mysql`, `vip`, `dummy`).
    fn kind(&self) -> &'static str;

    /// Checks the agent's own settings and environment; one line per problem.
    fn validate(&self) -> Vec<String>;

    /// Brings the resource up; idempotent; returns once `monitor` says running.
    async fn start(&self, ctx: &ActionContext) -> Result<(), AgentError>;

    /// Takes the resource down for sure, escalating as needed.
    async fn stop(&self, ctx: &ActionContext) -> Result<(), AgentError>;

    /// Says whether the resource runs. Never blocks past the agent's monitor timeout.
    async fn monitor(&self) -> ResourceState;

    /// The hard stop used when the lease ran out. Defaults to `stop`.
    async fn fence(&self, ctx: &ActionContext) -> Result<(), AgentError> {
        self.stop(ctx).await
    }
}

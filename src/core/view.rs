//! The core's own picture of the world: plain data the caller fills in each cycle.
//!
//! The core depends on nothing else in quorate, so a test can build any situation in a few
//! lines. The rest of quorate speaks these types too: [`NodeId`] is openraft's node id,
//! [`Role`] is what the Raft membership records, [`ResourceState`] is what every resource
//! agent's `monitor` returns. The agent converts its committed state (see
//! [`super::state::ClusterState::view`]), its peer reports and its monitor results into them.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

use super::time::{Millis, Timing};

/// A member's stable numeric id, as in the config files; also openraft's node id and the
/// id every RPC carries.
pub type NodeId = u64;

/// How a sentence names a node it knows only by id: `node#<id>`.
pub fn node_label(id: NodeId) -> String {
    format!("node#{id}")
}

/// What a member does in the cluster. Stored in the Raft membership under its lower-case
/// name (`"management"`, `"witness"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Has the DRBD disk and MySQL, and may own the resource group.
    #[default]
    Management,
    /// A vote and a full Raft log, nothing else. Never owns resources.
    Witness,
}

impl Role {
    /// The lower-case name used in configs, the CLI and JSON.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Management => "management",
            Role::Witness => "witness",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The committed owner of the resource group and its fencing token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Owner {
    /// The owning management node.
    pub node: NodeId,
    /// Strictly increasing with every change of owner (the log index that granted it).
    pub epoch: u64,
}

/// One member's committed marks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    /// Human name, unique in the cluster (`node1`, `witness`).
    pub name: String,
    /// Management node or witness.
    pub role: Role,
    /// An operator asked that this node never take ownership.
    pub standby: bool,
    /// This node's data may be stale: never promote it automatically.
    pub outdated: bool,
    /// Ownerships on this node that ended in failure, since the last reset.
    pub fail_count: u32,
}

/// The committed cluster state as this process last applied it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    /// The owner, if any node holds ownership.
    pub owner: Option<Owner>,
    /// The epoch the owner released in order (after stopping its group), if it did.
    pub released: Option<u64>,
    /// Maintenance mode: nothing is started, restarted or moved.
    pub paused: bool,
    /// An operator's pending planned switchover: the node that should own the group next.
    pub switchover_to: Option<NodeId>,
    /// Every member, witness included.
    pub nodes: BTreeMap<NodeId, NodeView>,
}

impl ClusterView {
    /// The member's marks, if it is a member.
    pub fn node(&self, id: NodeId) -> Option<&NodeView> {
        self.nodes.get(&id)
    }

    /// The member's name, or `node#<id>` for an id the view does not know.
    pub fn name_of(&self, id: NodeId) -> String {
        match self.nodes.get(&id) {
            Some(node) => node.name.clone(),
            None => node_label(id),
        }
    }

    /// True when the current owner has released its epoch (a planned handoff is due).
    pub fn owner_released(&self) -> bool {
        matches!(self.owner, Some(owner) if self.released == Some(owner.epoch))
    }

    /// The committed marks that forbid giving ownership to `id`, whatever its health:
    /// not a member, a witness, standby, outdated, or at the migration threshold.
    pub fn marks_exclude(&self, id: NodeId, timing: &Timing) -> Option<Ineligible> {
        let Some(node) = self.nodes.get(&id) else {
            return Some(Ineligible::NotAMember);
        };
        if node.role == Role::Witness {
            return Some(Ineligible::Witness);
        }
        if node.outdated {
            return Some(Ineligible::Outdated);
        }
        if node.standby {
            return Some(Ineligible::Standby);
        }
        if node.fail_count >= timing.migration_threshold {
            return Some(Ineligible::TooManyFailures {
                fail_count: node.fail_count,
                threshold: timing.migration_threshold,
            });
        }
        None
    }
}

/// Why a node may not be given ownership now. Displays as a predicate: "node2 {why}".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ineligible {
    /// The id is not in the committed membership.
    NotAMember,
    /// Witnesses never hold the group.
    Witness,
    /// Its data may be stale.
    Outdated,
    /// An operator put it on standby.
    Standby,
    /// Its fail count reached the migration threshold.
    TooManyFailures {
        /// Its committed fail count.
        fail_count: u32,
        /// The configured migration threshold.
        threshold: u32,
    },
    /// The leader has not heard from it recently.
    Unreachable {
        /// Milliseconds since it was last heard from; `None` if never.
        silent_ms: Option<u64>,
    },
    /// It reported that it cannot run the group (for example its disk is not ready).
    NotReady,
    /// It is the owner that stopped renewing; ownership must move away from it.
    SilentOwner,
}

impl Ineligible {
    /// What an operator can do about it, where anything can be done: the second half of the
    /// sentence an admin refusal prints after the reason (`node2 is on standby; unstandby it
    /// first`). `None` where only time or a repair outside quorate helps.
    pub fn remedy(&self) -> Option<&'static str> {
        match self {
            Ineligible::NotAMember | Ineligible::Witness => {
                Some("only a management node can hold the group")
            }
            Ineligible::Outdated => Some(
                "its data may be stale; check it, then clear-outdated, before it may take the group",
            ),
            Ineligible::Standby => Some("unstandby it first"),
            Ineligible::TooManyFailures { .. } => Some("fix the cause, then reset its failures"),
            Ineligible::Unreachable { .. }
            | Ineligible::NotReady
            | Ineligible::SilentOwner => None,
        }
    }

    /// The whole refusal sentence for the member called `name`: the reason, then the remedy.
    pub fn sentence(&self, name: &str) -> String {
        match self.remedy() {
            Some(remedy) => format!("{name} {self}; {remedy}"),
            None => format!("{name} {self}"),
        }
    }
}

impl fmt::Display for Ineligible {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ineligible::NotAMember => f.write_str("is not a member"),
            Ineligible::Witness => f.write_str("is a witness"),
            Ineligible::Outdated => f.write_str("is outdated"),
            Ineligible::Standby => f.write_str("is on standby"),
            Ineligible::TooManyFailures {
                fail_count,
                threshold,
            } => write!(f, "has failed {fail_count} times (threshold {threshold})"),
            Ineligible::Unreachable {
                silent_ms: Some(ms),
            } => write!(f, "has not been heard from for {ms} ms"),
            Ineligible::Unreachable { silent_ms: None } => f.write_str("has never been heard from"),
            Ineligible::NotReady => f.write_str("reports it cannot run the group"),
            Ineligible::SilentOwner => f.write_str("is the owner that stopped renewing"),
        }
    }
}

/// What `monitor` last said about one resource on this node. A resource agent's `monitor`
/// answers `Running`, `Stopped` or `Failed`; `Unknown` is the agent loop's word for a
/// resource it has not monitored yet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResourceState {
    /// Fully up and serving.
    Running,
    /// Cleanly down: nothing of it runs.
    Stopped,
    /// Neither: partly up, crashed, or not answering. The text says what was seen.
    Failed(String),
    /// Not monitored yet (for example right after the agent restarted).
    Unknown,
}

impl fmt::Display for ResourceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResourceState::Running => f.write_str("running"),
            ResourceState::Stopped => f.write_str("stopped"),
            ResourceState::Failed(why) => write!(f, "failed: {why}"),
            ResourceState::Unknown => f.write_str("unknown"),
        }
    }
}

/// One resource of the local group, in start order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceStatus {
    /// The resource's name from the config (`drbd`, `fs`, `mysql`, `vip`).
    pub name: String,
    /// Its last monitored state.
    pub state: ResourceState,
}

/// What the leader knows about one peer's liveness and readiness.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerHealth {
    /// When the leader last heard from the node's agent (leader's clock); `None` if never.
    pub last_heard: Option<Millis>,
    /// The node's own last report: it could run the group now (disk up to date, agents valid).
    pub can_run_group: bool,
}

/// The leader's fencing hook and what it did for the current owner, as its executor reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum FenceHook {
    /// No hook configured: only the lease wait protects an unplanned move.
    #[default]
    NotConfigured,
    /// Configured and not run for the current owner and epoch.
    Idle,
    /// Running against `target`; its executor must bound it with a timeout.
    Running {
        /// The owner and epoch being fenced.
        target: Owner,
    },
    /// The hook reported `target` powered off (or otherwise unable to hold anything).
    Confirmed {
        /// The owner and epoch that were fenced.
        target: Owner,
    },
    /// The hook failed against `target`; it is not run again for the same epoch.
    Failed {
        /// The owner and epoch the hook was run against.
        target: Owner,
        /// What the hook said.
        message: String,
    },
}

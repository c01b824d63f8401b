//! Node configuration: one TOML file per node, read once at start-up.
//!
//! Every struct denies unknown fields, so a typo is an error rather than a silently ignored
//! setting. Relative paths resolve against the directory of the config file itself, so a
//! cluster directory can be moved as a whole. [`Config::load`] parses and then runs
//! [`Config::validate`], which reports every problem it finds at once.

mod fingerprint;
mod validate;

pub use fingerprint::{value_or_unset, TimingDifference, TimingFingerprint};
pub(crate) use validate::check_host_port;

use serde::Deserialize;
use std::path::{Path, PathBuf};

use crate::consensus::types::{Member, NodeId, Role};

/// A config file that cannot be used, with every reason.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        message: String,
    },
    /// The file is not valid TOML, or has a field of the wrong type or an unknown field.
    #[error("config file {path} does not parse: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's description, with line and column.
        message: String,
    },
    /// The file parses but its values are unusable.
    #[error("config file {path} has {} problem(s):\n{}", problems.len(), problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// One sentence per problem.
        problems: Vec<String>,
    },
}

impl ConfigError {
    /// Every problem as its own line (a parse or read error is one problem).
    pub fn problems(&self) -> Vec<String> {
        match self {
            ConfigError::Invalid { problems, .. } => problems.clone(),
            ConfigError::Read { message, .. } | ConfigError::Parse { message, .. } => {
                vec![message.clone()]
            }
        }
    }
}

/// One node's configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The cluster's name. Every member must use the same one; peers reject messages that
    /// carry another. Letters, digits, `-`, `_` and `.`, at most 64 characters.
    pub cluster: String,
    /// This node's id; it must be one of `members`.
    pub node_id: NodeId,
    /// Where this node keeps its Raft store. Relative to the config file's directory.
    pub data_dir: PathBuf,
    /// Address to listen on for gRPC (peer and admin services), `host:port`. Defaults to this
    /// node's own member address. Use `0.0.0.0:PORT` to listen on every interface.
    #[serde(default)]
    pub listen: Option<String>,
    /// The cluster's members: two management nodes and one witness, the same list on every
    /// node.
    pub members: Vec<MemberConfig>,
    /// Raft timing.
    #[serde(default)]
    pub raft: RaftTiming,
    /// The ownership lease. Every member (the witness too, since it may lead) must use the
    /// same values.
    #[serde(default)]
    pub lease: LeaseTiming,
    /// The resource group this management node runs when it owns it. Ignored on a witness.
    #[serde(default)]
    pub group: GroupConfig,
    /// The lease guard: a separate process that fences when the agent cannot.
    #[serde(default)]
    pub guard: GuardConfig,
    /// An optional command the leader runs against a silent owner before moving ownership
    /// (for example a power-fencing agent). Success lets it skip the lease wait.
    #[serde(default)]
    pub fence_hook: Option<FenceHookConfig>,
    /// The file this config was read from (set by [`Config::load`]).
    #[serde(skip)]
    pub source: PathBuf,
}

/// One member of the cluster, as every node's config lists it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    /// Stable numeric id, unique in the cluster, at least 1. Never reuse the id of a member
    /// whose data was lost.
    pub id: NodeId,
    /// Unique human name, used by the CLI (`switchover --to node2`).
    pub name: String,
    /// The `host:port` the other members and quoratectl reach this member's gRPC endpoint at.
    pub address: String,
    /// `management` (can own the resource group) or `witness` (a vote, nothing else).
    pub role: Role,
}

/// openraft timing, in milliseconds. The defaults suit a LAN or loopback.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RaftTiming {
    /// How often the leader sends heartbeats (openraft ticks every 1.5 x this). Also the
    /// timeout of one AppendEntries call.
    pub heartbeat_interval_ms: u64,
    /// Lower bound of the election timeout. Must be at least 3 x the heartbeat interval so
    /// a lost heartbeat or two do not start an election.
    pub election_timeout_min_ms: u64,
    /// Upper bound of the election timeout. openraft followers refuse to vote for this long
    /// after hearing from a leader, which the ownership lease relies on. Keep it the same on
    /// every member.
    pub election_timeout_max_ms: u64,
}

impl Default for RaftTiming {
    fn default() -> Self {
        RaftTiming {
            heartbeat_interval_ms: 50,
            election_timeout_min_ms: 250,
            election_timeout_max_ms: 500,
        }
    }
}

/// The ownership lease, in milliseconds (see docs/PROTOCOL.md, "The lease").
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LeaseTiming {
    /// How long a granted lease lasts. It must outlast a Raft leader election plus one
    /// renewal, or every change of leader would fence the owner.
    pub duration_ms: u64,
    /// How often the owner renews (and every management node reports to the leader).
    pub renew_interval_ms: u64,
    /// Extra wait after an old owner's lease can have run out before the group moves:
    /// covers the time the owner's self-fencing or guard needs to stop MySQL and drop the VIP.
    pub fence_margin_ms: u64,
    /// Bound on how much the clocks of two processes may run at different rates, in permille
    /// (10 = 1 %).
    pub drift_permille: u64,
    /// How a newly elected leader bounds the leases granted before its term.
    pub old_lease_bound: OldLeaseBound,
}

/// How a newly elected leader bounds the leases granted before its term (both are safe).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OldLeaseBound {
    /// A whole lease from the last quorum round of an earlier term that a majority took part
    /// in, learned from that majority after the election; a whole lease from the election
    /// until a majority answered. When the owner also led and died, this saves the election.
    #[default]
    Horizon,
    /// A whole lease from the leader's own election, always (docs/PROTOCOL.md's rule 4 to the
    /// letter).
    Election,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        LeaseTiming {
            duration_ms: 1500,
            renew_interval_ms: 250,
            fence_margin_ms: 300,
            drift_permille: 10,
            old_lease_bound: OldLeaseBound::Horizon,
        }
    }
}

/// The resource group and how it is supervised.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct GroupConfig {
    /// Where the agent keeps local state (the highest epoch it acted on). Relative to the
    /// config file's directory.
    pub state_dir: PathBuf,
    /// A node whose failure count reaches this is never given ownership automatically, and
    /// an owner that reaches it gives the group up.
    pub migration_threshold: u32,
    /// How often the owner restarts a failed resource in place, per epoch, before it gives
    /// the group up.
    pub max_restarts_in_place: u32,
    /// How often every resource is monitored.
    pub monitor_interval_ms: u64,
    /// The resources, in start order (stop order is the reverse).
    pub resources: Vec<crate::resources::ResourceConfig>,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            state_dir: PathBuf::from("state"),
            migration_threshold: 3,
            max_restarts_in_place: 2,
            monitor_interval_ms: 500,
            resources: Vec::new(),
        }
    }
}

/// The lease guard process.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct GuardConfig {
    /// Run the guard (strongly recommended in production).
    pub enabled: bool,
    /// A watchdog device the guard pets only while the lease holds, such as
    /// `/dev/watchdog`. Unset: no watchdog.
    pub watchdog_device: Option<PathBuf>,
    /// How often the guard pets the watchdog.
    pub pet_interval_ms: u64,
    /// The watchdog's timeout in seconds, set with `WDIOC_SETTIMEOUT` when the guard opens
    /// the device: a frozen node is reset at most this long after its lease ended. Unset:
    /// the driver's own timeout (often 60 s).
    pub watchdog_timeout_s: Option<u32>,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            enabled: true,
            watchdog_device: None,
            pet_interval_ms: 200,
            watchdog_timeout_s: None,
        }
    }
}

/// A fencing command the leader runs against a silent owner.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FenceHookConfig {
    /// Program and arguments. `{node}` and `{epoch}` in an argument are replaced by the
    /// name of the node to fence and its epoch. Exit status 0 means "that node is off".
    pub command: Vec<String>,
    /// Give up on the command after this many milliseconds (counts as failed).
    #[serde(default = "default_fence_hook_timeout")]
    pub timeout_ms: u64,
}

fn default_fence_hook_timeout() -> u64 {
    10_000
}

impl Config {
    /// Reads, parses and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let mut config = Config::parse(&text, path)?;
        config.resolve_paths();
        let problems = config.validate();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                problems,
            })
        }
    }

    /// Parses TOML text; `path` names the source in errors and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().replace('\n', " | "),
        })?;
        config.source = path.to_path_buf();
        Ok(config)
    }

    /// Makes relative paths absolute against the config file's directory.
    fn resolve_paths(&mut self) {
        let base = self
            .source
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let base = if base.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            base
        };
        if self.data_dir.is_relative() {
            self.data_dir = base.join(&self.data_dir);
        }
        if self.group.state_dir.is_relative() {
            self.group.state_dir = base.join(&self.group.state_dir);
        }
        for resource in &mut self.group.resources {
            resource.resolve_paths(&base);
        }
        if let Some(device) = &self.guard.watchdog_device {
            if device.is_relative() {
                self.guard.watchdog_device = Some(base.join(device));
            }
        }
    }

    /// This node's own member entry. Validation guarantees it exists.
    pub fn me(&self) -> Option<&MemberConfig> {
        self.members.iter().find(|m| m.id == self.node_id)
    }

    /// The address to bind the gRPC server to.
    pub fn listen_address(&self) -> String {
        match &self.listen {
            Some(listen) => listen.clone(),
            None => self.me().map(|m| m.address.clone()).unwrap_or_default(),
        }
    }

    /// The lease and supervision settings the decision core reads.
    pub fn timing(&self) -> crate::core::time::Timing {
        crate::core::time::Timing {
            lease_ms: self.lease.duration_ms,
            rho_permille: self.lease.drift_permille,
            fence_margin_ms: self.lease.fence_margin_ms,
            migration_threshold: self.group.migration_threshold,
            max_restarts_in_place: self.group.max_restarts_in_place,
        }
    }

    /// The `[raft]` and `[lease]` settings every member must share, as sent in envelopes.
    pub fn timing_fingerprint(&self) -> TimingFingerprint {
        TimingFingerprint::of(&self.raft, &self.lease)
    }

    /// The membership as openraft records it.
    pub fn membership(&self) -> std::collections::BTreeMap<NodeId, Member> {
        self.members
            .iter()
            .map(|m| {
                (
                    m.id,
                    Member {
                        name: m.name.clone(),
                        addr: m.address.clone(),
                        role: m.role,
                    },
                )
            })
            .collect()
    }

    /// Checks that this node has the role a binary expects (`quorate-agent` runs management
    /// nodes, `quorate-witness` the witness).
    pub fn expect_role(&self, role: Role) -> Result<(), ConfigError> {
        match self.me() {
            Some(me) if me.role == role => Ok(()),
            Some(me) => Err(ConfigError::Invalid {
                path: self.source.clone(),
                problems: vec![format!(
                    "node_id {} ({}) has role {}, but this binary runs a {} node",
                    me.id, me.name, me.role, role
                )],
            }),
            None => Err(ConfigError::Invalid {
                path: self.source.clone(),
                problems: vec![format!("node_id {} is not among members", self.node_id)],
            }),
        }
    }
}

#[cfg(test)]
mod tests;

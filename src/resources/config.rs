//! The `[[group.resources]]` entries of a node config: one tagged entry per resource, in start
//! order, and the construction of the agents from them.
//!
//! `problems` checks what can be checked from the file alone (names, formats). What depends on
//! the host (an interface that exists, an executable that is there) is checked by each agent's
//! `validate` when the agent starts, since a config may well be checked on another machine.

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use crate::command::CommandRunner;
use crate::resources::agent::ResourceAgent;
use crate::resources::drbd::{DrbdAgent, DrbdConfig};
use crate::resources::dummy::{DummyAgent, DummyConfig};
use crate::resources::filesystem::{FilesystemAgent, FilesystemConfig};
use crate::resources::mysql::config::MysqlConfig;
use crate::resources::mysql::MysqlAgent;
use crate::resources::vip::{VipAddress, VipAgent, VipConfig};

/// One resource of the group.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ResourceConfig {
    /// A DRBD resource made Primary.
    Drbd {
        /// The resource's name in quorate (logs, status).
        name: String,
        /// The agent's settings.
        #[serde(flatten)]
        config: DrbdConfig,
    },
    /// A filesystem mounted on the DRBD device.
    Filesystem {
        /// The resource's name in quorate.
        name: String,
        /// The agent's settings.
        #[serde(flatten)]
        config: FilesystemConfig,
    },
    /// MariaDB or MySQL.
    Mysql {
        /// The resource's name in quorate.
        name: String,
        /// The agent's settings.
        #[serde(flatten)]
        config: MysqlConfig,
    },
    /// A stand-in resource that is only a state file (tests and the local cluster).
    Dummy {
        /// The resource's name in quorate.
        name: String,
        /// The agent's settings.
        #[serde(flatten)]
        config: DummyConfig,
    },
    /// The virtual IP, announced with gratuitous ARP.
    Vip {
        /// The resource's name in quorate.
        name: String,
        /// The agent's settings.
        #[serde(flatten)]
        config: VipConfig,
    },
}

impl ResourceConfig {
    /// The resource's name.
    pub fn name(&self) -> &str {
        match self {
            ResourceConfig::Drbd { name, .. }
            | ResourceConfig::Filesystem { name, .. }
            | ResourceConfig::Mysql { name, .. }
            | ResourceConfig::Dummy { name, .. }
            | ResourceConfig::Vip { name, .. } => name,
        }
    }

    /// The agent kind.
    pub fn kind(&self) -> &'static str {
        match self {
            ResourceConfig::Drbd { .. } => "drbd",
            ResourceConfig::Filesystem { .. } => "filesystem",
            ResourceConfig::Mysql { .. } => "mysql",
            ResourceConfig::Dummy { .. } => "dummy",
            ResourceConfig::Vip { .. } => "vip",
        }
    }

    /// Makes relative paths absolute against `base` (the config file's directory).
    pub fn resolve_paths(&mut self, base: &Path) {
        let resolve = |path: &mut std::path::PathBuf| {
            if path.is_relative() && !path.as_os_str().is_empty() {
                *path = base.join(&*path);
            }
        };
        match self {
            ResourceConfig::Dummy { config, .. } => {
                resolve(&mut config.state_file);
                resolve(&mut config.ledger_file);
                if let Some(dir) = &mut config.fault_dir {
                    resolve(dir);
                }
            }
            ResourceConfig::Mysql { config, .. } => {
                for path in [
                    &mut config.pid_file,
                    &mut config.log_file,
                    &mut config.socket,
                ]
                .into_iter()
                .flatten()
                {
                    resolve(path);
                }
            }
            ResourceConfig::Filesystem { .. }
            | ResourceConfig::Drbd { .. }
            | ResourceConfig::Vip { .. } => {}
        }
    }

    /// Problems visible in the file alone, one sentence each.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let name = self.name();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            problems.push("the name must be letters, digits, '-', '_' or '.'".to_string());
        }
        match self {
            ResourceConfig::Vip { config, .. } => {
                if let Err(why) = config.address.parse::<VipAddress>() {
                    problems.push(why);
                }
                if config.interface.is_empty() {
                    problems.push("interface is empty".into());
                }
            }
            ResourceConfig::Drbd { config, .. } => {
                if config.resource.is_empty() {
                    problems.push("resource is empty; give the DRBD resource name".into());
                }
            }
            ResourceConfig::Filesystem { config, .. } => {
                if !config.mount_point.is_absolute() {
                    problems.push("mount_point must be an absolute path".into());
                }
                if config.fstype.is_empty() {
                    problems.push("fstype is empty".into());
                }
            }
            ResourceConfig::Mysql { config, .. } => {
                if config.command.is_empty() && config.systemd_unit.is_none() {
                    problems.push("give either command or systemd_unit".into());
                }
                if config.user.is_empty() {
                    problems.push("user is empty; the readiness probe logs in as this user".into());
                }
            }
            ResourceConfig::Dummy { config, .. } => {
                if config.state_file.as_os_str().is_empty() {
                    problems.push("state_file is empty".into());
                }
            }
        }
        problems
    }

    /// Builds the agent.
    pub fn build(&self, runner: Arc<dyn CommandRunner>) -> Arc<dyn ResourceAgent> {
        match self {
            ResourceConfig::Drbd { name, config } => {
                Arc::new(DrbdAgent::new(name.clone(), config.clone(), runner))
            }
            ResourceConfig::Filesystem { name, config } => {
                Arc::new(FilesystemAgent::new(name, config.clone()))
            }
            ResourceConfig::Mysql { name, config } => {
                Arc::new(MysqlAgent::new(name, config.clone(), runner))
            }
            ResourceConfig::Dummy { name, config } => {
                Arc::new(DummyAgent::new(name, config.clone()))
            }
            ResourceConfig::Vip { name, config } => {
                Arc::new(VipAgent::new(name.clone(), config.clone()))
            }
        }
    }
}

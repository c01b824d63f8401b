//! The MySQL agent's settings and their checks.
//!
//! The config names how mysqld is launched (a command line quorate spawns, or a systemd unit),
//! where the readiness probe connects (TCP or a Unix socket), the probe's login, and the
//! deadlines. It is untrusted input: `deny_unknown_fields`, and [`MysqlConfig::problems`] lists
//! every problem at once, one line each, before anything is started.

use crate::resources::mysql::probe::Endpoint;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

fn default_start_timeout_ms() -> u64 {
    120_000
}
fn default_stop_timeout_ms() -> u64 {
    60_000
}
fn default_kill_timeout_ms() -> u64 {
    5_000
}
fn default_monitor_timeout_ms() -> u64 {
    5_000
}

/// The MySQL agent's settings. Give either `command` (with `pid_file` and `log_file`) or
/// `systemd_unit`; and either `socket` or `host` with `port`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlConfig {
    /// The command line that runs mysqld in the foreground; the first word is the program.
    #[serde(default)]
    pub command: Vec<String>,
    /// Where quorate records the process it started (command mode). Keep it off the data disk.
    #[serde(default)]
    pub pid_file: Option<PathBuf>,
    /// The file mysqld's standard output and error are appended to (command mode).
    #[serde(default)]
    pub log_file: Option<PathBuf>,
    /// The systemd unit to start and stop instead of a command, e.g. `mariadb.service`.
    #[serde(default)]
    pub systemd_unit: Option<String>,
    /// The host the probe connects to (with `port`).
    #[serde(default)]
    pub host: Option<String>,
    /// The TCP port the probe connects to (with `host`).
    #[serde(default)]
    pub port: Option<u16>,
    /// The Unix socket the probe connects to (instead of `host`/`port`).
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// The user the probe logs in as.
    pub user: String,
    /// That user's password.
    #[serde(default)]
    pub password: String,
    /// How long start may take until the server answers, in milliseconds (crash recovery included).
    #[serde(default = "default_start_timeout_ms")]
    pub start_timeout_ms: u64,
    /// How long a graceful stop may take before SIGKILL, in milliseconds.
    #[serde(default = "default_stop_timeout_ms")]
    pub stop_timeout_ms: u64,
    /// How long to wait for a killed process to vanish, in milliseconds.
    #[serde(default = "default_kill_timeout_ms")]
    pub kill_timeout_ms: u64,
    /// How long one monitor (and one probe) may take, in milliseconds.
    #[serde(default = "default_monitor_timeout_ms")]
    pub monitor_timeout_ms: u64,
}

impl std::fmt::Debug for MysqlConfig {
    /// Like a derived `Debug`, with the password left out so it never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MysqlConfig")
            .field("command", &self.command)
            .field("pid_file", &self.pid_file)
            .field("log_file", &self.log_file)
            .field("systemd_unit", &self.systemd_unit)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("socket", &self.socket)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("start_timeout_ms", &self.start_timeout_ms)
            .field("stop_timeout_ms", &self.stop_timeout_ms)
            .field("kill_timeout_ms", &self.kill_timeout_ms)
            .field("monitor_timeout_ms", &self.monitor_timeout_ms)
            .finish()
    }
}

impl Default for MysqlConfig {
    /// No launch method, endpoint or user yet; the timeouts at their defaults.
    fn default() -> Self {
        MysqlConfig {
            command: Vec::new(),
            pid_file: None,
            log_file: None,
            systemd_unit: None,
            host: None,
            port: None,
            socket: None,
            user: String::new(),
            password: String::new(),
            start_timeout_ms: default_start_timeout_ms(),
            stop_timeout_ms: default_stop_timeout_ms(),
            kill_timeout_ms: default_kill_timeout_ms(),
            monitor_timeout_ms: default_monitor_timeout_ms(),
        }
    }
}

/// How mysqld is launched, resolved from the config.
pub(crate) enum Launch<'a> {
    Command {
        argv: &'a [String],
        pid_file: &'a Path,
        log_file: &'a Path,
    },
    Systemd {
        unit: &'a str,
    },
}

impl MysqlConfig {
    /// How mysqld is launched, or why the config does not say.
    pub(crate) fn launch(&self) -> Result<Launch<'_>, String> {
        let c = self;
        match (&c.systemd_unit, c.command.is_empty()) {
            (Some(unit), true) => Ok(Launch::Systemd { unit }),
            (None, false) => match (&c.pid_file, &c.log_file) {
                (Some(pid_file), Some(log_file)) => Ok(Launch::Command {
                    argv: &c.command,
                    pid_file,
                    log_file,
                }),
                _ => Err("command mode needs pid_file and log_file".into()),
            },
            (Some(_), false) => Err("give either command or systemd_unit, not both".into()),
            (None, true) => Err("give command or systemd_unit".into()),
        }
    }

    /// Where the probe connects, or why the config does not say.
    pub fn endpoint(&self) -> Result<Endpoint, String> {
        let c = self;
        match (&c.socket, &c.host, c.port) {
            (Some(path), None, None) => Ok(Endpoint::Socket(path.clone())),
            (None, Some(host), Some(port)) => Ok(Endpoint::Tcp {
                host: host.clone(),
                port,
            }),
            (Some(_), _, _) => Err("give either socket or host/port, not both".into()),
            _ => Err("give socket, or host and port".into()),
        }
    }

    /// Every problem with the settings and the environment they need, one line each.
    pub fn problems(&self) -> Vec<String> {
        let c = self;
        let mut problems = Vec::new();
        match self.launch() {
            Err(e) => problems.push(e),
            Ok(Launch::Command {
                argv,
                pid_file,
                log_file,
            }) => {
                if !on_path(&argv[0]) {
                    problems.push(format!("command program {} not found", argv[0]));
                }
                check_absolute("pid_file", pid_file, &mut problems);
                check_absolute("log_file", log_file, &mut problems);
                if pid_file == log_file {
                    problems.push("pid_file and log_file are the same file".into());
                }
            }
            Ok(Launch::Systemd { unit }) => {
                if unit.is_empty() || unit.contains(char::is_whitespace) {
                    problems.push(format!("systemd_unit {unit:?} is not a unit name"));
                }
                if !on_path("systemctl") {
                    problems.push("systemd_unit is set but systemctl is not installed".into());
                }
            }
        }
        if c.systemd_unit.is_some() && (c.pid_file.is_some() || c.log_file.is_some()) {
            problems.push("pid_file and log_file apply to command mode only".into());
        }
        match self.endpoint() {
            Err(e) => problems.push(e),
            Ok(Endpoint::Tcp { host, port }) => {
                if host.trim().is_empty() {
                    problems.push("host is empty".into());
                }
                if port == 0 {
                    problems.push("port 0 is not a port".into());
                }
            }
            Ok(Endpoint::Socket(path)) => {
                check_absolute("socket", &path, &mut problems);
                if path.as_os_str().len() >= 108 {
                    problems.push(format!(
                        "socket path {} is too long for a Unix socket (max 107 bytes)",
                        path.display()
                    ));
                }
            }
        }
        if c.user.trim().is_empty() {
            problems.push("user is empty".into());
        }
        for (what, ms) in [
            ("start_timeout_ms", c.start_timeout_ms),
            ("stop_timeout_ms", c.stop_timeout_ms),
            ("kill_timeout_ms", c.kill_timeout_ms),
            ("monitor_timeout_ms", c.monitor_timeout_ms),
        ] {
            if ms == 0 {
                problems.push(format!("{what} must be above 0"));
            }
        }
        if c.monitor_timeout_ms >= c.start_timeout_ms {
            problems.push("monitor_timeout_ms must be shorter than start_timeout_ms".into());
        }
        problems
    }
}

fn check_absolute(what: &str, path: &Path, problems: &mut Vec<String>) {
    if !path.is_absolute() {
        problems.push(format!("{what} {:?} is not an absolute path", path));
    }
}

fn on_path(program: &str) -> bool {
    let p = Path::new(program);
    if p.is_absolute() {
        return p.is_file();
    }
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .any(|dir| Path::new(dir).join(program).is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_password() {
        let config = MysqlConfig {
            user: "quorate".into(),
            password: "hunter2".into(),
            ..MysqlConfig::default()
        };
        let shown = format!("{config:?}");
        assert!(
            shown.contains("quorate") && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}

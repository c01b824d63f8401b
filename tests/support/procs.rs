//! Process-level helpers: start the real binaries, run `quoratectl`, and make sure every
//! child is killed when the test ends, also when it panics.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{config_toml, eventually_blocking, free_ports, MEMBERS};
use std::process::{Child, Command, Output, Stdio};

/// Path of a binary built from this package.
pub fn bin(name: &str) -> PathBuf {
    match name {
        "quorate-agent" => PathBuf::from(env!("CARGO_BIN_EXE_quorate-agent")),
        "quorate-witness" => PathBuf::from(env!("CARGO_BIN_EXE_quorate-witness")),
        "quoratectl" => PathBuf::from(env!("CARGO_BIN_EXE_quoratectl")),
        other => panic!("unknown binary {other}"),
    }
}

/// A child process killed (SIGKILL) and reaped on drop.
pub struct Daemon {
    /// The child.
    pub child: Child,
    /// Where its standard error goes.
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `binary --config config`, logging to `log`.
    pub fn start(binary: &str, config: &Path, log: &Path) -> Daemon {
        let file = std::fs::File::create(log).expect("log file");
        let child = Command::new(bin(binary))
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .expect("start daemon");
        Daemon {
            child,
            log: log.to_path_buf(),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs quoratectl with `args` and returns its output.
pub fn quoratectl(args: &[&str]) -> Output {
    Command::new(bin("quoratectl"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run quoratectl")
}

/// `quoratectl --endpoint 127.0.0.1:PORT status --json`, parsed; `None` on failure.
pub fn status_json(port: u16) -> Option<serde_json::Value> {
    let endpoint = format!("127.0.0.1:{port}");
    let out = quoratectl(&[
        "--endpoint",
        &endpoint,
        "--timeout-ms",
        "1500",
        "status",
        "--json",
    ]);
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// The three real daemons started from configs in a temp dir.
pub struct ProcessCluster {
    /// Configs, data and logs.
    pub dir: tempfile::TempDir,
    /// Member ports in id order.
    pub ports: [u16; 3],
    /// The daemons by member id.
    pub daemons: HashMap<u64, Daemon>,
}

/// The `[group]` of a management node: one Dummy in `dir/<name>/`, one shared ledger.
fn dummy_group(name: &str) -> String {
    format!(
        "[group]\nstate_dir = \"{name}/state\"\nmonitor_interval_ms = 100\n\n[[group.resources]]\nkind = \"dummy\"\nname = \"db\"\nstate_file = \"{name}/db.state\"\nledger_file = \"ledger.jsonl\"\n"
    )
}

impl ProcessCluster {
    /// Starts the three daemons without resource groups.
    pub fn start() -> ProcessCluster {
        Self::start_with(false)
    }

    /// Starts the three daemons; with `groups`, each management node runs a Dummy group
    /// whose starts and stops go to `ledger.jsonl` in the temp dir.
    pub fn start_with(groups: bool) -> ProcessCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports = free_ports();
        let mut daemons = HashMap::new();
        for (id, name, role) in MEMBERS {
            let config = dir.path().join(format!("{name}.toml"));
            let extra = if groups && role == "management" {
                std::fs::create_dir_all(dir.path().join(name)).expect("node dir");
                dummy_group(name)
            } else {
                String::new()
            };
            std::fs::write(&config, config_toml("proc", id, &ports, &extra)).expect("config");
            let binary = if role == "witness" {
                "quorate-witness"
            } else {
                "quorate-agent"
            };
            let log = dir.path().join(format!("{name}.log"));
            daemons.insert(id, Daemon::start(binary, &config, &log));
        }
        ProcessCluster {
            dir,
            ports,
            daemons,
        }
    }

    /// Member `id`'s port.
    pub fn port(&self, id: u64) -> u16 {
        self.ports[(id - 1) as usize]
    }

    /// Every daemon's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for (_, name, _) in MEMBERS {
            let path = self.dir.path().join(format!("{name}.log"));
            out.push_str(&format!(
                "--- {name} ---\n{}\n",
                std::fs::read_to_string(path).unwrap_or_default()
            ));
        }
        out
    }

    /// Waits until the member at `id` reports a leader, and returns the status.
    pub fn status_with_leader(&self, id: u64, except: Option<&str>) -> serde_json::Value {
        eventually_blocking(
            "a leader in quoratectl status",
            Duration::from_secs(20),
            || {
                let status = status_json(self.port(id))?;
                let leader = status["leader"].as_str()?;
                (Some(leader) != except).then_some(status)
            },
        )
    }
}

/// Runs quoratectl against member port `port`.
pub fn ctl(port: u16, args: &[&str]) -> std::process::Output {
    let endpoint = format!("127.0.0.1:{port}");
    let mut all = vec!["--endpoint", endpoint.as_str()];
    all.extend_from_slice(args);
    quoratectl(&all)
}

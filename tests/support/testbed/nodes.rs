//! The quorate nodes of the testbed: their config files and their processes.
//!
//! Management nodes `a` and `b` run `quorate-agent` with the full resource group (DRBD stand-in,
//! filesystem, MariaDB, VIP); `w` runs `quorate-witness`. Every arbiter listens on its host's
//! address, port 7100. Each node's files (Raft store, agent state, MariaDB socket and pid files,
//! logs) live in `<run>/<node>/`, outside the shared image.

use super::disk::{innodb_options, Disk, DB_PASSWORD, DB_USER, RESOURCE};
use super::hosts::HostEnv;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

/// The arbiters' gRPC (Raft and admin) port.
pub const RAFT_PORT: u16 = 7100;
/// The virtual IP with its prefix.
pub const VIP: &str = "198.18.0.100/24";
/// The virtual IP alone.
pub const VIP_IP: &str = "198.18.0.100";
/// The cluster's members: (id, name, address, role).
pub const MEMBERS: [(u64, &str, &str, &str); 3] = [
    (1, "a", "198.18.0.11", "management"),
    (2, "b", "198.18.0.12", "management"),
    (3, "w", "198.18.0.13", "witness"),
];

/// MariaDB's `server_id` on a management node: the client records it with every row, so the
/// checks know which server took each write.
pub fn server_id(node: &str) -> u32 {
    match node {
        "a" => 11,
        "b" => 12,
        _ => 0,
    }
}

/// The name of the node whose MariaDB has `server_id`.
pub fn node_of_server(id: u32) -> Option<&'static str> {
    ["a", "b"].into_iter().find(|n| server_id(n) == id)
}

/// The fast timing profile (see `cluster-configs/reference/node-a.toml`): shorter election
/// timeouts, lease and fence margin. Config validation accepts it: the owner's lease still
/// outlasts an election plus a renewal.
pub const FAST_TIMING: &str = "[raft]
heartbeat_interval_ms = 50
election_timeout_min_ms = 150
election_timeout_max_ms = 300

[lease]
duration_ms = 1000
renew_interval_ms = 200
fence_margin_ms = 200
";

/// Extra settings of one scenario.
#[derive(Clone, Debug, Default)]
pub struct NodeOptions {
    /// Extra `mariadbd` arguments per node (for example a broken option).
    pub mysqld_extra: Vec<(String, String)>,
    /// Config tables appended to every node's file (for example other `[raft]` and
    /// `[lease]` timings); empty for the defaults.
    pub extra_config: String,
}

/// The mariadbd command line of `node`.
fn mysqld_command(dir: &Path, mount: &Path, node: &str, extra: &[String]) -> Vec<String> {
    let mut argv = vec![
        "/usr/sbin/mariadbd".to_string(),
        "--no-defaults".into(),
        format!("--datadir={}", mount.join("data").display()),
        format!("--socket={}", dir.join("mysqld.sock").display()),
        format!("--pid-file={}", dir.join("mariadbd.pid").display()),
        // Its own tmpdir: mariadbd deletes every `#sql*` file in its tmpdir at start-up.
        format!("--tmpdir={}", dir.join("tmp").display()),
        "--port=3306".into(),
        "--bind-address=0.0.0.0".into(),
        "--user=root".into(),
        "--skip-name-resolve".into(),
        format!("--server-id={}", server_id(node)),
    ];
    argv.extend(innodb_options());
    argv.extend(extra.iter().cloned());
    argv
}

fn toml_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

/// The config file text of `node`.
pub fn config_text(run: &Path, node: &str, disk: &Disk, options: &NodeOptions) -> String {
    let (id, _, address, role) = MEMBERS
        .iter()
        .find(|m| m.1 == node)
        .copied()
        .unwrap_or_else(|| panic!("no member {node}"));
    let dir = run.join(node);
    let mut text = format!(
        "# testbed node {node}\ncluster = \"testbed\"\nnode_id = {id}\ndata_dir = {:?}\nlisten = \"{address}:{RAFT_PORT}\"\n",
        dir.join("raft").display().to_string()
    );
    if role == "management" {
        let mount = dir.join("mnt");
        let extra: Vec<String> = options
            .mysqld_extra
            .iter()
            .filter(|(n, _)| n == node)
            .map(|(_, arg)| arg.clone())
            .collect();
        let wrapper = disk.wrapper(node).display().to_string();
        text.push_str(&format!(
            r#"
[group]
state_dir = {state:?}
monitor_interval_ms = 250

[[group.resources]]
kind = "drbd"
name = "drbd"
resource = "{RESOURCE}"
drbdadm = {wrapper:?}
drbdsetup = {wrapper:?}
command_timeout_ms = 10000
settle_timeout_ms = 2000

[[group.resources]]
kind = "filesystem"
name = "fs"
device = {device:?}
mount_point = {mount:?}
fstype = "ext4"
options = "noatime"
term_grace_ms = 1000
kill_grace_ms = 2000
monitor_timeout_ms = 2000

[[group.resources]]
kind = "mysql"
name = "mysql"
command = {command}
pid_file = {pid:?}
log_file = {log:?}
host = "127.0.0.1"
port = 3306
user = "{DB_USER}"
password = "{DB_PASSWORD}"
start_timeout_ms = 30000
stop_timeout_ms = 20000
kill_timeout_ms = 5000
monitor_timeout_ms = 2000

[[group.resources]]
kind = "vip"
name = "vip"
address = "{VIP}"
interface = "eth0"
"#,
            state = dir.join("state").display().to_string(),
            device = disk.device(node).display().to_string(),
            mount = mount.display().to_string(),
            command = toml_list(&mysqld_command(&dir, &mount, node, &extra)),
            pid = dir.join("quorate-mysql.pid").display().to_string(),
            log = dir.join("mysqld.log").display().to_string(),
        ));
    }
    for (id, name, address, role) in MEMBERS {
        text.push_str(&format!(
            "\n[[members]]\nid = {id}\nname = \"{name}\"\naddress = \"{address}:{RAFT_PORT}\"\nrole = \"{role}\"\n"
        ));
    }
    if !options.extra_config.is_empty() {
        text.push('\n');
        text.push_str(&options.extra_config);
    }
    text
}

/// A quorate daemon running inside its host.
pub struct Daemon {
    /// The node's name.
    pub node: String,
    /// The process (its pid is the daemon's: nsenter execs it).
    pub child: Child,
    /// Its log file (standard output and error, the guard's too).
    pub log: PathBuf,
}

impl Daemon {
    /// Writes the node's config and starts its daemon inside `host`.
    pub fn start(
        host: &HostEnv,
        run: &Path,
        disk: &Disk,
        options: &NodeOptions,
    ) -> Result<Daemon, String> {
        let node = host.name.as_str();
        let dir = run.join(node);
        std::fs::create_dir_all(dir.join("tmp")).map_err(|e| e.to_string())?;
        let config = dir.join("config.toml");
        std::fs::write(&config, config_text(run, node, disk, options))
            .map_err(|e| e.to_string())?;
        let binary = if node == "w" {
            "quorate-witness"
        } else {
            "quorate-agent"
        };
        let log = run.join(format!("{node}.log"));
        // Appended to: a host powered on again keeps its earlier log.
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| e.to_string())?;
        let mut command = host.command(&super::super::procs::bin(binary))?;
        command
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info,openraft=warn,h2=warn")
            .stdin(Stdio::null())
            .stdout(file.try_clone().map_err(|e| e.to_string())?)
            .stderr(file);
        let child = host.spawn(&mut command)?;
        Ok(Daemon {
            node: node.to_string(),
            child,
            log,
        })
    }

    /// The daemon's pid.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends `signal` to the daemon.
    pub fn signal(&self, signal: nix::sys::signal::Signal) -> Result<(), String> {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal)
            .map_err(|e| format!("kill -{signal} {} ({}): {e}", self.pid(), self.node))
    }

    /// True once the process has exited (reaping it).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

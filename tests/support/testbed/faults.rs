//! Fault injection, as docs/TESTBED.md lists it. Every fault is a step of the run's schedule; the
//! returned instant (monotonic ns) is when the fault took effect, the start of the timings.
//!
//! Network faults act in the switch namespace only: a cable is the host's switch port
//! (`p_<host>`), and partitions are one `bridge`-family nft table whose sets hold
//! `in-port . out-port` pairs to drop (all traffic, or only the arbiters' port). Elements are
//! added and flushed in one `nft -f` transaction each.
//!
//! The DRBD stand-in replicates nothing, so it cannot notice a lost link by itself: a fault
//! that cuts a management node off its peer also `disconnect`s the node in the stand-in (as
//! DRBD would see the replication link drop), and healing `connect`s it again. A Raft-port-only
//! cut leaves the replication link up.

use super::hosts;
use super::nodes::{RAFT_PORT, VIP};
use super::Testbed;
use nix::sys::signal::Signal;
use std::process::Command;
use std::time::{Duration, Instant};

const TABLE: &str = "quorate_testbed";

impl Testbed {
    fn switch(&self) -> String {
        self.net.as_ref().expect("network").switch.clone()
    }

    fn nft(&self, script: &str) -> Result<(), String> {
        use std::io::Write;
        let mut child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.switch()))
            .args(["nft", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run nft: {e}"))?;
        child
            .stdin
            .take()
            .ok_or("nft has no stdin")?
            .write_all(script.as_bytes())
            .map_err(|e| e.to_string())?;
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "nft failed: {}\n{script}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Installs the (empty) partition table in the switch.
    pub(super) fn install_nft(&self) -> Result<(), String> {
        self.nft(&format!(
            "table bridge {TABLE} {{
  set cut {{ type ifname . ifname; }}
  set raftcut {{ type ifname . ifname; }}
  chain forward {{
    type filter hook forward priority 0; policy accept;
    iifname . oifname @cut drop
    iifname . oifname @raftcut tcp dport {RAFT_PORT} drop
    iifname . oifname @raftcut tcp sport {RAFT_PORT} drop
  }}
}}
"
        ))
    }

    fn ip_sw(&self, args: &[&str]) -> Result<(), String> {
        let switch = self.switch();
        let mut all = vec!["-n", switch.as_str()];
        all.extend_from_slice(args);
        super::disk::run("ip", &all).map(|_| ())
    }

    fn drbd_link(&self, host: &str, up: bool) {
        if !["a", "b"].contains(&host) {
            return;
        }
        let verb = if up { "connect" } else { "disconnect" };
        if let Some(disk) = &self.disk {
            match disk.standin(host, &[verb, super::disk::RESOURCE]) {
                Ok(_) => {
                    self.run
                        .step(&format!("stand-in: {verb} {host} (replication link)"));
                }
                Err(e) => {
                    self.run
                        .step(&format!("stand-in: {verb} {host} refused: {e}"));
                }
            }
        }
    }

    /// Pulls `host`'s cable: its switch port goes down (and its replication link with it).
    pub fn cable_pull(&self, host: &str) -> u64 {
        self.ip_sw(&["link", "set", &format!("p_{host}"), "down"])
            .unwrap_or_else(|e| panic!("{e}"));
        let at = self.run.step(&format!("fault: cable of {host} pulled"));
        self.drbd_link(host, false);
        at
    }

    /// Plugs `host`'s cable back in.
    pub fn cable_restore(&self, host: &str) -> u64 {
        self.ip_sw(&["link", "set", &format!("p_{host}"), "up"])
            .unwrap_or_else(|e| panic!("{e}"));
        let at = self.run.step(&format!("heal: cable of {host} plugged in"));
        self.drbd_link(host, true);
        at
    }

    /// Powers `host` off: cable pulled, every process killed through the cgroup. What a dead
    /// machine no longer holds is then cleared: the VIP vanishes from its interface and its DRBD
    /// stand-in node goes Secondary (as it would come back after a reboot).
    pub fn power_off(&mut self, host: &str) -> u64 {
        let at = self.cable_pull(host);
        let env = self.hosts.get_mut(host).expect("host");
        env.kill_all().unwrap_or_else(|e| panic!("{e}"));
        if let Some(daemon) = self.daemons.get_mut(host) {
            let _ = daemon.child.wait();
        }
        self.run
            .step(&format!("fault: {host} powered off (cgroup.kill)"));
        let netns = self.host(host).netns.clone();
        if super::disk::run("ip", &["-n", &netns, "addr", "del", VIP, "dev", "eth0"]).is_ok() {
            self.run
                .step(&format!("{host} is off: its VIP address is gone"));
        }
        if ["a", "b"].contains(&host) {
            let disk = self.disk.as_ref().expect("disk");
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match disk.standin(host, &["secondary", super::disk::RESOURCE]) {
                    Ok(_) => break,
                    Err(e) if Instant::now() >= deadline => {
                        panic!("the stand-in of powered-off {host} stays Primary: {e}")
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
            self.run
                .step(&format!("{host} is off: its stand-in node is Secondary"));
        }
        at
    }

    /// Powers `host` on again: a fresh mount namespace, the cable back in, its daemon
    /// restarted from the same config and data directory.
    pub fn power_on(&mut self, host: &str) -> u64 {
        let env = self.hosts.get_mut(host).expect("host");
        env.start_holder().unwrap_or_else(|e| panic!("{e}"));
        let pid = env.holder_pid().unwrap_or(0);
        for entry in self.mount_hosts.lock().expect("mount hosts").iter_mut() {
            if entry.0 == host {
                entry.1 = pid;
            }
        }
        let at = self.cable_restore(host);
        let daemon = super::nodes::Daemon::start(
            self.host(host),
            &self.run.path,
            self.disk.as_ref().expect("disk"),
            &self.options,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        self.daemons.insert(host.to_string(), daemon);
        self.run
            .step(&format!("{host} powered on: daemon restarted"));
        at
    }

    fn others(host: &str) -> Vec<&'static str> {
        ["a", "b", "w", "c"]
            .into_iter()
            .filter(|h| *h != host)
            .collect()
    }

    fn pairs(host: &str, peers: &[&str]) -> String {
        peers
            .iter()
            .flat_map(|p| {
                [
                    format!("\"p_{host}\" . \"p_{p}\""),
                    format!("\"p_{p}\" . \"p_{host}\""),
                ]
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Cuts `host` off from every other host (clients too), both directions.
    pub fn isolate(&self, host: &str) -> u64 {
        let pairs = Self::pairs(host, &Self::others(host));
        self.nft(&format!("add element bridge {TABLE} cut {{ {pairs} }}\n"))
            .unwrap_or_else(|e| panic!("{e}"));
        let at = self
            .run
            .step(&format!("fault: {host} isolated (symmetric partition)"));
        self.drbd_link(host, false);
        at
    }

    /// Cuts only the arbiters' port between `host` and the other arbiters; clients and the
    /// replication link still reach it.
    pub fn raft_cut(&self, host: &str) -> u64 {
        let peers: Vec<&str> = ["a", "b", "w"].into_iter().filter(|h| *h != host).collect();
        let pairs = Self::pairs(host, &peers);
        self.nft(&format!(
            "add element bridge {TABLE} raftcut {{ {pairs} }}\n"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        self.run.step(&format!(
            "fault: port {RAFT_PORT} cut between {host} and the other arbiters"
        ))
    }

    /// Removes every partition; reconnects the replication links of `hosts`.
    pub fn heal(&self, hosts: &[&str]) -> u64 {
        self.nft(&format!(
            "flush set bridge {TABLE} cut\nflush set bridge {TABLE} raftcut\n"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let at = self.run.step("heal: partitions removed");
        for host in hosts {
            self.drbd_link(host, true);
        }
        at
    }

    /// Sends `signal` to `host`'s quorate daemon.
    pub fn signal_daemon(&self, host: &str, signal: Signal) -> u64 {
        let daemon = self.daemons.get(host).expect("daemon");
        daemon.signal(signal).unwrap_or_else(|e| panic!("{e}"));
        self.run.step(&format!(
            "fault: {signal} to the quorate daemon of {host} (pid {})",
            daemon.pid()
        ))
    }

    /// Waits until `host`'s daemon has exited.
    pub fn wait_daemon_exit(&mut self, host: &str, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            if self.daemons.get_mut(host).expect("daemon").exited() {
                return self.run.step(&format!("the daemon of {host} exited"));
            }
            if Instant::now() >= deadline {
                panic!("the daemon of {host} did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Freezes (`cgroup.freeze`) every process of `host`, or thaws them.
    pub fn freeze(&self, host: &str, frozen: bool) -> u64 {
        let value = if frozen { "1" } else { "0" };
        hosts::write_control(&self.host(host).cgroup, "cgroup.freeze", value)
            .unwrap_or_else(|e| panic!("{e}"));
        let word = if frozen { "frozen" } else { "thawed" };
        self.run
            .step(&format!("fault: host {host} {word} (cgroup.freeze)"))
    }

    /// SIGKILLs the mariadbd of `host` (its pid from mariadbd's own pid file).
    pub fn kill_mysqld(&self, host: &str) -> u64 {
        let file = self.run.path.join(host).join("mariadbd.pid");
        let pid: i32 = std::fs::read_to_string(&file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or_else(|| panic!("no mariadbd pid in {}", file.display()));
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL)
            .unwrap_or_else(|e| panic!("kill -9 mariadbd {pid}: {e}"));
        self.run
            .step(&format!("fault: mariadbd of {host} (pid {pid}) killed"))
    }

    fn quoratectl_command(&self, from: &str, args: &[&str]) -> Command {
        let host = self.host(from);
        let mut command = host
            .command(&super::super::procs::bin("quoratectl"))
            .unwrap_or_else(|e| panic!("{e}"));
        command
            .arg("--endpoint")
            .arg(format!("198.18.0.13:{RAFT_PORT}"))
            .args(args);
        command
    }

    /// Starts `quoratectl` inside host `from` against the witness without waiting; its output
    /// goes to `<run>/<file>`.
    pub fn quoratectl_spawn(&self, from: &str, args: &[&str], file: &str) -> std::process::Child {
        let out = std::fs::File::create(self.run.join(file)).unwrap_or_else(|e| panic!("{e}"));
        let mut command = self.quoratectl_command(from, args);
        command
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().unwrap_or_else(|e| panic!("{e}")))
            .stderr(out);
        command
            .spawn()
            .unwrap_or_else(|e| panic!("quoratectl: {e}"))
    }

    /// Runs `quoratectl` inside host `from` against the witness; returns (success, output).
    pub fn quoratectl(&self, from: &str, args: &[&str]) -> (bool, String) {
        let out = self
            .quoratectl_command(from, args)
            .output()
            .unwrap_or_else(|e| panic!("quoratectl: {e}"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }
}

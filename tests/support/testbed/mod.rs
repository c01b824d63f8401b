//! The multi-host failover testbed of docs/TESTBED.md: a switch namespace `sw` (bridge `br0`, no IP,
//! no uplink) and hosts `a`, `b` (management nodes), `w` (witness) and `c` (client) on
//! 198.18.0.0/24, each with its own network and mount namespace and cgroup, running the real
//! `quorate-agent`/`quorate-witness` binaries over real resource groups (DRBD stand-in, ext4
//! on a loop device, MariaDB, the VIP).
//!
//! A scenario test calls [`Testbed::start`], waits for the steady state, injects faults (see
//! `faults.rs`), waits for the expected outcome and calls [`Testbed::finish`], which runs every
//! checker (`checks.rs`) on the recorded histories and fails the test on any violation. The
//! `Drop` of the testbed tears everything down even when the test panics (cgroups killed, loop
//! devices detached, namespaces and cgroup directories removed) and then verifies that nothing
//! is left. Scenarios of one test binary run one at a time (they share two CPU cores and the
//! timing checks would suffer).

mod arp;
pub mod arp_checks;
pub mod checks;
pub mod disk;
mod faults;
pub mod history;
pub mod hosts;
pub mod nodes;
pub mod observe;
pub mod phases;
pub mod report;
pub mod saved;
pub mod schedule;
pub mod soak;

use disk::Disk;
use history::RunDir;
use hosts::HostEnv;
use nodes::{Daemon, NodeOptions};
use observe::{Observers, StatusSample};
use report::Failover;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Hosts: (name, address, last MAC byte).
const HOSTS: [(&str, &str, u8); 4] = [
    ("a", "198.18.0.11", 0x11),
    ("b", "198.18.0.12", 0x12),
    ("w", "198.18.0.13", 0x13),
    ("c", "198.18.0.50", 0x50),
];

/// Programs the testbed runs.
const PROGRAMS: [&str; 10] = [
    "ip",
    "nft",
    "nsenter",
    "unshare",
    "losetup",
    "mkfs.ext4",
    "e2fsck",
    "mariadbd",
    "mariadb-install-db",
    "sleep",
];

/// The schema the bootstrap creates on the shared image.
const BOOTSTRAP_SQL: &str = "FLUSH PRIVILEGES;
CREATE USER 'quorate'@'%' IDENTIFIED BY 'testbed-pw';
GRANT ALL ON *.* TO 'quorate'@'%';
CREATE DATABASE tb;
CREATE TABLE tb.seq (n BIGINT PRIMARY KEY, srv INT NOT NULL) ENGINE=InnoDB;
CREATE TABLE tb.probe (id BIGINT AUTO_INCREMENT PRIMARY KEY, srv INT NOT NULL) ENGINE=InnoDB;
";

static SERIAL: Mutex<()> = Mutex::new(());
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A running testbed; see the module docs.
pub struct Testbed {
    /// The scenario's name.
    pub name: String,
    /// The run directory, seed and schedule.
    pub run: RunDir,
    net: Option<super::netns::Testbed>,
    hosts: BTreeMap<String, HostEnv>,
    cgroup_parent: Option<PathBuf>,
    disk: Option<Disk>,
    daemons: BTreeMap<String, Daemon>,
    obs: Option<Observers>,
    failovers: Vec<Failover>,
    options: NodeOptions,
    mount_hosts: Arc<Mutex<Vec<(String, u32, PathBuf)>>>,
    /// Management host to the MAC of its interface (the only MACs that may answer for the VIP).
    macs: BTreeMap<String, String>,
    torn_down: bool,
    saved: bool,
    passed: bool,
    _serial: MutexGuard<'static, ()>,
}

/// Whether the machine can run the testbed; `false` (after printing why) means skip. Under CI
/// a missing prerequisite panics instead.
fn ready(name: &str) -> bool {
    if !super::prereq::ready(name, &PROGRAMS) {
        return false;
    }
    let cgroup = hosts::cgroup2_root().and_then(|root| {
        if root.join("cgroup.procs").exists() {
            Ok(root)
        } else {
            Err(format!("{} is not a cgroup v2 root", root.display()))
        }
    });
    match cgroup {
        Ok(_) => true,
        Err(why) if std::env::var_os("CI").is_some() => {
            panic!("{name}: prerequisites missing under CI: {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED {name}: {why}");
            false
        }
    }
}

fn seed() -> u64 {
    std::env::var("QUORATE_TESTBED_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| history::mono_ns() ^ u64::from(std::process::id()) << 32)
}

impl Testbed {
    /// Builds the testbed and starts the cluster and every observer; `None` when the machine
    /// cannot run it (outside CI).
    pub fn start(name: &str, options: NodeOptions) -> Option<Testbed> {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        if !ready(name) {
            return None;
        }
        let run = RunDir::create(&format!("{name}-{}", std::process::id()), seed())
            .unwrap_or_else(|e| panic!("{e}"));
        let mut bed = Testbed {
            name: name.to_string(),
            run,
            net: None,
            hosts: BTreeMap::new(),
            cgroup_parent: None,
            disk: None,
            daemons: BTreeMap::new(),
            obs: None,
            failovers: Vec::new(),
            options: options.clone(),
            mount_hosts: Arc::new(Mutex::new(Vec::new())),
            macs: BTreeMap::new(),
            torn_down: false,
            saved: false,
            passed: false,
            _serial: serial,
        };
        if let Err(e) = bed.build(&options) {
            panic!("{name}: cannot build the testbed: {e}");
        }
        Some(bed)
    }

    fn build(&mut self, options: &NodeOptions) -> Result<(), String> {
        let tag = format!("t{}", COUNTER.fetch_add(1, Ordering::Relaxed));
        let net = super::netns::Testbed::create(&tag, &HOSTS)?;
        let prefix = net.switch.trim_end_matches("sw").to_string();
        self.run.step(&format!(
            "namespaces {prefix}{{sw,a,b,w,c}}, seed {}",
            self.run.seed
        ));
        let parent = hosts::cgroup2_root()?.join(&prefix);
        std::fs::create_dir(&parent)
            .map_err(|e| format!("cannot create cgroup {}: {e}", parent.display()))?;
        self.cgroup_parent = Some(parent.clone());
        for host in &net.hosts {
            let short = host.ns.trim_start_matches(&prefix).to_string();
            let env = HostEnv::create(&short, &host.ns, host.ip, &parent)?;
            self.hosts.insert(short, env);
        }
        self.net = Some(net);
        self.install_nft()?;
        let standin = super::standin::binary();
        self.disk = Some(Disk::prepare(
            &self.run,
            &["a", "b"],
            &standin,
            BOOTSTRAP_SQL,
        )?);
        self.run
            .step("image ready: ext4 + MariaDB datadir, stand-in up on a and b");

        let monitored: Vec<(String, String)> = ["a", "b"]
            .iter()
            .map(|h| (h.to_string(), self.host(h).netns.clone()))
            .collect();
        self.obs = Some(Observers::start(self.run.clock, &monitored)?);
        let client_ns = self.host("c").netns.clone();
        let clock = self.run.clock;
        if let Some(obs) = self.obs.as_mut() {
            obs.watch_client_arp(&client_ns, clock)?;
        }
        if let Some(net) = &self.net {
            for host in &net.hosts {
                let short = host.ns.trim_start_matches(&prefix);
                if ["a", "b"].contains(&short) {
                    self.macs
                        .insert(short.to_string(), arp_checks::format_mac(&host.mac));
                }
            }
        }
        for node in ["w", "a", "b"] {
            let daemon = Daemon::start(
                self.host(node),
                &self.run.path,
                self.disk.as_ref().expect("disk"),
                options,
            )?;
            self.daemons.insert(node.to_string(), daemon);
        }
        self.run
            .step("daemons started: quorate-witness on w, quorate-agent on a and b");
        let mounts: Vec<(String, u32, PathBuf)> = ["a", "b"]
            .iter()
            .map(|h| {
                let host = self.host(h);
                let pid = host.holder_pid().unwrap_or(0);
                (h.to_string(), pid, self.run.path.join(h).join("mnt"))
            })
            .collect();
        *self.mount_hosts.lock().expect("mount hosts") = mounts;
        let mounts = self.mount_hosts.clone();
        let targets: Vec<(String, String, &'static str)> = ["a", "b"]
            .iter()
            .map(|h| (h.to_string(), self.host(h).netns.clone(), self.host(h).ip))
            .collect();
        let client_ns = self.host("c").netns.clone();
        let witness_ns = self.host("w").netns.clone();
        let obs = self.obs.as_mut().expect("observers");
        obs.sample_mounts(mounts);
        for (host, ns, ip) in targets {
            obs.probe_writes(&host, &ns, ip);
        }
        obs.client(&client_ns);
        // Staggered pollers: a status call waits up to 700 ms for a silent member, so one
        // poller alone would see a failover in coarse steps.
        for offset_ms in [0, 60, 120, 180] {
            obs.poll_status(
                &witness_ns,
                &format!("198.18.0.13:{}", nodes::RAFT_PORT),
                offset_ms,
            );
        }
        Ok(())
    }

    /// The host called `name`.
    pub fn host(&self, name: &str) -> &HostEnv {
        self.hosts
            .get(name)
            .unwrap_or_else(|| panic!("no host {name}"))
    }

    fn obs(&self) -> &Observers {
        self.obs.as_ref().expect("observers run")
    }

    /// The latest status sample, if any.
    pub fn latest_status(&self) -> Option<StatusSample> {
        self.obs().status.lock().expect("status").last().cloned()
    }

    /// Polls `check` every 20 ms until it gives a value, or panics after `timeout`.
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&Self) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = check(self) {
                return value;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{}: timed out after {timeout:?} waiting for {what}; run dir {}",
                    self.name,
                    self.run.path.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Acknowledged client writes that started at or after `t`.
    pub fn acked_since(&self, t: u64) -> usize {
        self.obs()
            .writes
            .lock()
            .expect("writes")
            .iter()
            .filter(|w| w.start >= t && w.outcome == checks::Outcome::Ok)
            .count()
    }

    /// Waits until a node owns the group with every resource running and the client's writes
    /// through the VIP succeed; returns the owner.
    pub fn wait_steady(&self, timeout: Duration) -> String {
        let since = history::mono_ns();
        let owner = self.wait_for("an owner running the whole group", timeout, |bed| {
            let sample = bed.latest_status()?;
            let owner = sample.status.owner.clone()?;
            sample.running_on(&owner).then_some(owner)
        });
        self.wait_for("3 acknowledged writes through the VIP", timeout, |bed| {
            (bed.acked_since(since) >= 3).then_some(())
        });
        self.run
            .step(&format!("steady: {owner} owns the group, writes flow"));
        owner
    }

    /// The other management node.
    pub fn other(node: &str) -> &'static str {
        if node == "a" {
            "b"
        } else {
            "a"
        }
    }

    /// Waits until `to` runs the whole group and a write through the VIP succeeded after
    /// that, and records the failover (fault at `fault_at`) for the timing report.
    pub fn wait_failover(
        &mut self,
        what: &str,
        fault_at: u64,
        down: &[&str],
        to: &str,
        timeout: Duration,
    ) {
        let up = self.wait_for(&format!("{to} running the group"), timeout, |bed| {
            let samples = bed.obs().status.lock().expect("status");
            samples
                .iter()
                .find(|s| s.t >= fault_at && s.running_on(to))
                .map(|s| s.t)
        });
        self.wait_for("an acknowledged write after the move", timeout, |bed| {
            (bed.acked_since(up) >= 1).then_some(())
        });
        self.run
            .step(&format!("{what}: {to} runs the group, writes flow"));
        self.failovers.push(Failover {
            what: what.to_string(),
            fault_at,
            since: fault_at,
            down: down.iter().map(|s| s.to_string()).collect(),
            to: to.to_string(),
        });
    }

    /// Lets `duration` pass while the observers record (the scenario wants time to pass,
    /// for example a pause longer than the lease).
    pub fn hold(&self, duration: Duration) {
        self.run.step(&format!("holding for {duration:?}"));
        std::thread::sleep(duration);
    }

    /// Waits until some management node runs the group under an epoch newer than the one in
    /// force at `fault_at`, and a write succeeded after that; records the failover to it and
    /// returns its name. For faults after which either node may end up owning the group.
    pub fn wait_new_owner(
        &mut self,
        what: &str,
        fault_at: u64,
        down: &[&str],
        timeout: Duration,
    ) -> String {
        let epoch_before = {
            let samples = self.obs().status.lock().expect("status");
            samples
                .iter()
                .filter(|s| s.t <= fault_at)
                .map(|s| s.status.epoch)
                .next_back()
                .unwrap_or(0)
        };
        let (owner, up) = self.wait_for(
            "a node running the group under a new epoch",
            timeout,
            |bed| {
                let samples = bed.obs().status.lock().expect("status");
                samples.iter().find_map(|s| {
                    let owner = s.status.owner.clone()?;
                    (s.t >= fault_at && s.status.epoch > epoch_before && s.running_on(&owner))
                        .then_some((owner, s.t))
                })
            },
        );
        self.wait_for("an acknowledged write after the move", timeout, |bed| {
            (bed.acked_since(up) >= 1).then_some(())
        });
        self.run.step(&format!(
            "{what}: {owner} runs the group (epoch above {epoch_before}), writes flow"
        ));
        self.failovers.push(Failover {
            what: what.to_string(),
            fault_at,
            since: fault_at,
            down: down.iter().map(|s| s.to_string()).collect(),
            to: owner.clone(),
        });
        owner
    }

    /// Waits until the client saw a write fail after `at`, then until `host` runs the group
    /// again and a write succeeded; records the recovery (fault at `at`) for the timings.
    pub fn wait_recovered(&mut self, what: &str, at: u64, host: &str, timeout: Duration) {
        self.wait_for("a failed client write", timeout, |bed| {
            let writes = bed.obs().writes.lock().expect("writes");
            writes
                .iter()
                .find(|w| w.end >= at && w.outcome != checks::Outcome::Ok)
                .map(|w| w.end)
        });
        self.run.step("the client saw the failure");
        // The status may still show the group running for a moment: the recovery's events
        // count from the first sample that shows the failure.
        let noticed = self.wait_for("the status to show the failure", timeout, |bed| {
            let samples = bed.obs().status.lock().expect("status");
            samples
                .iter()
                .find(|s| s.t >= at && !s.running_on(host))
                .map(|s| s.t)
        });
        let since = noticed;
        let up = self.wait_for(&format!("{host} running the group again"), timeout, |bed| {
            let samples = bed.obs().status.lock().expect("status");
            samples
                .iter()
                .find(|s| s.t >= noticed && s.running_on(host))
                .map(|s| s.t)
        });
        self.wait_for("an acknowledged write after the recovery", timeout, |bed| {
            (bed.acked_since(up) >= 1).then_some(())
        });
        self.run
            .step(&format!("{what}: {host} runs the group again, writes flow"));
        self.failovers.push(Failover {
            what: what.to_string(),
            fault_at: at,
            since,
            down: Vec::new(),
            to: host.to_string(),
        });
    }

    /// Asserts that since `since` nothing ran on `node`: no VIP added, no write it accepted,
    /// no DRBD promotion and no group start in its log.
    pub fn assert_nothing_runs_since(&self, since: u64, node: &str) {
        let obs = self.obs();
        let vip: Vec<_> = Observers::snapshot(&obs.vip)
            .into_iter()
            .filter(|e| e.t >= since && e.host == node && e.added)
            .collect();
        assert!(
            vip.is_empty(),
            "{}: the VIP came up on {node} without quorum: {vip:?}",
            self.name
        );
        let probes = Observers::snapshot(&obs.probes)
            .into_iter()
            .filter(|p| p.start >= since && p.host == node && p.ok)
            .count();
        assert_eq!(
            probes, 0,
            "{}: {node} accepted writes without quorum",
            self.name
        );
        assert_eq!(
            self.acked_since(since),
            0,
            "{}: writes acknowledged without quorum",
            self.name
        );
        let promoted: Vec<_> = self
            .disk
            .as_ref()
            .and_then(|d| d.ledger().ok())
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.t_ns >= since && c.node == node && c.role == "Primary")
            .collect();
        assert!(
            promoted.is_empty(),
            "{}: {node} promoted without quorum: {promoted:?}",
            self.name
        );
        self.run
            .step(&format!("checked: nothing ran on {node} without quorum"));
    }

    /// Binds `0.0.0.0:port` inside `host`'s network namespace and keeps it until dropped.
    pub fn occupy_port(&self, host: &str, port: u16) -> std::net::TcpListener {
        let netns = self.host(host).netns.clone();
        let listener = super::netns::run_in(&netns, move || async move {
            std::net::TcpListener::bind(("0.0.0.0", port))
        })
        .unwrap_or_else(|e| panic!("cannot take port {port} on {host}: {e}"));
        self.run
            .step(&format!("fault: port {port} taken on {host}"));
        listener
    }

    /// Waits until the VIP monitor saw the VIP leave `host` after `since`.
    pub fn wait_vip_gone(&self, host: &str, since: u64, timeout: Duration) -> u64 {
        let t = self.wait_for(&format!("the VIP to leave {host}"), timeout, |bed| {
            let events = bed.obs().vip.lock().expect("vip");
            events
                .iter()
                .find(|e| e.host == host && !e.added && e.t >= since)
                .map(|e| e.t)
        });
        self.run
            .step(&format!("the VIP left {host} (seen by ip monitor)"));
        t
    }

    /// Waits until the witness sees every member reachable again with `owner` still running
    /// the group, so `back` rejoined without taking anything.
    pub fn wait_rejoined(&self, back: &str, owner: &str, timeout: Duration) {
        let since = history::mono_ns();
        self.wait_for(&format!("{back} to rejoin"), timeout, |bed| {
            let sample = bed.latest_status()?;
            (sample.t > since
                && sample.status.members.iter().all(|m| m.reachable)
                && sample.running_on(owner))
            .then_some(())
        });
        self.run
            .step(&format!("{back} rejoined; {owner} still runs the group"));
    }
}

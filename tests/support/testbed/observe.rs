//! The observers: everything the checkers need, recorded from the root namespace's process on
//! one clock while a scenario runs.
//!
//! - `ip -ts monitor address` per host: when the VIP appears and disappears.
//! - A write prober per management host, on a thread inside that host's network namespace, so
//!   it still sees the host when its cable is pulled: every 100 ms a fresh connection to the
//!   host's own address and one autocommit INSERT.
//! - The client, on a thread inside `c`: sequence numbers written through the VIP, one at a
//!   time, each with its outcome (ok, failed, unknown).
//! - A status poller on a thread inside `w`: the witness's view of the cluster (leader, owner,
//!   resources) through the admin API that `quoratectl status --json` prints.
//! - A mount sampler: each management host's mount table (through its holder process), to see
//!   who has the image mounted read-write.
//! - In `c`, an ARP prober and a neighbour monitor for the VIP (see `arp.rs`).

use super::arp_checks::{ArpSighting, NeighEvent};
use super::checks::{Outcome, Probe, VipEvent, Write};
use super::disk::{DB_PASSWORD, DB_USER};
use super::history::{mono_ns, parse_utc, WallToMono};
use super::nodes::VIP_IP;
use mysql_async::prelude::Queryable;
use quorate::status::ClusterStatus;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// A shared, growing history.
pub type Shared<T> = Arc<Mutex<Vec<T>>>;

/// One answer of the status poller.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StatusSample {
    /// When the answer arrived (monotonic).
    pub t: u64,
    /// The cluster as the witness saw it.
    pub status: ClusterStatus,
}

impl StatusSample {
    /// True when `node` owns the group (not released) and reports every resource running.
    pub fn running_on(&self, node: &str) -> bool {
        let s = &self.status;
        s.owner.as_deref() == Some(node)
            && !s.released
            && s.members.iter().any(|m| {
                m.name == node
                    && !m.resources.is_empty()
                    && m.resources.iter().all(|(_, state)| state == "running")
            })
    }
}

/// Mount sampler event: (host, time, mounted read-write).
pub type MountEvent = super::saved::MountEvent;

/// Every observer of a run.
pub struct Observers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    monitors: Vec<Child>,
    /// VIP additions and deletions.
    pub vip: Shared<VipEvent>,
    /// Write probes.
    pub probes: Shared<Probe>,
    /// Client writes.
    pub writes: Shared<Write>,
    /// Status samples.
    pub status: Shared<StatusSample>,
    /// Mount sampler transitions.
    pub mounts: Shared<MountEvent>,
    /// ARP frames from VIP holders seen in `c`.
    pub arp: Shared<ArpSighting>,
    /// ARP probes sent from `c`.
    pub arp_sent: Arc<AtomicU64>,
    /// Changes of `c`'s neighbour entry for the VIP.
    pub neigh: Shared<NeighEvent>,
}

fn shared<T>() -> Shared<T> {
    Arc::new(Mutex::new(Vec::new()))
}

fn short(e: impl std::fmt::Display) -> String {
    let text = e.to_string();
    text.chars().take(120).collect()
}

fn opts(host: &str) -> mysql_async::OptsBuilder {
    mysql_async::OptsBuilder::default()
        .ip_or_hostname(host.to_string())
        .tcp_port(3306)
        .user(Some(DB_USER))
        .pass(Some(DB_PASSWORD))
        .prefer_socket(false)
}

async fn connect(host: &str, timeout: Duration) -> Result<mysql_async::Conn, String> {
    match tokio::time::timeout(timeout, mysql_async::Conn::new(opts(host))).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(short(e)),
        Err(_) => Err(format!("connect timed out after {timeout:?}")),
    }
}

impl Observers {
    /// Starts the VIP monitors (before any daemon starts, so no change is missed).
    pub fn start(clock: WallToMono, hosts: &[(String, String)]) -> Result<Observers, String> {
        let mut observers = Observers {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            monitors: Vec::new(),
            vip: shared(),
            probes: shared(),
            writes: shared(),
            status: shared(),
            mounts: shared(),
            arp: shared(),
            arp_sent: Arc::new(AtomicU64::new(0)),
            neigh: shared(),
        };
        for (host, netns) in hosts {
            let mut child = Command::new("ip")
                .args(["-n", netns, "-ts", "monitor", "address"])
                .env("TZ", "UTC")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot start ip monitor for {host}: {e}"))?;
            let stdout = child.stdout.take().ok_or("ip monitor has no stdout")?;
            observers.monitors.push(child);
            let (host, out) = (host.clone(), observers.vip.clone());
            let needle = format!(" inet {VIP_IP}/");
            observers.threads.push(std::thread::spawn(move || {
                for line in std::io::BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let received = mono_ns();
                    if !line.contains(&needle) || !line.starts_with('[') {
                        continue;
                    }
                    let Some((stamp, rest)) = line[1..].split_once(']') else {
                        continue;
                    };
                    let t = parse_utc(stamp).map(|w| clock.mono(w)).unwrap_or(received);
                    let added = !rest.trim_start().starts_with("Deleted");
                    out.lock().expect("vip history").push(VipEvent {
                        host: host.clone(),
                        t,
                        received,
                        added,
                    });
                }
            }));
        }
        Ok(observers)
    }

    /// Starts the ARP prober and the neighbour monitor of the client host (namespace `netns`).
    pub fn watch_client_arp(&mut self, netns: &str, clock: WallToMono) -> Result<(), String> {
        let (child, reader) = super::arp::start_neigh_monitor(netns, clock, self.neigh.clone())?;
        self.monitors.push(child);
        self.threads.push(reader);
        let prober = super::arp::start_prober(
            netns,
            self.stop.clone(),
            self.arp.clone(),
            self.arp_sent.clone(),
        )?;
        self.threads.push(prober);
        Ok(())
    }

    /// Starts a write prober inside `netns` against `ip`, recording as host `host`.
    pub fn probe_writes(&mut self, host: &str, netns: &str, ip: &'static str) {
        let (stop, out, host) = (self.stop.clone(), self.probes.clone(), host.to_string());
        self.threads
            .push(super::super::netns::spawn_in(netns, move || async move {
                let timeout = Duration::from_millis(400);
                while !stop.load(Ordering::Relaxed) {
                    let start = mono_ns();
                    let result = async {
                        let mut conn = connect(ip, timeout).await?;
                        let insert =
                            conn.query_drop("INSERT INTO tb.probe (srv) VALUES (@@server_id)");
                        let outcome = match tokio::time::timeout(timeout, insert).await {
                            Ok(Ok(())) => Ok(()),
                            Ok(Err(e)) => Err(short(e)),
                            Err(_) => Err("INSERT timed out".to_string()),
                        };
                        let end = mono_ns();
                        let _ = tokio::time::timeout(timeout, conn.disconnect()).await;
                        outcome.map(|()| end)
                    }
                    .await;
                    let (end, ok, error) = match result {
                        Ok(end) => (end, true, None),
                        Err(e) => (mono_ns(), false, Some(e)),
                    };
                    out.lock().expect("probe history").push(Probe {
                        host: host.clone(),
                        start,
                        end,
                        ok,
                        error,
                    });
                    let next = start + 100_000_000;
                    let now = mono_ns();
                    if next > now {
                        tokio::time::sleep(Duration::from_nanos(next - now)).await;
                    }
                }
            }));
    }

    /// Starts the client inside `netns`: sequence numbers through the VIP.
    pub fn client(&mut self, netns: &str) {
        let (stop, out) = (self.stop.clone(), self.writes.clone());
        self.threads
            .push(super::super::netns::spawn_in(netns, move || async move {
                let timeout = Duration::from_millis(1000);
                // A short connect timeout: while the VIP moves, a SYN to a host that no longer
                // has the address is dropped silently, and a long wait would blur the timings.
                let connect_timeout = Duration::from_millis(300);
                let mut conn: Option<mysql_async::Conn> = None;
                let mut n: u64 = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let start = mono_ns();
                    let (outcome, error) = write_once(n, connect_timeout, timeout, &mut conn).await;
                    out.lock().expect("write history").push(Write {
                        n,
                        start,
                        end: mono_ns(),
                        outcome,
                        error,
                    });
                    let next = start + 20_000_000;
                    let now = mono_ns();
                    if next > now {
                        tokio::time::sleep(Duration::from_nanos(next - now)).await;
                    }
                }
                if let Some(c) = conn {
                    let _ = tokio::time::timeout(timeout, c.disconnect()).await;
                }
            }));
    }

    /// Starts the status poller inside `netns`, asking `endpoint`.
    pub fn poll_status(&mut self, netns: &str, endpoint: &str, offset_ms: u64) {
        let (stop, out, endpoint) = (self.stop.clone(), self.status.clone(), endpoint.to_string());
        self.threads
            .push(super::super::netns::spawn_in(netns, move || async move {
                let Ok(mut client) =
                    quorate::rpc::admin::AdminClient::new(&endpoint, Duration::from_millis(1000))
                else {
                    return;
                };
                tokio::time::sleep(Duration::from_millis(offset_ms)).await;
                while !stop.load(Ordering::Relaxed) {
                    let start = mono_ns();
                    if let Ok(status) = client.status().await {
                        let mut samples = out.lock().expect("status history");
                        samples.push(StatusSample {
                            t: mono_ns(),
                            status,
                        });
                        // Several pollers append; keep the history in time order.
                        samples.sort_by_key(|s| s.t);
                    }
                    let next = start + 200_000_000;
                    let now = mono_ns();
                    if next > now {
                        tokio::time::sleep(Duration::from_nanos(next - now)).await;
                    }
                }
            }));
    }

    /// Starts the mount sampler: `(host, holder pid, mount point)` per management host; the
    /// pids are shared so a host powered on again (a new holder) is followed.
    pub fn sample_mounts(&mut self, hosts: Arc<Mutex<Vec<(String, u32, PathBuf)>>>) {
        let (stop, out) = (self.stop.clone(), self.mounts.clone());
        self.threads.push(std::thread::spawn(move || {
            let mut last: Vec<bool> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let hosts = hosts.lock().expect("mount sampler hosts").clone();
                last.resize(hosts.len(), false);
                for (i, (host, pid, at)) in hosts.iter().enumerate() {
                    let text = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
                        .unwrap_or_default();
                    let mounted = quorate::resources::filesystem::parse_mountinfo(&text)
                        .iter()
                        .any(|m| m.mount_point == *at && m.read_write && m.fstype == "ext4");
                    if mounted != last[i] {
                        last[i] = mounted;
                        out.lock()
                            .expect("mount history")
                            .push((host.clone(), mono_ns(), mounted));
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }));
    }

    /// Stops every observer and waits for them.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for child in &mut self.monitors {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.monitors.clear();
        for thread in self.threads.drain(..) {
            if let Err(panic) = thread.join() {
                eprintln!("testbed: an observer panicked: {panic:?}");
            }
        }
    }

    /// A copy of a history.
    pub fn snapshot<T: Clone>(history: &Shared<T>) -> Vec<T> {
        history.lock().expect("history").clone()
    }
}

impl Drop for Observers {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One write of the client: reuses the connection in `keep` or connects, then INSERTs `n`.
/// A connection is kept only after a success; any failure drops it.
async fn write_once(
    n: u64,
    connect_timeout: Duration,
    timeout: Duration,
    keep: &mut Option<mysql_async::Conn>,
) -> (Outcome, Option<String>) {
    let mut conn = match keep.take() {
        Some(conn) => conn,
        None => match connect(VIP_IP, connect_timeout).await {
            Ok(conn) => conn,
            Err(e) => return (Outcome::Failed, Some(format!("connect: {e}"))),
        },
    };
    let sql = format!("INSERT INTO tb.seq (n, srv) VALUES ({n}, @@server_id)");
    match tokio::time::timeout(timeout, conn.query_drop(sql)).await {
        Ok(Ok(())) => {
            *keep = Some(conn);
            (Outcome::Ok, None)
        }
        Ok(Err(mysql_async::Error::Server(e))) => (Outcome::Failed, Some(short(e))),
        Ok(Err(e)) => (Outcome::Unknown, Some(short(e))),
        Err(_) => (
            Outcome::Unknown,
            Some(format!("INSERT timed out after {timeout:?}")),
        ),
    }
}

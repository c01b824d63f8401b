//! The end of a scenario: read back what the client wrote, stop the observers, tear the
//! testbed down, run every checker on the histories, save them in the run directory, and
//! report the timings of each failover. Teardown also runs from `Drop`, so a panicking test
//! leaves nothing behind either; it then verifies that nothing is left.

use super::arp_checks;
use super::checks::{self, EpochEvent, Outcome};
use super::history::mono_ns;
use super::nodes::{node_of_server, server_id, VIP_IP};
use super::observe::{Observers, StatusSample};
use super::saved::{self, SavedRun, Scenario};
use super::Testbed;
use mysql_async::prelude::Queryable;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

pub use super::saved::{Expect, Failover};

/// Timings of one failover, in milliseconds after the fault.
#[derive(Clone, Debug, Default)]
pub struct Timing {
    /// A leader that the fault did not silence (its election time from its `leader:` log
    /// lines, or the witness's status, whichever came first).
    pub leader_ms: Option<f64>,
    /// The new owner was granted ownership (the leader's `ownership granted` line, or the
    /// witness's status, whichever came first).
    pub owner_ms: Option<f64>,
    /// The VIP appeared on the new owner (the last resource of the group).
    pub vip_up_ms: Option<f64>,
    /// The witness's status showed every resource running on the new owner.
    pub status_up_ms: Option<f64>,
    /// The first acknowledged write through the VIP stored by the new owner's server.
    pub first_write_ms: Option<f64>,
    /// The first ARP probe from `c` the new owner answered.
    pub arp_reply_ms: Option<f64>,
    /// `c`'s neighbour entry for the VIP held the new owner's MAC.
    pub neigh_ms: Option<f64>,
    /// The same, counted from the VIP coming up on the new owner.
    pub neigh_after_vip_ms: Option<f64>,
}

/// The outcome of a scenario.
#[derive(Debug, Default)]
pub struct Report {
    /// Timings per failover, in the order they happened.
    pub timings: Vec<(String, Timing)>,
    /// Violations found by the checkers (empty when the scenario passed).
    pub violations: Vec<String>,
    /// Things worth knowing that are no violation.
    pub notes: Vec<String>,
    /// Client writes by outcome: (ok, failed, unknown).
    pub writes: (usize, usize, usize),
}

fn ms(from: u64, to: Option<u64>) -> Option<f64> {
    to.map(|t| (t as f64 - from as f64) / 1e6)
}

impl Testbed {
    /// Copies every history (call after the observers stopped); the ledger's read error, if
    /// any, comes separately.
    fn collect(&self, expect: Option<Expect>) -> (SavedRun, Vec<StatusSample>, Option<String>) {
        let (vip, probes, writes, status, mounts, arp, neigh, sent) = match &self.obs {
            Some(obs) => (
                Observers::snapshot(&obs.vip),
                Observers::snapshot(&obs.probes),
                Observers::snapshot(&obs.writes),
                Observers::snapshot(&obs.status),
                Observers::snapshot(&obs.mounts),
                Observers::snapshot(&obs.arp),
                Observers::snapshot(&obs.neigh),
                obs.arp_sent.load(std::sync::atomic::Ordering::Relaxed),
            ),
            None => Default::default(),
        };
        let (ledger, ledger_error) = match self.disk.as_ref().map(|d| d.ledger()) {
            Some(Ok(ledger)) => (ledger, None),
            Some(Err(e)) => (Vec::new(), Some(e)),
            None => (Vec::new(), None),
        };
        let run = SavedRun {
            scenario: Scenario {
                name: self.name.clone(),
                seed: self.run.seed,
                expect,
                failovers: self.failovers.clone(),
                macs: self.macs.clone(),
                arp_probes_sent: sent,
            },
            vip,
            arp,
            neigh,
            probes,
            writes,
            mounts,
            ledger,
            epochs: self.epoch_events(),
            present: None,
        };
        (run, status, ledger_error)
    }

    /// Writes every history into the run directory (the stand-in's ledger is there already).
    fn save(&mut self, run: &SavedRun, status: &[StatusSample]) {
        self.saved = true;
        if let Err(e) = run.write(&self.run.path) {
            eprintln!("testbed: {e}");
        }
        self.run.write("status.jsonl", &saved::jsonl(status));
    }

    /// Reads `n -> server id` of every row in `tb.seq` through the VIP, from the client host.
    fn read_back(&self) -> Result<BTreeMap<u64, u32>, String> {
        let netns = self.host("c").netns.clone();
        super::super::netns::run_in(&netns, || async move {
            let opts = mysql_async::OptsBuilder::default()
                .ip_or_hostname(VIP_IP)
                .tcp_port(3306)
                .user(Some(super::disk::DB_USER))
                .pass(Some(super::disk::DB_PASSWORD))
                .prefer_socket(false);
            let read = async {
                let mut conn = mysql_async::Conn::new(opts).await?;
                let rows: Vec<(u64, u32)> = conn.query("SELECT n, srv FROM tb.seq").await?;
                let _ = conn.disconnect().await;
                Ok::<_, mysql_async::Error>(rows.into_iter().collect())
            };
            match tokio::time::timeout(Duration::from_secs(10), read).await {
                Ok(Ok(map)) => Ok(map),
                Ok(Err(e)) => Err(format!("reading tb.seq through the VIP: {e}")),
                Err(_) => Err("reading tb.seq through the VIP timed out".to_string()),
            }
        })
    }

    /// `ownership granted` lines of every arbiter's log: (monotonic time, node name).
    fn grants(&self) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        for node in ["a", "b", "w"] {
            let text =
                std::fs::read_to_string(self.run.join(&format!("{node}.log"))).unwrap_or_default();
            for line in text.lines().filter(|l| l.contains("ownership granted")) {
                let wall = line
                    .split_whitespace()
                    .next()
                    .and_then(super::history::parse_utc);
                let id: Option<u64> = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("node="))
                    .and_then(|v| v.parse().ok());
                let name = id
                    .and_then(|id| super::nodes::MEMBERS.iter().find(|m| m.0 == id))
                    .map(|m| m.1);
                if let (Some(wall), Some(name)) = (wall, name) {
                    out.push((self.run.clock.mono(wall), name.to_string()));
                }
            }
        }
        out
    }

    /// Leaderships from the arbiters' logs: every `leader: ...` decision line carries
    /// `elected_ms_ago`, so (monotonic election time, node) for each line.
    fn elections(&self) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        for node in ["a", "b", "w"] {
            let text =
                std::fs::read_to_string(self.run.join(&format!("{node}.log"))).unwrap_or_default();
            for line in text.lines().filter(|l| l.contains(" leader: ")) {
                let wall = line
                    .split_whitespace()
                    .next()
                    .and_then(super::history::parse_utc);
                let ago: Option<u64> = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("elected_ms_ago="))
                    .and_then(|v| v.parse().ok());
                if let (Some(wall), Some(ago)) = (wall, ago) {
                    let t = self.run.clock.mono(wall).saturating_sub(ago * 1_000_000);
                    out.push((t, node.to_string()));
                }
            }
        }
        out
    }

    /// Epoch-carrying resource actions from the management nodes' logs.
    fn epoch_events(&self) -> Vec<EpochEvent> {
        let mut events = Vec::new();
        for node in ["a", "b"] {
            let text =
                std::fs::read_to_string(self.run.join(&format!("{node}.log"))).unwrap_or_default();
            for line in text.lines() {
                if let Some((wall, action, epoch)) = checks::parse_action_line(line) {
                    events.push(EpochEvent {
                        t: self.run.clock.mono(wall),
                        node: node.to_string(),
                        epoch,
                        action: action.to_string(),
                    });
                }
            }
        }
        events
    }

    /// Ends the scenario: reads the writes back, tears down, runs every checker, saves the
    /// histories, prints the timings and panics on any violation.
    pub fn finish(&mut self, expect: Expect) -> Report {
        let mut report = Report::default();
        let present = if expect.read_back {
            // The client keeps writing while this reads; stop it first so nothing is missed.
            if let Some(obs) = self.obs.as_mut() {
                obs.stop();
            }
            match self.read_back() {
                Ok(map) => Some(map),
                Err(e) => {
                    // The `writes` checker reports the missing read-back; this says why.
                    report.notes.push(e);
                    None
                }
            }
        } else {
            None
        };
        self.run.step("scenario over: tearing down");
        let teardown = self.teardown();
        report.violations.extend(teardown);
        let (mut saved_run, status, ledger_error) = self.collect(Some(expect));
        saved_run.present = present.clone();
        self.save(&saved_run, &status);
        report.violations.extend(ledger_error);
        // The same verdicts `examples/testbed_recheck.rs` gives on the saved run directory.
        for verdict in saved::check_run(&saved_run) {
            report.violations.extend(verdict.violations);
            report.notes.extend(verdict.notes);
        }
        if let Some(disk) = &self.disk {
            if let Err(e) = disk.fsck() {
                report
                    .violations
                    .push(format!("e2fsck -fn is not clean: {e}"));
            }
        }
        let SavedRun {
            vip,
            arp,
            neigh,
            writes,
            scenario,
            ..
        } = saved_run;
        let count = |o: Outcome| writes.iter().filter(|w| w.outcome == o).count();
        report.writes = (
            count(Outcome::Ok),
            count(Outcome::Failed),
            count(Outcome::Unknown),
        );

        let grants = self.grants();
        let elections = self.elections();
        for (i, failover) in self.failovers.iter().enumerate() {
            let t0 = failover.fault_at;
            let since = failover.since;
            // A failover's phases are looked for up to the next fault only: in a run with
            // several faults, a later failover's events must not be credited to this one.
            let until = self
                .failovers
                .get(i + 1)
                .map_or(u64::MAX, |next| next.since);
            let within = |t: u64| t >= since && t < until;
            let after = status.iter().filter(|s| within(s.t));
            // A new owner means a new epoch: the one in force at the fault does not count.
            let epoch_before = status
                .iter()
                .filter(|s| s.t <= t0)
                .map(|s| s.status.epoch)
                .next_back()
                .unwrap_or(0);
            let earliest = |a: Option<u64>, b: Option<u64>| match (a, b) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            // Only a fault that silenced a host can cost the cluster its leader.
            let leader = if failover.down.is_empty() {
                None
            } else {
                let alive = |l: &String| !failover.down.contains(l);
                earliest(
                    after
                        .clone()
                        .find(|s| s.status.leader.as_ref().is_some_and(alive))
                        .map(|s| s.t),
                    elections
                        .iter()
                        .filter(|(t, node)| within(*t) && alive(node))
                        .map(|(t, _)| *t)
                        .min(),
                )
            };
            let owner = earliest(
                grants
                    .iter()
                    .filter(|(t, node)| within(*t) && *node == failover.to)
                    .map(|(t, _)| *t)
                    .min(),
                after
                    .clone()
                    .find(|s| {
                        s.status.owner.as_deref() == Some(&failover.to)
                            && !s.status.released
                            && s.status.epoch > epoch_before
                    })
                    .map(|s| s.t),
            );
            let mut timing = Timing {
                leader_ms: ms(t0, leader),
                owner_ms: ms(t0, owner),
                vip_up_ms: ms(
                    t0,
                    vip.iter()
                        .filter(|e| within(e.t) && e.added && e.host == failover.to)
                        .map(|e| e.t)
                        .min(),
                ),
                status_up_ms: ms(
                    t0,
                    after
                        .clone()
                        .find(|s| s.running_on(&failover.to))
                        .map(|s| s.t),
                ),
                first_write_ms: None,
                ..Timing::default()
            };
            if let Some(present) = &present {
                timing.first_write_ms = ms(
                    t0,
                    writes
                        .iter()
                        .filter(|w| within(w.start) && w.outcome == Outcome::Ok)
                        .find(|w| present.get(&w.n).copied() == Some(server_id(&failover.to)))
                        .map(|w| w.end),
                );
            }
            let follow = arp_checks::follow(failover, &vip, &arp, &neigh, &writes, &scenario.macs);
            timing.arp_reply_ms = ms(t0, follow.reply);
            timing.neigh_ms = ms(t0, follow.neigh);
            timing.neigh_after_vip_ms = follow.vip_up.and(follow.neigh_ms());
            report.timings.push((failover.what.clone(), timing));
        }

        if let Some(present) = &present {
            let rows: Vec<(u64, &str)> = present
                .iter()
                .map(|(n, s)| (*n, node_of_server(*s).unwrap_or("?")))
                .collect();
            self.run.write(
                "rows.json",
                &serde_json::to_string(&rows).unwrap_or_default(),
            );
        }
        let text = self.render(&report);
        self.run.write("report.txt", &text);
        print!("{text}");
        if !report.violations.is_empty() {
            panic!(
                "{}: {} violation(s); run kept in {}:\n{}",
                self.name,
                report.violations.len(),
                self.run.path.display(),
                report.violations.join("\n")
            );
        }
        self.passed = true;
        report
    }

    fn render(&self, report: &Report) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "testbed {}: seed {}", self.name, self.run.seed);
        let (ok, failed, unknown) = report.writes;
        let _ = writeln!(
            out,
            "  client writes: {ok} ok, {failed} failed, {unknown} unknown"
        );
        for (what, t) in &report.timings {
            let f = |v: Option<f64>| {
                v.map(|v| format!("{v:.0} ms"))
                    .unwrap_or_else(|| "-".into())
            };
            let _ = writeln!(
                out,
                "MEASURE {} / {what}: leader {}, owner granted {}, VIP up {}, status all running {}, first write on new owner {}, ARP probe answered by new owner {}, client neighbour entry on new owner {} ({} after VIP up)",
                self.name,
                f(t.leader_ms),
                f(t.owner_ms),
                f(t.vip_up_ms),
                f(t.status_up_ms),
                f(t.first_write_ms),
                f(t.arp_reply_ms),
                f(t.neigh_ms),
                f(t.neigh_after_vip_ms)
            );
        }
        for note in &report.notes {
            let _ = writeln!(out, "  note: {note}");
        }
        for v in &report.violations {
            let _ = writeln!(out, "  VIOLATION: {v}");
        }
        out
    }

    /// Kills every host, detaches the image, deletes namespaces and cgroups, and verifies that
    /// nothing is left. Runs once; returns the problems.
    pub(super) fn teardown(&mut self) -> Vec<String> {
        if self.torn_down {
            return Vec::new();
        }
        self.torn_down = true;
        let started = mono_ns();
        let mut problems = Vec::new();
        if let Some(obs) = self.obs.as_mut() {
            obs.stop();
        }
        for host in self.hosts.values_mut() {
            problems.extend(host.destroy());
        }
        for daemon in self.daemons.values_mut() {
            let _ = daemon.child.kill();
            let _ = daemon.child.wait();
        }
        if let Some(parent) = &self.cgroup_parent {
            if parent.exists() {
                if let Err(e) = std::fs::remove_dir(parent) {
                    problems.push(format!("cannot remove cgroup {}: {e}", parent.display()));
                }
            }
        }
        if let Some(disk) = &self.disk {
            problems.extend(disk.detach_all());
        }
        let prefix = self
            .net
            .as_ref()
            .map(|n| n.switch.trim_end_matches("sw").to_string());
        drop(self.net.take());

        // Verify.
        if let Some(prefix) = prefix {
            let list = super::disk::run("ip", &["netns", "list"]).unwrap_or_default();
            for line in list.lines().filter(|l| l.starts_with(&prefix)) {
                problems.push(format!("namespace left behind: {line}"));
            }
        }
        if self.cgroup_parent.as_ref().is_some_and(|p| p.exists()) {
            problems.push("cgroup directory left behind".into());
        }
        if let Some(disk) = &self.disk {
            let left = disk.loop_devices();
            if !left.is_empty() {
                problems.push(format!("loop devices left attached: {left:?}"));
            }
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let run = self.run.path.to_string_lossy().into_owned();
        for line in mounts.lines().filter(|l| l.contains(&run)) {
            problems.push(format!("mount left behind: {line}"));
        }
        self.run.step(&format!(
            "torn down in {:.0} ms{}",
            (mono_ns() - started) as f64 / 1e6,
            if problems.is_empty() {
                ""
            } else {
                " WITH PROBLEMS"
            }
        ));
        problems
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        let problems = self.teardown();
        if !self.saved {
            let (run, status, _) = self.collect(None);
            self.save(&run, &status);
        }
        let keep = std::env::var_os("QUORATE_TESTBED_KEEP").is_some();
        if self.passed && problems.is_empty() && !keep {
            if let Err(e) = std::fs::remove_dir_all(&self.run.path) {
                eprintln!("testbed: cannot remove {}: {e}", self.run.path.display());
            }
        } else {
            if std::env::var_os("QUORATE_TESTBED_KEEP_IMAGE").is_none() {
                if let Some(disk) = &self.disk {
                    let _ = std::fs::remove_file(disk.image());
                }
            }
            eprintln!("testbed: run kept in {}", self.run.path.display());
        }
        if !problems.is_empty() {
            let text = format!(
                "{}: teardown left things behind:\n{}",
                self.name,
                problems.join("\n")
            );
            if std::thread::panicking() {
                eprintln!("{text}");
            } else {
                panic!("{text}");
            }
        }
    }
}

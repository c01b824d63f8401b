//! Where the time of one failover goes: each phase of the takeover, measured from the fault on
//! the run's one monotonic clock, for the failover benchmark (`benches/failover.rs`).
//!
//! Sources, each the most direct witness of its phase:
//! - **leader**: the first leader other than the silenced hosts, from the arbiters' `leader:`
//!   decision lines (`elected_ms_ago`) or the witness's status, whichever is earlier; only when
//!   the fault took the leader down (otherwise no election was needed);
//! - **released** (planned switchover): the old owner's `group stopped` line;
//! - **granted**: the leader's `ownership granted` line for the new owner;
//! - **DRBD Primary**: the stand-in's ledger (it stamps role changes with the monotonic clock);
//! - **mounted** and **MySQL ready**: the new owner's `mounted` and `mysqld answers` lines;
//! - **VIP up**: `ip -ts monitor address` in the new owner's namespace;
//! - **first write**: the end of the first acknowledged client write through the VIP that the
//!   new owner's server stored (read back after the run); for a switchover also the **write
//!   gap**: from the last acknowledged write the old owner stored to that first one.
//!
//! Log lines carry wall-clock stamps, mapped onto the monotonic clock with the offset measured
//! when the run started. Call [`Testbed::phases`] after [`Testbed::finish`], which stops the
//! observers and saves the read-back rows.

use super::checks::Outcome;
use super::nodes::MEMBERS;
use super::observe::Observers;
use super::Testbed;
use std::collections::BTreeMap;

/// The phases of one failover in milliseconds after the fault (`None`: did not happen).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Phases {
    /// The leader at the moment of the fault.
    pub leader_before: Option<String>,
    /// Whether the fault silenced the leader (so an election was needed).
    pub leader_lost: bool,
    /// A live leader again (only when `leader_lost`).
    pub leader_ms: Option<f64>,
    /// The old owner stopped its group (planned switchover only).
    pub released_ms: Option<f64>,
    /// The leader granted the group to the new owner.
    pub granted_ms: Option<f64>,
    /// The new owner's DRBD (stand-in) became Primary.
    pub drbd_primary_ms: Option<f64>,
    /// The new owner mounted the filesystem.
    pub mounted_ms: Option<f64>,
    /// The new owner's MySQL accepted a login and answered `SELECT 1`.
    pub mysql_ready_ms: Option<f64>,
    /// The VIP appeared on the new owner.
    pub vip_up_ms: Option<f64>,
    /// The first acknowledged write through the VIP stored by the new owner.
    pub first_write_ms: Option<f64>,
    /// The last acknowledged write stored by the old owner (may be before the fault).
    pub last_old_write_ms: Option<f64>,
    /// From the last acknowledged write on the old owner to the first on the new one.
    pub write_gap_ms: Option<f64>,
}

fn ms(from: u64, to: Option<u64>) -> Option<f64> {
    to.map(|t| (t as f64 - from as f64) / 1e6)
}

fn earliest(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A field `name=value` of a log line.
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let prefix = format!("{name}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(prefix.as_str()))
}

impl Testbed {
    /// Lines of `node`'s log with their monotonic time.
    fn log_lines(&self, node: &str) -> Vec<(u64, String)> {
        let text =
            std::fs::read_to_string(self.run.join(&format!("{node}.log"))).unwrap_or_default();
        text.lines()
            .filter_map(|line| {
                let wall = line
                    .split_whitespace()
                    .next()
                    .and_then(super::history::parse_utc)?;
                Some((self.run.clock.mono(wall), line.to_string()))
            })
            .collect()
    }

    /// The first line of `node`'s log at or after `since` containing every one of `needles`.
    fn first_line(&self, node: &str, since: u64, needles: &[&str]) -> Option<u64> {
        self.log_lines(node)
            .into_iter()
            .find(|(t, line)| *t >= since && needles.iter().all(|n| line.contains(n)))
            .map(|(t, _)| t)
    }

    /// The phases of the failover from `from` to `to` whose fault took effect at `fault_at`;
    /// `down` are the hosts the fault silenced.
    pub fn phases(&self, fault_at: u64, from: &str, to: &str, down: &[&str]) -> Phases {
        let obs = self.obs.as_ref().expect("observers");
        let status = Observers::snapshot(&obs.status);
        let leader_before = status
            .iter()
            .filter(|s| s.t <= fault_at)
            .filter_map(|s| s.status.leader.clone())
            .next_back();
        let leader_lost = leader_before.as_deref().is_some_and(|l| down.contains(&l));
        let leader = if leader_lost {
            let alive = |name: &str| !down.contains(&name);
            let sampled = status
                .iter()
                .filter(|s| s.t >= fault_at)
                .find(|s| s.status.leader.as_deref().is_some_and(alive))
                .map(|s| s.t);
            let logged = ["a", "b", "w"]
                .into_iter()
                .filter(|n| alive(n))
                .flat_map(|node| {
                    self.log_lines(node)
                        .into_iter()
                        .filter(|(_, line)| line.contains(" leader: "))
                        .filter_map(|(t, line)| {
                            let ago: u64 = field(&line, "elected_ms_ago")?.parse().ok()?;
                            Some(t.saturating_sub(ago * 1_000_000))
                        })
                        .filter(|t| *t >= fault_at)
                        .collect::<Vec<_>>()
                })
                .min();
            earliest(sampled, logged)
        } else {
            None
        };
        let to_id = MEMBERS
            .iter()
            .find(|m| m.1 == to)
            .map(|m| m.0.to_string())
            .unwrap_or_default();
        let grant_needle = format!("node={to_id} ");
        let granted = ["a", "b", "w"]
            .into_iter()
            .filter_map(|node| {
                self.first_line(node, fault_at, &[" ownership granted ", &grant_needle])
            })
            .min();
        let released = self.first_line(from, fault_at, &[" group stopped "]);
        let drbd = self
            .disk
            .as_ref()
            .and_then(|d| d.ledger().ok())
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.t_ns >= fault_at && c.node == to && c.role == "Primary")
            .map(|c| c.t_ns);
        let mounted = self.first_line(to, fault_at, &[" mounted ", "resource=fs"]);
        let mysql = self.first_line(to, fault_at, &[" mysqld answers "]);
        let vip = Observers::snapshot(&obs.vip)
            .into_iter()
            .filter(|e| e.t >= fault_at && e.added && e.host == to)
            .map(|e| e.t)
            .min();

        let rows: BTreeMap<u64, String> = std::fs::read_to_string(self.run.join("rows.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<Vec<(u64, String)>>(&t).ok())
            .unwrap_or_default()
            .into_iter()
            .collect();
        let mut acked: Vec<(u64, String)> = Observers::snapshot(&obs.writes)
            .into_iter()
            .filter(|w| w.outcome == Outcome::Ok)
            .filter_map(|w| rows.get(&w.n).map(|node| (w.end, node.clone())))
            .collect();
        acked.sort();
        let first_new = acked
            .iter()
            .find(|(end, node)| *end >= fault_at && node == to)
            .map(|(end, _)| *end);
        let last_old = first_new.and_then(|first| {
            acked
                .iter()
                .filter(|(end, node)| *end < first && node == from)
                .map(|(end, _)| *end)
                .next_back()
        });
        Phases {
            leader_before,
            leader_lost,
            leader_ms: ms(fault_at, leader),
            released_ms: ms(fault_at, released),
            granted_ms: ms(fault_at, granted),
            drbd_primary_ms: ms(fault_at, drbd),
            mounted_ms: ms(fault_at, mounted),
            mysql_ready_ms: ms(fault_at, mysql),
            vip_up_ms: ms(fault_at, vip),
            first_write_ms: ms(fault_at, first_new),
            last_old_write_ms: ms(fault_at, last_old),
            write_gap_ms: match (first_new, last_old) {
                (Some(new), Some(old)) => Some((new as f64 - old as f64) / 1e6),
                _ => None,
            },
        }
    }
}

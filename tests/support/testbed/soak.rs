//! Driving the soak: inject one planned fault (see `schedule.rs`) against whoever owns the
//! group at that moment, wait for the outcome quorate promises for it, undo the fault (power
//! the host on, heal the partition, SIGCONT the agent, bring the witness back), and wait until
//! the cluster has settled: every member reachable, one node running the whole group, a write
//! acknowledged through the VIP. The next fault is injected only on a settled cluster, so the
//! expected outcome of each one is known and a wrong one fails the soak at once with the run
//! directory kept; the checkers then judge the whole history at the end.

use super::history::mono_ns;
use super::schedule::{FaultKind, PlannedFault};
use super::Testbed;
use nix::sys::signal::Signal;
use std::time::Duration;

/// How long one fault may take to reach its expected outcome.
const OUTCOME: Duration = Duration::from_secs(30);
/// How long the cluster may take to settle after a fault was undone.
const SETTLE: Duration = Duration::from_secs(30);

/// What one fault did.
#[derive(Clone, Debug)]
pub struct FaultOutcome {
    /// The owner before the fault.
    pub owner_before: String,
    /// The owner once the cluster settled.
    pub owner_after: String,
    /// When the fault took effect (monotonic ns).
    pub at: u64,
    /// When the cluster had settled again (monotonic ns).
    pub settled: u64,
}

impl FaultOutcome {
    /// Whether the group moved to the other node.
    pub fn moved(&self) -> bool {
        self.owner_before != self.owner_after
    }
}

impl Testbed {
    /// Waits until a status sample taken after this call shows every member reachable and one
    /// node running the whole group, and a write through the VIP was acknowledged after that
    /// sample; returns the owner.
    pub fn settle(&self, timeout: Duration) -> String {
        let since = mono_ns();
        let (owner, seen) = self.wait_for(
            "every member reachable and one node running the group",
            timeout,
            |bed| {
                let sample = bed.latest_status()?;
                let owner = sample.status.owner.clone()?;
                (sample.t > since
                    && sample.status.members.iter().all(|m| m.reachable)
                    && sample.running_on(&owner))
                .then_some((owner, sample.t))
            },
        );
        self.wait_for("an acknowledged write once settled", timeout, |bed| {
            (bed.acked_since(seen) >= 1).then_some(())
        });
        self.run.step(&format!(
            "settled: {owner} runs the group, all members reachable"
        ));
        owner
    }

    /// Injects `fault` against `owner` (the current owner of a settled cluster), waits for the
    /// outcome quorate promises, undoes the fault and waits until the cluster settled again.
    /// Failovers and recoveries are recorded for the timing report.
    pub fn soak_fault(&mut self, fault: &PlannedFault, owner: &str) -> FaultOutcome {
        let other = Testbed::other(owner);
        let hold = Duration::from_millis(fault.hold_ms);
        let at = match fault.kind {
            FaultKind::PowerCycle => {
                let at = self.power_off(owner);
                self.wait_failover(
                    &format!("power-off of {owner}"),
                    at,
                    &[owner],
                    other,
                    OUTCOME,
                );
                self.hold(hold);
                self.power_on(owner);
                self.wait_rejoined(owner, other, SETTLE);
                at
            }
            FaultKind::Isolate => {
                let at = self.isolate(owner);
                self.wait_failover(
                    &format!("isolation of {owner}"),
                    at,
                    &[owner],
                    other,
                    OUTCOME,
                );
                self.hold(hold);
                self.heal(&[owner]);
                self.wait_rejoined(owner, other, SETTLE);
                at
            }
            FaultKind::RaftCut => {
                let at = self.raft_cut(owner);
                self.wait_failover(
                    &format!("Raft-port cut of {owner}"),
                    at,
                    &[owner],
                    other,
                    OUTCOME,
                );
                self.hold(hold);
                self.heal(&[]);
                self.wait_rejoined(owner, other, SETTLE);
                at
            }
            FaultKind::AgentPause => {
                let at = self.signal_daemon(owner, Signal::SIGSTOP);
                // The guard must drop the VIP once the lease is over, while the agent sleeps.
                let gone = self.wait_vip_gone(owner, at, Duration::from_secs(10));
                self.hold(hold);
                let cont = self.signal_daemon(owner, Signal::SIGCONT);
                self.wait_group_back(&format!("agent of {owner} paused"), at, gone, cont, owner);
                at
            }
            FaultKind::MysqldKill => {
                let at = self.kill_mysqld(owner);
                self.wait_recovered(&format!("mysqld crash on {owner}"), at, owner, OUTCOME);
                at
            }
            FaultKind::Switchover => {
                let at = self.run.step(&format!("switchover to {other} requested"));
                let (ok, out) =
                    self.quoratectl("c", &["switchover", "--to", other, "--reason", "soak"]);
                assert!(ok, "{}: switchover to {other} failed: {out}", self.name);
                self.wait_failover(&format!("switchover to {other}"), at, &[], other, OUTCOME);
                at
            }
            FaultKind::WitnessLoss => {
                let at = self.power_off("w");
                // The two management nodes are a majority: writes keep flowing on the owner.
                self.wait_for(
                    "writes acknowledged 2 s after the witness went",
                    OUTCOME,
                    |bed| (bed.acked_since(at + 2_000_000_000) > 0).then_some(()),
                );
                let left = hold.saturating_sub(Duration::from_nanos(mono_ns() - at));
                self.hold(left);
                self.power_on("w");
                self.wait_rejoined("w", owner, SETTLE);
                at
            }
        };
        let owner_after = self.settle(SETTLE);
        if fault.kind == FaultKind::WitnessLoss || fault.kind == FaultKind::MysqldKill {
            assert_eq!(
                owner_after, owner,
                "{}: the group moved after `{}`, which must leave it where it was",
                self.name, fault.kind
            );
        }
        FaultOutcome {
            owner_before: owner.to_string(),
            owner_after,
            at,
            settled: mono_ns(),
        }
    }

    /// After the owner `paused` was stopped past its lease (its guard dropped the VIP at
    /// `gone`) and resumed at `cont`: waits until a node runs the whole group again with the
    /// VIP added after `gone`, and a write through the VIP succeeded after that. Either node
    /// may end up with the group: the other one under a new epoch if the leader moved it before
    /// the paused agent resumed, or the paused one itself, which fenced on waking and, its
    /// epoch still committed, renewed its lease and started the group again. Records the
    /// failover (fault at `at`) and returns the node.
    pub fn wait_group_back(
        &mut self,
        what: &str,
        at: u64,
        gone: u64,
        cont: u64,
        paused: &str,
    ) -> String {
        let epoch_before = self
            .obs()
            .status
            .lock()
            .expect("status")
            .iter()
            .filter(|s| s.t <= at)
            .map(|s| s.status.epoch)
            .next_back()
            .unwrap_or(0);
        let (owner, epoch, up) = self.wait_for("the group running again", OUTCOME, |bed| {
            let vip_back: Vec<(String, u64)> = bed
                .obs()
                .vip
                .lock()
                .expect("vip")
                .iter()
                .filter(|e| e.added && e.t >= gone)
                .map(|e| (e.host.clone(), e.t))
                .collect();
            let samples = bed.obs().status.lock().expect("status");
            samples.iter().find_map(|s| {
                let owner = s.status.owner.clone()?;
                let vip_up = vip_back.iter().any(|(h, t)| *h == owner && *t <= s.t);
                (s.t >= cont && vip_up && s.running_on(&owner)).then_some((
                    owner,
                    s.status.epoch,
                    s.t,
                ))
            })
        });
        self.wait_for("an acknowledged write after the restart", OUTCOME, |bed| {
            (bed.acked_since(up) >= 1).then_some(())
        });
        let how = if epoch > epoch_before {
            format!("under the new epoch {epoch}")
        } else {
            format!("under the same epoch {epoch}: it renewed before the leader moved the group")
        };
        self.run.step(&format!(
            "{what}: {owner} runs the group again {how}, writes flow"
        ));
        self.failovers.push(super::report::Failover {
            what: what.to_string(),
            fault_at: at,
            since: gone,
            down: vec![paused.to_string()],
            to: owner.clone(),
        });
        owner
    }

    /// Undoes every fault the soak may have left (partitions, unplugged cables, stopped
    /// agents, hosts powered off) and waits until the cluster settled; returns the owner.
    pub fn heal_everything(&mut self) -> String {
        for host in ["a", "b", "w"] {
            if self.host(host).holder_pid().is_none() {
                self.power_on(host);
            }
        }
        for host in ["a", "b", "w", "c"] {
            let _ = self.ip_sw_link_up(host);
        }
        for host in ["a", "b", "w"] {
            if let Some(daemon) = self.daemons.get(host) {
                let _ = daemon.signal(Signal::SIGCONT);
            }
        }
        self.heal(&["a", "b"]);
        self.settle(SETTLE)
    }

    /// Sets `host`'s switch port up (idempotent).
    fn ip_sw_link_up(&self, host: &str) -> Result<String, String> {
        let switch = self.net.as_ref().expect("network").switch.clone();
        super::disk::run(
            "ip",
            &["-n", &switch, "link", "set", &format!("p_{host}"), "up"],
        )
    }
}

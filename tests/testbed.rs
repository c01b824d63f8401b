//! Failure scenarios on the multi-host testbed (docs/TESTBED.md): real quorate binaries, a DRBD
//! stand-in, ext4 on a loop device, MariaDB and the VIP, in network namespaces joined by a
//! bridge on 198.18.0.0/24. Every scenario runs every checker (see `support/testbed/checks.rs`).
//!
//! Needs root, cgroup v2, nftables and MariaDB; outside CI a machine without them skips with the
//! reason printed, under CI (`CI` set) the tests fail. Run them with
//! `cargo test --test testbed -- --nocapture` to see the measured timings. A failed scenario
//! keeps its run directory under `target/testbed-runs/` (every scenario does with
//! `QUORATE_TESTBED_KEEP=1`); `cargo run --example testbed_recheck -- <run dir>` runs every
//! checker on it again.

mod support;

use std::time::Duration;
use support::testbed::nodes::{NodeOptions, FAST_TIMING};
use support::testbed::report::Expect;
use support::testbed::Testbed;

const STEADY: Duration = Duration::from_secs(40);
const FAILOVER: Duration = Duration::from_secs(30);

/// `quoratectl switchover --to <other>` (run inside `c`, asking the witness): the owner stops
/// its group in order and releases, the other node starts it at once.
#[test]
fn planned_switchover() {
    let Some(mut bed) = Testbed::start("planned_switchover", Default::default()) else {
        return;
    };
    let owner = bed.wait_steady(STEADY);
    let target = Testbed::other(&owner);
    let at = bed.run.step(&format!("switchover to {target} requested"));
    let (ok, out) = bed.quoratectl("c", &["switchover", "--to", target, "--reason", "testbed"]);
    assert!(ok, "switchover failed: {out}");
    assert!(out.contains(&format!("{target} owns the group")), "{out}");
    bed.wait_failover("switchover", at, &[], target, FAILOVER);
    bed.finish(Expect {
        moves: 1,
        read_back: true,
    });
}

/// SIGTERM to the owner's agent: it stops its group in order and releases it, so the other
/// node takes over without waiting for the lease.
#[test]
fn owner_stopped_cleanly() {
    let Some(mut bed) = Testbed::start("owner_stopped_cleanly", Default::default()) else {
        return;
    };
    let owner = bed.wait_steady(STEADY);
    let target = Testbed::other(&owner);
    let at = bed.signal_daemon(&owner, nix::sys::signal::Signal::SIGTERM);
    bed.wait_daemon_exit(&owner, FAILOVER);
    bed.wait_failover("clean stop", at, &[&owner], target, FAILOVER);
    bed.finish(Expect {
        moves: 1,
        read_back: true,
    });
}

/// The owner's host loses power (cable and every process at once): after the lease and the
/// fence margin the other node takes over.
#[test]
fn owner_powered_off() {
    let Some(mut bed) = Testbed::start("owner_powered_off", Default::default()) else {
        return;
    };
    let owner = bed.wait_steady(STEADY);
    let target = Testbed::other(&owner);
    let at = bed.power_off(&owner);
    bed.wait_failover("power-off", at, &[&owner], target, FAILOVER);
    bed.finish(Expect {
        moves: 1,
        read_back: true,
    });
}

/// The owner is cut off from everyone, clients included (a symmetric partition in the switch):
/// it fences itself when its lease runs out and the other node takes over; after the partition
/// heals the old owner rejoins as a follower and takes nothing back.
#[test]
fn owner_isolated() {
    let Some(mut bed) = Testbed::start("owner_isolated", Default::default()) else {
        return;
    };
    let owner = bed.wait_steady(STEADY);
    let target = Testbed::other(&owner);
    let at = bed.isolate(&owner);
    bed.wait_failover("isolation", at, &[&owner], target, FAILOVER);
    bed.heal(&[&owner]);
    bed.wait_rejoined(&owner, target, FAILOVER);
    bed.finish(Expect {
        moves: 1,
        read_back: true,
    });
}

/// Only the arbiters' port is cut between the owner and the other two: clients and the
/// replication link still reach the old owner, which must stop accepting writes before the
/// other node starts.
#[test]
fn raft_port_cut() {
    raft_port_cut_with("raft_port_cut", NodeOptions::default());
}

/// The same cut under the fast timing profile (lease 1000 ms, fence margin 200 ms, election
/// timeouts 150-300 ms): the old owner, still reachable by clients, must have stopped writing
/// before the shorter wait ends.
#[test]
fn raft_port_cut_with_the_fast_timing() {
    raft_port_cut_with(
        "raft_port_cut_fast",
        NodeOptions {
            extra_config: FAST_TIMING.to_string(),
            ..NodeOptions::default()
        },
    );
}

fn raft_port_cut_with(name: &str, options: NodeOptions) {
    let Some(mut bed) = Testbed::start(name, options) else {
        return;
    };
    let owner = bed.wait_steady(STEADY);
    let target = Testbed::other(&owner);
    let at = bed.raft_cut(&owner);
    bed.wait_failover("Raft-port cut", at, &[&owner], target, FAILOVER);
    bed.heal(&[]);
    bed.wait_rejoined(&owner, target, FAILOVER);
    bed.finish(Expect {
        moves: 1,
        read_back: true,
    });
}

/// The owner's agent is stopped (SIGSTOP) for longer than the lease: its guard drops the VIP
/// and kills MySQL at the deadline. DRBD stays Primary there until the agent runs again
/// (SIGCONT) and fences the rest; only then can the other node promote, and the group ends up
/// running on one node under a new epoch.
#[test]
fn owner_agent_paused_past_the_lease() {
    let Some(mut bed) = Testbed::start("owner_agent_paused", Default::default()) else {
        return;
    };
    let owner = bed.wait_steady(STEADY);
    let at = bed.signal_daemon(&owner, nix::sys::signal::Signal::SIGSTOP);
    bed.wait_vip_gone(&owner, at, Duration::from_secs(10));
    bed.hold(Duration::from_secs(3));
    bed.signal_daemon(&owner, nix::sys::signal::Signal::SIGCONT);
    // While the paused node's DRBD is still Primary the other node cannot promote; depending
    // on how many attempts it made by then, either node ends up owning the group.
    let new_owner = bed.wait_new_owner("agent paused", at, &[&owner], FAILOVER);
    bed.run.step(&format!("the group ended on {new_owner}"));
    bed.finish(Expect {
        moves: 1,
        read_back: true,
    });
}

/// The witness is lost: the two management nodes still form a majority, so nothing moves.
/// Then the owner loses power too: the survivor alone has no quorum and must start nothing.
/// When the witness comes back, the survivor and the witness take over.
#[test]
fn witness_lost_then_owner_powered_off() {
    let Some(mut bed) = Testbed::start("witness_lost_then_owner_off", Default::default()) else {
        return;
    };
    let owner = bed.wait_steady(STEADY);
    let target = Testbed::other(&owner);
    let witness_off = bed.power_off("w");
    bed.hold(Duration::from_secs(3));
    assert!(
        bed.acked_since(witness_off + 2_000_000_000) > 0,
        "writes must keep flowing on {owner} without the witness"
    );
    let owner_off = bed.power_off(&owner);
    bed.hold(Duration::from_secs(5));
    bed.assert_nothing_runs_since(owner_off, target);
    let witness_on = bed.power_on("w");
    bed.wait_failover(
        "witness back after the owner died",
        witness_on,
        &[&owner],
        target,
        FAILOVER,
    );
    bed.finish(Expect {
        moves: 1,
        read_back: true,
    });
}

/// A switchover to a node whose MariaDB cannot start (its port 3306 is taken): the target
/// rolls back and the group comes back to the old owner.
#[test]
fn mysql_will_not_start_on_the_target() {
    let Some(mut bed) = Testbed::start("mysql_will_not_start", Default::default()) else {
        return;
    };
    let owner = bed.wait_steady(STEADY);
    let target = Testbed::other(&owner);
    let _taken = bed.occupy_port(target, 3306);
    let at = bed.run.step(&format!(
        "switchover to {target} requested (its port 3306 is taken)"
    ));
    // quoratectl follows the switchover until the target runs the group, which never happens
    // here; it runs in the background and is asked afterwards what it saw.
    let mut ctl = bed.quoratectl_spawn(
        "c",
        &[
            "switchover",
            "--to",
            target,
            "--reason",
            "testbed",
            "--wait-ms",
            "60000",
        ],
        "switchover.out",
    );
    bed.wait_recovered("failed switchover", at, &owner, FAILOVER);
    let _ = ctl.kill();
    let _ = ctl.wait();
    let said = std::fs::read_to_string(bed.run.join("switchover.out")).unwrap_or_default();
    assert!(said.contains(&format!("owner: {target}")), "{said}");
    assert!(!said.contains("switchover done"), "{said}");
    bed.finish(Expect {
        moves: 0,
        read_back: true,
    });
}

/// mysqld is killed on the owner: the owner's monitor notices and restarts it in place.
#[test]
fn mysqld_killed_on_the_owner() {
    let Some(mut bed) = Testbed::start("mysqld_killed", Default::default()) else {
        return;
    };
    let owner = bed.wait_steady(STEADY);
    let at = bed.kill_mysqld(&owner);
    bed.wait_recovered("mysqld crash", at, &owner, FAILOVER);
    bed.finish(Expect {
        moves: 0,
        read_back: true,
    });
}

/// The checkers themselves, on made-up histories: each one passes a clean history and
/// catches the violation it exists for. (No root needed.)
mod checkers {
    use super::support::testbed::checks::*;
    use super::support::testbed::disk::RoleChange;
    use std::collections::BTreeMap;

    fn vip(host: &str, t: u64, added: bool) -> VipEvent {
        VipEvent {
            host: host.into(),
            t,
            received: t,
            added,
        }
    }

    fn probe(host: &str, start: u64, ok: bool) -> Probe {
        Probe {
            host: host.into(),
            start,
            end: start + 5,
            ok,
            error: None,
        }
    }

    #[test]
    fn vip_overlap_is_caught() {
        let clean = [vip("a", 10, true), vip("a", 20, false), vip("b", 25, true)];
        assert!(check_vip(&clean).is_empty());
        let twice = [vip("a", 10, true), vip("b", 15, true), vip("a", 20, false)];
        assert_eq!(check_vip(&twice).len(), 1);
        let never_dropped = [vip("a", 10, true), vip("b", 1_000, true)];
        assert_eq!(check_vip(&never_dropped).len(), 1);
    }

    #[test]
    fn two_writers_are_caught() {
        let handover: Vec<Probe> = [
            probe("a", 0, true),
            probe("a", 100, true),
            probe("a", 200, false),
            probe("b", 210, false),
            probe("b", 300, true),
            probe("b", 400, true),
        ]
        .into();
        assert!(check_writers(&handover).is_empty());
        let overlapping: Vec<Probe> = [
            probe("a", 0, true),
            probe("a", 100, true),
            probe("a", 200, true),
            probe("b", 50, true),
            probe("b", 150, true),
        ]
        .into();
        assert!(!check_writers(&overlapping).is_empty());
        // One write on b inside a's stretch is enough.
        let single: Vec<Probe> = [
            probe("a", 0, true),
            probe("a", 100, true),
            probe("b", 40, true),
        ]
        .into();
        assert_eq!(check_writers(&single).len(), 1);
    }

    fn write(n: u64, outcome: Outcome) -> Write {
        Write {
            n,
            start: n * 10,
            end: n * 10 + 5,
            outcome,
            error: None,
        }
    }

    #[test]
    fn lost_and_flapping_writes_are_caught() {
        let writes: Vec<Write> = (1..=6).map(|n| write(n, Outcome::Ok)).collect();
        let moved_once: BTreeMap<u64, u32> =
            [(1, 11), (2, 11), (3, 11), (4, 12), (5, 12), (6, 12)].into();
        assert!(check_writes(&writes, &moved_once, 1).is_empty());
        assert_eq!(
            check_writes(&writes, &moved_once, 0).len(),
            1,
            "a move with none expected"
        );
        let mut lost = moved_once.clone();
        lost.remove(&5);
        let found = check_writes(&writes, &lost, 1);
        assert!(
            found.iter().any(|v| v.contains("write 5 is lost")),
            "{found:?}"
        );
        let flapping: BTreeMap<u64, u32> =
            [(1, 11), (2, 12), (3, 11), (4, 12), (5, 11), (6, 12)].into();
        assert_eq!(check_writes(&writes, &flapping, 1).len(), 1);
        // Unknown and failed writes may be missing.
        let mixed = vec![
            write(1, Outcome::Ok),
            write(2, Outcome::Unknown),
            write(3, Outcome::Failed),
        ];
        assert!(check_writes(&mixed, &[(1, 11)].into(), 0).is_empty());
    }

    fn role(node: &str, t: u64, role: &str, others: &[&str]) -> RoleChange {
        RoleChange {
            t_ns: t,
            node: node.into(),
            role: role.into(),
            other_primaries: others.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn dual_primary_and_double_mounts_are_caught() {
        let clean = [
            role("a", 1, "Primary", &[]),
            role("a", 5, "Secondary", &[]),
            role("b", 6, "Primary", &[]),
        ];
        let mounts = vec![
            ("a".to_string(), 2, true),
            ("a".to_string(), 4, false),
            ("b".to_string(), 7, true),
        ];
        assert!(check_disk(&clean, &mounts).is_empty());
        let dual = [
            role("a", 1, "Primary", &[]),
            role("b", 3, "Primary", &["a"]),
            role("a", 5, "Secondary", &[]),
        ];
        assert_eq!(
            check_disk(&dual, &[]).len(),
            2,
            "the overlap and the logged other Primary"
        );
        let double_mount = vec![("a".to_string(), 2, true), ("b".to_string(), 3, true)];
        assert_eq!(check_disk(&clean, &double_mount).len(), 1);
    }

    fn action(node: &str, t: u64, epoch: u64, action: &str) -> EpochEvent {
        EpochEvent {
            t,
            node: node.into(),
            epoch,
            action: action.into(),
        }
    }

    #[test]
    fn fencing_token_regressions_are_caught() {
        let clean = [
            action("a", 1, 0, "fencing group"),
            action("b", 1, 0, "fencing group"),
            action("a", 2, 2, "starting group"),
            action("a", 3, 2, "stopping group"),
            action("b", 4, 5, "starting group"),
            action("a", 5, 2, "fencing group"),
        ];
        let (violations, notes) = check_epochs(&clean);
        assert!(violations.is_empty(), "{violations:?}");
        assert_eq!(
            notes.len(),
            1,
            "a's late fence with epoch 2 is noted: {notes:?}"
        );
        let backwards = [
            action("b", 4, 5, "starting group"),
            action("a", 6, 2, "starting group"),
        ];
        assert_eq!(check_epochs(&backwards).0.len(), 1);
        let shared = [
            action("a", 2, 5, "starting group"),
            action("b", 4, 5, "starting group"),
        ];
        assert!(!check_epochs(&shared).0.is_empty());
        // A non-owner's clean-up under the owner's epoch is no violation, but it is noted.
        let cleanup = [
            action("a", 2, 5, "starting group"),
            action("b", 3, 5, "fencing group"),
        ];
        let (violations, notes) = check_epochs(&cleanup);
        assert!(violations.is_empty(), "{violations:?}");
        assert_eq!(notes.len(), 1, "{notes:?}");
        let unowned = [action("a", 2, 0, "starting group")];
        assert_eq!(check_epochs(&unowned).0.len(), 1);
    }

    #[test]
    fn log_lines_and_timestamps_parse() {
        let line = "2026-11-25T10:01:45.328036Z  INFO starting group group=group epoch=5 node=b";
        let (wall, what, epoch) = parse_action_line(line).expect("an action line");
        assert_eq!((what, epoch), ("starting group", 5));
        assert_eq!(
            wall, 1_795_600_905_328_036_000,
            "date -u -d 2026-11-25T10:01:45Z +%s"
        );
        assert!(parse_action_line("2026-11-25T10:01:45.3Z  INFO VIP added epoch=5").is_none());
        use super::support::testbed::history::parse_utc;
        assert_eq!(parse_utc("1970-01-01T00:00:01.5"), Some(1_500_000_000));
        assert_eq!(
            parse_utc("2000-02-29T00:00:00Z"),
            Some(951_782_400_000_000_000)
        );
        assert!(parse_utc("2026-13-01T00:00:00Z").is_none());
    }
}

/// Checker 1's client side (ARP and the neighbour entry) and the offline re-check of a saved
/// run directory, on made-up histories. (No root needed.)
#[path = "support/testbed/recheck_tests.rs"]
mod rechecks;

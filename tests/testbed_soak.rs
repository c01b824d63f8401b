//! A seeded random soak on the failover testbed (docs/TESTBED.md): one testbed, a fault every
//! 10-20 s against whoever owns the group at that moment (owner power-off then power-on,
//! owner isolation then heal, Raft-port cut then heal, agent SIGSTOP past the lease then
//! SIGCONT, mysqld kill, planned switchover, witness loss then return), each one waited out to
//! the outcome quorate promises for it; then everything is healed, the cluster settles, and
//! every checker judges the whole history (one VIP, one writer, one Primary and one mount, no
//! lost acknowledged write, fencing tokens in order, a clean filesystem).
//!
//! - `QUORATE_SOAK_SECS`: how long faults keep coming (default 60; the first fault comes at 0,
//!   so 60 s is 4-6 faults; `300` is about 20).
//! - `QUORATE_SOAK_SEED`: the seed of the schedule (default: random). The seed and the planned
//!   schedule are printed and saved in the run directory (`seed`, `soak-schedule.txt`, with
//!   the actual steps in `schedule.txt`); the same seed replays the same faults.
//! - `QUORATE_SOAK_TIMING`: `default` (the default) or `fast`, the fast timing profile of
//!   `cluster-configs/reference/node-a.toml` (lease 1000 ms, fence margin 200 ms, election
//!   timeouts 150-300 ms).
//! - `QUORATE_TESTBED_KEEP=1` keeps the run directory of a passing run too.
//!
//! Needs root, cgroup v2, nftables and MariaDB, like `tests/testbed.rs`: outside CI a machine
//! without them skips with the reason printed, under CI the test fails. Run it with
//! `cargo test --test testbed_soak -- --nocapture` to watch the schedule and the timings.

mod support;

use std::time::{Duration, Instant};
use support::testbed::history::mono_ns;
use support::testbed::nodes::{NodeOptions, FAST_TIMING};
use support::testbed::report::Expect;
use support::testbed::schedule::{self, FaultKind};
use support::testbed::Testbed;

const STEADY: Duration = Duration::from_secs(40);
const DEFAULT_SECS: u64 = 60;

/// Reads a whole-number environment variable; a value that is not one is a clear error.
fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    match value.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => panic!("{name}={value:?} is not a whole number; unset it or give one"),
    }
}

#[test]
fn seeded_random_soak() {
    let secs = env_u64("QUORATE_SOAK_SECS").unwrap_or(DEFAULT_SECS);
    let seed = env_u64("QUORATE_SOAK_SEED")
        .unwrap_or_else(|| mono_ns() ^ u64::from(std::process::id()) << 32);
    let plan = schedule::plan(seed, secs);
    let text = schedule::render(seed, secs, &plan);
    print!("{text}");
    assert!(
        schedule::max_kills_per_epoch(&plan) <= 2,
        "the schedule kills mysqld more often per epoch than the agent restarts it in place"
    );

    let options = match std::env::var("QUORATE_SOAK_TIMING").as_deref() {
        Err(_) | Ok("default") => NodeOptions::default(),
        Ok("fast") => NodeOptions {
            extra_config: FAST_TIMING.to_string(),
            ..NodeOptions::default()
        },
        Ok(other) => panic!("QUORATE_SOAK_TIMING={other:?}: give `default` or `fast`"),
    };
    let Some(mut bed) = Testbed::start("soak", options) else {
        return;
    };
    bed.run.seed = seed;
    bed.run.write("seed", &format!("{seed}\n"));
    bed.run.write("soak-schedule.txt", &text);
    bed.run
        .step(&format!("soak seed {seed}: {} faults planned", plan.len()));

    let mut owner = bed.wait_steady(STEADY);
    let began = Instant::now();
    let mut moves = 0;
    let mut outcomes = String::new();
    for (i, fault) in plan.iter().enumerate() {
        let due = began + Duration::from_millis(fault.at_ms);
        let now = Instant::now();
        if due > now {
            bed.hold(due - now);
        } else if i > 0 {
            bed.run.step(&format!(
                "fault {} is {} ms late: the previous one took longer to settle",
                i + 1,
                (now - due).as_millis()
            ));
        }
        bed.run.step(&format!(
            "soak fault {}/{}: {} on {owner} (hold {} ms)",
            i + 1,
            plan.len(),
            fault.kind,
            fault.hold_ms
        ));
        let outcome = bed.soak_fault(fault, &owner);
        if outcome.moved() {
            moves += 1;
        }
        let line = format!(
            "{:>3}. {}: {} -> {}, settled {:.1} s after the fault\n",
            i + 1,
            fault.kind,
            outcome.owner_before,
            outcome.owner_after,
            (outcome.settled - outcome.at) as f64 / 1e9
        );
        print!("{line}");
        outcomes.push_str(&line);
        bed.run.write("soak-outcomes.txt", &outcomes);
        owner = outcome.owner_after;
    }

    bed.run.step("faults over: healing everything");
    let healed_owner = bed.heal_everything();
    assert_eq!(
        healed_owner, owner,
        "healing the last fault moved the group"
    );
    // Let the settled cluster carry writes for a while, so the end of the history is steady.
    let settled = bed.run.step("healed and settled");
    bed.hold(Duration::from_secs(3));
    assert!(
        bed.acked_since(settled) >= 10,
        "writes must flow on {owner} once everything is healed"
    );

    let report = bed.finish(Expect {
        moves,
        read_back: true,
    });
    let expected = plan
        .iter()
        .filter(|f| f.kind != FaultKind::WitnessLoss)
        .count();
    assert_eq!(
        report.timings.len(),
        expected,
        "every fault but a witness loss is a failover or a recovery with timings"
    );
    for (what, timing) in &report.timings {
        assert!(
            timing.first_write_ms.is_some(),
            "{what}: no acknowledged write on the node that took over"
        );
    }
}

/// The schedule itself (no root needed): reproducible from the seed, one fault every 10-20 s,
/// every kind dealt before any repeats, and never more mysqld kills per epoch than the agent
/// restarts in place.
#[test]
fn soak_schedule_is_seeded_and_mixed() {
    let a = schedule::plan(42, 300);
    assert_eq!(
        a,
        schedule::plan(42, 300),
        "the same seed, the same schedule"
    );
    assert_ne!(a, schedule::plan(43, 300), "another seed, another schedule");
    assert_eq!(a[0].at_ms, 0);
    for pair in a.windows(2) {
        let gap = pair[1].at_ms - pair[0].at_ms;
        assert!(
            (schedule::GAP_MS.0..=schedule::GAP_MS.1).contains(&gap),
            "gap {gap} ms"
        );
    }
    assert!(a.last().expect("faults").at_ms < 300_000);
    assert!((15..=30).contains(&a.len()), "{} faults in 300 s", a.len());
    for deck in a.chunks(FaultKind::ALL.len()) {
        let mut kinds: Vec<FaultKind> = deck.iter().map(|f| f.kind).collect();
        kinds.sort();
        kinds.dedup();
        assert_eq!(kinds.len(), deck.len(), "a kind repeated within one deck");
    }
    for f in &a {
        let (low, high) = f.kind.hold_range_ms();
        assert!((low..=high).contains(&f.hold_ms), "{f:?}");
    }
    let short = schedule::plan(7, 0);
    assert_eq!(short.len(), 1, "even a zero-length soak injects one fault");
    for seed in 0..2_000 {
        let plan = schedule::plan(seed, 600);
        assert!(
            schedule::max_kills_per_epoch(&plan) <= 2,
            "seed {seed}: {}",
            schedule::render(seed, 600, &plan)
        );
    }
    let text = schedule::render(42, 300, &a);
    assert!(text.contains("QUORATE_SOAK_SEED=42"), "{text}");
    assert_eq!(text.lines().count(), a.len() + 1);
}

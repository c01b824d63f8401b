//! Failover time on the testbed (docs/TESTBED.md), phase by phase: for an owner power-off and for
//! a planned switchover, N runs each on a fresh testbed (real quorate binaries, DRBD stand-in,
//! ext4, MariaDB, the VIP, a client writing through the VIP), every phase measured from the
//! fault on one monotonic clock: new leader, DRBD Primary, mounted, MySQL ready, VIP up, first
//! acknowledged write through the VIP; for the switchover also the write gap (last acknowledged
//! write on the old owner to the first on the new one). Every run also passes every checker of
//! the testbed; a run that does not is reported under `failures` and the bench exits 1.
//!
//! ```text
//! cargo bench --bench failover -- [--runs N] [--out FILE] [--only power-off|switchover]
//!                                  [--timing default|fast]
//! ```
//!
//! `--timing fast` runs the cluster with the shorter timings of [`FAST_TIMING`] (the same
//! ones `cluster-configs/reference/` shows as the fast profile) instead of the defaults.
//!
//! Prints one JSON object on standard output (the testbed's progress goes to standard error):
//! per kind, min / p50 / p99 / max of each phase and of each segment between phases, and every
//! run's raw phases. Percentiles are nearest-rank, so with 20 runs p99 is the slowest run.
//! The targets are printed beside the figures for comparison; missing one is not a failure.
//!
//! Needs root, cgroup v2, nftables and MariaDB like the testbed tests: without them it prints
//! why and exits 0 (under `CI` it fails). Run without `--bench` (as `cargo test --benches`
//! does) it makes one run of each kind unless `--runs` says otherwise.

#[path = "../tests/support/mod.rs"]
mod support;

use serde_json::{json, Map, Value};
use std::io::Write as _;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::time::Duration;
use support::testbed::nodes::{NodeOptions, FAST_TIMING};
use support::testbed::phases::Phases;
use support::testbed::report::Expect;
use support::testbed::Testbed;

const STEADY: Duration = Duration::from_secs(40);
const FAILOVER: Duration = Duration::from_secs(30);
/// Steady writes before the fault, so the lease renewals run at their usual pace.
const WARM_UP: Duration = Duration::from_secs(1);

/// The two failovers the bench measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    PowerOff,
    Switchover,
}

impl Kind {
    fn key(self) -> &'static str {
        match self {
            Kind::PowerOff => "power_off",
            Kind::Switchover => "switchover",
        }
    }

    fn parse(text: &str) -> Result<Kind, String> {
        match text {
            "power-off" | "power_off" => Ok(Kind::PowerOff),
            "switchover" => Ok(Kind::Switchover),
            other => Err(format!(
                "--only {other:?}: give `power-off` or `switchover`"
            )),
        }
    }
}

/// The command line.
struct Args {
    runs: usize,
    out: Option<PathBuf>,
    kinds: Vec<Kind>,
    fast: bool,
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let bench_mode = args.iter().any(|a| a == "--bench");
    let mut parsed = Args {
        runs: if bench_mode { 20 } else { 1 },
        out: None,
        kinds: vec![Kind::PowerOff, Kind::Switchover],
        fast: false,
    };
    let mut i = 0;
    while i < args.len() {
        let (flag, inline) = match args[i].split_once('=') {
            Some((flag, value)) => (flag, Some(value.to_string())),
            None => (args[i].as_str(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            if let Some(v) = inline.clone() {
                return Ok(v);
            }
            i += 1;
            args.get(i)
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag {
            "--bench" => {}
            "--runs" => {
                let text = value("--runs")?;
                parsed.runs = text
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("--runs {text:?}: give a whole number above 0"))?;
            }
            "--out" => parsed.out = Some(PathBuf::from(value("--out")?)),
            "--only" => parsed.kinds = vec![Kind::parse(&value("--only")?)?],
            "--timing" => {
                parsed.fast = match value("--timing")?.as_str() {
                    "default" => false,
                    "fast" => true,
                    other => return Err(format!("--timing {other:?}: give `default` or `fast`")),
                }
            }
            other => {
                return Err(format!(
                    "unknown argument {other:?}; usage: failover [--runs N] [--out FILE] [--only power-off|switchover] [--timing default|fast]"
                ))
            }
        }
        i += 1;
    }
    Ok(parsed)
}

/// One failover on a fresh testbed; `None` when the machine cannot run the testbed.
fn one_run(kind: Kind, index: usize, fast: bool) -> Option<Phases> {
    let name = format!("bench-{}-{index:02}", kind.key());
    let options = NodeOptions {
        extra_config: if fast {
            FAST_TIMING.to_string()
        } else {
            String::new()
        },
        ..NodeOptions::default()
    };
    let mut bed = Testbed::start(&name, options)?;
    let owner = bed.wait_steady(STEADY);
    bed.hold(WARM_UP);
    let target = Testbed::other(&owner);
    let down: Vec<&str> = match kind {
        Kind::PowerOff => vec![owner.as_str()],
        Kind::Switchover => Vec::new(),
    };
    let at = match kind {
        Kind::PowerOff => bed.power_off(&owner),
        Kind::Switchover => {
            let at = bed.run.step(&format!("switchover to {target} requested"));
            let (ok, out) =
                bed.quoratectl("c", &["switchover", "--to", target, "--reason", "bench"]);
            assert!(ok, "{name}: switchover to {target} failed: {out}");
            at
        }
    };
    bed.wait_failover(kind.key(), at, &down, target, FAILOVER);
    bed.finish(Expect {
        moves: 1,
        read_back: true,
    });
    Some(bed.phases(at, &owner, target, &down))
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn round(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// `{n, min, p50, p99, max}` of the values that exist, in milliseconds, named `name`.
fn summary(name: &str, values: impl Iterator<Item = Option<f64>>) -> Value {
    let mut v: Vec<f64> = values.flatten().collect();
    if v.is_empty() {
        return json!({ "name": name, "n": 0 });
    }
    v.sort_by(|a, b| a.total_cmp(b));
    json!({
        "name": name,
        "n": v.len(),
        "min": round(v[0]),
        "p50": round(percentile(&v, 50.0)),
        "p99": round(percentile(&v, 99.0)),
        "max": round(v[v.len() - 1]),
    })
}

fn diff(later: Option<f64>, earlier: Option<f64>) -> Option<f64> {
    Some(later? - earlier?)
}

type Measure = (&'static str, fn(&Phases) -> Option<f64>);

/// The phases of `kind`, in the order they happen, as (name, value from the fault).
fn phase_list(kind: Kind) -> Vec<Measure> {
    let first: Measure = match kind {
        Kind::PowerOff => ("new leader (runs that lost it)", |p| p.leader_ms),
        Kind::Switchover => ("old owner stopped its group", |p| p.released_ms),
    };
    vec![
        first,
        ("granted", |p| p.granted_ms),
        ("DRBD Primary", |p| p.drbd_primary_ms),
        ("mounted", |p| p.mounted_ms),
        ("MySQL ready", |p| p.mysql_ready_ms),
        ("VIP up", |p| p.vip_up_ms),
        ("first acknowledged write", |p| p.first_write_ms),
    ]
}

/// What each step costs: the time between consecutive phases of `kind`.
fn segment_list(kind: Kind) -> Vec<Measure> {
    let mut list: Vec<Measure> = match kind {
        Kind::PowerOff => vec![
            ("election: fault to new leader (runs that lost it)", |p| {
                p.leader_ms
            }),
            (
                "lease wait: new leader (or the fault, if the leader survived) to grant",
                |p| diff(p.granted_ms, Some(p.leader_ms.unwrap_or(0.0))),
            ),
        ],
        Kind::Switchover => vec![
            ("stop on the old owner: request to group stopped", |p| {
                p.released_ms
            }),
            ("release to grant", |p| diff(p.granted_ms, p.released_ms)),
        ],
    };
    list.extend::<[Measure; 5]>([
        ("grant to DRBD Primary", |p| {
            diff(p.drbd_primary_ms, p.granted_ms)
        }),
        ("DRBD Primary to mounted", |p| {
            diff(p.mounted_ms, p.drbd_primary_ms)
        }),
        ("mounted to MySQL ready", |p| {
            diff(p.mysql_ready_ms, p.mounted_ms)
        }),
        ("MySQL ready to VIP up", |p| {
            diff(p.vip_up_ms, p.mysql_ready_ms)
        }),
        ("VIP up to first acknowledged write", |p| {
            diff(p.first_write_ms, p.vip_up_ms)
        }),
    ]);
    list
}

/// Figures of one kind: phases from the fault, segments between phases, raw runs.
fn figures(kind: Kind, runs: &[Phases]) -> Value {
    let list = |measures: Vec<Measure>| -> Vec<Value> {
        measures
            .into_iter()
            .map(|(name, f)| summary(name, runs.iter().map(f)))
            .collect()
    };
    let mut out = json!({
        "runs_ok": runs.len(),
        "phases_ms_from_fault": list(phase_list(kind)),
        "segments_ms": list(segment_list(kind)),
        "runs": runs,
    });
    match kind {
        Kind::PowerOff => {
            let lost = |want: bool| {
                runs.iter()
                    .filter(move |p| p.leader_lost == want)
                    .map(|p| p.first_write_ms)
            };
            out["runs_that_lost_the_leader"] = json!(runs.iter().filter(|p| p.leader_lost).count());
            out["first_write_by_leader"] = json!([
                summary("first write, the owner was the leader", lost(true)),
                summary("first write, the leader survived", lost(false)),
            ]);
        }
        Kind::Switchover => {
            out["write_gap_ms"] = summary(
                "last write on the old owner to first on the new",
                runs.iter().map(|p| p.write_gap_ms),
            );
        }
    }
    out
}

/// The figures as a markdown table for the README (printed on standard error).
fn markdown(results: &Map<String, Value>) -> String {
    let mut text = String::from(
        "| failover | phase (ms after the fault) | p50 | p99 | min | max | runs |\n|---|---|---|---|---|---|---|\n",
    );
    for (kind, title) in [
        ("power_off", "owner power-off"),
        ("switchover", "planned switchover"),
    ] {
        let Some(figures) = results.get(kind) else {
            continue;
        };
        let mut rows: Vec<&Value> = figures["phases_ms_from_fault"]
            .as_array()
            .map(|a| a.iter().collect())
            .unwrap_or_default();
        if kind == "switchover" {
            rows.push(&figures["write_gap_ms"]);
        }
        for row in rows {
            let cell = |key: &str| {
                row.get(key)
                    .and_then(Value::as_f64)
                    .map(|v| format!("{v:.0}"))
                    .unwrap_or_else(|| "-".into())
            };
            text.push_str(&format!(
                "| {title} | {} | {} | {} | {} | {} | {} |\n",
                row["name"].as_str().unwrap_or("?"),
                cell("p50"),
                cell("p99"),
                cell("min"),
                cell("max"),
                row["n"]
            ));
        }
    }
    text
}

/// Sends standard output to standard error until dropped, so the testbed's report lines do
/// not mix with the one JSON object.
struct StdoutToStderr {
    saved: i32,
}

impl StdoutToStderr {
    fn new() -> Option<StdoutToStderr> {
        let _ = std::io::stdout().flush();
        // SAFETY: dup/dup2 on the process's own standard descriptors.
        let saved = unsafe { libc::dup(1) };
        if saved < 0 {
            return None;
        }
        // SAFETY: both descriptors are the process's own standard output and error.
        if unsafe { libc::dup2(2, 1) } < 0 {
            return None;
        }
        Some(StdoutToStderr { saved })
    }
}

impl Drop for StdoutToStderr {
    fn drop(&mut self) {
        let _ = std::io::stdout().flush();
        // SAFETY: restores the descriptor saved in `new` and closes the copy.
        unsafe {
            libc::dup2(self.saved, 1);
            libc::close(self.saved);
        }
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic without a message".into())
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(&argv) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("failover bench: {e}");
            std::process::exit(2);
        }
    };
    let mut redirect = StdoutToStderr::new();
    let mut result = Map::new();
    let mut failures = Vec::new();
    for kind in &args.kinds {
        let mut runs = Vec::new();
        for index in 0..args.runs {
            eprintln!(
                "failover bench: {} run {}/{}",
                kind.key(),
                index + 1,
                args.runs
            );
            match std::panic::catch_unwind(AssertUnwindSafe(|| one_run(*kind, index, args.fast))) {
                Ok(Some(phases)) => runs.push(phases),
                Ok(None) => {
                    drop(redirect.take());
                    eprintln!("failover bench: skipped, the testbed cannot run here");
                    return;
                }
                Err(panic) => failures.push(format!(
                    "{} run {}: {}",
                    kind.key(),
                    index + 1,
                    panic_text(panic.as_ref())
                )),
            }
        }
        result.insert(kind.key().into(), figures(*kind, &runs));
    }
    drop(redirect.take());
    eprint!("{}", markdown(&result));
    let report = json!({
        "bench": "failover",
        "runs_per_kind": args.runs,
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "cluster_timing": if args.fast { "fast" } else { "default" },
        "timings": "ms after the fault: the cable pull of the owner's host (power-off), or the switchover request",
        "targets": {
            "power_off_first_write_p50_ms": 1500,
            "power_off_first_write_p99_ms": 2500,
            "switchover_write_gap_p50_ms": 500,
        },
        "results": result,
        "failures": failures,
    });
    let text = serde_json::to_string_pretty(&report).unwrap_or_default();
    println!("{text}");
    if let Some(out) = &args.out {
        if let Err(e) = std::fs::write(out, format!("{text}\n")) {
            eprintln!("failover bench: cannot write {}: {e}", out.display());
            std::process::exit(1);
        }
    }
    if !failures.is_empty() {
        std::process::exit(1);
    }
}

//! What quorate's benchmark programs share: finding the release binaries, polling with a
//! deadline, summarising samples and describing the machine the numbers came from.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The three members in id order: id, name, role, binary.
pub const MEMBERS: [(u64, &str, &str, &str); 3] = [
    (1, "node1", "management", "quorate-agent"),
    (2, "node2", "management", "quorate-agent"),
    (3, "witness", "witness", "quorate-witness"),
];

/// How long any single wait may take before the benchmark gives up.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The directory holding the release binaries: the example's own target profile directory.
pub fn binaries_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().and_then(Path::parent).map(Path::to_path_buf);
    let dir = dir.ok_or_else(|| anyhow::anyhow!("no target dir above {}", exe.display()))?;
    for name in ["quorate-agent", "quorate-witness", "quoratectl"] {
        if !dir.join(name).is_file() {
            anyhow::bail!(
                "{name} is missing from {}: run `cargo build --release --bins` first, with the \
                 same CARGO_TARGET_DIR as this example",
                dir.display()
            );
        }
    }
    Ok(dir)
}

/// Calls `check` every `every` until it returns `Some`, or fails after [`DEADLINE`].
pub fn poll<T>(
    what: &str,
    every: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check() {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            anyhow::bail!("timed out after {DEADLINE:?} waiting for {what}");
        }
        std::thread::sleep(every);
    }
}

/// `d` in milliseconds, rounded to the microsecond.
pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// p50/p99 (nearest rank), min, max and mean of millisecond samples.
pub fn summary(samples: &[f64]) -> Value {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n == 0 {
        return json!({ "count": 0 });
    }
    let rank = |p: f64| sorted[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
    let round = |v: f64| (v * 1e3).round() / 1e3;
    json!({
        "count": n,
        "p50_ms": round(rank(0.50)),
        "p99_ms": round(rank(0.99)),
        "min_ms": round(sorted[0]),
        "max_ms": round(sorted[n - 1]),
        "mean_ms": round(sorted.iter().sum::<f64>() / n as f64),
    })
}

/// The 1, 5 and 15 minute load averages: other work on the machine skews every number.
pub fn loadavg() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Where the numbers were taken.
pub fn machine() -> Value {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "kernel_release": read("/proc/sys/kernel/osrelease").trim(),
        "build_profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "loadavg_at_start": loadavg(),
        "temp_dir": std::env::temp_dir(),
    })
}

/// Polls `check` every 5 ms on the runtime until it returns `Some`, or fails after [`DEADLINE`].
pub async fn poll_async<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> anyhow::Result<T> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check() {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            anyhow::bail!("timed out after {DEADLINE:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

//! The run directory and the one clock every history uses.
//!
//! Every checker works on `CLOCK_MONOTONIC` nanoseconds, which all processes of the machine
//! share whatever their namespaces. Sources that only print wall-clock time (the daemons' log
//! lines, `ip -ts monitor`) are mapped onto it with the offset measured when the run started;
//! a run lasts well under a minute, so clock slewing in between is far below a millisecond.
//!
//! The run directory (`<target>/testbed-runs/<name>`) receives the seed, the fault schedule,
//! every process log and every history as it is recorded, so a failed run can be re-checked
//! offline. It is removed when the scenario passed and kept when it failed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use super::checks::parse_utc;

/// `CLOCK_MONOTONIC` in nanoseconds.
pub fn mono_ns() -> u64 {
    quorate::clock::monotonic_ns()
}

fn wall_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Maps wall-clock nanoseconds onto the monotonic clock.
#[derive(Clone, Copy, Debug)]
pub struct WallToMono {
    offset: i128,
}

impl WallToMono {
    /// Measures the offset now (the smallest of a few readings' spreads).
    pub fn measure() -> WallToMono {
        let mut best: Option<(u64, i128)> = None;
        for _ in 0..5 {
            let m0 = mono_ns();
            let w = wall_ns();
            let m1 = mono_ns();
            let spread = m1 - m0;
            let offset = w as i128 - ((m0 + m1) / 2) as i128;
            if best.is_none_or(|(s, _)| spread < s) {
                best = Some((spread, offset));
            }
        }
        WallToMono {
            offset: best.map(|b| b.1).unwrap_or(0),
        }
    }

    /// The monotonic time of a wall-clock instant.
    pub fn mono(&self, wall_ns: u64) -> u64 {
        (wall_ns as i128 - self.offset).max(0) as u64
    }
}

/// One line of the fault schedule.
#[derive(Clone, Debug)]
pub struct ScheduleEntry {
    /// When the step was taken (monotonic ns).
    pub at: u64,
    /// What was done.
    pub what: String,
}

/// The run directory and the fault schedule.
pub struct RunDir {
    /// The directory.
    pub path: PathBuf,
    /// The seed the run's random choices come from.
    pub seed: u64,
    /// The clock mapping measured at the start.
    pub clock: WallToMono,
    /// When the run started (monotonic ns); histories print times relative to it.
    pub started: u64,
    schedule: Mutex<Vec<ScheduleEntry>>,
}

/// `<target>/testbed-runs`, next to the test binary's profile directory.
pub fn runs_root() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // <target>/<profile>/deps/<test binary>
    exe.parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .map(|target| target.join("testbed-runs"))
        .unwrap_or_else(|| std::env::temp_dir().join("testbed-runs"))
}

impl RunDir {
    /// Creates `<target>/testbed-runs/<name>` (emptied if an old run left it) and writes the seed.
    pub fn create(name: &str, seed: u64) -> Result<RunDir, String> {
        let path = runs_root().join(name);
        if path.exists() {
            std::fs::remove_dir_all(&path)
                .map_err(|e| format!("cannot clear old run dir {}: {e}", path.display()))?;
        }
        std::fs::create_dir_all(&path)
            .map_err(|e| format!("cannot create run dir {}: {e}", path.display()))?;
        let run = RunDir {
            path,
            seed,
            clock: WallToMono::measure(),
            started: mono_ns(),
            schedule: Mutex::new(Vec::new()),
        };
        run.write("seed", &format!("{seed}\n"));
        Ok(run)
    }

    /// A path inside the run directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes (replaces) a file in the run directory; failures are printed, not fatal.
    pub fn write(&self, name: &str, text: &str) {
        if let Err(e) = std::fs::write(self.join(name), text) {
            eprintln!("testbed: cannot write {name}: {e}");
        }
    }

    /// Milliseconds since the run started, for human-readable histories.
    pub fn rel_ms(&self, t: u64) -> f64 {
        (t as f64 - self.started as f64) / 1e6
    }

    /// Records a step of the fault schedule (also appended to `schedule.txt` at once).
    pub fn step(&self, what: &str) -> u64 {
        let at = mono_ns();
        let line = format!("{:>10.1} ms  {what}\n", self.rel_ms(at));
        eprint!("testbed: {line}");
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.join("schedule.txt"))
        {
            let _ = f.write_all(line.as_bytes());
        }
        self.schedule
            .lock()
            .expect("schedule lock")
            .push(ScheduleEntry {
                at,
                what: what.to_string(),
            });
        at
    }

    /// The schedule so far.
    pub fn schedule(&self) -> Vec<ScheduleEntry> {
        self.schedule.lock().expect("schedule lock").clone()
    }
}

//! A run's histories as files, and every checker run over them: the one place that decides a
//! scenario's verdict, live at the end of a scenario (`report.rs`) and offline on a kept run
//! directory (`cargo run --example testbed_recheck -- <run dir>`). Pure: std, serde and the
//! other checker files only, so the example includes it by path.
//!
//! Files of a run directory read here: `scenario.json` (name, seed, expectations, the failovers
//! the scenario waited for, the management hosts' MACs), `vip.jsonl`, `arp.jsonl`,
//! `neigh.jsonl`, `probes.jsonl`, `writes.jsonl`, `mounts.jsonl`, `epochs.jsonl`,
//! `drbd/ledger.jsonl` (the stand-in's own ledger) and `present.json` (the rows read back through
//! the VIP, sequence number to server id; absent when no read-back happened). What only a live
//! run can check (`e2fsck` of the image, leftovers after teardown) is not re-checked.

use super::arp_checks::{self, ArpSighting, NeighEvent};
use super::checks::{self, EpochEvent, Outcome, Probe, RoleChange, VipEvent, Write};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A failover the scenario waited for: the fault, the hosts it took down, the new owner.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Failover {
    /// What happened.
    pub what: String,
    /// When the fault took effect (monotonic ns): timings count from here.
    pub fault_at: u64,
    /// Events before this instant do not count as the recovery (for a fault the group
    /// survives at first, such as a crash its monitor only notices later).
    pub since: u64,
    /// Hosts the fault silenced (their leadership does not count).
    pub down: Vec<String>,
    /// The node that took over.
    pub to: String,
}

/// What a scenario expects beyond the promises every scenario keeps.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Expect {
    /// How often ownership may move (the client's acknowledged writes may change server at
    /// most this often).
    pub moves: usize,
    /// Read every acknowledged write back through the VIP (needs a running owner at the end).
    pub read_back: bool,
}

/// `scenario.json`: what the histories alone do not say.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Scenario {
    /// The scenario's name.
    pub name: String,
    /// The run's seed.
    pub seed: u64,
    /// What the scenario expected (`None` when it panicked before `finish`).
    pub expect: Option<Expect>,
    /// The failovers it waited for, in order.
    pub failovers: Vec<Failover>,
    /// Management host to the MAC of its interface: the only MACs that may answer for the VIP.
    pub macs: BTreeMap<String, String>,
    /// How many ARP probes `c` sent.
    pub arp_probes_sent: u64,
}

/// Mount sampler event: (host, time, mounted read-write).
pub type MountEvent = (String, u64, bool);

/// Everything a run recorded that the checkers judge.
#[derive(Clone, Debug, Default)]
pub struct SavedRun {
    /// See [`Scenario`].
    pub scenario: Scenario,
    /// VIP additions and deletions per host.
    pub vip: Vec<VipEvent>,
    /// ARP frames from VIP holders seen in `c`.
    pub arp: Vec<ArpSighting>,
    /// Changes of `c`'s neighbour entry for the VIP.
    pub neigh: Vec<NeighEvent>,
    /// Write probes against each host's own MySQL.
    pub probes: Vec<Probe>,
    /// The client's writes through the VIP.
    pub writes: Vec<Write>,
    /// Read-write mounts of the image per host.
    pub mounts: Vec<MountEvent>,
    /// The stand-in's role changes.
    pub ledger: Vec<RoleChange>,
    /// Epoch-carrying resource actions from the agents' logs.
    pub epochs: Vec<EpochEvent>,
    /// Rows read back through the VIP: sequence number to server id.
    pub present: Option<BTreeMap<u64, u32>>,
}

/// Why a run directory cannot be re-checked.
#[derive(Debug, thiserror::Error)]
pub enum RecheckError {
    /// A history file is missing.
    #[error("{path} is missing: pass a run directory the testbed saved (target/testbed-runs/<scenario>-<pid>), from a scenario that reached its end or panicked")]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// A file could not be read.
    #[error("cannot read {path}: {source}; check the path and its permissions")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A line does not parse.
    #[error(
        "{path} line {line}: {error}; the file is damaged or from another version of the testbed"
    )]
    BadLine {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What serde said.
        error: String,
    },
}

/// The stand-in's ledger inside a run directory.
pub fn ledger_path(dir: &Path) -> PathBuf {
    dir.join(LEDGER)
}

const LEDGER: &str = "drbd/ledger.jsonl";

/// One JSON line per item (the format of every history file).
pub(super) fn jsonl<T: serde::Serialize>(items: &[T]) -> String {
    items
        .iter()
        .filter_map(|i| serde_json::to_string(i).ok())
        .map(|l| l + "\n")
        .collect()
}

fn pretty<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| "{}".into()) + "\n"
}

fn read(path: PathBuf, required: bool) -> Result<Option<String>, RecheckError> {
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(RecheckError::Missing { path }),
        Err(source) => Err(RecheckError::Unreadable { path, source }),
    }
}

fn parse_lines<T: serde::de::DeserializeOwned>(
    dir: &Path,
    name: &str,
    required: bool,
) -> Result<Vec<T>, RecheckError> {
    let path = dir.join(name);
    let Some(text) = read(path.clone(), required)? else {
        return Ok(Vec::new());
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| RecheckError::BadLine {
                path: path.clone(),
                line: i + 1,
                error: e.to_string(),
            })
        })
        .collect()
}

fn parse_file<T: serde::de::DeserializeOwned>(path: PathBuf) -> Result<Option<T>, RecheckError> {
    let Some(text) = read(path.clone(), false)? else {
        return Ok(None);
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| RecheckError::BadLine {
            path,
            line: 1,
            error: e.to_string(),
        })
}

impl SavedRun {
    /// Writes every history into `dir` except the ledger, which the stand-in writes itself.
    pub fn write(&self, dir: &Path) -> Result<(), String> {
        let put = |name: &str, text: String| {
            std::fs::write(dir.join(name), text)
                .map_err(|e| format!("cannot write {}: {e}", dir.join(name).display()))
        };
        put("scenario.json", pretty(&self.scenario))?;
        put("vip.jsonl", jsonl(&self.vip))?;
        put("arp.jsonl", jsonl(&self.arp))?;
        put("neigh.jsonl", jsonl(&self.neigh))?;
        put("probes.jsonl", jsonl(&self.probes))?;
        put("writes.jsonl", jsonl(&self.writes))?;
        put("mounts.jsonl", jsonl(&self.mounts))?;
        put("epochs.jsonl", jsonl(&self.epochs))?;
        if let Some(present) = &self.present {
            let rows: Vec<(u64, u32)> = present.iter().map(|(n, s)| (*n, *s)).collect();
            put("present.json", pretty(&rows))?;
        }
        Ok(())
    }

    /// Reads a run directory written by [`SavedRun::write`] (plus the stand-in's ledger).
    pub fn load(dir: &Path) -> Result<SavedRun, RecheckError> {
        let scenario: Scenario =
            parse_file(dir.join("scenario.json"))?.ok_or_else(|| RecheckError::Missing {
                path: dir.join("scenario.json"),
            })?;
        let present: Option<Vec<(u64, u32)>> = parse_file(dir.join("present.json"))?;
        Ok(SavedRun {
            scenario,
            vip: parse_lines(dir, "vip.jsonl", true)?,
            arp: parse_lines(dir, "arp.jsonl", true)?,
            neigh: parse_lines(dir, "neigh.jsonl", true)?,
            probes: parse_lines(dir, "probes.jsonl", true)?,
            writes: parse_lines(dir, "writes.jsonl", true)?,
            mounts: parse_lines(dir, "mounts.jsonl", true)?,
            epochs: parse_lines(dir, "epochs.jsonl", true)?,
            // A scenario that failed before the image was made has no ledger: nothing promoted.
            ledger: parse_lines(dir, LEDGER, false)?,
            present: present.map(|rows| rows.into_iter().collect()),
        })
    }
}

/// One checker's judgement of a run.
#[derive(Clone, Debug, Default)]
pub struct Verdict {
    /// The checker (`vip`, `arp`, `neighbour`, `writers`, `disk`, `writes`, `epochs`).
    pub checker: &'static str,
    /// What it found wrong; empty means the run keeps its promise.
    pub violations: Vec<String>,
    /// What is worth knowing but no violation.
    pub notes: Vec<String>,
}

impl Verdict {
    fn new(checker: &'static str, violations: Vec<String>) -> Verdict {
        Verdict {
            checker,
            violations,
            notes: Vec::new(),
        }
    }
}

/// Runs every checker on `run`, in docs/TESTBED.md's order.
pub fn check_run(run: &SavedRun) -> Vec<Verdict> {
    let s = &run.scenario;
    let mut verdicts = vec![Verdict::new("vip", checks::check_vip(&run.vip))];

    let (violations, notes) = arp_checks::check_arp(&run.arp, &s.macs, &run.vip);
    let mut arp = Verdict::new("arp", violations);
    arp.notes = notes;
    arp.notes
        .push(format!("{} probes sent from c", s.arp_probes_sent));
    if s.arp_probes_sent > 0 && !run.arp.iter().any(|a| a.kind == arp_checks::ArpKind::Reply) {
        arp.violations
            .push("no ARP probe from c was ever answered: the prober saw nothing".into());
    }
    verdicts.push(arp);

    let (violations, follows) = arp_checks::check_neighbour(
        &s.failovers,
        &run.vip,
        &run.arp,
        &run.neigh,
        &run.writes,
        &s.macs,
    );
    let mut neighbour = Verdict::new("neighbour", violations);
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0} ms"));
    for f in &follows {
        let after = |t: Option<u64>| t.map(|t| (t as f64 - f.from as f64) / 1e6);
        neighbour.notes.push(format!(
            "{} (to {}): after the VIP came up, gratuitous ARP seen {}, probe answered {}, client's entry on the new MAC {}, client write ok {}",
            f.what,
            f.to,
            ms(after(f.announce)),
            ms(after(f.reply)),
            ms(f.neigh_ms()),
            ms(f.client_ms())
        ));
    }
    verdicts.push(neighbour);

    verdicts.push(Verdict::new("writers", checks::check_writers(&run.probes)));
    let mut disk = Verdict::new("disk", checks::check_disk(&run.ledger, &run.mounts));
    disk.notes
        .push("e2fsck of the image is checked only live".into());
    verdicts.push(disk);

    let mut writes = Verdict::new("writes", Vec::new());
    match (&s.expect, &run.present) {
        (Some(expect), Some(present)) => {
            writes.violations = checks::check_writes(&run.writes, present, expect.moves);
            writes.notes.push(format!(
                "client write runs (server, first, last, count): {:?}",
                checks::server_runs(&run.writes, present)
            ));
            let failed_present = run
                .writes
                .iter()
                .filter(|w| w.outcome == Outcome::Failed && present.contains_key(&w.n))
                .count();
            if failed_present > 0 {
                writes.notes.push(format!(
                    "{failed_present} writes reported failed are present"
                ));
            }
        }
        (Some(expect), None) if expect.read_back => writes
            .violations
            .push("the client's rows were not read back through the VIP".into()),
        (None, _) => writes
            .notes
            .push("not checked: the scenario ended before it said what it expected".into()),
        (Some(_), None) => writes
            .notes
            .push("not checked: the scenario asked for no read-back".into()),
    }
    verdicts.push(writes);

    let (mut violations, notes) = checks::check_epochs(&run.epochs);
    if !run.epochs.iter().any(|e| e.action == "starting group") {
        violations.push("no agent ever logged `starting group` with an epoch".into());
    }
    let mut epochs = Verdict::new("epochs", violations);
    epochs.notes = notes;
    verdicts.push(epochs);
    verdicts
}

/// Loads `dir` and runs every checker on it.
pub fn recheck(dir: &Path) -> Result<Vec<Verdict>, RecheckError> {
    SavedRun::load(dir).map(|run| check_run(&run))
}

/// One line per checker (`PASS`/`FAIL`), then its violations and notes, indented.
pub fn render(verdicts: &[Verdict]) -> String {
    let mut out = String::new();
    for v in verdicts {
        let word = if v.violations.is_empty() {
            "PASS"
        } else {
            "FAIL"
        };
        out.push_str(&format!("{word} {}\n", v.checker));
        for line in &v.violations {
            out.push_str(&format!("  VIOLATION: {line}\n"));
        }
        for line in &v.notes {
            out.push_str(&format!("  note: {line}\n"));
        }
    }
    out
}

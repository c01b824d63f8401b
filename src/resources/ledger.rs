//! The holding ledger: an append-only record of every start and stop of a resource, and the
//! checks that read it back.
//!
//! quorate's first promise is that no two nodes hold the resource group at once. Tests prove it
//! by having every agent that can hold something (the Dummy agent, the DRBD stand-in) append one
//! JSON line per start and stop to a ledger file, then turning the lines into holding intervals
//! and checking that no two intervals of one resource overlap.
//!
//! Each line carries two timestamps. `mono_ns` is `CLOCK_MONOTONIC`, which every process on one
//! machine shares (network and mount namespaces do not change it), so ledgers written by several
//! processes of one test machine compare; it is the one the checks use. It is never compared with
//! a lease or guard deadline, which are on the lease clock ([`crate::clock::LEASE_CLOCK`],
//! `CLOCK_BOOTTIME`): the checks compare ledger stamps with each other only. `wall_ns` is the wall
//! clock, only for people reading the file. A start is written *before* the resource becomes
//! active and a stop *after* it is fully down, so the intervals can only be wider than the truth
//! and an overlap the checks find is real.
//!
//! Lines are written with `O_APPEND` in one `write` and made durable with `fsync`, so lines from
//! several processes never interleave. A crash can leave a torn last line without its newline;
//! the reader ignores such a line and refuses any other line it cannot parse.

use serde::{Deserialize, Serialize};

use crate::clock;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What a ledger line records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LedgerAction {
    /// The writer is about to hold the resource (written before it becomes active).
    Start,
    /// The writer no longer holds the resource (written after a clean stop).
    Stop,
    /// The writer no longer holds the resource (written after a hard fence).
    Fence,
}

/// One line of a ledger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerEvent {
    /// The resource's name.
    pub resource: String,
    /// The node that acted.
    pub node: String,
    /// The owner epoch (fencing token) the action served.
    pub epoch: u64,
    /// What happened.
    pub action: LedgerAction,
    /// `CLOCK_MONOTONIC` in nanoseconds; comparable across processes of one machine.
    pub mono_ns: u64,
    /// Wall-clock time in nanoseconds since the Unix epoch; for people only.
    pub wall_ns: u64,
    /// The process that wrote the line.
    pub pid: u32,
}

impl LedgerEvent {
    /// An event stamped with the current monotonic and wall-clock time and this process's id.
    pub fn now(resource: &str, node: &str, epoch: u64, action: LedgerAction) -> Self {
        LedgerEvent {
            resource: resource.to_string(),
            node: node.to_string(),
            epoch,
            action,
            mono_ns: clock::monotonic_ns(),
            wall_ns: clock::wall_ns(),
            pid: std::process::id(),
        }
    }
}

/// A ledger could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The file could not be opened, written or synced.
    #[error("ledger {path}: {source}; check that the directory exists and is writable")]
    Io {
        /// The ledger file.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// A complete line is not a ledger event: the file is corrupt or not a ledger.
    #[error(
        "ledger {path} line {line}: {message}; the file is not a quorate ledger or is corrupt"
    )]
    Corrupt {
        /// The ledger file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// What the parser said.
        message: String,
    },
}

/// Appends `event` as one JSON line to the ledger at `path` (`O_APPEND`, one write, `fsync`).
pub fn append(path: &Path, event: &LedgerEvent) -> Result<(), LedgerError> {
    let io = |source| LedgerError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut line = serde_json::to_vec(event).map_err(|e| io(std::io::Error::other(e)))?;
    line.push(b'\n');
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io)?;
    file.write_all(&line).map_err(io)?;
    file.sync_all().map_err(io)
}

/// Parses ledger text. A last line without its newline (a torn write) is ignored.
pub fn parse_ledger(path: &Path, text: &str) -> Result<Vec<LedgerEvent>, LedgerError> {
    let mut events = Vec::new();
    let complete = match text.rfind('\n') {
        Some(end) => &text[..end],
        None => "",
    };
    for (index, line) in complete.split('\n').enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let event = serde_json::from_str(line).map_err(|e| LedgerError::Corrupt {
            path: path.to_path_buf(),
            line: index + 1,
            message: e.to_string(),
        })?;
        events.push(event);
    }
    Ok(events)
}

/// Reads one ledger file; a missing file is an empty ledger.
pub fn read_ledger(path: &Path) -> Result<Vec<LedgerEvent>, LedgerError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_ledger(path, &text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(LedgerError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Reads several ledgers (one per process or node) and merges them in monotonic-time order.
pub fn read_ledgers<P: AsRef<Path>>(paths: &[P]) -> Result<Vec<LedgerEvent>, LedgerError> {
    let mut all = Vec::new();
    for path in paths {
        all.extend(read_ledger(path.as_ref())?);
    }
    all.sort_by_key(|e| e.mono_ns);
    Ok(all)
}

/// A stretch of time during which one node held one resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldingInterval {
    /// The resource.
    pub resource: String,
    /// The node that held it.
    pub node: String,
    /// The epoch of the start that opened the interval.
    pub epoch: u64,
    /// Monotonic time of the start line.
    pub from_ns: u64,
    /// Monotonic time of the stop or fence line; `None` while still held at the ledger's end.
    pub until_ns: Option<u64>,
}

impl HoldingInterval {
    fn end(&self) -> u64 {
        self.until_ns.unwrap_or(u64::MAX)
    }

    /// True when the two intervals share an instant (touching ends do not count).
    pub fn overlaps(&self, other: &HoldingInterval) -> bool {
        self.from_ns < other.end() && other.from_ns < self.end()
    }
}

impl fmt::Display for HoldingInterval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.until_ns {
            Some(until) => write!(
                f,
                "{} held {} (epoch {}) from {} to {} ns",
                self.node, self.resource, self.epoch, self.from_ns, until
            ),
            None => write!(
                f,
                "{} holds {} (epoch {}) since {} ns",
                self.node, self.resource, self.epoch, self.from_ns
            ),
        }
    }
}

/// Turns ledger events into holding intervals, one per (resource, node) start-to-stop.
///
/// Events are taken in monotonic order. A start while the same node already holds the resource
/// is an idempotent repeat and keeps the open interval; a stop with nothing open is ignored.
pub fn holding_intervals<'a, I>(events: I) -> Vec<HoldingInterval>
where
    I: IntoIterator<Item = &'a LedgerEvent>,
{
    let mut sorted: Vec<&LedgerEvent> = events.into_iter().collect();
    sorted.sort_by_key(|e| e.mono_ns);
    let mut open: Vec<HoldingInterval> = Vec::new();
    let mut closed: Vec<HoldingInterval> = Vec::new();
    for event in sorted {
        let held = open
            .iter()
            .position(|i| i.resource == event.resource && i.node == event.node);
        match (event.action, held) {
            (LedgerAction::Start, None) => open.push(HoldingInterval {
                resource: event.resource.clone(),
                node: event.node.clone(),
                epoch: event.epoch,
                from_ns: event.mono_ns,
                until_ns: None,
            }),
            (LedgerAction::Start, Some(_)) => {}
            (LedgerAction::Stop | LedgerAction::Fence, Some(index)) => {
                let mut interval = open.remove(index);
                interval.until_ns = Some(event.mono_ns);
                closed.push(interval);
            }
            (LedgerAction::Stop | LedgerAction::Fence, None) => {}
        }
    }
    closed.extend(open);
    closed.sort_by_key(|i| i.from_ns);
    closed
}

/// Two intervals of one resource that share an instant: the promise was broken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Overlap {
    /// The earlier interval.
    pub first: HoldingInterval,
    /// The later interval.
    pub second: HoldingInterval,
}

impl fmt::Display for Overlap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "overlap: {} and {}", self.first, self.second)
    }
}

/// Every pair of intervals of the same resource that overlap in time.
pub fn overlaps(intervals: &[HoldingInterval]) -> Vec<Overlap> {
    let mut found = Vec::new();
    for (i, a) in intervals.iter().enumerate() {
        for b in &intervals[i + 1..] {
            if a.resource == b.resource && a.overlaps(b) {
                let (first, second) = if a.from_ns <= b.from_ns {
                    (a, b)
                } else {
                    (b, a)
                };
                found.push(Overlap {
                    first: first.clone(),
                    second: second.clone(),
                });
            }
        }
    }
    found
}

/// Test helper: panics, listing every overlap, if two intervals of one resource overlap.
pub fn assert_no_overlap(intervals: &[HoldingInterval]) {
    let found = overlaps(intervals);
    if !found.is_empty() {
        let lines: Vec<String> = found.iter().map(|o| o.to_string()).collect();
        panic!(
            "{} holding intervals overlap:\n{}",
            found.len(),
            lines.join("\n")
        );
    }
}

/// Start events whose epoch is lower than an earlier start's of the same resource: fencing
/// tokens must never go backwards in real-time order.
pub fn epoch_regressions<'a, I>(events: I) -> Vec<(LedgerEvent, LedgerEvent)>
where
    I: IntoIterator<Item = &'a LedgerEvent>,
{
    let mut sorted: Vec<&LedgerEvent> = events
        .into_iter()
        .filter(|e| e.action == LedgerAction::Start)
        .collect();
    sorted.sort_by_key(|e| e.mono_ns);
    let mut highest: Vec<&LedgerEvent> = Vec::new();
    let mut found = Vec::new();
    for event in sorted {
        match highest.iter_mut().find(|h| h.resource == event.resource) {
            Some(top) if event.epoch < top.epoch => found.push(((*top).clone(), event.clone())),
            Some(top) => *top = event,
            None => highest.push(event),
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(node: &str, epoch: u64, action: LedgerAction, mono_ns: u64) -> LedgerEvent {
        LedgerEvent {
            resource: "dummy".into(),
            node: node.into(),
            epoch,
            action,
            mono_ns,
            wall_ns: 0,
            pid: 1,
        }
    }

    #[test]
    fn disjoint_holders_pass_and_overlapping_holders_are_found() {
        let clean = vec![
            event("a", 1, LedgerAction::Start, 10),
            event("a", 1, LedgerAction::Stop, 20),
            event("b", 2, LedgerAction::Start, 20),
            event("b", 2, LedgerAction::Fence, 30),
        ];
        let intervals = holding_intervals(&clean);
        assert_eq!(intervals.len(), 2);
        assert_eq!(intervals[0].until_ns, Some(20));
        assert!(overlaps(&intervals).is_empty());

        let broken = vec![
            event("a", 1, LedgerAction::Start, 10),
            event("b", 2, LedgerAction::Start, 15),
            event("a", 1, LedgerAction::Stop, 20),
        ];
        let found = overlaps(&holding_intervals(&broken));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].first.node, "a");
        assert_eq!(found[0].second.node, "b");
    }

    #[test]
    fn an_interval_left_open_overlaps_every_later_start() {
        let events = vec![
            event("a", 1, LedgerAction::Start, 10),
            event("a", 1, LedgerAction::Start, 12),
            event("b", 2, LedgerAction::Start, 1_000),
            event("b", 2, LedgerAction::Stop, 2_000),
        ];
        let intervals = holding_intervals(&events);
        assert_eq!(intervals.len(), 2, "a repeated start keeps one interval");
        assert_eq!(intervals[0].until_ns, None);
        assert_eq!(overlaps(&intervals).len(), 1);
        let panicked = std::panic::catch_unwind(|| assert_no_overlap(&intervals));
        assert!(panicked.is_err());
    }

    #[test]
    fn torn_last_line_is_ignored_but_corruption_inside_is_refused() {
        let path = Path::new("ledger.jsonl");
        let good = serde_json::to_string(&event("a", 1, LedgerAction::Start, 5)).unwrap();
        let torn = format!("{good}\n{{\"resource\":\"dum");
        assert_eq!(parse_ledger(path, &torn).unwrap().len(), 1);
        let corrupt = format!("{good}\nnot json\n{good}\n");
        match parse_ledger(path, &corrupt) {
            Err(LedgerError::Corrupt { line, .. }) => assert_eq!(line, 2),
            other => panic!("expected corruption at line 2, got {other:?}"),
        }
    }

    #[test]
    fn appended_lines_read_back_in_order_with_real_clocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let first = LedgerEvent::now("dummy", "a", 3, LedgerAction::Start);
        let second = LedgerEvent::now("dummy", "a", 3, LedgerAction::Stop);
        append(&path, &first).unwrap();
        append(&path, &second).unwrap();
        let read = read_ledgers(&[&path]).unwrap();
        assert_eq!(read, vec![first.clone(), second]);
        assert!(read[0].mono_ns <= read[1].mono_ns);
        assert!(
            first.wall_ns > 1_600_000_000_000_000_000,
            "wall clock is Unix ns"
        );
    }

    #[test]
    fn a_lower_epoch_after_a_higher_one_is_a_regression() {
        let events = vec![
            event("a", 5, LedgerAction::Start, 10),
            event("a", 5, LedgerAction::Stop, 20),
            event("b", 4, LedgerAction::Start, 30),
        ];
        let found = epoch_regressions(&events);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].1.epoch, 4);
        assert!(epoch_regressions(&events[..2]).is_empty());
    }
}

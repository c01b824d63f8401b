//! The testbed's checkers: pure functions over recorded histories, so each one can be shown to
//! catch a violation on a made-up history and re-run offline on a saved one.
//!
//! All times are `CLOCK_MONOTONIC` nanoseconds. A checker returns the violations it found,
//! one sentence each; an empty list means the history keeps the promise.
//!
//! This file, `arp_checks.rs` and `saved.rs` use nothing but std, serde and each other, so the
//! offline re-check (`examples/testbed_recheck.rs`) includes them by path and judges a saved
//! run with exactly the code the live scenarios use.

use std::collections::BTreeMap;

/// A stretch during which one host held something; `until` is `None` while still held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interval {
    /// The host.
    pub host: String,
    /// Start (ns).
    pub from: u64,
    /// End (ns), if it ended.
    pub until: Option<u64>,
}

impl Interval {
    fn end(&self) -> u64 {
        self.until.unwrap_or(u64::MAX)
    }
}

/// Pairs of intervals of different hosts that share an instant, as sentences.
pub fn overlaps(what: &str, intervals: &[Interval]) -> Vec<String> {
    let mut found = Vec::new();
    for (i, x) in intervals.iter().enumerate() {
        for y in &intervals[i + 1..] {
            if x.host != y.host && x.from < y.end() && y.from < x.end() {
                found.push(format!("{what}: {x:?} overlaps {y:?}"));
            }
        }
    }
    found
}

/// Turns per-host on/off events (in any order) into intervals.
pub fn intervals_from_events(events: &[(String, u64, bool)]) -> Vec<Interval> {
    let mut sorted: Vec<&(String, u64, bool)> = events.iter().collect();
    sorted.sort_by_key(|e| e.1);
    let mut open: BTreeMap<String, u64> = BTreeMap::new();
    let mut out = Vec::new();
    for (host, t, on) in sorted {
        match (*on, open.contains_key(host)) {
            (true, false) => {
                open.insert(host.clone(), *t);
            }
            (false, true) => {
                let from = open.remove(host).unwrap_or(*t);
                out.push(Interval {
                    host: host.clone(),
                    from,
                    until: Some(*t),
                });
            }
            _ => {}
        }
    }
    out.extend(open.into_iter().map(|(host, from)| Interval {
        host,
        from,
        until: None,
    }));
    out.sort_by_key(|i| i.from);
    out
}

/// An address added to or deleted from a host's interface (`ip -ts monitor address`).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct VipEvent {
    /// The host.
    pub host: String,
    /// When `ip` saw it (its `-ts` stamp mapped to the monotonic clock).
    pub t: u64,
    /// When the line reached the checker (monotonic).
    pub received: u64,
    /// Added (true) or deleted.
    pub added: bool,
}

/// Checker 1: the VIP never sits on two hosts at once.
pub fn check_vip(events: &[VipEvent]) -> Vec<String> {
    let flat: Vec<(String, u64, bool)> = events
        .iter()
        .map(|e| (e.host.clone(), e.t, e.added))
        .collect();
    overlaps("VIP held twice", &intervals_from_events(&flat))
}

/// One write probe against a host's own MySQL.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Probe {
    /// The host probed.
    pub host: String,
    /// Before connecting.
    pub start: u64,
    /// After the answer (or the failure).
    pub end: u64,
    /// The INSERT was acknowledged.
    pub ok: bool,
    /// Why not.
    pub error: Option<String>,
}

/// Checker 2: at most one MySQL accepts writes at any instant.
///
/// An acknowledged probe proves its host accepted a write somewhere inside `[start, end]`. A run
/// of acknowledged probes of one host with no failed probe in between proves it accepted writes
/// throughout `[end of the first, start of the last]`. A violation is another host's
/// acknowledged probe lying wholly inside such a stretch, or two such stretches overlapping.
pub fn check_writers(probes: &[Probe]) -> Vec<String> {
    let mut by_host: BTreeMap<&str, Vec<&Probe>> = BTreeMap::new();
    for p in probes {
        by_host.entry(p.host.as_str()).or_default().push(p);
    }
    let mut stretches: Vec<Interval> = Vec::new();
    for (host, list) in &mut by_host {
        list.sort_by_key(|p| p.start);
        let mut run: Vec<&Probe> = Vec::new();
        let mut close = |run: &mut Vec<&Probe>| {
            if let (Some(first), Some(last)) = (run.first(), run.last()) {
                if run.len() >= 2 && first.end < last.start {
                    stretches.push(Interval {
                        host: host.to_string(),
                        from: first.end,
                        until: Some(last.start),
                    });
                }
            }
            run.clear();
        };
        for p in list.iter() {
            if p.ok {
                run.push(p);
            } else {
                close(&mut run);
            }
        }
        close(&mut run);
    }
    let mut found = overlaps("two MySQL servers accepted writes", &stretches);
    for s in &stretches {
        for p in probes.iter().filter(|p| p.ok && p.host != s.host) {
            if s.from <= p.start && p.end <= s.end() {
                found.push(format!(
                    "{} accepted a write within [{}, {}] while {} accepted writes throughout {:?}",
                    p.host, p.start, p.end, s.host, s
                ));
            }
        }
    }
    found
}

/// What the client learned about one write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Outcome {
    /// Acknowledged.
    Ok,
    /// Certainly not applied (no connection, or the server refused the statement).
    Failed,
    /// May or may not be applied (the connection broke or timed out after sending).
    Unknown,
}

/// One write of the client through the VIP.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Write {
    /// The sequence number written.
    pub n: u64,
    /// Before sending.
    pub start: u64,
    /// After the outcome was known.
    pub end: u64,
    /// The outcome.
    pub outcome: Outcome,
    /// Why it did not succeed.
    pub error: Option<String>,
}

/// Checker 4: every acknowledged write is in the table (`present`: sequence number to the
/// server id that stored it), and the acknowledged writes, in the client's (sequential) order,
/// move from one server to another at most `max_moves` times: each move needs an ownership
/// change, so flapping between two servers shows up here.
pub fn check_writes(
    writes: &[Write],
    present: &BTreeMap<u64, u32>,
    max_moves: usize,
) -> Vec<String> {
    let mut found: Vec<String> = writes
        .iter()
        .filter(|w| w.outcome == Outcome::Ok && !present.contains_key(&w.n))
        .map(|w| format!("acknowledged write {} is lost", w.n))
        .collect();
    let runs = server_runs(writes, present);
    if runs.len() > max_moves + 1 {
        found.push(format!(
            "acknowledged writes moved between servers {} times, but ownership changed only {max_moves} times: {runs:?}",
            runs.len() - 1
        ));
    }
    found
}

/// The acknowledged writes grouped into runs of one server: (server id, first n, last n, count).
pub fn server_runs(writes: &[Write], present: &BTreeMap<u64, u32>) -> Vec<(u32, u64, u64, usize)> {
    let mut acked: Vec<(u64, u32)> = writes
        .iter()
        .filter(|w| w.outcome == Outcome::Ok)
        .filter_map(|w| present.get(&w.n).map(|s| (w.n, *s)))
        .collect();
    acked.sort();
    let mut runs: Vec<(u32, u64, u64, usize)> = Vec::new();
    for (n, server) in acked {
        match runs.last_mut() {
            Some(run) if run.0 == server => {
                run.2 = n;
                run.3 += 1;
            }
            _ => runs.push((server, n, n, 1)),
        }
    }
    runs
}

/// One line of the DRBD stand-in's ledger (`drbd/ledger.jsonl` in the run directory).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct RoleChange {
    /// `CLOCK_MONOTONIC` nanoseconds.
    pub t_ns: u64,
    /// The node that changed role.
    pub node: String,
    /// `Primary` or `Secondary`.
    pub role: String,
    /// Other nodes that were Primary at that moment (a disconnected dual Primary).
    #[serde(default)]
    pub other_primaries: Vec<String>,
}

/// Checker 3: no two Primary intervals in the stand-in's ledger overlap, no role change saw
/// another Primary, and at most one read-write mount of the image at any instant.
pub fn check_disk(ledger: &[RoleChange], mounts: &[(String, u64, bool)]) -> Vec<String> {
    let flat: Vec<(String, u64, bool)> = ledger
        .iter()
        .map(|c| (c.node.clone(), c.t_ns, c.role == "Primary"))
        .collect();
    let mut found = overlaps("DRBD Primary twice", &intervals_from_events(&flat));
    for c in ledger.iter().filter(|c| !c.other_primaries.is_empty()) {
        found.push(format!(
            "{} became {} while {:?} were Primary",
            c.node, c.role, c.other_primaries
        ));
    }
    found.extend(overlaps(
        "image mounted read-write twice",
        &intervals_from_events(mounts),
    ));
    found
}

/// One resource action in an agent's log, with its fencing token.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EpochEvent {
    /// When (monotonic, from the log line's wall-clock stamp).
    pub t: u64,
    /// The node that acted.
    pub node: String,
    /// The epoch the action carried.
    pub epoch: u64,
    /// The log message (`starting group`, `stopping group`, `fencing group`, ...).
    pub action: String,
}

/// Messages of the group that start or restart resources (they take hold of something).
pub const TAKING_ACTIONS: [&str; 2] = ["starting group", "restarting in place"];
/// Every message counted as a resource action.
pub const ACTIONS: [&str; 6] = [
    "starting group",
    "restarting in place",
    "stopping group",
    "fencing group",
    "group started",
    "group stopped",
];

/// Checker 5: fencing tokens. Taking actions, in real-time order, never carry a lower epoch
/// than an earlier one, and a taking action by another node carries a strictly higher one; no
/// two nodes take under one epoch, and nothing is taken under epoch 0 (no owner). A stop or
/// fence may carry the current epoch of another owner (a non-owner cleaning up); that is noted. Returns (violations, notes) where notes list stop or fence
/// actions that carried an epoch older than a newer holder's (harmless clean-ups, but visible).
pub fn check_epochs(events: &[EpochEvent]) -> (Vec<String>, Vec<String>) {
    let mut sorted: Vec<&EpochEvent> = events.iter().collect();
    sorted.sort_by_key(|e| e.t);
    let mut found = Vec::new();
    let mut notes = Vec::new();
    let mut last_take: Option<&EpochEvent> = None;
    let mut owner_of: BTreeMap<u64, &str> = BTreeMap::new();
    let mut highest = 0;
    for e in sorted {
        if e.epoch == 0 {
            // Epoch 0 is "no owner yet": the start-up fence every node runs carries it.
            if TAKING_ACTIONS.contains(&e.action.as_str()) {
                found.push(format!("{} `{}` with epoch 0", e.node, e.action));
            }
            continue;
        }
        let taking = TAKING_ACTIONS.contains(&e.action.as_str());
        match owner_of.get(&e.epoch) {
            Some(other) if *other != e.node && taking => found.push(format!(
                "epoch {} taken by both {other} and {} ({})",
                e.epoch, e.node, e.action
            )),
            Some(other) if *other != e.node => notes.push(format!(
                "{} `{}` carried epoch {}, which belongs to {other}",
                e.node, e.action, e.epoch
            )),
            Some(_) => {}
            None if taking => {
                owner_of.insert(e.epoch, &e.node);
            }
            None => {}
        }
        if taking {
            if let Some(prev) = last_take {
                let regressed =
                    e.epoch < prev.epoch || (e.node != prev.node && e.epoch == prev.epoch);
                if regressed {
                    found.push(format!(
                        "{} `{}` with epoch {} after {} `{}` with epoch {}",
                        e.node, e.action, e.epoch, prev.node, prev.action, prev.epoch
                    ));
                }
            }
            last_take = Some(e);
            highest = highest.max(e.epoch);
        } else if e.epoch < highest {
            notes.push(format!(
                "{} `{}` with epoch {} after epoch {highest} had started",
                e.node, e.action, e.epoch
            ));
        }
    }
    (found, notes)
}

/// Parses a daemon log line such as `2026-01-01T00:00:00.123456Z  INFO starting group
/// group=group epoch=5 node=a` into (wall-clock ns, message, epoch).
pub fn parse_action_line(line: &str) -> Option<(u64, &'static str, u64)> {
    let stamp = line.split_whitespace().next()?;
    let wall = parse_utc(stamp)?;
    let action = ACTIONS.iter().find(|a| line.contains(*a))?;
    let epoch = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("epoch="))?
        .parse()
        .ok()?;
    Some((wall, action, epoch))
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = month as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses `2026-01-31T09:53:28.746026Z` (the `Z` optional, any number of fraction digits) as
/// UTC into nanoseconds since the Unix epoch.
pub fn parse_utc(text: &str) -> Option<u64> {
    let text = text.trim().trim_end_matches('Z');
    let (date, time) = text.split_once('T')?;
    let mut d = date.split('-');
    let year: i64 = d.next()?.parse().ok()?;
    let month: u32 = d.next()?.parse().ok()?;
    let day: u32 = d.next()?.parse().ok()?;
    let (hms, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.split(':');
    let hour: u64 = t.next()?.parse().ok()?;
    let minute: u64 = t.next()?.parse().ok()?;
    let second: u64 = t.next()?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    let mut nanos: u64 = 0;
    for (i, c) in fraction.chars().take(9).enumerate() {
        nanos += c.to_digit(10)? as u64 * 10u64.pow(8 - i as u32);
    }
    let days = days_from_civil(year, month, day);
    let secs = days.checked_mul(86_400)? as u64 + hour * 3600 + minute * 60 + second;
    Some(secs * 1_000_000_000 + nanos)
}

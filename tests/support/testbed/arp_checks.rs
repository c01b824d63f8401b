//! The client-side half of checker 1 (docs/TESTBED.md): what host `c` learns about the VIP over ARP,
//! and whether its neighbour entry follows the owner. Pure functions and records only, so the
//! offline re-check includes this file by path (see `checks.rs`).
//!
//! **ARP probes.** A prober in `c` broadcasts an ARP request for the VIP every
//! [`PROBE_INTERVAL_NS`] from a MAC no host has ([`PROBER_MAC`]) and sender address 0.0.0.0
//! (the RFC 5227 probe form). Linux answers such a probe for an address it holds, unicast to the
//! prober's MAC, and creates no neighbour entry for it; in `c` the answer arrives as "another
//! host's" frame, which the packet socket sees and the kernel's ARP code ignores. So the probes
//! observe without steering anything: neither `c`'s neighbour entry (checked below) nor the
//! owners' tables are touched by them. Every ARP frame that reaches `c` with the VIP as sender
//! protocol address is a *sighting*: a probe answer, a gratuitous announcement, or the holder's
//! own traffic. Each one shows that its sender MAC held the VIP when it sent the frame.
//!
//! **The window.** Two different MACs sighted less than [`ARP_WINDOW_NS`] apart count as two hosts
//! answering for the VIP at the same instant. The window must be wider than the spread of two
//! holders' answers to one probe: on this bridge an answer arrives about 0.1 ms after the request
//! and never took more than 1 ms in the suite's runs (the history keeps each answer's latency, the
//! verdict reports the largest), so even answers held up by a busy CPU fall well inside. And it
//! must be narrower than the shortest legitimate handover: between the old owner's last frame and
//! the new owner's first lie at least the old owner's MariaDB stop, unmount and DRBD demotion and
//! the new owner's promotion, mount and MariaDB start; the fastest handover (a planned switchover)
//! brought two MACs no closer than 209 ms in the suite's runs, every other scenario more than a
//! second (the verdict reports how close two MACs came in each run). 50 ms sits between the two
//! with a wide margin on both sides. A double ownership lasting one probe interval or longer is
//! therefore always caught (one probe gets two answers); a shorter one may fall between probes, and
//! the `ip monitor` checker, which sees every address change, covers it.
//!
//! **Holder.** A sighting should come from a host that held the VIP then according to its own
//! `ip monitor` (within [`HOLDER_SLACK_NS`], for the lag of `ip monitor`'s print-time stamps
//! behind the kernel, well under a millisecond on an idle machine). One from a host that had
//! already let go while another host held the VIP is a violation: it steers clients away from
//! the owner. One while no host held the VIP misleads nobody (the next owner's announcement
//! corrects every client) and is only noted: an agent resumed after a pause longer than its
//! lease sends the overdue round of its gratuitous ARP burst before it fences itself.
//!
//! **Neighbour entry.** `ip -ts monitor neigh` in `c` records every change of `c`'s entry for the
//! VIP. After each failover the entry must hold the new owner's MAC within [`NEIGH_BOUND_NS`] of
//! the VIP coming up there (the gratuitous ARP burst does that at once; without it the kernel
//! would only notice after its DELAY and PROBE states, five seconds and more), stay there until
//! the next fault, and the client's first acknowledged write must follow within
//! [`CLIENT_BOUND_NS`], so the client never had to fail for long.

use super::checks::{intervals_from_events, Outcome, VipEvent, Write};
use super::saved::Failover;
use std::collections::BTreeMap;

/// The source MAC of the prober's requests: locally administered, used by no testbed host.
pub const PROBER_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0xee, 0x50];
/// Time between two ARP probes from `c` (10 per second).
pub const PROBE_INTERVAL_NS: u64 = 100_000_000;
/// Two different MACs sighted closer than this answered for the VIP at the same instant.
pub const ARP_WINDOW_NS: u64 = 50_000_000;
/// How far a sighting may lie outside its sender's VIP interval as `ip monitor` stamped it.
pub const HOLDER_SLACK_NS: u64 = 100_000_000;
/// Longest time from the VIP coming up on the new owner to `c`'s entry holding its MAC.
pub const NEIGH_BOUND_NS: u64 = 1_000_000_000;
/// Longest time from the VIP coming up on the new owner to the client's next acknowledged write.
pub const CLIENT_BOUND_NS: u64 = 3_000_000_000;

const ETHERTYPE_ARP: u16 = 0x0806;
/// Length of an Ethernet frame carrying an ARP packet, without padding.
pub const ARP_FRAME_LEN: usize = 42;

/// `02:00:00:00:00:11` for six bytes.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The prober's broadcast request for `target`: sender `mac` and 0.0.0.0, target MAC zero.
pub fn probe_frame(mac: [u8; 6], target: [u8; 4]) -> [u8; ARP_FRAME_LEN] {
    let mut frame = [0u8; ARP_FRAME_LEN];
    frame[0..6].copy_from_slice(&[0xff; 6]);
    frame[6..12].copy_from_slice(&mac);
    frame[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    frame[14..16].copy_from_slice(&1u16.to_be_bytes());
    frame[16..18].copy_from_slice(&0x0800u16.to_be_bytes());
    frame[18] = 6;
    frame[19] = 4;
    frame[20..22].copy_from_slice(&1u16.to_be_bytes());
    frame[22..28].copy_from_slice(&mac);
    // Sender protocol address 0.0.0.0 (already zero), target MAC zero, target address.
    frame[38..42].copy_from_slice(&target);
    frame
}

/// The fields of one Ethernet/IPv4 ARP frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpFrame {
    /// 1 request, 2 reply.
    pub op: u16,
    /// Sender hardware address.
    pub sha: [u8; 6],
    /// Sender protocol address.
    pub spa: [u8; 4],
    /// Target hardware address.
    pub tha: [u8; 6],
    /// Target protocol address.
    pub tpa: [u8; 4],
}

/// Parses an Ethernet frame; `None` unless it is an Ethernet/IPv4 ARP packet.
pub fn parse_arp_frame(frame: &[u8]) -> Option<ArpFrame> {
    if frame.len() < ARP_FRAME_LEN
        || frame[12..14] != ETHERTYPE_ARP.to_be_bytes()
        || frame[14..16] != 1u16.to_be_bytes()
        || frame[16..18] != 0x0800u16.to_be_bytes()
        || frame[18] != 6
        || frame[19] != 4
    {
        return None;
    }
    let mut f = ArpFrame {
        op: u16::from_be_bytes([frame[20], frame[21]]),
        sha: [0; 6],
        spa: [0; 4],
        tha: [0; 6],
        tpa: [0; 4],
    };
    f.sha.copy_from_slice(&frame[22..28]);
    f.spa.copy_from_slice(&frame[28..32]);
    f.tha.copy_from_slice(&frame[32..38]);
    f.tpa.copy_from_slice(&frame[38..42]);
    Some(f)
}

/// What kind of frame showed a VIP holder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ArpKind {
    /// A reply to the prober's request.
    Reply,
    /// A gratuitous announcement (sender and target address both the VIP).
    Announce,
    /// Any other frame with the VIP as sender address (the holder resolving a client).
    Other,
}

/// Classifies a frame seen in `c`: `None` unless its sender address is `vip`.
pub fn classify(frame: &ArpFrame, vip: [u8; 4], prober: [u8; 6]) -> Option<ArpKind> {
    if frame.spa != vip {
        return None;
    }
    Some(if frame.tpa == vip {
        ArpKind::Announce
    } else if frame.op == 2 && frame.tha == prober {
        ArpKind::Reply
    } else {
        ArpKind::Other
    })
}

/// One ARP frame from a VIP holder, seen in `c`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ArpSighting {
    /// When the prober received it (monotonic ns).
    pub t: u64,
    /// The sender hardware address, `02:00:00:00:00:11`.
    pub mac: String,
    /// What kind of frame.
    pub kind: ArpKind,
    /// For a reply, when the latest probe before it was sent.
    pub probe_sent: Option<u64>,
}

/// The host whose interface has `mac`, from `macs` (host to MAC).
fn host_of<'m>(macs: &'m BTreeMap<String, String>, mac: &str) -> Option<&'m str> {
    macs.iter()
        .find(|(_, m)| m.eq_ignore_ascii_case(mac))
        .map(|(h, _)| h.as_str())
}

/// Checker 1, ARP part: only the MACs in `macs` (the management hosts' interfaces) answer for
/// the VIP, never two of them within [`ARP_WINDOW_NS`], and none while another host held the
/// VIP according to `vip` (see the module docs). Returns (violations, notes).
pub fn check_arp(
    sightings: &[ArpSighting],
    macs: &BTreeMap<String, String>,
    vip: &[VipEvent],
) -> (Vec<String>, Vec<String>) {
    let mut sorted: Vec<&ArpSighting> = sightings.iter().collect();
    sorted.sort_by_key(|s| s.t);
    let mut found = Vec::new();
    let mut strangers: BTreeMap<&str, (u64, usize)> = BTreeMap::new();
    for s in &sorted {
        if host_of(macs, &s.mac).is_none() {
            let entry = strangers.entry(s.mac.as_str()).or_insert((s.t, 0));
            entry.1 += 1;
        }
    }
    for (mac, (first, count)) in &strangers {
        found.push(format!(
            "MAC {mac} answered for the VIP {count} time(s) (first at {first}); only {macs:?} may"
        ));
    }

    // Two MACs at once: compare each sighting with the latest one of every other MAC.
    let mut last: BTreeMap<&str, u64> = BTreeMap::new();
    let mut doubles = Vec::new();
    let mut closest: Option<u64> = None;
    for s in &sorted {
        for (mac, t) in &last {
            if *mac != s.mac {
                let gap = s.t - t;
                closest = Some(closest.map_or(gap, |c| c.min(gap)));
                if gap < ARP_WINDOW_NS {
                    doubles.push(format!(
                        "ARP: {mac} at {t} and {} at {} ({:.1} ms apart, window {} ms) both answered for the VIP",
                        s.mac,
                        s.t,
                        gap as f64 / 1e6,
                        ARP_WINDOW_NS / 1_000_000
                    ));
                }
            }
        }
        last.insert(s.mac.as_str(), s.t);
    }
    found.extend(summarise(doubles));

    // Each sighting within its sender's VIP ownership; outside it, harmful only while another
    // host holds the VIP (clients would be steered away from the owner).
    let flat: Vec<(String, u64, bool)> =
        vip.iter().map(|e| (e.host.clone(), e.t, e.added)).collect();
    let held = intervals_from_events(&flat);
    let mut stolen = Vec::new();
    let mut stale = Vec::new();
    for s in &sorted {
        let Some(host) = host_of(macs, &s.mac) else {
            continue;
        };
        let covered = held.iter().any(|i| {
            i.host == host
                && i.from <= s.t.saturating_add(HOLDER_SLACK_NS)
                && i.until
                    .is_none_or(|u| u.saturating_add(HOLDER_SLACK_NS) >= s.t)
        });
        if covered {
            continue;
        }
        let owner = held.iter().find(|i| {
            i.host != host
                && i.from.saturating_add(HOLDER_SLACK_NS) <= s.t
                && i.until
                    .is_none_or(|u| s.t.saturating_add(HOLDER_SLACK_NS) <= u)
        });
        let lost = held
            .iter()
            .filter(|i| i.host == host)
            .filter_map(|i| i.until.filter(|u| *u <= s.t))
            .max();
        let when = lost.map_or("before it ever held the VIP".into(), |u| {
            format!("{:.0} ms after it lost the VIP", (s.t - u) as f64 / 1e6)
        });
        match owner {
            Some(owner) => stolen.push(format!(
                "ARP: {host} ({}) sent {:?} for the VIP at {}, {when}, while {} held it: clients are steered away from the owner",
                s.mac, s.kind, s.t, owner.host
            )),
            None => stale.push(format!(
                "{host} ({}) sent {:?} for the VIP at {}, {when}, while no host held it (a late announcement; harmless only because nobody owned the VIP then)",
                s.mac, s.kind, s.t
            )),
        }
    }
    found.extend(summarise(stolen));

    let mut notes = Vec::new();
    let count = |k: ArpKind| sorted.iter().filter(|s| s.kind == k).count();
    let latency = sorted
        .iter()
        .filter_map(|s| s.probe_sent.map(|p| s.t.saturating_sub(p)))
        .max();
    notes.push(format!(
        "ARP sightings: {} probe replies, {} announcements, {} other; largest reply latency {}; closest two MACs came {}",
        count(ArpKind::Reply),
        count(ArpKind::Announce),
        count(ArpKind::Other),
        latency.map_or("-".into(), |l| format!("{:.2} ms", l as f64 / 1e6)),
        closest.map_or("- (one MAC only)".into(), |c| format!("{:.0} ms", c as f64 / 1e6)),
    ));
    notes.extend(summarise(stale));
    (found, notes)
}

/// The first five of a list of like violations, plus how many more there were.
fn summarise(mut list: Vec<String>) -> Vec<String> {
    if list.len() > 5 {
        let more = list.len() - 5;
        list.truncate(5);
        list.push(format!("... and {more} more like these"));
    }
    list
}

/// One change of `c`'s neighbour entry for the VIP (`ip -ts monitor neigh`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NeighEvent {
    /// When `ip` saw it (its stamp mapped to the monotonic clock).
    pub t: u64,
    /// When the line reached the observer (monotonic).
    pub received: u64,
    /// The link-layer address, if the entry has one.
    pub mac: Option<String>,
    /// The NUD state (`REACHABLE`, `STALE`, `FAILED`, ...).
    pub state: String,
    /// The entry was deleted.
    pub deleted: bool,
}

impl NeighEvent {
    /// The MAC the kernel would send to after this event, if any.
    pub fn usable_mac(&self) -> Option<&str> {
        if self.deleted || self.state == "FAILED" || self.state == "INCOMPLETE" {
            return None;
        }
        self.mac.as_deref()
    }
}

/// One line of `ip -ts monitor neigh` about `ip`: (stamp, MAC, state, deleted); `None` for
/// other addresses, `miss` requests and lines that are not neighbour changes.
pub fn parse_neigh_line<'l>(
    line: &'l str,
    ip: &str,
) -> Option<(&'l str, Option<String>, String, bool)> {
    let rest = line.strip_prefix('[')?;
    let (stamp, rest) = rest.split_once(']')?;
    let mut words = rest.split_whitespace().peekable();
    let deleted = words.next_if_eq(&"Deleted").is_some();
    if words.peek() == Some(&"miss") {
        return None;
    }
    if words.next()? != ip {
        return None;
    }
    let words: Vec<&str> = words.collect();
    let mac = words
        .iter()
        .position(|w| *w == "lladdr")
        .and_then(|i| words.get(i + 1))
        .map(|m| m.to_ascii_lowercase());
    const STATES: [&str; 9] = [
        "INCOMPLETE",
        "REACHABLE",
        "STALE",
        "DELAY",
        "PROBE",
        "FAILED",
        "NOARP",
        "PERMANENT",
        "NONE",
    ];
    let state = words
        .iter()
        .rev()
        .find(|w| STATES.contains(w))
        .map(|w| w.to_string())
        .unwrap_or_default();
    Some((stamp, mac, state, deleted))
}

/// The MAC `c`'s entry held at instant `t` (after the last event at or before it).
pub fn mac_at(neigh: &[NeighEvent], t: u64) -> Option<&str> {
    neigh
        .iter()
        .filter(|e| e.t <= t)
        .max_by_key(|e| e.t)
        .and_then(NeighEvent::usable_mac)
}

/// How `c` followed one failover; times are monotonic ns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Follow {
    /// The failover's description.
    pub what: String,
    /// The node that took over.
    pub to: String,
    /// When the VIP came up on it (`None`: it never left, or never came).
    pub vip_up: Option<u64>,
    /// Where the delays count from: the VIP coming up, else the failover's start.
    pub from: u64,
    /// The first gratuitous announcement from the new owner's MAC once the VIP came up.
    pub announce: Option<u64>,
    /// The first probe the new owner answered once the VIP came up.
    pub reply: Option<u64>,
    /// When `c`'s entry held the new owner's MAC.
    pub neigh: Option<u64>,
    /// The end of the client's first acknowledged write from `from` on.
    pub client_ok: Option<u64>,
}

fn signed_ms(from: u64, to: u64) -> f64 {
    (to as f64 - from as f64) / 1e6
}

impl Follow {
    /// Milliseconds from `from` to the entry holding the new MAC (negative when `ip monitor`
    /// stamped the entry's change before the VIP's own addition).
    pub fn neigh_ms(&self) -> Option<f64> {
        self.neigh.map(|t| signed_ms(self.from, t))
    }

    /// Milliseconds from `from` to the client's next acknowledged write.
    pub fn client_ms(&self) -> Option<f64> {
        self.client_ok.map(|t| signed_ms(self.from, t))
    }
}

/// How `c` followed `failover`, from the VIP events, ARP sightings, neighbour events and writes.
pub fn follow(
    failover: &Failover,
    vip: &[VipEvent],
    arp: &[ArpSighting],
    neigh: &[NeighEvent],
    writes: &[Write],
    macs: &BTreeMap<String, String>,
) -> Follow {
    let since = failover.since;
    let vip_up = vip
        .iter()
        .filter(|e| e.added && e.host == failover.to && e.t >= since)
        .map(|e| e.t)
        .min();
    let from = vip_up.unwrap_or(since);
    let mac = macs.get(&failover.to).map(|m| m.to_ascii_lowercase());
    // From the VIP's addition on; the window absorbs `ip monitor` stamping the addition after
    // the announcement that follows it, and no earlier frame of the same host comes that close
    // (the VIP was gone for at least a MariaDB restart before).
    let first_arp = |kind: ArpKind| {
        arp.iter()
            .filter(|s| s.kind == kind && s.t >= since && s.t + ARP_WINDOW_NS >= from)
            .filter(|s| Some(&s.mac) == mac.as_ref())
            .map(|s| s.t)
            .min()
    };
    let mut sorted: Vec<&NeighEvent> = neigh.iter().collect();
    sorted.sort_by_key(|e| e.t);
    let neigh_t = mac.as_deref().and_then(|mac| {
        if mac_at(neigh, since) == Some(mac) {
            // Already pointing there (a recovery in place): the first instant from `from` on.
            if mac_at(neigh, from) == Some(mac) {
                return Some(from);
            }
            return sorted
                .iter()
                .find(|e| e.t > from && e.usable_mac() == Some(mac))
                .map(|e| e.t);
        }
        sorted
            .iter()
            .find(|e| e.t >= since && e.usable_mac() == Some(mac))
            .map(|e| e.t)
    });
    let client_ok = writes
        .iter()
        .filter(|w| w.outcome == Outcome::Ok && w.end >= from)
        .map(|w| w.end)
        .min();
    Follow {
        what: failover.what.clone(),
        to: failover.to.clone(),
        vip_up,
        from,
        announce: first_arp(ArpKind::Announce),
        reply: first_arp(ArpKind::Reply),
        neigh: neigh_t,
        client_ok,
    }
}

/// Checker 1, neighbour part: after every failover `c`'s entry holds the new owner's MAC within
/// [`NEIGH_BOUND_NS`] of the VIP coming up and keeps it until the next fault, and the client
/// wrote successfully within [`CLIENT_BOUND_NS`]. Returns (violations, one [`Follow`] per
/// failover, in the order given).
pub fn check_neighbour(
    failovers: &[Failover],
    vip: &[VipEvent],
    arp: &[ArpSighting],
    neigh: &[NeighEvent],
    writes: &[Write],
    macs: &BTreeMap<String, String>,
) -> (Vec<String>, Vec<Follow>) {
    let mut found = Vec::new();
    let mut follows = Vec::new();
    for (i, failover) in failovers.iter().enumerate() {
        let f = follow(failover, vip, arp, neigh, writes, macs);
        let what = format!("{} (to {})", f.what, f.to);
        let Some(mac) = macs.get(&f.to).map(|m| m.to_ascii_lowercase()) else {
            found.push(format!("{what}: no MAC known for {}", f.to));
            follows.push(f);
            continue;
        };
        match f.neigh {
            None => found.push(format!(
                "{what}: the client's neighbour entry for the VIP never held {mac}"
            )),
            Some(t) if t > f.from.saturating_add(NEIGH_BOUND_NS) => found.push(format!(
                "{what}: the client's neighbour entry took {:.0} ms after the VIP came up to hold {mac} (bound {} ms)",
                signed_ms(f.from, t),
                NEIGH_BOUND_NS / 1_000_000
            )),
            Some(t) => {
                // It must stay on the owner until the next fault.
                let until = failovers
                    .get(i + 1)
                    .map(|next| next.fault_at)
                    .unwrap_or(u64::MAX);
                if let Some(e) = neigh.iter().find(|e| {
                    e.t > t && e.t < until && e.usable_mac().is_some_and(|m| m != mac)
                }) {
                    found.push(format!(
                        "{what}: the client's neighbour entry went back to {:?} at {} before the next fault",
                        e.mac, e.t
                    ));
                }
            }
        }
        match f.client_ok {
            None => found.push(format!(
                "{what}: no acknowledged client write after the VIP came up"
            )),
            Some(t) if t > f.from.saturating_add(CLIENT_BOUND_NS) => found.push(format!(
                "{what}: the client's first acknowledged write came {:.0} ms after the VIP came up (bound {} ms)",
                signed_ms(f.from, t),
                CLIENT_BOUND_NS / 1_000_000
            )),
            Some(_) => {}
        }
        follows.push(f);
    }
    (found, follows)
}

//! Checker 1's client side (ARP and the neighbour entry) and the offline re-check of a saved
//! run directory, on made-up histories: each checker passes a clean history and catches the
//! violation it exists for, and `saved::recheck` gives the same verdicts on files as the live
//! scenario gives in memory. A child of `tests/testbed.rs` (included by path), so these tests
//! run once, in the testbed binary, and need no root.

use super::support::testbed::arp_checks::*;
use super::support::testbed::checks::{EpochEvent, Outcome, Probe, RoleChange, VipEvent, Write};
use super::support::testbed::saved::{self, Expect, Failover, RecheckError, SavedRun, Scenario};
use std::collections::BTreeMap;

const MS: u64 = 1_000_000;
const S: u64 = 1_000 * MS;
const MAC_A: &str = "02:00:00:00:00:11";
const MAC_B: &str = "02:00:00:00:00:12";

fn macs() -> BTreeMap<String, String> {
    [
        ("a".to_string(), MAC_A.to_string()),
        ("b".to_string(), MAC_B.to_string()),
    ]
    .into()
}

fn vip(host: &str, t: u64, added: bool) -> VipEvent {
    VipEvent {
        host: host.into(),
        t,
        received: t,
        added,
    }
}

fn seen(mac: &str, t: u64, kind: ArpKind) -> ArpSighting {
    ArpSighting {
        t,
        mac: mac.into(),
        kind,
        probe_sent: (kind == ArpKind::Reply).then(|| t - MS / 10),
    }
}

/// A probe answered every 100 ms by `mac` over `[from, until)`.
fn answers(mac: &str, from: u64, until: u64) -> Vec<ArpSighting> {
    (from..until)
        .step_by(100 * MS as usize)
        .map(|t| seen(mac, t, ArpKind::Reply))
        .collect()
}

fn neigh(t: u64, mac: Option<&str>, state: &str) -> NeighEvent {
    NeighEvent {
        t,
        received: t,
        mac: mac.map(str::to_string),
        state: state.into(),
        deleted: false,
    }
}

fn ok_write(n: u64, end: u64) -> Write {
    Write {
        n,
        start: end - 2 * MS,
        end,
        outcome: Outcome::Ok,
        error: None,
    }
}

#[test]
fn arp_frames_and_neighbour_lines_parse() {
    let vip = [198, 18, 0, 100];
    let probe = probe_frame(PROBER_MAC, vip);
    let parsed = parse_arp_frame(&probe).expect("an ARP frame");
    assert_eq!(parsed.op, 1);
    assert_eq!(
        parsed.spa,
        [0, 0, 0, 0],
        "a probe carries sender address 0.0.0.0"
    );
    assert_eq!(parsed.tpa, vip);
    assert_eq!(parsed.sha, PROBER_MAC);
    assert_eq!(
        classify(&parsed, vip, PROBER_MAC),
        None,
        "our own probe is no sighting"
    );

    // The holder's answer: opcode 2, VIP as sender, our MAC as target.
    let mut reply = probe;
    reply[20..22].copy_from_slice(&2u16.to_be_bytes());
    reply[22..28].copy_from_slice(&[2, 0, 0, 0, 0, 0x11]);
    reply[28..32].copy_from_slice(&vip);
    reply[32..38].copy_from_slice(&PROBER_MAC);
    reply[38..42].copy_from_slice(&[0, 0, 0, 0]);
    let parsed = parse_arp_frame(&reply).expect("an ARP frame");
    assert_eq!(classify(&parsed, vip, PROBER_MAC), Some(ArpKind::Reply));
    assert_eq!(format_mac(&parsed.sha), MAC_A);
    // A gratuitous announcement: VIP as sender and target.
    let mut announce = reply;
    announce[38..42].copy_from_slice(&vip);
    let parsed = parse_arp_frame(&announce).expect("an ARP frame");
    assert_eq!(classify(&parsed, vip, PROBER_MAC), Some(ArpKind::Announce));
    // Not ARP, or too short.
    let mut ip = reply;
    ip[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    assert!(parse_arp_frame(&ip).is_none());
    assert!(parse_arp_frame(&reply[..30]).is_none());

    let ip = "198.18.0.100";
    let line =
        "[2026-11-25T10:46:49.508123] 198.18.0.100 dev eth0 lladdr 02:00:00:00:00:11 REACHABLE ";
    assert_eq!(
        parse_neigh_line(line, ip),
        Some((
            "2026-11-25T10:46:49.508123",
            Some(MAC_A.to_string()),
            "REACHABLE".to_string(),
            false
        ))
    );
    let failed = "[2026-11-25T10:46:50.532361] 198.18.0.100 dev eth0 FAILED ";
    let (_, mac, state, deleted) = parse_neigh_line(failed, ip).expect("a line");
    assert_eq!((mac, state.as_str(), deleted), (None, "FAILED", false));
    let gone = "[2026-11-25T10:46:50.532386] Deleted 198.18.0.100 dev eth0 FAILED ";
    assert!(parse_neigh_line(gone, ip).expect("a line").3);
    let other = "[2026-11-25T10:46:49.5] 198.18.0.12 dev eth0 lladdr 02:00:00:00:00:12 STALE";
    assert!(parse_neigh_line(other, ip).is_none());
    assert!(parse_neigh_line(
        "[2026-11-25T10:46:49.5] miss 198.18.0.100 dev eth0  INCOMPLETE",
        ip
    )
    .is_none());
    assert!(parse_neigh_line("198.18.0.100 dev eth0 lladdr 02:00:00:00:00:11 STALE", ip).is_none());
}

#[test]
fn two_arp_macs_and_strangers_are_caught() {
    let holders = [
        vip("a", S, true),
        vip("a", 5 * S, false),
        vip("b", 6 * S, true),
    ];
    let mut clean = answers(MAC_A, S, 5 * S);
    clean.push(seen(MAC_B, 6 * S + MS, ArpKind::Announce));
    clean.extend(answers(MAC_B, 6 * S + 50 * MS, 8 * S));
    let (violations, notes) = check_arp(&clean, &macs(), &holders);
    assert!(violations.is_empty(), "{violations:?}");
    assert!(
        notes[0].contains("closest two MACs came 1101 ms"),
        "{notes:?}"
    );

    // One probe answered by both a and b.
    let mut both = clean.clone();
    both.push(seen(MAC_B, 3 * S + MS / 5, ArpKind::Reply));
    let (violations, _) = check_arp(&both, &macs(), &holders);
    assert!(
        violations.iter().any(|v| v.contains("both answered")),
        "{violations:?}"
    );
    assert!(
        violations
            .iter()
            .any(|v| v.contains("before it ever held the VIP, while a held it")),
        "b answered outside its ownership: {violations:?}"
    );

    // An unknown MAC answering.
    let mut stranger = clean.clone();
    stranger.push(seen("02:00:00:00:00:50", 7 * S, ArpKind::Other));
    let (violations, _) = check_arp(&stranger, &macs(), &holders);
    assert!(
        violations
            .iter()
            .any(|v| v.contains("02:00:00:00:00:50 answered")),
        "{violations:?}"
    );

    // The old owner announcing long after it let go, with nobody else near in time.
    let mut late = clean.clone();
    late.push(seen(MAC_A, 20 * S, ArpKind::Announce));
    let (violations, _) = check_arp(&late, &macs(), &holders);
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert!(
        violations[0].contains("a (02:00:00:00:00:11) sent Announce"),
        "{violations:?}"
    );
    assert!(violations[0].contains("while b held it"), "{violations:?}");

    // The same late announcement while nobody holds the VIP misleads no one: noted only.
    let unowned = [vip("a", S, true), vip("a", 5 * S, false)];
    let mut alone = answers(MAC_A, S, 5 * S);
    alone.push(seen(MAC_A, 8 * S, ArpKind::Announce));
    let (violations, notes) = check_arp(&alone, &macs(), &unowned);
    assert!(violations.is_empty(), "{violations:?}");
    assert!(
        notes
            .iter()
            .any(|n| n.contains("3000 ms after it lost the VIP")),
        "{notes:?}"
    );
}

fn failover(to: &str, at: u64) -> Failover {
    Failover {
        what: "test".into(),
        fault_at: at,
        since: at,
        down: vec![],
        to: to.into(),
    }
}

#[test]
fn neighbour_entry_must_follow_the_owner() {
    let holders = [
        vip("a", S, true),
        vip("a", 5 * S, false),
        vip("b", 6 * S, true),
    ];
    let moved = [failover("b", 4 * S)];
    let writes = [ok_write(1, 2 * S), ok_write(2, 6 * S + 200 * MS)];
    let arp = [seen(MAC_B, 6 * S + MS, ArpKind::Announce)];
    let prompt = [
        neigh(S + MS, Some(MAC_A), "REACHABLE"),
        neigh(5 * S + 500 * MS, Some(MAC_A), "STALE"),
        neigh(6 * S + 2 * MS, Some(MAC_B), "STALE"),
        neigh(6 * S + 20 * MS, Some(MAC_B), "REACHABLE"),
    ];
    let (violations, follows) = check_neighbour(&moved, &holders, &arp, &prompt, &writes, &macs());
    assert!(violations.is_empty(), "{violations:?}");
    assert_eq!(follows[0].vip_up, Some(6 * S));
    assert_eq!(follows[0].neigh_ms(), Some(2.0));
    assert_eq!(follows[0].client_ms(), Some(200.0));
    assert_eq!(follows[0].announce, Some(6 * S + MS));

    // The kernel found the new MAC only after its own probing (no gratuitous ARP).
    let slow = [
        neigh(S + MS, Some(MAC_A), "REACHABLE"),
        neigh(9 * S, None, "FAILED"),
        neigh(9 * S + 5 * MS, Some(MAC_B), "REACHABLE"),
    ];
    let late_write = [ok_write(1, 2 * S), ok_write(2, 9 * S + 10 * MS)];
    let (violations, _) = check_neighbour(&moved, &holders, &arp, &slow, &late_write, &macs());
    assert_eq!(violations.len(), 2, "{violations:?}");
    assert!(violations[0].contains("took 3005 ms"), "{violations:?}");
    assert!(violations[1].contains("first acknowledged write came 3010 ms"));

    // Never on b, or back to a afterwards.
    let never = [neigh(S + MS, Some(MAC_A), "REACHABLE")];
    let (violations, _) = check_neighbour(&moved, &holders, &arp, &never, &writes, &macs());
    assert!(
        violations[0].contains("never held 02:00:00:00:00:12"),
        "{violations:?}"
    );
    let mut back = prompt.to_vec();
    back.push(neigh(7 * S, Some(MAC_A), "STALE"));
    let (violations, _) = check_neighbour(&moved, &holders, &arp, &back, &writes, &macs());
    assert!(violations[0].contains("went back"), "{violations:?}");

    // A recovery in place: the entry already points at the owner, so no delay.
    let in_place = [failover("a", 2 * S)];
    let restarted = [
        vip("a", S, true),
        vip("a", 2 * S + MS, false),
        vip("a", 3 * S, true),
    ];
    let writes = [ok_write(1, 1500 * MS), ok_write(2, 3 * S + 100 * MS)];
    let (violations, follows) =
        check_neighbour(&in_place, &restarted, &[], &prompt[..1], &writes, &macs());
    assert!(violations.is_empty(), "{violations:?}");
    assert_eq!(follows[0].neigh_ms(), Some(0.0));
}

/// A small run: a owns the VIP from 1 s to 10 s, b from 11 s (failover at 9.9 s); every
/// write is stored. `broken` adds b holding the VIP and answering ARP from 9 s while a
/// still does, and loses acknowledged write 5.
fn synthetic_run(broken: bool) -> (SavedRun, Vec<RoleChange>) {
    let mut vip_events = vec![
        vip("a", S, true),
        vip("a", 10 * S, false),
        vip("b", 11 * S, true),
    ];
    let mut arp = answers(MAC_A, S + 50 * MS, 10 * S);
    arp.push(seen(MAC_B, 11 * S + MS, ArpKind::Announce));
    arp.extend(answers(MAC_B, 11 * S + 50 * MS, 15 * S));
    if broken {
        vip_events.push(vip("b", 9 * S, true));
        arp.push(seen(MAC_B, 9 * S + 50 * MS + MS / 5, ArpKind::Reply));
    }
    let writes: Vec<Write> = (1..=8)
        .map(|n| {
            ok_write(
                n,
                if n <= 4 {
                    n * S + 500 * MS
                } else {
                    (n + 7) * S
                },
            )
        })
        .collect();
    let mut present: BTreeMap<u64, u32> =
        (1..=8).map(|n| (n, if n <= 4 { 11 } else { 12 })).collect();
    if broken {
        present.remove(&5);
    }
    let probes = [("a", 2, 9, true), ("b", 12, 14, true)]
        .iter()
        .flat_map(|(host, from, to, ok)| {
            (*from..=*to).map(move |s| Probe {
                host: host.to_string(),
                start: s * S,
                end: s * S + 5 * MS,
                ok: *ok,
                error: None,
            })
        })
        .collect();
    let role = |t, node: &str, role: &str| RoleChange {
        t_ns: t,
        node: node.into(),
        role: role.into(),
        other_primaries: vec![],
    };
    let ledger = vec![
        role(S / 2, "a", "Primary"),
        role(10 * S + 300 * MS, "a", "Secondary"),
        role(10 * S + 400 * MS, "b", "Primary"),
    ];
    let action = |t, node: &str, epoch, action: &str| EpochEvent {
        t,
        node: node.into(),
        epoch,
        action: action.into(),
    };
    let run = SavedRun {
        scenario: Scenario {
            name: "synthetic".into(),
            seed: 7,
            expect: Some(Expect {
                moves: 1,
                read_back: true,
            }),
            failovers: vec![failover("b", 9 * S + 900 * MS)],
            macs: macs(),
            arp_probes_sent: 140,
        },
        vip: vip_events,
        arp,
        neigh: vec![
            neigh(S + 100 * MS, Some(MAC_A), "REACHABLE"),
            neigh(11 * S + 2 * MS, Some(MAC_B), "STALE"),
        ],
        probes,
        writes,
        mounts: vec![
            ("a".into(), S / 2 + MS, true),
            ("a".into(), 10 * S + 200 * MS, false),
            ("b".into(), 10 * S + 500 * MS, true),
        ],
        ledger: Vec::new(),
        epochs: vec![
            action(S / 2, "a", 2, "starting group"),
            action(10 * S, "a", 2, "stopping group"),
            action(10 * S + 400 * MS, "b", 5, "starting group"),
        ],
        present: Some(present),
    };
    (run, ledger)
}

/// Writes `run` the way a scenario does (the ledger as the stand-in writes it).
fn save(run: &SavedRun, ledger: &[RoleChange]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temp dir");
    run.write(dir.path()).expect("the run is written");
    let path = saved::ledger_path(dir.path());
    std::fs::create_dir_all(path.parent().expect("drbd dir")).expect("drbd dir");
    let lines: String = ledger
        .iter()
        .map(|c| serde_json::to_string(c).expect("json") + "\n")
        .collect();
    std::fs::write(path, lines).expect("ledger written");
    dir
}

fn failing(verdicts: &[saved::Verdict]) -> Vec<&'static str> {
    verdicts
        .iter()
        .filter(|v| !v.violations.is_empty())
        .map(|v| v.checker)
        .collect()
}

#[test]
fn saved_runs_are_rechecked() {
    let (clean, ledger) = synthetic_run(false);
    let dir = save(&clean, &ledger);
    let verdicts = saved::recheck(dir.path()).expect("a readable run");
    let names: Vec<&str> = verdicts.iter().map(|v| v.checker).collect();
    assert_eq!(
        names,
        [
            "vip",
            "arp",
            "neighbour",
            "writers",
            "disk",
            "writes",
            "epochs"
        ]
    );
    assert!(
        failing(&verdicts).is_empty(),
        "{}",
        saved::render(&verdicts)
    );
    // The verdicts on the files are those on the histories in memory.
    let live = saved::check_run(&SavedRun {
        ledger: ledger.clone(),
        ..clean.clone()
    });
    assert_eq!(saved::render(&live), saved::render(&verdicts));

    let (broken, ledger) = synthetic_run(true);
    let dir = save(&broken, &ledger);
    let verdicts = saved::recheck(dir.path()).expect("a readable run");
    let text = saved::render(&verdicts);
    assert_eq!(failing(&verdicts), ["vip", "arp", "writes"], "{text}");
    assert!(text.contains("VIP held twice"), "{text}");
    assert!(text.contains("both answered for the VIP"), "{text}");
    assert!(text.contains("acknowledged write 5 is lost"), "{text}");

    // A directory that is not a run, and a damaged history, are refused clearly.
    let empty = tempfile::tempdir().expect("a temp dir");
    match saved::recheck(empty.path()) {
        Err(RecheckError::Missing { path }) => assert!(path.ends_with("scenario.json")),
        other => panic!("expected a missing scenario.json, got {other:?}"),
    }
    std::fs::write(dir.path().join("writes.jsonl"), "{\"n\": 1}\n").expect("overwrite");
    match saved::recheck(dir.path()) {
        Err(e @ RecheckError::BadLine { line: 1, .. }) => {
            assert!(e.to_string().contains("writes.jsonl line 1"), "{e}")
        }
        other => panic!("expected a bad line, got {other:?}"),
    }
}

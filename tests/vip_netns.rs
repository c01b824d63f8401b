//! The VIP agent on a real (namespaced) Ethernet segment: the address lands on the right host,
//! a client resolves it to that host's MAC, and after a move the client's neighbour entry follows
//! the new owner from the gratuitous ARP alone, without the client resolving again.
//!
//! Needs root, `ip` (iproute2) and `arping` (iputils-arping). Uses only 198.18.0.0/24 inside
//! namespaces made here and removed on drop.

mod support;

use quorate::resources::agent::{ActionContext, ResourceAgent, ResourceState};
use quorate::resources::vip::netlink::{self, format_mac};
use quorate::resources::vip::{VipAgent, VipConfig};
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, UdpSocket};
use std::time::{Duration, Instant};
use support::netns::{exec_in, join, run_in, spawn_in, Testbed};

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const NETLINK_TIMEOUT: Duration = Duration::from_secs(5);

fn vip_agent() -> VipAgent {
    VipAgent::new(
        "vip",
        VipConfig {
            address: "198.18.0.100/24".into(),
            interface: "eth0".into(),
            arp_count: 3,
            arp_interval_ms: 200,
            timeout_ms: 5000,
        },
    )
}

fn ctx(node: &str, epoch: u64) -> ActionContext {
    ActionContext {
        epoch,
        node: node.into(),
    }
}

fn testbed(tag: &str) -> Option<Testbed> {
    if !support::prereq::ready(tag, &["ip", "arping"]) {
        return None;
    }
    Some(
        Testbed::create(
            tag,
            &[
                ("a", "198.18.0.11", 0x11),
                ("b", "198.18.0.12", 0x12),
                ("c", "198.18.0.50", 0x50),
            ],
        )
        .expect("testbed"),
    )
}

/// The VIP's neighbour entry in the calling thread's namespace: (MAC, state), if it has a MAC.
async fn neighbour_mac() -> Option<([u8; 6], String)> {
    let entries = netlink::neighbours_of(VIP, NETLINK_TIMEOUT)
        .await
        .expect("neighbour dump");
    entries
        .into_iter()
        .find_map(|e| e.mac.map(|mac| (mac, e.state)))
}

/// Every MAC that answers ARP for the VIP from host `ns`, as `arping` sees them.
fn arping_macs(ns: &str) -> BTreeSet<String> {
    // -w bounds the run; replies are what matters, so a non-zero exit is judged by the output.
    let out = exec_in(
        ns,
        "arping",
        &["-c", "3", "-w", "3", "-I", "eth0", "198.18.0.100"],
    )
    .unwrap_or_else(|e| e);
    out.lines()
        .filter(|l| l.contains("reply from 198.18.0.100"))
        .filter_map(|l| {
            let start = l.find('[')? + 1;
            let end = l.find(']')?;
            Some(l[start..end].to_ascii_lowercase())
        })
        .collect()
}

/// `ip -4 addr` lines on eth0 of host `ns` that carry the VIP.
fn vip_lines(ns: &str) -> usize {
    exec_in(ns, "ip", &["-4", "-o", "addr", "show", "dev", "eth0"])
        .expect("ip addr")
        .lines()
        .filter(|l| l.contains("198.18.0.100/24"))
        .count()
}

#[test]
fn vip_moves_and_the_client_neighbour_entry_follows_the_burst() {
    let Some(bed) = testbed("vm") else { return };
    let (a, b, c) = (
        bed.host("a").clone(),
        bed.host("b").clone(),
        bed.host("c").clone(),
    );

    // Owner a takes the VIP.
    let state = run_in(&a.ns, || async {
        let agent = vip_agent();
        assert_eq!(agent.monitor().await, ResourceState::Stopped);
        agent.start(&ctx("a", 1)).await.expect("start on a");
        agent.monitor().await
    });
    assert_eq!(state, ResourceState::Running);
    assert_eq!(vip_lines(&a.ns), 1, "VIP on a's eth0");
    assert_eq!(vip_lines(&b.ns), 0);

    // Client c talks to the VIP once, so it has a neighbour entry, and it points at a.
    let seen = run_in(&c.ns, || async {
        let socket = UdpSocket::bind("198.18.0.50:0").expect("bind");
        socket.send_to(b"probe", (VIP, 9)).expect("send");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(found) = neighbour_mac().await {
                return found;
            }
            assert!(Instant::now() < deadline, "c never resolved the VIP");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    assert_eq!(seen.0, a.mac, "c resolved the VIP to a");
    assert_eq!(arping_macs(&c.ns), BTreeSet::from([format_mac(&a.mac)]));

    // a lets go.
    let state = run_in(&a.ns, || async {
        let agent = vip_agent();
        agent.stop(&ctx("a", 1)).await.expect("stop on a");
        agent.stop(&ctx("a", 1)).await.expect("second stop on a");
        agent.monitor().await
    });
    assert_eq!(state, ResourceState::Stopped);
    assert_eq!(vip_lines(&a.ns), 0);

    // Watch c's entry from its own thread while b takes over; c sends nothing meanwhile.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let b_mac = b.mac;
    let a_mac = a.mac;
    let watcher = spawn_in(&c.ns, move || async move {
        let before = neighbour_mac().await.expect("c still has an entry");
        assert_eq!(before.0, a_mac, "entry still points at a before b starts");
        ready_tx.send(()).expect("signal");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some((mac, state)) = neighbour_mac().await {
                if mac == b_mac {
                    return (Instant::now(), state);
                }
            }
            assert!(Instant::now() < deadline, "c's entry never switched to b");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("watcher ready");
    let (started, finished, state) = run_in(&b.ns, || async {
        let agent = vip_agent();
        let started = Instant::now();
        agent.start(&ctx("b", 2)).await.expect("start on b");
        let finished = Instant::now();
        (started, finished, agent.monitor().await)
    });
    let (switched, entry_state) = join(watcher);
    assert_eq!(state, ResourceState::Running);
    assert!(switched >= started);
    // Stale, not Reachable: the kernel took the MAC from a broadcast announcement, not from an
    // answer to its own request.
    assert_eq!(entry_state, "Stale");
    println!(
        "MEASURED start() -> client neighbour entry switched: {:.2} ms; start() took {:.2} ms",
        (switched - started).as_secs_f64() * 1000.0,
        (finished - started).as_secs_f64() * 1000.0
    );
    assert_eq!(arping_macs(&c.ns), BTreeSet::from([format_mac(&b.mac)]));
    let a_state = run_in(&a.ns, || async { vip_agent().monitor().await });
    assert_eq!(a_state, ResourceState::Stopped);

    // start twice is idempotent: still exactly one VIP entry on b, still running.
    let state = run_in(&b.ns, || async {
        let agent = vip_agent();
        agent.start(&ctx("b", 2)).await.expect("second start on b");
        agent.monitor().await
    });
    assert_eq!(state, ResourceState::Running);
    assert_eq!(vip_lines(&b.ns), 1);

    let state = run_in(&b.ns, || async {
        let agent = vip_agent();
        agent.fence(&ctx("b", 2)).await.expect("fence on b");
        agent.monitor().await
    });
    assert_eq!(state, ResourceState::Stopped);
    assert_eq!(vip_lines(&b.ns), 0);
}

#[test]
fn announce_again_redirects_a_client_that_went_back_to_the_old_mac() {
    let Some(bed) = testbed("va") else { return };
    let (b, c) = (bed.host("b").clone(), bed.host("c").clone());
    // Give c a stale entry pointing at a made-up MAC, as if an old owner had answered.
    exec_in(
        &c.ns,
        "ip",
        &[
            "neigh",
            "replace",
            "198.18.0.100",
            "lladdr",
            "02:00:00:00:00:99",
            "dev",
            "eth0",
            "nud",
            "stale",
        ],
    )
    .expect("seed neighbour");
    run_in(&b.ns, || async {
        let agent = vip_agent();
        agent.start(&ctx("b", 3)).await.expect("start on b");
    });
    let after_start = run_in(&c.ns, || async { neighbour_mac().await });
    assert_eq!(after_start.map(|(m, _)| m), Some(b.mac));
    exec_in(
        &c.ns,
        "ip",
        &[
            "neigh",
            "replace",
            "198.18.0.100",
            "lladdr",
            "02:00:00:00:00:99",
            "dev",
            "eth0",
            "nud",
            "stale",
        ],
    )
    .expect("re-seed neighbour");
    run_in(&b.ns, || async {
        vip_agent().announce(&ctx("b", 3)).await.expect("announce");
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = run_in(&c.ns, || async { neighbour_mac().await });
        if now.as_ref().map(|(m, _)| *m) == Some(b.mac) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "announce did not redirect c: {now:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    run_in(&b.ns, || async {
        vip_agent().stop(&ctx("b", 3)).await.expect("stop")
    });
}

#[test]
fn validate_checks_the_interface_in_the_callers_namespace() {
    let Some(bed) = testbed("vv") else { return };
    let switch_port = VipConfig {
        address: "198.18.0.100/24".into(),
        interface: "p_a".into(),
        arp_count: 3,
        arp_interval_ms: 200,
        timeout_ms: 5000,
    };
    let in_switch = {
        let config = switch_port.clone();
        run_in(&bed.switch, move || async move {
            VipAgent::new("vip", config).validate()
        })
    };
    assert!(in_switch.is_empty(), "{in_switch:?}");
    let a = bed.host("a").ns.clone();
    let in_a = run_in(&a, move || async move {
        let agent = VipAgent::new("vip", switch_port);
        (agent.validate(), agent.monitor().await)
    });
    assert_eq!(in_a.0.len(), 1, "{:?}", in_a.0);
    assert!(in_a.0[0].contains("\"p_a\" does not exist"), "{:?}", in_a.0);
    assert!(matches!(in_a.1, ResourceState::Failed(ref s) if s.contains("does not exist")));
}

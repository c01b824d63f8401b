//! The client host's view of the VIP at the link layer, recorded for checker 1 (see
//! `arp_checks.rs` for what is checked and why the probes disturb nothing):
//!
//! - an ARP prober: a thread inside `c`'s network namespace with a raw `AF_PACKET` socket bound
//!   to `c`'s `eth0` that broadcasts a probe for the VIP every 100 ms and records, with the
//!   monotonic time it arrived, every ARP frame whose sender address is the VIP;
//! - a neighbour monitor: `ip -ts monitor neigh` in `c`, recording each change of `c`'s own
//!   neighbour entry for the VIP (the entry the client's connections actually use).
//!
//! A raw socket rather than `arping`: `arping` sends from the interface's own MAC, so its
//! answers would reach `c`'s kernel and refresh the very neighbour entry the second observer
//! watches; the prober's own MAC keeps the two observations independent.

use super::arp_checks::{
    classify, parse_arp_frame, parse_neigh_line, probe_frame, ArpSighting, NeighEvent, PROBER_MAC,
    PROBE_INTERVAL_NS,
};
use super::history::{mono_ns, parse_utc, WallToMono};
use super::nodes::VIP_IP;
use super::observe::Shared;
use std::io::BufRead;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

const ETH_P_ARP: u16 = 0x0806;

fn vip_octets() -> [u8; 4] {
    VIP_IP
        .parse::<std::net::Ipv4Addr>()
        .map(|ip| ip.octets())
        .unwrap_or([0; 4])
}

/// A raw ARP socket bound to `eth0` of the calling thread's network namespace.
fn open_socket() -> Result<OwnedFd, String> {
    let name = std::ffi::CString::new("eth0").map_err(|e| e.to_string())?;
    // SAFETY: a valid NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(format!(
            "no eth0 in the client's namespace: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: plain socket(2); the result is checked.
    let raw = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from(ETH_P_ARP.to_be()),
        )
    };
    if raw < 0 {
        return Err(format!(
            "cannot open an ARP packet socket (needs CAP_NET_RAW): {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: `raw` is a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: sockaddr_ll is plain old data; zero is a valid start.
    let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    address.sll_family = libc::AF_PACKET as u16;
    address.sll_protocol = ETH_P_ARP.to_be();
    address.sll_ifindex = ifindex as i32;
    // SAFETY: the address pointer and length describe `address`.
    let bound = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&address as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if bound != 0 {
        return Err(format!(
            "cannot bind the ARP socket to eth0: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(fd)
}

/// Receives every queued frame without blocking: (frame, packet type) pairs.
fn drain(fd: &OwnedFd, mut each: impl FnMut(&[u8], u8)) {
    let mut buffer = [0u8; 128];
    loop {
        // SAFETY: as in open_socket.
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: buffer and address are valid for the lengths passed.
        let got = unsafe {
            libc::recvfrom(
                fd.as_raw_fd(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                libc::MSG_DONTWAIT,
                (&mut from as *mut libc::sockaddr_ll).cast(),
                &mut len,
            )
        };
        if got <= 0 {
            return;
        }
        each(&buffer[..got as usize], from.sll_pkttype);
    }
}

/// Starts the ARP prober in `netns`; returns once its socket is open (or why it is not).
pub fn start_prober(
    netns: &str,
    stop: Arc<AtomicBool>,
    out: Shared<ArpSighting>,
    sent: Arc<AtomicU64>,
) -> Result<JoinHandle<()>, String> {
    let (ready, opened) = mpsc::channel::<Result<(), String>>();
    let thread = super::super::netns::spawn_in(netns, move || async move {
        let fd = match open_socket() {
            Ok(fd) => fd,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let _ = ready.send(Ok(()));
        let vip = vip_octets();
        let frame = probe_frame(PROBER_MAC, vip);
        let mut next = mono_ns();
        let mut last_sent: Option<u64> = None;
        while !stop.load(Ordering::Relaxed) {
            let now = mono_ns();
            if now >= next {
                // SAFETY: the frame buffer is valid for its length.
                let n =
                    unsafe { libc::send(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
                if n == frame.len() as isize {
                    last_sent = Some(now);
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                next += PROBE_INTERVAL_NS;
                if next <= now {
                    next = now + PROBE_INTERVAL_NS;
                }
            }
            let wait_ms = (next.saturating_sub(mono_ns()) / 1_000_000 + 1).min(100) as i32;
            let mut poll = libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let ready = unsafe { libc::poll(&mut poll, 1, wait_ms) };
            if ready <= 0 {
                continue;
            }
            drain(&fd, |bytes, pkttype| {
                let t = mono_ns();
                if pkttype == libc::PACKET_OUTGOING {
                    return;
                }
                let Some(frame) = parse_arp_frame(bytes) else {
                    return;
                };
                let Some(kind) = classify(&frame, vip, PROBER_MAC) else {
                    return;
                };
                let probe_sent = match kind {
                    super::arp_checks::ArpKind::Reply => last_sent,
                    _ => None,
                };
                out.lock().expect("arp history").push(ArpSighting {
                    t,
                    mac: super::arp_checks::format_mac(&frame.sha),
                    kind,
                    probe_sent,
                });
            });
        }
    });
    match opened.recv() {
        Ok(Ok(())) => Ok(thread),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => Err("the ARP prober thread died before opening its socket".into()),
    }
}

/// Starts `ip -ts monitor neigh` in `netns`, recording changes of the VIP's entry.
pub fn start_neigh_monitor(
    netns: &str,
    clock: WallToMono,
    out: Shared<NeighEvent>,
) -> Result<(Child, JoinHandle<()>), String> {
    let mut child = Command::new("ip")
        .args(["-n", netns, "-ts", "monitor", "neigh"])
        .env("TZ", "UTC")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start ip monitor neigh in the client: {e}"))?;
    let stdout = child
        .stdout
        .take()
        .ok_or("ip monitor neigh has no stdout")?;
    let thread = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let received = mono_ns();
            let Some((stamp, mac, state, deleted)) = parse_neigh_line(&line, VIP_IP) else {
                continue;
            };
            let t = parse_utc(stamp).map(|w| clock.mono(w)).unwrap_or(received);
            out.lock().expect("neigh history").push(NeighEvent {
                t,
                received,
                mac,
                state,
                deleted,
            });
        }
    });
    Ok((child, thread))
}

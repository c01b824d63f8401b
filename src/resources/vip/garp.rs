//! Gratuitous ARP: how the new VIP owner tells every host on the segment "this address now lives
//! at my MAC", so clients switch at once instead of after their neighbour entries time out.
//!
//! Each round sends two broadcast frames from the owning interface's MAC, both with sender and
//! target protocol address equal to the VIP:
//!
//! 1. the **request** form (opcode 1, target hardware address all zeros), which every Linux
//!    neighbour table accepts as an update of an existing entry, and
//! 2. the **reply** form (opcode 2, target hardware address = own MAC), which some other stacks
//!    and switches honour where they ignore the request form. Linux counts a reply as gratuitous
//!    only when its target hardware address equals its sender's, hence that choice.
//!
//! On Linux either form alone updates an existing entry (verified by hand on the namespace
//! testbed, sending each alone); both are sent as they cost nothing and cover other stacks.
//! Neither creates entries on hosts that never talked to the VIP (Linux `arp_accept=0`), which is
//! the point: only existing clients are redirected. The frames go out of an `AF_PACKET` socket
//! bound to nothing (protocol 0, so it receives nothing) with the interface index given per send.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Length of one Ethernet frame carrying an ARP packet, without padding or FCS.
pub const ARP_FRAME_LEN: usize = 42;
const ETHERTYPE_ARP: u16 = 0x0806;
const BROADCAST: [u8; 6] = [0xff; 6];

/// Which of the two gratuitous forms to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GarpForm {
    /// Opcode 1, target hardware address zero.
    Request,
    /// Opcode 2, target hardware address equal to the sender's.
    Reply,
}

/// Builds one broadcast gratuitous ARP frame announcing `ip` at `mac`.
pub fn build_frame(form: GarpForm, mac: [u8; 6], ip: Ipv4Addr) -> [u8; ARP_FRAME_LEN] {
    let mut frame = [0u8; ARP_FRAME_LEN];
    frame[0..6].copy_from_slice(&BROADCAST);
    frame[6..12].copy_from_slice(&mac);
    frame[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    // ARP header: Ethernet hardware, IPv4 protocol, 6-byte and 4-byte addresses.
    frame[14..16].copy_from_slice(&1u16.to_be_bytes());
    frame[16..18].copy_from_slice(&0x0800u16.to_be_bytes());
    frame[18] = 6;
    frame[19] = 4;
    let (opcode, target_mac) = match form {
        GarpForm::Request => (1u16, [0u8; 6]),
        GarpForm::Reply => (2u16, mac),
    };
    frame[20..22].copy_from_slice(&opcode.to_be_bytes());
    frame[22..28].copy_from_slice(&mac);
    frame[28..32].copy_from_slice(&ip.octets());
    frame[32..38].copy_from_slice(&target_mac);
    frame[38..42].copy_from_slice(&ip.octets());
    frame
}

/// A raw packet socket for sending frames out of one interface.
///
/// It belongs to the network namespace of the thread that opened it.
pub struct PacketSender {
    fd: OwnedFd,
    ifindex: u32,
}

impl PacketSender {
    /// Opens a send-only `AF_PACKET` socket for the interface with index `ifindex`.
    pub fn open(ifindex: u32) -> io::Result<Self> {
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh, valid descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(PacketSender { fd, ifindex })
    }

    /// Sends one complete Ethernet frame (destination MAC first) to the broadcast address.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid starting value.
        let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        address.sll_family = libc::AF_PACKET as u16;
        address.sll_protocol = ETHERTYPE_ARP.to_be();
        address.sll_ifindex = self.ifindex as i32;
        address.sll_halen = 6;
        address.sll_addr[..6].copy_from_slice(&BROADCAST);
        // SAFETY: the buffer and address pointers are valid for the lengths passed.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&address as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        if sent as usize != frame.len() {
            return Err(io::Error::other(format!(
                "sent {sent} of {} bytes",
                frame.len()
            )));
        }
        Ok(())
    }

    /// Sends one round: the request form, then the reply form.
    pub fn send_round(&self, mac: [u8; 6], ip: Ipv4Addr) -> io::Result<()> {
        self.send(&build_frame(GarpForm::Request, mac, ip))?;
        self.send(&build_frame(GarpForm::Reply, mac, ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0x20, 0x30];
    const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);

    #[test]
    fn request_form_has_zero_target_mac_and_vip_as_both_addresses() {
        let frame = build_frame(GarpForm::Request, MAC, VIP);
        assert_eq!(&frame[0..6], &[0xff; 6], "broadcast destination");
        assert_eq!(&frame[6..12], &MAC, "source MAC is the owner's");
        assert_eq!(&frame[12..14], &[0x08, 0x06], "ethertype ARP");
        assert_eq!(&frame[14..20], &[0, 1, 0x08, 0x00, 6, 4]);
        assert_eq!(&frame[20..22], &[0, 1], "opcode request");
        assert_eq!(&frame[22..28], &MAC);
        assert_eq!(&frame[28..32], &[198, 18, 0, 100]);
        assert_eq!(&frame[32..38], &[0; 6]);
        assert_eq!(&frame[38..42], &[198, 18, 0, 100]);
    }

    #[test]
    fn reply_form_repeats_sender_mac_as_target() {
        let frame = build_frame(GarpForm::Reply, MAC, VIP);
        assert_eq!(&frame[20..22], &[0, 2], "opcode reply");
        assert_eq!(
            &frame[32..38],
            &MAC,
            "Linux needs tha == sha for a gratuitous reply"
        );
        assert_eq!(&frame[28..32], &frame[38..42], "sender IP equals target IP");
    }
}

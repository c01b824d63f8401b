//! The few rtnetlink exchanges the VIP agent needs: find a link, list, add and remove its
//! addresses, and read the neighbour table.
//!
//! Why netlink and not `ip`: one process, typed answers, precise kernel error codes (so "already
//! there" and "already gone" are told apart from real failures), and no parsing of text made for
//! humans. A socket belongs to the network namespace of the thread that opens it, so every helper
//! here opens its own connection: the caller's thread decides which host it talks to.

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags};
use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourState};
use rtnetlink::packet_route::AddressFamily;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

/// Why a netlink exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The socket could not be opened (no permission, no netlink in this kernel).
    #[error("cannot open a netlink socket: {0}; the agent needs root (CAP_NET_ADMIN)")]
    Open(std::io::Error),
    /// The kernel answered a request with an error.
    #[error("netlink {what} failed: {source}")]
    Request {
        /// What was asked.
        what: &'static str,
        /// The kernel's answer.
        source: rtnetlink::Error,
    },
    /// The named interface does not exist in this network namespace.
    #[error(
        "interface {0} does not exist in this network namespace; check the `interface` setting"
    )]
    NoSuchInterface(String),
    /// The kernel did not answer in time.
    #[error("netlink {what} got no answer within {timeout:?}; retry")]
    Timeout {
        /// What was asked.
        what: &'static str,
        /// The deadline it missed.
        timeout: Duration,
    },
}

/// What the VIP agent needs to know about a link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    /// The interface index.
    pub index: u32,
    /// Its hardware address, when it has an Ethernet-sized one.
    pub mac: Option<[u8; 6]>,
    /// True when the interface is administratively up.
    pub up: bool,
}

/// One IPv4 neighbour-table entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NeighbourEntry {
    /// The interface index the entry belongs to.
    pub ifindex: u32,
    /// The link-layer address, absent while the entry is incomplete or failed.
    pub mac: Option<[u8; 6]>,
    /// The kernel's state for the entry (`Reachable`, `Stale`, ...), as text.
    pub state: String,
}

/// The kernel's errno inside a netlink error, if it is one.
pub fn errno_of(error: &rtnetlink::Error) -> Option<i32> {
    match error {
        rtnetlink::Error::NetlinkError(message) => Some(message.raw_code().abs()),
        _ => None,
    }
}

/// Opens a connection in the calling thread's network namespace, runs `body` with its handle
/// under `timeout`, and closes it again.
async fn with_handle<T, F, Fut>(
    what: &'static str,
    timeout: Duration,
    body: F,
) -> Result<T, NetlinkError>
where
    F: FnOnce(rtnetlink::Handle) -> Fut,
    Fut: Future<Output = Result<T, NetlinkError>>,
{
    let (connection, handle, _messages) =
        rtnetlink::new_connection().map_err(NetlinkError::Open)?;
    let driver = tokio::spawn(connection);
    let outcome = tokio::time::timeout(timeout, body(handle)).await;
    driver.abort();
    match outcome {
        Ok(result) => result,
        Err(_) => Err(NetlinkError::Timeout { what, timeout }),
    }
}

/// Looks up a link by name.
pub async fn link_by_name(name: &str, timeout: Duration) -> Result<LinkInfo, NetlinkError> {
    let owned = name.to_string();
    with_handle("link lookup", timeout, |handle| async move {
        let found = handle
            .link()
            .get()
            .match_name(owned.clone())
            .execute()
            .try_next()
            .await;
        let message = match found {
            Ok(Some(message)) => message,
            Ok(None) => return Err(NetlinkError::NoSuchInterface(owned)),
            Err(e) if errno_of(&e) == Some(libc::ENODEV) => {
                return Err(NetlinkError::NoSuchInterface(owned))
            }
            Err(source) => {
                return Err(NetlinkError::Request {
                    what: "link lookup",
                    source,
                })
            }
        };
        let mac = message
            .attributes
            .iter()
            .find_map(|attribute| match attribute {
                LinkAttribute::Address(bytes) => <[u8; 6]>::try_from(bytes.as_slice()).ok(),
                _ => None,
            });
        Ok(LinkInfo {
            index: message.header.index,
            mac,
            up: message.header.flags.contains(LinkFlags::Up),
        })
    })
    .await
}

/// The local IPv4 address an address message carries (`IFA_LOCAL`, else `IFA_ADDRESS`).
fn local_v4(message: &AddressMessage) -> Option<Ipv4Addr> {
    let mut fallback = None;
    for attribute in &message.attributes {
        match attribute {
            AddressAttribute::Local(IpAddr::V4(ip)) => return Some(*ip),
            AddressAttribute::Address(IpAddr::V4(ip)) => fallback = Some(*ip),
            _ => {}
        }
    }
    fallback
}

/// Every address message on link `index` whose local address is `ip`, whatever its prefix.
async fn matching_addresses(
    handle: &rtnetlink::Handle,
    index: u32,
    ip: Ipv4Addr,
) -> Result<Vec<AddressMessage>, NetlinkError> {
    let mut request = handle.address().get().set_link_index_filter(index);
    request.message_mut().header.family = AddressFamily::Inet;
    let all: Vec<AddressMessage> =
        request
            .execute()
            .try_collect()
            .await
            .map_err(|source| NetlinkError::Request {
                what: "address dump",
                source,
            })?;
    Ok(all
        .into_iter()
        .filter(|message| local_v4(message) == Some(ip))
        .collect())
}

/// The prefix lengths with which `ip` is on link `index` (empty when it is not there).
pub async fn address_prefixes(
    index: u32,
    ip: Ipv4Addr,
    timeout: Duration,
) -> Result<Vec<u8>, NetlinkError> {
    with_handle("address dump", timeout, |handle| async move {
        let found = matching_addresses(&handle, index, ip).await?;
        Ok(found.iter().map(|m| m.header.prefix_len).collect())
    })
    .await
}

/// Adds `ip/prefix` to link `index`; an address already there is kept (replace semantics).
pub async fn add_address(
    index: u32,
    ip: Ipv4Addr,
    prefix: u8,
    timeout: Duration,
) -> Result<(), NetlinkError> {
    with_handle("address add", timeout, |handle| async move {
        handle
            .address()
            .add(index, IpAddr::V4(ip), prefix)
            .replace()
            .execute()
            .await
            .map_err(|source| NetlinkError::Request {
                what: "address add",
                source,
            })
    })
    .await
}

/// Removes `ip` (any prefix) from link `index`; returns how many entries it removed.
/// An address that vanished meanwhile counts as removed by someone else, not as an error.
pub async fn remove_address(
    index: u32,
    ip: Ipv4Addr,
    timeout: Duration,
) -> Result<usize, NetlinkError> {
    with_handle("address delete", timeout, |handle| async move {
        let found = matching_addresses(&handle, index, ip).await?;
        let mut removed = 0;
        for message in found {
            match handle.address().del(message).execute().await {
                Ok(()) => removed += 1,
                Err(e) if errno_of(&e) == Some(libc::EADDRNOTAVAIL) => {}
                Err(source) => {
                    return Err(NetlinkError::Request {
                        what: "address delete",
                        source,
                    })
                }
            }
        }
        Ok(removed)
    })
    .await
}

/// The IPv4 neighbour entries for `ip` in this namespace, one per interface that has one.
pub async fn neighbours_of(
    ip: Ipv4Addr,
    timeout: Duration,
) -> Result<Vec<NeighbourEntry>, NetlinkError> {
    with_handle("neighbour dump", timeout, |handle| async move {
        let all: Vec<_> = handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Inet)
            .execute()
            .try_collect()
            .await
            .map_err(|source| NetlinkError::Request {
                what: "neighbour dump",
                source,
            })?;
        let mut entries = Vec::new();
        for message in all {
            let mut destination = None;
            let mut mac = None;
            for attribute in &message.attributes {
                match attribute {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                        destination = Some(*a)
                    }
                    NeighbourAttribute::LinkLayerAddress(bytes) => {
                        mac = <[u8; 6]>::try_from(bytes.as_slice()).ok()
                    }
                    _ => {}
                }
            }
            if destination == Some(ip) {
                let state = match message.header.state {
                    NeighbourState::Other(raw) => format!("state {raw:#x}"),
                    known => format!("{known:?}"),
                };
                entries.push(NeighbourEntry {
                    ifindex: message.header.ifindex,
                    mac,
                    state,
                });
            }
        }
        Ok(entries)
    })
    .await
}

/// Formats a hardware address the way `ip` prints it (`aa:bb:cc:dd:ee:ff`).
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

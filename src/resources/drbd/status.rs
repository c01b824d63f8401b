//! DRBD 9's status, parsed once at the edge into typed values.
//!
//! The input is the output of `drbdsetup status <resource> --json`: a JSON array with one object
//! per resource, shaped like
//!
//! ```json
//! [{ "name": "r0", "node-id": 0, "role": "Primary", "suspended": false,
//!    "devices": [{ "volume": 0, "minor": 0, "disk-state": "UpToDate", ... }],
//!    "connections": [{ "peer-node-id": 1, "name": "b", "connection-state": "Connected",
//!                      "peer-role": "Secondary",
//!                      "peer_devices": [{ "volume": 0, "replication-state": "Established",
//!                                         "peer-disk-state": "UpToDate", ... }] }] }]
//! ```
//!
//! (note `peer_devices` with an underscore, as drbd-utils prints it). Fields quorate does not
//! use are ignored, so newer drbd-utils that add fields still parse; a state name this code does
//! not know becomes an explicit `Unrecognized` value that never counts as healthy.

use serde::Deserialize;
use std::fmt;

/// A node's DRBD role for a resource (not its [`crate::core::Role`] in the cluster).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrbdRole {
    /// May write; at most one node should be Primary.
    Primary,
    /// Receives replication; cannot be written.
    Secondary,
    /// Not known (a peer we are not connected to).
    Unknown,
}

/// The state of one backing disk, local or as last seen on a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiskState {
    /// No backing disk attached.
    Diskless,
    /// Being attached.
    Attaching,
    /// Being detached.
    Detaching,
    /// I/O error on the backing disk.
    Failed,
    /// Attaching and talking to a peer about whose data is newer.
    Negotiating,
    /// Data is not usable (initial sync or an interrupted resync).
    Inconsistent,
    /// Data is consistent but known to be older than a peer's.
    Outdated,
    /// A peer's disk state while not connected.
    DUnknown,
    /// Consistent, but whether it is the newest is not known (no peer seen yet).
    Consistent,
    /// Consistent and the newest data.
    UpToDate,
    /// A name this version of quorate does not know; never treated as usable.
    Unrecognized(String),
}

/// The state of the connection to one peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectionState {
    /// Administratively not connecting (`disconnect`, split brain, failed authentication).
    StandAlone,
    /// Being taken down.
    Disconnecting,
    /// Configured, about to try connecting.
    Unconnected,
    /// The peer stopped answering.
    Timeout,
    /// The TCP connection broke.
    BrokenPipe,
    /// The network failed.
    NetworkFailure,
    /// The peer spoke something unexpected.
    ProtocolError,
    /// Waiting for the peer to appear.
    Connecting,
    /// Being torn down after an error.
    TearDown,
    /// Connected and replicating (or resyncing).
    Connected,
    /// A name this version of quorate does not know.
    Unrecognized(String),
}

/// The replication state of one volume towards one peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicationState {
    /// Not replicating (not connected).
    Off,
    /// Connected and in sync.
    Established,
    /// Resyncing towards the peer.
    SyncSource,
    /// Resyncing from the peer.
    SyncTarget,
    /// Any other transitional state (`StartingSyncS`, `WFBitMapT`, `PausedSyncS`, `Ahead`, ...),
    /// kept by name.
    Other(String),
}

/// One local volume of the resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Volume {
    /// The volume number inside the resource.
    pub volume: i64,
    /// The device minor (`/dev/drbd<minor>`).
    pub minor: u32,
    /// The local disk state.
    pub disk: DiskState,
}

/// One volume as seen on a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerVolume {
    /// The volume number.
    pub volume: i64,
    /// Replication towards that peer.
    pub replication: ReplicationState,
    /// The peer's disk state as this node knows it.
    pub disk: DiskState,
}

/// One peer of the resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// The peer's DRBD node id.
    pub node_id: u32,
    /// The peer's name (its host name in the DRBD config).
    pub name: String,
    /// The connection to it.
    pub connection: ConnectionState,
    /// Its role, `Unknown` while not connected.
    pub role: DrbdRole,
    /// Its volumes.
    pub volumes: Vec<PeerVolume>,
}

/// The status of one DRBD resource on this node, as `drbdsetup status --json` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrbdStatus {
    /// The resource name.
    pub name: String,
    /// This node's DRBD node id.
    pub node_id: u32,
    /// This node's role.
    pub role: DrbdRole,
    /// True when I/O is suspended (for example while the fence-peer handler runs).
    pub suspended: bool,
    /// Local volumes.
    pub volumes: Vec<Volume>,
    /// Peers.
    pub peers: Vec<Peer>,
}

/// Why a status text could not be understood.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StatusParseError {
    /// Not the JSON shape `drbdsetup status --json` prints.
    #[error("drbdsetup status output is not the expected JSON: {0}; check the drbd-utils version (9.x needed)")]
    Malformed(String),
    /// The resource is not in the output: it is not up on this node.
    #[error("resource {0} is not in drbdsetup's status: it is not up on this node (drbdadm up)")]
    NotFound(String),
}

impl DiskState {
    fn parse(text: &str) -> Self {
        match text {
            "Diskless" => DiskState::Diskless,
            "Attaching" => DiskState::Attaching,
            "Detaching" => DiskState::Detaching,
            "Failed" => DiskState::Failed,
            "Negotiating" => DiskState::Negotiating,
            "Inconsistent" => DiskState::Inconsistent,
            "Outdated" => DiskState::Outdated,
            "DUnknown" => DiskState::DUnknown,
            "Consistent" => DiskState::Consistent,
            "UpToDate" => DiskState::UpToDate,
            other => DiskState::Unrecognized(other.to_string()),
        }
    }

    /// How good the data is, for picking the worst of several volumes (higher is better).
    fn rank(&self) -> u8 {
        match self {
            DiskState::UpToDate => 5,
            DiskState::Consistent => 4,
            DiskState::DUnknown => 3,
            DiskState::Outdated => 2,
            DiskState::Inconsistent => 1,
            _ => 0,
        }
    }
}

impl fmt::Display for DiskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiskState::Unrecognized(name) => write!(f, "{name} (unrecognized)"),
            other => write!(f, "{other:?}"),
        }
    }
}

impl fmt::Display for DrbdRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

impl fmt::Display for ConnectionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectionState::Unrecognized(name) => write!(f, "{name} (unrecognized)"),
            other => write!(f, "{other:?}"),
        }
    }
}

impl DrbdRole {
    fn parse(text: &str) -> Self {
        match text {
            "Primary" => DrbdRole::Primary,
            "Secondary" => DrbdRole::Secondary,
            _ => DrbdRole::Unknown,
        }
    }
}

impl ConnectionState {
    fn parse(text: &str) -> Self {
        match text {
            "StandAlone" => ConnectionState::StandAlone,
            "Disconnecting" => ConnectionState::Disconnecting,
            "Unconnected" => ConnectionState::Unconnected,
            "Timeout" => ConnectionState::Timeout,
            "BrokenPipe" => ConnectionState::BrokenPipe,
            "NetworkFailure" => ConnectionState::NetworkFailure,
            "ProtocolError" => ConnectionState::ProtocolError,
            "Connecting" => ConnectionState::Connecting,
            "TearDown" => ConnectionState::TearDown,
            "Connected" => ConnectionState::Connected,
            other => ConnectionState::Unrecognized(other.to_string()),
        }
    }
}

impl ReplicationState {
    fn parse(text: &str) -> Self {
        match text {
            "Off" => ReplicationState::Off,
            "Established" => ReplicationState::Established,
            "SyncSource" => ReplicationState::SyncSource,
            "SyncTarget" => ReplicationState::SyncTarget,
            other => ReplicationState::Other(other.to_string()),
        }
    }
}

fn worst<'a>(states: impl Iterator<Item = &'a DiskState>) -> DiskState {
    states
        .min_by_key(|s| s.rank())
        .cloned()
        .unwrap_or(DiskState::Diskless)
}

impl Peer {
    /// The worst disk state over the peer's volumes (`DUnknown` when none are listed).
    pub fn disk(&self) -> DiskState {
        if self.volumes.is_empty() {
            return DiskState::DUnknown;
        }
        worst(self.volumes.iter().map(|v| &v.disk))
    }

    /// True when the connection to this peer is up.
    pub fn is_connected(&self) -> bool {
        self.connection == ConnectionState::Connected
    }
}

impl DrbdStatus {
    /// The worst local disk state over all volumes (`Diskless` when there are none).
    pub fn local_disk(&self) -> DiskState {
        worst(self.volumes.iter().map(|v| &v.disk))
    }

    /// True when this node is Primary with every local volume UpToDate.
    pub fn is_serving(&self) -> bool {
        self.role == DrbdRole::Primary && self.local_disk() == DiskState::UpToDate
    }

    /// Connected peers that are Primary.
    pub fn connected_primaries(&self) -> impl Iterator<Item = &Peer> {
        self.peers
            .iter()
            .filter(|p| p.is_connected() && p.role == DrbdRole::Primary)
    }

    /// One line for logs and errors, e.g. `r0 Secondary/UpToDate, b: Connected Primary/UpToDate`.
    pub fn summary(&self) -> String {
        let mut text = format!("{} {}/{}", self.name, self.role, self.local_disk());
        for peer in &self.peers {
            text.push_str(&format!(
                ", {}: {} {}/{}",
                peer.name,
                peer.connection,
                peer.role,
                peer.disk()
            ));
        }
        text
    }
}

#[derive(Deserialize)]
struct RawResource {
    name: String,
    #[serde(rename = "node-id", default)]
    node_id: u32,
    #[serde(default)]
    role: String,
    #[serde(default)]
    suspended: bool,
    #[serde(default)]
    devices: Vec<RawDevice>,
    #[serde(default)]
    connections: Vec<RawConnection>,
}

#[derive(Deserialize)]
struct RawDevice {
    #[serde(default)]
    volume: i64,
    #[serde(default)]
    minor: u32,
    #[serde(rename = "disk-state")]
    disk_state: String,
}

#[derive(Deserialize)]
struct RawConnection {
    #[serde(rename = "peer-node-id", default)]
    peer_node_id: u32,
    #[serde(default)]
    name: String,
    #[serde(rename = "connection-state")]
    connection_state: String,
    #[serde(rename = "peer-role", default)]
    peer_role: String,
    #[serde(rename = "peer_devices", default)]
    peer_devices: Vec<RawPeerDevice>,
}

#[derive(Deserialize)]
struct RawPeerDevice {
    #[serde(default)]
    volume: i64,
    #[serde(rename = "replication-state", default)]
    replication_state: String,
    #[serde(rename = "peer-disk-state")]
    peer_disk_state: String,
}

/// Parses `drbdsetup status <resource> --json` output and returns that resource's status.
pub fn parse_status(json: &str, resource: &str) -> Result<DrbdStatus, StatusParseError> {
    let all: Vec<RawResource> =
        serde_json::from_str(json).map_err(|e| StatusParseError::Malformed(e.to_string()))?;
    let raw = all
        .into_iter()
        .find(|r| r.name == resource)
        .ok_or_else(|| StatusParseError::NotFound(resource.to_string()))?;
    Ok(DrbdStatus {
        name: raw.name,
        node_id: raw.node_id,
        role: DrbdRole::parse(&raw.role),
        suspended: raw.suspended,
        volumes: raw
            .devices
            .into_iter()
            .map(|d| Volume {
                volume: d.volume,
                minor: d.minor,
                disk: DiskState::parse(&d.disk_state),
            })
            .collect(),
        peers: raw
            .connections
            .into_iter()
            .map(|c| Peer {
                node_id: c.peer_node_id,
                name: c.name,
                connection: ConnectionState::parse(&c.connection_state),
                role: DrbdRole::parse(&c.peer_role),
                volumes: c
                    .peer_devices
                    .into_iter()
                    .map(|p| PeerVolume {
                        volume: p.volume,
                        replication: ReplicationState::parse(&p.replication_state),
                        disk: DiskState::parse(&p.peer_disk_state),
                    })
                    .collect(),
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Secondary node connected to a Primary peer, as DRBD 9.2 prints it (all fields).
    const SECONDARY_CONNECTED: &str = r#"[
{
  "name": "r0",
  "node-id": 2,
  "role": "Secondary",
  "suspended": false,
  "suspended-user": false,
  "suspended-no-data": false,
  "suspended-fencing": false,
  "suspended-quorum": false,
  "force-io-failures": false,
  "write-ordering": "flush",
  "devices": [
    {
      "volume": 0,
      "minor": 1,
      "disk-state": "UpToDate",
      "client": false,
      "open": false,
      "quorum": true,
      "size": 409600,
      "read": 0,
      "written": 548525,
      "al-writes": 4,
      "bm-writes": 0,
      "upper-pending": 0,
      "lower-pending": 0
    } ],
  "connections": [
    {
      "peer-node-id": 1,
      "name": "node-a",
      "connection-state": "Connected",
      "congested": false,
      "peer-role": "Primary",
      "tls": false,
      "ap-in-flight": 0,
      "rs-in-flight": 0,
      "paths": [
        { "this_host": { "address": "198.18.0.12", "port": 7789, "family": "ipv4" },
          "remote_host": { "address": "198.18.0.11", "port": 7789, "family": "ipv4" },
          "established": true } ],
      "peer_devices": [
        {
          "volume": 0,
          "replication-state": "Established",
          "peer-disk-state": "UpToDate",
          "peer-client": false,
          "resync-suspended": "no",
          "received": 548525,
          "sent": 0,
          "out-of-sync": 0,
          "pending": 0,
          "unacked": 0,
          "has-sync-details": false,
          "has-online-verify-details": false,
          "percent-in-sync": 100.00
        } ]
    } ]
}
]"#;

    /// A Primary that lost its peer after the fence-peer handler outdated it, plus a diskless
    /// witness that is still connected.
    const PRIMARY_PEER_OUTDATED: &str = r#"[{"name":"r0","node-id":0,"role":"Primary","suspended":false,
 "devices":[{"volume":0,"minor":0,"disk-state":"UpToDate","client":false,"quorum":true,"size":1048576}],
 "connections":[
  {"peer-node-id":1,"name":"b","connection-state":"Connecting","congested":false,"peer-role":"Unknown",
   "peer_devices":[{"volume":0,"replication-state":"Off","peer-disk-state":"Outdated","peer-client":false,
     "resync-suspended":"no","out-of-sync":4096,"percent-in-sync":99.61}]},
  {"peer-node-id":2,"name":"w","connection-state":"Connected","congested":false,"peer-role":"Secondary",
   "peer_devices":[{"volume":0,"replication-state":"Established","peer-disk-state":"Diskless","peer-client":true,
     "resync-suspended":"no"}]}]}]"#;

    /// Two volumes, one still resyncing as SyncTarget.
    const SYNCING: &str = r#"[{"name":"db","node-id":1,"role":"Secondary","suspended":false,
 "devices":[{"volume":0,"minor":10,"disk-state":"UpToDate"},{"volume":1,"minor":11,"disk-state":"Inconsistent"}],
 "connections":[{"peer-node-id":0,"name":"a","connection-state":"Connected","peer-role":"Primary",
   "peer_devices":[{"volume":0,"replication-state":"Established","peer-disk-state":"UpToDate"},
                   {"volume":1,"replication-state":"SyncTarget","peer-disk-state":"UpToDate","percent-in-sync":42.0}]}]}]"#;

    #[test]
    fn parses_a_connected_secondary() {
        let s = parse_status(SECONDARY_CONNECTED, "r0").unwrap();
        assert_eq!(s.name, "r0");
        assert_eq!(s.node_id, 2);
        assert_eq!(s.role, DrbdRole::Secondary);
        assert!(!s.suspended);
        assert_eq!(
            s.volumes,
            vec![Volume {
                volume: 0,
                minor: 1,
                disk: DiskState::UpToDate
            }]
        );
        assert_eq!(s.peers.len(), 1);
        let peer = &s.peers[0];
        assert_eq!(peer.node_id, 1);
        assert_eq!(peer.name, "node-a");
        assert_eq!(peer.connection, ConnectionState::Connected);
        assert_eq!(peer.role, DrbdRole::Primary);
        assert_eq!(peer.volumes[0].replication, ReplicationState::Established);
        assert_eq!(peer.disk(), DiskState::UpToDate);
        assert!(!s.is_serving());
        assert_eq!(
            s.connected_primaries()
                .map(|p| &p.name[..])
                .collect::<Vec<_>>(),
            ["node-a"]
        );
    }

    #[test]
    fn parses_a_primary_with_an_outdated_disconnected_peer_and_a_witness() {
        let s = parse_status(PRIMARY_PEER_OUTDATED, "r0").unwrap();
        assert!(s.is_serving());
        assert_eq!(s.peers[0].connection, ConnectionState::Connecting);
        assert_eq!(s.peers[0].role, DrbdRole::Unknown);
        assert_eq!(s.peers[0].disk(), DiskState::Outdated);
        assert_eq!(s.peers[0].volumes[0].replication, ReplicationState::Off);
        assert_eq!(s.peers[1].disk(), DiskState::Diskless);
        assert_eq!(s.connected_primaries().count(), 0);
        assert_eq!(
            s.summary(),
            "r0 Primary/UpToDate, b: Connecting Unknown/Outdated, w: Connected Secondary/Diskless"
        );
    }

    #[test]
    fn local_disk_is_the_worst_volume() {
        let s = parse_status(SYNCING, "db").unwrap();
        assert_eq!(s.local_disk(), DiskState::Inconsistent);
        assert_eq!(
            s.peers[0].volumes[1].replication,
            ReplicationState::SyncTarget
        );
    }

    #[test]
    fn unknown_names_are_kept_and_never_healthy() {
        let json = r#"[{"name":"r0","role":"Primary","devices":[{"volume":0,"disk-state":"Shiny"}],
            "connections":[{"name":"b","connection-state":"Warping","peer-role":"Secondary","peer_devices":[]}]}]"#;
        let s = parse_status(json, "r0").unwrap();
        assert_eq!(s.local_disk(), DiskState::Unrecognized("Shiny".into()));
        assert!(!s.is_serving());
        assert_eq!(
            s.peers[0].connection,
            ConnectionState::Unrecognized("Warping".into())
        );
        assert_eq!(s.peers[0].disk(), DiskState::DUnknown);
    }

    #[test]
    fn picks_the_named_resource_and_reports_a_missing_one() {
        let two = format!(
            "[{},{}]",
            SECONDARY_CONNECTED
                .trim()
                .trim_start_matches('[')
                .trim_end_matches(']'),
            SYNCING.trim().trim_start_matches('[').trim_end_matches(']')
        );
        assert_eq!(parse_status(&two, "db").unwrap().node_id, 1);
        assert_eq!(
            parse_status(&two, "r9"),
            Err(StatusParseError::NotFound("r9".into()))
        );
        assert_eq!(
            parse_status("[]", "r0"),
            Err(StatusParseError::NotFound("r0".into()))
        );
    }

    #[test]
    fn malformed_output_is_an_error_not_a_panic() {
        for bad in [
            "",
            "r0 role:Primary",
            "{\"name\":\"r0\"}",
            "[{\"role\":\"Primary\"}]",
        ] {
            assert!(
                matches!(parse_status(bad, "r0"), Err(StatusParseError::Malformed(_))),
                "{bad:?}"
            );
        }
    }
}

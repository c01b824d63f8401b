//! quorate: a failover coordinator for MySQL on DRBD.
//!
//! Two management nodes keep MySQL's data on a DRBD-replicated disk, and a third small host
//! runs a witness. The three run Raft (openraft) so that the cluster always has one agreed
//! view of who may hold the resource group (DRBD Primary, the mounted filesystem, MySQL and the
//! virtual IP). Two nodes alone cannot tell a dead peer from a broken link; with the witness,
//! only the side that keeps a majority can act, and the other side stops by itself.
//!
//! Glossary (the only abbreviations the code uses without explaining them):
//! - **owner**: the one management node allowed to hold the resource group.
//! - **epoch**: a number that grows with every change of owner; the fencing token stamped on
//!   every resource action.
//! - **lease**: how long the owner may keep holding the group without renewing through a
//!   quorum of the cluster.
//! - **witness**: the third arbiter, with a vote and a full Raft log and nothing else.
//! - **fence**: make a node stop holding the group for sure, by itself or from outside.
//!
//! Layout: [`config`] reads node configs; [`consensus`] holds openraft's types, the durable
//! store and the network; [`rpc`] is the only module that names generated protobuf types;
//! [`arbiter`] runs one Raft voter with its gRPC server; [`resources`] holds the resource
//! agents; [`cli`] is `quoratectl`. [`clock`] holds every clock quorate reads and [`command`]
//! runs every external command.

pub mod agent;
pub mod arbiter;
pub mod cli;
pub mod clock;
pub mod command;
pub mod config;
pub mod consensus;
pub mod core;
pub mod daemon;
pub mod guard;
pub mod resources;
pub mod rpc;
pub mod status;
pub mod telemetry;

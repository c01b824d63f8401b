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
//! # Modules
//!
//! - [`core`] is the pure decision layer (what a node and the leader should do, and why); it
//!   depends on nothing else in quorate.
//! - [`config`] reads and checks the per-node TOML config.
//! - [`consensus`] holds openraft's types, the replicated state machine, the durable store, and
//!   the Raft network over the peer client.
//! - [`rpc`] holds the peer and admin gRPC services, the only module that names generated
//!   protobuf types. Each service has a client half and a server half.
//! - [`arbiter`] runs one Raft voter: the leader's ownership service, the lease horizon,
//!   proposals through the leader, bootstrap, and the wiring that serves both services.
//! - [`resources`] holds the resource agents (DRBD, filesystem, MySQL, VIP) and their
//!   ordered group.
//! - [`guard`] is the lease guard process that fences the owner when its lease runs out.
//! - [`agent`] runs a management node: an arbiter plus the resource side.
//! - [`status`] holds the status types the admin service fills in and the CLI shows.
//! - [`cli`] is `quoratectl`.
//! - [`daemon`] holds the start-up shared by `quorate-agent` and `quorate-witness`.
//! - [`telemetry`] sets up logging for the binaries.
//! - [`clock`] holds every clock quorate reads (the lease clock, monotonic, boot-time, wall).
//! - [`command`] runs every external command, so tests can record and script them.
//!
//! # Dependency order
//!
//! File by file, dependencies run one way (`a -> b`: `b` may use `a`, never the reverse):
//!
//! core -> consensus -> rpc client -> arbiter -> rpc server -> daemon
//!
//! The rpc clients ([`rpc::peer::client`], [`rpc::admin::client`]) use only `consensus`,
//! `core` and the helpers, so the Raft network and the arbiter can call peers. The rpc
//! servers ([`rpc::peer::server`], [`rpc::admin::server`]) reach the arbiter's services only
//! through traits they define ([`rpc::peer::server::PeerHandler`],
//! [`rpc::admin::server::AdminHandler`]), using no more of the arbiter than its clock and its
//! view of the committed state; the arbiter's wiring implements the traits and starts the
//! servers, and the agent and the binaries (with [`daemon`]) sit on top. [`config`],
//! [`status`], [`telemetry`], [`clock`] and [`command`] are helpers used across the layers
//! (never by [`core`], which reads no clock and runs nothing); [`resources`] and
//! [`guard`] sit beside the arbiter and are used by the agent.

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

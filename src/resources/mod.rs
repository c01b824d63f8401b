//! Resource agents: the things the owner node starts, stops, watches and fences, in one ordered
//! group. The agents keep one contract ([`agent::ResourceAgent`]); the group orders them and gates
//! every action on the owner epoch ([`fencing`]); the ledger lets tests prove single ownership.
//! Every external command goes through one [`crate::command::CommandRunner`].

pub mod agent;
pub mod config;
pub mod drbd;
pub mod dummy;
pub mod fencing;
pub mod filesystem;
pub mod group;
pub mod ledger;
pub mod mysql;
pub mod procs;
pub mod vip;

pub use config::ResourceConfig;

//! The admin service: what operators and `quoratectl` ask any member.
//!
//! - [`server`] answers it on every arbiter. `Status` is answered by whichever member is
//!   asked; changes (switchover, pause, standby, outdated, failure reset) are checked against
//!   the committed state, then committed through the leader. It reaches the arbiter only
//!   through [`server::AdminHandler`], which the arbiter implements.
//! - [`client`] is what `quoratectl` and the DRBD handlers call; it returns quorate's own
//!   types ([`crate::status::ClusterStatus`], [`crate::status::HistoryLine`]).
//! - [`convert`] turns generated protobuf messages into those types and back.
//!
//! The client's types are re-exported here, since they are what callers outside the crate's
//! daemons use.

pub mod client;
pub mod convert;
pub mod server;

pub use client::{AdminClient, AdminError};

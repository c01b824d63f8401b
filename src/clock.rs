//! Every clock quorate reads, in one place: the lease clock, the host's monotonic and
//! boot-time clocks, and the wall clock.
//!
//! - **The lease clock** ([`LEASE_CLOCK`]) times everything safety rests on: the leader's
//!   grants and the owner's lease as [`Millis`] ([`now`], [`now_ceiling`], [`until`]), and the
//!   deadlines the agent hands its guard in nanoseconds ([`lease_now_ns`]). The agent and the
//!   guard are separate processes, so they cannot share a `std::time::Instant`; they can share
//!   a kernel clock, which every process on one host reads alike and which never jumps with
//!   wall-clock changes. Which kernel clock that is, is the one line [`LEASE_CLOCK`].
//! - **The monotonic clock** ([`monotonic_ns`]) stamps the resource ledgers, so the histories
//!   of every process on one machine line up.
//! - **The boot-time clock** ([`boottime_ns`]) is the monotonic clock plus the time the host
//!   spent suspended.
//! - **The wall clock** ([`wall_ms`], [`wall_ns`]) is for people only (history records, log
//!   stamps); no decision reads it.
//!
//! Nothing read from [`now`] is ever compared with another process's value: a [`Millis`] is
//! milliseconds since this process first asked.

use std::sync::OnceLock;
use std::time::Duration;

use nix::time::{clock_gettime, ClockId};

use crate::core::time::Millis;

/// The kernel clock leases and the guard are timed on; changing this line moves the owner's
/// lease, the leader's grants and the guard's deadlines together (the agent and its guard must
/// read the same clock).
///
/// `CLOCK_MONOTONIC` does not advance while the host is suspended; quorate's management nodes
/// are servers that are never suspended, and a resumed host would see every deadline long
/// passed and fence, which is the safe side. Moving to `CLOCK_BOOTTIME` (which does count a
/// suspension) is issue 9's separate safety change.
pub const LEASE_CLOCK: ClockId = ClockId::CLOCK_MONOTONIC;

/// The lease clock could not be read; the guard treats this as "every deadline has passed".
#[derive(Debug, thiserror::Error)]
#[error("cannot read the lease clock ({0}); treat the lease as lost and fence")]
pub struct ClockError(#[from] nix::Error);

/// Nanoseconds on `clock`.
fn read_ns(clock: ClockId) -> Result<u64, nix::Error> {
    let now = clock_gettime(clock)?;
    // The monotonic and boot-time clocks start near boot and the wall clock after 1970, so
    // both parts are non-negative.
    let secs = u64::try_from(now.tv_sec()).unwrap_or(0);
    let nanos = u64::try_from(now.tv_nsec()).unwrap_or(0);
    Ok(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
}

/// Nanoseconds on the lease clock, the clock lease deadlines are written in.
pub fn lease_now_ns() -> Result<u64, ClockError> {
    Ok(read_ns(LEASE_CLOCK)?)
}

/// A deadline `after` from now on the lease clock, as the agent computes `lease_until`.
pub fn lease_deadline_after(after: Duration) -> Result<u64, ClockError> {
    let after_ns = u64::try_from(after.as_nanos()).unwrap_or(u64::MAX);
    Ok(lease_now_ns()?.saturating_add(after_ns))
}

/// The guard's reading of the lease clock: an unreadable clock counts as the end of time, so
/// every armed deadline has passed and the guard fences rather than trusting a lease it cannot
/// time.
pub(crate) fn guard_now_ns() -> u64 {
    match lease_now_ns() {
        Ok(now) => now,
        Err(error) => {
            tracing::error!(%error, "lease guard cannot read its clock");
            u64::MAX
        }
    }
}

/// The lease clock's reading when this process first asked; [`now`] counts from here.
static BASE_NS: OnceLock<u64> = OnceLock::new();

/// Nanoseconds on the lease clock since this process first asked.
fn elapsed_ns() -> u64 {
    // A reading that failed cannot stand in for any instant: "the end of time" would give an
    // owner's `t0` a lease without end, and zero would move the leader's clock backwards. The
    // lease clock is always readable on Linux (std's `Instant` panics the same way).
    let read = || lease_now_ns().expect("the lease clock is readable");
    let base = *BASE_NS.get_or_init(read);
    read().saturating_sub(base)
}

/// Now, rounded down to the millisecond (the owner's side: a lease starts no later than this).
pub fn now() -> Millis {
    Millis(elapsed_ns() / 1_000_000)
}

/// Now, rounded up to the millisecond (the leader's side: a grant ends no earlier than this
/// plus its length).
pub fn now_ceiling() -> Millis {
    now().plus(1)
}

/// How long from now until `at` (zero when `at` has passed).
pub fn until(at: Millis) -> Duration {
    Duration::from_millis(now().until(at))
}

/// `CLOCK_MONOTONIC` in nanoseconds, the clock every ledger on one machine shares.
pub fn monotonic_ns() -> u64 {
    // CLOCK_MONOTONIC exists on every Linux; the fallback only keeps the type total.
    read_ns(ClockId::CLOCK_MONOTONIC).unwrap_or(0)
}

/// `CLOCK_BOOTTIME` in nanoseconds: the monotonic clock plus time spent suspended.
pub fn boottime_ns() -> u64 {
    // CLOCK_BOOTTIME exists on every Linux since 2.6.39; the fallback only keeps the type total.
    read_ns(ClockId::CLOCK_BOOTTIME).unwrap_or(0)
}

/// Wall-clock nanoseconds since the Unix epoch; for people only.
pub fn wall_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Wall-clock milliseconds since the Unix epoch, for history records only.
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_clock_moves_forward_with_real_time() {
        let first = lease_now_ns().expect("clock");
        let started = std::time::Instant::now();
        // Poll until the clock has visibly advanced; bounded so a stuck clock fails the test.
        let mut later = first;
        while later <= first + 1_000_000 && started.elapsed() < Duration::from_secs(5) {
            later = lease_now_ns().expect("clock");
        }
        assert!(
            later > first + 1_000_000,
            "monotonic clock did not advance by 1 ms"
        );
    }

    #[test]
    fn deadline_after_is_ahead_of_now() {
        let before = lease_now_ns().expect("clock");
        let deadline = lease_deadline_after(Duration::from_millis(300)).expect("clock");
        assert!(deadline >= before + 300_000_000);
        assert!(deadline < before + 300_000_000 + 1_000_000_000);
    }
}

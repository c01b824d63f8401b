//! The one clock the agent and its guard share: `CLOCK_MONOTONIC` in nanoseconds.
//!
//! The agent and the guard are separate processes, so they cannot share a `std::time::Instant`;
//! they can share the kernel's monotonic clock, which every process on one host reads alike and
//! which never jumps with wall-clock changes. It does not advance while the host is suspended;
//! quorate's management nodes are servers that are never suspended, and a resumed host would
//! see every deadline long passed and fence, which is the safe side.

use nix::time::{clock_gettime, ClockId};
use std::time::Duration;

/// The monotonic clock could not be read; the guard treats this as "every deadline has passed".
#[derive(Debug, thiserror::Error)]
#[error("cannot read CLOCK_MONOTONIC ({0}); treat the lease as lost and fence")]
pub struct ClockError(#[from] nix::Error);

/// Nanoseconds on `CLOCK_MONOTONIC`, the clock lease deadlines are written in.
pub fn monotonic_now_ns() -> Result<u64, ClockError> {
    let now = clock_gettime(ClockId::CLOCK_MONOTONIC)?;
    // The monotonic clock starts near boot, so both parts are non-negative and small.
    let secs = u64::try_from(now.tv_sec()).unwrap_or(0);
    let nanos = u64::try_from(now.tv_nsec()).unwrap_or(0);
    Ok(secs.saturating_mul(1_000_000_000).saturating_add(nanos))
}

/// A deadline `after` from now on the monotonic clock, as the agent computes `lease_until`.
pub fn monotonic_deadline_after(after: Duration) -> Result<u64, ClockError> {
    let after_ns = u64::try_from(after.as_nanos()).unwrap_or(u64::MAX);
    Ok(monotonic_now_ns()?.saturating_add(after_ns))
}

/// The guard's reading of the clock: an unreadable clock counts as the end of time, so every
/// armed deadline has passed and the guard fences rather than trusting a lease it cannot time.
pub(crate) fn guard_now_ns() -> u64 {
    match monotonic_now_ns() {
        Ok(now) => now,
        Err(error) => {
            tracing::error!(%error, "lease guard cannot read its clock");
            u64::MAX
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_clock_moves_forward_with_real_time() {
        let first = monotonic_now_ns().expect("clock");
        let started = std::time::Instant::now();
        // Poll until the clock has visibly advanced; bounded so a stuck clock fails the test.
        let mut later = first;
        while later <= first + 1_000_000 && started.elapsed() < Duration::from_secs(5) {
            later = monotonic_now_ns().expect("clock");
        }
        assert!(
            later > first + 1_000_000,
            "monotonic clock did not advance by 1 ms"
        );
    }

    #[test]
    fn deadline_after_is_ahead_of_now() {
        let before = monotonic_now_ns().expect("clock");
        let deadline = monotonic_deadline_after(Duration::from_millis(300)).expect("clock");
        assert!(deadline >= before + 300_000_000);
        assert!(deadline < before + 300_000_000 + 1_000_000_000);
    }
}

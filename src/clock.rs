//! Every clock quorate reads, in one place: the lease clock, the host's monotonic and
//! boot-time clocks, and the wall clock.
//!
//! - **The lease clock** ([`LEASE_CLOCK`]) times everything safety rests on: the leader's
//!   grants and the owner's lease as [`Millis`] ([`now`], [`now_ceiling`], [`until`]), and the
//!   deadlines the agent hands its guard in nanoseconds ([`lease_now_ns`]). The agent and the
//!   guard are separate processes, so they cannot share a `std::time::Instant`; they can share
//!   a kernel clock, which every process on one host reads alike and which never jumps with
//!   wall-clock changes. Which kernel clock that is, is the one line [`LEASE_CLOCK`]:
//!   `CLOCK_BOOTTIME`, so that time a host spent suspended counts against its leases.
//! - **The monotonic clock** ([`monotonic_ns`]) stamps the resource ledgers, so the histories
//!   of every process on one machine line up. No ledger stamp is compared with a lease or guard
//!   deadline; those are compared with the lease clock only.
//! - **The boot-time clock** ([`boottime_ns`]) is the monotonic clock plus the time the host
//!   spent suspended.
//! - **The wall clock** ([`wall_ms`], [`wall_ns`]) is for people only (history records, log
//!   stamps); no decision reads it.
//!
//! Nothing read from [`now`] is ever compared with another process's value: a [`Millis`] is
//! milliseconds since this process first asked.
//!
//! The lease clock is read through a [`ClockSource`]: the host's ([`HostClocks`]) everywhere but
//! in tests, which hand the `*_on` functions a stand-in whose clocks they move by hand (a
//! suspend cannot be staged in a test, but the choice of clock can be shown with one).

use std::sync::OnceLock;
use std::time::Duration;

use nix::time::{clock_gettime, ClockId};

use crate::core::time::Millis;

/// The kernel clock leases and the guard are timed on; changing this line moves the owner's
/// lease, the leader's grants and the guard's deadlines together (the agent and its guard must
/// read the same clock, since the agent hands the guard deadlines in it).
///
/// Why `CLOCK_BOOTTIME`: a lease is safe only if the owner's clock runs no
/// slower than real time by more than `ρ` (`core::time`). `CLOCK_MONOTONIC` stops while the
/// kernel is suspended (suspend to RAM or disk, a VM put to sleep through its guest): after a
/// suspend of any length, the owner and its guard would go on trusting up to a lease of old
/// time, while the leader, whose clock did run, has long given the group to the other node.
/// `CLOCK_BOOTTIME` is the monotonic clock plus the time spent suspended: it counts real time
/// across a suspend, never jumps with wall-clock changes, and reads alike in every process of
/// one host, so a resumed owner finds its deadline passed and fences at its first look at the
/// clock (the agent looks at least every second, the guard every pet interval).
/// What it cannot do is act *during* the suspend: the window from the other node's start to
/// that first look remains, and a hypervisor pause the guest kernel does not see stops both
/// clocks alike; only power fencing covers those (see docs/PROTOCOL.md).
pub const LEASE_CLOCK: ClockId = ClockId::CLOCK_BOOTTIME;

/// Where kernel clocks are read: the host ([`HostClocks`]), or in tests a stand-in whose
/// clocks the test moves, so the choice of [`LEASE_CLOCK`] can be shown without a suspend.
pub trait ClockSource {
    /// Nanoseconds on `clock`.
    fn read_ns(&self, clock: ClockId) -> Result<u64, nix::Error>;
}

/// The host's clocks, read with `clock_gettime`; what every non-test caller uses.
#[derive(Clone, Copy, Debug, Default)]
pub struct HostClocks;

impl ClockSource for HostClocks {
    fn read_ns(&self, clock: ClockId) -> Result<u64, nix::Error> {
        read_ns(clock)
    }
}

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
    lease_now_ns_on(&HostClocks)
}

/// [`lease_now_ns`] read from `source`.
pub fn lease_now_ns_on(source: &dyn ClockSource) -> Result<u64, ClockError> {
    Ok(source.read_ns(LEASE_CLOCK)?)
}

/// A deadline `after` from now on the lease clock, as the agent computes `lease_until`.
pub fn lease_deadline_after(after: Duration) -> Result<u64, ClockError> {
    lease_deadline_after_on(&HostClocks, after)
}

/// [`lease_deadline_after`] read from `source`.
pub fn lease_deadline_after_on(
    source: &dyn ClockSource,
    after: Duration,
) -> Result<u64, ClockError> {
    let after_ns = u64::try_from(after.as_nanos()).unwrap_or(u64::MAX);
    Ok(lease_now_ns_on(source)?.saturating_add(after_ns))
}

/// The guard's reading of the lease clock: an unreadable clock counts as the end of time, so
/// every armed deadline has passed and the guard fences rather than trusting a lease it cannot
/// time.
pub(crate) fn guard_now_ns() -> u64 {
    guard_now_ns_on(&HostClocks)
}

/// [`guard_now_ns`] read from `source`.
pub(crate) fn guard_now_ns_on(source: &dyn ClockSource) -> u64 {
    match lease_now_ns_on(source) {
        Ok(now) => now,
        Err(error) => {
            tracing::error!(%error, "lease guard cannot read its clock");
            u64::MAX
        }
    }
}

/// The lease clock's reading when this process first asked; [`now`] counts from here.
static BASE_NS: OnceLock<u64> = OnceLock::new();

/// Now, rounded down to the millisecond (the owner's side: a lease starts no later than this).
pub fn now() -> Millis {
    // A reading that failed cannot stand in for any instant: "the end of time" would give an
    // owner's `t0` a lease without end, and zero would move the leader's clock backwards. The
    // lease clock is always readable on Linux (std's `Instant` panics the same way).
    let base = *BASE_NS.get_or_init(|| lease_now_ns().expect("the lease clock is readable"));
    now_on(&HostClocks, base).expect("the lease clock is readable")
}

/// [`now`] read from `source`, counting from the lease-clock reading `base_ns`.
pub fn now_on(source: &dyn ClockSource, base_ns: u64) -> Result<Millis, ClockError> {
    Ok(Millis(
        lease_now_ns_on(source)?.saturating_sub(base_ns) / 1_000_000,
    ))
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
    fn lease_clock_moves_forward_with_real_time() {
        let first = lease_now_ns().expect("clock");
        let started = std::time::Instant::now();
        // Poll until the clock has visibly advanced; bounded so a stuck clock fails the test.
        let mut later = first;
        while later <= first + 1_000_000 && started.elapsed() < Duration::from_secs(5) {
            later = lease_now_ns().expect("clock");
        }
        assert!(
            later > first + 1_000_000,
            "lease clock did not advance by 1 ms"
        );
    }

    #[test]
    fn deadline_after_is_ahead_of_now() {
        let before = lease_now_ns().expect("clock");
        let deadline = lease_deadline_after(Duration::from_millis(300)).expect("clock");
        assert!(deadline >= before + 300_000_000);
        assert!(deadline < before + 300_000_000 + 1_000_000_000);
    }

    /// A host whose suspend a test stages: `CLOCK_MONOTONIC` stands still while it is
    /// suspended, `CLOCK_BOOTTIME` goes on, as the kernel's do.
    struct SuspendableHost {
        awake_ns: std::cell::Cell<u64>,
        suspended_ns: std::cell::Cell<u64>,
    }

    impl SuspendableHost {
        fn run_for(&self, d: Duration) {
            self.awake_ns.set(self.awake_ns.get() + d.as_nanos() as u64);
        }
        fn suspend_for(&self, d: Duration) {
            self.suspended_ns
                .set(self.suspended_ns.get() + d.as_nanos() as u64);
        }
    }

    impl ClockSource for SuspendableHost {
        fn read_ns(&self, clock: ClockId) -> Result<u64, nix::Error> {
            if clock == ClockId::CLOCK_MONOTONIC {
                Ok(self.awake_ns.get())
            } else if clock == ClockId::CLOCK_BOOTTIME {
                Ok(self.awake_ns.get() + self.suspended_ns.get())
            } else {
                Err(nix::Error::EINVAL)
            }
        }
    }

    /// Issue 9, finding 4: the owner's lease and its guard's deadline, computed as the agent
    /// and the guard compute them, run out when the host was suspended past them, although
    /// the monotonic clock says almost no time went by.
    #[test]
    fn a_suspend_past_the_lease_ends_the_owner_lease_and_the_guard_deadline() {
        use crate::core::time::Timing;
        use crate::guard::protocol::GuardCommand;
        use crate::guard::state::GuardState;

        let timing = Timing {
            lease_ms: 3_000,
            rho_permille: 10,
            fence_margin_ms: 500,
            migration_threshold: 3,
            max_restarts_in_place: 2,
        };
        let host = SuspendableHost {
            awake_ns: std::cell::Cell::new(100_000_000_000),
            suspended_ns: std::cell::Cell::new(0),
        };
        let base = lease_now_ns_on(&host).expect("clock");

        // The agent's side (agent::lease): t0 before the request, then `lease_until` on its own
        // clock and the guard's deadline in lease-clock nanoseconds.
        let t0 = now_on(&host, base).expect("clock");
        let t0_ns = lease_now_ns_on(&host).expect("clock");
        let lease_until = timing.owner_lease_until(t0);
        let deadline_ns = t0_ns + timing.owner_lease_ms() * 1_000_000;
        assert_eq!(
            deadline_ns,
            lease_deadline_after_on(&host, Duration::from_millis(timing.owner_lease_ms()))
                .expect("clock")
        );
        // The guard's side: armed with that deadline.
        let mut guard = GuardState::new();
        guard.apply(GuardCommand::Arm {
            deadline_ns,
            epoch: 7,
        });

        // Awake for a second: the lease holds on both sides.
        host.run_for(Duration::from_secs(1));
        assert!(now_on(&host, base).expect("clock") < lease_until);
        assert_eq!(guard.expired(guard_now_ns_on(&host)), None);
        assert!(guard.may_pet(guard_now_ns_on(&host)));

        // Suspended for a minute, then awake for 10 ms: the monotonic clock moved 10 ms and
        // still shows the lease valid, but a minute of real time went by.
        host.suspend_for(Duration::from_secs(60));
        host.run_for(Duration::from_millis(10));
        let monotonic_now = host.read_ns(ClockId::CLOCK_MONOTONIC).expect("clock");
        assert!(monotonic_now < deadline_ns, "the stand-in's clocks diverge");
        let now = now_on(&host, base).expect("clock");
        assert!(
            now >= lease_until,
            "the owner still trusts its lease after the suspend: now {now:?}, until {lease_until:?}"
        );
        let guard_now = guard_now_ns_on(&host);
        assert_eq!(
            guard.expired(guard_now).map(|lease| lease.epoch),
            Some(7),
            "the guard's deadline {deadline_ns} has not passed at {guard_now} after the suspend"
        );
        assert!(
            !guard.may_pet(guard_now),
            "the guard would pet the watchdog"
        );
    }
}

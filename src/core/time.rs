//! Time as the core sees it: an input, never a clock it reads.
//!
//! Every [`Millis`] is a point on the steady clock (one that never goes backwards) of *one*
//! process. The core compares instants of the same process only (the leader's `now` with
//! the leader's `granted_until`, an owner's `now` with its own `lease_until`); no value ever
//! crosses between nodes.
//! [`Timing`] holds the settings and the lease arithmetic, so the drift allowance `ρ` is
//! applied in exactly one place: the leader stretches a lease by `(1+ρ)`, the owner shrinks
//! it by `(1−ρ)`, both rounded in the safe direction.

use serde::{Deserialize, Serialize};

/// A point on one process's steady clock, in milliseconds since an arbitrary start.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Millis(pub u64);

impl Millis {
    /// This instant moved `ms` later; saturates instead of overflowing.
    pub fn plus(self, ms: u64) -> Millis {
        Millis(self.0.saturating_add(ms))
    }

    /// This instant moved `ms` earlier; saturates at zero.
    pub fn minus(self, ms: u64) -> Millis {
        Millis(self.0.saturating_sub(ms))
    }

    /// Milliseconds from `self` until `later`; zero when `later` is not after `self`.
    pub fn until(self, later: Millis) -> u64 {
        later.0.saturating_sub(self.0)
    }

    /// Milliseconds from `earlier` until `self`; zero when `earlier` is not before `self`.
    pub fn since(self, earlier: Millis) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// The timing and threshold settings every decision reads. Durations are milliseconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timing {
    /// The nominal lease length.
    pub lease_ms: u64,
    /// Bound on the clock-rate difference between any two processes, in permille
    /// (10 = 1 %). Must stay below 1000.
    pub rho_permille: u64,
    /// Extra wait after the old owner's lease can have run out, covering the time its
    /// self-fencing (or the guard) needs to make MySQL stop accepting writes.
    pub fence_margin_ms: u64,
    /// A node whose fail count reached this value is never given ownership automatically,
    /// and an owner that reaches it releases the group.
    pub migration_threshold: u32,
    /// How many times the owner recovers its group in place (resource restarts and retried
    /// starts) within one epoch before it gives the group up.
    pub max_restarts_in_place: u32,
}

impl Timing {
    /// `lease·ρ`, rounded up, computed without overflow.
    fn drift_ms(&self) -> u64 {
        let product = u128::from(self.lease_ms) * u128::from(self.rho_permille);
        let rounded_up = product.div_ceil(1000);
        u64::try_from(rounded_up).unwrap_or(u64::MAX)
    }

    /// `lease·(1+ρ)`, rounded up: how long the leader assumes a lease it granted may run.
    pub fn leader_lease_ms(&self) -> u64 {
        self.lease_ms.saturating_add(self.drift_ms())
    }

    /// `lease·(1−ρ)`, rounded down: how long the owner trusts a lease it was granted.
    pub fn owner_lease_ms(&self) -> u64 {
        self.lease_ms.saturating_sub(self.drift_ms())
    }

    /// How long the leader lets an owner go without a renewal before it calls it silent
    /// (half a lease: two missed renewals at the usual `lease/4` cadence).
    pub fn silence_ms(&self) -> u64 {
        self.lease_ms / 2
    }

    /// A peer heard from within this many milliseconds counts as reachable (one lease).
    pub fn reachable_within_ms(&self) -> u64 {
        self.lease_ms
    }

    /// The owner's `lease_until` after a renewal it sent at `t0` (its own clock) was granted.
    pub fn owner_lease_until(&self, t0: Millis) -> Millis {
        t0.plus(self.owner_lease_ms())
    }

    /// The leader's `granted_until` for a renewal it grants at `now` (its own clock).
    pub fn leader_granted_until(&self, now: Millis) -> Millis {
        now.plus(self.leader_lease_ms())
    }

    /// Everything wrong with these settings, one sentence per problem; empty when usable.
    /// Cluster-level checks (lease against election timeouts, margin against the guard)
    /// belong to config validation, which knows those other settings.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.lease_ms == 0 {
            problems.push(
                "lease_ms is 0: no owner could ever hold a lease; set it to a few seconds".into(),
            );
        }
        if self.rho_permille >= 1000 {
            problems.push(format!(
                "rho_permille is {}: a drift bound of 100 % or more leaves the owner no lease; use a small value such as 10",
                self.rho_permille
            ));
        } else if self.lease_ms > 0 && self.owner_lease_ms() == 0 {
            problems.push("lease_ms is too short for rho_permille: the owner's lease rounds to 0 ms; lengthen the lease".into());
        }
        if self.migration_threshold == 0 {
            problems.push(
                "migration_threshold is 0: no node could ever be given ownership; use 1 or more"
                    .into(),
            );
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(lease_ms: u64, rho_permille: u64) -> Timing {
        Timing {
            lease_ms,
            rho_permille,
            fence_margin_ms: 500,
            migration_threshold: 3,
            max_restarts_in_place: 2,
        }
    }

    #[test]
    fn leader_rounds_up_and_owner_rounds_down() {
        let t = timing(3001, 10); // lease·ρ = 30.01 ms
        assert_eq!(t.leader_lease_ms(), 3001 + 31);
        assert_eq!(t.owner_lease_ms(), 3001 - 31);
    }

    #[test]
    fn owner_deadline_falls_before_leader_deadline_under_worst_drift() {
        // Worst case: the owner's clock runs slow by ρ (its lease lasts longest in real time)
        // and the leader's runs fast by ρ (its grant ends soonest). Renewal and grant both at
        // real time 0. Real end of the owner's lease: owner_ms / (1 − ρ); of the grant:
        // leader_ms / (1 + ρ). Compare them exactly, in integers.
        for (lease_ms, rho_permille) in [(3000, 10), (3001, 10), (1000, 50), (7, 3), (10_000, 1)] {
            let t = timing(lease_ms, rho_permille);
            let owner_side = u128::from(t.owner_lease_ms()) * u128::from(1000 + rho_permille);
            let leader_side = u128::from(t.leader_lease_ms()) * u128::from(1000 - rho_permille);
            assert!(
                owner_side <= leader_side,
                "lease {lease_ms} ms, rho {rho_permille}: the owner's lease outlives the grant"
            );
        }
    }

    #[test]
    fn arithmetic_saturates_instead_of_overflowing() {
        let t = timing(u64::MAX, 999);
        assert_eq!(t.leader_lease_ms(), u64::MAX);
        assert_eq!(Millis(u64::MAX).plus(5), Millis(u64::MAX));
        assert_eq!(Millis(3).minus(5), Millis(0));
        assert_eq!(Millis(10).until(Millis(4)), 0);
        assert_eq!(Millis(10).since(Millis(4)), 6);
    }

    #[test]
    fn unusable_settings_are_named() {
        assert!(timing(3000, 10).problems().is_empty());
        let problems = timing(0, 1000).problems();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("lease_ms is 0"));
        assert!(problems[1].contains("rho_permille is 1000"));
        let mut no_threshold = timing(3000, 10);
        no_threshold.migration_threshold = 0;
        assert!(no_threshold.problems()[0].contains("migration_threshold is 0"));
    }
}

//! The one clock decisions read: milliseconds of this process's monotonic clock since the
//! process first asked. Nothing read from it is ever compared with another process's value.

use std::sync::OnceLock;
use std::time::Instant;

use crate::core::time::Millis;

static BASE: OnceLock<Instant> = OnceLock::new();

/// Now, rounded down to the millisecond (the owner's side: a lease starts no later than this).
pub fn now() -> Millis {
    let base = BASE.get_or_init(Instant::now);
    Millis(u64::try_from(base.elapsed().as_millis()).unwrap_or(u64::MAX))
}

/// Now, rounded up to the millisecond (the leader's side: a grant ends no earlier than this
/// plus its length).
pub fn now_ceiling() -> Millis {
    now().plus(1)
}

/// How many milliseconds from now until `at` (0 when `at` has passed).
pub fn until(at: Millis) -> std::time::Duration {
    std::time::Duration::from_millis(now().until(at))
}

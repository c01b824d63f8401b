//! What the guard believes about the lease, and its rules, with no clock and no I/O.
//!
//! The guard loop feeds it messages and the current lease-clock time; it answers whether a
//! message was applied or ignored (and why), whether the armed deadline has passed, and whether
//! the watchdog may be petted. Keeping this pure lets the tests state every rule directly.
//!
//! Rules:
//! - **Epoch ordering.** A message of an epoch older than the highest seen is ignored and logged:
//!   it belongs to an ownership that has since changed.
//! - **Deadlines only move forward within an epoch.** An `arm` of the same epoch whose deadline is
//!   not later than the latest one granted is ignored (the later deadline was granted and still
//!   holds; an earlier one means the agent mixed up its clocks), except a repeat of the lease that
//!   is armed right now, which changes nothing. So a repeated `arm` read after its deadline was
//!   fenced does not fence twice. An `arm` of a *higher*
//!   epoch replaces the deadline even if it is earlier: a new ownership brings its own lease, and
//!   an earlier deadline only makes the guard fence sooner, never later.
//! - **Disarm** (`disarm e`, `e` at least the highest epoch): the node holds nothing, so there is
//!   no deadline to keep, and a past failed fence is forgiven (the agent only disarms after a
//!   stop that succeeded).
//! - **Expiry.** Once the lease-clock time reaches the armed deadline, the guard must fence; after
//!   fencing it is disarmed until a new `arm`.
//!
//! Watchdog petting policy (see [`GuardState::may_pet`]): pet while the armed lease is valid, or
//! while nothing is armed *because this node holds nothing* (never armed, disarmed, or fenced with
//! every fence action succeeding). Never pet once an armed deadline has passed, and never again
//! after a fence that failed, until a new valid `arm` or a `disarm`: then the kernel resets a node
//! that may still run MySQL without a lease.

use super::protocol::GuardCommand;

/// An armed lease: the deadline and the epoch it belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    /// `lease_until` in lease-clock (`CLOCK_BOOTTIME`) nanoseconds.
    pub deadline_ns: u64,
    /// The owner epoch.
    pub epoch: u64,
}

/// What the guard did with one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The lease is now armed with this deadline.
    Armed(Lease),
    /// The same arm as before; nothing changed.
    Repeated(Lease),
    /// The node holds nothing under this epoch.
    Disarmed {
        /// The released epoch.
        epoch: u64,
    },
    /// A ping; nothing changed.
    Pinged,
    /// The message belongs to an older epoch than `highest`.
    IgnoredStaleEpoch {
        /// The message's epoch.
        epoch: u64,
        /// The highest epoch seen.
        highest: u64,
    },
    /// An arm of the current epoch whose deadline is not later than the one already granted
    /// (a repeat of the armed lease is [`Applied::Repeated`] instead).
    IgnoredNotForward {
        /// The rejected deadline.
        deadline_ns: u64,
        /// The deadline that stays.
        current_ns: u64,
    },
}

/// The guard's view of the lease.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuardState {
    /// The highest epoch any applied message carried.
    highest_epoch: Option<u64>,
    /// The latest deadline granted under `highest_epoch` (kept after disarm and fencing).
    latest_deadline_ns: Option<u64>,
    /// The lease the guard enforces; `None` when disarmed.
    armed: Option<Lease>,
    /// The last fence failed: something may still run without a lease.
    fence_failed: bool,
}

impl GuardState {
    /// A guard that has heard nothing: disarmed, the node holds nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// The lease being enforced, if armed.
    pub fn armed(&self) -> Option<Lease> {
        self.armed
    }

    /// Whether the last fence failed and nothing has cleared it since.
    pub fn fence_failed(&self) -> bool {
        self.fence_failed
    }

    /// Applies one message by the rules in the module docs.
    pub fn apply(&mut self, command: GuardCommand) -> Applied {
        let epoch = match command {
            GuardCommand::Ping => return Applied::Pinged,
            GuardCommand::Arm { epoch, .. } | GuardCommand::Disarm { epoch } => epoch,
        };
        if let Some(highest) = self.highest_epoch {
            if epoch < highest {
                return Applied::IgnoredStaleEpoch { epoch, highest };
            }
        }
        let same_epoch = self.highest_epoch == Some(epoch);
        match command {
            GuardCommand::Arm { deadline_ns, .. } => {
                let lease = Lease { deadline_ns, epoch };
                if same_epoch {
                    if self.armed == Some(lease) {
                        return Applied::Repeated(lease);
                    }
                    if let Some(current_ns) = self.latest_deadline_ns {
                        if deadline_ns <= current_ns {
                            return Applied::IgnoredNotForward {
                                deadline_ns,
                                current_ns,
                            };
                        }
                    }
                }
                self.highest_epoch = Some(epoch);
                self.latest_deadline_ns = Some(deadline_ns);
                self.armed = Some(lease);
                self.fence_failed = false;
                Applied::Armed(lease)
            }
            GuardCommand::Disarm { .. } => {
                if !same_epoch {
                    self.latest_deadline_ns = None;
                }
                self.highest_epoch = Some(epoch);
                self.armed = None;
                self.fence_failed = false;
                Applied::Disarmed { epoch }
            }
            GuardCommand::Ping => Applied::Pinged,
        }
    }

    /// The armed lease whose deadline has passed at `now_ns`, if any: the guard must fence it.
    pub fn expired(&self, now_ns: u64) -> Option<Lease> {
        self.armed.filter(|lease| now_ns >= lease.deadline_ns)
    }

    /// Records the end of a fence: disarmed until a new arm; petting stops for good if it failed.
    pub fn fenced(&mut self, all_succeeded: bool) {
        self.armed = None;
        self.fence_failed = !all_succeeded;
    }

    /// The petting policy: a valid lease, or nothing held and no failed fence.
    pub fn may_pet(&self, now_ns: u64) -> bool {
        match self.armed {
            Some(lease) => now_ns < lease.deadline_ns,
            None => !self.fence_failed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arm(deadline_ns: u64, epoch: u64) -> GuardCommand {
        GuardCommand::Arm { deadline_ns, epoch }
    }

    #[test]
    fn arm_then_forward_in_same_epoch() {
        let mut state = GuardState::new();
        assert_eq!(
            state.apply(arm(100, 3)),
            Applied::Armed(Lease {
                deadline_ns: 100,
                epoch: 3
            })
        );
        assert_eq!(
            state.apply(arm(200, 3)),
            Applied::Armed(Lease {
                deadline_ns: 200,
                epoch: 3
            })
        );
        assert_eq!(
            state.apply(arm(200, 3)),
            Applied::Repeated(Lease {
                deadline_ns: 200,
                epoch: 3
            })
        );
        assert_eq!(
            state.armed(),
            Some(Lease {
                deadline_ns: 200,
                epoch: 3
            })
        );
    }

    #[test]
    fn earlier_deadline_in_same_epoch_is_ignored() {
        let mut state = GuardState::new();
        state.apply(arm(200, 3));
        assert_eq!(
            state.apply(arm(150, 3)),
            Applied::IgnoredNotForward {
                deadline_ns: 150,
                current_ns: 200
            }
        );
        assert_eq!(
            state.armed(),
            Some(Lease {
                deadline_ns: 200,
                epoch: 3
            })
        );
    }

    #[test]
    fn older_epoch_is_ignored_for_arm_and_disarm() {
        let mut state = GuardState::new();
        state.apply(arm(200, 5));
        assert_eq!(
            state.apply(arm(10_000, 4)),
            Applied::IgnoredStaleEpoch {
                epoch: 4,
                highest: 5
            }
        );
        assert_eq!(
            state.apply(GuardCommand::Disarm { epoch: 4 }),
            Applied::IgnoredStaleEpoch {
                epoch: 4,
                highest: 5
            }
        );
        assert_eq!(
            state.armed(),
            Some(Lease {
                deadline_ns: 200,
                epoch: 5
            })
        );
    }

    #[test]
    fn higher_epoch_replaces_even_an_earlier_deadline() {
        let mut state = GuardState::new();
        state.apply(arm(500, 5));
        assert_eq!(
            state.apply(arm(300, 6)),
            Applied::Armed(Lease {
                deadline_ns: 300,
                epoch: 6
            })
        );
        assert_eq!(
            state.expired(300),
            Some(Lease {
                deadline_ns: 300,
                epoch: 6
            })
        );
    }

    #[test]
    fn disarm_clears_the_deadline_and_a_stale_arm_cannot_rearm() {
        let mut state = GuardState::new();
        state.apply(arm(200, 5));
        assert_eq!(
            state.apply(GuardCommand::Disarm { epoch: 5 }),
            Applied::Disarmed { epoch: 5 }
        );
        assert_eq!(state.armed(), None);
        assert_eq!(state.expired(u64::MAX), None);
        assert_eq!(
            state.apply(arm(150, 5)),
            Applied::IgnoredNotForward {
                deadline_ns: 150,
                current_ns: 200
            }
        );
        assert_eq!(
            state.apply(arm(900, 4)),
            Applied::IgnoredStaleEpoch {
                epoch: 4,
                highest: 5
            }
        );
        assert_eq!(state.armed(), None);
    }

    #[test]
    fn expiry_is_at_the_deadline_not_before() {
        let mut state = GuardState::new();
        state.apply(arm(1_000, 1));
        assert_eq!(state.expired(999), None);
        assert_eq!(
            state.expired(1_000),
            Some(Lease {
                deadline_ns: 1_000,
                epoch: 1
            })
        );
    }

    #[test]
    fn petting_policy() {
        let mut state = GuardState::new();
        assert!(state.may_pet(0), "holds nothing yet: keep the watchdog fed");
        state.apply(arm(1_000, 1));
        assert!(state.may_pet(999));
        assert!(!state.may_pet(1_000), "deadline passed: stop petting");
        state.fenced(true);
        assert!(state.may_pet(2_000), "fenced cleanly: holds nothing");
        state.apply(arm(3_000, 1));
        state.fenced(false);
        assert!(state.fence_failed());
        assert!(
            !state.may_pet(2_500),
            "fence failed: let the watchdog reset the node"
        );
        state.apply(arm(5_000, 2));
        assert!(
            state.may_pet(4_000),
            "a new valid lease: the node may hold the group"
        );
        state.fenced(false);
        state.apply(GuardCommand::Disarm { epoch: 2 });
        assert!(
            state.may_pet(9_000),
            "the agent stopped everything and disarmed"
        );
    }

    #[test]
    fn same_epoch_arm_after_fencing_moves_forward() {
        let mut state = GuardState::new();
        state.apply(arm(1_000, 1));
        state.fenced(true);
        assert_eq!(
            state.apply(arm(900, 1)),
            Applied::IgnoredNotForward {
                deadline_ns: 900,
                current_ns: 1_000
            }
        );
        assert_eq!(
            state.apply(arm(1_000, 1)),
            Applied::IgnoredNotForward {
                deadline_ns: 1_000,
                current_ns: 1_000
            },
            "a repeat read after the fence must not fence twice"
        );
        assert_eq!(state.armed(), None);
        assert_eq!(
            state.apply(arm(2_000, 1)),
            Applied::Armed(Lease {
                deadline_ns: 2_000,
                epoch: 1
            })
        );
    }
}

//! The lease horizon: when this arbiter last took part in a quorum round of each Raft term.
//!
//! A lease is granted only after a quorum round that started after the owner took its `t0`:
//! the leader sends AppendEntries after `t0`, and a quorum acknowledges them. Every member of
//! that quorum therefore either *received* an AppendEntries of the granting term after `t0`
//! (a follower) or *granted* after `t0` (the leader). This module records both, per term,
//! on this process's steady clock, before the acknowledgement leaves.
//!
//! A newly elected leader of term `T` asks a majority (itself included) for the latest such
//! instant over all terms below `T`. Any earlier granting quorum shares a member with that
//! majority, so the owner's last `t0` lies before the latest answer, and its lease has run out
//! one whole lease after it. When the owner also led and then died, that is about an election
//! earlier than "a whole lease from my own election" ([`crate::core::leader`] takes the
//! earlier of the two).
//!
//! Clocks: a member answers with an age `a` on its own clock, so at least `a/(1+ρ)` of real
//! time has passed since its round. The owner's lease lasts at most `lease` of real time (it
//! trusts `lease·(1−ρ)` on a clock running at least `1−ρ` fast). When the answer arrives at
//! `r`, at most `lease − a/(1+ρ)` of real time is left, which the leader's clock (running at
//! most `1+ρ` fast) measures as at most `lease·(1+ρ) − a`. So the leader maps the round to
//! `r − a` on its own clock (taking `r` rounded up and `a` rounded down) and adds the same
//! `lease·(1+ρ)` it adds to its own grants.
//!
//! What this process cannot know, it bounds by its own start: every round a previous
//! incarnation of this node took part in happened before [`Horizon::new`] ran.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use crate::clock;
use crate::core::time::Millis;

/// Terms kept apart; older ones are folded into the lowest kept term (see [`Horizon::note`]).
const KEPT_TERMS: usize = 8;

/// Per-term record of this arbiter's latest part in a quorum round.
#[derive(Debug)]
pub struct Horizon {
    started: Millis,
    rounds: Mutex<BTreeMap<u64, Millis>>,
}

impl Default for Horizon {
    fn default() -> Self {
        Horizon::new()
    }
}

impl Horizon {
    /// A record that starts now; everything before it is covered by this instant.
    pub fn new() -> Horizon {
        Horizon {
            started: clock::now_ceiling(),
            rounds: Mutex::new(BTreeMap::new()),
        }
    }

    /// Notes that this node takes part in a round of `term` now: call it when an
    /// AppendEntries or snapshot of `term` arrives (before it is handled and answered), and
    /// when this node grants a lease as the leader of `term`.
    pub fn note(&self, term: u64) {
        self.note_at(term, clock::now_ceiling());
    }

    fn note_at(&self, term: u64, at: Millis) {
        // A poisoned lock still holds valid instants (every update is a single insert or
        // max); dropping a note would make this node's answer too old, which is unsafe.
        let mut rounds = self.rounds.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = rounds.entry(term).or_insert(at);
        *entry = (*entry).max(at);
        // Fold the lowest two terms into the lower one, keeping the later instant: a
        // question about any term above both still sees it, and a question about a term
        // between them sees an instant that is, if anything, later than it needs to be.
        while rounds.len() > KEPT_TERMS {
            let mut lowest = rounds.keys().copied();
            let (Some(first), Some(second)) = (lowest.next(), lowest.next()) else {
                break;
            };
            let moved = rounds.remove(&second).unwrap_or_default();
            if let Some(kept) = rounds.get_mut(&first) {
                *kept = (*kept).max(moved);
            }
        }
    }

    /// The latest instant this node took part in a round of any term below `term`, or its
    /// start when that is later. On this process's clock.
    pub fn before(&self, term: u64) -> Millis {
        let latest = self
            .rounds
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .range(..term)
            .map(|(_, at)| *at)
            .max();
        latest.map_or(self.started, |at| at.max(self.started))
    }

    /// Milliseconds since [`Horizon::before`]`(term)`, rounded down (a shorter age can
    /// only make the asker wait longer).
    pub fn age_before(&self, term: u64) -> u64 {
        clock::now().since(self.before(term))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn horizon() -> Horizon {
        Horizon {
            started: Millis(100),
            rounds: Mutex::new(BTreeMap::new()),
        }
    }

    #[test]
    fn only_earlier_terms_count_and_the_start_bounds_everything() {
        let h = horizon();
        assert_eq!(h.before(5), Millis(100), "nothing recorded: the start");
        h.note_at(3, Millis(500));
        h.note_at(3, Millis(400));
        h.note_at(4, Millis(700));
        h.note_at(5, Millis(900));
        assert_eq!(h.before(3), Millis(100));
        assert_eq!(h.before(4), Millis(500), "the later of two notes of term 3");
        assert_eq!(h.before(5), Millis(700));
        assert_eq!(h.before(6), Millis(900));
        h.note_at(2, Millis(50));
        assert_eq!(h.before(3), Millis(100), "a note older than the start");
    }

    #[test]
    fn folding_old_terms_never_makes_an_answer_earlier() {
        let h = horizon();
        let mut truth: BTreeMap<u64, Millis> = BTreeMap::new();
        for (i, term) in [1u64, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 3, 13, 1]
            .into_iter()
            .enumerate()
        {
            let at = Millis(1_000 + 37 * i as u64);
            h.note_at(term, at);
            let e = truth.entry(term).or_insert(at);
            *e = (*e).max(at);
        }
        assert!(h.rounds.lock().unwrap().len() <= KEPT_TERMS);
        for term in 0..16 {
            let exact = truth
                .range(..term)
                .map(|(_, at)| *at)
                .max()
                .map_or(Millis(100), |at| at.max(Millis(100)));
            assert!(
                h.before(term) >= exact,
                "term {term}: {:?} is earlier than the true {exact:?}",
                h.before(term)
            );
        }
        assert_eq!(h.before(14), truth.values().copied().max().unwrap());
    }
}

//! The vote guard of a node that started with an empty store.
//!
//! A store can be lost (a replaced disk, a wiped directory) while the cluster goes on. The node
//! then comes back empty, and Raft's vote rule (grant to any candidate whose log is at least as
//! long as mine) would let it vote for anyone. It no longer remembers what it acknowledged. If
//! the only up-to-date member is down, the empty node and a lagging one could elect the lagging
//! node, and entries the lost store had acknowledged (an owner change, an "outdated" mark)
//! would be forgotten. It could also vote twice in one term.
//!
//! So a node that started empty refuses vote requests of term 2 or later until it has caught
//! up. It is caught up once, since it started, it has taken the log from a leader (an
//! AppendEntries that passed the append gate), applied at least up to the commit index that
//! leader's first AppendEntries named, and applied an entry of its current leader's own term.
//! That leader was elected without this node, so it holds every committed entry. Its own-term
//! entry being committed means its commit index covers every entry committed before it led,
//! and the first commit index covers what it committed before this node came back.
//!
//! Term 1 stays open: it is the first election of a brand-new cluster, where every member
//! starts empty. Only the initializer runs that election, so granting it again cannot elect a
//! second node in term 1.
//!
//! What it costs: with an empty node and one member down, the cluster elects no leader until
//! that member is back. That is the Raft-correct outcome, since a quorum that includes a
//! forgetful member is no quorum.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::consensus::types::NodeId;

/// Whether this node may vote yet, for a node that started with an empty store.
#[derive(Debug)]
pub struct RejoinGuard {
    node_id: NodeId,
    /// Set while the node has not caught up since it started empty.
    waiting: AtomicBool,
    /// The commit index named by the first AppendEntries taken while waiting.
    commit_target: Mutex<Option<u64>>,
}

/// The last entry this node applied, and the term of its current vote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Term and index of the last applied entry, if any.
    pub applied: Option<(u64, u64)>,
    /// The term of this node's current vote (its leader's term while it follows one).
    pub vote_term: u64,
    /// Whether this node leads that term.
    pub leads: bool,
}

impl Progress {
    /// This node's progress as openraft's metrics show it.
    pub fn of(metrics: &openraft::RaftMetrics<NodeId, crate::consensus::types::Member>) -> Self {
        Progress {
            applied: metrics
                .last_applied
                .map(|log_id| (log_id.leader_id.term, log_id.index)),
            vote_term: metrics.vote.leader_id().get_term(),
            leads: metrics.state == openraft::ServerState::Leader,
        }
    }
}

/// Keeps `guard` up to date with `raft`'s metrics until the node has caught up.
pub async fn watch(guard: std::sync::Arc<RejoinGuard>, raft: crate::consensus::types::Raft) {
    let mut metrics = raft.metrics();
    while guard.waiting() {
        let progress = Progress::of(&metrics.borrow_and_update());
        guard.observe(progress);
        if !guard.waiting() || metrics.changed().await.is_err() {
            return;
        }
    }
}

impl RejoinGuard {
    /// The guard of node `node_id`; `started_empty` when its store held nothing at start.
    pub fn new(node_id: NodeId, started_empty: bool) -> RejoinGuard {
        RejoinGuard {
            node_id,
            waiting: AtomicBool::new(started_empty),
            commit_target: Mutex::new(None),
        }
    }

    /// Notes an AppendEntries this node takes (it passed the append gate), with the commit
    /// index its leader named.
    pub fn took_append(&self, leader_commit: Option<u64>) {
        if !self.waiting() {
            return;
        }
        let mut target = self.target();
        if target.is_none() {
            *target = Some(leader_commit.unwrap_or(0));
        }
    }

    /// Whether this node is still waiting to catch up.
    pub fn waiting(&self) -> bool {
        self.waiting.load(Ordering::SeqCst)
    }

    /// Looks at this node's `progress` (called on every change of openraft's metrics) and
    /// ends the wait once it has caught up. A node that leads has caught up once it applied
    /// an entry of its own term: it was elected without this rule's help (only term 1 is open,
    /// and that is a brand-new cluster), so its log holds every committed entry.
    pub fn observe(&self, progress: Progress) {
        if !self.waiting() {
            return;
        }
        let own_term_applied = progress
            .applied
            .is_some_and(|(term, _)| term >= 1 && term == progress.vote_term);
        let target_reached = match (*self.target(), progress.applied) {
            (Some(target), Some((_, index))) => index >= target,
            _ => false,
        };
        if own_term_applied && (progress.leads || target_reached) {
            self.waiting.store(false, Ordering::SeqCst);
            tracing::info!(
                node = self.node_id,
                "caught up after starting with an empty store; voting again"
            );
        }
    }

    fn target(&self) -> std::sync::MutexGuard<'_, Option<u64>> {
        self.commit_target
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Decides on a vote request of `term` given this node's `progress`. `Err` says why the
    /// request is refused.
    pub fn may_vote(&self, term: u64, progress: Progress) -> Result<(), String> {
        self.observe(progress);
        if !self.waiting() {
            return Ok(());
        }
        if term <= 1 {
            return Ok(());
        }
        Err(format!(
            "node {} started with an empty store and has not caught up with a leader yet: it \
             votes only then, so it cannot help elect a node that lacks entries its lost store \
             acknowledged",
            self.node_id
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(applied: Option<(u64, u64)>, vote_term: u64) -> Progress {
        Progress {
            applied,
            vote_term,
            leads: false,
        }
    }

    #[test]
    fn a_node_that_started_with_data_always_votes() {
        let guard = RejoinGuard::new(2, false);
        assert_eq!(guard.may_vote(10, progress(None, 0)), Ok(()));
    }

    #[test]
    fn an_empty_node_votes_in_the_first_election_only_until_it_caught_up() {
        let guard = RejoinGuard::new(3, true);
        assert_eq!(
            guard.may_vote(1, progress(None, 0)),
            Ok(()),
            "term 1: a brand-new cluster"
        );
        let refused = guard.may_vote(8, progress(None, 0)).unwrap_err();
        assert!(refused.contains("empty store"), "{refused}");
        // Entries applied, but no leader's log taken since the start: not caught up.
        assert!(guard.may_vote(8, progress(Some((7, 40)), 7)).is_err());
        // The first append names commit index 50; later ones do not move the target.
        guard.took_append(Some(50));
        guard.took_append(Some(90));
        assert!(guard.may_vote(8, progress(Some((7, 49)), 7)).is_err());
        // Up to the target, but the last entry is of an older leader than the current one.
        assert!(guard.may_vote(8, progress(Some((6, 50)), 7)).is_err());
        assert!(guard.waiting());
        // Up to the target with an entry of the current leader's term: caught up, for good.
        assert_eq!(guard.may_vote(8, progress(Some((7, 50)), 7)), Ok(()));
        assert!(!guard.waiting());
        assert_eq!(guard.may_vote(12, progress(None, 11)), Ok(()));
    }

    #[test]
    fn the_first_leader_of_a_brand_new_cluster_is_caught_up_once_its_entry_applies() {
        // It never receives an AppendEntries: it sends them.
        let guard = RejoinGuard::new(1, true);
        guard.observe(Progress {
            applied: Some((0, 0)),
            vote_term: 1,
            leads: true,
        });
        assert!(
            guard.waiting(),
            "the membership entry is not of its own term"
        );
        guard.observe(Progress {
            applied: Some((1, 1)),
            vote_term: 1,
            leads: true,
        });
        assert!(!guard.waiting());
        assert_eq!(guard.may_vote(2, progress(Some((1, 1)), 2)), Ok(()));
    }

    #[test]
    fn a_member_of_a_brand_new_cluster_catches_up_from_the_first_leader() {
        // Every member starts empty; the initializer leads term 1 and this node follows it.
        let guard = RejoinGuard::new(2, true);
        assert_eq!(guard.may_vote(1, progress(None, 0)), Ok(()));
        guard.took_append(None);
        // The first leader dies; a candidate of term 2 asks. This node applied the leader's
        // term-1 entries and still votes in term 1, so it is caught up and votes.
        assert_eq!(guard.may_vote(2, progress(Some((1, 2)), 1)), Ok(()));
    }
}

//! The replicated state machine's content: who owns the resource group, under which epoch,
//! and the per-node marks (standby, outdated, fail count) that decide who may take it over.
//!
//! `ClusterState::apply` is deterministic: it reads nothing but the state, the request and
//! the members' roles from the membership applied before it (itself part of the log), so
//! every member that applies the same log reaches the same state. It lives in the core,
//! beside the decisions that read it, so the core's scenario tests run the real transition;
//! `consensus` stores these requests in the Raft log and the state in its snapshots.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

use super::view::{node_label, ClusterView, Ineligible, NodeId, NodeView, Owner, Role};

/// How many history records the state keeps; older ones are dropped.
pub const HISTORY_LIMIT: usize = 200;

/// A proposal to the replicated state machine, with who asked and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// What to change.
    pub command: Command,
    /// Who asked: a node name, or `admin:<peer address>` for an operator.
    pub requested_by: String,
    /// Why, in one sentence; recorded in the history.
    pub reason: String,
    /// The proposer's wall-clock time in milliseconds since the Unix epoch, for the
    /// history only. No decision ever compares it with another clock.
    pub at_unix_ms: u64,
}

/// The changes the state machine knows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Changes nothing; used to confirm leadership and commit a leader's first entry.
    Noop,
    /// The leader gives ownership to `node`. Applies only while the owner epoch is still
    /// `expected` (compare-and-set), so a decision made on stale state changes nothing,
    /// and only while the committed state still lets `node` take the group (a management
    /// member, not outdated, not on standby, the cluster not paused), so a mark committed
    /// between the leader's decision and this entry wins. The new epoch is the log index of
    /// this entry.
    GrantOwnership {
        /// The new owner.
        node: NodeId,
        /// The owner epoch the leader decided on (`None`: there was no owner).
        expected: Option<u64>,
        /// Re-check the target's eligibility when applying (every grant this version
        /// writes). Grants written before the re-check existed decode with `false` and replay
        /// exactly as they were first applied, so a member that replays an old log (after a
        /// restart, from a snapshot, or a newer binary beside an older one) reaches the same
        /// state as every member that applied it live: apply stays a function of the log.
        #[serde(default)]
        recheck: bool,
    },
    /// The owner stopped its group in order and gives ownership up.
    Release {
        /// The owner.
        node: NodeId,
        /// Its epoch.
        epoch: u64,
    },
    /// An operator asks the owner to hand the group over to `to` (planned switchover).
    RequestSwitchover {
        /// The target management node.
        to: NodeId,
    },
    /// Drops a pending switchover request.
    CancelSwitchover,
    /// Marks or unmarks a node as standby (never takes ownership).
    SetStandby {
        /// The node.
        node: NodeId,
        /// The new mark.
        standby: bool,
    },
    /// Marks or unmarks a node's data as possibly stale, unconditionally: the operator's
    /// `mark-outdated` / `clear-outdated` and DRBD's `unfence-peer` after a resync. DRBD's
    /// `fence-peer` handler never uses it; it uses [`Command::OutdatePeer`].
    SetOutdated {
        /// The node.
        node: NodeId,
        /// The new mark.
        outdated: bool,
    },
    /// DRBD's `fence-peer` handler on the owner outdates its peer so that DRBD may resume I/O.
    /// A compare-and-set: applies only while `owner` holds `epoch` (not released) and `peer`
    /// is not the owner; otherwise it is refused and changes nothing, and the handler keeps
    /// DRBD's I/O frozen.
    OutdatePeer {
        /// The node whose handler asks: it must be the owner.
        owner: NodeId,
        /// The owner epoch the handler believes it holds.
        epoch: u64,
        /// The node to mark outdated.
        peer: NodeId,
    },
    /// Enters or leaves maintenance mode.
    SetPaused {
        /// The new mode.
        paused: bool,
    },
    /// A start of the group failed on `node` under `epoch`.
    RecordFailure {
        /// The node.
        node: NodeId,
        /// The epoch of the failed start.
        epoch: u64,
    },
    /// The owner brought its group up: a history record with how long each resource took.
    RecordStarted {
        /// The owner.
        node: NodeId,
        /// Its epoch.
        epoch: u64,
        /// Each resource in start order with its start time in milliseconds.
        phases: Vec<(String, u64)>,
        /// Milliseconds from the moment the node saw its grant committed to the group up.
        since_grant_ms: u64,
    },
    /// Clears a node's failure count.
    ResetFailures {
        /// The node.
        node: NodeId,
    },
}

/// What applying a request produced.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The log index the request was applied at.
    pub index: u64,
    /// `None` when applied; the reason when the state machine refused the change.
    pub refused: Option<String>,
}

/// Per-node marks kept in the replicated state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeMarks {
    /// An operator asked that this node never take ownership.
    pub standby: bool,
    /// This node's data may be stale: never promote it automatically.
    pub outdated: bool,
    /// Failed starts of the resource group on this node since the last reset.
    pub fail_count: u32,
    /// The epoch of the last failure counted, so one epoch counts at most once.
    #[serde(default)]
    pub last_failed_epoch: Option<u64>,
}

/// One line of the bounded history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryRecord {
    /// Log index of the entry that made this change.
    pub index: u64,
    /// The proposer's wall-clock time (ms since the Unix epoch).
    pub at_unix_ms: u64,
    /// What happened, in a few words.
    pub what: String,
    /// Why.
    pub reason: String,
    /// Who asked.
    pub requested_by: String,
}

/// Everything the cluster agrees on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// The owner, if any node holds ownership.
    pub owner: Option<Owner>,
    /// Set when the owner gave the group up in order; the epoch it released.
    pub released: Option<u64>,
    /// Per-node marks.
    pub nodes: BTreeMap<NodeId, NodeMarks>,
    /// Maintenance mode: no automatic actions.
    pub paused: bool,
    /// A planned switchover an operator asked for: the target node.
    pub switchover_to: Option<NodeId>,
    /// The newest records last.
    pub history: VecDeque<HistoryRecord>,
}

impl ClusterState {
    /// Applies one request committed at `index` and says what came of it. A refused request
    /// changes nothing. `roles` is the Raft membership as applied before this entry (each
    /// member's role); a grant to an id it does not name is refused.
    pub fn apply(
        &mut self,
        index: u64,
        request: &Request,
        roles: &BTreeMap<NodeId, Role>,
    ) -> Response {
        match self.change(index, &request.command, roles) {
            Ok(Some(what)) => {
                self.history.push_back(HistoryRecord {
                    index,
                    at_unix_ms: request.at_unix_ms,
                    what,
                    reason: request.reason.clone(),
                    requested_by: request.requested_by.clone(),
                });
                while self.history.len() > HISTORY_LIMIT {
                    self.history.pop_front();
                }
                Response {
                    index,
                    refused: None,
                }
            }
            Ok(None) => Response {
                index,
                refused: None,
            },
            Err(refused) => Response {
                index,
                refused: Some(refused),
            },
        }
    }

    /// The marks of `node` (default marks when none were ever set).
    pub fn marks(&self, node: NodeId) -> NodeMarks {
        self.nodes.get(&node).cloned().unwrap_or_default()
    }

    /// True when the owner released its epoch in order.
    pub fn owner_released(&self) -> bool {
        matches!((self.owner, self.released), (Some(o), Some(r)) if o.epoch == r)
    }

    /// The core's view of this state for a cluster whose members are `members`, each given
    /// as its id, name and role; a member's marks are its default marks when none were set.
    pub fn view<'a>(
        &self,
        members: impl IntoIterator<Item = (NodeId, &'a str, Role)>,
    ) -> ClusterView {
        ClusterView {
            owner: self.owner,
            released: self.released,
            paused: self.paused,
            switchover_to: self.switchover_to,
            nodes: members
                .into_iter()
                .map(|(id, name, role)| {
                    let marks = self.marks(id);
                    (
                        id,
                        NodeView {
                            name: name.to_string(),
                            role,
                            standby: marks.standby,
                            outdated: marks.outdated,
                            fail_count: marks.fail_count,
                        },
                    )
                })
                .collect(),
        }
    }

    /// Why the committed state forbids giving ownership to `node`, or `None` if it allows it.
    ///
    /// The leader decided the grant on the state it had applied then; marks committed
    /// between that decision and the grant's own entry (an operator's standby or pause, a
    /// fence-peer's outdated mark) are only seen here. Checking them again at apply time,
    /// in log order, makes the later mark win on every member alike: a grant is refused
    /// unless everything the leader's [`crate::core::leader::decide`] reads from the
    /// committed state still allows it. While paused the leader grants nothing, so a paused
    /// cluster refuses every grant. The migration threshold is not checked here: it is a
    /// per-node setting, not part of the replicated state, and apply reads nothing else.
    fn grant_refusal(&self, node: NodeId, roles: &BTreeMap<NodeId, Role>) -> Option<String> {
        if self.paused {
            return Some(
                "the cluster is paused: no grant applies in maintenance mode; resume it first"
                    .into(),
            );
        }
        let why = match roles.get(&node) {
            None => Ineligible::NotAMember,
            Some(Role::Witness) => Ineligible::Witness,
            Some(Role::Management) => {
                let marks = self.marks(node);
                if marks.outdated {
                    Ineligible::Outdated
                } else if marks.standby {
                    Ineligible::Standby
                } else {
                    return None;
                }
            }
        };
        Some(format!(
            "grant refused: {}",
            why.sentence(&node_label(node))
        ))
    }

    /// Makes the change; `Ok(Some(what))` for a change worth a history line, `Ok(None)` for
    /// no change, `Err(why)` for a refusal.
    fn change(
        &mut self,
        index: u64,
        command: &Command,
        roles: &BTreeMap<NodeId, Role>,
    ) -> Result<Option<String>, String> {
        match *command {
            Command::Noop => Ok(None),
            Command::GrantOwnership {
                node,
                expected,
                recheck,
            } => {
                let current = self.owner.map(|o| o.epoch);
                if current != expected {
                    return Err(format!(
                        "ownership changed meanwhile: epoch is {current:?}, the grant expected {expected:?}"
                    ));
                }
                if recheck {
                    if let Some(why) = self.grant_refusal(node, roles) {
                        return Err(why);
                    }
                }
                let previous = self.owner.map(|o| o.node);
                self.owner = Some(Owner { node, epoch: index });
                self.released = None;
                // A grant ends any pending switchover: it either happened or was overtaken.
                self.switchover_to = None;
                Ok(Some(match previous {
                    Some(old) if old != node => {
                        format!("ownership moved from node {old} to node {node} (epoch {index})")
                    }
                    Some(_) => format!("ownership granted again to node {node} (epoch {index})"),
                    None => format!("ownership granted to node {node} (epoch {index})"),
                }))
            }
            Command::Release { node, epoch } => match self.owner {
                Some(owner) if owner.node == node && owner.epoch == epoch => {
                    if self.released == Some(epoch) {
                        return Ok(None);
                    }
                    self.released = Some(epoch);
                    Ok(Some(format!(
                        "node {node} released the group (epoch {epoch})"
                    )))
                }
                _ => Err(format!(
                    "node {node} does not own epoch {epoch}; the owner is {:?}",
                    self.owner
                )),
            },
            Command::RequestSwitchover { to } => {
                if self.paused {
                    return Err("the cluster is paused; resume it first".into());
                }
                self.switchover_to = Some(to);
                Ok(Some(format!("switchover to node {to} requested")))
            }
            Command::CancelSwitchover => match self.switchover_to.take() {
                Some(to) => Ok(Some(format!("switchover to node {to} cancelled"))),
                None => Ok(None),
            },
            Command::SetStandby { node, standby } => {
                let marks = self.nodes.entry(node).or_default();
                if marks.standby == standby {
                    return Ok(None);
                }
                marks.standby = standby;
                Ok(Some(if standby {
                    format!("node {node} set to standby")
                } else {
                    format!("node {node} no longer standby")
                }))
            }
            Command::SetOutdated { node, outdated } => {
                let marks = self.nodes.entry(node).or_default();
                if marks.outdated == outdated {
                    return Ok(None);
                }
                marks.outdated = outdated;
                Ok(Some(if outdated {
                    format!("node {node} marked outdated")
                } else {
                    format!("node {node} is up to date again")
                }))
            }
            Command::OutdatePeer { owner, epoch, peer } => {
                // Safety: the handler's reading of who owns the group may be stale (it asked
                // its own member, which may have been cut off while the leader moved the
                // group). This check runs where the log orders it: after every grant
                // committed before it. If the group moved, the handler's node is no longer
                // the owner of `epoch` and the entry changes nothing, so an old owner can
                // never outdate the new one and resume I/O beside it. Epochs only grow, so
                // a refusal is final. A released epoch is refused too: a node that gave the
                // group up has no I/O to resume.
                let holds =
                    self.owner == Some(Owner { node: owner, epoch }) && !self.owner_released();
                if !holds {
                    return Err(format!(
                        "node {owner} does not hold epoch {epoch} (the owner is {}); it must not outdate node {peer}",
                        describe_owner(self.owner, self.released)
                    ));
                }
                if peer == owner {
                    return Err(format!("node {peer} owns the group; it cannot be outdated"));
                }
                let marks = self.nodes.entry(peer).or_default();
                if marks.outdated {
                    return Ok(None);
                }
                marks.outdated = true;
                Ok(Some(format!(
                    "node {peer} marked outdated by the owner node {owner} (epoch {epoch})"
                )))
            }
            Command::SetPaused { paused } => {
                if self.paused == paused {
                    return Ok(None);
                }
                self.paused = paused;
                Ok(Some(if paused {
                    "cluster paused".to_string()
                } else {
                    "cluster resumed".to_string()
                }))
            }
            Command::RecordFailure { node, epoch } => {
                let marks = self.nodes.entry(node).or_default();
                if marks.last_failed_epoch == Some(epoch) {
                    return Ok(None);
                }
                marks.last_failed_epoch = Some(epoch);
                marks.fail_count = marks.fail_count.saturating_add(1);
                Ok(Some(format!(
                    "node {node} failed to run the group (epoch {epoch}); fail count {}",
                    marks.fail_count
                )))
            }
            Command::RecordStarted {
                node,
                epoch,
                ref phases,
                since_grant_ms,
            } => {
                let steps: Vec<String> = phases
                    .iter()
                    .map(|(name, ms)| format!("{name} {:.2} s", *ms as f64 / 1000.0))
                    .collect();
                Ok(Some(format!(
                    "node {node} started the group (epoch {epoch}): {}; up {:.2} s after it saw the grant",
                    steps.join(", "),
                    since_grant_ms as f64 / 1000.0
                )))
            }
            Command::ResetFailures { node } => {
                let marks = self.nodes.entry(node).or_default();
                if marks.fail_count == 0 {
                    return Ok(None);
                }
                marks.fail_count = 0;
                Ok(Some(format!("node {node} fail count reset")))
            }
        }
    }
}

/// The owner as a refusal names it: "node 2 at epoch 9", "node 2 at epoch 9, released",
/// or "nobody".
fn describe_owner(owner: Option<Owner>, released: Option<u64>) -> String {
    match owner {
        Some(o) if released == Some(o.epoch) => {
            format!("node {} at epoch {}, released", o.node, o.epoch)
        }
        Some(o) => format!("node {} at epoch {}", o.node, o.epoch),
        None => "nobody".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The membership the tests run with: management nodes 1 and 2, the witness 3.
    fn roles() -> BTreeMap<NodeId, Role> {
        BTreeMap::from([
            (1, Role::Management),
            (2, Role::Management),
            (3, Role::Witness),
        ])
    }

    fn req(command: Command) -> Request {
        Request {
            command,
            requested_by: "test".into(),
            reason: "because".into(),
            at_unix_ms: 7,
        }
    }

    #[test]
    fn stored_forms_are_those_the_log_and_snapshots_already_hold() {
        let mut s = ClusterState::default();
        s.apply(
            5,
            &req(Command::GrantOwnership {
                node: 1,
                expected: None,
                recheck: true,
            }),
            &roles(),
        );
        s.history.clear();
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"owner":{"node":1,"epoch":5},"released":null,"nodes":{},"paused":false,"switchover_to":null,"history":[]}"#
        );
        assert_eq!(
            serde_json::to_string(&Command::Release { node: 2, epoch: 9 }).unwrap(),
            r#"{"Release":{"node":2,"epoch":9}}"#
        );
        assert_eq!(
            serde_json::to_string(&[Role::Management, Role::Witness]).unwrap(),
            r#"["management","witness"]"#
        );
        let role: Role = serde_json::from_str(r#""witness""#).unwrap();
        assert_eq!(role, Role::Witness);
        // The operator's unconditional mark keeps its stored form; fence-peer's
        // compare-and-set is a variant of its own.
        assert_eq!(
            serde_json::to_string(&Command::SetOutdated {
                node: 2,
                outdated: true
            })
            .unwrap(),
            r#"{"SetOutdated":{"node":2,"outdated":true}}"#
        );
        assert_eq!(
            serde_json::to_string(&Command::OutdatePeer {
                owner: 1,
                epoch: 5,
                peer: 2
            })
            .unwrap(),
            r#"{"OutdatePeer":{"owner":1,"epoch":5,"peer":2}}"#
        );
    }

    fn owned(node: NodeId, epoch: u64) -> ClusterState {
        let mut s = ClusterState::default();
        s.apply(
            epoch,
            &req(Command::GrantOwnership {
                node,
                expected: None,
                recheck: true,
            }),
            &roles(),
        );
        s
    }

    fn outdate_peer(owner: NodeId, epoch: u64, peer: NodeId) -> Request {
        req(Command::OutdatePeer { owner, epoch, peer })
    }

    #[test]
    fn fence_peer_outdates_the_peer_while_the_owner_holds_its_epoch() {
        let mut s = owned(1, 5);
        let r = s.apply(6, &outdate_peer(1, 5, 2), &roles());
        assert_eq!(r.refused, None);
        assert!(s.marks(2).outdated);
        assert!(s.history.back().unwrap().what.contains("marked outdated"));
        // Again: harmless, no new history line.
        let lines = s.history.len();
        assert_eq!(s.apply(7, &outdate_peer(1, 5, 2), &roles()).refused, None);
        assert_eq!(s.history.len(), lines);
    }

    #[test]
    fn fence_peer_from_a_stale_owner_is_refused_and_outdates_nobody() {
        // Node 1 owned epoch 5; the group moved to node 2 (epoch 9) while node 1 was cut off.
        let mut s = owned(1, 5);
        s.apply(
            9,
            &req(Command::GrantOwnership {
                node: 2,
                expected: Some(5),
                recheck: true,
            }),
            &roles(),
        );
        let before = s.clone();
        let r = s.apply(10, &outdate_peer(1, 5, 2), &roles());
        let why = r.refused.expect("a stale epoch is refused");
        assert!(why.contains("does not hold epoch 5"), "{why}");
        assert!(why.contains("node 2 at epoch 9"), "{why}");
        assert_eq!(s, before, "a refused entry changes nothing");
        // The right node with a wrong epoch, and any node once the epoch was released,
        // are refused as well.
        assert!(s
            .apply(11, &outdate_peer(2, 5, 1), &roles())
            .refused
            .is_some());
        s.apply(12, &req(Command::Release { node: 2, epoch: 9 }), &roles());
        let why = s
            .apply(13, &outdate_peer(2, 9, 1), &roles())
            .refused
            .unwrap();
        assert!(why.contains("released"), "{why}");
        assert!(!s.marks(1).outdated && !s.marks(2).outdated);
    }

    #[test]
    fn fence_peer_never_outdates_the_owner() {
        let mut s = owned(1, 5);
        let why = s
            .apply(6, &outdate_peer(1, 5, 1), &roles())
            .refused
            .unwrap();
        assert!(why.contains("owns the group"), "{why}");
        assert!(!s.marks(1).outdated);
    }

    #[test]
    fn grant_is_compare_and_set_on_the_epoch() {
        let mut s = ClusterState::default();
        let r = s.apply(
            5,
            &req(Command::GrantOwnership {
                node: 1,
                expected: None,
                recheck: true,
            }),
            &roles(),
        );
        assert_eq!(r.refused, None);
        assert_eq!(s.owner, Some(Owner { node: 1, epoch: 5 }));
        // A grant decided before epoch 5 existed changes nothing.
        let r = s.apply(
            6,
            &req(Command::GrantOwnership {
                node: 2,
                expected: None,
                recheck: true,
            }),
            &roles(),
        );
        assert!(r.refused.unwrap().contains("ownership changed meanwhile"));
        assert_eq!(s.owner, Some(Owner { node: 1, epoch: 5 }));
        let r = s.apply(
            9,
            &req(Command::GrantOwnership {
                node: 2,
                expected: Some(5),
                recheck: true,
            }),
            &roles(),
        );
        assert_eq!(r.refused, None);
        assert_eq!(s.owner, Some(Owner { node: 2, epoch: 9 }));
        assert_eq!(s.history.len(), 2);
        assert!(s.history[1].what.contains("from node 1 to node 2"));
    }

    #[test]
    fn a_grant_written_before_the_recheck_replays_as_it_was_first_applied() {
        // A grant entry as the log held it before grants were re-checked at apply: no
        // `recheck` field. Members that applied it then accepted it whatever the marks;
        // a member replaying it now must reach the same state, or the replicas diverge.
        let old: Command =
            serde_json::from_str(r#"{"GrantOwnership":{"node":2,"expected":3}}"#).unwrap();
        assert_eq!(
            old,
            Command::GrantOwnership {
                node: 2,
                expected: Some(3),
                recheck: false
            }
        );
        let mut s = ClusterState::default();
        let cold = Command::GrantOwnership {
            node: 1,
            expected: None,
            recheck: true,
        };
        s.apply(3, &req(cold), &roles());
        s.apply(
            4,
            &req(Command::SetStandby {
                node: 2,
                standby: true,
            }),
            &roles(),
        );
        let mut replayed = s.clone();
        assert_eq!(replayed.apply(5, &req(old), &roles()).refused, None);
        assert_eq!(replayed.owner.map(|o| o.node), Some(2));
        // The same grant as this version writes it is re-checked and refused.
        let new = Command::GrantOwnership {
            node: 2,
            expected: Some(3),
            recheck: true,
        };
        assert!(s.apply(5, &req(new.clone()), &roles()).refused.is_some());
        assert_eq!(
            serde_json::to_string(&new).unwrap(),
            r#"{"GrantOwnership":{"node":2,"expected":3,"recheck":true}}"#
        );
    }

    #[test]
    fn a_grant_is_refused_when_a_mark_committed_after_the_decision_forbids_it() {
        let grant = |node, expected| {
            req(Command::GrantOwnership {
                node,
                expected: Some(expected),
                recheck: true,
            })
        };
        let mut s = ClusterState::default();
        let cold = req(Command::GrantOwnership {
            node: 1,
            expected: None,
            recheck: true,
        });
        assert_eq!(s.apply(3, &cold, &roles()).refused, None);
        // The leader decided to move the group to node 2; before the grant's entry, an
        // operator's standby and then a fence-peer's outdated mark were committed.
        for (index, mark, why) in [
            (
                10,
                Command::SetStandby {
                    node: 2,
                    standby: true,
                },
                "node#2 is on standby",
            ),
            (
                20,
                Command::SetOutdated {
                    node: 2,
                    outdated: true,
                },
                "node#2 is outdated",
            ),
        ] {
            s.apply(index, &req(mark), &roles());
            let before = s.clone();
            let r = s.apply(index + 1, &grant(2, 3), &roles());
            let refused = r.refused.expect("the grant must be refused");
            assert!(refused.contains(why), "{refused}");
            assert_eq!(s, before, "a refused grant changes nothing");
        }
        s.apply(
            30,
            &req(Command::SetStandby {
                node: 2,
                standby: false,
            }),
            &roles(),
        );
        s.apply(
            31,
            &req(Command::SetOutdated {
                node: 2,
                outdated: false,
            }),
            &roles(),
        );
        // Paused between the decision and the grant: the leader grants nothing while paused.
        s.apply(32, &req(Command::SetPaused { paused: true }), &roles());
        let before = s.clone();
        let r = s.apply(33, &grant(2, 3), &roles());
        assert!(r.refused.expect("refused while paused").contains("paused"));
        assert_eq!(s, before);
        s.apply(34, &req(Command::SetPaused { paused: false }), &roles());
        // Never to a witness or to an id outside the membership.
        let r = s.apply(35, &grant(3, 3), &roles());
        assert!(r.refused.expect("refused").contains("is a witness"));
        let r = s.apply(36, &grant(9, 3), &roles());
        assert!(r.refused.expect("refused").contains("is not a member"));
        assert_eq!(s.owner, Some(Owner { node: 1, epoch: 3 }));
        // With the marks cleared and the cluster resumed, the same grant applies.
        let r = s.apply(37, &grant(2, 3), &roles());
        assert_eq!(r.refused, None);
        assert_eq!(s.owner, Some(Owner { node: 2, epoch: 37 }));
    }

    #[test]
    fn only_the_owner_of_that_epoch_can_release() {
        let mut s = ClusterState::default();
        s.apply(
            3,
            &req(Command::GrantOwnership {
                node: 1,
                expected: None,
                recheck: true,
            }),
            &roles(),
        );
        assert!(s
            .apply(4, &req(Command::Release { node: 2, epoch: 3 }), &roles())
            .refused
            .is_some());
        assert!(s
            .apply(5, &req(Command::Release { node: 1, epoch: 2 }), &roles())
            .refused
            .is_some());
        assert!(!s.owner_released());
        assert!(s
            .apply(6, &req(Command::Release { node: 1, epoch: 3 }), &roles())
            .refused
            .is_none());
        assert!(s.owner_released());
        // A new grant clears the released mark and any pending switchover.
        s.apply(7, &req(Command::RequestSwitchover { to: 2 }), &roles());
        s.apply(
            8,
            &req(Command::GrantOwnership {
                node: 2,
                expected: Some(3),
                recheck: true,
            }),
            &roles(),
        );
        assert!(!s.owner_released());
        assert_eq!(s.switchover_to, None);
    }

    #[test]
    fn marks_and_history_are_kept_and_bounded() {
        let mut s = ClusterState::default();
        s.apply(
            1,
            &req(Command::SetStandby {
                node: 2,
                standby: true,
            }),
            &roles(),
        );
        s.apply(
            2,
            &req(Command::SetOutdated {
                node: 1,
                outdated: true,
            }),
            &roles(),
        );
        s.apply(
            3,
            &req(Command::RecordFailure { node: 1, epoch: 1 }),
            &roles(),
        );
        s.apply(4, &req(Command::SetPaused { paused: true }), &roles());
        assert!(s.marks(2).standby);
        assert!(s.marks(1).outdated);
        assert_eq!(s.marks(1).fail_count, 1);
        assert!(s.paused);
        // Setting a mark to what it already is adds no history line.
        let before = s.history.len();
        s.apply(5, &req(Command::SetPaused { paused: true }), &roles());
        assert_eq!(s.history.len(), before);
        // The same epoch counts once, however often it is proposed.
        s.apply(
            6,
            &req(Command::RecordFailure { node: 1, epoch: 1 }),
            &roles(),
        );
        assert_eq!(s.marks(1).fail_count, 1);
        for i in 0..(HISTORY_LIMIT as u64 + 10) {
            s.apply(
                10 + i,
                &req(Command::RecordFailure { node: 2, epoch: i }),
                &roles(),
            );
        }
        assert_eq!(s.history.len(), HISTORY_LIMIT);
        assert_eq!(s.history.back().unwrap().at_unix_ms, 7);
    }
}

//! The timing fingerprint: the `[raft]` and `[lease]` settings every member must share, as a
//! short canonical text that travels in every peer request's envelope.
//!
//! The safety argument (docs/PROTOCOL.md, "Timing") assumes one lease duration, one drift
//! bound, one fence margin and one set of Raft timeouts across the cluster: the leader grants
//! a lease with its own `lease.duration_ms`, the owner trusts it with its own, and a new
//! leader waits out old leases with its own. If one member ran different values, the owner
//! could trust its lease longer than the leader waits, and the group could be active twice.
//! Nothing in the config file alone can catch that, so each member states its values on the
//! wire and the receiver refuses a sender whose values differ from its own.
//!
//! The fingerprint carries the values themselves rather than a hash, so a refusal can name the
//! setting and both values.

use super::{LeaseTiming, OldLeaseBound, RaftTiming};

/// The safety-relevant timing of one member, as `name=value` pairs joined by `;`, in a fixed
/// order, for example `raft.heartbeat_interval_ms=50;...;lease.old_lease_bound=horizon`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimingFingerprint {
    text: String,
}

/// One setting on which two members' timing differs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimingDifference {
    /// The setting, as `table.key` (for example `lease.duration_ms`).
    pub setting: String,
    /// The sender's value; `None` when the sender did not state the setting.
    pub theirs: Option<String>,
    /// This node's value; `None` when this node has no such setting.
    pub ours: Option<String>,
}

impl TimingDifference {
    /// `lease.duration_ms 3000 there, 1500 here`: the difference as a short phrase.
    pub fn describe(&self) -> String {
        format!(
            "{} {} there, {} here",
            self.setting,
            value_or_unset(&self.theirs),
            value_or_unset(&self.ours)
        )
    }
}

/// A value, or `(not set)` for a setting one side does not have.
pub fn value_or_unset(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or("(not set)")
}

impl TimingFingerprint {
    /// The fingerprint of these settings.
    ///
    /// Both structs are destructured without `..`: a timing setting added later fails to
    /// compile here until it is either fingerprinted or deliberately left out.
    pub fn of(raft: &RaftTiming, lease: &LeaseTiming) -> TimingFingerprint {
        let RaftTiming {
            heartbeat_interval_ms,
            election_timeout_min_ms,
            election_timeout_max_ms,
        } = raft;
        let LeaseTiming {
            duration_ms,
            renew_interval_ms,
            fence_margin_ms,
            drift_permille,
            old_lease_bound,
        } = lease;
        let old_lease_bound = match old_lease_bound {
            OldLeaseBound::Horizon => "horizon",
            OldLeaseBound::Election => "election",
        };
        let pairs: [(&str, String); 8] = [
            (
                "raft.heartbeat_interval_ms",
                heartbeat_interval_ms.to_string(),
            ),
            (
                "raft.election_timeout_min_ms",
                election_timeout_min_ms.to_string(),
            ),
            (
                "raft.election_timeout_max_ms",
                election_timeout_max_ms.to_string(),
            ),
            ("lease.duration_ms", duration_ms.to_string()),
            ("lease.renew_interval_ms", renew_interval_ms.to_string()),
            ("lease.fence_margin_ms", fence_margin_ms.to_string()),
            ("lease.drift_permille", drift_permille.to_string()),
            ("lease.old_lease_bound", old_lease_bound.to_string()),
        ];
        let text = pairs
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join(";");
        TimingFingerprint { text }
    }

    /// The canonical text, as sent in envelopes.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Every setting on which `theirs` (a fingerprint text a sender stated) differs from this
    /// one: this node's settings in order, then any the sender has and this node lacks. Empty
    /// when the two agree.
    pub fn compare(&self, theirs: &str) -> Vec<TimingDifference> {
        let ours = pairs(&self.text);
        let theirs = pairs(theirs);
        let mut differences = Vec::new();
        for (setting, value) in &ours {
            let their_value = lookup(&theirs, setting);
            if their_value != Some(value.as_str()) {
                differences.push(TimingDifference {
                    setting: setting.clone(),
                    theirs: their_value.map(str::to_string),
                    ours: Some(value.clone()),
                });
            }
        }
        for (setting, value) in &theirs {
            if lookup(&ours, setting).is_none() {
                differences.push(TimingDifference {
                    setting: setting.clone(),
                    theirs: Some(value.clone()),
                    ours: None,
                });
            }
        }
        differences
    }
}

/// The `name=value` pairs of a fingerprint text. A piece without `=` becomes a setting with
/// an empty value, so a garbled text still differs rather than being ignored.
fn pairs(text: &str) -> Vec<(String, String)> {
    text.split(';')
        .filter(|piece| !piece.is_empty())
        .map(|piece| match piece.split_once('=') {
            Some((name, value)) => (name.to_string(), value.to_string()),
            None => (piece.to_string(), String::new()),
        })
        .collect()
}

fn lookup<'a>(pairs: &'a [(String, String)], setting: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(name, _)| name == setting)
        .map(|(_, value)| value.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> TimingFingerprint {
        TimingFingerprint::of(&RaftTiming::default(), &LeaseTiming::default())
    }

    #[test]
    fn the_fingerprint_names_every_raft_and_lease_setting_with_its_value() {
        assert_eq!(
            defaults().as_str(),
            "raft.heartbeat_interval_ms=50;raft.election_timeout_min_ms=250;\
             raft.election_timeout_max_ms=500;lease.duration_ms=1500;\
             lease.renew_interval_ms=250;lease.fence_margin_ms=300;lease.drift_permille=10;\
             lease.old_lease_bound=horizon"
        );
    }

    #[test]
    fn equal_timing_has_no_difference() {
        assert_eq!(defaults().compare(defaults().as_str()), vec![]);
    }

    #[test]
    fn one_differing_setting_is_named_with_both_values() {
        let lease = LeaseTiming {
            duration_ms: 3000,
            ..LeaseTiming::default()
        };
        let theirs = TimingFingerprint::of(&RaftTiming::default(), &lease);
        let differences = defaults().compare(theirs.as_str());
        assert_eq!(
            differences,
            vec![TimingDifference {
                setting: "lease.duration_ms".into(),
                theirs: Some("3000".into()),
                ours: Some("1500".into()),
            }]
        );
        assert_eq!(
            differences[0].describe(),
            "lease.duration_ms 3000 there, 1500 here"
        );
    }

    #[test]
    fn a_raft_timeout_and_the_old_lease_bound_count_too() {
        let raft = RaftTiming {
            election_timeout_max_ms: 900,
            ..RaftTiming::default()
        };
        let lease = LeaseTiming {
            old_lease_bound: OldLeaseBound::Election,
            ..LeaseTiming::default()
        };
        let theirs = TimingFingerprint::of(&raft, &lease);
        let settings: Vec<String> = defaults()
            .compare(theirs.as_str())
            .into_iter()
            .map(|d| d.setting)
            .collect();
        assert_eq!(
            settings,
            vec!["raft.election_timeout_max_ms", "lease.old_lease_bound"]
        );
    }

    #[test]
    fn a_missing_or_extra_setting_differs() {
        let ours = defaults();
        let without_drift: String = ours
            .as_str()
            .split(';')
            .filter(|p| !p.starts_with("lease.drift_permille"))
            .chain(["lease.new_knob=7"])
            .collect::<Vec<_>>()
            .join(";");
        let differences = ours.compare(&without_drift);
        assert_eq!(
            differences
                .iter()
                .map(TimingDifference::describe)
                .collect::<Vec<_>>(),
            vec![
                "lease.drift_permille (not set) there, 10 here",
                "lease.new_knob 7 there, (not set) here",
            ]
        );
    }

    #[test]
    fn an_empty_fingerprint_differs_in_every_setting() {
        assert_eq!(defaults().compare("").len(), 8);
    }
}

//! Semantic checks of a parsed [`Config`]: each problem becomes one sentence that says what is
//! wrong and, where it helps, what would be right.

use std::collections::HashSet;

use super::Config;
use crate::consensus::types::Role;

impl Config {
    /// Every problem with this config, one sentence each; empty when it is usable.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        check_cluster_name(&self.cluster, &mut problems);
        self.check_members(&mut problems);
        if self.node_id == 0 {
            problems.push("node_id must be at least 1".to_string());
        } else if self.me().is_none() {
            problems.push(format!(
                "node_id {} is not the id of any entry in [[members]]",
                self.node_id
            ));
        }
        if self.data_dir.as_os_str().is_empty() {
            problems.push("data_dir is empty; give the directory of this node's Raft store".into());
        }
        if let Some(listen) = &self.listen {
            if let Err(why) = check_host_port(listen) {
                problems.push(format!("listen = {listen:?}: {why}"));
            }
        }
        self.check_raft_timing(&mut problems);
        self.check_lease(&mut problems);
        self.check_group(&mut problems);
        problems
    }

    fn check_members(&self, problems: &mut Vec<String>) {
        let management = self
            .members
            .iter()
            .filter(|m| m.role == Role::Management)
            .count();
        let witnesses = self.members.len() - management;
        if management != 2 || witnesses != 1 {
            problems.push(format!(
                "members must be two management nodes and one witness; found {management} management and {witnesses} witness"
            ));
        }
        let mut ids = HashSet::new();
        let mut names = HashSet::new();
        let mut addresses = HashSet::new();
        for m in &self.members {
            if m.id == 0 {
                problems.push(format!("member {:?}: id must be at least 1", m.name));
            }
            if !ids.insert(m.id) {
                problems.push(format!("member id {} appears more than once", m.id));
            }
            if !valid_name(&m.name) {
                problems.push(format!(
                    "member {}: name {:?} must be 1-64 letters, digits, '-', '_' or '.'",
                    m.id, m.name
                ));
            } else if !names.insert(m.name.as_str()) {
                problems.push(format!("member name {:?} appears more than once", m.name));
            }
            match check_host_port(&m.address) {
                Err(why) => problems.push(format!(
                    "member {} ({}): address {:?}: {why}",
                    m.id, m.name, m.address
                )),
                Ok(()) => {
                    if !addresses.insert(m.address.as_str()) {
                        problems.push(format!(
                            "member address {:?} appears more than once",
                            m.address
                        ));
                    }
                }
            }
        }
    }

    fn check_raft_timing(&self, problems: &mut Vec<String>) {
        let t = &self.raft;
        if t.heartbeat_interval_ms < 10 {
            problems.push(format!(
                "raft.heartbeat_interval_ms = {} is too short; use at least 10",
                t.heartbeat_interval_ms
            ));
        }
        if t.election_timeout_min_ms < 3 * t.heartbeat_interval_ms {
            problems.push(format!(
                "raft.election_timeout_min_ms = {} must be at least 3 x heartbeat_interval_ms ({}), or a lost heartbeat starts an election",
                t.election_timeout_min_ms,
                3 * t.heartbeat_interval_ms
            ));
        }
        if t.election_timeout_max_ms <= t.election_timeout_min_ms {
            problems.push(format!(
                "raft.election_timeout_max_ms = {} must be greater than election_timeout_min_ms = {}",
                t.election_timeout_max_ms, t.election_timeout_min_ms
            ));
        }
        if t.election_timeout_max_ms > 60_000 {
            problems.push(format!(
                "raft.election_timeout_max_ms = {} is over a minute; failover would take that long",
                t.election_timeout_max_ms
            ));
        }
    }
}

impl Config {
    fn check_lease(&self, problems: &mut Vec<String>) {
        let lease = &self.lease;
        for problem in self.timing().problems() {
            problems.push(format!("lease/group: {problem}"));
        }
        if lease.renew_interval_ms == 0 || lease.renew_interval_ms * 3 > lease.duration_ms {
            problems.push(format!(
                "lease.renew_interval_ms = {} must be above 0 and at most a third of lease.duration_ms = {}, so one lost renewal does not end the lease",
                lease.renew_interval_ms, lease.duration_ms
            ));
        }
        // A leader change must not end the lease: the owner cannot renew while there is no
        // leader. Worst case openraft needs the vote-refusal window (election_timeout_max),
        // a full election timeout, a tick (1.5 heartbeats) and a vote round; then one more
        // renewal interval passes before the owner asks again.
        let raft = &self.raft;
        let election = 2 * raft.election_timeout_max_ms + 3 * raft.heartbeat_interval_ms;
        let owner_lease = self.timing().owner_lease_ms();
        if owner_lease < election + lease.renew_interval_ms {
            problems.push(format!(
                "lease.duration_ms = {} is too short: after drift the owner trusts {owner_lease} ms, but a Raft leader election can take {election} ms plus one renewal interval ({} ms); every leader change would fence the owner. Lengthen the lease or shorten raft.election_timeout_max_ms",
                lease.duration_ms, lease.renew_interval_ms
            ));
        }
        if lease.fence_margin_ms < MIN_FENCE_MARGIN_MS {
            problems.push(format!(
                "lease.fence_margin_ms = {} is shorter than the {MIN_FENCE_MARGIN_MS} ms the guard needs to drop the VIP and kill MySQL after the lease ends",
                lease.fence_margin_ms
            ));
        }
        if lease.drift_permille < 1 {
            problems.push(
                "lease.drift_permille = 0 assumes perfect clocks; use at least 1 (10 is typical)"
                    .into(),
            );
        }
        if let Some(hook) = &self.fence_hook {
            if hook.command.is_empty() || hook.command[0].is_empty() {
                problems
                    .push("fence_hook.command is empty; give the program and its arguments".into());
            }
            if hook.timeout_ms == 0 {
                problems.push("fence_hook.timeout_ms must be above 0".into());
            }
        }
    }

    fn check_group(&self, problems: &mut Vec<String>) {
        let group = &self.group;
        if group.monitor_interval_ms < 50 || group.monitor_interval_ms > 60_000 {
            problems.push(format!(
                "group.monitor_interval_ms = {} must be between 50 and 60000",
                group.monitor_interval_ms
            ));
        }
        if self.guard.pet_interval_ms == 0 {
            problems.push("guard.pet_interval_ms must be above 0".into());
        }
        if let Some(seconds) = self.guard.watchdog_timeout_s {
            if self.guard.watchdog_device.is_none() {
                problems.push(
                    "guard.watchdog_timeout_s is set but guard.watchdog_device is not; set both or neither"
                        .into(),
                );
            }
            if !(1..=3600).contains(&seconds) {
                problems.push(format!(
                    "guard.watchdog_timeout_s = {seconds} must be between 1 and 3600"
                ));
            } else if self.guard.pet_interval_ms.saturating_mul(2) > u64::from(seconds) * 1000 {
                problems.push(format!(
                    "guard.pet_interval_ms = {} must be at most half of guard.watchdog_timeout_s = {seconds} s, or the node is reset while its lease holds",
                    self.guard.pet_interval_ms
                ));
            }
        }
        let is_witness = self.me().map(|m| m.role) == Some(Role::Witness);
        if is_witness && !group.resources.is_empty() {
            problems.push(
                "group.resources is set on the witness, which never runs resources; remove it"
                    .into(),
            );
        }
        let mut names = HashSet::new();
        for resource in &group.resources {
            if !names.insert(resource.name().to_string()) {
                problems.push(format!(
                    "group.resources: the name {:?} appears more than once",
                    resource.name()
                ));
            }
            for problem in resource.problems() {
                problems.push(format!("group.resources {:?}: {problem}", resource.name()));
            }
        }
    }
}

/// The least fence margin quorate accepts: the guard's reaction time plus a kill.
pub const MIN_FENCE_MARGIN_MS: u64 = 100;

fn check_cluster_name(name: &str, problems: &mut Vec<String>) {
    if !valid_name(name) {
        problems.push(format!(
            "cluster = {name:?}: the name must be 1-64 letters, digits, '-', '_' or '.'"
        ));
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Checks a `host:port` string: a non-empty host (name, IPv4, or `[IPv6]`) and a port 1-65535.
pub(crate) fn check_host_port(value: &str) -> Result<(), String> {
    let Some((host, port)) = value.rsplit_once(':') else {
        return Err("expected host:port".into());
    };
    if host.is_empty() {
        return Err("the host is empty".into());
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err("an IPv6 host must be written in brackets, like [::1]:7101".into());
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("port {port:?} is not a number from 1 to 65535")),
        Ok(_) => Ok(()),
    }
}

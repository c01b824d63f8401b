//! `status`, `leader` and `term`: read-only views of the cluster.

use std::process::ExitCode;

use super::table::Table;
use super::{fail, EXIT_NEGATIVE};
use crate::rpc::admin::AdminClient;
use crate::status::ClusterStatus;

/// `quoratectl status [--json]`.
pub async fn status(client: &mut AdminClient, json: bool) -> ExitCode {
    let status = match client.status().await {
        Ok(status) => status,
        Err(e) => return fail(e),
    };
    if json {
        match serde_json::to_string_pretty(&status) {
            Ok(text) => println!("{text}"),
            Err(e) => return fail(e),
        }
    } else {
        print!("{}", render(&status));
    }
    ExitCode::SUCCESS
}

/// `quoratectl leader`.
pub async fn leader(client: &mut AdminClient) -> ExitCode {
    match client.status().await {
        Ok(ClusterStatus {
            leader: Some(leader),
            ..
        }) => {
            println!("{leader}");
            ExitCode::SUCCESS
        }
        Ok(status) => {
            eprintln!(
                "quoratectl: {} knows no leader in term {}",
                status.answered_by, status.term
            );
            ExitCode::from(EXIT_NEGATIVE)
        }
        Err(e) => fail(e),
    }
}

/// `quoratectl term`.
pub async fn term(client: &mut AdminClient) -> ExitCode {
    match client.status().await {
        Ok(status) => {
            println!("{}", status.term);
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

/// The human-readable status: a header, one row per member, then what each agent does.
pub fn render(status: &ClusterStatus) -> String {
    let mut out = String::new();
    let mut field = |name: &str, value: String| out.push_str(&format!("{name:<10}{value}\n"));
    field("cluster:", status.cluster.clone());
    field("term:", status.term.to_string());
    field(
        "leader:",
        status.leader.clone().unwrap_or_else(|| "none".into()),
    );
    let owner = match (&status.owner, status.released) {
        (Some(owner), false) => format!("{owner} (epoch {})", status.epoch),
        (Some(owner), true) => format!("none ({owner} released epoch {})", status.epoch),
        (None, _) => "none".into(),
    };
    field("owner:", owner);
    if let Some(ms) = status.lease_remaining_ms {
        field("lease:", format!("{ms} ms left"));
    }
    if status.paused {
        field("paused:", "yes: no automatic actions".into());
    }
    if let Some(to) = &status.switchover_to {
        field("pending:", format!("switchover to {to}"));
    }
    if let Some(says) = &status.leader_says {
        field("decision:", says.clone());
    }
    field("answered:", status.answered_by.clone());
    if let Some(waiting) = &status.waiting {
        field("waiting:", waiting.clone());
    }
    out.push('\n');
    let mut table = Table::new(&[
        "ID",
        "NAME",
        "ROLE",
        "ADDRESS",
        "STATE",
        "TERM",
        "LAST LOG",
        "APPLIED",
        "REACHABLE",
        "MARKS",
        "RESOURCES",
    ]);
    let index = |v: Option<u64>| v.map(|i| i.to_string()).unwrap_or_else(|| "-".into());
    for m in &status.members {
        let mut marks = Vec::new();
        if m.standby {
            marks.push("standby".to_string());
        }
        if m.outdated {
            marks.push("outdated".to_string());
        }
        if m.fail_count > 0 {
            marks.push(format!("failures={}", m.fail_count));
        }
        let resources: Vec<String> = m
            .resources
            .iter()
            .map(|(name, state)| format!("{name}:{}", state.split(':').next().unwrap_or("")))
            .collect();
        table.row(vec![
            m.id.to_string(),
            m.name.clone(),
            m.role.clone(),
            m.address.clone(),
            m.state.clone(),
            if m.reachable {
                m.term.to_string()
            } else {
                "-".into()
            },
            index(m.last_log_index),
            index(m.applied_index),
            if m.reachable { "yes" } else { "no" }.to_string(),
            if marks.is_empty() {
                "-".into()
            } else {
                marks.join(",")
            },
            if resources.is_empty() {
                "-".into()
            } else {
                resources.join(" ")
            },
        ]);
    }
    out.push_str(&table.render());
    let doing: Vec<String> = status
        .members
        .iter()
        .filter_map(|m| m.doing.as_ref().map(|d| format!("  {}: {d}", m.name)))
        .collect();
    if !doing.is_empty() {
        out.push_str("\nagents:\n");
        for line in doing {
            out.push_str(&line);
            out.push('\n');
        }
    }
    // A member whose timing differs is refused by the answering node: say so loudly, it
    // takes no part in the quorum until its [raft]/[lease] settings match.
    let mismatches: Vec<String> = status
        .members
        .iter()
        .filter_map(|m| {
            let mismatch = m.timing_mismatch.as_ref()?;
            Some(format!("timing: {} differs: {mismatch}\n", m.name))
        })
        .collect();
    if !mismatches.is_empty() {
        out.push('\n');
        out.push_str(&mismatches.concat());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::MemberStatus;

    fn member(id: u64, name: &str, timing_mismatch: Option<&str>) -> MemberStatus {
        MemberStatus {
            id,
            name: name.into(),
            role: "management".into(),
            address: format!("127.0.0.1:710{id}"),
            state: "follower".into(),
            reachable: true,
            term: 2,
            last_log_index: Some(5),
            applied_index: Some(5),
            standby: false,
            outdated: false,
            fail_count: 0,
            doing: None,
            resources: vec![],
            lease_remaining_ms: None,
            timing_mismatch: timing_mismatch.map(str::to_string),
        }
    }

    #[test]
    fn status_names_a_member_whose_timing_differs() {
        let status = ClusterStatus {
            cluster: "prod".into(),
            term: 2,
            leader: Some("node1".into()),
            leader_id: Some(1),
            answered_by: "node1".into(),
            waiting: None,
            owner: None,
            epoch: 0,
            released: false,
            lease_remaining_ms: None,
            paused: false,
            switchover_to: None,
            leader_says: None,
            members: vec![
                member(1, "node1", None),
                member(2, "node2", Some("lease.duration_ms 3000 there, 1500 here")),
            ],
        };
        let text = render(&status);
        assert!(
            text.ends_with("\ntiming: node2 differs: lease.duration_ms 3000 there, 1500 here\n"),
            "{text}"
        );
        assert!(!text.contains("timing: node1"), "{text}");
    }
}

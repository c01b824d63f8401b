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

/// The human-readable status: a header, then one row per member.
pub fn render(status: &ClusterStatus) -> String {
    let mut out = String::new();
    out.push_str(&format!("cluster:  {}\n", status.cluster));
    out.push_str(&format!("term:     {}\n", status.term));
    out.push_str(&format!(
        "leader:   {}\n",
        status.leader.as_deref().unwrap_or("none")
    ));
    out.push_str(&format!("answered: {}\n", status.answered_by));
    if let Some(waiting) = &status.waiting {
        out.push_str(&format!("waiting:  {waiting}\n"));
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
    ]);
    let index = |v: Option<u64>| v.map(|i| i.to_string()).unwrap_or_else(|| "-".into());
    for m in &status.members {
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
        ]);
    }
    out.push_str(&table.render());
    out
}

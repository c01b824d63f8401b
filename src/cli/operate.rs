//! Commands that change the cluster: switchover, pause/resume, standby/unstandby and
//! reset-failures. Each is checked and committed by the member asked; a refusal prints the
//! member's reason and exits 1.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::{fail, EXIT_NEGATIVE};
use crate::rpc::admin::{AdminClient, AdminError};
use crate::status::ClusterStatus;

fn refused_or_failed(error: AdminError) -> ExitCode {
    match error {
        AdminError::Refused { message, .. } => {
            eprintln!("quoratectl: refused: {message}");
            ExitCode::from(EXIT_NEGATIVE)
        }
        other => fail(other),
    }
}

/// `quoratectl pause` / `resume`.
pub async fn set_paused(client: &mut AdminClient, paused: bool, reason: &str) -> ExitCode {
    match client.set_paused(paused, reason).await {
        Ok(index) => {
            let word = if paused { "paused" } else { "resumed" };
            println!("cluster {word} (log index {index})");
            ExitCode::SUCCESS
        }
        Err(e) => refused_or_failed(e),
    }
}

/// `quoratectl standby NODE` / `unstandby NODE`.
pub async fn set_standby(
    client: &mut AdminClient,
    node: &str,
    standby: bool,
    reason: &str,
) -> ExitCode {
    match client.set_standby(node, standby, reason).await {
        Ok(index) => {
            let word = if standby {
                "is now standby"
            } else {
                "is no longer standby"
            };
            println!("{node} {word} (log index {index})");
            ExitCode::SUCCESS
        }
        Err(e) => refused_or_failed(e),
    }
}

/// `quoratectl mark-outdated NODE` / `clear-outdated NODE`.
pub async fn set_outdated(
    client: &mut AdminClient,
    node: &str,
    outdated: bool,
    reason: &str,
) -> ExitCode {
    match client.set_outdated(node, outdated, reason).await {
        Ok(index) => {
            let word = if outdated {
                "is marked outdated"
            } else {
                "is no longer marked outdated"
            };
            println!("{node} {word} (log index {index})");
            ExitCode::SUCCESS
        }
        Err(e) => refused_or_failed(e),
    }
}

/// `quoratectl reset-failures NODE`.
pub async fn reset_failures(client: &mut AdminClient, node: &str, reason: &str) -> ExitCode {
    match client.reset_failures(node, reason).await {
        Ok(index) => {
            println!("{node}: failure count reset (log index {index})");
            ExitCode::SUCCESS
        }
        Err(e) => refused_or_failed(e),
    }
}

/// `quoratectl switchover --to NODE`: asks, then follows the status until the target owns
/// the group and every resource there runs.
pub async fn switchover(
    client: &mut AdminClient,
    to: &str,
    reason: &str,
    wait: Duration,
) -> ExitCode {
    let started = Instant::now();
    let index = match client.switchover(to, reason).await {
        Ok(index) => index,
        Err(e) => return refused_or_failed(e),
    };
    println!(
        "[{:>6.2}s] switchover to {to} requested (log index {index})",
        0.0
    );
    let mut last_lines: Vec<String> = Vec::new();
    let mut first_epoch: Option<u64> = None;
    while started.elapsed() < wait {
        if let Ok(status) = client.status().await {
            let epoch = *first_epoch.get_or_insert(status.epoch);
            for line in steps(&status) {
                if !last_lines.contains(&line) {
                    println!("[{:>6.2}s] {line}", started.elapsed().as_secs_f64());
                }
            }
            last_lines = steps(&status);
            if done(&status, to) {
                println!(
                    "switchover done: {to} owns the group (epoch {}) after {:.2} s",
                    status.epoch,
                    started.elapsed().as_secs_f64()
                );
                return ExitCode::SUCCESS;
            }
            if let Some(owner) = status.owner.as_deref() {
                if owner != to && status.epoch > epoch && !status.released {
                    eprintln!(
                        "quoratectl: switchover to {to} failed: {owner} owns the group again (epoch {}); see `quoratectl history`",
                        status.epoch
                    );
                    return ExitCode::from(EXIT_NEGATIVE);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "quoratectl: {to} does not run the group after {:.0} s; see `quoratectl status`",
        wait.as_secs_f64()
    );
    ExitCode::from(EXIT_NEGATIVE)
}

/// The lines that describe where a switchover stands.
fn steps(status: &ClusterStatus) -> Vec<String> {
    let mut lines = Vec::new();
    match (&status.owner, status.released) {
        (Some(owner), false) => lines.push(format!("owner: {owner} (epoch {})", status.epoch)),
        (Some(owner), true) => lines.push(format!(
            "{owner} released the group (epoch {})",
            status.epoch
        )),
        (None, _) => lines.push("no owner".into()),
    }
    for member in status.members.iter().filter(|m| m.role == "management") {
        if !member.resources.is_empty() {
            let resources: Vec<String> = member
                .resources
                .iter()
                .map(|(name, state)| format!("{name} {state}"))
                .collect();
            lines.push(format!("{}: {}", member.name, resources.join(", ")));
        }
    }
    lines
}

fn done(status: &ClusterStatus, to: &str) -> bool {
    status.owner.as_deref() == Some(to)
        && !status.released
        && status.members.iter().any(|m| {
            m.name == to
                && !m.resources.is_empty()
                && m.resources.iter().all(|(_, state)| state == "running")
        })
}

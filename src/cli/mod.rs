//! `quoratectl`: the operator's command line. One file per command group; this file holds
//! the argument definitions and the dispatch. Every failure is one line on standard error
//! and a non-zero exit status, never a stack of debug output.

mod check_config;
mod history;
mod operate;
mod status;
mod table;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::rpc::admin::AdminClient;

/// Exit status for "the command ran but the answer is negative" (no leader, bad config).
pub const EXIT_NEGATIVE: u8 = 1;
/// Exit status for "could not talk to the cluster" or bad arguments.
pub const EXIT_FAILURE: u8 = 2;

/// quoratectl: inspect and operate a quorate cluster.
#[derive(Debug, Parser)]
#[command(name = "quoratectl", version, about)]
pub struct Cli {
    /// gRPC endpoint of any member, as host:port.
    #[arg(long, short = 'e', global = true, default_value = "127.0.0.1:7101")]
    pub endpoint: String,
    /// Give up on the cluster after this many milliseconds.
    #[arg(long, global = true, default_value_t = 3000)]
    pub timeout_ms: u64,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// quoratectl's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the cluster: term, leader and every member.
    Status {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the leader's member name (exit 1 when no leader is known).
    Leader,
    /// Print the current Raft term.
    Term,
    /// Check a node config file and list every problem (exit 1 when there is any).
    CheckConfig {
        /// The config file to check.
        file: std::path::PathBuf,
    },
    /// Planned switchover: the owner stops its group in order and releases it, then the
    /// target starts it. Shows each step as it happens.
    Switchover {
        /// The management node that should own the group.
        #[arg(long)]
        to: String,
        /// Why, for the history.
        #[arg(long, default_value = "")]
        reason: String,
        /// Give up watching after this many milliseconds (the switchover itself goes on).
        #[arg(long, default_value_t = 120_000)]
        wait_ms: u64,
    },
    /// Maintenance mode: nothing is started, restarted or moved (lease-loss fencing still
    /// happens).
    Pause {
        /// Why, for the history.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Leave maintenance mode.
    Resume {
        /// Why, for the history.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Keep a management node from ever taking ownership.
    Standby {
        /// The node's name.
        node: String,
        /// Why, for the history.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Let a standby node take ownership again.
    Unstandby {
        /// The node's name.
        node: String,
        /// Why, for the history.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Clear a node's failure count, so it may be given the group again.
    ResetFailures {
        /// The node's name.
        node: String,
        /// Why, for the history.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Mark a node's data as possibly stale: it is never given the group automatically.
    MarkOutdated {
        /// The node's name.
        node: String,
        /// Why, for the history.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Clear a node's outdated mark. This is the explicit, logged way to allow a node whose
    /// data may be stale to take the group (for example at a cold start after a disaster).
    ClearOutdated {
        /// The node's name.
        node: String,
        /// Why, for the history (say who checked the data and how).
        #[arg(long)]
        reason: String,
    },
    /// Ownership changes and admin actions, oldest first.
    History {
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Parses the process arguments and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("quoratectl: cannot start: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    runtime.block_on(run(cli))
}

/// Runs one parsed command.
pub async fn run(cli: Cli) -> ExitCode {
    if let Command::CheckConfig { file } = &cli.command {
        return check_config::run(file);
    }
    let timeout = Duration::from_millis(cli.timeout_ms.max(1));
    let mut client = match AdminClient::new(&cli.endpoint, timeout) {
        Ok(client) => client,
        Err(e) => return fail(e),
    };
    match cli.command {
        Command::Status { json } => status::status(&mut client, json).await,
        Command::Leader => status::leader(&mut client).await,
        Command::Term => status::term(&mut client).await,
        Command::Switchover {
            to,
            reason,
            wait_ms,
        } => operate::switchover(&mut client, &to, &reason, Duration::from_millis(wait_ms)).await,
        Command::Pause { reason } => operate::set_paused(&mut client, true, &reason).await,
        Command::Resume { reason } => operate::set_paused(&mut client, false, &reason).await,
        Command::Standby { node, reason } => {
            operate::set_standby(&mut client, &node, true, &reason).await
        }
        Command::Unstandby { node, reason } => {
            operate::set_standby(&mut client, &node, false, &reason).await
        }
        Command::ResetFailures { node, reason } => {
            operate::reset_failures(&mut client, &node, &reason).await
        }
        Command::MarkOutdated { node, reason } => {
            operate::set_outdated(&mut client, &node, true, &reason).await
        }
        Command::ClearOutdated { node, reason } => {
            operate::set_outdated(&mut client, &node, false, &reason).await
        }
        Command::History { json } => history::history(&mut client, json).await,
        Command::CheckConfig { .. } => unreachable_command(),
    }
}

fn unreachable_command() -> ExitCode {
    ExitCode::from(EXIT_FAILURE)
}

/// Prints a one-line error and returns the failure status.
pub(crate) fn fail(error: impl std::fmt::Display) -> ExitCode {
    eprintln!("quoratectl: {error}");
    ExitCode::from(EXIT_FAILURE)
}

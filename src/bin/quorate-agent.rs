//! `quorate-agent`: the arbiter of a management node. It votes in Raft and, when this node
//! owns the resource group, runs it. `quorate-agent guard` is the lease guard child process
//! the agent starts for itself.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Runs the quorate agent of a management node.
#[derive(Debug, Parser)]
#[command(name = "quorate-agent", version, about)]
struct Args {
    /// This node's config file (TOML).
    #[arg(long, short = 'c', global = true)]
    config: Option<PathBuf>,
    /// Without a subcommand: run the agent.
    #[command(subcommand)]
    command: Option<Sub>,
}

#[derive(Debug, Subcommand)]
enum Sub {
    /// The lease guard (started by the agent itself; reads arm/disarm lines on stdin).
    #[command(hide = true)]
    Guard,
    /// DRBD fence-peer handler: mark the other management node outdated through the cluster.
    /// Exit 4 when it is marked; 1 when it could not be (DRBD keeps I/O frozen).
    FencePeer {
        /// Give up after this many milliseconds.
        #[arg(long, default_value_t = 30_000)]
        timeout_ms: u64,
    },
    /// DRBD unfence-peer handler: clear the other management node's outdated mark.
    UnfencePeer {
        /// Give up after this many milliseconds.
        #[arg(long, default_value_t = 30_000)]
        timeout_ms: u64,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    quorate::telemetry::init_logging();
    let Some(config) = args.config else {
        eprintln!("quorate-agent: --config FILE is required");
        return ExitCode::from(2);
    };
    match args.command {
        None => quorate::daemon::run_agent(&config).await,
        Some(Sub::Guard) => quorate::daemon::run_guard(&config).await,
        Some(Sub::FencePeer { timeout_ms }) => {
            quorate::daemon::run_drbd_handler(&config, true, timeout_ms).await
        }
        Some(Sub::UnfencePeer { timeout_ms }) => {
            quorate::daemon::run_drbd_handler(&config, false, timeout_ms).await
        }
    }
}

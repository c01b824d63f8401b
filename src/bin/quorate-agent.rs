//! `quorate-agent`: the arbiter of a management node. It votes in Raft and, when this node
//! owns the resource group, runs it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Runs the quorate agent of a management node.
#[derive(Debug, Parser)]
#[command(name = "quorate-agent", version, about)]
struct Args {
    /// This node's config file (TOML).
    #[arg(long, short = 'c')]
    config: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    quorate::telemetry::init_logging();
    quorate::daemon::run_arbiter(&args.config, quorate::consensus::types::Role::Management).await
}

//! `quorate-witness`: the third arbiter. A Raft voter with a durable store and nothing else:
//! no resource code is linked in.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Runs the quorate witness: a vote and a full Raft log, no resources.
#[derive(Debug, Parser)]
#[command(name = "quorate-witness", version, about)]
struct Args {
    /// This node's config file (TOML).
    #[arg(long, short = 'c')]
    config: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    quorate::telemetry::init_logging();
    quorate::daemon::run_arbiter(&args.config, quorate::consensus::types::Role::Witness).await
}

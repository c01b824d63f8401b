//! What the two daemons (`quorate-agent`, `quorate-witness`) share at start-up: loading and
//! checking the config, binding the listener, and turning SIGINT/SIGTERM into a shutdown.

use std::path::Path;
use std::process::ExitCode;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::consensus::types::Role;

/// Loads the config at `path` and checks that this node has `role`; prints every problem
/// and returns the exit status on failure.
pub fn load_config(path: &Path, role: Role) -> Result<Config, ExitCode> {
    let config = Config::load(path).and_then(|c| c.expect_role(role).map(|()| c));
    config.map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(2)
    })
}

/// Binds the gRPC listener at the config's listen address.
pub async fn bind(config: &Config) -> Result<TcpListener, ExitCode> {
    let address = config.listen_address();
    TcpListener::bind(&address).await.map_err(|e| {
        eprintln!("cannot listen on {address}: {e}");
        ExitCode::from(2)
    })
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}

/// Runs an arbiter for the config at `path`, which must give this node `role`.
pub async fn run_arbiter(path: &Path, role: Role) -> ExitCode {
    let config = match load_config(path, role) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let listener = match bind(&config).await {
        Ok(listener) => listener,
        Err(code) => return code,
    };
    match crate::arbiter::run(
        config,
        listener,
        shutdown_signal(),
        crate::arbiter::RunOptions::default(),
    )
    .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "stopped");
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}

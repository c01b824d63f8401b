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

/// Runs the agent of a management node for the config at `path`, with its lease guard.
pub async fn run_agent(path: &Path) -> ExitCode {
    let config = match load_config(path, Role::Management) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let listener = match bind(&config).await {
        Ok(listener) => listener,
        Err(code) => return code,
    };
    let guard_command = match std::env::current_exe() {
        Ok(exe) => Some((
            exe,
            vec![
                "guard".to_string(),
                "--config".to_string(),
                path.display().to_string(),
            ],
        )),
        Err(e) => {
            eprintln!("cannot find this program to start the lease guard: {e}");
            return ExitCode::from(1);
        }
    };
    let options = crate::agent::AgentOptions {
        run: crate::arbiter::RunOptions::default(),
        guard_command,
    };
    match crate::agent::run(config, listener, shutdown_signal(), options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "stopped");
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}

/// Runs the lease guard for the config at `path`: reads the agent's arm/disarm lines on
/// standard input and, when an armed deadline passes, drops the VIP and kills MySQL (and
/// fences Dummy resources) by itself.
pub async fn run_guard(path: &Path) -> ExitCode {
    let config = match load_config(path, Role::Management) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let runner: std::sync::Arc<dyn crate::command::CommandRunner> =
        std::sync::Arc::new(crate::command::SystemRunner);
    // Front of the group first: clients lose the VIP before MySQL is killed.
    let fence: Vec<_> = config
        .group
        .resources
        .iter()
        .rev()
        .filter(|r| matches!(r.kind(), "vip" | "mysql" | "dummy"))
        .map(|r| r.build(runner.clone()))
        .collect();
    let settings = crate::guard::GuardSettings {
        node: config.me().map(|m| m.name.clone()).unwrap_or_default(),
        pet_interval: std::time::Duration::from_millis(config.guard.pet_interval_ms),
        watchdog_timeout_s: config.guard.watchdog_timeout_s,
        ..crate::guard::GuardSettings::default()
    };
    let stdin = tokio::io::BufReader::new(tokio::io::stdin());
    let outcome =
        crate::guard::run_guard(stdin, fence, config.guard.watchdog_device.clone(), settings).await;
    tracing::info!(fences = outcome.fences.len(), exit = ?outcome.exit, "lease guard exits");
    ExitCode::SUCCESS
}

/// Runs DRBD's fence-peer (`fence = true`) or unfence-peer handler for the config at `path`.
/// DRBD passes the resource name in `DRBD_RESOURCE`.
pub async fn run_drbd_handler(path: &Path, fence: bool, timeout_ms: u64) -> ExitCode {
    let config = match load_config(path, Role::Management) {
        Ok(config) => config,
        Err(_) => return ExitCode::from(crate::agent::drbd_handler::FENCE_PEER_FAILED),
    };
    let resource = std::env::var("DRBD_RESOURCE").unwrap_or_else(|_| "unknown".into());
    let timeout = std::time::Duration::from_millis(timeout_ms);
    if fence {
        crate::agent::drbd_handler::fence_peer(&config, &resource, timeout).await
    } else {
        crate::agent::drbd_handler::unfence_peer(&config, &resource, timeout).await
    }
}

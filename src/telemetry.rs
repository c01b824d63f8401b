//! Logging set-up for the binaries: `tracing` to standard error, filtered by `RUST_LOG`
//! (default `info`). Library code only emits events; it never installs a subscriber.

/// Installs the process-wide subscriber. Call once, from `main`.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn,h2=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

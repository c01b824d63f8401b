//! Every external command quorate runs goes through one [`CommandRunner`]: the resource
//! agents' commands (DRBD, MySQL, systemd) and the leader's fencing hook. So the commands are
//! logged in one place, each runs under a deadline and is killed when it misses it, its output
//! is captured, and tests can record or script them.

use async_trait::async_trait;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a finished command left behind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommandOutput {
    /// The exit code; `None` when a signal ended the process.
    pub code: Option<i32>,
    /// Everything it wrote to standard output, lossily decoded.
    pub stdout: String,
    /// Everything it wrote to standard error, lossily decoded.
    pub stderr: String,
}

impl CommandOutput {
    /// True when the command exited with status 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// Why a command did not finish.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    /// The program could not be started at all (missing, not executable).
    #[error("cannot run {program}: {message}")]
    Spawn {
        /// The program.
        program: String,
        /// The operating system's reason.
        message: String,
    },
    /// It ran past its deadline and was killed.
    #[error("{program} did not finish within {timeout:?} and was killed")]
    Timeout {
        /// The program.
        program: String,
        /// The deadline it missed.
        timeout: Duration,
    },
}

/// Runs external commands with a deadline.
#[async_trait]
pub trait CommandRunner: Send + Sync {
    /// Runs `program` with `args`, killing it if it takes longer than `timeout`.
    async fn run(
        &self,
        program: &str,
        args: &[String],
        timeout: Duration,
    ) -> Result<CommandOutput, RunError>;
}

/// Runs commands on this host with `tokio::process`.
#[derive(Clone, Debug, Default)]
pub struct SystemRunner;

#[async_trait]
impl CommandRunner for SystemRunner {
    async fn run(
        &self,
        program: &str,
        args: &[String],
        timeout: Duration,
    ) -> Result<CommandOutput, RunError> {
        tracing::debug!(program, ?args, "running command");
        let child = tokio::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| RunError::Spawn {
                program: program.to_string(),
                message: e.to_string(),
            })?;
        match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Ok(Ok(out)) => Ok(CommandOutput {
                code: out.status.code(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }),
            Ok(Err(e)) => Err(RunError::Spawn {
                program: program.to_string(),
                message: e.to_string(),
            }),
            Err(_) => Err(RunError::Timeout {
                program: program.to_string(),
                timeout,
            }),
        }
    }
}

/// One command a [`RecordingRunner`] saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedCommand {
    /// The program.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
}

/// Passes commands to another runner and keeps a list of them, for tests.
#[derive(Clone)]
pub struct RecordingRunner {
    inner: Arc<dyn CommandRunner>,
    seen: Arc<Mutex<Vec<RecordedCommand>>>,
}

impl RecordingRunner {
    /// Records commands, then runs them with `inner`.
    pub fn new(inner: Arc<dyn CommandRunner>) -> Self {
        RecordingRunner {
            inner,
            seen: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// The commands seen so far, oldest first.
    pub fn commands(&self) -> Vec<RecordedCommand> {
        self.seen.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

#[async_trait]
impl CommandRunner for RecordingRunner {
    async fn run(
        &self,
        program: &str,
        args: &[String],
        timeout: Duration,
    ) -> Result<CommandOutput, RunError> {
        if let Ok(mut seen) = self.seen.lock() {
            seen.push(RecordedCommand {
                program: program.to_string(),
                args: args.to_vec(),
            });
        }
        self.inner.run(program, args, timeout).await
    }
}

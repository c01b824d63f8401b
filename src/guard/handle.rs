//! The agent's side of the guard: spawn the guard process and tell it the lease deadline.
//!
//! The guard runs the same executable with a hidden subcommand that the caller names (for
//! example `quorate-agent guard --config FILE`), reading [`super::protocol`] lines on stdin.
//! Two spawn settings carry the safety argument:
//!
//! - **Own process group** (`process_group(0)`): a SIGSTOP, SIGTSTP or Ctrl-C sent to the
//!   agent's process group (a terminal, `kill -STOP -PGID`, a shell's job control) does not reach
//!   the guard, so a stopped agent cannot take its guard down with it. A signal sent to the
//!   agent's pid alone never reached a child anyway.
//! - **Not killed on drop** (`kill_on_drop(false)`): when the agent drops the handle or crashes,
//!   the guard only sees its stdin close; it keeps the armed deadline, fences if it passes, then
//!   exits. Under systemd, the unit's `KillMode` decides whether stopping the service also
//!   signals the guard; the integration must choose it knowingly.
//!
//! Writes are bounded by a timeout. A guard that is gone or stuck makes every later call fail
//! with a [`GuardError`] that tells the agent to stop holding resources.

use super::protocol::GuardCommand;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin, Command};

/// How long one message may take to reach the pipe before the guard counts as stuck.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// A problem between the agent and its guard. Without a guard the lease is not protected.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// The agent could not find its own executable to re-run as the guard.
    #[error("cannot find the agent's own executable to start the lease guard: {0}; do not take ownership without a guard")]
    CurrentExe(#[source] std::io::Error),
    /// The guard process could not be started.
    #[error(
        "cannot start the lease guard {program}: {source}; do not take ownership without a guard"
    )]
    Spawn {
        /// The program that was run.
        program: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The guard's stdin is gone: the guard exited or closed it.
    #[error("the lease guard is gone ({0}); stop holding resources (fence) and restart the guard")]
    Gone(#[source] std::io::Error),
    /// A message did not reach the pipe in time: the guard stopped reading.
    #[error("the lease guard did not take a message within {0:?}; stop holding resources (fence) and restart the guard")]
    Stuck(Duration),
    /// An earlier failure left the pipe in an unknown state (perhaps half a line).
    #[error(
        "the lease guard pipe broke earlier; stop holding resources (fence) and restart the guard"
    )]
    Broken,
    /// Waiting for the guard to exit failed.
    #[error("cannot wait for the lease guard to exit: {0}")]
    Wait(#[source] std::io::Error),
}

/// The running guard process, as the agent holds it.
#[derive(Debug)]
pub struct GuardHandle {
    child: Child,
    stdin: Option<ChildStdin>,
    pid: u32,
    write_timeout: Duration,
    broken: bool,
}

impl GuardHandle {
    /// Starts `program args...` as the guard: stdin piped, own process group, not killed on drop.
    /// Must be called inside a tokio runtime.
    pub fn spawn<I, S>(program: &Path, args: I) -> Result<GuardHandle, GuardError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .process_group(0)
            .kill_on_drop(false);
        let mut child = command.spawn().map_err(|source| GuardError::Spawn {
            program: program.to_path_buf(),
            source,
        })?;
        let spawn_failed = |what: &str| GuardError::Spawn {
            program: program.to_path_buf(),
            source: std::io::Error::other(what.to_string()),
        };
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| spawn_failed("no stdin pipe"))?;
        let pid = child.id().ok_or_else(|| spawn_failed("exited at once"))?;
        tracing::info!(pid, program = %program.display(), "lease guard started");
        Ok(GuardHandle {
            child,
            stdin: Some(stdin),
            pid,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            broken: false,
        })
    }

    /// Starts the running executable again with `args` (the hidden guard subcommand) as the guard.
    pub fn spawn_current_exe<I, S>(args: I) -> Result<GuardHandle, GuardError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let program = std::env::current_exe().map_err(GuardError::CurrentExe)?;
        let args: Vec<OsString> = args
            .into_iter()
            .map(|a| a.as_ref().to_os_string())
            .collect();
        Self::spawn(&program, args)
    }

    /// Changes how long one message may take to reach the pipe.
    pub fn set_write_timeout(&mut self, timeout: Duration) {
        self.write_timeout = timeout;
    }

    /// The guard's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Tells the guard the lease holds until `deadline_ns` (lease clock) under `epoch`.
    pub async fn arm(&mut self, deadline_ns: u64, epoch: u64) -> Result<(), GuardError> {
        self.send(GuardCommand::Arm { deadline_ns, epoch }).await
    }

    /// Tells the guard the node holds nothing any more under `epoch`.
    pub async fn disarm(&mut self, epoch: u64) -> Result<(), GuardError> {
        self.send(GuardCommand::Disarm { epoch }).await
    }

    /// Checks the pipe still takes messages.
    pub async fn ping(&mut self) -> Result<(), GuardError> {
        self.send(GuardCommand::Ping).await
    }

    /// Whether the guard process has exited, with its status.
    pub fn try_exit_status(&mut self) -> Result<Option<ExitStatus>, GuardError> {
        self.child.try_wait().map_err(GuardError::Wait)
    }

    /// Closes the guard's input and waits for it to exit. Disarm first: a guard closed while
    /// armed waits for the deadline and fences before it exits.
    pub async fn close(mut self) -> Result<ExitStatus, GuardError> {
        drop(self.stdin.take());
        self.child.wait().await.map_err(GuardError::Wait)
    }

    async fn send(&mut self, command: GuardCommand) -> Result<(), GuardError> {
        if self.broken {
            return Err(GuardError::Broken);
        }
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(GuardError::Broken);
        };
        let line = command.to_line();
        let write = async {
            stdin.write_all(line.as_bytes()).await?;
            stdin.flush().await
        };
        let result = match tokio::time::timeout(self.write_timeout, write).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(error)) => GuardError::Gone(error),
            Err(_) => GuardError::Stuck(self.write_timeout),
        };
        self.broken = true;
        tracing::error!(pid = self.pid, error = %result, "lease guard message failed");
        Err(result)
    }
}

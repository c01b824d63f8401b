//! The command launcher of the MySQL agent: quorate spawns mysqld itself and tracks it.
//!
//! The configured command line runs mysqld in the foreground, in its own process group, with
//! stdout and stderr appended to the log file. The pid file records pid plus start time
//! ([`ProcessId`]), written atomically, so a reused pid is never mistaken for our mysqld, even
//! after quorate restarts; the child handle is kept too, so its exit is reaped and seen at once.
//! A pid file with no live process means mysqld crashed or was killed without a stop.

use crate::resources::agent::{ActionContext, AgentError, Recovery, ResourceState};
use crate::resources::mysql::probe::{Endpoint, ProbeError};
use crate::resources::mysql::MysqlAgent;
use crate::resources::procs::{self, ProcessId};
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use std::io::{Read, Seek, Write};
use std::path::Path;
use std::time::Duration;
use tokio::time::Instant;

/// What the pid file says about the process quorate started.
#[derive(Debug)]
enum Tracked {
    /// No pid file: quorate has nothing running.
    None,
    /// The recorded process is gone (crashed or killed without a stop).
    Gone(ProcessId),
    /// The recorded process runs.
    Alive(ProcessId),
    /// The pid file cannot be read.
    Unreadable(String),
}

#[derive(Debug, Serialize, Deserialize)]
struct PidRecord {
    pid: i32,
    start_ticks: u64,
}

impl MysqlAgent {
    async fn tracked(&self, pid_file: &Path) -> Tracked {
        if let Some(child) = self.child.lock().await.as_mut() {
            // Reap our own child if it ended, so it is seen as gone, not as a zombie.
            let _ = child.try_wait();
        }
        let text = match std::fs::read_to_string(pid_file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Tracked::None,
            Err(e) => return Tracked::Unreadable(format!("{}: {e}", pid_file.display())),
        };
        match serde_json::from_str::<PidRecord>(&text) {
            Ok(r) if r.pid <= 1 => Tracked::Unreadable(format!(
                "{} names pid {}, which is not a mysqld",
                pid_file.display(),
                r.pid
            )),
            Ok(r) => {
                let id = ProcessId {
                    pid: r.pid,
                    start_ticks: r.start_ticks,
                };
                if procs::is_alive(id) {
                    Tracked::Alive(id)
                } else {
                    Tracked::Gone(id)
                }
            }
            Err(e) => Tracked::Unreadable(format!("{}: {e}", pid_file.display())),
        }
    }

    fn write_pid_file(pid_file: &Path, id: ProcessId) -> std::io::Result<()> {
        let record = PidRecord {
            pid: id.pid,
            start_ticks: id.start_ticks,
        };
        let tmp = pid_file.with_extension("tmp");
        {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&serde_json::to_vec(&record).map_err(std::io::Error::other)?)?;
            file.sync_all()?;
        }
        std::fs::rename(&tmp, pid_file)
    }

    fn remove_pid_file(pid_file: &Path) {
        let _ = std::fs::remove_file(pid_file);
    }

    /// The end of the log file written since `offset`, for error messages.
    fn log_tail(log_file: &Path, offset: u64) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(log_file) {
            let _ = file.seek(std::io::SeekFrom::Start(offset));
            let _ = file.take(64 * 1024).read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = &lines[lines.len().saturating_sub(6)..];
        if tail.is_empty() {
            format!("nothing in {}", log_file.display())
        } else {
            tail.join(" | ")
        }
    }

    async fn spawn(
        &self,
        ctx: &ActionContext,
        argv: &[String],
        pid_file: &Path,
        log_file: &Path,
    ) -> Result<(ProcessId, u64), AgentError> {
        let open_log = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log_file)
        };
        let log = open_log().map_err(|e| {
            self.fail(
                ctx,
                Recovery::MoveAway,
                format!("cannot open log file {}: {e}", log_file.display()),
            )
        })?;
        let offset = log.metadata().map(|m| m.len()).unwrap_or(0);
        let log_err = log.try_clone().map_err(|e| {
            self.fail(
                ctx,
                Recovery::Retry,
                format!("cannot duplicate log file handle: {e}"),
            )
        })?;
        tracing::info!(resource = %self.name, epoch = ctx.epoch, command = ?argv, "spawning mysqld");
        let child = tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0)
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| {
                self.fail(
                    ctx,
                    Recovery::MoveAway,
                    format!("cannot run {}: {e}", argv[0]),
                )
            })?;
        let pid = child.id().map(|p| p as i32).unwrap_or(0);
        let id = procs::identify(pid).unwrap_or(ProcessId {
            pid,
            start_ticks: 0,
        });
        // Safety: the pid file is written before this future reaches any `.await` after
        // spawn(). mysqld runs in its own process group and outlives a dropped `child`
        // (kill_on_drop is false on purpose: quorate's restart must not kill it). A start can
        // be dropped at any await (a fence pre-empting it, start_one's timeout, a shutdown's
        // bounded fallback); dropped here before the pid file existed, `stop()` would find
        // nothing tracked, succeed, and let `Released` be committed while an unknown mysqld
        // still runs. With the record written first, every later drop leaves a pid file that
        // `stop()` and `fence()` act on.
        if let Err(e) = Self::write_pid_file(pid_file, id) {
            procs::signal(id, Signal::SIGKILL, true);
            return Err(self.fail(
                ctx,
                Recovery::MoveAway,
                format!(
                    "cannot write pid file {}: {e}; killed the mysqld just started",
                    pid_file.display()
                ),
            ));
        }
        *self.child.lock().await = Some(child);
        Ok((id, offset))
    }

    /// Why the mysqld this start spawned no longer runs, or `None` while it runs.
    pub(super) async fn exited_during_start(&self, id: ProcessId) -> Option<String> {
        if let Some(child) = self.child.lock().await.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(format!(
                    "mysqld (pid {}) exited during start: {status}",
                    id.pid
                ));
            }
        }
        if !procs::is_alive(id) {
            return Some(format!("mysqld (pid {}) exited during start", id.pid));
        }
        None
    }

    /// Ends the tracked process: SIGTERM and `grace` (none: SIGKILL at once), then SIGKILL.
    async fn end_process(
        &self,
        ctx: &ActionContext,
        id: ProcessId,
        grace: Duration,
    ) -> Result<(), AgentError> {
        let kill_wait = Self::timeout(self.config.kill_timeout_ms);
        if !procs::is_alive(id) {
            return Ok(());
        }
        let signal = if grace.is_zero() {
            Signal::SIGKILL
        } else {
            Signal::SIGTERM
        };
        tracing::info!(resource = %self.name, epoch = ctx.epoch, pid = id.pid, signal = %signal, "signalling mysqld");
        procs::signal(id, signal, signal == Signal::SIGKILL);
        let mut left = self
            .wait_gone(id, if grace.is_zero() { kill_wait } else { grace })
            .await;
        if left && !grace.is_zero() {
            tracing::warn!(resource = %self.name, epoch = ctx.epoch, pid = id.pid, "mysqld did not stop within {grace:?}; sending SIGKILL");
            procs::signal(id, Signal::SIGKILL, true);
            left = self.wait_gone(id, kill_wait).await;
        }
        if left {
            return Err(self.fail(
                ctx,
                Recovery::Fence,
                format!(
                    "mysqld (pid {}) survived SIGKILL (stuck in the kernel?)",
                    id.pid
                ),
            ));
        }
        Ok(())
    }

    async fn wait_gone(&self, id: ProcessId, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if let Some(child) = self.child.lock().await.as_mut() {
                let _ = child.try_wait();
            }
            if !procs::is_alive(id) {
                return false;
            }
            if Instant::now() >= deadline {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn forget_child(&self) {
        if let Some(mut child) = self.child.lock().await.take() {
            let _ = child.try_wait();
        }
    }

    /// Starts mysqld from the command line (or adopts the one already tracked) and waits until it
    /// answers; a start that fails stops what it spawned.
    pub(super) async fn start_command(
        &self,
        ctx: &ActionContext,
        endpoint: &Endpoint,
        argv: &[String],
        pid_file: &Path,
        log_file: &Path,
    ) -> Result<(), AgentError> {
        let deadline = Instant::now() + Self::timeout(self.config.start_timeout_ms);
        let (id, offset) = match self.tracked(pid_file).await {
            Tracked::Alive(id) => {
                tracing::info!(resource = %self.name, epoch = ctx.epoch, pid = id.pid, "mysqld already runs; waiting until it answers");
                let ready = self.wait_ready(ctx, endpoint, Some(id), deadline).await;
                return ready.map_err(|why| self.fail(ctx, Recovery::MoveAway, why));
            }
            Tracked::Unreadable(why) => {
                return Err(self.fail(
                    ctx,
                    Recovery::MoveAway,
                    format!("pid file unreadable: {why}"),
                ))
            }
            Tracked::Gone(id) => {
                tracing::warn!(resource = %self.name, epoch = ctx.epoch, pid = id.pid, "previous mysqld is gone without a stop; starting anew (crash recovery)");
                Self::remove_pid_file(pid_file);
                self.refuse_foreign(ctx, endpoint).await?;
                self.spawn(ctx, argv, pid_file, log_file).await?
            }
            Tracked::None => {
                self.refuse_foreign(ctx, endpoint).await?;
                self.spawn(ctx, argv, pid_file, log_file).await?
            }
        };
        match self.wait_ready(ctx, endpoint, Some(id), deadline).await {
            Ok(()) => {
                tracing::info!(resource = %self.name, epoch = ctx.epoch, pid = id.pid, "mysqld answers");
                Ok(())
            }
            Err(why) => {
                // Leave nothing behind: stop what this start spawned.
                let cleanup = self
                    .end_process(ctx, id, Self::timeout(self.config.stop_timeout_ms))
                    .await;
                self.forget_child().await;
                Self::remove_pid_file(pid_file);
                let tail = Self::log_tail(log_file, offset);
                let mut message = format!("start failed: {why}; log: {tail}");
                if let Err(e) = cleanup {
                    message.push_str(&format!("; and cleanup failed: {}", e.message));
                    return Err(self.fail(ctx, Recovery::Fence, message));
                }
                Err(self.fail(ctx, Recovery::MoveAway, message))
            }
        }
    }

    /// Refuses to start a second server where one that quorate did not start already answers.
    async fn refuse_foreign(
        &self,
        ctx: &ActionContext,
        endpoint: &Endpoint,
    ) -> Result<(), AgentError> {
        match self.probe(endpoint).await {
            Ok(()) | Err(ProbeError::Refused { .. }) => Err(self.fail(
                ctx,
                Recovery::MoveAway,
                format!("a MySQL server that quorate did not start already answers on {endpoint}; stop it first"),
            )),
            Err(_) => Ok(()),
        }
    }

    /// Ends the tracked mysqld: SIGTERM and `grace` (none: SIGKILL at once), then SIGKILL.
    pub(super) async fn stop_command(
        &self,
        ctx: &ActionContext,
        pid_file: &Path,
        grace: Duration,
    ) -> Result<(), AgentError> {
        match self.tracked(pid_file).await {
            Tracked::None => Ok(()),
            Tracked::Gone(id) => {
                tracing::info!(resource = %self.name, epoch = ctx.epoch, pid = id.pid, "mysqld already gone");
                Self::remove_pid_file(pid_file);
                self.forget_child().await;
                Ok(())
            }
            Tracked::Alive(id) => {
                self.end_process(ctx, id, grace).await?;
                Self::remove_pid_file(pid_file);
                self.forget_child().await;
                Ok(())
            }
            Tracked::Unreadable(why) => Err(self.fail(
                ctx,
                Recovery::Fence,
                format!("pid file unreadable, cannot tell what to stop: {why}"),
            )),
        }
    }

    /// Running when the tracked mysqld lives and answers; a server quorate did not start fails.
    pub(super) async fn monitor_command(
        &self,
        endpoint: &Endpoint,
        pid_file: &Path,
    ) -> ResourceState {
        match self.tracked(pid_file).await {
            Tracked::None => match self.probe(endpoint).await {
                Ok(()) => ResourceState::Failed(format!(
                    "a server answers on {endpoint} but quorate did not start it"
                )),
                Err(_) => ResourceState::Stopped,
            },
            Tracked::Gone(id) => ResourceState::Failed(format!(
                "mysqld (pid {}) is gone without a stop (crashed or killed)",
                id.pid
            )),
            Tracked::Alive(id) => match self.probe(endpoint).await {
                Ok(()) => ResourceState::Running,
                Err(e) => ResourceState::Failed(format!(
                    "mysqld (pid {}) runs but does not answer: {e}",
                    id.pid
                )),
            },
            Tracked::Unreadable(why) => {
                ResourceState::Failed(format!("pid file unreadable: {why}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::SystemRunner;
    use crate::resources::agent::ResourceAgent;
    use crate::resources::mysql::config::MysqlConfig;
    use std::future::Future;
    use std::sync::Arc;
    use std::task::{Context, Poll, Waker};

    fn poll_once<F: Future + ?Sized>(future: std::pin::Pin<&mut F>) -> Poll<F::Output> {
        future.poll(&mut Context::from_waker(Waker::noop()))
    }

    /// A start dropped right after it spawned mysqld (here: while it waits for the child
    /// lock, which the test holds) must leave a pid file, so the stop that follows kills it.
    #[tokio::test]
    async fn a_start_dropped_after_spawn_leaves_nothing_the_stop_cannot_see() {
        let dir = tempfile::tempdir().expect("temp dir");
        let marker = dir.path().join("fake-mysqld.pid");
        let config = MysqlConfig {
            // A fake mysqld: it says its pid, then sleeps; it never answers a probe.
            command: vec![
                "/bin/sh".into(),
                "-c".into(),
                format!("echo $$ > {}; exec sleep 600", marker.display()),
            ],
            pid_file: Some(dir.path().join("quorate-mysql.pid")),
            log_file: Some(dir.path().join("mysqld.log")),
            host: Some("127.0.0.1".into()),
            port: Some(9),
            user: "quorate".into(),
            password: "x".into(),
            start_timeout_ms: 60_000,
            stop_timeout_ms: 2_000,
            kill_timeout_ms: 2_000,
            monitor_timeout_ms: 1_000,
            ..MysqlConfig::default()
        };
        let agent = MysqlAgent::new("mysql", config, Arc::new(SystemRunner));
        let ctx = ActionContext {
            epoch: 1,
            node: "node1".into(),
        };

        // Queue the test behind the start's first look at the child, so the lock is the
        // test's when the start comes back for it right after spawn().
        let held = agent.child.lock().await;
        let mut start = Box::pin(agent.start(&ctx));
        assert!(poll_once(start.as_mut()).is_pending());
        let mut mine = Box::pin(agent.child.lock());
        assert!(poll_once(mine.as_mut()).is_pending());
        drop(held);
        let deadline = Instant::now() + Duration::from_secs(10);
        let pid = loop {
            assert!(
                poll_once(start.as_mut()).is_pending(),
                "the start cannot finish"
            );
            if let Some(pid) = std::fs::read_to_string(&marker)
                .ok()
                .and_then(|t| t.trim().parse::<i32>().ok())
            {
                break pid;
            }
            assert!(Instant::now() < deadline, "the fake mysqld never started");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        // The start is dropped where it stands (a fence pre-empting it, a timeout, a
        // shutdown), then the group's stop runs.
        drop(start);
        drop(mine);
        let stopped = agent.stop(&ctx).await;
        let survivor = procs::identify(pid);
        if let Some(id) = survivor {
            procs::signal(id, Signal::SIGKILL, true);
        }
        stopped.expect("the stop succeeds");
        assert_eq!(
            survivor, None,
            "the mysqld of the dropped start still runs after a stop that succeeded"
        );
    }
}

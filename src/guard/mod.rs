//! The lease guard: a separate process that fences the owner when its lease runs out, even if
//! the agent process hangs, is stopped (SIGSTOP) or crashed.
//!
//! The agent holds `lease_until` on the lease clock ([`crate::clock::LEASE_CLOCK`],
//! `CLOCK_BOOTTIME`, which counts time the host spent suspended; the agent and the guard read
//! the same clock, since the deadline crosses between them). At each renewal it sends the guard
//! `arm <deadline_ns> <epoch>` over a pipe (the guard's stdin, see [`protocol`]); when it has
//! released everything it sends `disarm <epoch>`. The guard sleeps until the armed deadline; if
//! the deadline passes with no later `arm`, it fences by itself: it logs loudly (epoch, how late),
//! calls [`ResourceAgent::fence`] on each agent it was given, in order (VIP first, then MySQL),
//! continuing past failures, and stays disarmed until a new `arm`.
//!
//! Why a process and not a thread: a SIGSTOP, a deadlock or a runaway allocation in the agent
//! stops all its threads. The guard is spawned by [`GuardHandle`] in its own process group, so a
//! signal to the agent's group does not reach it, and it is not killed when the agent drops it,
//! because it must outlive a crashed agent to fence.
//!
//! When the agent closes the pipe (it exited or crashed), the guard keeps the armed deadline,
//! fences if it passes, and then exits; a disarmed guard exits at once.
//!
//! The watchdog ([`watchdog`]), where configured, is petted every `pet_interval` by the policy
//! in [`state`]: while the lease is valid, or while this node holds nothing; never after a
//! deadline passed, and never again after a fence failed, so the kernel resets a frozen node or a
//! node that could not stop MySQL. A clean stop writes the magic close `'V'`; an exit after a
//! failed fence does not, so the reset still comes.
//!
//! Ordering choice: before applying each message the guard checks the clock, so a deadline that
//! passed while the guard was busy is fenced even if a renewal sits in the pipe behind it. That
//! can fence spuriously only when the guard itself was stalled past the deadline, which is the
//! safe side.
//!
//! Limits: a frozen whole VM stops the guard's timers too; only the watchdog (if the hypervisor
//! emulates one) or the leader's fencing hook covers that. Signals to the guard itself (a
//! service manager's SIGTERM) are the concern of the binary that runs it: it should treat them
//! like a closed input and never skip a fence that is due.

mod handle;
mod input;
pub mod protocol;
pub mod state;
pub mod watchdog;

pub use handle::{GuardError, GuardHandle};

use crate::clock;
use crate::resources::agent::{ActionContext, ResourceAgent};
use input::{LineEvent, LineReader};
use protocol::GuardCommand;
use serde::Serialize;
use state::{Applied, GuardState, Lease};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncBufRead;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, error, info, warn};
use watchdog::Watchdog;

/// How the guard runs.
#[derive(Clone, Debug)]
pub struct GuardSettings {
    /// This node's name, put into the fence actions' context.
    pub node: String,
    /// How often the watchdog is petted while the policy allows it.
    pub pet_interval: Duration,
    /// How long one agent's `fence` may take before the guard gives up on it and moves on.
    pub fence_timeout: Duration,
    /// The watchdog timeout to set when the device opens; `None` keeps the driver's.
    pub watchdog_timeout_s: Option<u32>,
}

impl Default for GuardSettings {
    fn default() -> Self {
        GuardSettings {
            node: String::new(),
            pet_interval: Duration::from_secs(1),
            fence_timeout: Duration::from_secs(10),
            watchdog_timeout_s: None,
        }
    }
}

/// One fence the guard carried out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FenceRecord {
    /// The epoch whose lease ran out.
    pub epoch: u64,
    /// The deadline that passed, lease-clock ns.
    pub deadline_ns: u64,
    /// When the guard noticed and began fencing, lease-clock ns.
    pub started_ns: u64,
    /// How late the guard began after the deadline, in ns.
    pub late_ns: u64,
    /// One line per agent whose fence failed or timed out; empty when all succeeded.
    pub failures: Vec<String>,
}

/// Why the guard loop returned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum GuardExit {
    /// The input closed while nothing was armed: nothing to guard.
    InputClosedDisarmed,
    /// The input closed while armed; the guard waited for the deadline and fenced.
    InputClosedAfterFence,
}

/// What happened to the watchdog when the guard returned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum WatchdogEnd {
    /// No watchdog was configured.
    NotConfigured,
    /// The watchdog could not be opened; the guard ran on its timer alone.
    OpenFailed(String),
    /// Magic close written: the kernel stops the timer.
    MagicClosed,
    /// Closed without the magic character because a fence failed: the kernel will reset the node.
    LeftRunning,
    /// The magic close could not be written: the kernel will reset the node.
    CloseFailed(String),
}

/// What the guard did, returned when its input closed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GuardOutcome {
    /// Why it returned.
    pub exit: GuardExit,
    /// Every fence it carried out, in order.
    pub fences: Vec<FenceRecord>,
    /// How many lines were rejected as malformed.
    pub bad_lines: u64,
    /// How many valid messages were ignored (older epoch, deadline not forward).
    pub ignored: u64,
    /// How many times the watchdog was petted.
    pub pets: u64,
    /// The watchdog's end.
    pub watchdog: WatchdogEnd,
}

/// Runs the guard until its input closes and nothing is left to guard; see the module docs.
pub async fn run_guard(
    input: impl AsyncBufRead + Unpin,
    fence: Vec<Arc<dyn ResourceAgent>>,
    watchdog: Option<PathBuf>,
    settings: GuardSettings,
) -> GuardOutcome {
    let mut guard = Guard::new(fence, watchdog, settings);
    let mut reader = LineReader::new(input);
    let mut input_open = true;
    let mut pet_tick = tokio::time::interval(guard.settings.pet_interval);
    pet_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);

    loop {
        // A timer can fire late, and a message may arrive after a deadline: always ask the clock.
        guard.fence_if_expired().await;
        let armed = guard.state.armed();
        if !input_open && armed.is_none() {
            break;
        }
        let wake_at = armed.map(|lease| instant_for(lease.deadline_ns));
        tokio::select! {
            biased;
            _ = sleep_until(wake_at) => {}
            _ = pet_tick.tick() => guard.pet_if_allowed(),
            event = reader.next_line(), if input_open => match event {
                LineEvent::Line(line) => guard.handle_line(&line),
                LineEvent::Rejected(problem) => {
                    guard.bad_lines += 1;
                    warn!(%problem, "lease guard ignored a malformed line");
                }
                LineEvent::Closed => {
                    input_open = false;
                    match guard.state.armed() {
                        Some(lease) => warn!(epoch = lease.epoch, "agent closed the guard's input while armed; fencing if the deadline passes"),
                        None => info!("agent closed the guard's input; nothing armed, exiting"),
                    }
                }
            },
        }
    }

    let exit = if guard.fences.is_empty() {
        GuardExit::InputClosedDisarmed
    } else {
        GuardExit::InputClosedAfterFence
    };
    guard.finish(exit)
}

/// The guard loop's working state.
struct Guard {
    state: GuardState,
    agents: Vec<Arc<dyn ResourceAgent>>,
    settings: GuardSettings,
    watchdog: Option<Watchdog>,
    watchdog_error: Option<String>,
    fences: Vec<FenceRecord>,
    bad_lines: u64,
    ignored: u64,
    pets: u64,
}

impl Guard {
    fn new(
        agents: Vec<Arc<dyn ResourceAgent>>,
        path: Option<PathBuf>,
        settings: GuardSettings,
    ) -> Self {
        let (watchdog, watchdog_error) = match path.map(|p| Watchdog::open(&p)) {
            None => (None, None),
            Some(Ok(watchdog)) => {
                info!(path = %watchdog.path().display(), "lease guard opened the watchdog");
                // A device whose timeout cannot be set is still petted (it was opened, so its
                // timer runs): dropping it would reset the node after the driver's timeout.
                let timeout_error = settings
                    .watchdog_timeout_s
                    .and_then(|seconds| match watchdog.set_timeout(seconds) {
                        Ok(effective) => {
                            info!(requested = seconds, effective, "watchdog timeout set");
                            None
                        }
                        Err(error) => {
                            error!(%error, "the watchdog keeps the driver's timeout");
                            Some(error.to_string())
                        }
                    });
                (Some(watchdog), timeout_error)
            }
            Some(Err(error)) => {
                error!(%error, "lease guard runs without its watchdog; fencing still works by timer");
                (None, Some(error.to_string()))
            }
        };
        Guard {
            state: GuardState::new(),
            agents,
            settings,
            watchdog,
            watchdog_error,
            fences: Vec::new(),
            bad_lines: 0,
            ignored: 0,
            pets: 0,
        }
    }

    fn handle_line(&mut self, line: &[u8]) {
        let command = match GuardCommand::parse(line) {
            Ok(command) => command,
            Err(problem) => {
                self.bad_lines += 1;
                warn!(%problem, "lease guard ignored a malformed line");
                return;
            }
        };
        match self.state.apply(command) {
            Applied::Armed(Lease { deadline_ns, epoch }) => {
                debug!(epoch, deadline_ns, "lease guard armed")
            }
            Applied::Repeated(_) | Applied::Pinged => debug!(%command, "lease guard: no change"),
            Applied::Disarmed { epoch } => info!(epoch, "lease guard disarmed: node holds nothing"),
            Applied::IgnoredStaleEpoch { epoch, highest } => {
                self.ignored += 1;
                warn!(epoch, highest, %command, "lease guard ignored a message of an older epoch");
            }
            Applied::IgnoredNotForward {
                deadline_ns,
                current_ns,
            } => {
                self.ignored += 1;
                warn!(deadline_ns, current_ns, %command, "lease guard ignored a deadline that does not move forward");
            }
        }
    }

    async fn fence_if_expired(&mut self) {
        let now_ns = clock::guard_now_ns();
        let Some(lease) = self.state.expired(now_ns) else {
            return;
        };
        let late_ns = now_ns.saturating_sub(lease.deadline_ns);
        error!(
            epoch = lease.epoch,
            late_ms = late_ns as f64 / 1e6,
            node = %self.settings.node,
            "LEASE EXPIRED WITHOUT RENEWAL: lease guard fencing this node"
        );
        let context = ActionContext {
            epoch: lease.epoch,
            node: self.settings.node.clone(),
        };
        let mut failures = Vec::new();
        for agent in &self.agents {
            let name = agent.name().to_string();
            match tokio::time::timeout(self.settings.fence_timeout, agent.fence(&context)).await {
                Ok(Ok(())) => info!(epoch = lease.epoch, resource = %name, "lease guard fenced"),
                Ok(Err(failure)) => {
                    error!(epoch = lease.epoch, resource = %name, %failure, "lease guard fence failed; continuing");
                    failures.push(failure.to_string());
                }
                Err(_) => {
                    let timeout = self.settings.fence_timeout;
                    error!(epoch = lease.epoch, resource = %name, ?timeout, "lease guard fence timed out; continuing");
                    failures.push(format!("{name}: fence did not finish within {timeout:?}"));
                }
            }
        }
        let all_succeeded = failures.is_empty();
        self.state.fenced(all_succeeded);
        if !all_succeeded && self.watchdog.is_some() {
            error!(
                epoch = lease.epoch,
                "fence failed: watchdog petting stops, the node will be reset"
            );
        }
        self.fences.push(FenceRecord {
            epoch: lease.epoch,
            deadline_ns: lease.deadline_ns,
            started_ns: now_ns,
            late_ns,
            failures,
        });
    }

    fn pet_if_allowed(&mut self) {
        let Some(watchdog) = self.watchdog.as_mut() else {
            return;
        };
        if !self.state.may_pet(clock::guard_now_ns()) {
            return;
        }
        match watchdog.pet() {
            Ok(()) => self.pets += 1,
            Err(error) => warn!(%error, "lease guard missed a watchdog pet"),
        }
    }

    fn finish(self, exit: GuardExit) -> GuardOutcome {
        let watchdog = match (self.watchdog, self.watchdog_error) {
            (None, None) => WatchdogEnd::NotConfigured,
            (None, Some(error)) => WatchdogEnd::OpenFailed(error),
            (Some(_left_open), _) if self.state.fence_failed() => {
                error!("lease guard exits after a failed fence without the magic close: expect a reset");
                WatchdogEnd::LeftRunning
            }
            (Some(watchdog), _) => match watchdog.close_magic() {
                Ok(()) => WatchdogEnd::MagicClosed,
                Err(error) => {
                    error!(%error, "lease guard could not write the watchdog magic close");
                    WatchdogEnd::CloseFailed(error.to_string())
                }
            },
        };
        info!(?exit, fences = self.fences.len(), "lease guard stopped");
        GuardOutcome {
            exit,
            fences: self.fences,
            bad_lines: self.bad_lines,
            ignored: self.ignored,
            pets: self.pets,
            watchdog,
        }
    }
}

/// The tokio instant matching a lease-clock deadline (tokio's clock need not be the lease
/// clock, so only differences are carried across).
///
/// Tokio times on `CLOCK_MONOTONIC`, which stops while the host is suspended, so after a
/// suspend this wake-up comes late by the time suspended. That does not delay the fence: the
/// pet tick wakes the loop every `pet_interval` of awake time, and every turn of the loop reads
/// the lease clock (`CLOCK_BOOTTIME`) first, so a deadline that passed during a suspend is
/// fenced within one pet interval of resuming, and the watchdog is not petted meanwhile.
fn instant_for(deadline_ns: u64) -> Instant {
    let now = Instant::now();
    let now_ns = clock::guard_now_ns();
    let wait = Duration::from_nanos(deadline_ns.saturating_sub(now_ns));
    // A deadline centuries away: wake in a day and look again rather than overflow.
    now.checked_add(wait)
        .unwrap_or_else(|| now + Duration::from_secs(86_400))
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;

//! The owner's lease, from the node's side: report to the leader every renewal interval, and
//! when this node owns the group ask for its lease to be renewed.
//!
//! `t0` is taken before the request is sent. On a grant the lease runs until
//! `t0 + lease·(1−ρ)` on this process's clock, and the guard is armed with the same deadline
//! in nanoseconds of the same kernel clock ([`crate::clock::LEASE_CLOCK`], `CLOCK_BOOTTIME`:
//! time the host spent suspended counts against the lease, so a resumed owner does not trust a
//! lease of old time). Nothing else extends the lease.

use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use tokio::sync::{watch, Mutex};
use tokio_util::sync::CancellationToken;

use crate::arbiter::ownership::Ownership;
use crate::arbiter::view::cluster_view;
use crate::clock;
use crate::consensus::store::AppliedState;
use crate::consensus::types::{Member, NodeId, Raft};
use crate::core::node::renewal_due;
use crate::core::time::{Millis, Timing};
use crate::core::view;
use crate::guard::GuardHandle;
use crate::rpc::peer::client::{ClientOptions, PeerClient};
use crate::rpc::peer::{Identity, ReportError};

/// A lease this node holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The owner epoch it was granted for.
    pub epoch: u64,
    /// When it ends, on this process's clock.
    pub until: Millis,
}

/// An epoch this node gave up: an action under it failed in a way that asks for fencing (a
/// stop that failed), so the node asks no more renewals for it and lets its lease run out.
/// Set by the executor ([`crate::agent::reconcile`]); it applies to that epoch only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GaveUp {
    /// The epoch given up.
    pub epoch: u64,
    /// What failed, for the log and `status`.
    pub why: String,
}

/// Everything the renewal loop needs.
pub struct Renewer {
    /// The Raft handle (to find the leader).
    pub raft: Raft,
    /// This node.
    pub me: NodeId,
    /// The members, for addresses and the view.
    pub members: std::collections::BTreeMap<NodeId, Member>,
    /// Lease settings.
    pub timing: Timing,
    /// How often to report.
    pub interval: Duration,
    /// The committed state.
    pub applied: watch::Receiver<Arc<AppliedState>>,
    /// This node's own leader-side service, used when this node leads.
    pub ownership: Arc<Ownership>,
    /// Who this node is on the peer service.
    pub identity: Arc<Identity>,
    /// Settings for calls to the leader.
    pub client_options: ClientOptions,
    /// Where the lease is published.
    pub lease: watch::Sender<Option<Lease>>,
    /// Whether this node could run the group now.
    pub healthy: watch::Receiver<bool>,
    /// The guard process, when one runs.
    pub guard: Option<Arc<Mutex<GuardHandle>>>,
    /// The epoch this node gave up, if any: never renewed again.
    pub gave_up: watch::Receiver<Option<GaveUp>>,
}

impl Renewer {
    /// Reports and renews until `stop` is cancelled (then it ends after the report in hand).
    pub async fn run(self, stop: CancellationToken) {
        let mut clients: std::collections::HashMap<NodeId, PeerClient> = Default::default();
        let mut applied = self.applied.clone();
        let mut last_refusal = String::new();
        loop {
            let state = self.applied.borrow().clone();
            let view = cluster_view(&state.state, &self.members);
            let role = self
                .members
                .get(&self.me)
                .map(|m| m.role)
                .unwrap_or(view::Role::Management);
            // A given-up epoch is never renewed again: the lease the node holds for it only
            // runs out, the guard's deadline with it, and the leader, hearing no renewal,
            // moves the group once that lease has ended (see `core::leader`).
            let due = renewal_due(self.me, role, &view).filter(|o| !self.gave_up(o.epoch));
            let renew_epoch = due.map(|o| o.epoch).unwrap_or(0);
            let healthy = *self.healthy.borrow();
            let t0 = clock::now();
            let t0_ns = clock::lease_now_ns().ok();
            match self.report(&mut clients, renew_epoch, healthy).await {
                // A grant that comes back after the epoch was given up (the report was in
                // flight) is neither published nor armed: the leader merely waits longer.
                Some(Ok(true)) if renew_epoch > 0 && !self.gave_up(renew_epoch) => {
                    let until = self.timing.owner_lease_until(t0);
                    let lease = Lease {
                        epoch: renew_epoch,
                        until,
                    };
                    self.lease.send_if_modified(|current| {
                        let newer =
                            current.is_none_or(|c| c.epoch != lease.epoch || c.until < until);
                        if newer {
                            *current = Some(lease);
                        }
                        newer
                    });
                    if let (Some(guard), Some(t0_ns)) = (&self.guard, t0_ns) {
                        let deadline = t0_ns + self.timing.owner_lease_ms() * 1_000_000;
                        if let Err(e) = guard.lock().await.arm(deadline, renew_epoch).await {
                            tracing::error!(error = %e, "cannot arm the lease guard");
                        }
                    }
                    last_refusal.clear();
                }
                Some(Err(error)) if renew_epoch > 0 => {
                    let text = error.to_string();
                    if text != last_refusal {
                        tracing::warn!(epoch = renew_epoch, reason = %text, "lease not renewed");
                        last_refusal = text;
                    }
                    // A leader that confirmed its quorum says this node is not the owner
                    // under that epoch: the lease must not be trusted a moment longer.
                    if matches!(error, ReportError::Refused(_)) {
                        self.lease.send_replace(None);
                    }
                }
                _ => {}
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                changed = applied.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
    }

    /// Whether this node gave up `epoch`.
    fn gave_up(&self, epoch: u64) -> bool {
        self.gave_up
            .borrow()
            .as_ref()
            .is_some_and(|g| g.epoch == epoch)
    }

    /// One report to the leader; `None` when no leader answered.
    async fn report(
        &self,
        clients: &mut std::collections::HashMap<NodeId, PeerClient>,
        renew_epoch: u64,
        healthy: bool,
    ) -> Option<Result<bool, ReportError>> {
        let metrics = self.raft.metrics().borrow().clone();
        if metrics.state == ServerState::Leader {
            return Some(self.ownership.report(self.me, renew_epoch, healthy).await);
        }
        let leader = metrics.current_leader?;
        let client = match clients.entry(leader) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => {
                let member = self.members.get(&leader)?;
                let client = PeerClient::new(
                    self.identity.clone(),
                    leader,
                    &member.addr,
                    ClientOptions {
                        connect: self.interval,
                        ..self.client_options.clone()
                    },
                )
                .ok()?;
                entry.insert(client)
            }
        };
        let timeout = Duration::from_millis(self.timing.lease_ms / 2);
        let reason = if healthy { "" } else { "cannot run the group" };
        client
            .report(renew_epoch, healthy, reason, timeout)
            .await
            .ok()
    }
}

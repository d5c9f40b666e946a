//! The `manager-sync` thread: the gateway's side of the manager. It registers (retrying with
//! capped backoff while the manager is away), heartbeats at the interval the manager asks for,
//! pulls the keys, revocations and inventory (closing the uplinks of revoked agents), reports
//! its agents and their servers, and delivers the audit outbox. Each call has its deadline
//! (`manager_link.rs`); a failing manager only delays the next round.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use conduit_runtime::heartbeat::Heartbeat;

use crate::agents::Agents;
use crate::audit::Outbox;
use crate::manager_link::{CallError, ManagerLink};
use crate::trust::Trust;

/// What the loop works on.
#[allow(missing_debug_implementations)]
pub struct Sync {
    /// The manager.
    pub manager: Arc<ManagerLink>,
    /// Where pulls go.
    pub trust: Arc<Trust>,
    /// Where reports come from.
    pub agents: Arc<Agents>,
    /// Audit to deliver.
    pub outbox: Arc<Outbox>,
    /// Set from the registration.
    pub datacenter: Arc<RwLock<String>>,
    /// What users reach this gateway at (reported at registration).
    pub address: String,
    /// Ticked every round.
    pub beat: Arc<Heartbeat>,
    /// Ends the loop.
    pub stop: Arc<AtomicBool>,
}

/// The longest one round spends reporting servers.
const REPORT_BUDGET: Duration = Duration::from_secs(1);
/// Every agent's servers are reported again this often: a claim the manager set aside (the
/// server was held by another agent, since revoked) is made again.
const REPORT_ALL_EVERY: Duration = Duration::from_secs(600);

struct Intervals {
    heartbeat: Duration,
    pull: Duration,
}

impl Sync {
    fn sleep(&self, d: Duration) {
        let until = Instant::now() + d;
        while !self.stop.load(Ordering::Relaxed) && Instant::now() < until {
            self.beat.tick();
            std::thread::sleep(Duration::from_millis(200).min(until - Instant::now()));
        }
    }

    fn register(&self) -> Option<Intervals> {
        let mut backoff = Duration::from_secs(1);
        while !self.stop.load(Ordering::Relaxed) {
            match self.manager.register(&self.address) {
                Ok(r) => {
                    log::info!(
                        "registered at {} as gateway {} of {}",
                        self.manager.url(),
                        r.gateway_id,
                        r.datacenter
                    );
                    if let Ok(mut dc) = self.datacenter.write() {
                        *dc = r.datacenter;
                    }
                    let asked = Duration::from_secs(
                        r.revocation_poll_secs
                            .min(r.inventory_poll_secs)
                            .clamp(1, 300),
                    );
                    // Pull at least three times per trust window, or a short --trust-ttl would
                    // fail users closed between two successful pulls.
                    let pull = asked.min(self.trust.ttl() / 3).max(Duration::from_secs(1));
                    return Some(Intervals {
                        heartbeat: Duration::from_secs(r.heartbeat_secs.clamp(1, 300)),
                        pull,
                    });
                }
                Err(e) => log::warn!(
                    "registering at {}: {e} (retrying in {backoff:?})",
                    self.manager.url()
                ),
            }
            self.sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
        None
    }

    fn pull(&self) -> Result<(), CallError> {
        let asked = Instant::now();
        let keys = self.manager.jwks()?;
        let revocations = self.manager.revocations()?;
        let servers = self.manager.servers()?;
        self.trust.update(keys, &revocations, servers, asked);
        self.agents.revoke(|id| self.trust.agent_revoked(id));
        Ok(())
    }

    /// Reports what changed, for at most [`REPORT_BUDGET`]: the rest waits for the next
    /// round, so that ten thousand agents arriving at once never hold back the pulls.
    fn report(&self) -> Result<(), CallError> {
        let until = Instant::now() + REPORT_BUDGET;
        let (members, reports) = self.agents.take_reports();
        let mut failed: Vec<String> = Vec::new();
        let mut result = Ok(());
        if let Some(ids) = members {
            if let Err(e) = self.manager.report_agents(ids) {
                self.agents
                    .unreport(true, reports.into_iter().map(|r| r.agent_id).collect());
                return Err(e);
            }
        }
        for r in reports {
            if result.is_err() || Instant::now() >= until {
                failed.push(r.agent_id);
                continue;
            }
            if let Err(e) = self.manager.report_servers(&r) {
                match e {
                    // the manager refused this report (e.g. a revoked agent): not retried
                    CallError::Refused { .. } => {
                        log::warn!("reporting agent {}'s servers: {e}", r.agent_id)
                    }
                    CallError::Unreachable(_) | CallError::Unanswered(_) => {
                        failed.push(r.agent_id);
                        result = Err(e);
                    }
                }
            }
        }
        self.agents.unreport(false, failed);
        result
    }

    /// Runs until stopped.
    pub fn run(self) {
        let Some(iv) = self.register() else { return };
        let mut next_beat = Instant::now();
        let mut next_pull = Instant::now();
        let mut next_report_all = Instant::now() + REPORT_ALL_EVERY;
        // After a failed pull, retry sooner (1 s, doubling up to the interval): a short outage
        // must not leave the trust window to expire between two scheduled pulls.
        let mut pull_retry = Duration::from_secs(1);
        while !self.stop.load(Ordering::Relaxed) {
            self.beat.tick();
            let now = Instant::now();
            if now >= next_beat {
                next_beat = now + iv.heartbeat;
                match self.manager.heartbeat() {
                    Ok(()) => {}
                    Err(CallError::Refused { code, message }) if code == "unauthenticated" => {
                        log::error!("the manager refuses this gateway's credential: {message}");
                    }
                    Err(e) => log::warn!("heartbeat to the manager: {e}"),
                }
            }
            if now >= next_pull {
                match self.pull() {
                    Ok(()) => {
                        next_pull = now + iv.pull;
                        pull_retry = Duration::from_secs(1);
                    }
                    Err(e) => {
                        let age = self.trust.ttl();
                        log::warn!("pulling keys, revocations and inventory from the manager: {e} (decisions serve up to {age:?} since the last pull)");
                        next_pull = Instant::now() + pull_retry.min(iv.pull);
                        pull_retry = (pull_retry * 2).min(iv.pull);
                    }
                }
            }
            if now >= next_report_all {
                next_report_all = now + REPORT_ALL_EVERY;
                self.agents.report_all();
            }
            if let Err(e) = self.report() {
                log::warn!("reporting agents to the manager: {e}");
            }
            match self
                .outbox
                .deliver(|batch| self.manager.record_audit(batch))
            {
                Ok(0) => {}
                Ok(n) => log::info!("delivered {n} audit records"),
                Err(e) => log::warn!("delivering audit records to the manager: {e} (kept on disk)"),
            }
            self.sleep(Duration::from_secs(1));
        }
    }
}

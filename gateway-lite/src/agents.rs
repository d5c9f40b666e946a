//! The agents connected here: their links, their servers, their state, and the routing of an
//! operation to the agent that owns its server.
//!
//! States (`gateway_agents_total{status}`): `connected` (registered, heartbeating), `stale`
//! (no heartbeat for [`Policy::stale_after`]: no longer routed to; its link is closed after
//! twice that), `disconnected` (the link is gone). A disconnected agent is forgotten, with its
//! per-agent series, [`Policy::forget_after`] later; one that comes back before is the same
//! entry again. An agent registering while it still has a link here replaces that link (a
//! reconnect that raced the old link's timeout): one entry per agent, never two.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use conduit_api::manager as m;
use conduit_api::uplink::{self as up, Call, Method, Reply, ServerEntry};
use conduit_http::rpc::{Code, RpcError};
use conduit_metrics::labels::DatacenterStatus;

use crate::metrics::{AgentId, GatewayMetrics, HeartbeatLabels};

/// Timing of agent states.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// The interval agents are told to heartbeat at.
    pub heartbeat: Duration,
    /// No heartbeat for this long: `stale` (three intervals by default).
    pub stale_after: Duration,
    /// Disconnected for this long: forgotten.
    pub forget_after: Duration,
}

/// How a routed call ended without an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The link dropped with the call in flight: whether it ran is unknown.
    Dropped,
    /// No answer in time.
    Timeout,
    /// The link's queue is full.
    Busy,
    /// The link had ended before the call was made: nothing was sent.
    Closed,
}

/// What became of an agent's reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answered {
    /// A call was waiting for it.
    Delivered,
    /// Its call was issued but has already timed out: the agent is slow, not broken.
    Late,
    /// No call with this id was ever issued on this link: the agent is broken or hostile.
    Unknown,
}

/// One uplink: the queue to its writer and the calls awaiting answers.
#[derive(Debug)]
pub struct Link {
    /// Connection number (unique in this process).
    pub conn: u64,
    out: async_channel::Sender<Vec<u8>>,
    kill: async_channel::Sender<&'static str>,
    /// Calls waiting for their answers; `None` once the link has ended, so that a call made
    /// after [`Link::fail_all`] is refused rather than left waiting.
    pending: Mutex<Option<Pending>>,
    next_id: AtomicU64,
}

type Pending = HashMap<u64, async_channel::Sender<Result<Reply, Failure>>>;

/// Frames queued per link before a call is refused as busy. The writer drains it as fast as
/// the socket takes frames, so it fills only when the agent stops reading; a bounded channel
/// allocates its slots up front, so at 10,000 links every slot costs 320 KB.
const QUEUE: usize = 32;

impl Link {
    /// A link, the receiver of its outgoing frames and of the reason it is to be closed.
    pub fn new(
        conn: u64,
    ) -> (
        Arc<Link>,
        async_channel::Receiver<Vec<u8>>,
        async_channel::Receiver<&'static str>,
    ) {
        let (out, out_rx) = async_channel::bounded(QUEUE);
        let (kill, kill_rx) = async_channel::bounded(1);
        let link = Link {
            conn,
            out,
            kill,
            pending: Mutex::new(Some(Pending::new())),
            next_id: AtomicU64::new(1),
        };
        (Arc::new(link), out_rx, kill_rx)
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Option<Pending>> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues a frame for the writer; false if the queue is full or the link gone.
    pub fn send(&self, frame: Vec<u8>) -> bool {
        self.out.try_send(frame).is_ok()
    }

    /// Whether the link has ended (its calls failed).
    pub fn is_closed(&self) -> bool {
        self.pending().is_none()
    }

    /// Asks for the link to be closed, saying why.
    pub fn close(&self, why: &'static str) {
        let _ = self.kill.try_send(why);
    }

    /// Runs `method` with `body` at the agent, waiting at most `deadline`.
    pub async fn call(
        &self,
        method: Method,
        body: Box<serde_json::value::RawValue>,
        deadline: Duration,
    ) -> Result<Reply, Failure> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = async_channel::bounded(1);
        match self.pending().as_mut() {
            Some(p) => p.insert(id, tx),
            None => return Err(Failure::Closed),
        };
        let msg = up::GatewayMessage::Request(Call { id, method, body });
        let json = serde_json::to_vec(&msg).unwrap_or_default();
        let frame = conduit_uplink::link::frame(
            conduit_uplink::link::Role::Server,
            conduit_ws::Opcode::Text,
            &json,
        );
        if !self.send(frame) {
            self.forget(id);
            return Err(Failure::Busy);
        }
        let answer = conduit_runtime::with_timeout(deadline, rx.recv()).await;
        self.forget(id);
        match answer {
            Some(Ok(outcome)) => outcome,
            // the sender went away: the link failed every call
            Some(Err(_)) => Err(Failure::Dropped),
            None => Err(Failure::Timeout),
        }
    }

    fn forget(&self, id: u64) {
        if let Some(p) = self.pending().as_mut() {
            p.remove(&id);
        }
    }

    /// Delivers an agent's reply to the call waiting on it.
    pub fn answer(&self, reply: Reply) -> Answered {
        let waiting = self.pending().as_mut().and_then(|p| p.remove(&reply.id));
        match waiting {
            Some(tx) => {
                let _ = tx.try_send(Ok(reply));
                Answered::Delivered
            }
            None if reply.id > 0 && reply.id < self.next_id.load(Ordering::Relaxed) => {
                Answered::Late
            }
            None => Answered::Unknown,
        }
    }

    /// Fails every call in flight as outcome-unknown (the link is gone), and every later one
    /// as [`Failure::Closed`].
    pub fn fail_all(&self) {
        let calls = self.pending().take().unwrap_or_default();
        for (_, tx) in calls {
            let _ = tx.try_send(Err(Failure::Dropped));
        }
    }
}

/// An agent's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Routed to.
    Connected,
    /// Heartbeats missed.
    Stale,
    /// No link.
    Disconnected,
}

impl Status {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Connected => "connected",
            Status::Stale => "stale",
            Status::Disconnected => "disconnected",
        }
    }
}

#[derive(Debug)]
struct Entry {
    datacenter: String,
    servers: Vec<ServerEntry>,
    status: Status,
    last_heartbeat: Instant,
    since: Instant,
    link: Option<Arc<Link>>,
}

#[derive(Debug, Default)]
struct State {
    agents: HashMap<String, Entry>,
    published: Vec<DatacenterStatus>,
    /// Agents whose server lists the manager has not been told yet.
    unreported: Vec<String>,
    /// Whether the connected set changed since the last report.
    membership_changed: bool,
}

/// What ListServers shows of a server's agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reach {
    /// The agent.
    pub agent_id: String,
    /// Its state.
    pub status: Status,
    /// `ipmi` or `redfish`.
    pub protocol: String,
    /// What the agent offers for the server.
    pub capabilities: Vec<conduit_api::uplink::Capability>,
}

/// The agents of this gateway.
#[derive(Debug)]
pub struct Agents {
    state: Mutex<State>,
    metrics: Arc<GatewayMetrics>,
    policy: Policy,
    next_conn: AtomicU64,
}

impl Agents {
    /// None yet.
    pub fn new(metrics: Arc<GatewayMetrics>, policy: Policy) -> Self {
        Agents {
            state: Mutex::default(),
            metrics,
            policy,
            next_conn: AtomicU64::new(1),
        }
    }

    /// The timing policy.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A fresh connection number.
    pub fn next_conn(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// A registered agent's link is attached; a link it still had is returned, to be closed.
    pub fn attach(
        &self,
        agent: &m::AgentInfo,
        servers: Vec<ServerEntry>,
        link: Arc<Link>,
    ) -> Option<Arc<Link>> {
        let now = Instant::now();
        let mut s = self.state();
        let entry = s.agents.entry(agent.agent_id.clone()).or_insert(Entry {
            datacenter: agent.datacenter.clone(),
            servers: Vec::new(),
            status: Status::Disconnected,
            last_heartbeat: now,
            since: now,
            link: None,
        });
        let old = entry.link.replace(link);
        entry.status = Status::Connected;
        entry.last_heartbeat = now;
        entry.since = now;
        s.membership_changed = true;
        self.set_servers_locked(&mut s, &agent.agent_id, servers);
        self.publish(&mut s);
        drop(s);
        self.metrics
            .agent_last_heartbeat
            .with(&agent_label(&agent.agent_id), |a| a.reset());
        old
    }

    fn set_servers_locked(&self, s: &mut State, agent_id: &str, servers: Vec<ServerEntry>) {
        if let Some(e) = s.agents.get_mut(agent_id) {
            e.servers = servers;
        }
        if !s.unreported.iter().any(|a| a == agent_id) {
            s.unreported.push(agent_id.to_owned());
        }
    }

    /// The agent's inventory changed, as told on link `conn`; false if that link is not the
    /// agent's current one (a replaced link must not overwrite its successor's list).
    pub fn set_servers(&self, agent_id: &str, conn: u64, servers: Vec<ServerEntry>) -> bool {
        let mut s = self.state();
        let current = s
            .agents
            .get(agent_id)
            .and_then(|e| e.link.as_ref())
            .is_some_and(|l| l.conn == conn);
        if current {
            self.set_servers_locked(&mut s, agent_id, servers);
        }
        current
    }

    /// The link `conn` of `agent_id` ended; its calls in flight fail as outcome-unknown.
    pub fn detach(&self, agent_id: &str, conn: u64) {
        let mut s = self.state();
        let Some(e) = s.agents.get_mut(agent_id) else {
            return;
        };
        if e.link.as_ref().is_none_or(|l| l.conn != conn) {
            return; // replaced by a newer link meanwhile
        }
        if let Some(link) = e.link.take() {
            link.fail_all();
        }
        e.status = Status::Disconnected;
        e.since = Instant::now();
        s.membership_changed = true;
        self.publish(&mut s);
    }

    /// A heartbeat on link `conn`; false if that link is not the agent's current one.
    pub fn heartbeat(&self, agent_id: &str, conn: u64) -> bool {
        let mut s = self.state();
        let Some(e) = s.agents.get_mut(agent_id) else {
            return false;
        };
        if e.link.as_ref().is_none_or(|l| l.conn != conn) {
            return false;
        }
        let status = if e.status == Status::Stale {
            "late"
        } else {
            "ok"
        };
        e.last_heartbeat = Instant::now();
        let revived = e.status == Status::Stale;
        e.status = Status::Connected;
        if revived {
            e.since = Instant::now();
            self.publish(&mut s);
        }
        drop(s);
        self.metrics.agent_heartbeats.inc(&HeartbeatLabels {
            agent_id: agent_id.to_owned(),
            status,
        });
        self.metrics
            .agent_last_heartbeat
            .with(&agent_label(agent_id), |a| a.reset());
        true
    }

    /// The link to the agent serving `server_id`, if it is connected. `assigned` is the agent
    /// the manager records for the server: only that agent is routed to, whatever another
    /// agent here claims; a server the manager records no agent for yet (its first report is
    /// on its way) is unavailable.
    pub fn route(
        &self,
        server_id: &str,
        assigned: Option<&str>,
    ) -> Result<(String, Arc<Link>), RpcError> {
        let s = self.state();
        let unavailable = |why: String| RpcError::new(Code::Unavailable, why);
        let not_here =
            || unavailable("no agent serving this server is connected to this gateway".into());
        let Some(assigned) = assigned else {
            return Err(unavailable(
                "the manager records no agent for this server yet: retry in a few seconds".into(),
            ));
        };
        let (agent_id, e) = s
            .agents
            .get_key_value(assigned)
            .filter(|(_, e)| e.servers.iter().any(|v| v.server_id == server_id))
            .ok_or_else(not_here)?;
        match (&e.link, e.status) {
            (Some(link), Status::Connected) => Ok((agent_id.clone(), link.clone())),
            (_, status) => Err(unavailable(format!(
                "agent {agent_id} is {}: its servers are unavailable until it reconnects",
                status.as_str()
            ))),
        }
    }

    /// Which agent reaches `server_id`, in what state.
    pub fn reach(&self, server_id: &str, assigned: Option<&str>) -> Option<Reach> {
        let s = self.state();
        let agent_id = assigned?;
        let e = s.agents.get(agent_id)?;
        let entry = e.servers.iter().find(|v| v.server_id == server_id)?;
        Some(Reach {
            agent_id: agent_id.to_owned(),
            status: e.status,
            protocol: entry.protocol.clone(),
            capabilities: entry.capabilities.clone(),
        })
    }

    /// Once a second: stale agents, links to close, agents to forget.
    pub fn sweep(&self) {
        let now = Instant::now();
        let p = self.policy;
        let mut s = self.state();
        let mut changed = false;
        let mut to_close = Vec::new();
        let mut forgotten = Vec::new();
        for (id, e) in s.agents.iter_mut() {
            let age = now.duration_since(e.last_heartbeat);
            match e.status {
                Status::Connected if age >= p.stale_after => {
                    log::warn!("agent {id}: no heartbeat for {age:?}: stale, not routed to");
                    e.status = Status::Stale;
                    e.since = now;
                    changed = true;
                }
                Status::Stale if age >= 2 * p.stale_after => {
                    if let Some(l) = &e.link {
                        to_close.push(l.clone());
                    }
                }
                Status::Disconnected if now.duration_since(e.since) >= p.forget_after => {
                    forgotten.push(id.clone());
                }
                _ => {}
            }
        }
        for id in &forgotten {
            log::info!("agent {id}: gone for {:?}: forgotten", p.forget_after);
            s.agents.remove(id);
            self.metrics.agent_last_heartbeat.remove(&agent_label(id));
            for status in ["ok", "late"] {
                self.metrics.agent_heartbeats.remove(&HeartbeatLabels {
                    agent_id: id.clone(),
                    status,
                });
            }
            changed = true;
        }
        if changed {
            self.publish(&mut s);
        }
        drop(s);
        for l in to_close {
            l.close("heartbeats stopped");
        }
    }

    /// Closes the link of a revoked agent.
    pub fn revoke(&self, is_revoked: impl Fn(&str) -> bool) {
        let s = self.state();
        for (id, e) in &s.agents {
            if let Some(l) = e.link.as_ref().filter(|_| is_revoked(id)) {
                log::warn!("agent {id}: credential revoked: closing its uplink");
                l.close("credential revoked");
            }
        }
    }

    /// For the manager: the connected agents if that set changed, and the server lists not yet
    /// reported. Taken: a failed report puts them back with [`Agents::unreport`].
    pub fn take_reports(&self) -> (Option<Vec<String>>, Vec<m::ReportServersRequest>) {
        let mut s = self.state();
        let members = std::mem::take(&mut s.membership_changed).then(|| {
            let mut ids: Vec<String> = s
                .agents
                .iter()
                .filter(|(_, e)| e.link.is_some())
                .map(|(id, _)| id.clone())
                .collect();
            ids.sort();
            ids
        });
        let unreported = std::mem::take(&mut s.unreported);
        let reports = unreported
            .into_iter()
            .filter_map(|id| {
                // An empty list changes nothing at the manager (it never drops a server on a
                // report): ten thousand agents without servers cost no calls.
                let e = s.agents.get(&id).filter(|e| !e.servers.is_empty())?;
                Some(m::ReportServersRequest {
                    servers: e
                        .servers
                        .iter()
                        .map(|v| m::ReportedServer {
                            server_id: v.server_id.clone(),
                            protocol: v.protocol.clone(),
                            capabilities: v
                                .capabilities
                                .iter()
                                .map(|c| c.as_str().to_owned())
                                .collect(),
                        })
                        .collect(),
                    agent_id: id,
                })
            })
            .collect();
        (members, reports)
    }

    /// Queues every connected agent's servers to be reported again.
    pub fn report_all(&self) {
        let mut s = self.state();
        let all: Vec<String> = (s.agents.iter())
            .filter(|(_, e)| e.link.is_some())
            .map(|(id, _)| id.clone())
            .collect();
        queue(&mut s.unreported, all);
    }

    /// Puts back reports that failed.
    pub fn unreport(&self, members: bool, agents: Vec<String>) {
        let mut s = self.state();
        s.membership_changed |= members;
        queue(&mut s.unreported, agents);
    }

    fn publish(&self, s: &mut State) {
        let mut counts: Vec<(DatacenterStatus, i64)> = Vec::new();
        for e in s.agents.values() {
            let l = DatacenterStatus {
                datacenter: e.datacenter.clone(),
                status: e.status.as_str(),
            };
            match counts.iter_mut().find(|(c, _)| *c == l) {
                Some((_, n)) => *n += 1,
                None => counts.push((l, 1)),
            }
        }
        for (l, n) in &counts {
            self.metrics.agents.with(l, |g| g.set(*n));
        }
        for gone in s
            .published
            .iter()
            .filter(|l| !counts.iter().any(|(c, _)| c == *l))
        {
            self.metrics.agents.remove(gone);
        }
        s.published = counts.into_iter().map(|(l, _)| l).collect();
    }
}

fn agent_label(id: &str) -> AgentId {
    AgentId {
        agent_id: id.to_owned(),
    }
}

/// Appends `agents` to `queue`, each at most once (in linear time: ten thousand agents).
fn queue(queue: &mut Vec<String>, agents: Vec<String>) {
    let mut seen: std::collections::HashSet<String> = queue.iter().cloned().collect();
    for a in agents {
        if seen.insert(a.clone()) {
            queue.push(a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conduit_metrics::catalog::CatalogBuilder;

    fn agents() -> Agents {
        let mut root = prometheus_client::registry::Registry::default();
        let mut b = CatalogBuilder::new(&mut root, "gateway", 100);
        let metrics = Arc::new(GatewayMetrics::register(&mut b));
        Agents::new(
            metrics,
            Policy {
                heartbeat: Duration::from_secs(10),
                stale_after: Duration::from_secs(30),
                forget_after: Duration::from_secs(600),
            },
        )
    }

    fn info(id: &str) -> m::AgentInfo {
        m::AgentInfo {
            agent_id: id.into(),
            name: String::new(),
            datacenter: "dc1".into(),
            gateway_id: None,
            connected: true,
            revoked: false,
        }
    }

    fn serves(ids: &[&str]) -> Vec<ServerEntry> {
        ids.iter()
            .map(|id| ServerEntry {
                server_id: (*id).into(),
                protocol: "ipmi".into(),
                capabilities: vec![],
            })
            .collect()
    }

    fn reply(id: u64) -> Reply {
        Reply {
            id,
            result: None,
            error: None,
        }
    }

    #[test]
    fn a_late_reply_is_told_apart_from_one_never_asked_for() {
        let (link, out, _kill) = Link::new(1);
        let body = serde_json::value::to_raw_value(&()).unwrap();
        let timed_out = smol::block_on(link.call(Method::PowerStatus, body, Duration::ZERO));
        assert_eq!(timed_out.unwrap_err(), Failure::Timeout);
        assert!(out.try_recv().is_ok(), "the request was queued");
        assert_eq!(link.answer(reply(1)), Answered::Late);
        assert_eq!(link.answer(reply(2)), Answered::Unknown);
        assert_eq!(link.answer(reply(0)), Answered::Unknown);
    }

    #[test]
    fn only_the_agent_the_manager_records_is_routed_to() {
        let a = agents();
        let (l1, _o1, _k1) = Link::new(1);
        let (l2, _o2, _k2) = Link::new(2);
        a.attach(&info("a1"), serves(&["s1"]), l1);
        // a second agent claims the same server
        a.attach(&info("a2"), serves(&["s1", "s2"]), l2);
        assert_eq!(
            a.route("s1", None).unwrap_err().code,
            Code::Unavailable,
            "no record, no route"
        );
        assert!(a.reach("s1", None).is_none());
        assert_eq!(a.route("s1", Some("a2")).unwrap().0, "a2");
        assert_eq!(
            a.route("s2", Some("a1")).unwrap_err().code,
            Code::Unavailable
        );
        assert_eq!(
            a.route("s1", Some("a9")).unwrap_err().code,
            Code::Unavailable
        );
        assert_eq!(a.reach("s1", Some("a2")).unwrap().agent_id, "a2");
        assert!(a.reach("s2", Some("a1")).is_none());
    }

    #[test]
    fn a_replaced_link_neither_heartbeats_nor_rewrites_the_inventory() {
        let a = agents();
        let (old, _o1, _k1) = Link::new(1);
        let (new, _o2, _k2) = Link::new(2);
        a.attach(&info("a1"), serves(&["s1"]), old);
        let replaced = a.attach(&info("a1"), serves(&["s1"]), new);
        assert_eq!(replaced.map(|l| l.conn), Some(1));
        assert!(!a.heartbeat("a1", 1));
        assert!(!a.set_servers("a1", 1, serves(&[])));
        assert!(a.route("s1", Some("a1")).is_ok(), "the inventory stands");
        assert!(a.set_servers("a1", 2, serves(&[])));
        assert!(a.route("s1", Some("a1")).is_err());
        // the old link's end does not detach the new one
        a.detach("a1", 1);
        assert!(a.heartbeat("a1", 2));
    }
}

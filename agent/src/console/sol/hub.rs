//! The console hub of one server: one SOL session to its BMC shared by all its viewers.
//!
//! A hub is a task on the agent's `sol-consoles` thread, created by the first viewer of a
//! server and owning everything about that console: the [`SolConsole`], the list of viewers
//! (seats), who holds the keyboard, the session log, reconnecting. Viewers talk to it through
//! channels only, so nothing about a console is behind a lock: a viewer joins through the
//! registry ([`Hubs`], one short lock per join), sends its keystrokes and control messages as
//! [`Command`]s (a bounded queue), and receives the console output through a bounded queue of
//! its own. A viewer that lets its queue fill up is disconnected (`viewer_too_slow`) instead
//! of slowing the BMC read loop or the other viewers; fanning a chunk out clones one
//! `Arc<[u8]>` per viewer.
//!
//! The hub ends when no viewer is left for [`LINGER`] (SOL is then deactivated and the
//! session closed; the hub stays in the registry, taking no new viewers, until that is done,
//! and a viewer arriving meanwhile starts the next hub, which activates SOL only once its
//! predecessor's session is gone, so that it does not find SOL held by that session:
//! `sol_in_use`), or when the first activation fails (every viewer is closed with the error
//! type). Once a session has been up, losing it (no reply, the BMC forgot the session, the
//! payload taken by another session or deactivated by the BMC, keystrokes refused for 30 s)
//! is followed by reconnecting with [`reconnect_delay`] backoff for as long as viewers
//! remain.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender, TrySendError};
use async_io::Timer;
use conduit_metrics::labels::{Direction, ErrorType, ServerId};
use conduit_runtime::job_thread::JobThread;
use conduit_runtime::with_timeout;
use futures_lite::future;
use prometheus_client::metrics::counter::Counter;

use super::held::Held;
use super::session_log::SessionLog;
use crate::config::ConsoleConfig;
use crate::fleet::Fleet;
use crate::metrics::{AgentMetrics, Reconnection};
use conduit_ipmi::client::IpmiError;
use conduit_ipmi::sol::{self, SolConsole};

/// How long a console stays connected to its BMC after its last viewer left (a reloaded
/// browser tab finds it still there, and misses no output).
pub const LINGER: Duration = Duration::from_secs(1);
/// Output chunks (at most 255 bytes each, as SOL carries them) queued for one viewer before
/// it counts as too slow: about 60 KiB, five seconds of a 115200-baud console.
pub const VIEWER_QUEUE: usize = 256;
/// Keystroke and control messages queued from the viewers of one console.
const COMMAND_QUEUE: usize = 64;
/// A quiet session is checked (and kept from timing out on the BMC) this often.
const KEEPALIVE: Duration = Duration::from_secs(3);
/// The hub looks for departed viewers at least this often.
const TICK: Duration = Duration::from_millis(250);
/// Wait for the acknowledgement of a SOL packet before resending it.
const SOL_REPLY_TIMEOUT: Duration = Duration::from_millis(500);
/// The first reconnect waits this long; each failure doubles the wait.
const FIRST_RETRY: Duration = Duration::from_millis(500);
/// The longest a new hub waits for its predecessor's session to be deactivated (that takes
/// at most the BMC's request timeouts, about 3 s with the defaults).
const PREDECESSOR_WAIT: Duration = Duration::from_secs(10);

/// The wait before reconnect attempt `failures + 1`: 0.5 s, doubling with every failed
/// attempt, capped at `cap`.
pub fn reconnect_delay(failures: u32, cap: Duration) -> Duration {
    FIRST_RETRY
        .saturating_mul(1u32 << failures.min(31))
        .min(cap)
}

/// The error type (and close reason) of a viewer disconnected for not keeping up.
pub const TOO_SLOW: &str = "viewer_too_slow";

/// What a viewer asks of its hub.
#[derive(Debug)]
pub enum Command {
    /// Console bytes typed by viewer `.0` (dropped unless it holds the keyboard).
    Input(u64, Vec<u8>),
    /// Viewer `.0` takes the keyboard.
    Takeover(u64),
    /// Viewer `.0` sends a serial BREAK (only with the keyboard).
    Break(u64),
}

/// How the hub ended a viewer: the WebSocket close code and reason (an error type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ending {
    /// Close code.
    pub code: u16,
    /// Close reason, the `error_type` counted for it.
    pub reason: &'static str,
}

/// The viewer task's end of its seat at the hub.
#[derive(Debug)]
pub struct Viewer {
    /// The viewer's id, carried by its commands.
    pub id: u64,
    /// Console output and status lines, in order. Closed when the hub ends the viewer.
    pub output: Receiver<Arc<[u8]>>,
    /// Closed when the hub lets go of the viewer: with [`TOO_SLOW`] as the ending, the
    /// viewer stops at once; otherwise it sends what `output` still holds first.
    pub stop: Receiver<()>,
    /// Why the viewer was ended: set by the hub before `output` or `stop` closes, or by the
    /// viewer's task (a write to the viewer timed out, no pong). Whoever sets it first counts
    /// the error.
    pub ending: Arc<OnceLock<Ending>>,
    /// To the hub.
    pub commands: Sender<Command>,
}

/// The hub's end of one viewer.
#[derive(Debug)]
struct Seat {
    id: u64,
    output: Sender<Arc<[u8]>>,
    stop: Sender<()>,
    ending: Arc<OnceLock<Ending>>,
    // Already told that its keystrokes are dropped.
    told_read_only: bool,
    // Only watches: never holds the keyboard (a viewer-role user through a gateway).
    watch: bool,
}

/// A viewer joining a hub.
#[derive(Debug)]
struct Join {
    seat: Seat,
    takeover: bool,
    force: bool,
}

#[derive(Debug)]
struct HubHandle {
    // Unbounded so that joining never waits; closed by the hub when it retires.
    join: Sender<Join>,
    commands: Sender<Command>,
    generation: u64,
    // Closed when the hub has ended, its session deactivated and closed.
    done: Receiver<()>,
    // Closed to end this hub alone (its server's configuration changed).
    end: Sender<()>,
}

/// The console hubs of the agent, by server id.
#[derive(Debug)]
pub struct Hubs {
    fleet: Arc<Fleet>,
    config: ConsoleConfig,
    // The `sol-consoles` thread: its executor runs every hub. The IPMI session futures are
    // not `Send`, so hubs are built on the thread from a `Send` job.
    thread: JobThread,
    hubs: Mutex<HashMap<String, HubHandle>>,
    // Closed when the agent stops: every hub deactivates SOL and ends.
    stop: Sender<()>,
    stopping: Receiver<()>,
    held: Held,
}

impl Hubs {
    /// No hub yet; they come with their first viewer, on `thread`.
    pub fn new(fleet: Arc<Fleet>, config: ConsoleConfig, thread: JobThread, held: Held) -> Hubs {
        let (stop, stopping) = async_channel::bounded(1);
        Hubs {
            fleet,
            config,
            thread,
            stop,
            stopping,
            held,
            hubs: Mutex::new(HashMap::new()),
        }
    }

    /// Seats a new viewer at the hub of `server_id`, starting the hub (and its SOL session)
    /// if there is none. `takeover`: the viewer takes the keyboard; `force`: an instance held
    /// by another session is taken over. Fails with an error type.
    pub fn attach(
        self: &Arc<Self>,
        server_id: &str,
        takeover: bool,
        force: bool,
        watch: bool,
    ) -> Result<Viewer, &'static str> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let (output_tx, output) = async_channel::bounded(VIEWER_QUEUE);
        let (stop_tx, stop) = async_channel::bounded(1);
        let ending = Arc::new(OnceLock::new());
        let mut join = Join {
            seat: Seat {
                id,
                output: output_tx,
                stop: stop_tx,
                ending: ending.clone(),
                told_read_only: false,
                watch,
            },
            takeover,
            force,
        };
        let viewer = |commands| Viewer {
            id,
            output,
            stop,
            ending,
            commands,
        };
        // Joins happen under this lock, and a hub stops taking joins under it only when no
        // join is waiting: a viewer never joins a hub that is going away.
        let mut hubs = self.hubs.lock().unwrap_or_else(|e| e.into_inner());
        let mut previous = None;
        if let Some(h) = hubs.get(server_id) {
            match h.join.try_send(join) {
                Ok(()) => return Ok(viewer(h.commands.clone())),
                Err(e) => join = e.into_inner(),
            }
            // Retiring: its session may not be deactivated yet.
            previous = Some(h.done.clone());
        }
        let (join_tx, join_rx) = async_channel::unbounded();
        let (commands_tx, commands_rx) = async_channel::bounded(COMMAND_QUEUE);
        let (done_tx, done) = async_channel::bounded(1);
        let generation = NEXT_GENERATION.fetch_add(1, Ordering::Relaxed);
        let _ = join_tx.try_send(join);
        let hubs_ref = self.clone();
        let server = server_id.to_owned();
        let (end_tx, end_rx) = async_channel::bounded(1);
        let started = self.thread.detach(move || async move {
            let mut hub = Hub::new(hubs_ref, server, generation, join_rx, commands_rx);
            hub.ended = end_rx;
            hub.previous = previous;
            hub.done = Some(done_tx);
            hub.run().await
        });
        if !started {
            return Err("internal");
        }
        hubs.insert(
            server_id.to_owned(),
            HubHandle {
                end: end_tx,
                join: join_tx,
                commands: commands_tx.clone(),
                generation,
                done,
            },
        );
        Ok(viewer(commands_tx))
    }

    /// Makes a hub stop taking viewers (closes its `join`), unless (with `if_idle`) a viewer
    /// is waiting to join it. Returns whether it stopped. The hub stays registered until it
    /// has ended ([`Hubs::forget`]): the next hub of the server waits for that.
    fn retire(&self, join: &Receiver<Join>, if_idle: bool) -> bool {
        let _hubs = self.hubs.lock().unwrap_or_else(|e| e.into_inner());
        if if_idle && !join.is_empty() {
            return false;
        }
        join.close();
        true
    }

    /// Ends the console of `server_id`, if there is one (its BMC's configuration changed or it
    /// left the inventory): the hub tells its viewers, deactivates SOL and ends; it takes no
    /// more viewers, so one coming now starts a new hub (with the new configuration), which
    /// waits for this one's session to be gone.
    pub fn end(&self, server_id: &str) {
        if let Some(h) = self
            .hubs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(server_id)
        {
            h.join.close();
            h.end.close();
        }
    }

    /// Stops every console: each hub tells its viewers, deactivates SOL and closes its session.
    /// Returns once all have ended or `within` has passed; true when all ended.
    pub fn shutdown(&self, within: Duration) -> bool {
        self.stop.close();
        let until = Instant::now() + within;
        loop {
            let left = self.hubs.lock().unwrap_or_else(|e| e.into_inner()).len();
            if left == 0 {
                return true;
            }
            if Instant::now() >= until {
                log::warn!("{left} SOL consoles did not end within {within:?}");
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Takes hub `generation` of `server_id` out of the registry (unless a newer hub took its
    /// place already).
    fn forget(&self, server_id: &str, generation: u64) {
        let mut hubs = self.hubs.lock().unwrap_or_else(|e| e.into_inner());
        if hubs
            .get(server_id)
            .is_some_and(|h| h.generation == generation)
        {
            hubs.remove(server_id);
        }
    }
}

/// Why a connection attempt failed: the error type and what the BMC said.
#[derive(Debug)]
struct Failure {
    error_type: &'static str,
    detail: String,
}

impl From<IpmiError> for Failure {
    fn from(e: IpmiError) -> Failure {
        Failure {
            error_type: if sol::in_use(&e) {
                "sol_in_use"
            } else {
                e.kind()
            },
            detail: e.to_string(),
        }
    }
}

/// Opens a session to the BMC of `server_id` and activates its SOL instance, once the
/// previous hub of the server has ended (`previous` closed).
async fn connect(
    fleet: Arc<Fleet>,
    held: Held,
    server_id: String,
    force: bool,
    previous: Option<Receiver<()>>,
) -> Result<SolConsole, Failure> {
    if let Some(previous) = previous {
        if with_timeout(PREDECESSOR_WAIT, previous.recv())
            .await
            .is_none()
        {
            log::warn!("sol {server_id}: the previous console is slow to end");
        }
    }
    let Some(bmc) = fleet.get(&server_id) else {
        return Err(Failure {
            error_type: "unknown_server",
            detail: "no longer in the inventory".into(),
        });
    };
    let Some(ipmi) = bmc.ipmi() else {
        return Err(Failure {
            error_type: "unknown_server",
            detail: "no longer an IPMI server".into(),
        });
    };
    // A payload a previous run of this agent left active (killed, rebooted) is ours to take
    // back: forced, where another tool's would be refused.
    let ours = held.is_held(&server_id);
    if ours && !force {
        log::info!(
            "sol {server_id}: taking back the payload a previous run of this agent left active"
        );
    }
    let conn = ipmi.open_dedicated().await?;
    // Marked before Activate Payload goes out: a crash (or a stop) between the BMC activating
    // it and our hearing so must still leave the payload known as ours.
    held.hold(&server_id);
    let activated = SolConsole::activate_with(
        conn,
        bmc.config.sol_instance,
        SOL_REPLY_TIMEOUT,
        force || ours,
    )
    .await;
    if activated.is_err() && !ours {
        // Not activated for us (a marker a crash left stays: it is still ours to take).
        held.release(&server_id);
    }
    Ok(activated?)
}

/// The failure of an attempt the agent's stop cut short (not counted, not shown).
const STOPPING: &str = "agent_stopping";

/// An agent-generated line for the viewers' terminals (not console output).
fn status_line(text: &str) -> Arc<[u8]> {
    Arc::from(format!("\r\n[conduit: {text}]\r\n").into_bytes())
}

/// What woke the hub up.
enum Event {
    Join(Join),
    Command(Command),
    Tick,
    /// The agent is stopping.
    Stop,
}

/// The state of a hub's link to its BMC.
#[derive(Debug, Clone, Copy)]
enum Link {
    /// The first session is being opened.
    Connecting,
    /// A session is active.
    Up,
    /// Lost, reconnecting; the error type of the last failure.
    Down(&'static str),
}

/// How a live session ended.
enum Served {
    /// No viewer for [`LINGER`]: the hub takes no new viewers.
    Idle,
    /// The link failed; the error type.
    Lost(&'static str),
    /// The agent is stopping.
    Stopping,
}

struct Hub {
    hubs: Arc<Hubs>,
    server_id: String,
    generation: u64,
    join: Receiver<Join>,
    commands: Receiver<Command>,
    seats: Vec<Seat>,
    writer: Option<u64>,
    // A viewer that joined while there was no session asked to take SOL over from another
    // session: the next activation does, once (a console that forced its way in does not
    // fight back when forced out).
    force: bool,
    link: Link,
    metrics: Arc<AgentMetrics>,
    to_viewer: Counter,
    to_bmc: Counter,
    log: Option<SessionLog>,
    log_failing: bool,
    // Closed when the previous hub of the server has ended: the first session waits for it.
    previous: Option<Receiver<()>>,
    // Held for its drop, which closes the channel when this hub has ended.
    done: Option<Sender<()>>,
    // Closed when this hub alone is to end.
    ended: Receiver<()>,
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.hubs.forget(&self.server_id, self.generation);
    }
}

impl Hub {
    fn new(
        hubs: Arc<Hubs>,
        server_id: String,
        generation: u64,
        join: Receiver<Join>,
        commands: Receiver<Command>,
    ) -> Hub {
        let metrics = hubs.fleet.metrics().clone();
        // Resolved once: counting a chunk is one atomic add. (A full family, which these
        // two-series families never are, would leave the bytes uncounted.)
        let counter = |direction| {
            metrics
                .sol_bytes
                .handle(&Direction { direction })
                .unwrap_or_default()
        };
        let (to_viewer, to_bmc) = (counter("bmc_to_viewer"), counter("viewer_to_bmc"));
        let c = &hubs.config;
        let log = c
            .sol_log_dir
            .as_deref()
            .map(|dir| SessionLog::new(dir, &server_id, c.sol_log_max_bytes, c.sol_log_keep));
        Hub {
            server_id,
            generation,
            join,
            commands,
            seats: Vec::new(),
            writer: None,
            force: false,
            link: Link::Connecting,
            to_viewer,
            to_bmc,
            log,
            log_failing: false,
            previous: None,
            done: None,
            // Until `attach` gives it one of its own: only the agent's stop.
            ended: hubs.stopping.clone(),
            metrics,
            hubs,
        }
    }

    async fn run(mut self) {
        let Some(mut sol) = self.first_session().await else {
            return;
        };
        loop {
            self.set_up(true);
            let served = self.serve(&mut sol).await;
            self.set_up(false);
            match served {
                Served::Idle => {
                    sol.deactivate().await;
                    self.hubs.held.release(&self.server_id);
                    return;
                }
                Served::Stopping => {
                    self.announce(if self.hubs.stopping.is_closed() {
                        "the agent is stopping; this console ends"
                    } else {
                        "this server's configuration changed; this console ends (reconnect)"
                    });
                    sol.deactivate().await;
                    self.hubs.held.release(&self.server_id);
                    return;
                }
                Served::Lost(reason) => {
                    // Not ours any more (another session took it, or the BMC dropped it).
                    self.hubs.held.release(&self.server_id);
                    self.error(reason);
                    // Frees the BMC's session slot if it still knows the session (one try).
                    sol.close().await;
                    match self.reconnect(reason).await {
                        Some(s) => sol = s,
                        None => return,
                    }
                }
            }
        }
    }

    /// `agent_sol_sessions_total{server_id}` follows the link.
    fn set_up(&mut self, up: bool) {
        if up {
            self.link = Link::Up;
        }
        let server = ServerId {
            server_id: self.server_id.clone(),
        };
        self.metrics
            .sol_sessions
            .with(&server, |g| if up { g.inc() } else { g.dec() });
    }

    fn error(&self, error_type: &'static str) {
        self.metrics.sol_errors.inc(&ErrorType { error_type });
    }

    /// The first session; on failure every viewer is closed with the error type.
    async fn first_session(&mut self) -> Option<SolConsole> {
        loop {
            // Joins already waiting count before the attempt reads the force flag, and those
            // that arrived while it ran count before its outcome does: the attempt may finish
            // before it serves any join (a quick refusal), and a viewer asking to force must
            // then get a forced attempt, not the refusal.
            self.seat_waiting();
            let force = self.force;
            let attempt = self.attempt(force).await;
            self.seat_waiting();
            let failure = match attempt {
                Ok(sol) => {
                    self.force = false;
                    return Some(sol);
                }
                Err(_) if self.stopping() => return None,
                // A viewer asking to force joined while the attempt ran: once more, forcing.
                Err(f) if f.error_type == "sol_in_use" && self.force && !force => continue,
                Err(f) => f,
            };
            // The hub refuses only once it takes no more joins (closed under the registry's
            // lock): a viewer that joined since the drain above may be asking to force.
            if failure.error_type == "sol_in_use" && !force && !self.hubs.retire(&self.join, true) {
                self.seat_waiting();
                if self.force {
                    continue;
                }
            }
            log::warn!("sol {}: {}", self.server_id, failure.detail);
            self.error(failure.error_type);
            let line = if failure.error_type == "sol_in_use" {
                format!(
                    "SOL on {} is in use by another session; connect with ?force=1 to take it over",
                    self.server_id
                )
            } else {
                format!(
                    "cannot open SOL on {} ({}): {}",
                    self.server_id, failure.error_type, failure.detail
                )
            };
            self.hubs.retire(&self.join, false);
            // Viewers that joined while the attempt ran get the same answer.
            while let Ok(j) = self.join.try_recv() {
                self.seats.push(j.seat);
            }
            let line = status_line(&line);
            let ending = Ending {
                code: 1011,
                reason: failure.error_type,
            };
            for seat in std::mem::take(&mut self.seats) {
                let _ = seat.output.try_send(line.clone());
                let _ = seat.ending.set(ending);
                seat.output.close();
            }
            return None;
        }
    }

    /// Runs a live session until it fails or its viewers are gone.
    async fn serve(&mut self, sol: &mut SolConsole) -> Served {
        let mut alive = Instant::now();
        let mut idle_since: Option<Instant> = None;
        loop {
            self.prune();
            if self.seats.is_empty() {
                let since = *idle_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= LINGER && self.hubs.retire(&self.join, true) {
                    return Served::Idle;
                }
            } else {
                idle_since = None;
            }
            if alive.elapsed() >= KEEPALIVE {
                match sol.check().await {
                    Ok(true) => alive = Instant::now(),
                    Ok(false) => return Served::Lost("sol_deactivated"),
                    Err(e) => return Served::Lost(e.kind()),
                }
            }
            // The hub's own events first: a flood of console output cannot starve them.
            let event = future::or(async { Ok(self.event().await) }, async {
                Err(sol.read(TICK).await)
            })
            .await;
            match event {
                Err(Ok(data)) if data.is_empty() => {}
                Err(Ok(data)) => {
                    alive = Instant::now();
                    self.to_viewer.inc_by(data.len() as u64);
                    self.log(&data);
                    self.fan_out(Arc::from(data));
                }
                Err(Err(e)) => return Served::Lost(e.kind()),
                Ok(Event::Join(j)) => self.seat(j),
                Ok(Event::Command(Command::Input(id, data))) => {
                    if self.writer != Some(id) {
                        self.tell_read_only(id);
                        continue;
                    }
                    // What the BMC accepted, also of a write that failed part way.
                    match sol.write(&data).await {
                        Ok(accepted) => self.to_bmc.inc_by(accepted as u64),
                        Err(e) => {
                            self.to_bmc.inc_by(e.accepted as u64);
                            return Served::Lost(e.error.kind());
                        }
                    };
                    alive = Instant::now();
                }
                Ok(Event::Command(Command::Break(id))) => {
                    if self.writer != Some(id) {
                        self.tell_read_only(id);
                        continue;
                    }
                    if let Err(e) = sol.send_break().await {
                        return Served::Lost(e.kind());
                    }
                    alive = Instant::now();
                }
                Ok(Event::Command(Command::Takeover(id))) => self.give_keyboard(id),
                Ok(Event::Tick) => {}
                Ok(Event::Stop) => return Served::Stopping,
            }
        }
    }

    /// Reconnects with backoff while viewers remain; `None` when they are gone (the hub then
    /// takes no new viewers).
    async fn reconnect(&mut self, reason: &'static str) -> Option<SolConsole> {
        self.link = Link::Down(reason);
        let cap = self.hubs.config.sol_reconnect_max;
        let mut failures = 0;
        let mut delay = reconnect_delay(failures, cap);
        self.announce(&format!(
            "SOL link to {} lost ({reason}); reconnecting in {:.1}s",
            self.server_id,
            delay.as_secs_f64()
        ));
        loop {
            if !self.wait(delay).await {
                return None;
            }
            self.seat_waiting();
            let force = self.force;
            let attempt = self.attempt(force).await;
            let label = |status| Reconnection {
                server_id: self.server_id.clone(),
                status,
            };
            match attempt {
                Ok(sol) => {
                    self.force = false;
                    self.metrics.sol_reconnections.inc(&label("success"));
                    self.announce(&format!(
                        "reconnected to {}; output the host sent while no SOL session was \
                         active was dropped by the BMC",
                        self.server_id
                    ));
                    return Some(sol);
                }
                Err(_) if self.stopping() => return None,
                Err(f) => {
                    self.metrics.sol_reconnections.inc(&label("failure"));
                    log::info!("sol {}: reconnecting: {}", self.server_id, f.detail);
                    failures += 1;
                    delay = reconnect_delay(failures, cap);
                    self.link = Link::Down(f.error_type);
                    self.announce(&format!(
                        "reconnecting to {} failed ({}); next attempt in {:.1}s",
                        self.server_id,
                        f.error_type,
                        delay.as_secs_f64()
                    ));
                }
            }
        }
    }

    /// Serves viewers for `delay`; false when the last one left (the hub is then retired).
    async fn wait(&mut self, delay: Duration) -> bool {
        let until = Instant::now() + delay;
        loop {
            self.prune();
            if self.stopping() || (self.seats.is_empty() && self.hubs.retire(&self.join, true)) {
                return false;
            }
            let now = Instant::now();
            if now >= until {
                return true;
            }
            let tick = (until - now).min(TICK);
            let event = with_timeout(tick, self.event()).await;
            self.offline(event.unwrap_or(Event::Tick));
        }
    }

    /// One connection attempt, serving viewers meanwhile.
    async fn attempt(&mut self, force: bool) -> Result<SolConsole, Failure> {
        let connect = connect(
            self.hubs.fleet.clone(),
            self.hubs.held.clone(),
            self.server_id.clone(),
            force,
            self.previous.take(),
        );
        futures_lite::pin!(connect);
        loop {
            let event = future::or(async { Err(connect.as_mut().await) }, async {
                Ok(future::or(self.event(), async {
                    Timer::after(TICK).await;
                    Event::Tick
                })
                .await)
            })
            .await;
            match event {
                Err(done) => return done,
                // Stopping: the attempt is dropped where it is.
                Ok(Event::Stop) => {
                    return Err(Failure {
                        error_type: STOPPING,
                        detail: "the agent is stopping".into(),
                    })
                }
                Ok(e) => {
                    self.offline(e);
                    self.prune();
                }
            }
        }
    }

    /// Handles an event while there is no session: keystrokes are dropped.
    fn offline(&mut self, event: Event) {
        match event {
            Event::Join(j) => self.seat(j),
            Event::Command(Command::Takeover(id)) => self.give_keyboard(id),
            Event::Command(Command::Input(..) | Command::Break(_)) | Event::Tick | Event::Stop => {}
        }
    }

    /// The next join or command (waits for ever when there are none).
    async fn event(&self) -> Event {
        let stop = async {
            future::or(self.hubs.stopping.recv(), self.ended.recv())
                .await
                .ok();
            Event::Stop
        };
        future::or(
            stop,
            future::or(
                async {
                    match self.join.recv().await {
                        Ok(j) => Event::Join(j),
                        Err(_) => future::pending().await,
                    }
                },
                async {
                    match self.commands.recv().await {
                        Ok(c) => Event::Command(c),
                        Err(_) => future::pending().await,
                    }
                },
            ),
        )
        .await
    }

    fn stopping(&self) -> bool {
        self.hubs.stopping.is_closed() || self.ended.is_closed()
    }

    /// Seats every viewer waiting to join.
    fn seat_waiting(&mut self) {
        while let Ok(j) = self.join.try_recv() {
            self.seat(j);
        }
    }

    fn seat(&mut self, j: Join) {
        // Force is for the next activation, so only while there is no session: kept from a
        // join to a live console, it would make a later reconnect (after another tool took
        // SOL) throw that tool off.
        if !matches!(self.link, Link::Up) {
            self.force |= j.force;
        }
        let id = j.seat.id;
        self.seats.push(j.seat);
        if let Link::Down(reason) = self.link {
            let line = status_line(&format!(
                "SOL link to {} is down ({reason}); reconnecting",
                self.server_id
            ));
            self.send(id, line);
        }
        match self.writer {
            _ if self.seats.last().is_some_and(|s| s.watch) => {}
            None => self.writer = Some(id),
            Some(_) if j.takeover => self.give_keyboard(id),
            Some(_) => {}
        }
    }

    fn give_keyboard(&mut self, id: u64) {
        if self.writer == Some(id) {
            return;
        }
        if !self.seats.iter().any(|s| s.id == id && !s.watch) {
            self.tell_read_only(id); // a watcher asked (or one that left)
            return;
        }
        if let Some(old) = self.writer.replace(id) {
            if let Some(s) = self.seats.iter_mut().find(|s| s.id == old) {
                s.told_read_only = true;
            }
            self.send(
                old,
                status_line("another viewer took the keyboard; your keystrokes are dropped"),
            );
        }
        if let Some(s) = self.seats.iter_mut().find(|s| s.id == id) {
            s.told_read_only = false;
        }
        self.send(id, status_line("you have the keyboard"));
    }

    fn tell_read_only(&mut self, id: u64) {
        let Some(s) = self.seats.iter_mut().find(|s| s.id == id) else {
            return;
        };
        if std::mem::replace(&mut s.told_read_only, true) {
            return;
        }
        let line = if s.watch {
            "read-only: you are watching this console"
        } else {
            "read-only: another viewer has the keyboard; send {\"type\":\"takeover\"} to take it"
        };
        self.send(id, status_line(line));
    }

    /// Drops the seats of viewers that left; the oldest remaining viewer gets the keyboard
    /// if its holder left.
    fn prune(&mut self) {
        self.seats.retain(|s| !s.output.is_closed());
        self.keyboard_to_oldest();
    }

    fn keyboard_to_oldest(&mut self) {
        if self
            .writer
            .is_some_and(|w| self.seats.iter().any(|s| s.id == w))
        {
            return;
        }
        self.writer = self.seats.iter().find(|s| !s.watch).map(|s| s.id);
        if let Some(id) = self.writer {
            self.send(id, status_line("you have the keyboard"));
        }
    }

    /// Queues `data` for every viewer; a viewer whose queue is full is disconnected.
    fn fan_out(&mut self, data: Arc<[u8]>) {
        let metrics = &self.metrics;
        self.seats
            .retain(|s| match s.output.try_send(data.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    too_slow(s, metrics);
                    false
                }
                Err(TrySendError::Closed(_)) => false,
            });
        self.keyboard_to_oldest();
    }

    /// Queues a status line for viewer `id`.
    fn send(&mut self, id: u64, line: Arc<[u8]>) {
        let Some(i) = self.seats.iter().position(|s| s.id == id) else {
            return;
        };
        if let Err(TrySendError::Full(_)) = self.seats[i].output.try_send(line) {
            too_slow(&self.seats[i], &self.metrics);
            self.seats.remove(i);
            self.keyboard_to_oldest();
        }
    }

    /// A status line about the link, for every viewer and the session log.
    fn announce(&mut self, text: &str) {
        log::info!("sol {}: {text}", self.server_id);
        let line = status_line(text);
        self.log(&line);
        self.fan_out(line);
    }

    fn log(&mut self, data: &[u8]) {
        let Some(log) = &mut self.log else { return };
        match log.append(data) {
            Ok(()) => self.log_failing = false,
            Err(e) => {
                self.metrics.sol_errors.inc(&ErrorType {
                    error_type: "log_write",
                });
                if !std::mem::replace(&mut self.log_failing, true) {
                    log::warn!(
                        "sol {}: session log {}: {e}",
                        self.server_id,
                        log.path().display()
                    );
                }
            }
        }
    }
}

/// Ends a viewer that let its queue fill up. Counted unless the viewer's task ended it
/// first (a write to it timed out).
fn too_slow(seat: &Seat, metrics: &AgentMetrics) {
    let ending = Ending {
        code: 1008,
        reason: TOO_SLOW,
    };
    if seat.ending.set(ending).is_ok() {
        metrics.sol_errors.inc(&ErrorType {
            error_type: TOO_SLOW,
        });
    }
    seat.stop.close();
    seat.output.close();
}

#[cfg(test)]
mod tests {
    use super::*;
    use conduit_metrics::catalog::CatalogBuilder;

    fn hubs() -> Arc<Hubs> {
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = Arc::new(AgentMetrics::register(&mut CatalogBuilder::new(
            &mut registry,
            "agent",
            100,
        )));
        let fleet = Arc::new(Fleet::new(None, metrics).unwrap());
        let thread = JobThread::start("sol-consoles", None).unwrap();
        Arc::new(Hubs::new(
            fleet,
            ConsoleConfig::default(),
            thread,
            Held::new(None),
        ))
    }

    fn hub() -> Hub {
        let (_, join) = async_channel::unbounded();
        let (_, commands) = async_channel::bounded(1);
        Hub::new(hubs(), "s1".into(), 1, join, commands)
    }

    /// A viewer's ends of its seat.
    struct Ends {
        id: u64,
        output: Receiver<Arc<[u8]>>,
        stop: Receiver<()>,
        ending: Arc<OnceLock<Ending>>,
    }

    impl Ends {
        fn lines(&self) -> Vec<String> {
            std::iter::from_fn(|| self.output.try_recv().ok())
                .map(|d| String::from_utf8_lossy(&d).trim().to_owned())
                .collect()
        }
    }

    fn join(hub: &mut Hub, id: u64, takeover: bool) -> Ends {
        join_with(hub, id, takeover, false)
    }

    fn join_watching(hub: &mut Hub, id: u64) -> Ends {
        join_seat(hub, id, false, false, true)
    }

    fn join_with(hub: &mut Hub, id: u64, takeover: bool, force: bool) -> Ends {
        join_seat(hub, id, takeover, force, false)
    }

    fn join_seat(hub: &mut Hub, id: u64, takeover: bool, force: bool, watch: bool) -> Ends {
        let (output_tx, output) = async_channel::bounded(VIEWER_QUEUE);
        let (stop_tx, stop) = async_channel::bounded(1);
        let ending = Arc::new(OnceLock::new());
        hub.seat(Join {
            seat: Seat {
                id,
                output: output_tx,
                stop: stop_tx,
                ending: ending.clone(),
                told_read_only: false,
                watch,
            },
            takeover,
            force,
        });
        Ends {
            id,
            output,
            stop,
            ending,
        }
    }

    fn errors(hub: &Hub, error_type: &'static str) -> u64 {
        hub.metrics
            .sol_errors
            .with(&ErrorType { error_type }, |c| c.get())
            .unwrap_or(0)
    }

    #[test]
    fn a_watcher_never_holds_the_keyboard() {
        let mut hub = hub();
        let w = join_watching(&mut hub, 1);
        assert_eq!(hub.writer, None, "the first viewer, but a watcher");
        hub.give_keyboard(w.id);
        assert_eq!(hub.writer, None);
        assert_eq!(
            w.lines(),
            ["[conduit: read-only: you are watching this console]"]
        );
        let o = join(&mut hub, 2, false);
        assert_eq!(hub.writer, Some(o.id), "the first who may type");
        assert!(o.lines().is_empty());
        drop(o);
        hub.prune();
        assert_eq!(hub.writer, None, "not passed to the watcher");
        assert!(w.lines().is_empty());
    }

    #[test]
    fn one_keyboard_taken_over_and_passed_on() {
        let mut hub = hub();
        let a = join(&mut hub, 1, false);
        let b = join(&mut hub, 2, false);
        // The first viewer has the keyboard, silently.
        assert_eq!(hub.writer, Some(a.id));
        assert!(a.lines().is_empty() && b.lines().is_empty());

        // Others are told once that their keystrokes are dropped.
        hub.tell_read_only(b.id);
        hub.tell_read_only(b.id);
        let told = b.lines();
        assert_eq!(told.len(), 1, "{told:?}");
        assert!(told[0].contains("read-only"), "{told:?}");

        hub.give_keyboard(b.id);
        assert_eq!(hub.writer, Some(b.id));
        assert!(a.lines()[0].contains("took the keyboard"));
        assert_eq!(b.lines(), ["[conduit: you have the keyboard]"]);
        // The previous holder was told already.
        hub.tell_read_only(a.id);
        assert!(a.lines().is_empty());

        // Joining with takeover.
        let c = join(&mut hub, 3, true);
        assert_eq!(hub.writer, Some(c.id));
        assert_eq!(c.lines(), ["[conduit: you have the keyboard]"]);
        assert_eq!(b.lines().len(), 1);

        // The holder leaves: the longest-connected viewer gets the keyboard.
        drop(c);
        hub.prune();
        assert_eq!(hub.writer, Some(a.id));
        assert_eq!(a.lines(), ["[conduit: you have the keyboard]"]);
        assert_eq!(hub.seats.len(), 2);
    }

    #[test]
    fn force_is_taken_only_while_there_is_no_session() {
        let mut hub = hub();
        // Joining a live console with force: nothing to force, and nothing kept for later.
        hub.link = Link::Up;
        let _a = join_with(&mut hub, 1, false, true);
        assert!(!hub.force);
        // The link lost (another tool took SOL): nobody asked to force it back.
        hub.link = Link::Down("sol_deactivated");
        let _b = join(&mut hub, 2, false);
        assert!(!hub.force);
        // A viewer asking now: the next attempt forces.
        let _c = join_with(&mut hub, 3, false, true);
        assert!(hub.force);
        // Before the first session too.
        let mut hub = self::hub();
        let _d = join_with(&mut hub, 4, false, true);
        assert!(hub.force);
    }

    #[test]
    fn a_new_hub_activates_only_once_the_retiring_one_has_ended() {
        let hubs = hubs();
        let registered = |hubs: &Hubs| {
            let map = hubs.hubs.lock().unwrap();
            map.get("s1").map(|h| h.generation)
        };
        // A retiring hub of s1: it takes no viewers, its session is still being deactivated.
        let (join, _) = async_channel::unbounded();
        join.close();
        let (commands, _) = async_channel::bounded(1);
        let (done, done_rx) = async_channel::bounded::<()>(1);
        hubs.hubs.lock().unwrap().insert(
            "s1".into(),
            HubHandle {
                join,
                commands,
                generation: 0,
                done: done_rx,
                end: async_channel::bounded(1).0,
            },
        );
        // A viewer arrives (a reloaded browser tab): a new hub takes the old one's place...
        let viewer = hubs.attach("s1", false, false, false).unwrap();
        let generation = registered(&hubs).unwrap();
        assert_ne!(generation, 0);
        // ...and does not try to activate SOL while the old session may still hold it.
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(viewer.ending.get(), None);
        // The old hub ends: now the new one connects (s1 is not in the fleet: it fails so).
        drop(done);
        let ended = (0..100).find_map(|_| {
            std::thread::sleep(Duration::from_millis(50));
            viewer.ending.get().copied()
        });
        assert_eq!(
            ended,
            Some(Ending {
                code: 1011,
                reason: "unknown_server"
            })
        );
        // It left the registry when it ended.
        let gone = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            registered(&hubs).is_none()
        });
        assert!(gone);
    }

    #[test]
    fn a_slow_viewer_is_dropped_and_the_others_keep_everything() {
        let mut hub = hub();
        let slow = join(&mut hub, 1, false);
        let fast = join(&mut hub, 2, false);
        let mut received = Vec::new();
        for i in 0..VIEWER_QUEUE + 1 {
            hub.fan_out(Arc::from(vec![b'a' + (i % 26) as u8; 100]));
            received.extend(fast.lines());
        }
        // Every chunk, and the keyboard that came with the slow viewer's departure.
        assert_eq!(received.len(), VIEWER_QUEUE + 2);
        assert_eq!(
            received[VIEWER_QUEUE + 1],
            "[conduit: you have the keyboard]"
        );
        assert_eq!(
            slow.ending.get(),
            Some(&Ending {
                code: 1008,
                reason: "viewer_too_slow"
            })
        );
        assert!(slow.stop.is_closed() && slow.output.is_closed());
        assert_eq!(errors(&hub, "viewer_too_slow"), 1);
        // The slow one held the keyboard: it moved on.
        assert_eq!(hub.writer, Some(fast.id));
        assert_eq!(hub.seats.len(), 1);
    }

    #[test]
    fn backoff_starts_at_half_a_second_doubles_and_is_capped() {
        let cap = Duration::from_secs(30);
        let delays: Vec<f64> = (0..8)
            .map(|n| reconnect_delay(n, cap).as_secs_f64())
            .collect();
        assert_eq!(delays, [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]);
        // Far past the cap, no overflow.
        assert_eq!(reconnect_delay(u32::MAX, cap), cap);
        assert_eq!(reconnect_delay(40, Duration::MAX), FIRST_RETRY * (1 << 31));
        // A cap under the first delay wins.
        let short = Duration::from_millis(200);
        assert_eq!(reconnect_delay(0, short), short);
        assert_eq!(
            reconnect_delay(3, Duration::from_secs(1)),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn status_lines_stand_on_their_own_line() {
        assert_eq!(
            &*status_line("reconnected"),
            b"\r\n[conduit: reconnected]\r\n"
        );
    }
}

//! The agent as a service: wires the fleet, its API and consoles, the poller, discovery and
//! the watchdog petter onto the shared HTTP stack, and stops them in order.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use conduit_runtime::heartbeat::Heartbeats;
use conduit_service::{ServeArgs, SignalHooks, Stack};

use crate::config::Config;
#[cfg(any(feature = "sol", feature = "vnc"))]
use crate::console::Consoles;
use crate::metrics::AgentMetrics;
use crate::operations::Operations;

/// What SIGHUP needs: the configuration running now and what takes a new one.
struct Reload {
    running: Config,
    fleet: std::sync::Arc<crate::fleet::Fleet>,
    ops: std::sync::Arc<Operations>,
    consoles: Option<std::sync::Arc<Consoles>>,
    discovery: Option<std::sync::Arc<crate::discovery::Discovery>>,
    metrics: std::sync::Arc<AgentMetrics>,
    // One reload at a time; a SIGHUP during one waits for it.
    busy: std::sync::Mutex<()>,
}

impl Reload {
    /// Reads the configuration file again and takes its BMC inventory and secrets: BMCs
    /// that did not change keep their sessions, caches and consoles; changed and removed
    /// ones have their consoles ended, sessions closed and series removed. A file that does
    /// not load changes nothing. (The API token, listen address and limits take a restart.)
    fn run(&self) {
        let _one = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        let path = &self.running.path;
        let next = match Config::load(path) {
            Ok(c) => c,
            Err(e) => {
                log::error!("reload: {e}; still running the configuration loaded before");
                return;
            }
        };
        let r = &self.running;
        let restart_only = [
            ("api_token", next.api_token != r.api_token),
            ("poll_interval_secs", next.poll_interval != r.poll_interval),
            (
                "operation_timeout_secs",
                next.operation_timeout != r.operation_timeout,
            ),
            ("max_operations", next.max_operations != r.max_operations),
            (
                "max_operations_per_server",
                next.max_operations_per_server != r.max_operations_per_server,
            ),
            ("state_dir", next.state_dir != r.state_dir),
            (
                "ipmi_exporter_endpoint",
                next.ipmi_exporter_endpoint != r.ipmi_exporter_endpoint,
            ),
            ("[console]", next.console != r.console),
            (
                "[discovery] (but its inventory)",
                next.discovery != r.discovery,
            ),
            ("watchdog", next.watchdog_device != r.watchdog_device),
        ];
        for (what, changed) in restart_only {
            if changed {
                log::warn!("reload: {what} changed; it takes effect at the next restart");
            }
        }
        let r = match self.fleet.reload(&next) {
            Ok(r) => r,
            Err(e) => {
                log::error!("reload: {e}; still running the configuration loaded before");
                return;
            }
        };
        self.ops
            .set_servers(next.bmcs.iter().map(|b| b.id.as_str()));
        let ended: Vec<String> = r.changed.iter().chain(&r.removed).cloned().collect();
        if let Some(c) = &self.consoles {
            c.end(&ended);
        }
        if let Some(d) = &self.discovery {
            d.set_inventory(&next);
        }
        for id in &ended {
            let health = r.forgotten.iter().find(|(f, _)| f == id).map(|(_, h)| h);
            crate::poller::unpublish_server(&self.metrics, id, health);
        }
        let retired = r.retired.clone();
        futures_lite::future::block_on(conduit_runtime::with_timeout(
            Duration::from_secs(5),
            crate::fleet::retire_all(&retired),
        ));
        log::info!(
            "reloaded {}: {} BMCs; added {:?}, changed {:?}, removed {:?}",
            path.display(),
            next.bmcs.len(),
            r.added,
            r.changed,
            r.removed
        );
    }
}

/// How the uplink opens brokered consoles: tickets from the consoles, spliced to this
/// agent's own listener.
#[cfg(all(feature = "uplink", any(feature = "sol", feature = "vnc")))]
fn console_dial(
    consoles: Option<std::sync::Arc<Consoles>>,
    listening: std::net::SocketAddr,
) -> Option<crate::uplink::ConsoleDial> {
    let consoles = consoles?;
    let mut local = listening;
    if local.ip().is_unspecified() {
        local.set_ip(match local {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    Some(crate::uplink::ConsoleDial {
        ticket: Box::new(move |r| {
            consoles.ticket_path(&r.server_id, &r.console, r.watch, r.takeover)
        }),
        local,
    })
}

#[cfg(all(feature = "uplink", not(any(feature = "sol", feature = "vnc"))))]
fn console_dial(
    _: Option<std::sync::Arc<Consoles>>,
    _: std::net::SocketAddr,
) -> Option<crate::uplink::ConsoleDial> {
    None
}

/// A build without consoles has none to stop.
#[cfg(not(any(feature = "sol", feature = "vnc")))]
struct Consoles;

#[cfg(not(any(feature = "sol", feature = "vnc")))]
impl Consoles {
    fn shutdown(&self, _within: Duration) {}
    fn end(&self, _servers: &[String]) {}
}

/// How long the consoles get to end (viewers told, SOL deactivated) before the HTTP server
/// closes their connections.
const CONSOLES_WITHIN: Duration = Duration::from_millis(2500);

/// SIGTERM to exit: consoles deactivated and BMC sessions closed within this.
const STOP_WITHIN: Duration = Duration::from_millis(4500);

/// Connections kept free of operations and consoles, for scrapes and health probes.
const RESERVED_CONNECTIONS: usize = 16;

/// What the agent serves with, beyond the common flags.
#[derive(Debug)]
pub struct Options {
    /// The configuration, if any (without one the inventory is empty).
    pub config: Option<Config>,
    /// Root of the sysfs/procfs tree board metrics are read from.
    pub board_root: PathBuf,
    /// `--watchdog DEVICE`, over the configuration's `watchdog_device`.
    pub watchdog: Option<PathBuf>,
    /// `--watchdog-interval`, over the configuration's.
    pub watchdog_interval: Option<Duration>,
}

/// Serves with `options` until SIGTERM or SIGINT: the HTTP stack, the fleet's API and
/// consoles, the poller, discovery and the watchdog petter; stops them in reverse order.
pub fn run(serve: ServeArgs, options: Options) -> anyhow::Result<()> {
    let config = options.config.as_ref();
    let agent = &options;
    match config {
        Some(c) => log::info!("{}: {} BMCs configured", c.path.display(), c.bmcs.len()),
        None => log::info!("no configuration file: serving with an empty inventory"),
    }
    let mut fleet = None;
    #[allow(unused_mut)]
    let mut consoles: Option<std::sync::Arc<Consoles>> = None;
    let mut fleet_error: Option<String> = None;
    let mut discovery = None;
    if let Some(c) = config {
        let held = c.max_operations + c.console.max_sessions;
        if held + RESERVED_CONNECTIONS > serve.limits.max_connections {
            log::warn!(
                "--http.max-connections {} leaves fewer than {RESERVED_CONNECTIONS} connections for scrapes and /health when {} operations and {} consoles are open",
                serve.limits.max_connections,
                c.max_operations,
                c.console.max_sessions
            );
        }
    }
    let heartbeats = std::sync::Arc::new(Heartbeats::default());
    let ops = std::sync::Arc::new(
        Operations::start(
            config
                .iter()
                .flat_map(|c| c.bmcs.iter().map(|b| b.id.as_str())),
            config.map_or(64, |c| c.max_operations),
            config.map_or(4, |c| c.max_operations_per_server),
            &heartbeats,
        )
        .map_err(|e| anyhow::anyhow!("start the operations thread: {e}"))?,
    );
    let (stack, metrics) = Stack::build_with_health(
        crate::INFO,
        serve,
        heartbeats.clone(),
        |b| {
            #[cfg(feature = "board")]
            b.collector(Box::new(crate::board::BoardCollector::new(
                agent.board_root.clone(),
            )));
            std::sync::Arc::new(AgentMetrics::register(b))
        },
        |router, metrics| {
            let f = match crate::fleet::Fleet::new(config, metrics.clone()) {
                Ok(f) => std::sync::Arc::new(f),
                Err(e) => {
                    fleet_error = Some(e);
                    return router;
                }
            };
            fleet = Some(f.clone());
            let d = config
                .map(|c| std::sync::Arc::new(crate::discovery::Discovery::new(c, metrics.clone())));
            discovery = d.clone();
            let token = config
                .as_ref()
                .and_then(|c| c.api_token.as_ref())
                .map(|t| std::sync::Arc::from(t.expose()));
            #[cfg(any(feature = "sol", feature = "vnc"))]
            let router = crate::console::routes(
                router,
                f.clone(),
                config
                    .as_ref()
                    .map(|c| c.console.clone())
                    .unwrap_or_default(),
                token.clone(),
                &heartbeats,
                config.map(|c| c.state_dir.as_path()),
            );
            #[cfg(any(feature = "sol", feature = "vnc"))]
            let router = match router {
                Ok((r, c)) => {
                    consoles = Some(std::sync::Arc::new(c));
                    r
                }
                Err(e) => {
                    fleet_error = Some(format!("start the console thread: {e}"));
                    return conduit_http::router::Router::new();
                }
            };
            let router = match config.filter(|c| c.ipmi_exporter_endpoint) {
                Some(_) => router.route(
                    conduit_http::Method::Get,
                    crate::ipmi_exporter::PATH,
                    crate::ipmi_exporter::handler(f.clone()),
                ),
                None => router,
            };
            crate::api::routes(router, f, ops.clone(), d, token)
        },
    );
    if let Some(e) = fleet_error {
        anyhow::bail!(e);
    }
    let server = stack.bind()?;
    // With a configuration the poller runs even with no BMCs yet: a reload may add some.
    let poller = match (config, fleet.clone()) {
        (Some(c), Some(fleet)) => Some(
            crate::poller::start(fleet, metrics.clone(), c.poll_interval, &heartbeats)
                .map_err(|e| anyhow::anyhow!("start the BMC poller: {e}"))?,
        ),
        _ => None,
    };
    let discovering = match discovery.clone() {
        Some(d) => Some(
            crate::discovery::start(d, &heartbeats)
                .map_err(|e| anyhow::anyhow!("start discovery: {e}"))?,
        ),
        None => None,
    };
    #[cfg(feature = "uplink")]
    let uplink = match (config.and_then(|c| c.uplink.clone()), fleet.clone()) {
        (Some(u), Some(fleet)) => Some(crate::uplink::start(
            u,
            fleet.clone(),
            crate::api::Dispatcher::new(fleet, ops.clone()),
            console_dial(consoles.clone(), server.local_addr()?),
            &heartbeats,
        )?),
        _ => None,
    };
    let petter = start_watchdog(agent, config, server.local_addr()?)?;
    let stop_asked = std::sync::Arc::new(std::sync::OnceLock::new());
    let hooks = SignalHooks {
        // Operations in flight are cancelled at once: their callers hear `unavailable` now,
        // and the HTTP server has nothing left to wait for.
        // Then the consoles end while their viewers are still connected: each is told, SOL
        // is deactivated, and only then does the HTTP server close their connections.
        on_stop: Some(Box::new({
            let (ops, asked, consoles) = (ops.clone(), stop_asked.clone(), consoles.clone());
            move || {
                let _ = asked.set(Instant::now());
                ops.cancel();
                if let Some(c) = &consoles {
                    c.shutdown(CONSOLES_WITHIN);
                }
            }
        })),
        // SIGHUP: the BMC inventory and its secrets, from the same file.
        on_reload: match (config, fleet.clone()) {
            (Some(c), Some(fleet)) => {
                let reload = std::sync::Arc::new(Reload {
                    running: c.clone(),
                    fleet,
                    ops: ops.clone(),
                    consoles: consoles.clone(),
                    discovery: discovery.clone(),
                    metrics: metrics.clone(),
                    busy: std::sync::Mutex::new(()),
                });
                // On a thread of its own: a slow BMC closing its session must not keep the
                // signal thread from hearing SIGTERM.
                Some(Box::new(move || {
                    let reload = reload.clone();
                    let spawned = std::thread::Builder::new()
                        .name("reload".into())
                        .spawn(move || reload.run());
                    if let Err(e) = spawned {
                        log::error!("reload: cannot start its thread: {e}");
                    }
                }))
            }
            _ => None,
        },
    };
    let result = stack.run_with(server, hooks);
    // The HTTP server is down (consoles' connections closed). Now, all at once: the consoles
    // deactivate SOL and close their sessions, the poller stops and closes the BMC sessions
    // (IPMI Close Session, Redfish session DELETE), discovery stops. Bounded: SIGTERM to exit
    // in at most STOP_WITHIN, whatever the BMCs do.
    let started = stop_asked.get().copied().unwrap_or_else(Instant::now);
    let left = STOP_WITHIN.saturating_sub(started.elapsed());
    std::thread::scope(|s| {
        if let Some(c) = &consoles {
            s.spawn(move || c.shutdown(left.saturating_sub(Duration::from_millis(500))));
        }
        s.spawn(move || {
            if let Some(p) = poller {
                p.stop();
            }
        });
        s.spawn(move || {
            if let Some(d) = discovering {
                d.stop();
            }
        });
        #[cfg(feature = "uplink")]
        s.spawn(move || {
            if let Some(u) = uplink {
                u.stop(Duration::from_secs(1));
            }
        });
    });
    // Sessions the poller's round did not get to close (a stop mid-round drops it).
    if let Some(f) = &fleet {
        let budget = STOP_WITHIN.saturating_sub(started.elapsed());
        futures_lite::future::block_on(conduit_runtime::with_timeout(budget, f.close_all()));
    }
    stop_watchdog(petter);
    if let Ok(ops) = std::sync::Arc::try_unwrap(ops) {
        ops.stop();
    }
    log::info!(
        "consoles and BMC sessions closed {:.2} s after the stop was asked for",
        started.elapsed().as_secs_f64()
    );
    result
}

/// The watchdog from `--watchdog` (with `--watchdog-interval`), else from the configuration.
#[cfg(feature = "board")]
fn start_watchdog(
    agent: &Options,
    config: Option<&Config>,
    bound: SocketAddr,
) -> anyhow::Result<Option<crate::board::WatchdogPetter>> {
    let Some(device) = agent
        .watchdog
        .clone()
        .or_else(|| config.and_then(|c| c.watchdog_device.clone()))
    else {
        return Ok(None);
    };
    let interval = agent
        .watchdog_interval
        .or(config.map(|c| c.watchdog_interval))
        .unwrap_or(Duration::from_secs(10));
    let health = conduit_http::probe::local_target(bound);
    crate::board::WatchdogPetter::start(&device, health, interval).map(Some)
}

#[cfg(feature = "board")]
fn stop_watchdog(petter: Option<crate::board::WatchdogPetter>) {
    if let Some(p) = petter {
        p.disarm();
    }
}

#[cfg(not(feature = "board"))]
fn start_watchdog(
    agent: &Options,
    config: Option<&Config>,
    _bound: SocketAddr,
) -> anyhow::Result<Option<()>> {
    anyhow::ensure!(
        agent.watchdog.is_none() && config.is_none_or(|c| c.watchdog_device.is_none()),
        "a watchdog needs an agent built with the `board` feature"
    );
    Ok(None)
}

#[cfg(not(feature = "board"))]
fn stop_watchdog(_: Option<()>) {}

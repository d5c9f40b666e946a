//! The gateway's wiring: flags into a configuration, then the HTTP stack (GatewayService,
//! `/metrics`, `/health`, consoles), the `uplinks` executor thread (listener, links, the
//! once-a-second sweep) and the `manager-sync` thread.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use conduit_runtime::heartbeat::Heartbeats;
use conduit_service::{ServeArgs, SignalHooks, Stack};

use crate::agents::{Agents, Policy};
use crate::api::Api;
use crate::audit::Outbox;
use crate::consoles::{Consoles, Limits};
use crate::manager_link::ManagerLink;
use crate::metrics::GatewayMetrics;
use crate::trust::Trust;
use crate::uplink::Uplinks;

/// The gateway's own settings (beside the shared serve flags).
#[derive(Debug, Clone)]
pub struct Config {
    /// The manager's URL.
    pub manager: String,
    /// CA for an https manager.
    pub manager_ca: Option<PathBuf>,
    /// The file holding this gateway's credential (`cgw_…`).
    pub credential_file: PathBuf,
    /// Where agents dial in.
    pub uplink_listen: SocketAddr,
    /// TLS certificate chain and key for uplinks; `None` with `uplink_plaintext`.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Plaintext uplinks (loopback or a trusted VLAN only).
    pub uplink_plaintext: bool,
    /// What users reach this gateway at.
    pub address: Option<String>,
    /// Audit outbox and other state.
    pub state_dir: PathBuf,
    /// Agent timing.
    pub policy: Policy,
    /// How long decisions serve without the manager.
    pub trust_ttl: Duration,
    /// How long a routed operation may take.
    pub operation_timeout: Duration,
    /// Most uplinks at once.
    pub max_agents: usize,
    /// Per-agent families are sized for this many agents.
    pub agent_series_limit: usize,
    /// Console caps and idle timeout.
    pub console_limits: Limits,
    /// Origins (besides the gateway's own) whose pages may open consoles here.
    pub console_origins: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        let hb = Duration::from_secs(10);
        Config {
            manager: "http://127.0.0.1:8080".into(),
            manager_ca: None,
            credential_file: PathBuf::from("gateway.credential"),
            uplink_listen: "0.0.0.0:8443".parse().expect("literal"),
            tls: None,
            uplink_plaintext: false,
            address: None,
            state_dir: PathBuf::from("conduit-gateway-data"),
            policy: Policy {
                heartbeat: hb,
                stale_after: 3 * hb,
                forget_after: Duration::from_secs(600),
            },
            trust_ttl: Duration::from_secs(600),
            operation_timeout: Duration::from_secs(30),
            max_agents: conduit_api::manager::MAX_REPORTED_AGENTS,
            agent_series_limit: crate::metrics::DEFAULT_AGENTS,
            console_limits: Limits::default(),
            console_origins: Vec::new(),
        }
    }
}

/// HTTP connections kept free of consoles.
const RESERVED_CONNECTIONS: usize = 32;

/// Raises the soft open-files limit to fit `agents` uplinks plus `reserve` other descriptors
/// (up to the hard limit): service managers often start processes at 1024, far below what
/// `--max-agents` asks for. Returns how many uplinks fit: fewer than asked when the hard limit
/// is lower, said loudly, so that uplinks can never take the descriptors the HTTP server,
/// the manager calls and the audit outbox need.
fn fit_open_files(agents: usize, reserve: usize) -> usize {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let want = (agents + reserve) as u64;
    let lim = getrlimit(Resource::Nofile);
    let soft = lim.current.unwrap_or(u64::MAX);
    let hard = lim.maximum.unwrap_or(u64::MAX);
    let new = want.min(hard);
    if soft < new {
        let raised = Rlimit {
            current: Some(new),
            maximum: lim.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => log::info!("open files: soft limit raised from {soft} to {new}"),
            Err(e) => log::warn!("open files: raising the soft limit from {soft} to {new}: {e}"),
        }
    }
    let limit = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    let fit = usize::try_from(limit)
        .unwrap_or(usize::MAX)
        .saturating_sub(reserve);
    if fit < agents {
        log::warn!(
            "open files: the limit ({limit}) fits {fit} uplinks, not the {agents} of --max-agents: at most {fit} agents can connect (raise the hard limit, LimitNOFILE=)"
        );
        return fit;
    }
    agents
}

fn read(path: &PathBuf, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("read {what} {}", path.display()))
}

/// Runs the gateway until SIGTERM or SIGINT.
pub fn run(
    info: conduit_service::ComponentInfo,
    args: ServeArgs,
    cfg: Config,
) -> anyhow::Result<()> {
    let credential = String::from_utf8(read(&cfg.credential_file, "--credential-file")?)
        .context("--credential-file is not text")?
        .trim()
        .to_owned();
    let manager_ca = cfg
        .manager_ca
        .as_ref()
        .map(|p| read(p, "--manager-ca"))
        .transpose()?;
    let manager = Arc::new(ManagerLink::new(&cfg.manager, manager_ca, credential)?);
    // Consoles hold HTTP connections for their lifetime: enough must stay free for the API,
    // CloseSession included, and for scrapes.
    let consoles = cfg.console_limits.total;
    anyhow::ensure!(
        consoles + RESERVED_CONNECTIONS <= args.limits.max_connections,
        "--console-max {consoles} leaves fewer than {RESERVED_CONNECTIONS} of the {} HTTP connections (--http.max-connections) for the API and scrapes",
        args.limits.max_connections
    );
    // One descriptor per uplink and per HTTP connection, one per console's data connection,
    // one per registration being checked at the manager, and some for files, listeners and
    // the manager's own calls.
    let max_agents = fit_open_files(
        cfg.max_agents,
        args.limits.max_connections + consoles + crate::uplink::MAX_OPENING + 128,
    );
    let tls = match (&cfg.tls, cfg.uplink_plaintext) {
        (Some((cert, key)), false) => {
            let config = conduit_uplink::tls::server_config(
                &read(cert, "--tls-cert")?,
                &read(key, "--tls-key")?,
            )
            .map_err(|e| anyhow::anyhow!("--tls-cert/--tls-key: {e}"))?;
            Some(conduit_uplink::tls::TlsAcceptor::from(config))
        }
        (None, true) => {
            log::warn!(
                "uplinks in plaintext (--uplink-plaintext): only on loopback or a trusted network"
            );
            None
        }
        (Some(_), true) => anyhow::bail!("--uplink-plaintext and --tls-cert exclude each other"),
        (None, false) => anyhow::bail!(
            "uplinks need --tls-cert and --tls-key (or --uplink-plaintext on a trusted network)"
        ),
    };
    let outbox = Arc::new(Outbox::open(&cfg.state_dir).with_context(|| {
        format!(
            "open the audit outbox in --state-dir {}",
            cfg.state_dir.display()
        )
    })?);
    let listener = std::net::TcpListener::bind(cfg.uplink_listen)
        .with_context(|| format!("listen for uplinks on {}", cfg.uplink_listen))?;
    let uplink_addr = listener.local_addr()?;
    let listener = async_io::Async::new(listener)?;

    let heartbeats = Arc::new(Heartbeats::default());
    let origins = crate::web_origins::WebOrigins::new(cfg.console_origins.clone());
    let mut built = None;
    let (stack, metrics) = Stack::build_with_health(
        info,
        args,
        heartbeats.clone(),
        |b| Arc::new(GatewayMetrics::register_for(b, cfg.agent_series_limit)),
        |router, metrics: &Arc<GatewayMetrics>| {
            let trust = Arc::new(Trust::new(cfg.trust_ttl));
            let agents = Arc::new(Agents::new(metrics.clone(), cfg.policy));
            let api = Arc::new(Api {
                trust: trust.clone(),
                agents: agents.clone(),
                metrics: metrics.clone(),
                outbox: outbox.clone(),
                timeout: cfg.operation_timeout,
            });
            let consoles = Consoles::new(
                trust.clone(),
                agents.clone(),
                metrics.clone(),
                outbox.clone(),
                cfg.console_limits,
                origins.clone(),
            );
            let router = crate::consoles::routes(router, &consoles);
            built = Some((trust, agents, consoles));
            crate::api::routes(router, &api, &origins)
        },
    );
    let (trust, agents, consoles) = built.expect("routes were built");
    let datacenter = Arc::new(RwLock::new(String::new()));
    let stop = Arc::new(AtomicBool::new(false));

    let uplinks = Uplinks::new(
        agents.clone(),
        trust.clone(),
        manager.clone(),
        metrics.clone(),
        tls,
        datacenter.clone(),
        max_agents,
        consoles,
    );
    let sweep_beat = heartbeats.register("uplinks", Duration::from_secs(1));
    std::thread::Builder::new()
        .name("uplinks".into())
        .spawn({
            let agents = agents.clone();
            move || {
                let ex = Arc::new(smol::Executor::new());
                ex.spawn(async move {
                    loop {
                        async_io::Timer::after(Duration::from_secs(1)).await;
                        agents.sweep();
                        sweep_beat.tick();
                    }
                })
                .detach();
                futures_lite::future::block_on(ex.run(uplinks.serve(listener, ex.clone())));
            }
        })
        .context("spawn the uplinks thread")?;
    log::info!(
        "agents dial {}://{uplink_addr}{}",
        if cfg.uplink_plaintext { "ws" } else { "wss" },
        conduit_api::uplink::PATH
    );

    // Bound before registering: the address users are told must be the one listened on
    // (`--listen 127.0.0.1:0` picks a port only here).
    let server = stack.bind()?;
    let address = match &cfg.address {
        Some(a) => a.clone(),
        None => {
            let bound = server.local_addr()?;
            if bound.ip().is_unspecified() {
                // `http://0.0.0.0:P` would send users' tokens to whatever listens on P where
                // they are: better no address than that one.
                log::warn!(
                    "listening on {bound}, an address users cannot dial: give --address with the URL they reach this gateway by (until then the manager sends no one here)"
                );
                String::new()
            } else {
                format!("http://{bound}")
            }
        }
    };
    let sync = crate::sync::Sync {
        manager,
        trust,
        agents,
        outbox,
        datacenter,
        address,
        beat: heartbeats.register("manager-sync", Duration::from_secs(20)),
        stop: stop.clone(),
    };
    std::thread::Builder::new()
        .name("manager-sync".into())
        .spawn(move || sync.run())
        .context("spawn the manager-sync thread")?;

    stack.run_with(
        server,
        SignalHooks {
            on_stop: Some(Box::new(move || {
                stop.store(true, std::sync::atomic::Ordering::Relaxed)
            })),
            on_reload: None,
        },
    )
}

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use conduit_agent::config::Config;
use conduit_agent::metrics::AgentMetrics;
use conduit_service::{self as service, ServeArgs, Stack};

#[global_allocator]
static ALLOC: conduit_metrics::heap::CountingAllocator = conduit_metrics::heap::CountingAllocator;

const INTRO: &str = "\
Usage: conduit-agent [OPTIONS]           Serve /metrics, /health, the API and the consoles
       conduit-agent [OPTIONS] servers   List the configured BMCs
       conduit-agent [OPTIONS] power <status|on|off|cycle|reset|soft|diag> <server>
       conduit-agent [OPTIONS] info <server>
                                         The BMC's identity (IPMI Get Device ID)
       conduit-agent [OPTIONS] sensors <server>
                                         Sensor readings from the BMC's SDR repository
       conduit-agent [OPTIONS] discover  Scan the configured discovery ranges once

The commands talk to the BMCs directly, with the same configuration and code as the service;
they print the result on stdout and exit 0, or print the error and exit 1.
";

const AGENT_FLAGS_HELP: &str =
    "  --config FILE              Agent configuration (TOML; see conduit-agent.example.toml).
                             Default /etc/conduit/agent.toml when it exists; without one the
                             agent serves with an empty inventory
  --board-root PATH          Root of the sysfs/procfs tree board metrics are read from
                             (default /; for tests and containers)
  --watchdog DEVICE          Arm the hardware watchdog DEVICE (e.g. /dev/watchdog) and pet it
                             while the agent is healthy; disarmed on a clean stop (default off;
                             or [agent] watchdog_device in the configuration)
  --watchdog-interval SECS   Petting interval (default 10, or [agent] watchdog_interval_secs;
                             keep it well under the device's timeout)
";

const DEFAULT_CONFIG: &str = "/etc/conduit/agent.toml";

/// The agent's own flags.
#[derive(Debug)]
struct AgentArgs {
    config: Option<PathBuf>,
    #[cfg_attr(not(feature = "board"), allow(dead_code))]
    board_root: PathBuf,
    watchdog: Option<PathBuf>,
    watchdog_interval: Option<Duration>,
}

impl AgentArgs {
    fn parse_flag(&mut self, name: &str, parser: &mut lexopt::Parser) -> anyhow::Result<bool> {
        match name {
            "config" => self.config = Some(service::flag_value(name, parser)?.into()),
            "board-root" => self.board_root = service::flag_value(name, parser)?.into(),
            "watchdog" => self.watchdog = Some(service::flag_value(name, parser)?.into()),
            "watchdog-interval" => {
                self.watchdog_interval =
                    Some(service::parse_secs(&service::flag_value(name, parser)?)?)
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The configuration: the one given, or the default file if present, or none.
    fn load_config(&self) -> anyhow::Result<Option<Config>> {
        let path = match &self.config {
            Some(p) => p.clone(),
            None if std::path::Path::new(DEFAULT_CONFIG).exists() => DEFAULT_CONFIG.into(),
            None => return Ok(None),
        };
        Ok(Some(Config::load(&path)?))
    }
}

fn main() -> ExitCode {
    let info = conduit_agent::INFO;
    let mut agent = AgentArgs {
        config: None,
        board_root: PathBuf::from("/"),
        watchdog: None,
        watchdog_interval: None,
    };
    let usage = service::usage_full(&info, INTRO, AGENT_FLAGS_HELP);
    let (serve, words) = match service::parse_args(&info, &usage, |n, p| agent.parse_flag(n, p)) {
        Ok(parsed) => parsed,
        Err(code) => return code,
    };
    conduit_service::logging::init(info.binary, serve.log_level);
    match words.first().map(String::as_str) {
        None => service::exit_with(run(serve, agent)),
        Some(_) => match cli::command(&words) {
            Ok(cmd) => cli::exit(cli::run(cmd, &agent)),
            Err(msg) => service::usage_error(&info, &msg),
        },
    }
}

mod cli {
    //! The technician's commands, on the same code paths as the service.

    use std::sync::Arc;

    use anyhow::Context;
    use conduit_agent::fleet::{Fleet, PowerAction};
    use conduit_metrics::catalog::CatalogBuilder;

    use super::*;

    pub enum Command {
        Servers,
        Power(Option<PowerAction>, String),
        Info(String),
        Sensors(String),
        Discover,
    }

    pub fn command(words: &[String]) -> Result<Command, String> {
        let w: Vec<&str> = words.iter().map(String::as_str).collect();
        match w.as_slice() {
            ["servers"] => Ok(Command::Servers),
            ["power", "status", server] => Ok(Command::Power(None, server.to_string())),
            ["power", action, server] => PowerAction::parse(action)
                .map(|a| Command::Power(Some(a), server.to_string()))
                .ok_or_else(|| {
                    format!(
                        "unknown power action {action:?}: status, on, off, cycle, reset, soft or diag"
                    )
                }),
            ["power", ..] => Err("usage: power <status|on|off|cycle|reset|soft|diag> <server>".into()),
            ["info", server] => Ok(Command::Info(server.to_string())),
            ["info", ..] => Err("usage: info <server>".into()),
            ["sensors", server] => Ok(Command::Sensors(server.to_string())),
            ["discover"] => Ok(Command::Discover),
            ["sensors", ..] => Err("usage: sensors <server>".into()),
            [other, ..] => Err(format!("unknown command {other:?}")),
            [] => Err("no command".into()),
        }
    }

    pub fn exit(result: anyhow::Result<()>) -> ExitCode {
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("conduit-agent: {e:#}");
                ExitCode::FAILURE
            }
        }
    }

    pub fn run(cmd: Command, agent: &AgentArgs) -> anyhow::Result<()> {
        let config = agent.load_config()?.with_context(|| {
            format!("no configuration: give --config FILE (or create {DEFAULT_CONFIG})")
        })?;
        if let Command::Servers = cmd {
            for b in &config.bmcs {
                println!("{}\t{}\t{}", b.id, b.addr, b.protocol.label());
            }
            return Ok(());
        }
        if let Command::Discover = cmd {
            anyhow::ensure!(
                !config.discovery.ranges.is_empty(),
                "no [discovery] ranges configured"
            );
            let report =
                futures_lite::future::block_on(conduit_agent::discovery::scan(&config.discovery));
            for f in &report.found {
                let port = |p: Option<u16>| p.map_or("-".to_owned(), |p| p.to_string());
                println!(
                    "{}\t{}\tipmi:{}\tredfish:{}\t{}",
                    f.ip,
                    f.bmc_type(),
                    port(f.ipmi_port),
                    port(f.redfish_port),
                    f.vendor
                );
            }
            eprintln!(
                "{} found in {:.2}s",
                report.found.len(),
                report.duration.as_secs_f64()
            );
            return Ok(());
        }
        // The same metrics code runs; a one-shot command has nobody to scrape it.
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = Arc::new(AgentMetrics::register(&mut CatalogBuilder::new(
            &mut registry,
            "agent",
            conduit_metrics::catalog::DEFAULT_SERIES_LIMIT,
        )));
        let fleet = Fleet::new(Some(&config), metrics).map_err(anyhow::Error::msg)?;
        futures_lite::future::block_on(async {
            let result = match cmd {
                Command::Servers | Command::Discover => Ok(()),
                Command::Power(None, server) => fleet.power_status(&server).await.map(|on| {
                    println!("{}", if on { "on" } else { "off" });
                }),
                Command::Power(Some(action), server) => {
                    fleet.power(&server, action).await.map(|()| println!("ok"))
                }
                Command::Info(server) => fleet.identity(&server).await.map(|id| {
                    println!("manufacturer\t{}", id.manufacturer);
                    println!("product\t{}", id.product);
                    println!("firmware\t{}", id.firmware);
                }),
                Command::Sensors(server) => fleet.sensors(&server).await.map(|readings| {
                    for r in readings {
                        let value = r.value.map_or("-".to_owned(), |v| format!("{v}"));
                        println!("{}\t{value}\t{}\t{}", r.name, r.unit, r.state);
                    }
                }),
            };
            fleet.close_all().await;
            result.map_err(anyhow::Error::from)
        })
    }
}

fn run(serve: ServeArgs, agent: AgentArgs) -> anyhow::Result<()> {
    let config = agent.load_config()?;
    match &config {
        Some(c) => log::info!("{}: {} BMCs configured", c.path.display(), c.bmcs.len()),
        None => log::info!("no configuration file: serving with an empty inventory"),
    }
    let mut fleet = None;
    let mut fleet_error: Option<String> = None;
    let mut discovery = None;
    let (stack, metrics) = Stack::build(
        conduit_agent::INFO,
        serve,
        |b| {
            #[cfg(feature = "board")]
            b.collector(Box::new(conduit_agent::board::BoardCollector::new(
                agent.board_root.clone(),
            )));
            std::sync::Arc::new(AgentMetrics::register(b))
        },
        |router, metrics| {
            let f = match conduit_agent::fleet::Fleet::new(config.as_ref(), metrics.clone()) {
                Ok(f) => std::sync::Arc::new(f),
                Err(e) => {
                    fleet_error = Some(e);
                    return router;
                }
            };
            fleet = Some(f.clone());
            let d = config.as_ref().map(|c| {
                std::sync::Arc::new(conduit_agent::discovery::Discovery::new(c, metrics.clone()))
            });
            discovery = d.clone();
            let token = config
                .as_ref()
                .and_then(|c| c.api_token.as_ref())
                .map(|t| std::sync::Arc::from(t.expose()));
            #[cfg(any(feature = "sol", feature = "vnc"))]
            let router = conduit_agent::console::routes(
                router,
                f.clone(),
                config
                    .as_ref()
                    .map(|c| c.console.clone())
                    .unwrap_or_default(),
                token.clone(),
            );
            conduit_agent::api::routes(router, f, d, token)
        },
    );
    if let Some(e) = fleet_error {
        anyhow::bail!(e);
    }
    let server = stack.bind()?;
    let poller = match (&config, fleet) {
        (Some(c), Some(fleet)) if !c.bmcs.is_empty() => Some(
            conduit_agent::poller::start(fleet, metrics.clone(), c.poll_interval)
                .map_err(|e| anyhow::anyhow!("start the BMC poller: {e}"))?,
        ),
        _ => None,
    };
    let discovering = match discovery {
        Some(d) => Some(
            conduit_agent::discovery::start(d)
                .map_err(|e| anyhow::anyhow!("start discovery: {e}"))?,
        ),
        None => None,
    };
    let petter = start_watchdog(&agent, config.as_ref(), server.local_addr()?)?;
    let result = stack.run(server);
    if let Some(p) = poller {
        p.stop();
    }
    if let Some(d) = discovering {
        d.stop();
    }
    stop_watchdog(petter);
    result
}

/// The watchdog from `--watchdog` (with `--watchdog-interval`), else from the configuration.
#[cfg(feature = "board")]
fn start_watchdog(
    agent: &AgentArgs,
    config: Option<&Config>,
    bound: std::net::SocketAddr,
) -> anyhow::Result<Option<conduit_agent::board::WatchdogPetter>> {
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
    conduit_agent::board::WatchdogPetter::start(&device, health, interval).map(Some)
}

#[cfg(feature = "board")]
fn stop_watchdog(petter: Option<conduit_agent::board::WatchdogPetter>) {
    if let Some(p) = petter {
        p.disarm();
    }
}

#[cfg(not(feature = "board"))]
fn start_watchdog(
    agent: &AgentArgs,
    config: Option<&Config>,
    _bound: std::net::SocketAddr,
) -> anyhow::Result<Option<()>> {
    anyhow::ensure!(
        agent.watchdog.is_none() && config.is_none_or(|c| c.watchdog_device.is_none()),
        "a watchdog needs an agent built with the `board` feature"
    );
    Ok(None)
}

#[cfg(not(feature = "board"))]
fn stop_watchdog(_: Option<()>) {}

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use conduit_agent::metrics::AgentMetrics;
use conduit_http::service::{self, ServeArgs, Stack};

#[global_allocator]
static ALLOC: conduit_http::heap::CountingAllocator = conduit_http::heap::CountingAllocator;

const AGENT_FLAGS_HELP: &str = "\
  --board-root PATH          Root of the sysfs/procfs tree board metrics are read from
                             (default /; for tests and containers)
  --watchdog DEVICE          Arm the hardware watchdog DEVICE (e.g. /dev/watchdog) and pet it
                             while the agent is healthy; disarmed on a clean stop (default off)
  --watchdog-interval SECS   Petting interval (default 10; keep it well under the device's
                             timeout)
";

/// The agent's own flags.
#[derive(Debug)]
struct AgentArgs {
    #[cfg_attr(not(feature = "board"), allow(dead_code))]
    board_root: PathBuf,
    watchdog: Option<PathBuf>,
    watchdog_interval: Duration,
}

impl AgentArgs {
    fn parse_flag(&mut self, name: &str, parser: &mut lexopt::Parser) -> anyhow::Result<bool> {
        match name {
            "board-root" => self.board_root = service::flag_value(name, parser)?.into(),
            "watchdog" => self.watchdog = Some(service::flag_value(name, parser)?.into()),
            "watchdog-interval" => {
                self.watchdog_interval = service::parse_secs(&service::flag_value(name, parser)?)?
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

fn main() -> ExitCode {
    let info = conduit_agent::INFO;
    let mut agent = AgentArgs {
        board_root: PathBuf::from("/"),
        watchdog: None,
        watchdog_interval: Duration::from_secs(10),
    };
    let serve = match service::parse_args(&info, AGENT_FLAGS_HELP, |n, p| agent.parse_flag(n, p)) {
        Ok(s) => s,
        Err(code) => return code,
    };
    conduit_http::logging::init(info.binary, serve.log_level);
    service::exit_with(run(serve, agent))
}

fn run(serve: ServeArgs, agent: AgentArgs) -> anyhow::Result<()> {
    let (stack, _metrics) = Stack::build(
        conduit_agent::INFO,
        serve,
        |b| {
            #[cfg(feature = "board")]
            b.collector(Box::new(conduit_agent::board::BoardCollector::new(
                agent.board_root.clone(),
            )));
            AgentMetrics::register(b)
        },
        |router, _| router,
    );
    let server = stack.bind()?;
    let petter = start_watchdog(&agent, server.local_addr()?)?;
    let result = stack.run(server);
    stop_watchdog(petter);
    result
}

#[cfg(feature = "board")]
fn start_watchdog(
    agent: &AgentArgs,
    bound: std::net::SocketAddr,
) -> anyhow::Result<Option<conduit_agent::board::WatchdogPetter>> {
    let Some(device) = &agent.watchdog else {
        return Ok(None);
    };
    let health = conduit_http::http::client::local_target(bound);
    conduit_agent::board::WatchdogPetter::start(device, health, agent.watchdog_interval).map(Some)
}

#[cfg(feature = "board")]
fn stop_watchdog(petter: Option<conduit_agent::board::WatchdogPetter>) {
    if let Some(p) = petter {
        p.disarm();
    }
}

#[cfg(not(feature = "board"))]
fn start_watchdog(agent: &AgentArgs, _bound: std::net::SocketAddr) -> anyhow::Result<Option<()>> {
    anyhow::ensure!(
        agent.watchdog.is_none(),
        "--watchdog needs an agent built with the `board` feature"
    );
    Ok(None)
}

#[cfg(not(feature = "board"))]
fn stop_watchdog(_: Option<()>) {}

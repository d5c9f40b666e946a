use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use conduit_agent::cli;
use conduit_agent::config::Config;
use conduit_service as service;

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
       conduit-agent [OPTIONS] boot <server> [pxe|disk|cdrom|bios [--persistent]]
                                         Show the boot device override, or set one (next
                                         boot only unless --persistent)
       conduit-agent [OPTIONS] events <server> [clear --yes]
                                         The BMC's event log (IPMI SEL, Redfish log
                                         services); `clear --yes` empties it
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

    /// The configuration, which the technician's commands cannot do without.
    fn require_config(&self) -> anyhow::Result<Config> {
        self.load_config()?.with_context(|| {
            format!("no configuration: give --config FILE (or create {DEFAULT_CONFIG})")
        })
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
        None => service::exit_with(agent.load_config().and_then(|config| {
            conduit_agent::serve::run(
                serve,
                conduit_agent::serve::Options {
                    config,
                    board_root: agent.board_root,
                    watchdog: agent.watchdog,
                    watchdog_interval: agent.watchdog_interval,
                },
            )
        })),
        Some(_) => match cli::command(&words) {
            Ok(cmd) => cli::exit(agent.require_config().and_then(|c| cli::run(cmd, &c))),
            Err(msg) => service::usage_error(&info, &msg),
        },
    }
}

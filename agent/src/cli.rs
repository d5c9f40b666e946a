//! The technician's commands (`conduit-agent servers|power|info|sensors|boot|events|discover`),
//! on the same
//! code paths as the service: a [`Fleet`] over the configured BMCs, its operations and metrics.

use crate::fleet::{BootDevice, Fleet, PowerAction};
use conduit_metrics::catalog::CatalogBuilder;
use std::process::ExitCode;
use std::sync::Arc;

use crate::config::Config;
use crate::metrics::AgentMetrics;

/// A technician's command.
#[derive(Debug)]
pub enum Command {
    Servers,
    Power(Option<PowerAction>, String),
    Info(String),
    Sensors(String),
    Discover,
    /// Show the boot override, or set one (device, persistent).
    Boot(String, Option<(BootDevice, bool)>),
    /// Read the event log.
    Events(String),
    /// Clear the event log (`--yes` given).
    ClearEvents(String),
}

const BOOT_USAGE: &str = "usage: boot <server> [pxe|disk|cdrom|bios [--persistent]]";

/// Parses the words after the flags.
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
        ["boot", server] => Ok(Command::Boot(server.to_string(), None)),
        ["boot", server, device, rest @ ..] if rest.len() <= 1 => {
            let persistent = match rest {
                [] => false,
                ["--persistent"] => true,
                _ => return Err(BOOT_USAGE.into()),
            };
            let d = BootDevice::parse(device).ok_or_else(|| {
                format!("unknown boot device {device:?}: pxe, disk, cdrom or bios")
            })?;
            Ok(Command::Boot(server.to_string(), Some((d, persistent))))
        }
        ["boot", ..] => Err(BOOT_USAGE.into()),
        ["events", server] => Ok(Command::Events(server.to_string())),
        ["events", server, "clear", "--yes"] => Ok(Command::ClearEvents(server.to_string())),
        ["events", _, "clear"] => {
            Err("clearing the event log cannot be undone: add --yes to do it".into())
        }
        ["events", ..] => Err("usage: events <server> [clear --yes]".into()),
        ["sensors", ..] => Err("usage: sensors <server>".into()),
        [other, ..] => Err(format!("unknown command {other:?}")),
        [] => Err("no command".into()),
    }
}

/// The exit code of a command: its error printed once, with its context chain.
pub fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("conduit-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `cmd` with `config` (the binary loads it, and refuses to go on without one).
pub fn run(cmd: Command, config: &Config) -> anyhow::Result<()> {
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
        let report = futures_lite::future::block_on(crate::discovery::scan(&config.discovery));
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
    let fleet = Fleet::new(Some(config), metrics).map_err(anyhow::Error::msg)?;
    futures_lite::future::block_on(async {
        let result = match cmd {
            Command::Servers | Command::Discover => Ok(()),
            Command::Power(None, server) => fleet.power_status(&server).await.map(|on| {
                println!("{}", if on { "on" } else { "off" });
            }),
            Command::Power(Some(action), server) => {
                fleet.power(&server, action).await.map(|()| println!("ok"))
            }
            Command::Info(server) => fleet.status(&server).await.map(|s| {
                let id = s.identity.unwrap_or_default();
                println!("manufacturer\t{}", id.manufacturer);
                println!("product\t{}", id.product);
                println!("firmware\t{}", id.firmware);
            }),
            Command::Boot(server, set) => {
                let set = match set {
                    Some((device, persistent)) => fleet.set_boot(&server, device, persistent).await,
                    None => Ok(()),
                };
                // What the BMC holds now (after a change: what took).
                match set {
                    Ok(()) => fleet.boot(&server).await.map(|b| {
                        let lasts = if b.persistent {
                            "persistent"
                        } else {
                            "next boot"
                        };
                        println!("{}\t{lasts}", b.device);
                    }),
                    Err(e) => Err(e),
                }
            }
            Command::Events(server) => fleet.events(&server).await.map(|log| {
                for e in &log.events {
                    let when = e.time.map_or("-".to_owned(), |t| {
                        conduit_service::logging::utc_timestamp(
                            std::time::UNIX_EPOCH + std::time::Duration::from_secs_f64(t),
                        )
                    });
                    println!(
                        "{}\t{when}\t{}\t{}\t{}",
                        e.id, e.severity, e.sensor, e.event
                    );
                }
                if !log.complete {
                    eprintln!("(the log is longer than the agent reads at once: oldest shown)");
                }
            }),
            Command::ClearEvents(server) => fleet
                .clear_events(&server)
                .await
                .map(|()| println!("cleared")),
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

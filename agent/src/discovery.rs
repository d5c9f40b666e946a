//! Discovery: a periodic cycle (also once at start) that counts the static inventory and scans
//! the configured IPv4 ranges for BMCs: an RMCP/ASF presence ping on the IPMI ports and
//! `GET /redfish/v1` on the Redfish ports. It never sends to an address outside the ranges.
//!
//! The IPMI sweep uses one UDP socket for the whole range (pings out, pongs matched by source),
//! so a /24 whose addresses silently drop packets costs one probe timeout, not 256. Redfish
//! probes connect asynchronously under a concurrency bound and only then ask over HTTPS
//! (without credentials; the certificate is not checked: discovery identifies, it does not
//! trust). Vendors come from the service root (Redfish) or the OEM IANA number of Get Channel
//! Authentication Capabilities (IPMI, session-less).

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_lite::future;

use crate::config::{Config, DiscoveryConfig, Protocol};
use crate::metrics::{AgentMetrics, BmcType};
use conduit_metrics::labels::{ErrorType, Status};
use conduit_runtime::heartbeat::{Heartbeat, Heartbeats};
use conduit_runtime::{every, Background};

#[cfg(feature = "ipmi")]
mod ipmi_sweep;

/// A BMC found by a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Its address.
    pub ip: Ipv4Addr,
    /// The UDP port that answered the presence ping.
    pub ipmi_port: Option<u16>,
    /// The TCP port that served `/redfish/v1`.
    pub redfish_port: Option<u16>,
    /// Vendor, when the BMC says (`unknown` otherwise).
    pub vendor: String,
}

impl Found {
    /// `ipmi`, `redfish` or `both`.
    pub fn bmc_type(&self) -> &'static str {
        match (self.ipmi_port.is_some(), self.redfish_port.is_some()) {
            (true, true) => "both",
            (false, true) => "redfish",
            _ => "ipmi",
        }
    }
}

/// The outcome of one cycle.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// BMCs found in the ranges, by address.
    pub found: Vec<Found>,
    /// Problems met (error types, one per occurrence).
    pub errors: Vec<&'static str>,
    /// How long the cycle took.
    pub duration: Duration,
}

/// The finding for `addr`'s IP, created empty on first sight (ranges are IPv4).
fn entry(by_ip: &mut BTreeMap<Ipv4Addr, Found>, addr: SocketAddr) -> Option<&mut Found> {
    match addr.ip() {
        IpAddr::V4(ip) => Some(by_ip.entry(ip).or_insert_with(|| Found {
            ip,
            ipmi_port: None,
            redfish_port: None,
            vendor: "unknown".into(),
        })),
        IpAddr::V6(_) => None,
    }
}

/// Scans the configured ranges once.
pub async fn scan(cfg: &DiscoveryConfig) -> Report {
    scan_beating(cfg, None).await
}

/// [`scan`], ticking `beat` as probes complete: a long sweep that progresses stays healthy.
async fn scan_beating(cfg: &DiscoveryConfig, beat: Option<&Heartbeat>) -> Report {
    let start = Instant::now();
    let mut errors = Vec::new();
    let in_range = |ip: Ipv4Addr| cfg.ranges.iter().any(|r| r.contains(ip));
    let addresses: Vec<Ipv4Addr> = cfg
        .ranges
        .iter()
        .flat_map(|r| r.addresses())
        .filter(|ip| in_range(*ip)) // never anything else, whatever the code above does
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let ipmi_targets: Vec<SocketAddr> = addresses
        .iter()
        .flat_map(|ip| {
            cfg.ipmi_ports
                .iter()
                .map(move |p| SocketAddr::from((*ip, *p)))
        })
        .collect();
    #[cfg(feature = "ipmi")]
    let ipmi = ipmi_sweep::sweep(&ipmi_targets, cfg.probe_timeout, &mut errors, beat).await;
    // An agent without IPMI does not ping: nothing answers.
    #[cfg(not(feature = "ipmi"))]
    let ipmi: Vec<(SocketAddr, String)> = {
        let _ = ipmi_targets;
        Vec::new()
    };

    let permits = Arc::new(async_lock::Semaphore::new(cfg.concurrency.max(1)));
    let ex = smol::LocalExecutor::new();
    let redfish_results = ex
        .run(async {
            let tasks: Vec<_> = addresses
                .iter()
                .flat_map(|ip| {
                    cfg.redfish_ports
                        .iter()
                        .map(move |p| SocketAddr::from((*ip, *p)))
                })
                .map(|addr| {
                    let permits = permits.clone();
                    let timeout = cfg.probe_timeout;
                    ex.spawn(async move {
                        let _permit = permits.acquire().await;
                        (addr, crate::probe::redfish(addr, timeout).await)
                    })
                })
                .collect();
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await);
                if let Some(b) = beat {
                    b.tick();
                }
            }
            out
        })
        .await;

    let mut by_ip: BTreeMap<Ipv4Addr, Found> = BTreeMap::new();
    for (addr, vendor) in ipmi {
        if let Some(f) = entry(&mut by_ip, addr) {
            f.ipmi_port.get_or_insert(addr.port());
            if f.vendor == "unknown" {
                f.vendor = vendor;
            }
        }
    }
    for (addr, result) in redfish_results {
        match result {
            Ok(Some(vendor)) => {
                if let Some(f) = entry(&mut by_ip, addr) {
                    f.redfish_port.get_or_insert(addr.port());
                    if vendor != "unknown" {
                        f.vendor = vendor;
                    }
                }
            }
            Ok(None) => {}
            Err(kind) => errors.push(kind),
        }
    }
    // A fixed-capacity table: a flood of BMCs cannot grow memory without bound.
    let mut found: Vec<Found> = by_ip.into_values().collect();
    if found.len() > cfg.max_bmcs {
        log::warn!(
            "discovery: {} BMCs found, keeping the first {} (discovery.max_bmcs)",
            found.len(),
            cfg.max_bmcs
        );
        errors.extend(std::iter::repeat_n(
            "table_full",
            found.len() - cfg.max_bmcs,
        ));
        found.truncate(cfg.max_bmcs);
    }
    Report {
        found,
        errors,
        duration: start.elapsed(),
    }
}

/// The configured BMCs by address and type (auto BMCs have no type until a scan tells).
fn inventory(config: &Config) -> Vec<(IpAddr, &'static str)> {
    config
        .bmcs
        .iter()
        .filter_map(|b| match b.protocol {
            Protocol::Ipmi => Some((b.addr.ip(), "ipmi")),
            Protocol::Redfish => Some((b.addr.ip(), "redfish")),
            Protocol::Auto => None,
        })
        .collect()
}

/// Runs discovery cycles and publishes their metrics; keeps the last result.
#[derive(Debug)]
pub struct Discovery {
    cfg: DiscoveryConfig,
    // The inventory: address and configured type (replaced on reload).
    inventory: Mutex<Vec<(IpAddr, &'static str)>>,
    metrics: Arc<AgentMetrics>,
    last: Mutex<Vec<Found>>,
}

impl Discovery {
    /// Discovery for `config`.
    pub fn new(config: &Config, metrics: Arc<AgentMetrics>) -> Discovery {
        Discovery {
            cfg: config.discovery.clone(),
            inventory: Mutex::new(inventory(config)),
            metrics,
            last: Mutex::new(Vec::new()),
        }
    }

    /// Counts `config`'s inventory from the next cycle on (a reload; the ranges stay).
    pub fn set_inventory(&self, config: &Config) {
        *self.inventory.lock().unwrap_or_else(|e| e.into_inner()) = inventory(config);
    }

    /// BMCs found by the last cycle.
    pub fn last(&self) -> Vec<Found> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// One cycle: scan, then publish `agent_discovery_*` and `agent_servers_discovered`.
    pub async fn cycle(&self) -> Report {
        self.cycle_beating(None).await
    }

    async fn cycle_beating(&self, beat: Option<&Heartbeat>) -> Report {
        let report = scan_beating(&self.cfg, beat).await;
        let m = &self.metrics;
        m.discovery_duration.observe(report.duration.as_secs_f64());
        for e in &report.errors {
            m.discovery_errors.inc(&ErrorType { error_type: e });
        }
        // Every BMC known: each inventory entry as configured, plus what the scan found at
        // addresses the inventory does not name.
        let inventory = self
            .inventory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let configured: HashSet<IpAddr> = inventory.iter().map(|(ip, _)| *ip).collect();
        let types = inventory.iter().map(|(_, t)| *t).chain(
            report
                .found
                .iter()
                .filter(|f| !configured.contains(&IpAddr::V4(f.ip)))
                .map(Found::bmc_type),
        );
        let mut counts: BTreeMap<&'static str, i64> =
            [("ipmi", 0), ("redfish", 0), ("both", 0)].into();
        for t in types {
            *counts.entry(t).or_default() += 1;
        }
        for (t, n) in counts {
            m.servers_discovered
                .with(&BmcType { bmc_type: t }, |g| g.set(n));
        }
        log::info!(
            "discovery: {} BMCs found in {} ranges in {:.2}s ({} problems)",
            report.found.len(),
            self.cfg.ranges.len(),
            report.duration.as_secs_f64(),
            report.errors.len()
        );
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = report.found.clone();
        // Counted last: a scrape that sees the cycle also sees what it found.
        let status = if report.errors.is_empty() {
            "success"
        } else {
            "partial"
        };
        m.discovery_cycles.inc(&Status { status });
        report
    }
}

/// Runs a discovery cycle now and then every configured interval, on the `discovery` thread.
/// Its heartbeat expects a probe to complete at least every two probe timeouts.
pub fn start(discovery: Arc<Discovery>, heartbeats: &Heartbeats) -> std::io::Result<Background> {
    let interval = discovery.cfg.interval;
    let beat = heartbeats.register("discovery", discovery.cfg.probe_timeout * 2);
    Background::spawn("discovery", move |stopped| {
        future::block_on(every(interval, &stopped, &beat, || async {
            discovery.cycle_beating(Some(&beat)).await;
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_and_vendors() {
        let f = |i: Option<u16>, r: Option<u16>| Found {
            ip: Ipv4Addr::LOCALHOST,
            ipmi_port: i,
            redfish_port: r,
            vendor: String::new(),
        };
        assert_eq!(f(Some(623), None).bmc_type(), "ipmi");
        assert_eq!(f(None, Some(443)).bmc_type(), "redfish");
        assert_eq!(f(Some(623), Some(443)).bmc_type(), "both");
    }
}

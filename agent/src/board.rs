//! The appliance itself in the agent's metrics, and its hardware watchdog.
//!
//! `agent_board_info{model,board}` (value 1) and `agent_board_temperature_celsius{zone}` are
//! read from sysfs/procfs at scrape time (cheap local reads); the watchdog is petted from a
//! thread only while the agent's own `/health` answers, so a hung agent gets the box rebooted.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use board::identity::Identity;
use board::thermal::ThermalZone;
use board::watchdog::Watchdog;
use conduit_metrics::labels::sanitize_value;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

/// Scrape-time board metrics for the board under `root` (`/` on the box).
#[derive(Debug, Clone)]
pub struct BoardCollector {
    root: PathBuf,
    identity: Identity,
}

impl BoardCollector {
    /// Reads the identity once (it does not change while running); zones are read per scrape.
    pub fn new(root: PathBuf) -> Self {
        let identity = Identity::read(&root);
        BoardCollector { root, identity }
    }
}

impl Collector for BoardCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Firmware strings are untrusted: sanitized, and there is one series either way.
        let model = sanitize_value(self.identity.model.as_deref().unwrap_or(""));
        let board = sanitize_value(self.identity.board.as_deref().unwrap_or(""));
        let mut info = encoder.encode_descriptor(
            "board_info",
            "Appliance board identity (value 1).",
            None,
            MetricType::Gauge,
        )?;
        let labels = [("model", model.as_str()), ("board", board.as_str())];
        ConstGauge::new(1i64).encode(info.encode_family(&labels)?)?;

        let mut temp = encoder.encode_descriptor(
            "board_temperature_celsius",
            "Appliance thermal zone temperature in degrees Celsius.",
            None,
            MetricType::Gauge,
        )?;
        for zone in ThermalZone::discover(&self.root) {
            // A zone that cannot be read right now is left out of this scrape.
            if let Ok(c) = zone.celsius() {
                let label = sanitize_value(zone.label());
                ConstGauge::new(c).encode(temp.encode_family(&[("zone", label.as_str())])?)?;
            }
        }
        Ok(())
    }
}

/// The thread petting the hardware watchdog.
#[derive(Debug)]
pub struct WatchdogPetter {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl WatchdogPetter {
    /// Opens (arms) `device` and pets it every `interval` while `GET /health` on `health`
    /// answers 200 within half the interval.
    pub fn start(
        device: &std::path::Path,
        health: SocketAddr,
        interval: Duration,
    ) -> anyhow::Result<Self> {
        let mut wd = Watchdog::open(device)?;
        wd.pet()
            .map_err(|e| anyhow::anyhow!("pet watchdog {}: {e}", device.display()))?;
        log::info!(
            "hardware watchdog {} armed; petting every {interval:?}",
            device.display()
        );
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || {
                let mut healthy = true;
                while !stop2.load(Ordering::Relaxed) {
                    std::thread::sleep(interval);
                    if stop2.load(Ordering::Relaxed) {
                        break;
                    }
                    let ok = conduit_http::probe::get_status(health, "/health", interval / 2)
                        == Some(200);
                    if ok {
                        if let Err(e) = wd.pet() {
                            log::error!("pet watchdog {}: {e}", wd.path().display());
                        }
                    } else if healthy {
                        log::error!(
                            "agent /health does not answer: no longer petting the watchdog"
                        );
                    }
                    healthy = ok;
                }
                let path = wd.path().display().to_string();
                match wd.disarm() {
                    Ok(()) => log::info!("hardware watchdog {path} disarmed"),
                    Err(e) => log::error!("disarm watchdog {path}: {e}"),
                }
            })?;
        Ok(WatchdogPetter {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops petting and disarms the watchdog (magic close), for a clean shutdown.
    pub fn disarm(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    fn temp_file(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("conduit-wd-{tag}-{}", std::process::id()));
        std::fs::write(&p, b"").unwrap();
        p
    }

    /// A /health server that answers 200, or accepts and never answers.
    fn health_server(answer: bool) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for s in l.incoming().flatten() {
                let mut s = s;
                if answer {
                    let mut buf = [0u8; 512];
                    let _ = s.read(&mut buf);
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
                } else {
                    held.push(s);
                }
            }
        });
        addr
    }

    #[test]
    fn pets_while_healthy_and_disarms_on_stop() {
        let dev = temp_file("healthy");
        let p =
            WatchdogPetter::start(&dev, health_server(true), Duration::from_millis(50)).unwrap();
        std::thread::sleep(Duration::from_millis(400));
        p.disarm();
        let written = std::fs::read(&dev).unwrap();
        std::fs::remove_file(&dev).unwrap();
        let pets = written.iter().filter(|&&b| b == 0).count();
        assert!(pets >= 4, "{written:?}");
        assert_eq!(written.last(), Some(&b'V'));
    }

    #[test]
    fn stops_petting_when_health_hangs() {
        let dev = temp_file("hung");
        let p =
            WatchdogPetter::start(&dev, health_server(false), Duration::from_millis(50)).unwrap();
        std::thread::sleep(Duration::from_millis(400));
        p.disarm();
        let written = std::fs::read(&dev).unwrap();
        std::fs::remove_file(&dev).unwrap();
        // Only the pet at arming time, then the magic close.
        assert_eq!(written, b"\0V");
    }
}

//! A real Prometheus server (Debian's 2.42) scraping given targets every second, and its
//! query API.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use crate::{free_port, get, start_until, tool, urlencode, Running, TempDir};

/// A running Prometheus.
#[derive(Debug)]
pub struct Prometheus {
    /// The process (its log explains a failed wait).
    pub proc: Running,
    /// Its HTTP API.
    pub addr: SocketAddr,
    _dir: TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping each `(job, target)` every second.
    pub fn start(jobs: &[(&str, SocketAddr)]) -> Prometheus {
        let dir = TempDir::new("prometheus");
        let mut config =
            String::from("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n");
        for (job, target) in jobs {
            config.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']\n"
            ));
        }
        let config_path = dir.0.join("prometheus.yml");
        std::fs::write(&config_path, config).expect("prometheus.yml");
        let port = free_port();
        let mut cmd = Command::new(tool("prometheus"));
        cmd.arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.0.join("data").display()
            ))
            .arg("--web.enable-lifecycle");
        let (proc, ()) = start_until("prometheus", cmd, Duration::from_secs(30), |line| {
            line.contains("Server is ready to receive web requests")
                .then_some(())
        });
        Prometheus {
            proc,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            _dir: dir,
        }
    }

    /// The result vector of an instant query (empty on any error).
    pub fn query(&self, q: &str) -> Vec<serde_json::Value> {
        let resp = get(
            self.addr,
            &format!("/api/v1/query?query={}", urlencode(q)),
            &[],
        );
        if resp.status != 200 {
            return Vec::new();
        }
        let v: serde_json::Value = serde_json::from_slice(&resp.body).unwrap_or_default();
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// The value of a query's single sample, if it has exactly one.
    pub fn value(&self, q: &str) -> Option<f64> {
        match self.query(q).as_slice() {
            [one] => one["value"][1].as_str()?.parse().ok(),
            _ => None,
        }
    }

    /// Waits until every job's `up` is 1 (the first scrape lands about 5.7 s after start:
    /// reloads are throttled to 5 s); panics with the targets page and the log otherwise.
    pub fn wait_all_up(&self, jobs: usize, within: Duration) -> Vec<serde_json::Value> {
        let up = crate::wait_for(within, Duration::from_millis(500), || {
            let r = self.query("up == 1");
            (r.len() == jobs).then_some(r)
        });
        up.unwrap_or_else(|| {
            let targets = get(self.addr, "/api/v1/targets", &[]).text();
            panic!(
                "not all {jobs} jobs up within {within:?}; targets: {targets}\nlog:\n{}",
                self.proc.log()
            )
        })
    }
}

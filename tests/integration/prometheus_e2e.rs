//! A real Prometheus server (Debian's 2.42, which asks for OpenMetrics first, with gzip)
//! scrapes all three binaries.

use std::process::Command;
use std::time::Duration;

use conduit_tests::{
    get, start_component, start_until, tool, urlencode, wait_for, Component, TempDir,
};

fn query(prom: std::net::SocketAddr, q: &str) -> Vec<serde_json::Value> {
    let resp = get(prom, &format!("/api/v1/query?query={}", urlencode(q)), &[]);
    if resp.status != 200 {
        return Vec::new();
    }
    let v: serde_json::Value = serde_json::from_slice(&resp.body).unwrap_or_default();
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

#[test]
fn prometheus_scrapes_all_three() {
    let prometheus = tool("prometheus");
    let components: Vec<(&str, Component)> = [
        ("conduit-manager", "conduit-manager"),
        ("conduit-gateway", "conduit-gateway"),
        ("conduit-agent", "conduit-agent"),
    ]
    .into_iter()
    .map(|(job, bin)| (job, start_component(bin, &[])))
    .collect();

    let dir = TempDir::new("prometheus");
    let mut config =
        String::from("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n");
    for (job, c) in &components {
        config.push_str(&format!(
            "  - job_name: {job}\n    static_configs:\n      - targets: ['{}']\n",
            c.addr
        ));
    }
    let config_path = dir.0.join("prometheus.yml");
    std::fs::write(&config_path, config).unwrap();
    let port = conduit_tests::free_port();
    let mut cmd = Command::new(prometheus);
    cmd.arg(format!("--config.file={}", config_path.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.0.join("data").display()
        ))
        .arg("--web.enable-lifecycle");
    let (prom, ()) = start_until("prometheus", cmd, Duration::from_secs(30), |line| {
        line.contains("Server is ready to receive web requests")
            .then_some(())
    });
    let prom_addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    // The first scrape lands about 5.7 s after start (reloads are throttled to 5 s).
    let up = wait_for(Duration::from_secs(30), Duration::from_millis(500), || {
        let r = query(prom_addr, "up == 1");
        (r.len() == 3).then_some(r)
    });
    let Some(up) = up else {
        let targets = get(prom_addr, "/api/v1/targets", &[]).text();
        panic!(
            "not all three jobs up within 30 s; targets: {targets}\nlog:\n{}",
            prom.log()
        );
    };
    let mut jobs: Vec<String> = up
        .iter()
        .filter_map(|r| r["metric"]["job"].as_str().map(str::to_owned))
        .collect();
    jobs.sort();
    assert_eq!(
        jobs,
        ["conduit-agent", "conduit-gateway", "conduit-manager"]
    );

    // Prometheus's own scrapes are counted by the middleware and visible in Prometheus.
    let scraped = wait_for(Duration::from_secs(10), Duration::from_millis(500), || {
        let r = query(
            prom_addr,
            r#"manager_http_requests_total{endpoint="/metrics",method="GET",status_code="200"}"#,
        );
        (!r.is_empty()).then_some(r)
    });
    assert!(
        scraped.is_some(),
        "manager_http_requests_total not in Prometheus"
    );
    // The RFD's `_total` gauges and unlabeled zero states come through as written.
    assert_eq!(query(prom_addr, "agent_gateway_connection_status").len(), 1);
    assert_eq!(
        query(prom_addr, "agent_discovery_duration_seconds_count").len(),
        1
    );
    drop(prom);
    drop(components);
}

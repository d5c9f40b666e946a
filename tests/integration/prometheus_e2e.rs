//! A real Prometheus server (Debian's 2.42, which asks for OpenMetrics first, with gzip)
//! scrapes all three binaries.

use std::time::Duration;

use conduit_tests::prometheus::Prometheus;
use conduit_tests::{start_component, wait_for, Component};

#[test]
fn prometheus_scrapes_all_three() {
    let components: Vec<(&str, Component)> = [
        ("conduit-manager", "conduit-manager"),
        ("conduit-gateway", "conduit-gateway"),
        ("conduit-agent", "conduit-agent"),
    ]
    .into_iter()
    .map(|(job, bin)| (job, start_component(bin, &[])))
    .collect();
    let jobs: Vec<(&str, std::net::SocketAddr)> =
        components.iter().map(|(j, c)| (*j, c.addr)).collect();
    let prom = Prometheus::start(&jobs);
    let up = prom.wait_all_up(3, Duration::from_secs(30));
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
        let r = prom.query(
            r#"manager_http_requests_total{endpoint="/metrics",method="GET",status_code="200"}"#,
        );
        (!r.is_empty()).then_some(r)
    });
    assert!(
        scraped.is_some(),
        "manager_http_requests_total not in Prometheus"
    );
    // The RFD's `_total` gauges and unlabeled zero states come through as written.
    assert_eq!(prom.query("agent_gateway_connection_status").len(), 1);
    assert_eq!(
        prom.query("agent_discovery_duration_seconds_count").len(),
        1
    );
    drop(prom);
    drop(components);
}

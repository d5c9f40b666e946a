//! Content negotiation on a live component: what Prometheus asks for, what text-only clients
//! ask for, gzip, HEAD.

use conduit_reference::parse_exposition;
use conduit_tests::{get, request, start_component};

/// The Accept header Debian's Prometheus 2.42 sends on every scrape.
const PROMETHEUS_2_42_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,\
    application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

#[test]
fn prometheus_gets_openmetrics_and_text_clients_get_text() {
    let c = start_component("conduit-gateway", &[]);

    let om = get(
        c.addr,
        "/metrics",
        &[
            ("Accept", PROMETHEUS_2_42_ACCEPT),
            ("Accept-Encoding", "gzip"),
        ],
    );
    assert_eq!(om.status, 200);
    assert_eq!(
        om.header("Content-Type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert_eq!(om.header("Content-Encoding"), Some("gzip"));
    let om_text = om.text();
    assert!(om_text.ends_with("# EOF\n"), "{om_text}");
    // OpenMetrics names counter families without `_total`; samples keep it.
    assert!(
        om_text.contains("# TYPE gateway_proxy_errors counter\n"),
        "{om_text}"
    );

    for accept in [None, Some("text/plain;version=0.0.4"), Some("*/*")] {
        let headers: Vec<(&str, &str)> = accept.map(|a| ("Accept", a)).into_iter().collect();
        let text = get(c.addr, "/metrics", &headers);
        assert_eq!(text.status, 200);
        assert_eq!(
            text.header("Content-Type"),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        assert_eq!(text.header("Content-Encoding"), None);
        let body = text.text();
        assert!(!body.contains("# EOF"), "{body}");
        assert!(
            body.contains("# TYPE gateway_proxy_errors_total counter\n"),
            "{body}"
        );
        parse_exposition(&body).expect("text exposition parses");
    }

    let gz = get(c.addr, "/metrics", &[("Accept-Encoding", "gzip")]);
    assert_eq!(gz.header("Content-Encoding"), Some("gzip"));
    assert!(gz.body.starts_with(&[0x1f, 0x8b]), "gzip magic");
    let families = parse_exposition(&gz.text()).expect("gunzipped text parses");
    assert!(families.contains_key("gateway_sessions_total"));
}

#[test]
fn head_metrics_has_headers_and_no_body() {
    let c = start_component("conduit-manager", &[]);
    let full = get(c.addr, "/metrics", &[]);
    let head = request(c.addr, "HEAD", "/metrics", &[], b"");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    let len: usize = head.header("Content-Length").unwrap().parse().unwrap();
    assert!(len > 1000, "HEAD announces the body it would send ({len})");
    assert_eq!(head.header("Content-Type"), full.header("Content-Type"));
}

#[test]
fn health_and_index() {
    let c = start_component("conduit-agent", &[]);
    let h = get(c.addr, "/health", &[]);
    assert_eq!((h.status, h.text().as_str()), (200, "ok\n"));
    let index = get(c.addr, "/", &[]).text();
    assert!(
        index.contains("/metrics") && index.contains("conduit-agent"),
        "{index}"
    );
}

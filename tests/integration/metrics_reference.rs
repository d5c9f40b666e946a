//! docs/metrics.md against the live expositions of the three binaries, against promtool, and
//! against RFD 021's text when `../shared/spec/` is present.

use conduit_reference::{
    check_against_rfd, check_exposition, parse_exposition, parse_reference, promtool_check,
    unexpected_lint, Reference,
};
use conduit_tests::{get, start_component, workspace_root};

const COMPONENTS: [(&str, &str); 3] = [
    ("conduit-manager", "manager"),
    ("conduit-gateway", "gateway"),
    ("conduit-agent", "agent"),
];

fn reference() -> Reference {
    let md = std::fs::read_to_string(workspace_root().join("docs/metrics.md"))
        .expect("read docs/metrics.md");
    parse_reference(&md).expect("parse docs/metrics.md")
}

#[test]
fn live_expositions_match_the_reference_and_pass_promtool() {
    let reference = reference();
    for (binary, component) in COMPONENTS {
        let c = start_component(binary, &[]);
        // Traffic first, so the request families carry samples whose labels get checked.
        assert_eq!(get(c.addr, "/health", &[]).status, 200);
        assert_eq!(get(c.addr, "/no/such/path", &[]).status, 404);
        let resp = get(
            c.addr,
            "/metrics",
            &[("Accept", "text/plain;version=0.0.4")],
        );
        assert_eq!(resp.status, 200);
        let text = resp.text();
        let fams = parse_exposition(&text).unwrap_or_else(|e| panic!("{binary}: {e}"));
        let problems = check_exposition(&reference, component, &fams, true);
        assert!(problems.is_empty(), "{binary}: {problems:#?}\n{text}");
        let requests = &fams[&format!("{component}_http_requests_total")];
        assert!(
            requests
                .samples
                .iter()
                .any(|s| s.labels.contains(&("endpoint".into(), "/health".into()))),
            "{binary}: /health was not counted:\n{text}"
        );

        let lint = promtool_check(&text).unwrap_or_else(|e| panic!("{binary}: {e}"));
        let unexpected = unexpected_lint(&lint);
        assert!(unexpected.is_empty(), "{binary}: promtool: {unexpected:#?}");
    }
}

#[test]
fn reference_counts_the_rfd_catalog() {
    let reference = reference();
    for (component, want) in [("manager", 16), ("gateway", 19), ("agent", 22)] {
        let rfd = reference
            .metrics
            .iter()
            .filter(|m| m.component == component && m.source.starts_with("RFD"))
            .count();
        assert_eq!(rfd, want, "{component}: RFD metrics documented");
    }
}

#[test]
fn reference_agrees_with_the_rfd_text() {
    let spec = workspace_root().join("../shared/spec/rfd-021-prometheus-metrics-exporter.md");
    let Ok(text) = std::fs::read_to_string(&spec) else {
        eprintln!("{} not present: RFD cross-check skipped", spec.display());
        return;
    };
    let problems = check_against_rfd(&reference(), &text);
    assert!(problems.is_empty(), "{problems:#?}");
}

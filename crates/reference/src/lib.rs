//! The metrics reference as tests read it: `docs/metrics.md`, RFD 021's catalog, and a live
//! exposition in the Prometheus text format, parsed independently of the code that registers
//! the metrics, so that the code and the document cannot drift together.
//!
//! A dev-dependency only: no shipped binary links it.

use std::collections::{BTreeMap, BTreeSet};

/// One documented metric.
#[derive(Debug, Clone, PartialEq)]
pub struct DocMetric {
    /// `all`, `manager`, `gateway` or `agent`.
    pub component: String,
    /// Exposed family name (counters with `_total`).
    pub name: String,
    /// `counter`, `gauge` or `histogram`.
    pub kind: String,
    /// Label names, in documented order.
    pub labels: Vec<String>,
    /// Bucket set name, for histograms.
    pub buckets: Option<String>,
    /// HELP text without a trailing period.
    pub help: String,
    /// `RFD ...` or `addition ...`.
    pub source: String,
}

/// The parsed reference document.
#[derive(Debug, Clone, Default)]
pub struct Reference {
    /// Every documented metric.
    pub metrics: Vec<DocMetric>,
    /// Bucket sets by name, with the RFD's name for each.
    pub bucket_sets: BTreeMap<String, (Vec<f64>, String)>,
}

fn cells(line: &str) -> Option<Vec<String>> {
    let line = line.trim();
    let inner = line.strip_prefix('|')?.strip_suffix('|')?;
    Some(inner.split('|').map(|c| c.trim().to_owned()).collect())
}

/// The backticked words of a cell.
fn ticked(cell: &str) -> Vec<String> {
    cell.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| s.to_owned())
        .collect()
}

fn numbers(s: &str) -> Result<Vec<f64>, String> {
    s.trim_matches(|c| c == '[' || c == ']' || c == '`')
        .split(',')
        .map(|n| {
            n.trim()
                .parse::<f64>()
                .map_err(|e| format!("bucket {n:?}: {e}"))
        })
        .collect()
}

/// Parses `docs/metrics.md`: tables introduced by `<!-- reference:... -->` markers.
pub fn parse_reference(md: &str) -> Result<Reference, String> {
    let mut r = Reference::default();
    let mut section: Option<String> = None;
    for (n, line) in md.lines().enumerate() {
        let at = |e: String| format!("docs/metrics.md line {}: {e}", n + 1);
        if let Some(rest) = line.trim().strip_prefix("<!-- reference:") {
            section = Some(rest.trim_end_matches("-->").trim().to_owned());
            continue;
        }
        let Some(sec) = &section else { continue };
        let Some(c) = cells(line) else {
            if !line.trim().is_empty() {
                section = None;
            }
            continue;
        };
        if c.iter().all(|x| x.chars().all(|ch| ch == '-')) || !c[0].starts_with('`') {
            continue; // header or separator row
        }
        if sec == "buckets" {
            let name = ticked(&c[0])
                .into_iter()
                .next()
                .ok_or_else(|| at("no set name".into()))?;
            let values = numbers(&c[1]).map_err(at)?;
            r.bucket_sets.insert(name, (values, c[2].clone()));
        } else if let Some(component) = sec.strip_prefix("catalog ") {
            if c.len() != 7 {
                return Err(at(format!("expected 7 cells, found {}", c.len())));
            }
            let name = ticked(&c[0])
                .into_iter()
                .next()
                .ok_or_else(|| at("no name".into()))?;
            let buckets = ticked(&c[3]).into_iter().next();
            r.metrics.push(DocMetric {
                component: component.to_owned(),
                name,
                kind: c[1].clone(),
                labels: ticked(&c[2]),
                buckets,
                help: c[4].trim_end_matches('.').to_owned(),
                source: c[6].clone(),
            });
        }
    }
    for m in &r.metrics {
        if let Some(b) = &m.buckets {
            if !r.bucket_sets.contains_key(b) {
                return Err(format!("{}: unknown bucket set {b}", m.name));
            }
        }
        if (m.kind == "histogram") != m.buckets.is_some() {
            return Err(format!(
                "{}: histograms, and only they, name a bucket set",
                m.name
            ));
        }
    }
    if r.metrics.is_empty() {
        return Err("docs/metrics.md: no catalog tables found".into());
    }
    Ok(r)
}

impl Reference {
    /// The metrics a component exposes: its own plus the `all` table.
    pub fn exposed_by(&self, component: &str) -> Vec<&DocMetric> {
        self.metrics
            .iter()
            .filter(|m| m.component == component || m.component == "all")
            .collect()
    }

    /// Bucket bounds of a documented histogram.
    pub fn buckets_of(&self, m: &DocMetric) -> Option<&[f64]> {
        Some(&self.bucket_sets.get(m.buckets.as_ref()?)?.0)
    }
}

/// One sample of an exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Sample name (e.g. `x_bucket`).
    pub name: String,
    /// Labels in order.
    pub labels: Vec<(String, String)>,
    /// Value.
    pub value: f64,
}

/// One family of an exposition.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Family {
    /// `# TYPE` type.
    pub kind: String,
    /// `# HELP` text, unescaped as written.
    pub help: String,
    /// Samples in order.
    pub samples: Vec<Sample>,
}

/// Label pairs of one sample, in order.
pub type LabelPairs = Vec<(String, String)>;

fn parse_labels(s: &str) -> Result<(LabelPairs, &str), String> {
    // s starts after '{'
    let mut labels = Vec::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start_matches(',');
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let eq = rest.find('=').ok_or("label without =")?;
        let name = rest[..eq].to_owned();
        let mut chars = rest[eq + 1..].char_indices();
        if chars.next().map(|c| c.1) != Some('"') {
            return Err(format!("label {name}: value not quoted"));
        }
        let mut value = String::new();
        let mut end = None;
        let mut escaped = false;
        for (i, ch) in chars {
            match (escaped, ch) {
                (true, 'n') => {
                    value.push('\n');
                    escaped = false
                }
                (true, c) => {
                    value.push(c);
                    escaped = false
                }
                (false, '\\') => escaped = true,
                (false, '"') => {
                    end = Some(eq + 1 + i + 1);
                    break;
                }
                (false, c) => value.push(c),
            }
        }
        let end = end.ok_or(format!("label {name}: unterminated value"))?;
        labels.push((name, value));
        rest = &rest[end..];
    }
}

/// Parses a Prometheus text-format (0.0.4) or OpenMetrics exposition into families keyed by
/// their `# TYPE` name. Samples are attached to the family whose name prefixes them.
pub fn parse_exposition(body: &str) -> Result<BTreeMap<String, Family>, String> {
    let mut fams: BTreeMap<String, Family> = BTreeMap::new();
    let mut current: Option<String> = None;
    for (n, line) in body.lines().enumerate() {
        let at = |e: String| format!("exposition line {}: {e}: {line:?}", n + 1);
        if line.is_empty() || line == "# EOF" {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            fams.entry(name.to_owned()).or_default().help = help.to_owned();
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .ok_or_else(|| at("TYPE without type".into()))?;
            let f = fams.entry(name.to_owned()).or_default();
            if !f.kind.is_empty() {
                return Err(at("second TYPE line".into()));
            }
            f.kind = kind.to_owned();
            current = Some(name.to_owned());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).ok_or_else(|| at("no value".into()))?;
        let name = &line[..name_end];
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end + 1..]).map_err(at)?
        } else {
            (Vec::new(), &line[name_end..])
        };
        let value_str = rest
            .split_whitespace()
            .next()
            .ok_or_else(|| at("no value".into()))?;
        let value = match value_str {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().map_err(|e| at(format!("value: {e}")))?,
        };
        let family = current
            .clone()
            .filter(|c| name.starts_with(c.as_str()) || c.starts_with(name))
            .ok_or_else(|| at("sample outside its family".into()))?;
        fams.entry(family).or_default().samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    Ok(fams)
}

/// Holds one component's exposition (text 0.0.4) against the reference: its own metrics, plus
/// the common (`all`) ones when `with_common` is set. Returns every difference found (empty when
/// they agree).
pub fn check_exposition(
    reference: &Reference,
    component: &str,
    fams: &BTreeMap<String, Family>,
    with_common: bool,
) -> Vec<String> {
    let mut problems = Vec::new();
    let documented: Vec<&DocMetric> = reference
        .exposed_by(component)
        .into_iter()
        .filter(|m| with_common || m.component != "all")
        .collect();
    let names: BTreeSet<&str> = documented.iter().map(|m| m.name.as_str()).collect();
    for name in fams.keys() {
        if !names.contains(name.as_str()) {
            problems.push(format!("{component}: {name} is exposed but not documented"));
        }
    }
    for m in documented {
        let Some(f) = fams.get(&m.name) else {
            problems.push(format!(
                "{component}: {} is documented but not exposed",
                m.name
            ));
            continue;
        };
        if f.kind != m.kind {
            problems.push(format!(
                "{}: type {} exposed, {} documented",
                m.name, f.kind, m.kind
            ));
        }
        if f.help.trim_end_matches('.') != m.help {
            problems.push(format!(
                "{}: help {:?} exposed, {:?} documented",
                m.name, f.help, m.help
            ));
        }
        let want: BTreeSet<&str> = m.labels.iter().map(String::as_str).collect();
        let mut bounds: BTreeMap<Vec<(String, String)>, Vec<f64>> = BTreeMap::new();
        for s in &f.samples {
            let have: BTreeSet<&str> = s
                .labels
                .iter()
                .map(|(k, _)| k.as_str())
                .filter(|k| *k != "le")
                .collect();
            if have != want {
                problems.push(format!(
                    "{}: sample {} has labels {have:?}, documented {want:?}",
                    m.name, s.name
                ));
            }
            if m.kind == "histogram" && s.name.ends_with("_bucket") {
                let key: Vec<(String, String)> = s
                    .labels
                    .iter()
                    .filter(|(k, _)| k != "le")
                    .cloned()
                    .collect();
                let le = s
                    .labels
                    .iter()
                    .find(|(k, _)| k == "le")
                    .map(|(_, v)| v.as_str());
                match le.map(|v| v.parse::<f64>()) {
                    Some(Ok(b)) if b.is_finite() => bounds.entry(key).or_default().push(b),
                    Some(Ok(_)) => {}
                    _ => problems.push(format!("{}: bucket without a valid le", m.name)),
                }
            }
        }
        if let Some(want) = reference.buckets_of(m) {
            for (labels, got) in &bounds {
                if got.as_slice() != want {
                    problems.push(format!(
                        "{}{labels:?}: buckets {got:?}, documented {want:?}",
                        m.name
                    ));
                }
            }
        }
    }
    problems
}

/// Builds a component's catalog as its binary does (request metrics, then `register`), lets
/// `touch` put one sample into every family the component registers, and checks the result
/// with [`check_touched_registry`].
pub fn check_component_catalog<T>(
    reference_md: &str,
    prefix: &'static str,
    register: impl FnOnce(&mut conduit_metrics::catalog::CatalogBuilder) -> T,
    touch: impl FnOnce(&T),
) -> Vec<String> {
    let mut registry = prometheus_client::registry::Registry::default();
    let mut b = conduit_metrics::catalog::CatalogBuilder::new(&mut registry, prefix, 100);
    let http = conduit_http::middleware::HttpMetrics::register(&mut b);
    let component = register(&mut b);
    http.observe(
        conduit_http::Method::Get,
        "/metrics",
        200,
        std::time::Duration::ZERO,
    );
    touch(&component);
    check_touched_registry(reference_md, prefix, &registry)
}

/// Checks a component's catalog registry in which the test has put one sample into every labeled
/// family: exposition against the reference, and no family left without samples (so every
/// family's label names and buckets were actually compared).
pub fn check_touched_registry(
    reference_md: &str,
    component: &str,
    registry: &prometheus_client::registry::Registry,
) -> Vec<String> {
    let reference = match parse_reference(reference_md) {
        Ok(r) => r,
        Err(e) => return vec![e],
    };
    let mut text = String::new();
    conduit_metrics::exposition::encode(
        &mut text,
        registry,
        conduit_metrics::exposition::Format::Text,
    );
    let fams = match parse_exposition(&text) {
        Ok(f) => f,
        Err(e) => return vec![e],
    };
    let mut problems = check_exposition(&reference, component, &fams, false);
    // Every family has samples here, so promtool lints them all: it must name exactly this
    // component's `_total` gauges and nothing else.
    match promtool_check(&text) {
        Ok(lines) => {
            problems.extend(
                unexpected_lint(&lines)
                    .into_iter()
                    .map(|l| format!("promtool: {l}")),
            );
            for g in TOTAL_SUFFIXED_GAUGES
                .iter()
                .filter(|g| g.starts_with(component))
            {
                if !lines.iter().any(|l| l.starts_with(&format!("{g} "))) {
                    problems.push(format!("promtool did not lint {g}: is it still a gauge?"));
                }
            }
        }
        Err(e) => problems.push(e),
    }
    for (name, f) in &fams {
        // The guard's own family is exercised by the catalog tests of conduit-metrics.
        if f.samples.is_empty() && !name.ends_with("_metrics_series_dropped_total") {
            problems.push(format!("{name} has no sample: touch it in the test"));
        }
    }
    problems
}

/// The seven RFD 021 gauges whose names end in `_total` (kept as the RFD names them).
pub const TOTAL_SUFFIXED_GAUGES: [&str; 7] = [
    "manager_servers_total",
    "manager_gateways_total",
    "gateway_agents_total",
    "gateway_sessions_total",
    "gateway_websocket_connections_total",
    "agent_sol_sessions_total",
    "agent_vnc_sessions_total",
];

/// Runs `promtool check metrics` on a text exposition. Returns the lines promtool printed when
/// it parsed the input (exit 0, or 3 for lint findings); an error when it could not parse it or
/// could not be run.
pub fn promtool_check(text: &str) -> Result<Vec<String>, String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("run promtool (scripts/test installs it): {e}"))?;
    child
        .stdin
        .take()
        .ok_or("promtool stdin")?
        .write_all(text.as_bytes())
        .map_err(|e| format!("write to promtool: {e}"))?;
    let out = child
        .wait_with_output()
        .map_err(|e| format!("promtool: {e}"))?;
    let lines: Vec<String> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .chain(String::from_utf8_lossy(&out.stdout).lines())
        .map(str::to_owned)
        .filter(|l| !l.trim().is_empty())
        .collect();
    match out.status.code() {
        Some(0) | Some(3) => Ok(lines),
        code => Err(format!("promtool failed ({code:?}): {lines:?}")),
    }
}

/// promtool lines other than the expected warning about one of the seven `_total` gauges.
pub fn unexpected_lint(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| {
            !TOTAL_SUFFIXED_GAUGES.iter().any(|g| {
                l.as_str() == format!("{g} non-counter metrics should not have \"_total\" suffix")
            })
        })
        .cloned()
        .collect()
}

/// One metric of RFD 021's catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct RfdMetric {
    /// Name as the RFD writes it.
    pub name: String,
    /// Type.
    pub kind: String,
    /// Help text.
    pub help: String,
    /// Label names.
    pub labels: Vec<String>,
}

/// The RFD's catalog lines and bucket sets (by the RFD's name for each set).
pub fn parse_rfd(text: &str) -> (Vec<RfdMetric>, BTreeMap<String, Vec<f64>>) {
    let mut metrics = Vec::new();
    let mut sets = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        // - `name` (type) - Help [labels]
        if let Some(rest) = line.strip_prefix("- `") {
            let Some((name, rest)) = rest.split_once("` (") else {
                continue;
            };
            let Some((kind, rest)) = rest.split_once(") - ") else {
                continue;
            };
            let (help, labels) = match rest.rsplit_once(" [") {
                Some((h, l)) => (h, l.trim_end_matches(']')),
                None => (rest, ""),
            };
            // `type={vnc,sol}` names the label `type`.
            let mut names = Vec::new();
            let mut depth = 0;
            let mut cur = String::new();
            for ch in labels.chars() {
                match ch {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => names.push(std::mem::take(&mut cur)),
                    _ if depth == 0 => cur.push(ch),
                    _ => {}
                }
            }
            names.push(cur);
            metrics.push(RfdMetric {
                name: name.to_owned(),
                kind: kind.to_owned(),
                help: help.trim().to_owned(),
                labels: names
                    .iter()
                    .map(|n| n.split('=').next().unwrap_or("").trim().to_owned())
                    .filter(|n| !n.is_empty())
                    .collect(),
            });
        }
        // - **HTTP/RPC requests**: `[.005, ...]` seconds
        if let Some(rest) = line.strip_prefix("- **") {
            if let Some((title, rest)) = rest.split_once("**: `") {
                if let Some((list, _)) = rest.split_once('`') {
                    if let Ok(v) = numbers(list) {
                        sets.insert(title.to_owned(), v);
                    }
                }
            }
        }
    }
    (metrics, sets)
}

/// Which RFD bucket set each RFD-assigned histogram uses (RFD 021, "Histogram Buckets").
pub fn rfd_bucket_set(metric: &str) -> Option<&'static str> {
    if metric.ends_with("_http_request_duration_seconds")
        || metric.ends_with("_rpc_call_duration_seconds")
    {
        Some("HTTP/RPC requests")
    } else if metric == "manager_db_query_duration_seconds" {
        Some("Database queries")
    } else if metric == "gateway_session_duration_seconds" {
        Some("Session duration")
    } else if metric.ends_with("_bmc_operation_duration_seconds") {
        Some("BMC operations")
    } else if metric == "agent_discovery_duration_seconds" {
        Some("Discovery cycles")
    } else {
        None
    }
}

/// Cross-checks the reference against the RFD text: every RFD component metric documented with
/// the RFD's type, help and labels; every RFD bucket set documented with the RFD's numbers and
/// used where the RFD assigns it; every RFD process metric documented.
pub fn check_against_rfd(reference: &Reference, rfd_text: &str) -> Vec<String> {
    let (rfd, sets) = parse_rfd(rfd_text);
    let mut problems = Vec::new();
    for (title, want) in &sets {
        match reference.bucket_sets.values().find(|(_, t)| t == title) {
            Some((have, _)) if have == want => {}
            Some((have, _)) => {
                problems.push(format!("bucket set {title}: {have:?} vs RFD {want:?}"))
            }
            None => problems.push(format!("bucket set {title} is not documented")),
        }
    }
    for r in &rfd {
        let Some(m) = reference.metrics.iter().find(|m| m.name == r.name) else {
            problems.push(format!("RFD metric {} is not documented", r.name));
            continue;
        };
        if r.name.starts_with("go_") {
            problems.push(format!(
                "{}: Go runtime metric documented as exposed",
                r.name
            ));
        }
        if m.kind != r.kind {
            problems.push(format!("{}: documented {}, RFD {}", r.name, m.kind, r.kind));
        }
        if r.name.starts_with("process_") {
            continue; // the RFD gives these no help text or labels of its own
        }
        if m.help != r.help {
            problems.push(format!("{}: help {:?}, RFD {:?}", r.name, m.help, r.help));
        }
        if m.labels != r.labels {
            problems.push(format!(
                "{}: labels {:?}, RFD {:?}",
                r.name, m.labels, r.labels
            ));
        }
        if !m.source.starts_with("RFD") {
            problems.push(format!("{}: source should say RFD", r.name));
        }
        if let Some(title) = rfd_bucket_set(&r.name) {
            let doc_title = m
                .buckets
                .as_ref()
                .and_then(|b| reference.bucket_sets.get(b))
                .map(|(_, t)| t.as_str());
            if doc_title != Some(title) {
                problems.push(format!(
                    "{}: buckets {doc_title:?}, RFD assigns {title}",
                    r.name
                ));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_exposition() {
        let text = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\",y=\"q\\\"\"} 3\n\
                    # HELP h H.\n# TYPE h histogram\nh_sum 0.0\nh_count 0\nh_bucket{le=\"0.5\"} 0\n\
                    h_bucket{le=\"+Inf\"} 0\n";
        let f = parse_exposition(text).unwrap();
        assert_eq!(f["a_total"].kind, "counter");
        assert_eq!(
            f["a_total"].samples[0].labels,
            vec![("x".into(), "1".into()), ("y".into(), "q\"".into())]
        );
        assert_eq!(f["h"].samples.len(), 4);
        assert!(parse_exposition("# TYPE a counter\n# TYPE a counter\n").is_err());
        assert!(parse_exposition("b 1\n").is_err());
    }

    #[test]
    fn parses_rfd_lines() {
        let (m, sets) = parse_rfd(
            "- `gateway_sessions_total` (gauge) - Active console sessions [type={vnc,sol}, customer_id]\n\
             - **BMC operations**: `[.1, .25, 30]` seconds\n",
        );
        assert_eq!(m[0].labels, vec!["type", "customer_id"]);
        assert_eq!(m[0].help, "Active console sessions");
        assert_eq!(sets["BMC operations"], vec![0.1, 0.25, 30.0]);
    }
}

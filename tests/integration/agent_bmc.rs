//! The agent binary with a configuration pointing at a real ipmi_sim and at BMCs that are
//! dead: the poller's cache in /metrics, the token-protected API (Connect and REST), the CLI,
//! and the RFD BMC metrics driven by those real operations.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use conduit_tests::ipmi_sim::IpmiSim;
use conduit_tests::{
    agent_cli, agent_cli_ok, get, request, sample, start_component, wait_for, TempDir,
};

const TOKEN: &str = "test-token-0123456789";

fn config(dir: &TempDir, sim: &IpmiSim, silent: &UdpSocket) -> std::path::PathBuf {
    let path = dir.0.join("agent.toml");
    std::fs::write(
        &path,
        format!(
            r#"[agent]
api_token = "{TOKEN}"
poll_interval_secs = 0.5
operation_timeout_secs = 2

[[bmc]]
id = "sim1"
address = "127.0.0.1"
port = {sim_port}
username = "admin"
password_file = "bmc.pass"

[[bmc]]
id = "silent1"
address = "127.0.0.1"
port = {silent_port}
username = "admin"
password = "password"
"#,
            sim_port = sim.addr.port(),
            silent_port = silent.local_addr().unwrap().port(),
        ),
    )
    .unwrap();
    std::fs::write(dir.0.join("bmc.pass"), "password\n").unwrap();
    path
}

fn rpc(
    addr: std::net::SocketAddr,
    method: &str,
    body: &str,
    token: Option<&str>,
) -> (u16, serde_json::Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
    }
    let r = request(
        addr,
        "POST",
        &format!("/conduit.agent.v1.BmcService/{method}"),
        &headers,
        body.as_bytes(),
    );
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or_default(),
    )
}

#[test]
fn agent_polls_serves_and_acts_on_real_bmcs() {
    let sim = IpmiSim::start();
    // A BMC that swallows every packet: the worst case for a scrape.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let dir = TempDir::new("agent-bmc");
    let cfg = config(&dir, &sim, &silent);
    let agent = start_component("conduit-agent", &["--config", cfg.to_str().unwrap()]);

    // The poller fills the cache; scrapes stay fast although one BMC never answers.
    let text = wait_for(Duration::from_secs(10), Duration::from_millis(200), || {
        let t = get(agent.addr, "/metrics", &[]).text();
        sample(&t, "agent_bmc_up", &[("server_id", "sim1")]).filter(|v| *v == 1.0)?;
        sample(&t, "agent_bmc_up", &[("server_id", "silent1")])?;
        Some(t)
    })
    .expect("both BMCs polled");
    assert_eq!(
        sample(&text, "agent_bmc_up", &[("server_id", "silent1")]),
        Some(0.0)
    );
    assert_eq!(
        sample(&text, "agent_bmc_power_on", &[("server_id", "sim1")]),
        Some(0.0)
    );
    for _ in 0..5 {
        let start = Instant::now();
        assert_eq!(get(agent.addr, "/metrics", &[]).status, 200);
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "scrape took {:?}",
            start.elapsed()
        );
    }

    // The API is closed without the token.
    assert_eq!(rpc(agent.addr, "ListServers", "{}", None).0, 401);
    assert_eq!(
        rpc(
            agent.addr,
            "ListServers",
            "{}",
            Some("wrong-token-0123456789")
        )
        .0,
        401
    );
    assert_eq!(get(agent.addr, "/api/v1/servers", &[]).status, 401);

    let (status, body) = rpc(
        agent.addr,
        "PowerAction",
        r#"{"serverId":"sim1","action":"on"}"#,
        Some(TOKEN),
    );
    assert_eq!(status, 200, "{body}");
    assert!(sim.power(), "ipmi_sim's chassis saw power on");
    let (status, body) = rpc(
        agent.addr,
        "PowerStatus",
        r#"{"serverId":"sim1"}"#,
        Some(TOKEN),
    );
    assert_eq!(
        (status, body["power"].as_str()),
        (200, Some("on")),
        "{body}"
    );
    let (status, body) = rpc(
        agent.addr,
        "GetServer",
        r#"{"serverId":"sim1"}"#,
        Some(TOKEN),
    );
    assert_eq!(
        (status, body["manufacturer"].as_str()),
        (200, Some("IANA 4753")),
        "{body}"
    );
    let (status, body) = rpc(
        agent.addr,
        "PowerStatus",
        r#"{"serverId":"nope"}"#,
        Some(TOKEN),
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    let (status, body) = rpc(
        agent.addr,
        "PowerAction",
        r#"{"serverId":"sim1","action":"explode"}"#,
        Some(TOKEN),
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_argument")),
        "{body}"
    );
    // A silent BMC: no reply after the retransmits (503), or the operation's bound reached
    // while the poller held the BMC's session (504); either way a clear error naming it.
    let (status, body) = rpc(
        agent.addr,
        "PowerStatus",
        r#"{"serverId":"silent1"}"#,
        Some(TOKEN),
    );
    assert!(
        matches!(
            (status, body["code"].as_str()),
            (503, Some("unavailable")) | (504, Some("deadline_exceeded"))
        ),
        "{status} {body}"
    );
    assert!(
        body["message"].as_str().unwrap().contains("bmc silent1"),
        "{body}"
    );

    let auth = format!("Bearer {TOKEN}");
    let r = request(
        agent.addr,
        "POST",
        "/api/v1/servers/sim1/power/off",
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!sim.power());
    let list = get(agent.addr, "/api/v1/servers", &[("Authorization", &auth)]);
    let v: serde_json::Value = serde_json::from_slice(&list.body).unwrap();
    assert_eq!(v["servers"].as_array().map(Vec::len), Some(2), "{v}");

    // The CLI: same configuration, same code path.
    assert_eq!(
        agent_cli_ok(&cfg, &["power", "status", "sim1"]).trim(),
        "off"
    );
    let stdout = agent_cli_ok(&cfg, &["sensors", "sim1"]);
    assert!(stdout.contains("FAN 1\t3000\trpm\tok"), "{stdout}");
    let out = agent_cli(&cfg, &["power", "on", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bmc nope: power on: no such server"));

    // The RFD metrics saw all of it.
    let text = get(agent.addr, "/metrics", &[]).text();
    let op = |operation: &str, status: &str| {
        sample(
            &text,
            "agent_bmc_operations_total",
            &[
                ("bmc_type", "ipmi"),
                ("operation", operation),
                ("status", status),
            ],
        )
    };
    assert_eq!(op("power_on", "success"), Some(1.0));
    assert_eq!(op("power_off", "success"), Some(1.0));
    assert!(op("power_status", "error").unwrap_or(0.0) >= 1.0);
    assert!(
        sample(
            &text,
            "agent_bmc_connection_errors_total",
            &[("error_type", "timeout")]
        )
        .unwrap_or(0.0)
            >= 1.0
    );
    let calls = |method: &str, status: &str| {
        sample(
            &text,
            "agent_rpc_calls_total",
            &[
                ("service", "conduit.agent.v1.BmcService"),
                ("method", method),
                ("status", status),
            ],
        )
    };
    assert_eq!(calls("PowerAction", "ok"), Some(1.0));
    assert_eq!(calls("ListServers", "unauthenticated"), Some(2.0));
    assert_eq!(calls("PowerStatus", "not_found"), Some(1.0));
}

#[test]
fn invalid_config_names_file_line_and_field_and_nothing_starts() {
    let dir = TempDir::new("bad-config");
    let path = dir.0.join("agent.toml");
    std::fs::write(
        &path,
        "[[bmc]]\nid = \"n1\"\naddress = \"10.0.0.1\"\ncipher_suite = 9\n",
    )
    .unwrap();
    let out = agent_cli(&path, &["--listen", "127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("agent.toml: line 4: bmc[0].cipher_suite"),
        "{err}"
    );
    assert!(!err.contains("listening on"), "{err}");
}

/// The API answers from the poller's cache, not from the metrics: with every `agent_bmc_*`
/// family capped at one series, the exposition drops the second BMC, the API still knows it.
#[test]
fn a_full_series_cap_does_not_blank_the_api() {
    let sim = IpmiSim::start();
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let dir = TempDir::new("agent-cap");
    let cfg = config(&dir, &sim, &silent);
    let agent = start_component(
        "conduit-agent",
        &["--config", cfg.to_str().unwrap(), "--series-limit", "1"],
    );
    let servers = wait_for(Duration::from_secs(10), Duration::from_millis(200), || {
        let (status, v) = rpc(agent.addr, "ListServers", "{}", Some(TOKEN));
        assert_eq!(status, 200);
        let servers = v["servers"].as_array()?.clone();
        servers
            .iter()
            .all(|s| s["up"].is_boolean())
            .then_some(servers)
    })
    .expect("both BMCs polled, as the API tells");
    let up = |id: &str| {
        servers
            .iter()
            .find(|s| s["serverId"] == id)
            .map(|s| s["up"].clone())
    };
    assert_eq!(up("sim1"), Some(serde_json::json!(true)));
    assert_eq!(up("silent1"), Some(serde_json::json!(false)));
    // The exposition, meanwhile, holds one series of agent_bmc_up and counts the drop.
    let text = get(agent.addr, "/metrics", &[]).text();
    let series = text
        .lines()
        .filter(|l| l.starts_with("agent_bmc_up{"))
        .count();
    assert_eq!(series, 1, "{text}");
    assert!(
        sample(
            &text,
            "agent_metrics_series_dropped_total",
            &[("family", "agent_bmc_up")]
        )
        .is_some_and(|v| v >= 1.0),
        "{text}"
    );
}

/// Never a stale reading as current: while the BMC is unreachable its sensor (and power)
/// series are gone and `agent_bmc_up` is 0; they come back with it.
#[test]
fn sensor_series_go_with_the_bmc_and_come_back_with_it() {
    let mut sim = IpmiSim::start();
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let dir = TempDir::new("agent-stale");
    let cfg = config(&dir, &sim, &silent);
    let agent = start_component("conduit-agent", &["--config", cfg.to_str().unwrap()]);
    let cpu = [
        ("server_id", "sim1"),
        ("sensor", "CPU Temp"),
        ("unit", "celsius"),
    ];
    let polled = |want_up: f64| {
        wait_for(Duration::from_secs(15), Duration::from_millis(100), || {
            let t = get(agent.addr, "/metrics", &[]).text();
            (sample(&t, "agent_bmc_up", &[("server_id", "sim1")]) == Some(want_up)).then_some(t)
        })
        .unwrap_or_else(|| panic!("agent_bmc_up never {want_up}; log:\n{}", agent.proc.log()))
    };
    let text = wait_for(Duration::from_secs(15), Duration::from_millis(100), || {
        let t = get(agent.addr, "/metrics", &[]).text();
        sample(&t, "agent_bmc_sensor_value", &cpu).map(|_| t)
    })
    .expect("CPU Temp published");
    assert_eq!(
        sample(&text, "agent_bmc_up", &[("server_id", "sim1")]),
        Some(1.0)
    );

    sim.stop();
    let text = polled(0.0);
    assert_eq!(
        sample(&text, "agent_bmc_sensor_value", &cpu),
        None,
        "{text}"
    );
    assert_eq!(
        sample(&text, "agent_bmc_power_on", &[("server_id", "sim1")]),
        None,
        "{text}"
    );
    assert!(
        !text.contains(r#"agent_bmc_sensor_value{server_id="sim1""#),
        "{text}"
    );

    sim.restart();
    let text = wait_for(Duration::from_secs(20), Duration::from_millis(100), || {
        let t = get(agent.addr, "/metrics", &[]).text();
        sample(&t, "agent_bmc_sensor_value", &cpu).map(|_| t)
    })
    .expect("CPU Temp back with the BMC");
    assert_eq!(
        sample(&text, "agent_bmc_up", &[("server_id", "sim1")]),
        Some(1.0)
    );
}

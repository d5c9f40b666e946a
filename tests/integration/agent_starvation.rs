//! No starvation: many API calls to BMCs that swallow every packet, while scrapes run every
//! 100 ms. The calls wait on the operations thread, not on the HTTP workers: every scrape
//! answers within a second and `/health` stays 200; past the operation bounds a call is
//! refused at once with `resource_exhausted` (429, `Retry-After`). Consoles are capped below the
//! connection cap: up to the cap they open, the next one is refused with its reason, and
//! `/metrics` still answers.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use conduit_tests::{get, request, start_component, TempDir};

const TOKEN: &str = "starve-token-0123456789";
const SERVERS: usize = 4;

fn config(dir: &TempDir, silent: &[UdpSocket]) -> std::path::PathBuf {
    let mut text = format!(
        r#"[agent]
api_token = "{TOKEN}"
poll_interval_secs = 60
operation_timeout_secs = 5
max_operations = 8
max_operations_per_server = 2

[console]
max_sessions = 2
max_sessions_per_server = 2
vnc_tcp_accept_secs = 30
"#
    );
    for (i, s) in silent.iter().enumerate() {
        text.push_str(&format!(
            "\n[[bmc]]\nid = \"dead{i}\"\naddress = \"127.0.0.1\"\nport = {}\nusername = \"admin\"\npassword = \"password\"\nvnc_port = 1\n",
            s.local_addr().unwrap().port()
        ));
    }
    let path = dir.0.join("agent.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn power_status(addr: SocketAddr, server: &str) -> (u16, Option<String>, String) {
    let body = format!(r#"{{"serverId":"{server}"}}"#);
    let auth = format!("Bearer {TOKEN}");
    let r = request(
        addr,
        "POST",
        "/conduit.agent.v1.BmcService/PowerStatus",
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &auth),
        ],
        body.as_bytes(),
    );
    (
        r.status,
        r.header("Retry-After").map(str::to_owned),
        r.text(),
    )
}

#[test]
fn slow_bmcs_never_stall_scrapes_or_health() {
    let silent: Vec<UdpSocket> = (0..SERVERS)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let dir = TempDir::new("agent-starve");
    let cfg = config(&dir, &silent);
    // The default four HTTP workers: without deferred answers, four calls would hold them all.
    let agent = start_component("conduit-agent", &["--config", cfg.to_str().unwrap()]);
    let addr = agent.addr;

    // Two calls per server: every operation slot taken, each call waiting on a dead BMC.
    let calls: Vec<_> = (0..2 * SERVERS)
        .map(|i| std::thread::spawn(move || power_status(addr, &format!("dead{}", i % SERVERS))))
        .collect();
    std::thread::sleep(Duration::from_millis(300));

    // Past the bounds: refused at once, with a reason and a time to retry.
    let t = Instant::now();
    let (status, retry, body) = power_status(addr, "dead0");
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "refusal took {:?}",
        t.elapsed()
    );
    assert_eq!(status, 429, "{body}");
    assert_eq!(retry.as_deref(), Some("1"), "{body}");
    assert!(
        body.contains("resource_exhausted") && body.contains("dead0"),
        "{body}"
    );

    // Scrapes and health every 100 ms while the calls wait.
    let until = Instant::now() + Duration::from_secs(4);
    let mut scrapes = 0;
    while Instant::now() < until {
        for path in ["/metrics", "/health"] {
            let t = Instant::now();
            let r = get(addr, path, &[]);
            assert_eq!(r.status, 200, "{path}: {}", r.text());
            assert!(
                t.elapsed() < Duration::from_secs(1),
                "{path} took {:?} with BMC calls in flight",
                t.elapsed()
            );
        }
        scrapes += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(scrapes >= 20, "only {scrapes} scrapes");

    for c in calls {
        let (status, _, body) = c.join().unwrap();
        // No reply (unavailable) or the deadline: the BMC's failure, never a refusal.
        assert!(matches!(status, 503 | 504), "{status}: {body}");
    }
    let text = get(addr, "/metrics", &[]).text();
    assert!(
        text.contains(r#"agent_rpc_calls_total{service="conduit.agent.v1.BmcService",method="PowerStatus",status="resource_exhausted"} 1"#),
        "{text}"
    );

    // Consoles: two raw VNC listeners take both console slots (they never dial the BMC until
    // a viewer comes); the third is refused with the cap it met; scrapes still answer.
    let auth = format!("Bearer {TOKEN}");
    let listen = |server: &str| {
        request(
            addr,
            "POST",
            &format!("/console/vnc/{server}/listen"),
            &[("Authorization", &auth)],
            b"",
        )
    };
    assert_eq!(listen("dead1").status, 201);
    assert_eq!(listen("dead2").status, 201);
    let refused = listen("dead3");
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert!(
        refused.text().contains("console.max_sessions"),
        "{}",
        refused.text()
    );
    let t = Instant::now();
    assert_eq!(get(addr, "/metrics", &[]).status, 200);
    assert!(t.elapsed() < Duration::from_secs(1));
    let text = get(addr, "/metrics", &[]).text();
    assert!(
        text.contains(r#"agent_vnc_connection_errors_total{error_type="session_limit"} 1"#),
        "{text}"
    );
}

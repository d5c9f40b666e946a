//! Manager replicas on one PostgreSQL, through the release binary: nothing one replica
//! decides is unknown to the other, and a PostgreSQL restart under a manager costs requests
//! (answered `unavailable`), never rows or a manager restart.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use conduit_tests::*;
use serde_json::json;

use crate::manager_api::{
    call, fam, hashing_shared, init_admin, kid_of, login, manager_cli, ok, published_kids, refused,
    token, Db, Engine, ADMIN,
};

const WHO: &str = "/conduit.manager.v1.AuthService/WhoAmI";
const LOGIN: &str = "/conduit.manager.v1.AuthService/Login";
const REFRESH: &str = "/conduit.manager.v1.AuthService/Refresh";

/// Polls `f` every 100 ms until it holds, for at most `within`; how long it took.
fn eventually(within: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < within, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

/// The samples of `family` a manager exposes, sorted.
fn samples(addr: SocketAddr, family: &str) -> Vec<String> {
    let mut v: Vec<String> = get(addr, "/metrics", &[])
        .text()
        .lines()
        .filter(|l| {
            l.strip_prefix(family)
                .is_some_and(|r| r.starts_with(['{', ' ']))
        })
        .map(str::to_owned)
        .collect();
    v.sort();
    v
}

/// Two managers on one PostgreSQL, started together on an empty database: the schema is
/// made once; then a token, a refresh, a revocation, a throttled account, a server assignment
/// and a key rotation made on one are honoured by the other, and the gauges counted from the
/// shared rows read the same on both.
#[test]
fn two_replicas_on_one_postgres_share_every_decision() {
    let _hashing = hashing_shared();
    let db_a = Db::new(Engine::Postgres, "replica-a");
    let db_b = db_a.replica("replica-b");
    // Both start at once on the empty database.
    let (ra, rb) = std::thread::scope(|s| {
        let a = s.spawn(|| db_a.start(&[]));
        let b = s.spawn(|| db_b.start(&[]));
        (a.join().unwrap(), b.join().unwrap())
    });
    let migrated = [&ra, &rb]
        .iter()
        .filter(|c| {
            c.proc
                .log
                .lock()
                .unwrap()
                .contains("schema migrated to version")
        })
        .count();
    assert_eq!(migrated, 1, "exactly one replica migrates the schema");
    init_admin(&db_a);
    let (a, b) = (ra.addr, rb.addr);

    // A token issued by one verifies on the other.
    let admin = token(&login(a, ADMIN.0, ADMIN.1));
    assert_eq!(ok(b, WHO, Some(&admin), json!({}))["email"], ADMIN.0);

    let cust = ok(
        a,
        "/conduit.manager.v1.CustomerService/Create",
        Some(&admin),
        json!({"name": "replicated"}),
    )["customerId"]
        .as_str()
        .unwrap()
        .to_owned();
    ok(
        b,
        "/conduit.manager.v1.UserService/Create",
        Some(&admin),
        json!({"email": "op@example.com", "password": "a long enough secret",
               "role": "operator", "customerId": cust}),
    );

    // A refresh token rotated on one cannot be spent again on the other: the reuse revokes
    // the session, on both.
    let first = login(a, "op@example.com", "a long enough secret");
    let second = ok(
        b,
        REFRESH,
        None,
        json!({"refreshToken": first["refreshToken"]}),
    );
    refused(
        a,
        REFRESH,
        None,
        json!({"refreshToken": first["refreshToken"]}),
        "unauthenticated",
    );
    refused(
        b,
        REFRESH,
        None,
        json!({"refreshToken": second["refreshToken"]}),
        "unauthenticated",
    );
    let second_access = token(&second);
    let took = eventually(Duration::from_secs(5), "reused session refused", || {
        call(a, WHO, Some(&second_access), &json!({})).0 == 401
            && call(b, WHO, Some(&second_access), &json!({})).0 == 401
    });
    eprintln!("a reused session is refused on both replicas after {took:?}");

    // A logout on one holds on the other within the revocation bound (2 s here).
    let op = token(&login(b, "op@example.com", "a long enough secret"));
    ok(a, WHO, Some(&op), json!({}));
    ok(
        b,
        "/conduit.manager.v1.AuthService/Logout",
        Some(&op),
        json!({}),
    );
    let took = eventually(Duration::from_secs(4), "logout on B holds on A", || {
        call(a, WHO, Some(&op), &json!({})).0 == 401
    });
    eprintln!("a logout on one replica holds on the other after {took:?}");

    // Failures spread over both replicas throttle the account on both.
    ok(
        a,
        "/conduit.manager.v1.UserService/Create",
        Some(&admin),
        json!({"email": "victim@example.com", "password": "a long enough secret",
               "role": "viewer", "customerId": cust}),
    );
    // After the fifth failure the account waits 1 s: the two checks below come within
    // milliseconds (a throttled attempt does no hashing).
    for i in 0..5 {
        let r = if i % 2 == 0 { a } else { b };
        refused(
            r,
            LOGIN,
            None,
            json!({"email": "victim@example.com", "password": "a wrong guess"}),
            "unauthenticated",
        );
    }
    for r in [a, b] {
        refused(
            r,
            LOGIN,
            None,
            json!({"email": "victim@example.com", "password": "a long enough secret"}),
            "resource_exhausted",
        );
    }

    // A server assigned on one is the customer's on the other.
    ok(
        a,
        "/conduit.manager.v1.ServerService/Create",
        Some(&admin),
        json!({"serverId": "r-1", "datacenter": "dc1", "protocol": "ipmi",
               "capabilities": ["power"]}),
    );
    let op = token(&login(a, "op@example.com", "a long enough secret"));
    let get = "/conduit.manager.v1.ServerService/Get";
    refused(b, get, Some(&op), json!({"serverId": "r-1"}), "not_found");
    ok(
        b,
        "/conduit.manager.v1.ServerService/Assign",
        Some(&admin),
        json!({"serverId": "r-1", "customerId": cust}),
    );
    assert_eq!(
        ok(a, get, Some(&op), json!({"serverId": "r-1"}))["customerId"],
        cust.as_str()
    );

    // A key rotated through the database is published and signs on both within the reload
    // bound (5 s), and the old key's tokens still verify.
    let old_kid = kid_of(&admin);
    let out = manager_cli(&db_a, &["keys", "rotate"]);
    let new_kid = out
        .split_whitespace()
        .nth(3)
        .unwrap()
        .trim_end_matches(';')
        .to_owned();
    assert_ne!(new_kid, old_kid);
    let took = eventually(Duration::from_secs(8), "the new key on both", || {
        [a, b].iter().all(|&r| {
            published_kids(r).contains(&new_kid)
                && kid_of(&token(&login(r, ADMIN.0, ADMIN.1))) == new_kid
        })
    });
    eprintln!("a rotation signs on both replicas after {took:?}");
    for r in [a, b] {
        ok(r, WHO, Some(&admin), json!({}));
    }

    // The gauges counted from shared rows read the same on both (each recounts within 5 s).
    ok(
        b,
        "/conduit.manager.v1.GatewayService/Create",
        Some(&admin),
        json!({"gatewayId": "gw1", "name": "Site 1", "datacenter": "dc1"}),
    );
    for family in [
        "manager_servers_total",
        "manager_gateways_total",
        "manager_active_tokens",
    ] {
        eventually(Duration::from_secs(8), family, || {
            samples(a, family) == samples(b, family) && !samples(a, family).is_empty()
        });
    }
    assert_eq!(
        fam(
            b,
            "manager_servers_total",
            &[
                ("customer_id", &cust),
                ("datacenter", "dc1"),
                ("status", "active")
            ]
        ),
        Some(1.0),
        "{:?}",
        samples(b, "manager_servers_total")
    );
}

/// PostgreSQL stops under a serving manager: calls fail promptly with `unavailable` (the
/// scrape and the health check still answer), and once it is back they succeed without a
/// manager restart; every write acknowledged before is there.
#[test]
fn the_manager_rides_out_a_postgres_restart() {
    let _hashing = hashing_shared();
    let mut db = Db::new(Engine::Postgres, "manager-pg-restart");
    init_admin(&db);
    let c = db.start(&[]);
    let a = c.addr;
    let admin = token(&login(a, ADMIN.0, ADMIN.1));
    let create = "/conduit.manager.v1.CustomerService/Create";
    let mut acked = Vec::new();
    for i in 0..20 {
        let v = ok(
            a,
            create,
            Some(&admin),
            json!({"name": format!("before {i}")}),
        );
        acked.push(v["customerId"].as_str().unwrap().to_owned());
    }
    let errors_before = fam(
        a,
        "manager_db_queries_total",
        &[
            ("operation", "insert"),
            ("table", "customers"),
            ("status", "error"),
        ],
    );
    assert_eq!(errors_before, None, "no failed insert before the outage");

    db.pg.as_mut().expect("a PostgreSQL").stop();
    for (path, tok, body) in [
        (create, Some(admin.as_str()), json!({"name": "during"})),
        (LOGIN, None, json!({"email": ADMIN.0, "password": ADMIN.1})),
    ] {
        let start = Instant::now();
        let (status, v) = call(a, path, tok, &body);
        assert_eq!(
            (status, v["code"].as_str()),
            (503, Some("unavailable")),
            "{path} while PostgreSQL is down: {v}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(12),
            "{path} took {:?} to fail",
            start.elapsed()
        );
    }
    // The revocation list goes stale after 2 s: a token then cannot be checked, and the
    // caller is told to try again, not that the token is bad.
    eventually(Duration::from_secs(6), "WhoAmI unavailable", || {
        let (status, v) = call(a, WHO, Some(&admin), &json!({}));
        status == 503 && v["code"] == "unavailable"
    });
    assert_eq!(get(a, "/health", &[]).status, 200);
    assert!(fam(
        a,
        "manager_db_queries_total",
        &[
            ("operation", "insert"),
            ("table", "customers"),
            ("status", "error")
        ],
    )
    .is_some_and(|n| n >= 1.0));

    db.pg.as_mut().unwrap().restart();
    let took = eventually(Duration::from_secs(15), "writes succeed again", || {
        call(a, create, Some(&admin), &json!({"name": "after"})).0 == 200
    });
    eprintln!("writes succeed {took:?} after PostgreSQL is back");
    let admin = token(&login(a, ADMIN.0, ADMIN.1));
    let listed = ok(
        a,
        "/conduit.manager.v1.CustomerService/List",
        Some(&admin),
        json!({"pageSize": 1000}),
    );
    let stored: std::collections::HashSet<&str> = listed["customers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["customerId"].as_str().unwrap())
        .collect();
    let lost: Vec<_> = acked
        .iter()
        .filter(|id| !stored.contains(id.as_str()))
        .collect();
    assert!(lost.is_empty(), "acknowledged rows lost: {lost:?}");
}

/// The recording rules we ship aggregate the replicas' shared-row gauges with `max`: two
/// replicas reporting the same 3 servers are 3 servers, not 6 (promtool's rule tests).
#[test]
fn the_shipped_rules_count_shared_rows_once_across_replicas() {
    let rules = workspace_root().join("deploy/prometheus/conduit-manager.rules.yml");
    let dir = TempDir::new("manager-rules");
    let test = dir.0.join("rules_test.yml");
    std::fs::write(
        &test,
        format!(
            r#"rule_files: ["{}"]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'manager_servers_total{{instance="a:8080",customer_id="c1",datacenter="dc1",status="active"}}'
        values: '3 3 3'
      - series: 'manager_servers_total{{instance="b:8080",customer_id="c1",datacenter="dc1",status="active"}}'
        values: '3 3 3'
      - series: 'manager_active_tokens{{instance="a:8080"}}'
        values: '7 7 7'
      - series: 'manager_active_tokens{{instance="b:8080"}}'
        values: '7 7 7'
      - series: 'manager_auth_requests_total{{instance="a:8080",method="password",status="success"}}'
        values: '0+60x10'
      - series: 'manager_auth_requests_total{{instance="b:8080",method="password",status="success"}}'
        values: '0+60x10'
    promql_expr_test:
      - expr: conduit:manager_servers:max
        eval_time: 2m
        exp_samples:
          - labels: 'conduit:manager_servers:max{{customer_id="c1",datacenter="dc1",status="active"}}'
            value: 3
      - expr: conduit:manager_active_tokens:max
        eval_time: 2m
        exp_samples:
          - labels: 'conduit:manager_active_tokens:max'
            value: 7
      - expr: conduit:manager_auth_requests:rate5m
        eval_time: 8m
        exp_samples:
          - labels: 'conduit:manager_auth_requests:rate5m{{method="password",status="success"}}'
            value: 2
"#,
            rules.display()
        ),
    )
    .unwrap();
    for args in [
        vec![
            "check".to_owned(),
            "rules".to_owned(),
            rules.display().to_string(),
        ],
        vec![
            "test".to_owned(),
            "rules".to_owned(),
            test.display().to_string(),
        ],
    ] {
        let out = std::process::Command::new("promtool")
            .args(&args)
            .output()
            .expect("promtool (Debian's prometheus package) on PATH");
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The database password can stay off the command line (`--db-password-file`), and is never
/// in what the manager prints, even when PostgreSQL refuses it.
#[test]
fn the_database_password_stays_out_of_logs_and_command_lines() {
    let pg = postgres::Postgres::start();
    let dir = TempDir::new("manager-pg-password");
    let bare = format!("postgres://conduit@127.0.0.1:{}/postgres", pg.port());
    let right = dir.0.join("right");
    let wrong = dir.0.join("wrong");
    std::fs::write(&right, format!("{}\n", pg.password())).unwrap();
    std::fs::write(&wrong, "not the password\n").unwrap();
    let manager = |file: &std::path::Path, url: &str| {
        bin_command("conduit-manager")
            .arg("--data-dir")
            .arg(&dir.0)
            .args(["--database", url, "--db-password-file"])
            .arg(file)
            .args(["keys", "rotate"])
            .output()
            .expect("run conduit-manager")
    };
    let out = manager(&right, &bare);
    assert!(
        out.status.success(),
        "with --db-password-file: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("new signing key"));

    // Refused: the reason is said, the password (in the URL or the file) is not.
    let url = pg.url();
    for (file, url) in [(&wrong, bare.as_str()), (&wrong, url.as_str())] {
        let out = manager(file, url);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "a wrong password must fail: {text}");
        assert!(
            text.contains("28P01") || text.contains("password authentication failed"),
            "{text}"
        );
        for secret in [pg.password(), "not the password"] {
            assert!(
                !text.contains(secret),
                "the password is in the output: {text}"
            );
        }
    }
    // A serving manager's log names the database without its password.
    let c = start_component(
        "conduit-manager",
        &[
            "--data-dir",
            dir.0.to_str().unwrap(),
            "--database",
            &pg.url(),
        ],
    );
    let log = c.proc.log.lock().unwrap().clone();
    assert!(
        log.contains("PostgreSQL postgres://conduit:***@127.0.0.1"),
        "{log}"
    );
    assert!(!log.contains(pg.password()), "{log}");
}

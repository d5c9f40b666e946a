//! The manager-lite binary: first-run admin, logins, tokens, tenancy, and the metrics each of
//! those events drives — against the release binary, every story on both engines: its
//! SQLite file and a PostgreSQL server of the test's own (`sqlite::…` and `postgres::…`).

use std::net::SocketAddr;
use std::time::Duration;

use conduit_tests::*;
use serde_json::{json, Value};

pub(crate) const ADMIN: (&str, &str) = ("root@example.com", "correct horse battery staple");

/// One Connect call: `(HTTP status, JSON body)`.
pub(crate) fn call(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    body: &Value,
) -> (u16, Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
    }
    let r = request(addr, "POST", path, &headers, body.to_string().as_bytes());
    let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    (r.status, v)
}

/// A call that must succeed.
pub(crate) fn ok(addr: SocketAddr, path: &str, token: Option<&str>, body: Value) -> Value {
    let (status, v) = call(addr, path, token, &body);
    assert_eq!(status, 200, "{path} {body}: {v}");
    v
}

/// A call that must fail with Connect code `code`.
pub(crate) fn refused(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    body: Value,
    code: &str,
) -> Value {
    let (status, v) = call(addr, path, token, &body);
    assert_ne!(status, 200, "{path} {body} must be refused: {v}");
    assert_eq!(v["code"], code, "{path} {body}: {v}");
    v
}

/// Which engine a story runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Engine {
    Sqlite,
    Postgres,
}

/// A manager's database: a data directory and, on PostgreSQL, a server of the test's own
/// (stopped on drop).
pub(crate) struct Db {
    _data: TempDir,
    pub pg: Option<conduit_tests::postgres::Postgres>,
    args: Vec<String>,
}

impl Db {
    pub(crate) fn new(engine: Engine, name: &str) -> Db {
        let data = TempDir::new(name);
        let mut args = vec!["--data-dir".to_owned(), data.0.display().to_string()];
        let pg = (engine == Engine::Postgres).then(conduit_tests::postgres::Postgres::start);
        if let Some(pg) = &pg {
            args.extend(["--database".to_owned(), pg.url()]);
        }
        Db {
            _data: data,
            pg,
            args,
        }
    }

    /// Another data directory on the same PostgreSQL database: a second replica's.
    pub(crate) fn replica(&self, name: &str) -> Db {
        let data = TempDir::new(name);
        let mut args = self.args.clone();
        args[1] = data.0.display().to_string();
        Db {
            _data: data,
            pg: None,
            args,
        }
    }

    /// The flags that point a manager (serving or a command) at this database.
    pub(crate) fn args(&self) -> Vec<&str> {
        self.args.iter().map(String::as_str).collect()
    }

    /// A serving manager on this database, with `flags` too.
    pub(crate) fn start(&self, flags: &[&str]) -> Component {
        start_component("conduit-manager", &[&self.args()[..], flags].concat())
    }
}

/// `conduit-manager init` of [`ADMIN`] on this database.
pub(crate) fn init_admin(db: &Db) {
    conduit_tests::init_manager_with(&db.args(), ADMIN);
}

/// The timing test measures argon2id work against itself: the other manager tests, which
/// hash too, share this lock and the timing test holds it alone, so that the two cores are
/// not theirs while it measures.
static HASHING: std::sync::RwLock<()> = std::sync::RwLock::new(());

pub(crate) fn hashing_shared() -> std::sync::RwLockReadGuard<'static, ()> {
    HASHING
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A manager serving a fresh database that holds its first admin ([`ADMIN`]), with `flags`:
/// the database (removed on drop) and the manager.
pub(crate) fn manager_with_admin(engine: Engine, name: &str, flags: &[&str]) -> (Db, Component) {
    let db = Db::new(engine, name);
    init_admin(&db);
    let c = db.start(flags);
    (db, c)
}

pub(crate) fn login(addr: SocketAddr, email: &str, password: &str) -> Value {
    ok(
        addr,
        "/conduit.manager.v1.AuthService/Login",
        None,
        json!({"email": email, "password": password}),
    )
}

pub(crate) fn token(v: &Value) -> String {
    v["accessToken"]
        .as_str()
        .expect("an access token")
        .to_owned()
}

fn b64url(data: &[u8]) -> String {
    conduit_base64::encode_url(data)
}

fn b64url_decode(s: &str) -> Vec<u8> {
    conduit_base64::decode_url(s).expect("base64url")
}

pub(crate) fn fam(addr: SocketAddr, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
    sample(&get(addr, "/metrics", &[]).text(), family, labels)
}

fn identity_tenancy_and_the_metrics_they_drive(engine: Engine) {
    let _hashing = hashing_shared();
    let (_db, c) = manager_with_admin(engine, "manager-api", &[]);
    let a = c.addr;

    // Before any login: no auth or validation samples.
    for f in [
        "manager_auth_requests_total",
        "manager_token_validations_total",
        "manager_server_operations_total",
    ] {
        let text = get(a, "/metrics", &[]).text();
        assert!(
            !text.lines().any(|l| l.starts_with(f)),
            "{f} has samples before its event:\n{text}"
        );
    }
    assert_eq!(fam(a, "manager_active_tokens", &[]), Some(0.0));

    // No user enumeration: the same answer for an unknown e-mail and a wrong password.
    let login_path = "/conduit.manager.v1.AuthService/Login";
    let wrong = refused(
        a,
        login_path,
        None,
        json!({"email": ADMIN.0, "password": "not the password at all"}),
        "unauthenticated",
    );
    let unknown = refused(
        a,
        login_path,
        None,
        json!({"email": "nobody@example.com", "password": "not the password at all"}),
        "unauthenticated",
    );
    assert_eq!(wrong, unknown);
    assert_eq!(
        fam(
            a,
            "manager_auth_requests_total",
            &[("method", "password"), ("status", "invalid_credentials")]
        ),
        Some(2.0)
    );

    let admin = token(&login(a, ADMIN.0, ADMIN.1));
    assert_eq!(
        fam(
            a,
            "manager_auth_requests_total",
            &[("method", "password"), ("status", "success")]
        ),
        Some(1.0)
    );
    assert_eq!(fam(a, "manager_active_tokens", &[]), Some(1.0));
    let who = ok(
        a,
        "/conduit.manager.v1.AuthService/WhoAmI",
        Some(&admin),
        json!({}),
    );
    assert_eq!(
        (who["email"].as_str(), who["role"].as_str()),
        (Some(ADMIN.0), Some("admin"))
    );
    assert_eq!(
        fam(a, "manager_token_validations_total", &[("status", "valid")]),
        Some(1.0)
    );

    // Two customers, an operator and a viewer each; names verbatim.
    let mut customers = Vec::new();
    for name in ["Acme \"Rack\" O'Brien 🚀", "Globex"] {
        let v = ok(
            a,
            "/conduit.manager.v1.CustomerService/Create",
            Some(&admin),
            json!({"name": name}),
        );
        assert_eq!(v["name"], name);
        customers.push(v["customerId"].as_str().unwrap().to_owned());
    }
    let mut users = Vec::new();
    for (i, cid) in customers.iter().enumerate() {
        for role in ["operator", "viewer"] {
            let email = format!("{role}{i}@example.com");
            ok(
                a,
                "/conduit.manager.v1.UserService/Create",
                Some(&admin),
                json!({"email": email, "name": "Zoë", "password": "a long enough secret",
                       "role": role, "customerId": cid}),
            );
            users.push(token(&login(a, &email, "a long enough secret")));
        }
    }
    let (op_a, viewer_a, op_b) = (&users[0], &users[1], &users[2]);
    // E-mails are one account whatever their case, Unicode included.
    ok(
        a,
        "/conduit.manager.v1.UserService/Create",
        Some(&admin),
        json!({"email": "Zoë.Upper@Example.com", "password": "a long enough secret",
               "role": "viewer", "customerId": customers[0]}),
    );
    refused(
        a,
        "/conduit.manager.v1.UserService/Create",
        Some(&admin),
        json!({"email": "ZOË.UPPER@example.com", "password": "a long enough secret",
               "role": "viewer", "customerId": customers[0]}),
        "already_exists",
    );
    login(a, "ZOË.UPPER@EXAMPLE.COM", "a long enough secret");
    refused(
        a,
        "/conduit.manager.v1.UserService/Create",
        Some(&admin),
        json!({"email": "not an e-mail", "password": "a long enough secret",
               "role": "viewer", "customerId": customers[0]}),
        "invalid_argument",
    );

    // Servers: two of A's, one of B's, one unassigned. The gauge follows the rows.
    let create = "/conduit.manager.v1.ServerService/Create";
    for (id, owner) in [
        ("a-1", Some(&customers[0])),
        ("a-2", Some(&customers[0])),
        ("b-1", Some(&customers[1])),
        ("spare", None),
    ] {
        let mut body = json!({"serverId": id, "datacenter": "dc1", "protocol": "ipmi",
                              "capabilities": ["power", "sensors"]});
        if let Some(o) = owner {
            body["customerId"] = json!(o);
        }
        ok(a, create, Some(&admin), body);
    }
    assert_eq!(
        fam(
            a,
            "manager_servers_total",
            &[
                ("customer_id", &customers[0]),
                ("datacenter", "dc1"),
                ("status", "active")
            ]
        ),
        Some(2.0)
    );
    assert_eq!(
        fam(a, "manager_servers_total", &[("customer_id", "unassigned")]),
        Some(1.0)
    );
    assert_eq!(
        fam(
            a,
            "manager_server_operations_total",
            &[("operation", "create"), ("status", "ok")]
        ),
        Some(4.0)
    );

    // Tenancy: A sees only A's; B's server does not exist for A.
    let list = ok(
        a,
        "/conduit.manager.v1.ServerService/List",
        Some(viewer_a),
        json!({}),
    );
    let ids: Vec<&str> = list["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["serverId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a-1", "a-2"]);
    let get_path = "/conduit.manager.v1.ServerService/Get";
    let b_for_a = refused(
        a,
        get_path,
        Some(op_a),
        json!({"serverId": "b-1"}),
        "not_found",
    );
    let ghost = refused(
        a,
        get_path,
        Some(op_a),
        json!({"serverId": "ghost"}),
        "not_found",
    );
    assert_eq!(b_for_a, ghost, "no existence leak");
    ok(a, get_path, Some(op_b), json!({"serverId": "b-1"}));
    // Asking for another customer's list is answered with one's own.
    let list = ok(
        a,
        "/conduit.manager.v1.ServerService/List",
        Some(op_a),
        json!({"customerId": customers[1]}),
    );
    assert_eq!(list["servers"].as_array().unwrap().len(), 2);
    // Non-admins change nothing.
    for (path, body) in [
        (
            create,
            json!({"serverId": "x", "datacenter": "dc1", "protocol": "ipmi"}),
        ),
        (
            "/conduit.manager.v1.ServerService/Assign",
            json!({"serverId": "a-1", "customerId": customers[1]}),
        ),
        (
            "/conduit.manager.v1.ServerService/Delete",
            json!({"serverId": "a-1"}),
        ),
        (
            "/conduit.manager.v1.CustomerService/Create",
            json!({"name": "mine"}),
        ),
        (
            "/conduit.manager.v1.UserService/Create",
            json!({"email": "x@example.com", "password": "a long enough secret",
                   "role": "admin"}),
        ),
    ] {
        refused(a, path, Some(viewer_a), body.clone(), "permission_denied");
        refused(a, path, Some(op_a), body, "permission_denied");
    }

    // Invalid input changes nothing and says why.
    for body in [
        json!({"serverId": "a-9", "datacenter": "dc1", "protocol": "ipmi", "bogus": 1}),
        json!({"serverId": "bad id/", "datacenter": "dc1", "protocol": "ipmi"}),
        json!({"serverId": "a-9", "datacenter": "dc1", "protocol": "telnet"}),
    ] {
        refused(a, create, Some(&admin), body, "invalid_argument");
    }
    refused(
        a,
        "/conduit.manager.v1.ServerService/List",
        Some(&admin),
        json!({"pageSize": 100000}),
        "invalid_argument",
    );
    let (status, _) = {
        let r = request(
            a,
            "POST",
            create,
            &[
                ("Content-Type", "application/json"),
                ("Authorization", &format!("Bearer {admin}")),
            ],
            b"{not json",
        );
        (r.status, r)
    };
    assert_eq!(status, 400);

    // Forged tokens: none verifies, each counted by why.
    let parts: Vec<&str> = admin.split('.').collect();
    let claims: Value = serde_json::from_slice(&b64url_decode(parts[1])).unwrap();
    let header: Value = serde_json::from_slice(&b64url_decode(parts[0])).unwrap();
    let mut promoted = claims.clone();
    promoted["sub"] = json!("someone-else");
    let none_header = b64url(br#"{"alg":"none","typ":"JWT"}"#);
    let hs_header = b64url(
        json!({"alg":"HS256","typ":"JWT","kid": header["kid"]})
            .to_string()
            .as_bytes(),
    );
    let forged = [
        (
            format!("{none_header}.{}.", parts[1]),
            "unsupported_algorithm",
        ),
        (
            format!("{hs_header}.{}.{}", parts[1], parts[2]),
            "unsupported_algorithm",
        ),
        (
            format!(
                "{}.{}.{}",
                parts[0],
                b64url(promoted.to_string().as_bytes()),
                parts[2]
            ),
            "bad_signature",
        ),
        ("garbage".to_owned(), "malformed"),
    ];
    for (t, why) in &forged {
        refused(
            a,
            "/conduit.manager.v1.AuthService/WhoAmI",
            Some(t),
            json!({}),
            "unauthenticated",
        );
        assert!(
            fam(a, "manager_token_validations_total", &[("status", why)]).unwrap_or(0.0) >= 1.0,
            "{why} not counted"
        );
    }

    // Refresh rotates; a spent refresh token coming back revokes its whole session.
    let pair = login(a, "operator0@example.com", "a long enough secret");
    let first = pair["refreshToken"].as_str().unwrap().to_owned();
    let refresh_path = "/conduit.manager.v1.AuthService/Refresh";
    let next = ok(a, refresh_path, None, json!({"refreshToken": first}));
    let rotated_access = token(&next);
    ok(
        a,
        "/conduit.manager.v1.AuthService/WhoAmI",
        Some(&rotated_access),
        json!({}),
    );
    refused(
        a,
        refresh_path,
        None,
        json!({"refreshToken": first}),
        "unauthenticated",
    );
    assert_eq!(
        fam(
            a,
            "manager_auth_requests_total",
            &[("method", "refresh"), ("status", "reused")]
        ),
        Some(1.0)
    );
    refused(
        a,
        "/conduit.manager.v1.AuthService/WhoAmI",
        Some(&rotated_access),
        json!({}),
        "unauthenticated",
    );
    refused(
        a,
        refresh_path,
        None,
        json!({"refreshToken": next["refreshToken"]}),
        "unauthenticated",
    );

    // Logout revokes the session's access token at once.
    ok(
        a,
        "/conduit.manager.v1.AuthService/Logout",
        Some(op_b),
        json!({}),
    );
    refused(
        a,
        "/conduit.manager.v1.AuthService/WhoAmI",
        Some(op_b),
        json!({}),
        "unauthenticated",
    );
    assert!(
        fam(
            a,
            "manager_token_validations_total",
            &[("status", "revoked")]
        )
        .unwrap()
            >= 2.0
    );

    // API keys: shown once, at most the creator's role, revocable.
    let key = ok(
        a,
        "/conduit.manager.v1.ApiKeyService/Create",
        Some(viewer_a),
        json!({"name": "ci"}),
    );
    refused(
        a,
        "/conduit.manager.v1.ApiKeyService/Create",
        Some(viewer_a),
        json!({"name": "up", "role": "operator"}),
        "permission_denied",
    );
    let api_key = key["apiKey"].as_str().unwrap().to_owned();
    // A key cannot mint keys (a stolen one would outlive its revocation).
    refused(
        a,
        "/conduit.manager.v1.ApiKeyService/Create",
        Some(&api_key),
        json!({"name": "successor"}),
        "permission_denied",
    );
    // An admin's operator or viewer key is scoped to the customer it names.
    refused(
        a,
        "/conduit.manager.v1.ApiKeyService/Create",
        Some(&admin),
        json!({"name": "unscoped", "role": "viewer"}),
        "invalid_argument",
    );
    let scoped = ok(
        a,
        "/conduit.manager.v1.ApiKeyService/Create",
        Some(&admin),
        json!({"name": "b's robot", "role": "viewer", "customerId": customers[1]}),
    );
    let seen = ok(
        a,
        "/conduit.manager.v1.ServerService/List",
        Some(scoped["apiKey"].as_str().unwrap()),
        json!({}),
    );
    assert_eq!(seen["servers"].as_array().unwrap().len(), 1, "{seen}");
    let via_key = ok(
        a,
        "/conduit.manager.v1.ServerService/List",
        Some(&api_key),
        json!({}),
    );
    assert_eq!(via_key["servers"].as_array().unwrap().len(), 2);
    let key_login = ok(a, login_path, None, json!({"apiKey": api_key}));
    assert!(key_login.get("refreshToken").is_none());
    let keys = ok(
        a,
        "/conduit.manager.v1.ApiKeyService/List",
        Some(viewer_a),
        json!({}),
    );
    assert!(!keys
        .to_string()
        .contains(api_key.rsplit('_').next().unwrap()));
    ok(
        a,
        "/conduit.manager.v1.ApiKeyService/Revoke",
        Some(viewer_a),
        json!({"keyId": key["key"]["keyId"]}),
    );
    refused(
        a,
        "/conduit.manager.v1.ServerService/List",
        Some(&api_key),
        json!({}),
        "unauthenticated",
    );
    refused(
        a,
        "/conduit.manager.v1.ServerService/List",
        Some(&token(&key_login)),
        json!({}),
        "unauthenticated",
    );

    // The audit log records the admin's server changes; tenants see only their own.
    let all = ok(
        a,
        "/conduit.manager.v1.AuditService/List",
        Some(&admin),
        json!({}),
    );
    assert!(all["records"].as_array().unwrap().len() >= 4);
    let mine = ok(
        a,
        "/conduit.manager.v1.AuditService/List",
        Some(viewer_a),
        json!({}),
    );
    assert!(mine["records"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["serverId"].as_str().is_some_and(|s| s.starts_with("a-"))));

    // The database layer drove its families.
    assert!(
        fam(
            a,
            "manager_db_queries_total",
            &[
                ("operation", "insert"),
                ("table", "servers"),
                ("status", "ok")
            ]
        )
        .unwrap()
            >= 4.0
    );
    assert!(fam(a, "manager_db_connections", &[]).unwrap() >= 1.0);
    assert!(
        fam(
            a,
            "manager_rpc_calls_total",
            &[
                ("service", "conduit.manager.v1.ServerService"),
                ("method", "Get"),
                ("status", "not_found")
            ]
        )
        .unwrap()
            >= 2.0
    );
}

fn acknowledged_writes_survive_kill_9(engine: Engine) {
    let _hashing = hashing_shared();
    let db = Db::new(engine, "manager-kill9");
    init_admin(&db);
    let mut c = db.start(&[]);
    let admin = token(&login(c.addr, ADMIN.0, ADMIN.1));
    let addr = c.addr;
    let writer = std::thread::spawn(move || {
        let mut acked = Vec::new();
        for i in 0.. {
            let r = std::panic::catch_unwind(|| {
                call(
                    addr,
                    "/conduit.manager.v1.CustomerService/Create",
                    Some(&admin),
                    &json!({"name": format!("customer {i}")}),
                )
            });
            match r {
                Ok((200, v)) => acked.push(v["customerId"].as_str().unwrap().to_owned()),
                _ => break,
            }
        }
        acked
    });
    // a moment that depends on the run, not a fixed point in the stream
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    std::thread::sleep(Duration::from_millis(300 + u64::from(nanos % 700)));
    c.proc.kill9();
    let acked = writer.join().unwrap();
    assert!(
        acked.len() > 5,
        "only {} writes before the kill",
        acked.len()
    );

    // SQLite's file passes its integrity check (PostgreSQL checks its own pages).
    if engine == Engine::Sqlite {
        assert_eq!(manager_cli(&db, &["check"]).trim(), "ok");
    }

    let c = db.start(&[]);
    let admin = token(&login(c.addr, ADMIN.0, ADMIN.1));
    let mut stored = std::collections::HashSet::new();
    let mut page_token: Option<String> = None;
    loop {
        let mut body = json!({"pageSize": 1000});
        if let Some(t) = &page_token {
            body["pageToken"] = json!(t);
        }
        let page = ok(
            c.addr,
            "/conduit.manager.v1.CustomerService/List",
            Some(&admin),
            body,
        );
        for cu in page["customers"].as_array().unwrap() {
            stored.insert(cu["customerId"].as_str().unwrap().to_owned());
        }
        match page["nextPageToken"].as_str() {
            Some(t) => page_token = Some(t.to_owned()),
            None => break,
        }
    }
    let lost: Vec<_> = acked.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost",
        lost.len(),
        acked.len()
    );
}

fn gateways_and_agents_with_their_credentials(engine: Engine) {
    let _hashing = hashing_shared();
    let (_db, c) = manager_with_admin(engine, "manager-gw", &[]);
    let a = c.addr;
    let admin = token(&login(a, ADMIN.0, ADMIN.1));
    let gw = |m: &str| format!("/conduit.manager.v1.GatewayService/{m}");
    let reg = "manager_gateway_registrations_total";
    assert_eq!(fam(a, reg, &[]), None, "no registration yet");

    let created = ok(
        a,
        &gw("Create"),
        Some(&admin),
        json!({"gatewayId": "gw1", "name": "Site 1", "datacenter": "dc1"}),
    );
    let cred = created["credential"].as_str().unwrap().to_owned();
    assert!(cred.starts_with("cgw_"), "{cred}");
    assert_eq!(
        fam(
            a,
            "manager_gateways_total",
            &[("datacenter", "dc1"), ("status", "down")]
        ),
        Some(1.0)
    );

    // Wrong credentials: a made-up one, and a user's access token.
    for bad in ["cgw_AAAAAAAAAAAA_nope", admin.as_str()] {
        refused(a, &gw("Register"), Some(bad), json!({}), "unauthenticated");
    }
    assert_eq!(fam(a, reg, &[("status", "invalid_credential")]), Some(2.0));
    let r = ok(
        a,
        &gw("Register"),
        Some(&cred),
        json!({"address": "https://gw1.example:8443", "version": "0.1.0"}),
    );
    assert_eq!(r["datacenter"], "dc1");
    assert!(r["revocationPollSecs"].as_u64().unwrap() <= 30);
    assert_eq!(fam(a, reg, &[("status", "success")]), Some(1.0));
    assert_eq!(
        fam(
            a,
            "manager_gateways_total",
            &[("datacenter", "dc1"), ("status", "up")]
        ),
        Some(1.0)
    );
    ok(a, &gw("Heartbeat"), Some(&cred), json!({}));
    // Admin calls are not for gateways, gateway calls not for users.
    refused(a, &gw("List"), Some(&cred), json!({}), "unauthenticated");
    let listed = ok(a, &gw("List"), Some(&admin), json!({}));
    assert_eq!(listed["gateways"][0]["address"], "https://gw1.example:8443");
    assert!(!listed.to_string().contains(&cred[cred.len() - 20..]));

    // An agent credential, checked by the gateway.
    let agent = ok(
        a,
        "/conduit.manager.v1.AgentService/Create",
        Some(&admin),
        json!({"agentId": "agent-1", "datacenter": "dc1"}),
    );
    let agent_cred = agent["credential"].as_str().unwrap().to_owned();
    let v = ok(
        a,
        &gw("VerifyAgent"),
        Some(&cred),
        json!({"credential": agent_cred}),
    );
    assert_eq!(v["agentId"], "agent-1");
    refused(
        a,
        &gw("VerifyAgent"),
        Some(&cred),
        json!({"credential": "cag_AAAAAAAAAAAA_forged"}),
        "unauthenticated",
    );
    ok(
        a,
        &gw("ReportAgents"),
        Some(&cred),
        json!({"agentIds": ["agent-1"]}),
    );
    let agents = ok(
        a,
        "/conduit.manager.v1.AgentService/List",
        Some(&admin),
        json!({}),
    );
    assert_eq!(agents["agents"][0]["connected"], true);
    assert_eq!(agents["agents"][0]["gatewayId"], "gw1");

    // The agent's servers arrive unassigned; the gateway sees its datacenter's inventory.
    ok(
        a,
        &gw("ReportServers"),
        Some(&cred),
        json!({"agentId": "agent-1", "servers": [
            {"serverId": "rack1-u1", "protocol": "ipmi", "capabilities": ["power", "sol"]}]}),
    );
    let inv = ok(a, &gw("ListServers"), Some(&cred), json!({}));
    assert_eq!(inv["servers"][0]["serverId"], "rack1-u1");
    assert!(inv["servers"][0].get("customerId").is_none());
    assert_eq!(
        fam(a, "manager_servers_total", &[("customer_id", "unassigned")]),
        Some(1.0)
    );

    // Audit from the gateway, owner filled in by the manager.
    ok(
        a,
        &gw("RecordAudit"),
        Some(&cred),
        json!({"records": [{"at": 1, "actor": "u1", "action": "power.cycle",
                            "serverId": "rack1-u1", "result": "ok"}]}),
    );
    let audit = ok(
        a,
        "/conduit.manager.v1.AuditService/List",
        Some(&admin),
        json!({}),
    );
    assert!(audit.to_string().contains("power.cycle"), "{audit}");

    // Revocations reach the gateway's list: a logged-out session, a revoked agent.
    let user_login = login(a, ADMIN.0, ADMIN.1);
    let user = token(&user_login);
    ok(
        a,
        "/conduit.manager.v1.AuthService/Logout",
        Some(&user),
        json!({}),
    );
    ok(
        a,
        "/conduit.manager.v1.AgentService/Revoke",
        Some(&admin),
        json!({"agentId": "agent-1"}),
    );
    let revs = ok(a, &gw("ListRevocations"), Some(&cred), json!({}));
    let kinds: Vec<&str> = revs["revocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"session") && kinds.contains(&"agent"),
        "{revs}"
    );
    refused(
        a,
        &gw("VerifyAgent"),
        Some(&cred),
        json!({"credential": agent_cred}),
        "unauthenticated",
    );

    // A revoked gateway is refused at once.
    ok(a, &gw("Revoke"), Some(&admin), json!({"gatewayId": "gw1"}));
    refused(
        a,
        &gw("Heartbeat"),
        Some(&cred),
        json!({}),
        "unauthenticated",
    );
    assert_eq!(
        fam(
            a,
            "manager_gateways_total",
            &[("datacenter", "dc1"), ("status", "revoked")]
        ),
        Some(1.0)
    );
}

/// Every authenticated route refuses every kind of bad token — expired, revoked, unsigned
/// (`alg: none`), signed by another key under the manager's key id, HMAC-signed with the
/// manager's public key, tampered — and changes nothing; and every route that names a row
/// answers a user of another customer as if the row did not exist.
fn every_route_refuses_forged_tokens_and_other_tenants(engine: Engine) {
    let _hashing = hashing_shared();
    let db = Db::new(engine, "manager-forged");
    init_admin(&db);
    // Access tokens valid 1 s, so that one expires during the test (plus the 30 s leeway).
    let c = db.start(&["--access-ttl", "1"]);
    let a = c.addr;
    let to_expire = token(&login(a, ADMIN.0, ADMIN.1));
    let expiry_starts = std::time::Instant::now();
    let admin_pair = login(a, ADMIN.0, ADMIN.1);

    // The routes, from the manager's own index.
    let index = get(a, "/routes", &[]).text();
    let routes: Vec<&str> = index
        .lines()
        .filter(|l| l.starts_with("/conduit.manager.v1."))
        .collect();
    assert!(routes.len() >= 30, "{index}");
    let public = [
        "/conduit.manager.v1.AuthService/Login",
        "/conduit.manager.v1.AuthService/Refresh",
    ];

    // A fresh admin token for set-up: refresh before each use (1 s lifetime).
    let mut refresh = admin_pair["refreshToken"].as_str().unwrap().to_owned();
    let mut admin = || {
        let v = ok(
            a,
            "/conduit.manager.v1.AuthService/Refresh",
            None,
            json!({"refreshToken": refresh}),
        );
        refresh = v["refreshToken"].as_str().unwrap().to_owned();
        token(&v)
    };
    let mut customers = Vec::new();
    for name in ["A", "B"] {
        let v = ok(
            a,
            "/conduit.manager.v1.CustomerService/Create",
            Some(&admin()),
            json!({"name": name}),
        );
        customers.push(v["customerId"].as_str().unwrap().to_owned());
    }
    let b_user = ok(
        a,
        "/conduit.manager.v1.UserService/Create",
        Some(&admin()),
        json!({"email": "op@b.example", "password": "a long enough secret", "role": "operator",
               "customerId": customers[1]}),
    );
    ok(
        a,
        "/conduit.manager.v1.UserService/Create",
        Some(&admin()),
        json!({"email": "op@a.example", "password": "a long enough secret", "role": "operator",
               "customerId": customers[0]}),
    );
    ok(
        a,
        "/conduit.manager.v1.ServerService/Create",
        Some(&admin()),
        json!({"serverId": "b-1", "datacenter": "dc1", "protocol": "ipmi",
               "customerId": customers[1]}),
    );
    let b_login = login(a, "op@b.example", "a long enough secret");
    let b_key = ok(
        a,
        "/conduit.manager.v1.ApiKeyService/Create",
        Some(&token(&b_login)),
        json!({"name": "b's"}),
    );

    // The forgeries, from a real token's parts.
    let real = admin();
    let parts: Vec<&str> = real.split('.').collect();
    let header: Value = serde_json::from_slice(&b64url_decode(parts[0])).unwrap();
    let kid = header["kid"].as_str().unwrap().to_owned();
    let claims: Value = serde_json::from_slice(&b64url_decode(parts[1])).unwrap();
    let claims: conduit_auth::Claims = serde_json::from_value(claims).unwrap();
    let mut long_lived = claims.clone();
    long_lived.exp += 3600;
    let other_key = conduit_auth::SigningKey::generate(&kid).unwrap();
    let wrongly_signed = conduit_auth::sign(&other_key, &long_lived);
    let jwks: Value = serde_json::from_str(&get(a, "/.well-known/jwks.json", &[]).text()).unwrap();
    let public_key = b64url_decode(jwks["keys"][0]["x"].as_str().unwrap());
    let hs_header = b64url(
        json!({"alg": "HS256", "typ": "JWT", "kid": kid})
            .to_string()
            .as_bytes(),
    );
    let hs_body = b64url(serde_json::to_string(&long_lived).unwrap().as_bytes());
    let mac = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &public_key),
        format!("{hs_header}.{hs_body}").as_bytes(),
    );
    let hmac_with_public_key = format!("{hs_header}.{hs_body}.{}", b64url(mac.as_ref()));
    let unsigned = format!("{}.{hs_body}.", b64url(br#"{"alg":"none","typ":"JWT"}"#));
    let mut promoted = long_lived.clone();
    promoted.sub = b_user["userId"].as_str().unwrap().to_owned();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64url(serde_json::to_string(&promoted).unwrap().as_bytes()),
        parts[2]
    );
    let revoked_login = login(a, "op@a.example", "a long enough secret");
    let revoked = token(&revoked_login);
    ok(
        a,
        "/conduit.manager.v1.AuthService/Logout",
        Some(&revoked),
        json!({}),
    );

    let inserts_before = metric(a, "manager_db_queries_total", &[("operation", "insert")]);
    all_routes_refuse(a, &routes, &public, &[("revoked", &revoked, "revoked")]);

    // Wait out the 1 s lifetime and the 30 s leeway of the first token.
    let wait = Duration::from_secs(32).saturating_sub(expiry_starts.elapsed());
    std::thread::sleep(wait);
    let forged = [
        ("expired", to_expire.as_str(), "expired"),
        ("unsigned", unsigned.as_str(), "unsupported_algorithm"),
        ("wrongly signed", wrongly_signed.as_str(), "bad_signature"),
        (
            "HMAC with the public key",
            hmac_with_public_key.as_str(),
            "unsupported_algorithm",
        ),
        ("tampered", tampered.as_str(), "bad_signature"),
    ];
    all_routes_refuse(a, &routes, &public, &forged);
    assert_eq!(
        metric(a, "manager_db_queries_total", &[("operation", "insert")]),
        inserts_before,
        "a refused call wrote something"
    );

    // Another tenant's rows: as A's operator, every route that names one of B's.
    let op_a = token(&login(a, "op@a.example", "a long enough secret"));
    for (route, body) in [
        (
            "/conduit.manager.v1.ServerService/Get",
            json!({"serverId": "b-1"}),
        ),
        (
            "/conduit.manager.v1.CustomerService/Get",
            json!({"customerId": customers[1]}),
        ),
        (
            "/conduit.manager.v1.UserService/Get",
            json!({"userId": b_user["userId"]}),
        ),
        (
            "/conduit.manager.v1.ApiKeyService/Revoke",
            json!({"keyId": b_key["key"]["keyId"]}),
        ),
    ] {
        let (_, theirs) = call(a, route, Some(&op_a), &body);
        assert_eq!(theirs["code"], "not_found", "{route}: {theirs}");
        let ghost = body.to_string().replace(['b', 'B'], "z");
        let (_, none) = call(
            a,
            route,
            Some(&op_a),
            &serde_json::from_str(&ghost).unwrap(),
        );
        assert_eq!(
            none["code"], "not_found",
            "{route} for a row that does not exist"
        );
    }
    // …and the lists give nothing of B's.
    for route in [
        "/conduit.manager.v1.ServerService/List",
        "/conduit.manager.v1.CustomerService/List",
        "/conduit.manager.v1.UserService/List",
        "/conduit.manager.v1.AuditService/List",
    ] {
        let v = ok(a, route, Some(&op_a), json!({}));
        let text = v.to_string();
        assert!(
            !text.contains("b-1") && !text.contains(&customers[1]) && !text.contains("op@b"),
            "{route} leaks B: {text}"
        );
    }
    // B's key still works: A's revoke did nothing.
    ok(
        a,
        "/conduit.manager.v1.ServerService/Get",
        Some(b_key["apiKey"].as_str().unwrap()),
        json!({"serverId": "b-1"}),
    );
}

/// Calls every route but `public` with each of `forged` (what, token, expected validation
/// status): each must answer 401 `unauthenticated`, counted under its status.
fn all_routes_refuse(
    a: SocketAddr,
    routes: &[&str],
    public: &[&str],
    forged: &[(&str, &str, &str)],
) {
    for route in routes.iter().filter(|r| !public.contains(r)) {
        for (what, t, why) in forged {
            let before = metric(a, "manager_token_validations_total", &[("status", why)]);
            let (status, v) = call(a, route, Some(t), &json!({}));
            assert_eq!(
                (status, v["code"].as_str()),
                (401, Some("unauthenticated")),
                "{route} with a {what} token: {v}"
            );
            // the calls gateways make take gateway credentials and never look at user tokens
            let gateway_call = route.contains("GatewayService/")
                && !["/Create", "/List", "/Revoke"]
                    .iter()
                    .any(|m| route.ends_with(m));
            if !gateway_call {
                let after = metric(a, "manager_token_validations_total", &[("status", why)]);
                assert!(
                    after > before,
                    "{route} with a {what} token: not counted as {why}"
                );
            }
        }
    }
}

/// No user enumeration by timing: a wrong password and an unknown e-mail cost the manager the
/// same work (its CPU time for each kind within 20 %), and both count toward the throttle,
/// which then refuses with a retry time.
fn unknown_accounts_cost_what_wrong_passwords_cost_and_both_are_throttled(engine: Engine) {
    let _alone = HASHING
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (_db, c) = manager_with_admin(engine, "manager-timing", &[]);
    let a = c.addr;
    let admin = token(&login(a, ADMIN.0, ADMIN.1));
    let cust = ok(
        a,
        "/conduit.manager.v1.CustomerService/Create",
        Some(&admin),
        json!({"name": "timing"}),
    );
    // One real account per wrong-password attempt, so no account reaches its own throttle;
    // 20 failures in all, the address's free allowance.
    const PAIRS: usize = 10;
    for i in 0..PAIRS {
        ok(
            a,
            "/conduit.manager.v1.UserService/Create",
            Some(&admin),
            json!({"email": format!("real{i}@example.com"), "password": "a long enough secret",
                   "role": "viewer", "customerId": cust["customerId"]}),
        );
    }
    let path = "/conduit.manager.v1.AuthService/Login";
    // The manager's CPU time, not the wall clock: CI builds beside the tests, and that load
    // moves wall times by tens of ms either way but not the work the manager does. An
    // unknown e-mail that skipped the hash would cost ~100 times less; one hashed more
    // cheaply, a few times less.
    let pid = c.proc.child.id().to_string();
    let timed = |email: String| {
        let before = proc_cpu_ns(&pid);
        let (status, v) = call(
            a,
            path,
            None,
            &json!({"email": email, "password": "wrong guess!"}),
        );
        assert_eq!(
            (status, v["code"].as_str()),
            (401, Some("unauthenticated")),
            "{v}"
        );
        (proc_cpu_ns(&pid) - before) as f64 / 1e9
    };
    let (mut wrong, mut unknown) = (Vec::new(), Vec::new());
    for i in 0..PAIRS {
        // interleaved, each first in turn, so that cache pressure weighs on both alike
        if i % 2 == 0 {
            wrong.push(timed(format!("real{i}@example.com")));
            unknown.push(timed(format!("ghost{i}@example.com")));
        } else {
            unknown.push(timed(format!("ghost{i}@example.com")));
            wrong.push(timed(format!("real{i}@example.com")));
        }
    }
    // Each pair ran side by side, under the same load: the median of the pairs' ratios is
    // the p50 comparison, robust to load that comes and goes between pairs.
    let ratios: Vec<f64> = wrong.iter().zip(&unknown).map(|(w, u)| w / u).collect();
    let p50 = conduit_tests::stats::median(&ratios);
    let (w, u) = (
        conduit_tests::stats::median(&wrong),
        conduit_tests::stats::median(&unknown),
    );
    assert!(
        w > 0.02 && p50.max(1.0 / p50) <= 1.2,
        "manager CPU p50 for a wrong password {:.1} ms, for an unknown e-mail {:.1} ms; \
         per-pair ratio p50 {p50:.2}",
        w * 1e3,
        u * 1e3
    );

    // The 21st failure from this address is throttled, whatever the account, and says when.
    let r = request(
        a,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        json!({"email": "real0@example.com", "password": "a long enough secret"})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 429, "{}", r.text());
    assert!(r
        .header("Retry-After")
        .is_some_and(|s| s.parse::<u64>().unwrap() >= 1));
    assert_eq!(
        fam(
            a,
            "manager_auth_requests_total",
            &[("method", "password"), ("status", "throttled")]
        ),
        Some(1.0)
    );
    assert_eq!(
        fam(
            a,
            "manager_auth_requests_total",
            &[("method", "password"), ("status", "invalid_credentials")]
        ),
        Some((2 * PAIRS) as f64)
    );
}

/// `conduit-manager --data-dir DIR ARGS…`, which must succeed: its stdout.
pub(crate) fn manager_cli(db: &Db, args: &[&str]) -> String {
    let out = bin_command("conduit-manager")
        .args(db.args())
        .args(args)
        .output()
        .expect("run conduit-manager");
    assert!(
        out.status.success(),
        "conduit-manager {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The key id in an access token's header.
pub(crate) fn kid_of(jwt: &str) -> String {
    let header: Value = serde_json::from_slice(&b64url_decode(jwt.split('.').next().unwrap()))
        .expect("a JSON header");
    header["kid"].as_str().expect("a kid").to_owned()
}

/// The key ids the manager publishes.
pub(crate) fn published_kids(addr: SocketAddr) -> Vec<String> {
    let jwks: Value =
        serde_json::from_str(&get(addr, "/.well-known/jwks.json", &[]).text()).expect("a JWKS");
    jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["kid"].as_str().expect("kid").to_owned())
        .collect()
}

/// Key rotation, run from the CLI beside a serving manager: the new key signs within the
/// reload bound and the old one keeps verifying (nobody is logged out); `--drop-old` ends the
/// old keys' tokens, and a refresh gets a token of the new key.
fn signing_keys_rotate_without_logging_anyone_out(engine: Engine) {
    let _hashing = hashing_shared();
    let (db, c) = manager_with_admin(engine, "manager-keys", &[]);
    let a = c.addr;
    let who = "/conduit.manager.v1.AuthService/WhoAmI";
    let first = token(&login(a, ADMIN.0, ADMIN.1));
    let k1 = kid_of(&first);
    assert_eq!(published_kids(a), std::slice::from_ref(&k1));

    let out = manager_cli(&db, &["keys", "rotate"]);
    let k2 = out
        .split_whitespace()
        .nth(3)
        .expect("the new key id")
        .trim_end_matches(';')
        .to_owned();
    assert_ne!(k2, k1, "{out}");
    let both = wait_for(Duration::from_secs(20), Duration::from_millis(100), || {
        Some(published_kids(a)).filter(|k| k.len() == 2)
    })
    .map(|mut k| {
        k.sort();
        k
    });
    let mut want = vec![k1.clone(), k2.clone()];
    want.sort();
    assert_eq!(both, Some(want), "within the 5 s reload");
    let second = login(a, ADMIN.0, ADMIN.1);
    assert_eq!(kid_of(&token(&second)), k2, "the new key signs");
    ok(a, who, Some(&first), json!({}));
    let listed = manager_cli(&db, &["keys", "list"]);
    assert!(
        listed.contains(&format!("{k1}  created"))
            && listed
                .lines()
                .any(|l| l.starts_with(&k1) && l.contains("retired at"))
            && listed
                .lines()
                .any(|l| l.starts_with(&k2) && l.ends_with("signs")),
        "{listed}"
    );

    // A key that may have leaked: dropped, its tokens refused once reloaded.
    let before = fam(
        a,
        "manager_token_validations_total",
        &[("status", "unknown_key")],
    )
    .unwrap_or(0.0);
    let out = manager_cli(&db, &["keys", "rotate", "--drop-old"]);
    assert!(out.contains("the old keys are deleted"), "{out}");
    let k3 = wait_for(Duration::from_secs(20), Duration::from_millis(100), || {
        Some(published_kids(a)).filter(|k| k.len() == 1 && k[0] != k2)
    })
    .expect("only the newest key published within the 5 s reload");
    for t in [&first, &token(&second)] {
        refused(a, who, Some(t), json!({}), "unauthenticated");
    }
    assert_eq!(
        fam(
            a,
            "manager_token_validations_total",
            &[("status", "unknown_key")]
        ),
        Some(before + 2.0)
    );
    let renewed = ok(
        a,
        "/conduit.manager.v1.AuthService/Refresh",
        None,
        json!({"refreshToken": second["refreshToken"]}),
    );
    assert_eq!(kid_of(&token(&renewed)), k3[0]);
    ok(a, who, Some(&token(&renewed)), json!({}));
}

/// A user's rights change and their tokens follow at once: a demotion ends their tokens (a
/// refresh brings the new role) and the keys above it, disabling ends every session and login,
/// a password change ends every session and the old password; the last admin stays one; each
/// change is audited and tenants change nothing.
fn users_change_and_their_tokens_follow(engine: Engine) {
    let _hashing = hashing_shared();
    let (_db, c) = manager_with_admin(engine, "manager-users", &[]);
    let a = c.addr;
    let svc = |m: &str| format!("/conduit.manager.v1.UserService/{m}");
    let who = "/conduit.manager.v1.AuthService/WhoAmI";
    let admin_login = login(a, ADMIN.0, ADMIN.1);
    let admin = token(&admin_login);
    let admin_id = admin_login["user"]["userId"].as_str().unwrap().to_owned();
    let cust = ok(
        a,
        "/conduit.manager.v1.CustomerService/Create",
        Some(&admin),
        json!({"name": "A"}),
    )["customerId"]
        .as_str()
        .unwrap()
        .to_owned();
    let (email, pw) = ("op@a.example", "the operator's secret");
    let op = ok(
        a,
        &svc("Create"),
        Some(&admin),
        json!({"email": email, "password": pw, "role": "operator", "customerId": cust}),
    );
    let op_id = op["userId"].as_str().unwrap().to_owned();
    let op_pair = login(a, email, pw);
    let op_token = token(&op_pair);
    let key = ok(
        a,
        "/conduit.manager.v1.ApiKeyService/Create",
        Some(&op_token),
        json!({"name": "automation"}),
    )["apiKey"]
        .as_str()
        .unwrap()
        .to_owned();
    let login_key = |k: &str| {
        call(
            a,
            "/conduit.manager.v1.AuthService/Login",
            None,
            &json!({"apiKey": k}),
        )
    };
    assert_eq!(login_key(&key).0, 200);

    // Neither an API key nor a token it logged in sets passwords (an admin's key included)
    // or mints keys.
    let admin_key = ok(
        a,
        "/conduit.manager.v1.ApiKeyService/Create",
        Some(&admin),
        json!({"name": "admin automation"}),
    )["apiKey"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, key_login) = login_key(&admin_key);
    assert_eq!(status, 200, "{key_login}");
    for t in [admin_key.clone(), token(&key_login)] {
        refused(
            a,
            &svc("SetPassword"),
            Some(&t),
            json!({"userId": op_id, "newPassword": "taken over by a key"}),
            "permission_denied",
        );
        refused(
            a,
            "/conduit.manager.v1.ApiKeyService/Create",
            Some(&t),
            json!({"name": "successor"}),
            "permission_denied",
        );
    }

    // Tenants change no one.
    for (m, body) in [
        ("Update", json!({"userId": op_id, "role": "viewer"})),
        ("Delete", json!({"userId": admin_id})),
        (
            "SetPassword",
            json!({"userId": admin_id, "newPassword": "taken over!!"}),
        ),
    ] {
        refused(a, &svc(m), Some(&op_token), body, "permission_denied");
    }

    // Demoted: the operator token and the operator key stop; a refresh brings the viewer role.
    let active = fam(a, "manager_active_tokens", &[]).unwrap();
    let v = ok(
        a,
        &svc("Update"),
        Some(&admin),
        json!({"userId": op_id, "role": "viewer", "name": "Ö'Brien \"op\" 🚀"}),
    );
    assert_eq!(
        (v["role"].as_str(), v["name"].as_str()),
        (Some("viewer"), Some("Ö'Brien \"op\" 🚀"))
    );
    assert!(fam(a, "manager_active_tokens", &[]).unwrap() < active);
    refused(a, who, Some(&op_token), json!({}), "unauthenticated");
    assert_eq!(login_key(&key).0, 401, "a key above its owner's role");
    // At once, in the second of the change: the new token is marked as issued after it.
    let renewed = ok(
        a,
        "/conduit.manager.v1.AuthService/Refresh",
        None,
        json!({"refreshToken": op_pair["refreshToken"]}),
    );
    let viewer = token(&renewed);
    assert_eq!(ok(a, who, Some(&viewer), json!({}))["role"], "viewer");
    refused(
        a,
        "/conduit.manager.v1.ApiKeyService/Create",
        Some(&viewer),
        json!({"name": "x", "role": "operator"}),
        "permission_denied",
    );

    // Disabled: no token, no refresh, no login (answered as a wrong password); enabled again,
    // the password works.
    let v = ok(
        a,
        &svc("Update"),
        Some(&admin),
        json!({"userId": op_id, "disabled": true}),
    );
    assert_eq!(v["disabled"], true);
    refused(a, who, Some(&viewer), json!({}), "unauthenticated");
    refused(
        a,
        "/conduit.manager.v1.AuthService/Refresh",
        None,
        json!({"refreshToken": renewed["refreshToken"]}),
        "unauthenticated",
    );
    let (status, v) = call(
        a,
        "/conduit.manager.v1.AuthService/Login",
        None,
        &json!({"email": email, "password": pw}),
    );
    assert_eq!(
        (status, v["message"].as_str()),
        (401, Some("invalid e-mail or password"))
    );
    ok(
        a,
        &svc("Update"),
        Some(&admin),
        json!({"userId": op_id, "disabled": false}),
    );
    let op_pair = login(a, email, pw);
    let op_token = token(&op_pair);

    // One's own password: the current one is required; every session ends, the old password too.
    let new_pw = "a brand new secret";
    refused(
        a,
        &svc("SetPassword"),
        Some(&op_token),
        json!({"currentPassword": "not it at all", "newPassword": new_pw}),
        "permission_denied",
    );
    refused(
        a,
        &svc("SetPassword"),
        Some(&op_token),
        json!({"currentPassword": pw, "newPassword": "short"}),
        "invalid_argument",
    );
    ok(
        a,
        &svc("SetPassword"),
        Some(&op_token),
        json!({"currentPassword": pw, "newPassword": new_pw}),
    );
    refused(a, who, Some(&op_token), json!({}), "unauthenticated");
    refused(
        a,
        "/conduit.manager.v1.AuthService/Refresh",
        None,
        json!({"refreshToken": op_pair["refreshToken"]}),
        "unauthenticated",
    );
    refused(
        a,
        "/conduit.manager.v1.AuthService/Login",
        None,
        json!({"email": email, "password": pw}),
        "unauthenticated",
    );
    login(a, email, new_pw);
    // An admin sets anyone's, without theirs.
    ok(
        a,
        &svc("SetPassword"),
        Some(&admin),
        json!({"userId": op_id, "newPassword": pw}),
    );
    login(a, email, pw);

    // The last enabled admin is neither demoted, disabled nor deleted (deleting oneself is
    // refused before the store's trigger, which the store's own test covers).
    for body in [
        json!({"userId": admin_id, "role": "operator", "customerId": cust}),
        json!({"userId": admin_id, "disabled": true}),
    ] {
        refused(a, &svc("Update"), Some(&admin), body, "failed_precondition");
    }
    refused(
        a,
        &svc("Delete"),
        Some(&admin),
        json!({"userId": admin_id}),
        "failed_precondition",
    );
    ok(a, who, Some(&admin), json!({}));

    // Deleted: gone, sessions and keys with them.
    let op_token = token(&login(a, email, pw));
    ok(a, &svc("Delete"), Some(&admin), json!({"userId": op_id}));
    refused(a, who, Some(&op_token), json!({}), "unauthenticated");
    refused(
        a,
        &svc("Get"),
        Some(&admin),
        json!({"userId": op_id}),
        "not_found",
    );
    refused(
        a,
        "/conduit.manager.v1.AuthService/Login",
        None,
        json!({"email": email, "password": pw}),
        "unauthenticated",
    );

    let audit = ok(
        a,
        "/conduit.manager.v1.AuditService/List",
        Some(&admin),
        json!({}),
    );
    let actions: Vec<&str> = audit["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter_map(|r| r["action"].as_str())
        .filter(|s| s.starts_with("user."))
        .collect();
    for action in ["user.update", "user.password", "user.delete"] {
        assert!(actions.contains(&action), "{action}: {audit}");
    }
    let demotion = format!("user {op_id}: name, role viewer of {cust}");
    assert!(
        audit["records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["detail"] == demotion.as_str()),
        "{demotion}: {audit}"
    );
}

/// Five wrong passwords for one account hold back its next login, even with the right
/// password, while other accounts from the same address log in; after the delay it works.
/// An oversized body is refused with 413 and the manager answers on.
fn one_account_is_throttled_alone_and_oversized_bodies_are_refused(engine: Engine) {
    let _hashing = hashing_shared();
    let (_db, c) = manager_with_admin(engine, "manager-account-throttle", &[]);
    let a = c.addr;
    let admin = token(&login(a, ADMIN.0, ADMIN.1));
    let cust = ok(
        a,
        "/conduit.manager.v1.CustomerService/Create",
        Some(&admin),
        json!({"name": "T"}),
    );
    ok(
        a,
        "/conduit.manager.v1.UserService/Create",
        Some(&admin),
        json!({"email": "v@t.example", "password": "the viewer's secret", "role": "viewer",
               "customerId": cust["customerId"]}),
    );
    let path = "/conduit.manager.v1.AuthService/Login";
    for _ in 0..5 {
        refused(
            a,
            path,
            None,
            json!({"email": "v@t.example", "password": "a wrong guess"}),
            "unauthenticated",
        );
    }
    let r = request(
        a,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        json!({"email": "V@T.example", "password": "the viewer's secret"})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 429, "{}", r.text());
    let wait: u64 = r
        .header("Retry-After")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    login(a, ADMIN.0, ADMIN.1);
    std::thread::sleep(Duration::from_secs(wait) + Duration::from_millis(100));
    login(a, "v@t.example", "the viewer's secret");

    // One byte past the 1 MiB limit.
    let huge = vec![b' '; 1024 * 1024 + 1];
    let r = request(
        a,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        &huge,
    );
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(
        fam(a, "manager_http_requests_total", &[("status_code", "413")]).is_some_and(|n| n >= 1.0),
        "{}",
        get(a, "/metrics", &[]).text()
    );
    login(a, ADMIN.0, ADMIN.1);
}

/// A login session ends at its lifetime however often it is refreshed: rotation renews the
/// refresh token, never the session.
fn a_session_ends_at_its_lifetime_however_often_refreshed(engine: Engine) {
    let _hashing = hashing_shared();
    let (_db, c) = manager_with_admin(
        engine,
        "manager-session",
        &["--session-ttl", "3", "--access-ttl", "1"],
    );
    let a = c.addr;
    let mut pair = login(a, ADMIN.0, ADMIN.1);
    // After the login's answer, so that its second is at or before this one.
    let start = std::time::Instant::now();
    let refresh = |pair: &Value| {
        call(
            a,
            "/conduit.manager.v1.AuthService/Refresh",
            None,
            &json!({"refreshToken": pair["refreshToken"]}),
        )
    };
    // Refreshed every 0.5 s while the session lasts.
    while start.elapsed() < Duration::from_millis(2000) {
        let (status, v) = refresh(&pair);
        assert_eq!(status, 200, "{v}");
        pair = v;
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_millis(3100).saturating_sub(start.elapsed()));
    let (status, v) = refresh(&pair);
    assert_eq!(
        (status, v["code"].as_str()),
        (401, Some("unauthenticated")),
        "{v}"
    );
    // A new login starts a new session.
    let fresh = login(a, ADMIN.0, ADMIN.1);
    assert_eq!(refresh(&fresh).0, 200);
}

/// Every story on both engines: `manager_api::sqlite::…` and `manager_api::postgres::…`.
macro_rules! on_both_engines {
    ($($story:ident),* $(,)?) => {
        mod sqlite {
            $(#[test]
            fn $story() {
                super::$story(super::Engine::Sqlite)
            })*
        }
        mod postgres {
            $(#[test]
            fn $story() {
                super::$story(super::Engine::Postgres)
            })*
        }
    };
}

on_both_engines!(
    identity_tenancy_and_the_metrics_they_drive,
    acknowledged_writes_survive_kill_9,
    gateways_and_agents_with_their_credentials,
    every_route_refuses_forged_tokens_and_other_tenants,
    unknown_accounts_cost_what_wrong_passwords_cost_and_both_are_throttled,
    signing_keys_rotate_without_logging_anyone_out,
    users_change_and_their_tokens_follow,
    one_account_is_throttled_alone_and_oversized_bodies_are_refused,
    a_session_ends_at_its_lifetime_however_often_refreshed,
);

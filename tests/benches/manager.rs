//! `cargo bench -p conduit-tests --bench manager`: the manager's hot paths through the release
//! binary over loopback (`cargo build --release -p manager-lite` first), each against a floor
//! measured in this process in the same run. Reports; not a CI gate.
//!
//! 1. Login with the production argon2id parameters (m = 19456 KiB, t = 2, p = 1): p50/p99 of
//!    `LOGINS` sequential logins of distinct users; a wrong password against an unknown e-mail
//!    (p50 of each, interleaved, fresh accounts; the address throttle allows 20 failures, so
//!    they run in batches of 9 pairs, each on a freshly started manager after one unmeasured
//!    unknown-e-mail login, which makes the manager's dummy hash). Floor: the `argon2` crate's
//!    hash and verify with the same parameters. The manager's CPU time and minor page faults
//!    per login (from /proc) say where a gap to the floor goes.
//! 2. Access-token verifications per second on one thread: `conduit_auth::verify` (the
//!    signature checked every time), and the manager's `Tokens::verify` (which checks a
//!    token's signature once and remembers it, plus the revocation check) for a client
//!    sending its one token again and again, and for a new token every call (8,192 tokens
//!    in turn, twice what it remembers). Floor: ring's Ed25519 verify of the same message
//!    and signature.
//! 3. Walking the servers: 10,000 (10 customers of 1,000, interleaved in id order), an admin
//!    walking all with pageSize 1000 and one customer's operator walking its 1,000; ms per
//!    walk, the median of `RUNS` after a checked warm-up. Floor: the same pages from the store
//!    in-process (`SqliteStore::servers`). The query plan of the tenant's page is printed.
//! 4. Acknowledged writes per second: CustomerService.Create in sequence and from 4 clients
//!    at once. Floor: rusqlite INSERTs with the store's pragmas (WAL, synchronous = FULL), one
//!    transaction each, in-process, in the same directory.
//! 5. The engines, same machine, same run: acknowledged writes per second (1 and 4 clients)
//!    and login p50/p99 (`ENGINE_LOGINS` users) on SQLite, on PostgreSQL 15 (a server of the
//!    bench's own, on loopback, durable: fsync and synchronous commit on), and on two manager replicas sharing one PostgreSQL (clients
//!    and logins spread over both). The comparison is SQLite's figures in this run.
//!
//! Set-up goes around the API for speed, and says so: the first admin by `conduit-manager
//! init`; customers and users (hashed with the manager's own `Passwords`) through the store
//! in-process; the 10,000 servers by rusqlite in one transaction against the manager's schema
//! (the store would fsync each). The clients keep their connections alive.

use std::hint::black_box;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use conduit_auth::{Claims, KeySet, Role, SigningKey};
use conduit_tests::rpc_client::Client;
use conduit_tests::stats::{median, pct};
use conduit_tests::{bin_dir, postgres, proc_counters, start_component, Component, TempDir};
use manager_lite::identity::password::Passwords;
use manager_lite::store::sqlite::SqliteStore;
use manager_lite::store::{Customer, Page, ServerFilter, Store, User};
use serde_json::{json, Value};

const ADMIN: (&str, &str) = ("root@bench.example", "correct horse battery staple");
/// Distinct users logging in once each (p99 is the 99th of 100).
const LOGINS: usize = 100;
/// Wrong-password / unknown-e-mail pairs per manager start: 2 × 9 + 1 warm-up = 19 failures,
/// under the per-address 20 free ones.
const PAIRS: usize = 9;
const BATCHES: usize = 2;
const SERVERS: usize = 10_000;
const CUSTOMERS: usize = 10;
const PAGE: usize = 1000;
const RUNS: usize = 5;
const VERIFY_SECS: f64 = 2.0;
/// Alternating slices each verification rate is measured in.
const SLICES: usize = 8;
const WRITE_SECS: f64 = 3.0;
const CLIENTS: usize = 4;
const FIX: &str = "run: cargo build --release -p manager-lite";

fn token(v: &Value) -> String {
    v["accessToken"].as_str().expect("accessToken").to_owned()
}

// ---- numbers --------------------------------------------------------------------------------

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Calls `f` in batches for about `secs`; returns calls per second.
fn per_second(secs: f64, mut f: impl FnMut()) -> f64 {
    let (start, mut n) = (Instant::now(), 0u64);
    while start.elapsed().as_secs_f64() < secs {
        for _ in 0..64 {
            f();
        }
        n += 64;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// A row of the table.
struct Row {
    what: String,
    measured: String,
    floor: String,
    of_floor: String,
    goal: String,
}

fn row(what: &str, measured: String, floor: &str, of_floor: String, goal: String) -> Row {
    Row {
        what: what.into(),
        measured,
        floor: floor.into(),
        of_floor,
        goal,
    }
}

fn verdict(met: bool) -> &'static str {
    if met {
        "MET"
    } else {
        "NOT MET"
    }
}

// ---- set-up ---------------------------------------------------------------------------------

fn init_admin(data: &TempDir, flags: &[&str]) {
    conduit_tests::init_manager(&data.0, flags, ADMIN);
}

fn user_email(i: usize) -> String {
    format!("user{i:03}@bench.example")
}

fn user_password(i: usize) -> String {
    format!("bench password {i:03}")
}

const OPERATOR: (&str, &str) = ("operator@bench.example", "operator bench password");

fn no_observer() -> manager_lite::store::QueryObserver {
    Arc::new(|_, _, _, _| {})
}

/// Customers, the login users and the tenant's operator (store), the servers (one
/// transaction). Returns the customer ids; the first is the walked tenant.
fn populate(db: &Path) -> Vec<String> {
    let start = Instant::now();
    let store = SqliteStore::open(db, no_observer()).expect("open the store");
    let now = manager_lite::auth::unix_now() as i64;
    let customers: Vec<String> = (0..CUSTOMERS).map(|i| format!("cust-{i:02}")).collect();
    for (i, id) in customers.iter().enumerate() {
        let c = Customer {
            id: id.clone(),
            name: format!("Customer {i}"),
            created_at: now,
        };
        store.create_customer(&c).expect("customer");
    }
    // Hashes with the manager's own parameters, on every core.
    let mut people: Vec<(String, String, Role)> = (0..LOGINS)
        .map(|i| (user_email(i), user_password(i), Role::Viewer))
        .collect();
    people.push((OPERATOR.0.into(), OPERATOR.1.into(), Role::Operator));
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let hashes: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = people
            .chunks(people.len().div_ceil(cores))
            .map(|chunk| {
                s.spawn(move || {
                    let p = Passwords::default();
                    (chunk.iter())
                        .map(|(_, pw, _)| p.hash(pw).expect("hash"))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        (handles.into_iter())
            .flat_map(|h| h.join().expect("hash thread"))
            .collect()
    });
    for (i, ((email, _, role), hash)) in people.iter().zip(&hashes).enumerate() {
        let u = User {
            id: format!("u-{i:04}"),
            email: email.clone(),
            name: format!("Bench user {i}"),
            role: *role,
            customer_id: Some(customers[0].clone()),
            created_at: now,
            disabled_at: None,
        };
        store.create_user(&u, hash).expect("user");
    }
    drop(store);
    let mut c = rusqlite::Connection::open(db).expect("open for the servers");
    let tx = c.transaction().expect("begin");
    tx.execute("INSERT OR IGNORE INTO datacenters (id) VALUES ('dc1')", [])
        .expect("datacenter");
    {
        let mut st = tx
            .prepare(
                "INSERT INTO servers (id, name, datacenter, agent_id, protocol, capabilities, \
                 customer_id, status, created_at, updated_at) \
                 VALUES (?1, ?1, 'dc1', NULL, 'ipmi', 'power,sensors', ?2, 'active', ?3, ?3)",
            )
            .expect("prepare");
        for i in 0..SERVERS {
            let owner = &customers[i % CUSTOMERS];
            st.execute(rusqlite::params![format!("srv-{i:05}"), owner, now])
                .expect("server");
        }
    }
    tx.commit().expect("commit");
    println!(
        "set-up: {CUSTOMERS} customers, {} users (argon2id, {cores} threads), {SERVERS} servers \
         in {:.1} s",
        people.len() + 1,
        start.elapsed().as_secs_f64()
    );
    customers
}

fn start_manager(data: &TempDir, flags: &[&str]) -> Component {
    let dir = ["--data-dir", data.0.to_str().expect("utf-8")];
    start_component("conduit-manager", &[&dir[..], flags].concat())
}

// ---- 1. login -------------------------------------------------------------------------------

struct LoginFigures {
    ok: Vec<f64>,
    wrong: Vec<f64>,
    unknown: Vec<f64>,
    first_unknown: Vec<f64>,
}

/// The logins' times (ms), and the manager's minor faults and CPU ms per login.
fn logins(mgr: &Component) -> (Vec<f64>, f64, f64) {
    let mut c = Client::new(mgr.addr);
    let mut times = Vec::new();
    let pid = mgr.proc.child.id().to_string();
    let before = proc_counters(&pid);
    for i in 0..LOGINS {
        let start = Instant::now();
        let (status, v) = c.login(&user_email(i), &user_password(i));
        times.push(ms(start.elapsed()));
        assert_eq!(status, 200, "login {i}: {v}");
        assert!(v["accessToken"].is_string(), "{v}");
    }
    let after = proc_counters(&pid);
    let n = LOGINS as f64;
    let faults = (after.0 - before.0) as f64 / n;
    (times, faults, (after.1 - before.1) * 1e3 / n)
}

/// Each batch on a fresh manager: one unknown-e-mail login (timed apart: it makes the dummy
/// hash), then PAIRS wrong-password and unknown-e-mail logins, alternating which goes first.
/// The throttle's counts are in the database: each batch starts with them deleted (around
/// the API, like the rest of the set-up).
fn failures(data: &TempDir, fig: &mut LoginFigures) {
    let mut account = 0;
    for batch in 0..BATCHES {
        rusqlite::Connection::open(data.0.join("manager.db"))
            .and_then(|c| c.execute("DELETE FROM login_failures", []))
            .expect("forget the failed logins");
        let mgr = start_manager(data, &[]);
        let mut c = Client::new(mgr.addr);
        let mut timed = |email: &str, password: &str| {
            let start = Instant::now();
            let (status, v) = c.login(email, password);
            let took = ms(start.elapsed());
            assert_eq!(v["code"], "unauthenticated", "{email}: {status} {v}");
            took
        };
        fig.first_unknown.push(timed(
            &format!("first{batch}@nowhere.example"),
            "not a password",
        ));
        for pair in 0..PAIRS {
            let wrong = user_email(account);
            let unknown = format!("nobody{account:03}@nowhere.example");
            account += 1;
            let bad = "wrong password, surely";
            if pair % 2 == 0 {
                fig.wrong.push(timed(&wrong, bad));
                fig.unknown.push(timed(&unknown, bad));
            } else {
                fig.unknown.push(timed(&unknown, bad));
                fig.wrong.push(timed(&wrong, bad));
            }
        }
    }
}

/// argon2id hash and verify in-process, same parameters: (hash ms, verify ms) per call, and
/// this process's minor faults per verify.
fn argon2_floor() -> (Vec<f64>, Vec<f64>, f64) {
    let params = Params::new(19456, 2, 1, None).expect("params");
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let (mut hashes, mut verifies) = (Vec::new(), Vec::new());
    let mut phc = String::new();
    for i in 0..10u8 {
        let salt = SaltString::encode_b64(&[i; 16]).expect("salt");
        let start = Instant::now();
        phc = argon
            .hash_password(b"bench password 001", &salt)
            .expect("hash")
            .to_string();
        hashes.push(ms(start.elapsed()));
    }
    let parsed = PasswordHash::new(&phc).expect("phc");
    let before = proc_counters("self").0;
    for _ in 0..30 {
        let start = Instant::now();
        let ok = argon
            .verify_password(b"bench password 001", &parsed)
            .is_ok();
        verifies.push(ms(start.elapsed()));
        assert!(ok);
    }
    let faults = (proc_counters("self").0 - before) as f64 / verifies.len() as f64;
    (hashes, verifies, faults)
}

// ---- 2. token verification -------------------------------------------------------------------

/// (conduit_auth::verify, Tokens::verify of one token, of new tokens, ring) verifications
/// per second, and the token's length.
fn verification(dir: &TempDir) -> ([f64; 4], usize) {
    let now = manager_lite::auth::unix_now();
    let key = SigningKey::generate("bench-key").expect("key");
    let mut keys = KeySet::new();
    keys.insert(key.public());
    let claims = Claims {
        sub: conduit_auth::random_id(9).expect("id"),
        cus: Some(conduit_auth::random_id(9).expect("id")),
        role: Role::Operator,
        iat: now,
        exp: now + 900,
        jti: conduit_auth::random_id(12).expect("id"),
        sid: conduit_auth::random_id(12).expect("id"),
    };
    let jwt = conduit_auth::sign(&key, &claims);
    assert_eq!(conduit_auth::verify(&keys, &jwt, now), Ok(claims.clone()));
    let mut ours = || {
        black_box(conduit_auth::verify(&keys, black_box(&jwt), now)).expect("valid");
    };

    // The manager's check: the same verify plus the revocation list (re-read every 2 s).
    let store = SqliteStore::open(&dir.0.join("tokens.db"), no_observer()).expect("store");
    let tokens =
        manager_lite::tokens::Tokens::load(&store, now as i64, Default::default()).expect("tokens");
    let who = manager_lite::tokens::Principal {
        user_id: claims.sub.clone(),
        customer_id: claims.cus.clone(),
        role: Role::Operator,
    };
    let (mgr_jwt, _) = tokens.issue(&store, &who, &claims.sid, now).expect("issue");
    let mut manager = || {
        black_box(tokens.verify(&store, black_box(&mgr_jwt), now)).expect("valid");
    };
    let fresh: Vec<String> = (0..2 * conduit_auth::verifier::REMEMBERED)
        .map(|_| {
            tokens
                .issue(&store, &who, &claims.sid, now)
                .expect("issue")
                .0
        })
        .collect();
    let mut turn = 0;
    let mut manager_new = || {
        turn = (turn + 1) % fresh.len();
        black_box(tokens.verify(&store, black_box(&fresh[turn]), now)).expect("valid");
    };

    let (signed, sig) = jwt.rsplit_once('.').expect("three parts");
    let sig = conduit_base64::decode_url(sig).expect("signature");
    let pk = ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, *key.public().x());
    let mut ring = || {
        pk.verify(black_box(signed.as_bytes()), black_box(&sig))
            .expect("valid");
    };
    // In alternating slices, so that load from elsewhere falls on all three alike.
    let mut rates = [0.0; 4];
    for _ in 0..SLICES {
        let each: [&mut dyn FnMut(); 4] = [&mut ours, &mut manager, &mut manager_new, &mut ring];
        for (rate, f) in rates.iter_mut().zip(each) {
            *rate += per_second(VERIFY_SECS / SLICES as f64, f) / SLICES as f64;
        }
    }
    (rates, jwt.len())
}

// ---- 3. walking the servers ------------------------------------------------------------------

/// One walk through the API: (requests, rows). Rows are counted by their `serverId` keys, the
/// next token read off the end (ids cannot hold quotes); `check` parses every page fully.
fn walk(c: &mut Client, token: &str, check: bool) -> (usize, usize, Vec<String>) {
    let (mut next, mut requests, mut rows, mut ids) = (None::<String>, 0, 0, Vec::new());
    loop {
        let mut body = json!({"pageSize": PAGE});
        if let Some(t) = &next {
            body["pageToken"] = json!(t);
        }
        let (status, raw) = c.call_raw("ServerService/List", Some(token), &body.to_string());
        requests += 1;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&raw));
        if check {
            let v: Value = serde_json::from_slice(&raw).expect("JSON");
            let page = v["servers"].as_array().expect("servers");
            ids.extend(
                page.iter()
                    .map(|s| s["serverId"].as_str().unwrap().to_owned()),
            );
        }
        let text = std::str::from_utf8(&raw).expect("utf-8");
        rows += text.matches("\"serverId\":").count();
        next = text
            .split("\"nextPageToken\":\"")
            .nth(1)
            .map(|t| t.split('"').next().expect("token end").to_owned());
        if next.is_none() {
            return (requests, rows, ids);
        }
    }
}

struct WalkFigures {
    requests: usize,
    api: Vec<f64>,
    store: Vec<f64>,
}

fn walks(c: &mut Client, token: &str, tenant: Option<&str>, want: usize, db: &Path) -> WalkFigures {
    let (requests, rows, mut ids) = walk(c, token, true);
    assert_eq!(rows, want);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), want, "a walk saw a row twice or missed one");
    let api = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            assert_eq!(walk(c, token, false).1, want);
            ms(start.elapsed())
        })
        .collect();
    // The same pages in-process (the store's own reader, WAL beside the running manager).
    let store = SqliteStore::open(db, no_observer()).expect("store");
    let filter = ServerFilter {
        customer_id: tenant.map(str::to_owned),
        ..ServerFilter::default()
    };
    let store_walk = || {
        let (mut after, mut n) = (None, 0);
        loop {
            let page = Page {
                after: after.take(),
                limit: PAGE as u32,
            };
            let rows = store.servers(&filter, &page).expect("servers");
            n += rows.len();
            if rows.len() < PAGE {
                return n;
            }
            after = rows.last().map(|s| s.id.clone());
        }
    };
    assert_eq!(store_walk(), want);
    let store_ms = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            assert_eq!(black_box(store_walk()), want);
            ms(start.elapsed())
        })
        .collect();
    WalkFigures {
        requests,
        api,
        store: store_ms,
    }
}

/// The plan SQLite picks for the store's server page of `tenant` (or all).
fn plan(db: &Path, tenant: Option<&str>) -> String {
    let store = SqliteStore::open(db, no_observer()).expect("store");
    let filter = ServerFilter {
        customer_id: tenant.map(str::to_owned),
        ..Default::default()
    };
    let page = Page {
        after: None,
        limit: PAGE as u32,
    };
    store.servers_plan(&filter, &page).expect("plan")
}

// ---- 5. engines ------------------------------------------------------------------------------

/// Users each engine's logins are timed with.
const ENGINE_LOGINS: usize = 40;

/// One configuration's figures: (writes/s with 1 client, with CLIENTS clients, login p50,
/// login p99 in ms).
fn engine_figures(managers: &[&Component]) -> (f64, f64, f64, f64) {
    let addrs: Vec<SocketAddr> = managers.iter().map(|m| m.addr).collect();
    let mut c = Client::new(addrs[0]);
    let (status, v) = c.login(ADMIN.0, ADMIN.1);
    assert_eq!(status, 200, "admin login: {v}");
    let admin = token(&v);
    let cust = c.ok(
        "CustomerService/Create",
        Some(&admin),
        json!({"name": "engine bench"}),
    )["customerId"]
        .clone();
    for i in 0..ENGINE_LOGINS {
        c.ok(
            "UserService/Create",
            Some(&admin),
            json!({"email": user_email(i), "password": user_password(i), "role": "viewer",
                   "customerId": cust}),
        );
    }
    // Logins in turn on each manager, one connection each.
    let mut clients: Vec<Client> = addrs.iter().map(|&a| Client::new(a)).collect();
    let mut times = Vec::new();
    for i in 0..ENGINE_LOGINS {
        let c = &mut clients[i % addrs.len()];
        let start = Instant::now();
        let (status, v) = c.login(&user_email(i), &user_password(i));
        times.push(ms(start.elapsed()));
        assert_eq!(status, 200, "login: {v}");
    }
    let one = creates(&addrs, &admin, 1);
    let many = creates(&addrs, &admin, CLIENTS);
    (one, many, pct(&times, 0.5), pct(&times, 0.99))
}

/// SQLite, PostgreSQL, and two replicas on one PostgreSQL, each on a fresh database.
fn engines(rows: &mut Vec<Row>) {
    let mut configs: Vec<(String, (f64, f64, f64, f64))> = Vec::new();
    {
        let data = TempDir::new("bench-engine-sqlite");
        init_admin(&data, &[]);
        let m = start_manager(&data, &[]);
        configs.push(("SQLite (synchronous = FULL)".into(), engine_figures(&[&m])));
    }
    if !postgres::Postgres::available() {
        println!("engines: PostgreSQL 15 is not installed; SQLite only");
    } else {
        let pg = postgres::Postgres::start_durable();
        let url = pg.url();
        let flags = ["--database", url.as_str()];
        let data = TempDir::new("bench-engine-pg");
        init_admin(&data, &flags);
        let m = start_manager(&data, &flags);
        configs.push(("PostgreSQL 15, one manager".into(), engine_figures(&[&m])));
        drop(m);
        let pg2 = postgres::Postgres::start_durable();
        let url2 = pg2.url();
        let flags2 = ["--database", url2.as_str()];
        let (d1, d2) = (
            TempDir::new("bench-engine-r1"),
            TempDir::new("bench-engine-r2"),
        );
        init_admin(&d1, &flags2);
        let (r1, r2) = (start_manager(&d1, &flags2), start_manager(&d2, &flags2));
        configs.push((
            "PostgreSQL 15, two replicas".into(),
            engine_figures(&[&r1, &r2]),
        ));
    }
    let sqlite = configs[0].1;
    for (what, (one, many, l50, l99)) in &configs {
        rows.push(row(
            &format!("{what}: writes 1 / {CLIENTS} clients"),
            format!("{one:.0} / {many:.0} /s"),
            &format!("SQLite: {:.0} / {:.0} /s", sqlite.0, sqlite.1),
            format!("{:.2}x / {:.2}x", one / sqlite.0, many / sqlite.1),
            "(report)".into(),
        ));
        rows.push(row(
            &format!("{what}: login p50 / p99 ({ENGINE_LOGINS})"),
            format!("{l50:.1} / {l99:.1} ms"),
            &format!("SQLite: {:.1} / {:.1} ms", sqlite.2, sqlite.3),
            format!("{:.2}x", l99 / sqlite.3),
            format!("p99 <= 100 ms: {}", verdict(*l99 <= 100.0)),
        ));
    }
}

// ---- 4. acknowledged writes -------------------------------------------------------------------

/// CustomerService.Create from `clients` clients at once, client `t` calling manager
/// `t mod n`; acknowledged writes per second.
fn creates(addrs: &[SocketAddr], admin: &str, clients: usize) -> f64 {
    let start = Instant::now();
    let total: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|t| {
                let addr = addrs[t % addrs.len()];
                s.spawn(move || {
                    let mut c = Client::new(addr);
                    let mut n = 0;
                    while start.elapsed().as_secs_f64() < WRITE_SECS {
                        let body = json!({"name": format!("bench {clients}x{t} #{n}")});
                        let v = c.ok("CustomerService/Create", Some(admin), body);
                        assert!(v["customerId"].is_string(), "{v}");
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("client")).sum()
    });
    total as f64 / start.elapsed().as_secs_f64()
}

/// INSERTs with the store's pragmas, one transaction each, ids as random as the manager's.
fn raw_inserts(dir: &TempDir) -> f64 {
    let mut c = rusqlite::Connection::open(dir.0.join("raw.db")).expect("open");
    c.pragma_update(None, "journal_mode", "WAL").expect("WAL");
    c.pragma_update(None, "synchronous", "FULL").expect("FULL");
    c.pragma_update(None, "foreign_keys", "ON").expect("fk");
    c.busy_timeout(Duration::from_secs(5)).expect("busy");
    c.execute_batch(
        "CREATE TABLE customers (id TEXT PRIMARY KEY, name TEXT NOT NULL, \
         created_at INTEGER NOT NULL) STRICT",
    )
    .expect("table");
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut n = 0u64;
    per_second(WRITE_SECS, || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        n += 1;
        let tx = c.transaction().expect("begin");
        tx.execute(
            "INSERT INTO customers (id, name, created_at) VALUES (?1, ?2, ?3)",
            rusqlite::params![format!("{x:016x}"), format!("raw #{n}"), 1_700_000_000],
        )
        .expect("insert");
        tx.commit().expect("commit");
    })
}

// ---- main -------------------------------------------------------------------------------------

fn main() {
    let wall = Instant::now();
    assert!(bin_dir().ends_with("release"), "not a release build; {FIX}");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "conduit-manager (release) over loopback vs floors in this process; {} cores, load \
         average {}\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let data = TempDir::new("bench-manager");
    let db = data.0.join("manager.db");
    init_admin(&data, &[]);
    let customers = populate(&db);
    let mut rows = Vec::new();

    // 1. Logins.
    let mgr = start_manager(&data, &[]);
    let mut c = Client::new(mgr.addr);
    let (status, v) = c.login(ADMIN.0, ADMIN.1);
    assert_eq!(status, 200, "admin login: {v}");
    let admin = token(&v);
    let (status, v) = c.login(OPERATOR.0, OPERATOR.1);
    assert_eq!(status, 200, "operator login: {v}");
    let operator = token(&v);
    let (ok, login_faults, login_cpu) = logins(&mgr);
    let mut fig = LoginFigures {
        ok,
        wrong: Vec::new(),
        unknown: Vec::new(),
        first_unknown: Vec::new(),
    };
    let (hash, verify, verify_faults) = argon2_floor();
    let (v50, v99) = (pct(&verify, 0.5), pct(&verify, 0.99));
    let (l50, l99) = (pct(&fig.ok, 0.5), pct(&fig.ok, 0.99));
    rows.push(row(
        &format!("login, {LOGINS} distinct users: p50 / p99"),
        format!("{l50:.1} / {l99:.1} ms"),
        &format!("argon2 verify: {v50:.1} / {v99:.1} ms"),
        format!("{:.2}x / {:.2}x", l50 / v50, l99 / v99),
        format!("p99 <= 100 ms: {}", verdict(l99 <= 100.0)),
    ));

    // 3. Walks (on the same manager, before the failures below reset it).
    let admin_walk = walks(&mut c, &admin, None, SERVERS, &db);
    let tenant_walk = walks(&mut c, &operator, Some(&customers[0]), PAGE, &db);
    let (a, at) = (median(&admin_walk.api), median(&admin_walk.store));
    rows.push(row(
        &format!(
            "admin walks {SERVERS} servers ({} requests)",
            admin_walk.requests
        ),
        format!("{a:.1} ms ({:.1} per 1,000)", a / (SERVERS / PAGE) as f64),
        &format!("store in-process: {at:.1} ms"),
        format!("{:.2}x", a / at),
        format!(
            "<= 50 ms per 1,000: {}",
            verdict(a / (SERVERS / PAGE) as f64 <= 50.0)
        ),
    ));
    let (t, tt) = (median(&tenant_walk.api), median(&tenant_walk.store));
    rows.push(row(
        &format!(
            "operator walks its {PAGE} ({} requests)",
            tenant_walk.requests
        ),
        format!("{t:.1} ms"),
        &format!("store in-process: {tt:.1} ms"),
        format!("{:.2}x", t / tt),
        format!("<= 50 ms per 1,000: {}", verdict(t <= 50.0)),
    ));

    // 4. Acknowledged writes.
    let seq = creates(&[mgr.addr], &admin, 1);
    let conc = creates(&[mgr.addr], &admin, CLIENTS);
    let raw = raw_inserts(&data);
    rows.push(row(
        "CustomerService.Create, 1 client",
        format!("{seq:.0} /s"),
        &format!("rusqlite INSERT+fsync: {raw:.0} /s"),
        format!("{:.0}%", 100.0 * seq / raw),
        "(report)".into(),
    ));
    rows.push(row(
        &format!("CustomerService.Create, {CLIENTS} clients"),
        format!("{conc:.0} /s"),
        &format!("rusqlite INSERT+fsync: {raw:.0} /s"),
        format!("{:.0}%", 100.0 * conc / raw),
        "(report)".into(),
    ));
    drop(c);
    drop(mgr);

    // 1, continued: failures, on fresh managers.
    failures(&data, &mut fig);
    let (w, u) = (median(&fig.wrong), median(&fig.unknown));
    let diff = (u - w).abs() / w;
    rows.push(row(
        &format!(
            "wrong password vs unknown e-mail, p50 ({} each)",
            fig.wrong.len()
        ),
        format!("{w:.1} vs {u:.1} ms"),
        &format!("argon2 verify: {v50:.1} ms"),
        format!("unknown/wrong {:.2}", u / w),
        format!("within 20 %: {}", verdict(diff <= 0.2)),
    ));

    // 2. Token verification, one thread.
    let ([ours, manager, manager_new, ring], len) = verification(&data);
    rows.push(row(
        &format!("conduit_auth::verify ({len}-byte token)"),
        format!("{ours:.0} /s"),
        &format!("ring Ed25519 verify: {ring:.0} /s"),
        format!("{:.0}%", 100.0 * ours / ring),
        format!(">= 20k/s: {}", verdict(ours >= 20_000.0)),
    ));
    rows.push(row(
        "manager Tokens::verify, one token again (+ revocations)",
        format!("{manager:.0} /s"),
        &format!("ring Ed25519 verify: {ring:.0} /s"),
        format!("{:.0}%", 100.0 * manager / ring),
        format!(">= 20k/s: {}", verdict(manager >= 20_000.0)),
    ));
    rows.push(row(
        "manager Tokens::verify, a new token each call",
        format!("{manager_new:.0} /s"),
        &format!("ring Ed25519 verify: {ring:.0} /s"),
        format!("{:.0}%", 100.0 * manager_new / ring),
        format!(">= 20k/s: {}", verdict(manager_new >= 20_000.0)),
    ));

    // 5. The engines.
    engines(&mut rows);

    let width = |f: fn(&Row) -> &str, head: &str| {
        rows.iter()
            .map(|r| f(r).chars().count())
            .chain([head.len()])
            .max()
            .unwrap_or(0)
    };
    let w = [
        width(|r| &r.what, "benchmark"),
        width(|r| &r.measured, "measured"),
        width(|r| &r.floor, "floor (same run)"),
        width(|r| &r.of_floor, "vs floor"),
    ];
    println!(
        "\n{:<a$}  {:>b$}  {:<c$}  {:<d$}  goal",
        "benchmark",
        "measured",
        "floor (same run)",
        "vs floor",
        a = w[0],
        b = w[1],
        c = w[2],
        d = w[3]
    );
    for r in &rows {
        println!(
            "{:<a$}  {:>b$}  {:<c$}  {:<d$}  {}",
            r.what,
            r.measured,
            r.floor,
            r.of_floor,
            r.goal,
            a = w[0],
            b = w[1],
            c = w[2],
            d = w[3]
        );
    }
    let each = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.1}"))
            .collect::<Vec<_>>()
            .join(" / ")
    };
    println!(
        "\nlogin: min {:.1}, max {:.1} ms; the manager's CPU {login_cpu:.1} ms and \
         {login_faults:.0} minor page faults per login; in-process argon2 verify \
         {verify_faults:.0} faults each, hash p50 {:.1} ms\n\
         first unknown e-mail after a start (makes the dummy hash): {} ms\n\
         walks (ms, {RUNS} runs): admin {}; operator {}\n\
         tenant page plan: {}\n\
         admin page plan: {}\n\
         wall time {:.1} s",
        pct(&fig.ok, 0.0),
        pct(&fig.ok, 1.0),
        median(&hash),
        each(&fig.first_unknown),
        each(&admin_walk.api),
        each(&tenant_walk.api),
        plan(&db, Some(&customers[0])),
        plan(&db, None),
        wall.elapsed().as_secs_f64()
    );
}

//! The stores on both engines, atuin-style: every story takes an [`Engine`], opens its store
//! with [`fresh`] and then talks to it through `&dyn Store` only; the `on_both_engines!` list
//! at the bottom runs each as `sqlite::<story>` (a [`SqliteStore`] on a file in a temp dir)
//! and `postgres::<story>` (a [`PgStore`] on a fresh database of a live PostgreSQL 15 of the
//! test's own). Where the engines differ only in how a test reaches behind the store (raw
//! SQL; the schema version, SQLite's `user_version` or PostgreSQL's `schema_version` table),
//! a small [`Home`] helper hides it and the assertions stay shared.
//!
//! PostgreSQL-only (`postgres::`, from the list's `postgres_only`): what only replicas
//! sharing one database can get wrong (concurrent migrations, refresh rotations, a revocation
//! racing a rotation, admin demotions, audit commit order) and a server that stops and comes back.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use conduit_store::*;
use conduit_store_postgres::PgStore;
use conduit_store_sqlite::SqliteStore;
use conduit_tests::postgres::Postgres;
use conduit_tests::TempDir;

// ---------------------------------------------------------------- rows

fn customer(id: &str) -> Customer {
    Customer {
        id: id.into(),
        name: format!("O'Brien & \"Sons\" 🚀 {id}"),
        created_at: 1,
    }
}

fn user(id: &str, email: &str, role: Role, customer_id: Option<&str>) -> User {
    User {
        id: id.into(),
        email: email.into(),
        name: "Zoë".into(),
        role,
        customer_id: customer_id.map(Into::into),
        created_at: 1,
        disabled_at: None,
    }
}

fn server(id: &str, customer_id: Option<&str>) -> Server {
    Server {
        id: id.into(),
        name: id.into(),
        datacenter: "dc1".into(),
        agent_id: None,
        protocol: "ipmi".into(),
        capabilities: "power,sensors".into(),
        customer_id: customer_id.map(Into::into),
        status: "active".into(),
        created_at: 1,
        updated_at: 1,
    }
}

fn refresh(id: &str, family: &str, user_id: &str) -> RefreshToken {
    RefreshToken {
        id: id.into(),
        secret_hash: vec![1; 32],
        family_id: family.into(),
        user_id: user_id.into(),
        created_at: 1,
        expires_at: 100,
        spent_at: None,
        revoked_at: None,
    }
}

fn audit_record(customer_id: &str) -> AuditRecord {
    AuditRecord {
        seq: 0,
        at: 5,
        actor: "u".into(),
        actor_kind: "user".into(),
        action: "power.cycle".into(),
        server_id: Some("s1".into()),
        customer_id: Some(customer_id.into()),
        result: "ok".into(),
        detail: "détail, verbatim: 'quoted' \\ 🚀".into(),
    }
}

/// What the observer was told: `(operation, table, outcome)`, in order.
type Seen = Arc<Mutex<Vec<(QueryOp, &'static str, &'static str)>>>;

// ---------------------------------------------------------------- stories (any engine)

/// Rows come back as stored, e-mails match in any case, and every query is observed with
/// its outcome.
fn rows_round_trip_verbatim_and_every_query_is_observed(engine: Engine) {
    let (_home, s, seen) = fresh(engine);
    let s = &*s;
    s.create_customer(&customer("c1")).unwrap();
    assert_eq!(s.customer("c1").unwrap(), customer("c1"));
    let u = user("u1", "Ann@Example.com", Role::Operator, Some("c1"));
    s.create_user(&u, "$argon2id$x").unwrap();
    let got = s.user_by_email("ann@example.COM").unwrap();
    assert_eq!(got.user, u);
    assert_eq!(got.password_hash, "$argon2id$x");
    assert!(matches!(
        s.create_user(
            &user("u2", "ANN@example.com", Role::Viewer, Some("c1")),
            "h"
        ),
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(s.user("nope"), Err(StoreError::NotFound)));
    let seen = seen.lock().unwrap();
    assert!(seen.len() >= 5, "{seen:?}");
    assert!(
        seen.contains(&(QueryOp::Insert, "users", "conflict")),
        "{seen:?}"
    );
    assert!(
        seen.contains(&(QueryOp::Select, "users", "not_found")),
        "{seen:?}"
    );
    assert!(
        seen.contains(&(QueryOp::Select, "customers", "ok")),
        "{seen:?}"
    );
}

/// Roles, references and tenancy are checked by the schema; the audit log refuses changes
/// made behind the store's back (run as raw SQL on the engine directly).
fn the_schema_enforces_roles_references_and_an_append_only_audit(engine: Engine) {
    let (home, s, _) = fresh(engine);
    let s = &*s;
    // an admin with a customer, an operator without one, an unknown customer
    s.create_customer(&customer("c1")).unwrap();
    for bad in [
        user("a", "a@x.io", Role::Admin, Some("c1")),
        user("b", "b@x.io", Role::Operator, None),
        user("c", "c@x.io", Role::Viewer, Some("ghost")),
    ] {
        assert!(
            matches!(s.create_user(&bad, "h"), Err(StoreError::Conflict(_))),
            "{bad:?}"
        );
    }
    let seq = s.append_audit(&audit_record("c1")).unwrap();
    for sql in [
        "DELETE FROM audit".to_owned(),
        format!("UPDATE audit SET result = 'x' WHERE seq = {seq}"),
    ] {
        let err = home.raw(&sql).unwrap_err();
        assert!(err.contains("append-only"), "{sql}: {err}");
    }
    if engine == Engine::Postgres {
        // TRUNCATE (PostgreSQL's alone) fires no row trigger: refused on its own
        let err = home.raw("TRUNCATE audit").unwrap_err();
        assert!(err.contains("append-only"), "{err}");
    }
    assert_eq!(
        s.audit(Some("c1"), 0, 10).unwrap(),
        [AuditRecord {
            seq,
            ..audit_record("c1")
        }]
    );
    assert_eq!(s.audit(Some("c2"), 0, 10).unwrap().len(), 0);
    assert_eq!(s.audit(None, 0, 10).unwrap().len(), 1);
}

/// Keyset pages walk every row once, within the tenant when asked; counts group by owner.
fn server_pages_walk_every_row_once_within_the_tenant(engine: Engine) {
    let (_home, s, _) = fresh(engine);
    let s = &*s;
    s.create_customer(&customer("c1")).unwrap();
    for i in 0..25 {
        let owner = (i % 2 == 0).then_some("c1");
        s.create_server(&server(&format!("s{i:03}"), owner))
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let filter = ServerFilter {
            customer_id: Some("c1".into()),
            ..Default::default()
        };
        let page = s.servers(&filter, &Page { after, limit: 4 }).unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|p| p.id.clone());
        seen.extend(page.into_iter().map(|p| p.id));
    }
    assert_eq!(seen.len(), 13);
    let unassigned = ServerFilter {
        unassigned: true,
        ..Default::default()
    };
    let page = Page {
        after: None,
        limit: 100,
    };
    assert_eq!(s.servers(&unassigned, &page).unwrap().len(), 12);
    let counts = s.server_counts().unwrap();
    let count = |c: Option<&str>| {
        counts
            .iter()
            .find(|n| n.customer_id.as_deref() == c && n.datacenter == "dc1")
            .map(|n| (n.status.as_str(), n.count))
    };
    assert_eq!(count(Some("c1")), Some(("active", 13)));
    assert_eq!(count(None), Some(("active", 12)));
}

/// Ids order by their bytes, as SQLite compares them, whatever the database's collation:
/// a page token from one engine means the same on the other.
fn pages_order_ids_by_their_bytes(engine: Engine) {
    let (_home, s, _) = fresh(engine);
    let s = &*s;
    for id in ["b", "B", "a", "A", "_", "é"] {
        s.create_customer(&customer(id)).unwrap();
    }
    let page = |after: Option<&str>| {
        s.customers(&Page {
            after: after.map(Into::into),
            limit: 100,
        })
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect::<Vec<_>>()
    };
    assert_eq!(page(None), ["A", "B", "_", "a", "b", "é"]);
    assert_eq!(page(Some("_")), ["a", "b", "é"]);
}

/// A refresh token is spent once; using it again stores nothing and shows the reuse.
fn a_refresh_token_rotates_once_and_its_reuse_is_visible(engine: Engine) {
    let (_home, s, _) = fresh(engine);
    let s = &*s;
    s.create_user(&user("a", "a@x.io", Role::Admin, None), "h")
        .unwrap();
    s.insert_refresh(&refresh("r1", "f", "a")).unwrap();
    let was = s.rotate_refresh("r1", 5, &refresh("r2", "f", "a")).unwrap();
    assert_eq!(was.spent_at, None);
    // a second use of r1 stores nothing and shows it was spent
    let again = s.rotate_refresh("r1", 6, &refresh("r3", "f", "a")).unwrap();
    assert_eq!(again.spent_at, Some(5));
    assert!(matches!(s.refresh("r3"), Err(StoreError::NotFound)));
    assert!(matches!(
        s.rotate_refresh("ghost", 6, &refresh("r4", "f", "a")),
        Err(StoreError::NotFound)
    ));
    assert_eq!(s.revoke_family("f", 7).unwrap(), 2);
    assert_eq!(s.refresh("r2").unwrap().revoked_at, Some(7));
}

/// The last enabled admin is neither disabled, demoted nor deleted; an update from a stale
/// row is refused; a user revocation only moves forward and is purged when expired.
fn the_last_enabled_admin_stays_and_user_revocations_only_move_forward(engine: Engine) {
    let (_home, s, _) = fresh(engine);
    let s = &*s;
    s.create_customer(&customer("c1")).unwrap();
    s.create_user(&user("a1", "a1@x", Role::Admin, None), "h")
        .unwrap();
    s.create_user(&user("o1", "o1@x", Role::Operator, Some("c1")), "h")
        .unwrap();
    let last =
        |e: StoreError| matches!(e, StoreError::Conflict(m) if m.contains("last enabled admin"));
    let disabled = User {
        disabled_at: Some(5),
        ..user("a1", "a1@x", Role::Admin, None)
    };
    let admin = user("a1", "a1@x", Role::Admin, None);
    assert!(last(s.update_user(&admin, &disabled).unwrap_err()));
    let demoted = user("a1", "a1@x", Role::Operator, Some("c1"));
    assert!(last(s.update_user(&admin, &demoted).unwrap_err()));
    assert!(last(s.delete_user("a1").unwrap_err()));
    // With a second enabled admin, the first may go.
    s.create_user(&user("a2", "a2@x", Role::Admin, None), "h")
        .unwrap();
    s.update_user(&user("a1", "a1@x", Role::Admin, None), &disabled)
        .unwrap();
    // An update from a row that is no longer there is refused.
    assert!(matches!(
        s.update_user(&user("a1", "a1@x", Role::Admin, None), &demoted),
        Err(StoreError::Conflict(m)) if m.contains("changed since")
    ));
    assert_eq!(s.user("a1").unwrap().disabled_at, Some(5));
    assert!(last(s.delete_user("a2").unwrap_err()));
    assert_eq!(s.admin_count().unwrap(), 1);
    s.delete_user("o1").unwrap();
    assert!(matches!(s.user("o1"), Err(StoreError::NotFound)));

    let revoke = |at| {
        s.revoke(&Revocation {
            id: "a1".into(),
            kind: RevocationKind::User,
            revoked_at: at,
            expires_at: at + 100,
        })
        .unwrap()
    };
    revoke(50);
    revoke(40);
    let list = s.revocations(0).unwrap();
    assert_eq!(
        (list.len(), list[0].revoked_at, list[0].expires_at),
        (1, 50, 150)
    );
    revoke(60);
    assert_eq!(s.revocations(0).unwrap()[0].revoked_at, 60);
    assert_eq!(s.purge_expired(200, 0).unwrap(), 1);
    assert!(s.revocations(0).unwrap().is_empty());
}

/// Rotating a signing key retires (or drops) every other one in the same step.
fn a_rotation_retires_or_drops_the_old_keys_in_one_step(engine: Engine) {
    let (_home, s, _) = fresh(engine);
    let s = &*s;
    let key = |kid: &str, at| StoredKey {
        kid: kid.into(),
        pkcs8: vec![1, 0, 255],
        created_at: at,
        retired_at: None,
    };
    s.insert_signing_key(&key("k1", 1)).unwrap();
    s.rotate_signing_key(&key("k2", 2), false).unwrap();
    let rows = s.signing_keys().unwrap();
    assert_eq!(
        rows.iter()
            .map(|k| (k.kid.as_str(), k.retired_at))
            .collect::<Vec<_>>(),
        [("k1", Some(2)), ("k2", None)]
    );
    assert_eq!(rows[1].pkcs8, [1, 0, 255]);
    // Retired keys go once past the bound, the signing one never.
    assert_eq!(s.purge_expired(0, 3).unwrap(), 1);
    s.rotate_signing_key(&key("k3", 3), true).unwrap();
    let rows = s.signing_keys().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].kid, "k3");
}

/// Issued access tokens count while unexpired and uncovered by a revocation of their token,
/// session or user (up to its time); expired ones are purged.
fn access_tokens_count_until_revoked_or_expired(engine: Engine) {
    let (_home, s, _) = fresh(engine);
    let s = &*s;
    let token = |jti: &str, sid: &str, sub: &str, iat| AccessToken {
        jti: jti.into(),
        session_id: sid.into(),
        user_id: sub.into(),
        issued_at: iat,
        expires_at: iat + 100,
    };
    for t in [
        token("t1", "s1", "u1", 10),
        token("t2", "s1", "u1", 10),
        token("t3", "s2", "u1", 30),
        token("t4", "s3", "u2", 10),
        token("t5", "s4", "u3", 10),
    ] {
        s.record_access_token(&t).unwrap();
    }
    assert!(matches!(
        s.record_access_token(&token("t1", "s9", "u9", 1)),
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(s.active_access_tokens(20).unwrap(), 5);
    let revoke = |id: &str, kind, at| {
        s.revoke(&Revocation {
            id: id.into(),
            kind,
            revoked_at: at,
            expires_at: 1000,
        })
        .unwrap()
    };
    revoke("t4", RevocationKind::Token, 20);
    assert_eq!(s.active_access_tokens(20).unwrap(), 4);
    revoke("s1", RevocationKind::Session, 20);
    assert_eq!(s.active_access_tokens(20).unwrap(), 2);
    // a user revocation covers what was issued up to it: t3 (issued at 30) stays
    revoke("u1", RevocationKind::User, 20);
    assert_eq!(s.active_access_tokens(20).unwrap(), 2);
    revoke("u3", RevocationKind::User, 20);
    assert_eq!(s.active_access_tokens(20).unwrap(), 1);
    // t3 expires at 130
    assert_eq!(s.active_access_tokens(130).unwrap(), 0);
    // the five tokens, expired by 200 (revocations expire at 1000)
    assert_eq!(s.purge_expired(200, 0).unwrap(), 5);
}

/// Failed logins count per key, start again after the window, are forgotten on success and
/// purged when old.
fn login_failures_count_restart_and_clear(engine: Engine) {
    let (_home, s, _) = fresh(engine);
    let s = &*s;
    let counts = |keys: &[&str], since| {
        s.login_failures(keys, since)
            .unwrap()
            .into_iter()
            .map(|f| (f.key, f.failures, f.last_at_ms))
            .collect::<Vec<_>>()
    };
    s.login_failed(&["acct:a", "net:10.0.0"], 1_000, 0).unwrap();
    s.login_failed(&["acct:a", "net:10.0.0"], 2_000, 0).unwrap();
    s.login_failed(&["acct:b", "net:10.0.0"], 3_000, 0).unwrap();
    assert_eq!(
        counts(&["acct:a", "net:10.0.0", "acct:none"], 0),
        [
            ("acct:a".to_owned(), 2, 2_000),
            ("net:10.0.0".to_owned(), 3, 3_000)
        ]
    );
    // only counts whose last failure is after `since`
    assert_eq!(
        counts(&["acct:a", "acct:b"], 2_000),
        [("acct:b".to_owned(), 1, 3_000)]
    );
    // a count whose last failure is at or before `since_ms` starts again from one
    s.login_failed(&["acct:a"], 10_000, 2_000).unwrap();
    assert_eq!(counts(&["acct:a"], 0), [("acct:a".to_owned(), 1, 10_000)]);
    s.clear_login_failures("acct:a").unwrap();
    assert!(counts(&["acct:a"], 0).is_empty());
    // kept LOGIN_FAILURES_KEPT_SECS after the last failure (3 s, 3 s, in ms)
    let now = 3 + LOGIN_FAILURES_KEPT_SECS + 1;
    assert_eq!(s.purge_expired(now, 0).unwrap(), 2);
    assert!(counts(&["acct:b", "net:10.0.0"], 0).is_empty());
}

/// Gateways and agents: credentials, Register and Heartbeat, and a gateway's report moving
/// agents in its own datacenter only.
fn gateways_and_agents_report_and_revoke(engine: Engine) {
    let (_home, s, _) = fresh(engine);
    let s = &*s;
    let gateway = |id: &str, dc: &str| Gateway {
        id: id.into(),
        name: id.into(),
        datacenter: dc.into(),
        credential_id: format!("cred-{id}"),
        credential_hash: vec![7; 32],
        address: String::new(),
        version: String::new(),
        registered_at: None,
        last_seen: None,
        created_at: 1,
        revoked_at: None,
    };
    let agent = |id: &str, dc: &str| Agent {
        id: id.into(),
        name: id.into(),
        datacenter: dc.into(),
        credential_id: format!("cred-{id}"),
        credential_hash: vec![8; 32],
        gateway_id: None,
        connected: false,
        last_seen: None,
        created_at: 1,
        revoked_at: None,
    };
    s.create_gateway(&gateway("g1", "dc1")).unwrap();
    s.create_gateway(&gateway("g2", "dc2")).unwrap();
    assert!(matches!(
        s.create_gateway(&gateway("g1", "dc1")),
        Err(StoreError::Conflict(_))
    ));
    s.gateway_seen("g1", Some(("https://g1:8443", "1.2.3")), 10)
        .unwrap();
    s.gateway_seen("g1", None, 20).unwrap();
    let g = s.gateway_by_credential("cred-g1").unwrap();
    assert_eq!(
        (
            g.address.as_str(),
            g.version.as_str(),
            g.registered_at,
            g.last_seen
        ),
        ("https://g1:8443", "1.2.3", Some(10), Some(20))
    );
    assert!(matches!(
        s.gateway_seen("ghost", None, 1),
        Err(StoreError::NotFound)
    ));
    assert_eq!(s.gateways().unwrap().len(), 2);

    for (id, dc) in [("a1", "dc1"), ("a2", "dc1"), ("a3", "dc2")] {
        s.create_agent(&agent(id, dc)).unwrap();
    }
    s.report_agents("g1", &["a1".into(), "a2".into(), "a3".into()], 30)
        .unwrap();
    let connected = |id: &str| {
        let a = s.agent(id).unwrap();
        (a.gateway_id, a.connected, a.last_seen)
    };
    assert_eq!(connected("a1"), (Some("g1".into()), true, Some(30)));
    // another datacenter's agent is not moved
    assert_eq!(connected("a3"), (None, false, None));
    s.report_agents("g1", &["a2".into()], 40).unwrap();
    assert_eq!(connected("a1"), (Some("g1".into()), false, Some(30)));
    assert_eq!(connected("a2"), (Some("g1".into()), true, Some(40)));
    s.revoke_agent("a2", 50).unwrap();
    s.revoke_agent("a2", 60).unwrap();
    let a2 = s.agent_by_credential("cred-a2").unwrap();
    assert_eq!((a2.revoked_at, a2.connected), (Some(50), false));
    let page = s
        .agents(&Page {
            after: Some("a1".into()),
            limit: 1,
        })
        .unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].id, "a2");
    s.revoke_gateway("g1", 70).unwrap();
    assert_eq!(s.gateway("g1").unwrap().revoked_at, Some(70));
}

/// Users, API keys and servers change and go as the trait says.
fn users_keys_and_servers_change_and_go(engine: Engine) {
    let (_home, s, _) = fresh(engine);
    let s = &*s;
    s.create_customer(&customer("c1")).unwrap();
    s.create_user(&user("a1", "a1@x", Role::Admin, None), "h")
        .unwrap();
    s.create_user(&user("o1", "o1@x", Role::Operator, Some("c1")), "h")
        .unwrap();
    s.set_password_hash("o1", "h2").unwrap();
    assert_eq!(s.user_by_email("o1@x").unwrap().password_hash, "h2");
    assert!(matches!(
        s.set_password_hash("ghost", "h"),
        Err(StoreError::NotFound)
    ));
    let ids = |c: Option<&str>| {
        s.users(
            c,
            &Page {
                after: None,
                limit: 10,
            },
        )
        .unwrap()
        .into_iter()
        .map(|u| u.id)
        .collect::<Vec<_>>()
    };
    assert_eq!(ids(None), ["a1", "o1"]);
    assert_eq!(ids(Some("c1")), ["o1"]);
    let key = ApiKey {
        id: "k1".into(),
        secret_hash: vec![3; 32],
        user_id: "o1".into(),
        customer_id: Some("c1".into()),
        role: Role::Viewer,
        name: "ci".into(),
        created_at: 1,
        revoked_at: None,
    };
    s.insert_api_key(&key).unwrap();
    s.revoke_api_key("k1", 5).unwrap();
    s.revoke_api_key("k1", 6).unwrap();
    assert_eq!(
        s.api_keys("o1").unwrap(),
        [ApiKey {
            revoked_at: Some(5),
            ..key
        }]
    );
    s.insert_refresh(&refresh("r1", "f1", "o1")).unwrap();
    assert_eq!(s.revoke_user_refresh("o1", 50).unwrap(), 1);
    assert_eq!(s.revoke_user_refresh("o1", 60).unwrap(), 0);
    // deleting a user takes their keys and tokens along
    s.delete_user("o1").unwrap();
    assert!(matches!(s.api_key("k1"), Err(StoreError::NotFound)));
    assert!(matches!(s.refresh("r1"), Err(StoreError::NotFound)));

    s.ensure_datacenter("dc1").unwrap();
    s.ensure_datacenter("dc1").unwrap();
    s.create_server(&server("s1", Some("c1"))).unwrap();
    let moved = Server {
        datacenter: "dc9".into(),
        status: "maintenance".into(),
        customer_id: None,
        agent_id: Some("a1".into()),
        updated_at: 9,
        ..server("s1", None)
    };
    s.update_server(&moved).unwrap();
    assert_eq!(s.server("s1").unwrap(), moved);
    let bad = Server {
        status: "on fire".into(),
        ..moved.clone()
    };
    assert!(matches!(
        s.update_server(&bad),
        Err(StoreError::Conflict(_))
    ));
    s.delete_server("s1").unwrap();
    assert!(matches!(s.delete_server("s1"), Err(StoreError::NotFound)));
}

/// Migrations apply once: a second open has nothing to do and finds the schema at this
/// build's version; a database a newer manager migrated is refused with an error that says
/// so (SQLite's version is its `user_version`, PostgreSQL's the `schema_version` table).
fn migrations_apply_once_and_a_newer_schema_is_refused(engine: Engine) {
    let home = Home::new(engine);
    drop(home.open(quiet()).unwrap());
    // again: nothing to apply, and the schema is at this build's version
    let s = home.open(quiet()).unwrap();
    assert_eq!(home.schema_version(), engine.migrations());
    if let Home::Sqlite { path, .. } = &home {
        let check = SqliteStore::open(path, quiet()).unwrap();
        assert_eq!(check.integrity_check().unwrap(), "ok");
    }
    s.create_customer(&customer("c1")).unwrap();
    assert_eq!(s.customer("c1").unwrap(), customer("c1"));
    drop(s);
    home.set_schema_version(99);
    let err = home.open(quiet()).unwrap_err().to_string();
    assert!(err.contains("newer"), "{err}");
    assert!(err.contains("schema version 99"), "{err}");
    // the error names the database, never its password
    for secret in home.secrets() {
        assert!(!err.contains(&secret), "{err}");
    }
}

// ---------------------------------------------------------------- engines

/// Which engine a story runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    Sqlite,
    Postgres,
}

impl Engine {
    /// How many migrations this build knows for the engine.
    fn migrations(self) -> i64 {
        let n = match self {
            Engine::Sqlite => conduit_store_sqlite::migrations::MIGRATIONS.len(),
            Engine::Postgres => conduit_store_postgres::migrations::MIGRATIONS.len(),
        };
        n as i64
    }
}

/// Where a test's store lives, kept (and, on PostgreSQL, the server running) until dropped.
enum Home {
    /// A database file in a temp dir of the test's own.
    Sqlite { _dir: TempDir, path: PathBuf },
    /// A fresh database on a PostgreSQL server of the test's own.
    Postgres { pg: Postgres, url: String },
}

impl Home {
    fn new(engine: Engine) -> Home {
        match engine {
            Engine::Sqlite => {
                let dir = TempDir::new("store-engines");
                let path = dir.0.join("manager.db");
                Home::Sqlite { _dir: dir, path }
            }
            Engine::Postgres => {
                let pg = Postgres::start();
                let url = pg.create_database("conduit");
                Home::Postgres { pg, url }
            }
        }
    }

    /// Opens a store on this home (migrating it).
    fn open(&self, observe: QueryObserver) -> StoreResult<Box<dyn Store>> {
        Ok(match self {
            Home::Sqlite { path, .. } => Box::new(SqliteStore::open(path, observe)?),
            Home::Postgres { url, .. } => Box::new(PgStore::open(url, 4, observe)?),
        })
    }

    /// Runs statements on the database directly, past any store.
    fn raw(&self, sql: &str) -> Result<(), String> {
        match self {
            Home::Sqlite { path, .. } => {
                let c = rusqlite::Connection::open(path).map_err(|e| e.to_string())?;
                c.busy_timeout(Duration::from_secs(5))
                    .map_err(|e| e.to_string())?;
                c.execute_batch(sql).map_err(|e| e.to_string())
            }
            Home::Postgres { .. } => self.pg_conn()?.batch(sql).map_err(|e| e.to_string()),
        }
    }

    fn pg_conn(&self) -> Result<conduit_pg::Conn, String> {
        let Home::Postgres { url, .. } = self else {
            unreachable!("a PostgreSQL home")
        };
        let config = conduit_pg::Config::parse(url).map_err(|e| e.to_string())?;
        conduit_pg::Conn::connect(&config).map_err(|e| e.to_string())
    }

    /// The schema version the database records: SQLite's `user_version`, PostgreSQL's
    /// `schema_version` table.
    fn schema_version(&self) -> i64 {
        match self {
            Home::Sqlite { path, .. } => rusqlite::Connection::open(path)
                .unwrap()
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .unwrap(),
            Home::Postgres { .. } => self
                .pg_conn()
                .unwrap()
                .query("SELECT COALESCE(max(version), 0) FROM schema_version", &[])
                .unwrap()
                .iter()
                .map(|r| r.get::<i64>(0).unwrap())
                .next()
                .unwrap(),
        }
    }

    /// Records `version` as the database's schema version, as a newer manager would.
    fn set_schema_version(&self, version: i64) {
        let sql = match self {
            Home::Sqlite { .. } => format!("PRAGMA user_version = {version}"),
            Home::Postgres { .. } => {
                format!("INSERT INTO schema_version (version) VALUES ({version})")
            }
        };
        self.raw(&sql).unwrap();
    }

    /// What an error about this database must never show.
    fn secrets(&self) -> Vec<String> {
        match self {
            Home::Sqlite { .. } => Vec::new(),
            Home::Postgres { pg, url } => vec![pg.password().to_owned(), password_of(url)],
        }
    }
}

/// A fresh home on `engine` and a store on it, with what its observer saw.
fn fresh(engine: Engine) -> (Home, Box<dyn Store>, Seen) {
    let home = Home::new(engine);
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let observe: QueryObserver = Arc::new(move |op, table, outcome, _| {
        log.lock().unwrap().push((op, table, outcome));
    });
    let store = home.open(observe).unwrap();
    (home, store, seen)
}

fn quiet() -> QueryObserver {
    Arc::new(|_, _, _, _| {})
}

/// The password part of a `postgres://user:password@…` URL ("" when there is none).
fn password_of(url: &str) -> String {
    url.split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .and_then(|(auth, _)| auth.split_once(':'))
        .map(|(_, p)| p.to_owned())
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "\u{0}never".into())
}

// ---------------------------------------------------------------- PostgreSQL only

fn two_replicas_starting_together_migrate_once() {
    let pg = Postgres::start();
    let url = pg.create_database("replicas");
    let go = Barrier::new(2);
    std::thread::scope(|t| {
        let opens = [(); 2].map(|_| {
            t.spawn(|| {
                go.wait();
                PgStore::open(&url, 1, quiet())
            })
        });
        for o in opens {
            o.join().unwrap().unwrap();
        }
    });
    let s = PgStore::open(&url, 1, quiet()).unwrap();
    let rows = s
        .pool()
        .get(Duration::from_secs(5))
        .unwrap()
        .query("SELECT version FROM schema_version ORDER BY version", &[])
        .unwrap()
        .iter()
        .map(|r| r.get::<i64>(0).unwrap())
        .collect::<Vec<_>>();
    assert_eq!(rows, (1..=rows.len() as i64).collect::<Vec<_>>());
    assert!(rows.len() >= 4, "{rows:?}");
}

fn one_refresh_token_rotated_by_two_replicas_at_once_rotates_once() {
    let pg = Postgres::start();
    let url = pg.create_database("rotate_race");
    let a = PgStore::open(&url, 2, quiet()).unwrap();
    let b = PgStore::open(&url, 2, quiet()).unwrap();
    a.create_user(&user("u", "u@x", Role::Admin, None), "h")
        .unwrap();
    for round in 0..20 {
        let id = format!("r{round}");
        a.insert_refresh(&refresh(&id, &format!("f{round}"), "u"))
            .unwrap();
        let go = Barrier::new(2);
        let fresh_wins = std::thread::scope(|t| {
            let runs = [(&a, "a"), (&b, "b")].map(|(s, who)| {
                let (go, id) = (&go, &id);
                t.spawn(move || {
                    go.wait();
                    let next = refresh(&format!("{id}-{who}"), &format!("f{round}"), "u");
                    s.rotate_refresh(id, 5, &next).unwrap().spent_at.is_none()
                })
            });
            runs.map(|r| r.join().unwrap())
        });
        assert_eq!(
            fresh_wins.iter().filter(|w| **w).count(),
            1,
            "round {round}: {fresh_wins:?}"
        );
    }
}

/// A session revoked on one replica while another rotates its refresh token stays revoked:
/// the token the rotation made is revoked too (a logout or reuse detection must not leave a
/// fresh refresh token alive).
fn a_session_revoked_while_another_replica_rotates_it_stays_revoked() {
    let pg = Postgres::start();
    let url = pg.create_database("revoke_race");
    let a = PgStore::open(&url, 2, quiet()).unwrap();
    let b = PgStore::open(&url, 2, quiet()).unwrap();
    a.create_user(&user("u", "u@x", Role::Admin, None), "h")
        .unwrap();
    for round in 0..30 {
        let (id, family) = (format!("r{round}"), format!("f{round}"));
        a.insert_refresh(&refresh(&id, &family, "u")).unwrap();
        let next = format!("{id}-next");
        let go = Barrier::new(2);
        std::thread::scope(|t| {
            let rotate = t.spawn(|| {
                go.wait();
                a.rotate_refresh(&id, 5, &refresh(&next, &family, "u"))
                    .unwrap();
            });
            let revoke = t.spawn(|| {
                go.wait();
                b.revoke_family(&family, 6).unwrap();
            });
            rotate.join().unwrap();
            revoke.join().unwrap();
        });
        for token in [&id, &next] {
            match a.refresh(token) {
                Ok(r) => assert!(
                    r.revoked_at.is_some(),
                    "round {round}: {token} is live after its session was revoked"
                ),
                Err(StoreError::NotFound) => {} // the revocation came first: nothing was made
                Err(e) => panic!("{e}"),
            }
        }
    }
}

fn two_replicas_demoting_the_last_two_admins_at_once_keep_one() {
    let pg = Postgres::start();
    let url = pg.create_database("admin_race");
    let a = PgStore::open(&url, 2, quiet()).unwrap();
    let b = PgStore::open(&url, 2, quiet()).unwrap();
    a.create_customer(&customer("c1")).unwrap();
    let mut survivor: Option<String> = None;
    for round in 0..20 {
        let ids = [format!("x{round}"), format!("y{round}")];
        for id in &ids {
            a.create_user(&user(id, &format!("{id}@x"), Role::Admin, None), "h")
                .unwrap();
        }
        // the last round's remaining admin steps down, leaving these two
        if let Some(id) = survivor.take() {
            a.delete_user(&id).unwrap_or_else(|e| panic!("{id}: {e}"));
        }
        assert_eq!(a.admin_count().unwrap(), 2);
        let go = Barrier::new(2);
        let results = std::thread::scope(|t| {
            let runs = [(&a, &ids[0]), (&b, &ids[1])].map(|(s, id)| {
                let go = &go;
                t.spawn(move || {
                    let was = user(id, &format!("{id}@x"), Role::Admin, None);
                    // demoted in even rounds, disabled in odd ones
                    let now = if round % 2 == 0 {
                        user(id, &format!("{id}@x"), Role::Viewer, Some("c1"))
                    } else {
                        User {
                            disabled_at: Some(9),
                            ..was.clone()
                        }
                    };
                    go.wait();
                    s.update_user(&was, &now)
                })
            });
            runs.map(|r| r.join().unwrap())
        });
        assert_eq!(a.admin_count().unwrap(), 1, "round {round}: {results:?}");
        for (r, id) in results.iter().zip(&ids) {
            match r {
                Ok(()) => {}
                Err(StoreError::Conflict(m)) if m.contains("last enabled admin") => {
                    survivor = Some(id.clone());
                }
                Err(e) => panic!("round {round}: {id}: {e}"),
            }
        }
        assert!(survivor.is_some(), "round {round}: {results:?}");
    }
}

fn a_stopped_server_reads_as_unavailable_and_a_restarted_one_serves_again() {
    let (mut home, s, seen) = fresh(Engine::Postgres);
    let Home::Postgres { pg, .. } = &mut home else {
        unreachable!("a PostgreSQL home")
    };
    s.create_customer(&customer("c1")).unwrap();
    pg.stop();
    let err = s.customer("c1").unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert_eq!(
        seen.lock().unwrap().last(),
        Some(&(QueryOp::Select, "customers", "error"))
    );
    pg.restart();
    assert_eq!(s.customer("c1").unwrap(), customer("c1"));
}

fn audit_appends_from_two_replicas_read_in_commit_order() {
    let pg = Postgres::start();
    let url = pg.create_database("audit_order");
    let stores = [(); 3].map(|_| PgStore::open(&url, 2, quiet()).unwrap());
    let done = AtomicUsize::new(0);
    std::thread::scope(|t| {
        for s in &stores {
            let done = &done;
            t.spawn(move || {
                for _ in 0..50 {
                    s.append_audit(&audit_record("c1")).unwrap();
                }
                done.fetch_add(1, Ordering::Relaxed);
            });
        }
        // a reader paging by seq while they append never sees a gap filled in later
        let mut after = 0;
        let mut seen = 0;
        while done.load(Ordering::Relaxed) < stores.len() || seen < 150 {
            for r in stores[0].audit(None, after, 7).unwrap() {
                assert_eq!(
                    r.seq,
                    after + 1,
                    "a row committed behind the reader's position"
                );
                after = r.seq;
                seen += 1;
            }
        }
        assert_eq!(seen, 150);
    });
}

// ---------------------------------------------------------------- the lists

/// `sqlite::<story>` and `postgres::<story>` for each shared story, and `postgres::<test>`
/// for each PostgreSQL-only one.
macro_rules! on_both_engines {
    (
        both: [$($story:ident),* $(,)?],
        postgres_only: [$($pg:ident),* $(,)?] $(,)?
    ) => {
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
            $(#[test]
            fn $pg() {
                super::$pg()
            })*
        }
    };
}

on_both_engines!(
    both: [
        rows_round_trip_verbatim_and_every_query_is_observed,
        the_schema_enforces_roles_references_and_an_append_only_audit,
        server_pages_walk_every_row_once_within_the_tenant,
        pages_order_ids_by_their_bytes,
        a_refresh_token_rotates_once_and_its_reuse_is_visible,
        the_last_enabled_admin_stays_and_user_revocations_only_move_forward,
        a_rotation_retires_or_drops_the_old_keys_in_one_step,
        access_tokens_count_until_revoked_or_expired,
        login_failures_count_restart_and_clear,
        gateways_and_agents_report_and_revoke,
        users_keys_and_servers_change_and_go,
        migrations_apply_once_and_a_newer_schema_is_refused,
    ],
    postgres_only: [
        two_replicas_starting_together_migrate_once,
        one_refresh_token_rotated_by_two_replicas_at_once_rotates_once,
        a_session_revoked_while_another_replica_rotates_it_stays_revoked,
        two_replicas_demoting_the_last_two_admins_at_once_keep_one,
        a_stopped_server_reads_as_unavailable_and_a_restarted_one_serves_again,
        audit_appends_from_two_replicas_read_in_commit_order,
    ],
);

//! conduit-pg against a live PostgreSQL 15 (SCRAM-SHA-256 logins): every parameter and column
//! type both ways, server errors with their SQLSTATE and constraint, statement_timeout,
//! transactions, batches, and the pool through exhaustion, broken connections, a restart and
//! an outage. Skipped, with a message, where PostgreSQL is not installed (never under CI).

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use conduit_pg::{Config, Conn, Error, Pool, ToSql, TxStatus};
use conduit_tests::free_port;
use conduit_tests::postgres::Postgres;

/// A fresh server, or None (after saying so) where PostgreSQL is not installed.
fn server() -> Option<Postgres> {
    if !Postgres::available() {
        eprintln!(
            "skipping: PostgreSQL 15 is not installed ({})",
            conduit_tests::postgres::BIN
        );
        return None;
    }
    Some(Postgres::start())
}

fn config(url: &str) -> Config {
    Config::parse(url).expect("the harness's URL parses")
}

fn connect(pg: &Postgres) -> Conn {
    Conn::connect(&config(&pg.url())).expect("connect")
}

fn one<T: conduit_pg::FromSql>(c: &mut Conn, sql: &str, params: &[&dyn ToSql]) -> T {
    let rows = c
        .query(sql, params)
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    assert_eq!(rows.len(), 1, "{sql}");
    rows[0].get(0).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

#[test]
fn scram_login_as_the_superuser() {
    let Some(pg) = server() else { return };
    let mut c = connect(&pg);
    assert!(c.parameter("server_version").unwrap().starts_with("15"));
    assert!(c.backend_pid().is_some());
    assert_eq!(
        one::<String>(&mut c, "SELECT current_user::text", &[]),
        "conduit"
    );
    // the role's password is a SCRAM verifier and the server asked for SCRAM
    let verifier: String = one(
        &mut c,
        "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
        &[&"conduit"],
    );
    assert!(verifier.starts_with("SCRAM-SHA-256$"), "{verifier}");
    let hba: i64 = one(
        &mut c,
        "SELECT count(*) FROM pg_hba_file_rules WHERE auth_method <> 'scram-sha-256'",
        &[],
    );
    assert_eq!(hba, 0);
    assert_eq!(c.transaction_status(), TxStatus::Idle);
}

#[test]
fn a_wrong_password_is_28p01_and_never_shown() {
    let Some(pg) = server() else { return };
    let mut cfg = config(&pg.url());
    let wrong = "not-the-password-4711";
    cfg.set_password(wrong);
    let e = Conn::connect(&cfg).unwrap_err();
    assert_eq!(e.code(), Some("28P01"), "{e:?}");
    assert!(!e.is_unavailable());
    let shown = format!("{e} {e:?} {cfg:?} {}", cfg.redacted());
    assert!(
        !shown.contains(wrong) && !shown.contains(pg.password()),
        "{shown}"
    );
    // an unknown database: the server's error, and the right password is not shown either
    let e = Conn::connect(&config(&pg.url_for("nope"))).unwrap_err();
    assert_eq!(e.code(), Some("3D000"), "{e:?}");
    assert!(!format!("{e} {e:?}").contains(pg.password()));
}

#[test]
fn every_type_round_trips_with_nulls() {
    let Some(pg) = server() else { return };
    let mut c = connect(&pg);
    c.batch(
        "CREATE TABLE t (id BIGINT PRIMARY KEY, i INTEGER, b BOOLEAN, s TEXT, v VARCHAR(20), \
         bin BYTEA)",
    )
    .unwrap();
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    let text = "O'Brien & \"Sons\" \\ zoë 🚀 ; -- $1";
    let n = c
        .execute(
            "INSERT INTO t VALUES ($1, $2, $3, $4, $5, $6)",
            &[&i64::MIN, &i32::MAX, &true, &text, &"v", &all_bytes],
        )
        .unwrap();
    assert_eq!(n, 1);
    let none_i: Option<i32> = None;
    let none_s: Option<String> = None;
    let none_b: Option<Vec<u8>> = None;
    let n = c
        .execute(
            "INSERT INTO t VALUES ($1, $2, $3, $4, $5, $6), ($7, $8, $9, $10, $11, $12)",
            &[
                &i64::MAX,
                &none_i,
                &None::<bool>,
                &none_s,
                &None::<&str>,
                &none_b,
                &0i64,
                &Some(-1i32),
                &Some(false),
                &Some(String::new()),
                &Some("x"),
                &Some(Vec::<u8>::new()),
            ],
        )
        .unwrap();
    assert_eq!(n, 2);

    let rows = c
        .query("SELECT id, i, b, s, v, bin FROM t ORDER BY id", &[])
        .unwrap();
    assert_eq!((rows.len(), rows.affected()), (3, 3));
    let r = &rows[0];
    assert_eq!(r.get::<i64>(0).unwrap(), i64::MIN);
    assert_eq!(r.get::<i32>(1).unwrap(), i32::MAX);
    assert_eq!(r.get::<i64>(1).unwrap(), i64::from(i32::MAX));
    assert!(r.get::<bool>(2).unwrap());
    assert_eq!(r.get::<String>(3).unwrap(), text);
    assert_eq!(r.get::<String>(4).unwrap(), "v");
    assert_eq!(r.get::<Vec<u8>>(5).unwrap(), all_bytes);
    assert_eq!(r.columns()[5].name(), "bin");
    let r = &rows[1];
    assert_eq!(r.get::<i64>(0).unwrap(), 0);
    assert_eq!(r.get::<Option<i32>>(1).unwrap(), Some(-1));
    assert_eq!(r.get::<Option<bool>>(2).unwrap(), Some(false));
    assert_eq!(r.get::<Option<String>>(3).unwrap().as_deref(), Some(""));
    assert_eq!(r.get::<Vec<u8>>(5).unwrap(), Vec::<u8>::new());
    let r = &rows[2];
    assert_eq!(r.get::<i64>(0).unwrap(), i64::MAX);
    assert_eq!(r.get::<Option<i32>>(1).unwrap(), None);
    assert_eq!(r.get::<Option<bool>>(2).unwrap(), None);
    assert_eq!(r.get::<Option<String>>(3).unwrap(), None);
    assert_eq!(r.get::<Option<String>>(4).unwrap(), None);
    assert_eq!(r.get::<Option<Vec<u8>>>(5).unwrap(), None);
    // NULL into a non-Option, a type mismatch, a missing column: errors, not panics
    for e in [
        r.get::<i32>(1).unwrap_err(),
        rows[0].get::<String>(0).unwrap_err(),
        rows[0].get::<i64>(3).unwrap_err(),
        rows[0].get::<bool>(1).unwrap_err(),
        rows[0].get::<i64>(6).unwrap_err(),
    ] {
        assert!(matches!(e, Error::Conversion(_)), "{e:?}");
    }
    // parameters typed by the statement; bytea read back from a parameter
    assert_eq!(one::<i64>(&mut c, "SELECT $1::BIGINT + 1", &[&41i64]), 42);
    assert_eq!(
        one::<Vec<u8>>(&mut c, "SELECT $1::BYTEA", &[&&all_bytes[..]]),
        all_bytes
    );
    assert_eq!(
        one::<Option<i64>>(&mut c, "SELECT $1::BIGINT", &[&None::<i64>]),
        None
    );
    assert_eq!(one::<String>(&mut c, "SELECT $1 || $1", &[&"ab"]), "abab");
    // affected rows from the tag
    assert_eq!(
        c.execute("UPDATE t SET b = true WHERE id >= $1", &[&0i64])
            .unwrap(),
        2
    );
    assert_eq!(
        c.execute("DELETE FROM t WHERE id = $1", &[&7i64]).unwrap(),
        0
    );
    // a NUL byte cannot be sent, and nothing is: the connection stays usable
    let e = c.query("SELECT 1\0", &[]).unwrap_err();
    assert!(matches!(e, Error::Invalid(_)), "{e:?}");
    assert_eq!(one::<i32>(&mut c, "SELECT 1", &[]), 1);
}

#[test]
fn server_errors_carry_sqlstate_and_constraint_and_keep_the_connection() {
    let Some(pg) = server() else { return };
    let mut c = connect(&pg);
    c.batch("CREATE TABLE u (id BIGINT, email TEXT CONSTRAINT u_email_key UNIQUE)")
        .unwrap();
    c.execute("INSERT INTO u VALUES ($1, $2)", &[&1i64, &"a@x"])
        .unwrap();
    let e = c
        .execute("INSERT INTO u VALUES ($1, $2)", &[&2i64, &"a@x"])
        .unwrap_err();
    assert_eq!(
        (e.code(), e.constraint()),
        (Some("23505"), Some("u_email_key")),
        "{e:?}"
    );
    assert!(e.to_string().contains("u_email_key"), "{e}");
    assert!(!c.is_broken());
    let e = c
        .batch("DO $$ BEGIN RAISE EXCEPTION 'no admin left'; END $$")
        .unwrap_err();
    assert_eq!(e.code(), Some("P0001"), "{e:?}");
    assert!(e.to_string().contains("no admin left"), "{e}");
    let e = c.query("SELEC 1", &[]).unwrap_err();
    assert_eq!(e.code(), Some("42601"), "{e:?}");
    let e = c.query("SELECT 1; SELECT 2", &[]).unwrap_err();
    assert_eq!(e.code(), Some("42601"), "{e:?}");
    let e = c.query("SELECT $1 IS NULL", &[&None::<i64>]).unwrap_err();
    assert_eq!(
        e.code(),
        Some("42P18"),
        "could not determine data type: {e:?}"
    );
    assert!(!e.is_unavailable() && !e.is_retryable());
    assert!(!c.is_broken());
    assert_eq!(one::<i64>(&mut c, "SELECT count(*) FROM u", &[]), 1);
}

#[test]
fn statement_timeout_cancels_within_it_and_the_connection_survives() {
    let Some(pg) = server() else { return };
    let mut c = Conn::connect(&config(&format!("{}?statement_timeout=300", pg.url()))).unwrap();
    let t = Instant::now();
    let e = c.query("SELECT pg_sleep(5)", &[]).unwrap_err();
    let took = t.elapsed();
    assert_eq!(e.code(), Some("57014"), "{e:?}");
    assert!(e.is_unavailable());
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert!(!c.is_broken());
    assert_eq!(one::<i32>(&mut c, "SELECT 1", &[]), 1);
}

#[test]
fn transactions_commit_or_roll_back() {
    let Some(pg) = server() else { return };
    let mut c = connect(&pg);
    c.batch("CREATE TABLE k (id BIGINT PRIMARY KEY)").unwrap();
    // committed
    let n: Result<u64, Error> = c.transaction(|tx| {
        tx.execute("INSERT INTO k VALUES ($1)", &[&1i64])?;
        tx.execute("INSERT INTO k VALUES ($1)", &[&2i64])
    });
    assert_eq!(n.unwrap(), 1);
    // a statement fails inside: the error comes back, nothing of the transaction stays
    let r: Result<(), Error> = c.transaction(|tx| {
        tx.execute("INSERT INTO k VALUES ($1)", &[&3i64])?;
        tx.execute("INSERT INTO k VALUES ($1)", &[&1i64])?;
        Ok(())
    });
    assert_eq!(r.unwrap_err().code(), Some("23505"));
    assert_eq!(c.transaction_status(), TxStatus::Idle);
    // the body swallows the failure: still rolled back, and said so
    let r: Result<(), Error> = c.transaction(|tx| {
        tx.execute("INSERT INTO k VALUES ($1)", &[&4i64])?;
        let _ = tx.execute("INSERT INTO k VALUES ($1)", &[&1i64]);
        Ok(())
    });
    assert_eq!(r.unwrap_err().code(), Some("25P02"));
    // the body's own error type
    #[derive(Debug)]
    enum Mine {
        Pg(#[allow(dead_code)] Error),
        Refused,
    }
    impl From<Error> for Mine {
        fn from(e: Error) -> Self {
            Mine::Pg(e)
        }
    }
    let r: Result<(), Mine> = c.transaction(|tx| {
        tx.execute("INSERT INTO k VALUES ($1)", &[&5i64])?;
        Err(Mine::Refused)
    });
    assert!(matches!(r, Err(Mine::Refused)));
    // a deferred constraint fails the COMMIT itself
    c.batch(
        "CREATE TABLE d (id BIGINT, CONSTRAINT d_once UNIQUE (id) DEFERRABLE INITIALLY DEFERRED)",
    )
    .unwrap();
    let r: Result<(), Error> = c.transaction(|tx| {
        tx.execute("INSERT INTO d VALUES (1), (1)", &[])?;
        Ok(())
    });
    let e = r.unwrap_err();
    assert_eq!(
        (e.code(), e.constraint()),
        (Some("23505"), Some("d_once")),
        "{e:?}"
    );
    assert_eq!(c.transaction_status(), TxStatus::Idle);
    let ids: Vec<i64> = c
        .query("SELECT id FROM k ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0).unwrap())
        .collect();
    assert_eq!(ids, [1, 2]);
    assert_eq!(one::<i64>(&mut c, "SELECT count(*) FROM d", &[]), 0);
}

#[test]
fn batch_runs_several_statements_as_one_implicit_transaction() {
    let Some(pg) = server() else { return };
    let url = pg.create_database("batch");
    let mut c = Conn::connect(&config(&url)).unwrap();
    c.batch(
        "CREATE TABLE m (id BIGINT GENERATED ALWAYS AS IDENTITY, s TEXT);
         INSERT INTO m (s) VALUES ('a');
         INSERT INTO m (s) VALUES ('b'); SELECT 1;",
    )
    .unwrap();
    assert_eq!(one::<i64>(&mut c, "SELECT count(*) FROM m", &[]), 2);
    let e = c
        .batch("INSERT INTO m (s) VALUES ('c'); INSERT INTO nope VALUES (1); INSERT INTO m (s) VALUES ('d')")
        .unwrap_err();
    assert_eq!(e.code(), Some("42P01"), "{e:?}");
    assert_eq!(one::<i64>(&mut c, "SELECT count(*) FROM m", &[]), 2);
    c.batch("").unwrap();
    assert_eq!(
        one::<String>(&mut c, "SELECT current_database()::text", &[]),
        "batch"
    );
}

#[test]
fn the_pool_is_bounded_and_says_when_it_is_exhausted() {
    let Some(pg) = server() else { return };
    let pool = Arc::new(Pool::new(config(&pg.url()), 2));
    let a = pool.get(Duration::from_secs(5)).unwrap();
    let b = pool.get(Duration::from_secs(5)).unwrap();
    assert_eq!((pool.open(), pool.in_use()), (2, 2));
    let t = Instant::now();
    let e = pool.get(Duration::from_millis(300)).unwrap_err();
    let waited = t.elapsed();
    assert!(
        matches!(e, Error::PoolExhausted { .. }) && e.is_unavailable(),
        "{e:?}"
    );
    assert!(e.to_string().contains("connection pool exhausted"), "{e}");
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
    // a waiter is handed the connection returned meanwhile
    let p = pool.clone();
    let waiter = std::thread::spawn(move || {
        let mut c = p.get(Duration::from_secs(10)).unwrap();
        c.execute("SELECT 1", &[]).unwrap()
    });
    std::thread::sleep(Duration::from_millis(200));
    drop(a);
    assert_eq!(waiter.join().unwrap(), 1);
    drop(b);
    assert_eq!((pool.open(), pool.in_use()), (2, 0));
    // many threads through two connections
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let p = pool.clone();
            std::thread::spawn(move || {
                for j in 0..25i64 {
                    let mut c = p.get(Duration::from_secs(10)).unwrap();
                    let v: i64 = c.query("SELECT $1::BIGINT * 2", &[&(i * 100 + j)]).unwrap()[0]
                        .get(0)
                        .unwrap();
                    assert_eq!(v, (i * 100 + j) * 2);
                    assert!(p.open() <= 2);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!((pool.open(), pool.in_use()), (2, 0));
    // a transaction left open is rolled back before the connection is lent again
    {
        let mut c = pool.get(Duration::from_secs(5)).unwrap();
        c.batch("BEGIN").unwrap();
    }
    for _ in 0..2 {
        let c = pool.get(Duration::from_secs(5)).unwrap();
        assert_eq!(c.transaction_status(), TxStatus::Idle);
        drop(c);
    }
}

#[test]
fn a_broken_connection_is_dropped_and_replaced() {
    let Some(pg) = server() else { return };
    let pool = Pool::new(config(&pg.url()), 1);
    let mut c = pool.get(Duration::from_secs(5)).unwrap();
    let pid = c.backend_pid().unwrap();
    // kill our own backend from another session
    let mut admin = connect(&pg);
    assert!(one::<bool>(
        &mut admin,
        "SELECT pg_terminate_backend($1::INT)",
        &[&pid]
    ));
    std::thread::sleep(Duration::from_millis(100));
    let e = c.query("SELECT 1", &[]).unwrap_err();
    assert!(e.is_unavailable(), "{e:?}");
    assert!(c.is_broken());
    let e = c.query("SELECT 1", &[]).unwrap_err();
    assert!(matches!(e, Error::Closed { .. }), "{e:?}");
    drop(c);
    assert_eq!((pool.open(), pool.in_use()), (0, 0));
    let mut c = pool.get(Duration::from_secs(5)).unwrap();
    assert_ne!(c.backend_pid(), Some(pid));
    assert_eq!(c.execute("SELECT 1", &[]).unwrap(), 1);
    drop(c);
    // killed while idle in the pool: the check before lending notices, a new one is dialed
    let pid = pool
        .get(Duration::from_secs(5))
        .unwrap()
        .backend_pid()
        .unwrap();
    assert!(one::<bool>(
        &mut admin,
        "SELECT pg_terminate_backend($1::INT)",
        &[&pid]
    ));
    std::thread::sleep(Duration::from_millis(200));
    let mut c = pool.get(Duration::from_secs(5)).unwrap();
    assert_ne!(c.backend_pid(), Some(pid));
    assert_eq!(c.execute("SELECT 1", &[]).unwrap(), 1);
}

#[test]
fn a_restart_under_the_pool_costs_at_most_one_failed_call() {
    let Some(mut pg) = server() else { return };
    let pool = Pool::new(config(&pg.url()), 2);
    {
        let mut a = pool.get(Duration::from_secs(5)).unwrap();
        let mut b = pool.get(Duration::from_secs(5)).unwrap();
        a.execute("SELECT 1", &[]).unwrap();
        b.execute("SELECT 1", &[]).unwrap();
    }
    assert_eq!(pool.open(), 2);
    pg.restart();
    let first = pool
        .get(Duration::from_secs(5))
        .and_then(|mut c| c.execute("SELECT 1", &[]));
    match &first {
        Ok(_) => {}
        Err(e) => {
            eprintln!("the first call after the restart failed: {e}");
            assert!(e.is_unavailable(), "{e:?}");
        }
    }
    // with both idle connections dead, the check before lending should have caught them
    assert!(first.is_ok(), "{first:?}");
    for _ in 0..3 {
        let mut c = pool.get(Duration::from_secs(5)).unwrap();
        assert_eq!(c.execute("SELECT 1", &[]).unwrap(), 1);
    }
}

#[test]
fn a_stopped_server_fails_calls_as_unavailable_without_hanging() {
    let Some(mut pg) = server() else { return };
    let pool = Pool::new(
        config(&format!("{}?connect_timeout=2&io_timeout=2", pg.url())),
        2,
    );
    let mut held = pool.get(Duration::from_secs(5)).unwrap();
    held.execute("SELECT 1", &[]).unwrap();
    drop(pool.get(Duration::from_secs(5)).unwrap()); // one idle too
    pg.stop();
    let t = Instant::now();
    let e = held.query("SELECT 1", &[]).unwrap_err();
    assert!(e.is_unavailable(), "{e:?}");
    drop(held);
    for _ in 0..3 {
        let e = pool
            .get(Duration::from_secs(1))
            .and_then(|mut c| c.execute("SELECT 1", &[]))
            .unwrap_err();
        assert!(e.is_unavailable(), "{e:?}");
        assert!(!e.to_string().contains(pg.password()), "{e}");
    }
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(pool.in_use(), 0);
    pg.restart();
    let mut c = pool.get(Duration::from_secs(5)).unwrap();
    assert_eq!(c.execute("SELECT 1", &[]).unwrap(), 1);
}

#[test]
fn nobody_listening_is_unavailable_at_once() {
    // no server needed
    let port = free_port();
    let cfg = config(&format!("postgres://u:secret@127.0.0.1:{port}/d"));
    let t = Instant::now();
    let e = Conn::connect(&cfg).unwrap_err();
    assert!(e.is_unavailable(), "{e:?}");
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
    assert!(!format!("{e} {e:?}").contains("secret"));
}

#[test]
fn a_silent_server_times_out_within_connect_timeout() {
    // accepts and never answers the startup message: the connect deadline ends it
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let keep = std::thread::spawn(move || listener.accept().map(|(s, _)| s));
    let cfg = config(&format!(
        "postgres://u:p@127.0.0.1:{port}/d?connect_timeout=1"
    ));
    let t = Instant::now();
    let e = Conn::connect(&cfg).unwrap_err();
    let took = t.elapsed();
    assert!(
        matches!(e, Error::Timeout { .. }) && e.is_unavailable(),
        "{e:?}"
    );
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    drop(keep.join());
}

//! Robustness of the backend-message reader and everything that interprets messages: valid
//! server responses mutated (bit flips, truncations, extensions, length fields rewritten) and
//! plain random bytes are fed through an in-memory transport to the startup, query and batch
//! paths, and every row of a successful query is read as every type. Each must end in a value
//! or an error — never a panic — and the read buffer never grows past what was sent (plus a
//! chunk), whatever the length fields claim. A deterministic stand-in for cargo-fuzz, like
//! conduit-ipmi's `fuzz` module.

use std::io::{self, Cursor, Read, Write};
use std::time::{Duration, Instant};

use crate::conn::Transport;
use crate::{Config, Conn, Error, MAX_MESSAGE};

/// Serves `input` to reads and swallows writes.
struct Script(Cursor<Vec<u8>>);

impl Read for Script {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Script {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport for Script {
    fn set_timeout(&mut self, _: Duration) -> io::Result<()> {
        Ok(())
    }
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

/// Variations of `seed`: flips, truncations, appended or overwritten bytes, a length field
/// rewritten to an extreme, or random bytes.
fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut m = seed.to_vec();
    match rng.below(6) {
        0 if !m.is_empty() => {
            let i = rng.below(m.len());
            m[i] ^= 1 << rng.below(8);
        }
        1 => m.truncate(rng.below(m.len() + 1)),
        2 => m.extend((0..rng.below(64) + 1).map(|_| rng.byte())),
        3 if !m.is_empty() => {
            for _ in 0..rng.below(8) + 1 {
                let i = rng.below(m.len());
                m[i] = [0x00, 0xFF, 0x7F, 0x80, rng.byte()][rng.below(5)];
            }
        }
        4 if m.len() >= 5 => {
            // a length field somewhere: 0, 3, huge, just past the cap, or random
            let i = rng.below(m.len() - 4);
            let len: u32 =
                [0, 3, u32::MAX, (MAX_MESSAGE + 1) as u32, rng.next() as u32][rng.below(5)];
            m[i..i + 4].copy_from_slice(&len.to_be_bytes());
        }
        _ => m = (0..rng.below(256)).map(|_| rng.byte()).collect(),
    }
    m
}

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    m.extend_from_slice(body);
    m
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

fn auth(code: u32, data: &[u8]) -> Vec<u8> {
    let mut b = code.to_be_bytes().to_vec();
    b.extend_from_slice(data);
    msg(b'R', &b)
}

fn row_description(cols: &[(&str, u32)]) -> Vec<u8> {
    let mut b = (cols.len() as u16).to_be_bytes().to_vec();
    for (name, oid) in cols {
        b.extend(cstr(name));
        b.extend_from_slice(&0u32.to_be_bytes()); // table
        b.extend_from_slice(&0i16.to_be_bytes()); // column
        b.extend_from_slice(&oid.to_be_bytes());
        b.extend_from_slice(&(-1i16).to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.extend_from_slice(&0i16.to_be_bytes()); // text
    }
    msg(b'T', &b)
}

fn data_row(fields: &[Option<&[u8]>]) -> Vec<u8> {
    let mut b = (fields.len() as u16).to_be_bytes().to_vec();
    for f in fields {
        match f {
            None => b.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(v) => {
                b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                b.extend_from_slice(v);
            }
        }
    }
    msg(b'D', &b)
}

fn error_response(severity: &str, code: &str) -> Vec<u8> {
    let mut b = Vec::new();
    for (t, v) in [
        (b'S', severity),
        (b'V', severity),
        (b'C', code),
        (b'M', "duplicate key"),
        (b'n', "t_pkey"),
        (b'D', "Key (id)=(1) already exists."),
    ] {
        b.push(t);
        b.extend(cstr(v));
    }
    b.push(0);
    msg(b'E', &b)
}

fn ready(status: u8) -> Vec<u8> {
    msg(b'Z', &[status])
}

fn query_seeds() -> Vec<Vec<u8>> {
    let select = [
        msg(b'1', &[]),
        msg(b'2', &[]),
        row_description(&[("n", 20), ("s", 25), ("b", 17), ("f", 16), ("i", 23)]),
        data_row(&[
            Some(b"42"),
            Some("zoë".as_bytes()),
            Some(b"\\x00ff"),
            Some(b"t"),
            None,
        ]),
        data_row(&[None, None, None, None, Some(b"-7")]),
        msg(b'C', &cstr("SELECT 2")),
        ready(b'I'),
    ]
    .concat();
    let failed = [
        msg(b'1', &[]),
        error_response("ERROR", "23505"),
        ready(b'E'),
    ]
    .concat();
    let notices = [
        msg(b'N', &[b'M', b'h', b'i', 0, 0]),
        msg(b'S', &[cstr("TimeZone"), cstr("UTC")].concat()),
        msg(b'A', &[0, 0, 0, 1, b'c', 0, b'p', 0]),
        msg(b'1', &[]),
        msg(b'2', &[]),
        msg(b'n', &[]),
        msg(b'C', &cstr("INSERT 0 3")),
        ready(b'T'),
    ]
    .concat();
    let batch = [
        msg(b'C', &cstr("CREATE TABLE")),
        msg(b'I', &[]),
        error_response("FATAL", "57P01"),
    ]
    .concat();
    vec![select, failed, notices, batch]
}

fn startup_seeds() -> Vec<Vec<u8>> {
    let tail = [
        msg(b'S', &[cstr("server_version"), cstr("15.18")].concat()),
        msg(b'K', &[0, 0, 0, 9, 1, 2, 3, 4]),
        ready(b'I'),
    ]
    .concat();
    vec![
        [auth(0, &[]), tail.clone()].concat(),
        [auth(3, &[]), auth(0, &[]), tail.clone()].concat(),
        [auth(5, &[1, 2, 3, 4]), auth(0, &[]), tail.clone()].concat(),
        [
            auth(10, &[cstr("SCRAM-SHA-256"), vec![0]].concat()),
            auth(11, b"r=abc,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"),
            auth(12, b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
            auth(0, &[]),
            tail.clone(),
        ]
        .concat(),
        [auth(10, &[cstr("SCRAM-SHA-256-PLUS"), vec![0]].concat())].concat(),
        error_response("FATAL", "28P01"),
        [auth(7, &[])].concat(),
    ]
}

/// Password auth allowed, so that the cleartext and md5 seeds drive those paths too.
fn config() -> Config {
    Config::parse("postgres://u:secret@127.0.0.1/d?auth=password").unwrap()
}

/// What every run must satisfy: no panic (by getting here), a bounded read buffer, and a
/// broken connection after anything but a clean end.
fn check_bound(conn: &Conn, input: &[u8]) {
    let cap = conn.read_capacity();
    assert!(
        cap <= 2 * input.len() + 64 * 1024,
        "read buffer of {cap} bytes for {} input bytes",
        input.len()
    );
}

fn read_every_way(rows: &crate::Rows) {
    for row in rows {
        for i in 0..row.len() + 1 {
            let _ = row.get::<i64>(i);
            let _ = row.get::<i32>(i);
            let _ = row.get::<bool>(i);
            let _ = row.get::<String>(i);
            let _ = row.get::<Vec<u8>>(i);
            let _ = row.get::<Option<i64>>(i);
            let _ = row.get::<Option<Vec<u8>>>(i);
        }
    }
}

fn run_query(input: Vec<u8>) {
    let mut conn = Conn::over(Box::new(Script(Cursor::new(input.clone()))), "fuzz".into());
    // several calls on the same stream: later ones see what the earlier left
    for _ in 0..3 {
        if let Ok(rows) = conn.query("SELECT $1", &[&1i64]) {
            read_every_way(&rows);
        }
        let _ = conn.batch("SELECT 1; SELECT 2");
        let _ = conn.transaction(|c| c.execute("SELECT 1", &[]));
        check_bound(&conn, &input);
    }
}

fn run_startup(input: Vec<u8>) {
    let io = Box::new(Script(Cursor::new(input.clone())));
    let deadline = Instant::now() + Duration::from_secs(10);
    if let Ok(mut conn) = Conn::handshake(io, &config(), deadline) {
        check_bound(&conn, &input);
        let _ = conn.query("SELECT 1", &[]);
    }
}

const ROUNDS: usize = 20_000;

#[test]
fn the_seeds_parse() {
    let mut conn = Conn::over(
        Box::new(Script(Cursor::new(query_seeds()[0].clone()))),
        "seed".into(),
    );
    let rows = conn.query("SELECT", &[]).unwrap();
    assert_eq!((rows.len(), rows.affected()), (2, 2));
    assert_eq!(rows[0].get::<i64>(0).unwrap(), 42);
    assert_eq!(rows[0].get::<String>(1).unwrap(), "zoë");
    assert_eq!(rows[0].get::<Vec<u8>>(2).unwrap(), vec![0, 0xff]);
    assert!(rows[0].get::<bool>(3).unwrap());
    assert_eq!(rows[1].get::<Option<i32>>(4).unwrap(), Some(-7));
    assert_eq!(rows[0].get::<Option<i32>>(4).unwrap(), None);

    let mut conn = Conn::over(
        Box::new(Script(Cursor::new(query_seeds()[1].clone()))),
        "seed".into(),
    );
    let e = conn.execute("INSERT", &[]).unwrap_err();
    assert_eq!((e.code(), e.constraint()), (Some("23505"), Some("t_pkey")));
    assert!(!conn.is_broken());

    let io = Box::new(Script(Cursor::new(startup_seeds()[1].clone())));
    let conn = Conn::handshake(io, &config(), Instant::now() + Duration::from_secs(5)).unwrap();
    assert_eq!(conn.parameter("server_version"), Some("15.18"));
    assert_eq!(conn.backend_pid(), Some(9));
}

#[test]
fn a_server_asking_for_the_password_itself_is_refused_by_default() {
    let io = Box::new(Script(Cursor::new(startup_seeds()[1].clone())));
    let scram_only = Config::parse("postgres://u:secret@127.0.0.1/d").unwrap();
    let e = Conn::handshake(io, &scram_only, Instant::now() + Duration::from_secs(5)).unwrap_err();
    assert!(matches!(e, Error::Auth(_)), "{e}");
    assert!(!e.to_string().contains("secret"), "{e}");
}

#[test]
fn lying_lengths_allocate_nothing_and_fail() {
    // a header announcing 60 MiB, then silence: Closed, with no 60 MiB buffer
    let mut input = vec![b'D'];
    input.extend_from_slice(&(60u32 << 20).to_be_bytes());
    input.extend_from_slice(&[0; 10]);
    let mut conn = Conn::over(Box::new(Script(Cursor::new(input.clone()))), "x".into());
    let e = conn.query("SELECT 1", &[]).unwrap_err();
    assert!(matches!(e, Error::Closed { .. }), "{e:?}");
    check_bound(&conn, &input);
    assert!(conn.is_broken());
    // past the cap, or shorter than the length field itself: Protocol
    for len in [(MAX_MESSAGE + 1) as u32, u32::MAX, 3, 0] {
        let mut input = vec![b'D'];
        input.extend_from_slice(&len.to_be_bytes());
        let mut conn = Conn::over(Box::new(Script(Cursor::new(input))), "x".into());
        let e = conn.query("SELECT 1", &[]).unwrap_err();
        assert!(matches!(e, Error::Protocol(_)), "{len}: {e:?}");
        assert!(conn.is_broken());
        let again = conn.query("SELECT 1", &[]).unwrap_err();
        assert!(matches!(again, Error::Closed { .. }), "{again:?}");
    }
}

#[test]
fn mutated_and_random_query_responses() {
    let mut rng = Rng(0x1bad_b002);
    let seeds = query_seeds();
    for _ in 0..ROUNDS {
        let seed = &seeds[rng.below(seeds.len())];
        run_query(mutate(seed, &mut rng));
    }
}

#[test]
fn mutated_and_random_startups() {
    let mut rng = Rng(0xdead_beef);
    let seeds = startup_seeds();
    // SCRAM runs PBKDF2 only for a server-first that names our nonce, which mutations of a
    // fixed seed cannot: the rounds stay fast.
    for _ in 0..ROUNDS / 4 {
        let seed = &seeds[rng.below(seeds.len())];
        run_startup(mutate(seed, &mut rng));
    }
}

#[test]
fn concatenated_mutations() {
    // several mutated messages in a row: the reader must resynchronize or fail cleanly
    let mut rng = Rng(42);
    let seeds = query_seeds();
    for _ in 0..ROUNDS / 4 {
        let n = rng.below(4) + 1;
        let input: Vec<u8> = (0..n)
            .flat_map(|_| mutate(&seeds[rng.below(seeds.len())], &mut rng))
            .collect();
        run_query(input);
    }
}

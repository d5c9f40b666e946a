//! A throwaway PostgreSQL 15 server for the live tests: its own data directory in a temp dir,
//! loopback only, a free port, password (SCRAM-SHA-256) authentication for a superuser
//! `conduit`. Run as the unprivileged `postgres` user when the tests run as root (CI does;
//! PostgreSQL refuses to run as root). Stopped on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::{free_port, urlencode, TempDir};

/// Where Debian's postgresql-15 puts its server binaries.
pub const BIN: &str = "/usr/lib/postgresql/15/bin";

/// The superuser the tests log in as.
pub const USER: &str = "conduit";

/// One running server.
#[derive(Debug)]
pub struct Postgres {
    dir: TempDir,
    port: u16,
    password: String,
    /// Run the server's tools through `runuser -u postgres --` (we are root).
    as_postgres: bool,
    running: bool,
}

fn bin(name: &str) -> PathBuf {
    Path::new(BIN).join(name)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl Postgres {
    /// Whether the PostgreSQL 15 binaries are installed. Missing under CI (env `CI` set) is a
    /// failure, not a skip: it would hide every live test.
    pub fn available() -> bool {
        let there = ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|b| bin(b).is_file());
        if !there && std::env::var_os("CI").is_some() {
            panic!(
                "PostgreSQL 15 is not installed ({BIN} missing) but CI is set: \
                 install it (apt-get install postgresql; scripts/test does)"
            );
        }
        there
    }

    /// Initializes a data directory and starts the server on a free loopback port, with
    /// fsync off (a test's data need not outlive a power cut); panics (with the server's log)
    /// if it does not come up.
    pub fn start() -> Postgres {
        Postgres::start_with(false)
    }

    /// [`Postgres::start`] with PostgreSQL's durable defaults (fsync, synchronous commit, full
    /// page writes): what a benchmark against SQLite's `synchronous = FULL` compares with.
    pub fn start_durable() -> Postgres {
        Postgres::start_with(true)
    }

    fn start_with(durable: bool) -> Postgres {
        assert!(
            Postgres::available(),
            "PostgreSQL 15 is not installed ({BIN} missing): apt-get install postgresql"
        );
        let dir = TempDir::new("postgres");
        let as_postgres = is_root();
        let password = format!("Pw {}@x:y/z%{}", std::process::id(), free_port());
        let pwfile = dir.0.join("pwfile");
        std::fs::write(&pwfile, format!("{password}\n")).expect("write the password file");
        let mut pg = Postgres {
            port: free_port(),
            password,
            as_postgres,
            running: false,
            dir,
        };
        if as_postgres {
            // the server's user owns the directory: data, socket, log
            pg.check(
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(&pg.dir.0),
                "chown the data directory",
            );
        }
        pg.check(
            pg.tool("initdb")
                .arg("-D")
                .arg(pg.data())
                .args(["-U", USER, "--auth=scram-sha-256", "--no-sync"])
                .args(["--encoding=UTF8", "--locale=C"])
                .arg(format!("--pwfile={}", pwfile.display())),
            "initdb",
        );
        let mut conf = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\n",
            pg.port,
            pg.dir.0.display()
        );
        if !durable {
            conf.push_str("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n");
        }
        let conf_path = pg.data().join("postgresql.conf");
        let mut all = std::fs::read_to_string(&conf_path).expect("read postgresql.conf");
        all.push_str(&conf);
        std::fs::write(&conf_path, all).expect("write postgresql.conf");
        pg.start_server();
        pg
    }

    /// `postgres://conduit:PASSWORD@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// The URL of database `db` on this server.
    pub fn url_for(&self, db: &str) -> String {
        format!(
            "postgres://{USER}:{}@127.0.0.1:{}/{db}",
            urlencode(&self.password),
            self.port
        )
    }

    /// The superuser's password (it has spaces, `@`, `:`, `/` and `%`: URLs must encode it).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The TCP port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates database `name` and returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        self.check(
            Command::new(bin("createdb"))
                .env("PGPASSWORD", &self.password)
                .args(["-h", "127.0.0.1", "-U", USER, "-p"])
                .arg(self.port.to_string())
                .arg("--")
                .arg(name),
            "createdb",
        );
        self.url_for(name)
    }

    /// Stops the server (fast shutdown: sessions are ended) and starts it again on the same
    /// port and data; a stopped server is just started.
    pub fn restart(&mut self) {
        self.stop();
        self.start_server();
    }

    /// Stops the server (fast shutdown), waiting until it is gone.
    pub fn stop(&mut self) {
        if std::mem::take(&mut self.running) {
            self.check(
                self.pg_ctl().args(["stop", "-m", "fast", "-w", "-t", "30"]),
                "pg_ctl stop",
            );
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("log")).unwrap_or_default()
    }

    fn data(&self) -> PathBuf {
        self.dir.0.join("data")
    }

    fn start_server(&mut self) {
        let log = self.dir.0.join("log");
        self.check(
            self.pg_ctl()
                .args(["start", "-w", "-t", "60", "-l"])
                .arg(&log),
            "pg_ctl start",
        );
        self.running = true;
    }

    fn pg_ctl(&self) -> Command {
        let mut c = self.tool("pg_ctl");
        c.arg("-D").arg(self.data());
        c
    }

    /// A server tool, as `postgres` when we are root.
    fn tool(&self, name: &str) -> Command {
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(bin(name));
            c
        } else {
            Command::new(bin(name))
        }
    }

    fn check(&self, cmd: &mut Command, what: &str) -> Output {
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
        assert!(
            out.status.success(),
            "{what} failed ({}):\n{}\n{}\nserver log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        out
    }
}

impl Drop for Postgres {
    /// Immediate shutdown; if that fails, the postmaster is killed, so no server outlives
    /// its test (or holds its temp dir).
    fn drop(&mut self) {
        if !std::mem::take(&mut self.running) {
            return;
        }
        let stopped = self
            .pg_ctl()
            .args(["stop", "-m", "immediate", "-w", "-t", "10"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !stopped {
            let pid = std::fs::read_to_string(self.data().join("postmaster.pid"))
                .ok()
                .and_then(|s| s.lines().next().map(str::to_string));
            if let Some(pid) = pid {
                let _ = Command::new("kill").args(["-KILL", &pid]).status();
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

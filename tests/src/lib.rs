//! Harness for the integration tests: start the real binaries and real peers on loopback, talk
//! raw HTTP to them, and stop everything when a test ends (on drop, also when it fails).
//!
//! The binaries are built by the test command (`scripts/test`) before `cargo test`; the harness
//! refuses to run against binaries older than the sources.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

pub mod bench_site;
pub mod ipmi_exporter;
pub mod ipmi_sim;
pub mod pki;
pub mod postgres;
pub mod prometheus;
pub mod rpc_client;
pub mod stats;
pub mod stunnel;
pub mod sushy;
pub mod udp_delay;
pub mod vnc;
pub mod ws_client;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace")
        .to_path_buf()
}

/// The directory holding the workspace binaries: `CONDUIT_BIN_DIR` when set (the test command
/// points it at `target/release`, the binaries we ship), else those built for the same target
/// and profile as this test (`target/[triple/]debug`).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CONDUIT_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/integration-<hash>
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary in target/<profile>/deps")
        .to_path_buf()
}

fn newest_source(dir: &Path, newest: &mut SystemTime) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name()
                .is_some_and(|n| n != "target" && n != "node_modules")
            {
                newest_source(&p, newest);
            }
        } else if p
            .extension()
            .is_some_and(|x| ["rs", "toml", "js", "html", "css"].iter().any(|e| x == *e))
        {
            if let Ok(m) = e.metadata().and_then(|m| m.modified()) {
                *newest = (*newest).max(m);
            }
        }
    }
}

/// Path of workspace binary `name`, checked to exist and to be newer than the sources.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    let built = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| {
            panic!(
                "{} is missing: build the binaries first (`cargo build --workspace --bins`, \
                 or `--release` with CONDUIT_BIN_DIR=target/release, as scripts/test does)",
                path.display()
            )
        });
    // The binary's own crate and what it is built from.
    // The lite components build on the serving crates only: a change elsewhere (the protocol
    // crates) does not relink them, and must not make them look stale.
    const SERVING: [&str; 6] = [
        "crates/http",
        "crates/metrics",
        "crates/runtime",
        "crates/service",
        "crates/ws",
        "crates/base64",
    ];
    let crates: Vec<&str> = match name {
        "conduit-agent" => vec!["agent", "board", "crates"],
        "conduit-gateway" => [
            &[
                "gateway-lite",
                "crates/api",
                "crates/auth",
                "crates/connect",
                "crates/http-client",
                "crates/uplink",
            ][..],
            &SERVING,
        ]
        .concat(),
        "conduit" => vec!["cli", "crates"],
        "conduit-manager" => {
            // web/: the page it builds in.
            [
                &["manager-lite", "crates/auth", "crates/api", "web"][..],
                &SERVING,
            ]
            .concat()
        }
        _ => vec!["crates"],
    };
    let mut newest = SystemTime::UNIX_EPOCH;
    for crate_dir in &crates {
        newest_source(&workspace_root().join(crate_dir), &mut newest);
    }
    assert!(
        built >= newest,
        "{} is older than the sources: rebuild it (`cargo build --workspace --bins`)",
        path.display()
    );
    path
}

/// A free loopback port (bound then released; good enough for peers that take a port flag).
pub fn free_port() -> u16 {
    // The kernel may hand a just-released port out again: never give two tests of this
    // process the same one (each would reach the other's component).
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("bind an ephemeral port");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// CPU time of every thread of process `pid` (`self` for this one) in nanoseconds, from each
/// task's `schedstat`: exact where `stat`'s utime and stime count 10 ms ticks. (A thread
/// that exits takes its time with it: for processes whose threads live on.)
pub fn proc_cpu_ns(pid: &str) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten();
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// (minor page faults, CPU seconds) of process `pid` (a number or `self`) so far, from /proc.
/// CPU time is what the process did, whatever else loads the machine.
pub fn proc_counters(pid: &str) -> (u64, f64) {
    static CLK_TCK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let tck = *CLK_TCK.get_or_init(|| {
        (std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok())
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
    });
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the name: state (0), …, minflt (7), …, utime (11), stime (12).
    let f: Vec<u64> = (stat.rsplit_once(')').map_or("", |s| s.1).split_whitespace())
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let at = |i: usize| f.get(i).copied().unwrap_or(0);
    (at(7), (at(11) + at(12)) as f64 / tck)
}

/// A temp directory removed on drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates `/tmp/conduit-test-<tag>-<pid>-<n>`.
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("conduit-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running child process, stopped (SIGTERM, then SIGKILL) on drop.
#[derive(Debug)]
pub struct Running {
    /// The child.
    pub child: Child,
    /// What it wrote to stderr so far.
    pub log: Arc<Mutex<String>>,
    /// Name for messages.
    pub name: String,
}

impl Running {
    /// Sends SIGTERM and waits up to `within` for a clean exit; returns the exit status.
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let until = Instant::now() + within;
        while Instant::now() < until {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// SIGKILL (`kill -9`): no chance to clean up. Waits for the process to be gone.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The stderr output so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            if self.terminate(Duration::from_secs(3)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

/// Starts `cmd` with stderr (and stdout) captured into its log, without waiting.
pub fn spawn(name: &str, cmd: Command) -> Running {
    start_with(name, cmd, |_| None::<()>).0
}

/// Starts `cmd` with stderr captured; returns once a stderr line satisfies `ready` (its value
/// is returned too) or fails after `timeout` with the captured log.
pub fn start_until<T: Send + 'static>(
    name: &str,
    cmd: Command,
    timeout: Duration,
    ready: impl Fn(&str) -> Option<T> + Send + 'static,
) -> (Running, T) {
    let (mut running, rx) = start_with(name, cmd, ready);
    match rx.recv_timeout(timeout) {
        Ok(v) => (running, v),
        Err(_) => {
            let status = running.child.try_wait();
            panic!(
                "{name} did not become ready within {timeout:?} (exit: {status:?}); log:\n{}",
                running.log()
            )
        }
    }
}

fn start_with<T: Send + 'static>(
    name: &str,
    mut cmd: Command,
    ready: impl Fn(&str) -> Option<T> + Send + 'static,
) -> (Running, std::sync::mpsc::Receiver<T>) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {name}: {e}"));
    let stderr = child.stderr.take().expect("piped stderr");
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let log2 = log.clone();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Ok(mut l) = log2.lock() {
                l.push_str(&line);
                l.push('\n');
            }
            if let Some(v) = tx.as_ref().and_then(|_| ready(&line)) {
                let _ = tx.take().map(|t| t.send(v));
            }
        }
    });
    let running = Running {
        child,
        log,
        name: name.to_owned(),
    };
    (running, rx)
}

/// A Conduit component binary running on an ephemeral loopback port.
#[derive(Debug)]
pub struct Component {
    /// The process.
    pub proc: Running,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its data directory, when the test made one (the manager's database).
    pub data: Option<TempDir>,
}

/// A command for workspace binary `name`: run directly, or through `CONDUIT_TEST_RUNNER`
/// (e.g. `qemu-aarch64`) when cross tests run the target's binaries under emulation.
pub fn bin_command(name: &str) -> Command {
    let path = bin(name);
    let runner = std::env::var("CONDUIT_TEST_RUNNER").unwrap_or_default();
    let mut parts = runner.split_whitespace();
    match parts.next() {
        Some(program) => {
            let mut cmd = Command::new(program);
            cmd.args(parts).arg(path);
            cmd
        }
        None => Command::new(path),
    }
}

/// `conduit-manager init` on `data_dir` (with `flags`, e.g. a database URL): the first admin,
/// `admin` = (e-mail, password), its password given on stdin as a script would.
pub fn init_manager(data_dir: &Path, flags: &[&str], admin: (&str, &str)) {
    let data_dir = data_dir.to_str().expect("a UTF-8 data dir");
    init_manager_with(&[&["--data-dir", data_dir][..], flags].concat(), admin);
}

/// `conduit-manager ARGS… init` with `admin`'s password on stdin: `args` say where the
/// database is (`--data-dir`, or `--database-url` for PostgreSQL).
pub fn init_manager_with(args: &[&str], admin: (&str, &str)) {
    let mut child = bin_command("conduit-manager")
        .args(args)
        .args(["init", "--email", admin.0])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run conduit-manager init");
    let mut stdin = child.stdin.take().expect("stdin");
    writeln!(stdin, "{}", admin.1).expect("write the password");
    drop(stdin);
    let out = child.wait_with_output().expect("init");
    assert!(
        out.status.success(),
        "init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `conduit-agent --config CONFIG ARGS…` (a CLI command) to completion.
pub fn agent_cli(config: &Path, args: &[&str]) -> std::process::Output {
    bin_command("conduit-agent")
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("run conduit-agent")
}

/// [`agent_cli`] that must succeed; returns its standard output.
pub fn agent_cli_ok(config: &Path, args: &[&str]) -> String {
    let out = agent_cli(config, args);
    assert!(
        out.status.success(),
        "conduit-agent {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Starts `conduit-<binary>` on `127.0.0.1:0` with `extra` flags and waits for its
/// `listening on ADDR;` log line.
///
/// A manager started without `--data-dir` or `--database` gets a fresh temporary data
/// directory (kept in the returned [`Component`]), so tests never share a database.
pub fn start_component(binary: &str, extra: &[&str]) -> Component {
    let mut cmd = bin_command(binary);
    cmd.args(["--listen", "127.0.0.1:0"]).args(extra);
    let data = (binary == "conduit-manager"
        && !extra
            .iter()
            .any(|a| a.starts_with("--data-dir") || a.starts_with("--database")))
    .then(|| TempDir::new("manager"));
    if let Some(d) = &data {
        cmd.arg("--data-dir").arg(&d.0);
    }
    // A gateway alone (for its /metrics): plaintext uplinks on a free port, a placeholder
    // credential and no manager to reach (it keeps retrying its registration, harmlessly).
    let data = match (binary, data) {
        ("conduit-gateway", None) if !extra.contains(&"--credential-file") => {
            let d = TempDir::new("gateway");
            std::fs::write(d.0.join("credential"), "cgw_placeholder_x\n")
                .expect("write credential");
            cmd.arg("--credential-file")
                .arg(d.0.join("credential"))
                .arg("--state-dir")
                .arg(d.0.join("state"))
                .args(["--uplink-plaintext", "--uplink-listen", "127.0.0.1:0"])
                .args(["--manager", "http://127.0.0.1:9"]);
            Some(d)
        }
        (_, data) => data,
    };
    let (proc, addr) = start_until(binary, cmd, Duration::from_secs(10), |line| {
        let rest = line.split("listening on ").nth(1)?;
        rest.split(';').next()?.parse::<SocketAddr>().ok()
    });
    Component { proc, addr, data }
}

/// An HTTP response as read off the wire.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Header fields.
    pub headers: Vec<(String, String)>,
    /// Body (de-chunked, not decompressed).
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as UTF-8 text (gunzipped when `Content-Encoding: gzip`).
    pub fn text(&self) -> String {
        if self.header("Content-Encoding") == Some("gzip") {
            let mut s = String::new();
            flate2::read::GzDecoder::new(&self.body[..])
                .read_to_string(&mut s)
                .expect("gzip body");
            s
        } else {
            String::from_utf8_lossy(&self.body).into_owned()
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses one complete HTTP/1.1 response (Content-Length, chunked, or until EOF).
pub fn parse_response(raw: &[u8]) -> Result<HttpResponse, String> {
    parse_response_to(raw, false)
}

/// Parses one response; `to_head` says it answers a HEAD request (no body follows).
pub fn parse_response_to(raw: &[u8], to_head: bool) -> Result<HttpResponse, String> {
    let end = find(raw, b"\r\n\r\n").ok_or("no end of head")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|e| e.to_string())?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or("empty head")?;
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let rest = &raw[end + 4..];
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    let body = if to_head {
        Vec::new()
    } else if get("Transfer-Encoding").is_some_and(|v| v.contains("chunked")) {
        let mut body = Vec::new();
        let mut r = rest;
        loop {
            let nl = find(r, b"\r\n").ok_or("truncated chunk size")?;
            let size = usize::from_str_radix(
                std::str::from_utf8(&r[..nl])
                    .map_err(|e| e.to_string())?
                    .trim(),
                16,
            )
            .map_err(|e| e.to_string())?;
            r = &r[nl + 2..];
            if size == 0 {
                break;
            }
            body.extend_from_slice(r.get(..size).ok_or("truncated chunk")?);
            r = &r[size + 2..];
        }
        body
    } else if let Some(len) = get("Content-Length").and_then(|v| v.parse::<usize>().ok()) {
        rest.get(..len).ok_or("truncated body")?.to_vec()
    } else {
        rest.to_vec()
    };
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

/// Sends raw request bytes on a new connection and reads until the server closes it.
pub fn raw_exchange(addr: SocketAddr, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    s.set_write_timeout(Some(Duration::from_secs(15)))?;
    s.write_all(request)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(out)
}

/// `GET path` with extra header lines, `Connection: close`.
pub fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    request(addr, "GET", path, headers, b"")
}

/// One request with `Connection: close`; panics with context on failure.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    if !body.is_empty() {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    let raw =
        raw_exchange(addr, &bytes).unwrap_or_else(|e| panic!("{method} {path} at {addr}: {e}"));
    parse_response_to(&raw, method == "HEAD")
        .unwrap_or_else(|e| panic!("{method} {path} at {addr}: {e}"))
}

/// Mints a one-time console ticket as the holder of `token` and returns the console's path
/// with it (`/console/{kind}/{server}?ticket=…`): what a browser opens.
pub fn console_ticket_path(addr: SocketAddr, token: &str, kind: &str, server: &str) -> String {
    let auth = format!("Bearer {token}");
    let r = request(
        addr,
        "POST",
        &format!("/api/v1/servers/{server}/console/{kind}/ticket"),
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(
        r.status,
        201,
        "mint a {kind} ticket for {server}: {}",
        r.text()
    );
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("ticket JSON");
    v["path"].as_str().expect("ticket path").to_owned()
}

/// Percent-encodes a query parameter value.
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Polls `f` every `every` until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(
    timeout: Duration,
    every: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Option<T> {
    let until = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= until {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// Program `name` of the virtualenv holding the test peers from PyPI (sushy-tools,
/// vncdotool), which `scripts/test` makes in `target/peers/venv`.
pub fn venv_bin(name: &str) -> PathBuf {
    let p = workspace_root().join("target/peers/venv/bin").join(name);
    assert!(
        p.is_file(),
        "{} is missing: scripts/test installs the PyPI test peers there",
        p.display()
    );
    p
}

/// Finds a system tool, or fails the test saying how the test command installs it.
pub fn tool(name: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    for dir in ["/usr/bin", "/usr/sbin", "/usr/local/bin"] {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("{name} is not installed: scripts/test installs the test peers (needs root or sudo)")
}

/// The value of the first sample of `family` carrying all of `labels`, from an exposition
/// (`family` may also name a histogram's `_count`, `_sum` or `_bucket` series).
pub fn sample(text: &str, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let fams = conduit_reference::parse_exposition(text).expect("a valid exposition");
    // A histogram's `_count`, `_sum` or `_bucket` series, by its sample name.
    let (fam, series) = match fams.get(family) {
        Some(f) => (f, None),
        None => {
            let base = ["_count", "_sum", "_bucket"]
                .iter()
                .find_map(|suffix| family.strip_suffix(suffix))?;
            (fams.get(base)?, Some(family))
        }
    };
    fam.samples
        .iter()
        .find(|s| {
            series.is_none_or(|n| s.name == n)
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(a, b)| a == k && b == v))
        })
        .map(|s| s.value)
}

/// [`sample`] read from a component's `/metrics`, 0 when absent.
pub fn metric(addr: SocketAddr, family: &str, labels: &[(&str, &str)]) -> f64 {
    sample(&get(addr, "/metrics", &[]).text(), family, labels).unwrap_or(0.0)
}

//! `cargo bench -p conduit-tests --bench uplink` (after `cargo build --release --workspace
//! --bins`): the gateway holding many agent uplinks, and what routing an operation through it
//! adds. Reports; not a CI gate.
//!
//! 1. **Added latency.** PowerStatus of one ipmi_sim BMC through the gateway (the user's token
//!    checked, the call routed over the real agent's TLS uplink) against the same call at the
//!    agent's own API: same BMC, same run, interleaved, keep-alive clients. p50/p99 of each and
//!    the difference at p50 (goal: ≤ 1 ms added). Measured idle and again at 10,000 agents.
//! 2. **Many uplinks.** This process is the load generator: simulated agents speaking the real
//!    protocol (TLS checked against the bench's CA, the WebSocket upgrade, a registration with
//!    a manager-issued credential each, a heartbeat every 10 s — the gateway's default — at
//!    spread phases), from [`SOURCES`] source addresses (127.0.1.1 …). At each of [`LEVELS`]
//!    connected agents (the real one included), over [`WINDOW`]: the gateway's CPU (utime +
//!    stime from /proc, % of one core), its RSS and the RSS per uplink above the gateway with
//!    one agent, and the heartbeat round trip as the generator sees it (sent → acknowledged,
//!    p50/p99/max; it includes the generator's own scheduling on the same 2 cores). Also the
//!    ramp's registration rate and the generator's own CPU.
//!
//! Set-up goes around the API for speed, and says so: the simulated agents' credentials are
//! inserted into the manager's SQLite in one transaction (through the API each would be a
//! transaction of its own); the gateway, the real agent, the customer and its operator go
//! through the API. Simulated agents register no servers: they model the control connections.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use conduit_api::uplink::{self as up, AgentMessage, GatewayMessage};
use conduit_tests::bench_site::{BenchSite, AGENT_TOKEN};
use conduit_tests::ipmi_sim::IpmiSim;
use conduit_tests::rpc_client::Client;
use conduit_tests::stats::{median, pct};
use conduit_tests::{get, proc_counters, sample, wait_for, TempDir};
use conduit_uplink::link::{self, Incoming, MessageReader, Role};
use conduit_uplink::tls::rustls::pki_types::ServerName;
use conduit_uplink::tls::TlsConnector;
use conduit_ws::Opcode;
use serde_json::json;

/// Connected agents measured at, the real agent included.
const LEVELS: [usize; 2] = [1_000, 10_000];
/// Source addresses the simulated agents connect from.
const SOURCES: u8 = 8;
/// Measuring window at each level: three heartbeats of every agent.
const WINDOW: Duration = Duration::from_secs(30);
/// PowerStatus calls per path (idle; a third of it under load).
const CALLS: usize = 300;
/// Simulated agents connecting at once during a ramp.
const CONNECTING: usize = 64;

fn main() {
    let nofile = raise_nofile();
    let dir = TempDir::new("uplink-bench");
    let sims = LEVELS[LEVELS.len() - 1] - 1;

    // The site; the simulated agents' credentials go into the manager's store first.
    let mut credentials = Vec::new();
    let t = Instant::now();
    let sim = IpmiSim::start();
    let site = BenchSite::start(
        &dir,
        |data| credentials = insert_agents(&data.join("manager.db"), sims),
        "poll_interval_secs = 5",
        &format!(
            "[[bmc]]\nid = \"s1\"\naddress = \"127.0.0.1\"\nport = {}\nusername = \"admin\"\npassword = \"password\"\n",
            sim.addr.port()
        ),
        &["s1"],
    );
    println!(
        "set-up: {sims} agent credentials inserted, the site up in {:.1} s; open files limit {nofile}",
        t.elapsed().as_secs_f64()
    );
    let (gw, uplink, operator) = (&site.gateway, site.uplink, site.operator.clone());
    let agent_token = AGENT_TOKEN;
    let gw_pid = gw.proc.child.id().to_string();
    let mut gc = site.gateway_client();

    println!(
        "\n1. PowerStatus of one ipmi_sim BMC, {CALLS} calls per path, interleaved (idle gateway)"
    );
    let mut ac = site.agent_client();
    power_status(&mut gc, &operator, &mut ac, agent_token, CALLS);

    println!(
        "\n2. Uplinks over TLS, heartbeat every 10 s, {SOURCES} source addresses; {} s windows",
        WINDOW.as_secs()
    );
    let (_, gw_cpu0) = proc_counters(&gw_pid);
    let base_rss = rss_kib(&gw_pid);
    println!(
        "   gateway with 1 agent: RSS {:.1} MiB (CPU so far {gw_cpu0:.2} s)",
        base_rss as f64 / 1024.0
    );
    let generator = Generator::start(uplink, &site.pki.ca, credentials);
    for level in LEVELS {
        let t = Instant::now();
        let before = generator.stats.registered.load(Ordering::Relaxed);
        generator.ramp_to(level - 1);
        let connected = wait_for(Duration::from_secs(300), Duration::from_millis(250), || {
            let text = get(gw.addr, "/metrics", &[]).text();
            let n = sample(
                &text,
                "gateway_agents_total",
                &[("datacenter", "dc1"), ("status", "connected")],
            )?;
            (n as usize >= level).then_some(())
        });
        let ramp = t.elapsed().as_secs_f64();
        let failed = generator.stats.failed.load(Ordering::Relaxed);
        if connected.is_none() {
            panic!(
                "{level} agents not connected within 300 s ({failed} simulated agents failed; first: {})",
                generator.stats.first_error.lock().unwrap()
            );
        }
        let new = generator.stats.registered.load(Ordering::Relaxed) - before;
        // Let every agent's heartbeat phase come round once before measuring.
        std::thread::sleep(Duration::from_secs(11));
        let (_, cpu0) = proc_counters(&gw_pid);
        let (_, own0) = proc_counters("self");
        generator.stats.recording.store(true, Ordering::Relaxed);
        let t0 = Instant::now();
        std::thread::sleep(WINDOW);
        generator.stats.recording.store(false, Ordering::Relaxed);
        let secs = t0.elapsed().as_secs_f64();
        let (_, cpu1) = proc_counters(&gw_pid);
        let (_, own1) = proc_counters("self");
        let rtts = std::mem::take(&mut *generator.stats.rtts.lock().unwrap());
        let rss = rss_kib(&gw_pid);
        let per = (rss.saturating_sub(base_rss)) as f64 * 1024.0 / (level - 1) as f64;
        println!("   {level:>6} agents: ramp {new} registrations in {ramp:.1} s ({:.0}/s), {failed} failed",
            new as f64 / ramp);
        println!(
            "          gateway CPU {:.1} % of one core, RSS {:.1} MiB ({:.1} KiB per uplink above 1 agent)",
            (cpu1 - cpu0) / secs * 100.0,
            rss as f64 / 1024.0,
            per / 1024.0
        );
        if rtts.is_empty() {
            println!("          no heartbeats acknowledged in the window");
        } else {
            println!(
                "          heartbeat round trip: {} in the window ({:.0}/s), p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                rtts.len(),
                rtts.len() as f64 / secs,
                median(&rtts) * 1e3,
                pct(&rtts, 0.99) * 1e3,
                pct(&rtts, 1.0) * 1e3
            );
        }
        println!(
            "          load generator CPU {:.1} % of one core",
            (own1 - own0) / secs * 100.0
        );
    }
    println!(
        "\n   PowerStatus at {} agents, {} calls per path:",
        LEVELS[LEVELS.len() - 1],
        CALLS / 3
    );
    power_status(&mut gc, &operator, &mut ac, agent_token, CALLS / 3);
    let lost = generator.stats.disconnected.load(Ordering::Relaxed);
    println!("\n   simulated agents disconnected during the run: {lost}");
    drop(generator);
    drop(site);
}

/// Interleaved PowerStatus through the gateway and at the agent; prints p50/p99 and the gap.
fn power_status(gw: &mut Client, operator: &str, agent: &mut Client, agent_token: &str, n: usize) {
    let body = json!({"serverId": "s1"});
    let (mut through, mut direct) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n + 10 {
        let t = Instant::now();
        let (s, v) = gw.call("GatewayService/PowerStatus", Some(operator), &body);
        let g = t.elapsed().as_secs_f64();
        assert_eq!(s, 200, "through the gateway: {v}");
        let t = Instant::now();
        let (s, v) = agent.call("BmcService/PowerStatus", Some(agent_token), &body);
        let d = t.elapsed().as_secs_f64();
        assert_eq!(s, 200, "at the agent: {v}");
        if i >= 10 {
            through.push(g);
            direct.push(d);
        }
    }
    let ms = |v: &[f64], p: f64| pct(v, p) * 1e3;
    println!(
        "   through the gateway: p50 {:.3} ms, p99 {:.3} ms",
        ms(&through, 0.5),
        ms(&through, 0.99)
    );
    println!(
        "   at the agent:        p50 {:.3} ms, p99 {:.3} ms",
        ms(&direct, 0.5),
        ms(&direct, 0.99)
    );
    let added = ms(&through, 0.5) - ms(&direct, 0.5);
    println!(
        "   added at p50: {added:.3} ms (goal ≤ 1 ms: {})",
        if added <= 1.0 { "met" } else { "NOT MET" }
    );
}

/// Raises the soft open-files limit to the hard one; the gateway and agent inherit it.
fn raise_nofile() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    let raised = Rlimit {
        current: lim.maximum,
        maximum: lim.maximum,
    };
    setrlimit(Resource::Nofile, raised).expect("raise RLIMIT_NOFILE");
    lim.maximum.unwrap_or(u64::MAX)
}

fn rss_kib(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Inserts `n` agents of dc1 into the manager's database; returns their credentials.
fn insert_agents(db: &Path, n: usize) -> Vec<String> {
    let mut c = rusqlite::Connection::open(db).expect("open the manager's database");
    let tx = c.transaction().expect("begin");
    tx.execute("INSERT OR IGNORE INTO datacenters (id) VALUES ('dc1')", [])
        .expect("datacenter");
    let mut credentials = Vec::with_capacity(n);
    {
        let mut st = tx
            .prepare(
                "INSERT INTO agents (id, name, datacenter, credential_id, credential_hash, created_at) \
                 VALUES (?1, ?1, 'dc1', ?2, ?3, 1700000000)",
            )
            .expect("prepare");
        for i in 0..n {
            let s = conduit_auth::Secret::generate(manager_lite::gateways::AGENT_PREFIX)
                .expect("credential");
            let hash = conduit_auth::secret::hash(s.secret()).to_vec();
            st.execute(rusqlite::params![format!("sim-{i:05}"), s.id(), hash])
                .expect("agent");
            credentials.push(s.to_string());
        }
    }
    tx.commit().expect("commit");
    credentials
}

// ---- the load generator ------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Stats {
    registered: AtomicUsize,
    failed: AtomicUsize,
    disconnected: AtomicUsize,
    first_error: Mutex<String>,
    recording: AtomicBool,
    rtts: Mutex<Vec<f64>>,
}

impl Stats {
    fn fail(&self, why: String) {
        if self.failed.fetch_add(1, Ordering::Relaxed) == 0 {
            *self.first_error.lock().unwrap() = why;
        }
    }
}

/// Simulated agents on an executor thread of their own.
struct Generator {
    ex: Arc<smol::Executor<'static>>,
    stats: Arc<Stats>,
    gateway: SocketAddr,
    tls: TlsConnector,
    credentials: Vec<String>,
    started: Mutex<usize>,
    connecting: Arc<smol::lock::Semaphore>,
    stop: Option<async_channel::Sender<()>>,
}

impl Generator {
    fn start(gateway: SocketAddr, ca: &Path, credentials: Vec<String>) -> Generator {
        let pem = std::fs::read(ca).expect("CA");
        let tls = TlsConnector::from(conduit_uplink::tls::client_config(&pem).expect("CA"));
        let ex = Arc::new(smol::Executor::new());
        let (stop, stopped) = async_channel::bounded::<()>(1);
        let run = ex.clone();
        std::thread::Builder::new()
            .name("generator".into())
            .spawn(move || smol::block_on(run.run(async { stopped.recv().await.ok() })))
            .expect("generator thread");
        Generator {
            ex,
            stats: Arc::default(),
            gateway,
            tls,
            credentials,
            started: Mutex::new(0),
            connecting: Arc::new(smol::lock::Semaphore::new(CONNECTING)),
            stop: Some(stop),
        }
    }

    /// Starts simulated agents until `n` have been started.
    fn ramp_to(&self, n: usize) {
        let mut started = self.started.lock().unwrap();
        for i in *started..n {
            let sim = Sim {
                index: i,
                credential: self.credentials[i].clone(),
                gateway: self.gateway,
                tls: self.tls.clone(),
                stats: self.stats.clone(),
                connecting: self.connecting.clone(),
            };
            self.ex.spawn(sim.run()).detach();
        }
        *started = n.max(*started);
    }
}

impl Drop for Generator {
    fn drop(&mut self) {
        drop(self.stop.take());
    }
}

struct Sim {
    index: usize,
    credential: String,
    gateway: SocketAddr,
    tls: TlsConnector,
    stats: Arc<Stats>,
    connecting: Arc<smol::lock::Semaphore>,
}

type Reader =
    MessageReader<futures_lite::io::ReadHalf<conduit_uplink::tls::ClientStream<Async<TcpStream>>>>;
type Writer = futures_lite::io::WriteHalf<conduit_uplink::tls::ClientStream<Async<TcpStream>>>;

impl Sim {
    async fn run(self) {
        let permit = self.connecting.acquire().await;
        let opened = self.open().await;
        drop(permit);
        let (mut reader, mut writer, heartbeat) = match opened {
            Ok(link) => link,
            Err(why) => return self.stats.fail(format!("agent {}: {why}", self.index)),
        };
        self.stats.registered.fetch_add(1, Ordering::Relaxed);
        // Spread the phases over one interval, deterministically per agent.
        let phase = (self.index as u64).wrapping_mul(2_654_435_761) % heartbeat.as_millis() as u64;
        Timer::after(Duration::from_millis(phase)).await;
        let mut next = Instant::now();
        for seq in 1u64.. {
            next += heartbeat;
            let hb = AgentMessage::Heartbeat { seq };
            let t = Instant::now();
            if link::send(&mut writer, &text(&hb)).await.is_err() {
                break;
            }
            if !acked(&mut reader, &mut writer, seq).await {
                break;
            }
            if self.stats.recording.load(Ordering::Relaxed) {
                self.stats
                    .rtts
                    .lock()
                    .unwrap()
                    .push(t.elapsed().as_secs_f64());
            }
            Timer::at(next).await;
        }
        self.stats.disconnected.fetch_add(1, Ordering::Relaxed);
    }

    async fn open(&self) -> Result<(Reader, Writer, Duration), String> {
        let source = Ipv4Addr::new(127, 0, 1, 1 + (self.index % SOURCES as usize) as u8);
        let tcp = connect_from(source, self.gateway)
            .await
            .map_err(|e| format!("connect from {source}: {e}"))?;
        let name = ServerName::try_from("localhost").expect("name");
        let mut tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        let host = format!("localhost:{}", self.gateway.port());
        let leftover = link::client_handshake(&mut tls, &host, up::PATH, up::SUBPROTOCOL, "")
            .await
            .map_err(|e| format!("upgrade: {e}"))?;
        let (read, mut writer) = futures_lite::io::split(tls);
        let mut reader = MessageReader::new(read, Role::Client, up::MAX_MESSAGE, leftover);
        let register = AgentMessage::Register(up::Register {
            version: up::VERSION,
            credential: self.credential.clone(),
            agent_version: "uplink-bench".into(),
            datacenter: "dc1".into(),
            servers: Vec::new(),
        });
        link::send(&mut writer, &text(&register))
            .await
            .map_err(|e| format!("register: {e}"))?;
        loop {
            match reader
                .next()
                .await
                .map_err(|e| format!("registration answer: {e}"))?
            {
                Incoming::Message(m) => {
                    return match GatewayMessage::decode(&m) {
                        Ok(GatewayMessage::Registered { heartbeat_secs, .. }) => {
                            Ok((reader, writer, Duration::from_secs(heartbeat_secs.max(1))))
                        }
                        Ok(GatewayMessage::Refused { message, .. }) => {
                            Err(format!("refused: {message}"))
                        }
                        _ => Err("an unexpected first answer".into()),
                    }
                }
                Incoming::Close(code) => return Err(format!("closed ({code:?})")),
                _ => {}
            }
        }
    }
}

/// Reads until the acknowledgement of heartbeat `seq`; false if the link ended.
async fn acked(reader: &mut Reader, writer: &mut Writer, seq: u64) -> bool {
    loop {
        match reader.next().await {
            Ok(Incoming::Message(m)) => {
                if let Ok(GatewayMessage::HeartbeatAck { seq: s }) = GatewayMessage::decode(&m) {
                    if s == seq {
                        return true;
                    }
                }
            }
            Ok(Incoming::Ping(p)) => {
                if link::send(writer, &link::frame(Role::Client, Opcode::Pong, &p))
                    .await
                    .is_err()
                {
                    return false;
                }
            }
            Ok(Incoming::Pong) => {}
            Ok(Incoming::Close(_)) | Err(_) => return false,
        }
    }
}

fn text(msg: &AgentMessage) -> Vec<u8> {
    let json = serde_json::to_vec(msg).expect("encode");
    link::frame(Role::Client, Opcode::Text, &json)
}

/// A TCP connection to `to` from `source` (port chosen by the kernel).
async fn connect_from(source: Ipv4Addr, to: SocketAddr) -> std::io::Result<Async<TcpStream>> {
    use rustix::net::{bind, connect, socket_with, AddressFamily, SocketFlags, SocketType};
    let SocketAddr::V4(to) = to else {
        return Err(std::io::Error::other("IPv4 only"));
    };
    let fd = socket_with(
        AddressFamily::INET,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )?;
    bind(&fd, &SocketAddrV4::new(source, 0))?;
    match connect(&fd, &to) {
        Ok(()) | Err(rustix::io::Errno::INPROGRESS) => {}
        Err(e) => return Err(e.into()),
    }
    let stream = Async::new(TcpStream::from(fd))?;
    stream.writable().await?;
    match stream.get_ref().take_error()? {
        Some(e) => Err(e),
        None => {
            stream.get_ref().set_nodelay(true)?;
            Ok(stream)
        }
    }
}

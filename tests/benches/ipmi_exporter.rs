//! `cargo bench -p conduit-tests --bench ipmi_exporter`: the agent as an exporter against
//! Debian's prometheus-ipmi-exporter (prometheus/ipmi_exporter 1.6, FreeIPMI underneath), same
//! run, same ipmi_sim BMCs (`tests/peers/ipmi/exporter.emu`). Needs `ipmi_sim`,
//! `prometheus-ipmi-exporter` and the release agent (`cargo build --release --bins`).
//! Reports; not a CI gate.
//!
//! 1. One BMC, scraped 50 times in turn: wall time per scrape (mean, p50, p99) and CPU per
//!    scrape, of the agent's `/ipmi` and `/metrics` (from its poller's cache) and of the
//!    exporter's `/ipmi` (which runs FreeIPMI's tools on every scrape: their CPU counts, as
//!    the exporter's waited-for children). The agent's own polling is its cost whether
//!    scraped or not; it is measured apart: CPU per poll round of the one BMC.
//! 2. 100 BMCs (100 simulators) configured in both: the exporter scraped for each in turn
//!    (twice round), the agent polling all of them every 5 s and scraped for each on `/ipmi`;
//!    RSS (VmRSS, VmHWM) of each process at the end.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use conduit_tests::ipmi_exporter::IpmiExporter;
use conduit_tests::ipmi_sim::IpmiSim;
use conduit_tests::{get, start_component, wait_for, workspace_root, TempDir};

/// CPU seconds of `pid` and of its waited-for children, from /proc.
fn cpu_with_children(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<f64> = stat
        .rsplit_once(')')
        .map_or("", |s| s.1)
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // After the name: utime (11), stime (12), cutime (13), cstime (14), in clock ticks.
    (11..=14)
        .map(|i| f.get(i).copied().unwrap_or(0.0))
        .sum::<f64>()
        / 100.0
}

fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

struct Run {
    mean_ms: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_ms: f64,
}

fn scrape_n(addr: SocketAddr, path: &str, pid: u32, n: usize) -> Run {
    let cpu0 = cpu_with_children(pid);
    let mut times: Vec<f64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            let r = get(addr, path, &[]);
            assert_eq!(r.status, 200, "{path}: {}", r.text());
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    let cpu = cpu_with_children(pid) - cpu0;
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    Run {
        mean_ms: times.iter().sum::<f64>() / n as f64,
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        cpu_ms: cpu * 1e3 / n as f64,
    }
}

fn agent_config(dir: &TempDir, sims: &[IpmiSim], poll_secs: f64) -> std::path::PathBuf {
    let mut text = format!(
        "[agent]\npoll_interval_secs = {poll_secs}\noperation_timeout_secs = 3\n\
         ipmi_exporter_endpoint = true\n"
    );
    for (i, s) in sims.iter().enumerate() {
        text.push_str(&format!(
            "\n[[bmc]]\nid = \"sim{i}\"\naddress = \"127.0.0.1\"\nport = {}\n\
             username = \"admin\"\npassword = \"password\"\n",
            s.addr.port()
        ));
    }
    let path = dir.0.join("agent.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn polled(agent: SocketAddr, n: usize) -> bool {
    let text = get(agent, "/metrics", &[]).text();
    text.lines()
        .filter(|l| l.starts_with("agent_bmc_info{"))
        .count()
        >= n
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let emu = std::fs::read_to_string(workspace_root().join("tests/peers/ipmi/exporter.emu"))
        .expect("exporter.emu");
    let exporter = IpmiExporter::start();
    let exporter_pid = exporter.proc.child.id();

    // 1. One BMC.
    let sim = IpmiSim::start_with_emu(&emu);
    let dir = TempDir::new("bench-exporter");
    // Polls every 2 s, so that part 1 also sees what polling costs.
    let cfg = agent_config(&dir, std::slice::from_ref(&sim), 2.0);
    let agent = start_component("conduit-agent", &["--config", cfg.to_str().unwrap()]);
    let agent_pid = agent.proc.child.id();
    wait_for(Duration::from_secs(20), Duration::from_millis(100), || {
        polled(agent.addr, 1).then_some(())
    })
    .expect("the agent polls the BMC");
    let theirs = IpmiExporter::path(sim.addr);
    let ours = format!("/ipmi?module=sim&target={}", sim.addr);
    // Warm up both (the exporter builds FreeIPMI's SDR cache on its first scrape).
    scrape_n(exporter.addr, &theirs, exporter_pid, 3);
    scrape_n(agent.addr, &ours, agent_pid, 3);
    // The agent's polling cost alone: CPU over 20 s of no scrapes (10 rounds), per round.
    let idle0 = cpu_with_children(agent_pid);
    std::thread::sleep(Duration::from_secs(20));
    let poll_ms = (cpu_with_children(agent_pid) - idle0) * 1e3 / 10.0;
    let n = 50;
    let runs = [
        (
            "prometheus-ipmi-exporter /ipmi",
            scrape_n(exporter.addr, &theirs, exporter_pid, n),
        ),
        (
            "conduit-agent /ipmi",
            scrape_n(agent.addr, &ours, agent_pid, n),
        ),
        (
            "conduit-agent /metrics",
            scrape_n(agent.addr, "/metrics", agent_pid, n),
        ),
    ];
    println!("== one BMC (exporter.emu: 4 sensors, SEL), {n} scrapes in turn");
    println!(
        "{:<32} {:>9} {:>9} {:>9} {:>14}",
        "endpoint", "mean ms", "p50 ms", "p99 ms", "CPU ms/scrape"
    );
    for (name, r) in &runs {
        println!(
            "{name:<32} {:>9.2} {:>9.2} {:>9.2} {:>14.2}",
            r.mean_ms, r.p50_ms, r.p99_ms, r.cpu_ms
        );
    }
    // /proc counts CPU in 10 ms ticks: 0 over 10 rounds means under 1 ms a round.
    if poll_ms == 0.0 {
        println!("conduit-agent polling: under 1 ms CPU per poll round of the BMC (every 2 s)");
    } else {
        println!(
            "conduit-agent polling: {poll_ms:.1} ms CPU per poll round of the BMC (every 2 s)"
        );
    }
    drop(agent);
    drop(sim);

    // 2. 100 BMCs.
    let count = 100;
    let sims: Vec<IpmiSim> = (0..count).map(|_| IpmiSim::start_with_emu(&emu)).collect();
    let dir = TempDir::new("bench-exporter-100");
    let cfg = agent_config(&dir, &sims, 5.0);
    let agent = start_component("conduit-agent", &["--config", cfg.to_str().unwrap()]);
    let agent_pid = agent.proc.child.id();
    wait_for(Duration::from_secs(60), Duration::from_millis(250), || {
        polled(agent.addr, count).then_some(())
    })
    .expect("the agent polls the 100 BMCs");
    let t = Instant::now();
    for _ in 0..2 {
        for s in &sims {
            let r = get(exporter.addr, &IpmiExporter::path(s.addr), &[]);
            assert_eq!(r.status, 200);
        }
    }
    let theirs_round = t.elapsed().as_secs_f64() / 2.0;
    let t = Instant::now();
    for _ in 0..2 {
        for s in &sims {
            let r = get(agent.addr, &format!("/ipmi?target={}", s.addr), &[]);
            assert_eq!(r.status, 200);
        }
    }
    let ours_round = t.elapsed().as_secs_f64() / 2.0;
    println!("== {count} BMCs configured (one simulator each)");
    println!(
        "{:<32} {:>10} {:>10} {:>16}",
        "process", "VmRSS MiB", "VmHWM MiB", "s per round"
    );
    for (name, pid, round) in [
        ("prometheus-ipmi-exporter", exporter_pid, theirs_round),
        ("conduit-agent", agent_pid, ours_round),
    ] {
        println!(
            "{name:<32} {:>10.1} {:>10.1} {:>16.2}",
            status_kib(pid, "VmRSS:") as f64 / 1024.0,
            status_kib(pid, "VmHWM:") as f64 / 1024.0,
            round
        );
    }
    println!(
        "(a round: one scrape of each of the {count} BMCs in turn; the exporter's FreeIPMI \
         children are not in its RSS)"
    );
}

//! Whole sites as real processes, on the `Site` harness of `gateway_uplink`.
//!
//! - The RFD's layout: one manager (:8080), two gateways (:8081, :8082), two agents (:8090,
//!   :8091) serving an ipmi_sim and a sushy-emulator BMC, and a real Prometheus scraping all
//!   five. The console and observability work reuse [`Layout`].
//! - An agent in a network namespace of its own whose firewall drops every inbound
//!   connection: everything still works, because the agent only dials out.

use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use conduit_tests::ipmi_sim::IpmiSim;
use conduit_tests::pki::Pki;
use conduit_tests::prometheus::Prometheus;
use conduit_tests::sushy::Sushy;
use conduit_tests::*;
use serde_json::json;

use crate::gateway_uplink::{eventually, ipmi_bmc, metric, Site};
use crate::manager_api::ok;

/// The RFD's ports (`rfd-021`, "Port Assignments").
pub(crate) const MANAGER_PORT: u16 = 8080;
pub(crate) const GATEWAY_PORTS: [u16; 2] = [8081, 8082];
pub(crate) const AGENT_PORTS: [u16; 2] = [8090, 8091];

/// Panics, saying why, if one of the RFD's ports is taken (by `scripts/run-stack`, say).
fn rfd_ports_free() {
    for port in [MANAGER_PORT, GATEWAY_PORTS[0], GATEWAY_PORTS[1]]
        .into_iter()
        .chain(AGENT_PORTS)
    {
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            panic!("port {port} is in use (is scripts/run-stack running?): the layout test takes the RFD's ports");
        }
    }
}

/// The RFD's layout, joined up: gateway `i` is agent `i`'s first choice and the other one its
/// second; agent 1 serves `s1` (IPMI, ipmi_sim), agent 2 serves `s2` (Redfish, sushy), both
/// assigned to Acme.
pub(crate) struct Layout {
    pub site: Site,
    pub sim: IpmiSim,
    pub sushy: Sushy,
    pub gateways: Vec<Component>,
    pub gateway_creds: Vec<std::path::PathBuf>,
    pub uplinks: Vec<SocketAddr>,
    pub agents: Vec<Component>,
}

impl Layout {
    pub(crate) fn start(name: &str) -> Layout {
        rfd_ports_free();
        let site = Site::with_manager_port(name, MANAGER_PORT);
        let sim = IpmiSim::start();
        let sushy = Sushy::start();
        let uplinks: Vec<SocketAddr> = (0..2)
            .map(|_| SocketAddr::from(([127, 0, 0, 1], free_port())))
            .collect();
        let mut gateway_creds = Vec::new();
        let mut gateways = Vec::new();
        for (i, port) in GATEWAY_PORTS.into_iter().enumerate() {
            let id = format!("gw{}", i + 1);
            let cred = site.credential("GatewayService", "gatewayId", &id);
            gateways.push(site.gateway_on(&cred, &id, Some(port), uplinks[i], Some(&site.pki)));
            gateway_creds.push(cred);
        }
        let wss: Vec<String> = uplinks
            .iter()
            .map(|u| format!("wss://localhost:{}", u.port()))
            .collect();
        let redfish = format!(
            "[[bmc]]\nid = \"s2\"\naddress = \"127.0.0.1\"\nport = {}\nprotocol = \"redfish\"\nusername = \"admin\"\npassword = \"password\"\ntls_ca_file = {:?}\n",
            sushy.addr.port(),
            sushy.pki.ca.display().to_string()
        );
        let bmcs = [ipmi_bmc("s1", sim.addr), redfish];
        let mut agents = Vec::new();
        for (i, port) in AGENT_PORTS.into_iter().enumerate() {
            let id = format!("ag{}", i + 1);
            let cred = site.credential("AgentService", "agentId", &id);
            let order = [wss[i].clone(), wss[1 - i].clone()];
            let config = site.agent_config(&id, &bmcs[i], &order, &cred, &site.pki.ca);
            let listen = format!("127.0.0.1:{port}");
            agents.push(start_component(
                "conduit-agent",
                &["--listen", &listen, "--config", config.to_str().unwrap()],
            ));
        }
        site.assign_reported("s1", "ag1");
        site.assign_reported("s2", "ag2");
        Layout {
            site,
            sim,
            sushy,
            gateways,
            gateway_creds,
            uplinks,
            agents,
        }
    }

    /// The five components as Prometheus jobs.
    pub(crate) fn jobs(&self) -> Vec<(&'static str, SocketAddr)> {
        vec![
            ("manager", self.site.manager.addr),
            ("gw1", self.gateways[0].addr),
            ("gw2", self.gateways[1].addr),
            ("ag1", self.agents[0].addr),
            ("ag2", self.agents[1].addr),
        ]
    }
}

#[test]
fn the_rfd_layout_serves_both_protocols_fails_over_and_prometheus_sees_all_five() {
    let mut l = Layout::start("layout");
    let prom = Prometheus::start(&l.jobs());
    let op = Some(l.site.acme_operator.as_str());
    assert_eq!(l.site.manager.addr.port(), MANAGER_PORT);

    // Each server through its agent's first gateway, as Acme's operator.
    for (gw, server) in [(0, "s1"), (1, "s2")] {
        let g = &l.gateways[gw];
        l.site.wait_online(g, server);
        let (s, v) = l.site.gw(
            g,
            "PowerAction",
            op,
            json!({"serverId": server, "action": "on"}),
        );
        assert_eq!(s, 200, "{server}: {v}");
        eventually(&format!("{server} on"), Duration::from_secs(15), || {
            let (_, v) = l.site.gw(g, "PowerStatus", op, json!({"serverId": server}));
            (v["power"] == "on").then_some(())
        });
        let (_, v) = l.site.gw(
            g,
            "PowerAction",
            Some(&l.site.acme_viewer),
            json!({"serverId": server, "action": "off"}),
        );
        assert_eq!(v["code"], "permission_denied", "{v}");
        let (_, v) = l.site.gw(
            g,
            "PowerStatus",
            Some(&l.site.globex_operator),
            json!({"serverId": server}),
        );
        assert_eq!(v["code"], "not_found", "{v}");
    }
    assert!(l.sim.power(), "ipmi_sim powered on");
    assert_eq!(l.sushy.power_state(), "On", "sushy powered on");
    let (_, v) = l
        .site
        .gw(&l.gateways[1], "GetSensors", op, json!({"serverId": "s2"}));
    assert!(v.get("code").is_none(), "Redfish sensors through gw2: {v}");

    // Prometheus scrapes all five, and sees the agents and the operations.
    let up = prom.wait_all_up(5, Duration::from_secs(40));
    assert_eq!(up.len(), 5);
    let seen = |q: &str, want: f64| {
        eventually(
            &format!("Prometheus: {q} == {want}"),
            Duration::from_secs(20),
            || (prom.value(q) == Some(want)).then_some(()),
        )
    };
    seen(r#"sum(gateway_agents_total{status="connected"})"#, 2.0);
    seen(r#"gateway_agents_total{job="gw1",status="connected"}"#, 1.0);
    seen(r#"sum(agent_gateway_connection_status)"#, 2.0);
    seen(
        r#"sum(gateway_bmc_operations_total{operation="power_on",status="ok"})"#,
        2.0,
    );
    seen(r#"sum(manager_gateways_total{status="up"})"#, 2.0);

    // Gateway 1 dies: agent 1 fails over to gateway 2, and s1 answers there.
    l.gateways[0].proc.kill9();
    let g2 = &l.gateways[1];
    eventually("s1 through gw2", Duration::from_secs(30), || {
        let (s, v) = l.site.gw(g2, "PowerStatus", op, json!({"serverId": "s1"}));
        (s == 200 && v["power"] == "on").then_some(())
    });
    seen(r#"gateway_agents_total{job="gw2",status="connected"}"#, 2.0);
    seen(r#"up{job="gw1"}"#, 0.0);
    let m = l.site.manager.addr;
    eventually(
        "the manager has ag1 on gw2",
        Duration::from_secs(15),
        || {
            let v = ok(
                m,
                "/conduit.manager.v1.AgentService/List",
                Some(&l.site.admin),
                json!({}),
            );
            v["agents"]
                .as_array()?
                .iter()
                .find(|a| a["agentId"] == "ag1" && a["gatewayId"] == "gw2")
                .map(|_| ())
        },
    );

    // It returns: no ghost of agent 1 there, one entry each, both still served.
    let (cred, uplink) = (l.gateway_creds[0].clone(), l.uplinks[0]);
    l.gateways[0] = l.site.gateway_on(
        &cred,
        "gw1",
        Some(GATEWAY_PORTS[0]),
        uplink,
        Some(&l.site.pki),
    );
    seen(r#"up{job="gw1"}"#, 1.0);
    seen(r#"sum(gateway_agents_total{status="connected"})"#, 2.0);
    assert_eq!(
        metric(
            l.gateways[0].addr,
            "gateway_agents_total",
            &[("datacenter", "dc1"), ("status", "connected")]
        ),
        None,
        "agent 1 stays where it is connected"
    );
    let (s, v) = l
        .site
        .gw(&l.gateways[1], "PowerStatus", op, json!({"serverId": "s2"}));
    assert_eq!((s, v["power"].as_str()), (200, Some("on")), "{v}");
    drop(prom);
}

/// A network namespace with one end of a veth pair; the other end stays in this one.
struct Netns {
    name: String,
    /// This namespace's address on the pair.
    host: std::net::Ipv4Addr,
    /// The namespace's own.
    inside: std::net::Ipv4Addr,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new(tool("ip"))
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Netns {
    fn create() -> Result<Netns, String> {
        let n = std::process::id() % 10_000;
        let name = format!("conduit-t{n}");
        let (outer, inner) = (format!("cdo{n}"), format!("cdi{n}"));
        let subnet = (n % 250) as u8;
        let host = std::net::Ipv4Addr::new(10, 213, subnet, 1);
        let inside = std::net::Ipv4Addr::new(10, 213, subnet, 2);
        let _ = ip(&["netns", "del", &name]);
        ip(&["netns", "add", &name])?;
        let ns = Netns { name, host, inside };
        let within = |args: &[&str]| {
            let mut v = vec!["netns", "exec", &ns.name, "ip"];
            v.extend_from_slice(args);
            ip(&v)
        };
        ip(&[
            "link", "add", &outer, "type", "veth", "peer", "name", &inner,
        ])?;
        ip(&["link", "set", &inner, "netns", &ns.name])?;
        ip(&["addr", "add", &format!("{host}/30"), "dev", &outer])?;
        ip(&["link", "set", &outer, "up"])?;
        within(&["addr", "add", &format!("{inside}/30"), "dev", &inner])?;
        within(&["link", "set", &inner, "up"])?;
        within(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `program args…` run inside the namespace.
    fn command(&self, program: &std::path::Path) -> Command {
        let mut cmd = Command::new(tool("ip"));
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Drops every inbound connection but replies and loopback.
    fn refuse_inbound(&self) {
        let rules = "table inet appliance {\n  chain input {\n    type filter hook input priority 0; policy drop;\n    ct state established,related accept\n    iif lo accept\n  }\n}\n";
        let mut nft = self.command(&tool("nft"));
        nft.args(["-f", "-"]).stdin(std::process::Stdio::piped());
        let mut child = nft.spawn().expect("nft");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(rules.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "nft ruleset");
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the pair, and so the pair.
        let _ = ip(&["netns", "del", &self.name]);
    }
}

#[test]
fn an_agent_behind_a_firewall_that_drops_all_inbound_still_serves_through_its_uplink() {
    let ns = match Netns::create() {
        Ok(ns) => ns,
        // Namespaces need root: CI runs as root, where this must not be skipped.
        Err(why) if std::env::var_os("CI").is_none() => {
            eprintln!("skipped: {why} (network namespaces need root)");
            return;
        }
        Err(why) => panic!("{why}"),
    };
    ns.refuse_inbound();
    let site = Site::new("netns");
    let host = ns.host.to_string();
    let pki = Pki::for_names("netns", &[&host]);
    let uplink = SocketAddr::from((ns.host, free_port()));
    let cred = site.credential("GatewayService", "gatewayId", "gw1");
    let gw = site.gateway_on(&cred, "gw1", None, uplink, Some(&pki));
    // The BMC sits on this side of the pair: the agent reaches it the way it reaches a BMC on
    // the management VLAN, by dialing out.
    let sim = IpmiSim::start_at(SocketAddr::from((ns.host, free_port())));

    let agent_cred = site.credential("AgentService", "agentId", "ag1");
    let config = site.agent_config(
        "ag1",
        &ipmi_bmc("s1", sim.addr),
        &[format!("wss://{host}:{}", uplink.port())],
        &agent_cred,
        &pki.ca,
    );
    let api = SocketAddr::from((ns.inside, free_port()));
    let mut cmd = ns.command(&bin("conduit-agent"));
    cmd.arg("--listen")
        .arg(api.to_string())
        .arg("--config")
        .arg(&config);
    let (agent, _) = start_until("conduit-agent", cmd, Duration::from_secs(10), |line| {
        line.contains("listening on ").then_some(())
    });

    // Nothing reaches in: a connection to the agent's API from outside is dropped (it times
    // out: no answer at all), while inside the namespace the API answers.
    let dropped = TcpStream::connect_timeout(&api, Duration::from_secs(1));
    assert_eq!(
        dropped.map_err(|e| e.kind()).err(),
        Some(std::io::ErrorKind::TimedOut),
        "inbound to the agent must be dropped"
    );
    let inside = ns
        .command(&tool("curl"))
        .args(["-sf", "-m", "5"])
        .arg(format!("http://{api}/health"))
        .output()
        .expect("curl");
    assert!(
        inside.status.success(),
        "the agent's API answers inside its namespace"
    );

    // Everything works through the uplink the agent dialed.
    site.assign_reported("s1", "ag1");
    site.wait_online(&gw, "s1");
    let op = Some(site.acme_operator.as_str());
    let (s, v) = site.gw(
        &gw,
        "PowerAction",
        op,
        json!({"serverId": "s1", "action": "on"}),
    );
    assert_eq!(s, 200, "{v}");
    assert!(sim.power(), "the BMC was powered on through the gateway");
    let (_, v) = site.gw(&gw, "PowerStatus", op, json!({"serverId": "s1"}));
    assert_eq!(v["power"], "on", "{v}");
    assert_eq!(
        metric(
            gw.addr,
            "gateway_agents_total",
            &[("datacenter", "dc1"), ("status", "connected")]
        ),
        Some(1.0)
    );
    drop(agent);
    drop(gw);
}

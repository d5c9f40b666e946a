//! The gateway and the agent uplink, as real binaries: a manager, gateways, agents and an
//! ipmi_sim BMC. The agent dials out over TLS checked against the test CA and registers with
//! the credential the manager issued; users' operations reach the BMC through the gateway,
//! authorized by the manager's inventory and roles; refusals, outages and the metrics each
//! event drives are checked live.
//!
//! `Site` is the harness later work reuses: one manager with an admin, customers with users,
//! a CA, and functions to start gateways and agents against them.

use std::net::SocketAddr;
use std::time::Duration;

use conduit_tests::ipmi_sim::IpmiSim;
use conduit_tests::pki::Pki;
use conduit_tests::stunnel::Stunnel;
use conduit_tests::*;
use serde_json::{json, Value};

use crate::manager_api::{call, login, manager_with_admin, ok, token, Db, Engine, ADMIN};

pub(crate) const PASSWORD: &str = "a long enough test password";

/// A manager with an admin, two customers (`acme` with an operator and a viewer, `globex`
/// with an operator), a gateway credential and a test CA.
pub(crate) struct Site {
    db: Db,
    pub manager: Component,
    manager_listen: String,
    pub admin: String,
    pub pki: Pki,
    pub dir: TempDir,
    /// Customer ids.
    pub acme: String,
    pub globex: String,
    /// Access tokens.
    pub acme_operator: String,
    pub acme_viewer: String,
    pub globex_operator: String,
    /// Flags every gateway started from now on gets besides the harness's own.
    pub gateway_flags: Vec<String>,
    /// The manager URL gateways started from now on dial (default: its plain HTTP address).
    pub manager_url: Option<String>,
}

impl Site {
    pub(crate) fn new(name: &str) -> Site {
        Site::with_manager_port(name, free_port())
    }

    /// A site whose manager listens on `port` (fixed, too: gateways find a restarted manager
    /// where they left it).
    pub(crate) fn with_manager_port(name: &str, port: u16) -> Site {
        Site::with_manager(name, port, &[])
    }

    /// A site whose manager also gets `flags`.
    pub(crate) fn with_manager(name: &str, port: u16, flags: &[&str]) -> Site {
        let _hashing = crate::manager_api::hashing_shared();
        let manager_listen = format!("127.0.0.1:{port}");
        let mut all = vec!["--listen", &manager_listen];
        all.extend_from_slice(flags);
        let (db, manager) = manager_with_admin(Engine::Sqlite, name, &all);
        let m = manager.addr;
        let admin = token(&login(m, ADMIN.0, ADMIN.1));
        let customer = |n: &str| {
            ok(
                m,
                "/conduit.manager.v1.CustomerService/Create",
                Some(&admin),
                json!({"name": n}),
            )["customerId"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        let (acme, globex) = (customer("Acme"), customer("Globex"));
        let user = |email: &str, role: &str, cus: &str| {
            ok(
                m,
                "/conduit.manager.v1.UserService/Create",
                Some(&admin),
                json!({"email": email, "password": PASSWORD, "role": role, "customerId": cus}),
            );
            token(&login(m, email, PASSWORD))
        };
        let acme_operator = user("op@acme.test", "operator", &acme);
        let acme_viewer = user("viewer@acme.test", "viewer", &acme);
        let globex_operator = user("op@globex.test", "operator", &globex);
        Site {
            db,
            manager,
            manager_listen,
            admin,
            pki: Pki::new(name),
            dir: TempDir::new(name),
            acme,
            globex: globex.clone(),
            acme_operator,
            acme_viewer,
            globex_operator,
            gateway_flags: Vec::new(),
            manager_url: None,
        }
    }

    /// Starts the manager again on its database and port (after `manager.proc.kill9()`).
    pub(crate) fn restart_manager(&mut self) {
        self.manager = self.db.start(&["--listen", &self.manager_listen]);
    }

    /// A new credential for gateway or agent `id` of `dc1`, written to a file.
    pub(crate) fn credential(&self, service: &str, field: &str, id: &str) -> std::path::PathBuf {
        let v = ok(
            self.manager.addr,
            &format!("/conduit.manager.v1.{service}/Create"),
            Some(&self.admin),
            json!({field: id, "datacenter": "dc1"}),
        );
        let p = self.dir.0.join(format!("{id}.credential"));
        std::fs::write(&p, v["credential"].as_str().unwrap()).unwrap();
        p
    }

    /// A gateway with its own credential; its uplink port is `uplink` (TLS unless `plain`).
    pub(crate) fn gateway(&self, id: &str, uplink: u16, plain: bool) -> Component {
        let cred = self.credential("GatewayService", "gatewayId", id);
        self.gateway_with(&cred, id, uplink, plain)
    }

    /// A gateway on an existing credential file (a restart).
    pub(crate) fn gateway_with(
        &self,
        cred: &std::path::Path,
        id: &str,
        uplink: u16,
        plain: bool,
    ) -> Component {
        let uplink = SocketAddr::from(([127, 0, 0, 1], uplink));
        self.gateway_on(cred, id, None, uplink, (!plain).then_some(&self.pki))
    }

    /// A gateway serving HTTP on `http` (a free port if `None`) and uplinks on `uplink`, over
    /// TLS with `tls`'s certificate or in plaintext.
    pub(crate) fn gateway_on(
        &self,
        cred: &std::path::Path,
        id: &str,
        http: Option<u16>,
        uplink: SocketAddr,
        tls: Option<&Pki>,
    ) -> Component {
        let listen = uplink.to_string();
        let http = format!("127.0.0.1:{}", http.unwrap_or(0));
        let state = self.dir.0.join(format!("{id}-state"));
        let manager =
            (self.manager_url.clone()).unwrap_or_else(|| format!("http://{}", self.manager.addr));
        let mut args = vec![
            "--listen",
            &http,
            "--manager",
            &manager,
            "--credential-file",
            cred.to_str().unwrap(),
            "--uplink-listen",
            &listen,
            "--state-dir",
            state.to_str().unwrap(),
            "--heartbeat-secs",
            "1",
            "--forget-after",
            "5",
        ];
        match tls {
            None => args.push("--uplink-plaintext"),
            Some(pki) => args.extend([
                "--tls-cert",
                pki.cert.to_str().unwrap(),
                "--tls-key",
                pki.key.to_str().unwrap(),
            ]),
        }
        args.extend(self.gateway_flags.iter().map(String::as_str));
        start_component("conduit-gateway", &args)
    }

    /// An agent `name` serving the IPMI BMC at `bmc` as server `s1`, dialing `gateways` with
    /// `credential`.
    pub(crate) fn agent(
        &self,
        name: &str,
        bmc: SocketAddr,
        gateways: &[String],
        credential: &std::path::Path,
        ca: &std::path::Path,
    ) -> Component {
        let config = self.agent_config(name, &ipmi_bmc("s1", bmc), gateways, credential, ca);
        start_component("conduit-agent", &["--config", config.to_str().unwrap()])
    }

    /// Gateway `gw1` (uplinks in plaintext) and agent `ag1` behind it serving the `[[bmc]]`
    /// table `bmc` (server `s1`), assigned to Acme and online: what the console tests start
    /// from. Returns the gateway and the agent.
    pub(crate) fn acme_s1_behind(&self, bmc: &str) -> (Component, Component) {
        let port = free_port();
        let gw = self.gateway("gw1", port, true);
        let cred = self.credential("AgentService", "agentId", "ag1");
        let config = self.agent_config(
            "ag1",
            bmc,
            &[format!("ws://127.0.0.1:{port}")],
            &cred,
            &self.pki.ca,
        );
        let agent = start_component("conduit-agent", &["--config", config.to_str().unwrap()]);
        self.assign_reported("s1", "ag1");
        self.wait_online(&gw, "s1");
        (gw, agent)
    }

    /// A server `id` of Globex's that no agent serves.
    pub(crate) fn globex_server(&self, id: &str) {
        ok(
            self.manager.addr,
            "/conduit.manager.v1.ServerService/Create",
            Some(&self.admin),
            json!({"serverId": id, "datacenter": "dc1", "protocol": "ipmi", "customerId": self.globex}),
        );
    }

    /// The configuration file of an agent serving `bmcs` (`[[bmc]]` tables) and dialing
    /// `gateways` with `credential`, trusting `ca`.
    pub(crate) fn agent_config(
        &self,
        name: &str,
        bmcs: &str,
        gateways: &[String],
        credential: &std::path::Path,
        ca: &std::path::Path,
    ) -> std::path::PathBuf {
        let path = self.dir.0.join(format!("{name}.toml"));
        let list: Vec<String> = gateways.iter().map(|g| format!("{g:?}")).collect();
        std::fs::write(
            &path,
            format!(
                r#"[agent]
poll_interval_secs = 1
operation_timeout_secs = 3

{bmcs}
[uplink]
gateways = [{list}]
credential_file = {cred:?}
ca_file = {ca:?}
datacenter = "dc1"
plaintext = true
"#,
                list = list.join(", "),
                cred = credential.display().to_string(),
                ca = ca.display().to_string(),
            ),
        )
        .unwrap();
        path
    }

    /// Waits until the gateway reported `server` (new: unassigned) as `agent`'s, then assigns
    /// it to Acme.
    pub(crate) fn assign_reported(&self, server: &str, agent: &str) {
        let m = self.manager.addr;
        eventually(
            &format!("{server} reported"),
            Duration::from_secs(15),
            || {
                let (s, v) = call(
                    m,
                    "/conduit.manager.v1.ServerService/Get",
                    Some(&self.admin),
                    &json!({"serverId": server}),
                );
                (s == 200 && v["agentId"] == agent).then_some(())
            },
        );
        ok(
            m,
            "/conduit.manager.v1.ServerService/Assign",
            Some(&self.admin),
            json!({"serverId": server, "customerId": self.acme}),
        );
    }

    /// Waits until `gw` lists `server` `online` to Acme's operator: it pulled the assignment
    /// and the server's agent is connected there.
    pub(crate) fn wait_online(&self, gw: &Component, server: &str) {
        eventually(&format!("{server} online"), Duration::from_secs(15), || {
            let (_, v) = self.gw(gw, "ListServers", Some(&self.acme_operator), json!({}));
            let s = v["servers"]
                .as_array()?
                .iter()
                .find(|s| s["serverId"] == server)?
                .clone();
            (s["state"] == "online").then_some(())
        });
    }

    /// The audit record of `action` at the manager, once the gateway delivered it.
    pub(crate) fn audited(&self, action: &str) -> Value {
        let m = self.manager.addr;
        eventually(
            &format!("{action} audited"),
            Duration::from_secs(20),
            || {
                let v = ok(
                    m,
                    "/conduit.manager.v1.AuditService/List",
                    Some(&self.admin),
                    json!({}),
                );
                v["records"]
                    .as_array()?
                    .iter()
                    .find(|r| r["action"] == action)
                    .cloned()
            },
        )
    }

    /// A GatewayService call.
    pub(crate) fn gw(
        &self,
        gw: &Component,
        method: &str,
        tok: Option<&str>,
        body: Value,
    ) -> (u16, Value) {
        call(
            gw.addr,
            &format!("/conduit.gateway.v1.GatewayService/{method}"),
            tok,
            &body,
        )
    }
}

/// The `[[bmc]]` table of IPMI BMC `id` at `addr` (ipmi_sim's admin user).
pub(crate) fn ipmi_bmc(id: &str, addr: SocketAddr) -> String {
    format!(
        "[[bmc]]\nid = {id:?}\naddress = \"{}\"\nport = {}\nusername = \"admin\"\npassword = \"password\"\n",
        addr.ip(),
        addr.port()
    )
}

pub(crate) fn metric(addr: SocketAddr, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
    sample(&get(addr, "/metrics", &[]).text(), family, labels)
}

pub(crate) fn eventually<T>(what: &str, within: Duration, f: impl FnMut() -> Option<T>) -> T {
    wait_for(within, Duration::from_millis(100), f)
        .unwrap_or_else(|| panic!("{what} within {within:?}"))
}

#[test]
fn operations_reach_the_bmc_through_the_gateway_and_refusals_are_counted() {
    let site = Site::new("uplink");
    let sim = IpmiSim::start();
    let port = free_port();
    let m = site.manager.addr;
    let registered = [("status", "success")];
    assert_eq!(
        metric(m, "manager_gateway_registrations_total", &registered),
        None
    );
    let gw = site.gateway("gw1", port, false);
    let wss = format!("wss://localhost:{port}");
    eventually(
        "the gateway registered at the manager",
        Duration::from_secs(10),
        || metric(m, "manager_gateway_registrations_total", &registered),
    );
    eventually("the manager counts it up", Duration::from_secs(10), || {
        metric(
            m,
            "manager_gateways_total",
            &[("datacenter", "dc1"), ("status", "up")],
        )
    });

    // Nothing before the first agent.
    let text = get(gw.addr, "/metrics", &[]).text();
    for f in [
        "gateway_agents_total",
        "gateway_agent_registrations_total",
        "gateway_agent_heartbeats_total",
        "gateway_bmc_operations_total",
    ] {
        assert!(
            !text.lines().any(|l| l.starts_with(f)),
            "{f} before any agent:\n{text}"
        );
    }

    let cred = site.credential("AgentService", "agentId", "ag1");
    let mut agent = site.agent(
        "ag1",
        sim.addr,
        std::slice::from_ref(&wss),
        &cred,
        &site.pki.ca,
    );
    eventually("the agent registered", Duration::from_secs(15), || {
        metric(
            gw.addr,
            "gateway_agents_total",
            &[("datacenter", "dc1"), ("status", "connected")],
        )
        .filter(|v| *v == 1.0)
    });
    assert_eq!(
        metric(
            gw.addr,
            "gateway_agent_registrations_total",
            &[("datacenter", "dc1"), ("status", "success")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(agent.addr, "agent_gateway_connection_status", &[]),
        Some(1.0)
    );
    assert_eq!(
        metric(
            agent.addr,
            "agent_gateway_registrations_total",
            &[("status", "success")]
        ),
        Some(1.0)
    );
    let text = get(agent.addr, "/metrics", &[]).text();
    assert!(
        text.lines()
            .any(|l| l == "agent_gateway_registration_duration_seconds_count 1"),
        "one registration timed:\n{text}"
    );
    assert_eq!(
        metric(
            gw.addr,
            "gateway_websocket_connections_total",
            &[("type", "uplink")]
        ),
        Some(1.0)
    );
    eventually("heartbeats both ways", Duration::from_secs(5), || {
        metric(
            gw.addr,
            "gateway_agent_heartbeats_total",
            &[("agent_id", "ag1"), ("status", "ok")],
        )?;
        metric(
            agent.addr,
            "agent_heartbeats_sent_total",
            &[("status", "success")],
        )
    });

    // The gateway reported the agent's server: it arrives unassigned; the admin assigns it.
    let m = site.manager.addr;
    site.assign_reported("s1", "ag1");
    let op = Some(site.acme_operator.as_str());
    let listed = eventually(
        "the gateway pulled the assignment",
        Duration::from_secs(15),
        || {
            let (s, v) = site.gw(&gw, "ListServers", op, json!({}));
            (s == 200 && v["servers"].as_array().is_some_and(|a| a.len() == 1)).then_some(v)
        },
    );
    assert_eq!(listed["servers"][0]["serverId"], "s1");
    assert_eq!(listed["servers"][0]["state"], "online");
    assert_eq!(listed["servers"][0]["agentId"], "ag1");

    // The operator acts; the BMC changes.
    assert!(!sim.power());
    let (s, v) = site.gw(&gw, "PowerStatus", op, json!({"serverId": "s1"}));
    assert_eq!((s, v["power"].as_str()), (200, Some("off")), "{v}");
    let (s, v) = site.gw(
        &gw,
        "PowerAction",
        op,
        json!({"serverId": "s1", "action": "on"}),
    );
    assert_eq!(s, 200, "{v}");
    assert!(sim.power(), "the BMC is on");
    let (s, v) = site.gw(&gw, "GetSensors", op, json!({"serverId": "s1"}));
    assert!(
        s == 200 && !v["sensors"].as_array().unwrap().is_empty(),
        "{v}"
    );
    // Boot and the event log, the same way; a bad device is refused before it travels.
    let (s, v) = site.gw(
        &gw,
        "SetBootDevice",
        op,
        json!({"serverId": "s1", "device": "pxe"}),
    );
    assert_eq!((s, v["device"].as_str()), (200, Some("pxe")), "{v}");
    assert_eq!(sim.boot_device(), "pxe");
    let (s, v) = site.gw(&gw, "GetBootDevice", op, json!({"serverId": "s1"}));
    assert_eq!((s, v["device"].as_str()), (200, Some("pxe")), "{v}");
    sim.console("sel_add 0x20 0x02 0 0 0 0 0x20 0x00 0x04 0x01 0x01 0x01 0x09 0xff 0xff");
    let (s, v) = site.gw(&gw, "GetEventLog", op, json!({"serverId": "s1"}));
    assert!(
        s == 200 && !v["events"].as_array().unwrap().is_empty(),
        "{v}"
    );
    let (s, v) = site.gw(&gw, "ClearEventLog", op, json!({"serverId": "s1"}));
    assert_eq!(s, 200, "{v}");
    let (_, v) = site.gw(&gw, "GetEventLog", op, json!({"serverId": "s1"}));
    assert_eq!(v["events"], json!([]), "{v}");
    let (s, v) = site.gw(&gw, "GetServer", op, json!({"serverId": "s1"}));
    assert_eq!(
        (s, v["server"]["serverId"].as_str()),
        (200, Some("s1")),
        "{v}"
    );
    let (_, v) = site.gw(
        &gw,
        "PowerAction",
        op,
        json!({"serverId": "s1", "action": "explode"}),
    );
    assert_eq!(v["code"], "invalid_argument", "{v}");

    // The viewer reads but may not act; the other customer sees nothing; no token, no entry.
    let viewer = Some(site.acme_viewer.as_str());
    assert_eq!(
        site.gw(&gw, "PowerStatus", viewer, json!({"serverId": "s1"}))
            .0,
        200
    );
    let (_, v) = site.gw(
        &gw,
        "PowerAction",
        viewer,
        json!({"serverId": "s1", "action": "off"}),
    );
    assert_eq!(v["code"], "permission_denied", "{v}");
    let other = Some(site.globex_operator.as_str());
    let (_, v) = site.gw(
        &gw,
        "PowerAction",
        other,
        json!({"serverId": "s1", "action": "off"}),
    );
    assert_eq!(v["code"], "not_found", "{v}");
    let (_, v) = site.gw(&gw, "ListServers", other, json!({}));
    assert_eq!(v["servers"], json!([]));
    let (_, v) = site.gw(&gw, "PowerStatus", None, json!({"serverId": "s1"}));
    assert_eq!(v["code"], "unauthenticated", "{v}");
    assert!(sim.power(), "refused calls changed nothing");

    let g = gw.addr;
    assert_eq!(
        metric(
            g,
            "gateway_bmc_operations_total",
            &[("operation", "power_on"), ("status", "ok")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            g,
            "gateway_bmc_operations_total",
            &[("operation", "power_off"), ("status", "ok")]
        ),
        None
    );
    assert_eq!(
        metric(
            g,
            "gateway_token_validations_total",
            &[("status", "missing")]
        ),
        Some(1.0)
    );
    assert!(metric(g, "gateway_token_validations_total", &[("status", "valid")]).unwrap() >= 6.0);
    assert_eq!(
        metric(
            g,
            "gateway_rpc_calls_total",
            &[
                ("service", "conduit.gateway.v1.GatewayService"),
                ("method", "PowerAction"),
                ("status", "permission_denied")
            ]
        ),
        Some(1.0)
    );
    assert!(
        metric(
            g,
            "gateway_websocket_messages_total",
            &[("type", "uplink"), ("direction", "inbound")]
        )
        .unwrap()
            >= 3.0
    );
    assert!(
        metric(
            g,
            "gateway_websocket_bytes_transmitted_total",
            &[("type", "uplink"), ("direction", "outbound")]
        )
        .unwrap()
            > 0.0
    );
    assert!(
        metric(
            agent.addr,
            "agent_rpc_calls_total",
            &[
                ("service", "conduit.agent.v1.BmcService"),
                ("method", "PowerAction"),
                ("status", "ok")
            ]
        ) == Some(1.0),
        "the agent counts the routed call like its own API's"
    );

    // The power action is audited at the manager, by the operator.
    assert!(site.audited("boot.set")["detail"]
        .as_str()
        .unwrap()
        .contains("device pxe"));
    assert_eq!(site.audited("sel.clear")["result"], "ok");
    let audit = site.audited("power.on");
    assert_eq!(audit["serverId"], "s1");
    assert_eq!(audit["result"], "ok");
    assert!(
        audit["detail"]
            .as_str()
            .unwrap()
            .contains("via gateway gw1"),
        "{audit}"
    );

    // An unknown credential and a wrong CA are refused, and counted on both sides.
    let bogus = site.dir.0.join("bogus.credential");
    std::fs::write(&bogus, "cag_bogus_0123456789abcdef").unwrap();
    let stranger = site.agent(
        "stranger",
        sim.addr,
        std::slice::from_ref(&wss),
        &bogus,
        &site.pki.ca,
    );
    eventually("the unknown agent refused", Duration::from_secs(10), || {
        metric(
            stranger.addr,
            "agent_gateway_registrations_total",
            &[("status", "unauthenticated")],
        )
    });
    assert!(metric(
        g,
        "gateway_agent_registrations_total",
        &[("datacenter", "dc1"), ("status", "unauthenticated")]
    )
    .is_some());
    assert!(
        stranger
            .proc
            .log()
            .contains("registration refused (unauthenticated)"),
        "{}",
        stranger.proc.log()
    );
    drop(stranger);
    let rogue = Pki::new("rogue");
    let fooled = site.agent(
        "fooled",
        sim.addr,
        std::slice::from_ref(&wss),
        &cred,
        &rogue.ca,
    );
    eventually(
        "the gateway's certificate refused",
        Duration::from_secs(10),
        || {
            metric(
                fooled.addr,
                "agent_gateway_registrations_total",
                &[("status", "tls_error")],
            )
        },
    );
    eventually(
        "the failed handshake counted",
        Duration::from_secs(5),
        || {
            metric(
                g,
                "gateway_websocket_errors_total",
                &[("type", "uplink"), ("error_type", "tls")],
            )
        },
    );
    assert_eq!(
        metric(fooled.addr, "agent_gateway_connection_status", &[]),
        Some(0.0)
    );
    drop(fooled);

    // The agent dies: its server is unavailable at once (the link is gone), and comes back
    // with it — one registration each time, never two entries.
    agent.proc.kill9();
    eventually("the agent disconnected", Duration::from_secs(5), || {
        metric(
            g,
            "gateway_agents_total",
            &[("datacenter", "dc1"), ("status", "disconnected")],
        )
    });
    let (_, v) = site.gw(&gw, "PowerStatus", op, json!({"serverId": "s1"}));
    assert_eq!(v["code"], "unavailable", "{v}");
    let (_, v) = site.gw(&gw, "ListServers", op, json!({}));
    assert_eq!(v["servers"][0]["state"], "offline");
    // The heartbeat's age is computed when scraped: it keeps growing while the agent is gone.
    let age = || {
        metric(
            g,
            "gateway_agent_last_heartbeat_seconds",
            &[("agent_id", "ag1")],
        )
        .expect("the departed agent keeps its age until forgotten")
    };
    let before = age();
    std::thread::sleep(Duration::from_millis(1200));
    let gone_for = age();
    assert!(gone_for >= before + 1.0, "{before} then {gone_for}");
    let agent = site.agent("ag1", sim.addr, &[wss], &cred, &site.pki.ca);
    eventually("the agent back", Duration::from_secs(15), || {
        let (s, _) = site.gw(&gw, "PowerStatus", op, json!({"serverId": "s1"}));
        (s == 200).then_some(())
    });
    assert_eq!(
        metric(
            g,
            "gateway_agents_total",
            &[("datacenter", "dc1"), ("status", "connected")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            g,
            "gateway_agents_total",
            &[("datacenter", "dc1"), ("status", "disconnected")]
        ),
        None
    );
    assert_eq!(
        metric(
            g,
            "gateway_agent_registrations_total",
            &[("datacenter", "dc1"), ("status", "success")]
        ),
        Some(2.0)
    );
    assert!(age() < gone_for, "registering again resets the age");
    assert_eq!(get(g, "/health", &[]).status, 200);

    // The admin revokes the agent: the gateway drops its link at its next pull, and refuses it
    // from then on.
    ok(
        m,
        "/conduit.manager.v1.AgentService/Revoke",
        Some(&site.admin),
        json!({"agentId": "ag1"}),
    );
    eventually("the revoked agent refused", Duration::from_secs(30), || {
        metric(
            agent.addr,
            "agent_gateway_registrations_total",
            &[("status", "unauthenticated")],
        )
    });
    let (_, v) = site.gw(&gw, "PowerStatus", op, json!({"serverId": "s1"}));
    assert_eq!(v["code"], "unavailable", "{v}");
    assert!(agent
        .proc
        .log()
        .contains("registration refused (unauthenticated)"));
    drop(agent);
}

/// A raw uplink client on a plaintext gateway: the WebSocket upgrade, then whatever frames
/// the test sends.
fn raw_uplink(port: u16) -> conduit_tests::ws_client::Link {
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let (link, head) =
        conduit_tests::ws_client::Link::try_websocket_with(addr, "/uplink", "conduit.uplink.v1");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    link
}

fn register_text(credential: &str, major: u32) -> String {
    json!({"type": "register", "version": {"major": major, "minor": 0}, "credential": credential,
           "agentVersion": "raw", "datacenter": "dc1", "servers": []})
    .to_string()
}

/// The refusal a raw client got (`reason` of its `refused` message) and the close.
fn refusal(link: &mut conduit_tests::ws_client::Link) -> (String, (u16, String)) {
    let close = link.wait_close();
    let msg: Value = link
        .texts
        .first()
        .map(|t| serde_json::from_str(t).unwrap())
        .unwrap_or_default();
    (msg["reason"].as_str().unwrap_or("").to_owned(), close)
}

#[test]
fn bad_uplinks_are_refused_agents_fail_over_and_a_manager_outage_loses_nothing() {
    use conduit_ws::Opcode;
    let mut site = Site::new("uplink-failover");
    let sim = IpmiSim::start();
    // The BMC at a slow network's pace, so that an operation can be caught in flight.
    let bmc = conduit_tests::udp_delay::UdpDelay::start(sim.addr, Duration::from_millis(150));
    let (p1, p2) = (free_port(), free_port());
    let gw1_cred = site.credential("GatewayService", "gatewayId", "gw1");
    let mut gw1 = site.gateway_with(&gw1_cred, "gw1", p1, true);
    let gw2 = site.gateway("gw2", p2, false);
    let g2 = gw2.addr;
    let g1 = gw1.addr;

    // Abuse, on the plaintext gateway: each ends its own link with a reason, counted.
    let mut l = raw_uplink(p1);
    l.send_frame(Opcode::Text, register_text("cag_x_y", 2).as_bytes());
    let (reason, _) = refusal(&mut l);
    assert_eq!(reason, "version");
    assert!(l.texts[0].contains("speaks 1.x"), "{:?}", l.texts);
    let mut l = raw_uplink(p1);
    l.send_frame(Opcode::Text, br#"{"type":"heartbeat","seq":1}"#);
    assert_eq!(refusal(&mut l).0, "malformed");
    let mut l = raw_uplink(p1);
    l.send_raw(&[0x81, 0xff, 0, 0, 0, 0, 0, 0x50, 0, 0, 1, 2, 3, 4]); // a 5 MiB text frame
    assert_eq!(l.wait_close().0, 1009);
    let mut l = raw_uplink(p1);
    l.send_raw(&conduit_ws::encode_server_frame(Opcode::Text, b"{}")); // unmasked
    assert_eq!(l.wait_close().0, 1002);
    let raw_cred = site.credential("AgentService", "agentId", "raw1");
    let raw_secret = std::fs::read_to_string(&raw_cred).unwrap();
    let mut l = raw_uplink(p1);
    l.send_frame(Opcode::Text, register_text(raw_secret.trim(), 1).as_bytes());
    eventually("the raw agent registered", Duration::from_secs(5), || {
        l.poll(Duration::from_millis(100));
        l.texts
            .first()
            .filter(|t| t.contains("registered"))
            .cloned()
    });
    l.send_frame(Opcode::Text, br#"{"type":"response","id":99,"result":{}}"#);
    assert_eq!(l.wait_close().0, 1008, "a response to no request");
    let dc = ("datacenter", "dc1");
    for kind in ["version", "malformed", "success"] {
        assert_eq!(
            metric(
                g1,
                "gateway_agent_registrations_total",
                &[dc, ("status", kind)]
            ),
            Some(1.0),
            "{kind}"
        );
    }
    for kind in ["too_large", "protocol", "out_of_order"] {
        assert_eq!(
            metric(
                g1,
                "gateway_websocket_errors_total",
                &[("type", "uplink"), ("error_type", kind)]
            ),
            Some(1.0),
            "{kind}"
        );
    }
    assert_eq!(get(g1, "/health", &[]).status, 200);

    // The real agent: gateway 1 first, gateway 2 (TLS) next.
    let gateways = [
        format!("ws://127.0.0.1:{p1}"),
        format!("wss://localhost:{p2}"),
    ];
    let cred = site.credential("AgentService", "agentId", "ag1");
    let mut agent = site.agent("ag1", bmc.addr, &gateways, &cred, &site.pki.ca);
    let m = site.manager.addr;
    site.assign_reported("s1", "ag1");
    let op = site.acme_operator.clone();
    let status_at = |gw: SocketAddr| {
        call(
            gw,
            "/conduit.gateway.v1.GatewayService/PowerStatus",
            Some(&op),
            &json!({"serverId": "s1"}),
        )
    };
    eventually(
        "s1 reachable through gateway 1",
        Duration::from_secs(20),
        || (status_at(g1).0 == 200).then_some(()),
    );

    // An operation in flight when the agent's link drops fails at once as outcome-unknown,
    // and is never sent again.
    let in_flight = {
        let op = op.clone();
        std::thread::spawn(move || {
            call(
                g1,
                "/conduit.gateway.v1.GatewayService/PowerAction",
                Some(&op),
                &json!({"serverId": "s1", "action": "cycle"}),
            )
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    agent.proc.kill9();
    let (status, v) = in_flight.join().unwrap();
    assert_eq!((status, v["code"].as_str()), (409, Some("aborted")), "{v}");
    let message = v["message"].as_str().unwrap();
    assert!(
        message.contains("outcome unknown") && message.contains("operation "),
        "{message}"
    );
    assert_eq!(
        metric(
            g1,
            "gateway_proxy_errors_total",
            &[("error_type", "link_dropped")]
        ),
        Some(1.0)
    );
    let agent = site.agent("ag1", bmc.addr, &gateways, &cred, &site.pki.ca);
    eventually(
        "the agent back on gateway 1",
        Duration::from_secs(20),
        || (status_at(g1).0 == 200).then_some(()),
    );
    assert_eq!(
        metric(
            agent.addr,
            "agent_rpc_calls_total",
            &[
                ("service", "conduit.agent.v1.BmcService"),
                ("method", "PowerAction"),
                ("status", "ok")
            ]
        ),
        None,
        "nothing re-sent the cut-off power action"
    );
    let aborted = site.audited("power.cycle");
    assert_eq!(aborted["result"], "aborted");

    // Gateway 1 dies: the agent fails over to gateway 2, which serves its server.
    gw1.proc.kill9();
    eventually("the agent on gateway 2", Duration::from_secs(30), || {
        (status_at(g2).0 == 200).then_some(())
    });
    assert_eq!(
        metric(g2, "gateway_agents_total", &[dc, ("status", "connected")]),
        Some(1.0)
    );
    assert!(
        metric(
            agent.addr,
            "agent_gateway_registrations_total",
            &[("status", "success")]
        )
        .unwrap()
            >= 2.0
    );
    eventually(
        "the manager knows the agent is on gateway 2",
        Duration::from_secs(15),
        || {
            let v = ok(
                m,
                "/conduit.manager.v1.AgentService/List",
                Some(&site.admin),
                json!({}),
            );
            v["agents"]
                .as_array()?
                .iter()
                .find(|a| a["agentId"] == "ag1" && a["gatewayId"] == "gw2")
                .cloned()
        },
    );
    // Gateway 1 returns: no ghost of the agent there, still one entry at gateway 2.
    gw1 = site.gateway_with(&gw1_cred, "gw1", p1, true);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        metric(
            gw1.addr,
            "gateway_agents_total",
            &[dc, ("status", "connected")]
        ),
        None
    );
    assert_eq!(
        metric(g2, "gateway_agents_total", &[dc, ("status", "connected")]),
        Some(1.0)
    );

    // The manager dies mid-scenario: gateway 2 keeps serving on what it knows, keeps the audit
    // record on disk, and delivers it when the manager returns.
    site.manager.proc.kill9();
    let (s, v) = site.gw(
        &gw2,
        "PowerAction",
        Some(&op),
        json!({"serverId": "s1", "action": "off"}),
    );
    assert_eq!(s, 200, "{v}");
    assert!(!sim.power());
    std::thread::sleep(Duration::from_secs(2));
    site.restart_manager();
    let off = site.audited("power.off");
    assert!(
        off["detail"].as_str().unwrap().contains("via gateway gw2"),
        "{off}"
    );

    // The agent leaves for good: gateway 2 forgets it, and its series, after --forget-after.
    drop(agent);
    eventually(
        "the departed agent forgotten",
        Duration::from_secs(15),
        || {
            let t = get(g2, "/metrics", &[]).text();
            (sample(
                &t,
                "gateway_agents_total",
                &[dc, ("status", "disconnected")],
            )
            .is_none()
                && sample(
                    &t,
                    "gateway_agent_last_heartbeat_seconds",
                    &[("agent_id", "ag1")],
                )
                .is_none()
                && sample(
                    &t,
                    "gateway_agent_heartbeats_total",
                    &[("agent_id", "ag1"), ("status", "ok")],
                )
                .is_none())
            .then_some(())
        },
    );
    drop(gw2);
    drop(gw1);
}

/// Sends `signal` (`STOP`, `CONT`, `HUP`) to a component.
fn signal(c: &Component, signal: &str) {
    let pid = c.proc.child.id().to_string();
    let ok = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{signal} {pid}");
}

#[test]
fn a_frozen_agent_times_out_goes_stale_and_is_dropped_and_the_inventory_follows_sighup() {
    let mut site = Site::new("uplink-timing");
    // Answers within 2 s, and decisions for 4 s without the manager.
    site.gateway_flags = ["--operation-timeout", "2", "--trust-ttl", "4"]
        .map(String::from)
        .into();
    let sim = IpmiSim::start();
    let sim2 = IpmiSim::start();
    let port = free_port();
    let gw = site.gateway("gw1", port, true);
    let g = gw.addr;
    let cred = site.credential("AgentService", "agentId", "ag1");
    let ws = [format!("ws://127.0.0.1:{port}")];
    let agent = site.agent("ag1", sim.addr, &ws, &cred, &site.pki.ca);
    site.assign_reported("s1", "ag1");
    site.wait_online(&gw, "s1");
    let operator = site.acme_operator.clone();
    let op = Some(operator.as_str());
    let dc = ("datacenter", "dc1");

    // SIGHUP with a second BMC in the file: the update reaches the manager, unassigned.
    let both = format!("{}{}", ipmi_bmc("s1", sim.addr), ipmi_bmc("s2", sim2.addr));
    site.agent_config("ag1", &both, &ws, &cred, &site.pki.ca);
    signal(&agent, "HUP");
    eventually("s2 reported after SIGHUP", Duration::from_secs(15), || {
        let (s, v) = call(
            site.manager.addr,
            "/conduit.manager.v1.ServerService/Get",
            Some(&site.admin),
            &json!({"serverId": "s2"}),
        );
        (s == 200 && v["agentId"] == "ag1" && v.get("customerId").is_none()).then_some(())
    });

    // The agent freezes (its TCP connection stays up): a power action gets deadline_exceeded,
    // saying the outcome is unknown; thawed, the agent runs it and its late answer is counted
    // without ending the link.
    assert!(!sim.power());
    signal(&agent, "STOP");
    let (_, v) = site.gw(
        &gw,
        "PowerAction",
        op,
        json!({"serverId": "s1", "action": "on"}),
    );
    assert_eq!(v["code"], "deadline_exceeded", "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("outcome unknown"),
        "{v}"
    );
    signal(&agent, "CONT");
    eventually("the late reply counted", Duration::from_secs(10), || {
        metric(
            g,
            "gateway_proxy_errors_total",
            &[("error_type", "late_reply")],
        )
    });
    assert!(sim.power(), "the action ran once the agent thawed");
    let (s, v) = site.gw(&gw, "PowerStatus", op, json!({"serverId": "s1"}));
    assert_eq!((s, v["power"].as_str()), (200, Some("on")), "{v}");
    let one = [dc, ("status", "success")];
    assert_eq!(
        metric(g, "gateway_agent_registrations_total", &one),
        Some(1.0),
        "the link survived the late reply"
    );

    // Frozen again: stale after 3 missed heartbeats (not routed to), back with a late
    // heartbeat when thawed in time.
    signal(&agent, "STOP");
    eventually("the agent stale", Duration::from_secs(8), || {
        metric(g, "gateway_agents_total", &[dc, ("status", "stale")])
    });
    let (_, v) = site.gw(&gw, "PowerStatus", op, json!({"serverId": "s1"}));
    assert_eq!(v["code"], "unavailable", "{v}");
    assert!(v["message"].as_str().unwrap().contains("stale"), "{v}");
    let (_, v) = site.gw(&gw, "ListServers", op, json!({}));
    assert_eq!(v["servers"][0]["state"], "stale", "{v}");
    signal(&agent, "CONT");
    eventually(
        "a late heartbeat revives it",
        Duration::from_secs(8),
        || {
            metric(
                g,
                "gateway_agent_heartbeats_total",
                &[("agent_id", "ag1"), ("status", "late")],
            )?;
            metric(g, "gateway_agents_total", &[dc, ("status", "connected")])
        },
    );

    // Frozen for good: after 6 missed heartbeats the gateway closes the link; thawed, the
    // agent finds its link gone and registers again.
    signal(&agent, "STOP");
    eventually("the link closed", Duration::from_secs(12), || {
        metric(g, "gateway_agents_total", &[dc, ("status", "disconnected")])
    });
    signal(&agent, "CONT");
    eventually("registered again", Duration::from_secs(20), || {
        (metric(g, "gateway_agent_registrations_total", &one)? == 2.0).then_some(())
    });

    // The manager goes away: decisions serve for --trust-ttl, then user calls fail closed.
    site.manager.proc.kill9();
    let (s, _) = site.gw(&gw, "PowerStatus", op, json!({"serverId": "s1"}));
    assert_eq!(s, 200, "within the trust window");
    eventually(
        "fail closed past the trust window",
        Duration::from_secs(10),
        || {
            let (_, v) = site.gw(&gw, "PowerStatus", op, json!({"serverId": "s1"}));
            (v["code"] == "unavailable").then_some(())
        },
    );
    assert!(metric(
        g,
        "gateway_token_validations_total",
        &[("status", "unavailable")]
    )
    .is_some());
    site.restart_manager();
    eventually(
        "served again once the manager is back",
        Duration::from_secs(20),
        || {
            let (s, _) = site.gw(&gw, "PowerStatus", op, json!({"serverId": "s1"}));
            (s == 200).then_some(())
        },
    );
}

/// The manager serves plain HTTP; an operator puts a TLS-terminating proxy in front of it
/// (stunnel). A gateway reaches it as `https://` only through a certificate from the CA it is
/// given: another CA's is refused, logged, and nothing registers or is trusted.
#[test]
fn a_gateway_reaches_an_https_manager_only_through_a_certificate_it_trusts() {
    let mut site = Site::new("gw-https-manager");
    let proxy = Stunnel::start(site.manager.addr, &site.pki);
    site.manager_url = Some(format!("https://localhost:{}", proxy.addr.port()));
    let manager = site.manager.addr;
    let registered = || {
        metric(
            manager,
            "manager_gateway_registrations_total",
            &[("status", "success")],
        )
        .unwrap_or(0.0)
    };
    let list = |site: &Site, gw: &Component| {
        site.gw(gw, "ListServers", Some(&site.acme_operator), json!({}))
    };

    let rogue = Pki::new("gw-https-rogue");
    site.gateway_flags = vec!["--manager-ca".into(), rogue.ca.to_str().unwrap().into()];
    let gw = site.gateway("gw-wrong-ca", free_port(), true);
    eventually(
        "the gateway refuses the proxy's certificate",
        Duration::from_secs(15),
        || {
            let log = gw.proc.log();
            (log.contains("registering at https://localhost") && log.contains("certificate"))
                .then_some(())
        },
    );
    assert_eq!(
        registered(),
        0.0,
        "nothing registered through a certificate it does not trust"
    );
    let (status, body) = list(&site, &gw);
    assert_eq!(status, 503, "no keys from an untrusted manager: {body}");
    // stunnel logs each connection's end with what it forwarded to the manager: nothing.
    let proxy_log = proxy.proc.log();
    let ends: Vec<&str> = (proxy_log.lines())
        .filter(|l| l.contains("byte(s) sent to socket"))
        .collect();
    assert!(
        proxy_log.contains("SSL_accept")
            && !ends.is_empty()
            && ends
                .iter()
                .all(|l| l.ends_with(" 0 byte(s) sent to socket")),
        "the handshake failed and nothing reached the manager: {proxy_log}"
    );
    drop(gw);

    site.gateway_flags = vec!["--manager-ca".into(), site.pki.ca.to_str().unwrap().into()];
    let gw = site.gateway("gw-right-ca", free_port(), true);
    eventually(
        "the gateway registers over https",
        Duration::from_secs(15),
        || {
            gw.proc
                .log()
                .contains("registered at https://localhost")
                .then_some(())
        },
    );
    assert_eq!(registered(), 1.0);
    // The keys and decisions came over the same link: a user's call is served.
    let (status, body) = eventually("the gateway serves users", Duration::from_secs(10), || {
        let (status, body) = list(&site, &gw);
        (status == 200).then_some((status, body))
    });
    assert_eq!(status, 200, "{body}");
}

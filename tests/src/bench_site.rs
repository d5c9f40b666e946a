//! The benches' site: a manager with an admin, a customer (Acme) with an operator, a gateway
//! taking uplinks over TLS with a test CA, and a real agent dialing it whose servers are
//! assigned to Acme — the path a user's operation or console takes. Set up through the APIs,
//! with the binaries in [`crate::bin_dir`] (the release build, for benches).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::pki::Pki;
use crate::rpc_client::Client;
use crate::{init_manager, start_component, wait_for, Component, TempDir};

/// The manager's first admin.
pub const ADMIN: (&str, &str) = ("root@bench.example", "correct horse battery staple");
/// Acme's operator.
pub const OPERATOR: (&str, &str) = ("op@acme.example", "operator bench password");
/// The agent's own API token.
pub const AGENT_TOKEN: &str = "bench-agent-api-token-0123456789";

/// A running site (dropped agent first, manager last).
#[derive(Debug)]
pub struct BenchSite {
    /// The agent, dialing the gateway, serving its API with [`AGENT_TOKEN`].
    pub agent: Component,
    /// The gateway.
    pub gateway: Component,
    /// The manager.
    pub manager: Component,
    /// The admin's access token.
    pub admin: String,
    /// Acme's operator's access token.
    pub operator: String,
    /// The CA the agent trusts and the gateway's certificate.
    pub pki: Pki,
    /// Where the gateway takes uplinks.
    pub uplink: SocketAddr,
}

fn token(v: &Value) -> String {
    v["accessToken"].as_str().expect("accessToken").to_owned()
}

impl BenchSite {
    /// Starts the site in `dir`. `prepare` runs on the manager's data directory before the
    /// manager starts (after `init`); the agent serves `bmcs` (its `[[bmc]]` tables, with
    /// `extra` lines for its `[agent]` table), and `servers` of them are assigned to Acme once
    /// the gateway has reported them.
    pub fn start(
        dir: &TempDir,
        prepare: impl FnOnce(&Path),
        extra: &str,
        bmcs: &str,
        servers: &[&str],
    ) -> BenchSite {
        let data = dir.0.join("manager");
        std::fs::create_dir_all(&data).expect("manager dir");
        init_manager(&data, &[], ADMIN);
        prepare(&data);
        let manager = start_component("conduit-manager", &["--data-dir", data.to_str().unwrap()]);
        let mut mc = Client::new(manager.addr);
        let admin = token(&mc.login(ADMIN.0, ADMIN.1).1);
        let mut created = |service: &str, body: Value, file: &str| {
            let cred = mc.ok(&format!("{service}/Create"), Some(&admin), body)["credential"]
                .as_str()
                .expect("credential")
                .to_owned();
            let path = dir.0.join(file);
            std::fs::write(&path, cred).expect("write a credential");
            path
        };
        let gw_cred = created(
            "GatewayService",
            json!({"gatewayId": "gw1", "datacenter": "dc1"}),
            "gw1.credential",
        );
        let agent_cred = created(
            "AgentService",
            json!({"agentId": "real", "datacenter": "dc1"}),
            "real.credential",
        );
        let customer = mc.ok(
            "CustomerService/Create",
            Some(&admin),
            json!({"name": "Acme"}),
        )["customerId"]
            .as_str()
            .expect("customerId")
            .to_owned();
        mc.ok(
            "UserService/Create",
            Some(&admin),
            json!({"email": OPERATOR.0, "password": OPERATOR.1, "role": "operator", "customerId": customer}),
        );
        let operator = token(&mc.login(OPERATOR.0, OPERATOR.1).1);

        let pki = Pki::new("bench-site");
        let uplink = SocketAddr::from(([127, 0, 0, 1], crate::free_port()));
        let gateway = start_component(
            "conduit-gateway",
            &[
                "--manager",
                &format!("http://{}", manager.addr),
                "--credential-file",
                gw_cred.to_str().unwrap(),
                "--uplink-listen",
                &uplink.to_string(),
                "--tls-cert",
                pki.cert.to_str().unwrap(),
                "--tls-key",
                pki.key.to_str().unwrap(),
                "--state-dir",
                dir.0.join("gw1-state").to_str().unwrap(),
            ],
        );
        let config = dir.0.join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "[agent]\napi_token = {AGENT_TOKEN:?}\n{extra}\n{bmcs}\n\
                 [uplink]\ngateways = [\"wss://localhost:{}\"]\ncredential_file = {:?}\nca_file = {:?}\ndatacenter = \"dc1\"\n",
                uplink.port(),
                agent_cred.display().to_string(),
                pki.ca.display().to_string(),
            ),
        )
        .expect("agent config");
        let agent = start_component("conduit-agent", &["--config", config.to_str().unwrap()]);
        for server in servers {
            let reported = wait_for(Duration::from_secs(30), Duration::from_millis(200), || {
                let (s, v) = mc.call(
                    "ServerService/Get",
                    Some(&admin),
                    &json!({"serverId": server}),
                );
                (s == 200 && v["agentId"] == "real").then_some(())
            });
            reported.unwrap_or_else(|| panic!("the gateway reported {server}"));
            mc.ok(
                "ServerService/Assign",
                Some(&admin),
                json!({"serverId": server, "customerId": customer}),
            );
        }
        let mut gc = Client::for_package(gateway.addr, "conduit.gateway.v1");
        let online = wait_for(Duration::from_secs(30), Duration::from_millis(200), || {
            let (_, v) = gc.call("GatewayService/ListServers", Some(&operator), &json!({}));
            let list = v["servers"].as_array()?;
            (list.len() == servers.len() && list.iter().all(|s| s["state"] == "online"))
                .then_some(())
        });
        online.expect("the servers online at the gateway");
        BenchSite {
            agent,
            gateway,
            manager,
            admin,
            operator,
            pki,
            uplink,
        }
    }

    /// A GatewayService client.
    pub fn gateway_client(&self) -> Client {
        Client::for_package(self.gateway.addr, "conduit.gateway.v1")
    }

    /// A client of the agent's own API.
    pub fn agent_client(&self) -> Client {
        Client::for_package(self.agent.addr, "conduit.agent.v1")
    }
}

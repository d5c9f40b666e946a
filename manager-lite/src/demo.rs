//! First-run set-up: the first admin (`conduit-manager init`) and the demo data
//! (`--demo`: an admin, two customers, an operator and a viewer each, a few servers).
//!
//! Passwords are never defaults: `init` reads the admin's from stdin or a file; the demo
//! generates random ones and prints them once.

use anyhow::{bail, Context};
use conduit_api::manager::{CreateAgentRequest, CreateGatewayRequest, CreateUserRequest};

use crate::api::{create_user, Manager};
use crate::auth::unix_now;
use crate::gateways::{create_agent, create_gateway};
use crate::store::{Customer, Server};

/// Creates the first admin; refuses when an admin already exists.
pub fn init_admin(mgr: &Manager, email: &str, password: &str) -> anyhow::Result<String> {
    if mgr.auth.store.admin_count()? > 0 {
        bail!("an admin already exists; add users through UserService.Create");
    }
    let u = create_user(
        mgr,
        CreateUserRequest {
            email: email.to_owned(),
            name: "Administrator".into(),
            password: password.to_owned(),
            role: "admin".into(),
            customer_id: None,
        },
    )
    .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    Ok(u.user_id)
}

/// A printable random password (18 base64url characters, 108 bits).
fn random_password() -> anyhow::Result<String> {
    conduit_auth::secret::random_id(18).context("a random password")
}

/// What the demo seeded: users' logins to print, and component credentials to hand to the
/// demo gateways and agent.
#[derive(Debug, Default)]
pub struct Demo {
    /// (who, e-mail, password).
    pub users: Vec<(String, String, String)>,
    /// (gateway or agent id, credential).
    pub credentials: Vec<(String, String)>,
}

/// The demo's datacenter, gateways and agent (what `scripts/run-stack` starts).
pub const DATACENTER: &str = "dc1";
/// The demo gateways.
pub const GATEWAYS: [&str; 2] = ["gw-1", "gw-2"];
/// The demo agent.
pub const AGENT: &str = "agent-1";

/// Seeds the demo data when the database has no admin yet (nothing when it was seeded
/// before): the admin, two customers with an operator and a viewer each, the servers the
/// run-stack agent serves (`sim-node1`, `sim-node2` for Acme, `sim-redfish` for Globex), two
/// gateways and an agent of [`DATACENTER`].
pub fn seed(mgr: &Manager) -> anyhow::Result<Demo> {
    if mgr.auth.store.admin_count()? > 0 {
        return Ok(Demo::default());
    }
    let mut creds = Vec::new();
    let admin_pw = random_password()?;
    init_admin(mgr, "admin@conduit.example", &admin_pw)?;
    creds.push(("admin".into(), "admin@conduit.example".into(), admin_pw));
    let now = unix_now() as i64;
    for (n, (cid, name)) in [("acme", "Acme Hosting"), ("globex", "Globex & O'Brien")]
        .into_iter()
        .enumerate()
    {
        mgr.auth.store.create_customer(&Customer {
            id: cid.into(),
            name: name.into(),
            created_at: now,
        })?;
        for role in ["operator", "viewer"] {
            let email = format!("{role}@{cid}.example");
            let pw = random_password()?;
            create_user(
                mgr,
                CreateUserRequest {
                    email: email.clone(),
                    name: format!("{name} {role}"),
                    password: pw.clone(),
                    role: role.into(),
                    customer_id: Some(cid.into()),
                },
            )
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
            creds.push((format!("{role} of {cid}"), email, pw));
        }
        let servers: &[(&str, &str)] = if n == 0 {
            &[("sim-node1", "ipmi"), ("sim-node2", "ipmi")]
        } else {
            &[("sim-redfish", "redfish")]
        };
        for (id, protocol) in servers {
            mgr.auth.store.create_server(&Server {
                id: (*id).into(),
                name: (*id).into(),
                datacenter: DATACENTER.into(),
                agent_id: Some(AGENT.into()),
                protocol: (*protocol).into(),
                capabilities: "boot,event_log,power,sensors".into(),
                customer_id: Some(cid.into()),
                status: "active".into(),
                created_at: now,
                updated_at: now,
            })?;
        }
    }
    mgr.refresh_server_gauge();
    let mut credentials = Vec::new();
    for g in GATEWAYS {
        let c = create_gateway(
            mgr,
            CreateGatewayRequest {
                gateway_id: g.into(),
                name: String::new(),
                datacenter: DATACENTER.into(),
            },
        )
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
        credentials.push((c.id, c.credential));
    }
    let c = create_agent(
        mgr,
        CreateAgentRequest {
            agent_id: AGENT.into(),
            name: String::new(),
            datacenter: DATACENTER.into(),
        },
    )
    .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    credentials.push((c.id, c.credential));
    Ok(Demo {
        users: creds,
        credentials,
    })
}

//! First-run set-up: the first admin (`conduit-manager init`) and the demo data
//! (`--demo`: an admin, two customers, an operator and a viewer each, a few servers).
//!
//! Passwords are never defaults: `init` reads the admin's from stdin or a file; the demo
//! generates random ones and prints them once.

use anyhow::{bail, Context};
use conduit_api::manager::CreateUserRequest;

use crate::api::{create_user, Manager};
use crate::auth::unix_now;
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

/// Seeds the demo data when the database has no admin yet; returns the credentials to print
/// (nothing when it was seeded before).
pub fn seed(mgr: &Manager) -> anyhow::Result<Vec<(String, String, String)>> {
    if mgr.auth.store.admin_count()? > 0 {
        return Ok(Vec::new());
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
        for i in 1..=2 {
            let id = format!("{cid}-bmc-{i}");
            mgr.auth.store.create_server(&Server {
                id: id.clone(),
                name: id,
                datacenter: "dc1".into(),
                agent_id: Some("agent-1".into()),
                protocol: if n == 0 { "ipmi" } else { "redfish" }.into(),
                capabilities: "power,sensors".into(),
                customer_id: Some(cid.into()),
                status: "active".into(),
                created_at: now,
                updated_at: now,
            })?;
        }
    }
    mgr.refresh_server_gauge();
    Ok(creds)
}

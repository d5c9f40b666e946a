//! `GatewayService` and `AgentService`: the credentials an admin issues gateways and agents,
//! and the calls gateways make with theirs.
//!
//! Both credentials are opaque (`cgw_…`, `cag_…`), shown once and stored as SHA-256 hashes of
//! their high-entropy secret. A gateway presents its own on every call here. An agent presents
//! its own to its gateway, which asks [`VerifyAgent`](conduit_api::manager::VerifyAgentRequest)
//! here once per uplink and drops the uplink when the agent appears in the revocation list it
//! pulls.

use std::sync::Arc;

use conduit_api::manager::{self as m};
use conduit_auth::secret::{self, Secret};
use conduit_http::router::Router;
use conduit_http::rpc::{decode_body, unary_raw, Code, RpcError};
use conduit_http::{Method, Request};
use conduit_metrics::labels::{DatacenterStatus, Status};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::api::{
    capabilities, check_id, check_one_of, check_text, credentials_of, next_token, page, route,
    route_as, store_error, Manager, PROTOCOLS,
};
use crate::auth::unix_now;
use crate::store::{Agent, AuditRecord, Gateway, Revocation, RevocationKind, Server, StoreError};

/// Prefix of gateway credentials.
pub const GATEWAY_PREFIX: &str = "cgw";
/// Prefix of agent credentials.
pub const AGENT_PREFIX: &str = "cag";
/// How often gateways heartbeat.
pub const HEARTBEAT_SECS: u64 = 10;
/// A gateway not heard from for this long is `down` (three missed heartbeats).
pub const DOWN_AFTER_SECS: i64 = 30;
/// How often gateways pull the revocation list: with the pull itself, a revoked token stops
/// working at a gateway within about this long (the goal is 30 s).
pub const REVOCATION_POLL_SECS: u64 = 10;
/// How often gateways pull the inventory (server ownership).
pub const INVENTORY_POLL_SECS: u64 = 10;
/// Longest list a gateway may report at once.
const MAX_REPORT: usize = 10_000;
/// A revoked agent credential stays in the list this long (gateways drop its uplink at their
/// next pull; a restarted gateway asks VerifyAgent, which refuses it anyway).
const AGENT_REVOCATION_TTL: i64 = 24 * 3600;

fn gateway_status(g: &Gateway, now: i64) -> &'static str {
    if g.revoked_at.is_some() {
        "revoked"
    } else if g.last_seen.is_some_and(|t| now - t < DOWN_AFTER_SECS) {
        "up"
    } else {
        "down"
    }
}

/// ServerService.Locate: the up gateway `s`'s agent is connected to now.
pub(crate) fn locate(mgr: &Manager, s: &Server) -> Result<m::ServerLocation, RpcError> {
    let offline = |why: &str| RpcError::new(Code::Unavailable, format!("server {}: {why}", s.id));
    let Some(agent_id) = &s.agent_id else {
        return Err(offline("no agent reaches it yet"));
    };
    let agent = match mgr.store().agent(agent_id) {
        Err(StoreError::NotFound) => return Err(offline("its agent is not registered")),
        r => r.map_err(|e| store_error("agent", e))?,
    };
    let gateway_id = match (&agent.gateway_id, agent.connected, agent.revoked_at) {
        (Some(g), true, None) => g,
        _ => return Err(offline("its agent is not connected to a gateway now")),
    };
    let g = mgr
        .store()
        .gateway(gateway_id)
        .map_err(|e| store_error("gateway", e))?;
    if gateway_status(&g, unix_now() as i64) != "up" {
        return Err(offline("its agent's gateway is down"));
    }
    if g.address.is_empty() {
        return Err(offline(&format!(
            "gateway {} has not said where users reach it (its --address)",
            g.id
        )));
    }
    Ok(m::ServerLocation {
        server_id: s.id.clone(),
        agent_id: agent.id,
        gateway_id: g.id,
        gateway_address: g.address,
    })
}

fn gateway_info(g: &Gateway, now: i64) -> m::GatewayInfo {
    m::GatewayInfo {
        gateway_id: g.id.clone(),
        name: g.name.clone(),
        datacenter: g.datacenter.clone(),
        address: g.address.clone(),
        version: g.version.clone(),
        status: gateway_status(g, now).to_owned(),
        last_seen: g.last_seen,
    }
}

fn agent_info(a: &Agent) -> m::AgentInfo {
    m::AgentInfo {
        agent_id: a.id.clone(),
        name: a.name.clone(),
        datacenter: a.datacenter.clone(),
        gateway_id: a.gateway_id.clone(),
        connected: a.connected,
        revoked: a.revoked_at.is_some(),
    }
}

fn new_credential(prefix: &str) -> Result<(Secret, Vec<u8>), RpcError> {
    let s = Secret::generate(prefix).map_err(|e| {
        log::error!("random credential: {e}");
        RpcError::new(Code::Internal, "no random credential")
    })?;
    let hash = secret::hash(s.secret()).to_vec();
    Ok((s, hash))
}

impl Manager {
    /// Sets `manager_gateways_total` from the rows (after every change, and by the maintenance
    /// loop, since `up` turns `down` with time alone).
    pub fn refresh_gateway_gauge(&self) {
        // Held across the read and the update, as for the servers.
        let mut published = self
            .gateway_series
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let rows = match self.auth.store.gateways() {
            Ok(rows) => rows,
            Err(e) => return log::warn!("counting gateways: {e}"),
        };
        let now = unix_now() as i64;
        let addresses = rows
            .iter()
            .filter(|g| g.revoked_at.is_none() && !g.address.is_empty())
            .map(|g| g.address.clone())
            .collect();
        *self
            .gateway_addresses
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = addresses;
        let mut counts: Vec<(DatacenterStatus, i64)> = Vec::new();
        for g in &rows {
            let labels = DatacenterStatus {
                datacenter: g.datacenter.clone(),
                status: gateway_status(g, now),
            };
            match counts.iter_mut().find(|(l, _)| *l == labels) {
                Some((_, n)) => *n += 1,
                None => counts.push((labels, 1)),
            }
        }
        let gauge = &self.auth.metrics.gateways;
        for (labels, n) in &counts {
            gauge.with(labels, |g| g.set(*n));
        }
        for gone in published
            .iter()
            .filter(|l| !counts.iter().any(|(c, _)| c == *l))
        {
            gauge.remove(gone);
        }
        *published = counts.into_iter().map(|(l, _)| l).collect();
    }

    /// The gateway presenting `req`'s credential, if it is valid and unrevoked.
    fn authenticate_gateway(&self, req: &Request) -> Result<Gateway, RpcError> {
        let invalid = || {
            RpcError::new(
                Code::Unauthenticated,
                "invalid or revoked gateway credential",
            )
        };
        let given = conduit_http::rpc::bearer(req).ok_or_else(invalid)?;
        let s = Secret::parse(given)
            .filter(|s| s.prefix() == GATEWAY_PREFIX)
            .ok_or_else(invalid)?;
        let g = match self.auth.store.gateway_by_credential(s.id()) {
            Ok(g) => g,
            Err(StoreError::NotFound) => return Err(invalid()),
            Err(e) => return Err(store_error("gateway", e)),
        };
        if g.revoked_at.is_some()
            || !secret::constant_time_eq(&g.credential_hash, &secret::hash(s.secret()))
        {
            return Err(invalid());
        }
        Ok(g)
    }
}

/// Registers a call gateways make: their credential, then `call` on the store pool.
fn gateway_route<Req, Resp>(
    router: Router,
    mgr: &Arc<Manager>,
    method: &'static str,
    call: impl Fn(&Manager, &Gateway, Req) -> Result<Resp, RpcError> + Send + Sync + 'static,
) -> Router
where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
{
    route_as(
        router,
        mgr,
        m::GATEWAY_SERVICE,
        method,
        Manager::authenticate_gateway,
        call,
    )
}

/// Adds the gateway and agent routes.
pub fn routes(router: Router, mgr: &Arc<Manager>) -> Router {
    let router = admin_routes(router, mgr);
    let router = register_route(router, mgr);
    let router = gateway_route(router, mgr, "Heartbeat", |mgr, g, _: m::Empty| {
        mgr.auth
            .store
            .gateway_seen(&g.id, None, unix_now() as i64)
            .map_err(|e| store_error("gateway", e))?;
        mgr.refresh_gateway_gauge();
        Ok(m::Empty {})
    });
    let router = gateway_route(
        router,
        mgr,
        "ReportAgents",
        |mgr, g, r: m::ReportAgentsRequest| {
            if r.agent_ids.len() > m::MAX_REPORTED_AGENTS {
                return Err(RpcError::new(
                    Code::InvalidArgument,
                    format!("at most {} agents per report", m::MAX_REPORTED_AGENTS),
                ));
            }
            for id in &r.agent_ids {
                check_id("agentIds", id)?;
            }
            mgr.auth
                .store
                .report_agents(&g.id, &r.agent_ids, unix_now() as i64)
                .map_err(|e| store_error("agents", e))?;
            Ok(m::Empty {})
        },
    );
    let router = gateway_route(router, mgr, "ReportServers", report_servers);
    let router = gateway_route(
        router,
        mgr,
        "VerifyAgent",
        |mgr, g, r: m::VerifyAgentRequest| {
            let invalid =
                || RpcError::new(Code::Unauthenticated, "invalid or revoked agent credential");
            let s = Secret::parse(&r.credential)
                .filter(|s| s.prefix() == AGENT_PREFIX)
                .ok_or_else(invalid)?;
            let a = match mgr.auth.store.agent_by_credential(s.id()) {
                Ok(a) => a,
                Err(StoreError::NotFound) => return Err(invalid()),
                Err(e) => return Err(store_error("agent", e)),
            };
            let good = a.revoked_at.is_none()
            && secret::constant_time_eq(&a.credential_hash, &secret::hash(s.secret()))
            // an agent serves one datacenter, through that datacenter's gateways
            && a.datacenter == g.datacenter;
            if !good {
                return Err(invalid());
            }
            Ok(agent_info(&a))
        },
    );
    let router = gateway_route(router, mgr, "ListRevocations", |mgr, _g, _: m::Empty| {
        let list = mgr
            .auth
            .store
            .revocations(unix_now() as i64)
            .map_err(|e| store_error("revocations", e))?;
        Ok(m::ListRevocationsResponse {
            revocations: list
                .into_iter()
                .map(|r| m::RevocationEntry {
                    id: r.id,
                    kind: r.kind.as_str().to_owned(),
                    revoked_at: r.revoked_at,
                    expires_at: r.expires_at,
                })
                .collect(),
        })
    });
    let router = gateway_route(router, mgr, "ListServers", |mgr, g, r: m::PageRequest| {
        let page = page(r.page_size, r.page_token)?;
        let filter = crate::store::ServerFilter {
            datacenter: Some(g.datacenter.clone()),
            ..Default::default()
        };
        let rows = mgr
            .auth
            .store
            .servers(&filter, &page)
            .map_err(|e| store_error("servers", e))?;
        let next_page_token = next_token(&rows, page.limit, |s| &s.id);
        Ok(m::ListServersResponse {
            servers: rows.into_iter().map(crate::api::api_server).collect(),
            next_page_token,
        })
    });
    gateway_route(
        router,
        mgr,
        "RecordAudit",
        |mgr, g, r: m::RecordAuditRequest| {
            if r.records.len() > 1000 {
                return Err(RpcError::new(
                    Code::InvalidArgument,
                    "at most 1000 records per call",
                ));
            }
            // All checked before anything is written, then written in one transaction: a
            // bad record changes nothing.
            let mut rows = Vec::with_capacity(r.records.len());
            for rec in r.records {
                check_id("serverId", &rec.server_id)?;
                check_text("actor", &rec.actor, 64)?;
                check_text("detail", &rec.detail, 2000)?;
                check_text("action", &rec.action, 64)?;
                check_text("result", &rec.result, 64)?;
                // Only servers of the gateway's own datacenter; the owner is the manager's to
                // say, as of now, not the gateway's.
                let server = match mgr.auth.store.server(&rec.server_id) {
                    Ok(s) if s.datacenter == g.datacenter => s,
                    Ok(_) | Err(StoreError::NotFound) => {
                        return Err(RpcError::new(Code::NotFound, "server not found"))
                    }
                    Err(e) => return Err(store_error("server", e)),
                };
                rows.push(AuditRecord {
                    seq: 0,
                    at: rec.at,
                    actor: rec.actor,
                    actor_kind: "user".into(),
                    action: rec.action,
                    server_id: Some(rec.server_id),
                    customer_id: server.customer_id,
                    result: rec.result,
                    detail: format!("via gateway {}: {}", g.id, rec.detail),
                });
            }
            mgr.auth
                .store
                .append_audits(&rows)
                .map_err(|e| store_error("audit", e))?;
            Ok(m::Empty {})
        },
    )
}

fn register_route(router: Router, mgr: &Arc<Manager>) -> Router {
    let svc = m::GATEWAY_SERVICE;
    let rpc = mgr.auth.metrics.rpc.clone();
    let mgr = mgr.clone();
    router.route(
        Method::Post,
        "/conduit.manager.v1.GatewayService/Register",
        unary_raw(svc, "Register", rpc, move |req: &Request| {
            let req = credentials_of(req);
            let mgr2 = mgr.clone();
            mgr.pools.db.run(move || {
                let result = register(&mgr2, &req);
                let status = match &result {
                    Ok(_) => "success",
                    Err(e) if e.code == Code::Unauthenticated => "invalid_credential",
                    Err(e) if e.code == Code::InvalidArgument => "invalid_request",
                    Err(_) => "error",
                };
                mgr2.auth
                    .metrics
                    .gateway_registrations
                    .inc(&Status { status });
                mgr2.refresh_gateway_gauge();
                result
            })
        }),
    )
}

fn register(mgr: &Manager, req: &Request) -> Result<m::RegisterResponse, RpcError> {
    let g = mgr.authenticate_gateway(req)?;
    let r: m::RegisterRequest = decode_body(req)?;
    check_text("address", &r.address, 256)?;
    check_text("version", &r.version, 64)?;
    mgr.auth
        .store
        .gateway_seen(&g.id, Some((&r.address, &r.version)), unix_now() as i64)
        .map_err(|e| store_error("gateway", e))?;
    log::info!(
        "gateway {} of {} registered from {:?}",
        g.id,
        g.datacenter,
        r.address
    );
    Ok(m::RegisterResponse {
        gateway_id: g.id,
        datacenter: g.datacenter,
        heartbeat_secs: HEARTBEAT_SECS,
        revocation_poll_secs: REVOCATION_POLL_SECS,
        inventory_poll_secs: INVENTORY_POLL_SECS,
    })
}

fn report_servers(
    mgr: &Manager,
    g: &Gateway,
    r: m::ReportServersRequest,
) -> Result<m::Empty, RpcError> {
    if r.servers.len() > MAX_REPORT {
        return Err(RpcError::new(
            Code::InvalidArgument,
            format!("at most {MAX_REPORT} servers per report"),
        ));
    }
    check_id("agentId", &r.agent_id)?;
    let agent = mgr
        .auth
        .store
        .agent(&r.agent_id)
        .map_err(|e| store_error("agent", e))?;
    if agent.datacenter != g.datacenter || agent.revoked_at.is_some() {
        return Err(RpcError::new(Code::NotFound, "agent not found"));
    }
    for rs in &r.servers {
        check_id("serverId", &rs.server_id)?;
        check_one_of("protocol", &rs.protocol, PROTOCOLS)?;
        capabilities(&rs.capabilities)?;
    }
    let now = unix_now() as i64;
    let mut changed = false;
    for rs in r.servers {
        let caps = capabilities(&rs.capabilities)?;
        match mgr.auth.store.server(&rs.server_id) {
            Ok(mut s) => {
                // a gateway never moves a server between datacenters or owners
                if s.datacenter != g.datacenter {
                    continue;
                }
                // An assigned server stays with its agent: another agent claiming it (a
                // misconfigured or compromised host) must not capture a customer's server. It
                // moves once its agent is revoked or gone, or after an admin unassigns it.
                // (Only a missing agent row counts as gone: a store error is not a reason to
                // move a customer's server.)
                let held_by_other = match s.agent_id.as_deref() {
                    Some(other) if s.customer_id.is_some() && other != agent.id => {
                        match mgr.auth.store.agent(other) {
                            Ok(a) => a.revoked_at.is_none(),
                            Err(StoreError::NotFound) => false,
                            Err(e) => return Err(store_error("agent", e)),
                        }
                    }
                    _ => false,
                };
                if held_by_other {
                    log::warn!(
                        "gateway {}: agent {} reports server {}, assigned and served by agent {}: ignored",
                        g.id,
                        agent.id,
                        s.id,
                        s.agent_id.as_deref().unwrap_or_default()
                    );
                    continue;
                }
                if s.agent_id.as_deref() != Some(agent.id.as_str())
                    || s.protocol != rs.protocol
                    || s.capabilities != caps
                {
                    s.agent_id = Some(agent.id.clone());
                    s.protocol = rs.protocol;
                    s.capabilities = caps;
                    s.updated_at = now;
                    mgr.auth
                        .store
                        .update_server(&s)
                        .map_err(|e| store_error("server", e))?;
                    changed = true;
                }
            }
            Err(StoreError::NotFound) => {
                let s = Server {
                    id: rs.server_id.clone(),
                    name: rs.server_id,
                    datacenter: g.datacenter.clone(),
                    agent_id: Some(agent.id.clone()),
                    protocol: rs.protocol,
                    capabilities: caps,
                    customer_id: None,
                    status: "active".into(),
                    created_at: now,
                    updated_at: now,
                };
                match mgr.auth.store.create_server(&s) {
                    Ok(()) | Err(StoreError::Conflict(_)) => changed = true,
                    Err(e) => return Err(store_error("server", e)),
                }
            }
            Err(e) => return Err(store_error("server", e)),
        }
    }
    if changed {
        mgr.refresh_server_gauge();
    }
    Ok(m::Empty {})
}

/// A new gateway and its credential (shown once).
pub fn create_gateway(
    mgr: &Manager,
    r: m::CreateGatewayRequest,
) -> Result<m::CredentialResponse, RpcError> {
    check_id("gatewayId", &r.gateway_id)?;
    check_id("datacenter", &r.datacenter)?;
    check_text("name", &r.name, 200)?;
    let (s, hash) = new_credential(GATEWAY_PREFIX)?;
    let g = Gateway {
        id: r.gateway_id.clone(),
        name: if r.name.is_empty() {
            r.gateway_id
        } else {
            r.name
        },
        datacenter: r.datacenter,
        credential_id: s.id().to_owned(),
        credential_hash: hash,
        address: String::new(),
        version: String::new(),
        registered_at: None,
        last_seen: None,
        created_at: unix_now() as i64,
        revoked_at: None,
    };
    mgr.auth
        .store
        .create_gateway(&g)
        .map_err(|e| store_error("gateway", e))?;
    mgr.refresh_gateway_gauge();
    Ok(m::CredentialResponse {
        credential: s.to_string(),
        id: g.id,
    })
}

/// A new agent and its credential (shown once).
pub fn create_agent(
    mgr: &Manager,
    r: m::CreateAgentRequest,
) -> Result<m::CredentialResponse, RpcError> {
    check_id("agentId", &r.agent_id)?;
    check_id("datacenter", &r.datacenter)?;
    check_text("name", &r.name, 200)?;
    let (s, hash) = new_credential(AGENT_PREFIX)?;
    let a = Agent {
        id: r.agent_id.clone(),
        name: if r.name.is_empty() {
            r.agent_id
        } else {
            r.name
        },
        datacenter: r.datacenter,
        credential_id: s.id().to_owned(),
        credential_hash: hash,
        gateway_id: None,
        connected: false,
        last_seen: None,
        created_at: unix_now() as i64,
        revoked_at: None,
    };
    mgr.auth
        .store
        .create_agent(&a)
        .map_err(|e| store_error("agent", e))?;
    Ok(m::CredentialResponse {
        credential: s.to_string(),
        id: a.id,
    })
}

fn admin_routes(router: Router, mgr: &Arc<Manager>) -> Router {
    let gsvc = m::GATEWAY_SERVICE;
    let router = route(
        router,
        mgr,
        gsvc,
        "Create",
        |mgr, caller, r: m::CreateGatewayRequest| {
            caller.require_admin()?;
            create_gateway(mgr, r)
        },
    );
    let router = route(router, mgr, gsvc, "List", |mgr, caller, _: m::Empty| {
        caller.require_admin()?;
        let now = unix_now() as i64;
        let rows = mgr
            .auth
            .store
            .gateways()
            .map_err(|e| store_error("gateways", e))?;
        Ok(m::ListGatewaysResponse {
            gateways: rows.iter().map(|g| gateway_info(g, now)).collect(),
        })
    });
    let router = route(
        router,
        mgr,
        gsvc,
        "Revoke",
        |mgr, caller, r: m::GatewayRef| {
            caller.require_admin()?;
            mgr.auth
                .store
                .revoke_gateway(&r.gateway_id, unix_now() as i64)
                .map_err(|e| store_error("gateway", e))?;
            mgr.refresh_gateway_gauge();
            Ok(m::Empty {})
        },
    );
    let asvc = m::AGENT_SERVICE;
    let router = route(
        router,
        mgr,
        asvc,
        "Create",
        |mgr, caller, r: m::CreateAgentRequest| {
            caller.require_admin()?;
            create_agent(mgr, r)
        },
    );
    let router = route(
        router,
        mgr,
        asvc,
        "List",
        |mgr, caller, r: m::PageRequest| {
            caller.require_admin()?;
            let page = page(r.page_size, r.page_token)?;
            let rows = mgr
                .auth
                .store
                .agents(&page)
                .map_err(|e| store_error("agents", e))?;
            let next_page_token = next_token(&rows, page.limit, |a| &a.id);
            Ok(m::ListAgentsResponse {
                agents: rows.iter().map(agent_info).collect(),
                next_page_token,
            })
        },
    );
    route(
        router,
        mgr,
        asvc,
        "Revoke",
        |mgr, caller, r: m::AgentRef| {
            caller.require_admin()?;
            let now = unix_now() as i64;
            mgr.auth
                .store
                .revoke_agent(&r.agent_id, now)
                .map_err(|e| store_error("agent", e))?;
            mgr.auth
                .store
                .revoke(&Revocation {
                    id: r.agent_id,
                    kind: RevocationKind::Agent,
                    revoked_at: now,
                    expires_at: now + AGENT_REVOCATION_TTL,
                })
                .map_err(|e| store_error("revocation", e))?;
            Ok(m::Empty {})
        },
    )
}

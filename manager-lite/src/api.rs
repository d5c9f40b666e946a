//! The manager's Connect services, on the shared dispatcher.
//!
//! Each call authenticates its caller ([`Auth::authenticate`]), runs on a work pool (never on
//! an HTTP worker: `/metrics` and `/health` share those) and answers a row another customer
//! owns with `not_found`, exactly as if it did not exist.

use std::sync::Arc;
use std::time::Instant;

use conduit_api::manager::{self as m};
use conduit_http::router::Router;
use conduit_http::rpc::{decode_body, unary_authenticating, unary_raw, Code, RpcError, RpcFuture};
use conduit_http::{Method, Request, Response};
use conduit_metrics::labels::{Operation, OperationStatus};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::auth::{client_addr, role_rank, unix_now, user_info, Auth, Caller, API_KEY_PREFIX};
use crate::identity::throttle;
use crate::metrics::{ManagerMetrics, ServerLabels};
use crate::store::{
    ApiKey, AuditRecord, Customer, Page, Role, Server, ServerFilter, Store, StoreError, User,
};
use crate::work::Pools;

/// Largest page a list answers.
pub const MAX_PAGE: u32 = 1000;
/// Page size when none is asked for.
pub const DEFAULT_PAGE: u32 = 100;

/// What every handler shares.
#[derive(Debug)]
pub struct Manager {
    /// Identity.
    pub auth: Auth,
    /// Work pools.
    pub pools: Pools,
    /// The `manager_servers_total` series last published (so emptied groups go away).
    pub server_series: std::sync::Mutex<Vec<ServerLabels>>,
    /// The `manager_gateways_total` series last published.
    pub gateway_series: std::sync::Mutex<Vec<conduit_metrics::labels::DatacenterStatus>>,
    /// Where users reach the gateways (their registered addresses), as of the last gauge
    /// refresh: the web console's page may connect there.
    pub gateway_addresses: std::sync::RwLock<Vec<String>>,
}

impl Manager {
    pub(crate) fn store(&self) -> &dyn Store {
        self.auth.store.as_ref()
    }

    fn metrics(&self) -> &ManagerMetrics {
        &self.auth.metrics
    }

    /// Sets `manager_servers_total` from the rows (at start and after every server change).
    pub fn refresh_server_gauge(&self) {
        // Held across the count and the update: a slower refresh never publishes older counts
        // over a newer one's.
        let mut published = self
            .server_series
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let rows = match self.store().server_counts() {
            Ok(rows) => rows,
            Err(e) => return log::warn!("counting servers: {e}"),
        };
        let fresh: Vec<ServerLabels> = rows
            .into_iter()
            .map(|n| {
                let labels = ServerLabels {
                    customer_id: n.customer_id.unwrap_or_else(|| "unassigned".into()),
                    datacenter: n.datacenter,
                    status: server_status_label(&n.status),
                };
                self.metrics()
                    .servers
                    .with(&labels, |g| g.set(n.count as i64));
                labels
            })
            .collect();
        for gone in published.iter().filter(|l| !fresh.contains(l)) {
            self.metrics().servers.remove(gone);
        }
        *published = fresh;
    }
}

fn server_status_label(s: &str) -> &'static str {
    match s {
        "active" => "active",
        "maintenance" => "maintenance",
        _ => "offline",
    }
}

pub(crate) fn store_error(what: &str, e: StoreError) -> RpcError {
    match e {
        StoreError::NotFound => RpcError::new(Code::NotFound, format!("{what} not found")),
        StoreError::Conflict(m) => RpcError::new(
            Code::AlreadyExists,
            format!("{what}: conflicts with a row: {m}"),
        ),
        StoreError::Backend(m) => {
            log::error!("{what}: {m}");
            RpcError::new(Code::Internal, format!("{what}: the database failed"))
        }
        StoreError::Unavailable(m) => {
            log::warn!("{what}: the database is unavailable: {m}");
            RpcError::new(
                Code::Unavailable,
                format!("{what}: the database is unavailable; try again"),
            )
        }
    }
}

/// A page request checked: size in 1..=MAX_PAGE (0 means the default), token as given.
pub(crate) fn page(size: u32, token: Option<String>) -> Result<Page, RpcError> {
    if size > MAX_PAGE {
        return Err(RpcError::new(
            Code::InvalidArgument,
            format!("pageSize {size} is over the limit of {MAX_PAGE}"),
        ));
    }
    let limit = if size == 0 { DEFAULT_PAGE } else { size };
    if token.as_deref().is_some_and(|t| t.len() > 128) {
        return Err(RpcError::new(Code::InvalidArgument, "pageToken is invalid"));
    }
    Ok(Page {
        after: token.filter(|t| !t.is_empty()),
        limit,
    })
}

/// The next page token: the last id, when the page was full.
pub(crate) fn next_token<T>(rows: &[T], limit: u32, id: impl Fn(&T) -> &str) -> Option<String> {
    (rows.len() as u32 == limit)
        .then(|| rows.last().map(|r| id(r).to_owned()))
        .flatten()
}

pub(crate) fn check_text(field: &str, v: &str, max: usize) -> Result<(), RpcError> {
    if v.chars().count() > max || v.chars().any(|c| c.is_control() && c != '\t') {
        return Err(RpcError::new(
            Code::InvalidArgument,
            format!("{field}: at most {max} characters, no control characters"),
        ));
    }
    Ok(())
}

/// Ids the caller chooses (server ids): letters, digits and `.-_:`, 1–64 bytes.
pub(crate) fn check_id(field: &str, v: &str) -> Result<(), RpcError> {
    if conduit_api::valid_id(v) {
        Ok(())
    } else {
        Err(RpcError::new(
            Code::InvalidArgument,
            format!("{field}: 1–64 of letters, digits and . - _ :"),
        ))
    }
}

/// A plausible e-mail: one `@`, a non-empty local part, a dotted domain, no spaces.
fn check_email(v: &str) -> Result<(), RpcError> {
    let ok = v.len() <= 254
        && !v.chars().any(|c| c.is_whitespace() || c.is_control())
        && v.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        });
    if ok {
        Ok(())
    } else {
        Err(RpcError::new(
            Code::InvalidArgument,
            "email is not a valid e-mail address",
        ))
    }
}

const CAPABILITIES: &[&str] = &["power", "sensors", "boot", "event_log", "sol", "vnc"];
const STATUSES: &[&str] = &["active", "maintenance", "offline"];
pub(crate) const PROTOCOLS: &[&str] = &["ipmi", "redfish"];

pub(crate) fn check_one_of(field: &str, v: &str, set: &[&str]) -> Result<(), RpcError> {
    if set.contains(&v) {
        Ok(())
    } else {
        Err(RpcError::new(
            Code::InvalidArgument,
            format!("{field}: one of {}", set.join(", ")),
        ))
    }
}

pub(crate) fn capabilities(list: &[String]) -> Result<String, RpcError> {
    for c in list {
        check_one_of("capabilities", c, CAPABILITIES)?;
    }
    let mut v: Vec<&str> = list.iter().map(String::as_str).collect();
    v.sort_unstable();
    v.dedup();
    Ok(v.join(","))
}

pub(crate) fn api_server(s: Server) -> m::Server {
    m::Server {
        server_id: s.id,
        name: s.name,
        datacenter: s.datacenter,
        agent_id: s.agent_id,
        protocol: s.protocol,
        capabilities: s
            .capabilities
            .split(',')
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect(),
        customer_id: s.customer_id,
        status: s.status,
    }
}

fn api_key_info(k: &ApiKey) -> m::ApiKeyInfo {
    m::ApiKeyInfo {
        key_id: k.id.clone(),
        name: k.name.clone(),
        role: k.role.as_str().to_owned(),
        customer_id: k.customer_id.clone(),
        created_at: k.created_at,
        revoked: k.revoked_at.is_some(),
    }
}

/// A server the caller may see, or `not_found` (the same answer whether it exists or not).
fn visible_server(mgr: &Manager, caller: &Caller, id: &str) -> Result<Server, RpcError> {
    let s = mgr
        .store()
        .server(id)
        .map_err(|e| store_error("server", e))?;
    match caller.tenant() {
        Some(t) if s.customer_id.as_deref() != Some(t) => {
            Err(RpcError::new(Code::NotFound, "server not found"))
        }
        _ => Ok(s),
    }
}

/// What of a request the pool needs (the request itself stays with the HTTP worker): its
/// `Authorization` and `Content-Type` headers and its body.
pub(crate) fn credentials_of(req: &Request) -> Request {
    Request {
        headers: ["Authorization", "Content-Type"]
            .into_iter()
            .filter_map(|n| req.header(n).map(|v| (n.to_owned(), v.to_owned())))
            .collect(),
        body: req.body.clone(),
        ..Request::default()
    }
}

/// Registers an authenticated user call: authenticate, then `call` on the store pool.
pub(crate) fn route<Req, Resp>(
    router: Router,
    mgr: &Arc<Manager>,
    service: &'static str,
    method: &'static str,
    call: impl Fn(&Manager, &Caller, Req) -> Result<Resp, RpcError> + Send + Sync + 'static,
) -> Router
where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
{
    route_as(
        router,
        mgr,
        service,
        method,
        |m, r| m.auth.authenticate(r),
        call,
    )
}

/// Registers a call whose caller `authenticate` establishes (a user, a gateway): on the
/// store pool, the caller first, then the body — no one without credentials learns the
/// schema — then `call`.
pub(crate) fn route_as<Who, Req, Resp>(
    router: Router,
    mgr: &Arc<Manager>,
    service: &'static str,
    method: &'static str,
    authenticate: impl Fn(&Manager, &Request) -> Result<Who, RpcError> + Send + Sync + 'static,
    call: impl Fn(&Manager, &Who, Req) -> Result<Resp, RpcError> + Send + Sync + 'static,
) -> Router
where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
{
    route_on(router, mgr, service, method, |p| &p.db, authenticate, call)
}

/// A user call that hashes a password: on the hash pool, so argon2id's memory and CPU stay
/// within its bound and never hold a store thread.
fn route_hashing<Req, Resp>(
    router: Router,
    mgr: &Arc<Manager>,
    service: &'static str,
    method: &'static str,
    call: impl Fn(&Manager, &Caller, Req) -> Result<Resp, RpcError> + Send + Sync + 'static,
) -> Router
where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
{
    let authenticate = |m: &Manager, r: &Request| m.auth.authenticate(r);
    route_on(
        router,
        mgr,
        service,
        method,
        |p| &p.hash,
        authenticate,
        call,
    )
}

fn route_on<Who, Req, Resp>(
    router: Router,
    mgr: &Arc<Manager>,
    service: &'static str,
    method: &'static str,
    pool: fn(&Pools) -> &Arc<crate::work::WorkPool>,
    authenticate: impl Fn(&Manager, &Request) -> Result<Who, RpcError> + Send + Sync + 'static,
    call: impl Fn(&Manager, &Who, Req) -> Result<Resp, RpcError> + Send + Sync + 'static,
) -> Router
where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
{
    let mgr = mgr.clone();
    let handlers = Arc::new((authenticate, call));
    let rpc = mgr.metrics().rpc.clone();
    router.route(
        Method::Post,
        Box::leak(format!("/{service}/{method}").into_boxed_str()),
        unary_raw(service, method, rpc, move |req: &Request| {
            let req = credentials_of(req);
            let (mgr2, handlers) = (mgr.clone(), handlers.clone());
            pool(&mgr.pools).run(move || {
                let who = (handlers.0)(&mgr2, &req)?;
                (handlers.1)(&mgr2, &who, decode_body(&req)?)
            })
        }),
    )
}

/// A server operation, counted in `manager_server_operations_total` and its duration.
fn server_op<T>(
    mgr: &Manager,
    operation: &'static str,
    f: impl FnOnce() -> Result<T, RpcError>,
) -> Result<T, RpcError> {
    let start = Instant::now();
    let result = f();
    let status = match &result {
        Ok(_) => "ok",
        Err(e) => e.code.as_str(),
    };
    mgr.metrics()
        .server_operations
        .inc(&OperationStatus { operation, status });
    mgr.metrics()
        .server_operation_duration
        .observe(&Operation { operation }, start.elapsed().as_secs_f64());
    result
}

fn audit(mgr: &Manager, caller: &Caller, action: &str, server: Option<&Server>, result: &str) {
    audit_with(mgr, caller, action, server, result, String::new());
}

fn audit_with(
    mgr: &Manager,
    caller: &Caller,
    action: &str,
    server: Option<&Server>,
    result: &str,
    detail: String,
) {
    let record = AuditRecord {
        seq: 0,
        at: unix_now() as i64,
        actor: caller.actor.clone(),
        actor_kind: caller.kind.to_owned(),
        action: action.to_owned(),
        server_id: server.map(|s| s.id.clone()),
        customer_id: server.and_then(|s| s.customer_id.clone()),
        result: result.to_owned(),
        detail,
    };
    if let Err(e) = mgr.store().append_audit(&record) {
        log::error!("audit record for {action} lost: {e}");
    }
}

/// Adds every manager route to `router`.
pub fn routes(router: Router, mgr: &Arc<Manager>) -> Router {
    let router = auth_routes(router, mgr);
    let router = server_routes(router, mgr);
    let router = customer_routes(router, mgr);
    let router = user_routes(router, mgr);
    let router = api_key_routes(router, mgr);
    let router = audit_routes(router, mgr);
    let router = crate::gateways::routes(router, mgr);
    let jwks = mgr.clone();
    router.route(Method::Get, "/.well-known/jwks.json", move |_| {
        Response::new(200)
            .with_header("Content-Type", "application/json")
            // as short as the managers' own key reload, so a rotation reaches verifiers soon
            .with_header("Cache-Control", "max-age=5")
            .with_body(jwks.auth.tokens.jwks().into_bytes())
    })
}

fn auth_routes(router: Router, mgr: &Arc<Manager>) -> Router {
    let svc = m::AUTH_SERVICE;
    let rpc = mgr.metrics().rpc.clone();
    let login = {
        let mgr = mgr.clone();
        unary_authenticating(
            svc,
            "Login",
            rpc.clone(),
            move |req, body: m::LoginRequest| {
                let addr = client_addr(req);
                let mgr2 = mgr.clone();
                let fut: RpcFuture<m::TokenResponse> = match body {
                    m::LoginRequest {
                        api_key: Some(key),
                        email: None,
                        password: None,
                    } => mgr.pools.db.run(move || mgr2.auth.login_api_key(&key)),
                    m::LoginRequest {
                        email: Some(email),
                        password: Some(password),
                        api_key: None,
                    } => {
                        // The throttle's counts are rows: checked on the db pool (never on the
                        // worker, which also serves /metrics and /health), so that a flood of
                        // throttled guesses never queues for the hash threads.
                        let (mgr3, email2) = (mgr.clone(), email.clone());
                        let check = mgr.pools.db.run(move || {
                            match mgr3.auth.refuse_throttled(&email2, addr) {
                                Some(e) => Err(e),
                                None => Ok(()),
                            }
                        });
                        Box::pin(async move {
                            check.await?;
                            mgr2.pools
                                .hash
                                .run({
                                    let mgr = mgr2.clone();
                                    move || mgr.auth.login_password(&email, &password, addr)
                                })
                                .await
                        })
                    }
                    _ => conduit_http::rpc::refused(RpcError::new(
                        Code::InvalidArgument,
                        "give email and password, or apiKey",
                    )),
                };
                fut
            },
        )
    };
    let refresh = {
        let mgr = mgr.clone();
        unary_authenticating(svc, "Refresh", rpc, move |_, body: m::RefreshRequest| {
            let mgr2 = mgr.clone();
            mgr.pools
                .db
                .run(move || mgr2.auth.refresh(&body.refresh_token))
        })
    };
    let router = router
        .route(Method::Post, "/conduit.manager.v1.AuthService/Login", login)
        .route(
            Method::Post,
            "/conduit.manager.v1.AuthService/Refresh",
            refresh,
        );
    let router = route(router, mgr, svc, "Logout", |mgr, caller, _: m::Empty| {
        mgr.auth.logout(caller).map(|()| m::Empty {})
    });
    route(router, mgr, svc, "WhoAmI", |mgr, caller, _: m::Empty| {
        let u = mgr
            .store()
            .user(&caller.principal.user_id)
            .map_err(|e| store_error("user", e))?;
        // an API key acts with its own role and customer
        Ok(m::UserInfo {
            role: caller.principal.role.as_str().to_owned(),
            customer_id: caller.principal.customer_id.clone(),
            ..user_info(&u)
        })
    })
}

fn server_routes(router: Router, mgr: &Arc<Manager>) -> Router {
    let svc = m::SERVER_SERVICE;
    let router = route(
        router,
        mgr,
        svc,
        "List",
        |mgr, caller, r: m::ListServersRequest| {
            server_op(mgr, "list", || {
                let page = page(r.page_size, r.page_token)?;
                if let Some(s) = &r.status {
                    check_one_of("status", s, STATUSES)?;
                }
                let filter = ServerFilter {
                    customer_id: match caller.tenant() {
                        Some(t) => Some(t.to_owned()),
                        None => r.customer_id,
                    },
                    unassigned: r.unassigned && caller.tenant().is_none(),
                    datacenter: r.datacenter,
                    status: r.status,
                    agent_id: None,
                };
                let rows = mgr
                    .store()
                    .servers(&filter, &page)
                    .map_err(|e| store_error("servers", e))?;
                let next_page_token = next_token(&rows, page.limit, |s| &s.id);
                Ok(m::ListServersResponse {
                    servers: rows.into_iter().map(api_server).collect(),
                    next_page_token,
                })
            })
        },
    );
    let router = route(router, mgr, svc, "Get", |mgr, caller, r: m::ServerRef| {
        server_op(mgr, "get", || {
            visible_server(mgr, caller, &r.server_id).map(api_server)
        })
    });
    let router = route(
        router,
        mgr,
        svc,
        "Locate",
        |mgr, caller, r: m::ServerRef| {
            server_op(mgr, "locate", || {
                let s = visible_server(mgr, caller, &r.server_id)?;
                crate::gateways::locate(mgr, &s)
            })
        },
    );
    let router = route(
        router,
        mgr,
        svc,
        "Create",
        |mgr, caller, r: m::CreateServerRequest| {
            let result = server_op(mgr, "create", || {
                caller.require_admin()?;
                check_id("serverId", &r.server_id)?;
                check_id("datacenter", &r.datacenter)?;
                if let Some(a) = &r.agent_id {
                    check_id("agentId", a)?;
                }
                check_text("name", &r.name, 200)?;
                check_one_of("protocol", &r.protocol, PROTOCOLS)?;
                if let Some(c) = &r.customer_id {
                    mgr.store()
                        .customer(c)
                        .map_err(|e| store_error("customer", e))?;
                }
                let now = unix_now() as i64;
                let s = Server {
                    id: r.server_id.clone(),
                    name: if r.name.is_empty() {
                        r.server_id.clone()
                    } else {
                        r.name.clone()
                    },
                    datacenter: r.datacenter.clone(),
                    agent_id: r.agent_id.clone(),
                    protocol: r.protocol.clone(),
                    capabilities: capabilities(&r.capabilities)?,
                    customer_id: r.customer_id.clone(),
                    status: "active".into(),
                    created_at: now,
                    updated_at: now,
                };
                mgr.store()
                    .create_server(&s)
                    .map_err(|e| store_error("server", e))?;
                audit(mgr, caller, "server.create", Some(&s), "ok");
                Ok(api_server(s))
            });
            mgr.refresh_server_gauge();
            result
        },
    );
    let router = route(
        router,
        mgr,
        svc,
        "Update",
        |mgr, caller, r: m::UpdateServerRequest| {
            let result = server_op(mgr, "update", || {
                caller.require_admin()?;
                let mut s = visible_server(mgr, caller, &r.server_id)?;
                if let Some(n) = r.name {
                    check_text("name", &n, 200)?;
                    s.name = n;
                }
                if let Some(st) = r.status {
                    check_one_of("status", &st, STATUSES)?;
                    s.status = st;
                }
                if let Some(c) = r.capabilities {
                    s.capabilities = capabilities(&c)?;
                }
                if let Some(a) = r.agent_id {
                    check_id("agentId", &a)?;
                    s.agent_id = Some(a);
                }
                s.updated_at = unix_now() as i64;
                mgr.store()
                    .update_server(&s)
                    .map_err(|e| store_error("server", e))?;
                audit(mgr, caller, "server.update", Some(&s), "ok");
                Ok(api_server(s))
            });
            mgr.refresh_server_gauge();
            result
        },
    );
    let router = route(
        router,
        mgr,
        svc,
        "Delete",
        |mgr, caller, r: m::ServerRef| {
            let result = server_op(mgr, "delete", || {
                caller.require_admin()?;
                let s = visible_server(mgr, caller, &r.server_id)?;
                mgr.store()
                    .delete_server(&s.id)
                    .map_err(|e| store_error("server", e))?;
                audit(mgr, caller, "server.delete", Some(&s), "ok");
                Ok(m::Empty {})
            });
            mgr.refresh_server_gauge();
            result
        },
    );
    route(
        router,
        mgr,
        svc,
        "Assign",
        |mgr, caller, r: m::AssignServerRequest| {
            let result = server_op(mgr, "assign", || {
                caller.require_admin()?;
                let mut s = visible_server(mgr, caller, &r.server_id)?;
                let owner = r.customer_id.filter(|c| !c.is_empty());
                if let Some(c) = &owner {
                    mgr.store()
                        .customer(c)
                        .map_err(|e| store_error("customer", e))?;
                }
                s.customer_id = owner;
                s.updated_at = unix_now() as i64;
                mgr.store()
                    .update_server(&s)
                    .map_err(|e| store_error("server", e))?;
                audit(mgr, caller, "server.assign", Some(&s), "ok");
                Ok(api_server(s))
            });
            mgr.refresh_server_gauge();
            result
        },
    )
}

fn customer_routes(router: Router, mgr: &Arc<Manager>) -> Router {
    let svc = m::CUSTOMER_SERVICE;
    let router = route(
        router,
        mgr,
        svc,
        "Create",
        |mgr, caller, r: m::CreateCustomerRequest| {
            caller.require_admin()?;
            if r.name.trim().is_empty() {
                return Err(RpcError::new(Code::InvalidArgument, "name is required"));
            }
            check_text("name", &r.name, 200)?;
            let c = Customer {
                id: conduit_auth::secret::random_id(9).map_err(|e| {
                    log::error!("random id: {e}");
                    RpcError::new(Code::Internal, "no random id")
                })?,
                name: r.name,
                created_at: unix_now() as i64,
            };
            mgr.store()
                .create_customer(&c)
                .map_err(|e| store_error("customer", e))?;
            Ok(m::Customer {
                customer_id: c.id,
                name: c.name,
            })
        },
    );
    let router = route(router, mgr, svc, "Get", |mgr, caller, r: m::CustomerRef| {
        if caller.tenant().is_some_and(|t| t != r.customer_id) {
            return Err(RpcError::new(Code::NotFound, "customer not found"));
        }
        let c = mgr
            .store()
            .customer(&r.customer_id)
            .map_err(|e| store_error("customer", e))?;
        Ok(m::Customer {
            customer_id: c.id,
            name: c.name,
        })
    });
    route(
        router,
        mgr,
        svc,
        "List",
        |mgr, caller, r: m::PageRequest| {
            let page = page(r.page_size, r.page_token)?;
            let rows = match caller.tenant() {
                Some(t) => vec![mgr
                    .store()
                    .customer(t)
                    .map_err(|e| store_error("customer", e))?],
                None => mgr
                    .store()
                    .customers(&page)
                    .map_err(|e| store_error("customers", e))?,
            };
            let next_page_token = next_token(&rows, page.limit, |c| &c.id);
            Ok(m::ListCustomersResponse {
                customers: rows
                    .into_iter()
                    .map(|c| m::Customer {
                        customer_id: c.id,
                        name: c.name,
                    })
                    .collect(),
                next_page_token,
            })
        },
    )
}

fn user_routes(router: Router, mgr: &Arc<Manager>) -> Router {
    let svc = m::USER_SERVICE;
    let router = route_hashing(
        router,
        mgr,
        svc,
        "Create",
        |mgr, caller, r: m::CreateUserRequest| {
            caller.require_admin()?;
            create_user(mgr, r)
        },
    );
    let router = route(router, mgr, svc, "Get", |mgr, caller, r: m::UserRef| {
        let u = mgr
            .store()
            .user(&r.user_id)
            .map_err(|e| store_error("user", e))?;
        let visible = match caller.tenant() {
            None => true,
            Some(t) => u.customer_id.as_deref() == Some(t),
        };
        if !visible {
            return Err(RpcError::new(Code::NotFound, "user not found"));
        }
        Ok(user_info(&u))
    });
    let router = route(router, mgr, svc, "Update", update_user);
    let router = route(router, mgr, svc, "Delete", |mgr, caller, r: m::UserRef| {
        caller.require_admin()?;
        if r.user_id == caller.principal.user_id {
            return Err(RpcError::new(
                Code::FailedPrecondition,
                "you cannot delete yourself; another admin can",
            ));
        }
        mgr.store()
            .user(&r.user_id)
            .map_err(|e| store_error("user", e))?;
        // Tokens first: once the row is gone nothing would name them.
        mgr.auth.revoke_user(&r.user_id, true)?;
        let result = mgr.store().delete_user(&r.user_id).map_err(last_admin);
        audit_user(mgr, caller, "user.delete", &r.user_id, "", &result);
        result.map(|()| m::Empty {})
    });
    let router = route_hashing(router, mgr, svc, "SetPassword", set_password);
    route(
        router,
        mgr,
        svc,
        "List",
        |mgr, caller, r: m::ListUsersRequest| {
            let page = page(r.page_size, r.page_token)?;
            let customer = match caller.tenant() {
                Some(t) => Some(t.to_owned()),
                None => r.customer_id,
            };
            let rows = mgr
                .store()
                .users(customer.as_deref(), &page)
                .map_err(|e| store_error("users", e))?;
            let next_page_token = next_token(&rows, page.limit, |u| &u.id);
            Ok(m::ListUsersResponse {
                users: rows.iter().map(user_info).collect(),
                next_page_token,
            })
        },
    )
}

/// A store refusal of a change that would leave no enabled admin, said as such.
fn last_admin(e: StoreError) -> RpcError {
    match e {
        StoreError::Conflict(m) if m.contains("last enabled admin") => RpcError::new(
            Code::FailedPrecondition,
            "the last enabled admin cannot be demoted, disabled or deleted",
        ),
        StoreError::Conflict(m) if m.contains("changed since") => RpcError::new(
            Code::FailedPrecondition,
            "the user changed meanwhile: read it again and retry",
        ),
        e => store_error("user", e),
    }
}

/// An audit record of a change to user `user_id` (`what` changed).
fn audit_user<T>(
    mgr: &Manager,
    caller: &Caller,
    action: &str,
    user_id: &str,
    what: &str,
    result: &Result<T, RpcError>,
) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(_) => "failed",
    };
    let detail = format!(
        "user {user_id}{}{what}",
        if what.is_empty() { "" } else { ": " }
    );
    audit_with(mgr, caller, action, None, outcome, detail);
}

/// UserService.Update (admins).
fn update_user(
    mgr: &Manager,
    caller: &Caller,
    r: m::UpdateUserRequest,
) -> Result<m::UserInfo, RpcError> {
    caller.require_admin()?;
    let was = mgr
        .store()
        .user(&r.user_id)
        .map_err(|e| store_error("user", e))?;
    let mut u = was.clone();
    if let Some(name) = r.name {
        check_text("name", &name, 200)?;
        u.name = name;
    }
    if r.role.is_some() || r.customer_id.is_some() {
        let role = r.role.as_deref().unwrap_or(was.role.as_str());
        // A promotion to admin leaves the customer behind unless one is named (and refused).
        let customer = match (role, r.customer_id) {
            ("admin", None) => None,
            (_, given) => given.or_else(|| was.customer_id.clone()),
        };
        (u.role, u.customer_id) = role_and_customer(mgr, role, customer)?;
    }
    match r.disabled {
        Some(true) if u.disabled_at.is_none() => u.disabled_at = Some(unix_now() as i64),
        Some(false) => u.disabled_at = None,
        _ => {}
    }
    if u == was {
        return Ok(user_info(&u));
    }
    let rights_changed = (u.role, &u.customer_id, u.disabled_at.is_some())
        != (was.role, &was.customer_id, was.disabled_at.is_some());
    let enabled_admin = |u: &User| u.role == Role::Admin && u.disabled_at.is_none();
    // Said before anything is revoked, so that a refused change logs nobody out (the store's
    // trigger is the guard against two admins racing).
    if enabled_admin(&was) && !enabled_admin(&u) {
        let admins = mgr
            .store()
            .admin_count()
            .map_err(|e| store_error("users", e))?;
        if admins <= 1 {
            return Err(last_admin(StoreError::Conflict(
                "the last enabled admin stays one".into(),
            )));
        }
    }
    // Their tokens carry the old rights: refused before the change (a failed change then logs
    // them out, never leaves old rights standing) and again after it (a token minted in
    // between is refused too). A refresh gives the new rights, except to a disabled user.
    let revoke = || match rights_changed {
        true => mgr.auth.revoke_user(&u.id, u.disabled_at.is_some()),
        false => Ok(()),
    };
    revoke()?;
    // Written only if nobody changed the row since it was read (else two admins' edits
    // would silently undo each other).
    let result = mgr.store().update_user(&was, &u).map_err(last_admin);
    let mut what = Vec::new();
    if u.name != was.name {
        what.push("name".to_owned());
    }
    if (u.role, &u.customer_id) != (was.role, &was.customer_id) {
        what.push(format!(
            "role {} of {}",
            u.role.as_str(),
            u.customer_id.as_deref().unwrap_or("no customer")
        ));
    }
    if u.disabled_at.is_some() != was.disabled_at.is_some() {
        what.push(
            if u.disabled_at.is_some() {
                "disabled"
            } else {
                "enabled"
            }
            .to_owned(),
        );
    }
    audit_user(mgr, caller, "user.update", &u.id, &what.join(", "), &result);
    result?;
    revoke()?;
    Ok(user_info(&u))
}

/// UserService.SetPassword: one's own with the current password, or anyone's as an admin.
fn set_password(
    mgr: &Manager,
    caller: &Caller,
    r: m::SetPasswordRequest,
) -> Result<m::Empty, RpcError> {
    if caller.kind != "user" {
        // A stolen automation key must not lock its owner out.
        return Err(RpcError::new(
            Code::PermissionDenied,
            "passwords are changed from a login session, not with an API key",
        ));
    }
    let target = r
        .user_id
        .unwrap_or_else(|| caller.principal.user_id.clone());
    let own = target == caller.principal.user_id;
    if !own {
        caller.require_admin()?;
    }
    let u = mgr
        .store()
        .user(&target)
        .map_err(|e| store_error("user", e))?;
    if own {
        // Guesses of the current password with a stolen token count like failed logins.
        let throttle = &mgr.auth.throttle;
        if let Err(t) = throttle.check(mgr.store(), &u.email, caller.addr, throttle::unix_now_ms())
        {
            return Err(crate::auth::throttle_refusal(t));
        }
        let current = r.current_password.as_deref().unwrap_or_default();
        let stored = mgr
            .store()
            .user_by_email(&u.email)
            .map_err(|e| store_error("user", e))?;
        if current.is_empty() || !mgr.auth.passwords.verify(&stored.password_hash, current) {
            throttle
                .failed(mgr.store(), &u.email, caller.addr, throttle::unix_now_ms())
                .map_err(|e| store_error("user", e))?;
            let refused = Err(RpcError::new(
                Code::PermissionDenied,
                "currentPassword: not the current password",
            ));
            audit_user(
                mgr,
                caller,
                "user.password",
                &u.id,
                "wrong current password",
                &refused,
            );
            return refused;
        }
    }
    let hash = mgr
        .auth
        .passwords
        .hash(&r.new_password)
        .map_err(|e| RpcError::new(Code::InvalidArgument, format!("newPassword: {e}")))?;
    // Sessions end before the change and again after it, as in Update.
    mgr.auth.revoke_user(&u.id, true)?;
    let result = mgr
        .store()
        .set_password_hash(&u.id, &hash)
        .map_err(|e| store_error("user", e));
    audit_user(mgr, caller, "user.password", &u.id, "", &result);
    result?;
    mgr.auth.revoke_user(&u.id, true)?;
    Ok(m::Empty {})
}

/// A role and the customer it needs, checked: an admin belongs to no customer, an operator
/// or viewer to one that exists.
fn role_and_customer(
    mgr: &Manager,
    role: &str,
    customer_id: Option<String>,
) -> Result<(Role, Option<String>), RpcError> {
    let role = Role::parse(role).ok_or_else(|| {
        RpcError::new(
            Code::InvalidArgument,
            "role: one of admin, operator, viewer",
        )
    })?;
    let customer_id = customer_id.filter(|c| !c.is_empty());
    match (role, &customer_id) {
        (Role::Admin, Some(_)) => {
            return Err(RpcError::new(
                Code::InvalidArgument,
                "an admin belongs to no customer",
            ))
        }
        (Role::Operator | Role::Viewer, None) => {
            return Err(RpcError::new(
                Code::InvalidArgument,
                "an operator or viewer needs a customerId",
            ))
        }
        (_, Some(c)) => {
            mgr.store()
                .customer(c)
                .map_err(|e| store_error("customer", e))?;
        }
        _ => {}
    }
    Ok((role, customer_id))
}

/// Creates a user (admins through the API, and `init`/demo set-up).
pub fn create_user(mgr: &Manager, r: m::CreateUserRequest) -> Result<m::UserInfo, RpcError> {
    check_email(&r.email)?;
    check_text("name", &r.name, 200)?;
    let (role, customer_id) = role_and_customer(mgr, &r.role, r.customer_id)?;
    let hash = mgr
        .auth
        .passwords
        .hash(&r.password)
        .map_err(|e| RpcError::new(Code::InvalidArgument, format!("password: {e}")))?;
    let u = User {
        id: conduit_auth::secret::random_id(9).map_err(|e| {
            log::error!("random id: {e}");
            RpcError::new(Code::Internal, "no random id")
        })?,
        // One form for the unique index, the login lookup and the throttle alike.
        email: crate::auth::normalize_email(&r.email),
        name: r.name,
        role,
        customer_id,
        created_at: unix_now() as i64,
        disabled_at: None,
    };
    mgr.store().create_user(&u, &hash).map_err(|e| match e {
        StoreError::Conflict(_) => RpcError::new(Code::AlreadyExists, "that e-mail is taken"),
        e => store_error("user", e),
    })?;
    Ok(user_info(&u))
}

fn api_key_routes(router: Router, mgr: &Arc<Manager>) -> Router {
    let svc = m::API_KEY_SERVICE;
    let router = route(
        router,
        mgr,
        svc,
        "Create",
        |mgr, caller, r: m::CreateApiKeyRequest| {
            // Only a login session mints keys: a stolen key or its token cannot make itself
            // a successor that outlives its revocation.
            if caller.kind != "user" {
                return Err(RpcError::new(
                    Code::PermissionDenied,
                    "API keys are created from a login session, not with an API key",
                ));
            }
            check_text("name", &r.name, 200)?;
            let role = match r.role.as_deref() {
                None => caller.principal.role,
                Some(s) => Role::parse(s).ok_or_else(|| {
                    RpcError::new(
                        Code::InvalidArgument,
                        "role: one of admin, operator, viewer",
                    )
                })?,
            };
            if role_rank(role) > role_rank(caller.principal.role) {
                return Err(RpcError::new(
                    Code::PermissionDenied,
                    "an API key cannot have more rights than its creator",
                ));
            }
            // Non-admin keys act for one customer: the caller's, or, for an admin, the one named.
            let customer_id = match (role, caller.principal.role) {
                (Role::Admin, _) => None,
                (_, Role::Admin) => {
                    let c = r
                        .customer_id
                        .clone()
                        .filter(|c| !c.is_empty())
                        .ok_or_else(|| {
                            RpcError::new(
                                Code::InvalidArgument,
                                "an operator or viewer key needs a customerId",
                            )
                        })?;
                    mgr.store()
                        .customer(&c)
                        .map_err(|e| store_error("customer", e))?;
                    Some(c)
                }
                _ => caller.principal.customer_id.clone(),
            };
            let secret = conduit_auth::secret::Secret::generate(API_KEY_PREFIX).map_err(|e| {
                log::error!("random key: {e}");
                RpcError::new(Code::Internal, "no random key")
            })?;
            let key = ApiKey {
                id: secret.id().to_owned(),
                secret_hash: conduit_auth::secret::hash(secret.secret()).to_vec(),
                user_id: caller.principal.user_id.clone(),
                customer_id,
                role,
                name: r.name,
                created_at: unix_now() as i64,
                revoked_at: None,
            };
            mgr.store()
                .insert_api_key(&key)
                .map_err(|e| store_error("API key", e))?;
            Ok(m::CreateApiKeyResponse {
                api_key: secret.to_string(),
                key: api_key_info(&key),
            })
        },
    );
    let router = route(router, mgr, svc, "List", |mgr, caller, _: m::Empty| {
        let keys = mgr
            .store()
            .api_keys(&caller.principal.user_id)
            .map_err(|e| store_error("API keys", e))?;
        Ok(m::ListApiKeysResponse {
            keys: keys.iter().map(api_key_info).collect(),
        })
    });
    route(
        router,
        mgr,
        svc,
        "Revoke",
        |mgr, caller, r: m::RevokeApiKeyRequest| {
            let key = mgr
                .store()
                .api_key(&r.key_id)
                .map_err(|e| store_error("API key", e))?;
            let own = key.user_id == caller.principal.user_id;
            if !own && caller.principal.role != Role::Admin {
                return Err(RpcError::new(Code::NotFound, "API key not found"));
            }
            let now = unix_now();
            mgr.store()
                .revoke_api_key(&key.id, now as i64)
                .map_err(|e| store_error("API key", e))?;
            mgr.auth
                .revoke_session(&crate::auth::api_key_session(&key.id), now)?;
            Ok(m::Empty {})
        },
    )
}

fn audit_routes(router: Router, mgr: &Arc<Manager>) -> Router {
    route(
        router,
        mgr,
        m::AUDIT_SERVICE,
        "List",
        |mgr, caller, r: m::ListAuditRequest| {
            let page = page(r.page_size, None)?;
            let rows = mgr
                .store()
                .audit(caller.tenant(), r.after_seq, page.limit)
                .map_err(|e| store_error("audit", e))?;
            Ok(m::ListAuditResponse {
                records: rows
                    .into_iter()
                    .map(|a| m::AuditRecord {
                        seq: a.seq,
                        at: a.at,
                        actor: a.actor,
                        actor_kind: a.actor_kind,
                        action: a.action,
                        server_id: a.server_id,
                        result: a.result,
                        detail: a.detail,
                    })
                    .collect(),
            })
        },
    )
}

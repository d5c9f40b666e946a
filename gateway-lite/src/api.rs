//! `conduit.gateway.v1.GatewayService` for users: every call's bearer token checked offline
//! (`trust.rs`), the server's ownership and the caller's role decided from the manager's
//! inventory, then the operation routed over the uplink to the agent serving the server.
//!
//! Failures say what happened: `unavailable` (no connected agent serves the server here),
//! `deadline_exceeded` (no answer within `--operation-timeout`), `aborted` (the uplink dropped
//! with the operation in flight: the outcome is unknown, and the error names the operation id
//! that the audit record carries; nothing is re-sent), or the agent's own answer. Power
//! actions, boot changes and event-log clears are audited durably before the answer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use conduit_api::agent::{PowerActionRequest, ServerRequest, SetBootDeviceRequest};
use conduit_api::gateway::{self as gw, GATEWAY_SERVICE};
use conduit_api::manager::GatewayAuditRecord;
use conduit_api::uplink::Method as Op;
use conduit_http::router::Router;
use conduit_http::rpc::{bearer, decode_body, refused, unary_raw, Code, RpcError, RpcFuture};
use conduit_http::Request;
use conduit_metrics::labels::{ErrorType, Operation, OperationStatus, Status};

use crate::agents::{Agents, Failure, Status as AgentStatus};
use crate::audit::Outbox;
use crate::metrics::GatewayMetrics;
use crate::trust::{Caller, Trust};
use crate::web_origins::WebOrigins;

/// What the API needs.
#[derive(Debug)]
pub struct Api {
    /// Decisions.
    pub trust: Arc<Trust>,
    /// Routing.
    pub agents: Arc<Agents>,
    /// Metrics.
    pub metrics: Arc<GatewayMetrics>,
    /// Audit.
    pub outbox: Arc<Outbox>,
    /// How long a routed operation may take.
    pub timeout: Duration,
}

/// Seconds since the epoch (token times, audit records).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

const POWER_ACTIONS: &[&str] = &["on", "off", "cycle", "reset", "soft", "diag"];

type Raw = Box<serde_json::value::RawValue>;

/// The `operation` label of a call (the agent's words); `action` is a checked power action.
fn operation(op: Op, action: &str) -> &'static str {
    match op {
        Op::GetServer => "get_server",
        Op::PowerStatus => "power_status",
        Op::PowerAction => match action {
            "on" => "power_on",
            "off" => "power_off",
            "cycle" => "power_cycle",
            "reset" => "power_reset",
            "soft" => "power_soft",
            _ => "power_diag",
        },
        Op::GetSensors => "sensors",
        Op::GetBootDevice => "boot_get",
        Op::SetBootDevice => "boot_set",
        Op::GetEventLog => "sel_read",
        Op::ClearEventLog => "sel_clear",
        Op::OpenConsole => "console_open",
        Op::Unknown => "unknown",
    }
}

/// The audit action of a state change.
fn audit_action(op: Op, action: &str) -> String {
    match op {
        Op::PowerAction => format!("power.{action}"),
        Op::SetBootDevice => "boot.set".into(),
        _ => "sel.clear".into(),
    }
}

/// A request checked as the agent API's type for `op`: the server, what it asks (a power
/// action or boot device, for labels and audit) and the body to forward, re-encoded from the
/// typed value so that only known fields travel.
struct Checked {
    server_id: String,
    what: String,
    body: Raw,
}

fn check_body(op: Op, req: &Request) -> Result<Checked, RpcError> {
    fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(
        req: &Request,
    ) -> Result<(T, Raw), RpcError> {
        let t: T = decode_body(req)?;
        let v = serde_json::value::to_raw_value(&t)
            .map_err(|e| RpcError::new(Code::Internal, e.to_string()))?;
        Ok((t, v))
    }
    let (id, what, body) = match op {
        Op::PowerAction => {
            let (t, v) = typed::<PowerActionRequest>(req)?;
            if !POWER_ACTIONS.contains(&t.action.as_str()) {
                return Err(RpcError::new(
                    Code::InvalidArgument,
                    format!("action must be one of {}", POWER_ACTIONS.join(", ")),
                ));
            }
            (t.server_id, t.action, v)
        }
        Op::SetBootDevice => {
            let (t, v) = typed::<SetBootDeviceRequest>(req)?;
            (t.server_id, t.device, v)
        }
        _ => {
            let (t, v) = typed::<ServerRequest>(req)?;
            (t.server_id, String::new(), v)
        }
    };
    if !conduit_api::valid_id(&id) {
        return Err(RpcError::new(
            Code::InvalidArgument,
            "serverId: 1–64 of letters, digits and . - _ :",
        ));
    }
    Ok(Checked {
        server_id: id,
        what,
        body,
    })
}

/// The caller of a user request, its token checked offline and counted in
/// `gateway_token_validations_total`.
pub(crate) fn caller(
    trust: &Trust,
    metrics: &GatewayMetrics,
    req: &Request,
) -> Result<Caller, RpcError> {
    let result = trust.caller(bearer(req), unix_now());
    let status = match &result {
        Ok(_) => "valid",
        Err((_, s)) => s,
    };
    metrics.token_validations.inc(&Status { status });
    result.map_err(|(e, _)| e)
}

impl Api {
    fn caller(&self, req: &Request) -> Result<Caller, RpcError> {
        caller(&self.trust, &self.metrics, req)
    }

    fn list(&self, req: &Request) -> Result<gw::ListServersResponse, RpcError> {
        let caller = self.caller(req)?;
        let _: conduit_api::agent::ListServersRequest = decode_body(req)?;
        let servers = self
            .trust
            .visible(&caller)
            .into_iter()
            .map(|(id, owned)| {
                let reach = self.agents.reach(&id, owned.agent_id.as_deref());
                gw::Server {
                    state: match reach.as_ref().map(|r| r.status) {
                        Some(AgentStatus::Connected) => "online",
                        Some(AgentStatus::Stale) => "stale",
                        Some(AgentStatus::Disconnected) => "offline",
                        None => "unreachable",
                    }
                    .into(),
                    agent_id: reach.as_ref().map(|r| r.agent_id.clone()),
                    protocol: reach.map(|r| r.protocol),
                    server_id: id,
                    name: owned.name,
                }
            })
            .collect();
        Ok(gw::ListServersResponse { servers })
    }

    fn proxy_error(&self, error_type: &'static str) {
        self.metrics.proxy_errors.inc(&ErrorType { error_type });
    }

    /// Checks and routes one operation; the answer comes later.
    fn operate(self: &Arc<Self>, op: Op, req: &Request) -> RpcFuture<Raw> {
        let checked = self.caller(req).and_then(|caller| {
            let checked = check_body(op, req)?;
            self.trust
                .authorize(&caller, &checked.server_id, op.changes_state())?;
            Ok((caller, checked))
        });
        let (
            caller,
            Checked {
                server_id,
                what,
                body,
            },
        ) = match checked {
            Ok(c) => c,
            Err(e) => return refused(e),
        };
        let operation = operation(op, &what);
        let assigned = self.trust.agent_of(&server_id);
        let routed = self.agents.route(&server_id, assigned.as_deref());
        let me = self.clone();
        Box::pin(async move {
            let start = Instant::now();
            let op_id = conduit_auth::random_id(8).unwrap_or_else(|_| "unnumbered".into());
            let result = match routed {
                Err(e) => {
                    me.proxy_error("agent_unavailable");
                    Err(e)
                }
                Ok((agent_id, link)) => {
                    let answer = link.call(op, body, me.timeout).await;
                    me.answer(answer, &agent_id, &op_id, op.changes_state())
                }
            };
            let code = match &result {
                Ok(_) => Code::Ok,
                Err(e) => e.code,
            };
            me.metrics.bmc_operations.inc(&OperationStatus {
                operation,
                status: code.as_str(),
            });
            me.metrics
                .bmc_operation_duration
                .observe(&Operation { operation }, start.elapsed().as_secs_f64());
            if op.changes_state() {
                let record = GatewayAuditRecord {
                    at: unix_now() as i64,
                    actor: caller.claims.sub.clone(),
                    action: audit_action(op, &what),
                    server_id: server_id.clone(),
                    result: code.as_str().into(),
                    detail: match op {
                        Op::SetBootDevice => format!("operation {op_id}, device {what}"),
                        _ => format!("operation {op_id}"),
                    },
                };
                let outbox = me.outbox.clone();
                if let Err(e) = smol::unblock(move || outbox.append(&record)).await {
                    // The operation happened; its record could not be kept. Say so loudly.
                    log::error!(
                        "audit outbox: {e}: {} {} by {} lost",
                        op.as_str(),
                        server_id,
                        caller.claims.sub
                    );
                }
            }
            result
        })
    }

    fn answer(
        &self,
        answer: Result<conduit_api::uplink::Reply, Failure>,
        agent_id: &str,
        op_id: &str,
        changes_state: bool,
    ) -> Result<Raw, RpcError> {
        match answer {
            Ok(reply) => match (reply.result, reply.error) {
                (Some(v), None) => Ok(v),
                (_, Some(e)) => Err(RpcError::new(
                    Code::parse(&e.code).unwrap_or(Code::Internal),
                    e.message,
                )),
                (None, None) => {
                    self.proxy_error("bad_reply");
                    Err(RpcError::new(
                        Code::Internal,
                        format!("agent {agent_id} answered nothing"),
                    ))
                }
            },
            Err(Failure::Dropped) => {
                self.proxy_error("link_dropped");
                Err(RpcError::new(
                    Code::Aborted,
                    format!(
                        "outcome unknown: the uplink to agent {agent_id} dropped while operation {op_id} was in flight; \
                         it may or may not have run. Check the server's state before retrying (the audit log has {op_id})"
                    ),
                ))
            }
            Err(Failure::Timeout) => {
                self.proxy_error("timeout");
                // A state change that timed out may still run (or have run) at the BMC.
                let outcome = if changes_state {
                    "; outcome unknown: it may still complete. Check the server's state before retrying"
                } else {
                    ""
                };
                Err(RpcError::new(
                    Code::DeadlineExceeded,
                    format!(
                        "agent {agent_id} did not answer operation {op_id} within {:?}{outcome}",
                        self.timeout
                    ),
                ))
            }
            Err(Failure::Closed) => {
                self.proxy_error("link_dropped");
                Err(RpcError::new(
                    Code::Unavailable,
                    format!("the uplink to agent {agent_id} ended just now: operation {op_id} was not sent"),
                ))
            }
            Err(Failure::Busy) => {
                self.proxy_error("queue_full");
                Err(RpcError::exhausted(
                    format!("the uplink to agent {agent_id} is saturated"),
                    Duration::from_secs(1),
                ))
            }
        }
    }
}

/// Adds the GatewayService routes.
pub fn routes(router: Router, api: &Arc<Api>, origins: &Arc<WebOrigins>) -> Router {
    let rpc = api.metrics.rpc.clone();
    let list = api.clone();
    let mut router = origins.route(
        router,
        "/conduit.gateway.v1.GatewayService/ListServers",
        unary_raw(GATEWAY_SERVICE, "ListServers", rpc.clone(), move |req| {
            let r = list.list(req);
            Box::pin(async move { r })
        }),
    );
    const ROUTED: [(Op, &str); 8] = [
        (
            Op::GetServer,
            "/conduit.gateway.v1.GatewayService/GetServer",
        ),
        (
            Op::PowerStatus,
            "/conduit.gateway.v1.GatewayService/PowerStatus",
        ),
        (
            Op::PowerAction,
            "/conduit.gateway.v1.GatewayService/PowerAction",
        ),
        (
            Op::GetSensors,
            "/conduit.gateway.v1.GatewayService/GetSensors",
        ),
        (
            Op::GetBootDevice,
            "/conduit.gateway.v1.GatewayService/GetBootDevice",
        ),
        (
            Op::SetBootDevice,
            "/conduit.gateway.v1.GatewayService/SetBootDevice",
        ),
        (
            Op::GetEventLog,
            "/conduit.gateway.v1.GatewayService/GetEventLog",
        ),
        (
            Op::ClearEventLog,
            "/conduit.gateway.v1.GatewayService/ClearEventLog",
        ),
    ];
    for (op, path) in ROUTED {
        let api = api.clone();
        router = origins.route(
            router,
            path,
            unary_raw(GATEWAY_SERVICE, op.as_str(), rpc.clone(), move |req| {
                api.operate(op, req)
            }),
        );
    }
    router
}

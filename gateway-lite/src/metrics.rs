//! The gateway's RFD 021 catalog (see `docs/metrics.md`).
//!
//! HTTP metrics come from the shared middleware; the families here are driven by agent uplinks
//! (`uplink.rs`, `agents.rs`), operation routing (`api.rs`) and console brokering
//! (`consoles.rs`).

use conduit_http::middleware::RpcMetrics;
use conduit_metrics::age::Age;
use conduit_metrics::buckets;
use conduit_metrics::catalog::{Buckets, CappedFamily, CatalogBuilder};
use conduit_metrics::labels::{DatacenterStatus, ErrorType, Operation, OperationStatus, Status};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

/// `{agent_id, status}` of heartbeats.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HeartbeatLabels {
    /// Agent id.
    pub agent_id: String,
    /// Heartbeat outcome.
    pub status: &'static str,
}

/// `{agent_id}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AgentId {
    /// Agent id.
    pub agent_id: String,
}

/// `{type, customer_id}` of active sessions.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SessionLabels {
    /// `sol` or `vnc`.
    pub r#type: &'static str,
    /// Customer owning the session.
    pub customer_id: String,
}

/// `{operation, type, status}` of session operations.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SessionOperation {
    /// create, close, takeover...
    pub operation: &'static str,
    /// `sol` or `vnc`.
    pub r#type: &'static str,
    /// Outcome.
    pub status: &'static str,
}

/// `{type}` of sessions and WebSockets.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    /// `sol`, `vnc` or `uplink`.
    pub r#type: &'static str,
}

/// `{type, direction}` of WebSocket bytes and messages.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Flow {
    /// `sol`, `vnc` or `uplink`.
    pub r#type: &'static str,
    /// `inbound` or `outbound`.
    pub direction: &'static str,
}

/// `{type, error_type}` of WebSocket errors.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebSocketError {
    /// `sol`, `vnc` or `uplink`.
    pub r#type: &'static str,
    /// Error kind.
    pub error_type: &'static str,
}

/// `{scope}` of the console caps: `user`, `server`, `total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsoleScope {
    /// What the cap counts per.
    pub scope: &'static str,
}

/// Every gateway metric beyond the HTTP middleware's.
#[derive(Debug)]
pub struct GatewayMetrics {
    /// `gateway_agents_total` (a gauge, named as the RFD names it)
    pub agents: CappedFamily<DatacenterStatus, Gauge>,
    /// `gateway_agent_registrations_total`
    pub agent_registrations: CappedFamily<DatacenterStatus, Counter>,
    /// `gateway_agent_heartbeats_total`
    pub agent_heartbeats: CappedFamily<HeartbeatLabels, Counter>,
    /// `gateway_agent_last_heartbeat_seconds`, computed at scrape time
    pub agent_last_heartbeat: CappedFamily<AgentId, Age>,
    /// `gateway_sessions_total` (a gauge)
    pub sessions: CappedFamily<SessionLabels, Gauge>,
    /// `gateway_session_operations_total`
    pub session_operations: CappedFamily<SessionOperation, Counter>,
    /// `gateway_session_duration_seconds`
    pub session_duration: CappedFamily<TypeLabel, Histogram, Buckets>,
    /// `gateway_session_creation_duration_seconds`
    pub session_creation_duration: CappedFamily<TypeLabel, Histogram, Buckets>,
    /// `gateway_bmc_operations_total`
    pub bmc_operations: CappedFamily<OperationStatus, Counter>,
    /// `gateway_bmc_operation_duration_seconds`
    pub bmc_operation_duration: CappedFamily<Operation, Histogram, Buckets>,
    /// `gateway_proxy_errors_total`
    pub proxy_errors: CappedFamily<ErrorType, Counter>,
    /// `gateway_websocket_connections_total` (a gauge)
    pub websocket_connections: CappedFamily<TypeLabel, Gauge>,
    /// `gateway_websocket_bytes_transmitted_total`
    pub websocket_bytes: CappedFamily<Flow, Counter>,
    /// `gateway_websocket_messages_total`
    pub websocket_messages: CappedFamily<Flow, Counter>,
    /// `gateway_websocket_errors_total`
    pub websocket_errors: CappedFamily<WebSocketError, Counter>,
    /// `gateway_rpc_calls_total`, `gateway_rpc_call_duration_seconds`
    pub rpc: std::sync::Arc<RpcMetrics>,
    /// Addition: user tokens checked at this gateway.
    pub token_validations: CappedFamily<Status, Counter>,
    /// Addition: the console caps.
    pub console_session_limit: CappedFamily<ConsoleScope, Gauge>,
    /// Addition: sessions of the busiest user and server, and in all.
    pub console_sessions_busiest: CappedFamily<ConsoleScope, Gauge>,
}

/// Agents the per-agent families are sized for unless `--agent-series-limit` says otherwise.
pub const DEFAULT_AGENTS: usize = 10_000;

impl GatewayMetrics {
    /// Registers the catalog under `gateway_`, the per-agent families sized for
    /// [`DEFAULT_AGENTS`].
    pub fn register(b: &mut CatalogBuilder) -> Self {
        Self::register_for(b, DEFAULT_AGENTS)
    }

    /// Registers the catalog, the per-agent families (`agent_heartbeats_total`: two statuses
    /// per agent; `agent_last_heartbeat_seconds`: one) capped for `agents` agents rather than
    /// by the component's `--series-limit`.
    pub fn register_for(b: &mut CatalogBuilder, agents: usize) -> Self {
        GatewayMetrics {
            agents: b.gauge_family("agents_total", "Connected agents"),
            agent_registrations: b.counter_family("agent_registrations", "Registration attempts"),
            agent_heartbeats: b
                .counter_family("agent_heartbeats", "Heartbeats received")
                .with_limit(2 * agents),
            agent_last_heartbeat: b
                .age_family(
                    "agent_last_heartbeat_seconds",
                    "Seconds since last heartbeat",
                )
                .with_limit(agents),
            sessions: b.gauge_family("sessions_total", "Active console sessions"),
            session_operations: b.counter_family("session_operations", "Session operations"),
            session_duration: b.histogram_family(
                "session_duration_seconds",
                "Session lifetime",
                buckets::SESSION,
            ),
            session_creation_duration: b.histogram_family(
                "session_creation_duration_seconds",
                "Creation latency",
                buckets::BMC,
            ),
            bmc_operations: b.counter_family("bmc_operations", "BMC operations proxied"),
            bmc_operation_duration: b.histogram_family(
                "bmc_operation_duration_seconds",
                "Operation latency",
                buckets::BMC,
            ),
            proxy_errors: b.counter_family("proxy_errors", "Proxy errors"),
            websocket_connections: b.gauge_family(
                "websocket_connections_total",
                "Active WebSocket connections",
            ),
            websocket_bytes: b.counter_family("websocket_bytes_transmitted", "Bytes transmitted"),
            websocket_messages: b.counter_family("websocket_messages", "Messages"),
            websocket_errors: b.counter_family("websocket_errors", "WebSocket errors"),
            rpc: std::sync::Arc::new(RpcMetrics::register(b)),
            token_validations: b.counter_family("token_validations", "User token validations"),
            console_session_limit: b.gauge_family(
                "console_session_limit",
                "Console sessions allowed at once, per user, per server and in all",
            ),
            console_sessions_busiest: b.gauge_family(
                "console_sessions_busiest",
                "Console sessions now of the busiest user, of the busiest server, and in all",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn catalog_matches_the_reference() {
        // One sample in every family, so that label names and buckets are visible.
        let problems = conduit_reference::check_component_catalog(
            include_str!("../../docs/metrics.md"),
            "gateway",
            GatewayMetrics::register,
            |m| {
                let dc = || "dc1".to_owned();
                m.token_validations.inc(&Status { status: "valid" });
                let scope = ConsoleScope { scope: "user" };
                m.console_session_limit.with(&scope, |g| g.set(4));
                m.console_sessions_busiest.with(&scope, |g| g.set(1));
                m.agents.with(
                    &DatacenterStatus {
                        datacenter: dc(),
                        status: "up",
                    },
                    |g| g.set(1),
                );
                m.agent_registrations.inc(&DatacenterStatus {
                    datacenter: dc(),
                    status: "ok",
                });
                m.agent_heartbeats.inc(&HeartbeatLabels {
                    agent_id: "a".into(),
                    status: "ok",
                });
                m.agent_last_heartbeat.with(
                    &AgentId {
                        agent_id: "a".into(),
                    },
                    |a| a.reset(),
                );
                m.sessions.with(
                    &SessionLabels {
                        r#type: "sol",
                        customer_id: "c".into(),
                    },
                    |g| g.set(1),
                );
                m.session_operations.inc(&SessionOperation {
                    operation: "create",
                    r#type: "sol",
                    status: "ok",
                });
                m.session_duration
                    .observe(&TypeLabel { r#type: "sol" }, 61.0);
                m.session_creation_duration
                    .observe(&TypeLabel { r#type: "sol" }, 0.2);
                m.bmc_operations.inc(&OperationStatus {
                    operation: "power_on",
                    status: "ok",
                });
                m.bmc_operation_duration.observe(
                    &Operation {
                        operation: "power_on",
                    },
                    0.2,
                );
                m.proxy_errors.inc(&ErrorType {
                    error_type: "agent_unavailable",
                });
                m.websocket_connections
                    .with(&TypeLabel { r#type: "vnc" }, |g| g.set(1));
                let flow = Flow {
                    r#type: "vnc",
                    direction: "inbound",
                };
                m.websocket_bytes.inc_by(&flow, 10);
                m.websocket_messages.inc(&flow);
                m.websocket_errors.inc(&WebSocketError {
                    r#type: "vnc",
                    error_type: "protocol",
                });
                m.rpc.observe(
                    "conduit.gateway.v1.GatewayService",
                    "PowerAction",
                    "ok",
                    Duration::ZERO,
                );
            },
        );
        assert!(problems.is_empty(), "{problems:#?}");
    }
}

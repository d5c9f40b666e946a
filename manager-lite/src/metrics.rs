//! The manager's RFD 021 catalog (see `docs/metrics.md`).
//!
//! HTTP metrics come from the shared middleware; the families here are driven by the API and
//! store that later issues build. Until then they expose `# HELP`/`# TYPE` only.

use conduit_http::middleware::RpcMetrics;
use conduit_metrics::buckets;
use conduit_metrics::catalog::{Buckets, CappedFamily, CatalogBuilder};
use conduit_metrics::labels::{DatacenterStatus, Operation, OperationStatus, Status};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

/// `{status, method}` of authentication requests.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthLabels {
    /// Outcome.
    pub status: &'static str,
    /// Authentication method (password, token refresh).
    pub method: &'static str,
}

/// `{method}` of authentication durations.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthMethod {
    /// Authentication method.
    pub method: &'static str,
}

/// `{customer_id, datacenter, status}` of registered servers.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerLabels {
    /// Customer owning the servers.
    pub customer_id: String,
    /// Datacenter.
    pub datacenter: String,
    /// Server status.
    pub status: &'static str,
}

/// `{operation, table, status}` of database queries.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryLabels {
    /// select, insert, update, delete.
    pub operation: &'static str,
    /// Table.
    pub table: &'static str,
    /// Outcome.
    pub status: &'static str,
}

/// `{operation, table}` of database query durations.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueryKind {
    /// select, insert, update, delete.
    pub operation: &'static str,
    /// Table.
    pub table: &'static str,
}

/// Every manager metric beyond the HTTP middleware's.
#[derive(Debug)]
pub struct ManagerMetrics {
    /// `manager_auth_requests_total`
    pub auth_requests: CappedFamily<AuthLabels, Counter>,
    /// `manager_auth_duration_seconds`
    pub auth_duration: CappedFamily<AuthMethod, Histogram, Buckets>,
    /// `manager_active_tokens`
    pub active_tokens: Gauge,
    /// `manager_token_validations_total`
    pub token_validations: CappedFamily<Status, Counter>,
    /// `manager_servers_total` (a gauge, named as the RFD names it)
    pub servers: CappedFamily<ServerLabels, Gauge>,
    /// `manager_server_operations_total`
    pub server_operations: CappedFamily<OperationStatus, Counter>,
    /// `manager_server_operation_duration_seconds`
    pub server_operation_duration: CappedFamily<Operation, Histogram, Buckets>,
    /// `manager_gateways_total` (a gauge)
    pub gateways: CappedFamily<DatacenterStatus, Gauge>,
    /// `manager_gateway_registrations_total`
    pub gateway_registrations: CappedFamily<Status, Counter>,
    /// `manager_db_queries_total`
    pub db_queries: CappedFamily<QueryLabels, Counter>,
    /// `manager_db_query_duration_seconds`
    pub db_query_duration: CappedFamily<QueryKind, Histogram, Buckets>,
    /// `manager_db_connections`
    pub db_connections: Gauge,
    /// `manager_rpc_calls_total`, `manager_rpc_call_duration_seconds`
    pub rpc: std::sync::Arc<RpcMetrics>,
}

impl ManagerMetrics {
    /// Registers the catalog under `manager_`.
    pub fn register(b: &mut CatalogBuilder) -> Self {
        ManagerMetrics {
            auth_requests: b.counter_family("auth_requests", "Authentication requests"),
            auth_duration: b.histogram_family(
                "auth_duration_seconds",
                "Authentication duration",
                buckets::HTTP_RPC,
            ),
            active_tokens: b.gauge("active_tokens", "Active JWT tokens"),
            token_validations: b.counter_family("token_validations", "Token validations"),
            servers: b.gauge_family("servers_total", "Registered BMC servers"),
            server_operations: b.counter_family("server_operations", "Server CRUD operations"),
            server_operation_duration: b.histogram_family(
                "server_operation_duration_seconds",
                "Operation latency",
                buckets::HTTP_RPC,
            ),
            gateways: b.gauge_family("gateways_total", "Registered gateways"),
            gateway_registrations: b
                .counter_family("gateway_registrations", "Gateway registrations"),
            db_queries: b.counter_family("db_queries", "Database queries"),
            db_query_duration: b.histogram_family(
                "db_query_duration_seconds",
                "Query latency",
                buckets::DB,
            ),
            db_connections: b.gauge("db_connections", "Active database connections"),
            rpc: std::sync::Arc::new(RpcMetrics::register(b)),
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
            "manager",
            ManagerMetrics::register,
            |m| {
                m.auth_requests.inc(&AuthLabels {
                    status: "success",
                    method: "password",
                });
                m.auth_duration
                    .observe(&AuthMethod { method: "password" }, 0.1);
                m.token_validations.inc(&Status { status: "valid" });
                m.servers.with(
                    &ServerLabels {
                        customer_id: "c".into(),
                        datacenter: "d".into(),
                        status: "active",
                    },
                    |g| g.set(1),
                );
                m.server_operations.inc(&OperationStatus {
                    operation: "create",
                    status: "ok",
                });
                m.server_operation_duration.observe(
                    &Operation {
                        operation: "create",
                    },
                    0.1,
                );
                m.gateways.with(
                    &DatacenterStatus {
                        datacenter: "d".into(),
                        status: "up",
                    },
                    |g| g.set(1),
                );
                m.gateway_registrations.inc(&Status { status: "ok" });
                m.db_queries.inc(&QueryLabels {
                    operation: "select",
                    table: "servers",
                    status: "ok",
                });
                m.db_query_duration.observe(
                    &QueryKind {
                        operation: "select",
                        table: "servers",
                    },
                    0.1,
                );
                m.rpc.observe(
                    "conduit.manager.v1.AuthService",
                    "Login",
                    "ok",
                    Duration::ZERO,
                );
            },
        );
        assert!(problems.is_empty(), "{problems:#?}");
    }
}

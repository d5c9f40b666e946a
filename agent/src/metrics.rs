//! The agent's RFD 021 catalog (see `docs/metrics.md`).
//!
//! HTTP metrics come from the shared middleware. Discovery and BMC families are driven by the
//! BMC layer (issue 4), console families by the SOL/VNC proxies (issue 6), uplink families by
//! the gateway uplink; until then they expose `# HELP`/`# TYPE` only.

use conduit_http::middleware::RpcMetrics;
use conduit_metrics::buckets;
use conduit_metrics::catalog::{Buckets, CappedFamily, CatalogBuilder, FloatGauge};
use conduit_metrics::labels::{Direction, ErrorType, ServerId, Status};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

/// `{bmc_type}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BmcType {
    /// `ipmi`, `redfish` or `both`.
    pub bmc_type: &'static str,
}

/// `{bmc_type, operation, status}` of BMC operations.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BmcOperation {
    /// `ipmi` or `redfish`.
    pub bmc_type: &'static str,
    /// Operation, e.g. `power_status`.
    pub operation: &'static str,
    /// Outcome.
    pub status: &'static str,
}

/// `{bmc_type, operation}` of BMC operation durations.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BmcOperationKind {
    /// `ipmi` or `redfish`.
    pub bmc_type: &'static str,
    /// Operation.
    pub operation: &'static str,
}

/// `{bmc_type, error_type}` of BMC connection errors.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BmcError {
    /// `ipmi` or `redfish`.
    pub bmc_type: &'static str,
    /// Error kind, e.g. `timeout`, `auth_failed`.
    pub error_type: &'static str,
}

/// `{server_id, status}` of SOL reconnection attempts.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reconnection {
    /// Server id.
    pub server_id: String,
    /// Outcome.
    pub status: &'static str,
}

/// Every agent metric beyond the HTTP middleware's.
#[derive(Debug)]
pub struct AgentMetrics {
    /// `agent_discovery_cycles_total`
    pub discovery_cycles: CappedFamily<Status, Counter>,
    /// `agent_discovery_duration_seconds`
    pub discovery_duration: Histogram,
    /// `agent_servers_discovered`
    pub servers_discovered: CappedFamily<BmcType, Gauge>,
    /// `agent_discovery_errors_total`
    pub discovery_errors: CappedFamily<ErrorType, Counter>,
    /// `agent_gateway_registrations_total`
    pub gateway_registrations: CappedFamily<Status, Counter>,
    /// `agent_gateway_registration_duration_seconds`
    pub gateway_registration_duration: Histogram,
    /// `agent_heartbeats_sent_total`
    pub heartbeats_sent: CappedFamily<Status, Counter>,
    /// `agent_gateway_connection_status`: 0 disconnected (also: no gateway configured), 1 connected
    pub gateway_connection_status: Gauge,
    /// `agent_bmc_operations_total`
    pub bmc_operations: CappedFamily<BmcOperation, Counter>,
    /// `agent_bmc_operation_duration_seconds`
    pub bmc_operation_duration: CappedFamily<BmcOperationKind, Histogram, Buckets>,
    /// `agent_bmc_connection_errors_total`
    pub bmc_connection_errors: CappedFamily<BmcError, Counter>,
    /// `agent_sol_sessions_total` (a gauge, named as the RFD names it)
    pub sol_sessions: CappedFamily<ServerId, Gauge>,
    /// `agent_sol_bytes_total`
    pub sol_bytes: CappedFamily<Direction, Counter>,
    /// `agent_sol_reconnections_total`
    pub sol_reconnections: CappedFamily<Reconnection, Counter>,
    /// `agent_sol_errors_total`
    pub sol_errors: CappedFamily<ErrorType, Counter>,
    /// `agent_vnc_sessions_total` (a gauge)
    pub vnc_sessions: CappedFamily<ServerId, Gauge>,
    /// `agent_vnc_bytes_total`
    pub vnc_bytes: CappedFamily<Direction, Counter>,
    /// `agent_vnc_connection_errors_total`
    pub vnc_connection_errors: CappedFamily<ErrorType, Counter>,
    /// `agent_rpc_calls_total`, `agent_rpc_call_duration_seconds`
    pub rpc: std::sync::Arc<RpcMetrics>,
    /// `agent_bmc_up` (addition): 1 when the last poll of the BMC succeeded.
    pub bmc_up: CappedFamily<ServerId, Gauge>,
    /// `agent_bmc_power_on` (addition): last polled power state.
    pub bmc_power_on: CappedFamily<ServerId, Gauge>,
    /// `agent_bmc_last_poll_success_timestamp_seconds` (addition).
    pub bmc_last_poll_success: CappedFamily<ServerId, FloatGauge>,
    /// `agent_bmc_sensor_value` (addition): last polled sensor readings.
    pub bmc_sensor_value: CappedFamily<SensorLabels, FloatGauge>,
    /// `agent_bmc_sensor_state` (addition): 0 nominal, 1 warning, 2 critical.
    pub bmc_sensor_state: CappedFamily<SensorLabels, Gauge>,
    /// `agent_bmc_info` (addition): the BMC's identity, value 1.
    pub bmc_info: CappedFamily<BmcInfo, Gauge>,
    /// `agent_bmc_power_consumption_watts` (addition).
    pub bmc_power_consumption: CappedFamily<ServerId, FloatGauge>,
    /// `agent_bmc_event_log_entries` (addition).
    pub bmc_event_log_entries: CappedFamily<ServerId, Gauge>,
    /// `agent_bmc_event_log_free_bytes` (addition).
    pub bmc_event_log_free_bytes: CappedFamily<ServerId, Gauge>,
    /// `agent_bmc_health` (addition): 0 ok, 1 warning, 2 critical, by component.
    pub bmc_health: CappedFamily<HealthLabels, Gauge>,
}

/// `{server_id, manufacturer, product, firmware, ipmi_version, serial}` of `agent_bmc_info`:
/// the BMC's strings, sanitized.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BmcInfo {
    /// Server id.
    pub server_id: String,
    /// Manufacturer.
    pub manufacturer: String,
    /// Product or model.
    pub product: String,
    /// BMC firmware version.
    pub firmware: String,
    /// IPMI version (`unknown` for Redfish).
    pub ipmi_version: String,
    /// System serial number (`unknown` for IPMI).
    pub serial: String,
}

/// `{server_id, component}` of `agent_bmc_health`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HealthLabels {
    /// Server id.
    pub server_id: String,
    /// Component, from a fixed set.
    pub component: &'static str,
}

/// `{server_id, sensor, unit}` of sensor readings.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SensorLabels {
    /// Server id.
    pub server_id: String,
    /// Sensor name from the BMC, sanitized.
    pub sensor: String,
    /// Unit label.
    pub unit: &'static str,
}

impl AgentMetrics {
    /// Registers the catalog under `agent_`.
    pub fn register(b: &mut CatalogBuilder) -> Self {
        AgentMetrics {
            discovery_cycles: b.counter_family("discovery_cycles", "Discovery cycle runs"),
            discovery_duration: b.histogram(
                "discovery_duration_seconds",
                "Discovery cycle duration",
                buckets::DISCOVERY,
            ),
            servers_discovered: b.gauge_family("servers_discovered", "BMC servers discovered"),
            discovery_errors: b.counter_family("discovery_errors", "Discovery errors"),
            gateway_registrations: b
                .counter_family("gateway_registrations", "Registration attempts"),
            gateway_registration_duration: b.histogram(
                "gateway_registration_duration_seconds",
                "Registration duration",
                buckets::HTTP_RPC,
            ),
            heartbeats_sent: b.counter_family("heartbeats_sent", "Heartbeats sent"),
            gateway_connection_status: b.gauge(
                "gateway_connection_status",
                "Connection status (0=disconnected, 1=connected)",
            ),
            bmc_operations: b.counter_family("bmc_operations", "BMC operations executed"),
            bmc_operation_duration: b.histogram_family(
                "bmc_operation_duration_seconds",
                "Operation latency",
                buckets::BMC,
            ),
            bmc_connection_errors: b.counter_family("bmc_connection_errors", "Connection errors"),
            sol_sessions: b.gauge_family("sol_sessions_total", "Active SOL sessions"),
            sol_bytes: b.counter_family("sol_bytes", "SOL bytes transferred"),
            sol_reconnections: b.counter_family("sol_reconnections", "Reconnection attempts"),
            sol_errors: b.counter_family("sol_errors", "Session errors"),
            vnc_sessions: b.gauge_family("vnc_sessions_total", "Active VNC sessions"),
            vnc_bytes: b.counter_family("vnc_bytes", "VNC bytes transferred"),
            vnc_connection_errors: b.counter_family("vnc_connection_errors", "Connection errors"),
            rpc: std::sync::Arc::new(RpcMetrics::register(b)),
            bmc_up: b.gauge_family(
                "bmc_up",
                "Whether the last poll of the BMC succeeded (1) or not (0)",
            ),
            bmc_power_on: b.gauge_family(
                "bmc_power_on",
                "Server power state at the last successful poll (1 on, 0 off)",
            ),
            bmc_last_poll_success: b.float_gauge_family(
                "bmc_last_poll_success_timestamp_seconds",
                "Unix time of the last successful poll of the BMC",
            ),
            bmc_sensor_value: b
                .float_gauge_family("bmc_sensor_value", "BMC sensor reading at the last poll"),
            bmc_sensor_state: b.gauge_family(
                "bmc_sensor_state",
                "BMC sensor state at the last poll (0 nominal, 1 warning, 2 critical)",
            ),
            bmc_info: b.gauge_family("bmc_info", "BMC identity at the last poll (value 1)"),
            bmc_power_consumption: b.float_gauge_family(
                "bmc_power_consumption_watts",
                "Power the server draws, as its BMC reports it",
            ),
            bmc_event_log_entries: b
                .gauge_family("bmc_event_log_entries", "Entries in the BMC's event log"),
            bmc_event_log_free_bytes: b.gauge_family(
                "bmc_event_log_free_bytes",
                "Free space in the BMC's system event log",
            ),
            bmc_health: b.gauge_family(
                "bmc_health",
                "Health the BMC reports by component (0 ok, 1 warning, 2 critical)",
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
        #[cfg(feature = "board")]
        let fake_board = {
            let root = std::env::temp_dir().join(format!("conduit-board-{}", std::process::id()));
            let zone = root.join("sys/class/thermal/thermal_zone0");
            std::fs::create_dir_all(&zone).unwrap();
            std::fs::create_dir_all(root.join("proc/device-tree")).unwrap();
            std::fs::write(root.join("proc/device-tree/model"), b"Test Board\0").unwrap();
            std::fs::write(zone.join("type"), b"cpu-thermal\n").unwrap();
            std::fs::write(zone.join("temp"), b"42000\n").unwrap();
            root
        };
        // One sample in every family, so that label names and buckets are visible.
        let problems = conduit_reference::check_component_catalog(
            include_str!("../../docs/metrics.md"),
            "agent",
            |b| {
                #[cfg(feature = "board")]
                b.collector(Box::new(crate::board::BoardCollector::new(
                    fake_board.clone(),
                )));
                AgentMetrics::register(b)
            },
            |m| {
                let ok = Status { status: "success" };
                let err = ErrorType {
                    error_type: "timeout",
                };
                let server = ServerId {
                    server_id: "s1".into(),
                };
                let dir = Direction {
                    direction: "bmc_to_viewer",
                };
                m.discovery_cycles.inc(&ok);
                m.servers_discovered
                    .with(&BmcType { bmc_type: "ipmi" }, |g| g.set(1));
                m.discovery_errors.inc(&err);
                m.gateway_registrations.inc(&ok);
                m.heartbeats_sent.inc(&ok);
                m.bmc_operations.inc(&BmcOperation {
                    bmc_type: "ipmi",
                    operation: "power_status",
                    status: "success",
                });
                m.bmc_operation_duration.observe(
                    &BmcOperationKind {
                        bmc_type: "ipmi",
                        operation: "power_status",
                    },
                    0.2,
                );
                m.bmc_connection_errors.inc(&BmcError {
                    bmc_type: "ipmi",
                    error_type: "timeout",
                });
                m.sol_sessions.with(&server, |g| g.set(1));
                m.sol_bytes.inc_by(&dir, 5);
                m.sol_reconnections.inc(&Reconnection {
                    server_id: "s1".into(),
                    status: "success",
                });
                m.sol_errors.inc(&err);
                m.vnc_sessions.with(&server, |g| g.set(1));
                m.vnc_bytes.inc_by(&dir, 5);
                m.vnc_connection_errors.inc(&err);
                m.rpc.observe(
                    "conduit.agent.v1.BmcService",
                    "PowerAction",
                    "ok",
                    Duration::ZERO,
                );
                m.bmc_up.with(&server, |g| g.set(1));
                m.bmc_power_on.with(&server, |g| g.set(1));
                m.bmc_last_poll_success.with(&server, |g| g.set(1.7e9));
                m.bmc_sensor_value.with(
                    &SensorLabels {
                        server_id: "s1".into(),
                        sensor: "CPU Temp".into(),
                        unit: "celsius",
                    },
                    |g| g.set(40.0),
                );
                m.bmc_sensor_state.with(
                    &SensorLabels {
                        server_id: "s1".into(),
                        sensor: "CPU Temp".into(),
                        unit: "celsius",
                    },
                    |g| g.set(0),
                );
                m.bmc_info.with(
                    &BmcInfo {
                        server_id: "s1".into(),
                        manufacturer: "IANA 4753".into(),
                        product: "0x0f02".into(),
                        firmware: "9.08".into(),
                        ipmi_version: "2.0".into(),
                        serial: String::new(),
                    },
                    |g| g.set(1),
                );
                m.bmc_power_consumption.with(&server, |g| g.set(240.0));
                m.bmc_event_log_entries.with(&server, |g| g.set(3));
                m.bmc_event_log_free_bytes.with(&server, |g| g.set(8000));
                m.bmc_health.with(
                    &HealthLabels {
                        server_id: "s1".into(),
                        component: "cooling",
                    },
                    |g| g.set(0),
                );
            },
        );
        #[cfg(feature = "board")]
        std::fs::remove_dir_all(fake_board).unwrap();
        // Without the `board` feature its two documented additions are absent, rightly.
        let problems: Vec<_> = problems
            .into_iter()
            .filter(|p| cfg!(feature = "board") || !p.contains("agent_board_"))
            .collect();
        assert!(problems.is_empty(), "{problems:#?}");
    }
}

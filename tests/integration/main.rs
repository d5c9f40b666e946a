//! One integration test binary (faster links, also under cross runners): the real binaries
//! against real peers.

mod agent_bmc;
mod agent_board;
mod agent_boot_events;
mod agent_starvation;
mod cli;
mod console_sol;
mod console_vnc;
mod discovery;
mod exposition;
mod gateway_console;
mod gateway_site;
mod gateway_uplink;
mod http_guards;
mod ipmi_cancel;
mod ipmi_exporter_oracle;
mod ipmi_live;
mod ipmi_pace;
mod manager_api;
mod manager_replicas;
mod metrics_reference;
mod pg_client;
mod prometheus_e2e;
mod redfish_live;
mod redfish_mockup;
mod web_console;
// The manager's storage ships for x86_64 only (see tests/Cargo.toml).
#[cfg(target_arch = "x86_64")]
mod store_engines;

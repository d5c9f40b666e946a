//! The Conduit agent: runs on the ARM appliance beside the BMCs.
//!
//! So far it registers its RFD 021 catalog and serves `/metrics` and `/health`; the BMC layer,
//! discovery, consoles and the gateway uplink, which drive the business metrics, come with the
//! following issues.

#![forbid(unsafe_code)]

pub mod api;
#[cfg(feature = "board")]
pub mod board;
pub mod cli;
pub mod config;
#[cfg(any(feature = "sol", feature = "vnc"))]
pub mod console;
pub mod discovery;
pub mod event_log;
pub mod fleet;
pub mod health;
pub mod ipmi_exporter;
pub mod metrics;
pub mod operations;
pub mod poller;
pub mod probe;
pub mod serve;
#[cfg(feature = "uplink")]
pub mod uplink;

use conduit_service::ComponentInfo;

/// What the agent is, for the shared service code.
pub const INFO: ComponentInfo = ComponentInfo {
    prefix: "agent",
    binary: "conduit-agent",
    default_port: 8090,
    about: "Conduit agent: talks IPMI and Redfish to the BMCs beside it",
};

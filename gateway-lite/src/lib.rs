//! gateway-lite: the per-site broker between users and agents.
//!
//! So far it registers its RFD 021 catalog and serves `/metrics` and `/health`; agent uplinks,
//! operation routing and console brokering, which drive the business metrics, come with later
//! issues.

#![forbid(unsafe_code)]

pub mod metrics;

use conduit_service::ComponentInfo;

/// What the gateway is, for the shared service code.
pub const INFO: ComponentInfo = ComponentInfo {
    prefix: "gateway",
    binary: "conduit-gateway",
    default_port: 8081,
    about: "Conduit gateway-lite: brokers operations and consoles between users and agents",
};

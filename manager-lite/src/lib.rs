//! manager-lite: the control plane (users, customers, servers, gateways, tokens).
//!
//! So far it registers its RFD 021 catalog and serves `/metrics` and `/health`; the API and the
//! store that drive the business metrics come with later issues.

#![forbid(unsafe_code)]

pub mod metrics;
pub mod store;

use conduit_service::ComponentInfo;

/// What the manager is, for the shared service code.
pub const INFO: ComponentInfo = ComponentInfo {
    prefix: "manager",
    binary: "conduit-manager",
    default_port: 8080,
    about: "Conduit manager-lite: users, customers, servers, gateways and tokens",
};

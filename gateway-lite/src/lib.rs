//! gateway-lite: the per-site broker between users and agents.
//!
//! - `uplink`: agents dial in over TLS + WebSocket and register; heartbeats, inventory and
//!   operations travel on that one link (`conduit_api::uplink`).
//! - `agents`: who is connected, in which state, and the routing of an operation to the agent
//!   serving its server.
//! - `trust`: the manager's keys, revocations, inventory and vouched agent credentials, for
//!   deciding offline; `sync` keeps them fresh and reports back; `manager_link` is the client.
//! - `api`: `conduit.gateway.v1.GatewayService` for users; `audit`: the durable outbox.
//! - `consoles`: users' console WebSockets, spliced to a data connection the agent dials.
//! - `web_origins`: the web console's pages on other origins (CORS, consoles' `Origin`).
//! - `serve`: the wiring; `metrics`: the catalog.

#![forbid(unsafe_code)]

pub mod agents;
pub mod api;
pub mod audit;
pub mod consoles;
pub mod manager_link;
pub mod metrics;
pub mod serve;
pub mod sync;
pub mod trust;
pub mod uplink;
pub mod web_origins;

use conduit_service::ComponentInfo;

/// What the gateway is, for the shared service code.
pub const INFO: ComponentInfo = ComponentInfo {
    prefix: "gateway",
    binary: "conduit-gateway",
    default_port: 8081,
    about: "Conduit gateway-lite: brokers operations and consoles between users and agents",
};

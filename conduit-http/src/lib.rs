//! What Conduit's three binaries (agent, gateway-lite, manager-lite) share, so that none of them
//! copies another:
//!
//! - [`catalog`]: the metric registration helpers every component builds its RFD 021 catalog
//!   with, including the per-family cardinality guard;
//! - [`buckets`]: the histogram bucket sets of the RFD;
//! - [`exposition`]: content negotiation and encoding (Prometheus text 0.0.4 or OpenMetrics
//!   1.0.0, optionally gzip) of one registry;
//! - [`process`] and [`heap`]: process metrics read at scrape time;
//! - [`http`]: the guarded HTTP/1.1 server, its router and the request metrics middleware;
//! - [`service`]: the common life of a component binary (flags, logging, `/metrics`, `/health`,
//!   signals).
//!
//! The registry holds data only; encoding happens in [`exposition`]; sockets live in
//! [`http::server`] alone.

pub mod buckets;
pub mod catalog;
pub mod exposition;
pub mod heap;
pub mod http;
pub mod labels;
pub mod logging;
pub mod process;
#[cfg(feature = "reference")]
pub mod reference;
pub mod rpc;
pub mod service;
pub mod wire;
pub mod ws;

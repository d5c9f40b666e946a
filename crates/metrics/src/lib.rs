//! Metrics exposition for Conduit's components, apart from any HTTP serving:
//!
//! - [`age`]: a gauge of the seconds since an event, computed at scrape time;
//! - [`catalog`]: registering a component's RFD 021 catalog under its prefix, with the
//!   per-family cardinality guard;
//! - [`buckets`]: the histogram bucket sets of the RFD;
//! - [`labels`]: shared label sets, and sanitizing untrusted label values;
//! - [`exposition`]: content negotiation and encoding (Prometheus text 0.0.4 or OpenMetrics
//!   1.0.0, optionally gzip) of one registry;
//! - [`process`] and [`heap`]: process metrics read at scrape time.
//!
//! The registry holds data only; encoding happens in [`exposition`], into a buffer the caller
//! serves however it likes.

pub mod age;
pub mod buckets;
pub mod catalog;
pub mod exposition;
mod gzip;
pub mod heap;
pub mod labels;
pub mod process;

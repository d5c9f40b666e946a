//! Histogram bucket sets, exactly as RFD 021 ("Histogram Buckets") lists them.
//!
//! The RFD assigns a set to most duration histograms; where it does not, the component's catalog
//! picks one and `docs/metrics.md` says why.

/// HTTP and RPC request durations, in seconds.
pub const HTTP_RPC: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Console session lifetimes, in seconds (1 min to 4 h).
pub const SESSION: &[f64] = &[60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0];
/// Database query durations, in seconds.
pub const DB: &[f64] = &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];
/// BMC operation durations, in seconds.
pub const BMC: &[f64] = &[0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Discovery cycle durations, in seconds.
pub const DISCOVERY: &[f64] = &[0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Every set by the name `docs/metrics.md` uses for it.
pub const BY_NAME: &[(&str, &[f64])] = &[
    ("http", HTTP_RPC),
    ("session", SESSION),
    ("db", DB),
    ("bmc", BMC),
    ("discovery", DISCOVERY),
];

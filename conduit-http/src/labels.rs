//! Label sets that several components' catalogs share. Values are `&'static str` from the fixed
//! enums of the subsystem that drives each family, or operator-configured identifiers.

use prometheus_client::encoding::EncodeLabelSet;

/// `{status}`: the outcome of an attempt.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Status {
    /// Outcome, e.g. `success`, `failure`.
    pub status: &'static str,
}

/// `{operation}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Operation {
    /// Operation name.
    pub operation: &'static str,
}

/// `{operation, status}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationStatus {
    /// Operation name.
    pub operation: &'static str,
    /// Outcome.
    pub status: &'static str,
}

/// `{error_type}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorType {
    /// Error kind.
    pub error_type: &'static str,
}

/// `{direction}` of byte counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Direction {
    /// e.g. `bmc_to_viewer`, `viewer_to_bmc`.
    pub direction: &'static str,
}

/// `{server_id}`: a configured or discovered server.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerId {
    /// Server id.
    pub server_id: String,
}

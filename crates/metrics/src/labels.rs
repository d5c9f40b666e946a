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

/// `{datacenter, status}` of registered agents and gateways.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DatacenterStatus {
    /// Datacenter, as configured.
    pub datacenter: String,
    /// Status, e.g. `up`, `down`.
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

/// Longest label value taken from an untrusted source (BMC sensor names, firmware strings).
pub const MAX_LABEL_VALUE_LEN: usize = 64;

/// Makes a label value out of an untrusted string (firmware, a BMC's inventory): printable
/// ASCII only (anything else becomes `_`), surrounding whitespace trimmed, at most
/// [`MAX_LABEL_VALUE_LEN`] bytes, `unknown` when nothing is left.
pub fn sanitize_value(raw: &str) -> String {
    let s: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .take(MAX_LABEL_VALUE_LEN)
        .collect();
    let s = s.trim().to_owned();
    if s.is_empty() {
        "unknown".to_owned()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitizes_untrusted_values() {
        assert_eq!(sanitize_value("  CPU Temp "), "CPU Temp");
        assert_eq!(sanitize_value("a\u{0}b\nc\u{e9}"), "a_b_c_");
        assert_eq!(sanitize_value(""), "unknown");
        assert_eq!(sanitize_value(&"x".repeat(500)).len(), MAX_LABEL_VALUE_LEN);
    }
}

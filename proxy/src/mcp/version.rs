//! MCP protocol versions a Streamable HTTP client may speak.

use std::fmt;

/// A protocol revision Shadowcat knows how to proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProtocolVersion {
    /// The HTTP+SSE era; some clients still negotiate it over Streamable HTTP.
    V2024_11_05,
    /// First Streamable HTTP revision; POST bodies may be batches.
    V2025_03_26,
    /// No batches; `MCP-Protocol-Version` required after initialize.
    V2025_06_18,
    /// Priming events and SSE polling.
    V2025_11_25,
    /// Stateless: no sessions, no initialize, no resumption.
    V2026_07_28,
}

impl ProtocolVersion {
    /// Every supported version, oldest first.
    pub const ALL: [Self; 5] = [
        Self::V2024_11_05,
        Self::V2025_03_26,
        Self::V2025_06_18,
        Self::V2025_11_25,
        Self::V2026_07_28,
    ];

    /// What a request without `MCP-Protocol-Version` is taken to speak.
    pub const ASSUMED: Self = Self::V2025_03_26;

    /// Parses the header value; `None` for anything unsupported.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == text)
    }

    /// The version string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V2024_11_05 => "2024-11-05",
            Self::V2025_03_26 => "2025-03-26",
            Self::V2025_06_18 => "2025-06-18",
            Self::V2025_11_25 => "2025-11-25",
            Self::V2026_07_28 => "2026-07-28",
        }
    }

    /// Stateless revisions have no sessions and no resumption.
    pub fn is_stateless(self) -> bool {
        self >= Self::V2026_07_28
    }

    /// Whether streams begin with a priming event (id, empty data).
    pub fn primes_streams(self) -> bool {
        self >= Self::V2025_11_25
    }

    /// Whether a POST body may be a JSON-RPC batch.
    pub fn allows_batches(self) -> bool {
        self <= Self::V2025_03_26
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_round_trips_and_refuses_others() {
        for v in ProtocolVersion::ALL {
            assert_eq!(ProtocolVersion::parse(v.as_str()), Some(v));
        }
        assert_eq!(ProtocolVersion::parse("2025-13-01"), None);
        assert!(ProtocolVersion::V2026_07_28.is_stateless());
        assert!(!ProtocolVersion::V2025_11_25.is_stateless());
        assert!(ProtocolVersion::V2025_11_25.primes_streams());
        assert!(!ProtocolVersion::V2025_06_18.allows_batches());
    }
}

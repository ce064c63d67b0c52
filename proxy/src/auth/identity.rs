//! Who made a request, once verified: what sessions are bound to, what the
//! peer channel carries and what policy sees.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

/// Who made a request, as verified from its token: what the session record
/// and the peer channel carry, and what policy sees.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The token's `iss`.
    #[serde(rename = "iss")]
    pub issuer: String,
    /// The token's `sub`.
    #[serde(rename = "sub")]
    pub subject: String,
    /// The scopes the token grants.
    #[serde(rename = "scope", default)]
    pub scopes: BTreeSet<String>,
    /// Claims to pass upstream: header name to value.
    #[serde(rename = "h", default)]
    pub headers: BTreeMap<String, String>,
    /// The token for the upstream that a token exchange gave, if one is
    /// configured (never the client's own token).
    #[serde(rename = "u", default, skip_serializing_if = "Option::is_none")]
    pub upstream_token: Option<String>,
    /// The token's claims, for policy rules (`principal.claims`).
    #[serde(rename = "c", default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// [`Identity::principal`], worked out once (every session request
    /// compares it).
    #[serde(skip)]
    pub principal: OnceLock<String>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("issuer", &self.issuer)
            .field("subject", &self.subject)
            .field("scopes", &self.scopes)
            .field("headers", &self.headers)
            .field(
                "upstream_token",
                &self.upstream_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl Identity {
    /// The principal as the session record keeps it: issuer and subject,
    /// each base64url-encoded, so no pair of them reads as another.
    pub fn principal(&self) -> &str {
        self.principal.get_or_init(|| {
            format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(&self.issuer),
                URL_SAFE_NO_PAD.encode(&self.subject)
            )
        })
    }

    /// The identity in one header-safe token, for the peer channel (which
    /// signs it with the rest of the request).
    pub fn to_wire(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Reads what [`Identity::to_wire`] wrote.
    pub fn from_wire(text: &str) -> Option<Self> {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(text).ok()?).ok()
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.subject, self.issuer)
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn identities_cross_the_peer_channel_intact() {
        let identity = Identity {
            issuer: "https://id.example.com".into(),
            subject: "ünïcode|sub".into(),
            scopes: ["a".to_owned(), "b".to_owned()].into(),
            headers: [("x-mcp-subject".to_owned(), "s".to_owned())].into(),
            upstream_token: None,
            claims: serde_json::Map::new(),
            principal: OnceLock::new(),
        };
        let wire = identity.to_wire();
        assert!(HeaderValue::from_str(&wire).is_ok());
        assert_eq!(Identity::from_wire(&wire), Some(identity.clone()));
        assert_eq!(Identity::from_wire("!!"), None);
        let other = Identity {
            issuer: "https://id.example.com/ünïcode".into(),
            subject: "|sub".into(),
            ..identity.clone()
        };
        assert_ne!(identity.principal(), other.principal());
    }
}

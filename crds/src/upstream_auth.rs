//! Credentials Shadowcat presents to the upstream instead of the client's
//! token: a header from a file, or a token exchanged for the upstream's
//! audience.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::auth::url;
use crate::settings::ConfigError;

/// Credentials Shadowcat sends to the upstream on every request it makes,
/// in place of anything the client sent: a header whose value is read from
/// a file (a mounted Secret; re-read when it changes).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpstreamAuthConfig {
    /// The header. Default `Authorization`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// File holding the header's whole value (e.g. `Bearer abc…`); trailing
    /// whitespace is dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_file: Option<String>,
    /// Instead of a file: exchange each principal's token at the
    /// authorization server (RFC 8693) for a token meant for the upstream,
    /// sent as `Bearer` in `header`. Needs `auth`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_exchange: Option<TokenExchangeConfig>,
}

/// RFC 8693 token exchange for the upstream's credential.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenExchangeConfig {
    /// The upstream's audience (sent as `resource` and `audience`). Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// Shadowcat's client id at the authorization server. Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// File holding that client's secret (a mounted Secret). Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_file: Option<String>,
    /// Scopes to ask for. Default: those of the client's token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The token endpoint. Default: the issuer metadata's `token_endpoint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_endpoint: Option<String>,
}

/// Validated token exchange settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenExchangeSettings {
    /// Header the exchanged token goes in (lowercase), as `Bearer <token>`.
    pub header: String,
    /// Target audience.
    pub audience: String,
    /// Client id.
    pub client_id: String,
    /// File with the client secret.
    pub client_secret_file: String,
    /// Scopes asked for, if any.
    pub scope: Option<String>,
    /// The token endpoint, if not discovered.
    pub token_endpoint: Option<String>,
}

/// Validated upstream credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamAuthSettings {
    /// Header name (lowercase).
    pub header: String,
    /// File with its value.
    pub value_file: String,
}

impl UpstreamAuthConfig {
    /// Layers `self` over `lower`, field by field.
    pub fn or(self, lower: Self) -> Self {
        Self {
            header: self.header.or(lower.header),
            value_file: self.value_file.or(lower.value_file),
            token_exchange: match (self.token_exchange, lower.token_exchange) {
                (Some(upper), Some(lower)) => Some(TokenExchangeConfig {
                    audience: upper.audience.or(lower.audience),
                    client_id: upper.client_id.or(lower.client_id),
                    client_secret_file: upper.client_secret_file.or(lower.client_secret_file),
                    scope: upper.scope.or(lower.scope),
                    token_endpoint: upper.token_endpoint.or(lower.token_endpoint),
                }),
                (upper, lower) => upper.or(lower),
            },
        }
    }

    /// Checks the token exchange; `None` when not configured. `auth_on`:
    /// whether clients' tokens are verified (there is nothing to exchange
    /// otherwise).
    pub fn validate_exchange(&self, auth_on: bool) -> Result<Option<TokenExchangeSettings>, ConfigError> {
        let Some(exchange) = &self.token_exchange else {
            return Ok(None);
        };
        if !auth_on {
            return Err(ConfigError::new(
                "upstreamAuth.tokenExchange",
                "needs auth.issuer: only a verified token can be exchanged",
            ));
        }
        if self.value_file.is_some() {
            return Err(ConfigError::new(
                "upstreamAuth.tokenExchange",
                "give either upstreamAuth.valueFile or upstreamAuth.tokenExchange, not both",
            ));
        }
        let required = |key: &'static str, value: &Option<String>| {
            value
                .clone()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| ConfigError::new(key, "required for a token exchange"))
        };
        Ok(Some(TokenExchangeSettings {
            header: self
                .header
                .as_deref()
                .unwrap_or("authorization")
                .to_ascii_lowercase(),
            audience: required("upstreamAuth.tokenExchange.audience", &exchange.audience)?,
            client_id: required("upstreamAuth.tokenExchange.clientId", &exchange.client_id)?,
            client_secret_file: required(
                "upstreamAuth.tokenExchange.clientSecretFile",
                &exchange.client_secret_file,
            )?,
            scope: exchange.scope.clone(),
            token_endpoint: match &exchange.token_endpoint {
                Some(u) => Some(url("upstreamAuth.tokenExchange.tokenEndpoint", u)?),
                None => None,
            },
        }))
    }

    /// Checks the values; `None` when no credential file is configured.
    pub fn validate(&self) -> Result<Option<UpstreamAuthSettings>, ConfigError> {
        let Some(file) = &self.value_file else {
            if self.header.is_some() && self.token_exchange.is_none() {
                return Err(ConfigError::new(
                    "upstreamAuth.valueFile",
                    "required with upstreamAuth.header",
                ));
            }
            return Ok(None);
        };
        let header = self
            .header
            .as_deref()
            .unwrap_or("authorization")
            .to_ascii_lowercase();
        if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
            return Err(ConfigError::new(
                "upstreamAuth.header",
                format!("`{header}` is not a header name"),
            ));
        }
        Ok(Some(UpstreamAuthSettings {
            header,
            value_file: file.clone(),
        }))
    }
}

//! Token verification settings: the sidecar as an OAuth 2.1 resource server.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::settings::{ConfigError, duration};

/// Verifying the client's access token on every request (off unless
/// `issuer` is set). Shadowcat then serves the protected resource metadata
/// (RFC 9728), answers 401/403 with `WWW-Authenticate`, binds each session
/// to the principal that created it, and never passes the client's token to
/// the upstream.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthConfig {
    /// The authorization server's issuer URL. Tokens must carry exactly this
    /// `iss`; its signing keys are found through its metadata (RFC 8414, then
    /// OpenID Connect discovery) unless `jwksUrl` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// The issuer's JWKS URL, to skip discovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// This endpoint's canonical URL as clients reach it, e.g.
    /// `https://mcp.example.com/mcp`: the `resource` of the metadata, and the
    /// audience tokens must be issued for. Required with `issuer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// Further accepted audiences (a token needs one of these or `resource`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audiences: Option<Vec<String>>,
    /// Accepted signature algorithms. Default: RS256, RS384, RS512, PS256,
    /// PS384, PS512, ES256, ES384, EdDSA. HMAC algorithms and `none` are never
    /// accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithms: Option<Vec<String>>,
    /// Clock skew allowed on `exp` and `nbf`. Default `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leeway: Option<String>,
    /// How often the signing keys are fetched again. Default `10m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_refresh_interval: Option<String>,
    /// A token signed with a key Shadowcat does not know makes it fetch the
    /// keys again (a rotation), but at most once per this interval.
    /// Default `10s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_min_refresh_interval: Option<String>,
    /// PEM file of CAs to trust for the authorization server, beyond the
    /// system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Scopes each operation needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<ScopesConfig>,
    /// `scopes_supported` of the metadata. Default: every scope `scopes` names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes_supported: Option<Vec<String>>,
    /// Token claims passed to the upstream as request headers, claim name to
    /// header name (e.g. `sub: X-Mcp-Subject`). A client's own header of
    /// that name is dropped. The token itself never goes upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_headers: Option<BTreeMap<String, String>>,
    /// Opaque (non-JWT) tokens are checked at the issuer's introspection
    /// endpoint (RFC 7662) with these client credentials; without this block
    /// only JWTs are accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub introspection: Option<IntrospectionConfig>,
}

/// Token introspection (RFC 7662) for opaque tokens.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IntrospectionConfig {
    /// The introspection endpoint. Default: the issuer metadata's
    /// `introspection_endpoint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Shadowcat's client id at the authorization server. Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// File holding that client's secret (a mounted Secret). Required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_file: Option<String>,
}

/// Validated introspection settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntrospectionSettings {
    /// The endpoint, if not discovered.
    pub endpoint: Option<String>,
    /// Client id.
    pub client_id: String,
    /// File with the client secret.
    pub client_secret_file: String,
}

/// The scopes a request needs: `default` for every request, plus those of
/// its JSON-RPC method and of the tool, prompt or resource it names.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScopesConfig {
    /// Needed by every request (and named in the 401 challenge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Vec<String>>,
    /// By JSON-RPC method, e.g. `tools/call: [mcp:tools]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<BTreeMap<String, Vec<String>>>,
    /// By tool name (`tools/call`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<BTreeMap<String, Vec<String>>>,
    /// By prompt name (`prompts/get`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompts: Option<BTreeMap<String, Vec<String>>>,
    /// By resource URI (`resources/read`, `resources/subscribe`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<BTreeMap<String, Vec<String>>>,
}

/// Signature algorithms accepted unless configured otherwise: every
/// asymmetric one.
pub const DEFAULT_ALGORITHMS: [&str; 9] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// Validated token verification settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthSettings {
    /// Expected `iss`.
    pub issuer: String,
    /// The JWKS URL, when discovery is skipped.
    pub jwks_url: Option<String>,
    /// This endpoint's canonical URL.
    pub resource: String,
    /// Accepted audiences, canonical: `resource` first.
    pub audiences: Vec<String>,
    /// Accepted algorithms, by name.
    pub algorithms: Vec<String>,
    /// Clock skew allowed.
    pub leeway: Duration,
    /// Regular key refresh.
    pub jwks_refresh_interval: Duration,
    /// Fewest time between two fetches caused by unknown keys.
    pub jwks_min_refresh_interval: Duration,
    /// Extra CAs for the authorization server.
    pub ca_file: Option<String>,
    /// Needed by every request.
    pub default_scopes: BTreeSet<String>,
    /// By method.
    pub method_scopes: BTreeMap<String, BTreeSet<String>>,
    /// By tool name.
    pub tool_scopes: BTreeMap<String, BTreeSet<String>>,
    /// By prompt name.
    pub prompt_scopes: BTreeMap<String, BTreeSet<String>>,
    /// By resource URI.
    pub resource_scopes: BTreeMap<String, BTreeSet<String>>,
    /// Advertised in the metadata.
    pub scopes_supported: Vec<String>,
    /// Claim name to upstream header name (lowercase).
    pub claim_headers: BTreeMap<String, String>,
    /// Introspection of opaque tokens, if configured.
    pub introspection: Option<IntrospectionSettings>,
}

/// `uri` in the form audiences are compared in: scheme and host lowercase,
/// no trailing slash (RFC 8707 and the MCP authorization specification).
/// `None` when it is not an absolute http(s) URL or has a fragment.
pub fn canonical_uri(uri: &str) -> Option<String> {
    let (scheme, rest) = uri.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if !matches!(scheme.as_str(), "http" | "https") || uri.contains('#') {
        return None;
    }
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let tail = tail.strip_suffix('/').unwrap_or(tail);
    Some(format!("{scheme}://{}{tail}", authority.to_ascii_lowercase()))
}

pub(crate) fn url(key: &'static str, text: &str) -> Result<String, ConfigError> {
    canonical_uri(text)
        .map(|_| text.trim_end_matches('/').to_owned())
        .ok_or_else(|| ConfigError::new(key, format!("`{text}` is not an http(s) URL without a fragment")))
}

fn scope_set(key: &'static str, scopes: &[String]) -> Result<BTreeSet<String>, ConfigError> {
    scopes
        .iter()
        .map(|s| {
            // RFC 6749 §3.3: scope tokens are printable ASCII without space,
            // double quote or backslash (they go inside a quoted challenge).
            if s.is_empty()
                || !s
                    .bytes()
                    .all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\')
            {
                return Err(ConfigError::new(key, format!("`{s}` is not a valid scope")));
            }
            Ok(s.clone())
        })
        .collect()
}

fn scope_map(
    key: &'static str,
    map: &Option<BTreeMap<String, Vec<String>>>,
) -> Result<BTreeMap<String, BTreeSet<String>>, ConfigError> {
    map.iter()
        .flatten()
        .map(|(name, scopes)| Ok((name.clone(), scope_set(key, scopes)?)))
        .collect()
}

impl AuthConfig {
    /// Layers `self` over `lower`, field by field.
    pub fn or(self, lower: Self) -> Self {
        Self {
            issuer: self.issuer.or(lower.issuer),
            jwks_url: self.jwks_url.or(lower.jwks_url),
            resource: self.resource.or(lower.resource),
            audiences: self.audiences.or(lower.audiences),
            algorithms: self.algorithms.or(lower.algorithms),
            leeway: self.leeway.or(lower.leeway),
            jwks_refresh_interval: self.jwks_refresh_interval.or(lower.jwks_refresh_interval),
            jwks_min_refresh_interval: self.jwks_min_refresh_interval.or(lower.jwks_min_refresh_interval),
            ca_file: self.ca_file.or(lower.ca_file),
            scopes: match (self.scopes, lower.scopes) {
                (Some(upper), Some(lower)) => Some(ScopesConfig {
                    default: upper.default.or(lower.default),
                    methods: upper.methods.or(lower.methods),
                    tools: upper.tools.or(lower.tools),
                    prompts: upper.prompts.or(lower.prompts),
                    resources: upper.resources.or(lower.resources),
                }),
                (upper, lower) => upper.or(lower),
            },
            scopes_supported: self.scopes_supported.or(lower.scopes_supported),
            claim_headers: self.claim_headers.or(lower.claim_headers),
            introspection: match (self.introspection, lower.introspection) {
                (Some(upper), Some(lower)) => Some(IntrospectionConfig {
                    endpoint: upper.endpoint.or(lower.endpoint),
                    client_id: upper.client_id.or(lower.client_id),
                    client_secret_file: upper.client_secret_file.or(lower.client_secret_file),
                }),
                (upper, lower) => upper.or(lower),
            },
        }
    }

    /// Checks every value; `None` when verification is off (no issuer).
    pub fn validate(&self) -> Result<Option<AuthSettings>, ConfigError> {
        let Some(issuer) = &self.issuer else {
            if self.resource.is_some() || self.jwks_url.is_some() {
                return Err(ConfigError::new(
                    "auth.issuer",
                    "required when any other auth setting is given",
                ));
            }
            return Ok(None);
        };
        let issuer = {
            url("auth.issuer", issuer)?;
            issuer.clone()
        };
        let resource = url(
            "auth.resource",
            self.resource.as_deref().ok_or_else(|| {
                ConfigError::new(
                    "auth.resource",
                    "required with auth.issuer: the URL clients use to reach this endpoint, e.g. https://mcp.example.com/mcp",
                )
            })?,
        )?;
        let mut audiences = vec![canonical_uri(&resource).unwrap_or_default()];
        for audience in self.audiences.iter().flatten() {
            // An audience need not be a URL (some servers use names).
            let audience = canonical_uri(audience).unwrap_or_else(|| audience.clone());
            if !audiences.contains(&audience) {
                audiences.push(audience);
            }
        }
        let algorithms = match &self.algorithms {
            None => DEFAULT_ALGORITHMS.iter().map(|a| (*a).to_owned()).collect(),
            Some(list) if list.is_empty() => {
                return Err(ConfigError::new(
                    "auth.algorithms",
                    "must name at least one algorithm",
                ));
            }
            Some(list) => {
                for a in list {
                    if !DEFAULT_ALGORITHMS.contains(&a.as_str()) {
                        return Err(ConfigError::new(
                            "auth.algorithms",
                            format!(
                                "`{a}` is not accepted; choose from {} (HMAC and none never are)",
                                DEFAULT_ALGORITHMS.join(", ")
                            ),
                        ));
                    }
                }
                list.clone()
            }
        };
        let scopes = self.scopes.clone().unwrap_or_default();
        let default_scopes = scope_set(
            "auth.scopes.default",
            scopes.default.as_deref().unwrap_or_default(),
        )?;
        let method_scopes = scope_map("auth.scopes.methods", &scopes.methods)?;
        let tool_scopes = scope_map("auth.scopes.tools", &scopes.tools)?;
        let prompt_scopes = scope_map("auth.scopes.prompts", &scopes.prompts)?;
        let resource_scopes = scope_map("auth.scopes.resources", &scopes.resources)?;
        let scopes_supported = match &self.scopes_supported {
            Some(list) => scope_set("auth.scopesSupported", list)?.into_iter().collect(),
            None => {
                let mut all = default_scopes.clone();
                for map in [&method_scopes, &tool_scopes, &prompt_scopes, &resource_scopes] {
                    all.extend(map.values().flatten().cloned());
                }
                all.into_iter().collect()
            }
        };
        let mut claim_headers = BTreeMap::new();
        for (claim, header) in self.claim_headers.iter().flatten() {
            let name = header.to_ascii_lowercase();
            let valid = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
            if !valid
                || matches!(name.as_str(), "authorization" | "host" | "cookie")
                || name.starts_with("mcp-")
            {
                return Err(ConfigError::new(
                    "auth.claimHeaders",
                    format!(
                        "`{header}` cannot carry a claim: use a header name of your own, e.g. X-Mcp-Subject"
                    ),
                ));
            }
            claim_headers.insert(claim.clone(), name);
        }
        Ok(Some(AuthSettings {
            issuer,
            jwks_url: match &self.jwks_url {
                Some(u) => Some(url("auth.jwksUrl", u)?),
                None => None,
            },
            resource,
            audiences,
            algorithms,
            leeway: match &self.leeway {
                Some(text) => crate::settings::parse_duration_or_zero("auth.leeway", text)?,
                None => Duration::from_secs(30),
            },
            jwks_refresh_interval: duration("auth.jwksRefreshInterval", &self.jwks_refresh_interval, "10m")?,
            jwks_min_refresh_interval: duration(
                "auth.jwksMinRefreshInterval",
                &self.jwks_min_refresh_interval,
                "10s",
            )?,
            ca_file: self.ca_file.clone(),
            default_scopes,
            method_scopes,
            tool_scopes,
            prompt_scopes,
            resource_scopes,
            scopes_supported,
            claim_headers,
            introspection: match &self.introspection {
                None => None,
                Some(i) => Some(IntrospectionSettings {
                    endpoint: match &i.endpoint {
                        Some(u) => Some(url("auth.introspection.endpoint", u)?),
                        None => None,
                    },
                    client_id: i.client_id.clone().ok_or_else(|| {
                        ConfigError::new("auth.introspection.clientId", "required for introspection")
                    })?,
                    client_secret_file: i.client_secret_file.clone().ok_or_else(|| {
                        ConfigError::new(
                            "auth.introspection.clientSecretFile",
                            "required for introspection",
                        )
                    })?,
                }),
            },
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AuthConfig {
        AuthConfig {
            issuer: Some("https://id.example.com".into()),
            resource: Some("https://MCP.example.com/mcp/".into()),
            ..Default::default()
        }
    }

    #[test]
    fn canonical_uris_compare_case_and_slash_insensitively() {
        assert_eq!(
            canonical_uri("HTTPS://MCP.Example.com:443/Mcp/").as_deref(),
            Some("https://mcp.example.com:443/Mcp")
        );
        assert_eq!(canonical_uri("http://h").as_deref(), Some("http://h"));
        assert_eq!(canonical_uri("http://h/").as_deref(), Some("http://h"));
        for bad in ["ftp://h/x", "https://h/x#f", "h/x", "https:///x", "https://u@h/"] {
            assert_eq!(canonical_uri(bad), None, "{bad}");
        }
    }

    #[test]
    fn defaults_and_audiences() {
        let s = config().validate().unwrap().unwrap();
        assert_eq!(s.resource, "https://MCP.example.com/mcp");
        assert_eq!(s.audiences, ["https://mcp.example.com/mcp"]);
        assert_eq!(s.algorithms.len(), DEFAULT_ALGORITHMS.len());
        assert_eq!(s.leeway, Duration::from_secs(30));
        assert_eq!(s.jwks_refresh_interval, Duration::from_secs(600));
        assert_eq!(s.jwks_min_refresh_interval, Duration::from_secs(10));
        assert!(s.default_scopes.is_empty() && s.scopes_supported.is_empty());
        assert_eq!(AuthConfig::default().validate().unwrap(), None);
    }

    #[test]
    fn refuses_what_cannot_be_safe() {
        let err = |c: AuthConfig| c.validate().unwrap_err().to_string();
        let mut c = config();
        c.algorithms = Some(vec!["HS256".into()]);
        assert!(err(c).contains("auth.algorithms"));
        let mut c = config();
        c.resource = None;
        assert!(err(c).contains("auth.resource"));
        let c = AuthConfig {
            resource: Some("https://x/mcp".into()),
            ..Default::default()
        };
        assert!(err(c).contains("auth.issuer"));
        let mut c = config();
        c.claim_headers = Some([("sub".to_owned(), "Authorization".to_owned())].into());
        assert!(err(c).contains("auth.claimHeaders"));
        let mut c = config();
        c.scopes = Some(ScopesConfig {
            default: Some(vec!["a b".into()]),
            ..Default::default()
        });
        assert!(err(c).contains("auth.scopes.default"));
    }

    #[test]
    fn scopes_supported_defaults_to_every_scope_named() {
        let mut c = config();
        c.scopes = Some(ScopesConfig {
            default: Some(vec!["mcp".into()]),
            tools: Some([("rm".to_owned(), vec!["mcp:admin".to_owned()])].into()),
            ..Default::default()
        });
        let s = c.validate().unwrap().unwrap();
        assert_eq!(s.scopes_supported, ["mcp", "mcp:admin"]);
    }

    #[test]
    fn a_claim_cannot_ride_in_the_upstream_credential_header() {
        let config = crate::SidecarConfig {
            upstream: Some("http://127.0.0.1:3000/mcp".into()),
            auth: Some(AuthConfig {
                claim_headers: Some([("sub".to_owned(), "X-Api-Key".to_owned())].into()),
                ..config()
            }),
            upstream_auth: Some(crate::UpstreamAuthConfig {
                header: Some("x-api-key".into()),
                value_file: Some("/secret".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("auth.claimHeaders"), "{err}");
    }
}

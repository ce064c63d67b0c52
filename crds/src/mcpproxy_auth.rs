//! `McpProxy.spec.auth`: token verification and the upstream's credential,
//! rendered into the sidecar's `auth` and `upstreamAuth` config.

use std::collections::BTreeMap;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use crate::auth::{DEFAULT_ALGORITHMS, ScopesConfig};
use crate::mcpproxy::SecretKeyRef;
use crate::settings::ConfigError;

/// Token verification, rendered into the sidecar's `auth` and `upstreamAuth`
/// config; Secrets are mounted and the config names their files. Requests
/// without a good token get 401, those short of a scope 403, both with a
/// `WWW-Authenticate` challenge; each session is bound to the principal that
/// created it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// The authorization server's issuer URL, e.g.
    /// `https://auth.example.com/realms/mcp`. Tokens must carry exactly this
    /// `iss`; its signing keys are found through its metadata (RFC 8414, then
    /// OpenID Connect discovery) unless `jwksUrl` is set.
    #[schemars(length(min = 1))]
    pub issuer: String,
    /// The issuer's JWKS URL, to skip discovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// The MCP endpoint's URL as clients reach it (the Service's or the
    /// Ingress's URL and path), e.g. `https://mcp.example.com/mcp`: an
    /// absolute http(s) URL without a fragment. It is the `resource` of the
    /// metadata and the audience tokens must be issued for.
    #[schemars(length(min = 1))]
    pub resource: String,
    /// Further accepted audiences: a token needs one of these or `resource`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// Accepted signature algorithms; every asymmetric one when absent. HMAC
    /// algorithms and `none` are never accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "algorithms_schema")]
    pub algorithms: Option<Vec<String>>,
    /// Clock skew allowed on `exp` and `nbf`, e.g. `30s` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub leeway: Option<String>,
    /// Scopes each operation needs; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<ScopesConfig>,
    /// Token claims passed to the MCP server as request headers, claim name
    /// to header name, e.g. `sub: X-Mcp-Subject`. A client's own header of
    /// that name is dropped. `Authorization`, `Host`, `Cookie` and `Mcp-*`
    /// cannot carry a claim.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub claim_headers: BTreeMap<String, String>,
    /// A Secret key holding PEM CAs to trust for the authorization server
    /// (a private one), beyond the system's roots. Mounted, never copied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
    /// Checking opaque (non-JWT) tokens at the authorization server's
    /// introspection endpoint (RFC 7662); only JWTs are accepted when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub introspection: Option<IntrospectionSpec>,
    /// The credential the sidecar sends to the MCP server on every request,
    /// in place of the client's token; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_credential: Option<UpstreamCredentialSpec>,
}

/// Token introspection (RFC 7662) for opaque tokens, as a client of the
/// authorization server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IntrospectionSpec {
    /// Shadowcat's client id at the authorization server.
    #[schemars(length(min = 1))]
    pub client_id: String,
    /// The Secret key holding that client's secret. Mounted, never copied;
    /// read when the sidecar starts, so restart the pods after changing it.
    pub client_secret_ref: SecretKeyRef,
    /// The introspection endpoint; the issuer metadata's
    /// `introspection_endpoint` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// A header the sidecar sends to the MCP server: its value from a Secret
/// (`secretRef`) or a token obtained by exchange (`tokenExchange`), exactly
/// one of the two.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.secretRef) != has(self.tokenExchange)", "message": "upstreamCredential needs exactly one of secretRef and tokenExchange"}
]))]
pub struct UpstreamCredentialSpec {
    /// The header.
    #[serde(default = "default_credential_header")]
    #[schemars(regex(pattern = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"))]
    pub header: String,
    /// The Secret key holding the header's whole value, e.g.
    /// `Bearer abc…` (trailing whitespace is dropped). Mounted, never copied:
    /// a new value is used once the kubelet has updated the mounted file,
    /// without a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// Instead of `secretRef`: each client's verified token exchanged
    /// (RFC 8693) for a token meant for the MCP server, sent as
    /// `Bearer <token>` in `header`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_exchange: Option<TokenExchangeSpec>,
}

impl UpstreamCredentialSpec {
    /// The schema's rule, exactly one of `secretRef` and `tokenExchange`,
    /// checked again: an API server that does not run CEL rules lets either
    /// mistake through, and the sidecar's own refusal would name its config
    /// keys, not the spec's.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match (&self.secret_ref, &self.token_exchange) {
            (Some(_), None) | (None, Some(_)) => Ok(()),
            (Some(_), Some(_)) => Err(ConfigError::new(
                "spec.auth.upstreamCredential",
                "give either secretRef or tokenExchange, not both",
            )),
            (None, None) => Err(ConfigError::new(
                "spec.auth.upstreamCredential",
                "needs secretRef or tokenExchange",
            )),
        }
    }
}

/// RFC 8693 token exchange for the MCP server's credential: the sidecar
/// trades each principal's verified token at the authorization server for
/// one issued for `audience`, and reuses it until it nears its expiry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenExchangeSpec {
    /// The MCP server's audience (sent as `resource` and `audience`).
    #[schemars(length(min = 1))]
    pub audience: String,
    /// Shadowcat's client id at the authorization server.
    #[schemars(length(min = 1))]
    pub client_id: String,
    /// The Secret key holding that client's secret. Mounted, never copied;
    /// read when the sidecar starts, so restart the pods after changing it.
    pub client_secret_ref: SecretKeyRef,
    /// Scopes to ask for, space-separated; when absent none are asked for
    /// and the authorization server decides (typically the client token's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The token endpoint; the issuer metadata's `token_endpoint` when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_endpoint: Option<String>,
}

fn default_credential_header() -> String {
    "Authorization".into()
}

/// The algorithm names the sidecar accepts, so the API server refuses any
/// other (`HS256`, `none`) before the operator sees it.
fn algorithms_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "items": {"type": "string", "enum": DEFAULT_ALGORITHMS},
        "minItems": 1,
        "nullable": true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_spec_reads_as_users_write_it() {
        let auth: AuthSpec = serde_yaml::from_str(
            "
issuer: https://auth.example.com/realms/mcp
resource: https://mcp.example.com/mcp
scopes:
  default: [mcp]
  tools: {delete_repo: ['mcp:admin']}
claimHeaders: {sub: X-Mcp-Subject}
upstreamCredential:
  secretRef: {name: mcp-credential, key: token}
",
        )
        .unwrap();
        let credential = auth.upstream_credential.unwrap();
        assert_eq!(credential.header, "Authorization", "the default header");
        assert_eq!(credential.secret_ref.unwrap().key, "token");
        assert_eq!(credential.token_exchange, None);
        assert_eq!(auth.scopes.unwrap().tools.unwrap()["delete_repo"], ["mcp:admin"]);
        assert_eq!(auth.algorithms, None);
        assert!(auth.audiences.is_empty() && auth.ca_secret_ref.is_none());
        assert_eq!(auth.introspection, None);
    }

    #[test]
    fn auth_spec_reads_introspection_and_token_exchange() {
        let auth: AuthSpec = serde_yaml::from_str(
            "
issuer: https://auth.example.com/realms/mcp
resource: https://mcp.example.com/mcp
introspection:
  clientId: shadowcat
  clientSecretRef: {name: shadowcat-client, key: secret}
upstreamCredential:
  tokenExchange:
    audience: https://tools.internal/mcp
    clientId: shadowcat
    clientSecretRef: {name: shadowcat-client, key: secret}
",
        )
        .unwrap();
        let introspection = auth.introspection.unwrap();
        assert_eq!(introspection.client_id, "shadowcat");
        assert_eq!(introspection.endpoint, None, "discovered by default");
        let credential = auth.upstream_credential.unwrap();
        assert_eq!(credential.header, "Authorization", "the default header");
        assert_eq!(credential.secret_ref, None);
        let exchange = credential.token_exchange.as_ref().unwrap();
        assert_eq!(exchange.audience, "https://tools.internal/mcp");
        assert_eq!((&exchange.scope, &exchange.token_endpoint), (&None, &None));
        assert!(credential.validate().is_ok());
    }

    #[test]
    fn introspection_and_token_exchange_need_a_client_and_its_secret() {
        for yaml in ["clientId: shadowcat", "clientSecretRef: {name: c, key: secret}"] {
            assert!(serde_yaml::from_str::<IntrospectionSpec>(yaml).is_err(), "{yaml}");
        }
        for yaml in [
            "{clientId: s, clientSecretRef: {name: c, key: k}}",
            "{audience: a, clientSecretRef: {name: c, key: k}}",
            "{audience: a, clientId: s}",
        ] {
            assert!(serde_yaml::from_str::<TokenExchangeSpec>(yaml).is_err(), "{yaml}");
        }
    }

    #[test]
    fn upstream_credential_needs_exactly_one_of_secret_ref_and_token_exchange() {
        let secret = "secretRef: {name: mcp-credential, key: token}";
        let exchange = "tokenExchange: {audience: a, clientId: s, clientSecretRef: {name: c, key: k}}";
        for (yaml, refused) in [
            (format!("{{{secret}}}"), None),
            (format!("{{{exchange}}}"), None),
            (format!("{{{secret}, {exchange}}}"), Some("not both")),
            (
                "{header: X-Api-Key}".to_owned(),
                Some("needs secretRef or tokenExchange"),
            ),
        ] {
            let credential: UpstreamCredentialSpec = serde_yaml::from_str(&yaml).unwrap();
            match (credential.validate(), refused) {
                (Ok(()), None) => {}
                (Err(e), Some(reason)) => {
                    assert_eq!(e.key, "spec.auth.upstreamCredential", "{yaml}");
                    assert!(e.reason.contains(reason), "{yaml}: {e}");
                }
                (outcome, _) => panic!("{yaml}: {outcome:?}"),
            }
        }
    }

    #[test]
    fn auth_spec_needs_an_issuer_and_a_resource() {
        for yaml in ["issuer: https://a.example", "resource: https://mcp.example/mcp"] {
            assert!(serde_yaml::from_str::<AuthSpec>(yaml).is_err(), "{yaml}");
        }
    }

    /// The API server refuses what the sidecar would: the schema's algorithm
    /// list is the sidecar's own.
    #[test]
    fn auth_algorithms_schema_lists_exactly_the_accepted_ones() {
        let schema = algorithms_schema(&mut SchemaGenerator::default());
        assert_eq!(
            schema.get("items").unwrap()["enum"],
            serde_json::json!(DEFAULT_ALGORITHMS)
        );
    }
}

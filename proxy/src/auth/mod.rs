//! Shadowcat as an OAuth 2.1 resource server (the facts it relies on are in
//! `docs/authorization.md`):
//!
//! - every request on the MCP endpoint carries a bearer token in the
//!   `Authorization` header, verified here: signature against the issuer's
//!   keys ([`keys`]), `iss`, audience, `exp`/`nbf`;
//! - a request without a good token gets 401 with a challenge naming the
//!   protected resource metadata, which is served at the well-known paths;
//! - each request needs the scopes its method and target name (403 with one
//!   challenge listing all of them otherwise), read from the body;
//! - the verified principal (issuer and subject) owns the sessions it
//!   creates; the token itself goes no further than this module.

mod client;
mod exchange;
mod identity;
mod introspect;
mod keys;
mod ring_crypto;
mod token;

use std::collections::BTreeSet;
use std::str::FromStr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, header};
use jsonwebtoken::Algorithm;
use shadowcat_crds::{AuthSettings, TokenExchangeSettings};

pub use self::client::AsClient;
pub use self::identity::Identity;
pub use self::keys::{Candidates, KeySet, Keys};
use self::token::{Invalid, Verified};
use crate::body::{self, Body};
use crate::mcp::jsonrpc::{self, Kind};
use crate::metrics::{AuthLabels, Metrics};

/// The well-known path of the protected resource metadata (RFC 9728).
pub const METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

/// A request refused by the resource server: the status, the challenge and
/// what to tell the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denied {
    /// Metric label and log reason (`missing`, `expired`, ...).
    pub outcome: &'static str,
    /// 400, 401, 403 or 503.
    pub status: StatusCode,
    /// The `WWW-Authenticate` value, when one applies.
    pub challenge: Option<String>,
    /// For the JSON-RPC error message.
    pub message: String,
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The resource server.
pub struct Auth {
    settings: AuthSettings,
    keys: Keys,
    accepted: Vec<Algorithm>,
    metadata: Bytes,
    metadata_url: String,
    metadata_paths: Vec<String>,
    claim_headers: Vec<(String, HeaderName)>,
    verified: std::sync::Mutex<std::collections::HashMap<[u8; 32], Verified>>,
    exchange: Option<exchange::Exchanger>,
    introspection: Option<introspect::Introspector>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("issuer", &self.settings.issuer)
            .field("resource", &self.settings.resource)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// A resource server for `settings`, serving the MCP endpoint at `path`.
    /// No key is fetched yet: see [`Auth::keep_keys_current`].
    pub fn new(
        settings: AuthSettings,
        exchange: Option<TokenExchangeSettings>,
        path: &str,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        ring_crypto::install();
        let accepted = settings
            .algorithms
            .iter()
            .filter_map(|a| Algorithm::from_str(a).ok())
            .collect();
        let client = client::AsClient::new(settings.ca_file.as_deref())?;
        let exchange = match exchange {
            Some(exchange) => Some(exchange::Exchanger::new(
                exchange,
                &settings.issuer,
                client.clone(),
            )?),
            None => None,
        };
        let introspection = match &settings.introspection {
            Some(i) => Some(introspect::Introspector::new(
                i,
                &settings.issuer,
                client.clone(),
            )?),
            None => None,
        };
        let keys = Keys::new(&settings, Vec::clone(&accepted), client, metrics.clone());
        let (origin, resource_path) = keys::split_origin(&settings.resource);
        let metadata_url = format!("{origin}{METADATA_PATH}{resource_path}");
        let mut metadata_paths = vec![
            METADATA_PATH.to_owned(),
            format!("{METADATA_PATH}{resource_path}"),
        ];
        // Behind a proxy that rewrites the path, the listener's own path too.
        metadata_paths.push(format!("{METADATA_PATH}{path}"));
        metadata_paths.dedup();
        let metadata = serde_json::json!({
            "resource": settings.resource,
            "authorization_servers": [settings.issuer],
            "scopes_supported": settings.scopes_supported,
            "bearer_methods_supported": ["header"],
        });
        let claim_headers = settings
            .claim_headers
            .iter()
            .filter_map(|(claim, name)| Some((claim.clone(), HeaderName::from_bytes(name.as_bytes()).ok()?)))
            .collect();
        Ok(Self {
            metadata: Bytes::from(metadata.to_string()),
            metadata_url,
            metadata_paths,
            claim_headers,
            keys,
            accepted,
            settings,
            verified: Default::default(),
            exchange,
            introspection,
            metrics,
        })
    }

    /// The settings.
    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }

    /// Where the protected resource metadata is (the challenge names it).
    pub fn metadata_url(&self) -> &str {
        &self.metadata_url
    }

    /// Fetches the keys now, then again at every refresh interval (and, on
    /// failure, sooner: after 1 s, doubling up to the interval). Runs until
    /// the process ends.
    pub async fn keep_keys_current(self: Arc<Self>) {
        let interval = self.settings.jwks_refresh_interval;
        let mut retry = std::time::Duration::from_secs(1);
        loop {
            self.keys.refresh(true).await;
            let wait = if self.keys.current().is_empty() {
                retry = (retry * 2).min(interval);
                retry
            } else {
                retry = std::time::Duration::from_secs(1);
                interval
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// The metadata document, if `path` is one of its locations.
    pub fn metadata_response(&self, method: &Method, path: &str) -> Option<Response<Body>> {
        if !self.metadata_paths.iter().any(|p| p == path) {
            return None;
        }
        let mut response = match *method {
            Method::GET | Method::HEAD => Response::new(body::full(self.metadata.clone())),
            Method::OPTIONS => {
                let mut r = Response::new(body::empty());
                *r.status_mut() = StatusCode::NO_CONTENT;
                r
            }
            _ => {
                let mut r = Response::new(body::empty());
                *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
                r.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, OPTIONS"));
                return Some(r);
            }
        };
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        // Public by nature; browser-based clients read it cross-origin.
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, HEAD, OPTIONS"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=300"));
        Some(response)
    }

    /// Verifies the request's bearer token. The outcome is counted.
    pub async fn authenticate(&self, parts: &http::request::Parts) -> Result<Arc<Identity>, Denied> {
        let result = self.verify_request(parts).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(denied) => denied.outcome,
        };
        self.metrics
            .auth_checks
            .get_or_create(&AuthLabels { outcome })
            .inc();
        if let Err(denied) = &result {
            tracing::info!(outcome, path = %parts.uri.path(), reason = %denied.message, "request refused: no valid token");
        }
        result
    }

    async fn verify_request(&self, parts: &http::request::Parts) -> Result<Arc<Identity>, Denied> {
        let query_token = parts
            .uri
            .query()
            .is_some_and(|q| q.split('&').any(|p| p.split('=').next() == Some("access_token")));
        if query_token {
            return Err(self.bad_request(
                "query_token",
                "access tokens are not accepted in the query string; send them in the Authorization header",
            ));
        }
        let mut values = parts.headers.get_all(header::AUTHORIZATION).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            if parts.headers.contains_key(header::AUTHORIZATION) {
                return Err(self.bad_request("bad_header", "more than one Authorization header"));
            }
            return Err(self.unauthorized("missing", None, "an access token is required"));
        };
        let text = value.to_str().unwrap_or_default();
        let Some((scheme, token)) = text.split_once(' ') else {
            return Err(self.unauthorized("missing", None, "a Bearer access token is required"));
        };
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(self.unauthorized("missing", None, "a Bearer access token is required"));
        }
        let token = token.trim();
        // RFC 6750 §2.1's b64token.
        let well_formed = !token.is_empty()
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b));
        if !well_formed {
            return Err(self.bad_request("bad_header", "the Authorization header is not a Bearer token"));
        }
        let identity = self
            .verify_cached(token)
            .await
            .map_err(|Invalid(outcome, why)| match outcome {
                "keys_unavailable" => Denied {
                    outcome,
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    challenge: None,
                    message: why,
                },
                _ => self.unauthorized(outcome, Some("invalid_token"), &why),
            })?;
        let Some(exchange) = &self.exchange else {
            return Ok(identity);
        };
        let upstream_token = exchange.token_for(identity.principal(), token).await?;
        Ok(Arc::new(Identity {
            upstream_token: Some(upstream_token),
            ..Identity::clone(&identity)
        }))
    }

    /// Whether `identity` holds every scope the request needs: the default
    /// ones, and for each message in `body` those of its method and of the
    /// tool, prompt or resource it names. Refused requests get one
    /// challenge listing every scope needed.
    pub fn authorize(&self, identity: &Identity, body: Option<&jsonrpc::Body>) -> Result<(), Denied> {
        let s = &self.settings;
        let mut needed: BTreeSet<&String> = s.default_scopes.iter().collect();
        for message in body.map(jsonrpc::Body::messages).unwrap_or_default() {
            if message.kind == Kind::Response {
                continue;
            }
            let Some(method) = message.method.as_deref() else {
                continue;
            };
            needed.extend(s.method_scopes.get(method).into_iter().flatten());
            let by_name = match method {
                "tools/call" => &s.tool_scopes,
                "prompts/get" => &s.prompt_scopes,
                "resources/read" => &s.resource_scopes,
                _ => continue,
            };
            if let Some(name) = &message.name {
                needed.extend(by_name.get(name).into_iter().flatten());
            }
        }
        if needed.iter().all(|scope| identity.scopes.contains(*scope)) {
            return Ok(());
        }
        let list: Vec<&str> = needed.iter().map(|s| s.as_str()).collect();
        let missing: Vec<&str> = list
            .iter()
            .copied()
            .filter(|scope| !identity.scopes.contains(*scope))
            .collect();
        self.metrics
            .auth_checks
            .get_or_create(&AuthLabels {
                outcome: "insufficient_scope",
            })
            .inc();
        tracing::info!(principal = %identity, missing = ?missing, "request refused: insufficient scope");
        Err(Denied {
            outcome: "insufficient_scope",
            status: StatusCode::FORBIDDEN,
            challenge: Some(format!(
                "Bearer error=\"insufficient_scope\", scope=\"{}\", resource_metadata=\"{}\", error_description=\"this operation needs scope {}\"",
                list.join(" "),
                self.metadata_url,
                list.join(" ")
            )),
            message: format!(
                "insufficient scope: this operation needs {}; the token lacks {}",
                list.join(" "),
                missing.join(" ")
            ),
        })
    }

    /// Makes a request's headers fit for the upstream: the client's
    /// token and any header posing as a claim header go, the claims
    /// configured go in.
    pub fn upstream_headers(&self, headers: &mut HeaderMap, identity: &Identity) {
        headers.remove(header::AUTHORIZATION);
        for (_, name) in &self.claim_headers {
            headers.remove(name);
        }
        for (name, value) in &identity.headers {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                headers.insert(name, value);
            }
        }
        if let (Some(exchange), Some(token)) = (&self.exchange, &identity.upstream_token)
            && let (Ok(name), Ok(mut value)) = (
                HeaderName::from_bytes(exchange.header().as_bytes()),
                HeaderValue::from_str(&format!("Bearer {token}")),
            )
        {
            value.set_sensitive(true);
            headers.insert(name, value);
        }
    }

    /// Counts a request refused because its session belongs to another
    /// principal (it is answered as if the session did not exist).
    pub fn count_wrong_principal(&self, identity: Option<&Identity>, session: &str) {
        self.metrics
            .auth_checks
            .get_or_create(&AuthLabels {
                outcome: "wrong_principal",
            })
            .inc();
        match identity {
            Some(identity) => {
                tracing::warn!(principal = %identity, session, "request for another principal's session refused (404)")
            }
            None => tracing::warn!(
                session,
                "request without a principal for a bound session refused (404)"
            ),
        }
    }

    fn challenge(&self, error: Option<&str>, description: &str) -> String {
        let mut out = String::from("Bearer ");
        if let Some(error) = error {
            out.push_str(&format!(
                "error=\"{error}\", error_description=\"{description}\", "
            ));
        }
        out.push_str(&format!("resource_metadata=\"{}\"", self.metadata_url));
        if !self.settings.default_scopes.is_empty() {
            let scopes: Vec<&str> = self.settings.default_scopes.iter().map(String::as_str).collect();
            out.push_str(&format!(", scope=\"{}\"", scopes.join(" ")));
        }
        out
    }

    fn unauthorized(&self, outcome: &'static str, error: Option<&str>, why: &str) -> Denied {
        Denied {
            outcome,
            status: StatusCode::UNAUTHORIZED,
            challenge: Some(self.challenge(error, why)),
            message: format!("unauthorized: {why}"),
        }
    }

    fn bad_request(&self, outcome: &'static str, why: &str) -> Denied {
        Denied {
            outcome,
            status: StatusCode::BAD_REQUEST,
            challenge: Some(self.challenge(Some("invalid_request"), why)),
            message: format!("invalid request: {why}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn a_request_needs_every_scope_its_messages_name() {
        let settings = shadowcat_crds::SidecarConfig::from_yaml(
            "upstream: http://127.0.0.1:1/mcp
auth:
  issuer: https://id.example.com
  resource: https://mcp.example.com/mcp
  scopes:
    default: [mcp]
    methods: {resources/read: [read]}
    tools: {rm: [admin, write]}
    prompts: {secret: [prompts]}
    resources: {'file:///etc': [admin]}
",
        )
        .unwrap()
        .validate()
        .unwrap()
        .auth
        .unwrap();
        let auth = Auth::new(settings, None, "/mcp", Arc::new(Metrics::new())).unwrap();
        let who = |scopes: &[&str]| Identity {
            issuer: "https://id.example.com".into(),
            subject: "s".into(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            headers: BTreeMap::new(),
            upstream_token: None,
            claims: Default::default(),
            principal: Default::default(),
        };
        let body = |text: &str| jsonrpc::parse(text.as_bytes()).unwrap();
        let needs = |scopes: &[&str], text: &str| match auth.authorize(&who(scopes), Some(&body(text))) {
            Ok(()) => None,
            Err(denied) => {
                assert_eq!(denied.status, StatusCode::FORBIDDEN);
                let challenge = denied.challenge.unwrap();
                let listed = challenge
                    .split("scope=\"")
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap();
                Some(listed.to_owned())
            }
        };
        let rm = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"rm"}}"#;
        let read = r#"{"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"file:///etc"}}"#;
        let prompt = r#"{"jsonrpc":"2.0","id":3,"method":"prompts/get","params":{"name":"secret"}}"#;
        assert_eq!(needs(&["mcp"], rm).as_deref(), Some("admin mcp write"));
        assert_eq!(needs(&["mcp", "admin", "write"], rm), None);
        assert_eq!(needs(&["mcp", "admin"], read).as_deref(), Some("admin mcp read"));
        assert_eq!(needs(&["mcp"], prompt).as_deref(), Some("mcp prompts"));
        // A batch needs what each of its messages needs, all in one challenge.
        let batch = format!("[{rm},{read}]");
        assert_eq!(needs(&["mcp"], &batch).as_deref(), Some("admin mcp read write"));
        // Responses to the server's requests need only the default.
        let response = r#"{"jsonrpc":"2.0","id":9,"result":{}}"#;
        assert_eq!(needs(&["mcp"], response), None);
        assert_eq!(needs(&[], response).as_deref(), Some("mcp"));
    }
}

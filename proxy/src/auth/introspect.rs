//! Opaque access tokens, checked at the issuer's introspection endpoint
//! (RFC 7662) with Shadowcat's own client credentials. The answer's claims go
//! through the same audience, subject and scope rules as a JWT's.

use serde_json::{Map, Value};
use shadowcat_crds::IntrospectionSettings;
use tokio::sync::OnceCell;

use super::Invalid;
use super::client::AsClient;

/// Asks the authorization server about tokens.
pub struct Introspector {
    client: AsClient,
    issuer: String,
    client_id: String,
    secret: String,
    endpoint: OnceCell<String>,
}

impl std::fmt::Debug for Introspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Introspector")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl Introspector {
    /// An introspector; the client secret is read now (an unreadable file is
    /// an error at startup).
    pub fn new(settings: &IntrospectionSettings, issuer: &str, client: AsClient) -> anyhow::Result<Self> {
        let path = &settings.client_secret_file;
        let secret = std::fs::read_to_string(path)
            .map_err(|e| {
                anyhow::anyhow!(
                    "invalid config `auth.introspection.clientSecretFile`: cannot read {path}: {e}"
                )
            })?
            .trim_end()
            .to_owned();
        let endpoint = OnceCell::new();
        if let Some(url) = &settings.endpoint {
            let _ = endpoint.set(url.clone());
        }
        Ok(Self {
            client,
            issuer: issuer.to_owned(),
            client_id: settings.client_id.clone(),
            secret,
            endpoint,
        })
    }

    /// The claims of an active token, with `iss` filled in when the answer
    /// leaves it out (it can only be the issuer that was asked).
    pub async fn introspect(&self, token: &str) -> Result<Map<String, Value>, Invalid> {
        let unavailable = |why: String| {
            tracing::warn!(error = %why, "cannot introspect a token");
            Invalid(
                "keys_unavailable",
                "the authorization server cannot check the token now; retry".into(),
            )
        };
        let endpoint = self
            .endpoint
            .get_or_try_init(|| async {
                let (location, metadata) = super::keys::discover(&self.client, &self.issuer).await?;
                metadata
                    .get("introspection_endpoint")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| format!("{location} has no introspection_endpoint"))
            })
            .await
            .map_err(unavailable)?;
        let form = [("token", token), ("token_type_hint", "access_token")];
        let (status, answer) = self
            .client
            .post_form(endpoint, (&self.client_id, &self.secret), &form)
            .await
            .map_err(unavailable)?;
        if !status.is_success() {
            return Err(unavailable(format!("introspection answered {status}")));
        }
        let Value::Object(mut claims) = answer else {
            return Err(unavailable("introspection answered no JSON object".into()));
        };
        if claims.get("active") != Some(&Value::Bool(true)) {
            return Err(Invalid(
                "inactive",
                "the token is not active (unknown, expired or revoked)".into(),
            ));
        }
        match claims.get("iss").and_then(Value::as_str) {
            None => {
                claims.insert("iss".into(), Value::String(self.issuer.clone()));
            }
            Some(iss) if iss.trim_end_matches('/') == self.issuer.trim_end_matches('/') => {}
            Some(_) => {
                return Err(Invalid(
                    "wrong_issuer",
                    format!("the token was not issued by {}", self.issuer),
                ));
            }
        }
        Ok(claims)
    }
}

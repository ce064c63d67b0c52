//! Opaque access tokens, checked at the issuer's introspection endpoint
//! (RFC 7662) with Shadowcat's own client credentials. The answer's claims go
//! through the same audience, subject and scope rules as a JWT's.

use serde_json::{Map, Value};
use shadowcat_crds::IntrospectionSettings;

use super::Invalid;
use super::client::{AsClient, ClientEndpoint};

/// Asks the authorization server about tokens.
#[derive(Debug)]
pub struct Introspector {
    endpoint: ClientEndpoint,
    issuer: String,
}

impl Introspector {
    /// An introspector; the client secret is read now.
    pub fn new(settings: &IntrospectionSettings, issuer: &str, client: AsClient) -> anyhow::Result<Self> {
        let endpoint = ClientEndpoint::new(
            client,
            issuer,
            "introspection_endpoint",
            settings.endpoint.as_deref(),
            (&settings.client_id, &settings.client_secret_file),
            "auth.introspection",
        )?;
        Ok(Self {
            endpoint,
            issuer: issuer.to_owned(),
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
        let form = [("token", token), ("token_type_hint", "access_token")];
        let (status, answer) = self.endpoint.post(&form).await.map_err(unavailable)?;
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

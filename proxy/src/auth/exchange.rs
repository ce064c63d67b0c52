//! The upstream's credential by RFC 8693 token exchange: the client's
//! verified token is traded at the authorization server for a token meant for
//! the upstream's audience, acting for the same subject. One exchange per
//! principal serves its requests until that token nears its expiry.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::Value;
use shadowcat_crds::TokenExchangeSettings;

use super::Denied;
use super::client::{AsClient, ClientEndpoint};

const GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
/// Principals whose exchanged tokens are kept, at most.
const MAX_KEPT: usize = 10_000;
/// An exchanged token this close to its expiry is exchanged again.
const MARGIN: Duration = Duration::from_secs(30);
/// Lifetime assumed when the answer gives none.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);

/// Exchanges tokens for one upstream audience.
#[derive(Debug)]
pub struct Exchanger {
    settings: TokenExchangeSettings,
    endpoint: ClientEndpoint,
    kept: Mutex<HashMap<String, (String, Instant)>>,
}

impl Exchanger {
    /// An exchanger; the client secret is read now.
    pub fn new(settings: TokenExchangeSettings, issuer: &str, client: AsClient) -> anyhow::Result<Self> {
        let endpoint = ClientEndpoint::new(
            client,
            issuer,
            "token_endpoint",
            settings.token_endpoint.as_deref(),
            (&settings.client_id, &settings.client_secret_file),
            "upstreamAuth.tokenExchange",
        )?;
        Ok(Self {
            settings,
            endpoint,
            kept: Mutex::default(),
        })
    }

    /// The header the exchanged token goes in.
    pub fn header(&self) -> &str {
        &self.settings.header
    }

    /// A token for the upstream acting for `principal`, whose own (verified)
    /// token is `subject_token`.
    pub async fn token_for(&self, principal: &str, subject_token: &str) -> Result<String, Denied> {
        if let Some((token, until)) = self.kept.lock().unwrap_or_else(|p| p.into_inner()).get(principal)
            && Instant::now() + MARGIN < *until
        {
            return Ok(token.clone());
        }
        let s = &self.settings;
        let mut form = vec![
            ("grant_type", GRANT),
            ("subject_token", subject_token),
            ("subject_token_type", ACCESS_TOKEN),
            ("requested_token_type", ACCESS_TOKEN),
            ("resource", s.audience.as_str()),
            ("audience", s.audience.as_str()),
        ];
        if let Some(scope) = &s.scope {
            form.push(("scope", scope));
        }
        let (status, answer) = self.endpoint.post(&form).await.map_err(|e| unavailable(&e))?;
        if status.is_server_error() {
            return Err(unavailable(&format!("the token endpoint answered {status}")));
        }
        let token = answer.get("access_token").and_then(Value::as_str);
        let (true, Some(token)) = (status.is_success(), token) else {
            let error = answer.get("error").and_then(Value::as_str).unwrap_or("no token");
            tracing::warn!(audience = %s.audience, %status, error, "token exchange refused");
            return Err(Denied {
                outcome: "exchange_refused",
                status: StatusCode::FORBIDDEN,
                challenge: None,
                message: format!(
                    "forbidden: the authorization server will not issue a token for the upstream ({error})"
                ),
            });
        };
        let lifetime = answer
            .get("expires_in")
            .and_then(Value::as_u64)
            .map_or(DEFAULT_LIFETIME, Duration::from_secs);
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() >= MAX_KEPT {
            let now = Instant::now();
            kept.retain(|_, (_, until)| *until > now);
            if kept.len() >= MAX_KEPT {
                kept.clear();
            }
        }
        kept.insert(
            principal.to_owned(),
            (token.to_owned(), Instant::now() + lifetime),
        );
        Ok(token.to_owned())
    }
}

fn unavailable(why: &str) -> Denied {
    tracing::warn!(error = why, "cannot exchange a token for the upstream");
    Denied {
        outcome: "exchange_unavailable",
        status: StatusCode::SERVICE_UNAVAILABLE,
        challenge: None,
        message: "the upstream's credential cannot be obtained now; retry".into(),
    }
}

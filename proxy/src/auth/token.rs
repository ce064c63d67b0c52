//! Verifying one token: a JWT against the issuer's keys, or an opaque one
//! by introspection, into an [`Identity`]; a token that verified is
//! remembered until its `exp`.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderValue;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};
use shadowcat_crds::canonical_uri;

use super::{Auth, Candidates, Identity};

/// Why a token was refused (before it becomes a [`Denied`]).
pub(super) struct Invalid(pub(super) &'static str, pub(super) String);

/// Verified tokens kept, at most: a client sends the same token with every
/// request, and checking its signature again is most of the cost.
const MAX_VERIFIED: usize = 10_000;

/// A token that verified: who it names and how long it is good for.
pub(super) struct Verified {
    identity: Arc<Identity>,
    /// `exp`, and `nbf` if any, in Unix seconds.
    exp: u64,
    nbf: u64,
    /// The key set it was verified under ([`Keys::generation`]).
    generation: u64,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Auth {
    /// [`Auth::verify_token`], skipped for a token that verified before
    /// under the same keys and is still within its validity (with leeway).
    pub(super) async fn verify_cached(&self, token: &str) -> Result<Arc<Identity>, Invalid> {
        use sha2::Digest;
        let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let leeway = self.settings.leeway.as_secs();
        let now = now_secs();
        let generation = self.keys.generation();
        {
            let cache = self.verified.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(v) = cache.get(&digest)
                && v.generation == generation
                && now <= v.exp.saturating_add(leeway)
                && now.saturating_add(leeway) >= v.nbf
            {
                return Ok(v.identity.clone());
            }
        }
        let (identity, exp, nbf) = self.verify_token(token).await?;
        let identity = Arc::new(identity);
        let mut cache = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_VERIFIED {
            cache.retain(|_, v| now <= v.exp.saturating_add(leeway) && v.generation == generation);
            if cache.len() >= MAX_VERIFIED {
                // Still full of live tokens: start over rather than grow.
                cache.clear();
            }
        }
        cache.insert(
            digest,
            Verified {
                identity: identity.clone(),
                exp,
                nbf,
                generation,
            },
        );
        Ok(identity)
    }

    /// Verifies a token: its identity, `exp` and `nbf` (0 when absent).
    async fn verify_token(&self, token: &str) -> Result<(Identity, u64, u64), Invalid> {
        if let Some(introspector) = &self.introspection
            && token.split('.').count() != 3
        {
            let claims = introspector.introspect(token).await?;
            let time = |claim: &str| claims.get(claim).and_then(Value::as_u64).unwrap_or(0);
            let (exp, nbf) = (time("exp"), time("nbf"));
            let leeway = self.settings.leeway.as_secs();
            if exp != 0 && now_secs() > exp.saturating_add(leeway) {
                return Err(Invalid("expired", "the token has expired".into()));
            }
            // An answer without `exp` is trusted for a minute at most.
            let exp = if exp == 0 { now_secs() + 60 } else { exp };
            return Ok((self.identity(claims)?, exp, nbf));
        }
        let (alg, kid) = peek_header(token)?;
        let Some(alg) = Algorithm::from_str(&alg)
            .ok()
            .filter(|a| self.accepted.contains(a))
        else {
            return Err(Invalid(
                "algorithm",
                format!("tokens signed with {alg:?} are not accepted"),
            ));
        };
        let keys = match self.keys.candidates(kid.as_deref(), alg).await {
            Candidates::Found(keys) => keys,
            Candidates::Unknown => {
                return Err(Invalid(
                    "unknown_key",
                    "the token is signed with a key the issuer does not publish".into(),
                ));
            }
            Candidates::Unavailable => {
                return Err(Invalid(
                    "keys_unavailable",
                    "the authorization server's keys cannot be fetched now; retry".into(),
                ));
            }
        };
        let mut validation = Validation::new(alg);
        validation.leeway = self.settings.leeway.as_secs();
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        let mut last = None;
        for key in keys {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.decoding, &validation) {
                Ok(data) => {
                    let time = |claim: &str| data.claims.get(claim).and_then(Value::as_u64).unwrap_or(0);
                    let (exp, nbf) = (time("exp"), time("nbf"));
                    return Ok((self.identity(data.claims)?, exp, nbf));
                }
                Err(e) => last = Some(e),
            }
        }
        Err(match last.as_ref().map(jsonwebtoken::errors::Error::kind) {
            Some(jsonwebtoken::errors::ErrorKind::ExpiredSignature) => {
                Invalid("expired", "the token has expired".into())
            }
            Some(jsonwebtoken::errors::ErrorKind::ImmatureSignature) => {
                Invalid("not_yet_valid", "the token is not valid yet (nbf)".into())
            }
            Some(jsonwebtoken::errors::ErrorKind::InvalidIssuer) => Invalid(
                "wrong_issuer",
                format!("the token was not issued by {}", self.settings.issuer),
            ),
            Some(jsonwebtoken::errors::ErrorKind::MissingRequiredClaim(claim)) => {
                Invalid("malformed", format!("the token has no `{claim}` claim"))
            }
            Some(jsonwebtoken::errors::ErrorKind::InvalidSignature) => {
                Invalid("bad_signature", "the token's signature does not verify".into())
            }
            Some(jsonwebtoken::errors::ErrorKind::InvalidAlgorithm) => {
                Invalid("algorithm", "the token's algorithm does not fit its key".into())
            }
            _ => Invalid("malformed", "the token is not a well-formed JWT".into()),
        })
    }

    /// The identity a verified token's claims give, once its audience is
    /// this resource.
    fn identity(&self, claims: Map<String, Value>) -> Result<Identity, Invalid> {
        let audiences: Vec<&str> = match claims.get("aud") {
            Some(Value::String(one)) => vec![one],
            Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let ours = audiences.iter().any(|aud| {
            let aud = canonical_uri(aud).unwrap_or_else(|| (*aud).to_owned());
            self.settings.audiences.contains(&aud)
        });
        if !ours {
            return Err(Invalid(
                "wrong_audience",
                format!("the token is not for this resource ({})", self.settings.resource),
            ));
        }
        let subject = match claims.get("sub") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(Invalid("malformed", "the token has no `sub` claim".into())),
        };
        let scopes = match (claims.get("scope"), claims.get("scp")) {
            (Some(Value::String(s)), _) | (None, Some(Value::String(s))) => {
                s.split_ascii_whitespace().map(str::to_owned).collect()
            }
            (None, Some(Value::Array(list))) => {
                list.iter().filter_map(Value::as_str).map(str::to_owned).collect()
            }
            _ => BTreeSet::new(),
        };
        let mut headers = BTreeMap::new();
        for (claim, name) in &self.claim_headers {
            let value = match claims.get(claim) {
                Some(Value::String(s)) => s.clone(),
                Some(v @ (Value::Number(_) | Value::Bool(_))) => v.to_string(),
                Some(Value::Array(list)) => list
                    .iter()
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                    .collect::<Vec<_>>()
                    .join(","),
                _ => continue,
            };
            if HeaderValue::from_str(&value).is_ok() {
                headers.insert(name.as_str().to_owned(), value);
            }
        }
        Ok(Identity {
            issuer: self.settings.issuer.clone(),
            subject,
            scopes,
            headers,
            upstream_token: None,
            claims: policy_claims(claims),
            principal: Default::default(),
        })
    }
}

/// The claims policy rules may read: all of them but the ones that only
/// serve verification (they stay out of the peer header, too).
fn policy_claims(mut claims: Map<String, Value>) -> Map<String, Value> {
    for verification in ["exp", "nbf", "iat", "jti", "active", "token_type"] {
        claims.remove(verification);
    }
    claims
}

/// The `alg` and `kid` of a token's header, read without trusting it.
fn peek_header(token: &str) -> Result<(String, Option<String>), Invalid> {
    let malformed = || Invalid("malformed", "the token is not a well-formed JWT".into());
    let mut segments = token.split('.');
    let (Some(head), Some(_), Some(_), None) =
        (segments.next(), segments.next(), segments.next(), segments.next())
    else {
        return Err(malformed());
    };
    let head: Value = URL_SAFE_NO_PAD
        .decode(head)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(malformed)?;
    let alg = head.get("alg").and_then(Value::as_str).ok_or_else(malformed)?;
    let kid = head.get("kid").and_then(Value::as_str).map(str::to_owned);
    Ok((alg.to_owned(), kid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_headers_are_read_without_trust() {
        let head = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"k"}"#);
        let (alg, kid) = peek_header(&format!("{head}.e30.")).ok().unwrap();
        assert_eq!((alg.as_str(), kid.as_deref()), ("none", Some("k")));
        assert!(peek_header("a.b").is_err());
        assert!(peek_header("!.e30.x").is_err());
    }
}

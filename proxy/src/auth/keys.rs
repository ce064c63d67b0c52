//! The issuer's signing keys: found through its metadata, fetched, cached,
//! refreshed on a timer and when a token names a key not yet known (a
//! rotation) — at most once per `jwks_min_refresh_interval`, however many
//! tokens name unknown keys.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;
use shadowcat_crds::AuthSettings;
use tokio::time::Instant;

use super::client::AsClient;
use crate::metrics::{JwksLabels, Metrics};

/// One verification key.
pub struct Key {
    /// For the signature check.
    pub decoding: DecodingKey,
    /// The algorithms it may verify (by its type, curve and `alg`).
    pub algorithms: Vec<Algorithm>,
}

/// The keys as last fetched.
#[derive(Default)]
pub struct KeySet {
    by_kid: HashMap<String, Arc<Key>>,
    /// Keys without a `kid`: tried in turn for tokens without one.
    anonymous: Vec<Arc<Key>>,
}

impl KeySet {
    /// Reads a JWKS document, keeping the keys Shadowcat may use for
    /// signatures: asymmetric ones (never an HMAC secret from a public
    /// document), meant for signing, of an accepted algorithm.
    pub fn parse(document: &Value, accepted: &[Algorithm]) -> Result<Self, String> {
        let keys = document
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("no `keys` array")?;
        let mut set = KeySet::default();
        for raw in keys {
            let Ok(jwk) = serde_json::from_value::<Jwk>(raw.clone()) else {
                let kid = raw.get("kid").cloned().unwrap_or_default();
                tracing::debug!(%kid, "skipping a key of an unknown kind");
                continue;
            };
            if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
                continue;
            }
            let algorithms: Vec<Algorithm> = family(&jwk.algorithm)
                .iter()
                .copied()
                .filter(|a| accepted.contains(a))
                .filter(|a| {
                    jwk.common
                        .key_algorithm
                        .is_none_or(|k| k == KeyAlgorithm::from(*a))
                })
                .collect();
            if algorithms.is_empty() {
                continue;
            }
            let Ok(decoding) = DecodingKey::from_jwk(&jwk) else {
                continue;
            };
            let key = Arc::new(Key { decoding, algorithms });
            match jwk.common.key_id {
                Some(kid) => {
                    set.by_kid.insert(kid, key);
                }
                None => set.anonymous.push(key),
            }
        }
        Ok(set)
    }

    /// How many keys it holds.
    pub fn len(&self) -> usize {
        self.by_kid.len() + self.anonymous.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The keys that may have signed a token with this `kid` and `alg`.
    fn candidates(&self, kid: Option<&str>, alg: Algorithm) -> Vec<Arc<Key>> {
        let keys: Vec<&Arc<Key>> = match kid {
            Some(kid) => self.by_kid.get(kid).into_iter().collect(),
            None => self.anonymous.iter().chain(self.by_kid.values()).collect(),
        };
        keys.into_iter()
            .filter(|k| k.algorithms.contains(&alg))
            .cloned()
            .collect()
    }
}

/// The algorithms a key of this type (and curve) can verify.
fn family(params: &AlgorithmParameters) -> &'static [Algorithm] {
    use Algorithm::*;
    match params {
        AlgorithmParameters::RSA(_) => &[RS256, RS384, RS512, PS256, PS384, PS512],
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => &[ES256],
            EllipticCurve::P384 => &[ES384],
            _ => &[],
        },
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => &[EdDSA],
        // Symmetric keys are secrets: a published one verifies nothing.
        _ => &[],
    }
}

/// Where to find the keys and when they were fetched.
struct Fetching {
    jwks_url: Option<String>,
    last_attempt: Option<Instant>,
}

/// The issuer's keys, kept current.
pub struct Keys {
    client: AsClient,
    issuer: String,
    accepted: Vec<Algorithm>,
    min_interval: Duration,
    set: RwLock<Arc<KeySet>>,
    /// Counts key set changes: a verification made under an older set is
    /// not taken on trust any more.
    generation: std::sync::atomic::AtomicU64,
    fetching: tokio::sync::Mutex<Fetching>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("issuer", &self.issuer)
            .field("keys", &self.current().len())
            .finish()
    }
}

impl Keys {
    /// Keys of the issuer `settings` name; none fetched yet.
    pub fn new(
        settings: &AuthSettings,
        accepted: Vec<Algorithm>,
        client: AsClient,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            client,
            issuer: settings.issuer.clone(),
            accepted,
            min_interval: settings.jwks_min_refresh_interval,
            set: RwLock::new(Arc::default()),
            generation: std::sync::atomic::AtomicU64::new(0),
            fetching: tokio::sync::Mutex::new(Fetching {
                jwks_url: settings.jwks_url.clone(),
                last_attempt: None,
            }),
            metrics,
        }
    }

    /// Which key set is current (it changes with every fetch).
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The keys as last fetched.
    pub fn current(&self) -> Arc<KeySet> {
        self.set.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The keys that may have signed a token, fetching the set again when
    /// none is known for its `kid` (rate-limited).
    pub async fn candidates(&self, kid: Option<&str>, alg: Algorithm) -> Candidates {
        let known = self.current().candidates(kid, alg);
        if !known.is_empty() {
            return Candidates::Found(known);
        }
        let before = self.current();
        self.refresh(false).await;
        let after = self.current();
        let found = after.candidates(kid, alg);
        match () {
            () if !found.is_empty() => Candidates::Found(found),
            () if after.is_empty() => Candidates::Unavailable,
            () if Arc::ptr_eq(&before, &after) && kid.is_some() => Candidates::Unknown,
            () => Candidates::Unknown,
        }
    }

    /// Fetches the keys now; unless `forced` (the timer), only if the last
    /// attempt is older than the minimum interval. Concurrent callers wait
    /// for one fetch. On failure the keys already held stay.
    pub async fn refresh(&self, forced: bool) {
        let mut fetching = self.fetching.lock().await;
        if !forced
            && let Some(at) = fetching.last_attempt
            && at.elapsed() < self.min_interval
        {
            return;
        }
        fetching.last_attempt = Some(Instant::now());
        match self.fetch(&mut fetching).await {
            Ok(set) => {
                tracing::info!(issuer = %self.issuer, keys = set.len(), "signing keys fetched");
                self.count("ok");
                *self.set.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
                self.generation.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            }
            Err(e) => {
                tracing::warn!(issuer = %self.issuer, error = %e, "cannot fetch signing keys; keeping those held");
                self.count("error");
                // Discovery runs again next time: the metadata may have moved.
                fetching.jwks_url = None;
            }
        }
    }

    fn count(&self, result: &'static str) {
        self.metrics
            .auth_key_fetches
            .get_or_create(&JwksLabels { result })
            .inc();
    }

    async fn fetch(&self, fetching: &mut Fetching) -> Result<KeySet, String> {
        let url = match &fetching.jwks_url {
            Some(url) => url.clone(),
            None => {
                let url = self.discover().await?;
                fetching.jwks_url = Some(url.clone());
                url
            }
        };
        let document = self
            .client
            .get_json(&url)
            .await?
            .ok_or_else(|| format!("{url}: 404"))?;
        let set = KeySet::parse(&document, &self.accepted).map_err(|e| format!("{url}: {e}"))?;
        if set.is_empty() {
            return Err(format!("{url}: no usable signing key"));
        }
        Ok(set)
    }

    /// The JWKS URL from the issuer's metadata.
    async fn discover(&self) -> Result<String, String> {
        let (location, metadata) = discover(&self.client, &self.issuer).await?;
        metadata
            .get("jwks_uri")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("{location} has no jwks_uri"))
    }
}

/// The issuer's metadata and where it was found: RFC 8414 first (its
/// well-known segment goes before the issuer's path), then OpenID Connect
/// discovery (appended). The metadata must name this very issuer, or it is
/// refused (a mix-up).
pub async fn discover(client: &AsClient, issuer: &str) -> Result<(String, Value), String> {
    let issuer = issuer.trim_end_matches('/');
    let (origin, path) = split_origin(issuer);
    let locations = [
        format!("{origin}/.well-known/oauth-authorization-server{path}"),
        format!("{issuer}/.well-known/openid-configuration"),
    ];
    let mut tried = Vec::new();
    for location in locations {
        match client.get_json(&location).await {
            Ok(Some(metadata)) => {
                let named = metadata.get("issuer").and_then(Value::as_str);
                if named.map(|n| n.trim_end_matches('/')) != Some(issuer) {
                    return Err(format!(
                        "{location} names issuer {named:?}, not {issuer:?}: refusing its keys"
                    ));
                }
                return Ok((location, metadata));
            }
            Ok(None) => tried.push(format!("{location}: 404")),
            Err(e) => tried.push(e),
        }
    }
    Err(format!(
        "no authorization server metadata found ({})",
        tried.join("; ")
    ))
}

/// What the key set holds for a token.
pub enum Candidates {
    /// Keys to try.
    Found(Vec<Arc<Key>>),
    /// No key of that id (after a refresh, or too soon for one).
    Unknown,
    /// No keys at all: the issuer could not be reached yet.
    Unavailable,
}

/// `https://host/path` as (`https://host`, `/path`).
pub fn split_origin(url: &str) -> (&str, &str) {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(i) => url.split_at(after_scheme + i),
        None => (url, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_asymmetric_signing_keys_of_accepted_algorithms_are_kept() {
        let rsa = json!({"kty": "RSA", "kid": "r", "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw", "e": "AQAB"});
        let hmac = json!({"kty": "oct", "kid": "h", "k": "c2VjcmV0"});
        let encrypting = json!({"kty": "RSA", "kid": "e", "use": "enc", "n": rsa["n"], "e": "AQAB"});
        let pinned = json!({"kty": "RSA", "kid": "p", "alg": "PS256", "n": rsa["n"], "e": "AQAB"});
        let odd = json!({"kty": "XYZ", "kid": "x"});
        let doc = json!({"keys": [rsa, hmac, encrypting, pinned, odd]});
        let set = KeySet::parse(&doc, &[Algorithm::RS256, Algorithm::PS256, Algorithm::HS256]).unwrap();
        assert_eq!(set.len(), 2);
        assert_eq!(set.candidates(Some("r"), Algorithm::RS256).len(), 1);
        assert_eq!(set.candidates(Some("r"), Algorithm::PS256).len(), 1);
        assert!(
            set.candidates(Some("h"), Algorithm::HS256).is_empty(),
            "HMAC from a JWKS"
        );
        assert!(
            set.candidates(Some("p"), Algorithm::RS256).is_empty(),
            "the key's own alg binds"
        );
        assert!(
            set.candidates(Some("e"), Algorithm::RS256).is_empty(),
            "an encryption key"
        );
        assert_eq!(set.candidates(None, Algorithm::RS256).len(), 1);
        assert!(KeySet::parse(&json!({"nokeys": []}), &[]).is_err());
    }

    #[test]
    fn origins_split_from_paths() {
        assert_eq!(split_origin("https://a.b/t/x"), ("https://a.b", "/t/x"));
        assert_eq!(split_origin("https://a.b"), ("https://a.b", ""));
    }
}

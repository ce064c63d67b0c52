//! Peer authentication: an HMAC-SHA256, under the secret every replica
//! shares, over the request itself — method, path, session id, a digest of
//! the body, a timestamp and a random nonce. A signature is good for a short
//! window and only once (the receiver remembers nonces for that window), so
//! a captured request can be neither replayed nor altered.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use http::HeaderName;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Carries `t=<unix seconds>,n=<nonce>,sig=<hex hmac>`.
pub static PEER_AUTH: HeaderName = HeaderName::from_static("shadowcat-peer-auth");
/// Present on forwarded requests: the receiver serves them itself.
pub static PEER_HOP: HeaderName = HeaderName::from_static("shadowcat-hop");
/// The identity the forwarding replica verified (when tokens are verified);
/// signed with the rest of the request.
pub static PEER_IDENTITY: HeaderName = HeaderName::from_static("shadowcat-identity");

/// How far a signature's timestamp may be from the receiver's clock.
const WINDOW: Duration = Duration::from_secs(30);
/// Nonces remembered at most; beyond, peer requests are refused until old
/// ones age out (a flood of forwards is not worth running out of memory).
const MAX_NONCES: usize = 500_000;

/// What a signature covers.
#[derive(Clone, Copy, Debug)]
pub struct Signed<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// Request path.
    pub path: &'a str,
    /// The session id.
    pub session: &'a str,
    /// The body.
    pub body: &'a [u8],
    /// The verified identity, as [`crate::auth::Identity::to_wire`] writes
    /// it; empty when tokens are not verified.
    pub identity: &'a str,
}

/// Why a peer request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Not the header's shape.
    Malformed,
    /// Too old or from the future.
    Expired,
    /// Not signed with the shared secret, or not for this request.
    BadSignature,
    /// Seen before.
    Replayed,
    /// Too many nonces to remember.
    Overloaded,
}

/// The secret every replica shares, and the nonces seen recently.
pub struct PeerSecret {
    key: Vec<u8>,
    seen: Mutex<HashMap<[u8; 16], u64>>,
}

impl std::fmt::Debug for PeerSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerSecret(..)")
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

impl PeerSecret {
    /// A secret from its bytes (surrounding whitespace trimmed); `None` when
    /// too short to be a secret.
    pub fn new(bytes: &[u8]) -> Option<Self> {
        let text = bytes.trim_ascii();
        (text.len() >= 16).then(|| Self {
            key: text.to_vec(),
            seen: Mutex::default(),
        })
    }

    fn mac(&self, request: &Signed<'_>, t: u64, nonce: &[u8]) -> Hmac<Sha256> {
        // HMAC takes keys of any length.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!());
        let digest = Sha256::digest(request.body);
        for part in [
            b"shadowcat-peer-v2".as_slice(),
            request.method.as_bytes(),
            request.path.as_bytes(),
            request.session.as_bytes(),
            &digest,
            t.to_string().as_bytes(),
            nonce,
        ] {
            // Length-prefixed, so no two requests sign the same bytes.
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        // Only when present, so replicas that verify no tokens still agree
        // with those of the previous release during a rollout.
        if !request.identity.is_empty() {
            let part = request.identity.as_bytes();
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac
    }

    /// The header value authenticating `request`, now.
    pub fn sign(&self, request: &Signed<'_>) -> String {
        let mut nonce = [0u8; 16];
        rand::rng().fill_bytes(&mut nonce);
        self.sign_with(request, now_secs(), &nonce)
    }

    fn sign_with(&self, request: &Signed<'_>, t: u64, nonce: &[u8; 16]) -> String {
        let sig = self.mac(request, t, nonce).finalize().into_bytes();
        format!("t={t},n={},sig={}", hex(nonce), hex(&sig))
    }

    /// Checks that `header` authenticates `request` now, and has not been
    /// used before.
    pub fn verify(&self, request: &Signed<'_>, header: &str) -> Result<(), Refused> {
        self.verify_at(request, header, now_secs())
    }

    fn verify_at(&self, request: &Signed<'_>, header: &str, now: u64) -> Result<(), Refused> {
        let mut fields = header.split(',');
        let (Some(t), Some(n), Some(sig), None) = (
            fields.next().and_then(|f| f.strip_prefix("t=")),
            fields.next().and_then(|f| f.strip_prefix("n=")),
            fields.next().and_then(|f| f.strip_prefix("sig=")),
            fields.next(),
        ) else {
            return Err(Refused::Malformed);
        };
        let t: u64 = t.parse().map_err(|_| Refused::Malformed)?;
        let nonce: [u8; 16] = unhex(n)
            .and_then(|n| n.try_into().ok())
            .ok_or(Refused::Malformed)?;
        let sig = unhex(sig).ok_or(Refused::Malformed)?;
        if now.abs_diff(t) > WINDOW.as_secs() {
            return Err(Refused::Expired);
        }
        self.mac(request, t, &nonce)
            .verify_slice(&sig)
            .map_err(|_| Refused::BadSignature)?;
        self.remember(nonce, t, now)
    }

    fn remember(&self, nonce: [u8; 16], t: u64, now: u64) -> Result<(), Refused> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= MAX_NONCES {
            seen.retain(|_, at| now.abs_diff(*at) <= WINDOW.as_secs());
            if seen.len() >= MAX_NONCES {
                return Err(Refused::Overloaded);
            }
        }
        match seen.insert(nonce, t) {
            Some(_) => Err(Refused::Replayed),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(session: &'a str, body: &'a [u8]) -> Signed<'a> {
        Signed {
            method: "POST",
            path: "/mcp",
            session,
            body,
            identity: "",
        }
    }

    #[test]
    fn signatures_cover_the_request_and_are_good_once() {
        let secret = PeerSecret::new(b"  0123456789abcdef-shared\n").unwrap();
        let req = request("s1", b"{\"id\":1}");
        let header = secret.sign_with(&req, 1000, &[7; 16]);
        assert_eq!(secret.verify_at(&req, &header, 1010), Ok(()));
        assert_eq!(
            secret.verify_at(&req, &header, 1011),
            Err(Refused::Replayed),
            "a captured header works once"
        );
        let fresh = secret.sign_with(&req, 1000, &[8; 16]);
        for (other, what) in [
            (request("s2", b"{\"id\":1}"), "session"),
            (request("s1", b"{\"id\":2}"), "body"),
            (
                Signed {
                    method: "DELETE",
                    ..req
                },
                "method",
            ),
            (
                Signed {
                    path: "/other",
                    ..req
                },
                "path",
            ),
            (
                Signed {
                    identity: "someone-else",
                    ..req
                },
                "identity",
            ),
        ] {
            assert_eq!(
                secret.verify_at(&other, &fresh, 1000),
                Err(Refused::BadSignature),
                "bound to the {what}"
            );
        }
        assert_eq!(secret.verify_at(&req, &fresh, 1100), Err(Refused::Expired));
        let other = PeerSecret::new(b"another-secret-of-16").unwrap();
        assert_eq!(other.verify_at(&req, &fresh, 1000), Err(Refused::BadSignature));
        for bad in [
            "",
            "t=1000",
            "t=x,n=00,sig=00",
            "t=1000,n=zz,sig=00",
            "t=1000,n=07,sig=abc",
        ] {
            assert_eq!(
                secret.verify_at(&req, bad, 1000),
                Err(Refused::Malformed),
                "{bad}"
            );
        }
        assert!(PeerSecret::new(b"short").is_none());
    }
}

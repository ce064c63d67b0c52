//! Peer authentication: an HMAC-SHA256, under the shared secret, over the
//! session id and a timestamp. A signature is good for a short window, so a
//! captured header cannot be replayed for long.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use http::HeaderName;
use sha2::Sha256;

/// Carries `t=<unix seconds>,sig=<hex hmac>`.
pub static PEER_AUTH: HeaderName = HeaderName::from_static("shadowcat-peer-auth");
/// Present on forwarded requests: the receiver serves them itself.
pub static PEER_HOP: HeaderName = HeaderName::from_static("shadowcat-hop");

/// How far a signature's timestamp may be from the receiver's clock.
const WINDOW: Duration = Duration::from_secs(60);

/// The secret every replica shares.
#[derive(Clone)]
pub struct PeerSecret(Vec<u8>);

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

impl PeerSecret {
    /// A secret from its bytes (surrounding whitespace trimmed); `None` when
    /// too short to be a secret.
    pub fn new(bytes: &[u8]) -> Option<Self> {
        let text = bytes.trim_ascii();
        (text.len() >= 16).then(|| Self(text.to_vec()))
    }

    fn mac(&self, session: &str, t: u64) -> Hmac<Sha256> {
        // HMAC takes keys of any length.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!());
        mac.update(session.as_bytes());
        mac.update(b".");
        mac.update(t.to_string().as_bytes());
        mac
    }

    /// The header value authenticating a forward of `session`, now.
    pub fn sign(&self, session: &str) -> String {
        self.sign_at(session, now_secs())
    }

    fn sign_at(&self, session: &str, t: u64) -> String {
        let sig: String = self
            .mac(session, t)
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("t={t},sig={sig}")
    }

    /// Whether `header` authenticates a request for `session` now.
    pub fn verify(&self, session: &str, header: &str) -> bool {
        self.verify_at(session, header, now_secs())
    }

    fn verify_at(&self, session: &str, header: &str, now: u64) -> bool {
        let Some((t, sig)) = header
            .strip_prefix("t=")
            .and_then(|rest| rest.split_once(",sig="))
        else {
            return false;
        };
        let Ok(t) = t.parse::<u64>() else { return false };
        if now.abs_diff(t) > WINDOW.as_secs() || sig.len() % 2 != 0 {
            return false;
        }
        let Some(bytes) = (0..sig.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(sig.get(i..i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()
        else {
            return false;
        };
        self.mac(session, t).verify_slice(&bytes).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_for_their_session_secret_and_time() {
        let secret = PeerSecret::new(b"  0123456789abcdef-shared\n").unwrap();
        let header = secret.sign_at("s1", 1000);
        assert!(secret.verify_at("s1", &header, 1030));
        assert!(!secret.verify_at("s2", &header, 1030), "bound to the session");
        assert!(!secret.verify_at("s1", &header, 1100), "expires");
        let other = PeerSecret::new(b"another-secret-of-16").unwrap();
        assert!(!other.verify_at("s1", &header, 1000), "bound to the secret");
        for bad in ["", "t=1000", "t=x,sig=00", "t=1000,sig=zz", "t=1000,sig=abc"] {
            assert!(!secret.verify_at("s1", bad, 1000), "{bad}");
        }
        assert!(PeerSecret::new(b"short").is_none());
    }
}

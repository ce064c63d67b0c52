//! External hooks: an HTTP endpoint called with a message and its context,
//! which answers pass, modify or reject.
//!
//! Request (POST, JSON): `{"hook", "direction", "kind", "method", "name",
//! "session", "version", "principal": {"issuer", "subject"} | null,
//! "message"}`. Answer: `{"action": "pass"}`, `{"action": "modify",
//! "message": {...}}` or `{"action": "reject", "code"?, "message"?}`.
//! Anything else, a non-2xx status or no answer within the timeout is a
//! failure, handled by the hook's failure policy.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hmac::{KeyInit, Mac};
use http::{Request, header};
use http_body_util::Full;
use serde_json::{Value, json};
use shadowcat_crds::{FailurePolicy, HookConfig, PolicyError};
use tokio::sync::Semaphore;

use super::eval::{Expr, Facts, kind_name};
use super::{Direction, Scope};
use crate::auth::AsClient;

/// Header carrying the HMAC of a signed hook call.
pub const SIGNATURE: &str = "x-shadowcat-signature";
/// Header carrying the time a signed hook call was made (Unix seconds).
pub const TIMESTAMP: &str = "x-shadowcat-timestamp";

/// A hook, ready to call.
#[derive(Debug)]
pub struct Hook {
    /// From the config.
    pub id: String,
    url: String,
    /// Which messages it sees; all when `None`.
    pub when: Option<Expr>,
    secret: Option<Vec<u8>>,
    timeout: Duration,
    /// What a failure does.
    pub failure: FailurePolicy,
    permits: Arc<Semaphore>,
}

/// What a hook said.
#[derive(Debug, PartialEq)]
pub enum Answer {
    /// Go on unchanged.
    Pass,
    /// Go on with this message instead.
    Modify(Value),
    /// Refuse the message.
    Reject {
        /// JSON-RPC error code.
        code: i64,
        /// JSON-RPC error message.
        message: String,
    },
    /// No usable answer; why.
    Failed(&'static str, String),
}

impl Hook {
    /// From the config; reads the secret file.
    pub fn new(config: &HookConfig, at: &str) -> Result<Self, PolicyError> {
        let secret = match &config.secret_file {
            Some(path) => Some(
                std::fs::read(path)
                    .map(|s| s.trim_ascii().to_vec())
                    .map_err(|e| PolicyError {
                        path: format!("{at}.secretFile"),
                        position: None,
                        message: format!("cannot read {path}: {e}"),
                    })?,
            ),
            None => None,
        };
        Ok(Self {
            id: config.id.clone(),
            url: config.url.clone(),
            when: config
                .when
                .as_deref()
                .map(|w| Expr::compile(&format!("{at}.when"), w))
                .transpose()?,
            secret,
            timeout: config.timeout(at)?,
            failure: config.failure.unwrap_or(FailurePolicy::Closed),
            permits: Arc::new(Semaphore::new(config.max_concurrency.unwrap_or(64) as usize)),
        })
    }

    /// Calls the hook with `facts.message`.
    pub async fn call(&self, client: &AsClient, scope: &Scope, facts: &Facts<'_>) -> Answer {
        let body = json!({
            "hook": self.id,
            "direction": facts.direction.as_str(),
            "kind": kind_name(facts.kind),
            "method": facts.method,
            "name": facts.name,
            "session": scope.session,
            "version": scope.version,
            "principal": scope.identity.as_ref().map(|i| json!({"issuer": i.issuer, "subject": i.subject})),
            "message": facts.message,
        });
        let body = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
        let mut request = Request::post(&self.url)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json");
        if let Some(secret) = &self.secret {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
                .to_string();
            request = request
                .header(TIMESTAMP, &now)
                .header(SIGNATURE, format!("sha256={}", sign(secret, &now, &body)));
        }
        let request = match request.body(Full::new(body)) {
            Ok(request) => request,
            Err(e) => return Answer::Failed("error", format!("cannot build the call: {e}")),
        };
        let exchange = async {
            let _permit = self.permits.acquire().await;
            client.send(request).await
        };
        let (status, answer) = match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => return Answer::Failed("timeout", format!("no answer within {:?}", self.timeout)),
            Ok(Err(e)) => return Answer::Failed("error", e),
            Ok(Ok(answer)) => answer,
        };
        if !status.is_success() {
            return Answer::Failed("error", format!("answered {status}"));
        }
        read_answer(&answer, facts.message)
    }
}

/// Reads a hook's answer; a modified message must stay the same kind of
/// message (an object with the same `id`).
fn read_answer(answer: &[u8], original: &Value) -> Answer {
    let Ok(answer) = serde_json::from_slice::<Value>(answer) else {
        return Answer::Failed("error", "the answer is not JSON".into());
    };
    match answer.get("action").and_then(Value::as_str) {
        Some("pass") => Answer::Pass,
        Some("modify") => match answer.get("message") {
            Some(m) if m.is_object() && m.get("id") == original.get("id") => Answer::Modify(m.clone()),
            _ => Answer::Failed(
                "error",
                "`modify` needs a `message` object with the original `id`".into(),
            ),
        },
        Some("reject") => Answer::Reject {
            code: answer
                .get("code")
                .and_then(Value::as_i64)
                .unwrap_or(crate::mcp::jsonrpc::code::POLICY_DENIED),
            message: answer
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("rejected by a policy hook")
                .to_owned(),
        },
        _ => Answer::Failed("error", "`action` must be pass, modify or reject".into()),
    }
}

/// Hex HMAC-SHA256 over `timestamp.body`.
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    crate::peer::auth::hex(&mac.finalize().into_bytes())
}

impl Direction {
    /// As rules, hooks and audit events name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Client => "client",
            Direction::Server => "server",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_strictly() {
        let original = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call"});
        assert_eq!(read_answer(br#"{"action":"pass"}"#, &original), Answer::Pass);
        let modified = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {}});
        let answer = serde_json::to_vec(&json!({"action": "modify", "message": modified})).unwrap();
        assert_eq!(read_answer(&answer, &original), Answer::Modify(modified));
        let other_id = br#"{"action":"modify","message":{"jsonrpc":"2.0","id":4}}"#;
        assert!(matches!(read_answer(other_id, &original), Answer::Failed(..)));
        assert_eq!(
            read_answer(br#"{"action":"reject","message":"no"}"#, &original),
            Answer::Reject {
                code: crate::mcp::jsonrpc::code::POLICY_DENIED,
                message: "no".into()
            }
        );
        assert!(matches!(read_answer(b"{}", &original), Answer::Failed(..)));
        assert!(matches!(read_answer(b"nope", &original), Answer::Failed(..)));
    }

    #[test]
    fn signatures_cover_time_and_body() {
        let a = sign(b"k", "1", b"{}");
        assert_eq!(a.len(), 64);
        assert_ne!(a, sign(b"k", "2", b"{}"));
        assert_ne!(a, sign(b"k", "1", b"[]"));
        assert_ne!(a, sign(b"j", "1", b"{}"));
    }
}

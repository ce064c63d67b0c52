//! The upstream's answers, written from fixed pieces around the request's
//! own id: one buffer per answer, no JSON tree.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{Either, Full};
use serde_json::value::RawValue;

use super::held::{HeldBody, unix_nanos};

/// An answer: a whole body, or a held stream.
pub type Reply = Response<Either<Full<Bytes>, HeldBody>>;

/// The result of every successful tool call.
const TOOL_RESULT: &[u8] = br#","result":{"content":[{"type":"text","text":"ok"}]}}"#;
/// The tools the upstream offers.
const TOOLS: &[u8] = br#","result":{"tools":[{"name":"json","inputSchema":{"type":"object"}},{"name":"sse","inputSchema":{"type":"object"}}]}}"#;

/// Mints session ids: visible ASCII, unique per process and run.
#[derive(Debug)]
pub struct SessionIds {
    seed: u64,
    next: AtomicU64,
}

impl SessionIds {
    /// Ids seeded with the start time, so two runs do not repeat them.
    pub fn new() -> SessionIds {
        SessionIds {
            seed: unix_nanos() as u64,
            next: AtomicU64::new(0),
        }
    }

    /// A fresh id.
    pub fn mint(&self) -> HeaderValue {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&format!("{:x}-{n:x}", self.seed))
            .unwrap_or_else(|_| HeaderValue::from_static("invalid"))
    }
}

impl Default for SessionIds {
    fn default() -> Self {
        SessionIds::new()
    }
}

/// A whole body with a content type.
fn whole(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Reply {
    let mut response = Response::new(Either::Left(Full::new(Bytes::from(body))));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A JSON answer.
pub fn json(status: StatusCode, body: Vec<u8>) -> Reply {
    whole(status, "application/json", body)
}

/// An event stream answered in one piece.
pub fn sse(body: Vec<u8>) -> Reply {
    let mut response = whole(StatusCode::OK, "text/event-stream", body);
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// A held stream's headers; its events come as broadcasts queue them.
pub fn held(body: HeldBody) -> Reply {
    let mut response = Response::new(Either::Right(body));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// A status with no body (202 for notifications, 200 for DELETE, errors).
pub fn empty(status: StatusCode) -> Reply {
    let mut response = Response::new(Either::Left(Full::new(Bytes::new())));
    *response.status_mut() = status;
    response
}

/// A short text answer (control endpoints).
pub fn text(text: String) -> Reply {
    whole(StatusCode::OK, "text/plain", text.into_bytes())
}

/// `{"jsonrpc":"2.0","id":<id>` — the start of every response.
fn head(id: &RawValue, capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity + id.get().len() + 24);
    out.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
    out.extend_from_slice(id.get().as_bytes());
    out
}

/// The answer to a successful `tools/call`.
pub fn tool_result(id: &RawValue) -> Vec<u8> {
    let mut out = head(id, TOOL_RESULT.len());
    out.extend_from_slice(TOOL_RESULT);
    out
}

/// The answer to `tools/list`.
pub fn tools(id: &RawValue) -> Vec<u8> {
    let mut out = head(id, TOOLS.len());
    out.extend_from_slice(TOOLS);
    out
}

/// An empty result (`ping` and the like).
pub fn empty_result(id: &RawValue) -> Vec<u8> {
    let mut out = head(id, 16);
    out.extend_from_slice(br#","result":{}}"#);
    out
}

/// The InitializeResult, echoing `version`.
pub fn initialize_result(id: &RawValue, version: &str) -> Vec<u8> {
    let mut out = head(id, 160);
    out.extend_from_slice(br#","result":{"protocolVersion":"#);
    // The version comes from the client: written as a JSON string, escaped.
    out.extend_from_slice(&serde_json::to_vec(version).unwrap_or_else(|_| b"\"\"".to_vec()));
    out.extend_from_slice(
        br#","capabilities":{"tools":{}},"serverInfo":{"name":"shadowcat-bench-upstream","version":"0"}}}"#,
    );
    out
}

/// A JSON-RPC error (`id` null when the request had none or was unreadable).
pub fn error(id: Option<&RawValue>, code: i32, message: &str) -> Vec<u8> {
    let id = id.map_or("null", RawValue::get);
    let message = serde_json::to_string(message).unwrap_or_else(|_| "\"\"".into());
    format!(r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":{code},"message":{message}}}}}"#).into_bytes()
}

/// An `sse` tool answer: `notifications` progress notifications (log
/// messages when there is no progress token), then the response, each one
/// SSE event.
pub fn sse_answer(id: &RawValue, notifications: u32, token: Option<&RawValue>) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 * (notifications as usize + 1));
    for i in 1..=notifications {
        out.extend_from_slice(b"event: message\ndata: ");
        let note = match token {
            Some(token) => format!(
                r#"{{"jsonrpc":"2.0","method":"notifications/progress","params":{{"progressToken":{},"progress":{i},"total":{notifications}}}}}"#,
                token.get()
            ),
            None => format!(
                r#"{{"jsonrpc":"2.0","method":"notifications/message","params":{{"level":"debug","data":{i}}}}}"#
            ),
        };
        out.extend_from_slice(note.as_bytes());
        out.extend_from_slice(b"\n\n");
    }
    out.extend_from_slice(b"event: message\ndata: ");
    out.extend_from_slice(&tool_result(id));
    out.extend_from_slice(b"\n\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).expect("valid JSON")
    }

    #[test]
    fn answers_are_valid_json_with_the_request_id() {
        let id = raw(r#""x-9""#);
        for body in [
            tool_result(&id),
            tools(&id),
            empty_result(&id),
            initialize_result(&id, "2025-06-18\"evil"),
            error(Some(&id), -32601, "no \"such\" method"),
        ] {
            let v: Value = serde_json::from_slice(&body).expect("JSON");
            assert_eq!(v["id"], "x-9");
        }
        let init: Value = serde_json::from_slice(&initialize_result(&id, "2025-06-18")).expect("JSON");
        assert_eq!(init["result"]["protocolVersion"], "2025-06-18");
    }

    #[test]
    fn an_sse_answer_is_notifications_then_the_response() {
        let body = sse_answer(&raw("4"), 2, Some(&raw(r#""t""#)));
        let events: Vec<Value> = String::from_utf8(body)
            .expect("UTF-8")
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("event: message\ndata: "))
            .map(|d| serde_json::from_str(d).expect("JSON"))
            .collect();
        assert_eq!(events.len(), 3);
        assert_eq!(events[1]["params"]["progress"], 2);
        assert_eq!(events[2]["id"], 4);
    }

    #[test]
    fn session_ids_differ_and_are_visible_ascii() {
        let ids = SessionIds::new();
        let (a, b) = (ids.mint(), ids.mint());
        assert_ne!(a, b);
        assert!(a.as_bytes().iter().all(|c| (0x21..=0x7e).contains(c)));
    }
}

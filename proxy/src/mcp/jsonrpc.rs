//! JSON-RPC 2.0 message shapes: telling requests, notifications, responses and
//! batches apart, and building the error bodies Shadowcat answers with.

use bytes::Bytes;
use serde_json::value::RawValue;
use serde_json::{Value, json};

/// Standard JSON-RPC error codes and the MCP ones Shadowcat uses.
pub mod code {
    /// Invalid JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// Valid JSON, not a valid JSON-RPC message.
    pub const INVALID_REQUEST: i64 = -32600;
    /// Unknown method.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// Invalid parameters; MCP's answer for an unknown tool or prompt.
    pub const INVALID_PARAMS: i64 = -32602;
    /// MCP: the resource does not exist.
    pub const RESOURCE_NOT_FOUND: i64 = -32002;
    /// Shadowcat: a policy rule or hook refused the message.
    pub const POLICY_DENIED: i64 = -32003;
    /// Shadowcat: a rate limit refused the request.
    pub const RATE_LIMITED: i64 = -32029;
    /// Internal error.
    pub const INTERNAL_ERROR: i64 = -32603;
    /// Server-defined: a failure of the proxy or its upstream.
    pub const SERVER_ERROR: i64 = -32000;
    /// 2026-07-28: `Mcp-Method`/`Mcp-Name` missing or disagreeing with the body.
    pub const HEADER_MISMATCH: i64 = -32020;
}

/// What a single JSON-RPC message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Has `method` and `id`: expects a response.
    Request,
    /// Has `method`, no `id`.
    Notification,
    /// Has `id` and `result` or `error`.
    Response,
}

/// The facts about one message the proxy routes on.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// What it is.
    pub kind: Kind,
    /// The id of a request or response.
    pub id: Option<Value>,
    /// The method of a request or notification.
    pub method: Option<String>,
    /// `params.name` (tools/call, prompts/get) or `params.uri` (resources/read).
    pub name: Option<String>,
}

impl Message {
    /// Whether this is the `initialize` request.
    pub fn is_initialize(&self) -> bool {
        self.kind == Kind::Request && self.method.as_deref() == Some("initialize")
    }
}

/// A POST body: one message or a batch.
#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    /// One message.
    Single(Message),
    /// A JSON array of messages (2025-03-26 only).
    Batch(Vec<Message>),
}

impl Body {
    /// The messages, in order.
    pub fn messages(&self) -> &[Message] {
        match self {
            Body::Single(m) => std::slice::from_ref(m),
            Body::Batch(ms) => ms,
        }
    }

    /// Whether this is a batch.
    pub fn is_batch(&self) -> bool {
        matches!(self, Body::Batch(_))
    }

    /// Whether any message expects a response.
    pub fn has_requests(&self) -> bool {
        self.messages().iter().any(|m| m.kind == Kind::Request)
    }

    /// The id to answer an error with: the single request's id, else null.
    pub fn error_id(&self) -> Option<Value> {
        match self {
            Body::Single(m) => m.id.clone(),
            Body::Batch(_) => None,
        }
    }
}

/// Why a body is not JSON-RPC.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not JSON at all (-32700).
    #[error("body is not valid JSON: {0}")]
    Json(String),
    /// JSON, but not a JSON-RPC 2.0 message (-32600).
    #[error("not a JSON-RPC 2.0 message: {0}")]
    Shape(String),
}

/// One message as it comes over the wire, borrowed: the parser checks the
/// whole body but builds no tree, so a large `params` costs no allocation.
#[derive(serde::Deserialize)]
struct Wire<'a> {
    #[serde(borrow, default)]
    jsonrpc: Option<&'a RawValue>,
    /// `Some(None)` is an explicit `null`.
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<Option<&'a RawValue>>,
    #[serde(borrow, default)]
    method: Option<&'a RawValue>,
    #[serde(borrow, default)]
    params: Option<&'a RawValue>,
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
}

/// Tells an explicit `null` (`Some(None)`) from a missing field (`None`).
fn present<'de, D>(d: D) -> Result<Option<Option<&'de RawValue>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    <Option<&'de RawValue> as serde::Deserialize>::deserialize(d).map(Some)
}

/// The parts of `params` a proxy routes on.
#[derive(serde::Deserialize)]
struct Named<'a> {
    #[serde(borrow, default)]
    name: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    uri: Option<std::borrow::Cow<'a, str>>,
}

/// Parses and classifies a POST body.
pub fn parse(bytes: &[u8]) -> Result<Body, ParseError> {
    let text = std::str::from_utf8(bytes).map_err(|e| ParseError::Json(e.to_string()))?;
    let shape = |e: serde_json::Error| match e.classify() {
        serde_json::error::Category::Data => ParseError::Shape(e.to_string()),
        _ => ParseError::Json(e.to_string()),
    };
    match text.trim_start().as_bytes().first() {
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_str(text).map_err(shape)?;
            if items.is_empty() {
                return Err(ParseError::Shape("empty batch".into()));
            }
            items
                .iter()
                .map(|item| classify_raw(item.get()))
                .collect::<Result<_, _>>()
                .map(Body::Batch)
        }
        Some(b'{') => classify_raw(text).map(Body::Single),
        _ => {
            // Not an object or array: still tell "not JSON" from "not JSON-RPC".
            serde_json::from_str::<serde::de::IgnoredAny>(text)
                .map_err(|e| ParseError::Json(e.to_string()))?;
            Err(ParseError::Shape("expected a JSON object".into()))
        }
    }
}

fn classify_raw(text: &str) -> Result<Message, ParseError> {
    let wire: Wire<'_> = serde_json::from_str(text).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ParseError::Shape(format!("expected a JSON object: {e}")),
        _ => ParseError::Json(e.to_string()),
    })?;
    if wire.jsonrpc.map(RawValue::get) != Some("\"2.0\"") {
        return Err(ParseError::Shape("`jsonrpc` must be \"2.0\"".into()));
    }
    let id = match wire.id {
        None => None,
        Some(None) if wire.error.is_some() => Some(Value::Null),
        Some(Some(raw))
            if raw
                .get()
                .starts_with(['"', '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9']) =>
        {
            Some(serde_json::from_str(raw.get()).map_err(|e| ParseError::Shape(e.to_string()))?)
        }
        Some(_) => return Err(ParseError::Shape("`id` must be a string or an integer".into())),
    };
    if let Some(method) = wire.method {
        let method: String = serde_json::from_str(method.get())
            .map_err(|_| ParseError::Shape("`method` must be a string".into()))?;
        let name = match wire.params {
            Some(params) if !params.get().starts_with(['{', '[']) => {
                return Err(ParseError::Shape("`params` must be an object or an array".into()));
            }
            Some(params) => name_param(&method, params),
            None => None,
        };
        return Ok(Message {
            kind: if id.is_some() {
                Kind::Request
            } else {
                Kind::Notification
            },
            name,
            method: Some(method),
            id,
        });
    }
    match (id, wire.result.is_some(), wire.error.is_some()) {
        (Some(id), true, false) | (Some(id), false, true) => Ok(Message {
            kind: Kind::Response,
            id: Some(id),
            method: None,
            name: None,
        }),
        _ => Err(ParseError::Shape(
            "a message needs `method`, or `id` with exactly one of `result` and `error`".into(),
        )),
    }
}

fn name_param(method: &str, params: &RawValue) -> Option<String> {
    let named: Named<'_> = serde_json::from_str(params.get()).ok()?;
    match method {
        "tools/call" | "prompts/get" => named.name.map(|n| n.into_owned()),
        "resources/read" => named.uri.map(|u| u.into_owned()),
        _ => None,
    }
}

/// A JSON-RPC error response body.
pub fn error_body(id: Option<&Value>, code: i64, message: &str) -> Bytes {
    let body = json!({
        "jsonrpc": "2.0",
        "id": id.cloned().unwrap_or(Value::Null),
        "error": {"code": code, "message": message},
    });
    Bytes::from(body.to_string())
}

/// The response facts the SSE pump needs: is this event the response to a
/// request of the stream? Cheap: borrows, never builds a tree.
#[derive(serde::Deserialize)]
struct Peek<'a> {
    #[serde(borrow)]
    id: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    method: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    result: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    error: Option<&'a serde_json::value::RawValue>,
}

/// If `data` is a JSON-RPC response (or a batch of them), the ids it answers.
pub fn response_ids(data: &str) -> Vec<Value> {
    let one = |p: Peek<'_>| -> Option<Value> {
        if p.method.is_some() || (p.result.is_none() && p.error.is_none()) {
            return None;
        }
        serde_json::from_str(p.id?.get()).ok()
    };
    if data.trim_start().starts_with('[') {
        serde_json::from_str::<Vec<Peek<'_>>>(data)
            .map(|all| all.into_iter().filter_map(one).collect())
            .unwrap_or_default()
    } else {
        serde_json::from_str::<Peek<'_>>(data)
            .ok()
            .and_then(one)
            .into_iter()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_each_shape() {
        let req =
            parse(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#).unwrap();
        assert_eq!(
            req,
            Body::Single(Message {
                kind: Kind::Request,
                id: Some(json!(1)),
                method: Some("tools/call".into()),
                name: Some("echo".into()),
            })
        );
        let note = parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
        assert_eq!(note.messages()[0].kind, Kind::Notification);
        let resp = parse(br#"{"jsonrpc":"2.0","id":"a","result":{}}"#).unwrap();
        assert_eq!(resp.messages()[0].kind, Kind::Response);
        let batch =
            parse(br#"[{"jsonrpc":"2.0","method":"x"},{"jsonrpc":"2.0","id":2,"method":"y"}]"#).unwrap();
        assert!(batch.has_requests());
        assert_eq!(batch.error_id(), None);
    }

    #[test]
    fn refuses_what_is_not_json_rpc() {
        assert!(matches!(parse(b"{nope"), Err(ParseError::Json(_))));
        for bad in [
            &br#"[]"#[..],
            br#"42"#,
            br#"{"id":1,"method":"x"}"#,
            br#"{"jsonrpc":"2.0","id":{},"method":"x"}"#,
            br#"{"jsonrpc":"2.0","id":1}"#,
            br#"{"jsonrpc":"2.0","method":3}"#,
            br#"{"jsonrpc":"2.0","id":1,"result":1,"error":{}}"#,
        ] {
            assert!(
                matches!(parse(bad), Err(ParseError::Shape(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn finds_response_ids_in_events() {
        assert_eq!(
            response_ids(r#"{"jsonrpc":"2.0","id":5,"result":{}}"#),
            vec![json!(5)]
        );
        assert_eq!(
            response_ids(r#"{"jsonrpc":"2.0","id":"x","error":{"code":1,"message":"m"}}"#),
            vec![json!("x")]
        );
        assert!(response_ids(r#"{"jsonrpc":"2.0","id":5,"method":"sampling/createMessage"}"#).is_empty());
        assert!(response_ids(r#"{"jsonrpc":"2.0","method":"notifications/progress"}"#).is_empty());
        assert_eq!(
            response_ids(r#"[{"jsonrpc":"2.0","id":1,"result":{}},{"jsonrpc":"2.0","id":2,"result":{}}]"#),
            vec![json!(1), json!(2)]
        );
        assert!(response_ids("not json").is_empty());
    }
}

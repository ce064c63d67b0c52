//! JSON-RPC 2.0 message shapes: telling requests, notifications, responses and
//! batches apart, and building the error bodies Shadowcat answers with.

use bytes::Bytes;
use serde_json::{Map, Value, json};

/// Standard JSON-RPC error codes and the MCP ones Shadowcat uses.
pub mod code {
    /// Invalid JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// Valid JSON, not a valid JSON-RPC message.
    pub const INVALID_REQUEST: i64 = -32600;
    /// Unknown method.
    pub const METHOD_NOT_FOUND: i64 = -32601;
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

/// Parses and classifies a POST body.
pub fn parse(bytes: &[u8]) -> Result<Body, ParseError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| ParseError::Json(e.to_string()))?;
    match value {
        Value::Array(items) => {
            if items.is_empty() {
                return Err(ParseError::Shape("empty batch".into()));
            }
            items
                .iter()
                .map(classify)
                .collect::<Result<_, _>>()
                .map(Body::Batch)
        }
        other => classify(&other).map(Body::Single),
    }
}

/// Classifies one message value.
pub fn classify(value: &Value) -> Result<Message, ParseError> {
    let obj = value
        .as_object()
        .ok_or_else(|| ParseError::Shape("expected a JSON object".into()))?;
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(ParseError::Shape("`jsonrpc` must be \"2.0\"".into()));
    }
    let id = match obj.get("id") {
        None => None,
        Some(id @ (Value::String(_) | Value::Number(_))) => Some(id.clone()),
        Some(Value::Null) if obj.contains_key("error") => Some(Value::Null),
        Some(_) => return Err(ParseError::Shape("`id` must be a string or an integer".into())),
    };
    if let Some(method) = obj.get("method") {
        let method = method
            .as_str()
            .ok_or_else(|| ParseError::Shape("`method` must be a string".into()))?;
        if let Some(params) = obj.get("params")
            && !params.is_object()
            && !params.is_array()
        {
            return Err(ParseError::Shape("`params` must be an object or an array".into()));
        }
        return Ok(Message {
            kind: if id.is_some() {
                Kind::Request
            } else {
                Kind::Notification
            },
            name: name_param(method, obj),
            method: Some(method.to_owned()),
            id,
        });
    }
    match (id, obj.contains_key("result"), obj.contains_key("error")) {
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

fn name_param(method: &str, obj: &Map<String, Value>) -> Option<String> {
    let key = match method {
        "tools/call" | "prompts/get" => "name",
        "resources/read" => "uri",
        _ => return None,
    };
    obj.get("params")?.get(key)?.as_str().map(str::to_owned)
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

//! One MCP exchange on the wire, whatever carries it: the JSON-RPC request
//! body, and reading the answer — JSON, or SSE up to the response — timed
//! from "request sent" to "JSON-RPC response received".

use std::time::{Duration, Instant};

use http::Response;
use http::header::CONTENT_TYPE;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{Value, json};
use shadowcat_proxy::sse::Parser;

use crate::error::CallError;

/// Longest a single HTTP exchange (including reading the whole body) may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// What one call measured.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Request sent -> first event that carried a message (SSE answers only).
    pub first_event: Option<Duration>,
    /// Request sent -> the JSON-RPC response arrived.
    pub response: Duration,
    /// Notifications that arrived before the response.
    pub notifications: u32,
}

/// A JSON-RPC request message.
pub fn request_body(id: u64, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

/// Waits for the JSON-RPC response with `id` in a JSON or SSE answer, then
/// reads the rest of the body so the connection can be used again.
pub async fn answer(response: Response<Incoming>, id: u64, started: Instant) -> Result<Timing, CallError> {
    let is_sse = response
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let mut body = response.into_body();
    if !is_sse {
        let bytes = timed(body.collect())
            .await?
            .map_err(CallError::transport)?
            .to_bytes();
        let message: Value =
            serde_json::from_slice(&bytes).map_err(|e| CallError::Protocol(e.to_string()))?;
        check_response(&message, id)?;
        return Ok(Timing {
            first_event: None,
            response: started.elapsed(),
            notifications: 0,
        });
    }
    let timing = timed(read_events(&mut body, id, started)).await??;
    timed(drain(body))
        .await
        .map_err(|_| CallError::Protocol("the stream did not end after the response".into()))??;
    Ok(timing)
}

/// Reads SSE events until the response with `id`, counting notifications.
async fn read_events(body: &mut Incoming, id: u64, started: Instant) -> Result<Timing, CallError> {
    let mut parser = Parser::new();
    let mut first_event = None;
    let mut notifications = 0;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(CallError::transport)?.into_data() else {
            continue;
        };
        for event in parser.feed(data).unwrap_or_default() {
            // Priming events (an id, empty data) carry no message.
            let Some(data) = event.data.filter(|d| !d.is_empty()) else {
                continue;
            };
            first_event.get_or_insert_with(|| started.elapsed());
            let message: Value =
                serde_json::from_str(&data).map_err(|e| CallError::Protocol(e.to_string()))?;
            if message.get("method").is_some() {
                notifications += 1;
                continue;
            }
            check_response(&message, id)?;
            return Ok(Timing {
                first_event,
                response: started.elapsed(),
                notifications,
            });
        }
    }
    Err(CallError::Protocol(
        "the stream ended without the response".into(),
    ))
}

/// Checks that `message` is a successful response to `id`.
fn check_response(message: &Value, id: u64) -> Result<(), CallError> {
    if message.get("id") != Some(&Value::from(id)) {
        return Err(CallError::Protocol(format!(
            "expected the response to id {id}, got {message}"
        )));
    }
    if let Some(error) = message.get("error") {
        return Err(CallError::JsonRpc(error.to_string()));
    }
    if message.get("result").is_none() {
        return Err(CallError::Protocol(format!(
            "a response without result: {message}"
        )));
    }
    Ok(())
}

/// Reads a body to its end.
pub async fn drain(mut body: Incoming) -> Result<(), CallError> {
    while let Some(frame) = body.frame().await {
        frame.map_err(CallError::transport)?;
    }
    Ok(())
}

/// Bounds one step of an exchange by [`CALL_TIMEOUT`].
pub async fn timed<T>(fut: impl Future<Output = T>) -> Result<T, CallError> {
    tokio::time::timeout(CALL_TIMEOUT, fut)
        .await
        .map_err(|_| CallError::Timeout(CALL_TIMEOUT))
}

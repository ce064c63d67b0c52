//! A minimal MCP Streamable HTTP client for load: one pooled HTTP/1.1 client
//! shared by every worker and both targets, sessions, and calls timed from
//! "request sent" to "JSON-RPC response received" (JSON or SSE answers).

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use shadowcat_proxy::sse::Parser;

use crate::error::CallError;

/// The protocol version the bench speaks.
const VERSION: &str = "2025-11-25";
/// Longest a single HTTP exchange (including reading the whole body) may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The pooled HTTP client.
pub type Http = Client<HttpConnector, Full<Bytes>>;

/// An HTTP/1.1 client keeping up to `pool` idle connections per target.
pub fn http(pool: usize) -> Http {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(pool)
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector)
}

/// The status of a plain GET, for readiness checks.
pub async fn get_status(http: &Http, url: &Uri) -> Result<StatusCode, CallError> {
    let request = Request::get(url.clone())
        .body(Full::new(Bytes::new()))
        .map_err(|e| CallError::Protocol(e.to_string()))?;
    let response = timed(http.request(request))
        .await?
        .map_err(CallError::transport)?;
    Ok(response.status())
}

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

/// One MCP session against one target.
#[derive(Debug)]
pub struct Session {
    http: Http,
    url: Uri,
    id: Option<HeaderValue>,
    next_id: u64,
}

impl Session {
    /// Initializes a session on `url` and sends `notifications/initialized`.
    pub async fn open(http: Http, url: Uri) -> Result<Session, CallError> {
        let mut session = Session {
            http,
            url,
            id: None,
            next_id: 0,
        };
        let params = json!({
            "protocolVersion": VERSION,
            "capabilities": {},
            "clientInfo": {"name": "shadowcat-bench", "version": env!("CARGO_PKG_VERSION")}
        });
        let id = session.fresh_id();
        let response = session.post(&request_body(id, "initialize", params)).await?;
        session.id = response.headers().get("mcp-session-id").cloned();
        answer(response, id, Instant::now()).await?;
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let response = session.post(&note).await?;
        timed(drain(response.into_body())).await??;
        Ok(session)
    }

    /// Calls `tool` with `arguments` and times it; a progress token is sent so
    /// tools that report progress do.
    pub async fn call(&mut self, tool: &str, arguments: Value) -> Result<Timing, CallError> {
        let id = self.fresh_id();
        let params = json!({"name": tool, "arguments": arguments, "_meta": {"progressToken": id}});
        let body = request_body(id, "tools/call", params);
        let started = Instant::now();
        let response = self.post(&body).await?;
        answer(response, id, started).await
    }

    /// Ends the session (DELETE); failures do not matter here.
    pub async fn close(self) {
        let Some(id) = self.id else { return };
        let request = Request::builder()
            .method(Method::DELETE)
            .uri(self.url)
            .header("mcp-session-id", id)
            .header("mcp-protocol-version", VERSION)
            .body(Full::new(Bytes::new()));
        if let Ok(request) = request
            && let Ok(Ok(response)) = tokio::time::timeout(CALL_TIMEOUT, self.http.request(request)).await
        {
            let _ = timed(drain(response.into_body())).await;
        }
    }

    fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// POSTs a message with the standard headers and checks the status.
    async fn post(&self, body: &Value) -> Result<Response<Incoming>, CallError> {
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json, text/event-stream")
            .header("mcp-protocol-version", VERSION);
        if let Some(id) = &self.id {
            request = request.header("mcp-session-id", id);
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| CallError::Protocol(e.to_string()))?;
        let response = timed(self.http.request(request))
            .await?
            .map_err(CallError::transport)?;
        if !response.status().is_success() {
            return Err(CallError::Status(response.status()));
        }
        Ok(response)
    }
}

/// A JSON-RPC request message.
fn request_body(id: u64, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

/// Waits for the JSON-RPC response with `id` in a JSON or SSE answer, then
/// reads the rest of the body so the connection can go back to the pool.
async fn answer(response: Response<Incoming>, id: u64, started: Instant) -> Result<Timing, CallError> {
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
async fn drain(mut body: Incoming) -> Result<(), CallError> {
    while let Some(frame) = body.frame().await {
        frame.map_err(CallError::transport)?;
    }
    Ok(())
}

/// Bounds one step of an exchange by [`CALL_TIMEOUT`].
async fn timed<T>(fut: impl Future<Output = T>) -> Result<T, CallError> {
    tokio::time::timeout(CALL_TIMEOUT, fut)
        .await
        .map_err(|_| CallError::Timeout(CALL_TIMEOUT))
}

//! A small MCP Streamable HTTP client for tests: raw requests, a session
//! helper and an SSE event reader built on Shadowcat's own parser.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use shadowcat_proxy::sse::{Parser, RawEvent};

/// An HTTP client.
pub type Http = Client<HttpConnector, Full<Bytes>>;

/// A fresh HTTP/1.1 client.
pub fn http() -> Http {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// Sends one request.
pub async fn send(
    http: &Http,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Response<Incoming> {
    try_send(http, method, url, headers, body).await.unwrap()
}

/// Sends one request; `Err` when it gets no response (nothing listens, the
/// connection broke), as a client sees while a server restarts.
pub async fn try_send(
    http: &Http,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<Response<Incoming>, String> {
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    crate::within(
        "request",
        Duration::from_secs(30),
        http.request(req.body(Full::new(body)).unwrap()),
    )
    .await
    .map_err(|e| e.to_string())
}

/// The whole body as JSON.
pub async fn json_body(response: Response<Incoming>) -> Value {
    let bytes = crate::within("body", Duration::from_secs(30), response.into_body().collect())
        .await
        .unwrap();
    serde_json::from_slice(&bytes.to_bytes()).unwrap()
}

/// The whole body as JSON, `None` when it is not JSON.
pub async fn json_body_lenient(response: Response<Incoming>) -> Option<Value> {
    serde_json::from_str(&text_body(response).await).ok()
}

/// The whole body as text (empty when it broke off).
pub async fn text_body(response: Response<Incoming>) -> String {
    match crate::within("body", Duration::from_secs(30), response.into_body().collect()).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes.to_bytes()).into_owned(),
        Err(_) => String::new(),
    }
}

/// Reads SSE events off a response body as they arrive.
#[derive(Debug)]
pub struct Events {
    body: Incoming,
    parser: Parser,
    queue: VecDeque<RawEvent>,
    /// Raw text received, for assertions on comments and `retry:`.
    pub raw: String,
}

impl Events {
    /// Reads events from `response`, which must be an event stream.
    pub fn new(response: Response<Incoming>) -> Events {
        let ct = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(ct.as_deref(), Some("text/event-stream"), "not an event stream");
        Events {
            body: response.into_body(),
            parser: Parser::new(),
            queue: VecDeque::new(),
            raw: String::new(),
        }
    }

    /// The next event, or `None` when the stream ends. Panics after 30 s.
    pub async fn next(&mut self) -> Option<RawEvent> {
        crate::within("next SSE event", Duration::from_secs(30), self.next_inner()).await
    }

    /// The next event, or `None` when the stream ends; `Err` when none comes
    /// within `limit` (keep-alive comments are not events).
    pub async fn next_within(&mut self, limit: Duration) -> Result<Option<RawEvent>, String> {
        tokio::time::timeout(limit, self.next_inner())
            .await
            .map_err(|_| format!("no event for {limit:?}"))
    }

    async fn next_inner(&mut self) -> Option<RawEvent> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Some(event);
            }
            let frame = self.body.frame().await?.ok()?;
            if let Ok(data) = frame.into_data() {
                self.raw.push_str(&String::from_utf8_lossy(&data));
                self.queue.extend(self.parser.feed(data).unwrap());
            }
        }
    }

    /// Reads until the raw text contains `needle` (a comment, a `retry:`).
    pub async fn wait_raw(&mut self, needle: &str) {
        crate::within(needle, Duration::from_secs(30), async {
            while !self.raw.contains(needle) {
                let frame = self.body.frame().await.expect("stream ended").unwrap();
                if let Ok(data) = frame.into_data() {
                    self.raw.push_str(&String::from_utf8_lossy(&data));
                    self.queue.extend(self.parser.feed(data).unwrap());
                }
            }
        })
        .await;
    }

    /// The next event that carries a JSON message, parsed.
    pub async fn next_message(&mut self) -> Option<(Option<String>, Value)> {
        loop {
            let event = self.next().await?;
            if let Some(data) = event.data.filter(|d| !d.is_empty()) {
                return Some((event.id, serde_json::from_str(&data).unwrap()));
            }
        }
    }

    /// Every remaining message until the stream ends.
    pub async fn rest(&mut self) -> Vec<(Option<String>, Value)> {
        let mut all = Vec::new();
        while let Some(m) = self.next_message().await {
            all.push(m);
        }
        all
    }
}

/// An MCP session over Streamable HTTP.
#[derive(Debug)]
pub struct Mcp {
    /// The HTTP client.
    pub http: Http,
    /// The endpoint.
    pub url: String,
    /// The session id, once initialized.
    pub session: Option<String>,
    /// The protocol version sent in `MCP-Protocol-Version`.
    pub version: String,
    next_id: AtomicU64,
    /// With a prefix, request ids are strings `<prefix><n>`, unique across
    /// clients.
    pub id_prefix: Option<String>,
    /// Sent as `Authorization: Bearer <token>` when set.
    pub token: Option<String>,
}

impl Mcp {
    /// A client for `url` speaking `version`.
    pub fn new(url: &str, version: &str) -> Mcp {
        Mcp {
            http: http(),
            url: url.into(),
            session: None,
            version: version.into(),
            next_id: AtomicU64::new(1),
            id_prefix: None,
            token: None,
        }
    }

    /// POSTs `body` with the standard headers (and the session, if any).
    pub async fn post(&self, body: &Value) -> Response<Incoming> {
        self.try_post(body).await.unwrap()
    }

    /// [`Mcp::post`], `Err` when no response comes.
    pub async fn try_post(&self, body: &Value) -> Result<Response<Incoming>, String> {
        let mut headers = vec![
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
            ("mcp-protocol-version", self.version.as_str()),
        ];
        if let Some(s) = &self.session {
            headers.push(("mcp-session-id", s.as_str()));
        }
        let bearer = self.bearer();
        if let Some(b) = &bearer {
            headers.push(("authorization", b.as_str()));
        }
        try_send(
            &self.http,
            Method::POST,
            &self.url,
            &headers,
            Bytes::from(body.to_string()),
        )
        .await
    }

    /// GETs the standalone stream, or resumes after `last_event_id`.
    pub async fn get(&self, last_event_id: Option<&str>) -> Response<Incoming> {
        self.try_get(last_event_id).await.unwrap()
    }

    /// [`Mcp::get`], `Err` when no response comes.
    pub async fn try_get(&self, last_event_id: Option<&str>) -> Result<Response<Incoming>, String> {
        let mut headers = vec![
            ("accept", "text/event-stream"),
            ("mcp-protocol-version", self.version.as_str()),
        ];
        if let Some(s) = &self.session {
            headers.push(("mcp-session-id", s.as_str()));
        }
        if let Some(id) = last_event_id {
            headers.push(("last-event-id", id));
        }
        let bearer = self.bearer();
        if let Some(b) = &bearer {
            headers.push(("authorization", b.as_str()));
        }
        try_send(&self.http, Method::GET, &self.url, &headers, Bytes::new()).await
    }

    /// DELETEs the session.
    pub async fn delete(&self) -> Response<Incoming> {
        let session = self.session.clone().unwrap();
        let mut headers = vec![
            ("mcp-session-id", session.as_str()),
            ("mcp-protocol-version", self.version.as_str()),
        ];
        let bearer = self.bearer();
        if let Some(b) = &bearer {
            headers.push(("authorization", b.as_str()));
        }
        send(&self.http, Method::DELETE, &self.url, &headers, Bytes::new()).await
    }

    fn bearer(&self) -> Option<String> {
        self.token.as_ref().map(|t| format!("Bearer {t}"))
    }

    /// A request message with a fresh id.
    pub fn request_body(&self, method: &str, params: Value) -> Value {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let id = match &self.id_prefix {
            Some(prefix) => json!(format!("{prefix}{n}")),
            None => json!(n),
        };
        json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
    }

    /// Initializes a session and sends `notifications/initialized`.
    pub async fn initialize(&mut self) -> Value {
        let body = self.request_body(
            "initialize",
            json!({
                "protocolVersion": self.version,
                "capabilities": {"sampling": {}, "elicitation": {}, "roots": {"listChanged": true}},
                "clientInfo": {"name": "shadowcat-tests", "version": "0"}
            }),
        );
        let response = self.post(&body).await;
        assert_eq!(response.status(), 200, "initialize failed");
        let session = response
            .headers()
            .get("mcp-session-id")
            .expect("no session id")
            .to_str()
            .unwrap();
        self.session = Some(session.to_owned());
        let result = answer(response).await;
        let note = self
            .post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        assert_eq!(note.status(), 202);
        result
    }

    /// Calls the scripted upstream's `stream` tool (`count` progress events,
    /// then the result) and returns its event stream.
    pub async fn call_stream(&self, count: u64) -> Events {
        let body = self.request_body(
            "tools/call",
            json!({"name": "stream", "arguments": {"count": count}}),
        );
        let response = self.post(&body).await;
        assert_eq!(response.status(), 200);
        Events::new(response)
    }

    /// Sends a request and returns its JSON-RPC response message.
    pub async fn request(&self, method: &str, params: Value) -> Value {
        let response = self.post(&self.request_body(method, params)).await;
        assert_eq!(response.status(), 200, "{method} failed");
        answer(response).await
    }
}

/// The JSON-RPC response in a JSON or SSE answer (the last message of a stream).
pub async fn answer(response: Response<Incoming>) -> Value {
    let is_sse = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes() == b"text/event-stream");
    if !is_sse {
        return json_body(response).await;
    }
    let mut events = Events::new(response);
    let messages = events.rest().await;
    messages
        .into_iter()
        .map(|(_, m)| m)
        .rfind(|m| m.get("result").is_some() || m.get("error").is_some())
        .expect("stream ended without a response")
}

/// A counter or gauge from a replica's `/metrics`, summed over its label
/// sets (0 when absent). `name{reason="x"}` picks one label set.
pub async fn metric(http: &Http, admin: &str, name: &str) -> u64 {
    let response = send(http, Method::GET, &format!("{admin}/metrics"), &[], Bytes::new()).await;
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&body);
    let (base, labels) = match name.split_once('{') {
        Some((base, labels)) => (base, Some(labels.trim_end_matches('}'))),
        None => (name, None),
    };
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(base)?;
            let (series, value) = match rest.strip_prefix('{') {
                Some(labeled) => {
                    let (set, value) = labeled.split_once("} ")?;
                    (Some(set), value)
                }
                None => (None, rest.strip_prefix(' ')?),
            };
            if labels.is_some_and(|want| series.is_none_or(|set| !set.contains(want))) {
                return None;
            }
            value.trim().parse::<f64>().ok()
        })
        .sum::<f64>() as u64
}

/// The `progress` of a `notifications/progress` message (panics otherwise).
pub fn progress(message: &Value) -> u64 {
    message
        .pointer("/params/progress")
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("not progress: {message}"))
}

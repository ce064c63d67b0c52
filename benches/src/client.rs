//! A minimal MCP Streamable HTTP client for load: sessions (or stateless
//! calls) over any [`Transport`] — the pooled hyper client shared by every
//! worker, or one dedicated [`Conn`](crate::conn::Conn) per worker.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use crate::error::CallError;
use crate::exchange::{answer, drain, request_body, timed};

pub use crate::exchange::Timing;
pub use http_body_util::Full;

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

/// `Authorization` of every MCP request this process sends, once set: all
/// targets get the same bytes, and those that do not check it ignore it.
static BEARER: std::sync::OnceLock<HeaderValue> = std::sync::OnceLock::new();

/// Sends `token` as a bearer token on every MCP request from now on.
pub fn set_bearer(token: &str) -> anyhow::Result<()> {
    let value = HeaderValue::from_str(&format!("Bearer {token}"))?;
    BEARER
        .set(value)
        .map_err(|_| anyhow::anyhow!("a bearer token is already set"))
}

/// What carries a session's requests.
pub trait Transport: Send {
    /// Sends one request; resolves when the response headers arrive.
    fn send(
        &mut self,
        request: Request<Full<Bytes>>,
    ) -> impl Future<Output = Result<Response<Incoming>, CallError>> + Send;
}

impl Transport for Http {
    async fn send(&mut self, request: Request<Full<Bytes>>) -> Result<Response<Incoming>, CallError> {
        self.request(request).await.map_err(CallError::transport)
    }
}

impl<T: Transport> Transport for &mut T {
    fn send(
        &mut self,
        request: Request<Full<Bytes>>,
    ) -> impl Future<Output = Result<Response<Incoming>, CallError>> + Send {
        (**self).send(request)
    }
}

/// The protocol revision a client speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// Sessions; no priming events.
    V2025_06_18,
    /// Sessions; streams begin with a priming event.
    V2025_11_25,
    /// Stateless: no session, `Mcp-Method`/`Mcp-Name` headers on every POST.
    V2026_07_28,
}

impl Version {
    /// The `MCP-Protocol-Version` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V2025_06_18 => "2025-06-18",
            Version::V2025_11_25 => "2025-11-25",
            Version::V2026_07_28 => "2026-07-28",
        }
    }

    fn header(self) -> HeaderValue {
        HeaderValue::from_static(self.as_str())
    }
}

/// One MCP session (or, for 2026-07-28, a stateless caller) against one target.
#[derive(Debug)]
pub struct Session<T> {
    transport: T,
    url: Uri,
    version: Version,
    id: Option<HeaderValue>,
    next_id: u64,
}

impl<T: Transport> Session<T> {
    /// Initializes a session on `url` and sends `notifications/initialized`.
    pub async fn open(transport: T, url: Uri, version: Version) -> Result<Session<T>, CallError> {
        let mut session = Session::join(transport, url, version, None);
        let params = json!({
            "protocolVersion": version.as_str(),
            "capabilities": {},
            "clientInfo": {"name": "shadowcat-bench", "version": env!("CARGO_PKG_VERSION")}
        });
        let id = session.fresh_id();
        let response = session
            .post(&request_body(id, "initialize", params), None)
            .await?;
        session.id = response.headers().get("mcp-session-id").cloned();
        answer(response, id, Instant::now()).await?;
        if version != Version::V2026_07_28 && session.id.is_none() {
            return Err(CallError::Protocol(
                "initialize answered without a session id".into(),
            ));
        }
        let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        let response = session
            .post(&note, Some(("notifications/initialized", None)))
            .await?;
        timed(drain(response.into_body())).await??;
        Ok(session)
    }

    /// Uses the session `id` another caller opened (or none, e.g. stateless).
    pub fn join(transport: T, url: Uri, version: Version, id: Option<HeaderValue>) -> Session<T> {
        Session {
            transport,
            url,
            version,
            id,
            next_id: 0,
        }
    }

    /// Numbers this caller's requests from `first` on (callers sharing a
    /// session must not reuse each other's ids).
    pub fn first_request_id(mut self, first: u64) -> Session<T> {
        self.next_id = first.saturating_sub(1);
        self
    }

    /// A 2026-07-28 caller: no session, no handshake.
    pub fn stateless(transport: T, url: Uri) -> Session<T> {
        Session::join(transport, url, Version::V2026_07_28, None)
    }

    /// The session id, if there is a session.
    pub fn id(&self) -> Option<&HeaderValue> {
        self.id.as_ref()
    }

    /// Calls `tool` with `arguments` and times it; a progress token is sent so
    /// tools that report progress do.
    pub async fn call(&mut self, tool: &str, arguments: Value) -> Result<Timing, CallError> {
        let id = self.fresh_id();
        let params = json!({"name": tool, "arguments": arguments, "_meta": {"progressToken": id}});
        let body = request_body(id, "tools/call", params);
        let started = Instant::now();
        let response = self.post(&body, Some(("tools/call", Some(tool)))).await?;
        answer(response, id, started).await
    }

    /// Ends the session (DELETE) and checks the answer is a success.
    pub async fn end(mut self) -> Result<(), CallError> {
        let Some(id) = self.id.take() else {
            return Ok(());
        };
        let request = self
            .request(Method::DELETE)
            .header("mcp-session-id", id)
            .body(Full::new(Bytes::new()))
            .map_err(|e| CallError::Protocol(e.to_string()))?;
        let response = timed(self.transport.send(request)).await??;
        let status = response.status();
        timed(drain(response.into_body())).await??;
        match status.is_success() {
            true => Ok(()),
            false => Err(CallError::Status(status)),
        }
    }

    /// Ends the session (DELETE); failures do not matter here.
    pub async fn close(self) {
        let _ = self.end().await;
    }

    fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// A request to the endpoint with the version header (and the bearer
    /// token, once [`set_bearer`] gave one).
    fn request(&self, method: Method) -> http::request::Builder {
        let builder = Request::builder()
            .method(method)
            .uri(self.url.clone())
            .header("mcp-protocol-version", self.version.header());
        match BEARER.get() {
            Some(bearer) => builder.header(http::header::AUTHORIZATION, bearer.clone()),
            None => builder,
        }
    }

    /// POSTs a message with the standard headers and checks the status;
    /// `routing` is the method and name that 2026-07-28 mirrors in headers.
    async fn post(
        &mut self,
        body: &Value,
        routing: Option<(&str, Option<&str>)>,
    ) -> Result<Response<Incoming>, CallError> {
        let mut request = self
            .request(Method::POST)
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json, text/event-stream");
        if let Some(id) = &self.id {
            request = request.header("mcp-session-id", id);
        }
        if let (Version::V2026_07_28, Some((method, name))) = (self.version, routing) {
            request = request.header("mcp-method", method);
            if let Some(name) = name {
                request = request.header("mcp-name", name);
            }
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| CallError::Protocol(e.to_string()))?;
        let response = timed(self.transport.send(request)).await??;
        if !response.status().is_success() {
            let status = response.status();
            let _ = timed(drain(response.into_body())).await;
            return Err(CallError::Status(status));
        }
        Ok(response)
    }
}

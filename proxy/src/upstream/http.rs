//! A pooled HTTP/1.1 client to the upstream's Streamable HTTP endpoint.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::credential::Credential;
use crate::error::{Error, Result};
use crate::mcp::headers::{LAST_EVENT_ID, MCP_SESSION_ID};

/// One request to the upstream.
#[derive(Debug, Default)]
pub struct UpstreamRequest {
    /// GET, POST or DELETE.
    pub method: Method,
    /// End-to-end headers to send (see [`client_headers_for_upstream`]).
    pub headers: HeaderMap,
    /// The upstream's session id, if the session has one.
    pub session: Option<String>,
    /// Resume an upstream stream after this upstream event id.
    pub last_event_id: Option<String>,
    /// The request body (empty for GET and DELETE).
    pub body: Bytes,
}

/// The upstream endpoint and a connection pool to it.
#[derive(Clone, Debug)]
pub struct Upstream {
    client: Client<HttpConnector, Full<Bytes>>,
    uri: Uri,
    timeout: Duration,
    credential: Option<Arc<Credential>>,
}

impl Upstream {
    /// A client for `uri` that waits at most `timeout` for response headers.
    pub fn new(uri: Uri, timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Self {
            client,
            uri,
            timeout,
            credential: None,
        }
    }

    /// Presents `credential` on every request from now on, in place of any
    /// the request carried.
    pub fn with_credential(mut self, credential: Credential) -> Self {
        self.credential = Some(Arc::new(credential));
        self
    }

    /// The endpoint URL.
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// Sends a request; resolves when the response headers arrive. The body
    /// is left to the caller to stream.
    pub async fn send(&self, req: UpstreamRequest) -> Result<Response<Incoming>> {
        let mut builder = Request::builder().method(req.method).uri(self.uri.clone());
        if let Some(headers) = builder.headers_mut() {
            *headers = req.headers;
            if let Some(credential) = &self.credential {
                let (name, value) = credential.header();
                headers.insert(name, value);
            }
            if let Some(id) = req.session.as_deref().and_then(|s| HeaderValue::from_str(s).ok()) {
                headers.insert(MCP_SESSION_ID.clone(), id);
            }
            if let Some(id) = req
                .last_event_id
                .as_deref()
                .and_then(|s| HeaderValue::from_str(s).ok())
            {
                headers.insert(LAST_EVENT_ID.clone(), id);
            }
        }
        let request = builder
            .body(Full::new(req.body))
            .map_err(|e| Error::UpstreamProtocol(format!("cannot build request: {e}")))?;
        match tokio::time::timeout(self.timeout, self.client.request(request)).await {
            Err(_) => Err(Error::UpstreamTimeout(self.timeout)),
            Ok(Err(e)) => Err(Error::UpstreamUnavailable(describe(&e))),
            Ok(Ok(response)) => Ok(response),
        }
    }

    /// Whether the upstream answers HTTP at all (any status counts).
    pub async fn probe(&self) -> bool {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        let req = UpstreamRequest {
            method: Method::GET,
            headers,
            ..Default::default()
        };
        // The answer (most likely 400 or 405 without a session) is dropped
        // with its body: only reaching the server matters.
        self.send(req).await.is_ok()
    }
}

/// An HTTP client error with its chain of causes.
pub fn describe(e: &hyper_util::client::legacy::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Headers that describe one connection, not the message (RFC 9110
/// §7.6.1): the standard ones, and any the `Connection` header names.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "proxy-authorization"
            | "proxy-authenticate"
    )
}

/// `headers` minus hop-by-hop ones (the standard ones and any the
/// `Connection` header names) and minus what `managed` says.
fn end_to_end(headers: &HeaderMap, managed: impl Fn(&HeaderName) -> bool) -> HeaderMap {
    // Looked up once, not per header; empty (no allocation) on most messages.
    let named: Vec<&str> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .collect();
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        if hop_by_hop(name)
            || managed(name)
            || named
                .iter()
                .any(|token| token.eq_ignore_ascii_case(name.as_str()))
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

/// The client's headers to pass upstream: end-to-end ones, minus what
/// Shadowcat manages itself (session id, resumption, host, length, and
/// `Accept-Encoding`, since event streams must arrive uncompressed to be parsed).
pub fn client_headers_for_upstream(headers: &HeaderMap) -> HeaderMap {
    end_to_end(headers, |name| {
        *name == header::HOST
            || *name == header::CONTENT_LENGTH
            || *name == header::ACCEPT_ENCODING
            || *name == MCP_SESSION_ID
            || *name == LAST_EVENT_ID
            || name.as_str().starts_with("shadowcat-")
    })
}

/// The upstream's response headers to pass to the client, minus hop-by-hop
/// ones, the length (bodies are re-framed) and the upstream session id.
pub fn upstream_headers_for_client(headers: &HeaderMap) -> HeaderMap {
    end_to_end(headers, |name| {
        *name == header::CONTENT_LENGTH || *name == MCP_SESSION_ID
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn managed_and_hop_by_hop_headers_stay_behind() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("proxy:8080"));
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        h.insert(MCP_SESSION_ID.clone(), HeaderValue::from_static("ours"));
        h.insert(LAST_EVENT_ID.clone(), HeaderValue::from_static("s.1"));
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        h.insert("mcp-protocol-version", HeaderValue::from_static("2025-06-18"));
        h.append(header::CONNECTION, HeaderValue::from_static("x-trace-hop, Close"));
        h.insert("x-trace-hop", HeaderValue::from_static("named in Connection"));
        let out = client_headers_for_upstream(&h);
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(out.contains_key(header::AUTHORIZATION));
        assert!(out.contains_key("mcp-protocol-version"));

        let mut r = HeaderMap::new();
        r.insert(MCP_SESSION_ID.clone(), HeaderValue::from_static("upstream-id"));
        r.insert(header::CONTENT_LENGTH, HeaderValue::from_static("10"));
        r.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        r.insert(header::CONNECTION, HeaderValue::from_static("x-upstream-hop"));
        r.insert("x-upstream-hop", HeaderValue::from_static("1"));
        let out = upstream_headers_for_client(&r);
        assert_eq!(out.len(), 1, "{out:?}");
    }
}

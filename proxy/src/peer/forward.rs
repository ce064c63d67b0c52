//! Sending a request on to the replica that owns its session, and streaming
//! its answer (JSON or SSE) back as it comes.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::{PEER_AUTH, PEER_HOP, PeerSecret};
use crate::body::Body;
use crate::error::{Error, Result};
use crate::relay::json;
use crate::upstream::client_headers_for_upstream;

/// Why a forward did not produce the owner's answer.
#[derive(Debug)]
pub enum Forwarded {
    /// The owner answered; its response, streaming.
    Answer(Response<Body>),
    /// The owner could not be reached: treat it as gone.
    OwnerDown(String),
}

/// A pooled client to other replicas' peer listeners.
#[derive(Clone, Debug)]
pub struct PeerClient {
    client: Client<HttpConnector, Full<Bytes>>,
    secret: PeerSecret,
    timeout: Duration,
}

impl PeerClient {
    /// A client signing with `secret`, waiting `timeout` for response headers.
    pub fn new(secret: PeerSecret, timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            secret,
            timeout,
        }
    }

    /// The secret, for verifying incoming peer requests.
    pub fn secret(&self) -> &PeerSecret {
        &self.secret
    }

    /// Forwards a request of `session` to the replica at `addr`.
    pub async fn forward(
        &self,
        addr: &str,
        path: &str,
        method: Method,
        headers: &HeaderMap,
        session: &str,
        body: Bytes,
    ) -> Result<Forwarded> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"));
        if let Some(out) = request.headers_mut() {
            *out = client_headers_for_upstream(headers);
            for name in [
                &crate::mcp::headers::MCP_SESSION_ID,
                &crate::mcp::headers::LAST_EVENT_ID,
            ] {
                if let Some(v) = headers.get(name) {
                    out.insert(name.clone(), v.clone());
                }
            }
            out.insert(PEER_HOP.clone(), HeaderValue::from_static("1"));
            if let Ok(v) = HeaderValue::from_str(&self.secret.sign(session)) {
                out.insert(PEER_AUTH.clone(), v);
            }
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| Error::UpstreamProtocol(format!("cannot build peer request: {e}")))?;
        match tokio::time::timeout(self.timeout, self.client.request(request)).await {
            Err(_) => Ok(Forwarded::OwnerDown(format!(
                "no answer within {:?}",
                self.timeout
            ))),
            Ok(Err(e)) => Ok(Forwarded::OwnerDown(e.to_string())),
            Ok(Ok(response)) => {
                let mut out = json::pass_through(response);
                // The owner's session header is Shadowcat's own id: keep it.
                out.headers_mut().remove(&crate::mcp::headers::MCP_SESSION_ID);
                Ok(Forwarded::Answer(out))
            }
        }
    }
}

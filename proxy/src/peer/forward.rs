//! Sending a request on to the replica that owns its session, and streaming
//! its answer (JSON or SSE) back as it comes.
//!
//! A forward either never reached the owner (the connection was refused or
//! could not be made: the request was not written, so the caller may serve
//! it elsewhere) or it did, and then whatever happens is the answer: the
//! owner's response, or a 502/504 when it failed or took too long. A request
//! that reached a slow owner is never sent a second time.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::{PEER_AUTH, PEER_HOP, PEER_IDENTITY, PeerSecret, Signed};
use crate::auth::Identity;
use crate::body::Body;
use crate::error::{Error, Result};
use crate::placement::Forwardable;
use crate::relay::json;
use crate::upstream::{client_headers_for_upstream, describe};

/// Path of the unauthenticated liveness probe on the peer listener: it
/// answers with the process's instance id.
pub const INSTANCE_PATH: &str = "/instance";

/// How a forward ended when it produced no answer to relay.
#[derive(Debug)]
pub enum Forwarded {
    /// The owner answered; its response, streaming.
    Answer(Response<Body>),
    /// The request was never written: the owner could not be connected to.
    NotSent(String),
}

/// A pooled client to other replicas' peer listeners.
#[derive(Clone, Debug)]
pub struct PeerClient {
    client: Client<HttpConnector, Full<Bytes>>,
    secret: Arc<PeerSecret>,
    timeout: Duration,
}

impl PeerClient {
    /// A client signing with `secret`, waiting `timeout` for the owner's
    /// response headers (longer than the owner waits for its upstream, so
    /// the owner's own 504 arrives first).
    pub fn new(secret: PeerSecret, timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        Self {
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector),
            secret: Arc::new(secret),
            timeout,
        }
    }

    /// The secret, for verifying incoming peer requests.
    pub fn secret(&self) -> &PeerSecret {
        &self.secret
    }

    /// Forwards a request of `session` to the replica at `addr`.
    pub async fn forward(&self, addr: &str, request: &Forwardable<'_>, session: &str) -> Result<Forwarded> {
        let mut builder = Request::builder()
            .method(request.method.clone())
            .uri(format!("http://{addr}{}", request.path));
        if let Some(out) = builder.headers_mut() {
            *out = client_headers_for_upstream(request.headers);
            for name in [
                &crate::mcp::headers::MCP_SESSION_ID,
                &crate::mcp::headers::LAST_EVENT_ID,
            ] {
                if let Some(v) = request.headers.get(name) {
                    out.insert(name.clone(), v.clone());
                }
            }
            out.insert(PEER_HOP.clone(), HeaderValue::from_static("1"));
            let identity = request
                .identity
                .as_deref()
                .map(Identity::to_wire)
                .unwrap_or_default();
            if let Ok(v) = HeaderValue::from_str(&identity)
                && !identity.is_empty()
            {
                out.insert(PEER_IDENTITY.clone(), v);
            }
            let signed = Signed {
                method: request.method.as_str(),
                path: request.path,
                session,
                body: &request.body,
                identity: &identity,
            };
            if let Ok(v) = HeaderValue::from_str(&self.secret.sign(&signed)) {
                out.insert(PEER_AUTH.clone(), v);
            }
        }
        let built = builder
            .body(Full::new(request.body.clone()))
            .map_err(|e| Error::UpstreamProtocol(format!("cannot build peer request: {e}")))?;
        match tokio::time::timeout(self.timeout, self.client.request(built)).await {
            Err(_) => Err(Error::OwnerTimeout(self.timeout)),
            Ok(Err(e)) if e.is_connect() => Ok(Forwarded::NotSent(describe(&e))),
            Ok(Err(e)) => Err(Error::OwnerFailed(describe(&e))),
            Ok(Ok(response)) => {
                let mut out = json::pass_through(response);
                // The owner's session header is Shadowcat's own id: keep it.
                out.headers_mut().remove(&crate::mcp::headers::MCP_SESSION_ID);
                Ok(Forwarded::Answer(out))
            }
        }
    }

    /// Asks the process at `addr` who it is.
    pub async fn instance_at(&self, addr: &str) -> Probe {
        let Ok(request) = Request::builder()
            .method(Method::GET)
            .uri(format!("http://{addr}{INSTANCE_PATH}"))
            .body(Full::new(Bytes::new()))
        else {
            return Probe::NoAnswer;
        };
        let response = match self.client.request(request).await {
            Ok(response) => response,
            Err(e) if refused(&e) => return Probe::Refused,
            Err(_) => return Probe::NoAnswer,
        };
        if !response.status().is_success() {
            return Probe::NoAnswer;
        }
        match http_body_util::Limited::new(response.into_body(), 1024)
            .collect()
            .await
        {
            Ok(body) => Probe::Instance(String::from_utf8_lossy(&body.to_bytes()).into_owned()),
            Err(_) => Probe::NoAnswer,
        }
    }
}

/// What a liveness probe found at an address.
#[derive(Debug, PartialEq, Eq)]
pub enum Probe {
    /// A process answered with this instance id.
    Instance(String),
    /// Nothing listens there: the connection was refused.
    Refused,
    /// No answer in time (or not a sensible one): not proof of anything.
    NoAnswer,
}

/// Whether a client error is a refused connection (nothing listening).
fn refused(e: &hyper_util::client::legacy::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        source = cause.source();
    }
    false
}

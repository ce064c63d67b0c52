//! Method and path to handler, with request metrics around every answer.

use std::convert::Infallible;
use std::sync::Arc;

use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::app::App;
use crate::body::{self, Body};
use crate::endpoint;
use crate::error::Error;
use crate::metrics::{MethodLabels, RequestLabels};

/// The public listener: the MCP endpoint and nothing else.
pub async fn public(app: Arc<App>, mut req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    // Only the peer listener may mark a request as forwarded.
    req.headers_mut().remove(&crate::peer::PEER_HOP);
    req.headers_mut().remove(&crate::peer::PEER_AUTH);
    public_or_peer(app, req).await
}

async fn public_or_peer(app: Arc<App>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let start = Instant::now();
    let method = method_label(req.method());
    let response = if req.uri().path() == app.settings.path {
        endpoint::handle(app.clone(), req).await
    } else {
        Error::NotFound.into_response(None)
    };
    let status = response.status().as_u16();
    app.metrics
        .requests
        .get_or_create(&RequestLabels { method, status })
        .inc();
    app.metrics
        .request_duration
        .get_or_create(&MethodLabels { method })
        .observe(start.elapsed().as_secs_f64());
    Ok(response)
}

/// The peer listener: requests other replicas forward, authenticated with
/// the shared secret over their session id, then served like public ones
/// (but never forwarded again).
pub async fn peer(app: Arc<App>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let authentic = app.peer.as_ref().is_some_and(|peer| {
        let header = |name| {
            req.headers()
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        match (
            header(&crate::peer::PEER_AUTH),
            header(&crate::mcp::headers::MCP_SESSION_ID),
        ) {
            (Some(auth), Some(session)) => {
                req.headers().contains_key(&crate::peer::PEER_HOP) && peer.secret().verify(session, auth)
            }
            _ => false,
        }
    });
    if !authentic {
        tracing::warn!(path = %req.uri().path(), "peer request refused: bad or missing signature");
        return Ok(Error::PeerUnauthorized.into_response(None));
    }
    public_or_peer(app, req).await
}

/// The admin listener: health, readiness, metrics.
pub async fn admin(app: Arc<App>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let response = match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => match app.ready().await {
            Ok(()) => text(StatusCode::OK, "ready\n".into()),
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")),
        },
        "/metrics" => {
            let mut r = text(StatusCode::OK, app.metrics.encode());
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            );
            r
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    };
    Ok(response)
}

fn text(status: StatusCode, text: String) -> Response<Body> {
    let mut response = Response::new(body::full(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::DELETE => "DELETE",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::HEAD => "HEAD",
        _ => "other",
    }
}

//! Method and path to handler, with request metrics around every answer.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::app::App;
use crate::auth::Identity;
use crate::body::{self, Body};
use crate::endpoint;
use crate::error::Error;
use crate::metrics::{MethodLabels, RequestLabels};
use crate::peer::{INSTANCE_PATH, PEER_AUTH, PEER_HOP, PEER_IDENTITY, Signed};

/// The public listener: the MCP endpoint and nothing else.
pub async fn public(app: Arc<App>, mut req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    // Only the peer listener may mark a request as forwarded.
    req.headers_mut().remove(&PEER_HOP);
    req.headers_mut().remove(&PEER_AUTH);
    req.headers_mut().remove(&PEER_IDENTITY);
    Ok(serve(app, req.map(body::incoming)).await)
}

async fn serve(app: Arc<App>, req: Request<Body>) -> Response<Body> {
    let start = Instant::now();
    let method = method_label(req.method());
    let metadata = app
        .auth
        .as_ref()
        .and_then(|auth| auth.metadata_response(req.method(), req.uri().path()));
    let response = if let Some(metadata) = metadata {
        metadata
    } else if req.uri().path() == app.settings.path {
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
    response
}

/// The peer listener: who this process is (for liveness probes), and
/// requests other replicas forward, authenticated with the shared secret
/// over the whole request, then served like public ones (but never
/// forwarded again).
pub async fn peer(app: Arc<App>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    if req.method() == Method::GET && req.uri().path() == INSTANCE_PATH {
        return Ok(text(StatusCode::OK, app.sessions.me().to_string()));
    }
    let (mut parts, incoming) = req.into_parts();
    let settings = &app.settings;
    let read = app
        .bodies
        .read(
            &parts.headers,
            body::incoming(incoming),
            settings.max_body_bytes,
            settings.header_read_timeout,
            None,
        )
        .await;
    let (bytes, room) = match read {
        Ok(read) => read,
        Err(e) => return Ok(e.into_response(None)),
    };
    // The handler reads the body again from memory: it is paid for.
    parts.extensions.insert(room);
    let header = |name| {
        parts
            .headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let verdict = match (
        app.peer.as_ref(),
        header(&PEER_AUTH),
        header(&crate::mcp::headers::MCP_SESSION_ID),
        parts.headers.contains_key(&PEER_HOP),
    ) {
        (Some(peer), Some(auth), Some(session), true) => {
            let identity = header(&PEER_IDENTITY).unwrap_or_default();
            let signed = Signed {
                method: parts.method.as_str(),
                path: parts.uri.path(),
                session,
                body: &bytes,
                identity,
            };
            peer.secret()
                .verify(&signed, auth)
                .map_err(|refused| format!("{refused:?}"))
                .and_then(|()| match (&app.auth, identity) {
                    (None, _) => Ok(None),
                    // Verified by the forwarding replica, signed with the request.
                    (Some(_), wire) => Identity::from_wire(wire)
                        .map(|identity| Some(Arc::new(identity)))
                        .ok_or_else(|| {
                            "no verified identity (is token verification on for every replica?)".to_owned()
                        }),
                })
        }
        _ => Err("missing signature, session or hop marker".to_owned()),
    };
    match verdict {
        Err(why) => {
            tracing::warn!(path = %parts.uri.path(), why, "peer request refused");
            return Ok(Error::PeerUnauthorized.into_response(None));
        }
        Ok(Some(identity)) => {
            parts.extensions.insert(identity);
        }
        Ok(None) => {}
    }
    Ok(serve(app, Request::from_parts(parts, body::full(bytes))).await)
}

/// The header of the kubelet's `preStop` GET that drains.
pub const DRAIN_HEADER: &str = "x-shadowcat-drain";

/// The admin listener: health, readiness, metrics, and `POST /drain`.
pub async fn admin(app: Arc<App>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let verbose = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "verbose"));
    let response = match (req.method(), req.uri().path()) {
        (_, "/healthz") => text(StatusCode::OK, "ok\n".into()),
        (_, "/readyz") => readiness(&app, verbose),
        (_, "/metrics") => {
            let mut r = text(StatusCode::OK, app.metrics.encode());
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            );
            r
        }
        (&Method::POST, "/drain") => drain(&app).await,
        // The kubelet's HTTP `preStop` hook can only GET: a GET drains only
        // with the header the injected hook sends, so a stray GET (a
        // crawler, a curious browser) never takes a pod out of service.
        (&Method::GET, "/drain")
            if req
                .headers()
                .get(DRAIN_HEADER)
                .is_some_and(|v| v.as_bytes() == b"preStop") =>
        {
            drain(&app).await
        }
        (_, "/drain") => text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("POST /drain, or GET /drain with {DRAIN_HEADER}: preStop\n"),
        ),
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    };
    Ok(response)
}

fn readiness(app: &App, verbose: bool) -> Response<Body> {
    let ready = app.ready();
    let mut out = match &ready {
        Ok(()) => "ready\n".to_owned(),
        Err(why) => format!("not ready: {why}\n"),
    };
    if verbose {
        let upstream = if app.upstream_up() { "ok" } else { "not answering" };
        let store = match app.store_health() {
            Ok(()) => "ok".to_owned(),
            Err(e) => format!("down ({e}); new sessions get 503, owned sessions go on"),
        };
        out.push_str(&format!(
            "upstream: {upstream}\nstore: {store}\ndraining: {}\nsessions: {}\n",
            app.draining(),
            app.sessions.held()
        ));
    }
    let status = match ready {
        Ok(()) => StatusCode::OK,
        Err(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    text(status, out)
}

/// Starts the drain (as SIGTERM would, without exiting) and answers once
/// every in-flight answer is in the log and the sessions are handed back —
/// for a `preStop` hook of the MCP server's container, so the server stays
/// up until Shadowcat no longer needs it.
async fn drain(app: &App) -> Response<Body> {
    app.drain_requested.cancel();
    let limit = app.settings.shutdown_delay + app.settings.drain_timeout + Duration::from_secs(5);
    match tokio::time::timeout(limit, app.drained.cancelled()).await {
        Ok(()) => text(StatusCode::OK, "drained\n".into()),
        Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "still draining\n".into()),
    }
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

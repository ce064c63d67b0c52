//! POST: one JSON-RPC message (or a 2025-03-26 batch) from the client.
//!
//! validate -> (stateless | initialize | session) -> upstream -> relay.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{placement, standalone, validate, with_session_id};
use crate::app::App;
use crate::body::{self, Body};
use crate::error::{Error, Failure};
use crate::mcp::ProtocolVersion;
use crate::mcp::jsonrpc::{self, Kind};
use crate::relay::replay::Reader;
use crate::relay::sse::Pump;
use crate::relay::{event_stream_response, is_event_stream, json, stateless};
use crate::session::{Session, new_id};
use crate::store::{StreamKind, StreamMeta};
use crate::upstream::{UpstreamRequest, client_headers_for_upstream};

/// Serves a POST.
pub async fn handle(app: &Arc<App>, req: Request<Incoming>) -> Result<Response<Body>, Failure> {
    let (parts, incoming) = req.into_parts();
    let headers = &parts.headers;
    validate::origin(headers, &app.settings.allowed_origins)?;
    validate::post_media(headers)?;
    let version = validate::version(headers)?;
    let bytes = validate::body(headers, incoming, app.settings.max_body_bytes).await?;
    let message = jsonrpc::parse(&bytes).map_err(Error::from)?;
    let id = message.error_id();
    let with_id = |e: Error| e.with_id(id.clone());

    if version.is_some_and(ProtocolVersion::is_stateless) {
        validate::routing_headers(headers, &message).map_err(with_id)?;
        return stateless_post(app, headers, bytes).await.map_err(with_id);
    }
    let version = version.unwrap_or(ProtocolVersion::ASSUMED);
    if let jsonrpc::Body::Batch(messages) = &message {
        if !version.allows_batches() {
            return Err(with_id(Error::InvalidRequest(format!(
                "batches are not allowed at protocol {version}"
            ))));
        }
        if messages.iter().any(|m| m.is_initialize()) {
            return Err(with_id(Error::InvalidRequest(
                "initialize must not be part of a batch".into(),
            )));
        }
    }
    if message.messages()[0].is_initialize() {
        return initialize(app, headers, bytes, &message).await.map_err(with_id);
    }
    let session_id = validate::session_id(headers).map_err(with_id)?;
    let located = placement::locate(
        app,
        session_id,
        Method::POST,
        parts.uri.path(),
        headers,
        bytes.clone(),
    )
    .await
    .map_err(with_id)?;
    match located {
        Err(forwarded) => Ok(forwarded),
        Ok(session) => forward(app, headers, bytes, &message, session)
            .await
            .map_err(with_id),
    }
}

/// Forwards an initialize and, if the upstream accepts it, creates the session.
async fn initialize(
    app: &Arc<App>,
    headers: &HeaderMap,
    bytes: Bytes,
    message: &jsonrpc::Body,
) -> Result<Response<Body>, Error> {
    if app.shutdown.is_cancelled() {
        return Err(Error::ShuttingDown);
    }
    let requested = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| {
            v.pointer("/params/protocolVersion")?
                .as_str()
                .and_then(ProtocolVersion::parse)
        })
        .unwrap_or(ProtocolVersion::ASSUMED);
    let initialize_text = String::from_utf8_lossy(&bytes).into_owned();
    let response = send_upstream(app, headers, &bytes, None).await?;
    if !response.status().is_success() {
        return Ok(json::pass_through(response));
    }
    let upstream_id = response
        .headers()
        .get(&crate::mcp::headers::MCP_SESSION_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let id = new_id();
    if is_event_stream(response.headers()) {
        let session = app
            .sessions
            .create(id.clone(), upstream_id, requested, initialize_text)
            .await?;
        // The negotiated version arrives on the stream; the pump records it.
        tracing::info!(session = %id, requested = %requested, "session created");
        let pending = message.messages().iter().filter_map(|m| m.id.clone()).collect();
        let response = start_stream(
            app,
            &session,
            headers,
            response.into_body(),
            pending,
            Some(id.clone()),
        )
        .await?;
        return Ok(with_session_id(response, &id));
    }
    let (parts, incoming) = response.into_parts();
    let answer = json::collect(incoming, app.settings.max_body_bytes).await?;
    let negotiated = serde_json::from_slice::<Value>(&answer)
        .ok()
        .and_then(|v| v.pointer("/result/protocolVersion")?.as_str().map(str::to_owned));
    let mut out = Response::new(body::full(answer));
    *out.status_mut() = parts.status;
    *out.headers_mut() = crate::upstream::upstream_headers_for_client(&parts.headers);
    let Some(negotiated) = negotiated else {
        // An error answer: no session was made.
        return Ok(out);
    };
    let version = ProtocolVersion::parse(&negotiated).unwrap_or(requested);
    app.sessions
        .create(id.clone(), upstream_id, version, initialize_text)
        .await?;
    tracing::info!(session = %id, %version, "session created");
    Ok(with_session_id(out, &id))
}

/// Forwards a message of a known session.
async fn forward(
    app: &Arc<App>,
    headers: &HeaderMap,
    bytes: Bytes,
    message: &jsonrpc::Body,
    mut session: Session,
) -> Result<Response<Body>, Error> {
    let mut response = send_upstream(app, headers, &bytes, session.record.upstream_id.clone()).await?;
    if matches!(response.status(), StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST) {
        // Maybe the upstream restarted and forgot the session: then give it a
        // new one and try once more, rather than fail a valid client session.
        let (parts, incoming) = response.into_parts();
        let answer = json::collect(incoming, app.settings.max_body_bytes).await?;
        if !placement::lost_session(parts.status, &answer) || session.record.upstream_id.is_none() {
            return Ok(json::buffered(parts, answer));
        }
        session = placement::reinitialize_owned(app, &session).await?;
        response = send_upstream(app, headers, &bytes, session.record.upstream_id.clone()).await?;
    }
    let status = response.status();
    if status.is_success() {
        record_if_replayable(app, message, &bytes, &session).await;
    }
    if status.is_success() && is_event_stream(response.headers()) && message.has_requests() {
        let pending = message
            .messages()
            .iter()
            .filter(|m| m.kind == Kind::Request)
            .filter_map(|m| m.id.clone())
            .collect();
        return start_stream(app, &session, headers, response.into_body(), pending, None).await;
    }
    let initialized = message
        .messages()
        .iter()
        .any(|m| m.method.as_deref() == Some("notifications/initialized"));
    if status.is_success() && initialized {
        // Open the upstream's standalone stream now, so what the server sends
        // before the client's GET arrives is kept for it.
        let (app, headers) = (app.clone(), headers.clone());
        tokio::spawn(async move { standalone::ensure(&app, &session, &headers).await });
    }
    Ok(json::pass_through(response))
}

/// POSTs the client's message upstream, in `upstream_session` if any.
async fn send_upstream(
    app: &App,
    headers: &HeaderMap,
    bytes: &Bytes,
    upstream_session: Option<String>,
) -> Result<Response<Incoming>, Error> {
    let request = UpstreamRequest {
        method: Method::POST,
        headers: client_headers_for_upstream(headers),
        session: upstream_session,
        body: bytes.clone(),
        ..Default::default()
    };
    app.upstream.send(request).await
}

/// Keeps requests that shape the upstream session (subscriptions, log level)
/// in the session record, for a replica that has to adopt it.
async fn record_if_replayable(app: &App, message: &jsonrpc::Body, bytes: &Bytes, session: &Session) {
    let jsonrpc::Body::Single(m) = message else { return };
    if !m
        .method
        .as_deref()
        .is_some_and(|method| placement::RECORDED_METHODS.contains(&method))
    {
        return;
    }
    let mut record = session.record.clone();
    record.replay.push(String::from_utf8_lossy(bytes).into_owned());
    if let Err(e) = app.sessions.save(&record).await {
        tracing::warn!(session = %record.id, error = %e, "cannot record a request for re-initialization");
    }
}

/// Starts pumping an upstream event stream into a new log and returns the
/// client's response: a reader of that log from its start.
async fn start_stream(
    app: &Arc<App>,
    session: &Session,
    headers: &HeaderMap,
    upstream: Incoming,
    pending: Vec<Value>,
    initialize_of: Option<String>,
) -> Result<Response<Body>, Error> {
    let stream = new_id();
    let meta = StreamMeta {
        id: stream.clone(),
        session_id: session.record.id.clone(),
        kind: StreamKind::Request,
        pending: pending.clone(),
        replica: app.sessions.replica().to_owned(),
    };
    if let Err(e) = app.store.create_stream(&meta).await {
        // The store is unreachable: the answer still flows, relayed event by
        // event, just not resumable until the store is back.
        tracing::warn!(session = %session.record.id, error = %e, "store unreachable; relaying the stream without a log");
        app.metrics.store_bypasses.inc();
        return Ok(event_stream_response(stateless::relay(app.clone(), upstream)));
    }
    let client_gone = CancellationToken::new();
    let pump = Pump {
        app: app.clone(),
        stream: meta.key(),
        upstream_session: session.record.upstream_id.clone(),
        headers: standalone::get_headers(headers),
        pending,
        initialize_of: initialize_of.clone(),
        next_seq: 1,
    };
    app.pumps.spawn(pump.run_request(upstream, client_gone.clone()));
    let reader = Reader {
        stream: meta.key(),
        after: 0,
        // The version of a session still initializing is not known yet.
        prime: initialize_of.is_none() && session.version.primes_streams(),
        track_delivery: false,
        replaying: false,
        superseded: session.local.ended.child_token(),
        on_close: Some(client_gone.drop_guard()),
    };
    Ok(reader.respond(app.clone()))
}

/// 2026-07-28: no session; relay the answer, event streams without a log.
async fn stateless_post(app: &Arc<App>, headers: &HeaderMap, bytes: Bytes) -> Result<Response<Body>, Error> {
    let response = send_upstream(app, headers, &bytes, None).await?;
    if response.status().is_success() && is_event_stream(response.headers()) {
        return Ok(event_stream_response(stateless::relay(
            app.clone(),
            response.into_body(),
        )));
    }
    Ok(json::pass_through(response))
}

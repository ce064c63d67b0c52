//! POST: one JSON-RPC message (or a 2025-03-26 batch) from the client.
//!
//! validate -> (stateless | initialize | session) -> upstream -> relay.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::policed::{self, Admission};
use super::{body, standalone, validate, with_session_id};
use crate::app::App;
use crate::auth::Identity;
use crate::body::Body;
use crate::error::{Error, Failure};
use crate::mcp::ProtocolVersion;
use crate::mcp::jsonrpc::{self, Kind};
use crate::placement::{self, Forwardable, Located, adopt, reinit};
use crate::policy::Scope;
use crate::relay::replay::Reader;
use crate::relay::sse::Pump;
use crate::relay::{event_stream_response, is_event_stream, json, stateless};
use crate::session::{Session, new_id};
use crate::store::{SessionChange, StoredEvent, StreamKind, StreamMeta};
use crate::upstream::{UpstreamRequest, client_headers_for_upstream};

/// Serves a POST.
pub async fn handle(app: &Arc<App>, req: Request<Body>) -> Result<Response<Body>, Failure> {
    let (mut parts, incoming) = req.into_parts();
    validate::origin_and_host(&parts, &app.settings)?;
    validate::post_media(&parts.headers)?;
    let version = validate::version(&parts.headers)?;
    let prepaid = parts.extensions.remove::<body::Held>();
    let settings = &app.settings;
    // Held until the answer's headers are out: the body is in memory till then.
    let (bytes, _room) = app
        .bodies
        .read(
            &parts.headers,
            incoming,
            settings.max_body_bytes,
            settings.header_read_timeout,
            prepaid,
        )
        .await?;
    let headers = &parts.headers;
    let message = jsonrpc::parse(&bytes).map_err(Error::from)?;
    let id = message.error_id();
    let with_id = |e: Error| e.with_id(id.clone());
    let identity = parts.extensions.get::<Arc<Identity>>().cloned();
    if let (Some(auth), Some(identity)) = (&app.auth, &identity) {
        auth.authorize(identity, Some(&message))
            .map_err(|denied| with_id(Error::Auth(denied)))?;
    }

    if version.is_some_and(ProtocolVersion::is_stateless) {
        validate::routing_headers(headers, &message).map_err(with_id)?;
        let scope = Scope {
            session: String::new(),
            version: version.map(|v| v.as_str().to_owned()).unwrap_or_default(),
            identity: identity.clone(),
        };
        let admission = match policed::admit(app, scope, bytes, message.is_batch()).await {
            Ok(admission) => admission,
            Err(answer) => return Ok(answer),
        };
        return stateless_post(app, headers, admission, id.clone())
            .await
            .map_err(with_id);
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
        return initialize(app, headers, bytes, &message, identity)
            .await
            .map_err(with_id);
    }
    let session_id = validate::session_id(headers).map_err(with_id)?;
    let request = Forwardable::new(&parts, bytes.clone());
    match placement::locate(app, session_id, &request)
        .await
        .map_err(with_id)?
    {
        Located::Answered(response) => Ok(response),
        Located::Here(session) => {
            let scope = Scope::for_session(&session, identity);
            let admission = match policed::admit(app, scope, bytes, message.is_batch()).await {
                Ok(admission) => admission,
                Err(answer) => return Ok(answer),
            };
            forward(app, headers, admission, &message, session)
                .await
                .map_err(with_id)
        }
    }
}

/// Forwards an initialize and, if the upstream accepts it, creates the session.
async fn initialize(
    app: &Arc<App>,
    headers: &HeaderMap,
    bytes: Bytes,
    message: &jsonrpc::Body,
    identity: Option<Arc<Identity>>,
) -> Result<Response<Body>, Error> {
    let principal = identity.as_ref().map(|i| i.principal().to_owned());
    let by = identity.as_ref().map(ToString::to_string).unwrap_or_default();
    if app.draining() {
        return Err(Error::ShuttingDown);
    }
    app.sessions.admit()?;
    let requested = reinit::recorded_initialize(&bytes)?
        .version
        .unwrap_or(ProtocolVersion::ASSUMED);
    let id = new_id();
    let scope = Scope {
        session: id.clone(),
        version: requested.as_str().to_owned(),
        identity,
    };
    let mut admission = match policed::admit(app, scope, bytes, false).await {
        Ok(admission) => admission,
        Err(answer) => return Ok(answer),
    };
    // Recorded as the upstream got it: a re-initialization replays what
    // the policy let through, not what the client sent.
    let recorded = reinit::recorded_initialize(&admission.bytes)?;
    let response = send_upstream(app, headers, &admission.bytes, None).await?;
    if !response.status().is_success() {
        return Ok(json::pass_through(response));
    }
    let upstream_id = response
        .headers()
        .get(&crate::mcp::headers::MCP_SESSION_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if is_event_stream(response.headers()) {
        let session = app
            .sessions
            .create(id.clone(), upstream_id, requested, recorded.text, principal)
            .await?;
        // The negotiated version arrives on the stream; the pump records it.
        tracing::info!(session = %id, requested = %requested, principal = by, "session created");
        let pending = message.messages().iter().filter_map(|m| m.id.clone()).collect();
        let response = start_stream(
            app,
            &session,
            headers,
            response.into_body(),
            pending,
            Some(session.clone()),
            admission,
        )
        .await?;
        return Ok(with_session_id(response, &id));
    }
    let (parts, incoming) = response.into_parts();
    let answer = json::collect(incoming, app.settings.max_body_bytes).await?;
    let answer = match &admission.policy {
        Some(policy) => policy
            .server_body(&admission.scope, &mut admission.exchange, &answer)
            .await
            .unwrap_or(answer),
        None => answer,
    };
    let negotiated = serde_json::from_slice::<Value>(&answer)
        .ok()
        .and_then(|v| v.pointer("/result/protocolVersion")?.as_str().map(str::to_owned));
    let out = json::buffered(parts, answer);
    let Some(negotiated) = negotiated else {
        // An error answer: no session was made.
        return Ok(out);
    };
    let version = ProtocolVersion::parse(&negotiated).unwrap_or(requested);
    app.sessions
        .create(id.clone(), upstream_id, version, recorded.text, principal)
        .await?;
    tracing::info!(session = %id, %version, principal = by, "session created");
    Ok(with_session_id(out, &id))
}

/// Forwards a message of a session this replica owns.
async fn forward(
    app: &Arc<App>,
    headers: &HeaderMap,
    mut admission: Admission,
    message: &jsonrpc::Body,
    mut session: Session,
) -> Result<Response<Body>, Error> {
    let bytes = admission.bytes.clone();
    let mut response = send_upstream(app, headers, &bytes, session.record.upstream_id.clone()).await?;
    if matches!(response.status(), StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST) {
        // Maybe the upstream restarted and forgot the session: then give it a
        // new one and try once more (the upstream refused the request, so it
        // did not run), rather than fail a valid client session.
        let (parts, incoming) = response.into_parts();
        let answer = json::collect(incoming, app.settings.max_body_bytes).await?;
        if !reinit::lost_session(parts.status, &answer) || session.record.upstream_id.is_none() {
            // The upstream refused the batch's forwarded part: the refused
            // requests' answers still join its answer.
            let answer = policed::with_refusals(answer, &mut admission);
            return Ok(json::buffered(parts, answer));
        }
        session = adopt::reinitialize_owned(app, &session, headers).await?;
        response = send_upstream(app, headers, &bytes, session.record.upstream_id.clone()).await?;
    }
    let status = response.status();
    if status.is_success() {
        record_change(app, message, &bytes, &session).await;
    }
    if status.is_success() && is_event_stream(response.headers()) && message.has_requests() {
        // The requests forwarded: without those the policy refused, which
        // are answered already.
        let pending = match admission.policy {
            Some(_) => admission.exchange.iter().map(|p| p.id.clone()).collect(),
            None => message
                .messages()
                .iter()
                .filter(|m| m.kind == Kind::Request)
                .filter_map(|m| m.id.clone())
                .collect(),
        };
        return start_stream(
            app,
            &session,
            headers,
            response.into_body(),
            pending,
            None,
            admission,
        )
        .await;
    }
    let initialized = message
        .messages()
        .iter()
        .any(|m| m.method.as_deref() == Some("notifications/initialized"));
    if status.is_success() && initialized {
        standalone::open_in_background(app, &session, headers);
    }
    policed::answer(app, response, &mut admission).await
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

/// Keeps the state a request gave the upstream session (subscriptions, log
/// level) in the session record, for a replica that has to re-create it.
async fn record_change(app: &App, message: &jsonrpc::Body, bytes: &Bytes, session: &Session) {
    let jsonrpc::Body::Single(m) = message else { return };
    let param = |name: &str| {
        serde_json::from_slice::<Value>(bytes)
            .ok()?
            .get("params")?
            .get(name)?
            .as_str()
            .map(str::to_owned)
    };
    let change = match m.method.as_deref() {
        Some("resources/subscribe") => param("uri").map(SessionChange::Subscribe),
        Some("resources/unsubscribe") => param("uri").map(SessionChange::Unsubscribe),
        Some("logging/setLevel") => param("level").map(SessionChange::LogLevel),
        _ => None,
    };
    let Some(change) = change else { return };
    if let Err(e) = app.sessions.update(session, change).await {
        tracing::warn!(session = %session.record.id, error = %e, "cannot record session state for re-initialization");
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
    initialize_of: Option<Session>,
    admission: Admission,
) -> Result<Response<Body>, Error> {
    let meta = StreamMeta {
        id: new_id(),
        session_id: session.record.id.clone(),
        kind: StreamKind::Request,
        pending: pending.clone(),
    };
    if let Err(e) = app.store.create_stream(&meta, app.sessions.me()).await {
        // The store is unreachable: the answer still flows, relayed event by
        // event, just not resumable until the store is back.
        tracing::warn!(session = %session.record.id, error = %e, "store unreachable; relaying the stream without a log");
        app.metrics.store_bypasses.inc();
        return Ok(event_stream_response(stateless::relay(
            app.clone(),
            upstream,
            pending.into_iter().next(),
            admission,
        )));
    }
    // Answers for the requests the policy refused lead the log.
    let refusals: Vec<StoredEvent> = admission
        .refusals
        .iter()
        .zip(1..)
        .map(|(r, seq)| StoredEvent {
            seq,
            event: Some("message".into()),
            data: r.to_string(),
        })
        .collect();
    let next_seq = refusals.len() as u64 + 1;
    if !refusals.is_empty() {
        app.store
            .append(&meta.key(), app.sessions.me(), &refusals)
            .await?;
    }
    let client_gone = CancellationToken::new();
    // The version of a session still initializing is not known yet.
    let prime = initialize_of.is_none() && session.version.primes_streams();
    let pump = Pump {
        app: app.clone(),
        stream: meta.key(),
        kind: StreamKind::Request,
        upstream_session: session.record.upstream_id.clone(),
        headers: standalone::get_headers(headers),
        pending,
        initialize_of,
        next_seq,
        unstored: Vec::new(),
        policy: admission.scope,
        exchange: admission.exchange,
    };
    app.pumps.spawn(pump.run_request(upstream, client_gone.clone()));
    let reader = Reader {
        stream: meta.key(),
        after: 0,
        first: None,
        prime,
        track_delivery: false,
        replaying: false,
        watch_writer: false,
        superseded: session.local.ended.child_token(),
        on_close: Some(client_gone.drop_guard()),
    };
    Ok(reader.respond(app.clone()))
}

/// 2026-07-28: no session; relay the answer, event streams without a log.
async fn stateless_post(
    app: &Arc<App>,
    headers: &HeaderMap,
    mut admission: Admission,
    id: Option<Value>,
) -> Result<Response<Body>, Error> {
    let renamed = policed::routing_headers_for(headers, &admission);
    let headers = renamed.as_ref().unwrap_or(headers);
    let response = send_upstream(app, headers, &admission.bytes, None).await?;
    if response.status().is_success() && is_event_stream(response.headers()) {
        return Ok(event_stream_response(stateless::relay(
            app.clone(),
            response.into_body(),
            id,
            admission,
        )));
    }
    policed::answer(app, response, &mut admission).await
}

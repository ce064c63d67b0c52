//! Which replica serves a session's request: its owner. A request that lands
//! on another replica is forwarded to the owner while the owner is alive; when
//! it is gone (no heartbeat, or unreachable), the receiving replica adopts the
//! session: it takes ownership atomically, re-initializes its own upstream
//! from the recorded `initialize` (and the requests recorded after it), and
//! answers every request that was in flight on the lost owner with an error,
//! so no client waits forever.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, header};
use http_body_util::BodyExt;
use serde_json::Value;

use crate::app::App;
use crate::error::{Error, Result};
use crate::mcp::headers::MCP_PROTOCOL_VERSION;
use crate::mcp::jsonrpc::{self, code};
use crate::peer::Forwarded;
use crate::session::Session;
use crate::store::{StoredEvent, StreamKey};
use crate::upstream::UpstreamRequest;

/// Where a request is served.
#[derive(Debug)]
pub enum Placement {
    /// Here: this replica owns the session (perhaps just adopted).
    Local(Session),
    /// At the owner's peer address.
    Remote(String),
}

/// Methods whose effect on the upstream session outlives the request, so an
/// adopting replica must repeat them.
pub const RECORDED_METHODS: [&str; 3] = ["resources/subscribe", "resources/unsubscribe", "logging/setLevel"];

/// Decides where `session`'s request goes. A request that came from a peer is
/// never forwarded again.
pub async fn place(app: &Arc<App>, session: Session, from_peer: bool) -> Result<Placement> {
    let me = app.sessions.replica();
    if session.record.owner == me {
        return Ok(Placement::Local(session));
    }
    if !from_peer && app.peer.is_some() && !session.record.owner.is_empty() {
        match app.store.replica_addr(&session.record.owner).await? {
            // An empty address: the owner is draining; take the session over.
            Some(addr) if !addr.is_empty() => return Ok(Placement::Remote(addr)),
            _ => {}
        }
    }
    let why = if session.record.owner.is_empty() {
        "released"
    } else {
        "no heartbeat"
    };
    adopt(app, &session.record.id, why).await.map(Placement::Local)
}

/// Finds where a request of session `id` is served (never forwarding a
/// request that came from a peer): `Ok(session)` to serve
/// it here, `Err(response)` when the owner answered it. Losing an adoption
/// race means another replica just won: place the request again (at most
/// twice), which forwards it to the winner.
pub async fn locate(
    app: &Arc<App>,
    id: &str,
    method: Method,
    path: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<std::result::Result<Session, http::Response<crate::body::Body>>> {
    // Only the peer listener lets this header through (the public one strips it).
    let from_peer = headers.contains_key(&crate::peer::PEER_HOP);
    let mut attempts = 0;
    loop {
        attempts += 1;
        let session = app.sessions.lookup(id).await?;
        let placed = match place(app, session, from_peer).await {
            Err(Error::AdoptionRace) if attempts < 3 => continue,
            other => other?,
        };
        let addr = match placed {
            Placement::Local(session) => return Ok(Ok(session)),
            Placement::Remote(addr) => addr,
        };
        let Some(peer) = &app.peer else {
            return Err(Error::AdoptionRace);
        };
        match peer
            .forward(&addr, path, method.clone(), headers, id, body.clone())
            .await?
        {
            Forwarded::Answer(response) => {
                app.metrics.forwards.inc();
                return Ok(Err(response));
            }
            Forwarded::OwnerDown(why) => {
                tracing::warn!(session = %id, owner = %addr, why, "owner unreachable; adopting");
                match adopt(app, id, "owner unreachable").await {
                    Err(Error::AdoptionRace) if attempts < 3 => continue,
                    other => return other.map(Ok),
                }
            }
        }
    }
}

/// What is known of a replica.
#[derive(Debug, PartialEq, Eq)]
pub enum Liveness {
    /// Registered and accepting peer connections at this address.
    Serving(String),
    /// Registered as draining: its pumps still run, it takes nothing new.
    Draining,
    /// Not registered, or registered but refusing connections (killed; its
    /// registration outlives it by up to a heartbeat TTL).
    Gone,
}

/// Checks whether `replica` is alive.
pub async fn liveness(app: &App, replica: &str) -> Result<Liveness> {
    if replica.is_empty() {
        return Ok(Liveness::Gone);
    }
    match app.store.replica_addr(replica).await? {
        None => Ok(Liveness::Gone),
        Some(addr) if addr.is_empty() => Ok(Liveness::Draining),
        Some(addr) => {
            let connect = tokio::net::TcpStream::connect(addr.as_str());
            match tokio::time::timeout(std::time::Duration::from_millis(500), connect).await {
                Ok(Ok(_)) => Ok(Liveness::Serving(addr)),
                _ => Ok(Liveness::Gone),
            }
        }
    }
}

/// The session, adopted first if its owner is gone (not registered, or
/// released); a live owner keeps it.
pub async fn adopt_if_orphaned(app: &Arc<App>, session: Session) -> Result<Session> {
    let owner = &session.record.owner;
    if owner == app.sessions.replica() {
        return Ok(session);
    }
    let alive = matches!(liveness(app, owner).await?, Liveness::Serving(_));
    if alive || app.peer.is_none() {
        return Ok(session);
    }
    match adopt(app, &session.record.id, "resumed after its owner was lost").await {
        Err(Error::AdoptionRace) => app.sessions.lookup(&session.record.id).await,
        other => other,
    }
}

/// Takes a session over from an owner that is gone.
pub async fn adopt(app: &Arc<App>, id: &str, why: &str) -> Result<Session> {
    let session = app.sessions.lookup(id).await?;
    let _once = session.local.reinit.lock().await;
    // Someone in this process may have adopted it while we waited.
    let mut record = app.store.get_session(id).await?.ok_or(Error::UnknownSession)?;
    let me = app.sessions.replica().to_owned();
    if record.owner != me {
        let from = record.owner.clone();
        if !app.store.claim_session(id, &from, &me).await? {
            app.metrics.adoptions_lost.inc();
            return Err(Error::AdoptionRace);
        }
        tracing::info!(session = %id, from = %from, why, "adopting session");
        app.metrics.adoptions.inc();
        record.owner = me;
        record.upstream_id =
            reinitialize(app, &record.initialize, &record.protocol_version, &record.replay).await?;
        app.sessions.save(&record).await?;
        tracing::debug!(session = %id, upstream = ?record.upstream_id, "upstream re-initialized");
        fail_orphans(app, id).await;
        app.sessions.reset_local(id);
    }
    app.sessions.lookup(id).await
}

/// The upstream lost a session this replica owns (it restarted): give it a
/// new upstream session the same way an adoption would.
pub async fn reinitialize_owned(app: &Arc<App>, session: &Session) -> Result<Session> {
    let id = &session.record.id;
    let _once = session.local.reinit.lock().await;
    let mut record = app.store.get_session(id).await?.ok_or(Error::UnknownSession)?;
    if record.upstream_id == session.record.upstream_id {
        tracing::info!(session = %id, "upstream lost the session; re-initializing it");
        app.metrics.reinitializations.inc();
        record.upstream_id =
            reinitialize(app, &record.initialize, &record.protocol_version, &record.replay).await?;
        app.sessions.save(&record).await?;
        app.sessions.reset_local(id);
    }
    app.sessions.lookup(id).await
}

/// Replays `initialize`, `notifications/initialized` and the recorded
/// requests against the local upstream; returns the new upstream session id.
async fn reinitialize(
    app: &App,
    initialize: &str,
    version: &str,
    replay: &[String],
) -> Result<Option<String>> {
    let response = send(app, None, version, Bytes::from(initialize.to_owned())).await?;
    let upstream_id = response
        .0
        .get(&crate::mcp::headers::MCP_SESSION_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let note = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    send(
        app,
        upstream_id.clone(),
        version,
        Bytes::from_static(note.as_bytes()),
    )
    .await?;
    for request in replay {
        if let Err(e) = send(app, upstream_id.clone(), version, Bytes::from(request.clone())).await {
            tracing::warn!(error = %e, "a recorded request failed on re-initialize");
        }
    }
    Ok(upstream_id)
}

/// POSTs one message upstream and reads the whole answer (these are small:
/// an InitializeResult, a 202, an empty result).
async fn send(app: &App, session: Option<String>, version: &str, body: Bytes) -> Result<(HeaderMap, Bytes)> {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(
        header::ACCEPT,
        HeaderValue::from_static("application/json, text/event-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(version) {
        headers.insert(MCP_PROTOCOL_VERSION.clone(), v);
    }
    let request = UpstreamRequest {
        method: Method::POST,
        headers,
        session,
        body,
        ..Default::default()
    };
    let response = app.upstream.send(request).await?;
    if !response.status().is_success() {
        return Err(Error::UpstreamProtocol(format!(
            "re-initialize answered {}",
            response.status()
        )));
    }
    let (parts, body) = response.into_parts();
    let bytes = tokio::time::timeout(app.settings.upstream_timeout, body.collect())
        .await
        .map_err(|_| Error::UpstreamTimeout(app.settings.upstream_timeout))?
        .map_err(|e| Error::UpstreamUnavailable(e.to_string()))?
        .to_bytes();
    Ok((parts.headers, bytes))
}

/// Ends the request streams the lost owner was pumping, each pending request
/// answered with an error event.
async fn fail_orphans(app: &App, session: &str) {
    let open = match app.store.open_streams(session).await {
        Ok(open) => open,
        Err(e) => {
            tracing::warn!(%session, error = %e, "cannot list the lost owner's streams");
            return;
        }
    };
    tracing::debug!(%session, open = open.len(), "streams left open by the lost owner");
    for meta in open {
        // A stream whose replica is alive or draining is still being pumped:
        // it ends by itself.
        if meta.replica != app.sessions.replica() {
            let pumper = liveness(app, &meta.replica).await;
            if !matches!(pumper, Ok(Liveness::Gone)) {
                tracing::debug!(%session, stream = %meta.id, replica = %meta.replica, ?pumper, "stream still pumped elsewhere");
                continue;
            }
        }
        let key: StreamKey = meta.key();
        let result = async {
            let mut seq = app.store.last_seq(&key).await?;
            let events: Vec<StoredEvent> = meta
                .pending
                .iter()
                .map(|id: &Value| {
                    seq += 1;
                    let data = jsonrpc::error_body(
                        Some(id),
                        code::INTERNAL_ERROR,
                        "the upstream replica serving this request was lost before it answered",
                    );
                    StoredEvent {
                        seq,
                        event: Some("message".into()),
                        data: String::from_utf8_lossy(&data).into_owned(),
                    }
                })
                .collect();
            app.store.append(&key, &events).await?;
            app.store.end_stream(&key).await
        };
        match result.await {
            Ok(()) => {
                tracing::info!(%session, stream = %key, "answered a lost owner's pending requests with errors")
            }
            Err(e) => tracing::warn!(%session, stream = %key, error = %e, "cannot end a lost owner's stream"),
        }
    }
}

/// Whether an upstream answer says it no longer knows the session: 404, or
/// a 400 whose body says so (as some servers answer an unknown session).
pub fn lost_session(status: http::StatusCode, body: &Bytes) -> bool {
    status == http::StatusCode::NOT_FOUND
        || (status == http::StatusCode::BAD_REQUEST
            && String::from_utf8_lossy(body)
                .to_ascii_lowercase()
                .contains("session"))
}

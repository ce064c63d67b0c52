//! A session's standalone stream: Shadowcat opens the upstream's GET stream
//! itself and pumps it into the session's standalone log, which lives as
//! long as the session. Server-initiated messages sent while no client GET
//! is connected (before the first one, or while it reconnects) wait in the
//! log for the next one.
//!
//! Only the upstream's own "no" (405) is remembered. Any other failure — the
//! upstream unreachable for a moment, a pump that gave up — leaves the stream
//! closed, and the next GET opens it again.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use hyper::body::Incoming;

use crate::app::App;
use crate::error::{Error, Result};
use crate::mcp::headers::{MCP_PROTOCOL_VERSION, TEXT_EVENT_STREAM};
use crate::relay::is_event_stream;
use crate::relay::sse::{BodyEnd, Pump};
use crate::session::{Session, Standalone};
use crate::store::{StreamKind, StreamMeta};
use crate::upstream::{UpstreamRequest, client_headers_for_upstream};

/// Reconnection attempts after the upstream closes the standalone stream.
const RECONNECTS: u32 = 10;

/// The client's headers made fit for an upstream GET.
pub fn get_headers(client: &HeaderMap) -> HeaderMap {
    let mut headers = client_headers_for_upstream(client);
    headers.remove(header::CONTENT_TYPE);
    headers.insert(header::ACCEPT, HeaderValue::from_static(TEXT_EVENT_STREAM));
    headers
}

/// Makes sure the session's standalone stream is being pumped; `false` when
/// the upstream offers none (it answered the GET with 405).
pub async fn ensure(app: &Arc<App>, session: &Session, client_headers: &HeaderMap) -> Result<bool> {
    let mut state = session.local.standalone.lock().await;
    match &*state {
        Standalone::Pumping(pump) if !pump.is_finished() => return Ok(true),
        Standalone::Unsupported => return Ok(false),
        Standalone::Pumping(_) | Standalone::Closed => {}
    }
    let mut headers = get_headers(client_headers);
    if let Ok(v) = HeaderValue::from_str(session.version.as_str()) {
        headers.insert(MCP_PROTOCOL_VERSION.clone(), v);
    }
    let body = match connect(app, session, &headers, None).await? {
        Connected::Stream(body) => body,
        Connected::Unsupported => {
            *state = Standalone::Unsupported;
            return Ok(false);
        }
    };
    let meta = StreamMeta {
        id: session.record.standalone_stream.clone(),
        session_id: session.record.id.clone(),
        kind: StreamKind::Standalone,
        pending: Vec::new(),
    };
    // Registers this process as the log's writer (after an adoption the log
    // holds the lost owner's events, and goes on after them).
    app.store.create_stream(&meta, app.sessions.me()).await?;
    let pump = Pump {
        app: app.clone(),
        stream: meta.key(),
        kind: StreamKind::Standalone,
        upstream_session: session.record.upstream_id.clone(),
        headers,
        pending: Vec::new(),
        initialize_of: None,
        next_seq: app.store.last_seq(&meta.key()).await? + 1,
        unstored: Vec::new(),
        policy: crate::policy::Scope::for_session(session, None),
        exchange: Vec::new(),
    };
    *state = Standalone::Pumping(app.pumps.spawn(run(pump, session.clone(), body)));
    Ok(true)
}

/// Opens the standalone stream in the background, so what the server sends
/// before the client's GET arrives is kept for it.
pub fn open_in_background(app: &Arc<App>, session: &Session, client_headers: &HeaderMap) {
    let (app, session, headers) = (app.clone(), session.clone(), client_headers.clone());
    tokio::spawn(async move {
        if let Err(e) = ensure(&app, &session, &headers).await {
            tracing::debug!(session = %session.record.id, error = %e, "standalone stream not opened yet");
        }
    });
}

/// Pumps the standalone stream for as long as the session lives here,
/// reconnecting with backoff when the upstream closes it.
async fn run(mut pump: Pump, session: Session, mut body: Incoming) {
    let ended = session.local.ended.clone();
    let mut last_id = None;
    let mut failures = 0;
    loop {
        // Standalone streams never end by themselves: stop at shutdown.
        let shutdown = pump.app.shutdown.clone();
        let mut no_deadline = None;
        let end = tokio::select! {
            end = pump.pump_body(body, &ended, &mut no_deadline, &mut last_id) => end,
            () = shutdown.cancelled() => return,
        };
        match end {
            BodyEnd::Closed => {}
            BodyEnd::Failed(why) => {
                tracing::warn!(session = %session.record.id, why, "standalone stream stopped; the next GET reopens it");
                return;
            }
            BodyEnd::Stopped | BodyEnd::Fenced | BodyEnd::Answered => return,
        }
        if ended.is_cancelled() || pump.app.shutdown.is_cancelled() {
            return;
        }
        loop {
            failures += 1;
            if failures > RECONNECTS {
                tracing::warn!(session = %session.record.id, "giving up on the upstream's standalone stream; the next GET reopens it");
                return;
            }
            let backoff = Duration::from_millis(100 * 2u64.pow(failures.min(6)));
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = ended.cancelled() => return,
            }
            match connect(&pump.app, &session, &pump.headers, last_id.clone()).await {
                Ok(Connected::Stream(next)) => {
                    body = next;
                    failures = 0;
                    break;
                }
                Ok(Connected::Unsupported) => return,
                Err(e) => {
                    tracing::debug!(session = %session.record.id, error = %e, "cannot reopen the upstream standalone stream");
                }
            }
        }
    }
}

/// What the upstream said to a standalone GET.
enum Connected {
    Stream(Incoming),
    Unsupported,
}

async fn connect(
    app: &App,
    session: &Session,
    headers: &HeaderMap,
    last_id: Option<String>,
) -> Result<Connected> {
    let request = UpstreamRequest {
        method: Method::GET,
        headers: headers.clone(),
        session: session.record.upstream_id.clone(),
        last_event_id: last_id,
        body: Default::default(),
    };
    let response = app.upstream.send(request).await?;
    let status = response.status();
    if status == StatusCode::METHOD_NOT_ALLOWED {
        return Ok(Connected::Unsupported);
    }
    if status.is_success() && is_event_stream(response.headers()) {
        return Ok(Connected::Stream(response.into_body()));
    }
    Err(Error::UpstreamProtocol(format!(
        "the upstream answered the standalone GET with {status}"
    )))
}

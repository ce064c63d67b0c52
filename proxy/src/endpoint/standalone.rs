//! A session's standalone stream: Shadowcat opens the upstream's GET stream
//! itself, once per session, and pumps it into the session's standalone log.
//! Server-initiated messages sent while no client GET is connected (before
//! the first one, or while it reconnects) wait in the log for the next one.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method, header};
use hyper::body::Incoming;

use crate::app::App;
use crate::mcp::headers::{MCP_PROTOCOL_VERSION, TEXT_EVENT_STREAM};
use crate::relay::is_event_stream;
use crate::relay::sse::{BodyEnd, Pump};
use crate::session::Session;
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

/// Makes sure the session's standalone stream is being pumped; `false` if the
/// upstream offers none (it answered the GET with 405 or an error).
pub async fn ensure(app: &Arc<App>, session: &Session, client_headers: &HeaderMap) -> bool {
    *session
        .local
        .standalone
        .get_or_init(|| open(app, session, client_headers))
        .await
}

async fn open(app: &Arc<App>, session: &Session, client_headers: &HeaderMap) -> bool {
    let stream = session.record.standalone_stream.clone();
    let mut headers = get_headers(client_headers);
    if let Ok(v) = HeaderValue::from_str(session.version.as_str()) {
        headers.insert(MCP_PROTOCOL_VERSION.clone(), v);
    }
    let Some(body) = connect(app, session, &headers, None).await else {
        return false;
    };
    let meta = StreamMeta {
        id: stream.clone(),
        session_id: session.record.id.clone(),
        kind: StreamKind::Standalone,
        pending: Vec::new(),
        replica: app.sessions.replica().to_owned(),
    };
    if let Err(e) = app.store.create_stream(&meta).await {
        tracing::warn!(session = %session.record.id, error = %e, "cannot create standalone log");
        return false;
    }
    let pump = Pump {
        app: app.clone(),
        stream: meta.key(),
        upstream_session: session.record.upstream_id.clone(),
        headers,
        pending: Vec::new(),
        initialize_of: None,
        // After an adoption the log already holds the lost owner's events.
        next_seq: app.store.last_seq(&meta.key()).await.unwrap_or(0) + 1,
    };
    app.pumps.spawn(run(pump, session.clone(), body));
    true
}

/// Pumps the standalone stream for as long as the session lives, reconnecting
/// with backoff when the upstream closes it.
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
        if end == BodyEnd::Stopped || ended.is_cancelled() || pump.app.shutdown.is_cancelled() {
            return;
        }
        loop {
            failures += 1;
            if failures > RECONNECTS {
                tracing::warn!(session = %session.record.id, "giving up on the upstream's standalone stream");
                return;
            }
            let backoff = Duration::from_millis(100 * 2u64.pow(failures.min(6)));
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = ended.cancelled() => return,
            }
            if let Some(next) = connect(&pump.app, &session, &pump.headers, last_id.clone()).await {
                body = next;
                failures = 0;
                break;
            }
        }
    }
}

async fn connect(
    app: &App,
    session: &Session,
    headers: &HeaderMap,
    last_id: Option<String>,
) -> Option<Incoming> {
    let request = UpstreamRequest {
        method: Method::GET,
        headers: headers.clone(),
        session: session.record.upstream_id.clone(),
        last_event_id: last_id,
        body: Default::default(),
    };
    match app.upstream.send(request).await {
        Ok(response) if response.status().is_success() && is_event_stream(response.headers()) => {
            Some(response.into_body())
        }
        Ok(response) => {
            tracing::debug!(session = %session.record.id, status = %response.status(), "no upstream standalone stream");
            None
        }
        Err(e) => {
            tracing::debug!(session = %session.record.id, error = %e, "cannot open upstream standalone stream");
            None
        }
    }
}

//! GET: the session's standalone stream, or the resumption of any stream of
//! the session with `Last-Event-ID`.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response};
use hyper::body::Incoming;

use super::{placement, standalone, validate};
use crate::app::App;
use crate::body::Body;
use crate::error::{Error, Failure};
use crate::mcp::headers::{self, LAST_EVENT_ID};
use crate::relay::replay::{Reader, parse_event_id};
use crate::session::Session;
use crate::store::{StreamKey, StreamKind};

/// Serves a GET.
pub async fn handle(app: &Arc<App>, req: Request<Incoming>) -> Result<Response<Body>, Failure> {
    let headers = req.headers();
    validate::origin(headers, &app.settings.allowed_origins)?;
    validate::get_media(headers)?;
    if validate::version(headers)?.is_some_and(|v| v.is_stateless()) {
        // 2026-07-28 has no standalone stream.
        return Err(Error::MethodNotAllowed.into());
    }
    let id = validate::session_id(headers)?;
    if let Some(last) = headers::text(headers, &LAST_EVENT_ID) {
        let last = last.map_err(|()| Error::BadLastEventId("<not ASCII>".into()))?;
        // Resumption is served here, from the store, whoever owns the session
        // — unless the owner is gone: then adopt first, which answers the
        // lost owner's unfinished requests with errors into their logs.
        let session = placement::adopt_if_orphaned(app, app.sessions.lookup(id).await?).await?;
        let (stream, seq) = parse_event_id(last).ok_or_else(|| Error::BadLastEventId(last.to_owned()))?;
        if let Some(reader) = resume(app, &session, stream, seq).await? {
            return Ok(reader.respond(app.clone()));
        }
        app.metrics.replay_misses.inc();
        tracing::info!(session = %session.record.id, last_event_id = last, "resumption from an unknown stream; starting fresh");
    }
    let session =
        match placement::locate(app, id, Method::GET, req.uri().path(), headers, Bytes::new()).await? {
            Ok(session) => session,
            Err(forwarded) => return Ok(forwarded),
        };
    if !standalone::ensure(app, &session, headers).await {
        return Err(Error::MethodNotAllowed.into());
    }
    let stream = session.standalone_key();
    let after = app.store.delivered(&stream).await?;
    let reader = Reader {
        stream,
        after,
        prime: session.version.primes_streams(),
        track_delivery: true,
        replaying: false,
        superseded: session.local.take_over_standalone(),
        on_close: None,
    };
    Ok(reader.respond(app.clone()))
}

/// A reader resuming `stream` after `seq`, if the stream is the session's.
async fn resume(app: &App, session: &Session, stream: &str, seq: u64) -> Result<Option<Reader>, Error> {
    let key = StreamKey {
        session: session.record.id.clone(),
        id: stream.to_owned(),
    };
    let Some(meta) = app.store.stream_meta(&key).await? else {
        return Ok(None);
    };
    let standalone = meta.kind == StreamKind::Standalone;
    Ok(Some(Reader {
        stream: meta.key(),
        after: seq,
        prime: false,
        track_delivery: standalone,
        replaying: true,
        superseded: if standalone {
            session.local.take_over_standalone()
        } else {
            session.local.ended.child_token()
        },
        on_close: None,
    }))
}

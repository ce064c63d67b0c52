//! GET: the session's standalone stream, or the resumption of any stream of
//! the session with `Last-Event-ID`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};

use super::{standalone, validate};
use crate::app::App;
use crate::body::Body;
use crate::error::{Error, Failure};
use crate::mcp::headers::{self, LAST_EVENT_ID};
use crate::metrics::MissLabels;
use crate::placement::{self, Forwardable, Located};
use crate::relay::replay::{Reader, parse_event_id};
use crate::session::Session;
use crate::store::{LogRead, StreamKey, StreamKind};

/// Serves a GET.
pub async fn handle(app: &Arc<App>, req: Request<Body>) -> Result<Response<Body>, Failure> {
    let (parts, _) = req.into_parts();
    let headers = &parts.headers;
    validate::origin_and_host(&parts, &app.settings)?;
    validate::get_media(headers)?;
    if validate::version(headers)?.is_some_and(|v| v.is_stateless()) {
        // 2026-07-28 has no standalone stream.
        return Err(Error::MethodNotAllowed.into());
    }
    let id = validate::session_id(headers)?;
    if let Some(last) = headers::text(headers, &LAST_EVENT_ID) {
        let last = last.map_err(|()| Error::BadLastEventId("<not ASCII>".into()))?;
        let (stream, seq) = parse_event_id(last).ok_or_else(|| Error::BadLastEventId(last.to_owned()))?;
        // Resumption is served here, from the store, whoever owns the session
        // — unless the owner is gone: then adopt first, which answers the
        // lost owner's unfinished requests with errors into their logs.
        let session = app.sessions.lookup(id).await?;
        let identity = parts.extensions.get::<Arc<crate::auth::Identity>>();
        placement::check_principal(app, &session, identity.map(Arc::as_ref))?;
        let session = placement::adopt_if_orphaned(app, session, headers).await?;
        return match resume(app, &session, stream, seq).await? {
            Resumed::Reader(reader) => Ok(reader.respond(app.clone())),
            Resumed::Miss(reason, why) => {
                app.metrics
                    .replay_misses
                    .get_or_create(&MissLabels { reason })
                    .inc();
                tracing::info!(session = %id, last_event_id = last, reason, "cannot resume");
                Err(Error::ReplayMiss(format!("cannot resume after {last}: {why}")).into())
            }
        };
    }
    let request = Forwardable::new(&parts, Bytes::new());
    let session = match placement::locate(app, id, &request).await? {
        Located::Here(session) => session,
        Located::Answered(response) => return Ok(response),
    };
    if !standalone::ensure(app, &session, headers).await? {
        return Err(Error::MethodNotAllowed.into());
    }
    let stream = session.standalone_key();
    let after = app.store.delivered(&stream).await?;
    let reader = Reader {
        stream,
        after,
        first: None,
        prime: session.version.primes_streams(),
        track_delivery: true,
        replaying: false,
        watch_writer: false,
        superseded: session.local.take_over_standalone(),
        on_close: None,
    };
    Ok(reader.respond(app.clone()))
}

/// What a resumption finds.
#[derive(Debug)]
enum Resumed {
    /// A reader that gives every event after the id.
    Reader(Reader),
    /// Why it cannot give every event the client missed: a metric label and
    /// words for the client.
    Miss(&'static str, String),
}

/// A reader resuming `stream` after `seq`, if the log still holds every
/// event after it. A store that cannot be asked is an error (503, retry),
/// not a miss.
async fn resume(app: &App, session: &Session, stream: &str, seq: u64) -> Result<Resumed, Error> {
    let key = StreamKey {
        session: session.record.id.clone(),
        id: stream.to_owned(),
    };
    let gone = || {
        Resumed::Miss(
            "gone",
            "the stream is unknown in this session, or ended longer ago than the retention".into(),
        )
    };
    let Some(meta) = app.store.stream_meta(&key).await? else {
        return Ok(gone());
    };
    let last = app.store.last_seq(&key).await?;
    if seq > last {
        return Ok(Resumed::Miss(
            "gone",
            format!("the stream has only {last} events"),
        ));
    }
    let first = match app.store.read(&key, seq, Duration::ZERO).await? {
        LogRead::Missing => return Ok(gone()),
        LogRead::Gap { first } => {
            return Ok(Resumed::Miss(
                "trimmed",
                format!("events before {stream}.{first} are no longer retained"),
            ));
        }
        read => read,
    };
    let standalone = meta.kind == StreamKind::Standalone;
    Ok(Resumed::Reader(Reader {
        stream: key,
        after: seq,
        first: Some(first),
        prime: false,
        track_delivery: standalone,
        replaying: true,
        watch_writer: !standalone,
        superseded: if standalone {
            session.local.take_over_standalone()
        } else {
            session.local.ended.child_token()
        },
        on_close: None,
    }))
}

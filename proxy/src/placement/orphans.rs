//! Request streams whose writer is gone. Their clients would wait forever
//! for answers that cannot come, so whoever finds one — a replica adopting
//! the session, or a reader following the stream — takes it over (one
//! winner) and answers each request still unanswered in its log with a
//! JSON-RPC error, then ends the stream.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::Value;

use super::liveness::{self, Liveness};
use crate::app::App;
use crate::mcp::jsonrpc::{self, code};
use crate::store::{LogRead, OpenStream, SessionRecord, StoreError, StoredEvent, StreamKey};

/// What the error answers say.
const LOST: &str = "the upstream replica serving this request was lost before it answered";

/// Fails every open request stream of `record`'s session whose writer is
/// gone. Streams whose writer is alive (or draining) end by themselves.
pub async fn fail_abandoned(app: &App, record: &SessionRecord) {
    let open = match app.store.open_streams(&record.id).await {
        Ok(open) => open,
        Err(e) => {
            tracing::warn!(session = %record.id, error = %e, "cannot list the lost owner's streams");
            return;
        }
    };
    for stream in open {
        fail_if_abandoned(app, record, stream).await;
    }
}

/// Checks one stream a reader is following; fails it if its writer is gone.
pub async fn check(app: &App, key: &StreamKey) {
    let Ok(open) = app.store.open_streams(&key.session).await else {
        return;
    };
    let Some(stream) = open.into_iter().find(|s| s.meta.id == key.id) else {
        return;
    };
    let Ok(Some(record)) = app.store.get_session(&key.session).await else {
        return;
    };
    fail_if_abandoned(app, &record, stream).await;
}

async fn fail_if_abandoned(app: &App, record: &SessionRecord, stream: OpenStream) {
    let me = app.sessions.me();
    if me.matches(&stream.writer) {
        return;
    }
    match liveness::of_writer(app, &stream.writer, Some(record)).await {
        Ok(Liveness::Gone(why)) => {
            tracing::info!(session = %record.id, stream = %stream.meta.id, writer = %stream.writer, why, "taking over a lost writer's stream");
        }
        Ok(state) => {
            tracing::debug!(session = %record.id, stream = %stream.meta.id, ?state, "stream still written elsewhere");
            return;
        }
        Err(e) => {
            tracing::debug!(session = %record.id, error = %e, "cannot tell whether a stream's writer lives");
            return;
        }
    }
    let key = stream.meta.key();
    match app.store.take_stream(&key, &stream.writer, me).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            tracing::warn!(stream = %key, error = %e, "cannot take a lost writer's stream over");
            return;
        }
    }
    match answer_unanswered(app, &key, &stream.meta.pending).await {
        Ok(n) => {
            app.metrics.orphans_answered.inc_by(n as u64);
            tracing::info!(session = %record.id, stream = %key, errors = n, "answered a lost writer's pending requests with errors");
        }
        Err(e) => tracing::warn!(stream = %key, error = %e, "cannot end a lost writer's stream"),
    }
}

/// Appends an error for each of `pending` that the log does not answer
/// already, then ends the stream. Returns how many errors it wrote.
async fn answer_unanswered(app: &App, key: &StreamKey, pending: &[Value]) -> Result<usize, StoreError> {
    let answered = answered_ids(app, key).await?;
    let mut seq = app.store.last_seq(key).await?;
    let events: Vec<StoredEvent> = pending
        .iter()
        .filter(|id| !answered.contains(&id.to_string()))
        .map(|id| {
            seq += 1;
            StoredEvent {
                seq,
                event: Some("message".into()),
                data: String::from_utf8_lossy(&jsonrpc::error_body(Some(id), code::INTERNAL_ERROR, LOST))
                    .into_owned(),
            }
        })
        .collect();
    let me = app.sessions.me();
    app.store.append(key, me, &events).await?;
    app.store.end_stream(key, me).await?;
    Ok(events.len())
}

/// The request ids the log already answers (as JSON text, so `1` and `"1"`
/// stay apart).
async fn answered_ids(app: &App, key: &StreamKey) -> Result<HashSet<String>, StoreError> {
    let mut answered = HashSet::new();
    let mut after = 0;
    loop {
        match app.store.read(key, after, Duration::ZERO).await? {
            LogRead::Events { events, .. } if !events.is_empty() => {
                for event in &events {
                    answered.extend(jsonrpc::response_ids(&event.data).iter().map(Value::to_string));
                }
                after = events.last().map_or(after, |e| e.seq);
            }
            LogRead::Gap { first } => after = first - 1,
            LogRead::Events { .. } | LogRead::Missing => return Ok(answered),
        }
    }
}

//! Request streams whose writer is gone. Their clients would wait forever
//! for answers that cannot come, so whoever finds one — a replica adopting
//! the session, or a reader following the stream — takes it over (one
//! winner) and answers each request still unanswered in its log with a
//! JSON-RPC error, then ends the stream.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::liveness::{self, Liveness};
use crate::app::App;
use crate::mcp::jsonrpc;
use crate::relay::sse::{end_with, error_event};
use crate::store::{LogRead, OpenStream, SessionRecord, StoreError, StoredEvent, StreamKey};

/// What the error answers say.
const LOST: &str = "the upstream replica serving this request was lost before it answered";

/// Fails every open request stream of `record`'s session whose writer is
/// gone. Streams whose writer is alive (or draining) end by themselves.
pub async fn fail_abandoned(app: &Arc<App>, record: &SessionRecord) {
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
pub async fn check(app: &Arc<App>, key: &StreamKey) {
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

async fn fail_if_abandoned(app: &Arc<App>, record: &SessionRecord, stream: OpenStream) {
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
    // The stream is this process's now: it must end, whatever the store
    // does in the meantime, or no one ever will. In the background: the
    // request that found it need not wait.
    let (app, session) = (app.clone(), record.id.clone());
    app.pumps.clone().spawn(async move {
        let give_up = tokio::time::Instant::now() + app.settings.sse.drain_limit;
        let events = loop {
            match unanswered_errors(&app, &key, &stream.meta.pending).await {
                Ok(events) => break events,
                Err(e) if tokio::time::Instant::now() >= give_up => {
                    tracing::error!(stream = %key, error = %e, "cannot read a lost writer's stream; its readers will see it expire");
                    return;
                }
                Err(e) => {
                    tracing::warn!(stream = %key, error = %e, "cannot read a lost writer's stream yet; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        };
        if end_with(&app, &key, &events).await {
            app.metrics.orphans_answered.inc_by(events.len() as u64);
            tracing::info!(%session, stream = %key, errors = events.len(), "answered a lost writer's pending requests with errors");
        }
    });
}

/// An error event for each of `pending` that the log does not answer
/// already, numbered after the log's last event.
async fn unanswered_errors(
    app: &App,
    key: &StreamKey,
    pending: &[Value],
) -> Result<Vec<StoredEvent>, StoreError> {
    let answered = answered_ids(app, key).await?;
    let mut seq = app.store.last_seq(key).await?;
    let events: Vec<StoredEvent> = pending
        .iter()
        .filter(|id| !answered.contains(&id.to_string()))
        .map(|id| {
            seq += 1;
            error_event(seq, id, LOST)
        })
        .collect();
    Ok(events)
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

#[cfg(test)]
mod tests {
    use serde_json::json;
    use shadowcat_crds::SidecarConfig;

    use super::*;
    use crate::store::{Instance, Owner, Store, StreamKind, StreamMeta, suite};

    #[tokio::test]
    async fn only_the_requests_the_log_does_not_answer_get_the_error() {
        let (app, store) = crate::test_support::app(SidecarConfig::default());
        let gone = Instance::new("gone");
        let mut record = suite::record("s");
        record.owner = Owner::Held(gone.clone());
        record.owner_addr = None;
        assert!(store.create_session(&record).await.unwrap());
        let mut meta = StreamMeta {
            pending: vec![json!(1), json!("two")],
            ..suite::meta("s", "batch", StreamKind::Request)
        };
        meta.pending.push(json!(3));
        suite::open_stream(&*store, &meta, &gone).await;
        let answered = StoredEvent {
            seq: 1,
            event: None,
            data: json!({"jsonrpc": "2.0", "id": 1, "result": {}}).to_string(),
        };
        let also = StoredEvent {
            seq: 2,
            event: None,
            data: json!({"jsonrpc": "2.0", "id": 3, "error": {"code": 1, "message": "m"}}).to_string(),
        };
        store.append(&meta.key(), &gone, &[answered, also]).await.unwrap();

        fail_abandoned(&app, &record).await;
        app.pumps.close();
        app.pumps.wait().await;

        let LogRead::Events { events, ended } = store.read(&meta.key(), 2, Duration::ZERO).await.unwrap()
        else {
            panic!("the log is readable");
        };
        assert!(ended, "the stream is ended");
        let ids: Vec<Value> = events
            .iter()
            .map(|e| serde_json::from_str::<Value>(&e.data).unwrap()["id"].clone())
            .collect();
        assert_eq!(ids, vec![json!("two")], "one error, for the one unanswered id");
        assert!(store.open_streams("s").await.unwrap().is_empty());
    }
}

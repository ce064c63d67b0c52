//! The reader: serves one client connection from a stream's event log.
//!
//! It catches up from a position, then follows the log live until the stream
//! ends, the client goes away, a newer reader takes over, the connection has
//! been open for the configured maximum, or Shadowcat shuts down; in the last
//! two cases it sends `retry:` first so the client reconnects with
//! `Last-Event-ID`. A reader whose client fell so far behind that the log
//! dropped events it had not sent stops and says so: it never skips events
//! silently.
//!
//! Memory per connection is bounded in bytes: frames go out in slices of at
//! most [`SLICE`] bytes through a channel of a few slices, and the reader
//! pulls from the log only as fast as the client takes.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::app::App;
use crate::body::{self, Body};
use crate::metrics::MissLabels;
use crate::placement::orphans;
use crate::relay::sse::sleep_until;
use crate::sse::{comment, encode_event, retry};
use crate::store::{LogRead, StreamKey};

/// Slices buffered between a reader and its client connection.
const CHANNEL_SLICES: usize = 4;
/// Largest slice of a frame sent at once.
pub const SLICE: usize = 64 * 1024;
/// Pause before reading again after the store failed a read.
const STORE_RETRY: Duration = Duration::from_millis(500);

/// What one client connection reads.
#[derive(Debug)]
pub struct Reader {
    /// The stream's log.
    pub stream: StreamKey,
    /// Send events after this seq.
    pub after: u64,
    /// A read already made from `after` (a resumption checks the log before
    /// it answers 200), sent before reading on.
    pub first: Option<LogRead>,
    /// Start with a priming event (id, empty data).
    pub prime: bool,
    /// Record delivery progress (standalone streams).
    pub track_delivery: bool,
    /// This connection resumes a stream (`Last-Event-ID`): what it sends
    /// counts as replayed.
    pub replaying: bool,
    /// The stream may be written by another process: when it idles, check
    /// that its writer lives, and take it over if not.
    pub watch_writer: bool,
    /// Fires when a newer reader takes this stream over.
    pub superseded: CancellationToken,
    /// Dropped when the connection ends (tells a pump its client is gone).
    pub on_close: Option<DropGuard>,
}

impl Reader {
    /// Starts the reader and returns the client's response.
    pub fn respond(self, app: Arc<App>) -> Response<Body> {
        let (tx, body) = body::channel(CHANNEL_SLICES);
        tokio::spawn(self.run(app, tx));
        super::event_stream_response(body)
    }

    async fn run(mut self, app: Arc<App>, tx: mpsc::Sender<Bytes>) {
        app.metrics.sse_streams_active.inc();
        let _on_close = self.on_close.take();
        let outcome = self.follow(&app, &tx).await;
        tracing::debug!(stream = %self.stream, after = self.after, ?outcome, "reader closed");
        if outcome == Close::Retry {
            let _ = tx.send(retry(app.settings.sse.retry.as_millis())).await;
        }
        app.metrics.sse_streams_active.dec();
    }

    async fn follow(&mut self, app: &Arc<App>, tx: &mpsc::Sender<Bytes>) -> Close {
        let sse = &app.settings.sse;
        // The priming id names where this reader starts, so a client that
        // resumes from it gets exactly what it has not seen.
        if self.prime
            && send(tx, encode_event(Some(&self.event_id(self.after)), None, ""))
                .await
                .is_err()
        {
            return Close::Gone;
        }
        let connection_deadline = sse.max_connection_time.map(|d| Instant::now() + d);
        let mut touched = Instant::now();
        loop {
            let read = match self.first.take() {
                Some(read) => Ok(read),
                None => tokio::select! {
                    read = app.store.read(&self.stream, self.after, sse.keep_alive_interval) => read,
                    () = tx.closed() => return Close::Gone,
                    () = self.superseded.cancelled() => return Close::Superseded,
                    // Standalone streams never end by themselves: close them
                    // as shutdown begins. Response streams end with their
                    // answer: let them, unless the drain is nearly over.
                    () = app.shutdown.cancelled(), if self.track_delivery => return Close::Retry,
                    () = app.streams_closing.cancelled() => return Close::Retry,
                    () = sleep_until(connection_deadline) => return Close::Retry,
                },
            };
            let (events, ended) = match read {
                Ok(LogRead::Events { events, ended }) => (events, ended),
                Ok(LogRead::Missing) => return Close::Missing,
                Ok(LogRead::Gap { first }) => {
                    app.metrics
                        .replay_misses
                        .get_or_create(&MissLabels { reason: "trimmed" })
                        .inc();
                    tracing::warn!(stream = %self.stream, after = self.after, first, "client fell behind the retained events");
                    let why = format!(
                        "events {}.{} to {}.{} are no longer retained; this stream cannot continue",
                        self.stream,
                        self.after + 1,
                        self.stream,
                        first - 1
                    );
                    let _ = send(tx, comment(&why)).await;
                    return Close::Gap;
                }
                Err(e) => {
                    // The store is away for a moment (a restart, a failover):
                    // hold the connection with keep-alives and read again,
                    // rather than close a stream whose client may have no id
                    // to come back with.
                    tracing::warn!(stream = %self.stream, error = %e, "cannot read event log; retrying");
                    if send(tx, comment("keep-alive")).await.is_err() {
                        return Close::Gone;
                    }
                    tokio::select! {
                        () = tokio::time::sleep(STORE_RETRY) => {}
                        () = tx.closed() => return Close::Gone,
                        () = self.superseded.cancelled() => return Close::Superseded,
                    }
                    continue;
                }
            };
            if events.is_empty() && !ended {
                if send(tx, comment("keep-alive")).await.is_err() {
                    return Close::Gone;
                }
                self.idle(app, &mut touched).await;
                continue;
            }
            if self.replaying {
                app.metrics.events_replayed.inc_by(events.len() as u64);
            }
            for event in &events {
                let frame = encode_event(
                    Some(&self.event_id(event.seq)),
                    event.event.as_deref(),
                    &event.data,
                );
                if send(tx, frame).await.is_err() {
                    return Close::Gone;
                }
                self.after = event.seq;
            }
            if self.track_delivery
                && !events.is_empty()
                && let Err(e) = app.store.set_delivered(&self.stream, self.after).await
            {
                tracing::debug!(stream = %self.stream, error = %e, "cannot record delivery");
            }
            if ended {
                return Close::Ended;
            }
        }
    }

    /// What an idle stream does besides the keep-alive: keep its session
    /// alive (the client is using it, however quiet the stream), and make
    /// sure someone still writes the stream.
    async fn idle(&self, app: &Arc<App>, touched: &mut Instant) {
        let every = (app.settings.session_idle_timeout / 4).max(Duration::from_secs(1));
        if touched.elapsed() >= every {
            app.sessions.touch(&self.stream.session).await;
            *touched = Instant::now();
        }
        if self.watch_writer {
            orphans::check(app, &self.stream).await;
        }
    }

    fn event_id(&self, seq: u64) -> String {
        format!("{}.{seq}", self.stream)
    }
}

/// Sends a frame in slices of at most [`SLICE`] bytes.
async fn send(tx: &mpsc::Sender<Bytes>, frame: Bytes) -> Result<(), ()> {
    let mut start = 0;
    while start < frame.len() {
        let end = (start + SLICE).min(frame.len());
        tx.send(frame.slice(start..end)).await.map_err(drop)?;
        start = end;
    }
    Ok(())
}

/// Why a reader stopped.
#[derive(Debug, PartialEq, Eq)]
enum Close {
    /// The client went away.
    Gone,
    /// The stream ended and every event was sent.
    Ended,
    /// A newer reader took the stream over, or the session ended here.
    Superseded,
    /// The log is gone (expired, or its session ended).
    Missing,
    /// The events after the reader's position were dropped.
    Gap,
    /// Tell the client to come back (`retry:`), then close.
    Retry,
}

/// Splits an event id into stream and seq: `<stream>.<seq>`.
pub fn parse_event_id(id: &str) -> Option<(&str, u64)> {
    let (stream, seq) = id.rsplit_once('.')?;
    if stream.is_empty() || !stream.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    Some((stream, seq.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_split_into_stream_and_seq() {
        assert_eq!(parse_event_id("abc123.42"), Some(("abc123", 42)));
        assert_eq!(parse_event_id("abc.0"), Some(("abc", 0)));
        for bad in ["", "abc", ".5", "abc.", "abc.x", "a-b.1", "abc.-1"] {
            assert_eq!(parse_event_id(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn large_frames_go_out_in_bounded_slices() {
        let (tx, mut rx) = mpsc::channel(1);
        let frame = Bytes::from(vec![b'x'; SLICE * 2 + 10]);
        let sender = tokio::spawn(async move { send(&tx, frame).await });
        let mut sizes = Vec::new();
        while let Some(slice) = rx.recv().await {
            sizes.push(slice.len());
        }
        assert_eq!(sizes, vec![SLICE, SLICE, 10]);
        assert_eq!(sender.await.unwrap(), Ok(()));
    }
}

#[cfg(test)]
mod reader_tests {
    use std::time::Duration;

    use http_body_util::BodyExt;
    use shadowcat_crds::{SidecarConfig, SseConfig};

    use super::*;
    use crate::store::{Store, StoredEvent, StreamKind, suite};

    #[tokio::test]
    async fn a_reader_behind_the_kept_events_says_so_and_stops() {
        let (app, store) = crate::test_support::app(SidecarConfig {
            sse: Some(SseConfig {
                max_events_per_stream: Some(3),
                ..Default::default()
            }),
            ..Default::default()
        });
        let me = app.sessions.me().clone();
        let meta = suite::meta("s", "l", StreamKind::Request);
        suite::open_stream(&*store, &meta, &me).await;
        let event = |seq| StoredEvent {
            seq,
            event: None,
            data: format!("{{\"n\":{seq}}}"),
        };
        store
            .append(&meta.key(), &me, &[event(1), event(2)])
            .await
            .unwrap();
        let reader = Reader {
            stream: meta.key(),
            after: 0,
            first: None,
            prime: false,
            track_delivery: false,
            replaying: false,
            watch_writer: false,
            superseded: CancellationToken::new(),
            on_close: None,
        };
        let mut body = reader.respond(app.clone()).into_body();
        let mut text = String::new();
        while !text.contains("id: l.2") {
            let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            text.push_str(&String::from_utf8_lossy(&frame.into_data().unwrap()));
        }
        // The client stops reading while the stream runs on past what the log keeps.
        let burst: Vec<_> = (3..=10).map(event).collect();
        store.append(&meta.key(), &me, &burst).await.unwrap();
        while let Some(frame) = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .unwrap()
        {
            text.push_str(&String::from_utf8_lossy(&frame.unwrap().into_data().unwrap()));
        }
        assert!(
            text.contains("events l.3 to l.7 are no longer retained"),
            "{text}"
        );
        assert!(
            !text.contains("id: l.8"),
            "nothing after the gap is sent as if it followed: {text}"
        );
        let misses = app
            .metrics
            .replay_misses
            .get_or_create(&MissLabels { reason: "trimmed" })
            .get();
        assert_eq!(misses, 1);
    }
}

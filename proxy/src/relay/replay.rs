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
//! The reader is the response body itself: the client's connection pulls
//! it, so it reads the log only as fast as the client takes, and holds at
//! most one read of events and one frame, which goes out in slices of at
//! most [`SLICE`] bytes.

use std::sync::Arc;
use std::time::Duration;

use std::collections::VecDeque;

use bytes::Bytes;
use futures::StreamExt;
use http::Response;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::app::App;
use crate::body::Body;
use crate::metrics::MissLabels;
use crate::placement::orphans;
use crate::relay::sse::sleep_until;
use crate::sse::{comment, encode_event, retry};
use crate::store::{LogRead, StoredEvent, StreamKey};

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
    /// The client's response: an event stream that reads the log as the
    /// client takes what it was given, with no task or buffer of its own.
    /// When the client goes away the body is dropped, and the reader with it.
    pub fn respond(self, app: Arc<App>) -> Response<Body> {
        app.metrics.sse_streams_active.inc();
        let connection_deadline = app.settings.sse.max_connection_time.map(|d| Instant::now() + d);
        let pull = Pull {
            prime: self.prime,
            reader: self,
            app,
            slices: VecDeque::new(),
            events: Vec::new().into_iter(),
            ended: false,
            close: None,
            done: false,
            delivered: 0,
            touched: Instant::now(),
            connection_deadline,
        };
        let frames = futures::stream::unfold(pull, |mut pull| async move {
            let slice = pull.next_slice().await?;
            Some((Ok::<_, crate::body::BoxError>(Frame::data(slice)), pull))
        });
        // A body must be Sync; only the connection polls it, so a mutex it
        // never contends (`get_mut`, no locking) makes it so.
        let mut frames = std::sync::Mutex::new(Box::pin(frames));
        let frames = futures::stream::poll_fn(move |cx| {
            frames
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .poll_next_unpin(cx)
        });
        super::event_stream_response(BodyExt::boxed(StreamBody::new(frames)))
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

/// A reader being pulled by its client's connection.
struct Pull {
    reader: Reader,
    app: Arc<App>,
    /// Send a priming event first.
    prime: bool,
    /// What is left of the frame being sent, in slices of at most [`SLICE`].
    slices: VecDeque<Bytes>,
    /// Events read but not yet encoded.
    events: std::vec::IntoIter<StoredEvent>,
    /// The stream ends after `events`.
    ended: bool,
    /// Why the reader stops, once it knows; what is queued goes out first.
    close: Option<Close>,
    done: bool,
    /// The position last recorded as delivered (standalone streams).
    delivered: u64,
    touched: Instant,
    connection_deadline: Option<Instant>,
}

impl Drop for Pull {
    fn drop(&mut self) {
        let outcome = self.close.as_ref().unwrap_or(&Close::Gone);
        tracing::debug!(stream = %self.reader.stream, after = self.reader.after, ?outcome, "reader closed");
        self.app.metrics.sse_streams_active.dec();
    }
}

impl Pull {
    /// The next slice for the client; `None` ends the response.
    async fn next_slice(&mut self) -> Option<Bytes> {
        loop {
            if let Some(slice) = self.slices.pop_front() {
                return Some(slice);
            }
            if std::mem::take(&mut self.prime) {
                let id = self.reader.event_id(self.reader.after);
                self.queue(encode_event(Some(&id), None, ""));
                continue;
            }
            if let Some(event) = self.events.next() {
                let id = self.reader.event_id(event.seq);
                self.queue(encode_event(Some(&id), event.event.as_deref(), &event.data));
                self.reader.after = event.seq;
                continue;
            }
            if self.done {
                return None;
            }
            if self.ended {
                self.finish(Close::Ended);
                continue;
            }
            if let Some(close) = self.close.take() {
                self.finish(close);
                continue;
            }
            self.record_delivery().await;
            self.read().await;
        }
    }

    fn queue(&mut self, frame: Bytes) {
        self.slices.extend(slices(frame));
    }

    /// Stops after what is queued, with `retry:` first where the client
    /// should come back.
    fn finish(&mut self, close: Close) {
        if close == Close::Retry {
            self.queue(retry(self.app.settings.sse.retry.as_millis()));
        }
        self.close = Some(close);
        self.done = true;
    }

    /// Records how far a standalone stream's client was given events, once
    /// it took them.
    async fn record_delivery(&mut self) {
        if !self.reader.track_delivery || self.reader.after <= self.delivered {
            return;
        }
        if let Err(e) = self
            .app
            .store
            .set_delivered(&self.reader.stream, self.reader.after)
            .await
        {
            tracing::debug!(stream = %self.reader.stream, error = %e, "cannot record delivery");
        }
        self.delivered = self.reader.after;
    }

    /// Reads the log once: events to send, a keep-alive, or why to stop.
    async fn read(&mut self) {
        let app = self.app.clone();
        let sse = &app.settings.sse;
        let reader = &mut self.reader;
        let read = match reader.first.take() {
            Some(read) => Ok(read),
            None => tokio::select! {
                read = app.store.read(&reader.stream, reader.after, sse.keep_alive_interval) => read,
                () = reader.superseded.cancelled() => return self.stop(Close::Superseded),
                // Standalone streams never end by themselves: close them as
                // shutdown begins. Response streams end with their answer:
                // let them, unless the drain is nearly over.
                () = app.shutdown.cancelled(), if reader.track_delivery => return self.stop(Close::Retry),
                () = app.streams_closing.cancelled() => return self.stop(Close::Retry),
                () = sleep_until(self.connection_deadline) => return self.stop(Close::Retry),
            },
        };
        match read {
            Ok(LogRead::Events { events, ended }) => {
                if events.is_empty() && !ended {
                    self.queue(comment("keep-alive"));
                    self.reader.idle(&app, &mut self.touched).await;
                    return;
                }
                if self.reader.replaying {
                    app.metrics.events_replayed.inc_by(events.len() as u64);
                }
                self.events = events.into_iter();
                self.ended = ended;
            }
            Ok(LogRead::Missing) => self.stop(Close::Missing),
            Ok(LogRead::Gap { first }) => {
                app.metrics
                    .replay_misses
                    .get_or_create(&MissLabels { reason: "trimmed" })
                    .inc();
                let (stream, after) = (&self.reader.stream, self.reader.after);
                tracing::warn!(%stream, after, first, "client fell behind the retained events");
                let why = format!(
                    "events {stream}.{} to {stream}.{} are no longer retained; this stream cannot continue",
                    after + 1,
                    first - 1
                );
                self.queue(comment(&why));
                self.stop(Close::Gap);
            }
            Err(e) => {
                // The store is away for a moment (a restart, a failover):
                // hold the connection with keep-alives and read again, rather
                // than close a stream whose client may have no id to come
                // back with.
                tracing::warn!(stream = %self.reader.stream, error = %e, "cannot read event log; retrying");
                self.queue(comment("keep-alive"));
                tokio::select! {
                    () = tokio::time::sleep(STORE_RETRY) => {}
                    () = self.reader.superseded.cancelled() => self.stop(Close::Superseded),
                }
            }
        }
    }

    fn stop(&mut self, close: Close) {
        self.close = Some(close);
    }
}

/// A frame in slices of at most [`SLICE`] bytes (shared, not copied).
fn slices(frame: Bytes) -> impl Iterator<Item = Bytes> {
    (0..frame.len())
        .step_by(SLICE)
        .map(move |start| frame.slice(start..(start + SLICE).min(frame.len())))
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

    #[test]
    fn large_frames_go_out_in_bounded_slices() {
        let frame = Bytes::from(vec![b'x'; SLICE * 2 + 10]);
        let sizes: Vec<usize> = slices(frame).map(|s| s.len()).collect();
        assert_eq!(sizes, vec![SLICE, SLICE, 10]);
        assert_eq!(slices(Bytes::new()).count(), 0);
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

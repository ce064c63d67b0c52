//! The reader: serves one client connection from a stream's event log.
//!
//! It catches up from a position, then follows the log live until the stream
//! ends, the client goes away, a newer reader takes over, the connection has
//! been open for the configured maximum, or Shadowcat shuts down; in the last
//! two cases it sends `retry:` first so the client reconnects with
//! `Last-Event-ID`. Memory per connection is the channel's few chunks: the
//! reader pulls from the log only as fast as the client takes.

use std::sync::Arc;

use bytes::Bytes;
use http::Response;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::app::App;
use crate::body::{self, Body};
use crate::relay::sse::sleep_until;
use crate::sse::{comment, encode_event, retry};
use crate::store::StreamKey;

/// Chunks buffered between a reader and its client connection.
const CHANNEL_CHUNKS: usize = 8;

/// What one client connection reads.
#[derive(Debug)]
pub struct Reader {
    /// The stream's log.
    pub stream: StreamKey,
    /// Send events after this seq.
    pub after: u64,
    /// Start with a priming event (id, empty data).
    pub prime: bool,
    /// Record delivery progress (standalone streams).
    pub track_delivery: bool,
    /// This connection resumes a stream (`Last-Event-ID`): what it sends
    /// counts as replayed.
    pub replaying: bool,
    /// Fires when a newer reader takes this stream over.
    pub superseded: CancellationToken,
    /// Dropped when the connection ends (tells a pump its client is gone).
    pub on_close: Option<DropGuard>,
}

impl Reader {
    /// Starts the reader and returns the client's response.
    pub fn respond(self, app: Arc<App>) -> Response<Body> {
        let (tx, body) = body::channel(CHANNEL_CHUNKS);
        tokio::spawn(self.run(app, tx));
        super::event_stream_response(body)
    }

    async fn run(mut self, app: Arc<App>, tx: mpsc::Sender<Bytes>) {
        app.metrics.sse_streams_active.inc();
        let _on_close = self.on_close.take();
        let outcome = self.follow(&app, &tx).await;
        if outcome == Close::Retry {
            let _ = tx.send(retry(app.settings.sse.retry.as_millis())).await;
        }
        app.metrics.sse_streams_active.dec();
    }

    async fn follow(&mut self, app: &App, tx: &mpsc::Sender<Bytes>) -> Close {
        let sse = &app.settings.sse;
        if self.prime
            && tx
                .send(encode_event(Some(&self.event_id(0)), None, ""))
                .await
                .is_err()
        {
            return Close::Gone;
        }
        let connection_deadline = sse.max_connection_time.map(|d| Instant::now() + d);
        loop {
            let read = tokio::select! {
                read = app.store.read(&self.stream, self.after, sse.keep_alive_interval) => read,
                () = tx.closed() => return Close::Gone,
                () = self.superseded.cancelled() => return Close::Quiet,
                // Standalone streams never end: close them as shutdown begins.
                // Response streams end with their answer: let them, unless
                // the drain is nearly over.
                () = app.shutdown.cancelled(), if self.track_delivery => return Close::Retry,
                () = app.streams_closing.cancelled() => return Close::Retry,
                () = sleep_until(connection_deadline) => return Close::Retry,
            };
            let read = match read {
                Ok(read) => read,
                Err(e) => {
                    tracing::warn!(stream = %self.stream, error = %e, "cannot read event log");
                    return Close::Retry;
                }
            };
            if read.missing {
                return Close::Quiet;
            }
            if read.events.is_empty() && !read.ended && tx.send(comment("keep-alive")).await.is_err() {
                return Close::Gone;
            }
            if self.replaying {
                app.metrics.events_replayed.inc_by(read.events.len() as u64);
            }
            for event in &read.events {
                let frame = encode_event(
                    Some(&self.event_id(event.seq)),
                    event.event.as_deref(),
                    &event.data,
                );
                if tx.send(frame).await.is_err() {
                    return Close::Gone;
                }
                self.after = event.seq;
            }
            if self.track_delivery
                && !read.events.is_empty()
                && let Err(e) = app.store.set_delivered(&self.stream, self.after).await
            {
                tracing::debug!(stream = %self.stream, error = %e, "cannot record delivery");
            }
            if read.ended {
                return Close::Quiet;
            }
        }
    }

    fn event_id(&self, seq: u64) -> String {
        format!("{}.{seq}", self.stream)
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Close {
    /// The client went away.
    Gone,
    /// The stream is over for this connection.
    Quiet,
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
    use super::parse_event_id;

    #[test]
    fn event_ids_split_into_stream_and_seq() {
        assert_eq!(parse_event_id("abc123.42"), Some(("abc123", 42)));
        assert_eq!(parse_event_id("abc.0"), Some(("abc", 0)));
        for bad in ["", "abc", ".5", "abc.", "abc.x", "a-b.1", "abc.-1"] {
            assert_eq!(parse_event_id(bad), None, "{bad}");
        }
    }
}

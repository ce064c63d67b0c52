//! The standalone GET streams the upstream holds open, and the broadcast
//! that writes one timestamped notification to each of them.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body::{Body, Frame};
use tokio::sync::mpsc;

/// Events queued per stream before a slow reader misses some.
const QUEUE: usize = 16;

/// Every held stream's sending end.
#[derive(Debug, Default)]
pub struct Held {
    streams: Mutex<Vec<mpsc::Sender<Bytes>>>,
}

impl Held {
    /// Registers a new stream and returns its body.
    pub fn open(&self) -> HeldBody {
        let (tx, rx) = mpsc::channel(QUEUE);
        self.lock().push(tx);
        HeldBody { rx }
    }

    /// Streams still open (closed ones are forgotten here).
    pub fn count(&self) -> usize {
        let mut streams = self.lock();
        streams.retain(|tx| !tx.is_closed());
        streams.len()
    }

    /// Writes one `notifications/message` carrying the send time (Unix
    /// nanoseconds, taken once before the first write) to every open
    /// stream. Returns how many streams it was written to.
    pub fn broadcast(&self) -> usize {
        let event = Bytes::from(broadcast_event(unix_nanos()));
        let mut sent = 0;
        self.lock().retain(|tx| match tx.try_send(event.clone()) {
            Ok(()) => {
                sent += 1;
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
        sent
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<mpsc::Sender<Bytes>>> {
        // A panic while holding the lock leaves a plain Vec, still usable.
        self.streams
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The SSE event a broadcast writes.
pub fn broadcast_event(sent_ns: u128) -> String {
    format!(
        "event: message\ndata: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\
         \"params\":{{\"level\":\"info\",\"data\":{{\"sent_ns\":{sent_ns}}}}}}}\n\n"
    )
}

/// Nanoseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// A held stream's body: whatever broadcasts queue, until the client leaves.
#[derive(Debug)]
pub struct HeldBody {
    rx: mpsc::Receiver<Bytes>,
}

impl Body for HeldBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|event| event.map(|e| Ok(Frame::data(e))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_broadcast_reaches_open_streams_and_forgets_closed_ones() {
        let held = Held::default();
        let mut open = held.open();
        drop(held.open());
        assert_eq!(held.broadcast(), 1);
        assert_eq!(held.count(), 1);
        let frame = open.frame().await.expect("a frame").expect("infallible");
        let text = String::from_utf8(frame.into_data().expect("data").to_vec()).expect("UTF-8");
        let data = text.strip_prefix("event: message\ndata: ").expect("an SSE event");
        let message: serde_json::Value = serde_json::from_str(data.trim_end()).expect("JSON");
        assert!(
            message["params"]["data"]["sent_ns"]
                .as_u64()
                .is_some_and(|ns| ns > 0)
        );
    }
}

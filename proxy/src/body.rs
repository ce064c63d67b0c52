//! The response body type every handler returns.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;

/// Errors a body can fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A boxed, streaming response body.
pub type Body = BoxBody<Bytes, BoxError>;

/// A body holding `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// The upstream's body, streamed through frame by frame.
pub fn incoming(body: hyper::body::Incoming) -> Body {
    body.map_err(BoxError::from).boxed()
}

/// A body fed from a channel: the sender writes chunks as they become
/// available; the body ends when the sender is dropped. The channel's bound is
/// what a slow client may cost.
pub fn channel(capacity: usize) -> (tokio::sync::mpsc::Sender<Bytes>, Body) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(capacity);
    let stream = futures::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
            .map(|chunk| chunk.map(|bytes| Ok::<_, BoxError>(Frame::data(bytes))))
    });
    (tx, BodyExt::boxed(StreamBody::new(stream)))
}

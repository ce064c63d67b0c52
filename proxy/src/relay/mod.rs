//! Carrying upstream answers to the client.
//!
//! - [`json`]: one-shot JSON responses, streamed through.
//! - [`sse`]: the pump, which reads an upstream event stream into the store's
//!   event log, event by event.
//! - [`replay`]: the reader, which serves a client from that log: catch up
//!   after a position, then follow live.
//! - [`stateless`]: 2026-07-28 event streams, relayed without ids or logs.

pub mod json;
pub mod replay;
pub mod sse;
pub mod stateless;

use http::{HeaderValue, Response, header};

use crate::body::Body;
use crate::mcp::headers::{TEXT_EVENT_STREAM, X_ACCEL_BUFFERING};

/// A 200 response carrying an event stream.
pub fn event_stream_response(body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(TEXT_EVENT_STREAM));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-transform"),
    );
    headers.insert(X_ACCEL_BUFFERING.clone(), HeaderValue::from_static("no"));
    response
}

/// Whether a response carries an event stream.
pub fn is_event_stream(headers: &http::HeaderMap) -> bool {
    crate::mcp::headers::content_type(headers).is_some_and(|ct| ct.eq_ignore_ascii_case(TEXT_EVENT_STREAM))
}

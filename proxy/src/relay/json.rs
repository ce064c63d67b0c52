//! One-shot responses: status, headers and a body streamed through as the
//! upstream produces it.

use bytes::Bytes;
use http::Response;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::body::{self, Body};
use crate::error::{Error, Result};
use crate::upstream::upstream_headers_for_client;

/// Passes an upstream response through, re-framing only.
pub fn pass_through(response: Response<Incoming>) -> Response<Body> {
    let (parts, incoming) = response.into_parts();
    let mut out = Response::new(body::incoming(incoming));
    *out.status_mut() = parts.status;
    *out.headers_mut() = upstream_headers_for_client(&parts.headers);
    out
}

/// A response from upstream parts and a body already read.
pub fn buffered(parts: http::response::Parts, bytes: Bytes) -> Response<Body> {
    let mut out = Response::new(body::full(bytes));
    *out.status_mut() = parts.status;
    *out.headers_mut() = upstream_headers_for_client(&parts.headers);
    out
}

/// Reads a whole (small) upstream body, refusing more than `limit` bytes.
/// Only for answers Shadowcat must look into, such as an InitializeResult.
pub async fn collect(incoming: Incoming, limit: u64) -> Result<Bytes> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    Limited::new(incoming, limit)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| Error::UpstreamProtocol(format!("cannot read upstream body: {e}")))
}

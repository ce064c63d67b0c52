//! The checks a request passes before anything reaches the upstream. Each
//! failure names what was wrong.

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::error::{Error, Result};
use crate::mcp::ProtocolVersion;
use crate::mcp::headers::{
    self, APPLICATION_JSON, MCP_METHOD, MCP_NAME, MCP_PROTOCOL_VERSION, TEXT_EVENT_STREAM,
};
use crate::mcp::jsonrpc::{Body, Kind};

/// `Origin`, when present and an allow-list is configured, must be on it.
pub fn origin(headers: &HeaderMap, allowed: &[String]) -> Result<()> {
    if allowed.is_empty() {
        return Ok(());
    }
    match headers.get(http::header::ORIGIN) {
        None => Ok(()),
        Some(value) => {
            let text = value.to_str().unwrap_or("");
            if allowed.iter().any(|a| a == text) {
                Ok(())
            } else {
                Err(Error::ForbiddenOrigin(
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                ))
            }
        }
    }
}

/// The protocol version the request speaks; `None` when the header is absent.
pub fn version(headers: &HeaderMap) -> Result<Option<ProtocolVersion>> {
    match headers::text(headers, &MCP_PROTOCOL_VERSION) {
        None => Ok(None),
        Some(Ok(text)) => ProtocolVersion::parse(text)
            .map(Some)
            .ok_or_else(|| Error::UnsupportedVersion(text.to_owned())),
        Some(Err(())) => Err(Error::UnsupportedVersion("<not ASCII>".into())),
    }
}

/// A POST must carry JSON and accept both JSON and event streams.
pub fn post_media(headers: &HeaderMap) -> Result<()> {
    match headers::content_type(headers) {
        Some(ct) if ct == APPLICATION_JSON => {}
        other => return Err(Error::UnsupportedMediaType(other.unwrap_or_default())),
    }
    if !headers::accepts(headers, APPLICATION_JSON) || !headers::accepts(headers, TEXT_EVENT_STREAM) {
        return Err(Error::NotAcceptable("application/json and text/event-stream"));
    }
    Ok(())
}

/// A GET must accept event streams.
pub fn get_media(headers: &HeaderMap) -> Result<()> {
    if !headers::accepts(headers, TEXT_EVENT_STREAM) {
        return Err(Error::NotAcceptable("text/event-stream"));
    }
    Ok(())
}

/// The session id a request names.
pub fn session_id(headers: &HeaderMap) -> Result<&str> {
    match headers::text(headers, &headers::MCP_SESSION_ID) {
        None => Err(Error::MissingSession),
        Some(Ok(id)) if headers::valid_session_id(id) => Ok(id),
        Some(_) => Err(Error::UnknownSession),
    }
}

/// Reads the body, refusing more than `limit` bytes (by `Content-Length`
/// up front, and by counting for chunked bodies).
pub async fn body(headers: &HeaderMap, body: Incoming, limit: u64) -> Result<Bytes> {
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(Error::PayloadTooLarge(limit));
    }
    let max = usize::try_from(limit).unwrap_or(usize::MAX);
    match Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Error::PayloadTooLarge(limit)),
        Err(e) => Err(Error::InvalidRequest(format!("cannot read request body: {e}"))),
    }
}

/// 2026-07-28: `Mcp-Method` (and `Mcp-Name` where the method names a tool,
/// prompt or resource) must be present and match the body.
pub fn routing_headers(headers: &HeaderMap, body: &Body) -> Result<()> {
    let Body::Single(message) = body else {
        return Err(Error::InvalidRequest(
            "batches are not part of protocol 2026-07-28".into(),
        ));
    };
    if message.kind == Kind::Response {
        return Ok(());
    }
    let method = message.method.as_deref().unwrap_or_default();
    match headers::text(headers, &MCP_METHOD) {
        None => return Err(Error::HeaderMismatch("Mcp-Method header is required".into())),
        Some(Ok(h)) if h == method => {}
        Some(_) => {
            return Err(Error::HeaderMismatch(format!(
                "Mcp-Method does not match body method {method:?}"
            )));
        }
    }
    if let Some(name) = &message.name {
        match headers::text(headers, &MCP_NAME) {
            None => {
                return Err(Error::HeaderMismatch(format!(
                    "Mcp-Name header is required for {method}"
                )));
            }
            Some(Ok(h)) if h == name => {}
            Some(_) => {
                return Err(Error::HeaderMismatch(format!(
                    "Mcp-Name does not match body name {name:?}"
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::header::HeaderName::from_static(k),
                    HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    #[test]
    fn origin_allow_list() {
        let allowed = vec!["https://app.example".to_owned()];
        assert!(origin(&headers(&[("origin", "https://app.example")]), &allowed).is_ok());
        assert!(origin(&headers(&[]), &allowed).is_ok());
        assert!(matches!(
            origin(&headers(&[("origin", "https://evil.example")]), &allowed),
            Err(Error::ForbiddenOrigin(_))
        ));
        assert!(origin(&headers(&[("origin", "https://evil.example")]), &[]).is_ok());
    }

    #[test]
    fn routing_headers_must_match() {
        let body = crate::mcp::jsonrpc::parse(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}"#,
        )
        .unwrap();
        let ok = headers(&[("mcp-method", "tools/call"), ("mcp-name", "echo")]);
        assert!(routing_headers(&ok, &body).is_ok());
        for bad in [
            headers(&[("mcp-name", "echo")]),
            headers(&[("mcp-method", "tools/list"), ("mcp-name", "echo")]),
            headers(&[("mcp-method", "tools/call")]),
            headers(&[("mcp-method", "tools/call"), ("mcp-name", "other")]),
        ] {
            assert!(matches!(
                routing_headers(&bad, &body),
                Err(Error::HeaderMismatch(_))
            ));
        }
    }
}

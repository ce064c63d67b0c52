//! The HTTP headers MCP defines, and reading them off a request.

use http::HeaderMap;
use http::header::HeaderName;

/// The session id header.
pub static MCP_SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
/// The negotiated protocol version header.
pub static MCP_PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");
/// The resumption header of a GET.
pub static LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");
/// 2026-07-28: the JSON-RPC method, mirrored from the body.
pub static MCP_METHOD: HeaderName = HeaderName::from_static("mcp-method");
/// 2026-07-28: the tool, prompt or resource a request names, mirrored from the body.
pub static MCP_NAME: HeaderName = HeaderName::from_static("mcp-name");
/// Tells buffering reverse proxies (nginx) to pass SSE through.
pub static X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

/// The media type of JSON bodies.
pub const APPLICATION_JSON: &str = "application/json";
/// The media type of SSE bodies.
pub const TEXT_EVENT_STREAM: &str = "text/event-stream";

/// A header's value as text, `None` when absent. A value that is not visible
/// ASCII reads as `Some(Err(()))` so callers can refuse it.
pub fn text<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<Result<&'a str, ()>> {
    headers.get(name).map(|v| v.to_str().map_err(|_| ()))
}

/// Whether the `Accept` header admits `media` (exactly, via `type/*`, or `*/*`).
pub fn accepts(headers: &HeaderMap, media: &str) -> bool {
    accepts_all(headers, &[media])
}

/// Whether the `Accept` header admits every one of `media` (at most eight),
/// in one pass over it: this runs on every request.
pub fn accepts_all(headers: &HeaderMap, media: &[&str]) -> bool {
    let mut admitted = 0u8;
    let all = u8::MAX >> (8 - media.len().min(8));
    for value in headers.get_all(http::header::ACCEPT) {
        for item in value.as_bytes().split(|b| *b == b',') {
            let item = item.split(|b| *b == b';').next().unwrap_or_default().trim_ascii();
            for (i, m) in media.iter().enumerate().take(8) {
                let m = m.as_bytes();
                let major = m.split(|b| *b == b'/').next().unwrap_or(m);
                let admits = item.eq_ignore_ascii_case(m)
                    || item == b"*/*"
                    || item
                        .strip_suffix(b"/*")
                        .is_some_and(|t| t.eq_ignore_ascii_case(major));
                if admits {
                    admitted |= 1 << i;
                }
            }
            if admitted == all {
                return true;
            }
        }
    }
    false
}

/// The media type of `Content-Type`, without parameters.
pub fn content_type(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::CONTENT_TYPE)?.to_str().ok()?;
    Some(value.split(';').next().unwrap_or("").trim())
}

/// Whether a session id is well formed: visible ASCII, 1 to 256 bytes.
pub fn valid_session_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 256 && id.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with_accept(v: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::ACCEPT, HeaderValue::from_static(v));
        h
    }

    #[test]
    fn accept_matching() {
        let both = with_accept("application/json, text/event-stream;q=0.9");
        assert!(accepts(&both, APPLICATION_JSON));
        assert!(accepts(&both, TEXT_EVENT_STREAM));
        assert!(!accepts(&with_accept("application/json"), TEXT_EVENT_STREAM));
        assert!(accepts(&with_accept("*/*"), TEXT_EVENT_STREAM));
        assert!(accepts(&with_accept("text/*"), TEXT_EVENT_STREAM));
        assert!(!accepts(&HeaderMap::new(), APPLICATION_JSON));
        let media = [APPLICATION_JSON, TEXT_EVENT_STREAM];
        assert!(accepts_all(&both, &media));
        assert!(!accepts_all(&with_accept("application/json"), &media));
        assert!(accepts_all(
            &with_accept("text/event-stream;q=1 , application/*"),
            &media
        ));
        assert!(!accepts_all(&with_accept(""), &media));
    }

    #[test]
    fn content_type_drops_parameters() {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("Application/JSON; charset=utf-8"),
        );
        assert_eq!(content_type(&h), Some("Application/JSON"));
    }

    #[test]
    fn session_ids_are_visible_ascii() {
        assert!(valid_session_id("abc-123_XYZ"));
        assert!(!valid_session_id(""));
        assert!(!valid_session_id("has space"));
    }
}

//! The checks a request passes before anything reaches the upstream. Each
//! failure names what was wrong.

use http::{HeaderMap, Uri};
use shadowcat_crds::Allow;

use crate::error::{Error, Result};
use crate::mcp::ProtocolVersion;
use crate::mcp::headers::{
    self, APPLICATION_JSON, MCP_METHOD, MCP_NAME, MCP_PROTOCOL_VERSION, TEXT_EVENT_STREAM,
};
use crate::mcp::jsonrpc::{Body, Kind};

/// The names a loopback listener answers to by default.
const LOOPBACK: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

/// `host` or `host:port` -> the host part (IPv6 literals keep their brackets).
fn host_part(authority: &str) -> &str {
    match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => &authority[..i],
        _ => authority,
    }
}

fn allowed(authority: &str, allow: &Allow) -> bool {
    match allow {
        Allow::Any => true,
        Allow::Loopback => LOOPBACK
            .iter()
            .any(|name| host_part(authority).eq_ignore_ascii_case(name)),
        Allow::List(list) => list.iter().any(|entry| {
            entry.eq_ignore_ascii_case(authority)
                || (!entry.contains(':') || entry.ends_with(']'))
                    && entry.eq_ignore_ascii_case(host_part(authority))
        }),
    }
}

/// `Origin`, when present, must be allowed: listed, or (on a loopback
/// listener by default) a localhost origin. Browsers send it; a page on
/// another site must not reach a local server through DNS rebinding.
pub fn origin(headers: &HeaderMap, allow: &Allow) -> Result<()> {
    let Some(value) = headers.get(http::header::ORIGIN) else {
        return Ok(());
    };
    let text = value.to_str().unwrap_or("");
    let ok = match allow {
        Allow::Any => true,
        Allow::List(list) => list.iter().any(|a| a == text),
        Allow::Loopback => text
            .strip_prefix("http://")
            .or_else(|| text.strip_prefix("https://"))
            .is_some_and(|authority| allowed(authority, allow)),
    };
    if ok {
        Ok(())
    } else {
        Err(Error::ForbiddenOrigin(
            String::from_utf8_lossy(value.as_bytes()).into_owned(),
        ))
    }
}

/// `Host` (or the HTTP/2 authority) must be allowed: listed, or (on a
/// loopback listener by default) a loopback name. What the upstream would
/// check when reached directly, it must not lose behind Shadowcat.
pub fn host(headers: &HeaderMap, uri: &Uri, allow: &Allow) -> Result<()> {
    if *allow == Allow::Any {
        return Ok(());
    }
    let authority = headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()));
    match authority {
        Some(authority) if allowed(authority, allow) => Ok(()),
        other => Err(Error::ForbiddenHost(other.unwrap_or("").to_owned())),
    }
}

/// The checks every request on the MCP endpoint passes first.
pub fn origin_and_host(parts: &http::request::Parts, settings: &shadowcat_crds::Settings) -> Result<()> {
    host(&parts.headers, &parts.uri, &settings.allowed_hosts)?;
    origin(&parts.headers, &settings.allowed_origins)
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
        Some(ct) if ct.eq_ignore_ascii_case(APPLICATION_JSON) => {}
        other => return Err(Error::UnsupportedMediaType(other.unwrap_or_default().to_owned())),
    }
    if !headers::accepts_all(headers, &[APPLICATION_JSON, TEXT_EVENT_STREAM]) {
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
        let allowed = Allow::List(vec!["https://app.example".to_owned()]);
        assert!(origin(&headers(&[("origin", "https://app.example")]), &allowed).is_ok());
        assert!(origin(&headers(&[]), &allowed).is_ok());
        assert!(matches!(
            origin(&headers(&[("origin", "https://evil.example")]), &allowed),
            Err(Error::ForbiddenOrigin(_))
        ));
        assert!(origin(&headers(&[("origin", "https://evil.example")]), &Allow::Any).is_ok());
    }

    #[test]
    fn a_loopback_listener_answers_loopback_names_only() {
        let uri = Uri::from_static("/mcp");
        for ok in ["localhost:8080", "127.0.0.1", "[::1]:9", "LOCALHOST"] {
            let h: HeaderMap = [(http::header::HOST, HeaderValue::from_static(ok))]
                .into_iter()
                .collect();
            assert!(host(&h, &uri, &Allow::Loopback).is_ok(), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8080",
            "127.0.0.1.evil.example",
            "localhost.evil:80",
        ] {
            let h: HeaderMap = [(http::header::HOST, HeaderValue::from_static(bad))]
                .into_iter()
                .collect();
            assert!(
                matches!(host(&h, &uri, &Allow::Loopback), Err(Error::ForbiddenHost(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            host(&HeaderMap::new(), &uri, &Allow::Loopback),
            Err(Error::ForbiddenHost(_))
        ));
        for (o, ok) in [
            ("http://localhost:3000", true),
            ("https://127.0.0.1", true),
            ("http://evil.example", false),
            ("null", false),
        ] {
            assert_eq!(
                origin(&headers(&[("origin", o)]), &Allow::Loopback).is_ok(),
                ok,
                "{o}"
            );
        }
        let listed = Allow::List(vec!["mcp.example".into(), "other.example:8443".into()]);
        let check = |v: &'static str| {
            let h: HeaderMap = [(http::header::HOST, HeaderValue::from_static(v))]
                .into_iter()
                .collect();
            host(&h, &uri, &listed).is_ok()
        };
        assert!(check("mcp.example:8080") && check("other.example:8443"));
        assert!(!check("other.example:9999") && !check("localhost"));
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

//! Re-creating a session on an upstream that does not have it (this replica
//! adopted it, or its upstream restarted): `initialize` as the client sent
//! it, `notifications/initialized`, then the state the client set since —
//! log level and subscriptions.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, header};
use http_body_util::BodyExt;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::app::App;
use crate::error::{Error, Result};
use crate::mcp::ProtocolVersion;
use crate::mcp::headers::MCP_PROTOCOL_VERSION;
use crate::store::SessionRecord;
use crate::upstream::UpstreamRequest;

/// Largest `initialize` kept in a session record.
pub const MAX_RECORDED_INITIALIZE: usize = 64 * 1024;

#[derive(serde::Deserialize)]
struct Initialize<'a> {
    #[serde(borrow, default)]
    params: Option<Params<'a>>,
}

#[derive(serde::Deserialize)]
struct Params<'a> {
    #[serde(borrow, default, rename = "protocolVersion")]
    protocol_version: Option<&'a RawValue>,
    #[serde(borrow, default)]
    capabilities: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "clientInfo")]
    client_info: Option<ClientInfo<'a>>,
}

#[derive(serde::Deserialize)]
struct ClientInfo<'a> {
    #[serde(borrow, default)]
    name: Option<&'a RawValue>,
    #[serde(borrow, default)]
    title: Option<&'a RawValue>,
    #[serde(borrow, default)]
    version: Option<&'a RawValue>,
}

/// An `initialize` request as a session record keeps it.
#[derive(Debug)]
pub struct Recorded {
    /// The request reduced to what re-initializing needs, as JSON text.
    pub text: String,
    /// The protocol version the client asked for, when Shadowcat knows it.
    pub version: Option<ProtocolVersion>,
}

/// The `initialize` request reduced to what re-initializing needs: protocol
/// version, capabilities, and the client's name, title and version. Padding,
/// icons and anything else a client sends stay out of the session record
/// (and are never even copied: the parser borrows).
pub fn recorded_initialize(body: &[u8]) -> Result<Recorded> {
    let request: Initialize<'_> = serde_json::from_slice(body).map_err(|e| Error::Parse(e.to_string()))?;
    let params = request.params.unwrap_or(Params {
        protocol_version: None,
        capabilities: None,
        client_info: None,
    });
    let too_large = || {
        Error::InvalidRequest(format!(
            "initialize capabilities and clientInfo exceed {MAX_RECORDED_INITIALIZE} bytes"
        ))
    };
    let kept = |raw: Option<&RawValue>| -> Result<Option<Value>> {
        match raw {
            None => Ok(None),
            Some(raw) if raw.get().len() > MAX_RECORDED_INITIALIZE => Err(too_large()),
            Some(raw) => serde_json::from_str(raw.get())
                .map(Some)
                .map_err(|e| Error::Parse(e.to_string())),
        }
    };
    let mut client_info = serde_json::Map::new();
    if let Some(client) = &params.client_info {
        for (field, raw) in [
            ("name", client.name),
            ("title", client.title),
            ("version", client.version),
        ] {
            if let Some(value) = kept(raw)? {
                client_info.insert(field.into(), value);
            }
        }
    }
    let version = kept(params.protocol_version)?.unwrap_or(Value::Null);
    let text = json!({
        "jsonrpc": "2.0",
        "id": "shadowcat-initialize",
        "method": "initialize",
        "params": {
            "protocolVersion": version,
            "capabilities": kept(params.capabilities)?.unwrap_or_else(|| json!({})),
            "clientInfo": client_info,
        },
    })
    .to_string();
    if text.len() > MAX_RECORDED_INITIALIZE {
        return Err(too_large());
    }
    Ok(Recorded {
        text,
        version: version.as_str().and_then(ProtocolVersion::parse),
    })
}

/// Re-creates `record`'s session on the local upstream; returns the new
/// upstream session id.
pub async fn run(app: &App, record: &SessionRecord) -> Result<Option<String>> {
    let version = &record.protocol_version;
    let (headers, _) = send(app, None, version, Bytes::from(record.initialize.clone())).await?;
    let upstream_id = headers
        .get(&crate::mcp::headers::MCP_SESSION_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    send(
        app,
        upstream_id.clone(),
        version,
        Bytes::from(initialized.to_string()),
    )
    .await?;
    let mut state = Vec::new();
    if let Some(level) = &record.log_level {
        state.push(("logging/setLevel", json!({"level": level})));
    }
    for uri in &record.subscriptions {
        state.push(("resources/subscribe", json!({"uri": uri})));
    }
    for (n, (method, params)) in state.into_iter().enumerate() {
        let request = json!({"jsonrpc": "2.0", "id": format!("shadowcat-restore-{n}"), "method": method, "params": params});
        if let Err(e) = send(
            app,
            upstream_id.clone(),
            version,
            Bytes::from(request.to_string()),
        )
        .await
        {
            tracing::warn!(session = %record.id, method, error = %e, "cannot restore session state upstream");
        }
    }
    Ok(upstream_id)
}

/// POSTs one message upstream and reads the whole answer (these are small:
/// an InitializeResult, a 202, an empty result).
async fn send(app: &App, session: Option<String>, version: &str, body: Bytes) -> Result<(HeaderMap, Bytes)> {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(
        header::ACCEPT,
        HeaderValue::from_static("application/json, text/event-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(version) {
        headers.insert(MCP_PROTOCOL_VERSION.clone(), v);
    }
    let request = UpstreamRequest {
        method: Method::POST,
        headers,
        session,
        body,
        ..Default::default()
    };
    let response = app.upstream.send(request).await?;
    if !response.status().is_success() {
        return Err(Error::UpstreamProtocol(format!(
            "re-initialize answered {}",
            response.status()
        )));
    }
    let (parts, body) = response.into_parts();
    let limited = http_body_util::Limited::new(body, MAX_RECORDED_INITIALIZE * 16);
    let bytes = tokio::time::timeout(app.settings.upstream_timeout, limited.collect())
        .await
        .map_err(|_| Error::UpstreamTimeout(app.settings.upstream_timeout))?
        .map_err(|e| Error::UpstreamUnavailable(e.to_string()))?
        .to_bytes();
    Ok((parts.headers, bytes))
}

/// Whether an upstream answer says it no longer knows the session: 404, or
/// a 400 whose body says so (as some servers answer an unknown session).
pub fn lost_session(status: http::StatusCode, body: &Bytes) -> bool {
    status == http::StatusCode::NOT_FOUND
        || (status == http::StatusCode::BAD_REQUEST
            && String::from_utf8_lossy(body)
                .to_ascii_lowercase()
                .contains("session"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recorded_initialize_keeps_what_reinitializing_needs_only() {
        let padded = json!({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {"sampling": {}},
                "clientInfo": {"name": "c", "version": "1", "icons": [{"src": "x".repeat(1 << 20)}]},
                "padding": "y".repeat(1 << 20)
            }
        });
        let recorded = recorded_initialize(padded.to_string().as_bytes()).unwrap();
        assert_eq!(recorded.version, Some(ProtocolVersion::V2025_06_18));
        let kept: Value = serde_json::from_str(&recorded.text).unwrap();
        assert_eq!(kept["params"]["clientInfo"], json!({"name": "c", "version": "1"}));
        assert_eq!(kept["params"]["capabilities"], json!({"sampling": {}}));
        assert!(kept.to_string().len() < 512);
        let huge = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"capabilities": {"experimental": {"x": "z".repeat(100_000)}}}});
        assert!(matches!(
            recorded_initialize(huge.to_string().as_bytes()),
            Err(Error::InvalidRequest(_))
        ));
    }
}

//! What happens to each request: the MCP endpoint (any path) for POST, GET
//! and DELETE, plus two control endpoints for the load generator —
//! `POST /broadcast` (write one event to every held stream now; answers how
//! many) and `GET /stats` (`{"held": streams held, "requests": MCP requests
//! served}`).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::header::ACCEPT;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::value::RawValue;

use super::State;
use super::message::{Kind, Message};
use super::reply::{self, Reply};

/// Largest request body read.
const MAX_BODY: usize = 4 << 20;
/// The stateless revision's version header value.
const STATELESS: &str = "2026-07-28";
/// What `initialize` answers when the client names no version.
const DEFAULT_VERSION: &str = "2025-06-18";

/// Dispatches one request.
pub async fn handle(state: Arc<State>, request: Request<Incoming>) -> Result<Reply, Infallible> {
    Ok(match (request.method(), request.uri().path()) {
        (&Method::POST, "/broadcast") => reply::text(format!("{}\n", state.held.broadcast())),
        (&Method::GET, "/stats") => reply::text(format!(
            "{{\"held\":{},\"requests\":{}}}\n",
            state.held.count(),
            state.requests.load(Ordering::Relaxed)
        )),
        _ => mcp(&state, request).await,
    })
}

/// A request on the MCP endpoint.
async fn mcp(state: &State, request: Request<Incoming>) -> Reply {
    state.requests.fetch_add(1, Ordering::Relaxed);
    match *request.method() {
        Method::POST => post(state, request).await,
        Method::GET => get(state, request.headers()),
        Method::DELETE => reply::empty(StatusCode::OK),
        _ => reply::empty(StatusCode::METHOD_NOT_ALLOWED),
    }
}

/// A POST: one JSON-RPC message.
async fn post(state: &State, request: Request<Incoming>) -> Reply {
    let (parts, body) = request.into_parts();
    let bytes = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return reply::empty(StatusCode::BAD_REQUEST),
    };
    let message = match Message::parse(&bytes) {
        Ok(message) => message,
        Err(e) => {
            return reply::json(
                StatusCode::BAD_REQUEST,
                reply::error(None, -32700, &e.to_string()),
            );
        }
    };
    let stateless = parts
        .headers
        .get("mcp-protocol-version")
        .is_some_and(|v| v == STATELESS);
    if stateless && let Err(why) = routing_headers_match(&parts.headers, &message) {
        return reply::json(StatusCode::BAD_REQUEST, reply::error(message.id, -32001, &why));
    }
    let (Kind::Request, Some(id), Some(method)) = (message.kind(), message.id, message.method.as_deref())
    else {
        return reply::empty(StatusCode::ACCEPTED);
    };
    match method {
        "tools/call" => call(state, &message, id, stateless).await,
        "initialize" => {
            let version = message
                .params
                .as_ref()
                .and_then(|p| p.protocol_version.as_deref())
                .unwrap_or(DEFAULT_VERSION);
            let mut response = reply::json(StatusCode::OK, reply::initialize_result(id, version));
            if !stateless {
                response
                    .headers_mut()
                    .insert("mcp-session-id", state.sessions.mint());
            }
            response
        }
        "tools/list" => reply::json(StatusCode::OK, reply::tools(id)),
        "ping" => reply::json(StatusCode::OK, reply::empty_result(id)),
        _ => {
            let status = match stateless {
                true => StatusCode::NOT_FOUND,
                false => StatusCode::OK,
            };
            reply::json(status, reply::error(Some(id), -32601, "method not found"))
        }
    }
}

/// `tools/call`: `json` answers JSON; `sse` answers an event stream
/// (JSON for stateless callers); both after `delay_ms`, if given.
async fn call(state: &State, message: &Message<'_>, id: &RawValue, stateless: bool) -> Reply {
    if let Some(ms) = message.delay_ms() {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    match message.name() {
        Some("json") => reply::json(StatusCode::OK, reply::tool_result(id)),
        Some("sse") if !stateless => reply::sse(reply::sse_answer(
            id,
            state.config.sse_notifications,
            message.progress_token(),
        )),
        Some("sse") => reply::json(StatusCode::OK, reply::tool_result(id)),
        _ => reply::json(StatusCode::OK, reply::error(Some(id), -32602, "unknown tool")),
    }
}

/// 2026-07-28: `Mcp-Method` (and, for `tools/call`, `Mcp-Name`) must match the body.
fn routing_headers_match(headers: &HeaderMap, message: &Message<'_>) -> Result<(), String> {
    let Some(method) = message.method.as_deref() else {
        return Ok(());
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if header("mcp-method") != Some(method) {
        return Err(format!("HeaderMismatch: Mcp-Method is not {method:?}"));
    }
    if method == "tools/call" && header("mcp-name") != message.name() {
        return Err("HeaderMismatch: Mcp-Name does not match params.name".into());
    }
    Ok(())
}

/// A GET: a standalone stream for a session, held until the client leaves.
fn get(state: &State, headers: &HeaderMap) -> Reply {
    let wants_sse = headers
        .get_all(ACCEPT)
        .iter()
        .any(|v| v.as_bytes().windows(17).any(|w| w == b"text/event-stream"));
    if !wants_sse {
        return reply::empty(StatusCode::METHOD_NOT_ALLOWED);
    }
    if !headers.contains_key("mcp-session-id") {
        return reply::empty(StatusCode::BAD_REQUEST);
    }
    reply::held(state.held.open())
}

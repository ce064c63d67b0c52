//! A scriptable MCP upstream, in process, for the tests that must control
//! exactly when each event is sent (resumption, no-buffering, timeouts).
//!
//! - `initialize` -> JSON result, upstream session id `up-N`;
//! - notifications and responses -> 202;
//! - `tools/call` `echo` -> JSON result; `stream` -> an event stream of
//!   `count` progress notifications then the result, each event sent only
//!   after the test releases it through [`Scripted::release`]; `slow` -> never
//!   answers, not even with headers;
//! - GET -> 405; DELETE -> 200.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::sync::{Notify, Semaphore};

type Body = BoxBody<Bytes, Infallible>;

/// What the upstream saw of one request.
#[derive(Clone, Debug)]
pub struct Seen {
    /// HTTP method.
    pub method: String,
    /// `Mcp-Session-Id` it carried.
    pub session: Option<String>,
    /// JSON-RPC method, if any.
    pub rpc_method: Option<String>,
}

/// The running upstream and its controls.
#[derive(Debug)]
pub struct Scripted {
    /// `http://127.0.0.1:PORT/mcp`.
    pub url: String,
    gate: Arc<Semaphore>,
    sent: Arc<AtomicUsize>,
    sent_changed: Arc<Notify>,
    /// Requests received, in order.
    pub seen: Arc<Mutex<Vec<Seen>>>,
    state: Arc<State>,
}

impl Scripted {
    /// Starts it on a free port.
    pub async fn start() -> Scripted {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/mcp", listener.local_addr().unwrap());
        let state = Arc::new(State {
            gate: Arc::new(Semaphore::new(0)),
            sent: Arc::new(AtomicUsize::new(0)),
            sent_changed: Arc::new(Notify::new()),
            seen: Arc::default(),
            sessions: AtomicUsize::new(0),
            forgotten_below: AtomicUsize::new(0),
            forgotten_status: std::sync::atomic::AtomicU16::new(404),
        });
        let scripted = Scripted {
            url,
            gate: state.gate.clone(),
            sent: state.sent.clone(),
            sent_changed: state.sent_changed.clone(),
            seen: state.seen.clone(),
            state: state.clone(),
        };
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(state.clone(), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        scripted
    }

    /// Lets `n` more stream events go out.
    pub fn release(&self, n: usize) {
        self.gate.add_permits(n);
    }

    /// Waits until `n` stream events in total have been written.
    pub async fn wait_sent(&self, n: usize) {
        crate::within(
            "upstream to send events",
            std::time::Duration::from_secs(30),
            async {
                loop {
                    let notified = self.sent_changed.notified();
                    if self.sent.load(Ordering::SeqCst) >= n {
                        return;
                    }
                    notified.await;
                }
            },
        )
        .await;
    }

    /// Forgets every session so far, as a restarted server would; requests
    /// naming one get `status` (404, or 400 as server-everything answers).
    pub fn forget_sessions(&self, status: u16) {
        self.state.forgotten_status.store(status, Ordering::SeqCst);
        self.state
            .forgotten_below
            .store(self.state.sessions.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// The JSON-RPC methods the upstream received.
    pub fn rpc_methods(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter_map(|s| s.rpc_method.clone())
            .collect()
    }
}

#[derive(Debug)]
struct State {
    gate: Arc<Semaphore>,
    sent: Arc<AtomicUsize>,
    sent_changed: Arc<Notify>,
    seen: Arc<Mutex<Vec<Seen>>>,
    sessions: AtomicUsize,
    /// Sessions numbered below this are forgotten (a restart).
    forgotten_below: AtomicUsize,
    /// What a forgotten session gets: 404, or 400 as some servers answer.
    forgotten_status: std::sync::atomic::AtomicU16,
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let method = req.method().to_string();
    let session = req
        .headers()
        .get("mcp-session-id")
        .map(|v| v.to_str().unwrap_or("").to_owned());
    let bytes = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let message: Option<Value> = serde_json::from_slice(&bytes).ok();
    let rpc_method = message
        .as_ref()
        .and_then(|m| m["method"].as_str().map(str::to_owned));
    state.seen.lock().unwrap().push(Seen {
        method: method.clone(),
        session: session.clone(),
        rpc_method: rpc_method.clone(),
    });
    let forgotten = session
        .as_deref()
        .and_then(|s| s.strip_prefix("up-")?.parse::<usize>().ok())
        .is_some_and(|n| n < state.forgotten_below.load(Ordering::SeqCst));
    let response = match method.as_str() {
        _ if forgotten => {
            let code = state.forgotten_status.load(Ordering::SeqCst);
            let body = json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32000, "message": "Bad Request: No valid session ID provided"}});
            let mut r = json_response(&body);
            *r.status_mut() = StatusCode::from_u16(code).unwrap();
            r
        }
        "GET" => status(StatusCode::METHOD_NOT_ALLOWED),
        "DELETE" => status(StatusCode::OK),
        _ if message.as_ref().and_then(|m| m.pointer("/params/name")) == Some(&json!("slow")) => {
            // Never answer, not even with headers.
            std::future::pending().await
        }
        _ => {
            let message = message.unwrap_or(Value::Null);
            post(&state, &message, rpc_method.as_deref())
        }
    };
    Ok(response)
}

fn post(state: &Arc<State>, message: &Value, method: Option<&str>) -> Response<Body> {
    let id = message["id"].clone();
    if id.is_null() {
        return status(StatusCode::ACCEPTED);
    }
    match (method, message.pointer("/params/name").and_then(Value::as_str)) {
        (Some("initialize"), _) => {
            let n = state.sessions.fetch_add(1, Ordering::SeqCst);
            let version = message
                .pointer("/params/protocolVersion")
                .cloned()
                .unwrap_or(json!("2025-06-18"));
            let result = json!({"protocolVersion": version, "capabilities": {"tools": {}}, "serverInfo": {"name": "scripted", "version": "0"}});
            let mut r = json_response(&json!({"jsonrpc": "2.0", "id": id, "result": result}));
            r.headers_mut()
                .insert("mcp-session-id", format!("up-{n}").parse().unwrap());
            r
        }
        (Some("tools/call"), Some("stream")) => {
            let count = message
                .pointer("/params/arguments/count")
                .and_then(Value::as_u64)
                .unwrap_or(3);
            stream_response(state.clone(), id, count)
        }
        _ => json_response(
            &json!({"jsonrpc": "2.0", "id": id, "result": {"content": [{"type": "text", "text": "ok"}]}}),
        ),
    }
}

fn stream_response(state: Arc<State>, id: Value, count: u64) -> Response<Body> {
    let (tx, body) = channel();
    tokio::spawn(async move {
        for i in 1..=count + 1 {
            let Ok(permit) = state.gate.acquire().await else {
                return;
            };
            permit.forget();
            let message = if i <= count {
                json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": "t", "progress": i, "total": count}})
            } else {
                json!({"jsonrpc": "2.0", "id": id, "result": {"content": [{"type": "text", "text": format!("done after {count}")}]}})
            };
            let frame = format!("id: up-{i}\nevent: message\ndata: {message}\n\n");
            if tx.send(Bytes::from(frame)).await.is_err() {
                return;
            }
            state.sent.fetch_add(1, Ordering::SeqCst);
            state.sent_changed.notify_waiters();
        }
    });
    let mut r = Response::new(body);
    r.headers_mut()
        .insert("content-type", "text/event-stream".parse().unwrap());
    r
}

fn channel() -> (tokio::sync::mpsc::Sender<Bytes>, Body) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b)))));
    (tx, StreamBody::new(stream).boxed())
}

fn json_response(value: &Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(value.to_string())).boxed());
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

fn status(code: StatusCode) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::new()).boxed());
    *r.status_mut() = code;
    r
}

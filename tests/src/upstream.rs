//! A scriptable MCP upstream, for the tests that must control exactly when
//! each event is sent (resumption, no-buffering, timeouts) or what the
//! server does (slow calls, server-initiated messages). It runs in process
//! ([`Scripted::start`]) or as its own process (the `scripted-upstream`
//! binary), so a test can kill, restart or stop it.
//!
//! - `initialize` -> JSON result, upstream session id `up-N` (`<tag>-N` with
//!   a tag, so restarted processes never reuse an id);
//! - notifications and responses -> 202 (a response to a sampling request
//!   the server sent goes to the call waiting for it);
//! - `tools/call`:
//!   - `echo` (and any unknown name) -> JSON result `ok`;
//!   - `stream` -> an event stream of `count` progress notifications then
//!     the result; each event waits for [`Scripted::release`], or for
//!     `delay_ms` when given;
//!   - `sleep` -> a JSON result after `ms` milliseconds;
//!   - `slow` -> never answers, not even with headers;
//!   - `notify` -> sends `notifications/message` with `text` on the
//!     session's standalone streams, then a JSON result;
//!   - `sample` -> an event stream carrying a `sampling/createMessage`
//!     request; once the client answers it, the result echoes the sample;
//!   - `big` -> an event stream whose one event, the result, carries a text
//!     of `bytes` bytes;
//!   - `reject` -> HTTP 400 with a JSON-RPC error;
//!   - `bigjson` -> a JSON result carrying a text of `bytes` bytes;
//! - `tools/list` -> two pages (`echo`, `stream`, `admin_reset`, then with
//!   any cursor `sample`, `notify`, `big`);
//! - GET -> 405, or the session's standalone stream with
//!   [`Options::standalone`] (503 while [`Scripted::fail_gets`] says so);
//!   DELETE -> 200.
//!
//! A batch gets each of its messages' answers (JSON ones in an array).
//!
//! Every message is recorded ([`Scripted::seen`]); with [`Options::log`],
//! also appended to a file as JSON lines, which outlives the process.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};

type Body = BoxBody<Bytes, Infallible>;

/// What the upstream saw of one request.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Seen {
    /// HTTP method.
    pub method: String,
    /// `Mcp-Session-Id` it carried.
    pub session: Option<String>,
    /// JSON-RPC method, if any.
    pub rpc_method: Option<String>,
    /// JSON-RPC id, if any.
    #[serde(default)]
    pub id: Option<Value>,
    /// The tool a `tools/call` named.
    #[serde(default)]
    pub tool: Option<String>,
    /// Refused without running: its session is unknown here.
    #[serde(default)]
    pub rejected: bool,
    /// Its `Authorization` header.
    #[serde(default)]
    pub authorization: Option<String>,
    /// Its `X-Mcp-Subject` header (a claim header in the auth tests).
    #[serde(default)]
    pub subject: Option<String>,
}

/// How to run it.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Port to listen on (0: any).
    pub port: u16,
    /// Offer a standalone (GET) stream.
    pub standalone: bool,
    /// Append every request seen to this file as JSON lines.
    pub log: Option<PathBuf>,
    /// Prefix of the upstream session ids it mints (`up` by default).
    pub tag: Option<String>,
    /// Answer 404 to a session it did not create, as a restarted server
    /// does.
    pub strict_sessions: bool,
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
    /// Starts it on a free port, without a standalone stream.
    pub async fn start() -> Scripted {
        Self::start_with(Options::default()).await
    }

    /// Starts it as `options` say.
    pub async fn start_with(options: Options) -> Scripted {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", options.port))
            .await
            .unwrap();
        let url = format!("http://{}/mcp", listener.local_addr().unwrap());
        let log = options.log.as_ref().map(|path| {
            Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .unwrap(),
            )
        });
        let state = Arc::new(State {
            gate: Arc::new(Semaphore::new(0)),
            sent: Arc::new(AtomicUsize::new(0)),
            sent_changed: Arc::new(Notify::new()),
            seen: Arc::default(),
            log,
            tag: options.tag.unwrap_or_else(|| "up".into()),
            standalone: options.standalone,
            sessions: AtomicUsize::new(0),
            forgotten_below: AtomicUsize::new(0),
            forgotten_status: std::sync::atomic::AtomicU16::new(404),
            streams: Mutex::default(),
            samples: Mutex::default(),
            failing_gets: AtomicUsize::new(0),
            strict: options.strict_sessions,
            known: Mutex::default(),
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

    /// Stream events written so far.
    pub fn sent(&self) -> usize {
        self.sent.load(Ordering::SeqCst)
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

    /// How many `tools/call` of `tool` it received.
    pub fn calls(&self, tool: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.tool.as_deref() == Some(tool))
            .count()
    }

    /// Makes the next `n` GETs fail with 503, as a briefly unwell server would.
    pub fn fail_gets(&self, n: usize) {
        self.state.failing_gets.store(n, Ordering::SeqCst);
    }

    /// Waits until `n` standalone (GET) streams are open.
    pub async fn wait_standalone_streams(&self, n: usize) {
        crate::eventually(
            "standalone streams to open",
            std::time::Duration::from_secs(10),
            || async { (self.standalone_streams() == n).then_some(()) },
        )
        .await;
    }

    /// Standalone (GET) streams open now.
    pub fn standalone_streams(&self) -> usize {
        self.state
            .streams
            .lock()
            .unwrap()
            .values()
            .map(|senders| senders.iter().filter(|s| !s.is_closed()).count())
            .sum()
    }
}

#[derive(Debug)]
struct State {
    gate: Arc<Semaphore>,
    sent: Arc<AtomicUsize>,
    sent_changed: Arc<Notify>,
    seen: Arc<Mutex<Vec<Seen>>>,
    log: Option<Mutex<std::fs::File>>,
    tag: String,
    standalone: bool,
    sessions: AtomicUsize,
    /// Sessions numbered below this are forgotten (a restart).
    forgotten_below: AtomicUsize,
    /// What a forgotten session gets: 404, or 400 as some servers answer.
    forgotten_status: std::sync::atomic::AtomicU16,
    /// Open standalone streams by upstream session.
    streams: Mutex<HashMap<String, Vec<mpsc::Sender<Bytes>>>>,
    /// Sampling requests waiting for the client's answer, by request id.
    samples: Mutex<HashMap<String, oneshot::Sender<Value>>>,
    /// GETs still to fail.
    failing_gets: AtomicUsize,
    /// Refuse sessions it did not create.
    strict: bool,
    /// The sessions it created.
    known: Mutex<std::collections::HashSet<String>>,
}

impl State {
    fn record(&self, seen: Seen) {
        if let Some(log) = &self.log {
            let mut file = log.lock().unwrap();
            let _ = writeln!(file, "{}", serde_json::to_string(&seen).unwrap());
            let _ = file.flush();
        }
        self.seen.lock().unwrap().push(seen);
    }

    fn sent_one(&self) {
        self.sent.fetch_add(1, Ordering::SeqCst);
        self.sent_changed.notify_waiters();
    }
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let method = req.method().to_string();
    let header = |name: &str| {
        req.headers()
            .get(name)
            .map(|v| v.to_str().unwrap_or("").to_owned())
    };
    let session = header("mcp-session-id");
    let authorization = header("authorization");
    let subject = header("x-mcp-subject");
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
    let tool = match rpc_method.as_deref() {
        Some("tools/call") => message
            .as_ref()
            .and_then(|m| m.pointer("/params/name")?.as_str().map(str::to_owned)),
        _ => None,
    };
    let forgotten = match &session {
        Some(s) if state.strict => !state.known.lock().unwrap().contains(s),
        Some(s) => s
            .rsplit('-')
            .next()
            .and_then(|n| n.parse::<usize>().ok())
            .is_some_and(|n| n < state.forgotten_below.load(Ordering::SeqCst)),
        None => false,
    };
    state.record(Seen {
        method: method.clone(),
        session: session.clone(),
        rpc_method: rpc_method.clone(),
        id: message.as_ref().and_then(|m| m.get("id").cloned()),
        tool: tool.clone(),
        rejected: forgotten,
        authorization,
        subject,
    });
    let response = match method.as_str() {
        _ if forgotten => {
            let code = state.forgotten_status.load(Ordering::SeqCst);
            let body = json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32000, "message": "Bad Request: No valid session ID provided"}});
            let mut r = json_response(&body);
            *r.status_mut() = StatusCode::from_u16(code).unwrap();
            r
        }
        "GET"
            if state
                .failing_gets
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok() =>
        {
            status(StatusCode::SERVICE_UNAVAILABLE)
        }
        "GET" if state.standalone => match session {
            Some(session) => standalone(&state, session),
            None => status(StatusCode::BAD_REQUEST),
        },
        "GET" => status(StatusCode::METHOD_NOT_ALLOWED),
        "DELETE" => status(StatusCode::OK),
        _ if tool.as_deref() == Some("slow") => {
            // Never answer, not even with headers.
            std::future::pending().await
        }
        _ => match message.unwrap_or(Value::Null) {
            // A batch (2025-03-26): each message as if alone; a lone message
            // keeps its kind of answer, several JSON answers make an array.
            Value::Array(batch) => {
                let mut answers = Vec::new();
                let mut last = None;
                for m in &batch {
                    let method = m["method"].as_str();
                    let tool = m.pointer("/params/name").and_then(Value::as_str);
                    let response = post(&state, m, method, tool, session.clone()).await;
                    if batch.len() == 1 {
                        last = Some(response);
                        break;
                    }
                    if response.status() == StatusCode::OK {
                        let body = response.into_body().collect().await.unwrap().to_bytes();
                        answers.push(serde_json::from_slice::<Value>(&body).unwrap());
                    }
                }
                match last {
                    Some(response) => response,
                    None if answers.is_empty() => status(StatusCode::ACCEPTED),
                    None => json_response(&Value::Array(answers)),
                }
            }
            message => post(&state, &message, rpc_method.as_deref(), tool.as_deref(), session).await,
        },
    };
    Ok(response)
}

async fn post(
    state: &Arc<State>,
    message: &Value,
    method: Option<&str>,
    tool: Option<&str>,
    session: Option<String>,
) -> Response<Body> {
    let id = message["id"].clone();
    if method.is_none() && !id.is_null() {
        // The client answers a request the server sent (sampling).
        let waiting = state
            .samples
            .lock()
            .unwrap()
            .remove(&id.as_str().unwrap_or_default().to_owned());
        if let Some(waiting) = waiting {
            let _ = waiting.send(message.clone());
        }
        return status(StatusCode::ACCEPTED);
    }
    if id.is_null() {
        return status(StatusCode::ACCEPTED);
    }
    let arg = |name: &str| message.pointer(&format!("/params/arguments/{name}")).cloned();
    let text = |text: String| json!({"jsonrpc": "2.0", "id": id, "result": {"content": [{"type": "text", "text": text}]}});
    match (method, tool) {
        (Some("initialize"), _) => {
            let n = state.sessions.fetch_add(1, Ordering::SeqCst);
            let version = message
                .pointer("/params/protocolVersion")
                .cloned()
                .unwrap_or(json!("2025-06-18"));
            let result = json!({"protocolVersion": version, "capabilities": {"tools": {}, "logging": {}}, "serverInfo": {"name": "scripted", "version": "0"}});
            let mut r = json_response(&json!({"jsonrpc": "2.0", "id": id, "result": result}));
            let session = format!("{}-{n}", state.tag);
            state.known.lock().unwrap().insert(session.clone());
            r.headers_mut().insert("mcp-session-id", session.parse().unwrap());
            r
        }
        (Some("tools/call"), Some("stream")) => {
            let count = arg("count").and_then(|v| v.as_u64()).unwrap_or(3);
            let delay = arg("delay_ms")
                .and_then(|v| v.as_u64())
                .map(Duration::from_millis);
            stream_response(state.clone(), id, count, delay)
        }
        (Some("tools/call"), Some("sleep")) => {
            let ms = arg("ms").and_then(|v| v.as_u64()).unwrap_or(100);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            json_response(&text(format!("slept {ms} ms")))
        }
        (Some("tools/call"), Some("notify")) => {
            let words = arg("text")
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let note = json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": words}});
            let frame = Bytes::from(format!("event: message\ndata: {note}\n\n"));
            let senders = session
                .and_then(|s| state.streams.lock().unwrap().get(&s).cloned())
                .unwrap_or_default();
            let mut delivered = 0;
            for sender in senders {
                if sender.send(frame.clone()).await.is_ok() {
                    delivered += 1;
                }
            }
            json_response(&text(format!("notified {delivered}")))
        }
        (Some("tools/call"), Some("sample")) => sample_response(state.clone(), id),
        (Some("tools/call"), Some("bigjson")) => {
            let bytes = arg("bytes").and_then(|v| v.as_u64()).unwrap_or(1024);
            json_response(&text("x".repeat(usize::try_from(bytes).unwrap())))
        }
        (Some("tools/call"), Some("reject")) => {
            let mut r = json_response(
                &json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32602, "message": "rejected"}}),
            );
            *r.status_mut() = StatusCode::BAD_REQUEST;
            r
        }
        (Some("tools/list"), _) => {
            // Two pages, so filtering can be checked to keep the cursor.
            let page_two = message.pointer("/params/cursor").is_some();
            let names: &[&str] = if page_two {
                &["sample", "notify", "big"]
            } else {
                &["echo", "stream", "admin_reset"]
            };
            let tools: Vec<Value> = names
                .iter()
                .map(|n| json!({"name": n, "description": format!("the {n} tool"), "inputSchema": {"type": "object"}}))
                .collect();
            let mut result = json!({"tools": tools});
            if !page_two {
                result["nextCursor"] = json!("page-2");
            }
            json_response(&json!({"jsonrpc": "2.0", "id": id, "result": result}))
        }
        (Some("tools/call"), Some("big")) => {
            let bytes = arg("bytes").and_then(|v| v.as_u64()).unwrap_or(1024);
            let big = text("x".repeat(usize::try_from(bytes).unwrap()));
            let (tx, body) = channel();
            tokio::spawn(async move {
                let _ = tx
                    .send(Bytes::from(format!("event: message\ndata: {big}\n\n")))
                    .await;
            });
            event_stream(body)
        }
        _ => json_response(&text("ok".into())),
    }
}

fn standalone(state: &Arc<State>, session: String) -> Response<Body> {
    let (tx, body) = channel();
    state.streams.lock().unwrap().entry(session).or_default().push(tx);
    event_stream(body)
}

fn stream_response(state: Arc<State>, id: Value, count: u64, delay: Option<Duration>) -> Response<Body> {
    let (tx, body) = channel();
    tokio::spawn(async move {
        for i in 1..=count + 1 {
            match delay {
                Some(delay) => tokio::time::sleep(delay).await,
                None => {
                    let Ok(permit) = state.gate.acquire().await else {
                        return;
                    };
                    permit.forget();
                }
            }
            let message = if i <= count {
                json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": "t", "progress": i, "total": count}})
            } else {
                json!({"jsonrpc": "2.0", "id": id, "result": {"content": [{"type": "text", "text": format!("done after {count}")}]}})
            };
            let frame = format!("id: up-{i}\nevent: message\ndata: {message}\n\n");
            if tx.send(Bytes::from(frame)).await.is_err() {
                return;
            }
            state.sent_one();
        }
    });
    event_stream(body)
}

fn sample_response(state: Arc<State>, id: Value) -> Response<Body> {
    let (tx, body) = channel();
    tokio::spawn(async move {
        let request_id = format!("sample-{}", id.to_string().trim_matches('"'));
        let (answer_tx, answer) = oneshot::channel();
        state
            .samples
            .lock()
            .unwrap()
            .insert(request_id.clone(), answer_tx);
        let ask = json!({"jsonrpc": "2.0", "id": request_id, "method": "sampling/createMessage",
            "params": {"messages": [{"role": "user", "content": {"type": "text", "text": "say something"}}], "maxTokens": 10}});
        if tx
            .send(Bytes::from(format!("event: message\ndata: {ask}\n\n")))
            .await
            .is_err()
        {
            return;
        }
        let Ok(answer) = answer.await else { return };
        let said = answer
            .pointer("/result/content/text")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned();
        let result = json!({"jsonrpc": "2.0", "id": id, "result": {"content": [{"type": "text", "text": format!("sampled: {said}")}]}});
        let _ = tx
            .send(Bytes::from(format!("event: message\ndata: {result}\n\n")))
            .await;
    });
    event_stream(body)
}

fn event_stream(body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    r.headers_mut()
        .insert("content-type", "text/event-stream".parse().unwrap());
    r
}

fn channel() -> (mpsc::Sender<Bytes>, Body) {
    let (tx, mut rx) = mpsc::channel::<Bytes>(4);
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

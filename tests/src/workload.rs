//! Client behaviour the multi-process tests share: a streamed call read to
//! its answer, resuming with `Last-Event-ID` whenever a connection closes
//! first, as SDK clients do (and waiting out a 503's `Retry-After`).

use std::time::Duration;

use serde_json::Value;

use crate::client::{Events, Mcp};

/// Longest a stream may stay without an event before the call counts as
/// hung (streams in these tests send something at least every few seconds).
const EVENT_WAIT: Duration = Duration::from_secs(30);

/// How long a stream is read on after its answer, for anything that should
/// not be there (a second answer).
const AFTER_ANSWER: Duration = Duration::from_secs(2);

/// What a client read of one streamed call.
#[derive(Debug, Default)]
pub struct Streamed {
    /// The call's JSON-RPC id.
    pub request_id: Value,
    /// The HTTP status the call was answered with.
    pub status: u16,
    /// Every message, with the event id it came with.
    pub events: Vec<(Option<String>, Value)>,
    /// How many times the client had to resume.
    pub resumes: usize,
    /// Why the call could not be read to its response, if it could not.
    pub failure: Option<String>,
    /// The failure is an explicit miss: a resumption answered 410 (the
    /// events after the client's id are gone), which Shadowcat counts.
    pub missed: bool,
}

impl Streamed {
    /// The JSON-RPC response, if the call was read to it: the first message
    /// that answers the request (or, for an HTTP error, its error body).
    pub fn answer(&self) -> Option<&Value> {
        if self.failure.is_some() {
            return None;
        }
        self.events
            .iter()
            .map(|(_, m)| m)
            .find(|m| self.answers(m))
            .or_else(|| self.events.last().map(|(_, m)| m))
    }

    /// How many messages answer the request (exactly one, when all is well).
    pub fn answer_count(&self) -> usize {
        self.events.iter().filter(|(_, m)| self.answers(m)).count()
    }

    fn answers(&self, message: &Value) -> bool {
        message.get("method").is_none() && message.get("id") == Some(&self.request_id)
    }

    /// The `progress` values of the progress notifications, in order.
    pub fn progress(&self) -> Vec<u64> {
        self.events
            .iter()
            .filter(|(_, m)| m.get("method").is_some())
            .filter_map(|(_, m)| m.pointer("/params/progress")?.as_u64())
            .collect()
    }
}

/// Calls tool `tool` with `arguments` and reads its events up to the
/// JSON-RPC response (result or error), resuming up to `resumes` times.
pub async fn streamed_call(mcp: &Mcp, tool: &str, arguments: Value, resumes: usize) -> Streamed {
    let body = mcp.request_body(
        "tools/call",
        serde_json::json!({"name": tool, "arguments": arguments}),
    );
    let mut read = Streamed {
        request_id: body["id"].clone(),
        ..Streamed::default()
    };
    let response = match mcp.try_post(&body).await {
        Ok(response) => response,
        Err(e) => {
            read.failure = Some(format!("no answer to the call: {e}"));
            return read;
        }
    };
    read.status = response.status().as_u16();
    if response.status() != 200 {
        // An error answer: a JSON-RPC error for the request, or a failure.
        let status = response.status();
        let text = crate::client::text_body(response).await;
        match serde_json::from_str::<Value>(&text) {
            Ok(answer) if answer.get("error").is_some() => read.events.push((None, answer)),
            _ => {
                let code = status.as_u16();
                read.failure = Some(format!("call answered {code} without a JSON-RPC error: {text}"));
            }
        }
        return read;
    }
    if !is_event_stream(&response) {
        let answer = crate::client::json_body(response).await;
        read.events.push((None, answer));
        return read;
    }
    let mut events = Events::new(response);
    let mut last_id = None;
    loop {
        loop {
            let event = match events.next_within(EVENT_WAIT).await {
                Ok(Some(event)) => event,
                Ok(None) => break,
                Err(hung) => {
                    read.failure = Some(format!("hung: {hung}"));
                    return read;
                }
            };
            // A priming event (2025-11-25) has an id and no message: it is
            // where a client comes back to if nothing else arrived.
            last_id = event.id.clone().or(last_id);
            let Some(data) = event.data.filter(|d| !d.is_empty()) else {
                continue;
            };
            let message: Value = serde_json::from_str(&data).unwrap();
            if message.get("method").and_then(Value::as_str) == Some("sampling/createMessage") {
                // A sampling-capable client answers the server's request.
                let answer = serde_json::json!({"jsonrpc": "2.0", "id": message["id"], "result": {
                    "role": "assistant", "content": {"type": "text", "text": "hi"}, "model": "test"}});
                // Whether the answer got through shows on the stream: the
                // call's result, or (its owner lost) an error for it.
                let _ = answer_server_request(mcp, &answer).await;
            }
            let done = read.answers(&message);
            read.events.push((event.id, message));
            if done {
                // Read on for a moment: a second answer would show here.
                while let Ok(Some(event)) = events.next_within(AFTER_ANSWER).await {
                    if let Some(data) = event.data.filter(|d| !d.is_empty()) {
                        read.events.push((event.id, serde_json::from_str(&data).unwrap()));
                    }
                }
                return read;
            }
        }
        let Some(id) = last_id.clone() else {
            read.failure = Some("stream closed before any event".into());
            return read;
        };
        loop {
            if read.resumes == resumes {
                read.failure = Some(format!("stream closed {resumes} times before its answer"));
                return read;
            }
            read.resumes += 1;
            let resumed = match mcp.try_get(Some(&id)).await {
                Ok(resumed) => resumed,
                Err(_) => {
                    // Nothing listens for a moment (a restart): try again.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            if resumed.status() == 200 {
                events = Events::new(resumed);
                break;
            }
            if resumed.status() != 503 {
                let status = resumed.status();
                read.missed = status == http::StatusCode::GONE;
                let body = crate::client::json_body(resumed).await;
                read.failure = Some(format!(
                    "resume after {id} answered {status}: {}",
                    body["error"]["message"]
                ));
                return read;
            }
            let wait = resumed
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .unwrap_or(1u64)
                .min(2);
            tokio::time::sleep(Duration::from_secs(wait)).await;
        }
    }
}

/// POSTs a client's answer to a server request until it is accepted (202),
/// as a client must: while the store is away a replica that does not own the
/// session answers 503 with `Retry-After`, and nothing listens for a moment
/// while a replica restarts. Any other answer is final (a 502 from a replica
/// that died with it: then the call itself is answered with an error).
async fn answer_server_request(mcp: &Mcp, answer: &Value) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let status = match mcp.try_post(answer).await {
            Ok(response) => response.status().as_u16(),
            Err(e) if tokio::time::Instant::now() > deadline => return Err(e),
            Err(_) => 0,
        };
        match status {
            202 => return Ok(()),
            0 | 503 if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            other => return Err(format!("answered {other}")),
        }
    }
}

fn is_event_stream(response: &http::Response<hyper::body::Incoming>) -> bool {
    response
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
}

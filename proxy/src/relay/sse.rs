//! The pump: reads an upstream event stream into an event log.
//!
//! Each upstream event gets the next seq of its stream, is appended to the
//! store, and only then becomes visible to readers (persist, then deliver).
//! The pump runs as its own task, so a client that disconnects does not stop
//! it: a request stream drains until its JSON-RPC responses have arrived (or
//! the drain limit passes once the client is gone), so nothing is lost.

use std::sync::Arc;

use http::Method;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::mcp::ProtocolVersion;
use crate::mcp::jsonrpc::{self, code};
use crate::sse::Parser;
use crate::store::{StoredEvent, StreamKey};
use crate::upstream::UpstreamRequest;

/// How many times a request stream the upstream closed early is resumed from
/// the upstream (with its `Last-Event-ID`) before the pump gives up.
const UPSTREAM_RESUMES: usize = 3;

/// Tries to append one batch before a pump gives up (about 10 s of backoff).
const APPEND_ATTEMPTS: usize = 14;

/// One stream being pumped.
#[derive(Debug)]
pub struct Pump {
    /// The app.
    pub app: Arc<App>,
    /// The log to append to.
    pub stream: StreamKey,
    /// The upstream session id, to resume an upstream stream.
    pub upstream_session: Option<String>,
    /// The client headers to resume the upstream stream with.
    pub headers: http::HeaderMap,
    /// Request ids still awaiting a response. Empty for a standalone stream.
    pub pending: Vec<Value>,
    /// Set for the initialize stream: the session whose negotiated version
    /// the InitializeResult tells.
    pub initialize_of: Option<String>,
    /// Next seq to assign.
    pub next_seq: u64,
}

/// How a body ended.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyEnd {
    /// Every awaited response arrived.
    Answered,
    /// The upstream ended the body.
    Closed,
    /// The stop token fired or the drain limit passed.
    Stopped,
}

impl Pump {
    /// Pumps a request stream to completion, then writes its end marker.
    /// `client_gone` fires when the client's connection closes.
    pub async fn run_request(mut self, body: Incoming, client_gone: CancellationToken) {
        let mut deadline = None;
        let mut last_upstream_id = None;
        let mut end = self
            .pump_body(body, &client_gone, &mut deadline, &mut last_upstream_id)
            .await;
        let mut resumes = 0;
        while end == BodyEnd::Closed && resumes < UPSTREAM_RESUMES {
            // The upstream closed the connection before answering. Where it
            // gave event ids (2025-11-25 SSE polling), pick the stream up again.
            let Some(id) = last_upstream_id.clone() else { break };
            resumes += 1;
            match self.resume_upstream(id).await {
                Some(body) => {
                    end = self
                        .pump_body(body, &client_gone, &mut deadline, &mut last_upstream_id)
                        .await
                }
                None => break,
            }
        }
        if end != BodyEnd::Answered && !self.pending.is_empty() {
            let why = match end {
                BodyEnd::Stopped => "Shadowcat stopped waiting for the upstream's response",
                _ => "the upstream closed the stream before responding",
            };
            self.fail_pending(why).await;
        }
        if let Err(e) = self.app.store.end_stream(&self.stream).await {
            tracing::warn!(stream = %self.stream, error = %e, "cannot mark stream ended");
        }
    }

    /// Pumps one upstream body into the log until it ends or `stop` fires.
    /// Used as is for standalone streams.
    pub async fn pump_body(
        &mut self,
        mut body: Incoming,
        stop: &CancellationToken,
        deadline: &mut Option<Instant>,
        last_upstream_id: &mut Option<String>,
    ) -> BodyEnd {
        let mut parser = Parser::new();
        let standalone = self.pending.is_empty();
        loop {
            let frame = tokio::select! {
                frame = body.frame() => frame,
                () = stop.cancelled(), if deadline.is_none() => {
                    if standalone {
                        return BodyEnd::Stopped;
                    }
                    *deadline = Some(Instant::now() + self.app.settings.sse.drain_limit);
                    continue;
                }
                () = sleep_until(*deadline), if deadline.is_some() => return BodyEnd::Stopped,
            };
            let data = match frame {
                None => return BodyEnd::Closed,
                Some(Err(e)) => {
                    tracing::debug!(stream = %self.stream, error = %e, "upstream stream broke");
                    return BodyEnd::Closed;
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => data,
                    Err(_) => continue,
                },
            };
            let mut batch = Vec::new();
            for event in parser.feed(data) {
                if event.id.is_some() {
                    last_upstream_id.clone_from(&event.id);
                }
                let Some(data) = event.data.filter(|d| !d.is_empty()) else {
                    continue;
                };
                self.observe(&data).await;
                batch.push(StoredEvent {
                    seq: self.next_seq,
                    event: event.event,
                    data,
                });
                self.next_seq += 1;
            }
            if !batch.is_empty() {
                if !self.append_patiently(&batch).await {
                    return BodyEnd::Stopped;
                }
                self.app.metrics.events_pumped.inc_by(batch.len() as u64);
            }
            if !standalone && self.pending.is_empty() {
                return BodyEnd::Answered;
            }
        }
    }

    /// Appends, retrying through a short store outage rather than dropping
    /// events; `false` when the store stays away.
    async fn append_patiently(&self, batch: &[StoredEvent]) -> bool {
        let mut delay = std::time::Duration::from_millis(50);
        for attempt in 0..APPEND_ATTEMPTS {
            match self.app.store.append(&self.stream, batch).await {
                Ok(()) => return true,
                Err(e) if attempt + 1 == APPEND_ATTEMPTS => {
                    tracing::error!(stream = %self.stream, error = %e, "cannot append events; stream stops");
                }
                Err(e) => tracing::warn!(stream = %self.stream, error = %e, "append failed; retrying"),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(std::time::Duration::from_secs(1));
        }
        false
    }

    /// Notes responses to awaited requests, and the negotiated version of an
    /// initialize answered on this stream.
    async fn observe(&mut self, data: &str) {
        if self.pending.is_empty() {
            return;
        }
        for id in jsonrpc::response_ids(data) {
            self.pending.retain(|p| *p != id);
            if let Some(session) = self.initialize_of.take() {
                let version = serde_json::from_str::<Value>(data).ok().and_then(|v| {
                    v.pointer("/result/protocolVersion")?
                        .as_str()
                        .and_then(ProtocolVersion::parse)
                });
                if let Some(version) = version
                    && let Err(e) = self.app.sessions.set_version(&session, version).await
                {
                    tracing::warn!(%session, error = %e, "cannot record negotiated version");
                }
            }
        }
    }

    async fn resume_upstream(&self, last_id: String) -> Option<Incoming> {
        let request = UpstreamRequest {
            method: Method::GET,
            headers: self.headers.clone(),
            session: self.upstream_session.clone(),
            last_event_id: Some(last_id),
            body: Default::default(),
        };
        match self.app.upstream.send(request).await {
            Ok(response) if response.status().is_success() && super::is_event_stream(response.headers()) => {
                Some(response.into_body())
            }
            Ok(response) => {
                tracing::debug!(stream = %self.stream, status = %response.status(), "upstream refused resumption");
                None
            }
            Err(e) => {
                tracing::debug!(stream = %self.stream, error = %e, "cannot resume upstream stream");
                None
            }
        }
    }

    /// Answers every still-pending request with an error event, so no client
    /// waits forever for a response that will not come.
    async fn fail_pending(&mut self, why: &str) {
        let pending = std::mem::take(&mut self.pending);
        tracing::warn!(stream = %self.stream, count = pending.len(), why, "requests left unanswered");
        let events: Vec<_> = pending
            .iter()
            .map(|id| {
                let data = jsonrpc::error_body(Some(id), code::INTERNAL_ERROR, why);
                let event = StoredEvent {
                    seq: self.next_seq,
                    event: Some("message".into()),
                    data: String::from_utf8_lossy(&data).into_owned(),
                };
                self.next_seq += 1;
                event
            })
            .collect();
        if let Err(e) = self.app.store.append(&self.stream, &events).await {
            tracing::error!(stream = %self.stream, error = %e, "cannot append error events");
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
pub async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

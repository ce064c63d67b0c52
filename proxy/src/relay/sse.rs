//! The pump: reads an upstream event stream into an event log.
//!
//! Each upstream event gets the next seq of its stream, is appended to the
//! store, and only then becomes visible to readers (persist, then deliver).
//! The pump runs as its own task, so a client that disconnects does not stop
//! it: a request stream drains until its JSON-RPC responses have arrived (or
//! the drain limit passes once the client is gone), so nothing is lost.
//!
//! A request stream always ends with an answer for each of its requests: the
//! upstream's, or a JSON-RPC error saying why none came (the upstream closed
//! early, sent an event over the size limit, the store could not keep it).
//! If another process took the stream over (this one was fenced), that
//! process answers instead, and this pump just stops.

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::mcp::ProtocolVersion;
use crate::mcp::jsonrpc::{self, code};
use crate::policy::{Exchange, Scope, Verdict};
use crate::session::Session;
use crate::sse::Parser;
use crate::store::{SessionChange, StoreError, StoredEvent, StreamKey, StreamKind};
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
    /// A response stream or the standalone stream.
    pub kind: StreamKind,
    /// The upstream session id, to resume an upstream stream.
    pub upstream_session: Option<String>,
    /// The client headers to resume the upstream stream with.
    pub headers: http::HeaderMap,
    /// Request ids still awaiting a response (response streams).
    pub pending: Vec<Value>,
    /// Set for the initialize stream: the session whose negotiated version
    /// the InitializeResult tells.
    pub initialize_of: Option<Session>,
    /// Next seq to assign.
    pub next_seq: u64,
    /// A batch whose append failed — it may or may not be in the log, so its
    /// seqs are never given again — or the batch that answered the last
    /// request: [`Pump::finish`] appends it (once more: a no-op if it
    /// landed) ahead of any error answers and the end marker.
    pub unstored: Vec<StoredEvent>,
    /// Who and where, for the policy.
    pub policy: Scope,
    /// The requests awaiting responses here, for the policy (list
    /// filtering, audit); empty without a policy.
    pub exchange: Exchange,
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
    /// Another process took the stream over; it answers from now on.
    Fenced,
    /// The stream cannot go on; the reason goes to the pending requests.
    Failed(String),
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
        let why = match end {
            BodyEnd::Fenced => return,
            BodyEnd::Answered => None,
            BodyEnd::Stopped => Some("Shadowcat stopped waiting for the upstream's response".to_owned()),
            BodyEnd::Closed => Some("the upstream closed the stream before responding".to_owned()),
            BodyEnd::Failed(why) => Some(why),
        };
        self.finish(why.as_deref()).await;
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
        let mut parser = Parser::with_limit(self.app.settings.sse.max_event_bytes);
        loop {
            let frame = tokio::select! {
                frame = body.frame() => frame,
                () = stop.cancelled(), if deadline.is_none() => {
                    if self.kind == StreamKind::Standalone {
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
            let events = match parser.feed(data) {
                Ok(events) => events,
                Err(too_large) => {
                    self.app.metrics.events_too_large.inc();
                    return BodyEnd::Failed(format!(
                        "the upstream sent an event over the limit: {too_large}"
                    ));
                }
            };
            let mut batch = Vec::new();
            let mut answered = Vec::new();
            // Only a policy that looks at the server's messages reads events.
            let policy = self.app.policies.current().filter(|p| p.reads_answers());
            for event in events {
                if event.id.is_some() {
                    last_upstream_id.clone_from(&event.id);
                }
                let Some(mut data) = event.data.filter(|d| !d.is_empty()) else {
                    continue;
                };
                if let Some(policy) = &policy {
                    // Decided as it comes, before the log: a replay shows
                    // what the client was shown.
                    match policy.server_event(&self.policy, &mut self.exchange, &data).await {
                        Verdict::Same => {}
                        Verdict::Replace(new) => data = new,
                        Verdict::Drop => continue,
                        Verdict::Answer { replies, rest } => {
                            for reply in replies {
                                self.answer_upstream(reply);
                            }
                            match rest {
                                Some(rest) => data = rest,
                                None => continue,
                            }
                        }
                    }
                }
                if !self.pending.is_empty() {
                    answered.extend(jsonrpc::response_ids(&data));
                }
                batch.push(StoredEvent {
                    seq: self.next_seq,
                    event: event.event,
                    data,
                });
                self.next_seq += 1;
            }
            if self.answers_the_last(&answered) {
                // The stream is done: this batch and the end marker go to
                // the store together, in one write where it can.
                self.pending.clear();
                self.unstored = batch;
                return BodyEnd::Answered;
            }
            if let Some(end) = self.store(batch, answered).await {
                return end;
            }
            if self.kind == StreamKind::Request && self.pending.is_empty() {
                return BodyEnd::Answered;
            }
        }
    }

    /// Whether `answered` holds every response a request stream still
    /// waits for (an initialize is recorded first, so not that one).
    fn answers_the_last(&self, answered: &[Value]) -> bool {
        self.kind == StreamKind::Request
            && self.initialize_of.is_none()
            && !answered.is_empty()
            && self.pending.iter().all(|p| answered.contains(p))
    }

    /// Appends a batch, and only then counts its responses as answered;
    /// `Some` when the stream cannot go on.
    async fn store(&mut self, batch: Vec<StoredEvent>, answered: Vec<Value>) -> Option<BodyEnd> {
        if batch.is_empty() {
            return None;
        }
        match self.append_patiently(&batch).await {
            Ok(()) => {}
            Err(StoreError::Fenced(_)) => return Some(BodyEnd::Fenced),
            Err(e) => {
                // The batch may have landed (a lost reply, a missing replica
                // acknowledgement): keep it for the end, with its answers.
                self.pending.retain(|p| !answered.contains(p));
                self.unstored = batch;
                let why = match e {
                    StoreError::Full(_) => "Shadowcat's event store is full",
                    _ => "Shadowcat could not store the stream",
                };
                return Some(BodyEnd::Failed(why.into()));
            }
        }
        self.app.metrics.events_pumped.inc_by(batch.len() as u64);
        if !answered.is_empty() {
            self.pending.retain(|p| !answered.contains(p));
            if let Some(session) = self.initialize_of.take() {
                self.record_version(&session, &batch).await;
            }
        }
        None
    }

    /// Appends, retrying through a short store outage rather than dropping
    /// events. Fenced and full are answers, not outages: no retry.
    async fn append_patiently(&self, batch: &[StoredEvent]) -> Result<(), StoreError> {
        let me = self.app.sessions.me();
        let mut delay = Duration::from_millis(50);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.app.store.append(&self.stream, me, batch).await {
                Ok(()) => return Ok(()),
                Err(e @ (StoreError::Fenced(_) | StoreError::Full(_))) => return Err(e),
                Err(e) if attempt >= APPEND_ATTEMPTS => {
                    tracing::error!(stream = %self.stream, error = %e, "cannot append events; stream stops");
                    return Err(e);
                }
                Err(e) => tracing::warn!(stream = %self.stream, error = %e, "append failed; retrying"),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(1));
        }
    }

    /// Records the version an InitializeResult in `batch` negotiated.
    async fn record_version(&self, session: &Session, batch: &[StoredEvent]) {
        let version = batch.iter().find_map(|event| {
            serde_json::from_str::<Value>(&event.data)
                .ok()?
                .pointer("/result/protocolVersion")?
                .as_str()
                .and_then(ProtocolVersion::parse)
        });
        if let Some(version) = version
            && let Err(e) = self
                .app
                .sessions
                .update(session, SessionChange::Version(version.as_str().to_owned()))
                .await
        {
            tracing::warn!(session = %session.record.id, error = %e, "cannot record negotiated version");
        }
    }

    /// POSTs the answer to a server request the policy withheld, so the
    /// server does not wait for it; in the background, so the stream goes on.
    fn answer_upstream(&self, reply: bytes::Bytes) {
        let mut headers = self.headers.clone();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        headers.insert(
            http::header::ACCEPT,
            http::HeaderValue::from_static("application/json, text/event-stream"),
        );
        let request = UpstreamRequest {
            method: Method::POST,
            headers,
            session: self.upstream_session.clone(),
            last_event_id: None,
            body: reply,
        };
        let (app, stream) = (self.app.clone(), self.stream.clone());
        tokio::spawn(async move {
            match app.upstream.send(request).await {
                Ok(response) if response.status().is_success() => {}
                Ok(response) => {
                    tracing::warn!(stream = %stream, status = %response.status(), "upstream refused the answer to its withheld request")
                }
                Err(e) => {
                    tracing::warn!(stream = %stream, error = %e, "cannot answer the upstream's withheld request")
                }
            }
        });
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

    /// Ends the stream: a batch that could not be stored, an error event for
    /// every request still pending (with `why`), then the end marker.
    /// Retried through a store outage for up to the drain limit, so readers
    /// never wait on a stream nobody will end.
    async fn finish(&mut self, why: Option<&str>) {
        let pending = std::mem::take(&mut self.pending);
        let why = why.unwrap_or("the upstream ended the stream without answering");
        if !pending.is_empty() {
            tracing::warn!(stream = %self.stream, count = pending.len(), why, "requests left unanswered");
        }
        let mut events = std::mem::take(&mut self.unstored);
        events.extend(pending.iter().map(|id| {
            let event = error_event(self.next_seq, id, why);
            self.next_seq += 1;
            event
        }));
        if end_with(&self.app, &self.stream, &events).await {
            self.app.metrics.events_pumped.inc_by(events.len() as u64);
        }
    }
}

/// The event that answers request `id` with a JSON-RPC error saying `why`.
pub fn error_event(seq: u64, id: &Value, why: &str) -> StoredEvent {
    let data = jsonrpc::error_body(Some(id), code::INTERNAL_ERROR, why);
    StoredEvent {
        seq,
        event: Some("message".into()),
        data: String::from_utf8_lossy(&data).into_owned(),
    }
}

/// Appends `events` (the last of a stream) and the end marker, retrying
/// through a store outage for up to the drain limit: a stream this process
/// writes must end, or its readers would wait on it until it expires.
/// `false` when it could not (or another writer took the stream over).
pub async fn end_with(app: &App, stream: &StreamKey, events: &[StoredEvent]) -> bool {
    let me = app.sessions.me();
    let give_up = Instant::now() + app.settings.sse.drain_limit;
    let mut delay = Duration::from_millis(50);
    loop {
        match app.store.finish(stream, me, events).await {
            Ok(()) => return true,
            Err(StoreError::Fenced(_)) => return false,
            Err(e) if Instant::now() >= give_up => {
                tracing::error!(%stream, error = %e, "cannot end the stream; its readers will see it expire");
                return false;
            }
            Err(e) => tracing::warn!(%stream, error = %e, "cannot end the stream yet; retrying"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// Sleeps until `deadline`, or forever without one.
pub async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

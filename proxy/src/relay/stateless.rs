//! 2026-07-28 event streams: relayed event by event, with no ids and no log,
//! since that revision has no resumption. Keep-alive comments go out on an
//! idle stream (`subscriptions/listen` may stay open for hours). When the
//! client goes away the upstream body is dropped, which closes the upstream
//! connection and so cancels the request, as the revision specifies. An
//! upstream event over the size limit ends the stream with a JSON-RPC error
//! for the request, instead of a buffer without bound.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::app::App;
use crate::body::{self, Body};
use crate::endpoint::policed::Admission;
use crate::mcp::jsonrpc::{self, code};
use crate::policy::Verdict;
use crate::sse::{Parser, comment, encode_event};

/// Streams an upstream event stream to the client without recording it.
/// `id` is the request it answers, for an error if the stream breaks.
/// `admission` brings the policy's answers for refused requests, sent
/// first, and what the policy needs to decide each event.
pub fn relay(app: Arc<App>, upstream: Incoming, id: Option<Value>, admission: Admission) -> Body {
    let (tx, body) = body::channel(8);
    tokio::spawn(run(app, upstream, tx, id, admission));
    body
}

async fn run(
    app: Arc<App>,
    mut upstream: Incoming,
    tx: mpsc::Sender<Bytes>,
    id: Option<Value>,
    mut admission: Admission,
) {
    app.metrics.sse_streams_active.inc();
    for refusal in std::mem::take(&mut admission.refusals) {
        let _ = tx
            .send(encode_event(None, Some("message"), &refusal.to_string()))
            .await;
    }
    let mut parser = Parser::with_limit(app.settings.sse.max_event_bytes);
    let keep_alive = app.settings.sse.keep_alive_interval;
    'relay: loop {
        let frame = tokio::select! {
            frame = tokio::time::timeout(keep_alive, upstream.frame()) => frame,
            () = tx.closed() => break,
        };
        let data = match frame {
            Err(_idle) => {
                if tx.send(comment("keep-alive")).await.is_err() {
                    break;
                }
                continue;
            }
            Ok(None | Some(Err(_))) => break,
            Ok(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue,
            },
        };
        let events = match parser.feed(data) {
            Ok(events) => events,
            Err(too_large) => {
                app.metrics.events_too_large.inc();
                let why = format!("the upstream sent an event over the limit: {too_large}");
                let error = jsonrpc::error_body(id.as_ref(), code::INTERNAL_ERROR, &why);
                let _ = tx
                    .send(encode_event(
                        None,
                        Some("message"),
                        &String::from_utf8_lossy(&error),
                    ))
                    .await;
                break;
            }
        };
        // The policy in force now: a stream open for hours follows reloads.
        let policy = app.policies.current().filter(|p| p.reads_answers());
        for event in events {
            let Some(mut data) = event.data.filter(|d| !d.is_empty()) else {
                continue;
            };
            if let Some(policy) = &policy {
                match policy
                    .server_event(&admission.scope, &mut admission.exchange, &data)
                    .await
                {
                    Verdict::Same => {}
                    Verdict::Replace(new) => data = new,
                    Verdict::Drop => continue,
                    Verdict::Answer { rest, .. } => {
                        // No session here to send the answers on; the
                        // requests are withheld all the same.
                        tracing::info!("server request withheld by policy on a stream without a session");
                        match rest {
                            Some(rest) => data = rest,
                            None => continue,
                        }
                    }
                }
            }
            if tx
                .send(encode_event(None, event.event.as_deref(), &data))
                .await
                .is_err()
            {
                break 'relay;
            }
        }
    }
    app.metrics.sse_streams_active.dec();
}

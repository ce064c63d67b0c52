//! held: sessions that each hold a standalone GET stream, one plain HTTP/1.1
//! connection per stream. Measures the proxy's resident memory before and
//! with the streams open (KiB per stream) — each count on a freshly started
//! proxy, so memory an earlier load freed cannot hide the growth — then has
//! the upstream broadcast one timestamped event to every stream a few times
//! and records, per client, receive time − send time (the fan-out latency).
//!
//! Each held stream costs a proxy two descriptors — the client's connection
//! and its own to the upstream — so under a 20 000 open-file limit about
//! 9 900 streams is the most.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::control;
use crate::client::{Http, Session};
use crate::conn::Conn;
use crate::error::CallError;
use crate::load::{lock, pooled};
use crate::stats::{Percentiles, Sample};
use crate::upstream::held::unix_nanos;
use anyhow::bail;
use bytes::Bytes;
use http::header::ACCEPT;
use http::{HeaderValue, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::Value;
use shadowcat_proxy::sse::Parser;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::cli::Plan;
use super::figures::HeldRow;
use super::fleet::Fleet;
use super::target::Target;
use super::workload::SESSION_VERSION;

/// GET streams being opened at once.
const OPENING: usize = 64;
/// Longest wait for the upstream to see every stream, or none.
const SETTLE: Duration = Duration::from_secs(30);
/// Longest wait for the last broadcast's events.
const STRAGGLERS: Duration = Duration::from_secs(10);

/// Runs held against every target, each count in turn on a fresh proxy.
pub async fn run(
    fleet: &mut Fleet,
    targets: &[Target],
    plan: &Plan,
    http: &Http,
) -> anyhow::Result<Vec<HeldRow>> {
    let mut rows = Vec::new();
    for &target in targets {
        for &streams in &plan.held {
            eprintln!("held: {streams} streams: {}", target.label());
            fleet.restart(target, http).await?;
            rows.push(one(fleet, target, streams, plan).await?);
        }
    }
    Ok(rows)
}

/// Opens `streams` sessions with a stream each on `target`, measures, broadcasts, tears down.
async fn one(fleet: &Fleet, target: Target, streams: u64, plan: &Plan) -> anyhow::Result<HeldRow> {
    let url = fleet.url(target)?;
    let pids = fleet.pids(target);
    let port = fleet.upstream_port();
    if let Err(e) = wait_held(port, |n| n == 0).await {
        eprintln!("held: before {}: {e:#}", target.label());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before_kib = pids.proxy_usage().map(|u| u.rss_kib);

    let started = Instant::now();
    let mut open = open_all(url, streams, plan.concurrency).await;
    let open_time = started.elapsed();
    let opened = open.streams;
    if let Err(e) = wait_held(port, |n| n >= opened).await {
        eprintln!("held: {} of {opened} streams open: {e:#}", target.label());
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after_kib = pids.proxy_usage().map(|u| u.rss_kib);

    let expected = opened * u64::from(plan.broadcasts);
    let latencies_us = broadcast(port, plan, expected, &mut open.latencies).await?;
    let mut errors = open.errors;
    errors.merge(close_all(url, open.ids, open.readers, plan.concurrency).await);
    let leftover = match wait_held(port, |n| n == 0).await {
        Ok(()) => Some(0),
        Err(_) => control::stats(port).await.ok().map(|s| s.held),
    };
    Ok(HeldRow {
        target,
        streams,
        opened,
        errors,
        open_time,
        rss_before_kib,
        rss_after_kib,
        broadcasts: plan.broadcasts,
        expected,
        received: latencies_us.len() as u64,
        fanout_ms: Percentiles::of(&latencies_us),
        leftover_upstream_streams: leftover,
    })
}

/// Sessions with their streams open and being read.
struct Open {
    /// Every session opened (with or without a stream).
    ids: Vec<HeaderValue>,
    /// Streams open.
    streams: u64,
    /// One reader per stream.
    readers: JoinSet<()>,
    /// Each event's latency in µs, as the readers see them.
    latencies: mpsc::UnboundedReceiver<u32>,
    /// What failed.
    errors: Sample,
}

/// Opens `streams` sessions (`concurrency` connections), then a GET stream
/// for each on a connection of its own ([`OPENING`] at a time).
async fn open_all(url: &Uri, streams: u64, concurrency: usize) -> Open {
    let (ids, mut errors) = pooled(
        (0..streams).collect(),
        concurrency,
        || Conn::new(url),
        async |conn, _| {
            let conn = conn.as_mut().map_err(|e| CallError::Transport(e.to_string()))?;
            let session = Session::open(conn, url.clone(), SESSION_VERSION).await?;
            session
                .id()
                .cloned()
                .ok_or_else(|| CallError::Protocol("initialize answered without a session id".into()))
        },
    )
    .await;
    let (tx, latencies) = mpsc::unbounded_channel();
    let readers = Mutex::new(JoinSet::new());
    let (opened, stream_errors) = pooled(
        ids.clone(),
        OPENING,
        || (),
        async |_, id| {
            let (conn, body) = open_stream(url, id).await?;
            lock(&readers).spawn(read_stream(conn, body, tx.clone()));
            Ok(())
        },
    )
    .await;
    errors.merge(stream_errors);
    Open {
        ids,
        streams: opened.len() as u64,
        readers: readers.into_inner().unwrap_or_else(|p| p.into_inner()),
        latencies,
        errors,
    }
}

/// Has the upstream broadcast `plan.broadcasts` times and collects up to
/// `expected` latencies (sorted), waiting at most [`STRAGGLERS`] after the last.
async fn broadcast(
    port: u16,
    plan: &Plan,
    expected: u64,
    latencies: &mut mpsc::UnboundedReceiver<u32>,
) -> anyhow::Result<Vec<u32>> {
    for i in 0..plan.broadcasts {
        if i > 0 {
            tokio::time::sleep(plan.broadcast_interval).await;
        }
        control::broadcast(port).await?;
    }
    let mut all = Vec::with_capacity(usize::try_from(expected).unwrap_or(0));
    let deadline = tokio::time::Instant::now() + STRAGGLERS;
    while (all.len() as u64) < expected {
        match tokio::time::timeout_at(deadline, latencies.recv()).await {
            Ok(Some(us)) => all.push(us),
            _ => break,
        }
    }
    all.sort_unstable();
    Ok(all)
}

/// Closes every stream, then ends every session; returns what failed.
async fn close_all(url: &Uri, ids: Vec<HeaderValue>, mut readers: JoinSet<()>, concurrency: usize) -> Sample {
    readers.shutdown().await;
    let (_, errors) = pooled(
        ids,
        concurrency,
        || Conn::new(url),
        async |conn, id| {
            let conn = conn.as_mut().map_err(|e| CallError::Transport(e.to_string()))?;
            Session::join(conn, url.clone(), SESSION_VERSION, Some(id))
                .end()
                .await
        },
    )
    .await;
    errors
}

/// A session's GET stream on a connection of its own.
async fn open_stream(url: &Uri, id: HeaderValue) -> Result<(Conn, Incoming), CallError> {
    let mut conn = Conn::new(url)?;
    let request = Request::get(url.clone())
        .header(ACCEPT, "text/event-stream")
        .header("mcp-protocol-version", SESSION_VERSION.as_str())
        .header("mcp-session-id", id)
        .body(Full::new(Bytes::new()))
        .map_err(|e| CallError::Protocol(e.to_string()))?;
    let response = tokio::time::timeout(Duration::from_secs(30), conn.request(request))
        .await
        .map_err(|_| CallError::Timeout(Duration::from_secs(30)))??;
    if !response.status().is_success() {
        return Err(CallError::Status(response.status()));
    }
    Ok((conn, response.into_body()))
}

/// Reads a held stream until it ends, sending each broadcast's latency (µs).
async fn read_stream(conn: Conn, mut body: Incoming, tx: mpsc::UnboundedSender<u32>) {
    // The connection lives as long as the stream is read.
    let _conn = conn;
    let mut parser = Parser::new();
    while let Some(Ok(frame)) = body.frame().await {
        let Ok(data) = frame.into_data() else {
            continue;
        };
        for event in parser.feed(data).unwrap_or_default() {
            let Some(sent) = event.data.as_deref().and_then(sent_ns) else {
                continue;
            };
            let latency_ns = unix_nanos().saturating_sub(u128::from(sent));
            let _ = tx.send(u32::try_from(latency_ns / 1000).unwrap_or(u32::MAX));
        }
    }
}

/// The `sent_ns` a broadcast event carries.
fn sent_ns(data: &str) -> Option<u64> {
    let message: Value = serde_json::from_str(data).ok()?;
    message.pointer("/params/data/sent_ns")?.as_u64()
}

/// Waits until the count of streams the upstream holds satisfies `ok`.
async fn wait_held(port: u16, ok: impl Fn(u64) -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + SETTLE;
    loop {
        let n = control::stats(port).await?.held;
        if ok(n) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the upstream still holds {n} streams after {SETTLE:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::held::broadcast_event;

    #[test]
    fn reads_the_send_time_of_a_broadcast() {
        let event = broadcast_event(1_700_000_000_123_456_789);
        let data = event
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .expect("a data line");
        assert_eq!(sent_ns(data), Some(1_700_000_000_123_456_789));
        assert_eq!(
            sent_ns(r#"{"jsonrpc":"2.0","method":"notifications/message"}"#),
            None
        );
    }
}

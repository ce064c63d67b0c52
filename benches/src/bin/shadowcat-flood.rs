//! `shadowcat-flood`: Shadowcat's memory under floods, against its budgets.
//!
//! Starts the scripted upstream and a shadowcat (both release builds, memory
//! store, default budgets), then floods it: padded `initialize` requests,
//! large tool results, and thousands of held standalone streams. Reports
//! resident memory (peak and current, from `/proc`) and what the memory
//! store holds, next to the budget and the sidecar's 256 MiB limit.
//!
//!     benches/flood.sh [--padded N] [--big N] [--streams N]
#![forbid(unsafe_code)]

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

type Http = Client<HttpConnector, Full<Bytes>>;

/// Floods a shadowcat and reports its memory.
#[derive(Debug, Parser)]
struct Args {
    /// The shadowcat binary.
    #[arg(long, default_value = "target/release/shadowcat")]
    shadowcat: String,
    /// The scripted upstream binary.
    #[arg(long, default_value = "target/release/scripted-upstream")]
    upstream: String,
    /// Padded `initialize` requests (3 MiB each).
    #[arg(long, default_value_t = 2000)]
    padded: usize,
    /// Tool calls answering 900 KB each.
    #[arg(long, default_value_t = 400)]
    big: usize,
    /// Standalone streams held open at once (one session each).
    #[arg(long, default_value_t = 2000)]
    streams: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

/// Starts `cmd` and returns it with the first stdout/stderr line `pick` accepts.
async fn start(mut cmd: Command, pick: impl Fn(&str) -> Option<String>) -> anyhow::Result<(Proc, String)> {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    for out in [
        Box::new(child.stdout.take().context("stdout")?) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
        Box::new(child.stderr.take().context("stderr")?),
    ] {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = tx.send(line).await;
            }
        });
    }
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = rx.recv().await {
            if let Some(found) = pick(&line) {
                return Some(found);
            }
        }
        None
    })
    .await?
    .context("the process ended before it was ready")?;
    // Keep draining its output so it never blocks on a full pipe.
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    Ok((Proc(child), found))
}

/// Resident memory now and at its peak, in MiB.
fn memory(pid: u32) -> anyhow::Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = |field: &str| -> anyhow::Result<f64> {
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .with_context(|| format!("no {field}"))?;
        Ok(line.trim().trim_end_matches("kB").trim().parse::<f64>()? / 1024.0)
    };
    Ok((kb("VmRSS:")?, kb("VmHWM:")?))
}

async fn post(
    http: &Http,
    url: &str,
    session: Option<&str>,
    body: Value,
) -> anyhow::Result<(u16, Option<String>, Bytes)> {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18");
    if let Some(session) = session {
        req = req.header("mcp-session-id", session);
    }
    let response = http
        .request(req.body(Full::new(Bytes::from(body.to_string())))?)
        .await?;
    let status = response.status().as_u16();
    let session = response
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = response.into_body().collect().await?.to_bytes();
    Ok((status, session, bytes))
}

fn initialize(padding: usize) -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "flood", "version": "0"}, "padding": "p".repeat(padding)}})
}

async fn session(http: &Http, url: &str) -> anyhow::Result<String> {
    let id = loop {
        // Past the session rate the answer is 503 with Retry-After: wait.
        match post(http, url, None, initialize(0)).await? {
            (503, _, _) => tokio::time::sleep(Duration::from_millis(50)).await,
            (_, Some(id), _) => break id,
            (status, None, _) => bail!("initialize answered {status}"),
        }
    };
    post(
        http,
        url,
        Some(&id),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await?;
    Ok(id)
}

async fn metric(http: &Http, admin: &str, name: &str) -> anyhow::Result<f64> {
    let req = Request::get(format!("{admin}/metrics")).body(Full::new(Bytes::new()))?;
    let body = http.request(req).await?.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0))
}

/// Runs `n` jobs, `concurrency` at a time.
async fn flood<F, Fut>(n: usize, concurrency: usize, job: F) -> Vec<u16>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = u16> + Send,
{
    let job = Arc::new(job);
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (job, next) = (job.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= n {
                    return statuses;
                }
                statuses.push(job(i).await);
            }
        }));
    }
    let mut all = Vec::new();
    for worker in workers {
        all.extend(worker.await.unwrap_or_default());
    }
    all
}

fn tally(statuses: &[u16]) -> String {
    let mut counts = std::collections::BTreeMap::new();
    for s in statuses {
        *counts.entry(*s).or_insert(0) += 1;
    }
    counts
        .iter()
        .map(|(s, n)| format!("{n}×{s}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (_upstream, upstream_url) = start(
        {
            let mut cmd = Command::new(&args.upstream);
            cmd.args(["--port", "0", "--standalone"]);
            cmd
        },
        |l| l.strip_prefix("listening on ").map(str::to_owned),
    )
    .await?;
    let launch = |extra: Vec<&'static str>| {
        let mut cmd = Command::new(&args.shadowcat);
        cmd.args([
            "--upstream",
            &upstream_url,
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args(extra)
        .env("SHADOWCAT_LOG", "warn,shadowcat_proxy::server=info");
        start(cmd, |l| {
            let v: Value = serde_json::from_str(l).ok()?;
            if v["message"] != "listening" {
                return None;
            }
            Some(format!("{} {}", v["public"].as_str()?, v["admin"].as_str()?))
        })
    };
    let http: Http = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    println!("| phase | requests | answers | RSS MiB | peak RSS MiB | store MiB (budget 64) |");
    println!("|---|--:|---|--:|--:|--:|");

    // Defaults, as a sidecar runs.
    let (proxy, addrs) = launch(vec![]).await?;
    let pid = proxy.0.id().context("no pid")?;
    let (public, admin) = addrs.split_once(' ').context("addresses")?;
    let (url, admin) = (format!("http://{public}/mcp"), format!("http://{admin}"));
    let row = |phase: &str, n: usize, answers: String, store: f64| -> anyhow::Result<()> {
        let (rss, peak) = memory(pid)?;
        println!(
            "| {phase} | {n} | {answers} | {rss:.1} | {peak:.1} | {:.1} |",
            store / 1048576.0
        );
        Ok(())
    };
    row("idle", 0, String::new(), 0.0)?;

    let padded = {
        let (http, url) = (http.clone(), url.clone());
        flood(args.padded, args.concurrency, move |_| {
            let (http, url) = (http.clone(), url.clone());
            async move {
                post(&http, &url, None, initialize(3 << 20))
                    .await
                    .map_or(0, |r| r.0)
            }
        })
        .await
    };
    row(
        "padded initialize (3 MiB each, default session rate)",
        args.padded,
        tally(&padded),
        0.0,
    )?;

    let sessions: Vec<String> = {
        let mut ids = Vec::new();
        for _ in 0..args.concurrency {
            ids.push(session(&http, &url).await?);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        ids
    };
    let sessions = Arc::new(sessions);
    let big = {
        let (http, url, sessions) = (http.clone(), url.clone(), sessions.clone());
        flood(args.big, args.concurrency, move |i| {
            let (http, url, sessions) = (http.clone(), url.clone(), sessions.clone());
            async move {
                let call = json!({"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": "big", "arguments": {"bytes": 900_000}}});
                post(&http, &url, Some(&sessions[i % sessions.len()]), call).await.map_or(0, |r| r.0)
            }
        })
        .await
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let store = metric(&http, &admin, "shadowcat_store_event_bytes").await?;
    row("large results (900 KB each)", args.big, tally(&big), store)?;
    drop(proxy);

    // Held streams: a shadowcat that admits sessions as fast as they come.
    let (proxy, addrs) = launch(vec!["--session-rate", "100000"]).await?;
    let pid = proxy.0.id().context("no pid")?;
    let (public, _) = addrs.split_once(' ').context("addresses")?;
    let url = format!("http://{public}/mcp");
    let (before, _) = memory(pid)?;
    let mut held = Vec::new();
    for _ in 0..args.streams {
        let id = session(&http, &url).await?;
        let req = Request::get(&url)
            .header("accept", "text/event-stream")
            .header("mcp-protocol-version", "2025-06-18")
            .header("mcp-session-id", &id)
            .body(Full::new(Bytes::new()))?;
        let response = http.request(req).await?;
        if response.status() != 200 {
            bail!("GET answered {}", response.status());
        }
        held.push(response);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss, peak) = memory(pid)?;
    println!(
        "| {} standalone streams held (one session each) | {} | 200 | {rss:.1} | {peak:.1} | {:.1} KiB per session and stream |",
        args.streams,
        args.streams,
        (rss - before) * 1024.0 / args.streams as f64
    );
    drop(held);
    Ok(())
}

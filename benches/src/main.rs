//! Side-by-side load: the same MCP calls direct to the upstream and through
//! Shadowcat, interleaved in rounds within one run so machine noise hits both
//! alike. Prints latency percentiles, throughput and the proxy/direct ratios.
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::json;
use shadowcat_tests::client::Mcp;
use shadowcat_tests::procs::{Shadowcat, everything};

/// Benchmark flags.
#[derive(Debug, Parser)]
struct Args {
    /// Concurrent clients, each with its own session.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Seconds of load per target per round.
    #[arg(long, default_value_t = 5)]
    duration: u64,
    /// Rounds; each runs direct then proxied.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

/// What one target measured.
#[derive(Debug, Default)]
struct Sample {
    latencies_us: Vec<u64>,
    errors: usize,
    elapsed: Duration,
}

impl Sample {
    fn rps(&self) -> f64 {
        self.latencies_us.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn pct(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies_us.len() - 1) as f64 * p).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }
}

/// Runs `concurrency` sessions calling `echo` (JSON-RPC over SSE answers) for `secs`.
async fn load(url: &str, args: &Args, tool: serde_json::Value) -> anyhow::Result<Sample> {
    let mut workers = Vec::new();
    let started = Instant::now();
    for _ in 0..args.concurrency {
        let (url, tool, secs) = (url.to_owned(), tool.clone(), args.duration);
        workers.push(tokio::spawn(async move {
            let mut mcp = Mcp::new(&url, "2025-11-25");
            mcp.initialize().await;
            let mut sample = Sample::default();
            let end = Instant::now() + Duration::from_secs(secs);
            while Instant::now() < end {
                let t = Instant::now();
                let answer = mcp.request("tools/call", tool.clone()).await;
                if answer.get("result").is_some() {
                    sample.latencies_us.push(t.elapsed().as_micros() as u64);
                } else {
                    sample.errors += 1;
                }
            }
            let _ = mcp.delete().await;
            sample
        }));
    }
    let mut all = Sample::default();
    for w in workers {
        let s = w.await?;
        all.latencies_us.extend(s.latencies_us);
        all.errors += s.errors;
    }
    all.elapsed = started.elapsed();
    Ok(all)
}

fn rss_kib(pid: Option<u32>) -> String {
    let status = pid
        .and_then(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS"))
        .map_or("?".into(), |l| l[6..].trim().to_owned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let server = everything().await;
    let proxy = Shadowcat::start(&server.url, &[]).await;
    let pid = proxy.proc.child.id();
    println!("shadowcat RSS before: {}", rss_kib(pid));
    let scenarios = [
        (
            "json echo",
            json!({"name": "echo", "arguments": {"message": "bench"}}),
        ),
        (
            "sse progress (5 events)",
            json!({"name": "trigger-long-running-operation", "arguments": {"duration": 0.05, "steps": 5},
                   "_meta": {"progressToken": "b"}}),
        ),
    ];
    println!(
        "\n| scenario | target | calls | errors | calls/s | p50 ms | p90 ms | p99 ms |\n|---|---|---|---|---|---|---|---|"
    );
    for (name, tool) in scenarios {
        let (mut direct, mut proxied) = (Sample::default(), Sample::default());
        for _ in 0..args.rounds {
            for (target, into) in [(&server.url, &mut direct), (&proxy.url, &mut proxied)] {
                let s = load(target, &args, tool.clone()).await?;
                into.latencies_us.extend(s.latencies_us);
                into.errors += s.errors;
                into.elapsed += s.elapsed;
            }
        }
        for s in [&mut direct, &mut proxied] {
            s.latencies_us.sort_unstable();
        }
        for (target, s) in [("direct", &direct), ("shadowcat", &proxied)] {
            println!(
                "| {name} | {target} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} |",
                s.latencies_us.len(),
                s.errors,
                s.rps(),
                s.pct(0.5),
                s.pct(0.9),
                s.pct(0.99)
            );
        }
        println!(
            "| {name} | ratio shadowcat/direct | | | {:.2} | {:.2} | {:.2} | {:.2} |",
            proxied.rps() / direct.rps(),
            proxied.pct(0.5) / direct.pct(0.5),
            proxied.pct(0.9) / direct.pct(0.9),
            proxied.pct(0.99) / direct.pct(0.99)
        );
    }
    println!("\nshadowcat RSS after: {}", rss_kib(pid));
    Ok(())
}

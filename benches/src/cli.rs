//! Flags, checked into a [`Plan`] that cannot hold a nonsensical value.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::ensure;
use clap::{Parser, ValueEnum};

/// The server-everything entry point, relative to the repository root.
const EVERYTHING: &str = "tests/peers/node_modules/@modelcontextprotocol/server-everything/dist/index.js";

/// Direct to an MCP server vs through Shadowcat, side by side, in one run.
///
/// Starts server-everything, one shadowcat in front of it per store (memory and,
/// with a private `redis-server`, Redis), runs each scenario against every
/// target in interleaved rounds, prints tables and (optionally) JSON.
#[derive(Debug, Parser)]
#[command(name = "shadowcat-bench")]
pub struct Args {
    /// The shadowcat binary to benchmark.
    #[arg(long, default_value = "target/release/shadowcat")]
    pub shadowcat: PathBuf,
    /// An extra shadowcat flag (repeatable), e.g. `--shadowcat-arg=--sse-retention=30s`.
    #[arg(long = "shadowcat-arg", allow_hyphen_values = true)]
    pub shadowcat_args: Vec<String>,
    /// Shadowcat stores to compare against direct, one shadowcat each, in order.
    #[arg(long, value_delimiter = ',', default_value = "memory,redis")]
    pub stores: Vec<Store>,
    /// The redis-server binary; a private one is started on a free port for `redis`.
    #[arg(long, default_value = "redis-server")]
    pub redis_server: PathBuf,
    /// The Node binary that runs the upstream.
    #[arg(long, default_value = "node")]
    pub node: PathBuf,
    /// server-everything's entry point.
    #[arg(long, default_value = EVERYTHING)]
    pub server_script: PathBuf,
    /// Concurrent clients per target, each with its own MCP session.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Seconds of measured load per scenario and target, split over the rounds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Rounds per scenario; each runs every target, the order reversing each round.
    #[arg(long, default_value_t = 2)]
    pub rounds: u32,
    /// Seconds of unmeasured `json` load per target first (JIT, pools, allocator).
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Scenarios to run, in order.
    #[arg(long, value_delimiter = ',', default_value = "json,sse")]
    pub scenarios: Vec<Scenario>,
    /// `sse`: progress notifications per call.
    #[arg(long, default_value_t = 10)]
    pub sse_steps: u32,
    /// `sse`: seconds one long-running operation takes.
    #[arg(long, default_value_t = 1.0)]
    pub sse_seconds: f64,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// What the clients do in a loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// `tools/call` of `echo`: one request, one answer.
    Json,
    /// `tools/call` of `trigger-long-running-operation`: progress notifications
    /// streamed over SSE, then the answer.
    Sse,
}

impl Scenario {
    /// The name used in the table and the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Json => "json",
            Scenario::Sse => "sse",
        }
    }
}

/// The session and event store a shadowcat runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Store {
    /// In-process (`--store memory`, the default).
    Memory,
    /// A private `redis-server` (`--store redis://127.0.0.1:PORT`).
    Redis,
}

impl Store {
    /// The name used in the tables and the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Store::Memory => "memory",
            Store::Redis => "redis",
        }
    }
}

/// The load one slice applies: validated, with durations as durations.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Concurrent clients (at least one).
    pub concurrency: usize,
    /// Measured time per target per round.
    pub slice: Duration,
    /// Rounds (at least one).
    pub rounds: u32,
    /// Unmeasured load per target before the first scenario (may be zero).
    pub warmup: Duration,
    /// `sse`: notifications per call (at least one).
    pub sse_steps: u32,
    /// `sse`: length of one operation in seconds (positive).
    pub sse_seconds: f64,
}

impl Args {
    /// Checks the numbers and turns them into a [`Plan`].
    pub fn plan(&self) -> anyhow::Result<Plan> {
        ensure!(self.concurrency > 0, "--concurrency must be at least 1");
        ensure!(self.rounds > 0, "--rounds must be at least 1");
        ensure!(
            self.duration.is_finite() && self.duration > 0.0,
            "--duration must be positive"
        );
        ensure!(
            self.warmup.is_finite() && self.warmup >= 0.0,
            "--warmup must not be negative"
        );
        ensure!(self.sse_steps > 0, "--sse-steps must be at least 1");
        ensure!(
            self.sse_seconds.is_finite() && self.sse_seconds > 0.0,
            "--sse-seconds must be positive"
        );
        ensure!(
            !self.scenarios.is_empty(),
            "--scenarios must name at least one scenario"
        );
        ensure!(!self.stores.is_empty(), "--stores must name at least one store");
        ensure!(
            self.stores
                .iter()
                .enumerate()
                .all(|(i, s)| !self.stores[..i].contains(s)),
            "--stores names a store twice"
        );
        Ok(Plan {
            concurrency: self.concurrency,
            slice: Duration::from_secs_f64(self.duration / f64::from(self.rounds)),
            rounds: self.rounds,
            warmup: Duration::from_secs_f64(self.warmup),
            sse_steps: self.sse_steps,
            sse_seconds: self.sse_seconds,
        })
    }
}

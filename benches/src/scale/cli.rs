//! Flags, checked into a [`Plan`] that cannot hold a nonsensical value.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, ensure};
use clap::{Parser, ValueEnum};

use super::target::Target;

/// Descriptors a process needs besides its streams' (listeners, pools, logs).
pub const FD_HEADROOM: u64 = 150;

/// Shadowcat and nginx side by side on a fast upstream, in one run.
///
/// Starts `shadowcat-bench-upstream` (a fast MCP server), nginx in front of it
/// (skipped with a message when nginx is missing), a shadowcat with the memory
/// store and one with a private redis-server, then runs each scenario against
/// every target in interleaved rounds (A B C D, then D C B A, ...). Prints
/// Markdown tables; optionally writes JSON and SVG plots.
///
/// Held streams: each one costs a proxy two descriptors (the client's
/// connection and its own to the upstream), so with the usual hard limit of
/// 20 000 open files the most is about 9 900. Run it through
/// `benches/scale.sh`, which raises `ulimit -n` to the hard limit; the bench
/// raises its own soft limit too, and its children inherit it.
#[derive(Clone, Debug, Parser)]
#[command(name = "shadowcat-scale")]
pub struct Args {
    /// The shadowcat binary to benchmark (release build).
    #[arg(long, default_value = "target/release/shadowcat")]
    pub shadowcat: PathBuf,
    /// An extra shadowcat flag (repeatable), e.g. `--shadowcat-arg=--sse-retention=30s`.
    #[arg(long = "shadowcat-arg", allow_hyphen_values = true)]
    pub shadowcat_args: Vec<String>,
    /// The fast upstream binary.
    #[arg(long, default_value = "target/release/shadowcat-bench-upstream")]
    pub upstream: PathBuf,
    /// The nginx binary; when it cannot be found the nginx target is skipped.
    #[arg(long, default_value = "nginx")]
    pub nginx: PathBuf,
    /// nginx worker processes (a number, or `auto` for one per core).
    #[arg(long, default_value = "auto")]
    pub nginx_workers: String,
    /// The redis-server binary; a private one is started on a free port for shadowcat+redis.
    #[arg(long, default_value = "redis-server")]
    pub redis_server: PathBuf,
    /// Targets to compare, in round-one order.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "direct,nginx,shadowcat-memory,shadowcat-redis"
    )]
    pub targets: Vec<Target>,
    /// Scenarios to run, in order.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "stateless-json,session-json,session-sse,setup,busy-session,sweep,held"
    )]
    pub scenarios: Vec<Scenario>,
    /// Connections (clients) in every scenario but `held` and `sweep`.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Seconds of measured load per scenario and target, split over the rounds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Rounds per scenario; each runs every target, the order reversing each round.
    #[arg(long, default_value_t = 2)]
    pub rounds: u32,
    /// Seconds of unmeasured `session-json` load per target before the first scenario.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Progress notifications the upstream sends before each `sse` tool answer.
    #[arg(long, default_value_t = 0)]
    pub sse_notifications: u32,
    /// Milliseconds the upstream waits before each tool answer (`delay_ms` argument; 0: none).
    #[arg(long, default_value_t = 0)]
    pub delay_ms: u64,
    /// busy-session: calls on the one shared session, per shadowcat target.
    #[arg(long, default_value_t = 100_000)]
    pub busy_calls: u64,
    /// busy-session: calls per reported window (direct and nginx run one window as baseline).
    #[arg(long, default_value_t = 10_000)]
    pub busy_window: u64,
    /// held: numbers of sessions with a held GET stream, each measured in turn.
    /// Each stream costs a proxy two descriptors; about 9 900 is the most under 20 000 open files.
    #[arg(long, value_delimiter = ',', default_value = "1000,9900")]
    pub held: Vec<u64>,
    /// held: broadcasts sent to every stream once they are open.
    #[arg(long, default_value_t = 10)]
    pub broadcasts: u32,
    /// held: seconds between broadcasts.
    #[arg(long, default_value_t = 1.0)]
    pub broadcast_interval: f64,
    /// sweep: the concurrency levels of `session-json`.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,32,64,128")]
    pub sweep: Vec<usize>,
    /// sweep: seconds per level and target (one round).
    #[arg(long, default_value_t = 3.0)]
    pub sweep_duration: f64,
    /// Write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write SVG plots into this directory (created if missing).
    #[arg(long)]
    pub plots: Option<PathBuf>,
}

/// What the clients do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// 2026-07-28 `tools/call` of `json`, no session.
    StatelessJson,
    /// 2025-06-18, a session per connection, `tools/call` of `json`.
    SessionJson,
    /// 2025-06-18, a session per connection, `tools/call` of `sse`.
    SessionSse,
    /// initialize + notifications/initialized + DELETE, in a loop.
    Setup,
    /// One session shared by every connection, `tools/call` of `sse`, in windows.
    BusySession,
    /// Sessions each holding a GET stream: memory per stream, broadcast fan-out.
    Held,
    /// `session-json` at several concurrency levels.
    Sweep,
}

impl Scenario {
    /// The name in the tables and the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::StatelessJson => "stateless-json",
            Scenario::SessionJson => "session-json",
            Scenario::SessionSse => "session-sse",
            Scenario::Setup => "setup",
            Scenario::BusySession => "busy-session",
            Scenario::Held => "held",
            Scenario::Sweep => "sweep",
        }
    }
}

/// The run, validated, with durations as durations.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Targets in round-one order, without repeats.
    pub targets: Vec<Target>,
    /// Scenarios in order.
    pub scenarios: Vec<Scenario>,
    /// Connections per slice (at least one).
    pub concurrency: usize,
    /// Measured time per target per round.
    pub slice: Duration,
    /// Rounds (at least one).
    pub rounds: u32,
    /// Unmeasured load per target first (may be zero).
    pub warmup: Duration,
    /// Arguments of every tool call.
    pub delay_ms: u64,
    /// busy-session: calls per shadowcat target.
    pub busy_calls: u64,
    /// busy-session: calls per window (at most `busy_calls`).
    pub busy_window: u64,
    /// held: stream counts, each within the descriptor limit.
    pub held: Vec<u64>,
    /// held: broadcasts per count.
    pub broadcasts: u32,
    /// held: time between broadcasts.
    pub broadcast_interval: Duration,
    /// sweep: concurrency levels.
    pub sweep: Vec<usize>,
    /// sweep: time per level and target.
    pub sweep_slice: Duration,
    /// nginx `worker_processes`.
    pub nginx_workers: String,
    /// Extra shadowcat flags.
    pub shadowcat_args: Vec<String>,
}

/// A positive, finite number of seconds.
fn seconds(flag: &str, value: f64, zero_ok: bool) -> anyhow::Result<Duration> {
    let ok = value.is_finite() && (value > 0.0 || zero_ok && value == 0.0);
    ensure!(
        ok,
        "--{flag} must be {}",
        if zero_ok { "zero or more" } else { "positive" }
    );
    Ok(Duration::from_secs_f64(value))
}

impl Args {
    /// Checks the numbers against each other and the open-file limit
    /// `nofile` (the hard limit every process here can raise itself to).
    pub fn plan(&self, nofile: u64) -> anyhow::Result<Plan> {
        ensure!(self.concurrency > 0, "--concurrency must be at least 1");
        ensure!(self.rounds > 0, "--rounds must be at least 1");
        ensure!(
            !self.targets.is_empty(),
            "--targets must name at least one target"
        );
        ensure!(
            !self.scenarios.is_empty(),
            "--scenarios must name at least one scenario"
        );
        ensure!(self.busy_window > 0, "--busy-window must be at least 1");
        ensure!(
            self.busy_calls >= self.busy_window,
            "--busy-calls must be at least --busy-window"
        );
        ensure!(
            self.sweep.iter().all(|&c| c > 0),
            "--sweep levels must be at least 1"
        );
        ensure!(
            self.held.iter().all(|&n| n > 0),
            "--held counts must be at least 1"
        );
        let most = nofile.saturating_sub(FD_HEADROOM) / 2;
        if let Some(&n) = self.held.iter().find(|&&n| n > most) {
            bail!(
                "--held {n}: each held stream costs a proxy two descriptors (client and upstream \
                 connection), so with an open-file limit of {nofile} the most is {most}"
            );
        }
        let mut targets = Vec::new();
        for &t in &self.targets {
            ensure!(!targets.contains(&t), "--targets names {} twice", t.label());
            targets.push(t);
        }
        Ok(Plan {
            targets,
            scenarios: self.scenarios.clone(),
            concurrency: self.concurrency,
            slice: seconds("duration", self.duration, false)? / self.rounds,
            rounds: self.rounds,
            warmup: seconds("warmup", self.warmup, true)?,
            delay_ms: self.delay_ms,
            busy_calls: self.busy_calls,
            busy_window: self.busy_window,
            held: self.held.clone(),
            broadcasts: self.broadcasts,
            broadcast_interval: seconds("broadcast-interval", self.broadcast_interval, true)?,
            sweep: self.sweep.clone(),
            sweep_slice: seconds("sweep-duration", self.sweep_duration, false)?,
            nginx_workers: self.nginx_workers.clone(),
            shadowcat_args: self.shadowcat_args.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        Args::parse_from(std::iter::once("shadowcat-scale").chain(extra.iter().copied()))
    }

    #[test]
    fn defaults_fit_twenty_thousand_descriptors() {
        let plan = args(&[]).plan(20_000).expect("valid");
        assert_eq!(plan.held, vec![1000, 9900]);
        assert_eq!(plan.slice, Duration::from_secs(5));
        assert_eq!(plan.targets.len(), 4);
    }

    #[test]
    fn too_many_held_streams_are_refused_with_the_reason() {
        let error = args(&["--held", "9990"])
            .plan(20_000)
            .expect_err("over the limit");
        assert!(error.to_string().contains("two descriptors"), "{error}");
        assert!(args(&["--targets", "direct,direct"]).plan(20_000).is_err());
        assert!(
            args(&["--busy-calls", "10", "--busy-window", "100"])
                .plan(20_000)
                .is_err()
        );
    }
}

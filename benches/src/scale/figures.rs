//! What a run found, per scenario and target, reduced to the figures the
//! report prints and plots.

use std::time::Duration;

use crate::stats::{Percentiles, Sample, Summary};

use super::cli::Scenario;
use super::meter::{Reading, Spent};
use super::target::Target;

/// Microseconds per request of `cpu_s` seconds over `requests` (none when
/// nothing succeeded).
fn per_request_us(cpu_s: Option<f64>, requests: u64) -> Option<f64> {
    (requests > 0).then_some(cpu_s? * 1e6 / requests as f64)
}

/// What Redis did for the Redis-backed shadowcat in one scenario.
#[derive(Clone, Copy, Debug)]
pub struct RedisFigures {
    /// Commands per successful call.
    pub commands_per_call: Option<f64>,
    /// redis-server CPU µs per successful call.
    pub cpu_us: Option<f64>,
    /// `used_memory` after the scenario (sessions ended) minus before, per call.
    pub bytes_per_call: Option<f64>,
    /// `DBSIZE` after the scenario.
    pub keys: Option<u64>,
}

/// One target's figures in one scenario (or one sweep level).
#[derive(Debug)]
pub struct Row {
    /// Which target.
    pub target: Target,
    /// Calls, errors, throughput, latency.
    pub summary: Summary,
    /// Proxy CPU µs per call (direct: the upstream's).
    pub proxy_cpu_us: Option<f64>,
    /// Upstream CPU µs per call.
    pub upstream_cpu_us: Option<f64>,
    /// Requests the upstream served per call.
    pub upstream_requests: Option<f64>,
    /// Redis, for shadowcat+redis.
    pub redis: Option<RedisFigures>,
}

/// Every target's figures for one scenario at one concurrency.
#[derive(Debug)]
pub struct Table {
    /// Which scenario (`sweep` levels say `session-json`'s load at `concurrency`).
    pub scenario: Scenario,
    /// Connections.
    pub concurrency: usize,
    /// One row per target, in round-one order.
    pub rows: Vec<Row>,
}

impl Table {
    /// `target`'s row, if it ran.
    pub fn get(&self, target: Target) -> Option<&Row> {
        self.rows.iter().find(|r| r.target == target)
    }
}

/// One target's slices of one scenario, added up.
#[derive(Debug, Default)]
pub struct Accum {
    sample: Sample,
    spent: Option<Spent>,
    first: Option<Reading>,
    last: Option<Reading>,
}

impl Accum {
    /// Adds a slice measured from `before` to `after`; `settled` is read
    /// once its clients have cleaned up (sessions ended).
    pub fn add(&mut self, sample: Sample, before: Reading, after: Reading, settled: Reading) {
        let spent = Spent::between_readings(&before, &after);
        self.spent = Some(self.spent.map_or(spent, |s| s.plus(spent)));
        self.sample.merge(sample);
        self.first.get_or_insert(before);
        self.last = Some(settled);
    }

    /// The row for `target`.
    pub fn into_row(self, target: Target) -> Row {
        let summary = self.sample.summarize();
        let n = summary.requests;
        let spent = self.spent.unwrap_or_default();
        let counters = (
            self.first.and_then(|r| r.counters),
            self.last.and_then(|r| r.counters),
        );
        let redis = match counters {
            (Some(first), Some(last)) => Some(RedisFigures {
                commands_per_call: (n > 0).then(|| spent.redis_commands.unwrap_or(0) as f64 / n as f64),
                cpu_us: per_request_us(spent.redis_cpu_s, n),
                bytes_per_call: (n > 0)
                    .then(|| (last.used_memory as f64 - first.used_memory as f64) / n as f64),
                keys: Some(last.keys),
            }),
            _ => None,
        };
        Row {
            target,
            proxy_cpu_us: per_request_us(spent.proxy_cpu_s, n),
            upstream_cpu_us: per_request_us(spent.upstream_cpu_s, n),
            upstream_requests: (n > 0)
                .then_some(spent.upstream_requests)
                .flatten()
                .map(|r| r as f64 / n as f64),
            redis,
            summary,
        }
    }
}

/// busy-session: one window of calls on the shared session.
#[derive(Debug)]
pub struct Window {
    /// Which target.
    pub target: Target,
    /// Calls completed on the session by the end of this window.
    pub calls_end: u64,
    /// The window's calls: latency, errors, throughput.
    pub summary: Summary,
    /// Proxy CPU µs per call in this window.
    pub proxy_cpu_us: Option<f64>,
    /// Upstream CPU µs per call in this window.
    pub upstream_cpu_us: Option<f64>,
    /// redis-server CPU µs per call in this window.
    pub redis_cpu_us: Option<f64>,
}

impl Window {
    /// A window from its calls and what was spent over it.
    pub fn new(target: Target, calls_end: u64, mut sample: Sample, spent: Spent) -> Window {
        sample.elapsed = spent.wall;
        let summary = sample.summarize();
        let n = summary.requests;
        Window {
            target,
            calls_end,
            proxy_cpu_us: per_request_us(spent.proxy_cpu_s, n),
            upstream_cpu_us: per_request_us(spent.upstream_cpu_s, n),
            redis_cpu_us: per_request_us(spent.redis_cpu_s, n),
            summary,
        }
    }
}

/// held: one target holding `streams` GET streams.
#[derive(Debug)]
pub struct HeldRow {
    /// Which target.
    pub target: Target,
    /// Streams asked for.
    pub streams: u64,
    /// Streams that opened (session and GET both answered).
    pub opened: u64,
    /// Failures opening or ending sessions and streams, by kind, and the
    /// first one's message.
    pub errors: Sample,
    /// Time to open them all.
    pub open_time: Duration,
    /// Proxy resident memory before the sessions were opened, KiB.
    pub rss_before_kib: Option<u64>,
    /// Proxy resident memory with every stream open, KiB.
    pub rss_after_kib: Option<u64>,
    /// Broadcasts sent.
    pub broadcasts: u32,
    /// Events expected (opened × broadcasts) and received.
    pub expected: u64,
    /// Events received.
    pub received: u64,
    /// Receive time − send time, over every event received.
    pub fanout_ms: Percentiles,
    /// Upstream streams still held after the sessions were ended.
    pub leftover_upstream_streams: Option<u64>,
}

impl HeldRow {
    /// Resident KiB per open stream.
    pub fn kib_per_stream(&self) -> Option<f64> {
        let grown = self.rss_after_kib? as f64 - self.rss_before_kib? as f64;
        (self.opened > 0).then(|| grown / self.opened as f64)
    }
}

/// Everything one run measured.
#[derive(Debug, Default)]
pub struct Findings {
    /// One table per slice scenario, in run order.
    pub tables: Vec<Table>,
    /// busy-session windows, per target in order.
    pub busy: Vec<Window>,
    /// held, per target and count.
    pub held: Vec<HeldRow>,
    /// sweep, one table per level.
    pub sweep: Vec<Table>,
}

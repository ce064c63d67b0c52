//! The results: Markdown tables for people, JSON for machines.

use std::fmt::Write as _;

use serde_json::{Map, Value, json};

use shadowcat_bench::procs::Usage;
use shadowcat_bench::redis::RedisStats;
use shadowcat_bench::stats::{Summary, finite};

use crate::bench::Target;
use crate::cli::{Plan, Scenario, Store};

/// Every target's figures for one scenario.
#[derive(Debug)]
pub struct Outcome {
    /// Which scenario.
    pub scenario: Scenario,
    /// One entry per target, direct first, then the stores in `--stores` order.
    pub results: Vec<(Target, Summary)>,
}

impl Outcome {
    /// The figures for `target`, if it ran.
    fn get(&self, target: Target) -> Option<&Summary> {
        self.results.iter().find(|(t, _)| *t == target).map(|(_, s)| s)
    }

    /// The baseline every proxy is compared with.
    fn direct(&self) -> Option<&Summary> {
        self.get(Target::Direct)
    }

    /// Redis over memory, when both ran.
    fn redis_over_memory(&self) -> Option<Ratios> {
        let memory = self.get(Target::Proxy(Store::Memory))?;
        let redis = self.get(Target::Proxy(Store::Redis))?;
        Some(Ratios::of(redis, memory))
    }
}

/// One target's figures divided by another's.
#[derive(Clone, Copy, Debug)]
struct Ratios {
    p50: f64,
    p99: f64,
    rps: f64,
    first_event_p50: f64,
    events_per_s: f64,
}

impl Ratios {
    fn of(num: &Summary, den: &Summary) -> Ratios {
        let ttfe = |s: &Summary| s.first_event_ms.map_or(f64::NAN, |f| f.p50);
        Ratios {
            p50: num.latency_ms.p50 / den.latency_ms.p50,
            p99: num.latency_ms.p99 / den.latency_ms.p99,
            rps: num.rps / den.rps,
            first_event_p50: ttfe(num) / ttfe(den),
            events_per_s: num.events_per_s / den.events_per_s,
        }
    }

    fn to_json(self) -> Value {
        json!({
            "p50": finite(self.p50),
            "p99": finite(self.p99),
            "throughput": finite(self.rps),
            "first_event_p50": finite(self.first_event_p50),
            "events_per_s": finite(self.events_per_s),
        })
    }
}

/// One shadowcat's memory and CPU time.
#[derive(Debug)]
pub struct ProxyUsage {
    /// Which shadowcat.
    pub target: Target,
    /// Once every process was ready, before any load.
    pub idle: Option<Usage>,
    /// After the last scenario.
    pub after: Option<Usage>,
    /// Calls it served (warm-up included, failures too).
    pub calls: u64,
}

/// The private redis-server.
#[derive(Debug)]
pub struct RedisReport {
    /// Once every process was ready, before any load.
    pub idle: Option<Usage>,
    /// After the last scenario.
    pub after: Option<Usage>,
    /// What Redis itself reports after the last scenario.
    pub stats: Option<RedisStats>,
    /// Calls the Redis-backed shadowcat served.
    pub calls: u64,
}

/// CPU seconds spent between `idle` and `after`.
fn cpu_spent(idle: Option<Usage>, after: Option<Usage>) -> Option<f64> {
    Some(after?.cpu_s - idle?.cpu_s)
}

/// "N.N s CPU (N.NNN ms per call)", or `?`.
fn cpu_text(cpu: Option<f64>, calls: u64) -> String {
    cpu.map_or("? CPU".into(), |s| {
        format!(
            "{s:.1} s CPU ({:.3} ms per call over {calls} calls)",
            s * 1000.0 / calls.max(1) as f64
        )
    })
}

/// Everything one run measured.
#[derive(Debug)]
pub struct Report {
    /// The load applied.
    pub plan: Plan,
    /// The stores compared, in order.
    pub stores: Vec<Store>,
    /// One entry per scenario, in run order.
    pub outcomes: Vec<Outcome>,
    /// One entry per shadowcat.
    pub proxy_usage: Vec<ProxyUsage>,
    /// The redis-server, when the Redis store ran.
    pub redis: Option<RedisReport>,
}

impl Report {
    /// The human-readable form: Markdown tables, then memory and any errors.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "| scenario | target | requests | errors | req/s | p50 ms | p90 ms | p99 ms \
             | p50 ×direct | p99 ×direct | req/s ×direct |\n|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
        );
        for o in &self.outcomes {
            let name = o.scenario.name();
            for (target, s) in &o.results {
                let ratios = match (target, o.direct()) {
                    (Target::Proxy(_), Some(d)) => {
                        let r = Ratios::of(s, d);
                        format!("{:.2} | {:.2} | {:.2}", r.p50, r.p99, r.rps)
                    }
                    _ => " | | ".to_owned(),
                };
                let _ = writeln!(
                    out,
                    "| {name} | {} | {} | {ratios} |",
                    target.label(),
                    latency_cells(s)
                );
            }
        }
        let streams: Vec<_> = self
            .outcomes
            .iter()
            .filter(|o| o.scenario == Scenario::Sse)
            .collect();
        if !streams.is_empty() {
            let _ = writeln!(
                out,
                "\n| scenario | target | first event p50 ms | p90 ms | p99 ms | events/s \
                 | first event p50 ×direct | events/s ×direct |\n|---|---|--:|--:|--:|--:|--:|--:|"
            );
            for o in streams {
                let name = o.scenario.name();
                for (target, s) in &o.results {
                    let ratios = match (target, o.direct()) {
                        (Target::Proxy(_), Some(d)) => {
                            let r = Ratios::of(s, d);
                            format!("{:.2} | {:.2}", r.first_event_p50, r.events_per_s)
                        }
                        _ => " | ".to_owned(),
                    };
                    let _ = writeln!(
                        out,
                        "| {name} | {} | {} | {ratios} |",
                        target.label(),
                        stream_cells(s)
                    );
                }
            }
        }
        if self.outcomes.iter().any(|o| o.redis_over_memory().is_some()) {
            let _ = writeln!(
                out,
                "\n| scenario | redis/memory p50 | p99 | req/s | first event p50 | events/s |\
                 \n|---|--:|--:|--:|--:|--:|"
            );
            for o in &self.outcomes {
                if let Some(r) = o.redis_over_memory() {
                    let events = match o.scenario {
                        Scenario::Sse => format!("{:.2} | {:.2}", r.first_event_p50, r.events_per_s),
                        Scenario::Json => "- | -".to_owned(),
                    };
                    let _ = writeln!(
                        out,
                        "| {} | {:.2} | {:.2} | {:.2} | {events} |",
                        o.scenario.name(),
                        r.p50,
                        r.p99,
                        r.rps
                    );
                }
            }
        }
        out.push('\n');
        for u in &self.proxy_usage {
            let _ = writeln!(
                out,
                "{}: RSS {} idle, {} after load (peak {}); {}",
                u.target.label(),
                kib(u.idle.map(|m| m.rss_kib)),
                kib(u.after.map(|m| m.rss_kib)),
                kib(u.after.map(|m| m.peak_kib)),
                cpu_text(cpu_spent(u.idle, u.after), u.calls),
            );
        }
        if let Some(r) = &self.redis {
            let stats = r.stats.as_ref().map_or("INFO unavailable".to_owned(), |s| {
                format!(
                    "used_memory {} (peak {}), {} keys left",
                    s.used_memory, s.used_memory_peak, s.keys
                )
            });
            let _ = writeln!(
                out,
                "redis-server: RSS {} idle, {} after load (peak {}); {}; {stats}",
                kib(r.idle.map(|m| m.rss_kib)),
                kib(r.after.map(|m| m.rss_kib)),
                kib(r.after.map(|m| m.peak_kib)),
                cpu_text(cpu_spent(r.idle, r.after), r.calls),
            );
        }
        for o in &self.outcomes {
            for (target, s) in &o.results {
                if s.errors > 0 {
                    let _ = writeln!(
                        out,
                        "errors in {} / {}: {:?}; first: {}",
                        o.scenario.name(),
                        target.label(),
                        s.error_kinds,
                        s.first_error.as_deref().unwrap_or("?")
                    );
                }
            }
        }
        out
    }

    /// The machine-readable form.
    pub fn to_json(&self) -> Value {
        let scenarios: Vec<Value> = self
            .outcomes
            .iter()
            .map(|o| {
                let mut entry = Map::new();
                entry.insert("scenario".into(), o.scenario.name().into());
                let mut ratios = Map::new();
                for (target, s) in &o.results {
                    entry.insert(target.key().into(), s.to_json());
                    if let (Target::Proxy(_), Some(d)) = (target, o.direct()) {
                        ratios.insert(
                            format!("{}_over_direct", target.key()),
                            Ratios::of(s, d).to_json(),
                        );
                    }
                }
                if let Some(r) = o.redis_over_memory() {
                    ratios.insert("redis_over_memory".into(), r.to_json());
                }
                entry.insert("ratios".into(), ratios.into());
                entry.into()
            })
            .collect();
        let usage = |m: Option<Usage>| {
            m.map(|m| json!({"rss_kib": m.rss_kib, "peak_kib": m.peak_kib, "cpu_s": m.cpu_s}))
        };
        let proxy_usage: Map<String, Value> = self
            .proxy_usage
            .iter()
            .map(|u| {
                (
                    u.target.key().to_owned(),
                    json!({
                        "idle": usage(u.idle),
                        "after": usage(u.after),
                        "calls": u.calls,
                        "cpu_s_under_load": cpu_spent(u.idle, u.after),
                    }),
                )
            })
            .collect();
        let redis = self.redis.as_ref().map(|r| {
            json!({
                "idle": usage(r.idle),
                "after": usage(r.after),
                "cpu_s_under_load": cpu_spent(r.idle, r.after),
                "used_memory_human": r.stats.as_ref().map(|s| &s.used_memory),
                "used_memory_peak_human": r.stats.as_ref().map(|s| &s.used_memory_peak),
                "keys": r.stats.as_ref().map(|s| s.keys),
            })
        });
        json!({
            "plan": {
                "concurrency": self.plan.concurrency,
                "seconds_per_target": self.plan.slice.as_secs_f64() * f64::from(self.plan.rounds),
                "rounds": self.plan.rounds,
                "warmup_seconds": self.plan.warmup.as_secs_f64(),
                "sse_steps": self.plan.sse_steps,
                "sse_seconds": self.plan.sse_seconds,
                "stores": self.stores.iter().map(|s| s.name()).collect::<Vec<_>>(),
            },
            "scenarios": scenarios,
            "shadowcat_usage": proxy_usage,
            "redis_server": redis,
        })
    }
}

/// requests | errors | req/s | p50 | p90 | p99
fn latency_cells(s: &Summary) -> String {
    let l = s.latency_ms;
    format!(
        "{} | {} | {:.0} | {:.2} | {:.2} | {:.2}",
        s.requests, s.errors, s.rps, l.p50, l.p90, l.p99
    )
}

/// first event p50 | p90 | p99 | events/s
fn stream_cells(s: &Summary) -> String {
    match s.first_event_ms {
        Some(f) => format!(
            "{:.2} | {:.2} | {:.2} | {:.0}",
            f.p50, f.p90, f.p99, s.events_per_s
        ),
        None => format!("- | - | - | {:.0}", s.events_per_s),
    }
}

/// A KiB figure as MiB, or `?`.
fn kib(v: Option<u64>) -> String {
    v.map_or("?".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

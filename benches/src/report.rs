//! The results: a Markdown table for people, JSON for machines.

use std::fmt::Write as _;

use serde_json::{Value, json};

use crate::cli::{Plan, Scenario};
use crate::procs::Memory;
use crate::stats::{Summary, finite};

/// Both targets' figures for one scenario.
#[derive(Debug)]
pub struct Outcome {
    /// Which scenario.
    pub scenario: Scenario,
    /// Straight to the upstream.
    pub direct: Summary,
    /// Through shadowcat.
    pub proxy: Summary,
}

impl Outcome {
    /// proxy/direct for p50, p99 and throughput.
    fn ratios(&self) -> (f64, f64, f64) {
        let (d, p) = (&self.direct, &self.proxy);
        (
            p.latency_ms.p50 / d.latency_ms.p50,
            p.latency_ms.p99 / d.latency_ms.p99,
            p.rps / d.rps,
        )
    }
}

/// Everything one run measured.
#[derive(Debug)]
pub struct Report {
    /// The load applied.
    pub plan: Plan,
    /// One entry per scenario, in run order.
    pub outcomes: Vec<Outcome>,
    /// shadowcat's memory once ready, before any load.
    pub memory_before: Option<Memory>,
    /// shadowcat's memory after the last scenario.
    pub memory_after: Option<Memory>,
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
            let (p50, p99, rps) = o.ratios();
            let name = o.scenario.name();
            let _ = writeln!(out, "| {name} | direct | {} | | | |", latency_cells(&o.direct));
            let _ = writeln!(
                out,
                "| {name} | shadowcat | {} | {p50:.2} | {p99:.2} | {rps:.2} |",
                latency_cells(&o.proxy)
            );
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
                let (d, p) = (&o.direct, &o.proxy);
                let name = o.scenario.name();
                let _ = writeln!(out, "| {name} | direct | {} | | |", stream_cells(d));
                let ttfe = |s: &Summary| s.first_event_ms.map_or(f64::NAN, |f| f.p50);
                let _ = writeln!(
                    out,
                    "| {name} | shadowcat | {} | {:.2} | {:.2} |",
                    stream_cells(p),
                    ttfe(p) / ttfe(d),
                    p.events_per_s / d.events_per_s
                );
            }
        }
        let _ = writeln!(
            out,
            "\nshadowcat memory: {} idle, {} after load (peak {})",
            kib(self.memory_before.map(|m| m.rss_kib)),
            kib(self.memory_after.map(|m| m.rss_kib)),
            kib(self.memory_after.map(|m| m.peak_kib)),
        );
        for o in &self.outcomes {
            for (target, s) in [("direct", &o.direct), ("shadowcat", &o.proxy)] {
                if s.errors > 0 {
                    let _ = writeln!(
                        out,
                        "errors in {} / {target}: {:?}; first: {}",
                        o.scenario.name(),
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
                let (p50, p99, rps) = o.ratios();
                json!({
                    "scenario": o.scenario.name(),
                    "direct": o.direct.to_json(),
                    "shadowcat": o.proxy.to_json(),
                    "ratio_shadowcat_over_direct": {
                        "p50": finite(p50), "p99": finite(p99), "throughput": finite(rps)
                    },
                })
            })
            .collect();
        let memory = |m: Option<Memory>| m.map(|m| json!({"rss_kib": m.rss_kib, "peak_kib": m.peak_kib}));
        json!({
            "plan": {
                "concurrency": self.plan.concurrency,
                "seconds_per_target": self.plan.slice.as_secs_f64() * f64::from(self.plan.rounds),
                "rounds": self.plan.rounds,
                "warmup_seconds": self.plan.warmup.as_secs_f64(),
                "sse_steps": self.plan.sse_steps,
                "sse_seconds": self.plan.sse_seconds,
            },
            "scenarios": scenarios,
            "shadowcat_memory": {"idle": memory(self.memory_before), "after": memory(self.memory_after)},
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

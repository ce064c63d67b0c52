//! Samples collected by workers, merged per target, and their summary.
//!
//! Latencies are kept as plain microsecond vectors and sorted once: a few
//! hundred thousand `u32`s is a couple of MiB, and exact percentiles beat a
//! histogram's buckets at this size.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::client::Timing;
use crate::error::CallError;

/// What one or more workers measured against one target.
#[derive(Debug, Default)]
pub struct Sample {
    /// Request sent -> response received, per successful call, in µs.
    pub latency_us: Vec<u32>,
    /// Request sent -> first message event, per successful SSE call, in µs.
    pub first_event_us: Vec<u32>,
    /// Notifications received in successful calls.
    pub notifications: u64,
    /// Failures by [`CallError::label`].
    pub errors: BTreeMap<&'static str, u64>,
    /// The first failure's message, to say what went wrong.
    pub first_error: Option<String>,
    /// Wall time under load.
    pub elapsed: Duration,
}

impl Sample {
    /// Records one successful call.
    pub fn record(&mut self, timing: Timing) {
        self.latency_us.push(micros(timing.response));
        if let Some(first) = timing.first_event {
            self.first_event_us.push(micros(first));
        }
        self.notifications += u64::from(timing.notifications);
    }

    /// Records one failure.
    pub fn fail(&mut self, error: &CallError) {
        *self.errors.entry(error.label()).or_default() += 1;
        self.first_error.get_or_insert_with(|| error.to_string());
    }

    /// Adds `other`'s calls (and its wall time) to this one.
    pub fn merge(&mut self, other: Sample) {
        self.latency_us.extend(other.latency_us);
        self.first_event_us.extend(other.first_event_us);
        self.notifications += other.notifications;
        for (label, n) in other.errors {
            *self.errors.entry(label).or_default() += n;
        }
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.elapsed += other.elapsed;
    }

    /// Sorts and reduces the sample to its figures.
    pub fn summarize(mut self) -> Summary {
        self.latency_us.sort_unstable();
        self.first_event_us.sort_unstable();
        let secs = self.elapsed.as_secs_f64().max(f64::EPSILON);
        Summary {
            requests: self.latency_us.len() as u64,
            errors: self.errors.values().sum(),
            rps: self.latency_us.len() as f64 / secs,
            latency_ms: Percentiles::of(&self.latency_us),
            first_event_ms: (!self.first_event_us.is_empty()).then(|| Percentiles::of(&self.first_event_us)),
            events_per_s: self.notifications as f64 / secs,
            error_kinds: self.errors,
            first_error: self.first_error,
        }
    }
}

/// The reduced figures for one scenario and target.
#[derive(Debug)]
pub struct Summary {
    /// Successful calls.
    pub requests: u64,
    /// Failed calls (and failed session setups).
    pub errors: u64,
    /// Successful calls per second of wall time.
    pub rps: f64,
    /// Time to the response.
    pub latency_ms: Percentiles,
    /// Time to the first message event (SSE answers only).
    pub first_event_ms: Option<Percentiles>,
    /// Notifications received per second.
    pub events_per_s: f64,
    /// Failures by kind.
    pub error_kinds: BTreeMap<&'static str, u64>,
    /// The first failure's message.
    pub first_error: Option<String>,
}

impl Summary {
    /// The machine-readable form.
    pub fn to_json(&self) -> Value {
        json!({
            "requests": self.requests,
            "errors": self.errors,
            "error_kinds": self.error_kinds,
            "first_error": self.first_error,
            "throughput_rps": self.rps,
            "latency_ms": self.latency_ms.to_json(),
            "first_event_ms": self.first_event_ms.map(Percentiles::to_json),
            "events_per_s": self.events_per_s,
        })
    }
}

/// Latency percentiles in milliseconds (NaN when there were no samples).
#[derive(Clone, Copy, Debug)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest.
    pub max: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles of sorted microsecond samples.
    pub fn of(sorted_us: &[u32]) -> Self {
        let at = |q: f64| match sorted_us.len() {
            0 => f64::NAN,
            n => {
                let rank = (q * n as f64).ceil() as usize;
                f64::from(sorted_us[rank.clamp(1, n) - 1]) / 1000.0
            }
        };
        Percentiles {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: at(1.0),
        }
    }

    /// The machine-readable form (null for NaN).
    pub fn to_json(self) -> Value {
        json!({"p50": finite(self.p50), "p90": finite(self.p90), "p99": finite(self.p99), "max": finite(self.max)})
    }
}

/// `None` (JSON null) instead of NaN, which JSON cannot carry.
pub fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// A duration in whole microseconds, saturating at ~71 minutes.
fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let us: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        let p = Percentiles::of(&us);
        assert_eq!((p.p50, p.p90, p.p99, p.max), (50.0, 90.0, 99.0, 100.0));
        assert!(Percentiles::of(&[]).p50.is_nan());
        assert_eq!(Percentiles::of(&[7000]).p99, 7.0);
    }

    #[test]
    fn merge_adds_calls_errors_and_time() {
        let mut a = Sample {
            elapsed: Duration::from_secs(1),
            ..Sample::default()
        };
        a.record(Timing {
            first_event: None,
            response: Duration::from_millis(2),
            notifications: 0,
        });
        let mut b = Sample {
            elapsed: Duration::from_secs(1),
            ..Sample::default()
        };
        b.fail(&CallError::Protocol("x".into()));
        a.merge(b);
        let s = a.summarize();
        assert_eq!((s.requests, s.errors), (1, 1));
        assert!((s.rps - 0.5).abs() < 1e-9);
        assert_eq!(s.first_error.as_deref(), Some("protocol: x"));
    }
}

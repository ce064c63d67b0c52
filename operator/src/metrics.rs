//! The operator's metrics: reconciles, failures by reason, duration.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Failure labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    /// [`crate::error::Error::metric_label`].
    pub reason: &'static str,
}

/// Admission outcomes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// `injected`, `already`, `refused`, `no_proxy`, `not_applied` (these
    /// three admitted without the sidecar), `denied_refused`,
    /// `denied_no_proxy`, `denied_not_applied` (the same, refused instead
    /// under failurePolicy Fail), `error` (answered 500, so the failure
    /// policy applies) or `invalid`.
    pub outcome: &'static str,
}

/// Every metric the operator exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Reconciles started.
    pub reconciles: Counter,
    /// Reconciles that failed, by reason.
    pub failures: Family<Reason, Counter>,
    /// Reconcile duration.
    pub duration: Histogram,
    /// Pods the webhook saw, by outcome.
    pub admissions: Family<Outcome, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("shadowcat_operator");
        let reconciles = Counter::default();
        registry.register("reconciles", "Reconciles started", reconciles.clone());
        let failures = Family::default();
        registry.register(
            "reconcile_failures",
            "Reconciles that failed, by reason",
            failures.clone(),
        );
        let duration = Histogram::new(exponential_buckets(0.005, 2.0, 12));
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration",
            duration.clone(),
        );
        let admissions = Family::default();
        registry.register(
            "admissions",
            "Pods the injection webhook saw, by outcome",
            admissions.clone(),
        );
        Self {
            registry,
            reconciles,
            failures,
            duration,
            admissions,
        }
    }
}

impl Metrics {
    /// Counts one admission.
    pub fn admitted(&self, outcome: &'static str) {
        self.admissions.get_or_create(&Outcome { outcome }).inc();
    }

    /// Prometheus text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

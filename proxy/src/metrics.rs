//! The Prometheus registry and Shadowcat's metric set. Names carry the
//! `shadowcat_` prefix and their unit; labels have bounded values.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of a finished HTTP request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// HTTP method.
    pub method: &'static str,
    /// HTTP status code.
    pub status: u16,
}

/// Labels of a request-duration observation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    /// HTTP method.
    pub method: &'static str,
}

/// Labels of a failure.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// [`crate::error::Error::label`].
    pub reason: &'static str,
}

/// Every metric Shadowcat exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Requests on the MCP endpoint by method and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Time to response headers, by method.
    pub request_duration: Family<MethodLabels, Histogram>,
    /// Requests refused or failed, by reason.
    pub errors: Family<ErrorLabels, Counter>,
    /// Sessions created and not yet ended by this replica.
    pub sessions_active: Gauge,
    /// Client SSE connections open.
    pub sse_streams_active: Gauge,
    /// Events sent on connections that resumed with `Last-Event-ID`.
    pub events_replayed: Counter,
    /// Resumptions whose `Last-Event-ID` named a stream no longer known.
    pub replay_misses: Counter,
    /// Events pumped from the upstream into event logs.
    pub events_pumped: Counter,
    /// Requests forwarded to the replica owning their session.
    pub forwards: Counter,
    /// Sessions taken over from a replica that was gone.
    pub adoptions: Counter,
    /// Adoptions another replica won first.
    pub adoptions_lost: Counter,
    /// Upstream sessions re-created after the upstream forgot them.
    pub reinitializations: Counter,
    /// Event streams relayed without a log because the store was down.
    pub store_bypasses: Counter,
}

impl Metrics {
    /// A registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("shadowcat");
        let requests = Family::default();
        registry.register("http_requests", "Requests on the MCP endpoint", requests.clone());
        let request_duration = Family::<MethodLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        registry.register(
            "http_request_duration_seconds",
            "Time from request to response headers",
            request_duration.clone(),
        );
        let errors = Family::default();
        registry.register("errors", "Requests refused or failed, by reason", errors.clone());
        let sessions_active = Gauge::default();
        registry.register(
            "sessions_active",
            "Sessions open on this replica",
            sessions_active.clone(),
        );
        let sse_streams_active = Gauge::default();
        registry.register(
            "sse_streams_active",
            "Client SSE connections open",
            sse_streams_active.clone(),
        );
        let events_replayed = Counter::default();
        registry.register(
            "sse_events_replayed",
            "Events sent on connections resumed with Last-Event-ID",
            events_replayed.clone(),
        );
        let replay_misses = Counter::default();
        registry.register(
            "sse_replay_misses",
            "Resumptions from an unknown or expired event id",
            replay_misses.clone(),
        );
        let events_pumped = Counter::default();
        registry.register(
            "sse_events_pumped",
            "Upstream events written to event logs",
            events_pumped.clone(),
        );
        let forwards = Counter::default();
        registry.register(
            "peer_forwards",
            "Requests forwarded to the owning replica",
            forwards.clone(),
        );
        let adoptions = Counter::default();
        registry.register(
            "session_adoptions",
            "Sessions taken over from a lost replica",
            adoptions.clone(),
        );
        let adoptions_lost = Counter::default();
        registry.register(
            "session_adoptions_lost",
            "Adoptions another replica won first",
            adoptions_lost.clone(),
        );
        let reinitializations = Counter::default();
        registry.register(
            "upstream_reinitializations",
            "Upstream sessions re-created after the upstream forgot them",
            reinitializations.clone(),
        );
        let store_bypasses = Counter::default();
        registry.register(
            "sse_store_bypasses",
            "Event streams relayed without a log while the store was unreachable",
            store_bypasses.clone(),
        );
        Self {
            store_bypasses,
            forwards,
            adoptions,
            adoptions_lost,
            reinitializations,
            registry,
            requests,
            request_duration,
            errors,
            sessions_active,
            sse_streams_active,
            events_replayed,
            replay_misses,
            events_pumped,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

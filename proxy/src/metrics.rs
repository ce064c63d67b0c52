//! The Prometheus registry and Shadowcat's metric set. Names carry the
//! `shadowcat_` prefix and their unit; labels have bounded values.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

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

/// Labels of a resumption that could not give every missed event.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MissLabels {
    /// `gone` (unknown or expired) or `trimmed`.
    pub reason: &'static str,
}

/// Labels naming a listener.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    /// `public`, `peer` or `admin`.
    pub listener: &'static str,
}

/// Labels of a token check.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthLabels {
    /// `ok`, or why the request was refused (`missing`, `expired`, ...).
    pub outcome: &'static str,
}

/// Labels of a policy decision.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// `client` (client to server) or `server`.
    pub direction: &'static str,
    /// `allow`, `deny`, `hidden`, `rate_limited` or `hook_rejected`.
    pub decision: &'static str,
    /// The rule, limit or hook that decided; `default` when none did. Ids
    /// come from the policy, so the set is bounded by it.
    pub rule: String,
}

/// Labels naming a policy part (rule, limit or hook) and an outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyPartLabels {
    /// The id from the policy.
    pub id: String,
    /// What happened (`pass`, `modify`, `reject`, `error`, `timeout`, ...).
    pub outcome: &'static str,
}

/// Labels of a policy reload.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `ok` or `invalid`.
    pub result: &'static str,
}

/// Labels of a key fetch.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JwksLabels {
    /// `ok` or `error`.
    pub result: &'static str,
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
    /// Sessions this replica owns.
    pub sessions_active: Gauge,
    /// New sessions (or adoptions) refused: at the cap or over the rate.
    pub sessions_refused: Counter,
    /// Sessions this replica gave up: expired, or claimed by another replica.
    pub sessions_lost: Counter,
    /// Client SSE connections open.
    pub sse_streams_active: Gauge,
    /// Events sent on connections that resumed with `Last-Event-ID`.
    pub events_replayed: Counter,
    /// Resumptions that could not give every missed event, by reason.
    pub replay_misses: Family<MissLabels, Counter>,
    /// Events pumped from the upstream into event logs.
    pub events_pumped: Counter,
    /// Upstream events refused for their size (the stream ended).
    pub events_too_large: Counter,
    /// Requests forwarded to the replica owning their session.
    pub forwards: Counter,
    /// Sessions taken over from a replica that was gone.
    pub adoptions: Counter,
    /// Adoptions another replica won first.
    pub adoptions_lost: Counter,
    /// Requests a lost writer left unanswered, answered with an error.
    pub orphans_answered: Counter,
    /// Upstream sessions re-created after the upstream forgot them.
    pub reinitializations: Counter,
    /// Upstream sessions ended because this replica gave them up.
    pub upstream_sessions_ended: Counter,
    /// Event streams relayed without a log because the store was down.
    pub store_bypasses: Counter,
    /// 1 while the store answers, 0 while it does not.
    pub store_up: Gauge,
    /// Bytes of events the memory store holds.
    pub store_bytes: Gauge,
    /// Connections closed at once because a listener was at its cap.
    pub connections_refused: Family<ListenerLabels, Counter>,
    /// Connections open, by listener.
    pub connections_active: Family<ListenerLabels, Gauge>,
    /// Token checks by outcome.
    pub auth_checks: Family<AuthLabels, Counter>,
    /// Fetches of the issuer's signing keys, by result.
    pub auth_key_fetches: Family<JwksLabels, Counter>,
    /// Policy decisions by direction, decision and deciding rule.
    pub policy_decisions: Family<DecisionLabels, Counter>,
    /// Rule expressions that failed to evaluate (they do not match).
    pub policy_rule_errors: Family<PolicyPartLabels, Counter>,
    /// Rate-limit checks by limit and outcome (`ok`, `limited`,
    /// `store_error`).
    pub policy_rate_limits: Family<PolicyPartLabels, Counter>,
    /// Hook calls by hook and outcome.
    pub policy_hook_calls: Family<PolicyPartLabels, Counter>,
    /// Policy reloads by result.
    pub policy_reloads: Family<ReloadLabels, Counter>,
    /// Audit events that could not be written.
    pub audit_write_errors: Counter,
}

fn register<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

impl Metrics {
    /// A registry with every metric registered.
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("shadowcat");
        let request_duration = Family::<MethodLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        Self {
            requests: register(
                &mut r,
                "http_requests",
                "Requests on the MCP endpoint",
                Family::default(),
            ),
            request_duration: register(
                &mut r,
                "http_request_duration_seconds",
                "Time from request to response headers",
                request_duration,
            ),
            errors: register(
                &mut r,
                "errors",
                "Requests refused or failed, by reason",
                Family::default(),
            ),
            sessions_active: register(
                &mut r,
                "sessions_active",
                "Sessions this replica owns",
                Gauge::default(),
            ),
            sessions_refused: register(
                &mut r,
                "sessions_refused",
                "New sessions or adoptions refused at the session cap or rate",
                Counter::default(),
            ),
            sessions_lost: register(
                &mut r,
                "sessions_lost",
                "Sessions given up: expired, or claimed by another replica",
                Counter::default(),
            ),
            sse_streams_active: register(
                &mut r,
                "sse_streams_active",
                "Client SSE connections open",
                Gauge::default(),
            ),
            events_replayed: register(
                &mut r,
                "sse_events_replayed",
                "Events sent on connections resumed with Last-Event-ID",
                Counter::default(),
            ),
            replay_misses: register(
                &mut r,
                "sse_replay_misses",
                "Resumptions that could not give every missed event, by reason",
                Family::default(),
            ),
            events_pumped: register(
                &mut r,
                "sse_events_pumped",
                "Upstream events written to event logs",
                Counter::default(),
            ),
            events_too_large: register(
                &mut r,
                "sse_events_too_large",
                "Upstream events over the size limit (their stream ended with an error)",
                Counter::default(),
            ),
            forwards: register(
                &mut r,
                "peer_forwards",
                "Requests forwarded to the owning replica",
                Counter::default(),
            ),
            adoptions: register(
                &mut r,
                "session_adoptions",
                "Sessions taken over from a lost replica",
                Counter::default(),
            ),
            adoptions_lost: register(
                &mut r,
                "session_adoptions_lost",
                "Adoptions another replica won first",
                Counter::default(),
            ),
            orphans_answered: register(
                &mut r,
                "orphaned_requests_answered",
                "Requests a lost writer left unanswered, answered with an error",
                Counter::default(),
            ),
            reinitializations: register(
                &mut r,
                "upstream_reinitializations",
                "Upstream sessions re-created after the upstream forgot them",
                Counter::default(),
            ),
            upstream_sessions_ended: register(
                &mut r,
                "upstream_sessions_ended",
                "Upstream sessions ended because this replica gave them up",
                Counter::default(),
            ),
            store_bypasses: register(
                &mut r,
                "sse_store_bypasses",
                "Event streams relayed without a log while the store was unreachable",
                Counter::default(),
            ),
            store_up: register(&mut r, "store_up", "1 while the store answers", Gauge::default()),
            store_bytes: register(
                &mut r,
                "store_event_bytes",
                "Bytes of events the memory store holds",
                Gauge::default(),
            ),
            connections_refused: register(
                &mut r,
                "connections_refused",
                "Connections closed at once because their listener was at its cap",
                Family::default(),
            ),
            connections_active: register(
                &mut r,
                "connections_active",
                "Open connections by listener",
                Family::default(),
            ),
            auth_checks: register(
                &mut r,
                "auth_checks",
                "Access-token checks by outcome (ok, or why the request was refused)",
                Family::default(),
            ),
            auth_key_fetches: register(
                &mut r,
                "auth_key_fetches",
                "Fetches of the authorization server's signing keys by result",
                Family::default(),
            ),
            policy_decisions: register(
                &mut r,
                "policy_decisions",
                "Policy decisions on MCP messages by direction, decision and deciding rule",
                Family::default(),
            ),
            policy_rule_errors: register(
                &mut r,
                "policy_rule_errors",
                "Policy expressions that failed to evaluate, by id (they count as not matching)",
                Family::default(),
            ),
            policy_rate_limits: register(
                &mut r,
                "policy_rate_limits",
                "Rate-limit checks by limit and outcome",
                Family::default(),
            ),
            policy_hook_calls: register(
                &mut r,
                "policy_hook_calls",
                "Policy hook calls by hook and outcome",
                Family::default(),
            ),
            policy_reloads: register(
                &mut r,
                "policy_reloads",
                "Policy reloads by result",
                Family::default(),
            ),
            audit_write_errors: register(
                &mut r,
                "audit_write_errors",
                "Audit events that could not be written",
                Counter::default(),
            ),
            registry: r,
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

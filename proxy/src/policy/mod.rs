//! Policy: the one decision point every MCP message passes, in both
//! directions.
//!
//! - Client to server: each message of a POST (a batch message by message),
//!   after validation and before the upstream: tool renames mapped back and
//!   hidden tools answered as unknown, then rules, then rate limits, then
//!   hooks.
//! - Server to client: each JSON answer, and each event of every stream as
//!   the pump reads it, before it is stored (so a replay never shows what a
//!   rule withheld): list results filtered and renamed, then rules, then
//!   hooks. A server request a rule refuses is answered upstream with an
//!   error, so the server never waits for it.
//!
//! Events are decided one at a time as they come: a stream is never held
//! back for a later event. Every decision is counted; an audit event is
//! written per request/response pair and per refused message.
//!
//! [`Policies`] holds the current policy and swaps it on reload: a message
//! is decided wholly by the policy that was current when it arrived.

mod audit;
mod client;
mod eval;
pub mod hook;
mod limit;
mod reload;
mod server;
mod tools;

pub use self::reload::{RELOAD_INTERVAL, watch_file};

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cel::Env;
use serde_json::{Value, json};
use shadowcat_crds::{Decision, FailurePolicy, PolicyConfig, PolicyError};

use self::audit::Audit;
use self::eval::{Activation, Expr, Facts, kind_name, union_of_reads};
use self::hook::{Answer, Hook};
use self::limit::{Limit, Limited};
use self::tools::Tools;
use crate::auth::{AsClient, Identity};
use crate::mcp::jsonrpc::{Kind, code};
use crate::metrics::{DecisionLabels, Metrics, PolicyPartLabels};
use crate::store::Store;

/// Which way a message goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the client to the MCP server.
    Client,
    /// From the MCP server to the client.
    Server,
}

/// What the messages of one request or stream share.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// Shadowcat's session id; empty without a session (2026-07-28).
    pub session: String,
    /// The protocol version.
    pub version: String,
    /// Who is on the client side, when auth is on.
    pub identity: Option<Arc<Identity>>,
}

impl Scope {
    /// A session's scope. Without the request's own `identity` (on the
    /// standalone stream), the principal comes from the session record:
    /// issuer and subject, no claims.
    pub fn for_session(session: &crate::session::Session, identity: Option<Arc<Identity>>) -> Self {
        let identity = identity.or_else(|| {
            use base64::Engine;
            let decode = |part: &str| {
                let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(part)
                    .ok()?;
                String::from_utf8(bytes).ok()
            };
            let (issuer, subject) = session.record.principal.as_deref()?.split_once('.')?;
            Some(Arc::new(Identity {
                issuer: decode(issuer)?,
                subject: decode(subject)?,
                scopes: Default::default(),
                headers: Default::default(),
                upstream_token: None,
                claims: Default::default(),
                principal: Default::default(),
            }))
        });
        Self {
            session: session.record.id.clone(),
            version: session.version.as_str().to_owned(),
            identity,
        }
    }
}

/// A client request let through, remembered until its response passes.
#[derive(Clone, Debug)]
pub struct Pending {
    /// Its id.
    pub id: Value,
    /// Its method.
    pub method: String,
    /// The tool, prompt or resource it names, upstream's name.
    pub name: String,
    /// The rule that let it through, or `default`.
    pub rule: String,
    /// When it arrived.
    pub started: Instant,
    /// Its size in bytes.
    pub bytes: usize,
    /// Its arguments as audit writes them, when it does.
    pub arguments: Option<Value>,
}

/// The requests of one POST awaiting their responses.
pub type Exchange = Vec<Pending>;

/// What became of a POST body.
#[derive(Debug, Default)]
pub struct Admitted {
    /// The body to forward, rewritten where a message changed; `None` when
    /// no message is left to forward.
    pub forward: Option<Bytes>,
    /// Error responses for refused requests, to merge into the answer.
    pub refusals: Vec<Value>,
    /// The error for a refused notification or response (it has no id to
    /// answer), when the first refused message was one.
    pub refused_other: Option<Value>,
    /// Set when a single-message POST was refused for a rate limit.
    pub retry_after: Option<Duration>,
    /// The requests forwarded.
    pub pending: Exchange,
}

/// What becomes of one message from the server.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// Passes unchanged.
    Same,
    /// Passes as this instead.
    Replace(String),
    /// Withheld.
    Drop,
    /// The server's requests withheld are answered with `replies` (JSON-RPC
    /// error responses to POST upstream); `rest` is what of the event still
    /// goes to the client (a batch), if anything.
    Answer {
        /// One error response per withheld request.
        replies: Vec<Bytes>,
        /// The event's remaining messages.
        rest: Option<String>,
    },
}

/// A refusal.
#[derive(Debug)]
struct Refusal {
    /// `deny`, `hidden`, `rate_limited`, `hook_rejected`, `hook_failed`.
    decision: &'static str,
    /// Who decided.
    by: String,
    code: i64,
    message: String,
    data: Option<Value>,
    retry_after: Option<Duration>,
}

/// A compiled rule.
#[derive(Debug)]
struct Rule {
    id: String,
    when: Expr,
    action: Decision,
    message: Option<String>,
}

/// One loaded policy.
pub struct Policy {
    default: Decision,
    rules: Vec<Rule>,
    tools: Tools,
    limits: Vec<Limit>,
    limit_failure: FailurePolicy,
    hooks: Vec<Hook>,
    audit: Option<Audit>,
    env: Arc<Env>,
    reads: BTreeSet<&'static str>,
    store: Arc<dyn Store>,
    client: AsClient,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("default", &self.default)
            .field("rules", &self.rules)
            .field("limits", &self.limits)
            .field("hooks", &self.hooks)
            .finish_non_exhaustive()
    }
}

/// The methods whose results list things a client may be refused, with the
/// request a listed item stands for and the field naming it.
const LISTS: &[(&str, &str, &str, &str)] = &[
    ("tools/list", "tools", "tools/call", "name"),
    ("prompts/list", "prompts", "prompts/get", "name"),
    ("resources/list", "resources", "resources/read", "uri"),
    (
        "resources/templates/list",
        "resourceTemplates",
        "resources/read",
        "uriTemplate",
    ),
];

impl Policy {
    /// Compiles a checked config: CEL programs, hook secrets, the audit sink.
    pub fn new(
        config: &PolicyConfig,
        store: Arc<dyn Store>,
        client: AsClient,
        metrics: Arc<Metrics>,
    ) -> Result<Self, PolicyError> {
        config.check()?;
        let rules = each(&config.rules, "rules", |r, at| {
            Ok(Rule {
                id: r.id.clone(),
                when: Expr::compile(&format!("{at}.when"), &r.when)?,
                action: r.action,
                message: r.message.clone(),
            })
        })?;
        let limits = each(&config.rate_limits, "rateLimits", Limit::new)?;
        let hooks = each(&config.hooks, "hooks", Hook::new)?;
        let audit = config
            .audit
            .as_ref()
            .map(|a| Audit::new(a, metrics.clone()))
            .transpose()?;
        let reads = union_of_reads(
            rules
                .iter()
                .map(|r| &r.when)
                .chain(limits.iter().filter_map(|l| l.when.as_ref()))
                .chain(hooks.iter().filter_map(|h| h.when.as_ref()))
                .chain(audit.iter().filter_map(|a| a.redact.as_ref())),
        );
        Ok(Self {
            default: config.default.unwrap_or_default(),
            rules,
            tools: Tools::new(config.tools.as_ref()),
            limits,
            limit_failure: config.rate_limit_failure.unwrap_or(FailurePolicy::Open),
            hooks,
            audit,
            env: Arc::new(Env::stdlib()),
            reads,
            store,
            client,
            metrics,
        })
    }

    /// Whether any message of the server needs looking at: otherwise JSON
    /// answers and stream events pass straight through, unread.
    pub fn reads_answers(&self) -> bool {
        !self.rules.is_empty() || !self.tools.is_empty() || !self.hooks.is_empty() || self.audit.is_some()
    }

    /// The first rule whose expression holds, else the default.
    fn decide(&self, activation: &Activation<'_>) -> (Decision, &str) {
        for rule in &self.rules {
            match activation.matches(&rule.when) {
                Ok(true) => return (rule.action, &rule.id),
                Ok(false) => {}
                Err(why) => {
                    tracing::debug!(rule = %rule.id, error = %why, "policy rule did not evaluate; not a match");
                    self.metrics
                        .policy_rule_errors
                        .get_or_create(&PolicyPartLabels {
                            id: rule.id.clone(),
                            outcome: "error",
                        })
                        .inc();
                }
            }
        }
        (self.default, "default")
    }

    /// Calls each hook that applies, in order; `Ok(true)` when one changed
    /// the message.
    async fn run_hooks(
        &self,
        scope: &Scope,
        direction: Direction,
        kind: Kind,
        method: &str,
        name: &str,
        message: &mut Value,
    ) -> Result<bool, Refusal> {
        let mut modified = false;
        for hook in &self.hooks {
            let facts = Facts {
                direction,
                kind,
                method,
                name,
                message,
            };
            if let Some(when) = &hook.when {
                let activation = Activation::new(&self.env, &self.reads, scope, &facts);
                if !activation.matches(when).unwrap_or(false) {
                    continue;
                }
            }
            let answer = hook.call(&self.client, scope, &facts).await;
            let outcome = match &answer {
                Answer::Pass => "pass",
                Answer::Modify(_) => "modify",
                Answer::Reject { .. } => "reject",
                Answer::Failed(outcome, _) => outcome,
            };
            self.count_part(&self.metrics.policy_hook_calls, &hook.id, outcome);
            match answer {
                Answer::Pass => {}
                Answer::Modify(new) => {
                    *message = new;
                    modified = true;
                }
                Answer::Reject { code, message } => {
                    return Err(Refusal {
                        decision: "hook_rejected",
                        by: hook.id.clone(),
                        code,
                        message,
                        data: Some(json!({ "hook": hook.id })),
                        retry_after: None,
                    });
                }
                Answer::Failed(_, why) => {
                    tracing::warn!(hook = %hook.id, error = %why, failure = ?hook.failure, "policy hook failed");
                    if hook.failure == FailurePolicy::Closed {
                        return Err(Refusal {
                            decision: "hook_failed",
                            by: hook.id.clone(),
                            code: code::SERVER_ERROR,
                            message: format!("policy hook {} is unavailable", hook.id),
                            data: Some(json!({ "hook": hook.id })),
                            retry_after: None,
                        });
                    }
                }
            }
        }
        Ok(modified)
    }

    fn count(&self, direction: Direction, decision: &'static str, rule: &str) {
        self.metrics
            .policy_decisions
            .get_or_create(&DecisionLabels {
                direction: direction.as_str(),
                decision,
                rule: rule.to_owned(),
            })
            .inc();
    }

    fn count_part(
        &self,
        family: &prometheus_client::metrics::family::Family<
            PolicyPartLabels,
            prometheus_client::metrics::counter::Counter,
        >,
        id: &str,
        outcome: &'static str,
    ) {
        family
            .get_or_create(&PolicyPartLabels {
                id: id.to_owned(),
                outcome,
            })
            .inc();
    }

    /// Counts, logs and audits a refused message.
    #[allow(clippy::too_many_arguments)]
    fn refused(
        &self,
        scope: &Scope,
        direction: Direction,
        kind: Kind,
        method: &str,
        name: &str,
        message: &Value,
        refusal: &Refusal,
    ) {
        self.count(direction, refusal.decision, &refusal.by);
        tracing::info!(
            direction = direction.as_str(),
            kind = kind_name(kind),
            method,
            name,
            session = %scope.session,
            principal = scope.identity.as_ref().map(|i| i.to_string()).unwrap_or_default(),
            decision = refusal.decision,
            by = %refusal.by,
            "message refused by policy"
        );
        if let Some(audit) = &self.audit {
            audit.one(
                scope,
                direction,
                message,
                refusal.decision,
                &refusal.by,
                Some(refusal.code),
            );
        }
    }
}

/// Builds one part per item of a policy list, each told where it is
/// (`rules[2]`) for its errors.
fn each<C, T>(
    items: &[C],
    key: &str,
    build: impl Fn(&C, &str) -> Result<T, PolicyError>,
) -> Result<Vec<T>, PolicyError> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| build(item, &format!("{key}[{i}]")))
        .collect()
}

/// Request, notification or response, from the fields present.
fn kind_of(message: &Value) -> Kind {
    match (message.get("method").is_some(), message.get("id").is_some()) {
        (true, true) => Kind::Request,
        (true, false) => Kind::Notification,
        _ => Kind::Response,
    }
}

/// What a message names: `params.uri` for `resources/*`, else
/// `params.name` (the field the server reads, so a client cannot have rules
/// look at one and the server at another).
fn named(message: &Value) -> Option<&str> {
    let method = message.get("method")?.as_str()?;
    let field = if method.starts_with("resources/") {
        "uri"
    } else {
        "name"
    };
    message.get("params")?.get(field)?.as_str()
}

/// Whether two JSON-RPC ids are the same: numbers by value (`1.0` is `1`,
/// as a server that parses it echoes it back).
fn same_id(a: &Value, b: &Value) -> bool {
    a == b || matches!((a.as_f64(), b.as_f64()), (Some(x), Some(y)) if x == y)
}

fn key_param(key: &str) -> &str {
    if key == "name" { "name" } else { "uri" }
}

/// The answer for a tool, prompt or resource the client may not see: the
/// same a server gives for one that does not exist.
fn unknown(method: &str, name: &str, decision: &'static str, what: &str) -> Refusal {
    let (code, message) = match what {
        "tools" => (code::INVALID_PARAMS, format!("Unknown tool: {name}")),
        "prompts" => (code::INVALID_PARAMS, format!("Unknown prompt: {name}")),
        _ => (code::RESOURCE_NOT_FOUND, "Resource not found".to_owned()),
    };
    Refusal {
        decision,
        by: if decision == "hidden" {
            "tools".into()
        } else {
            method.to_owned()
        },
        code,
        message,
        data: (what == "resources").then(|| json!({ "uri": name })),
        retry_after: None,
    }
}

fn rate_limited(limited: &Limited) -> Refusal {
    let ms = u64::try_from(limited.retry_after.as_millis()).unwrap_or(u64::MAX);
    Refusal {
        decision: "rate_limited",
        by: limited.id.clone(),
        code: code::RATE_LIMITED,
        message: format!("rate limit `{}` exceeded; retry after {ms} ms", limited.id),
        data: Some(json!({ "limit": limited.id, "retryAfterMs": ms })),
        retry_after: Some(limited.retry_after),
    }
}

fn error_response(id: &Value, refusal: &Refusal) -> Value {
    let mut error = json!({ "code": refusal.code, "message": refusal.message });
    if let Some(data) = &refusal.data {
        error["data"] = data.clone();
    }
    json!({ "jsonrpc": "2.0", "id": id, "error": error })
}

fn to_bytes(value: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

/// The policy in force, swapped whole on reload.
#[derive(Debug, Default)]
pub struct Policies {
    current: RwLock<Option<Arc<Policy>>>,
}

impl Policies {
    /// The policy in force, if any.
    pub fn current(&self) -> Option<Arc<Policy>> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Puts `policy` in force.
    pub fn set(&self, policy: Option<Policy>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = policy.map(Arc::new);
    }
}

/// Builds the policy of `config` for `app`'s store and metrics.
pub fn build(
    config: &PolicyConfig,
    store: &Arc<dyn Store>,
    metrics: &Arc<Metrics>,
) -> Result<Policy, PolicyError> {
    let client = AsClient::new(None).map_err(|e| PolicyError {
        path: "hooks".into(),
        position: None,
        message: e.to_string(),
    })?;
    Policy::new(config, store.clone(), client, metrics.clone())
}

#[cfg(test)]
mod tests;

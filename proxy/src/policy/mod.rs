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
mod eval;
pub mod hook;
mod limit;
mod tools;

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cel::Env;
use serde_json::{Map, Value, json};
use shadowcat_crds::{Decision, FailurePolicy, PolicyConfig, PolicyError};

use self::audit::Audit;
use self::eval::{Activation, Expr, Facts, kind_name, union_of_reads};
use self::hook::{Answer, Hook};
use self::limit::{Limit, Limited};
use self::tools::{Called, Tools};
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
        let rules = config
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                Ok(Rule {
                    id: r.id.clone(),
                    when: Expr::compile(&format!("rules[{i}].when"), &r.when)?,
                    action: r.action,
                    message: r.message.clone(),
                })
            })
            .collect::<Result<Vec<_>, PolicyError>>()?;
        let limits = config
            .rate_limits
            .iter()
            .enumerate()
            .map(|(i, l)| Limit::new(l, &format!("rateLimits[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let hooks = config
            .hooks
            .iter()
            .enumerate()
            .map(|(i, h)| Hook::new(h, &format!("hooks[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
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

    /// Whether any answer of the server needs looking at: otherwise JSON
    /// answers pass straight through, unread.
    pub fn reads_answers(&self) -> bool {
        !self.rules.is_empty() || !self.tools.is_empty() || !self.hooks.is_empty() || self.audit.is_some()
    }

    // ---- client to server ----

    /// Decides each message of a POST body (already validated as JSON-RPC).
    pub async fn client(&self, scope: &Scope, body: &Bytes) -> Admitted {
        let mut admitted = Admitted::default();
        let Ok(parsed) = serde_json::from_slice::<Value>(body) else {
            admitted.forward = Some(body.clone());
            return admitted;
        };
        let (messages, batch) = match parsed {
            Value::Array(messages) => (messages, true),
            single => (vec![single], false),
        };
        let size = body.len() / messages.len().max(1);
        let mut kept = Vec::with_capacity(messages.len());
        let mut changed = false;
        for mut message in messages {
            match self.client_message(scope, &mut message, size).await {
                Ok((pending, rewritten)) => {
                    changed |= rewritten;
                    admitted.pending.extend(pending);
                    kept.push(message);
                }
                Err(refusal) => {
                    changed = true;
                    if !batch {
                        admitted.retry_after = refusal.retry_after;
                    }
                    match (message.get("id"), message.get("method").is_some()) {
                        (Some(id), true) => admitted.refusals.push(error_response(id, &refusal)),
                        (Some(id), false) => {
                            // The client's answer to a server request: the
                            // server still gets one, an error, so it never waits.
                            kept.push(error_response(id, &refusal));
                        }
                        (None, _) => {
                            admitted
                                .refused_other
                                .get_or_insert_with(|| error_response(&Value::Null, &refusal));
                        }
                    }
                }
            }
        }
        admitted.forward = match (kept.len(), changed) {
            (0, _) => None,
            (_, false) => Some(body.clone()),
            (1, true) if !batch => kept.pop().map(|m| to_bytes(&m)),
            (_, true) => Some(to_bytes(&Value::Array(kept))),
        };
        admitted
    }

    /// One client message: `Ok` with the request to remember (if it is one)
    /// and whether the message was rewritten.
    async fn client_message(
        &self,
        scope: &Scope,
        message: &mut Value,
        bytes: usize,
    ) -> Result<(Option<Pending>, bool), Refusal> {
        let kind = kind_of(message);
        let method = message
            .get("method")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let mut name = named(message).unwrap_or("").to_owned();
        let asked = name.clone();
        let mut rewritten = false;
        if method == "tools/call" {
            match self.tools.called(&name) {
                Called::Hidden => {
                    let refusal = Refusal {
                        message: self.tools.unknown_message(&name),
                        ..unknown(&method, &name, "hidden", "tools")
                    };
                    self.refused(scope, Direction::Client, kind, &method, &name, message, &refusal);
                    return Err(refusal);
                }
                Called::Tool(upstream) if upstream != name => {
                    name = upstream.to_owned();
                    if let Some(params) = message.get_mut("params").and_then(Value::as_object_mut) {
                        params.insert("name".into(), Value::String(name.clone()));
                    }
                    rewritten = true;
                }
                Called::Tool(_) => {}
            }
        }
        let facts = Facts {
            direction: Direction::Client,
            kind,
            method: &method,
            name: &name,
            message,
        };
        let activation = Activation::new(&self.env, &self.reads, scope, &facts);
        let rule = match self.decide(&activation) {
            (Decision::Allow, rule) => rule,
            (Decision::Deny, rule) => {
                // Answered in the client's words: a renamed tool's upstream
                // name stays hidden.
                let refusal = self.denial(rule, &method, &asked);
                self.refused(scope, Direction::Client, kind, &method, &name, message, &refusal);
                return Err(refusal);
            }
        };
        if kind == Kind::Request
            && let Err(refusal) = self.take_tokens(scope, &facts, &activation).await
        {
            self.refused(scope, Direction::Client, kind, &method, &name, message, &refusal);
            return Err(refusal);
        }
        let arguments = self.audit.as_ref().filter(|a| a.arguments).map(|audit| {
            let redacted = audit
                .redact
                .as_ref()
                .is_some_and(|r| activation.matches(r).unwrap_or(true));
            if redacted {
                json!("[redacted]")
            } else {
                message
                    .pointer("/params/arguments")
                    .cloned()
                    .unwrap_or(Value::Null)
            }
        });
        drop(activation);
        match self
            .run_hooks(scope, Direction::Client, kind, &method, &name, message)
            .await
        {
            Ok(modified) => rewritten |= modified,
            Err(refusal) => {
                self.refused(scope, Direction::Client, kind, &method, &name, message, &refusal);
                return Err(refusal);
            }
        }
        self.count(Direction::Client, "allow", &rule);
        if kind != Kind::Request && self.audit.is_some() {
            // A notification or a response: its own event, as nothing answers it.
            self.audit_one(scope, Direction::Client, kind, message, "allow", &rule, None);
        }
        let pending = (kind == Kind::Request).then(|| Pending {
            id: message.get("id").cloned().unwrap_or(Value::Null),
            method,
            name,
            rule,
            started: Instant::now(),
            bytes,
            arguments,
        });
        Ok((pending, rewritten))
    }

    /// The first rule whose expression holds, else the default.
    fn decide(&self, activation: &Activation<'_>) -> (Decision, String) {
        for rule in &self.rules {
            match activation.matches(&rule.when) {
                Ok(true) => return (rule.action, rule.id.clone()),
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
        (self.default, "default".to_owned())
    }

    /// The answer to a request a rule denied. A denied call of a tool or
    /// prompt, or read of a resource, reads as if it did not exist, as the
    /// lists do not show it either.
    fn denial(&self, rule: String, method: &str, name: &str) -> Refusal {
        match method {
            "tools/call" => Refusal {
                by: rule,
                message: self.tools.unknown_message(name),
                ..unknown(method, name, "deny", "tools")
            },
            "prompts/get" => Refusal {
                by: rule,
                ..unknown(method, name, "deny", "prompts")
            },
            "resources/read" => Refusal {
                by: rule,
                ..unknown(method, name, "deny", "resources")
            },
            _ => {
                let message = self
                    .rules
                    .iter()
                    .find(|r| r.id == rule)
                    .and_then(|r| r.message.clone())
                    .unwrap_or_else(|| "denied by policy".to_owned());
                Refusal {
                    decision: "deny",
                    data: Some(json!({ "rule": rule })),
                    by: rule,
                    code: code::POLICY_DENIED,
                    message,
                    retry_after: None,
                }
            }
        }
    }

    /// Takes a token from every limit that applies.
    async fn take_tokens(
        &self,
        scope: &Scope,
        facts: &Facts<'_>,
        activation: &Activation<'_>,
    ) -> Result<(), Refusal> {
        for limit in &self.limits {
            if let Some(when) = &limit.when
                && !activation.matches(when).unwrap_or(false)
            {
                continue;
            }
            let bucket = limit.bucket(scope, facts);
            let outcome = match self
                .store
                .take_token(&bucket, limit.refill.burst, limit.refill.per_second)
                .await
            {
                Ok(None) => "ok",
                Ok(Some(wait)) => {
                    self.count_part(&self.metrics.policy_rate_limits, &limit.id, "limited");
                    return Err(rate_limited(&Limited {
                        id: limit.id.clone(),
                        retry_after: wait,
                    }));
                }
                Err(e) => {
                    tracing::warn!(limit = %limit.id, error = %e, "rate-limit store unreachable");
                    self.count_part(&self.metrics.policy_rate_limits, &limit.id, "store_error");
                    if self.limit_failure == FailurePolicy::Closed {
                        return Err(Refusal {
                            decision: "rate_limited",
                            by: limit.id.clone(),
                            code: code::SERVER_ERROR,
                            message: "rate limits cannot be checked right now".into(),
                            data: Some(json!({ "limit": limit.id })),
                            retry_after: Some(Duration::from_secs(1)),
                        });
                    }
                    continue;
                }
            };
            self.count_part(&self.metrics.policy_rate_limits, &limit.id, outcome);
        }
        Ok(())
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

    // ---- server to client ----

    /// Decides a whole JSON answer (one message or a batch); `None` to send
    /// it unchanged.
    pub async fn server_body(&self, scope: &Scope, exchange: &mut Exchange, body: &[u8]) -> Option<Bytes> {
        let Ok(parsed) = serde_json::from_slice::<Value>(body) else {
            return None;
        };
        let (messages, batch) = match parsed {
            Value::Array(messages) => (messages, true),
            single => (vec![single], false),
        };
        let mut kept = Vec::with_capacity(messages.len());
        let mut changed = false;
        for mut message in messages {
            match self
                .server_message(scope, exchange, &mut message, body.len())
                .await
            {
                Verdict::Same => kept.push(message),
                Verdict::Replace(_) => {
                    changed = true;
                    kept.push(message);
                }
                // A JSON answer holds responses; a withheld one was
                // replaced by an error, so these are for stray messages.
                Verdict::Drop | Verdict::Answer { .. } => changed = true,
            }
        }
        if !changed {
            return None;
        }
        Some(match (batch, kept.len()) {
            (false, 1) => to_bytes(&kept[0]),
            _ => to_bytes(&Value::Array(kept)),
        })
    }

    /// Decides one event's data from the server.
    pub async fn server_event(&self, scope: &Scope, exchange: &mut Exchange, data: &str) -> Verdict {
        let Ok(mut message) = serde_json::from_str::<Value>(data) else {
            return Verdict::Same;
        };
        if let Value::Array(messages) = message {
            // A batch in one event (2025-03-26): decide each.
            let mut kept = Vec::new();
            let mut answers = Vec::new();
            let mut changed = false;
            for mut m in messages {
                match Box::pin(self.server_message(scope, exchange, &mut m, data.len())).await {
                    Verdict::Same => kept.push(m),
                    Verdict::Replace(_) => {
                        changed = true;
                        kept.push(m);
                    }
                    Verdict::Drop => changed = true,
                    Verdict::Answer { replies, .. } => {
                        changed = true;
                        answers.extend(replies);
                    }
                }
            }
            let rest = (!kept.is_empty())
                .then(|| String::from_utf8_lossy(&to_bytes(&Value::Array(kept))).into_owned());
            return match (changed, answers.is_empty(), rest) {
                (false, ..) => Verdict::Same,
                (true, false, rest) => Verdict::Answer {
                    replies: answers,
                    rest,
                },
                (true, true, None) => Verdict::Drop,
                (true, true, Some(rest)) => Verdict::Replace(rest),
            };
        }
        match self
            .server_message(scope, exchange, &mut message, data.len())
            .await
        {
            Verdict::Replace(_) => {
                Verdict::Replace(String::from_utf8_lossy(&to_bytes(&message)).into_owned())
            }
            other => other,
        }
    }

    /// One message from the server; `message` holds the outcome when the
    /// verdict is [`Verdict::Replace`].
    async fn server_message(
        &self,
        scope: &Scope,
        exchange: &mut Exchange,
        message: &mut Value,
        bytes: usize,
    ) -> Verdict {
        let kind = kind_of(message);
        let answered = (kind == Kind::Response)
            .then(|| {
                let id = message.get("id")?;
                let at = exchange.iter().position(|p| same_id(&p.id, id))?;
                Some(exchange.swap_remove(at))
            })
            .flatten();
        let method = match &answered {
            Some(p) => p.method.clone(),
            None => message
                .get("method")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
        };
        let name = match &answered {
            Some(p) => p.name.clone(),
            None => named(message).unwrap_or("").to_owned(),
        };
        let mut changed = false;
        if kind == Kind::Response && message.get("result").is_some() {
            changed |= self.filter_list(scope, &method, message);
        }
        let facts = Facts {
            direction: Direction::Server,
            kind,
            method: &method,
            name: &name,
            message,
        };
        let activation = Activation::new(&self.env, &self.reads, scope, &facts);
        let (decision, rule) = self.decide(&activation);
        drop(activation);
        let refusal = match decision {
            Decision::Deny => Some(self.denial(rule.clone(), "", &name)),
            Decision::Allow => match self
                .run_hooks(scope, Direction::Server, kind, &method, &name, message)
                .await
            {
                Ok(modified) => {
                    changed |= modified;
                    None
                }
                Err(refusal) => Some(refusal),
            },
        };
        let Some(refusal) = refusal else {
            self.count(Direction::Server, "allow", &rule);
            if let Some(pending) = answered {
                self.audit_pair(scope, &pending, message, bytes);
            } else if self.audit.is_some() && kind == Kind::Request {
                // Server requests (sampling, elicitation) are audited; its
                // notifications (progress, logs) would drown the rest.
                self.audit_one(scope, Direction::Server, kind, message, "allow", &rule, None);
            }
            return if changed {
                Verdict::Replace(String::new())
            } else {
                Verdict::Same
            };
        };
        self.refused(scope, Direction::Server, kind, &method, &name, message, &refusal);
        match kind {
            Kind::Response => {
                // The client still gets an answer to its request.
                let id = message.get("id").cloned().unwrap_or(Value::Null);
                *message = error_response(&id, &refusal);
                if let Some(pending) = answered {
                    self.audit_pair(scope, &pending, message, bytes);
                }
                Verdict::Replace(String::new())
            }
            Kind::Request => {
                let id = message.get("id").cloned().unwrap_or(Value::Null);
                Verdict::Answer {
                    replies: vec![to_bytes(&error_response(&id, &refusal))],
                    rest: None,
                }
            }
            Kind::Notification => Verdict::Drop,
        }
    }

    /// Filters and renames a list result; whether anything changed.
    fn filter_list(&self, scope: &Scope, method: &str, message: &mut Value) -> bool {
        let Some(&(_, field, stands_for, key)) = LISTS.iter().find(|(m, ..)| *m == method) else {
            return false;
        };
        let Some(items) = message
            .pointer_mut(&format!("/result/{field}"))
            .and_then(Value::as_array_mut)
        else {
            return false;
        };
        let before = items.len();
        let mut renamed = false;
        items.retain_mut(|item| {
            let Some(name) = item.get(key).and_then(Value::as_str).map(str::to_owned) else {
                return true;
            };
            if stands_for == "tools/call" && !self.tools.visible(&name) {
                return false;
            }
            let probe = json!({
                "jsonrpc": "2.0", "id": 0, "method": stands_for,
                "params": { key_param(key): name, "arguments": {} },
            });
            let facts = Facts {
                direction: Direction::Client,
                kind: Kind::Request,
                method: stands_for,
                name: &name,
                message: &probe,
            };
            let activation = Activation::new(&self.env, &self.reads, scope, &facts);
            if self.decide(&activation).0 == Decision::Deny {
                return false;
            }
            if stands_for == "tools/call"
                && let Some((to, description)) = self.tools.shown(&name)
                && let Some(tool) = item.as_object_mut()
            {
                tool.insert("name".into(), json!(to));
                if let Some(description) = description {
                    tool.insert("description".into(), json!(description));
                }
                renamed = true;
            }
            true
        });
        renamed || items.len() != before
    }

    // ---- counting and audit ----

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
        if self.audit.is_some() {
            let error = json!({ "code": refusal.code });
            self.audit_one(
                scope,
                direction,
                kind,
                message,
                refusal.decision,
                &refusal.by,
                Some(error),
            );
        }
    }

    /// The audit event of a request and its response.
    fn audit_pair(&self, scope: &Scope, pending: &Pending, response: &Value, bytes: usize) {
        let Some(audit) = &self.audit else { return };
        let mut event = base_event(scope, Direction::Client, Kind::Request);
        event.insert("id".into(), pending.id.clone());
        event.insert("method".into(), json!(pending.method));
        event.insert("name".into(), json!(pending.name));
        event.insert("decision".into(), json!("allow"));
        event.insert("rule".into(), json!(pending.rule));
        match response.get("error") {
            Some(error) => {
                event.insert("outcome".into(), json!("error"));
                event.insert(
                    "errorCode".into(),
                    error.get("code").cloned().unwrap_or(Value::Null),
                );
            }
            None => {
                let is_error = response.pointer("/result/isError") == Some(&Value::Bool(true));
                event.insert(
                    "outcome".into(),
                    json!(if is_error { "tool_error" } else { "result" }),
                );
            }
        }
        event.insert(
            "durationMs".into(),
            json!(pending.started.elapsed().as_secs_f64() * 1000.0),
        );
        event.insert("bytesIn".into(), json!(pending.bytes));
        event.insert("bytesOut".into(), json!(bytes));
        if let Some(arguments) = &pending.arguments {
            event.insert("arguments".into(), arguments.clone());
        }
        audit.write(event);
    }

    /// The audit event of a message nothing pairs with.
    #[allow(clippy::too_many_arguments)]
    fn audit_one(
        &self,
        scope: &Scope,
        direction: Direction,
        kind: Kind,
        message: &Value,
        decision: &str,
        rule: &str,
        error: Option<Value>,
    ) {
        let Some(audit) = &self.audit else { return };
        let mut event = base_event(scope, direction, kind);
        if let Some(id) = message.get("id") {
            event.insert("id".into(), id.clone());
        }
        event.insert(
            "method".into(),
            message.get("method").cloned().unwrap_or(json!("")),
        );
        event.insert("name".into(), json!(named(message).unwrap_or("")));
        event.insert("decision".into(), json!(decision));
        event.insert("rule".into(), json!(rule));
        event.insert(
            "outcome".into(),
            json!(if error.is_some() { "refused" } else { "passed" }),
        );
        if let Some(error) = error {
            event.insert("errorCode".into(), error["code"].clone());
        }
        audit.write(event);
    }
}

fn base_event(scope: &Scope, direction: Direction, kind: Kind) -> Map<String, Value> {
    let mut event = Map::new();
    event.insert("direction".into(), json!(direction.as_str()));
    event.insert("kind".into(), json!(kind_name(kind)));
    event.insert("session".into(), json!(scope.session));
    event.insert("version".into(), json!(scope.version));
    if let Some(identity) = &scope.identity {
        event.insert("principal".into(), json!(identity.subject));
        event.insert("issuer".into(), json!(identity.issuer));
    }
    event
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

/// How often the config file is looked at for a new policy.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

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

/// Watches the config file and puts each new valid policy in force. An
/// invalid one is refused with a log line naming the error, and the policy
/// in force stays. A file that is briefly missing (a ConfigMap's symlinks
/// being swapped) is skipped. Only `policy` reloads: other changes wait for
/// a restart, which the log says.
pub async fn watch_file(app: Arc<crate::app::App>, path: std::path::PathBuf) {
    let read = |text: &[u8]| -> Result<shadowcat_crds::SidecarConfig, String> {
        let text = std::str::from_utf8(text).map_err(|e| e.to_string())?;
        shadowcat_crds::SidecarConfig::from_yaml(text).map_err(|e| e.to_string())
    };
    let mut last_text = tokio::fs::read(&path).await.ok();
    let mut last = last_text.as_deref().and_then(|t| read(t).ok());
    let mut tick = tokio::time::interval(RELOAD_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Ok(text) = tokio::fs::read(&path).await else {
            continue;
        };
        if last_text.as_deref() == Some(&text[..]) {
            continue;
        }
        last_text = Some(text.clone());
        let config = match read(&text) {
            Ok(config) => config,
            Err(e) => {
                app.metrics
                    .policy_reloads
                    .get_or_create(&crate::metrics::ReloadLabels { result: "invalid" })
                    .inc();
                tracing::error!(file = %path.display(), error = %e, "config file unreadable; the policy in force stays");
                continue;
            }
        };
        let unchanged_policy = last.as_ref().is_some_and(|l| l.policy == config.policy);
        let others_changed = last.as_ref().is_some_and(|l| {
            shadowcat_crds::SidecarConfig {
                policy: None,
                ..l.clone()
            } != shadowcat_crds::SidecarConfig {
                policy: None,
                ..config.clone()
            }
        });
        if others_changed {
            tracing::warn!(file = %path.display(), "config changed beyond `policy`; those changes take effect on restart");
        }
        if unchanged_policy {
            last = Some(config);
            continue;
        }
        let policy = match &config.policy {
            None => Ok(None),
            Some(p) => build(p, &app.store, &app.metrics).map(Some),
        };
        match policy {
            Ok(policy) => {
                let rules = policy.as_ref().map_or(0, |p| p.rules.len());
                app.policies.set(policy);
                app.metrics
                    .policy_reloads
                    .get_or_create(&crate::metrics::ReloadLabels { result: "ok" })
                    .inc();
                tracing::info!(file = %path.display(), rules, "policy reloaded");
                last = Some(config);
            }
            Err(e) => {
                app.metrics
                    .policy_reloads
                    .get_or_create(&crate::metrics::ReloadLabels { result: "invalid" })
                    .inc();
                tracing::error!(
                    file = %path.display(),
                    error = %e,
                    line = e.position.map(|p| p.0),
                    column = e.position.map(|p| p.1),
                    "new policy refused; the policy in force stays"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests;

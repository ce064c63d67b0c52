//! Client to server: each message of a POST, before the upstream sees it.

use bytes::Bytes;
use serde_json::{Value, json};
use shadowcat_crds::{Decision, FailurePolicy};
use std::time::{Duration, Instant};

use super::eval::{Activation, Facts};
use super::limit::Limited;
use super::tools::Called;
use super::{
    Admitted, Direction, Pending, Policy, Refusal, Scope, error_response, kind_of, named, rate_limited,
    to_bytes, unknown,
};
use crate::mcp::jsonrpc::{Kind, code};

impl Policy {
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
                let refusal = self.denial(rule.to_owned(), &method, &asked);
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
        self.count(Direction::Client, "allow", rule);
        if let Some(audit) = self.audit.as_ref().filter(|_| kind != Kind::Request) {
            // A notification or a response: its own event, as nothing answers it.
            audit.one(scope, Direction::Client, message, "allow", rule, None);
        }
        let pending = (kind == Kind::Request).then(|| Pending {
            id: message.get("id").cloned().unwrap_or(Value::Null),
            method,
            name,
            rule: rule.to_owned(),
            started: Instant::now(),
            bytes,
            arguments,
        });
        Ok((pending, rewritten))
    }

    /// The answer to a request a rule denied. A denied call of a tool or
    /// prompt, or read of a resource, reads as if it did not exist, as the
    /// lists do not show it either.
    pub(super) fn denial(&self, rule: String, method: &str, name: &str) -> Refusal {
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
}

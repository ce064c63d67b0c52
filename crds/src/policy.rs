//! Policy: what every MCP message passing the sidecar is checked against.
//!
//! The same type is the sidecar's `policy` config section and an McpProxy's
//! `spec.policy`; [`PolicyConfig::check`] is what both the sidecar (at start
//! and on every reload) and the operator (at reconcile) run, so a policy the
//! operator calls valid is one the sidecar loads.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::settings::parse_duration;

/// The variables a rule's CEL expression may read. Anything else is refused
/// when the policy is checked, so a typo fails at load, not per message.
pub const CEL_VARIABLES: &[&str] = &[
    "direction",
    "kind",
    "method",
    "name",
    "params",
    "arguments",
    "message",
    "principal",
    "session",
    "version",
];

/// The policy section.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyConfig {
    /// What a message no rule matches gets: `allow` (default) or `deny`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Decision>,
    /// Rules, tried in order; the first whose `when` is true decides.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleConfig>,
    /// Which tools clients see, and under what names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<ToolsConfig>,
    /// Token buckets. Every limit whose `when` matches a client request
    /// takes a token; one that is empty refuses it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rate_limits: Vec<RateLimitConfig>,
    /// What a rate limit does when the store cannot be asked (Redis down):
    /// `open` (default: let the request through) or `closed` (refuse it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_failure: Option<FailurePolicy>,
    /// External hooks called with matching messages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<HookConfig>,
    /// Audit events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<AuditConfig>,
}

/// A rule's or the default's decision.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Decision {
    /// Let the message through.
    #[default]
    Allow,
    /// Refuse it with a JSON-RPC error.
    Deny,
}

/// One rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleConfig {
    /// Names the rule in errors, audit events and metrics.
    pub id: String,
    /// A CEL expression over the message; the rule applies when it is true.
    pub when: String,
    /// `allow` or `deny`.
    pub action: Decision,
    /// The JSON-RPC error message of a denial. Default `denied by policy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Tool visibility and presentation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ToolsConfig {
    /// Only these tools are visible (names; `*` matches any run of
    /// characters). Empty: every tool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// These tools are hidden, even when included.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// Tools shown under another name (and calls to that name mapped back).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rename: Vec<RenameConfig>,
    /// The error message for a call of a tool the client may not see
    /// (`{name}` stands for the tool), so it reads exactly as the server's
    /// own answer for a tool it does not have. Default `Unknown tool:
    /// {name}` (the MCP specification's wording); servers built on the
    /// TypeScript SDK say `MCP error -32602: Unknown tool: {name}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown_tool_message: Option<String>,
}

/// One renamed tool.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RenameConfig {
    /// The upstream's name.
    pub from: String,
    /// The name clients see and call.
    pub to: String,
    /// A description that replaces the upstream's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// What a rate limit's buckets are keyed by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum LimitKey {
    /// The principal (issuer and subject); unauthenticated requests share one.
    Principal,
    /// The session (stateless requests share one).
    Session,
    /// The tool, prompt or resource named.
    Tool,
    /// The JSON-RPC method.
    Method,
    /// Everything: one bucket.
    Global,
}

/// One token bucket per distinct key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Names the limit in errors, audit events and metrics.
    pub id: String,
    /// What a bucket is kept per. Empty: `global`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key: Vec<LimitKey>,
    /// A CEL expression choosing the client requests that take a token.
    /// Default: every client request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// Requests allowed per `per`, sustained.
    pub requests: u32,
    /// The period `requests` refill over, e.g. `1s`, `1m`. Default `1s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per: Option<String>,
    /// Largest burst. Default `requests`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

/// What to do when a hook or the rate-limit store cannot answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum FailurePolicy {
    /// Let the message through unchanged.
    Open,
    /// Refuse it.
    Closed,
}

/// An HTTP hook.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HookConfig {
    /// Names the hook in errors, audit events and metrics.
    pub id: String,
    /// Where the hook is POSTed (`http://` or `https://`).
    pub url: String,
    /// A CEL expression choosing the messages sent to the hook. Default:
    /// every message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// File holding a secret: each call then carries
    /// `X-Shadowcat-Signature: sha256=<hex HMAC-SHA256 of timestamp "." body>`
    /// and `X-Shadowcat-Timestamp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<String>,
    /// How long a call may take. Default `2s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// What a failed or timed-out call does: `closed` (default: the message
    /// is refused) or `open` (it passes unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<FailurePolicy>,
    /// Calls in flight at most; a message beyond waits. Default 64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
}

/// Audit events: one JSON line per request/response pair and per refused
/// message.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditConfig {
    /// `stdout` or a file path (appended to).
    pub to: String,
    /// Include the request's `params.arguments` in the event. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<bool>,
    /// A CEL expression: where it is true, the arguments are written as
    /// `"[redacted]"` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redact: Option<String>,
}

/// A policy that cannot be loaded: where, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("policy.{path}: {message}")]
pub struct PolicyError {
    /// Where in the policy, e.g. `rules[2].when`.
    pub path: String,
    /// Line and column in the CEL expression, 1-based, when that is where
    /// the error is.
    pub position: Option<(usize, usize)>,
    /// What is wrong.
    pub message: String,
}

impl PolicyError {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            position: None,
            message: message.into(),
        }
    }
}

/// Compiles one CEL expression, refusing unknown variables. `path` names it
/// in the error.
pub fn compile_cel(path: &str, source: &str) -> Result<cel::Program, PolicyError> {
    let program = cel::Program::compile(source).map_err(|errors| {
        let first = errors.errors.first();
        PolicyError {
            path: path.to_owned(),
            position: first.map(|e| {
                let line = usize::try_from(e.pos.0).unwrap_or(0);
                let column = usize::try_from(e.pos.1).unwrap_or(0);
                (line.max(1), column.max(1))
            }),
            message: first.map_or_else(|| "cannot parse".to_owned(), |e| e.msg.clone()),
        }
    })?;
    let references = program.references();
    let mut bound = Vec::new();
    bound_names(program.expression(), &mut bound);
    if let Some(unknown) = references
        .variables()
        .into_iter()
        .find(|v| !CEL_VARIABLES.contains(v) && !bound.contains(v))
    {
        return Err(PolicyError::new(
            path,
            format!(
                "unknown variable `{unknown}` (known: {})",
                CEL_VARIABLES.join(", ")
            ),
        ));
    }
    Ok(program)
}

/// The names macros (`exists`, `all`, `map`, ...) bind, which the
/// references of a program list along with the free variables.
fn bound_names<'e>(expr: &'e cel::IdedExpr, out: &mut Vec<&'e str>) {
    use cel::common::ast::{EntryExpr, Expr};
    match &expr.expr {
        Expr::Comprehension(c) => {
            out.push(&c.iter_var);
            out.extend(c.iter_var2.as_deref());
            out.push(&c.accu_var);
            for e in [&c.iter_range, &c.accu_init, &c.loop_cond, &c.loop_step, &c.result] {
                bound_names(e, out);
            }
        }
        Expr::Call(call) => {
            call.target.iter().for_each(|t| bound_names(t, out));
            call.args.iter().for_each(|a| bound_names(a, out));
        }
        Expr::List(list) => list.elements.iter().for_each(|e| bound_names(e, out)),
        Expr::Select(select) => bound_names(&select.operand, out),
        Expr::Map(map) => map.entries.iter().for_each(|entry| match &entry.expr {
            EntryExpr::MapEntry(e) => {
                bound_names(&e.key, out);
                bound_names(&e.value, out);
            }
            EntryExpr::StructField(f) => bound_names(&f.value, out),
        }),
        Expr::Struct(st) => st.entries.iter().for_each(|entry| match &entry.expr {
            EntryExpr::MapEntry(e) => bound_names(&e.value, out),
            EntryExpr::StructField(f) => bound_names(&f.value, out),
        }),
        Expr::Unspecified | Expr::Ident(_) | Expr::Literal(_) => {}
    }
}

/// A rate limit's refill, checked.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Refill {
    /// Bucket size.
    pub burst: u32,
    /// Tokens added per second.
    pub per_second: f64,
}

impl RateLimitConfig {
    /// The bucket size and refill rate.
    pub fn refill(&self, at: &str) -> Result<Refill, PolicyError> {
        if self.requests == 0 {
            return Err(PolicyError::new(format!("{at}.requests"), "must be at least 1"));
        }
        let per = match &self.per {
            None => Duration::from_secs(1),
            Some(text) => parse_duration("policy.rateLimits.per", text)
                .map_err(|e| PolicyError::new(format!("{at}.per"), e.reason))?,
        };
        let burst = self.burst.unwrap_or(self.requests);
        if burst == 0 {
            return Err(PolicyError::new(format!("{at}.burst"), "must be at least 1"));
        }
        Ok(Refill {
            burst,
            per_second: f64::from(self.requests) / per.as_secs_f64(),
        })
    }
}

impl HookConfig {
    /// The call timeout.
    pub fn timeout(&self, at: &str) -> Result<Duration, PolicyError> {
        match &self.timeout {
            None => Ok(Duration::from_secs(2)),
            Some(text) => parse_duration("policy.hooks.timeout", text)
                .map_err(|e| PolicyError::new(format!("{at}.timeout"), e.reason)),
        }
    }
}

impl PolicyConfig {
    /// Checks everything a sidecar needs to load this policy, except reading
    /// hook secret files: CEL syntax and variables, unique ids, limits,
    /// durations, URLs, renames that do not collide.
    pub fn check(&self) -> Result<(), PolicyError> {
        let mut ids = std::collections::BTreeSet::new();
        let mut unique = |path: String, id: &str| {
            if id.is_empty() {
                return Err(PolicyError::new(path, "must not be empty"));
            }
            if !ids.insert(id.to_owned()) {
                return Err(PolicyError::new(path, format!("`{id}` is used twice")));
            }
            Ok(())
        };
        for (i, rule) in self.rules.iter().enumerate() {
            unique(format!("rules[{i}].id"), &rule.id)?;
            compile_cel(&format!("rules[{i}].when"), &rule.when)?;
        }
        for (i, limit) in self.rate_limits.iter().enumerate() {
            let at = format!("rateLimits[{i}]");
            unique(format!("{at}.id"), &limit.id)?;
            limit.refill(&at)?;
            if let Some(when) = &limit.when {
                compile_cel(&format!("{at}.when"), when)?;
            }
        }
        for (i, hook) in self.hooks.iter().enumerate() {
            let at = format!("hooks[{i}]");
            unique(format!("{at}.id"), &hook.id)?;
            let uri: http::Uri = hook
                .url
                .parse()
                .map_err(|e| PolicyError::new(format!("{at}.url"), format!("not a URL: {e}")))?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
                return Err(PolicyError::new(
                    format!("{at}.url"),
                    "must be an http:// or https:// URL",
                ));
            }
            hook.timeout(&at)?;
            if hook.max_concurrency == Some(0) {
                return Err(PolicyError::new(
                    format!("{at}.maxConcurrency"),
                    "must be at least 1",
                ));
            }
            if let Some(when) = &hook.when {
                compile_cel(&format!("{at}.when"), when)?;
            }
        }
        if let Some(tools) = &self.tools {
            let mut seen = std::collections::BTreeSet::new();
            for (i, rename) in tools.rename.iter().enumerate() {
                let at = format!("tools.rename[{i}]");
                if rename.from.is_empty() || rename.to.is_empty() {
                    return Err(PolicyError::new(at, "`from` and `to` must not be empty"));
                }
                if !seen.insert(rename.to.clone()) {
                    return Err(PolicyError::new(
                        format!("{at}.to"),
                        format!("`{}` is the new name of two tools", rename.to),
                    ));
                }
            }
        }
        if let Some(audit) = &self.audit {
            if audit.to.is_empty() {
                return Err(PolicyError::new("audit.to", "must be `stdout` or a file path"));
            }
            if let Some(redact) = &audit.redact {
                compile_cel("audit.redact", redact)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(when: &str) -> PolicyConfig {
        PolicyConfig {
            rules: vec![RuleConfig {
                id: "r".into(),
                when: when.into(),
                action: Decision::Deny,
                message: None,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_syntax_error_names_the_rule_and_the_position() {
        let e = rule("method == \n 'tools/call' &&").check().unwrap_err();
        assert_eq!(e.path, "rules[0].when");
        let (line, _) = e.position.expect("a position");
        assert_eq!(line, 2, "{e:?}");
    }

    #[test]
    fn unknown_variables_are_refused_at_load() {
        let e = rule("methd == 'tools/call'").check().unwrap_err();
        assert!(e.message.contains("unknown variable `methd`"), "{e}");
        assert!(
            rule("method == 'tools/call' && principal.claims.group == 'x'")
                .check()
                .is_ok()
        );
        assert!(rule("principal.scopes.exists(s, s == 'admin')").check().is_ok());
    }

    #[test]
    fn ids_limits_and_renames_are_checked() {
        let mut p = rule("true");
        p.rules.push(p.rules[0].clone());
        assert_eq!(p.check().unwrap_err().path, "rules[1].id");
        let p = PolicyConfig {
            rate_limits: vec![RateLimitConfig {
                id: "l".into(),
                requests: 0,
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(p.check().unwrap_err().path, "rateLimits[0].requests");
        let limit = RateLimitConfig {
            id: "l".into(),
            requests: 60,
            per: Some("1m".into()),
            ..Default::default()
        };
        assert_eq!(
            limit.refill("x").unwrap(),
            Refill {
                burst: 60,
                per_second: 1.0
            }
        );
        let p = PolicyConfig {
            hooks: vec![HookConfig {
                id: "h".into(),
                url: "ftp://x".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(p.check().unwrap_err().path, "hooks[0].url");
        let p = PolicyConfig {
            tools: Some(ToolsConfig {
                rename: vec![
                    RenameConfig {
                        from: "a".into(),
                        to: "c".into(),
                        description: None,
                    },
                    RenameConfig {
                        from: "b".into(),
                        to: "c".into(),
                        description: None,
                    },
                ],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(p.check().unwrap_err().path, "tools.rename[1].to");
    }
}

//! Status conditions, Gateway-API style: a type, a status, a reason, a
//! message, the generation they describe, and a transition time that moves
//! only when the status does.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use shadowcat_crds::{McpProxyStatus, PolicyConfig, PolicyError};

use crate::{inject, render};

/// The operator applies this McpProxy: its image is allowed, it conflicts
/// with no other McpProxy, and the objects it would write are its own.
pub const ACCEPTED: &str = "Accepted";
/// The config renders and validates.
pub const CONFIG_VALID: &str = "ConfigValid";
/// `spec.policy` checks (or there is none).
pub const POLICY_VALID: &str = "PolicyValid";
/// Every pod labelled for this McpProxy runs the sidecar.
pub const INJECTED: &str = "Injected";
/// The target has rolled out, its pods are ready and run the sidecar.
pub const READY: &str = "Ready";
/// Sessions survive a pod and reach every replica: false when the memory
/// store is used with more than one replica.
pub const SESSIONS_SHARED: &str = "SessionsShared";

/// One condition to set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Set {
    /// Condition type.
    pub type_: &'static str,
    /// True or false.
    pub ok: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// Human message.
    pub message: String,
}

impl Set {
    /// A condition.
    pub fn new(type_: &'static str, ok: bool, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            type_,
            ok,
            reason,
            message: message.into(),
        }
    }
}

/// The `PolicyValid` condition of `policy`, checked with the very rules the
/// sidecar loads it by; false (reason `InvalidPolicy`) when it would be
/// refused, the message naming where, e.g.
/// `policy.rules[2].when at line 1, column 14: <what is wrong>`.
pub fn policy(policy: Option<&PolicyConfig>) -> Set {
    match policy.map(PolicyConfig::check) {
        None => Set::new(POLICY_VALID, true, "NoPolicy", "no spec.policy"),
        Some(Ok(())) => Set::new(POLICY_VALID, true, "Valid", "the policy is valid"),
        Some(Err(e)) => Set::new(POLICY_VALID, false, "InvalidPolicy", policy_message(&e)),
    }
}

/// Where a policy error is (its path and, in a CEL expression, the line and
/// column), then what it is.
pub fn policy_message(e: &PolicyError) -> String {
    match e.position {
        Some((line, column)) => format!("policy.{} at line {line}, column {column}: {}", e.path, e.message),
        None => format!("policy.{}: {}", e.path, e.message),
    }
}

/// What the pods labelled for an McpProxy run.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pods {
    /// Pods with the sidecar.
    pub injected: i32,
    /// Of those, pods on the current config.
    pub current: i32,
    /// The pods without the sidecar: name, and why, as the webhook noted
    /// it on the pod (none when the webhook never saw it).
    pub without: Vec<(String, Option<String>)>,
}

impl Pods {
    /// Counts `pods` against the current `hash`.
    pub fn count(pods: &[Pod], hash: &str) -> Self {
        let mut counts = Self::default();
        for pod in pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()) {
            if inject::has_sidecar(pod) || inject::has_legacy_sidecar(pod) {
                counts.injected += 1;
                if pod.annotations().get(render::CONFIG_HASH).map(String::as_str) == Some(hash) {
                    counts.current += 1;
                }
            } else {
                let why = pod.annotations().get(inject::SKIPPED).cloned();
                counts.without.push((pod.name_any(), why));
            }
        }
        counts.without.sort();
        counts
    }
}

/// `previous`'s conditions updated with `sets` for `generation`.
pub fn conditions(
    previous: Option<&McpProxyStatus>,
    generation: Option<i64>,
    sets: &[Set],
) -> Vec<Condition> {
    let old = previous.map(|s| s.conditions.as_slice()).unwrap_or_default();
    sets.iter()
        .map(|set| {
            let status = if set.ok { "True" } else { "False" };
            let since = old
                .iter()
                .find(|c| c.type_ == set.type_ && c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| Time(Timestamp::now()));
            Condition {
                type_: set.type_.to_owned(),
                status: status.to_owned(),
                reason: set.reason.to_owned(),
                message: set.message.clone(),
                observed_generation: generation,
                last_transition_time: since,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_condition_names_the_path_and_position_of_an_error() {
        use shadowcat_crds::{Decision, RuleConfig};

        let rule = |id: &str, when: &str| RuleConfig {
            id: id.into(),
            when: when.into(),
            action: Decision::Deny,
            message: None,
        };
        assert_eq!(
            policy(None),
            Set::new(POLICY_VALID, true, "NoPolicy", "no spec.policy")
        );
        let mut config = PolicyConfig {
            rules: vec![rule("a", "method == 'tools/call'")],
            ..Default::default()
        };
        assert_eq!(policy(Some(&config)).reason, "Valid");
        config.rules.push(rule("b", "method == 'tools/call' &&"));
        let invalid = policy(Some(&config));
        assert_eq!((invalid.ok, invalid.reason), (false, "InvalidPolicy"));
        assert!(
            invalid
                .message
                .starts_with("policy.rules[1].when at line 1, column "),
            "{}",
            invalid.message
        );
        config.rules[1] = rule("a", "true");
        assert_eq!(
            policy(Some(&config)).message,
            "policy.rules[1].id: `a` is used twice",
            "no position outside a CEL expression"
        );
    }

    #[test]
    fn transition_time_moves_only_with_the_status() {
        let first = conditions(None, Some(1), &[Set::new(READY, false, "Progressing", "0/3")]);
        let previous = McpProxyStatus {
            conditions: first.clone(),
            ..Default::default()
        };
        let same = conditions(
            Some(&previous),
            Some(2),
            &[Set::new(READY, false, "Progressing", "1/3")],
        );
        assert_eq!(same[0].last_transition_time, first[0].last_transition_time);
        assert_eq!(same[0].observed_generation, Some(2));
        assert_eq!(same[0].message, "1/3");
        let flipped = conditions(Some(&previous), Some(2), &[Set::new(READY, true, "Ready", "3/3")]);
        assert_eq!(flipped[0].status, "True");
        assert!(flipped[0].last_transition_time.0 >= first[0].last_transition_time.0);
    }
}

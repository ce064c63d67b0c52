//! Rate limits: token buckets in the store, so replicas sharing Redis share
//! every bucket (one atomic script per decision), and a single replica with
//! the memory store keeps them in process.

use std::time::Duration;

use shadowcat_crds::{LimitKey, PolicyError, RateLimitConfig, Refill};

use super::Scope;
use super::eval::{Expr, Facts};

/// One limit.
#[derive(Debug)]
pub struct Limit {
    /// From the config.
    pub id: String,
    keys: Vec<LimitKey>,
    /// Which client requests take a token; all when `None`.
    pub when: Option<Expr>,
    /// Bucket size and refill.
    pub refill: Refill,
}

/// A request a limit refused.
#[derive(Debug, Clone)]
pub struct Limited {
    /// The limit.
    pub id: String,
    /// When a token is back.
    pub retry_after: Duration,
}

impl Limit {
    /// From the config.
    pub fn new(config: &RateLimitConfig, at: &str) -> Result<Self, PolicyError> {
        Ok(Self {
            id: config.id.clone(),
            keys: if config.key.is_empty() {
                vec![LimitKey::Global]
            } else {
                config.key.clone()
            },
            when: config
                .when
                .as_deref()
                .map(|w| Expr::compile(&format!("{at}.when"), w))
                .transpose()?,
            refill: config.refill(at)?,
        })
    }

    /// The bucket a message takes from: the limit, then each key's value,
    /// each length-prefixed so no two combinations read alike. The refill is
    /// part of it, so a reload that changes the limit starts new buckets.
    pub fn bucket(&self, scope: &Scope, facts: &Facts<'_>) -> String {
        let mut key = format!(
            "{}:{}:{}:{}",
            self.id.len(),
            self.id,
            self.refill.burst,
            self.refill.per_second
        );
        for k in &self.keys {
            let value = match k {
                LimitKey::Principal => scope.identity.as_ref().map_or("", |i| i.principal()),
                LimitKey::Session => &scope.session,
                LimitKey::Tool => facts.name,
                LimitKey::Method => facts.method,
                LimitKey::Global => "",
            };
            key.push_str(&format!("|{}:{value}", value.len()));
        }
        key
    }
}

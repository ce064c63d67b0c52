//! Where the load goes.

use clap::ValueEnum;

/// One of the compared endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, ValueEnum)]
pub enum Target {
    /// Straight to the upstream.
    Direct,
    /// Through nginx as a plain reverse proxy.
    Nginx,
    /// Through shadowcat with the memory store.
    ShadowcatMemory,
    /// Through shadowcat with a private redis-server as its store.
    ShadowcatRedis,
    /// Through shadowcat with the memory store, verifying every request's
    /// access token (a real authorization server's JWT; keys cached).
    ShadowcatAuth,
    /// The memory store with a policy of 1 rule (none matches, so every
    /// message is checked against all of them).
    ShadowcatPolicy1,
    /// The same with 10 rules.
    ShadowcatPolicy10,
    /// The same with 100 rules.
    ShadowcatPolicy100,
    /// The memory store with a policy hook called for every tool call (a
    /// local HTTP hook that passes everything).
    ShadowcatHook,
}

impl Target {
    /// The name in the tables and plots.
    pub fn label(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Nginx => "nginx",
            Target::ShadowcatMemory => "shadowcat+memory",
            Target::ShadowcatRedis => "shadowcat+redis",
            Target::ShadowcatAuth => "shadowcat+auth",
            Target::ShadowcatPolicy1 => "shadowcat+policy1",
            Target::ShadowcatPolicy10 => "shadowcat+policy10",
            Target::ShadowcatPolicy100 => "shadowcat+policy100",
            Target::ShadowcatHook => "shadowcat+hook",
        }
    }

    /// The key in the JSON.
    pub fn key(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Nginx => "nginx",
            Target::ShadowcatMemory => "shadowcat_memory",
            Target::ShadowcatRedis => "shadowcat_redis",
            Target::ShadowcatAuth => "shadowcat_auth",
            Target::ShadowcatPolicy1 => "shadowcat_policy1",
            Target::ShadowcatPolicy10 => "shadowcat_policy10",
            Target::ShadowcatPolicy100 => "shadowcat_policy100",
            Target::ShadowcatHook => "shadowcat_hook",
        }
    }

    /// The rules of its policy, for the policy targets.
    pub fn policy_rules(self) -> Option<usize> {
        match self {
            Target::ShadowcatPolicy1 => Some(1),
            Target::ShadowcatPolicy10 => Some(10),
            Target::ShadowcatPolicy100 => Some(100),
            _ => None,
        }
    }

    /// Whether it is a shadowcat.
    pub fn is_shadowcat(self) -> bool {
        !matches!(self, Target::Direct | Target::Nginx)
    }
}

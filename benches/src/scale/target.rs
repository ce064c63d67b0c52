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
        }
    }

    /// Whether it is a shadowcat.
    pub fn is_shadowcat(self) -> bool {
        matches!(
            self,
            Target::ShadowcatMemory | Target::ShadowcatRedis | Target::ShadowcatAuth
        )
    }
}

//! What a slice costs: CPU time of the proxy (nginx: master and workers),
//! the upstream and the redis-server from `/proc`, the requests the upstream
//! served, and Redis's own counters.

use std::time::{Duration, Instant};

use super::control;
use crate::procs::Usage;
use crate::redis::{COUNTER_COMMANDS, Counters};

/// The processes one target's figures come from.
#[derive(Clone, Copy, Debug, Default)]
pub struct Pids {
    /// The proxy (for direct: the upstream itself).
    pub proxy: Option<u32>,
    /// Count the proxy's children too (nginx's workers).
    pub tree: bool,
    /// The upstream.
    pub upstream: Option<u32>,
    /// Its port, to read its request count.
    pub upstream_port: Option<u16>,
    /// The redis-server behind the proxy, if any.
    pub redis: Option<u32>,
    /// Its port, to read its counters.
    pub redis_port: Option<u16>,
}

/// `/proc` figures at one moment.
#[derive(Clone, Copy, Debug)]
pub struct Snapshot {
    /// When.
    pub at: Instant,
    /// The proxy's.
    pub proxy: Option<Usage>,
    /// The upstream's.
    pub upstream: Option<Usage>,
    /// The redis-server's.
    pub redis: Option<Usage>,
}

/// A snapshot plus the upstream's request count and Redis's counters (for
/// the Redis-backed target).
#[derive(Clone, Copy, Debug)]
pub struct Reading {
    /// The processes.
    pub snap: Snapshot,
    /// MCP requests the upstream has served.
    pub upstream_requests: Option<u64>,
    /// Redis's commands, memory and keys.
    pub counters: Option<Counters>,
}

impl Pids {
    /// The proxy's usage (summed over its children for nginx).
    pub fn proxy_usage(&self) -> Option<Usage> {
        let pid = self.proxy?;
        match self.tree {
            true => Usage::of_tree(pid),
            false => Usage::of(pid),
        }
    }

    /// Reads `/proc` now; cheap enough to call from a worker.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            at: Instant::now(),
            proxy: self.proxy_usage(),
            upstream: self.upstream.and_then(Usage::of),
            redis: self.redis.and_then(Usage::of),
        }
    }

    /// Reads `/proc`, the upstream's count and, with a redis-server, its counters.
    pub async fn reading(&self) -> Reading {
        let counters = match self.redis_port {
            Some(port) => Counters::of(port).await.ok(),
            None => None,
        };
        let upstream_requests = match self.upstream_port {
            Some(port) => control::stats(port).await.ok().map(|s| s.requests),
            None => None,
        };
        Reading {
            snap: self.snapshot(),
            upstream_requests,
            counters,
        }
    }
}

/// What was spent between two moments.
#[derive(Clone, Copy, Debug, Default)]
pub struct Spent {
    /// Wall time.
    pub wall: Duration,
    /// Proxy CPU seconds.
    pub proxy_cpu_s: Option<f64>,
    /// Upstream CPU seconds.
    pub upstream_cpu_s: Option<f64>,
    /// redis-server CPU seconds.
    pub redis_cpu_s: Option<f64>,
    /// MCP requests the upstream served.
    pub upstream_requests: Option<u64>,
    /// Redis commands, the bench's own readings excluded.
    pub redis_commands: Option<u64>,
}

fn cpu(before: Option<Usage>, after: Option<Usage>) -> Option<f64> {
    Some(after?.cpu_s - before?.cpu_s)
}

/// Adds two optional figures; absent in either stays absent.
fn add<T: std::ops::Add<Output = T>>(a: Option<T>, b: Option<T>) -> Option<T> {
    Some(a? + b?)
}

impl Spent {
    /// Between two snapshots.
    pub fn between(before: &Snapshot, after: &Snapshot) -> Spent {
        Spent {
            wall: after.at.saturating_duration_since(before.at),
            proxy_cpu_s: cpu(before.proxy, after.proxy),
            upstream_cpu_s: cpu(before.upstream, after.upstream),
            redis_cpu_s: cpu(before.redis, after.redis),
            upstream_requests: None,
            redis_commands: None,
        }
    }

    /// Between two readings, Redis commands included.
    pub fn between_readings(before: &Reading, after: &Reading) -> Spent {
        let commands = match (before.counters, after.counters) {
            (Some(b), Some(a)) => Some(a.commands.saturating_sub(b.commands + COUNTER_COMMANDS)),
            _ => None,
        };
        let upstream_requests = (after.upstream_requests)
            .zip(before.upstream_requests)
            .map(|(a, b)| a.saturating_sub(b));
        Spent {
            upstream_requests,
            redis_commands: commands,
            ..Spent::between(&before.snap, &after.snap)
        }
    }

    /// The sum of two spans (of the same target).
    pub fn plus(self, other: Spent) -> Spent {
        Spent {
            wall: self.wall + other.wall,
            proxy_cpu_s: add(self.proxy_cpu_s, other.proxy_cpu_s),
            upstream_cpu_s: add(self.upstream_cpu_s, other.upstream_cpu_s),
            redis_cpu_s: add(self.redis_cpu_s, other.redis_cpu_s),
            upstream_requests: add(self.upstream_requests, other.upstream_requests),
            redis_commands: add(self.redis_commands, other.redis_commands),
        }
    }
}

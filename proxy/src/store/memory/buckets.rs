//! Rate-limit token buckets, in process: each keeps its own size and refill,
//! and the map is bounded (full buckets, which are the same as none, go
//! first; under a flood of distinct keys the least recently used half).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::store::lock;

/// The buckets of one store.
#[derive(Debug, Default)]
pub(super) struct Buckets {
    map: Mutex<HashMap<String, Bucket>>,
}

/// A token bucket: its tokens when last counted, and its own refill.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
    burst: f64,
    per_second: f64,
}

impl Bucket {
    fn now(&self, now: Instant) -> f64 {
        (self.tokens + (now - self.at).as_secs_f64() * self.per_second).min(self.burst)
    }
}

/// Buckets kept before the full ones (which need no memory) are dropped.
const MAX_BUCKETS: usize = 100_000;

impl Buckets {
    /// Takes a token from `key`'s bucket; `None` when one was taken, else
    /// how long until one is back.
    pub(super) fn take(&self, key: &str, burst: u32, per_second: f64) -> Option<Duration> {
        let now = Instant::now();
        let burst = f64::from(burst);
        let mut buckets = lock(&self.map);
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(key) {
            // A full bucket is the same as none: drop those first, each by
            // its own refill. Still too many (a flood of distinct keys): the
            // half least recently used go, once per that many new keys.
            buckets.retain(|_, b| b.now(now) < b.burst);
            if buckets.len() >= MAX_BUCKETS / 2 {
                let mut ages: Vec<Instant> = buckets.values().map(|b| b.at).collect();
                ages.sort_unstable();
                let cut = ages[ages.len() / 2];
                buckets.retain(|_, b| b.at > cut);
            }
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: burst,
            at: now,
            burst,
            per_second,
        });
        bucket.burst = burst;
        bucket.per_second = per_second;
        let tokens = bucket.now(now);
        bucket.at = now;
        if tokens >= 1.0 {
            bucket.tokens = tokens - 1.0;
            return None;
        }
        bucket.tokens = tokens;
        Some(Duration::from_secs_f64((1.0 - tokens) / per_second))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_full_map_drops_the_buckets_full_by_their_own_refill() {
        let buckets = Buckets::default();
        // Far from full for a long while: 99 of 100, a token per 1 000 s.
        assert_eq!(buckets.take("slow", 100, 0.001), None);
        // The rest refill within a millisecond.
        for i in 0..MAX_BUCKETS - 1 {
            assert_eq!(buckets.take(&format!("k{i}"), 1, 1000.0), None);
        }
        assert!(buckets.take("k0", 1, 1000.0).is_some(), "k0 is empty now");
        tokio::time::advance(Duration::from_millis(10)).await;
        assert_eq!(buckets.take("new", 1, 1000.0), None);
        let map = lock(&buckets.map);
        assert_eq!(
            map.len(),
            2,
            "only `slow` (not full by its own refill) and `new` stay"
        );
        assert!(map.contains_key("slow"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_of_distinct_keys_stays_bounded() {
        let buckets = Buckets::default();
        for i in 0..MAX_BUCKETS * 2 {
            buckets.take(&format!("k{i}"), 10, 0.001);
            tokio::time::advance(Duration::from_micros(1)).await;
        }
        assert!(lock(&buckets.map).len() <= MAX_BUCKETS);
    }
}

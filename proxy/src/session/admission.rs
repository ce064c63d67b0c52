//! Admission of new sessions: a cap on how many this replica holds and a
//! token bucket on how fast they come, so a flood of `initialize` requests
//! gets a clear 503 instead of exhausting memory or the upstream.

use std::sync::Mutex;
use std::time::Instant;

/// Why a new session was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The replica holds its maximum of sessions.
    Full(usize),
    /// Sessions come faster than the configured rate.
    TooFast(u32),
}

/// A token bucket holding at most one second's worth of tokens.
#[derive(Debug)]
pub struct Admission {
    max_sessions: usize,
    rate: u32,
    bucket: Mutex<(f64, Instant)>,
}

impl Admission {
    /// Admits up to `max_sessions` held at once, `rate` new ones per second.
    pub fn new(max_sessions: usize, rate: u32) -> Self {
        Self {
            max_sessions,
            rate,
            bucket: Mutex::new((f64::from(rate), Instant::now())),
        }
    }

    /// Whether one more session fits while `held` are held.
    pub fn has_room(&self, held: usize) -> Result<(), Refusal> {
        if held >= self.max_sessions {
            return Err(Refusal::Full(self.max_sessions));
        }
        Ok(())
    }

    /// Takes a token for a new session while `held` are held.
    pub fn admit(&self, held: usize) -> Result<(), Refusal> {
        self.has_room(held)?;
        self.take(Instant::now())
    }

    fn take(&self, now: Instant) -> Result<(), Refusal> {
        let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, at) = *bucket;
        let refilled =
            (tokens + now.duration_since(at).as_secs_f64() * f64::from(self.rate)).min(f64::from(self.rate));
        if refilled < 1.0 {
            *bucket = (refilled, now);
            return Err(Refusal::TooFast(self.rate));
        }
        *bucket = (refilled - 1.0, now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_bucket_allows_a_second_of_burst_then_the_rate() {
        let a = Admission::new(100, 4);
        let t0 = Instant::now();
        for _ in 0..4 {
            assert_eq!(a.take(t0), Ok(()));
        }
        assert_eq!(a.take(t0), Err(Refusal::TooFast(4)));
        assert_eq!(
            a.take(t0 + Duration::from_millis(250)),
            Ok(()),
            "one token per 250 ms"
        );
        assert_eq!(a.take(t0 + Duration::from_millis(300)), Err(Refusal::TooFast(4)));
        assert_eq!(a.admit(100), Err(Refusal::Full(100)));
    }
}

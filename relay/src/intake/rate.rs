//! Per-connection report rate limit: a token bucket, so a burst after a
//! reconnect (reports kept while offline) passes but a flood does not.

use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct RateLimiter {
    capacity: f64,
    tokens: f64,
    per_second: f64,
    last: Instant,
}

impl RateLimiter {
    /// `per_minute` reports on average, bursts of up to `per_minute`.
    pub fn per_minute(per_minute: u32, now: Instant) -> Self {
        let capacity = f64::from(per_minute.max(1));
        RateLimiter {
            capacity,
            tokens: capacity,
            per_second: capacity / 60.0,
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.per_second).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long until the next token.
    pub fn retry_after(&self) -> Duration {
        Duration::from_secs_f64(((1.0 - self.tokens) / self.per_second).max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_then_refills_at_the_rate() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::per_minute(3, t0);
        assert!(limiter.try_take(t0));
        assert!(limiter.try_take(t0));
        assert!(limiter.try_take(t0));
        assert!(!limiter.try_take(t0));
        assert!(!limiter.try_take(t0 + Duration::from_secs(19)));
        assert!(limiter.try_take(t0 + Duration::from_secs(21)));
    }
}

//! Token buckets: every budget after authentication (reports, room
//! operations, keyframe requests, probes, media frames and bytes) is one,
//! so a burst (reports kept while offline, keyframe requests after a move)
//! passes but a sustained flood does not.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct RateLimiter {
    capacity: f64,
    tokens: f64,
    per_second: f64,
    last: Instant,
}

impl RateLimiter {
    /// `per_minute` on average, bursts of up to `per_minute`.
    pub fn per_minute(per_minute: u32, now: Instant) -> Self {
        let capacity = f64::from(per_minute.max(1));
        Self::new(capacity, capacity / 60.0, now)
    }

    /// `per_second` on average, bursts of up to `burst`.
    pub fn new(burst: f64, per_second: f64, now: Instant) -> Self {
        let capacity = burst.max(1.0);
        RateLimiter {
            capacity,
            tokens: capacity,
            per_second: per_second.max(f64::MIN_POSITIVE),
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.try_take_n(1.0, now)
    }

    /// Takes `n` tokens if there are that many (a frame's bytes, say). A
    /// cost above the burst can never pass.
    pub fn try_take_n(&mut self, n: f64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.per_second).min(self.capacity);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }

    /// Takes `n` tokens whether or not there are that many — spent
    /// elsewhere already (another relay of the region accepted them) — down
    /// to a debt of one burst at most.
    pub fn charge(&mut self, n: f64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.per_second).min(self.capacity);
        self.tokens = (self.tokens - n).max(-self.capacity);
    }

    /// Gives back one token taken for something that turned out free
    /// (never above the burst).
    pub fn refund(&mut self, now: Instant) {
        self.charge(-1.0, now);
        self.tokens = self.tokens.min(self.capacity);
    }

    /// How long until the next token.
    pub fn retry_after(&self) -> Duration {
        Duration::from_secs_f64(((1.0 - self.tokens) / self.per_second).max(0.0))
    }
}

/// One token bucket per key — a token subject (user id), or a client
/// address ([`address_bucket`]) — shared by all of the key's connections to
/// this relay: reconnecting does not refill it.
#[derive(Debug)]
pub struct SubjectRates {
    per_minute: u32,
    buckets: Mutex<HashMap<String, RateLimiter>>,
}

/// Subjects tracked before idle (full) buckets are forgotten: a forgotten
/// subject starts again with a full bucket, which it had anyway.
const MAX_TRACKED_SUBJECTS: usize = 100_000;

impl SubjectRates {
    pub fn per_minute(per_minute: u32) -> Self {
        SubjectRates {
            per_minute,
            buckets: Mutex::default(),
        }
    }

    /// Takes one token from `subject`'s bucket, or says when to retry.
    pub fn try_take(&self, subject: &str, now: Instant) -> Result<(), Duration> {
        self.with_bucket(subject, now, |bucket| {
            if bucket.try_take(now) {
                Ok(())
            } else {
                Err(bucket.retry_after())
            }
        })
    }

    /// Charges `subject`'s bucket `n` tokens spent elsewhere (see
    /// [`RateLimiter::charge`]).
    pub fn charge(&self, subject: &str, n: u32, now: Instant) {
        self.with_bucket(subject, now, |bucket| bucket.charge(f64::from(n), now))
    }

    /// Gives `subject` back one token (see [`RateLimiter::refund`]).
    pub fn refund(&self, subject: &str, now: Instant) {
        self.with_bucket(subject, now, |bucket| bucket.refund(now))
    }

    fn with_bucket<T>(
        &self,
        subject: &str,
        now: Instant,
        f: impl FnOnce(&mut RateLimiter) -> T,
    ) -> T {
        let mut buckets = self.buckets.lock().expect("subject rates lock");
        if buckets.len() >= MAX_TRACKED_SUBJECTS && !buckets.contains_key(subject) {
            buckets.retain(|_, bucket| !bucket.is_full(now));
        }
        let bucket = buckets
            .entry(subject.to_owned())
            .or_insert_with(|| RateLimiter::per_minute(self.per_minute, now));
        f(bucket)
    }
}

/// The bucket a client address is limited in: an IPv4 address, or an IPv6
/// address's /64 (the smallest block a host is usually given, so one host
/// cannot spread over 2^64 addresses).
pub fn address_bucket(ip: std::net::IpAddr) -> String {
    match ip.to_canonical() {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

impl RateLimiter {
    /// Whether the bucket has refilled completely by `now` (nothing to remember).
    fn is_full(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * self.per_second >= self.capacity
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

    #[test]
    fn a_refund_gives_one_token_back_never_above_the_burst() {
        let t0 = Instant::now();
        let rates = SubjectRates::per_minute(2);
        rates.refund("alice", t0);
        assert!(rates.try_take("alice", t0).is_ok());
        assert!(rates.try_take("alice", t0).is_ok());
        assert!(
            rates.try_take("alice", t0).is_err(),
            "a full bucket gained nothing"
        );
        rates.refund("alice", t0);
        assert!(rates.try_take("alice", t0).is_ok());
        assert!(rates.try_take("alice", t0).is_err());
    }

    #[test]
    fn a_subject_keeps_its_bucket_across_connections() {
        let t0 = Instant::now();
        let rates = SubjectRates::per_minute(2);
        assert!(rates.try_take("mallory", t0).is_ok());
        assert!(rates.try_take("mallory", t0).is_ok());
        assert!(rates.try_take("mallory", t0).is_err());
        assert!(rates.try_take("alice", t0).is_ok());
        assert!(
            rates
                .try_take("mallory", t0 + Duration::from_secs(31))
                .is_ok()
        );
    }

    #[test]
    fn reports_spent_elsewhere_are_charged_down_to_one_bursts_debt() {
        let t0 = Instant::now();
        let rates = SubjectRates::per_minute(6);
        rates.charge("mallory", 4, t0);
        assert!(rates.try_take("mallory", t0).is_ok());
        assert!(rates.try_take("mallory", t0).is_ok());
        assert!(rates.try_take("mallory", t0).is_err(), "6 - 4 - 2 = 0");
        rates.charge("mallory", 100, t0);
        // In debt by one burst (6): 70 s of refill (7 tokens) buys one.
        assert!(
            rates
                .try_take("mallory", t0 + Duration::from_secs(69))
                .is_err()
        );
        assert!(
            rates
                .try_take("mallory", t0 + Duration::from_secs(71))
                .is_ok()
        );
        assert!(
            rates.try_take("alice", t0).is_ok(),
            "others are not charged"
        );
    }

    #[test]
    fn an_ipv6_host_counts_by_its_64_and_mapped_ipv4_as_ipv4() {
        let key = |s: &str| address_bucket(s.parse().unwrap());
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:192.0.2.7"), key("192.0.2.7"));
        assert_ne!(key("192.0.2.7"), key("192.0.2.8"));
    }

    #[test]
    fn byte_budgets_take_many_tokens_at_once() {
        let t0 = Instant::now();
        let mut bytes = RateLimiter::new(1000.0, 500.0, t0);
        assert!(bytes.try_take_n(800.0, t0));
        assert!(!bytes.try_take_n(800.0, t0));
        assert!(bytes.try_take_n(800.0, t0 + Duration::from_secs(2)));
        assert!(!bytes.try_take_n(1001.0, t0 + Duration::from_secs(60)));
    }
}

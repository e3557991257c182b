//! Per-API-key rate limiting: a token bucket per key, refilled at the configured rate with a
//! burst of twice the rate. Checked during authentication, so it covers both transports.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    refilled_at: Instant,
}

/// Buckets idle this long are dropped, so the map stays the size of the active keys.
const IDLE_SECONDS: f64 = 300.0;

impl RateLimiter {
    pub fn new(per_second: u32) -> Self {
        let per_second = f64::from(per_second.max(1));
        RateLimiter {
            per_second,
            burst: per_second * 2.0,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key_id`; `false` when the key is over its rate.
    pub fn allow(&self, key_id: &str) -> bool {
        self.allow_at(key_id, Instant::now())
    }

    fn allow_at(&self, key_id: &str, now: Instant) -> bool {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.len() > 10_000 {
            buckets.retain(|_, bucket| {
                now.duration_since(bucket.refilled_at).as_secs_f64() < IDLE_SECONDS
            });
        }
        let bucket = buckets.entry(key_id.to_string()).or_insert(Bucket {
            tokens: self.burst,
            refilled_at: now,
        });
        let elapsed = now.duration_since(bucket.refilled_at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.refilled_at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_key_gets_its_burst_then_its_rate_and_keys_are_independent() {
        let limiter = RateLimiter::new(10);
        let start = Instant::now();
        let allowed = (0..25).filter(|_| limiter.allow_at("key_a", start)).count();
        assert_eq!(allowed, 20, "burst is twice the rate");
        assert!(
            limiter.allow_at("key_b", start),
            "another key has its own bucket"
        );
        assert!(!limiter.allow_at("key_a", start + Duration::from_millis(50)));
        assert!(
            limiter.allow_at("key_a", start + Duration::from_millis(150)),
            "refilled at 10/s"
        );
    }
}

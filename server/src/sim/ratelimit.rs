//! Per-client token buckets.
//!
//! A client is its `X-Api-Key`, or its peer address. The table of buckets is capped at
//! `rate_limit.max_clients`: when full, buckets that have refilled completely (and so are
//! equivalent to a new one) are dropped first, then the least recently seen.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::settings::RateLimitSettings;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// The answer to one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// Go ahead; `remaining` whole tokens are left.
    Allow {
        /// Tokens left after this request.
        remaining: u32,
    },
    /// Refused; a token will be there after `retry_after`.
    Deny {
        /// Time until the next token.
        retry_after: Duration,
    },
}

/// Token buckets by client key.
#[derive(Debug)]
pub struct RateLimiter {
    rps: f64,
    burst: f64,
    max_clients: usize,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// From the `[rate_limit]` settings.
    pub fn new(s: &RateLimitSettings) -> Self {
        RateLimiter {
            rps: s.rps,
            burst: f64::from(s.burst),
            max_clients: s.max_clients,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The configured policy, for the `RateLimit-Policy` header.
    pub fn policy(&self) -> (u32, u64) {
        let window = (self.burst / self.rps).ceil().max(1.0) as u64;
        (self.burst as u32, window)
    }

    /// Takes one token for `client` at `now`.
    pub fn check(&self, client: &str, now: Instant) -> Decision {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if !buckets.contains_key(client) && buckets.len() >= self.max_clients {
            self.evict(&mut buckets, now);
        }
        let bucket = buckets.entry(client.to_string()).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rps).min(self.burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Decision::Allow {
                remaining: bucket.tokens.floor() as u32,
            }
        } else {
            let missing = 1.0 - bucket.tokens;
            Decision::Deny {
                retry_after: Duration::from_secs_f64(missing / self.rps),
            }
        }
    }

    fn evict(&self, buckets: &mut HashMap<String, Bucket>, now: Instant) {
        let (rps, burst) = (self.rps, self.burst);
        buckets.retain(|_, b| {
            b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * rps < burst
        });
        if buckets.len() >= self.max_clients {
            let oldest = buckets
                .iter()
                .min_by_key(|(_, b)| b.last)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                buckets.remove(&k);
            }
        }
    }

    /// Clients tracked.
    pub fn clients(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rps: f64, burst: u32, max_clients: usize) -> RateLimiter {
        RateLimiter::new(&RateLimitSettings {
            enabled: true,
            rps,
            burst,
            max_clients,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn burst_then_refill() {
        let l = limiter(10.0, 3, 10);
        let t = Instant::now();
        for left in [2, 1, 0] {
            assert_eq!(l.check("a", t), Decision::Allow { remaining: left });
        }
        match l.check("a", t) {
            Decision::Deny { retry_after } => {
                assert!((retry_after.as_secs_f64() - 0.1).abs() < 1e-6)
            }
            other => panic!("expected deny, got {other:?}"),
        }
        // Other clients are unaffected.
        assert!(matches!(l.check("b", t), Decision::Allow { .. }));
        // 100 ms later one token is back.
        let t2 = t + Duration::from_millis(100);
        assert!(matches!(l.check("a", t2), Decision::Allow { .. }));
        assert!(matches!(l.check("a", t2), Decision::Deny { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn client_table_is_bounded() {
        let l = limiter(1.0, 5, 100);
        let t = Instant::now();
        for i in 0..1000 {
            l.check(&format!("c{i}"), t + Duration::from_millis(i));
        }
        assert!(l.clients() <= 100);
    }
}

//! Per-client token buckets.
//!
//! A client is a [`ClientId`]: the checked API key, or the peer's address (see
//! [`crate::sim::client`]), so a key is a few bytes whatever a request carried. The table
//! holds at most `rate_limit.max_clients` buckets: a new client when it is full takes the
//! place of the least recently seen one, which has had the longest to refill. Recency is an
//! ordered index beside the table, so a request costs `O(log n)` and so does an eviction,
//! never a scan. A forgotten client starts again with a full bucket, as a new one would.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::client::ClientId;
use crate::settings::RateLimitSettings;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
    /// Position in the recency index.
    seen: u64,
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

#[derive(Debug, Default)]
struct Table {
    buckets: HashMap<ClientId, Bucket>,
    /// Every tracked client by when it was last seen, oldest first.
    recency: BTreeMap<u64, ClientId>,
    /// The next recency stamp.
    clock: u64,
}

/// Token buckets by client.
#[derive(Debug)]
pub struct RateLimiter {
    rps: f64,
    burst: f64,
    max_clients: usize,
    table: Mutex<Table>,
}

impl RateLimiter {
    /// From the `[rate_limit]` settings.
    pub fn new(s: &RateLimitSettings) -> Self {
        RateLimiter {
            rps: s.rps,
            burst: f64::from(s.burst),
            max_clients: s.max_clients,
            table: Mutex::default(),
        }
    }

    /// The configured policy, for the `RateLimit-Policy` header.
    pub fn policy(&self) -> (u32, u64) {
        let window = (self.burst / self.rps).ceil().max(1.0) as u64;
        (self.burst as u32, window)
    }

    /// Takes one token for `client` at `now`.
    pub fn check(&self, client: ClientId, now: Instant) -> Decision {
        let mut guard = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let table = &mut *guard;
        table.clock += 1;
        let seen = table.clock;
        let bucket = match table.buckets.get_mut(&client) {
            Some(bucket) => {
                table.recency.remove(&bucket.seen);
                bucket
            }
            None => {
                if table.buckets.len() >= self.max_clients
                    && let Some((_, oldest)) = table.recency.pop_first()
                {
                    table.buckets.remove(&oldest);
                }
                table.buckets.entry(client).or_insert(Bucket {
                    tokens: self.burst,
                    last: now,
                    seen,
                })
            }
        };
        table.recency.insert(seen, client);
        bucket.seen = seen;
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

    /// Clients tracked.
    pub fn clients(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .buckets
            .len()
    }

    /// Whether `client` has a bucket.
    #[cfg(test)]
    fn tracks(&self, client: ClientId) -> bool {
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        assert_eq!(table.buckets.len(), table.recency.len(), "index in step");
        table.buckets.contains_key(&client)
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

    fn peer(n: u32) -> ClientId {
        ClientId::peer(std::net::Ipv4Addr::from(n).into())
    }

    #[tokio::test(start_paused = true)]
    async fn burst_then_refill() {
        let l = limiter(10.0, 3, 10);
        let (a, b) = (peer(1), ClientId::ApiKey);
        let t = Instant::now();
        for left in [2, 1, 0] {
            assert_eq!(l.check(a, t), Decision::Allow { remaining: left });
        }
        match l.check(a, t) {
            Decision::Deny { retry_after } => {
                assert!((retry_after.as_secs_f64() - 0.1).abs() < 1e-6)
            }
            other => panic!("expected deny, got {other:?}"),
        }
        // Other clients are unaffected.
        assert!(matches!(l.check(b, t), Decision::Allow { .. }));
        // 100 ms later one token is back.
        let t2 = t + Duration::from_millis(100);
        assert!(matches!(l.check(a, t2), Decision::Allow { .. }));
        assert!(matches!(l.check(a, t2), Decision::Deny { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn client_table_is_bounded_and_forgets_the_least_recently_seen() {
        let l = limiter(1.0, 5, 100);
        let t = Instant::now();
        for i in 0..100 {
            l.check(peer(i), t);
        }
        // Client 0 comes back: client 1 is now the least recently seen.
        l.check(peer(0), t);
        for i in 100..1000 {
            l.check(peer(i), t + Duration::from_millis(u64::from(i)));
            assert!(l.clients() <= 100);
            if i == 100 {
                assert!(l.tracks(peer(0)) && !l.tracks(peer(1)) && l.tracks(peer(2)));
            }
        }
        assert_eq!(l.clients(), 100);
        assert!(l.tracks(peer(999)) && !l.tracks(peer(0)));
    }
}

//! What the client remembers about each server route: does it stream, does it hold requests.
//!
//! A "no" is forgotten after ten minutes, so a server that gains a feature is noticed. A
//! route that once honoured long-poll keeps being offered it even when a later answer was
//! not held (the server may just have been at its cap of waiters).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::ledger::Fact;

const FORGET_AFTER: Duration = Duration::from_secs(600);
const MAX_ROUTES: usize = 1024;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Known {
    #[default]
    Unknown,
    Yes,
    No(Instant),
}

impl Known {
    fn worth_trying(self) -> bool {
        match self {
            Known::No(since) => since.elapsed() >= FORGET_AFTER,
            _ => true,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Route {
    sse: Known,
    long_poll: Known,
}

#[derive(Debug, Default)]
pub(crate) struct Capabilities {
    routes: Mutex<HashMap<String, Route>>,
}

impl Capabilities {
    fn with<T>(&self, key: &str, f: impl FnOnce(&mut Route) -> T) -> T {
        let mut routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        if routes.len() >= MAX_ROUTES && !routes.contains_key(key) {
            routes.clear();
        }
        f(routes.entry(key.to_owned()).or_default())
    }

    pub(crate) fn sse(&self, key: &str) -> bool {
        self.with(key, |r| r.sse.worth_trying())
    }

    pub(crate) fn long_poll(&self, key: &str) -> bool {
        self.with(key, |r| r.long_poll.worth_trying())
    }

    pub(crate) fn set_sse(&self, key: &str, works: bool) {
        self.with(key, |r| {
            r.sse = if works {
                Known::Yes
            } else {
                Known::No(Instant::now())
            }
        });
    }

    /// Remembers what a wait learned about the route `key`.
    pub(crate) fn learned(&self, key: &str, fact: Fact) {
        match fact {
            Fact::SseWorks => self.set_sse(key, true),
            Fact::SseMissing => self.set_sse(key, false),
            Fact::LongPollApplied => self.set_long_poll(key, true),
            Fact::LongPollIgnored => self.set_long_poll(key, false),
        }
    }

    pub(crate) fn set_long_poll(&self, key: &str, applied: bool) {
        self.with(key, |r| {
            r.long_poll = match (applied, r.long_poll) {
                (true, _) => Known::Yes,
                (false, Known::Yes) => Known::Yes,
                (false, _) => Known::No(Instant::now()),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn remembers_and_forgets() {
        let c = Capabilities::default();
        assert!(c.sse("a") && c.long_poll("a"));
        c.set_sse("a", false);
        c.set_long_poll("a", false);
        assert!(!c.sse("a") && !c.long_poll("a"));
        assert!(c.sse("b"), "routes are separate");
        tokio::time::advance(FORGET_AFTER).await;
        assert!(c.sse("a") && c.long_poll("a"));
        c.set_long_poll("a", true);
        c.set_long_poll("a", false);
        assert!(
            c.long_poll("a"),
            "a route that held requests keeps being offered long-poll"
        );
    }
}

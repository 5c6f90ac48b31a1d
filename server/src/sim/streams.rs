//! How many change streams are open: at most `changes.max_streams` in all and
//! `changes.max_streams_per_client` per client.
//!
//! A change stream holds a connection for up to `changes.max_lifetime`, so the cap per client
//! keeps one client from taking them all, and the cap in all keeps the server's files for
//! everyone else. The table holds only clients with a stream open.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rand::Rng;

use super::client::ClientId;
use crate::settings::ChangeSettings;
use crate::time::scaled;

/// How long one stream lives: `changes.max_lifetime`, give or take `changes.lifetime_jitter` of
/// it, drawn anew for each stream so that streams opened together do not end together.
pub fn lifetime(settings: &ChangeSettings) -> Duration {
    let jitter = rand::rng().random_range(-1.0..=1.0) * settings.lifetime_jitter;
    scaled(settings.max_lifetime, 1.0 + jitter)
}

/// Why a stream could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Full {
    /// The client has `changes.max_streams_per_client` open.
    #[error("the client has changes.max_streams_per_client streams open")]
    Client,
    /// `changes.max_streams` are open.
    #[error("changes.max_streams streams are open")]
    Server,
}

/// Open change streams, per client and in all.
#[derive(Debug)]
pub struct StreamSlots {
    max: usize,
    max_per_client: usize,
    held: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_client: HashMap<ClientId, usize>,
}

impl StreamSlots {
    /// None open yet, bounded as `settings` say.
    pub fn new(settings: &ChangeSettings) -> Self {
        StreamSlots {
            max: settings.max_streams,
            max_per_client: settings.max_streams_per_client,
            held: Mutex::default(),
        }
    }

    fn held(&self) -> MutexGuard<'_, Counts> {
        // Single increments: a panic while holding it leaves the counts consistent.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a slot for `client`; give it back with [`StreamSlots::release`].
    pub fn take(&self, client: ClientId) -> Result<(), Full> {
        let mut held = self.held();
        let mine = held.per_client.get(&client).copied().unwrap_or(0);
        if mine >= self.max_per_client {
            return Err(Full::Client);
        }
        if held.total >= self.max {
            return Err(Full::Server);
        }
        held.total += 1;
        held.per_client.insert(client, mine + 1);
        Ok(())
    }

    /// Gives back a slot `client` took.
    pub fn release(&self, client: ClientId) {
        let mut held = self.held();
        if let Some(n) = held.per_client.get_mut(&client) {
            *n -= 1;
            if *n == 0 {
                held.per_client.remove(&client);
            }
            held.total -= 1;
        }
    }

    /// Streams open, all clients together.
    pub fn open(&self) -> usize {
        self.held().total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_are_jittered_within_their_bounds() {
        let mut s = crate::Settings::default().changes;
        s.max_lifetime = Duration::from_secs(100);
        s.lifetime_jitter = 0.1;
        let drawn: Vec<_> = (0..200).map(|_| lifetime(&s)).collect();
        let (lo, hi) = (Duration::from_secs(90), Duration::from_secs(110));
        assert!(drawn.iter().all(|d| (lo..=hi).contains(d)), "{drawn:?}");
        assert!(drawn.iter().any(|d| *d != drawn[0]), "jittered");
        s.lifetime_jitter = 0.0;
        assert_eq!(lifetime(&s), Duration::from_secs(100));
    }

    #[test]
    fn slots_are_bounded_per_client_and_in_all_and_come_back() {
        let mut s = crate::Settings::default().changes;
        s.max_streams = 3;
        s.max_streams_per_client = 2;
        let slots = StreamSlots::new(&s);
        let (a, b, c) = (
            ClientId::ApiKey,
            ClientId::peer([192, 0, 2, 1].into()),
            ClientId::peer([192, 0, 2, 2].into()),
        );
        slots.take(a).unwrap();
        slots.take(a).unwrap();
        assert_eq!(slots.take(a), Err(Full::Client));
        slots.take(b).unwrap();
        assert_eq!(slots.take(c), Err(Full::Server));
        assert_eq!(slots.take(a), Err(Full::Client), "its own cap first");
        slots.release(a);
        slots.take(c).unwrap();
        assert_eq!(slots.open(), 3);
        for client in [a, b, c] {
            slots.release(client);
        }
        assert_eq!(slots.open(), 0);
        assert!(slots.held().per_client.is_empty());
        // Giving back what was never taken changes nothing.
        slots.release(a);
        assert_eq!(slots.open(), 0);
    }
}

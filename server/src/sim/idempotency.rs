//! `Idempotency-Key` on creates: a client that retries a create it is unsure about gets the
//! first answer again instead of a second job.
//!
//! A key is remembered per (client, route, key) — so clients cannot collide, and the same key
//! on another route is another key — from the moment its first request arrives: first *in
//! flight* (while that request's body is being received and the job created), then *done*,
//! holding the answer. A repeat finds one of the three:
//!
//! * nothing: it is the first, and is served;
//! * in flight: `409 request_in_progress`;
//! * done: the same body (byte for byte, compared by SHA-256) gets the stored answer again; a
//!   different body `422 idempotency_key_reused`.
//!
//! Only answers that created something are remembered: a request that was refused (a limit, a
//! bad body) leaves no trace, so its retry is decided afresh. Everything is bounded: a key is
//! at most `idempotency.max_key_len` bytes of `[A-Za-z0-9_:.-]`, an answer is a creation body
//! (a few hundred bytes), keys are forgotten `idempotency.ttl` after their first request, and
//! at most `idempotency.max_keys` are held, all clients together: past it the oldest is
//! forgotten. Keys are kept in arrival order beside the map, so expiry and eviction take the
//! oldest in `O(log n)`, never a scan.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::client::ClientId;
use crate::settings::IdempotencySettings;

/// The request header.
pub const HEADER: &str = "idempotency-key";

/// Why a key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadKey {
    /// Empty, longer than `idempotency.max_key_len`, or a character outside `[A-Za-z0-9_:.-]`.
    Malformed,
    /// More than one `Idempotency-Key` header.
    Repeated,
}

/// The request's key, checked; `Ok(None)` without one.
pub fn key_of(headers: &HeaderMap, max_len: usize) -> Result<Option<Arc<str>>, BadKey> {
    let mut values = headers.get_all(HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(BadKey::Repeated);
    }
    let bytes = value.as_bytes();
    let allowed = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'.' | b'-');
    if bytes.is_empty() || bytes.len() > max_len || !bytes.iter().all(allowed) {
        return Err(BadKey::Malformed);
    }
    // Only ASCII passed: this cannot fail.
    Ok(std::str::from_utf8(bytes).ok().map(Arc::from))
}

/// A remembered answer.
#[derive(Debug)]
pub struct Answer {
    /// SHA-256 of the request body it answered.
    fingerprint: [u8; 32],
    /// Its status.
    pub status: StatusCode,
    /// Its `Location`, if any.
    pub location: Option<HeaderValue>,
    /// Its JSON body.
    pub body: Bytes,
}

/// SHA-256 of a request body.
pub fn fingerprint(body: &[u8]) -> [u8; 32] {
    Sha256::digest(body).into()
}

impl Answer {
    /// An answer to a request whose body had `fingerprint`.
    pub fn new(
        fingerprint: [u8; 32],
        status: StatusCode,
        location: Option<HeaderValue>,
        body: Bytes,
    ) -> Self {
        Answer {
            fingerprint,
            status,
            location,
            body,
        }
    }

    /// Whether it answered a request with this body.
    pub fn answers(&self, fingerprint: &[u8; 32]) -> bool {
        self.fingerprint == *fingerprint
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    client: ClientId,
    route: &'static str,
    key: Arc<str>,
}

#[derive(Debug)]
struct Slot {
    /// Its place in arrival order.
    seq: u64,
    /// When its first request arrived.
    at: Instant,
    /// `None` while in flight.
    answer: Option<Arc<Answer>>,
}

#[derive(Debug, Default)]
struct Table {
    slots: HashMap<Key, Slot>,
    /// Keys by arrival, oldest first.
    order: BTreeMap<u64, Key>,
    next: u64,
}

impl Table {
    fn remove(&mut self, key: &Key, seq: u64) {
        if self.slots.get(key).is_some_and(|s| s.seq == seq) {
            self.slots.remove(key);
            self.order.remove(&seq);
        }
    }

    fn pop_oldest(&mut self) {
        if let Some((_, key)) = self.order.pop_first() {
            self.slots.remove(&key);
        }
    }
}

/// What a request with a key found.
#[derive(Debug)]
pub enum Found<'a> {
    /// The first with this key: serve it, then [`Ticket::finish`] with the answer.
    First(Ticket<'a>),
    /// The first request with this key is still in flight.
    InFlight,
    /// The first request with this key was answered so.
    Answered(Arc<Answer>),
}

/// The right to answer a key first. Dropped without [`Ticket::finish`] (a refusal, or the
/// client went away), the key is forgotten.
#[derive(Debug)]
pub struct Ticket<'a> {
    table: &'a Idempotency,
    key: Key,
    seq: u64,
    finished: bool,
}

impl Ticket<'_> {
    /// Remembers `answer` for the key (unless it was evicted meanwhile).
    pub fn finish(mut self, answer: Answer) {
        self.finished = true;
        let mut table = self.table.lock();
        if let Some(slot) = table.slots.get_mut(&self.key)
            && slot.seq == self.seq
        {
            slot.answer = Some(Arc::new(answer));
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.table.lock().remove(&self.key, self.seq);
        }
    }
}

/// The keys of every client, bounded and expiring.
#[derive(Debug)]
pub struct Idempotency {
    /// `idempotency.ttl`.
    ttl: Duration,
    /// `idempotency.max_keys`.
    max_keys: usize,
    table: Mutex<Table>,
}

impl Idempotency {
    /// Empty, with the limits of `settings`.
    pub fn new(settings: &IdempotencySettings) -> Self {
        Idempotency {
            ttl: settings.ttl,
            max_keys: settings.max_keys,
            table: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // Single operations: a panic while holding it leaves the table consistent.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Looks `key` up for `client` on `route` at `now`, and claims it if it is new.
    pub fn begin(
        &self,
        client: ClientId,
        route: &'static str,
        key: Arc<str>,
        now: Instant,
    ) -> Found<'_> {
        let key = Key { client, route, key };
        let mut table = self.lock();
        // Forget what has expired, oldest first: arrival order is expiry order.
        while let Some((&seq, oldest)) = table.order.first_key_value() {
            let expired = table
                .slots
                .get(oldest)
                .is_none_or(|s| crate::time::later(s.at, self.ttl) <= now);
            if !expired {
                break;
            }
            let oldest = oldest.clone();
            table.remove(&oldest, seq);
            // A slot already gone leaves its order entry; drop it too.
            table.order.remove(&seq);
        }
        if let Some(slot) = table.slots.get(&key) {
            return match &slot.answer {
                Some(answer) => Found::Answered(Arc::clone(answer)),
                None => Found::InFlight,
            };
        }
        while table.slots.len() >= self.max_keys {
            table.pop_oldest();
        }
        let seq = table.next;
        table.next += 1;
        table.order.insert(seq, key.clone());
        table.slots.insert(
            key.clone(),
            Slot {
                seq,
                at: now,
                answer: None,
            },
        );
        Found::First(Ticket {
            table: self,
            key,
            seq,
            finished: false,
        })
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.lock().slots.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(ttl_secs: u64, max_keys: usize) -> Idempotency {
        Idempotency::new(&IdempotencySettings {
            ttl: Duration::from_secs(ttl_secs),
            max_keys,
            max_key_len: 255,
        })
    }

    fn answer(body: &'static [u8]) -> Answer {
        Answer::new(
            fingerprint(body),
            StatusCode::OK,
            None,
            Bytes::from_static(body),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_is_first_then_in_flight_then_answered_until_it_expires() {
        let t = table(10, 100);
        let (a, b) = (ClientId::ApiKey, ClientId::peer([192, 0, 2, 9].into()));
        let k: Arc<str> = Arc::from("k-1");
        let now = Instant::now();
        let Found::First(ticket) = t.begin(a, "v2", k.clone(), now) else {
            panic!("first")
        };
        assert!(matches!(t.begin(a, "v2", k.clone(), now), Found::InFlight));
        // Another client, or another route, is another key.
        assert!(matches!(t.begin(b, "v2", k.clone(), now), Found::First(_)));
        assert!(matches!(t.begin(a, "v3", k.clone(), now), Found::First(_)));
        ticket.finish(answer(b"{}"));
        let Found::Answered(got) = t.begin(a, "v2", k.clone(), now) else {
            panic!("answered")
        };
        assert!(got.answers(&fingerprint(b"{}")));
        assert!(!got.answers(&fingerprint(b"{ }")));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(matches!(
            t.begin(a, "v2", k, Instant::now()),
            Found::First(_)
        ));
        assert_eq!(
            t.len(),
            0,
            "expired, and the dropped ticket forgot its claim"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_request_leaves_no_trace() {
        let t = table(10, 100);
        let k: Arc<str> = Arc::from("k");
        let first = t.begin(ClientId::ApiKey, "v1", k.clone(), Instant::now());
        drop(first);
        assert!(t.is_empty());
        assert!(matches!(
            t.begin(ClientId::ApiKey, "v1", k, Instant::now()),
            Found::First(_)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn the_table_is_bounded_and_forgets_the_oldest() {
        let t = table(3600, 3);
        for i in 0..50 {
            let Found::First(ticket) = t.begin(
                ClientId::ApiKey,
                "v1",
                Arc::from(format!("k{i}")),
                Instant::now(),
            ) else {
                panic!("first");
            };
            ticket.finish(answer(b"{}"));
            assert!(t.len() <= 3);
        }
        assert!(matches!(
            t.begin(ClientId::ApiKey, "v1", Arc::from("k49"), Instant::now()),
            Found::Answered(_)
        ));
        assert!(matches!(
            t.begin(ClientId::ApiKey, "v1", Arc::from("k0"), Instant::now()),
            Found::First(_)
        ));
        let table = t.lock();
        assert_eq!(table.slots.len(), table.order.len());
    }

    #[test]
    fn keys_are_bounded_in_length_and_alphabet() {
        let of = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(HEADER, HeaderValue::from_str(v).unwrap());
            }
            key_of(&h, 8).map(|k| k.map(|k| k.to_string()))
        };
        assert_eq!(of(&[]), Ok(None));
        assert_eq!(of(&["a-b_c:d."]), Ok(Some("a-b_c:d.".into())));
        assert_eq!(of(&["123456789"]), Err(BadKey::Malformed));
        assert_eq!(of(&[""]), Err(BadKey::Malformed));
        assert_eq!(of(&["a b"]), Err(BadKey::Malformed));
        assert_eq!(of(&["a/b"]), Err(BadKey::Malformed));
        assert_eq!(of(&["a", "a"]), Err(BadKey::Repeated));
    }
}

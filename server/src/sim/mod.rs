//! The simulated backend: jobs whose status is derived from the clock, the bounded store that
//! holds them, the change log of what happens to them and the watch sets that follow some of
//! them, and the things that happen around them (faults, rate limits, webhooks, the HeyGen
//! dialect's concurrency limit and the `Idempotency-Key` table).

pub mod changes;
pub mod client;
pub mod concurrency;
pub mod faults;
pub mod heygen;
pub mod idempotency;
pub mod job;
pub mod ratelimit;
pub mod redis;
pub mod store;
pub mod streams;
mod timeline;
pub mod watch;
pub mod webhooks;

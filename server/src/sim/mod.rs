//! The simulated backend: jobs whose status is derived from the clock, the bounded store that
//! holds them, and the things that happen around them (faults, rate limits, webhooks).

pub mod client;
pub mod faults;
pub mod job;
pub mod ratelimit;
pub mod store;
mod timeline;
pub mod webhooks;

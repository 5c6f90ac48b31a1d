//! Integration tests of the simulator: the real server on `127.0.0.1:0`, real HTTP.
#![allow(clippy::unwrap_used, missing_docs)]

mod abuse;
mod api;
mod batch;
mod cancel;
mod changes;
mod cli;
mod common;
mod faults;
mod hang;
mod hardening;
mod heygen;
mod limits;
mod longpoll;
mod metrics;
mod scaleout;
mod silent;
mod sse;
mod stream;
mod watches;
mod webhooks;

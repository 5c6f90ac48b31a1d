//! Integration tests of the SDK against the real simulator (on 127.0.0.1:0), a plain
//! `/status` server and a scripted server. One test binary; one module per concern.

#![allow(
    clippy::unwrap_used,
    clippy::disallowed_methods,
    missing_docs,
    unreachable_pub
)]

mod client;
mod deadline;
mod hardening;
mod hostile;
mod jobset;
mod mechanisms;
mod observability;
mod profiles;
mod resilience;
mod stream;
mod support;
mod transport;
mod webhook;
mod webhook_jobset;

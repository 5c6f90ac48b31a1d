//! Wait for long-running video-translation jobs as cheaply and as promptly as the server
//! allows.
//!
//! A translation job takes seconds to minutes. This crate answers the one question a caller
//! has — *is it done yet?* — without hundreds of useless status requests and without learning
//! about the end late. It picks the best mechanism the server offers (Server-Sent Events,
//! long-poll, server hints, a schedule learned from past jobs, a cold-start schedule),
//! survives ordinary transient failures, hedges slow status reads, sits out outages behind a
//! circuit breaker, and reports how it went.
//!
//! ```no_run
//! use std::time::Duration;
//! use translation_status::{Client, Error, WaitOptions};
//!
//! # async fn demo() -> Result<(), Error> {
//! let client = Client::builder()
//!     .base_url("http://localhost:8080")
//!     .request_timeout(Duration::from_secs(5))
//!     .build()?;
//!
//! // Address a job by id, or by the full URL of its status (`http://host/status` works too).
//! match client.wait_with("j-42", &WaitOptions::new().deadline(Duration::from_secs(120))).await {
//!     Ok(done) => println!(
//!         "completed after {} requests via {}",
//!         done.report.requests, done.report.mechanism
//!     ),
//!     Err(Error::JobFailed(failed)) => eprintln!("the job failed: {:?}", failed.message),
//!     Err(Error::GaveUp(g)) => eprintln!("still running after {:?}", g.elapsed()),
//!     Err(Error::Unavailable(u)) => eprintln!("the service was down: {u}"),
//!     Err(other) => eprintln!("{other}"),
//! }
//! # Ok(()) }
//! ```
//!
//! # Module map
//!
//! | where | in `src/` | what |
//! | --- | --- | --- |
//! | [`Client`], [`ClientBuilder`] | `client/` | `status` (one read), `wait`/`wait_with`, `watch` (a stream of changes), `create_job`, `job_set`/`restore_job_set`; the builder checks every setting |
//! | [`JobRef`], [`CreatedJob`] | `job.rs` | naming a job: by id or by status URL |
//! | [`JobStatus`], [`JobState`], [`NewJob`], [`CreateRequest`] | `model.rs` | what the service says: five canonical states, the service's own word, the result URL |
//! | [`Profile`] | `profile/` | a job API's dialect as data — status URL, JSON pointers, state words, hints, auth, creation; built-ins for the simulator, `{"result"}`, HeyGen v2/v3, Replicate, OpenAI videos — read by one function, [`Profile::decode`] ([`profile`]) |
//! | [`wait`] | `wait/` | one job's wait: mechanism negotiation, [`WaitOptions`], [`WaitReport`], [`Watch`]. Inside: the per-job state machine both drivers hold (`ledger/`), the single wait's driver (`run.rs`), the network they read through (`wire.rs`, `http_source.rs`) |
//! | [`jobset`] | `jobset/` | many jobs at once: the other driver, one scheduler over every job's state machine (`scheduler/`), a shared request budget (`budget.rs`), durable state (`saved.rs`), stall detection ([`Client::job_set`]) |
//! | *(internal)* | `context.rs` | what both drivers receive from the client: the network, the base URL, what each route supports, learned durations, the budget |
//! | [`poll`] | `poll/` | *when to look again*: the pure [`PollPolicy`](poll::PollPolicy) trait, [`Fixed`](poll::Fixed), [`Exponential`](poll::Exponential), [`Adaptive`](poll::Adaptive) (composed of its three schedules), the limit decorators, learned durations |
//! | [`transport`] | `transport/` | *how to survive one request*: the reqwest-middleware stack and its documented order — `Retry-After`, retries with a classifier, a circuit breaker per host ([`BreakerConfig`](transport::BreakerConfig)), hedged status reads ([`HedgeConfig`](transport::HedgeConfig)) — and what an answer means for a wait (`answer.rs`, built on [`classify`](transport::classify)) |
//! | [`webhook`] | `webhook/` | receiving pushed states: verification of Standard Webhooks, HeyGen's hex HMAC and timestamped HMACs (Synthesia, ElevenLabs) with a timestamp tolerance, a bounded replay cache and body limits; events read through a [`Profile`]; [`Receiver::receive`](webhook::Receiver::receive) for any framework, an axum handler with the `axum` feature |
//! | [`Error`] | `error.rs` | one error type, variants by what to do next (including [`Error::Unavailable`]: the breaker is open, try again later) |
//! | [`telemetry`] | `telemetry.rs` | the metric names emitted through the `metrics` facade, and [`describe_metrics`](telemetry::describe_metrics) for exporters |
//!
//! # Features
//!
//! | feature | default | what it does |
//! | --- | --- | --- |
//! | `otel` | off | Propagates W3C trace context (`traceparent`) from the current `tracing` span on every request, through the application's OpenTelemetry propagator (adds `opentelemetry` and `tracing-opentelemetry`). |
//! | `axum` | off | `webhook::axum::route`: an axum handler that verifies webhook deliveries, answers `2xx`/`4xx`, and hands each event to an [`EventSink`](webhook::EventSink) (adds `axum`). |
//!
//! Everything else is always built; TLS is rustls. Features are additive.
//!
//! Behaviour that is on by default is switched on the [`ClientBuilder`], not by features:
//!
//! | behaviour | default | switch |
//! | --- | --- | --- |
//! | hedged status reads | on: after the observed p95 (≥ 50 ms), ≤ 5 % of calls | [`hedging`](ClientBuilder::hedging), [`without_hedging`](ClientBuilder::without_hedging) |
//! | following redirects | off: a `3xx` is [`Error::UnexpectedResponse`]; when on, only within the request's origin | [`follow_redirects`](ClientBuilder::follow_redirects) |
//! | circuit breaker per host | on: opens after 5 failed attempts in a row or half of ≥ 20 in 10 s; pauses waits | [`circuit_breaker`](ClientBuilder::circuit_breaker), [`without_circuit_breaker`](ClientBuilder::without_circuit_breaker) |
//!
//! # Observability
//!
//! Each wait is a `tracing` span `wait` (fields `job`, `mechanism`, `requests`, `retries`,
//! `hedges`, `outcome`: the [`WaitReport`]'s counts) with child spans `events`, `poll` (with `request` spans per attempt on the
//! wire) and `sleep`. Metrics go through the [`metrics`](https://docs.rs/metrics) facade under
//! the names in [`telemetry`]; a binary that exports them calls
//! [`telemetry::describe_metrics`] after installing its recorder. This library never installs
//! a subscriber or a recorder.
//!
//! # Minimum supported Rust version
//!
//! Rust 1.88.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod client;
mod clock;
mod context;
mod error;
mod job;
pub mod jobset;
mod model;
#[cfg(test)]
mod parity;
pub mod poll;
pub mod profile;
#[cfg(test)]
mod props;
mod redact;
pub mod telemetry;
pub mod transport;
pub mod wait;
pub mod webhook;

pub use client::{Client, ClientBuilder};
pub use error::{
    BoxError, ConfigError, Error, GaveUp, GiveUpReason, JobCanceled, JobFailed, SavedStateError,
    Stalled, Unavailable, UnexpectedResponse, UnknownState, Unreachable,
};
pub use job::{CreatedJob, JobRef, JobRefKind};
pub use model::{
    CreateRequest, JobFailure, JobState, JobStatus, MAX_MESSAGE, MAX_RESULT_URL, MAX_WORD, NewJob,
    Outcome, ParseError,
};
pub use profile::Profile;
pub use wait::{
    Completion, Fallback, FallbackReason, Mechanism, RemoteCancel, WaitOptions, WaitReport, Watch,
};

/// The crate docs' feature table names every feature `Cargo.toml` declares.
#[cfg(test)]
#[test]
fn every_feature_is_in_the_feature_table() {
    let manifest = include_str!("../Cargo.toml");
    let docs = include_str!("lib.rs");
    let features = manifest
        .split("\n[features]\n")
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .unwrap_or_default();
    let names: Vec<&str> = features
        .lines()
        .filter_map(|line| line.split_once(" = ").map(|(name, _)| name.trim()))
        .filter(|name| *name != "default")
        .collect();
    assert!(!names.is_empty(), "no [features] found");
    for name in names {
        assert!(
            docs.contains(&format!("//! | `{name}` |")),
            "feature `{name}` is missing from the crate docs' feature table"
        );
    }
}

/// The README's examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

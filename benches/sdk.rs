//! Hot paths of the SDK: poll decisions, status parsing, and one status call through the full
//! client stack (throttle, retry, circuit breaker, hedging) against the same stack without
//! the resilience layers and against a bare reqwest call (all against the in-process
//! simulator). `sdk_client / raw_reqwest` is the stack's per-call overhead;
//! `sdk_client / sdk_without_resilience` is the breaker's and the hedge tracker's
//! bookkeeping.
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use translation_status::poll::{
    Adaptive, DurationModel, Estimate, Fixed, PollPolicy, PollPolicyExt, PollState, Sample,
};
use translation_status::{Client, JobRef, JobStatus};

fn policies(c: &mut Criterion) {
    let mut g = c.benchmark_group("poll_decision");
    let fixed = Fixed::new(Duration::from_secs(1)).with_deadline(Duration::from_secs(60));
    let state = PollState::new()
        .with_polls(3)
        .with_elapsed(Duration::from_secs(3))
        .with_age(Duration::from_secs(3));
    g.bench_function("fixed_with_deadline", |b| {
        b.iter(|| black_box(fixed.next(black_box(&state))))
    });
    let adaptive = Adaptive::new();
    let hinted = state.clone().with_eta(Estimate::new(
        Duration::from_secs(3),
        Duration::from_secs(2),
    ));
    g.bench_function("adaptive_hints", |b| {
        b.iter(|| black_box(adaptive.next(black_box(&hinted))))
    });
    let samples: Vec<Sample> = (0..200)
        .map(|i| Sample::exact(Duration::from_millis(2000 + (i * 37) % 1500)))
        .collect();
    let model = Arc::new(DurationModel::fit(&samples));
    let learned = state.clone().with_learned(Arc::clone(&model));
    g.bench_function("adaptive_learned", |b| {
        b.iter(|| black_box(adaptive.next(black_box(&learned))))
    });
    g.bench_function("fit_200_samples", |b| {
        b.iter(|| black_box(DurationModel::fit(black_box(&samples))))
    });
    g.finish();
}

fn parsing(c: &mut Criterion) {
    let mut g = c.benchmark_group("status_parse");
    let pending = br#"{"id":"j-0123456789abcdef","result":"pending","progress":0.42,"eta_ms":2900,"created_at":"2026-11-24T01:02:03.456Z"}"#;
    let failed = br#"{"id":"j-0123456789abcdef","result":"error","progress":1.0,"created_at":"2026-11-24T01:02:03.456Z","completed_at":"2026-11-24T01:02:08.456Z","error":{"code":"translation_failed","message":"the video could not be translated"}}"#;
    let plain = br#"{"result":"completed"}"#;
    for (name, body) in [
        ("pending", &pending[..]),
        ("error", &failed[..]),
        ("plain", &plain[..]),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| black_box(JobStatus::from_json(black_box(body))))
        });
    }
    g.finish();
}

fn end_to_end(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(async {
        let mut s = translation_sim::Settings::default();
        s.server.bind = "127.0.0.1:0".parse().unwrap();
        s.legacy.delay = Duration::from_secs(3600);
        translation_sim::spawn(s).await.unwrap()
    });
    let url = server.url("/status");
    // The defaults: hedging and the circuit breaker on.
    let client = Client::new(&server.base_url()).unwrap();
    let bare = Client::builder()
        .base_url(server.base_url())
        .without_hedging()
        .without_circuit_breaker()
        .build()
        .unwrap();
    let job = JobRef::status_url(url.clone());
    let raw = reqwest::Client::new();
    let mut g = c.benchmark_group("status_call");
    g.bench_function("sdk_client", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(client.status(job.clone()).await.unwrap()) })
    });
    g.bench_function("sdk_without_resilience", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(bare.status(job.clone()).await.unwrap()) })
    });
    g.bench_function("raw_reqwest", |b| {
        b.to_async(&rt).iter(|| async {
            let body = raw.get(&url).send().await.unwrap().bytes().await.unwrap();
            black_box(JobStatus::from_json(&body).unwrap())
        })
    });
    g.finish();
    rt.block_on(server.shutdown());
}

criterion_group!(benches, policies, parsing, end_to_end);
criterion_main!(benches);

//! The two drivers of a wait — the single wait's loop and the job set's scheduler — fed the
//! same answers, in paused time: they send the same requests at the same instants (with the
//! same entity tags), and end with the same result and report.
//!
//! Each case is a script of answers, played once to [`wait_for`](crate::wait::wait_for) and
//! once to a set of one job. The differences the job set keeps on purpose are not in these
//! scripts (its first look is never held; its requests wait for the shared budget, which is
//! large here); they have tests of their own in `jobset::scheduler::tests`.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::context::Context;
use crate::error::Error;
use crate::job::JobRef;
use crate::jobset::{JobSet, JobSetOptions, RequestBudget, StallDetection};
use crate::model::JobState;
use crate::poll::{Adaptive, Fixed};
use crate::wait::script::{
    Reply, Script, Sent, StreamReply, completed, event, failed, not_modified, pending,
    pending_with, refused, secs, status, throttled, unexpected,
};
use crate::wait::{Completion, Fallback, FallbackReason, Mechanism, WaitOptions};

/// The parts of a client around a script, with a budget far above what a wait asks.
fn context(script: Script) -> Context<Script> {
    crate::wait::script::context(script, RequestBudget::new(1000.0, 100))
}

/// How a wait ended, in terms both drivers must agree on.
#[derive(Debug, PartialEq)]
struct Summary {
    outcome: String,
    requests: Option<u32>,
    retries: Option<u32>,
    mechanism: Option<Mechanism>,
    fallbacks: Vec<Fallback>,
    elapsed_ms: Option<u128>,
}

fn summarize(result: &Result<Completion, Error>) -> Summary {
    let (outcome, report) = match result {
        Ok(done) => ("completed".to_owned(), Some(&done.report)),
        Err(Error::JobFailed(f)) => ("failed".to_owned(), Some(&f.report)),
        Err(Error::GaveUp(g)) => (format!("gave up: {:?}", g.reason), Some(&g.report)),
        Err(Error::Unavailable(u)) => (
            format!("unavailable: {} {:?}", u.host, u.retry_after),
            u.report.as_ref(),
        ),
        Err(Error::UnexpectedResponse(e)) => (format!("unexpected: {}", e.status), None),
        Err(Error::Unreachable(u)) => (format!("unreachable: {:?}", u.status), None),
        Err(other) => (format!("{other}"), None),
    };
    Summary {
        outcome,
        requests: report.map(|r| r.requests),
        retries: report.map(|r| r.retries),
        mechanism: report.map(|r| r.mechanism),
        fallbacks: report.map(|r| r.fallbacks.clone()).unwrap_or_default(),
        elapsed_ms: report.map(|r| r.elapsed.as_millis()),
    }
}

/// One wait of `job` on a fresh script, alone.
async fn alone(
    script: Script,
    options: &WaitOptions,
    created: bool,
) -> (Result<Completion, Error>, Vec<Sent>) {
    let job = job(created);
    let ctx = context(script.clone());
    let result = crate::wait::wait_for(&ctx, job, options, &mut |_| {}).await;
    (result, script.sent())
}

/// The same wait, as a set of one.
async fn in_a_set(
    script: Script,
    options: &WaitOptions,
    created: bool,
) -> (Result<Completion, Error>, Vec<Sent>) {
    let job = job(created);
    let options = JobSetOptions::new()
        .wait_options(options.clone())
        .stall(StallDetection::Off);
    let mut set =
        JobSet::start(Arc::new(context(script.clone())), options, Vec::new(), &[]).unwrap();
    set.add(job).unwrap();
    let (_, result) = set.next_finished().await.unwrap();
    (result, script.sent())
}

fn job(created: bool) -> JobRef {
    let job = JobRef::id("j-1");
    if created {
        job.with_created_at(Instant::now())
    } else {
        job
    }
}

/// A case: its name, the options, whether the job's creation is known, the script.
type Case = (&'static str, WaitOptions, bool, fn() -> Script);

/// How much later a set may send than a single wait: its requests come out of the shared
/// budget, which paces two requests in the same instant (a refused stream, then the poll
/// instead) by a millisecond, and after a `429` paces at a halved rate (here 1,000 a second,
/// halved twice: a few milliseconds).
const BUDGET_PACING_MS: u64 = 10;

fn polling(every: f64) -> WaitOptions {
    WaitOptions::new()
        .sse(false)
        .long_poll(false)
        .policy(Fixed::new(secs(every)))
}

fn cases() -> Vec<Case> {
    vec![
        (
            "pending with an entity tag, then 304s: If-None-Match, then done",
            polling(1.0),
            false,
            || {
                Script::new(
                    vec![
                        Reply::new(secs(0.1), || pending_with(None, Some("\"v1\""), None, None)),
                        Reply::new(secs(0.1), not_modified),
                        Reply::new(secs(0.1), not_modified),
                        Reply::new(secs(0.1), completed),
                    ],
                    vec![],
                )
            },
        ),
        (
            "progress from a job of known age places the end (and drops the tag)",
            WaitOptions::new()
                .sse(false)
                .long_poll(false)
                .policy(Adaptive::new()),
            true,
            || {
                // A 10 s job read at 0 s, then wherever its progress says.
                let reads = (0..8)
                    .map(|i| {
                        Reply::new(Duration::ZERO, move || {
                            if i < 3 {
                                let p = [0.0, 0.67, 0.95][i];
                                pending_with(Some(p), Some("\"v\""), Some(10.0), None)
                            } else {
                                completed()
                            }
                        })
                    })
                    .collect();
                Script::new(reads, vec![])
            },
        ),
        (
            "hints: Retry-After on pending answers",
            WaitOptions::new()
                .sse(false)
                .long_poll(false)
                .policy(Adaptive::new()),
            false,
            || {
                Script::new(
                    vec![
                        Reply::new(secs(0.05), || pending_with(None, None, None, Some(2.0))),
                        Reply::new(secs(0.05), || pending_with(None, None, None, Some(1.0))),
                        Reply::new(secs(0.05), completed),
                    ],
                    vec![],
                )
            },
        ),
        (
            "429 + Retry-After: waited out exactly, never the end",
            polling(1.0),
            false,
            || {
                Script::new(
                    vec![
                        Reply::new(Duration::ZERO, pending),
                        throttled(2.5),
                        throttled(0.0),
                        Reply::new(Duration::ZERO, completed),
                    ],
                    vec![],
                )
            },
        ),
        (
            "an outage to the deadline: unavailable, with the breaker's word",
            polling(1.0).deadline(secs(5.0)),
            false,
            || {
                Script::new(
                    vec![
                        Reply::new(Duration::ZERO, pending),
                        Reply::new(secs(0.2), || failed(true)),
                        refused(10.0),
                        refused(6.0),
                    ],
                    vec![],
                )
            },
        ),
        (
            "a host that never answered: unreachable at once",
            polling(1.0),
            false,
            || Script::new(vec![Reply::new(secs(0.3), || failed(false))], vec![]),
        ),
        (
            "unreadable answers: twice more, then the error",
            polling(1.0),
            false,
            || {
                let malformed =
                    || crate::transport::answer::ReadOutcome::Malformed(unexpected(200));
                Script::new(
                    vec![
                        Reply::new(Duration::ZERO, malformed),
                        Reply::new(Duration::ZERO, malformed),
                        Reply::new(Duration::ZERO, malformed),
                    ],
                    vec![],
                )
            },
        ),
        ("a rejected read ends the wait", polling(1.0), false, || {
            Script::new(
                vec![
                    Reply::new(Duration::ZERO, pending),
                    Reply::new(Duration::ZERO, || {
                        crate::transport::answer::ReadOutcome::Failed(unexpected(404))
                    }),
                ],
                vec![],
            )
        }),
        ("a job that fails", polling(1.0), false, || {
            Script::new(
                vec![
                    Reply::new(Duration::ZERO, pending),
                    Reply::new(Duration::ZERO, || {
                        status(JobState::Failed(crate::model::JobFailure {
                            code: Some("bad_input".into()),
                            message: None,
                        }))
                    }),
                ],
                vec![],
            )
        }),
        (
            "a refused stream: polling instead",
            WaitOptions::new()
                .long_poll(false)
                .policy(Fixed::new(secs(1.0))),
            false,
            || {
                Script::new(
                    vec![
                        Reply::new(Duration::ZERO, pending),
                        Reply::new(Duration::ZERO, completed),
                    ],
                    vec![StreamReply::Refused(FallbackReason::NotSupported)],
                )
            },
        ),
        (
            "a stream that breaks twice, then ends the wait",
            WaitOptions::new()
                .long_poll(false)
                .policy(Fixed::new(secs(1.0))),
            false,
            || {
                let pending = || (secs(0.1), event(r#"{"result":"pending","progress":0.1}"#));
                Script::new(
                    vec![],
                    vec![
                        StreamReply::Events(vec![pending()]),
                        StreamReply::Events(vec![pending()]),
                        StreamReply::Events(vec![
                            pending(),
                            (secs(2.0), event(r#"{"result":"completed"}"#)),
                        ]),
                    ],
                )
            },
        ),
        (
            "a stream open at the deadline is cut there",
            WaitOptions::new().long_poll(false).deadline(secs(3.0)),
            false,
            || {
                Script::new(
                    vec![],
                    vec![StreamReply::Events(vec![
                        (secs(0.1), event(r#"{"result":"pending"}"#)),
                        (secs(60.0), event(r#"{"result":"completed"}"#)),
                    ])],
                )
            },
        ),
        ("the poll budget", polling(1.0).max_polls(3), false, || {
            Script::new(vec![], vec![])
        }),
        (
            "a deadline with reads in flight",
            polling(1.0).deadline(secs(2.5)),
            false,
            || {
                Script::new(
                    vec![
                        Reply::new(secs(0.2), pending),
                        Reply::new(secs(0.2), pending),
                        Reply::new(secs(10.0), pending),
                    ],
                    vec![],
                )
            },
        ),
    ]
}

#[tokio::test(start_paused = true)]
async fn both_drivers_decide_the_same_on_the_same_answers() {
    for (name, options, created, script) in cases() {
        let (single, sent_alone) = alone(script(), &options, created).await;
        let (set, sent_in_set) = in_a_set(script(), &options, created).await;
        assert!(!sent_alone.is_empty(), "{name}");
        assert_eq!(
            sent_alone.len(),
            sent_in_set.len(),
            "{name}: {sent_alone:?} / {sent_in_set:?}"
        );
        // The same requests, in the same order, at the same instants but for the budget's
        // pacing.
        let mut lag = 0;
        for (a, b) in sent_alone.iter().zip(&sent_in_set) {
            let (mut a, mut b) = (a.clone(), b.clone());
            lag = b.at_ms.saturating_sub(a.at_ms);
            assert!(
                b.at_ms >= a.at_ms && lag <= BUDGET_PACING_MS,
                "{name}: {a:?} / {b:?}"
            );
            (a.at_ms, b.at_ms) = (0, 0);
            assert_eq!(a, b, "{name}: the requests");
        }
        let (mut single, mut set) = (summarize(&single), summarize(&set));
        let at: Vec<u64> = sent_alone.iter().map(|s| s.at_ms).collect();
        eprintln!("{name}: sent at {at:?} ms, {single:?}");
        if let (Some(a), Some(b)) = (single.elapsed_ms, set.elapsed_ms) {
            assert!(b >= a && b - a <= u128::from(lag), "{name}: {a} / {b} ms");
            (single.elapsed_ms, set.elapsed_ms) = (None, None);
        }
        assert_eq!(single, set, "{name}: the ending");
    }
}

/// The cases say what they claim: a few of the decisions, spelled out.
#[tokio::test(start_paused = true)]
async fn the_cases_show_what_they_claim() {
    let cases = cases();
    let run = |i: usize| {
        let (_, options, created, script) = &cases[i];
        let script = script();
        let options = options.clone();
        let created = *created;
        async move { alone(script, &options, created).await }
    };
    // The entity tag goes with every read after the first.
    let (result, sent) = run(0).await;
    assert!(result.is_ok());
    let tags: Vec<Option<&str>> = sent.iter().map(|s| s.etag.as_deref()).collect();
    assert_eq!(tags, [None, Some("\"v1\""), Some("\"v1\""), Some("\"v1\"")]);
    // Progress: the tag is dropped once progress places the end; three looks find it.
    let (result, sent) = run(1).await;
    assert!(result.is_ok());
    assert!(sent.iter().all(|s| s.etag.is_none()), "{sent:?}");
    assert!(sent.len() <= 4, "{sent:?}");
    // 429 + Retry-After 2.5 s, then Retry-After 0 (the floor).
    let (_, sent) = run(3).await;
    let at: Vec<u64> = sent.iter().map(|s| s.at_ms).collect();
    assert_eq!(at, [0, 1000, 3500, 3550]);
    // The outage: unavailable at the deadline, with what the breaker said last.
    let (result, _) = run(4).await;
    let summary = summarize(&result);
    assert!(
        summary.outcome.starts_with("unavailable: script:8080"),
        "{summary:?}"
    );
    assert_eq!(summary.elapsed_ms, Some(5000));
}

/// A wait that gives up cancels its job when asked: both drivers send one cancel at the
/// deadline and report what became of the job; a job whose id is not known is not canceled.
#[tokio::test(start_paused = true)]
async fn a_wait_that_gives_up_cancels_its_job_in_both_drivers() {
    use crate::wait::RemoteCancel;
    let options = polling(1.0).deadline(secs(2.5)).cancel_on_give_up(true);
    let remote = |result: &Result<Completion, Error>| match result {
        Err(Error::GaveUp(g)) => g.remote_cancel.clone(),
        other => panic!("{other:?}"),
    };
    let script = || Script::new(vec![], vec![]).on_cancel(secs(0.3), RemoteCancel::Canceled);
    let started = Instant::now();
    let (result, sent) = alone(script(), &options, false).await;
    assert_eq!(remote(&result), Some(RemoteCancel::Canceled));
    assert!(
        result
            .as_ref()
            .unwrap_err()
            .to_string()
            .contains("will not finish")
    );
    // It ended when the cancel came back: after the deadline, by the cancel's round trip.
    assert_eq!(started.elapsed(), secs(2.8));
    let last = sent.last().unwrap();
    assert_eq!(
        (last.kind, last.path.as_str(), last.at_ms),
        ("cancel", "/v1/jobs/j-1/cancel", 2500)
    );
    let (in_set, set_sent) = in_a_set(script(), &options, false).await;
    assert_eq!(remote(&in_set), Some(RemoteCancel::Canceled));
    assert_eq!(
        set_sent.last().map(|s| (s.kind, s.at_ms)),
        Some(("cancel", 2500))
    );
    assert_eq!(set_sent.iter().filter(|s| s.kind == "cancel").count(), 1);

    // Refused (the job finished meanwhile), in a set too.
    let refused = RemoteCancel::Refused {
        status: 409,
        code: Some("job_finished".into()),
    };
    let script = Script::new(vec![], vec![]).on_cancel(secs(0.0), refused.clone());
    let (result, _) = in_a_set(script, &options, false).await;
    assert_eq!(remote(&result), Some(refused));

    // Not asked: nothing sent, nothing reported.
    let (result, sent) = alone(
        Script::new(vec![], vec![]),
        &polling(1.0).deadline(secs(2.5)),
        false,
    )
    .await;
    assert_eq!(remote(&result), None);
    assert!(sent.iter().all(|s| s.kind != "cancel"));

    // A job addressed by a status URL the profile cannot read an id from: nothing to cancel.
    let ctx = context(Script::new(vec![], vec![]));
    let result = crate::wait::wait_for(
        &ctx,
        JobRef::status_url("http://script:8080/status"),
        &options,
        &mut |_| {},
    )
    .await;
    assert_eq!(remote(&result), Some(RemoteCancel::Unsupported));
    assert!(ctx.wire.sent().iter().all(|s| s.kind != "cancel"));
}

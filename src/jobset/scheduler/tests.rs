//! The scheduler in paused time, over a scripted wire: its timer queue, its budget, its cap
//! on held connections, stalls and deadlines — every instant exact.

#![allow(clippy::unwrap_used)]

use futures_util::StreamExt;
use std::sync::Arc;
use tokio::time::Instant;

use crate::error::Error;
use crate::jobset::{JobEvent, JobSet, JobSetOptions, RequestBudget, StallDetection};
use crate::model::{JobState, JobStatus};
use crate::poll::{Fixed, GiveUpReason};
use crate::transport::answer::{Meta, ReadOutcome};
use crate::wait::script::{
    Reply, Script, Sent, StreamReply, completed, context, event, pending, secs, throttled,
};
use crate::wait::{FallbackReason, Mechanism};

/// A budget that never holds a request back.
fn plenty() -> RequestBudget {
    RequestBudget::new(1000.0, 100)
}

/// Polls every `every` seconds, no push mechanisms, no stall detection.
fn polling(every: f64) -> JobSetOptions {
    JobSetOptions::new()
        .sse(false)
        .long_poll(false)
        .policy(Fixed::new(secs(every)))
        .stall(StallDetection::Off)
}

fn start(script: &Script, options: JobSetOptions, budget: RequestBudget) -> JobSet {
    JobSet::start(
        Arc::new(context(script.clone(), budget)),
        options,
        Vec::new(),
        &[],
    )
    .unwrap()
}

/// Every event of the set until it ends, with its time in seconds from `t0`.
async fn drain(set: &mut JobSet, t0: Instant) -> Vec<(f64, JobEvent)> {
    let mut events = Vec::new();
    while let Some(event) = set.next().await {
        events.push((t0.elapsed().as_secs_f64(), event));
    }
    events
}

/// When each job's requests went out, in milliseconds, by job id.
fn sent_by(sent: &[Sent], job: &str) -> Vec<(u64, &'static str)> {
    sent.iter()
        .filter(|s| s.path.contains(&format!("/{job}/")))
        .map(|s| (s.at_ms, s.kind))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn each_job_wakes_on_its_own_schedule_and_deadline() {
    let script = Script::new(vec![], vec![]);
    let t0 = Instant::now();
    let mut set = start(&script, polling(1.0), plenty());
    let a = set.add_with_deadline("a", secs(1.5)).unwrap();
    let b = set.add_with_deadline("b", secs(2.5)).unwrap();
    let c = set.add_with_deadline("c", secs(3.2)).unwrap();
    let events = drain(&mut set, t0).await;
    let sent = script.sent();
    let status = |at| (at, "status");
    // Every second, and a last look 100 ms before each deadline. (Until the server has
    // answered, the budget does not burst: the first looks go out a millisecond apart.)
    assert_eq!(sent_by(&sent, "a"), [status(0), status(1000), status(1400)]);
    assert_eq!(
        sent_by(&sent, "b"),
        [status(1), status(1001), status(2001), status(2400)]
    );
    assert_eq!(
        sent_by(&sent, "c"),
        [
            status(2),
            status(1002),
            status(2002),
            status(3002),
            status(3100)
        ]
    );
    let ends: Vec<(f64, _)> = events.iter().map(|(at, e)| (*at, e.key())).collect();
    assert_eq!(ends, [(1.5, a), (2.5, b), (3.2, c)], "each on its deadline");
    for (_, event) in events {
        let JobEvent::Finished {
            result: Err(Error::GaveUp(g)),
            ..
        } = event
        else {
            panic!("{event:?}")
        };
        assert_eq!(g.reason, GiveUpReason::Deadline);
    }
}

#[tokio::test(start_paused = true)]
async fn the_budget_paces_first_looks_and_a_429_pauses_every_job() {
    // Four requests a second: until the server has answered, no burst.
    let script = Script::new(vec![], vec![]);
    let set = start(
        &script,
        polling(10.0).deadline(secs(5.0)),
        RequestBudget::new(4.0, 10),
    );
    for job in ["a", "b", "c", "d", "e"] {
        set.add(job).unwrap();
    }
    tokio::time::sleep(secs(2.0)).await;
    let firsts: Vec<u64> = script.sent().iter().map(|s| s.at_ms).collect();
    assert_eq!(firsts, [0, 250, 500, 750, 1000]);
    drop(set);

    // The first answer is a 429 with a 2 s pause: nobody sends until it is over.
    let script = Script::new(vec![throttled(2.0)], vec![]);
    let set = start(&script, polling(10.0).deadline(secs(5.0)), plenty());
    for job in ["a", "b", "c"] {
        set.add(job).unwrap();
    }
    tokio::time::sleep(secs(3.0)).await;
    let sent = script.sent();
    let at: Vec<u64> = sent.iter().map(|s| s.at_ms).collect();
    // After the pause the bucket, emptied, refills at half the rate: a request every 2 ms.
    assert_eq!(at, [0, 2002, 2004, 2006]);
    assert_eq!(sent_by(&sent, "a").len(), 2, "{sent:?}");
}

#[tokio::test(start_paused = true)]
async fn held_connections_are_capped_and_a_freed_slot_is_taken_at_the_next_look() {
    let script = Script::new(
        vec![],
        vec![
            StreamReply::Events(vec![
                (secs(0.1), event(r#"{"result":"pending"}"#)),
                (secs(2.0), event(r#"{"result":"completed"}"#)),
            ]),
            StreamReply::Events(vec![(secs(0.5), event(r#"{"result":"completed"}"#))]),
        ],
    );
    let options = polling(1.0)
        .sse(true)
        .max_held_connections(1)
        .deadline(secs(10.0));
    let t0 = Instant::now();
    let mut set = start(&script, options, plenty());
    let a = set.add("a").unwrap();
    let b = set.add("b").unwrap();
    let events = drain(&mut set, t0).await;
    let sent = script.sent();
    assert_eq!(sent_by(&sent, "a"), [(0, "events")]);
    // `b` polls while `a` holds the only slot (until 2.1 s), and streams from its next look.
    assert_eq!(
        sent_by(&sent, "b"),
        [
            (1, "status"),
            (1001, "status"),
            (2001, "status"),
            (3001, "events")
        ]
    );
    let ends: Vec<(f64, _)> = events.iter().map(|(at, e)| (*at, e.key())).collect();
    assert_eq!(ends, [(2.1, a), (3.501, b)]);
    for (_, event) in events {
        let JobEvent::Finished { result, .. } = event else {
            panic!("{event:?}")
        };
        assert_eq!(result.unwrap().report.mechanism, Mechanism::Sse);
    }
}

#[tokio::test(start_paused = true)]
async fn a_stall_is_declared_on_a_reading_at_the_bound() {
    for stop in [false, true] {
        let script = Script::new(vec![], vec![]);
        let options = polling(10.0)
            .stall_after(secs(2.0))
            .stop_on_stall(stop)
            .deadline(secs(15.0));
        let t0 = Instant::now();
        let mut set = start(&script, options, plenty());
        set.add("a").unwrap();
        let events = drain(&mut set, t0).await;
        let at: Vec<u64> = script.sent().iter().map(|s| s.at_ms).collect();
        // The policy's next look (10 s) is brought forward to the stall check; once reported,
        // the policy's schedule again.
        let want: &[u64] = if stop {
            &[0, 2000]
        } else {
            &[0, 2000, 12000, 14900]
        };
        assert_eq!(at, want, "stop: {stop}");
        let JobEvent::Stalled(stall) = &events[0].1 else {
            panic!("{events:?}")
        };
        assert_eq!(events[0].0, 2.0);
        assert_eq!((stall.unchanged_for, stall.bound), (secs(2.0), secs(2.0)));
        let JobEvent::Finished { result, .. } = &events[1].1 else {
            panic!("{events:?}")
        };
        match (stop, result) {
            (true, Err(Error::Stalled(s))) => assert_eq!(s.report.requests, 2),
            (false, Err(Error::GaveUp(_))) => assert_eq!(events[1].0, 15.0),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn the_deadline_cuts_a_read_or_a_stream_in_flight() {
    for sse in [false, true] {
        let script = Script::new(
            vec![Reply::new(secs(10.0), completed)],
            vec![StreamReply::Events(vec![(
                secs(10.0),
                event(r#"{"result":"completed"}"#),
            )])],
        );
        let t0 = Instant::now();
        let mut set = start(&script, polling(1.0).sse(sse).deadline(secs(2.0)), plenty());
        set.add("a").unwrap();
        let events = drain(&mut set, t0).await;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].0, 2.0, "sse: {sse}");
        let JobEvent::Finished {
            result: Err(Error::GaveUp(g)),
            ..
        } = &events[0].1
        else {
            panic!("{events:?}")
        };
        assert_eq!((g.reason, g.requests()), (GiveUpReason::Deadline, 1));
        assert_eq!(script.sent().len(), 1, "nothing after the cut");
    }
}

/// Deliberately unlike a single wait: a job's first look in a set is a plain read, even where
/// the server holds requests.
#[tokio::test(start_paused = true)]
async fn a_jobs_first_look_in_a_set_is_never_held() {
    let held = |state| ReadOutcome::Status {
        status: JobStatus::new(state),
        meta: Meta {
            applied_hold: Some(secs(1.0)),
            pause: None,
            ..Meta::default()
        },
    };
    let script = Script::new(
        vec![
            Reply::new(secs(0.0), pending),
            Reply::new(secs(1.0), move || held(JobState::Pending { eta: None })),
            Reply::new(secs(0.5), move || held(JobState::Completed)),
        ],
        vec![StreamReply::Refused(FallbackReason::NotSupported)],
    );
    let options = JobSetOptions::new()
        .sse(false)
        .policy(Fixed::new(secs(2.0)))
        .long_poll_hold(secs(1.0))
        .stall(StallDetection::Off);
    let t0 = Instant::now();
    let mut set = start(&script, options, plenty());
    set.add("a").unwrap();
    let events = drain(&mut set, t0).await;
    let holds: Vec<(u64, Option<u64>)> =
        script.sent().iter().map(|s| (s.at_ms, s.hold_s)).collect();
    // Plain at once; held after the policy's pause; reissued at once when it held.
    assert_eq!(holds, [(0, None), (2000, Some(1)), (3000, Some(1))]);
    let JobEvent::Finished { result, .. } = &events[0].1 else {
        panic!("{events:?}")
    };
    assert_eq!(
        result.as_ref().unwrap().report.mechanism,
        Mechanism::LongPoll
    );
}

/// Deliberately unlike a single wait: a set's last look before a deadline needs a token from
/// the shared budget at that moment; without one, the job ends at its deadline unlooked.
#[tokio::test(start_paused = true)]
async fn a_last_look_without_a_token_is_not_taken() {
    let script = Script::new(vec![], vec![]);
    let t0 = Instant::now();
    let mut set = start(
        &script,
        polling(10.0).deadline(secs(1.5)),
        RequestBudget::new(1.0, 1),
    );
    let a = set.add("a").unwrap();
    let b = set.add("b").unwrap();
    let events = drain(&mut set, t0).await;
    let sent = script.sent();
    // One token a second: `a` looks at once, `b` a second later; at the time of the last
    // looks (1.4 s) the bucket is empty.
    assert_eq!(sent_by(&sent, "a"), [(0, "status")]);
    assert_eq!(sent_by(&sent, "b"), [(1000, "status")]);
    let ends: Vec<(f64, _)> = events.iter().map(|(at, e)| (*at, e.key())).collect();
    assert_eq!(ends, [(1.5, a), (1.5, b)]);
}

/// The batched reads a script answered: when, and for which jobs.
fn batches(sent: &[Sent]) -> Vec<(u64, &str)> {
    sent.iter()
        .filter(|s| s.kind == "batch")
        .map(|s| (s.at_ms, s.path.trim_start_matches("/v1/jobs?ids=")))
        .collect()
}

/// Two jobs polled every second, `b` added 0.4 s after `a`: `a`'s look at 1 s takes `b`'s
/// (due at 1.4 s) early; `a` is then cancelled. The batched reads that followed, for `b`
/// alone.
async fn after_an_early_look(timing: crate::jobset::BatchTiming) -> Vec<(u64, String)> {
    let script = Script::new(vec![], vec![]).with_batches();
    let options = polling(1.0)
        .change_stream(false)
        .batch_timing(timing)
        .deadline(secs(2.9));
    let mut set = start(&script, options, plenty());
    let t0 = Instant::now();
    let a = set.add("a").unwrap();
    tokio::time::sleep(secs(0.4)).await;
    set.add("b").unwrap();
    tokio::time::sleep_until(t0 + secs(1.1)).await;
    set.cancel(a);
    drain(&mut set, t0).await;
    let sent = script.sent();
    let all = batches(&sent);
    assert_eq!(&all[..3], [(0, "a"), (400, "b"), (1000, "a,b")], "{all:?}");
    all[3..]
        .iter()
        .map(|(at, ids)| (*at, (*ids).to_owned()))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_job_read_early_by_a_batch_replans_or_keeps_its_cadence() {
    use crate::jobset::BatchTiming;
    // Prompt: a second after the early answer. Economical: a second after it was due.
    assert_eq!(
        after_an_early_look(BatchTiming::Prompt).await,
        [(2000, "b".to_owned()), (3000, "b".to_owned())]
    );
    assert_eq!(
        after_an_early_look(BatchTiming::Economical).await,
        [(2400, "b".to_owned())]
    );
}

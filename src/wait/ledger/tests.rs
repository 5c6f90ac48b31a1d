//! Table tests of the ledger: answers in, decisions out, at given instants — no clock, no
//! network, no runtime.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::*;
use crate::model::JobState;
use crate::poll::{Fixed, GiveUpReason, MIN_PAUSE};
use crate::transport::answer::{Meta, ReadOutcome};
use crate::wait::script::{failed as outage, refusal as refused, unexpected};

fn secs(x: f64) -> Duration {
    Duration::from_secs_f64(x)
}

/// What a step decided, in seconds from the start, for comparing.
#[derive(Debug, PartialEq)]
enum Want {
    Sleep(f64, Pause),
    Listen,
    Expire(f64),
    /// The ending's outcome label.
    Done(&'static str),
}

/// One wait, driven by hand: the start is `t0`, and every answer arrives at a given second.
struct Script {
    ledger: Ledger,
    t0: Instant,
    wall: SystemTime,
    offer: Offer,
    policy: Fixed,
}

impl Script {
    fn new(deadline: Option<f64>) -> Self {
        let t0 = Instant::now();
        Script {
            ledger: Ledger::new(t0, deadline.map(|d| t0 + secs(d)), None),
            t0,
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            offer: Offer {
                stream: false,
                hold: false,
                max_hold: secs(30.0),
                hold_until: None,
            },
            policy: Fixed::new(secs(2.0)),
        }
    }

    fn at(&self, t: f64) -> Clocks {
        Clocks {
            now: self.t0 + secs(t),
            wall: self.wall + secs(t),
        }
    }

    fn step(&mut self, t: f64, answer: Answer) -> Step {
        let profile = crate::Profile::simulator();
        let parts = Parts {
            job: "j-1",
            profile: &profile,
            policy: &self.policy,
            learned: None,
            random: 0.5,
            offer: self.offer,
        };
        let at = self.at(t);
        self.ledger.step(answer, at, &parts)
    }

    /// The look due at `t`, sent then, answered at `t + took`.
    fn look(&mut self, t: f64, took: f64, outcome: ReadOutcome) -> Step {
        self.look_with(t, took, outcome, 1)
    }

    fn look_with(&mut self, t: f64, took: f64, outcome: ReadOutcome, attempts: u32) -> Step {
        let look = self.ledger.next_look(self.t0 + secs(t), &self.offer);
        self.ledger.sent();
        let reading = Reading {
            outcome,
            attempts,
            hedges: 0,
            signals: None,
        };
        let sent = self.t0 + secs(t);
        self.step(
            t + took,
            Answer::Read {
                look,
                sent,
                reading,
            },
        )
    }

    fn want(&self, step: &Step) -> Want {
        let s = |at: Instant| (at.duration_since(self.t0).as_secs_f64() * 1000.0).round() / 1000.0;
        match &step.decision {
            Decision::Sleep { until, pause } => Want::Sleep(s(*until), *pause),
            Decision::Listen => Want::Listen,
            Decision::Expire { at } => Want::Expire(s(*at)),
            Decision::Finish(ending) => Want::Done(ending.outcome),
        }
    }

    fn ending(step: Step) -> Ending {
        match step.decision {
            Decision::Finish(ending) => *ending,
            other => panic!("expected an ending, got {other:?}"),
        }
    }
}

fn pending() -> ReadOutcome {
    pending_with(
        JobStatus::new(JobState::Pending { eta: None }),
        Meta::default(),
    )
}

fn pending_with(status: JobStatus, meta: Meta) -> ReadOutcome {
    ReadOutcome::Status { status, meta }
}

fn unknown(word: &str) -> ReadOutcome {
    ReadOutcome::Unknown {
        status: JobStatus::new(JobState::Unknown(word.into())),
        meta: Meta::default(),
    }
}

fn done() -> ReadOutcome {
    pending_with(JobStatus::new(JobState::Completed), Meta::default())
}

fn throttled(retry_after: Option<f64>) -> ReadOutcome {
    ReadOutcome::Throttled {
        retry_after: retry_after.map(secs),
        error: unexpected(429),
    }
}

#[test]
fn each_answer_to_a_poll_has_one_decision() {
    type Outcome = Box<dyn Fn(Instant) -> ReadOutcome>;
    // (what came back to the first look, at 0 s, and what the ledger decides)
    let table: Vec<(&str, Outcome, Want)> = vec![
        ("completed", Box::new(|_| done()), Want::Done("completed")),
        (
            "failed",
            Box::new(|_| {
                pending_with(
                    JobStatus::new(JobState::Failed(crate::model::JobFailure {
                        code: None,
                        message: Some("no audio".into()),
                    })),
                    Meta::default(),
                )
            }),
            Want::Done("failed"),
        ),
        (
            "pending: the policy's schedule",
            Box::new(|_| pending()),
            Want::Sleep(2.0, Pause::Policy(Basis::Fixed)),
        ),
        (
            "304: the policy's schedule",
            Box::new(|_| ReadOutcome::NotModified {
                meta: Meta::default(),
            }),
            Want::Sleep(2.0, Pause::Policy(Basis::Fixed)),
        ),
        (
            "429 + Retry-After: exactly that",
            Box::new(|_| throttled(Some(3.0))),
            Want::Sleep(3.0, Pause::Throttled),
        ),
        (
            "429 without a pause: a second",
            Box::new(|_| throttled(None)),
            Want::Sleep(1.0, Pause::Throttled),
        ),
        (
            "Retry-After: 0: the floor",
            Box::new(|_| throttled(Some(0.0))),
            Want::Sleep(MIN_PAUSE.as_secs_f64(), Pause::Throttled),
        ),
        (
            "unreadable: a short pause",
            Box::new(|_| ReadOutcome::Malformed(unexpected(200))),
            Want::Sleep(0.25, Pause::Malformed),
        ),
        (
            "never answered: unreachable",
            Box::new(|_| outage(false)),
            Want::Done("error"),
        ),
        (
            "an outage of a service that answered: the schedule goes on",
            Box::new(|_| outage(true)),
            Want::Sleep(2.0, Pause::Policy(Basis::Fixed)),
        ),
        (
            "an open breaker: until it lets requests through",
            Box::new(|t0| refused(t0 + secs(5.0))),
            Want::Sleep(5.0, Pause::Unavailable),
        ),
        (
            "rejected",
            Box::new(|_| ReadOutcome::Failed(unexpected(404))),
            Want::Done("error"),
        ),
        (
            "canceled",
            Box::new(|_| pending_with(JobStatus::new(JobState::Canceled), Meta::default())),
            Want::Done("canceled"),
        ),
        (
            "an unknown word: not terminal, the policy's schedule",
            Box::new(|_| unknown("paused")),
            Want::Sleep(2.0, Pause::Policy(Basis::Fixed)),
        ),
    ];
    for (name, outcome, want) in table {
        let mut script = Script::new(Some(60.0));
        let outcome = outcome(script.t0);
        let step = script.look(0.0, 0.0, outcome);
        assert_eq!(script.want(&step), want, "{name}");
    }
}

#[test]
fn a_pause_forced_on_the_loop_is_not_a_mechanism() {
    let mut script = Script::new(None);
    script.look(0.0, 0.0, pending());
    let step = script.look(2.0, 0.0, throttled(Some(1.0)));
    assert_eq!(script.want(&step), Want::Sleep(3.0, Pause::Throttled));
    let ending = Script::ending(script.look(3.0, 0.0, done()));
    assert_eq!(
        ending.report.mechanism,
        Mechanism::Polling(Basis::Fixed),
        "the poll after a throttled answer is still the policy's"
    );
    assert_eq!(ending.report.requests, 3);
}

#[test]
fn unreadable_answers_end_the_wait_on_the_third_in_a_row() {
    let mut script = Script::new(None);
    let malformed = || ReadOutcome::Malformed(unexpected(200));
    let wants = [
        Want::Sleep(0.25, Pause::Malformed),
        Want::Sleep(0.75, Pause::Malformed),
        Want::Done("error"),
    ];
    let mut t = 0.0;
    for want in wants {
        let step = script.look(t, 0.0, malformed());
        assert_eq!(script.want(&step), want);
        if let Want::Sleep(until, _) = want {
            t = until;
        }
    }
    // A good answer in between resets the count.
    let mut script = Script::new(None);
    script.look(0.0, 0.0, malformed());
    script.look(0.25, 0.0, malformed());
    script.look(0.75, 0.0, pending());
    let step = script.look(2.75, 0.0, malformed());
    assert_eq!(script.want(&step), Want::Sleep(3.0, Pause::Malformed));
}

#[test]
fn the_deadline_is_exact() {
    // Polls every 2 s, a 5 s deadline, answers after 0.2 s: the last look leads the deadline
    // by twice that round trip, and finds the job pending; the wait ends at the deadline.
    let mut script = Script::new(Some(5.0));
    let step = script.look(0.0, 0.2, pending());
    assert_eq!(
        script.want(&step),
        Want::Sleep(2.2, Pause::Policy(Basis::Fixed))
    );
    let step = script.look(2.2, 0.2, pending());
    assert_eq!(
        script.want(&step),
        Want::Sleep(4.4, Pause::Policy(Basis::Fixed))
    );
    let step = script.look(4.4, 0.2, pending());
    assert_eq!(
        script.want(&step),
        Want::Sleep(4.6, Pause::Policy(Basis::Fixed)),
        "clamped to the last look, 0.4 s ahead"
    );
    assert_eq!(
        script
            .ledger
            .next_look(script.t0 + secs(4.6), &script.offer),
        Look::Final
    );
    let step = script.look(4.6, 0.2, pending());
    assert_eq!(script.want(&step), Want::Expire(5.0));
    let ending = Script::ending(script.step(5.0, Answer::Deadline));
    assert_eq!(ending.outcome, "gave_up");
    assert_eq!(ending.report.elapsed, secs(5.0));
    assert_eq!(ending.report.requests, 4);
    assert!(ending.result.as_ref().unwrap_err().last_status().is_some());
    // An answer that arrives on the deadline is the end of it: nothing more goes out.
    let mut script = Script::new(Some(1.0));
    let step = script.look(0.0, 1.0, pending());
    assert_eq!(script.want(&step), Want::Done("gave_up"));
}

#[test]
fn an_outage_at_the_deadline_ends_the_wait_unavailable() {
    let mut script = Script::new(Some(10.0));
    script.look(0.0, 0.0, pending());
    script.look(2.0, 0.0, outage(true));
    let resume = script.t0 + secs(16.0);
    let step = script.look_with(4.0, 0.0, refused(resume), 0);
    assert_eq!(
        script.want(&step),
        Want::Sleep(9.9, Pause::Unavailable),
        "the breaker's pause, clamped to the last look"
    );
    assert_eq!(
        script.ledger.counts().0,
        2,
        "the refusal sent nothing: not a request"
    );
    let ending = Script::ending(script.step(10.0, Answer::Deadline));
    assert_eq!(ending.outcome, "unavailable");
    let Err(Error::Unavailable(u)) = &ending.result else {
        panic!("{:?}", ending.result)
    };
    assert_eq!(u.host, "script:8080");
    assert_eq!(u.retry_after, Some(secs(6.0)));
    assert!(matches!(
        u.source.as_deref().and_then(|s| s.downcast_ref::<Error>()),
        Some(Error::Unreachable(_))
    ));
    // An answer in between clears the outage.
    let mut script = Script::new(Some(10.0));
    script.look(0.0, 0.0, outage(true));
    script.look(2.0, 0.0, pending());
    let ending = Script::ending(script.step(10.0, Answer::Deadline));
    assert_eq!(ending.outcome, "gave_up");
}

#[test]
fn the_next_look_is_the_best_on_offer() {
    let mut script = Script::new(Some(60.0));
    let t = script.t0;
    let offer = |stream, hold| Offer {
        stream,
        hold,
        max_hold: secs(30.0),
        hold_until: None,
    };
    let table = [
        (offer(true, true), 0.0, Look::Subscribe),
        (offer(false, true), 0.0, Look::Hold(secs(30.0))),
        (offer(false, true), 45.5, Look::Hold(secs(14.0))),
        (offer(false, false), 0.0, Look::Poll),
        (offer(false, true), 59.9, Look::Final),
    ];
    for (offer, at, want) in table {
        assert_eq!(
            script.ledger.next_look(t + secs(at), &offer),
            want,
            "{offer:?} at {at}"
        );
    }
    let limited = Offer {
        hold_until: Some(t + secs(3.5)),
        ..offer(false, true)
    };
    assert_eq!(script.ledger.next_look(t, &limited), Look::Hold(secs(3.0)));
    // After a failure the next look is a plain read: it can be the breaker's probe.
    script.offer = offer(false, true);
    script.look(0.0, 0.0, outage(true));
    assert_eq!(
        script.ledger.next_look(t + secs(2.0), &script.offer),
        Look::Poll
    );
}

#[test]
fn held_reads() {
    let meta = |applied: Option<f64>| Meta {
        applied_hold: applied.map(secs),
        pause: None,
        ..Meta::default()
    };
    let mut script = Script::new(None);
    script.offer.hold = true;
    // Held for its whole second: out again at once.
    let step = script.look(
        0.0,
        1.0,
        pending_with(
            JobStatus::new(JobState::Pending { eta: None }),
            meta(Some(1.0)),
        ),
    );
    assert_eq!(script.want(&step), Want::Sleep(1.0, Pause::Reissue));
    assert_eq!(
        step.facts().collect::<Vec<_>>(),
        vec![Fact::LongPollApplied]
    );
    // Claimed a hold but answered at once: the floor, counted from when it was sent.
    let step = script.look(
        1.0,
        0.0,
        pending_with(
            JobStatus::new(JobState::Pending { eta: None }),
            meta(Some(0.0)),
        ),
    );
    assert_eq!(script.want(&step), Want::Sleep(1.05, Pause::Reissue));
    // A 304 to a held read is held too.
    let step = script.look(
        1.05,
        1.0,
        ReadOutcome::NotModified {
            meta: meta(Some(1.0)),
        },
    );
    assert_eq!(script.want(&step), Want::Sleep(2.05, Pause::Reissue));
    // Not held: the policy's schedule, and long-poll is given up on.
    let step = script.look(2.05, 0.0, pending());
    assert_eq!(
        script.want(&step),
        Want::Sleep(4.05, Pause::Policy(Basis::Fixed))
    );
    assert_eq!(
        step.facts().collect::<Vec<_>>(),
        vec![Fact::LongPollIgnored]
    );
    let ending = Script::ending(script.look(4.05, 0.0, done()));
    assert_eq!(ending.report.fallbacks.len(), 1);
    assert_eq!(
        ending.report.fallbacks[0].reason,
        FallbackReason::NotApplied
    );
}

#[test]
fn entity_tags_are_sent_until_progress_places_the_end() {
    let tagged = |progress: Option<f64>| {
        let mut status = JobStatus::new(JobState::Pending { eta: None });
        status.progress = progress;
        pending_with(
            status,
            Meta {
                etag: Some("\"v1\"".into()),
                ..Meta::default()
            },
        )
    };
    let mut script = Script::new(None);
    script.look(0.0, 0.0, tagged(None));
    assert_eq!(
        script.ledger.request(Look::Poll).etag.as_deref(),
        Some("\"v1\"")
    );
    // Progress from a job of unknown age does not place the end: the tag stays.
    script.look(2.0, 0.0, tagged(Some(0.5)));
    assert_eq!(
        script.ledger.request(Look::Poll).etag.as_deref(),
        Some("\"v1\"")
    );
    // Once the age is known (the caller said when the job was created), progress is worth the
    // body, and the reading reaches the policy.
    let t0 = Instant::now();
    let mut script = Script::new(None);
    script.t0 = t0;
    script.ledger = Ledger::new(t0, None, Some(t0));
    script.look(0.0, 0.0, tagged(Some(0.5)));
    assert_eq!(script.ledger.request(Look::Poll).etag, None);
    let state = script.ledger.poll_state(t0 + secs(1.0), None, 0.5);
    assert!(state.progress_reading.is_some());
    assert_eq!(state.progress, Some(0.5));
}

#[test]
fn a_reported_creation_shortly_before_the_local_one_is_the_truer_origin() {
    let t0 = Instant::now();
    let created = |script: &Script, before_start: f64| {
        let mut status = JobStatus::new(JobState::Pending { eta: None });
        status.created_at = Some(if before_start >= 0.0 {
            script.wall - secs(before_start)
        } else {
            script.wall + secs(-before_start)
        });
        pending_with(status, Meta::default())
    };
    // (reported creation, seconds before the local one) → the job's age at the start
    for (before, age) in [(0.3, 0.3), (1.5, 0.0), (-0.2, 0.0)] {
        let mut script = Script::new(None);
        script.t0 = t0;
        script.ledger = Ledger::new(t0, None, Some(t0));
        let outcome = created(&script, before);
        script.look(0.0, 0.0, outcome);
        let state = script.ledger.poll_state(t0, None, 0.5);
        assert!(
            (state.age.as_secs_f64() - age).abs() < 1e-6,
            "{before}: {state:?}"
        );
    }
    // Without a local one, the reported one is taken; a week-old one is a skewed clock.
    for (before, age) in [(5.0, 5.0), (8.0 * 24.0 * 3600.0, 0.0)] {
        let mut script = Script::new(None);
        let outcome = created(&script, before);
        script.look(0.0, 0.0, outcome);
        let state = script.ledger.poll_state(script.t0, None, 0.5);
        assert!(
            (state.age.as_secs_f64() - age).abs() < 1e-6,
            "{before}: {state:?}"
        );
    }
}

fn event(kind: &str, data: &str) -> SseEvent {
    SseEvent {
        event: kind.into(),
        data: data.into(),
        id: None,
        retry: None,
    }
}

#[test]
fn streams() {
    let mut script = Script::new(None);
    script.offer.stream = true;
    assert_eq!(
        script.ledger.next_look(script.t0, &script.offer),
        Look::Subscribe
    );
    script.ledger.sent();
    let step = script.step(0.0, Answer::Subscribed(Opened::Stream { attempts: 1 }));
    assert_eq!(script.want(&step), Want::Listen);
    assert_eq!(step.facts().collect::<Vec<_>>(), vec![Fact::SseWorks]);
    let mut first = event("status", r#"{"result":"pending","progress":0.2}"#);
    first.id = Some("7".into());
    first.retry = Some(Duration::ZERO);
    let step = script.step(0.5, Answer::Event(first));
    assert!(step.seen);
    assert_eq!(script.want(&step), Want::Listen);
    assert_eq!(script.ledger.last_event_id().as_deref(), Some("7"));
    let step = script.step(1.0, Answer::Event(event("progress", r#"{"progress":0.4}"#)));
    assert!(step.seen);
    assert_eq!(script.ledger.last().and_then(|s| s.progress), Some(0.4));
    let step = script.step(1.2, Answer::Event(event("keepalive", "")));
    assert!(!step.seen);
    // Broken twice: reopened after the server's `retry:` (floored), times the breaks.
    let step = script.step(2.0, Answer::Broke(Break::Ended));
    assert_eq!(script.want(&step), Want::Sleep(2.05, Pause::Reconnect));
    let step = script.step(3.0, Answer::Broke(Break::Idle));
    assert_eq!(script.want(&step), Want::Sleep(3.1, Pause::Reconnect));
    // A status event that does not parse breaks the stream; the third break gives up on it.
    let step = script.step(4.0, Answer::Event(event("status", "{")));
    assert_eq!(script.want(&step), Want::Sleep(4.0, Pause::Fallback));
    assert_eq!(
        script
            .ledger
            .next_look(script.t0 + secs(4.0), &script.offer),
        Look::Poll
    );
    let ending = Script::ending(script.look(4.0, 0.0, done()));
    assert_eq!(
        ending.report.fallbacks[0].reason,
        FallbackReason::StreamBroken
    );
    assert_eq!(ending.report.requests, 2);
}

#[test]
fn a_stream_ends_the_wait_with_its_terminal_event() {
    let mut script = Script::new(None);
    script.ledger.sent();
    script.step(0.0, Answer::Subscribed(Opened::Stream { attempts: 1 }));
    script.step(
        0.1,
        Answer::Event(event("status", r#"{"result":"pending"}"#)),
    );
    let ending = Script::ending(script.step(
        3.0,
        Answer::Event(event("status", r#"{"result":"completed"}"#)),
    ));
    assert_eq!(ending.outcome, "completed");
    assert_eq!(ending.report.mechanism, Mechanism::Sse);
    // Pushed: the job ended within 50 ms of the event (known age: the bracket is tight).
    let mut script = Script::new(None);
    script.ledger = Ledger::new(script.t0, None, Some(script.t0));
    script.ledger.sent();
    script.step(0.0, Answer::Subscribed(Opened::Stream { attempts: 1 }));
    let ending = Script::ending(script.step(
        3.0,
        Answer::Event(event("message", r#"{"result":"completed"}"#)),
    ));
    assert_eq!(
        ending.lesson,
        Some(crate::poll::Sample::between(secs(2.95), secs(3.0)))
    );
    // A canceled job ends it with its own outcome.
    let mut script = Script::new(None);
    script.step(0.0, Answer::Subscribed(Opened::Stream { attempts: 1 }));
    let step = script.step(
        1.0,
        Answer::Event(event("status", r#"{"result":"cancelled"}"#)),
    );
    assert_eq!(script.want(&step), Want::Done("canceled"));
    // A word the profile does not know keeps the stream open, counted: the profile's limit
    // in a row ends the wait.
    let mut script = Script::new(None);
    script.step(0.0, Answer::Subscribed(Opened::Stream { attempts: 1 }));
    let paused = || Answer::Event(event("status", r#"{"result":"paused"}"#));
    for t in [1.0, 2.0] {
        let step = script.step(t, paused());
        assert_eq!(script.want(&step), Want::Listen);
    }
    let step = script.step(3.0, paused());
    assert_eq!(script.want(&step), Want::Done("unknown_state"));
}

#[test]
fn refused_streams_fall_back_and_a_missing_one_is_confirmed_by_the_status_url() {
    let table = [
        (FallbackReason::NotSupported, Some(Fact::SseMissing)),
        (FallbackReason::Refused, None),
        (FallbackReason::Unreachable, None),
    ];
    for (reason, confirmed) in table {
        let mut script = Script::new(None);
        script.offer.stream = true;
        script.ledger.sent();
        let step = script.step(
            0.0,
            Answer::Subscribed(Opened::Fallback {
                reason,
                attempts: 1,
            }),
        );
        assert_eq!(
            script.want(&step),
            Want::Sleep(0.0, Pause::Fallback),
            "{reason:?}"
        );
        assert!(step.facts().next().is_none());
        assert_eq!(
            script.ledger.next_look(script.t0, &script.offer),
            Look::Poll
        );
        let step = script.look(0.0, 0.0, pending());
        assert_eq!(step.facts().next(), confirmed, "{reason:?}");
    }
    // Oversized: given up at once.
    let mut script = Script::new(None);
    script.step(0.0, Answer::Subscribed(Opened::Stream { attempts: 1 }));
    let step = script.step(0.5, Answer::Broke(Break::Oversized));
    assert_eq!(script.want(&step), Want::Sleep(0.5, Pause::Fallback));
    // 401/403: the wait ends.
    let mut script = Script::new(None);
    let step = script.step(
        0.0,
        Answer::Subscribed(Opened::Failed {
            error: unexpected(401),
            attempts: 1,
        }),
    );
    assert_eq!(script.want(&step), Want::Done("error"));
}

#[test]
fn what_a_wait_teaches() {
    // Pending at 2 s, done at 4 s, the job's creation known: the end is in (2, 4].
    let mut script = Script::new(None);
    script.ledger = Ledger::new(script.t0, None, Some(script.t0));
    script.look(0.0, 0.0, pending());
    script.look(2.0, 0.0, pending());
    let ending = Script::ending(script.look(4.0, 0.0, done()));
    assert_eq!(
        ending.lesson,
        Some(crate::poll::Sample::between(secs(2.0), secs(4.0)))
    );
    // Given up while pending at 2 s: it ran at least that long.
    let mut script = Script::new(None);
    script.look(0.0, 0.0, pending());
    script.look(2.0, 0.0, pending());
    let ending = script
        .ledger
        .give_up("j-1", GiveUpReason::MaxPolls, script.t0 + secs(3.0));
    assert_eq!(
        ending.lesson,
        Some(crate::poll::Sample::at_least(secs(2.0)))
    );
    // Done at the first look, creation unknown: nothing.
    let mut script = Script::new(None);
    let ending = Script::ending(script.look(0.0, 0.0, done()));
    assert_eq!(ending.lesson, None);
}

#[test]
fn an_unknown_word_ends_the_wait_after_the_profiles_limit_in_a_row() {
    // The simulator's profile bears three in a row; a known word in between resets the count.
    let mut script = Script::new(None);
    let step = script.look(0.0, 0.0, unknown("paused"));
    assert_eq!(
        script.want(&step),
        Want::Sleep(2.0, Pause::Policy(Basis::Fixed))
    );
    script.look(2.0, 0.0, unknown("paused"));
    script.look(4.0, 0.0, pending());
    script.look(6.0, 0.0, unknown("paused"));
    script.look(8.0, 0.0, unknown("paused"));
    let step = script.look(10.0, 0.0, unknown("Paused"));
    assert_eq!(script.want(&step), Want::Done("unknown_state"));
    let ending = Script::ending(step);
    match ending.result {
        Err(Error::UnknownState(u)) => {
            assert_eq!((u.word.as_str(), u.in_a_row), ("Paused", 3));
            assert_eq!(u.profile, "simulator");
            assert_eq!(u.report.requests, 6);
            assert!(u.to_string().contains("\"Paused\""), "{u}");
        }
        other => panic!("{other:?}"),
    }
    // A `304` repeats the unknown word it confirms: it counts, or entity tags would poll for
    // ever.
    let mut script = Script::new(None);
    script.look(0.0, 0.0, unknown("paused"));
    let not_modified = || ReadOutcome::NotModified {
        meta: Meta::default(),
    };
    script.look(2.0, 0.0, not_modified());
    let step = script.look(4.0, 0.0, not_modified());
    assert_eq!(script.want(&step), Want::Done("unknown_state"));
}

#[test]
fn a_pause_the_server_asks_for_is_a_floor_on_the_next_poll() {
    let paused = |pause: f64| {
        pending_with(
            JobStatus::new(JobState::Pending { eta: None }),
            Meta {
                pause: Some(secs(pause)),
                ..Meta::default()
            },
        )
    };
    // Longer than the policy's 2 s: the server's pace, reported as a hint.
    let mut script = Script::new(None);
    let step = script.look(0.0, 0.0, paused(3.0));
    assert_eq!(
        script.want(&step),
        Want::Sleep(3.0, Pause::Policy(Basis::Hints))
    );
    let ending = Script::ending(script.look(3.0, 0.0, done()));
    assert_eq!(ending.report.mechanism, Mechanism::Polling(Basis::Hints));
    // Shorter: the policy's schedule stands.
    let mut script = Script::new(None);
    let step = script.look(0.0, 0.0, paused(1.0));
    assert_eq!(
        script.want(&step),
        Want::Sleep(2.0, Pause::Policy(Basis::Fixed))
    );
}

#[test]
fn a_delivered_webhook_ends_the_wait_only_when_terminal_and_teaches_no_more_than_it_knows() {
    // Pending at 2 s by a read, the creation known; a webhook says completed at 9 s: the job
    // ended in (2, 9] — the delivery may be a retry, so not "just now".
    let mut script = Script::new(None);
    script.ledger = Ledger::new(script.t0, None, Some(script.t0));
    script.look(2.0, 0.0, pending());
    let running = JobStatus::new(JobState::Pending { eta: None });
    let step = script.step(5.0, Answer::Delivered(running));
    assert_eq!(
        script.want(&step),
        Want::Listen,
        "not terminal: nothing changes"
    );
    assert!(!step.seen);
    let step = script.step(9.0, Answer::Delivered(JobStatus::new(JobState::Completed)));
    assert_eq!(script.want(&step), Want::Done("completed"));
    let ending = Script::ending(step);
    assert_eq!(ending.report.mechanism, Mechanism::Webhook);
    assert_eq!(ending.report.requests, 1);
    assert_eq!(
        ending.lesson,
        Some(crate::poll::Sample::between(secs(2.0), secs(9.0)))
    );
    // Never read, creation unknown: ended by its delivery, nothing to learn.
    let mut script = Script::new(None);
    let failed = JobStatus::new(JobState::Failed(crate::model::JobFailure::default()));
    let ending = Script::ending(script.step(3.0, Answer::Delivered(failed)));
    assert_eq!(ending.outcome, "failed");
    assert_eq!(ending.lesson, None);
}

//! The wait loop against a scripted source, in paused time: every timing here is exact.

#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::source::{Fact, ReadOutcome, ReadRequest, Reading, Source, Subscribed};
use super::{FallbackReason, Mechanism, WaitPlan, run};
use crate::error::{Error, Unavailable, Unreachable};
use crate::model::{JobFailure, JobState, JobStatus};
use crate::poll::{
    Adaptive, Basis, Fixed, GiveUpReason, LearnedDurations, PollPolicy, PollPolicyExt,
};
use crate::transport::answer::Meta;
use crate::transport::sse::{EventStream, SseEvent};
use crate::wait::script::unexpected;

fn secs(x: f64) -> Duration {
    Duration::from_secs_f64(x)
}

#[derive(Clone, Copy, PartialEq)]
enum Sse {
    Off,
    Missing,
    Stream,
}

type Canned = Box<dyn FnOnce() -> ReadOutcome + Send>;

/// A job that ends `end` after the source is made, served the way the options say.
struct Fake {
    start: Instant,
    end: Duration,
    terminal: JobState,
    eta_bias: Option<f64>,
    /// The longest hold the server applies; `None`: it ignores `Prefer: wait`.
    hold_cap: Option<Duration>,
    offer_long_poll: bool,
    sse: Sse,
    /// How long each read takes to answer.
    latency: Duration,
    /// Answers with nothing but the state, as a plain `{"result": ...}` server does.
    plain: bool,
    canned: Mutex<VecDeque<Canned>>,
    reads: Mutex<Vec<(Duration, Option<Duration>)>>,
    facts: Mutex<Vec<Fact>>,
}

impl Fake {
    fn new(end: f64) -> Self {
        Fake {
            start: Instant::now(),
            end: secs(end),
            terminal: JobState::Completed,
            eta_bias: None,
            hold_cap: None,
            offer_long_poll: false,
            sse: Sse::Off,
            latency: Duration::ZERO,
            plain: false,
            canned: Mutex::new(VecDeque::new()),
            reads: Mutex::new(Vec::new()),
            facts: Mutex::new(Vec::new()),
        }
    }

    fn then(self, outcome: impl FnOnce() -> ReadOutcome + Send + 'static) -> Self {
        self.canned.lock().unwrap().push_back(Box::new(outcome));
        self
    }

    fn status_at(&self, at: Instant) -> JobStatus {
        let age = at.duration_since(self.start);
        if self.plain {
            let state = if age >= self.end {
                self.terminal.clone()
            } else {
                JobState::Pending { eta: None }
            };
            return JobStatus::new(state);
        }
        if age >= self.end {
            JobStatus::new(self.terminal.clone()).with_progress(1.0)
        } else {
            let eta = self
                .eta_bias
                .map(|b| secs((self.end.as_secs_f64() * b - age.as_secs_f64()).max(0.0)));
            JobStatus::new(JobState::Pending { eta })
                .with_progress(age.as_secs_f64() / self.end.as_secs_f64())
        }
    }

    fn read_times(&self) -> Vec<f64> {
        self.reads
            .lock()
            .unwrap()
            .iter()
            .map(|(t, _)| t.as_secs_f64())
            .collect()
    }
}

impl Source for Fake {
    fn sse_available(&self) -> bool {
        self.sse != Sse::Off
    }

    fn long_poll_available(&self) -> bool {
        self.offer_long_poll
    }

    fn learned(&self, fact: Fact) {
        self.facts.lock().unwrap().push(fact);
    }

    async fn read(&self, request: ReadRequest) -> Reading {
        let now = Instant::now();
        self.reads
            .lock()
            .unwrap()
            .push((now.duration_since(self.start), request.hold));
        tokio::time::sleep(self.latency).await;
        let canned = self.canned.lock().unwrap().pop_front();
        if let Some(canned) = canned {
            let outcome = canned();
            // A refusal of the circuit breaker sends nothing.
            let refused = matches!(
                outcome,
                ReadOutcome::Unavailable {
                    resume_at: Some(_),
                    ..
                }
            );
            return Reading {
                outcome,
                attempts: u32::from(!refused),
                hedges: 0,
                signals: None,
            };
        }
        let mut meta = Meta::default();
        if let (Some(hold), Some(cap)) = (request.hold, self.hold_cap) {
            let applied = hold.min(cap);
            meta.applied_hold = Some(applied);
            let wake = (now + applied).min(self.start + self.end);
            tokio::time::sleep_until(wake.max(now)).await;
        }
        let status = self.status_at(Instant::now());
        Reading {
            outcome: ReadOutcome::Status { status, meta },
            attempts: 1,
            hedges: 0,
            signals: None,
        }
    }

    async fn subscribe(&self, _last: Option<String>, _deadline: Option<Instant>) -> Subscribed {
        self.reads
            .lock()
            .unwrap()
            .push((Instant::now().duration_since(self.start), None));
        match self.sse {
            Sse::Off | Sse::Missing => Subscribed::Fallback {
                reason: FallbackReason::NotSupported,
                attempts: 1,
            },
            Sse::Stream => {
                let end = self.start + self.end;
                let first = self.status_at(Instant::now());
                let terminal = JobStatus::new(self.terminal.clone());
                let events: Vec<(Instant, JobStatus)> =
                    vec![(Instant::now(), first), (end, terminal)];
                let stream: EventStream = Box::pin(futures_util::stream::unfold(
                    events.into_iter(),
                    |mut events| async move {
                        let (at, status) = events.next()?;
                        tokio::time::sleep_until(at).await;
                        let data = serde_json::json!({
                            "result": status.state.as_str(),
                            "progress": status.progress,
                        })
                        .to_string();
                        let event = SseEvent {
                            event: "status".into(),
                            data,
                            id: None,
                            retry: None,
                        };
                        Some((Ok(event), events))
                    },
                ));
                Subscribed::Stream {
                    events: stream,
                    attempts: 1,
                }
            }
        }
    }
}

fn plan(deadline: Option<f64>) -> WaitPlan {
    WaitPlan {
        job: "j-test".into(),
        profile: crate::Profile::simulator(),
        deadline: deadline.map(secs),
        hold: secs(30.0),
        created: None,
        learned: None,
        random: || 0.5,
    }
}

async fn wait(
    fake: &Fake,
    plan: &WaitPlan,
    policy: &dyn PollPolicy,
) -> Result<super::Completion, Error> {
    let limited: Box<dyn PollPolicy> = match plan.deadline {
        Some(d) => Box::new(policy.with_deadline(d)),
        None => Box::new(policy),
    };
    run(fake, plan, limited.as_ref(), &mut |_| {}).await
}

fn gave_up(result: Result<super::Completion, Error>) -> Box<crate::error::GaveUp> {
    match result {
        Err(Error::GaveUp(g)) => g,
        other => panic!("expected GaveUp, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_finished_job_takes_one_request() {
    let fake = Fake::new(0.0);
    let done = wait(&fake, &plan(None), &Adaptive::new()).await.unwrap();
    assert_eq!(done.report.requests, 1);
    assert_eq!(done.report.mechanism, Mechanism::Polling(Basis::Initial));
    assert_eq!(fake.read_times(), vec![0.0]);
}

/// The cold start's looks at a 5 s job, with the random number at 0.5: at once, then at
/// 0.6 s · √2^0.5 and √2 times each age after (on the millisecond timer).
const COLD_5S: [f64; 8] = [0.0, 0.714, 1.01, 1.429, 2.021, 2.859, 4.044, 5.72];

#[tokio::test(start_paused = true)]
async fn cold_start_polls_on_its_schedule() {
    let fake = Fake::new(5.0);
    let done = wait(&fake, &plan(None), &Adaptive::new()).await.unwrap();
    assert_eq!(fake.read_times(), COLD_5S);
    assert_eq!(done.report.mechanism, Mechanism::Polling(Basis::ColdStart));
    assert_eq!(done.report.elapsed, secs(5.72));
}

thread_local! {
    /// The random number the next wait's policy is given (see `phase`).
    static PHASE: std::cell::Cell<f64> = const { std::cell::Cell::new(0.5) };
}

/// `WaitPlan::random` that reads [`PHASE`], so a test can spread the cold start's phase.
fn phase() -> f64 {
    PHASE.with(|p| p.get())
}

/// A fresh client against a plain `{"result": ...}` server, for jobs of every scale from 1 s
/// to 10 min: on average over the cold start's phase, found within a quarter of the duration
/// plus 100 ms, with at most `4 + 2.5 · log₂(T / 1 s)` requests.
#[tokio::test(start_paused = true)]
async fn a_cold_wait_meets_its_bounds_at_every_scale() {
    for end in [1.0, 3.0, 10.0, 30.0, 100.0, 600.0] {
        let (mut requests, mut delay) = (0.0, 0.0);
        let n = 16;
        for i in 0..n {
            PHASE.with(|p| p.set((f64::from(i) + 0.5) / f64::from(n)));
            let mut fake = Fake::new(end);
            fake.plain = true;
            let mut plan = plan(None);
            plan.random = phase;
            plan.learned = Some(LearnedDurations::default());
            let done = wait(&fake, &plan, &Adaptive::new()).await.unwrap();
            assert_eq!(done.report.mechanism, Mechanism::Polling(Basis::ColdStart));
            let late = done.report.elapsed.as_secs_f64() - end;
            assert!(late >= 0.0, "{end}: {late}");
            requests += f64::from(done.report.requests) / f64::from(n);
            delay += late / f64::from(n);
        }
        let (max_requests, max_delay) = (4.0 + 2.5 * end.log2(), 0.25 * end + 0.1);
        assert!(
            requests <= max_requests,
            "{end} s: {requests} requests > {max_requests}"
        );
        assert!(delay <= max_delay, "{end} s: {delay} s late > {max_delay}");
        eprintln!("{end} s: {requests:.2} requests, {delay:.3} s late");
    }
}

#[tokio::test(start_paused = true)]
async fn the_last_poll_lands_just_ahead_of_the_deadline() {
    // Answered at once: the last look goes out the least lead (100 ms) ahead, and the wait
    // ends on the deadline.
    let fake = Fake::new(10.0);
    let g = gave_up(wait(&fake, &plan(Some(3.0)), &Fixed::new(secs(2.0))).await);
    assert_eq!(fake.read_times(), vec![0.0, 2.0, 2.9]);
    assert_eq!(g.reason, GiveUpReason::Deadline);
    assert_eq!(g.elapsed(), secs(3.0));
    assert_eq!(g.requests(), 3);
    assert!(matches!(
        g.last_status.as_ref().unwrap().state,
        JobState::Pending { .. }
    ));
}

#[tokio::test(start_paused = true)]
async fn a_read_in_flight_at_the_deadline_is_cut_there() {
    let mut fake = Fake::new(60.0);
    fake.latency = secs(10.0);
    let g = gave_up(wait(&fake, &plan(Some(2.0)), &Adaptive::new()).await);
    assert_eq!(g.reason, GiveUpReason::Deadline);
    assert_eq!(g.elapsed(), secs(2.0), "not a moment later");
    assert_eq!(
        fake.read_times(),
        vec![0.0],
        "no last look after the deadline"
    );
    assert_eq!(g.requests(), 1);
    assert!(g.last_status.is_none());
}

#[tokio::test(start_paused = true)]
async fn the_last_look_goes_out_in_time_to_be_answered_by_the_deadline() {
    // Each read takes 100 ms: the last look goes out two round trips before the deadline,
    // is answered 100 ms before it, and the wait ends on it.
    let mut fake = Fake::new(60.0);
    fake.latency = secs(0.1);
    let g = gave_up(wait(&fake, &plan(Some(3.0)), &Fixed::new(secs(1.0))).await);
    assert_eq!(fake.read_times(), vec![0.0, 1.1, 2.2, 2.8]);
    assert_eq!(g.elapsed(), secs(3.0), "not before the deadline either");
    assert_eq!(g.requests(), 4);
    assert!(g.last_status.is_some());
}

#[tokio::test(start_paused = true)]
async fn a_stream_open_at_the_deadline_is_cut_there() {
    let mut fake = Fake::new(60.0);
    fake.sse = Sse::Stream;
    fake.latency = secs(10.0);
    let g = gave_up(wait(&fake, &plan(Some(2.0)), &Adaptive::new()).await);
    assert_eq!(g.elapsed(), secs(2.0));
    assert_eq!(g.requests(), 1, "the stream was current: no last poll");
    assert!(g.last_status.is_some());
}

#[tokio::test(start_paused = true)]
async fn a_zero_deadline_is_a_single_check() {
    let fake = Fake::new(10.0);
    let g = gave_up(wait(&fake, &plan(Some(0.0)), &Adaptive::new()).await);
    assert_eq!(fake.read_times(), vec![0.0]);
    assert_eq!(g.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn the_poll_budget_is_honoured() {
    let fake = Fake::new(10.0);
    let policy = Fixed::new(secs(1.0)).with_max_polls(3);
    let g = gave_up(wait(&fake, &plan(None), &policy).await);
    assert_eq!(g.reason, GiveUpReason::MaxPolls);
    assert_eq!(fake.read_times(), vec![0.0, 1.0, 2.0]);
}

#[tokio::test(start_paused = true)]
async fn held_requests_are_reissued_at_once() {
    let mut fake = Fake::new(3.5);
    fake.offer_long_poll = true;
    fake.hold_cap = Some(secs(1.0));
    let done = wait(&fake, &plan(None), &Adaptive::new()).await.unwrap();
    assert_eq!(fake.read_times(), vec![0.0, 1.0, 2.0, 3.0]);
    assert_eq!(done.report.requests, 4, "⌈T/H⌉ = ⌈3.5/1⌉");
    assert_eq!(done.report.mechanism, Mechanism::LongPoll);
    assert_eq!(
        done.report.elapsed,
        secs(3.5),
        "detected the moment it ended"
    );
    assert!(done.report.fallbacks.is_empty());
    assert!(fake.facts.lock().unwrap().contains(&Fact::LongPollApplied));
}

#[tokio::test(start_paused = true)]
async fn holds_shrink_to_fit_the_deadline() {
    let mut fake = Fake::new(10.0);
    fake.offer_long_poll = true;
    fake.hold_cap = Some(secs(30.0));
    let g = gave_up(wait(&fake, &plan(Some(2.5)), &Adaptive::new()).await);
    let reads = fake.reads.lock().unwrap().clone();
    let holds: Vec<Option<u64>> = reads.iter().map(|(_, h)| h.map(|h| h.as_secs())).collect();
    assert_eq!(holds, vec![Some(2), None, None], "{reads:?}");
    assert_eq!(
        fake.read_times(),
        vec![0.0, 2.1, 2.4],
        "the cold start's next look, then the last, just ahead"
    );
    assert_eq!(g.elapsed(), secs(2.5));
}

#[tokio::test(start_paused = true)]
async fn a_server_that_ignores_prefer_is_polled_instead() {
    let mut fake = Fake::new(5.0);
    fake.offer_long_poll = true;
    fake.hold_cap = None;
    let done = wait(&fake, &plan(None), &Adaptive::new()).await.unwrap();
    assert_eq!(fake.read_times(), COLD_5S);
    assert_eq!(done.report.fallbacks.len(), 1);
    assert_eq!(done.report.fallbacks[0].from, Mechanism::LongPoll);
    assert_eq!(done.report.fallbacks[0].reason, FallbackReason::NotApplied);
    assert!(fake.facts.lock().unwrap().contains(&Fact::LongPollIgnored));
}

#[tokio::test(start_paused = true)]
async fn hints_drive_the_schedule() {
    let mut fake = Fake::new(5.0);
    fake.eta_bias = Some(1.0);
    let done = wait(&fake, &plan(None), &Adaptive::new()).await.unwrap();
    let times = fake.read_times();
    assert_eq!(
        times[1], 4.0,
        "jumped to the earliest plausible end: {times:?}"
    );
    assert!(done.report.requests <= 7, "{times:?}");
    assert_eq!(done.report.mechanism, Mechanism::Polling(Basis::Hints));
}

#[tokio::test(start_paused = true)]
async fn throttling_is_waited_out_exactly_and_never_ends_the_wait() {
    let throttled = || ReadOutcome::Throttled {
        retry_after: Some(secs(3.0)),
        error: unexpected(429),
    };
    let fake = Fake::new(1.0).then(throttled).then(throttled);
    let done = wait(&fake, &plan(None), &Adaptive::new()).await.unwrap();
    assert_eq!(fake.read_times(), vec![0.0, 3.0, 6.0]);
    assert_eq!(done.report.requests, 3);
}

/// Gaps between consecutive reads, in seconds.
fn gaps(times: &[f64]) -> Vec<f64> {
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

#[tokio::test(start_paused = true)]
async fn every_pause_has_a_floor() {
    // (Less a rounding error: read times are seconds as `f64`.)
    let floor = crate::poll::MIN_PAUSE.as_secs_f64() - 1e-9;
    // `Retry-After: 0`, a breaker about to close, and a policy asking for a millisecond.
    let mut fake = Fake::new(1.0);
    for _ in 0..3 {
        fake = fake.then(|| ReadOutcome::Throttled {
            retry_after: Some(Duration::ZERO),
            error: unexpected(429),
        });
    }
    let fake = fake.then(|| refused(0.0)).then(|| refused(0.001));
    let done = wait(&fake, &plan(None), &Fixed::new(secs(0.001)))
        .await
        .unwrap();
    let times = fake.read_times();
    assert!(gaps(&times).iter().all(|gap| *gap >= floor), "{times:?}");
    assert_eq!(done.report.elapsed, secs(1.0), "found on a floor's tick");
    assert_eq!(times.len(), 21, "once per floor: {times:?}");

    // A server that claims holds it does not apply (`Preference-Applied: wait=0`).
    let mut fake = Fake::new(1.0);
    fake.offer_long_poll = true;
    fake.hold_cap = Some(Duration::ZERO);
    wait(&fake, &plan(None), &Adaptive::new()).await.unwrap();
    let times = fake.read_times();
    assert!(gaps(&times).iter().all(|gap| *gap >= floor), "{times:?}");

    // A held request that took longer than the floor is reissued at once.
    let mut fake = Fake::new(0.5);
    fake.offer_long_poll = true;
    fake.hold_cap = Some(secs(0.2));
    wait(&fake, &plan(None), &Adaptive::new()).await.unwrap();
    let times = fake.read_times();
    assert_eq!(times[..3], [0.0, 0.2, 0.4], "{times:?}");
}

#[tokio::test(start_paused = true)]
async fn throttling_is_clamped_to_the_deadline() {
    let fake = Fake::new(10.0).then(|| ReadOutcome::Throttled {
        retry_after: Some(secs(60.0)),
        error: unexpected(429),
    });
    let g = gave_up(wait(&fake, &plan(Some(2.0)), &Adaptive::new()).await);
    assert_eq!(fake.read_times(), vec![0.0, 1.9]);
    assert_eq!(g.elapsed(), secs(2.0));
}

#[tokio::test(start_paused = true)]
async fn unreadable_answers_are_retried_twice() {
    let fake = Fake::new(0.0).then(|| ReadOutcome::Malformed(unexpected(200)));
    let done = wait(&fake, &plan(None), &Adaptive::new()).await.unwrap();
    assert_eq!(done.report.requests, 2);

    let fake = Fake::new(0.0)
        .then(|| ReadOutcome::Malformed(unexpected(200)))
        .then(|| ReadOutcome::Malformed(unexpected(200)))
        .then(|| ReadOutcome::Malformed(unexpected(200)));
    let err = wait(&fake, &plan(None), &Adaptive::new())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnexpectedResponse(_)), "{err:?}");
    assert_eq!(fake.read_times().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn fatal_answers_end_the_wait_at_once() {
    let fake = Fake::new(5.0).then(|| ReadOutcome::Failed(unexpected(404)));
    let err = wait(&fake, &plan(None), &Adaptive::new())
        .await
        .unwrap_err();
    assert_eq!(err.http_status(), Some(404));
    assert_eq!(fake.read_times(), vec![0.0]);

    // An unknown word is not fatal at once: it ends the wait after the profile's limit in a
    // row (three for the simulator's), never polling for ever.
    let unknown = || ReadOutcome::Unknown {
        status: JobStatus::new(JobState::Unknown("paused".into())),
        meta: crate::transport::answer::Meta::default(),
    };
    let fake = Fake::new(5.0).then(unknown).then(unknown).then(unknown);
    let err = wait(&fake, &plan(None), &Adaptive::new())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnknownState(_)), "{err:?}");
    assert_eq!(fake.read_times().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_failed_job_is_an_error_carrying_its_message() {
    let mut fake = Fake::new(1.0);
    fake.terminal = JobState::Failed(JobFailure {
        code: Some("translation_failed".into()),
        message: Some("no audio track".into()),
    });
    match wait(&fake, &plan(None), &Adaptive::new()).await {
        Err(Error::JobFailed(f)) => {
            assert_eq!(f.message.as_deref(), Some("no audio track"));
            assert_eq!(f.report.requests, 3, "at once, at 0.71 s and at 1.01 s");
            assert!(f.to_string().contains("no audio track"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn one_stream_is_enough_when_the_server_streams() {
    let mut fake = Fake::new(5.0);
    fake.sse = Sse::Stream;
    fake.offer_long_poll = true;
    let mut seen = Vec::new();
    let plan = plan(None);
    let done = run(&fake, &plan, &Adaptive::new(), &mut |s| {
        seen.push(s.state.as_str().to_owned())
    })
    .await
    .unwrap();
    assert_eq!(done.report.requests, 1);
    assert_eq!(done.report.mechanism, Mechanism::Sse);
    assert_eq!(done.report.elapsed, secs(5.0));
    assert_eq!(seen, vec!["pending", "completed"]);
}

#[tokio::test(start_paused = true)]
async fn no_stream_falls_back_to_long_poll() {
    let mut fake = Fake::new(2.5);
    fake.sse = Sse::Missing;
    fake.offer_long_poll = true;
    fake.hold_cap = Some(secs(10.0));
    let done = wait(&fake, &plan(None), &Adaptive::new()).await.unwrap();
    assert_eq!(done.report.mechanism, Mechanism::LongPoll);
    assert_eq!(
        done.report.requests, 2,
        "one refused subscription, one held request"
    );
    assert_eq!(done.report.fallbacks[0].from, Mechanism::Sse);
    assert_eq!(
        done.report.fallbacks[0].reason,
        FallbackReason::NotSupported
    );
}

#[tokio::test(start_paused = true)]
async fn waits_teach_the_learned_schedule() {
    let learned = LearnedDurations::new(16);
    let mut plan = plan(None);
    plan.learned = Some(learned.clone());
    plan.created = Some(Instant::now());
    for _ in 0..12 {
        let fake = Fake::new(2.0);
        wait(&fake, &plan, &Adaptive::new()).await.unwrap();
        plan.created = Some(Instant::now());
    }
    let model = learned.model();
    assert_eq!(model.samples(), 12);
    let p05 = model.quantile(0.05).unwrap().as_secs_f64();
    let max = model.quantile(1.0).unwrap().as_secs_f64();
    assert!(p05 <= 2.0 && 2.0 <= max + 1e-6, "{model:?}");
    assert!(max - p05 < 0.2, "the window narrowed: {model:?}");
    // Now the schedule is learned: three looks, found within the minimum interval.
    let fake = Fake::new(2.0);
    let done = wait(&fake, &plan, &Adaptive::new()).await.unwrap();
    assert!(done.report.requests <= 3, "{:?}", fake.read_times());
    assert!(done.report.elapsed <= secs(2.1), "{:?}", fake.read_times());
    assert_eq!(done.report.mechanism, Mechanism::Polling(Basis::Learned));
}

/// A wait started cold, on a 52 s job: its looks go to 45.7 s, then 64.6 s. Twenty jobs of
/// 52 s end while it sleeps between the two: it plans its next look again, with the learned
/// schedule, and finds the job just after it ended (by what a request is worth there, 3 %
/// of 52 s) instead of 12.6 s late.
#[tokio::test(start_paused = true)]
async fn a_cold_wait_plans_again_when_samples_arrive_while_it_sleeps() {
    let run_one = |teach: bool| async move {
        let learned = LearnedDurations::new(64);
        let mut fake = Fake::new(52.0);
        fake.plain = true;
        let mut plan = plan(None);
        plan.learned = Some(learned.clone());
        plan.created = Some(Instant::now());
        let teacher = tokio::spawn(async move {
            tokio::time::sleep(secs(50.0)).await;
            if teach {
                for i in 0..20 {
                    let end = 51.9 + 0.01 * f64::from(i);
                    learned.record(crate::poll::Sample::between(secs(end), secs(end + 0.05)));
                }
            }
        });
        let done = wait(&fake, &plan, &Adaptive::new()).await.unwrap();
        teacher.await.unwrap();
        (done, fake.read_times())
    };
    let (cold, times) = run_one(false).await;
    assert_eq!(cold.report.mechanism, Mechanism::Polling(Basis::ColdStart));
    assert!(cold.report.elapsed > secs(64.0), "{times:?}");
    assert!(
        times.iter().any(|&t| (45.0..46.0).contains(&t)),
        "{times:?}"
    );
    let (taught, times) = run_one(true).await;
    assert_eq!(
        taught.report.mechanism,
        Mechanism::Polling(Basis::Learned),
        "{times:?}"
    );
    assert!(
        taught.report.elapsed < secs(54.0),
        "found {:?} after it began, at {times:?}",
        taught.report.elapsed
    );
    assert_eq!(
        taught.report.requests, cold.report.requests,
        "the same looks up to 45.7 s, then one at the learned end: {times:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn dropping_the_wait_cancels_it() {
    let fake = Fake::new(100.0);
    let plan = plan(None);
    let policy = Adaptive::new();
    let result = tokio::time::timeout(secs(5.0), run(&fake, &plan, &policy, &mut |_| {})).await;
    assert!(result.is_err());
    let before = fake.read_times().len();
    tokio::time::sleep(secs(60.0)).await;
    assert_eq!(
        fake.read_times().len(),
        before,
        "no request after the future was dropped"
    );
}

/// A read that failed after transport retries (`answered`: the service had answered before).
fn failed_read(answered: bool) -> ReadOutcome {
    ReadOutcome::Unavailable {
        error: Error::Unreachable(Box::new(Unreachable {
            url: "http://fake:8080/status".into(),
            attempts: 4,
            status: Some(503),
            timed_out: false,
            source: None,
            creation_not_retried: false,
        })),
        host: "fake:8080".into(),
        resume_at: None,
        answered,
    }
}

/// A read the circuit breaker refused: open for `secs` more.
fn refused(secs_left: f64) -> ReadOutcome {
    let left = secs(secs_left);
    ReadOutcome::Unavailable {
        error: Error::Unavailable(Box::new(Unavailable::refused("fake:8080", left))),
        host: "fake:8080".into(),
        resume_at: Some(Instant::now() + left),
        answered: true,
    }
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_pauses_the_wait_until_it_lets_requests_through() {
    // Pending at 0 s; at 2 s the read fails; at 4 s the breaker is open for 3 s more.
    let fake = Fake::new(5.0)
        .then(|| ReadOutcome::Status {
            status: JobStatus::new(JobState::Pending { eta: None }),
            meta: Meta::default(),
        })
        .then(|| failed_read(false))
        .then(|| refused(3.0));
    let done = wait(&fake, &plan(Some(60.0)), &Fixed::new(secs(2.0)))
        .await
        .unwrap();
    assert_eq!(
        fake.read_times(),
        vec![0.0, 2.0, 4.0, 7.0],
        "no read while the breaker was open, one at once when it let requests through"
    );
    assert_eq!(done.report.requests, 3, "the refusal sent nothing");
    assert_eq!(done.report.elapsed, secs(7.0));
}

#[tokio::test(start_paused = true)]
async fn a_failing_service_keeps_the_schedule_and_ends_the_wait_only_at_the_deadline() {
    let fake = Fake::new(100.0)
        .then(|| ReadOutcome::Status {
            status: JobStatus::new(JobState::Pending { eta: None }),
            meta: Meta::default(),
        })
        .then(|| failed_read(true))
        .then(|| failed_read(true))
        .then(|| refused(10.0))
        .then(|| refused(6.0));
    let err = wait(&fake, &plan(Some(10.0)), &Fixed::new(secs(2.0)))
        .await
        .unwrap_err();
    // Reads at 0, 2, 4; refused at 6 (open until 16), so the next look is the final one,
    // just ahead of the deadline, refused too.
    assert_eq!(fake.read_times(), vec![0.0, 2.0, 4.0, 6.0, 9.9]);
    let Error::Unavailable(u) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(u.host, "fake:8080");
    assert_eq!(u.job.as_deref(), Some("j-test"));
    // The breaker's own word at the last look (6 s), as of the deadline 0.1 s later.
    assert_eq!(u.retry_after, Some(secs(5.9)), "the breaker's own word");
    let report = u.report.as_ref().unwrap();
    assert_eq!(report.elapsed, secs(10.0), "exactly the deadline");
    assert_eq!(report.requests, 3);
    assert!(matches!(
        u.last_status.as_ref().map(|s| &s.state),
        Some(JobState::Pending { .. })
    ));
    assert!(
        matches!(
            u.source.as_deref().and_then(|s| s.downcast_ref::<Error>()),
            Some(Error::Unreachable(_))
        ),
        "the last real failure is the source"
    );
    assert!(err.is_timeout() && err.is_retryable());
    let text = err.to_string();
    assert!(
        text.contains("unavailable when the deadline passed"),
        "{text}"
    );
    assert!(text.contains("HTTP 503"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn a_service_that_never_answered_fails_the_wait_at_once() {
    let fake = Fake::new(5.0).then(|| failed_read(false));
    let err = wait(&fake, &plan(None), &Adaptive::new())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unreachable(_)), "{err:?}");
    assert_eq!(fake.read_times(), vec![0.0]);
}

#[tokio::test(start_paused = true)]
async fn an_answer_after_an_outage_clears_it() {
    let fake = Fake::new(100.0)
        .then(|| failed_read(true))
        .then(|| refused(1.0));
    let g = gave_up(wait(&fake, &plan(Some(3.0)), &Fixed::new(secs(1.0))).await);
    assert_eq!(fake.read_times(), vec![0.0, 1.0, 2.0, 2.9]);
    assert_eq!(
        g.reason,
        GiveUpReason::Deadline,
        "the service answered at 2 s and 2.9 s"
    );
}

#[tokio::test(start_paused = true)]
async fn the_first_look_after_an_outage_is_a_plain_read() {
    let mut fake = Fake::new(3.0).then(|| refused(2.0));
    fake.offer_long_poll = true;
    fake.hold_cap = Some(secs(1.0));
    let done = wait(&fake, &plan(None), &Adaptive::new()).await.unwrap();
    let reads = fake.reads.lock().unwrap().clone();
    let holds: Vec<bool> = reads.iter().map(|(_, hold)| hold.is_some()).collect();
    assert_eq!(holds[..3], [true, false, true], "{reads:?}");
    assert_eq!(
        fake.read_times()[1],
        2.0,
        "when the breaker let requests through"
    );
    assert!(
        done.report.fallbacks.is_empty(),
        "{:?}",
        done.report.fallbacks
    );
}

//! Many jobs at once: the scheduler, its budget, durable state and stall detection, against
//! the real simulator.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use tokio::time::Instant;
use translation_sim::{JobSpec, Outcome, RunningServer, Settings};
use translation_status::jobset::{JobEvent, JobSetOptions, RequestBudget};
use translation_status::{Client, Error, telemetry};

// ----- A recorder that keeps the time of every request on the wire ------------------------

#[derive(Default)]
struct Log {
    /// Send time of every request on the wire (its answer time minus its duration).
    sent: Vec<Instant>,
    /// Answer time of every `429`.
    throttled: Vec<Instant>,
    /// Times the budget was adjusted.
    adjusted: Vec<Instant>,
    stalls: u64,
    /// Time the server paused the budget, in seconds.
    paused: f64,
    /// Current, highest and lowest value of each gauge.
    gauges: HashMap<String, (f64, f64, f64)>,
}

#[derive(Clone, Default)]
struct Timeline(Arc<Mutex<Log>>);

struct Handle {
    name: String,
    labels: Vec<(String, String)>,
    log: Arc<Mutex<Log>>,
}

impl CounterFn for Handle {
    fn increment(&self, value: u64) {
        let mut log = self.log.lock().unwrap();
        let now = Instant::now();
        if self.name == telemetry::REQUESTS_TOTAL
            && self
                .labels
                .iter()
                .any(|(k, v)| k == "outcome" && v == "throttled")
        {
            log.throttled.push(now);
        } else if self.name == telemetry::BUDGET_ADJUSTMENTS_TOTAL {
            log.adjusted.push(now);
        } else if self.name == telemetry::STALLS_TOTAL {
            log.stalls += value;
        }
    }
    fn absolute(&self, _: u64) {}
}

impl GaugeFn for Handle {
    fn increment(&self, value: f64) {
        let mut log = self.log.lock().unwrap();
        let entry = log.gauges.entry(self.name.clone()).or_default();
        entry.0 += value;
        entry.1 = entry.1.max(entry.0);
        entry.2 = entry.2.min(entry.0);
    }
    fn decrement(&self, value: f64) {
        GaugeFn::increment(self, -value);
    }
    fn set(&self, value: f64) {
        let mut log = self.log.lock().unwrap();
        let entry = log
            .gauges
            .entry(self.name.clone())
            .or_insert((value, value, value));
        entry.0 = value;
        entry.1 = entry.1.max(value);
        entry.2 = entry.2.min(value);
    }
}

impl HistogramFn for Handle {
    fn record(&self, value: f64) {
        if self.name == telemetry::REQUEST_DURATION_SECONDS {
            let sent = Instant::now() - Duration::from_secs_f64(value);
            self.log.lock().unwrap().sent.push(sent);
        } else if self.name == telemetry::BUDGET_PAUSE_SECONDS {
            self.log.lock().unwrap().paused += value;
        }
    }
}

impl Timeline {
    fn handle(&self, key: &Key) -> Arc<Handle> {
        Arc::new(Handle {
            name: key.name().to_owned(),
            labels: key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect(),
            log: Arc::clone(&self.0),
        })
    }
}

impl Recorder for Timeline {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.handle(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.handle(key))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.handle(key))
    }
}

/// The most a sequence of sends exceeds a token bucket of `rate` and `burst` by, over any
/// window: `max over i ≤ j of (j - i + 1) - rate × (t_j - t_i) - burst`.
fn overshoot(sent: &[Instant], rate: f64, burst: f64) -> f64 {
    let Some(&t0) = sent.first() else { return 0.0 };
    let mut lowest = f64::INFINITY;
    let mut worst = f64::NEG_INFINITY;
    for (j, t) in sent.iter().enumerate() {
        let x = j as f64 - rate * t.duration_since(t0).as_secs_f64();
        lowest = lowest.min(x);
        worst = worst.max(x - lowest + 1.0 - burst);
    }
    worst
}

/// Requests per second: the highest one-second bucket and the mean over the busy span.
fn peak_and_mean(sent: &[Instant]) -> (f64, f64) {
    let (Some(&first), Some(&last)) = (sent.first(), sent.last()) else {
        return (0.0, 0.0);
    };
    let seconds = last.duration_since(first).as_secs() as usize + 1;
    let mut buckets = vec![0u64; seconds];
    for t in sent {
        buckets[t.duration_since(first).as_secs() as usize] += 1;
    }
    let peak = buckets.iter().copied().max().unwrap_or(0) as f64;
    (
        peak,
        sent.len() as f64 / last.duration_since(first).as_secs_f64().max(1.0),
    )
}

/// The simulator on its own thread and runtime, so the test's runtime holds only the
/// client's tasks.
fn sim_elsewhere(tweak: impl FnOnce(&mut Settings) + Send + 'static) -> RunningServer {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let mut settings = Settings::default();
            settings.server.bind = "127.0.0.1:0".parse().unwrap();
            tweak(&mut settings);
            let server = translation_sim::spawn(settings).await.unwrap();
            let state = server.state().clone();
            tx.send(server).unwrap();
            // Serve until the test's process ends.
            let _ = state;
            std::future::pending::<()>().await;
        });
    });
    rx.recv().unwrap()
}

fn expected_ok(result: &Result<translation_status::Completion, Error>, outcome: Outcome) -> bool {
    match (result, outcome) {
        (Ok(done), Outcome::Completed) => done.status.state.as_str() == "completed",
        (Err(Error::JobFailed(_)), Outcome::Error) => true,
        _ => false,
    }
}

/// 2,000 short jobs against a server that allows 200 requests per second, while a naive
/// client would send 2,000 at once: every job ends with its real outcome, no window of the
/// run exceeds the client's budget by more than its burst, 429s stay under 1 % after the
/// budget's first adjustment, and the client runs a handful of tasks, not one per job.
#[test]
fn two_thousand_jobs_under_a_rate_limit() {
    const JOBS: u64 = 2000;
    const LIMIT: f64 = 300.0;
    const RATE: f64 = 400.0;
    const BURST: u32 = 40;
    const MAX_HELD: usize = 40;
    const MAX_IN_FLIGHT: usize = 32;
    let server = sim_elsewhere(|s| {
        s.rate_limit.enabled = true;
        s.rate_limit.rps = LIMIT;
        s.rate_limit.burst = LIMIT as u32;
    });
    let timeline = Timeline::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let (outcomes, max_tasks) = metrics::with_local_recorder(&timeline, || {
        runtime.block_on(async {
            let client = Client::builder()
                .base_url(server.base_url())
                .request_budget(RequestBudget::new(RATE, BURST))
                .build()
                .unwrap();
            let mut set = client
                .job_set(
                    // Job by job: the budget is what is measured, not the change stream.
                    JobSetOptions::new()
                        .change_stream(false)
                        .batch_reads(false)
                        .max_held_connections(MAX_HELD)
                        .max_in_flight(MAX_IN_FLIGHT)
                        .deadline(Duration::from_secs(90)),
                )
                .unwrap();
            let mut expected = HashMap::new();
            for i in 0..JOBS {
                let outcome = if i % 7 == 0 {
                    Outcome::Error
                } else {
                    Outcome::Completed
                };
                let id = server
                    .state()
                    .create_job(JobSpec {
                        duration: Some(Duration::from_millis(100 + (i * 7919) % 6000)),
                        outcome: Some(outcome),
                        ..JobSpec::default()
                    })
                    .unwrap();
                expected.insert(set.add(id.as_str()).unwrap(), outcome);
            }
            let tasks = Arc::new(Mutex::new(0usize));
            let sampler = tokio::spawn({
                let tasks = Arc::clone(&tasks);
                async move {
                    loop {
                        let alive = tokio::runtime::Handle::current()
                            .metrics()
                            .num_alive_tasks();
                        {
                            let mut max = tasks.lock().unwrap();
                            *max = (*max).max(alive);
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            });
            let mut right = 0;
            let mut wrong = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(120);
            while let Some(event) = tokio::time::timeout_at(deadline, set.next()).await.unwrap() {
                if let JobEvent::Finished {
                    key, job, result, ..
                } = event
                {
                    if expected_ok(&result, expected[&key]) {
                        right += 1;
                    } else {
                        wrong.push(format!(
                            "{job}: expected {:?}, got {result:?}",
                            expected[&key]
                        ));
                    }
                }
            }
            sampler.abort();
            let max_tasks = *tasks.lock().unwrap();
            ((right, wrong), max_tasks)
        })
    });
    let elapsed = started.elapsed();
    let (right, wrong) = outcomes;
    assert!(
        wrong.is_empty(),
        "{} wrong: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    assert_eq!(right, JOBS);

    let log = timeline.0.lock().unwrap();
    let mut sent = log.sent.clone();
    sent.sort();
    let requests = sent.len();
    let first_adjustment = log.adjusted.first().copied();
    let after = |t: &Instant| first_adjustment.is_some_and(|a| *t > a);
    let requests_after = sent.iter().filter(|t| after(t)).count();
    let throttled_after = log.throttled.iter().filter(|t| after(t)).count();
    let over_budget = overshoot(&sent, RATE, f64::from(BURST));
    let over_server = overshoot(&sent, LIMIT, LIMIT);
    let (peak, mean) = peak_and_mean(&sent);
    let held = log
        .gauges
        .get(telemetry::JOBSET_HELD_CONNECTIONS)
        .map_or(0.0, |g| g.1);
    eprintln!(
        "{JOBS} jobs in {elapsed:?}: {requests} requests ({:.2}/job), 429: {} in all, {throttled_after} of {requests_after} after the first adjustment; \
         budget overshoot {over_budget:.1} (burst {BURST}), server overshoot {over_server:.1}; peak {peak}/s, mean {mean:.1}/s; \
         max alive tasks {max_tasks}, max held connections {held}",
        requests as f64 / JOBS as f64,
        log.throttled.len(),
    );
    assert!(
        first_adjustment.is_some(),
        "the server's policy shrank the budget"
    );
    assert!(
        (throttled_after as f64) < 0.01 * requests_after as f64,
        "{throttled_after} 429s of {requests_after} requests"
    );
    // Send times are taken inside the transport, a scheduling hiccup after the grant: allow
    // two requests of jitter.
    assert!(
        over_budget <= 2.0,
        "exceeded the budget by {over_budget:.1} beyond the burst"
    );
    assert!(peak <= 2.0 * mean, "peak {peak}/s, mean {mean:.1}/s");
    assert!(held <= MAX_HELD as f64, "{held}");
    // The scheduler, the sampler, and the connection pool's tasks (at most two per
    // connection: one driving it, one finishing a connect the pool no longer needed):
    // bounded by the caps on connections, not by the number of jobs.
    assert!(
        max_tasks <= 2 * (MAX_HELD + MAX_IN_FLIGHT) + 8,
        "{max_tasks} tasks for {JOBS} jobs"
    );
    assert!(elapsed < Duration::from_secs(60), "{elapsed:?}");
}

/// Drains a set's events for at most `limit`.
async fn drain(
    set: &mut translation_status::jobset::JobSet,
    limit: Duration,
) -> Vec<(Instant, JobEvent)> {
    let until = Instant::now() + limit;
    let mut events = Vec::new();
    while let Some(event) = tokio::time::timeout_at(until, set.next())
        .await
        .expect("the set finished in time")
    {
        events.push((Instant::now(), event));
    }
    events
}

/// Export mid-run, drop the client and the set, rebuild from the JSON: every job completes
/// or gives up as it would have, and a deadline that a reset would have moved past the job's
/// end is still honoured where it was.
#[tokio::test]
async fn a_restored_set_keeps_its_deadlines_and_history() {
    let server = crate::support::sim(|_| {}).await;
    let started = Instant::now();
    let saved = {
        let client = crate::support::client(&server);
        // Job by job, so that each job has spent requests of its own to save.
        let options = JobSetOptions::new().sse(false).change_stream(false);
        let set = client.job_set(options).unwrap();
        // Ends at 2.0 s; its deadline is at 1.5 s. Reset at the restore (0.8 s), the deadline
        // would move to 2.3 s and the job would complete.
        let tight = set
            .add_with_deadline(
                crate::support::job(&server, 2000).as_str(),
                Duration::from_millis(1500),
            )
            .unwrap();
        let mut expected = HashMap::new();
        for i in 0..20u64 {
            let outcome = if i % 4 == 0 {
                Outcome::Error
            } else {
                Outcome::Completed
            };
            let id = crate::support::job_ending(&server, 900 + i * 50, outcome);
            expected.insert(set.add(id.as_str()).unwrap(), outcome);
        }
        tokio::time::sleep(Duration::from_millis(600)).await;
        let saved = set.export().await.unwrap();
        assert_eq!(saved.jobs.len(), 21, "none has ended yet");
        let tight_saved = set.export_job(tight).await.unwrap().unwrap();
        assert!(tight_saved.requests >= 1, "{tight_saved:?}");
        assert!(tight_saved.deadline.is_some());
        (saved.to_json().unwrap(), tight, expected)
        // The set and the client are dropped here: every request in flight with them.
    };
    let (json, tight, expected) = saved;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let saved = translation_status::jobset::SavedJobSet::from_json(&json).unwrap();
    let client = crate::support::client(&server);
    let mut set = client
        .restore_job_set(&saved, JobSetOptions::new().sse(false).change_stream(false))
        .unwrap();
    assert_eq!(set.tracked(), 21);
    let events = drain(&mut set, Duration::from_secs(20)).await;
    let mut finished = 0;
    for (at, event) in events {
        let JobEvent::Finished {
            key, job, result, ..
        } = event
        else {
            continue;
        };
        finished += 1;
        if key == tight {
            let Err(Error::GaveUp(gave_up)) = &result else {
                panic!("{job}: the original deadline should have passed first: {result:?}");
            };
            let since_start = at.duration_since(started);
            eprintln!("tight job gave up {since_start:?} after it was first added: {gave_up}");
            assert!(
                // Reset at the restore, the deadline would have come at 2.3 s, after the job
                // completed at 2.0 s: giving up at all proves it was kept.
                (Duration::from_millis(1450)..Duration::from_millis(2300)).contains(&since_start),
                "{since_start:?}"
            );
            assert!(
                gave_up.report.elapsed >= Duration::from_millis(1450),
                "{:?}",
                gave_up.report
            );
            assert!(
                gave_up.requests() >= 2,
                "requests before the restart count: {:?}",
                gave_up.report
            );
        } else {
            assert!(expected_ok(&result, expected[&key]), "{job}: {result:?}");
        }
    }
    assert_eq!(finished, 21);
}

#[tokio::test]
async fn bad_or_stale_saved_state_is_a_clear_error() {
    let server = crate::support::sim(|_| {}).await;
    let client = crate::support::client(&server);
    for garbage in [
        "",
        "{\"format\": 1}",
        "{\"format\": 9, \"saved_at\": \"x\", \"jobs\": []}",
    ] {
        let error = translation_status::jobset::SavedJobSet::from_json(garbage)
            .and_then(|saved| {
                client
                    .restore_job_set(&saved, JobSetOptions::new())
                    .map(|_| ())
            })
            .unwrap_err();
        assert!(matches!(error, Error::SavedState(_)), "{error:?}");
        eprintln!("{error}");
    }
    let set = client.job_set(JobSetOptions::new()).unwrap();
    set.add(crate::support::job(&server, 5000).as_str())
        .unwrap();
    let saved = set.export().await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let error = client
        .restore_job_set(
            &saved,
            JobSetOptions::new().max_saved_age(Duration::from_millis(10)),
        )
        .unwrap_err();
    assert!(error.to_string().contains("max_saved_age"), "{error}");
    assert!(!error.is_retryable());
}

/// A job stuck in pending (the simulator's hang fault) is reported stalled within the bound,
/// whatever carries its status; a slow job whose progress moves is not.
#[tokio::test]
async fn a_hanging_job_stalls_and_a_slow_one_does_not() {
    const BOUND: Duration = Duration::from_millis(1500);
    let server =
        crate::support::sim(|s| s.sse.progress_interval = Duration::from_millis(200)).await;
    for (name, options) in [
        ("events", JobSetOptions::new()),
        ("long-poll", JobSetOptions::new().sse(false)),
        ("polling", JobSetOptions::new().sse(false).long_poll(false)),
    ] {
        let client = crate::support::client(&server);
        let mut set = client.job_set(options.stall_after(BOUND)).unwrap();
        let hang_id = server
            .state()
            .create_job(JobSpec {
                hang: true,
                ..JobSpec::default()
            })
            .unwrap();
        let added = Instant::now();
        let hanging = set
            .add_with_deadline(hang_id.as_str(), Duration::from_secs(4))
            .unwrap();
        let slow = set
            .add(crate::support::job(&server, 3500).as_str())
            .unwrap();
        let events = drain(&mut set, Duration::from_secs(15)).await;
        let stalls: Vec<_> = events
            .iter()
            .filter_map(|(at, e)| match e {
                JobEvent::Stalled(stall) => Some((*at, stall.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(stalls.len(), 1, "{name}: {stalls:?}");
        let (at, stall) = &stalls[0];
        assert_eq!(stall.key, hanging);
        assert_eq!(stall.bound, BOUND);
        let reported = at.duration_since(added);
        eprintln!(
            "{name}: stalled after {reported:?} (unchanged for {:?})",
            stall.unchanged_for
        );
        assert!(stall.unchanged_for >= BOUND, "{name}: {stall:?}");
        assert!(
            reported < BOUND + Duration::from_millis(1000),
            "{name}: {reported:?}"
        );
        assert_eq!(
            stall.last_status.as_ref().and_then(|s| s.progress),
            Some(0.0),
            "{name}"
        );
        for (_, event) in &events {
            if let JobEvent::Finished { key, result, .. } = event {
                if *key == slow {
                    assert!(result.is_ok(), "{name}: {result:?}");
                } else {
                    // Reported, not stopped: the hanging job runs into its deadline.
                    assert!(
                        matches!(result, Err(Error::GaveUp(_))),
                        "{name}: {result:?}"
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn stop_on_stall_ends_the_wait_with_a_distinct_error() {
    let server = crate::support::sim(|_| {}).await;
    let client = crate::support::client(&server);
    let mut set = client
        .job_set(
            JobSetOptions::new()
                .sse(false)
                .long_poll(false)
                .change_stream(false)
                .stall_after(Duration::from_millis(600))
                .stop_on_stall(true),
        )
        .unwrap();
    let id = server
        .state()
        .create_job(JobSpec {
            hang: true,
            ..JobSpec::default()
        })
        .unwrap();
    set.add(id.as_str()).unwrap();
    let events = drain(&mut set, Duration::from_secs(5)).await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(matches!(events[0].1, JobEvent::Stalled(_)));
    let JobEvent::Finished {
        result: Err(Error::Stalled(stalled)),
        ..
    } = &events[1].1
    else {
        panic!("{:?}", events[1].1);
    };
    let text = stalled.to_string();
    assert!(
        text.contains("stall bound 600 ms") && text.contains("stuck"),
        "{text}"
    );
    assert!(stalled.report.requests >= 2);
}

#[tokio::test]
async fn cancelling_one_job_or_all_of_them() {
    let server = crate::support::sim(|_| {}).await;
    let client = crate::support::client(&server);
    let mut set = client.job_set(JobSetOptions::new()).unwrap();
    let quick = set.add(crate::support::job(&server, 300).as_str()).unwrap();
    let cancelled = set.add(crate::support::job(&server, 400).as_str()).unwrap();
    for _ in 0..3 {
        set.add(crate::support::job(&server, 60_000).as_str())
            .unwrap();
    }
    set.cancel(cancelled);
    assert_eq!(
        set.tracked(),
        5,
        "counted once the stream sees the cancellation"
    );
    let (key, result) = tokio::time::timeout(Duration::from_secs(5), set.next_finished())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(key, quick);
    assert!(result.is_ok());
    assert_eq!(set.tracked(), 3);
    let handle = set.handle();
    handle.cancel_all();
    let rest = drain(&mut set, Duration::from_secs(2)).await;
    assert!(rest.is_empty(), "cancelled jobs report nothing: {rest:?}");
    assert_eq!(handle.tracked(), 0);
    assert!(handle.export().await.unwrap().jobs.is_empty());
    // The set can be used again.
    set.add(crate::support::job(&server, 100).as_str()).unwrap();
    assert!(set.next_finished().await.unwrap().1.is_ok());
    drop(set);
    assert!(handle.add("j-1").is_err(), "the set is gone");
}

/// A job's deadline is honoured to within a request, even when it never ends.
#[tokio::test]
async fn deadlines_are_exact() {
    let server = crate::support::sim(|_| {}).await;
    let client = crate::support::client(&server);
    for options in [
        JobSetOptions::new(),
        JobSetOptions::new().sse(false),
        JobSetOptions::new().sse(false).long_poll(false),
    ] {
        let mut set = client.job_set(options).unwrap();
        let added = Instant::now();
        set.add_with_deadline(
            crate::support::job(&server, 10_000).as_str(),
            Duration::from_secs(1),
        )
        .unwrap();
        let (_, result) = set.next_finished().await.unwrap();
        let took = added.elapsed();
        let Err(Error::GaveUp(gave_up)) = result else {
            panic!("{result:?}")
        };
        eprintln!("gave up after {took:?}: {:?}", gave_up.report);
        assert!(
            (Duration::from_millis(1000)..Duration::from_millis(1500)).contains(&took),
            "{took:?}"
        );
        assert!(gave_up.last_status.is_some());
    }
}

/// Throttled answers without any rate-limit header (the simulator's injected 429s): the budget
/// pauses for the `Retry-After`, shrinks, and no wait ends because of them.
#[test]
fn throttled_answers_shrink_the_budget_and_never_end_a_wait() {
    const RATE: f64 = 100.0;
    let timeline = Timeline::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    metrics::with_local_recorder(&timeline, || {
        runtime.block_on(async {
            let server = crate::support::sim(|s| {
                s.faults.throttle_rate = 0.05;
                s.faults.throttle_retry_after = Duration::from_millis(200);
                s.faults.seed = Some(7);
            })
            .await;
            let client = Client::builder()
                .base_url(server.base_url())
                .request_budget(RequestBudget::new(RATE, 10))
                .build()
                .unwrap();
            let mut set = client
                // Job by job: every read is a chance for the injected 429s.
                .job_set(
                    JobSetOptions::new()
                        .sse(false)
                        .long_poll(false)
                        .change_stream(false)
                        .batch_reads(false),
                )
                .unwrap();
            let mut expected = HashMap::new();
            for i in 0..100u64 {
                let outcome = if i % 9 == 0 {
                    Outcome::Error
                } else {
                    Outcome::Completed
                };
                let id = crate::support::job_ending(&server, 300 + i * 12, outcome);
                expected.insert(set.add(id.as_str()).unwrap(), outcome);
            }
            let events = drain(&mut set, Duration::from_secs(40)).await;
            let mut finished = 0;
            for (_, event) in events {
                if let JobEvent::Finished {
                    key, job, result, ..
                } = event
                {
                    finished += 1;
                    assert!(expected_ok(&result, expected[&key]), "{job}: {result:?}");
                }
            }
            assert_eq!(finished, 100);
        })
    });
    let log = timeline.0.lock().unwrap();
    let lowest_rate = log.gauges.get(telemetry::BUDGET_RATE).map_or(RATE, |g| g.2);
    eprintln!(
        "{} requests, {} throttled, {} adjustments, paused {:.2} s, lowest rate {lowest_rate:.1}/s",
        log.sent.len(),
        log.throttled.len(),
        log.adjusted.len(),
        log.paused
    );
    assert!(!log.throttled.is_empty(), "the fault was injected");
    assert!(!log.adjusted.is_empty());
    assert!(log.paused >= 0.2, "{}", log.paused);
    assert!(lowest_rate < RATE, "{lowest_rate}");
}

/// Jobs named by status URL, on a server with nothing but `GET /status`: polled, and the
/// route's lack of long-poll is learned once.
#[tokio::test]
async fn a_plain_status_server_is_polled() {
    let plain = crate::support::plain_server(Duration::from_millis(1200), "completed").await;
    let client = Client::builder().build().unwrap();
    let mut set = client.job_set(JobSetOptions::new()).unwrap();
    let url = format!("{}/status", plain.url);
    for _ in 0..3 {
        set.add(url.as_str()).unwrap();
    }
    let mut reports = Vec::new();
    while let Some((_, result)) = set.next_finished().await {
        let done = result.unwrap();
        assert_eq!(done.status.state.as_str(), "completed");
        reports.push(done.report);
    }
    assert_eq!(reports.len(), 3);
    for report in &reports {
        eprintln!("{report:?}");
        assert!(matches!(
            report.mechanism,
            translation_status::Mechanism::Polling(_)
        ));
        // The cold start looks at 0, then at 0.6–0.85 s and √2 times the age after that:
        // a 1.2 s job is found by the fourth or fifth look, whatever the phase drawn.
        assert!(report.requests <= 5, "{report:?}");
    }
    let hits = plain.hits.lock().unwrap().clone();
    assert!(hits.iter().all(|h| h == "/status"), "{hits:?}");
}

//! Durable waits: what a job set saves, and how it is trusted again.
//!
//! A restart must not reset a wait: a job given ten minutes five minutes ago has five left,
//! whatever happened in between. So times are saved on the wall clock, as RFC 3339 UTC
//! timestamps — the monotonic clock does not survive a restart — and mapped back to the
//! monotonic clock on restore: a deadline that passed while the process was down gets one
//! last look at once (the job may have ended meanwhile), then the wait gives up.
//!
//! What is saved, per job: its key, how the caller named it, its resolved status and events
//! URLs, when the wait began, its absolute deadline, the job's creation time when known, the
//! requests and retries spent, the last status (in the wire's own JSON shape), since when it
//! has looked unchanged and whether that stall was reported. Per set: the job durations it
//! learned (the brackets the duration model is fitted to), so that schedules and stall
//! bounds do not start cold.
//!
//! Nothing is trusted blindly: a state that does not parse, comes from another format
//! version, was saved in the future, is older than
//! [`max_saved_age`](super::JobSetOptions::max_saved_age), or holds a job with a bad URL, a
//! bad timestamp or a duplicate key is refused as a whole with
//! [`Error::SavedState`](crate::Error::SavedState), naming the problem.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::JobKey;
use super::stall::StallTracker;
use super::tracked::Tracked;
pub(crate) use crate::clock::Clocks;
use crate::error::{Error, SavedStateError};
use crate::job::JobRef;
use crate::model::{JobState, JobStatus};
use crate::poll::{LearnedDurations, Sample};
use crate::wait::ledger::Ledger;

/// The format this version writes and reads.
pub const FORMAT: u32 = 1;
/// Clocks disagree a little; a state "saved" this far in the future is still accepted.
const CLOCK_SLACK: Duration = Duration::from_secs(300);
/// Keys a saved state may hold: far more than any set adds, far from overflowing.
const MAX_KEY: u64 = 1 << 62;
/// Learned durations a saved state keeps (the latest).
const DURATIONS: usize = 128;

/// A job set's durable state: serialize it (serde; JSON via [`to_json`](Self::to_json)),
/// keep it across a restart, and rebuild the set with
/// [`Client::restore_job_set`](crate::Client::restore_job_set).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SavedJobSet {
    /// The format version ([`FORMAT`]).
    pub format: u32,
    /// When it was saved (RFC 3339, UTC).
    pub saved_at: String,
    /// Every job still being waited for.
    pub jobs: Vec<SavedJob>,
    /// Job durations learned, oldest first.
    #[serde(default)]
    pub durations: Vec<SavedDuration>,
}

/// One wait, saved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SavedJob {
    /// The job's key in its set (kept on restore).
    pub key: u64,
    /// The job as the caller named it (id or status URL).
    pub job: String,
    /// Its status URL, resolved.
    pub status_url: String,
    /// Its id on the server, when known (webhooks name the job by it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Its event-stream URL, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_url: Option<String>,
    /// When the wait began (RFC 3339).
    pub added_at: String,
    /// When the wait gives up (RFC 3339); none: no deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
    /// When the job was created, when known (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// Status requests and streams opened so far.
    pub requests: u32,
    /// Extra attempts so far (transport retries, throttle resends).
    pub retries: u32,
    /// Hedges (duplicates of slow status reads) so far; absent in states saved before it was
    /// counted.
    #[serde(default)]
    pub hedges: u32,
    /// The last status seen, in the wire's JSON shape (`{"result": "pending", "progress": ..}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status: Option<serde_json::Value>,
    /// Since when status and progress have looked as they last did (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unchanged_since: Option<String>,
    /// Whether that lack of change was reported as a stall.
    #[serde(default)]
    pub stalled: bool,
}

/// One learned duration: the job ended after `lo_ms` and no later than `hi_ms` (none: it
/// was still running when its wait stopped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SavedDuration {
    /// Milliseconds.
    pub lo_ms: u64,
    /// Milliseconds, or none for "still running".
    pub hi_ms: Option<u64>,
}

impl SavedJobSet {
    /// Parses a state written by [`to_json`](Self::to_json) (or by serde).
    pub fn from_json(text: &str) -> Result<SavedJobSet, Error> {
        serde_json::from_str(text).map_err(|e| bad(None, format!("it is not a saved job set: {e}")))
    }

    /// The state as one line of JSON.
    pub fn to_json(&self) -> Result<String, Error> {
        serde_json::to_string(self).map_err(|e| bad(None, format!("it cannot be written: {e}")))
    }
}

fn bad(job: Option<u64>, problem: impl Into<String>) -> Error {
    Error::SavedState(SavedStateError::new(job, problem))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// RFC 3339 can say from 1970 to the end of 9999: earlier is the epoch, later is as good as
/// never and saved as the last millisecond of 9999.
fn stamp(t: SystemTime) -> String {
    const LAST: Duration = Duration::from_millis(253_402_300_799_999);
    let since_epoch = t
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .min(LAST);
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + since_epoch).to_string()
}

fn parse_time(job: Option<u64>, field: &str, raw: &str) -> Result<SystemTime, Error> {
    humantime::parse_rfc3339_weak(raw.trim_end_matches('Z')).map_err(|e| {
        bad(
            job,
            format!("`{field}` is not an RFC 3339 time ({raw:?}: {e})"),
        )
    })
}

/// A set's saved form.
pub(crate) fn saved_set(
    jobs: Vec<SavedJob>,
    learned: &LearnedDurations,
    clocks: &Clocks,
) -> SavedJobSet {
    SavedJobSet {
        format: FORMAT,
        saved_at: stamp(clocks.wall),
        jobs,
        durations: learned
            .recent(DURATIONS)
            .iter()
            .map(|sample| SavedDuration {
                lo_ms: millis(sample.lo()),
                hi_ms: sample.hi().map(millis),
            })
            .collect(),
    }
}

/// A saved duration as a sample of the learned durations.
pub(crate) fn sample(saved: &SavedDuration) -> Sample {
    let lo = Duration::from_millis(saved.lo_ms);
    match saved.hi_ms {
        Some(hi) => Sample::between(lo, Duration::from_millis(hi)),
        None => Sample::at_least(lo),
    }
}

/// A job's saved form.
pub(crate) fn save_job(job: &Tracked, clocks: &Clocks) -> SavedJob {
    let (requests, retries, hedges) = job.ledger.counts();
    SavedJob {
        key: job.key.0,
        job: job.endpoints.label.clone(),
        status_url: job.endpoints.status.to_string(),
        id: job.endpoints.id.as_deref().map(str::to_owned),
        events_url: job.endpoints.events.as_ref().map(ToString::to_string),
        added_at: stamp(job.added_wall),
        deadline: job.deadline_wall.map(stamp),
        created_at: job.ledger.origin().map(|o| stamp(clocks.wall(o))),
        requests,
        retries,
        hedges,
        // A word the profile did not know is not saved: the restored wait reads afresh.
        last_status: job
            .ledger
            .last()
            .filter(|s| !matches!(s.state, JobState::Unknown(_)))
            .map(status_json),
        unchanged_since: Some(stamp(clocks.wall(job.stall.since))),
        stalled: job.stall.reported,
    }
}

/// The wire shape of a status, which [`JobStatus::from_json`] reads back.
fn status_json(status: &JobStatus) -> serde_json::Value {
    let mut value = serde_json::json!({ "result": status.state.as_str() });
    if let Some(id) = &status.id {
        value["id"] = id.clone().into();
    }
    if let Some(progress) = status.progress {
        value["progress"] = progress.into();
    }
    if let Some(eta) = status.eta() {
        value["eta_ms"] = millis(eta).into();
    }
    if let Some(t) = status.created_at {
        value["created_at"] = stamp(t).into();
    }
    if let Some(t) = status.completed_at {
        value["completed_at"] = stamp(t).into();
    }
    if let JobState::Failed(failure) = &status.state {
        value["error"] = serde_json::json!({ "code": failure.code, "message": failure.message });
    }
    value
}

/// Checks a saved state and rebuilds its jobs, with their original deadlines and history.
pub(crate) fn restore(
    saved: &SavedJobSet,
    base: Option<&url::Url>,
    profile: &crate::Profile,
    max_age: Duration,
    clocks: &Clocks,
) -> Result<Vec<Tracked>, Error> {
    if saved.format != FORMAT {
        return Err(bad(
            None,
            format!(
                "it is in format {} and this version reads format {FORMAT}",
                saved.format
            ),
        ));
    }
    let saved_at = parse_time(None, "saved_at", &saved.saved_at)?;
    match clocks.wall.duration_since(saved_at) {
        Ok(age) if age > max_age => {
            return Err(bad(
                None,
                format!(
                    "it was saved {} ago, longer than max_saved_age ({}): the service may have forgotten these jobs",
                    humantime::format_duration(Duration::from_secs(age.as_secs())),
                    humantime::format_duration(max_age)
                ),
            ));
        }
        Ok(_) => {}
        Err(ahead) if ahead.duration() > CLOCK_SLACK => {
            return Err(bad(
                None,
                format!(
                    "it claims to be saved {} in the future: the clock moved back, or the state is corrupt",
                    humantime::format_duration(Duration::from_secs(ahead.duration().as_secs()))
                ),
            ));
        }
        Err(_) => {}
    }
    let mut keys = HashSet::new();
    let mut jobs = Vec::with_capacity(saved.jobs.len());
    for job in &saved.jobs {
        if !keys.insert(job.key) {
            return Err(bad(Some(job.key), "the key appears twice"));
        }
        if job.key >= MAX_KEY {
            return Err(bad(Some(job.key), "the key is out of range"));
        }
        jobs.push(restore_job(job, base, profile, clocks)?);
    }
    Ok(jobs)
}

fn restore_job(
    saved: &SavedJob,
    base: Option<&url::Url>,
    profile: &crate::Profile,
    clocks: &Clocks,
) -> Result<Tracked, Error> {
    let key = Some(saved.key);
    let mut job = JobRef::status_url(saved.status_url.clone());
    if let Some(events) = &saved.events_url {
        job = job.with_events_url(events.clone());
    }
    let mut endpoints = job.resolve(base, profile).map_err(|e| match e {
        Error::Config(c) => bad(key, c.problem),
        other => bad(key, other.to_string()),
    })?;
    endpoints.label = saved.job.clone();
    if let Some(id) = saved.id.as_deref().filter(|id| super::feed::is_id(id)) {
        endpoints.id = Some(id.into());
    }
    let added_wall = parse_time(key, "added_at", &saved.added_at)?;
    let deadline_wall = saved
        .deadline
        .as_deref()
        .map(|d| parse_time(key, "deadline", d))
        .transpose()?;
    if deadline_wall.is_some_and(|d| d < added_wall) {
        return Err(bad(key, "the deadline is before the wait began"));
    }
    let created = saved
        .created_at
        .as_deref()
        .map(|c| parse_time(key, "created_at", c))
        .transpose()?;
    let last = match &saved.last_status {
        Some(value) => {
            let status = JobStatus::from_json(value.to_string().as_bytes())
                .map_err(|e| bad(key, format!("`last_status` is not a status: {e}")))?;
            if status.is_terminal() || matches!(status.state, JobState::Unknown(_)) {
                return Err(bad(
                    key,
                    format!(
                        "`last_status` is {:?}: only pending jobs are saved",
                        status.state.as_str()
                    ),
                ));
            }
            Some(status)
        }
        None => None,
    };
    let unchanged_since = saved
        .unchanged_since
        .as_deref()
        .map(|t| parse_time(key, "unchanged_since", t))
        .transpose()?;

    let progress = last.as_ref().and_then(|s| s.progress);
    let seen = last.is_some();
    let added = clocks.instant(added_wall).unwrap_or(clocks.now);
    // A deadline too far to represent is no deadline.
    let deadline = deadline_wall.and_then(|d| clocks.instant(d));
    let origin = created.map(|created| clocks.instant(created).unwrap_or(clocks.now));
    let ledger = Ledger::new(added, deadline, None).restored(
        (saved.requests, saved.retries, saved.hedges),
        last,
        origin,
    );
    let mut tracked = Tracked::with_ledger(
        JobKey(saved.key),
        endpoints,
        added_wall,
        deadline_wall,
        ledger,
    );
    if seen {
        let since = unchanged_since
            .and_then(|t| clocks.instant(t))
            .unwrap_or(clocks.now);
        tracked.stall = StallTracker::restored(progress, since, saved.stalled);
    }
    Ok(tracked)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sample(clocks: &Clocks) -> SavedJobSet {
        SavedJobSet {
            format: FORMAT,
            saved_at: stamp(clocks.wall),
            jobs: vec![SavedJob {
                key: 3,
                job: "j-1".into(),
                status_url: "http://h/v1/jobs/j-1/status".into(),
                id: Some("j-1".into()),
                events_url: Some("http://h/v1/jobs/j-1/events".into()),
                added_at: stamp(clocks.wall - Duration::from_secs(60)),
                deadline: Some(stamp(clocks.wall + Duration::from_secs(60))),
                created_at: None,
                requests: 4,
                retries: 1,
                hedges: 2,
                last_status: Some(serde_json::json!({"result": "pending", "progress": 0.25})),
                unchanged_since: Some(stamp(clocks.wall - Duration::from_secs(10))),
                stalled: false,
            }],
            durations: vec![SavedDuration {
                lo_ms: 100,
                hi_ms: Some(200),
            }],
        }
    }

    fn problem(saved: &SavedJobSet, clocks: &Clocks) -> String {
        match restore(
            saved,
            None,
            &crate::Profile::simulator(),
            Duration::from_secs(3600),
            clocks,
        ) {
            Err(Error::SavedState(e)) => e.to_string(),
            other => panic!("expected a saved-state error, got {other:?}"),
        }
    }

    #[test]
    fn a_state_round_trips_with_its_times() {
        let clocks = Clocks::now();
        let saved = sample(&clocks);
        let text = saved.to_json().unwrap();
        let back = SavedJobSet::from_json(&text).unwrap();
        assert_eq!(back, saved);
        let jobs = restore(
            &back,
            None,
            &crate::Profile::simulator(),
            Duration::from_secs(3600),
            &clocks,
        )
        .unwrap();
        let job = &jobs[0];
        assert_eq!(job.key, JobKey(3));
        assert_eq!(job.endpoints.label, "j-1");
        assert_eq!(job.ledger.counts(), (4, 1, 2));
        let left = job.ledger.deadline().unwrap() - clocks.now;
        assert!(
            (Duration::from_millis(59_990)..=Duration::from_secs(60)).contains(&left),
            "{left:?}"
        );
        assert_eq!(job.ledger.last().unwrap().progress, Some(0.25));
        let quiet = clocks.now - job.stall.since;
        assert!(quiet >= Duration::from_millis(9_990), "{quiet:?}");
        let again = save_job(job, &clocks);
        assert_eq!(again.deadline, saved.jobs[0].deadline);
        assert_eq!(again.added_at, saved.jobs[0].added_at);
        assert_eq!(again.last_status, saved.jobs[0].last_status);
    }

    #[test]
    fn bad_states_are_refused_with_a_reason() {
        let clocks = Clocks::now();
        type Spoil = Box<dyn Fn(&mut SavedJobSet)>;
        let cases: Vec<(Spoil, &str)> = vec![
            (Box::new(|s| s.format = 2), "format 2"),
            (Box::new(|s| s.saved_at = "yesterday".into()), "saved_at"),
            (
                Box::new(|s| s.saved_at = stamp(crate::clock::now() - Duration::from_secs(7200))),
                "max_saved_age",
            ),
            (
                Box::new(|s| s.saved_at = stamp(crate::clock::now() + Duration::from_secs(7200))),
                "future",
            ),
            (
                Box::new(|s| {
                    let twin = s.jobs[0].clone();
                    s.jobs.push(twin);
                }),
                "twice",
            ),
            (
                Box::new(|s| s.jobs[0].status_url = "not a url".into()),
                "job #3",
            ),
            (Box::new(|s| s.jobs[0].key = u64::MAX), "out of range"),
            (
                Box::new(|s| s.jobs[0].status_url = "ftp://h/status".into()),
                "http",
            ),
            (
                Box::new(|s| s.jobs[0].deadline = Some("soon".into())),
                "deadline",
            ),
            (
                Box::new(|s| {
                    s.jobs[0].deadline =
                        Some(stamp(crate::clock::now() - Duration::from_secs(3000)))
                }),
                "before the wait began",
            ),
            (
                Box::new(|s| s.jobs[0].last_status = Some(serde_json::json!({"result": 7}))),
                "last_status",
            ),
            (
                Box::new(|s| {
                    s.jobs[0].last_status = Some(serde_json::json!({"result": "completed"}))
                }),
                "only pending",
            ),
        ];
        for (spoil, expected) in cases {
            let mut saved = sample(&clocks);
            spoil(&mut saved);
            let text = problem(&saved, &clocks);
            assert!(text.contains(expected), "{expected:?} not in {text:?}");
            assert!(text.contains("afresh"), "{text}");
        }
        for garbage in ["", "{", "[]", "{\"format\": 1}", "null"] {
            assert!(matches!(
                SavedJobSet::from_json(garbage),
                Err(Error::SavedState(_))
            ));
        }
    }

    #[test]
    fn times_beyond_what_rfc_3339_says_are_clamped() {
        let epoch = std::time::UNIX_EPOCH;
        assert_eq!(
            stamp(epoch - Duration::from_secs(5)),
            "1970-01-01T00:00:00.000Z"
        );
        let far = epoch + Duration::from_secs(400_000_000_000);
        assert_eq!(stamp(far), "9999-12-31T23:59:59.999Z");
        let clocks = Clocks::now();
        let mut saved = sample(&clocks);
        saved.jobs[0].deadline = Some(stamp(far));
        let jobs = restore(
            &saved,
            None,
            &crate::Profile::simulator(),
            Duration::from_secs(3600),
            &clocks,
        )
        .unwrap();
        assert!(jobs[0].ledger.deadline().is_some_and(|d| d > clocks.now));
    }

    /// Whatever a damaged file holds, parsing and restoring it returns, never panics.
    #[test]
    fn damaged_states_never_panic() {
        let clocks = Clocks::now();
        let text = sample(&clocks).to_json().unwrap();
        let mut tried = 0;
        let mut damaged: Vec<String> = (0..text.len())
            .filter(|i| text.is_char_boundary(*i))
            .map(|i| text[..i].to_owned())
            .collect();
        for (i, c) in text.char_indices() {
            for replacement in ["0", "-", "\"", "9999999999999999999999", "null", "[]", "Z"] {
                if c.is_ascii_alphanumeric() || c == '"' || c == ':' {
                    damaged.push(format!("{}{replacement}{}", &text[..i], &text[i + 1..]));
                }
            }
        }
        for candidate in &damaged {
            if let Ok(saved) = SavedJobSet::from_json(candidate) {
                let _ = restore(
                    &saved,
                    None,
                    &crate::Profile::simulator(),
                    Duration::from_secs(3600),
                    &clocks,
                );
                let jobs = restore(
                    &saved,
                    None,
                    &crate::Profile::simulator(),
                    Duration::MAX,
                    &clocks,
                )
                .unwrap_or_default();
                for job in &jobs {
                    save_job(job, &clocks);
                }
            }
            tried += 1;
        }
        assert!(tried > 1000, "{tried}");
    }

    #[test]
    fn saved_durations_are_bounded_to_the_latest() {
        let learned = LearnedDurations::new(1024);
        for i in 0..300u64 {
            learned.record(Sample::at_least(Duration::from_millis(i)));
        }
        let saved = saved_set(Vec::new(), &learned, &Clocks::now()).durations;
        assert_eq!(saved.len(), DURATIONS);
        assert_eq!(saved[0].lo_ms, 300 - DURATIONS as u64);
        // And each reads back as the sample it was.
        learned.record(Sample::between(
            Duration::from_millis(1500),
            Duration::from_millis(2500),
        ));
        let saved = saved_set(Vec::new(), &learned, &Clocks::now()).durations;
        let last = saved.last().unwrap();
        assert_eq!((last.lo_ms, last.hi_ms), (1500, Some(2500)));
        assert_eq!(
            super::sample(last),
            Sample::between(Duration::from_millis(1500), Duration::from_millis(2500))
        );
    }
}

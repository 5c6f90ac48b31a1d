//! How a wait ended, as the command prints it: one JSON line, or a line for people, and the
//! exit status.

use serde_json::{Value, json};
use translation_status::{Completion, Error, JobState, JobStatus, WaitReport};

/// How a wait ended.
#[derive(Debug)]
pub(crate) struct Summary {
    /// `completed`, `failed`, `canceled`, `gave_up` or `error`.
    pub(crate) outcome: &'static str,
    /// The last status seen, if any.
    pub(crate) status: Option<JobStatus>,
    /// How the wait went, when it got that far.
    pub(crate) report: Option<WaitReport>,
    /// Why it did not complete, in words.
    pub(crate) message: Option<String>,
}

impl Summary {
    /// The result of a wait.
    pub(crate) fn of(result: Result<Completion, Error>) -> Summary {
        match result {
            Ok(done) => Summary {
                outcome: "completed",
                status: Some(done.status),
                report: Some(done.report),
                message: None,
            },
            Err(error) => Summary::failed(error),
        }
    }

    /// A wait that did not complete.
    pub(crate) fn failed(error: Error) -> Summary {
        let outcome = match &error {
            Error::JobFailed(_) => "failed",
            Error::JobCanceled(_) => "canceled",
            Error::GaveUp(_) => "gave_up",
            _ => "error",
        };
        let message = match &error {
            // The job's own words, when it gave some.
            Error::JobFailed(f) => f
                .message
                .clone()
                .or_else(|| f.code.clone())
                .unwrap_or_else(|| error.to_string()),
            _ => error.to_string(),
        };
        Summary {
            outcome,
            status: error.last_status().cloned(),
            report: error.report().cloned(),
            message: Some(message),
        }
    }

    /// A watch that ended without an error: its last status says how.
    pub(crate) fn watched(last: Option<JobStatus>, report: Option<WaitReport>) -> Summary {
        let (outcome, message) = match last.as_ref().map(|s| &s.state) {
            Some(JobState::Completed) => ("completed", None),
            Some(JobState::Canceled) => ("canceled", Some("the job was canceled".to_owned())),
            Some(JobState::Failed(f)) => (
                "failed",
                Some(
                    f.message
                        .clone()
                        .or_else(|| f.code.clone())
                        .unwrap_or_else(|| "the job failed".into()),
                ),
            ),
            _ => (
                "error",
                Some("the wait ended without an outcome".to_owned()),
            ),
        };
        Summary {
            outcome,
            status: last,
            report,
            message,
        }
    }

    /// A wait that could not start (a bad argument, a profile that does not load).
    pub(crate) fn failed_to_start() -> Summary {
        Summary {
            outcome: "error",
            status: None,
            report: None,
            message: None,
        }
    }

    /// 0 completed, 1 failed or canceled, 2 gave up or could not wait.
    pub(crate) fn exit_code(&self) -> u8 {
        match self.outcome {
            "completed" => 0,
            "failed" | "canceled" => 1,
            _ => 2,
        }
    }

    /// The one line `--json` prints.
    pub(crate) fn json(&self) -> Value {
        let report = self.report.as_ref();
        let millis = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        json!({
            "outcome": self.outcome,
            "state": self.status.as_ref().map(word),
            "mechanism": report.map(|r| r.mechanism.as_str()),
            "requests": report.map(|r| r.requests),
            "retries": report.map(|r| r.retries),
            "elapsed_ms": report.map(|r| millis(r.elapsed)),
            "detection_delay_ms": report.and_then(|r| r.detection_delay).map(millis),
            "result_url": self.status.as_ref().and_then(|s| s.result_url.clone()),
            "message": self.message,
        })
    }

    /// The line for people (stderr).
    pub(crate) fn line(&self) -> String {
        let mut line = self.outcome.to_owned();
        if let Some(status) = &self.status {
            line.push_str(&format!(" ({})", word(status)));
        }
        if let Some(r) = &self.report {
            line.push_str(&format!(
                " via {} after {} request(s) ({} retries) in {} ms",
                r.mechanism,
                r.requests,
                r.retries,
                r.elapsed.as_millis()
            ));
            if let Some(delay) = r.detection_delay {
                line.push_str(&format!(
                    ", learned {} ms after it ended",
                    delay.as_millis()
                ));
            }
        }
        if let Some(message) = &self.message {
            line.push_str(&format!(": {message}"));
        }
        line
    }
}

/// The service's own word for the state, or the canonical one for a status made in code.
pub(crate) fn word(status: &JobStatus) -> String {
    status
        .raw_state
        .clone()
        .unwrap_or_else(|| status.state.as_str().to_owned())
}

/// A status, for people: `running (in_progress) 43%`.
pub(crate) fn progress_line(status: &JobStatus) -> String {
    let mut line = format!("{} ({})", status.state.canonical(), word(status));
    if let Some(p) = status.progress {
        line.push_str(&format!(" {:.0}%", p * 100.0));
    }
    if let Some(eta) = status.eta() {
        line.push_str(&format!(" ~{:.1}s left", eta.as_secs_f64()));
    }
    line
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn exit_codes_follow_the_outcome() {
        let done = JobStatus::new(JobState::Completed);
        let summary = Summary::watched(Some(done), None);
        assert_eq!((summary.outcome, summary.exit_code()), ("completed", 0));
        let canceled = Summary::watched(Some(JobStatus::new(JobState::Canceled)), None);
        assert_eq!((canceled.outcome, canceled.exit_code()), ("canceled", 1));
        let none = Summary::watched(None, None);
        assert_eq!(none.exit_code(), 2);
        let json = canceled.json();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "detection_delay_ms",
                "elapsed_ms",
                "mechanism",
                "message",
                "outcome",
                "requests",
                "result_url",
                "retries",
                "state"
            ]
        );
        assert_eq!(json["state"], "canceled");
    }
}

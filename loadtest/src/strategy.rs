//! The waiting strategies compared: the baselines a caller might write by hand, and the SDK
//! with more or less of the server's help.
//!
//! Every baseline runs through the SDK too (a custom [`PollPolicy`] against the plain
//! `GET /status?job=ID` route, no hints, no long-poll, no SSE), so the comparison measures the
//! schedule and the mechanism, not two different HTTP stacks.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use translation_status::WaitOptions;
use translation_status::poll::{
    Adaptive, Basis, Exponential, Fixed, PollDecision, PollPolicy, PollState,
};

/// Which features the strategy's simulator offers (embedded runs turn the others off, so the
/// SDK meets a server that really lacks them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerProfile {
    /// Only `GET /status?job=ID` → `{"result": ...}`.
    Plain,
    /// Status with hints; no long-poll, no SSE.
    Hints,
    /// Hints and long-poll; no SSE.
    LongPoll,
    /// Everything.
    Full,
}

/// A named way of waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Poll every second.
    Naive1s,
    /// The original exercise's caller: poll every 5 s.
    Fixed5s,
    /// 1 s, doubling, capped at 30 s.
    Exponential,
    /// AWS-waiter style: random delay between 2 s and min(120 s, 2 s·2ⁿ).
    AwsWaiter,
    /// HeyGen's published cadence: every 30 s for the first 3 minutes, then every 60 s.
    HeygenCadence,
    /// The SDK against a plain `/status` server, learning as it goes.
    OursPlain,
    /// The SDK's cold start alone against a plain `/status` server (learning off: every wait
    /// is a fresh client's first).
    OursCold,
    /// The SDK against a plain `/status` server, after learning from 100+ earlier jobs.
    OursPlainWarm,
    /// The SDK against a plain `/status` server, told the true distribution (the optimum
    /// that learning can approach).
    OraclePlain,
    /// The SDK following the server's hints.
    OursHints,
    /// The SDK long-polling.
    OursLongPoll,
    /// The SDK on Server-Sent Events.
    OursSse,
    /// The SDK choosing for itself against the full simulator.
    OursAuto,
    /// A job set told of each job's end by the simulator's webhooks (a loopback receiver in
    /// the harness), reading a job only on its safety net; it learns from a first batch of
    /// jobs, as a service restores its learned durations.
    OursWebhook,
}

impl Strategy {
    /// Every strategy, in report order.
    pub const ALL: [Strategy; 14] = [
        Strategy::Naive1s,
        Strategy::Fixed5s,
        Strategy::Exponential,
        Strategy::AwsWaiter,
        Strategy::HeygenCadence,
        Strategy::OursPlain,
        Strategy::OursCold,
        Strategy::OursPlainWarm,
        Strategy::OraclePlain,
        Strategy::OursHints,
        Strategy::OursLongPoll,
        Strategy::OursSse,
        Strategy::OursAuto,
        Strategy::OursWebhook,
    ];

    /// The demo's set.
    pub const DEMO: [Strategy; 9] = [
        Strategy::Naive1s,
        Strategy::Fixed5s,
        Strategy::Exponential,
        Strategy::AwsWaiter,
        Strategy::OursPlain,
        Strategy::OursHints,
        Strategy::OursLongPoll,
        Strategy::OursSse,
        Strategy::OursAuto,
    ];

    /// Stable name (CLI and reports).
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Naive1s => "naive-1s",
            Strategy::Fixed5s => "fixed-5s",
            Strategy::Exponential => "exponential",
            Strategy::AwsWaiter => "aws-waiter",
            Strategy::HeygenCadence => "heygen-cadence",
            Strategy::OursPlain => "ours-plain",
            Strategy::OursCold => "ours-cold",
            Strategy::OursPlainWarm => "ours-plain-warm",
            Strategy::OraclePlain => "oracle-plain",
            Strategy::OursHints => "ours-hints",
            Strategy::OursLongPoll => "ours-longpoll",
            Strategy::OursSse => "ours-sse",
            Strategy::OursAuto => "ours-auto",
            Strategy::OursWebhook => "ours-webhook",
        }
    }

    /// What the strategy's server offers.
    pub fn server(self) -> ServerProfile {
        match self {
            Strategy::Naive1s
            | Strategy::Fixed5s
            | Strategy::Exponential
            | Strategy::AwsWaiter
            | Strategy::HeygenCadence
            | Strategy::OursPlain
            | Strategy::OursCold
            | Strategy::OursPlainWarm
            | Strategy::OraclePlain => ServerProfile::Plain,
            Strategy::OursHints => ServerProfile::Hints,
            Strategy::OursLongPoll => ServerProfile::LongPoll,
            Strategy::OursSse | Strategy::OursAuto | Strategy::OursWebhook => ServerProfile::Full,
        }
    }

    /// Whether the SDK may learn from earlier jobs before the measured batch.
    pub fn warm_up(self) -> bool {
        matches!(self, Strategy::OursPlainWarm | Strategy::OursWebhook)
    }

    /// Whether jobs are created with a callback to the harness and waited for in a job set
    /// that expects webhooks.
    pub fn webhooks(self) -> bool {
        matches!(self, Strategy::OursWebhook)
    }

    /// Whether the client is given the true duration distribution.
    pub fn oracle(self) -> bool {
        matches!(self, Strategy::OraclePlain)
    }

    /// Wait options, with every time constant multiplied by `scale` (so a time-scaled run
    /// compares the same schedules as an unscaled one).
    pub fn options(self, scale: f64, deadline: Duration) -> WaitOptions {
        let s = |d: Duration| d.mul_f64(scale);
        let plain = WaitOptions::new().sse(false).long_poll(false);
        let ours = Adaptive::new()
            .min_interval(s(Duration::from_millis(100)))
            .cold_start(s(Duration::from_millis(600)), s(Duration::from_secs(120)));
        let options = match self {
            Strategy::Naive1s => plain.policy(Fixed::new(s(Duration::from_secs(1)))),
            Strategy::Fixed5s => plain.policy(Fixed::new(s(Duration::from_secs(5)))),
            Strategy::Exponential => plain.policy(
                Exponential::new(s(Duration::from_secs(1)))
                    .multiplier(2.0)
                    .max(s(Duration::from_secs(30))),
            ),
            Strategy::AwsWaiter => plain.policy(AwsWaiter::new(
                s(Duration::from_secs(2)),
                s(Duration::from_secs(120)),
            )),
            Strategy::HeygenCadence => plain.policy(HeygenCadence {
                early: s(Duration::from_secs(30)),
                until: s(Duration::from_secs(180)),
                late: s(Duration::from_secs(60)),
            }),
            Strategy::OursPlain | Strategy::OursPlainWarm | Strategy::OraclePlain => {
                plain.policy(ours)
            }
            Strategy::OursCold => plain.policy(ours.use_learned(false)),
            Strategy::OursHints => plain.policy(ours),
            Strategy::OursLongPoll => WaitOptions::new().sse(false).policy(ours),
            Strategy::OursSse => WaitOptions::new().long_poll(false).policy(ours),
            Strategy::OursAuto | Strategy::OursWebhook => WaitOptions::new().policy(ours),
        };
        options.deadline(deadline)
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl serde::Serialize for Strategy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl FromStr for Strategy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Strategy::ALL
            .into_iter()
            .find(|st| st.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Strategy::ALL.iter().map(|s| s.name()).collect();
                format!("unknown strategy `{s}`; one of: {}", names.join(", "))
            })
    }
}

/// HeyGen's own advice for polling a video translation: every `early` (30 s) until `until`
/// (3 min) into the wait, then every `late` (60 s).
#[derive(Debug, Clone, Copy)]
pub struct HeygenCadence {
    early: Duration,
    until: Duration,
    late: Duration,
}

impl PollPolicy for HeygenCadence {
    fn next(&self, state: &PollState) -> PollDecision {
        let after = if state.elapsed < self.until {
            self.early
        } else {
            self.late
        };
        PollDecision::Poll {
            after,
            basis: Basis::Custom,
        }
    }
}

/// The AWS SDK waiter schedule: attempt `n` (from 1) sleeps a uniformly random time between
/// `min` and `min(max, min·2ⁿ⁻¹)`. A caller-written [`PollPolicy`], as users can write.
#[derive(Debug, Clone, Copy)]
pub struct AwsWaiter {
    min: Duration,
    max: Duration,
}

impl AwsWaiter {
    /// `min`..`max` (AWS defaults are 2 s and 120 s).
    pub fn new(min: Duration, max: Duration) -> Self {
        AwsWaiter {
            min,
            max: max.max(min),
        }
    }
}

impl PollPolicy for AwsWaiter {
    fn next(&self, state: &PollState) -> PollDecision {
        let attempt = state.polls.max(1);
        let ceiling = self
            .min
            .saturating_mul(1u32 << (attempt - 1).min(16))
            .min(self.max);
        let span = ceiling.saturating_sub(self.min);
        let after = self.min + span.mul_f64(state.random.clamp(0.0, 1.0));
        PollDecision::Poll {
            after,
            basis: Basis::Custom,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in Strategy::ALL {
            assert_eq!(s.name().parse::<Strategy>().unwrap(), s);
        }
        assert!(
            "nope"
                .parse::<Strategy>()
                .unwrap_err()
                .contains("ours-auto")
        );
    }

    #[test]
    fn heygen_cadence_is_30_s_for_3_min_then_60_s() {
        let p = format!(
            "{:?}",
            Strategy::HeygenCadence.options(1.0, Duration::from_secs(3600))
        );
        assert!(p.contains("HeygenCadence"), "{p}");
        let cadence = HeygenCadence {
            early: Duration::from_secs(30),
            until: Duration::from_secs(180),
            late: Duration::from_secs(60),
        };
        let at = |elapsed| match cadence
            .next(&PollState::new().with_elapsed(Duration::from_secs(elapsed)))
        {
            PollDecision::Poll { after, .. } => after.as_secs(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            (at(0), at(150), at(179), at(180), at(900)),
            (30, 30, 30, 60, 60)
        );
    }

    #[test]
    fn aws_waiter_schedule_grows_within_bounds() {
        let p = AwsWaiter::new(Duration::from_secs(2), Duration::from_secs(120));
        let at =
            |polls, random| match p.next(&PollState::new().with_polls(polls).with_random(random)) {
                PollDecision::Poll { after, .. } => after,
                other => panic!("{other:?}"),
            };
        assert_eq!(
            at(1, 0.99),
            Duration::from_secs(2),
            "first delay is exactly min"
        );
        assert_eq!(at(3, 0.0), Duration::from_secs(2));
        assert_eq!(at(3, 1.0), Duration::from_secs(8));
        assert_eq!(at(30, 1.0), Duration::from_secs(120), "capped");
    }
}

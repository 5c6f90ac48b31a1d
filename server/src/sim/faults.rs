//! Fault injection: the dice that decide what goes wrong with one request.
//!
//! The decision ([`FaultInjector::roll`] for a request, [`FaultInjector::roll_webhook`] for a
//! webhook delivery) is separate from its effect (the middleware in `routes`, the dispatcher in
//! `sim::webhooks`), so the odds are testable without a network. Faults are configured in
//! `[faults]` and can be replaced at run time (`PUT /admin/faults`,
//! [`crate::AppState::set_faults`]).

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use crate::settings::Faults;
use crate::time::later;

/// What to do instead of (or before) answering normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer normally.
    None,
    /// `503 outage`.
    Outage,
    /// `500 injected_error`.
    Error,
    /// `429 injected_throttle` with this `Retry-After`.
    Throttle(Duration),
    /// Drop the connection.
    Drop,
    /// `200` with a malformed body.
    Malformed,
}

impl Fault {
    /// Metric label of the fault kind, if any.
    pub fn kind(self) -> Option<&'static str> {
        match self {
            Fault::None => None,
            Fault::Outage => Some("outage"),
            Fault::Error => Some("error"),
            Fault::Throttle(_) => Some("throttle"),
            Fault::Drop => Some("drop"),
            Fault::Malformed => Some("malformed"),
        }
    }
}

/// The outcome of one roll: a delay to add, and what to answer after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roll {
    /// Added latency (zero when none).
    pub delay: Duration,
    /// Whether the delay includes the slow tail.
    pub slow_tail: bool,
    /// What to answer.
    pub fault: Fault,
}

/// What the webhook faults decided for one delivery, when it first came due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFate {
    /// Lost: never sent, never retried (`faults.webhook_drop_rate`).
    Lost,
    /// Sent, with these faults.
    Sent(WebhookFaults),
}

/// The faults a delivery that is sent meets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WebhookFaults {
    /// Wait this long before the first attempt (`faults.webhook_delay`; zero: none).
    pub delay: Duration,
    /// Once delivered, send it again (`faults.webhook_duplicate_rate`).
    pub duplicate: bool,
    /// Hold it back until the next delivery has been made, at most this long
    /// (`faults.webhook_reorder_rate`, `faults.webhook_reorder_window`).
    pub hold_back: Option<Duration>,
}

/// Holds the current faults and the dice.
#[derive(Debug)]
pub struct FaultInjector {
    faults: RwLock<Arc<Faults>>,
    rng: Mutex<SmallRng>,
    started: Instant,
    outage_until: Mutex<Option<Instant>>,
}

impl FaultInjector {
    /// An injector whose outage windows are measured from `started`.
    pub fn new(faults: Faults, started: Instant) -> Self {
        let rng = match faults.seed {
            Some(seed) => SmallRng::seed_from_u64(seed),
            None => SmallRng::from_rng(&mut rand::rng()),
        };
        FaultInjector {
            faults: RwLock::new(Arc::new(faults)),
            rng: Mutex::new(rng),
            started,
            outage_until: Mutex::new(None),
        }
    }

    /// The faults in force.
    pub fn current(&self) -> Arc<Faults> {
        Arc::clone(&self.faults.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Replaces the faults (re-seeding the dice when a seed is given).
    pub fn set(&self, faults: Faults) {
        if let Some(seed) = faults.seed {
            *self.rng.lock().unwrap_or_else(|p| p.into_inner()) = SmallRng::seed_from_u64(seed);
        }
        *self.faults.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(faults);
    }

    /// Starts an outage of `length` now (replacing any run-time outage).
    pub fn start_outage(&self, now: Instant, length: Duration) {
        *self.outage_until.lock().unwrap_or_else(|p| p.into_inner()) = Some(later(now, length));
    }

    /// Starts an outage that lasts until `until` (replacing any run-time outage): one decided
    /// elsewhere, on a clock of its own (the Redis backend's).
    pub fn outage_until(&self, until: Instant) {
        *self.outage_until.lock().unwrap_or_else(|p| p.into_inner()) = Some(until);
    }

    /// Whether `now` falls in an outage: a configured window or a run-time one.
    pub fn in_outage(&self, now: Instant, faults: &Faults) -> bool {
        let runtime = matches!(
            *self.outage_until.lock().unwrap_or_else(|p| p.into_inner()),
            Some(until) if now < until
        );
        let since = now.saturating_duration_since(self.started);
        runtime
            || faults
                .outages
                .iter()
                .any(|w| since >= w.start && since - w.start < w.duration)
    }

    /// Decides the fate of one request arriving at `now`.
    pub fn roll(&self, now: Instant) -> Roll {
        let faults = self.current();
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        let mut delay = faults.latency;
        let slow_tail = chance(&mut rng, faults.slow_tail_probability);
        if slow_tail {
            delay = delay.saturating_add(faults.slow_tail_delay);
        }
        let fault = if self.in_outage(now, &faults) {
            Fault::Outage
        } else if chance(&mut rng, faults.drop_rate) {
            Fault::Drop
        } else if chance(&mut rng, faults.error_rate) {
            Fault::Error
        } else if chance(&mut rng, faults.throttle_rate) {
            Fault::Throttle(faults.throttle_retry_after)
        } else if chance(&mut rng, faults.malformed_rate) {
            Fault::Malformed
        } else {
            Fault::None
        };
        Roll {
            delay,
            slow_tail,
            fault,
        }
    }
}

impl FaultInjector {
    /// Decides whether a held request (a stream, a long-poll) that no other fault took goes
    /// silent (`faults.silent_rate`).
    pub fn roll_silent(&self) -> bool {
        let p = self.current().silent_rate;
        p > 0.0 && chance(&mut self.rng.lock().unwrap_or_else(|p| p.into_inner()), p)
    }
}

impl FaultInjector {
    /// Decides the fate of one webhook delivery as it first comes due: lost, or sent with a
    /// delay, a duplicate, a hold-back. A rate of zero rolls no dice, so webhook faults left
    /// unset change nothing in the sequence the request faults draw.
    pub fn roll_webhook(&self) -> WebhookFate {
        let faults = self.current();
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        if chance(&mut rng, faults.webhook_drop_rate) {
            return WebhookFate::Lost;
        }
        let duplicate = chance(&mut rng, faults.webhook_duplicate_rate);
        let hold_back =
            chance(&mut rng, faults.webhook_reorder_rate).then_some(faults.webhook_reorder_window);
        WebhookFate::Sent(WebhookFaults {
            delay: faults.webhook_delay,
            duplicate,
            hold_back,
        })
    }
}

fn chance(rng: &mut SmallRng, p: f64) -> bool {
    p > 0.0 && rng.random_bool(p.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::OutageWindow;

    fn injector(f: Faults) -> FaultInjector {
        FaultInjector::new(
            Faults {
                seed: Some(11),
                ..f
            },
            Instant::now(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn no_faults_means_no_faults() {
        let inj = injector(Faults::default());
        for _ in 0..1000 {
            let r = inj.roll(Instant::now());
            assert_eq!((r.fault, r.delay), (Fault::None, Duration::ZERO));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn rates_are_respected_roughly() {
        let inj = injector(Faults {
            error_rate: 0.2,
            slow_tail_probability: 0.05,
            slow_tail_delay: Duration::from_millis(500),
            ..Faults::default()
        });
        let (mut errors, mut slow) = (0, 0);
        for _ in 0..10_000 {
            let r = inj.roll(Instant::now());
            errors += usize::from(r.fault == Fault::Error);
            slow += usize::from(r.slow_tail);
            if r.slow_tail {
                assert_eq!(r.delay, Duration::from_millis(500));
            }
        }
        assert!((1700..2300).contains(&errors), "{errors}");
        assert!((350..650).contains(&slow), "{slow}");
    }

    #[tokio::test(start_paused = true)]
    async fn silence_follows_its_rate() {
        let never = injector(Faults::default());
        assert!((0..1000).all(|_| !never.roll_silent()));
        let always = injector(Faults {
            silent_rate: 1.0,
            ..Faults::default()
        });
        assert!((0..1000).all(|_| always.roll_silent()));
        let half = injector(Faults {
            silent_rate: 0.5,
            ..Faults::default()
        });
        let silent = (0..10_000).filter(|_| half.roll_silent()).count();
        assert!((4_500..5_500).contains(&silent), "{silent}");
    }

    #[test]
    fn no_webhook_faults_means_every_delivery_is_sent_as_is() {
        let inj = FaultInjector::new(Faults::default(), Instant::now());
        for _ in 0..1000 {
            assert_eq!(
                inj.roll_webhook(),
                WebhookFate::Sent(WebhookFaults::default())
            );
        }
    }

    #[test]
    fn webhook_faults_follow_their_rates_and_the_seed() {
        let faults = Faults {
            webhook_drop_rate: 0.1,
            webhook_duplicate_rate: 0.5,
            webhook_reorder_rate: 0.2,
            webhook_reorder_window: Duration::from_millis(300),
            webhook_delay: Duration::from_millis(40),
            seed: Some(7),
            ..Faults::default()
        };
        let fates = |faults: &Faults| {
            let inj = FaultInjector::new(faults.clone(), Instant::now());
            (0..10_000).map(|_| inj.roll_webhook()).collect::<Vec<_>>()
        };
        let run = fates(&faults);
        assert_eq!(run, fates(&faults), "the same seed, the same fates");
        let sent: Vec<_> = run
            .iter()
            .filter_map(|f| match f {
                WebhookFate::Sent(s) => Some(*s),
                WebhookFate::Lost => None,
            })
            .collect();
        let lost = run.len() - sent.len();
        let duplicated = sent.iter().filter(|s| s.duplicate).count();
        let held = sent.iter().filter(|s| s.hold_back.is_some()).count();
        assert!((800..1200).contains(&lost), "{lost}");
        assert!(
            (4000..5000).contains(&duplicated),
            "{duplicated} of {}",
            sent.len()
        );
        assert!((1600..2000).contains(&held), "{held} of {}", sent.len());
        assert!(sent.iter().all(|s| s.delay == Duration::from_millis(40)));
        assert!(
            sent.iter()
                .filter_map(|s| s.hold_back)
                .all(|w| w == Duration::from_millis(300))
        );
        let other = fates(&Faults {
            seed: Some(8),
            ..faults.clone()
        });
        assert_ne!(run, other, "another seed, other fates");
        let all_lost = FaultInjector::new(
            Faults {
                webhook_drop_rate: 1.0,
                ..Faults::default()
            },
            Instant::now(),
        );
        assert!((0..1000).all(|_| all_lost.roll_webhook() == WebhookFate::Lost));
    }

    #[tokio::test(start_paused = true)]
    async fn outage_windows_and_runtime_outages() {
        let inj = injector(Faults {
            outages: vec![OutageWindow {
                start: Duration::from_secs(10),
                duration: Duration::from_secs(3),
            }],
            ..Faults::default()
        });
        let t0 = Instant::now();
        assert_eq!(inj.roll(t0 + Duration::from_secs(9)).fault, Fault::None);
        assert_eq!(inj.roll(t0 + Duration::from_secs(10)).fault, Fault::Outage);
        assert_eq!(inj.roll(t0 + Duration::from_secs(13)).fault, Fault::None);
        inj.start_outage(t0, Duration::from_secs(1));
        assert_eq!(inj.roll(t0).fault, Fault::Outage);
        assert_eq!(inj.roll(t0 + Duration::from_secs(1)).fault, Fault::None);
    }
}

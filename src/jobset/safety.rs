//! The safety net under webhooks: when a job that announces its end by webhook is read
//! anyway, so that a webhook that never came is caught — late, but surely.
//!
//! Senders retry a failed delivery only briefly (Synthesia twice over ten minutes, HeyGen a
//! few times), and a receiver may be down when they do, so some webhooks never arrive. A job
//! set that expects them reads each job only when its webhook is overdue: by default when 99 %
//! of the jobs this client has seen had ended by the job's age. A read that finds the job
//! still running says it is one of the slow ones, not that its webhook was lost: the next read
//! comes when 99 % of the jobs still running at that age will have ended — or, beyond anything
//! learned, at twice its age. A lost webhook therefore costs about one read, and a job whose
//! webhook arrives costs none.

use std::time::Duration;

use super::stall::{MIN_SAMPLES, learned_quantile};
use crate::error::Error;
use crate::poll::{DurationModel, MIN_PAUSE};

/// How much older a job still running is at its next safety read than at its last, beyond
/// what was learned.
const GROWTH: u32 = 2;

/// When a [`JobSet`](super::JobSet) whose jobs announce their end by webhook reads a job
/// anyway (see [`JobSetOptions::webhooks`](super::JobSetOptions::webhooks)). Ages count from
/// the job's creation when it is known, else from when it was added.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum SafetyNet {
    /// From learned durations: the first read at the age by which `quantile` of the jobs
    /// this client has seen had ended, never before `floor` — or at `cold` until at least 10
    /// durations are known. A job read still running is read again when `quantile` of the
    /// jobs still running at its age will have ended, or, beyond what was learned, at twice
    /// its age.
    Learned {
        /// The quantile, in `(0, 1)` (default 0.99).
        quantile: f64,
        /// The earliest first read (default 1 s).
        floor: Duration,
        /// The first read before anything is learned (default 5 min).
        cold: Duration,
    },
    /// The first read at this age, then at twice the job's age each time it is still
    /// running.
    After(Duration),
}

impl Default for SafetyNet {
    fn default() -> Self {
        SafetyNet::Learned {
            quantile: 0.99,
            floor: Duration::from_secs(1),
            cold: Duration::from_secs(5 * 60),
        }
    }
}

impl SafetyNet {
    /// The age at which a job is read next: `seen` is its age when a read last found it
    /// running (`None`: never read).
    pub(crate) fn next_age(&self, model: &DurationModel, seen: Option<Duration>) -> Duration {
        let (first, quantile) = match *self {
            SafetyNet::Learned {
                quantile,
                floor,
                cold,
            } => (
                learned_quantile(model, quantile).map_or(cold, |q| q.max(floor)),
                Some(quantile),
            ),
            SafetyNet::After(first) => (first, None),
        };
        let Some(age) = seen else {
            return first;
        };
        let later = age.saturating_add(MIN_PAUSE);
        quantile
            .and_then(|q| conditional_quantile(model, age, q))
            .filter(|next| *next >= later)
            .unwrap_or_else(|| age.saturating_mul(GROWTH))
            .max(first)
            .max(later)
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        match *self {
            SafetyNet::After(first) if first.is_zero() => Err(Error::config(
                "webhooks",
                "the safety net's first read must come after zero",
            )),
            SafetyNet::After(_) => Ok(()),
            SafetyNet::Learned {
                quantile,
                floor,
                cold,
            } => {
                if !(quantile > 0.0 && quantile < 1.0) {
                    return Err(Error::config(
                        "webhooks",
                        format!("the safety net's quantile must be in (0, 1), not {quantile}"),
                    ));
                }
                if floor.is_zero() || cold.is_zero() {
                    return Err(Error::config(
                        "webhooks",
                        "the safety net's floor and cold-start read must come after zero",
                    ));
                }
                Ok(())
            }
        }
    }
}

/// The age by which `q` of the jobs still running at `age` will have ended, as learned;
/// `None` beyond what was learned.
fn conditional_quantile(model: &DurationModel, age: Duration, q: f64) -> Option<Duration> {
    if model.samples() < MIN_SAMPLES {
        return None;
    }
    let ended = model.cdf(age);
    if ended >= 1.0 - 1e-9 {
        return None;
    }
    model.quantile(ended + q * (1.0 - ended))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::poll::Sample;

    fn s(x: f64) -> Duration {
        Duration::from_secs_f64(x)
    }

    /// 100 jobs of 1 to 100 s.
    fn learned() -> DurationModel {
        let samples: Vec<Sample> = (1..=100).map(|i| Sample::exact(s(f64::from(i)))).collect();
        DurationModel::fit(&samples)
    }

    #[test]
    fn the_first_read_comes_at_the_learned_quantile_or_the_cold_bound() {
        let net = SafetyNet::default();
        assert_eq!(net.next_age(&DurationModel::fit(&[]), None), s(300.0));
        let few: Vec<Sample> = (1..=9).map(|i| Sample::exact(s(f64::from(i)))).collect();
        assert_eq!(
            net.next_age(&DurationModel::fit(&few), None),
            s(300.0),
            "cold until 10 durations are known"
        );
        let first = net.next_age(&learned(), None);
        assert!((s(95.0)..=s(100.0)).contains(&first), "{first:?}");
        let fast: Vec<Sample> = (0..20).map(|_| Sample::exact(s(0.05))).collect();
        assert_eq!(
            net.next_age(&DurationModel::fit(&fast), None),
            s(1.0),
            "floor"
        );
        assert_eq!(SafetyNet::After(s(7.0)).next_age(&learned(), None), s(7.0));
    }

    #[test]
    fn a_job_still_running_is_read_later_each_time() {
        let net = SafetyNet::default();
        let model = learned();
        // Seen running early (a read before the first safety read): the next read is when
        // 99 % of the jobs running at 10 s will have ended, never before the first.
        let next = net.next_age(&model, Some(s(10.0)));
        assert!((s(95.0)..=s(100.0)).contains(&next), "{next:?}");
        // Beyond everything learned: twice its age.
        assert_eq!(net.next_age(&model, Some(s(150.0))), s(300.0));
        // Cold: twice its age, never before the cold read.
        let cold = DurationModel::fit(&[]);
        assert_eq!(net.next_age(&cold, Some(s(300.0))), s(600.0));
        assert_eq!(net.next_age(&cold, Some(s(10.0))), s(300.0));
        assert_eq!(
            SafetyNet::After(s(7.0)).next_age(&model, Some(s(7.0))),
            s(14.0)
        );
        // Every next read is later than the last one, whatever the age.
        for age in [0.0, 0.001, 1.0, 50.0, 99.9, 1e6] {
            for net in [SafetyNet::default(), SafetyNet::After(s(0.001))] {
                for model in [&model, &cold] {
                    let next = net.next_age(model, Some(s(age)));
                    assert!(next >= s(age) + MIN_PAUSE, "{net:?} at {age}: {next:?}");
                }
            }
        }
    }

    #[test]
    fn bad_settings_are_refused() {
        for bad in [
            SafetyNet::After(Duration::ZERO),
            SafetyNet::Learned {
                quantile: 1.0,
                floor: s(1.0),
                cold: s(1.0),
            },
            SafetyNet::Learned {
                quantile: f64::NAN,
                floor: s(1.0),
                cold: s(1.0),
            },
            SafetyNet::Learned {
                quantile: 0.9,
                floor: s(1.0),
                cold: Duration::ZERO,
            },
        ] {
            assert!(
                matches!(bad.validate(), Err(Error::Config(ref c)) if c.setting == "webhooks"),
                "{bad:?}"
            );
        }
        assert!(SafetyNet::default().validate().is_ok());
    }
}

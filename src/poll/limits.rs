//! Limits, as decorators of any policy.

use std::time::Duration;

use super::{GiveUpReason, PollDecision, PollPolicy, PollState};

/// Gives up once the deadline has passed; clamps the last delay so that the final poll lands
/// exactly on the deadline (not before, not after).
#[derive(Debug, Clone)]
pub struct WithDeadline<P> {
    inner: P,
    deadline: Duration,
}

impl<P> WithDeadline<P> {
    /// Wraps `inner` with a deadline measured from the start of the wait.
    pub fn new(inner: P, deadline: Duration) -> Self {
        WithDeadline { inner, deadline }
    }
}

impl<P: PollPolicy> PollPolicy for WithDeadline<P> {
    fn next(&self, state: &PollState) -> PollDecision {
        if state.elapsed >= self.deadline {
            return PollDecision::GiveUp(GiveUpReason::Deadline);
        }
        let left = self.deadline - state.elapsed;
        match self.inner.next(state) {
            PollDecision::Poll { after, basis } => PollDecision::Poll {
                after: after.min(left),
                basis,
            },
            give_up => give_up,
        }
    }
}

/// Gives up after a number of status requests.
#[derive(Debug, Clone)]
pub struct WithMaxPolls<P> {
    inner: P,
    max_polls: u32,
}

impl<P> WithMaxPolls<P> {
    /// Wraps `inner` with a budget of `max_polls` requests.
    pub fn new(inner: P, max_polls: u32) -> Self {
        WithMaxPolls { inner, max_polls }
    }
}

impl<P: PollPolicy> PollPolicy for WithMaxPolls<P> {
    fn next(&self, state: &PollState) -> PollDecision {
        if state.polls >= self.max_polls {
            PollDecision::GiveUp(GiveUpReason::MaxPolls)
        } else {
            self.inner.next(state)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::poll::{Basis, Fixed, PollPolicyExt};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn deadline_table() {
        let p = Fixed::new(ms(400)).with_deadline(ms(1000));
        let table = [
            (
                0,
                PollDecision::Poll {
                    after: ms(400),
                    basis: Basis::Fixed,
                },
            ),
            (
                500,
                PollDecision::Poll {
                    after: ms(400),
                    basis: Basis::Fixed,
                },
            ),
            (
                700,
                PollDecision::Poll {
                    after: ms(300),
                    basis: Basis::Fixed,
                },
            ),
            (
                999,
                PollDecision::Poll {
                    after: ms(1),
                    basis: Basis::Fixed,
                },
            ),
            (1000, PollDecision::GiveUp(GiveUpReason::Deadline)),
            (5000, PollDecision::GiveUp(GiveUpReason::Deadline)),
        ];
        for (elapsed, want) in table {
            let s = PollState::new().with_polls(1).with_elapsed(ms(elapsed));
            assert_eq!(p.next(&s), want, "elapsed={elapsed}");
        }
    }

    #[test]
    fn max_polls_table() {
        let p = Fixed::new(ms(10)).with_max_polls(3);
        for (polls, gives_up) in [(1, false), (2, false), (3, true), (4, true)] {
            let s = PollState::new().with_polls(polls);
            assert_eq!(
                p.next(&s) == PollDecision::GiveUp(GiveUpReason::MaxPolls),
                gives_up,
                "polls={polls}"
            );
        }
    }

    #[test]
    fn decorators_compose() {
        let p = Fixed::new(ms(400))
            .with_max_polls(2)
            .with_deadline(ms(1000));
        let s = PollState::new().with_polls(2).with_elapsed(ms(10));
        assert_eq!(p.next(&s), PollDecision::GiveUp(GiveUpReason::MaxPolls));
        let s = PollState::new().with_polls(1).with_elapsed(ms(2000));
        assert_eq!(p.next(&s), PollDecision::GiveUp(GiveUpReason::Deadline));
    }
}

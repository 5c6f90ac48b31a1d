//! Composing schedules: the first that has an opinion decides.
//!
//! A [`PollPolicy`] always decides. Some schedules only know sometimes — server hints while
//! the job is inside the window they allow, a learned model while it knows enough jobs this
//! old — so they are [`Opinion`]s, and [`OrElse`] puts one in front of another: the first
//! opinion there is, else the next. A missing schedule (`None`) has no opinion, so a
//! composition loses a part without a flag to check.

use std::fmt;

use super::{PollDecision, PollPolicy, PollState};

/// A schedule that may have nothing to say.
pub(crate) trait Opinion: Send + Sync + fmt::Debug {
    /// The decision, when this schedule has one for `state`.
    fn opinion(&self, state: &PollState) -> Option<PollDecision>;
}

impl<O: Opinion> Opinion for Option<O> {
    fn opinion(&self, state: &PollState) -> Option<PollDecision> {
        self.as_ref()?.opinion(state)
    }
}

impl<O: Opinion + ?Sized> Opinion for &O {
    fn opinion(&self, state: &PollState) -> Option<PollDecision> {
        (**self).opinion(state)
    }
}

/// `first`'s opinion, else `then`'s.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OrElse<A, B> {
    pub(crate) first: A,
    pub(crate) then: B,
}

impl<A: Opinion, B: Opinion> Opinion for OrElse<A, B> {
    fn opinion(&self, state: &PollState) -> Option<PollDecision> {
        self.first
            .opinion(state)
            .or_else(|| self.then.opinion(state))
    }
}

impl<A: Opinion, B: PollPolicy> PollPolicy for OrElse<A, B> {
    fn next(&self, state: &PollState) -> PollDecision {
        self.first
            .opinion(state)
            .unwrap_or_else(|| self.then.next(state))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::poll::{Basis, Fixed};

    /// Has an opinion only after `from` polls.
    #[derive(Debug)]
    struct After(u32, Duration);

    impl Opinion for After {
        fn opinion(&self, state: &PollState) -> Option<PollDecision> {
            (state.polls >= self.0).then_some(PollDecision::Poll {
                after: self.1,
                basis: Basis::Custom,
            })
        }
    }

    #[test]
    fn the_first_opinion_decides() {
        let s = Duration::from_secs;
        let chain = OrElse {
            first: After(3, s(1)),
            then: OrElse {
                first: None::<After>,
                then: Fixed::new(s(5)),
            },
        };
        let after = |polls| match chain.next(&PollState::new().with_polls(polls)) {
            PollDecision::Poll { after, basis } => (after, basis),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            after(1),
            (s(5), Basis::Fixed),
            "no opinion yet, and none missing"
        );
        assert_eq!(after(3), (s(1), Basis::Custom));
    }
}

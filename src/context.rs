//! What every wait of one client shares: the parts both drivers receive.
//!
//! A single wait and a job set take their parts as arguments, the way a retry loop takes its
//! attempt, sleep and policies: the network ([`Wire`], the transport in production, a script
//! in tests), the [`Profile`] that says where a job's status is and what it means, the base
//! URL jobs are resolved against, what is known about each server route, the learned job
//! durations, and the request budget. The [`Client`](crate::Client) owns one
//! and hands it out; neither driver knows the client.

use url::Url;

use crate::jobset::SharedBudget;
use crate::poll::LearnedDurations;
use crate::profile::Profile;
use crate::transport::Transport;
use crate::wait::{Capabilities, Wire};

/// The shared parts of every wait of one client.
#[derive(Debug)]
pub(crate) struct Context<W: Wire = Transport> {
    /// How status reads and event streams are sent.
    pub(crate) wire: W,
    /// The job API's dialect: every status read is decoded by it, every job resolved by it.
    pub(crate) profile: Profile,
    /// What job ids resolve against.
    pub(crate) base_url: Option<Url>,
    /// Per server route: does it stream, does it hold requests.
    pub(crate) capabilities: Capabilities,
    /// Job durations learned from every finished wait, for every schedule.
    pub(crate) learned: LearnedDurations,
    /// The token bucket every job set's requests come out of.
    pub(crate) budget: SharedBudget,
}

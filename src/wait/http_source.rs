//! One job's status source over the network: its endpoints, the wire, and the route memory.

use tokio::time::Instant;

use super::FallbackReason;
use super::capabilities::Capabilities;
use super::source::{Fact, ReadRequest, Reading, Source, Subscribed};
use super::wire::Wire;
use crate::job::Endpoints;
use crate::profile::Profile;

#[derive(Debug)]
pub(crate) struct HttpSource<'a, W> {
    pub(crate) wire: &'a W,
    pub(crate) endpoints: &'a Endpoints,
    pub(crate) profile: &'a Profile,
    pub(crate) capabilities: &'a Capabilities,
    /// Whether to offer SSE/long-poll at all (the wait options).
    pub(crate) sse: bool,
    pub(crate) long_poll: bool,
}

impl<W: Wire> Source for HttpSource<'_, W> {
    fn sse_available(&self) -> bool {
        self.sse
            && self.endpoints.events.is_some()
            && self.capabilities.sse(&self.endpoints.capability_key)
    }

    fn long_poll_available(&self) -> bool {
        self.long_poll
            && self.profile.long_poll()
            && self.capabilities.long_poll(&self.endpoints.capability_key)
    }

    fn learned(&self, fact: Fact) {
        self.capabilities
            .learned(&self.endpoints.capability_key, fact);
    }

    async fn read(&self, request: ReadRequest) -> Reading {
        self.wire
            .read(&self.endpoints.status, request, self.profile)
            .await
    }

    async fn subscribe(
        &self,
        last_event_id: Option<String>,
        deadline: Option<Instant>,
    ) -> Subscribed {
        let Some(url) = &self.endpoints.events else {
            return Subscribed::Fallback {
                reason: FallbackReason::NotSupported,
                attempts: 0,
            };
        };
        self.wire.subscribe(url, last_event_id, deadline).await.0
    }
}

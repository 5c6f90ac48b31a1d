//! The refusal an open breaker returns instead of sending, and how to find it again under the
//! retry layer's wrapping.

use std::time::Duration;

/// Nothing was sent: the host's breaker is open (or half-open with every probe out).
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "the circuit breaker for {host} is open after repeated failures; nothing was sent (try again in {} ms)",
    retry_after.as_millis()
)]
pub(crate) struct BreakerOpen {
    /// `host:port`.
    pub(crate) host: String,
    /// When the breaker will let a request through again, from the moment of the refusal.
    pub(crate) retry_after: Duration,
}

/// The breaker's refusal inside a middleware error, if that is what it is.
pub(crate) fn refusal(error: &reqwest_middleware::Error) -> Option<&BreakerOpen> {
    crate::transport::classify::find(error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest_retry::RetryError;

    #[test]
    fn found_through_the_retry_wrapping() {
        let open = BreakerOpen {
            host: "h:1".into(),
            retry_after: Duration::from_millis(1500),
        };
        let bare = reqwest_middleware::Error::middleware(open.clone());
        assert_eq!(
            refusal(&bare).map(|o| o.retry_after),
            Some(open.retry_after)
        );
        let wrapped = reqwest_middleware::Error::middleware(RetryError::WithRetries {
            retries: 2,
            err: reqwest_middleware::Error::middleware(open),
        });
        assert_eq!(refusal(&wrapped).map(|o| o.host.as_str()), Some("h:1"));
        assert!(bare.to_string().contains("try again in 1500 ms"), "{bare}");
    }
}

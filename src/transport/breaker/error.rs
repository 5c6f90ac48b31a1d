//! The refusal an open breaker returns instead of sending, and how to find it again under the
//! retry layer's wrapping.

use std::fmt;
use std::time::Duration;

/// Nothing was sent: the host's breaker is open (or half-open with every probe out).
#[derive(Debug, Clone)]
pub(crate) struct BreakerOpen {
    /// `host:port`.
    pub(crate) host: String,
    /// When the breaker will let a request through again, from the moment of the refusal.
    pub(crate) retry_after: Duration,
    /// Whether the host has ever answered over HTTP: if not, the refused requests are more
    /// likely aimed at a wrong URL or a dead host than at a service in an outage.
    pub(crate) answered: bool,
    /// The last failure that counted against the host, when it was a failure below HTTP
    /// (credentials masked, at most a few hundred characters).
    pub(crate) last_failure: Option<String>,
}

impl fmt::Display for BreakerOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.retry_after.as_millis();
        if self.answered {
            return write!(
                f,
                "the circuit breaker for {} is open after repeated failures; nothing was sent (try again in {ms} ms)",
                self.host
            );
        }
        write!(f, "{} has not answered any request", self.host)?;
        if let Some(failure) = &self.last_failure {
            write!(f, " (last failure: {failure})")?;
        }
        write!(
            f,
            "; after repeated failures its circuit breaker holds requests back for {ms} ms, so nothing was sent"
        )
    }
}

impl std::error::Error for BreakerOpen {}

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
            answered: true,
            last_failure: None,
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

    #[test]
    fn a_host_that_never_answered_is_named_as_such() {
        let open = BreakerOpen {
            host: "h:1".into(),
            retry_after: Duration::from_millis(800),
            answered: false,
            last_failure: Some("connection refused".into()),
        };
        let text = open.to_string();
        assert!(text.contains("h:1 has not answered"), "{text}");
        assert!(text.contains("connection refused"), "{text}");
        assert!(!text.contains("try again"), "{text}");
    }
}

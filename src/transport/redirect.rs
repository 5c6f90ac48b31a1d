//! Redirects: not followed unless allowed, and then only within the origin.
//!
//! reqwest follows up to ten redirects by default and, on the way to another host, drops only
//! `Authorization` and `Cookie`: the `X-Api-Key` header went wherever a `302` pointed, and the
//! other host's answer was taken for the job's status. So by default no redirect is followed
//! (`Policy::none`): a `3xx` comes back as an answer, which the client reports as
//! [`Error::UnexpectedResponse`](crate::Error::UnexpectedResponse) naming the `Location`.
//!
//! [`ClientBuilder::follow_redirects`](crate::ClientBuilder::follow_redirects) allows a
//! bounded number of hops, each to the *same origin* (scheme, host and port) as the request
//! — a service that moved a route, say. A redirect to another origin is refused before
//! anything is sent there, so credentials (the API key, user-info sent as Basic) never
//! leave the origin they were given for; so is the hop past the limit.

use http::StatusCode;
use reqwest::redirect::Policy;
use url::Url;

use crate::redact::redact;

/// The most hops [`ClientBuilder::follow_redirects`](crate::ClientBuilder::follow_redirects)
/// accepts.
pub(crate) const MAX_HOPS: u32 = 10;

/// A redirect the policy refused to follow (the server answered; this client declined).
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum RedirectRefused {
    /// The `Location` is on another origin.
    #[error(
        "redirected to {location} (HTTP {status}), another origin: not followed, since credentials must stay with the origin they were given for"
    )]
    OtherOrigin {
        status: StatusCode,
        /// Absolute, credentials masked.
        location: String,
    },
    /// The hop limit is reached.
    #[error(
        "redirected to {location} (HTTP {status}) after {followed} redirect(s), the most this client follows: redirects are not followed further (a redirect loop?)"
    )]
    TooMany {
        status: StatusCode,
        /// Absolute, credentials masked.
        location: String,
        followed: u32,
    },
}

impl RedirectRefused {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            RedirectRefused::OtherOrigin { status, .. }
            | RedirectRefused::TooMany { status, .. } => *status,
        }
    }
}

/// The redirect policy of the HTTP client: none followed with `max_hops == 0`, else up to
/// `max_hops` to the request's own origin.
pub(crate) fn policy(max_hops: u32) -> Policy {
    if max_hops == 0 {
        return Policy::none();
    }
    Policy::custom(move |attempt| {
        // `previous` starts with the original request: the hops followed are the rest.
        let followed = attempt.previous().len().saturating_sub(1);
        let status = attempt.status();
        let location = || redact(attempt.url().as_str()).into_owned();
        let origin = attempt.previous().first();
        if origin.is_some_and(|origin| !same_origin(origin, attempt.url())) {
            let refused = RedirectRefused::OtherOrigin {
                status,
                location: location(),
            };
            attempt.error(refused)
        } else if followed >= max_hops as usize {
            let refused = RedirectRefused::TooMany {
                status,
                location: location(),
                followed: max_hops,
            };
            attempt.error(refused)
        } else {
            attempt.follow()
        }
    })
}

/// Same scheme, host and port (the port by its scheme's default when not written).
pub(crate) fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// The `Location` of an answer, absolute against the request's URL, credentials masked; as
/// given (masked) when it does not resolve.
pub(crate) fn location(url: &Url, headers: &http::HeaderMap) -> Option<String> {
    let raw = headers.get(http::header::LOCATION)?;
    let raw = String::from_utf8_lossy(raw.as_bytes());
    let shown = match url.join(raw.trim()) {
        Ok(absolute) => redact(absolute.as_str()).into_owned(),
        Err(_) => redact(&raw).into_owned(),
    };
    Some(crate::error::excerpt(shown.as_bytes(), 512))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn origins() {
        let url = |s: &str| Url::parse(s).unwrap();
        assert!(same_origin(&url("http://h/a"), &url("http://h:80/b?c")));
        assert!(same_origin(&url("http://u:p@h/a"), &url("http://h/b")));
        assert!(!same_origin(&url("http://h/a"), &url("https://h/a")));
        assert!(!same_origin(&url("http://h:1/a"), &url("http://h:2/a")));
        assert!(!same_origin(&url("http://h/a"), &url("http://h.evil/a")));
    }

    #[test]
    fn locations_are_absolute_and_masked() {
        let base = Url::parse("http://h:1/v1/jobs/a/status").unwrap();
        let mut headers = http::HeaderMap::new();
        assert_eq!(location(&base, &headers), None);
        headers.insert("location", http::HeaderValue::from_static("../b/status"));
        assert_eq!(
            location(&base, &headers).as_deref(),
            Some("http://h:1/v1/jobs/b/status")
        );
        headers.insert(
            "location",
            http::HeaderValue::from_static("http://u:pw@x/s?token=t"),
        );
        assert_eq!(
            location(&base, &headers).as_deref(),
            Some("http://***@x/s?token=***")
        );
    }
}

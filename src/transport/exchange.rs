//! What came back from one request — an answer with its body, a failure, a subscription —
//! and each of them as the crate's [`Error`] when the caller cannot use it.

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http::header::HeaderMap;
use url::Url;

use super::attempts::{self, Attempts};
use super::classify::{self, Classification, classify};
use super::{breaker, headers, redirect, sse};
use crate::error::{Error, Unavailable, UnexpectedResponse, Unreachable, excerpt};
use crate::redact::redact;

/// One answered request, body read; it borrows the URL it was sent to.
#[derive(Debug)]
pub(crate) struct Exchange<'u> {
    pub(crate) url: &'u Url,
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) attempts: u32,
    /// Hedges sent on top of the attempts (requests on the wire, not attempts).
    pub(crate) hedges: u32,
}

/// A request that got no answer, after retries.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) url: Url,
    pub(crate) error: reqwest_middleware::Error,
    pub(crate) attempts: u32,
    /// Hedges sent on top of the attempts.
    pub(crate) hedges: u32,
}

/// An event-stream subscription that was answered.
pub(crate) struct Subscription {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    /// The response, when it is an event stream (`200 text/event-stream`).
    pub(crate) events: Option<sse::EventStream>,
    /// The first bytes of the body otherwise.
    pub(crate) body: Bytes,
    pub(crate) attempts: u32,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("status", &self.status)
            .field("streaming", &self.events.is_some())
            .finish()
    }
}

pub(super) async fn finish<'u>(
    url: &'u Url,
    result: reqwest_middleware::Result<reqwest::Response>,
    attempts: &Attempts,
) -> Result<Exchange<'u>, Failure> {
    let mut response = result.map_err(|error| Failure::new(url, error, attempts))?;
    let hedges = attempts.hedges();
    let attempts = attempts.get().max(1);
    let failure = |error| Failure {
        url: url.clone(),
        error,
        attempts,
        hedges,
    };
    let status = response.status();
    let headers = std::mem::take(response.headers_mut());
    // Already read by the attempt: this does not touch the network.
    let body = attempts::body(response)
        .await
        .map_err(|e| failure(reqwest_middleware::Error::Reqwest(e)))?;
    Ok(Exchange {
        url,
        status,
        headers,
        body,
        attempts,
        hedges,
    })
}

impl Failure {
    /// Attempts are counted on the wire: a request the breaker refused before any attempt
    /// made none.
    pub(super) fn new(url: &Url, error: reqwest_middleware::Error, attempts: &Attempts) -> Self {
        let hedges = attempts.hedges();
        let attempts = match breaker::refusal(&error) {
            Some(_) => attempts.get(),
            None => attempts.get().max(1),
        };
        Failure {
            url: url.clone(),
            error,
            attempts,
            hedges,
        }
    }

    /// When the request was refused by the breaker rather than failed: when to try again.
    pub(crate) fn refused_for(&self) -> Option<Duration> {
        breaker::refusal(&self.error).map(|open| open.retry_after)
    }

    /// The failure as an error: the server's answer could not be used (`UnexpectedResponse`),
    /// or there was none (`Unreachable`); a breaker's refusal is `Unavailable` only for a
    /// host that has answered before — one that never did is still `Unreachable`.
    pub(crate) fn into_error(self) -> Error {
        let url = redact(self.url.as_str()).into_owned();
        if let Some(open) = breaker::refusal(&self.error) {
            if open.answered {
                return Error::Unavailable(Box::new(Unavailable::refused(
                    &open.host,
                    open.retry_after,
                )));
            }
            return Error::Unreachable(Box::new(Unreachable {
                url,
                attempts: self.attempts,
                status: None,
                timed_out: false,
                source: Some(Box::new(open.clone())),
                creation_not_retried: false,
            }));
        }
        if let Some(unusable) = classify::unusable(&self.error) {
            return Error::UnexpectedResponse(Box::new(UnexpectedResponse {
                url,
                status: unusable.status.map_or(0, |s| s.as_u16()),
                code: None,
                message: unusable.problem,
                body_excerpt: String::new(),
                retry_after: None,
                auth_challenge: None,
                url_credentials: crate::redact::has_userinfo(&self.url),
            }));
        }
        let timed_out = classify::timed_out(&self.error);
        Error::Unreachable(Box::new(Unreachable {
            url,
            attempts: self.attempts,
            status: None,
            timed_out,
            source: Some(Box::new(self.error)),
            creation_not_retried: false,
        }))
    }
}

impl Exchange<'_> {
    /// The `error.code` of the answer's JSON error body, when it has one.
    pub(crate) fn error_code(&self) -> Option<String> {
        error_body(&self.body).and_then(|(code, _)| code)
    }

    /// The answer as an error: `Unreachable` for `5xx`/`408`/`429` (the service is there but
    /// not serving), `UnexpectedResponse` for everything else.
    pub(crate) fn into_error(self, message: Option<String>) -> Error {
        let code_and_message = error_body(&self.body);
        let status = self.status.as_u16();
        if message.is_none()
            && matches!(
                classify(self.status, &self.headers),
                Classification::Transient
            )
        {
            return Error::Unreachable(Box::new(Unreachable {
                url: redact(self.url.as_str()).into_owned(),
                attempts: self.attempts,
                status: Some(status),
                timed_out: status == 408,
                source: None,
                creation_not_retried: false,
            }));
        }
        let (code, server_message) = code_and_message.unwrap_or_default();
        // A redirect is reported as such, whatever its body says.
        let redirect = self.status.is_redirection() && self.status != StatusCode::NOT_MODIFIED;
        let redirected = redirect.then(|| match redirect::location(self.url, &self.headers) {
            Some(location) => {
                format!("redirected to {location}; redirects are not followed")
            }
            None => "a redirect without a Location".to_owned(),
        });
        Error::UnexpectedResponse(Box::new(UnexpectedResponse {
            url: redact(self.url.as_str()).into_owned(),
            status,
            code,
            message: message
                .or(redirected)
                .or(server_message)
                .unwrap_or_else(|| {
                    self.status
                        .canonical_reason()
                        .unwrap_or("unrecognised status")
                        .to_owned()
                }),
            // A body can hold a signed URL (a result, a redirect target): masked like any.
            body_excerpt: redact(&excerpt(&self.body, 256)).into_owned(),
            retry_after: headers::retry_after(&self.headers),
            auth_challenge: matches!(status, 401 | 403)
                .then(|| headers::auth_schemes(&self.headers))
                .flatten(),
            url_credentials: crate::redact::has_userinfo(self.url),
        }))
    }
}

/// `{"error": {"code", "message"}}`, when the body is one.
fn error_body(body: &[u8]) -> Option<(Option<String>, Option<String>)> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let error = value.get("error")?;
    let field = |name: &str| error.get(name).and_then(|v| v.as_str()).map(str::to_owned);
    Some((field("code"), field("message")))
}

//! What an answer says about the server's rate limit: classify it before the budget acts on it.
//!
//! Three vocabularies are in use, and all are read:
//!
//! * the IETF structured fields (draft 7 on): `RateLimit-Policy: "default";q=200;w=1` and
//!   `RateLimit: "default";r=150;t=1`, possibly several policies, comma-separated;
//! * the earlier drafts: `RateLimit-Policy: 100;w=60` and `RateLimit: limit=100,
//!   remaining=50, reset=30`, or the three `RateLimit-Limit` / `-Remaining` / `-Reset` headers;
//! * `429`, or `503`, with `Retry-After` / `retry-after-ms`.
//!
//! Anything malformed is ignored: a header the client cannot read is no signal.

use std::time::Duration;

use http::{HeaderMap, StatusCode};

use super::answer::throttled;

/// The rate-limit facts in one answer.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Signals {
    /// The answer refused the request: `429`, or `503` with a `Retry-After`.
    pub(crate) throttled: Option<Throttle>,
    /// The tightest advertised policy: `quota` requests per `window`.
    pub(crate) policy: Option<(f64, Duration)>,
    /// Requests left in the current quota (the smallest, when several are reported).
    pub(crate) remaining: Option<u64>,
}

/// A refusal and how long the server asked the client to pause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Throttle {
    pub(crate) retry_after: Option<Duration>,
}

impl Signals {
    /// Reads an answer's status and headers.
    pub(crate) fn read(status: StatusCode, headers: &HeaderMap) -> Signals {
        Signals {
            throttled: throttled(status, headers).map(|retry_after| Throttle { retry_after }),
            policy: policy(headers),
            remaining: remaining(headers),
        }
    }
}

/// One list member: `token-or-number;key=value;key=value`.
fn members(headers: &HeaderMap, name: &str) -> Vec<(String, Vec<(String, String)>)> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|member| {
            let mut parts = member.split(';').map(str::trim);
            let head = parts.next().unwrap_or_default().to_owned();
            let params = parts
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                .collect();
            (head, params)
        })
        .collect()
}

fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn number(raw: &str) -> Option<f64> {
    raw.trim()
        .trim_matches('"')
        .parse::<f64>()
        .ok()
        .filter(|n| n.is_finite() && *n >= 0.0)
}

/// The advertised policy with the lowest rate.
fn policy(headers: &HeaderMap) -> Option<(f64, Duration)> {
    members(headers, "ratelimit-policy")
        .iter()
        .filter_map(|(head, params)| {
            // Draft 7 on: `"name";q=..;w=..`; earlier: `quota;w=..`.
            let quota = param(params, "q")
                .and_then(number)
                .or_else(|| number(head))?;
            let window = param(params, "w").and_then(number)?;
            (quota > 0.0 && window > 0.0 && window < 1e9)
                .then(|| (quota, crate::poll::seconds(window)))
        })
        .min_by(|a, b| (a.0 / a.1.as_secs_f64()).total_cmp(&(b.0 / b.1.as_secs_f64())))
}

/// The smallest reported remaining quota.
fn remaining(headers: &HeaderMap) -> Option<u64> {
    let members = members(headers, "ratelimit");
    let structured = members
        .iter()
        .filter_map(|(_, params)| param(params, "r").and_then(number));
    // Earlier drafts: a dictionary `limit=.., remaining=.., reset=..`.
    let dictionary = members.iter().filter_map(|(head, _)| {
        let (key, value) = head.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("remaining")
            .then(|| number(value))?
    });
    let separate = headers
        .get("ratelimit-remaining")
        .and_then(|v| v.to_str().ok())
        .and_then(number);
    structured
        .chain(dictionary)
        .chain(separate)
        .map(|r| r.min(u64::MAX as f64) as u64)
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, http::HeaderValue::from_static(v));
        }
        map
    }

    fn read(status: u16, pairs: &[(&'static str, &'static str)]) -> Signals {
        Signals::read(
            StatusCode::from_u16(status).unwrap_or_default(),
            &headers(pairs),
        )
    }

    #[test]
    fn structured_fields() {
        let s = read(
            200,
            &[
                ("ratelimit-policy", "\"default\";q=200;w=1"),
                ("ratelimit", "\"default\";r=150;t=1"),
            ],
        );
        assert_eq!(s.policy, Some((200.0, Duration::from_secs(1))));
        assert_eq!(s.remaining, Some(150));
        assert_eq!(s.throttled, None);
    }

    #[test]
    fn the_tightest_of_several_policies_wins() {
        let s = read(
            200,
            &[
                (
                    "ratelimit-policy",
                    "\"burst\";q=100;w=1, \"day\";q=1000;w=86400",
                ),
                ("ratelimit", "\"burst\";r=40;t=1, \"day\";r=12;t=3000"),
            ],
        );
        assert_eq!(s.policy, Some((1000.0, Duration::from_secs(86400))));
        assert_eq!(s.remaining, Some(12));
    }

    #[test]
    fn earlier_drafts() {
        let s = read(
            200,
            &[
                ("ratelimit-policy", "100;w=60"),
                ("ratelimit", "limit=100, remaining=7, reset=30"),
            ],
        );
        assert_eq!(s.policy, Some((100.0, Duration::from_secs(60))));
        assert_eq!(s.remaining, Some(7));
        let s = read(200, &[("ratelimit-remaining", "3")]);
        assert_eq!(s.remaining, Some(3));
    }

    #[test]
    fn throttling_answers() {
        let s = read(429, &[("retry-after", "2")]);
        assert_eq!(
            s.throttled,
            Some(Throttle {
                retry_after: Some(Duration::from_secs(2))
            })
        );
        let s = read(429, &[]);
        assert_eq!(s.throttled, Some(Throttle { retry_after: None }));
        let s = read(503, &[("retry-after-ms", "250")]);
        assert_eq!(
            s.throttled,
            Some(Throttle {
                retry_after: Some(Duration::from_millis(250))
            })
        );
        assert_eq!(
            read(503, &[]).throttled,
            None,
            "an outage is not a rate limit"
        );
        assert_eq!(read(200, &[("retry-after", "1")]).throttled, None);
    }

    #[test]
    fn malformed_headers_are_no_signal() {
        for pairs in [
            &[("ratelimit-policy", "\"default\";q=abc;w=1")][..],
            &[("ratelimit-policy", "\"default\";q=10")],
            &[("ratelimit-policy", "\"default\";q=10;w=0")],
            &[("ratelimit-policy", "\"default\";q=-5;w=1")],
            &[("ratelimit-policy", "\"default\";q=10;w=1e300")],
            &[("ratelimit-policy", "\"default\";q=10;w=inf")],
            &[("ratelimit-policy", "\"default\";q=inf;w=1")],
            &[("ratelimit-policy", ";;;,,,")],
            &[("ratelimit", "\"default\";r=NaN")],
            &[("ratelimit", "remaining")],
        ] {
            let s = read(200, pairs);
            assert_eq!((s.policy, s.remaining), (None, None), "{pairs:?}");
        }
    }
}

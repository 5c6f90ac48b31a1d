//! The few headers the waiting logic reads.

use std::time::Duration;

use http::HeaderMap;
use http::header::{ETAG, RETRY_AFTER, WWW_AUTHENTICATE};

/// `retry-after-ms` (preferred, millisecond precision) or `Retry-After` in seconds.
///
/// The HTTP-date form of `Retry-After` is not used: it would tie the delay to the two clocks
/// agreeing, and the service sends seconds. A value that is not a number of milliseconds
/// below 10¹² (about 31 years) or of whole seconds is no hint. However short the hint, a
/// pause is never shorter than [`MIN_PAUSE`](crate::poll::MIN_PAUSE): the caller floors it.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|ms| ms.is_finite() && *ms >= 0.0 && *ms < 1e12)
    {
        return Some(crate::poll::seconds(ms / 1000.0));
    }
    headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// The `wait` the server says it applied (`Preference-Applied: wait=N`, RFC 7240).
pub fn applied_wait(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get_all("preference-applied")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ';']))
        .find_map(|pref| {
            let (name, value) = pref.split_once('=')?;
            if name.trim().eq_ignore_ascii_case("wait") {
                let secs = value.trim().trim_matches('"').parse::<u64>().ok()?;
                Some(Duration::from_secs(secs))
            } else {
                None
            }
        })
}

/// The authentication schemes a `WWW-Authenticate` challenge names (`Bearer`, `Basic`, …),
/// joined by `", "`; at most four, each a short token, whatever the server sent.
pub(crate) fn auth_schemes(headers: &HeaderMap) -> Option<String> {
    const MAX_SCHEMES: usize = 4;
    const MAX_SCHEME_LEN: usize = 32;
    let mut schemes: Vec<&str> = Vec::new();
    let challenges = headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .take(MAX_SCHEMES)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','));
    for challenge in challenges {
        // `Bearer realm="x"` starts a challenge; `error="invalid_token"` continues one.
        let Some(first) = challenge.split_whitespace().next() else {
            continue;
        };
        let token = first.len() <= MAX_SCHEME_LEN
            && first
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if token && !schemes.iter().any(|s| s.eq_ignore_ascii_case(first)) {
            schemes.push(first);
            if schemes.len() == MAX_SCHEMES {
                break;
            }
        }
    }
    (!schemes.is_empty()).then(|| schemes.join(", "))
}

/// The entity tag, verbatim (weak tags included).
pub(crate) fn etag(headers: &HeaderMap) -> Option<String> {
    headers
        .get(ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Case = (&'static [(&'static str, &'static str)], Option<u64>);

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, http::HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn retry_after_table() {
        let table: [Case; 8] = [
            (&[], None),
            (&[("retry-after", "2")], Some(2000)),
            (&[("retry-after", " 1 ")], Some(1000)),
            (
                &[("retry-after", "2"), ("retry-after-ms", "1250")],
                Some(1250),
            ),
            (&[("retry-after-ms", "80.5")], Some(80)),
            (&[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")], None),
            (&[("retry-after", "-1")], None),
            (
                &[("retry-after-ms", "soon"), ("retry-after", "3")],
                Some(3000),
            ),
        ];
        for (pairs, want) in table {
            let got = retry_after(&headers(pairs)).map(|d| d.as_millis() as u64);
            assert_eq!(got, want, "{pairs:?}");
        }
    }

    #[test]
    fn hostile_retry_after_values_never_panic() {
        let table: [Case; 6] = [
            (
                &[("retry-after-ms", "inf"), ("retry-after", "3")],
                Some(3000),
            ),
            (&[("retry-after-ms", "NaN")], None),
            (&[("retry-after-ms", "1e300")], None),
            (&[("retry-after-ms", "-0.5")], None),
            (&[("retry-after", "99999999999999999999999")], None),
            (&[("retry-after-ms", "0")], Some(0)),
        ];
        for (pairs, want) in table {
            let got = retry_after(&headers(pairs)).map(|d| d.as_millis() as u64);
            assert_eq!(got, want, "{pairs:?}");
        }
        let most = headers(&[("retry-after", "18446744073709551615")]);
        assert_eq!(retry_after(&most), Some(Duration::from_secs(u64::MAX)));
    }

    #[test]
    fn applied_wait_table() {
        let table: [Case; 6] = [
            (&[], None),
            (&[("preference-applied", "wait=10")], Some(10)),
            (&[("preference-applied", "respond-async, wait=5")], Some(5)),
            (&[("preference-applied", "WAIT = 3")], Some(3)),
            (&[("preference-applied", "return=minimal")], None),
            (&[("preference-applied", "wait=soon")], None),
        ];
        for (pairs, want) in table {
            let got = applied_wait(&headers(pairs)).map(|d| d.as_secs());
            assert_eq!(got, want, "{pairs:?}");
        }
    }

    #[test]
    fn auth_schemes_table() {
        type Case = (
            &'static [(&'static str, &'static str)],
            Option<&'static str>,
        );
        let table: [Case; 7] = [
            (&[], None),
            (
                &[("www-authenticate", r#"Bearer realm="jobs""#)],
                Some("Bearer"),
            ),
            (
                &[(
                    "www-authenticate",
                    r#"Bearer realm="x", error="invalid_token", Basic realm="y""#,
                )],
                Some("Bearer, Basic"),
            ),
            (
                &[("www-authenticate", "Basic"), ("www-authenticate", "basic")],
                Some("Basic"),
            ),
            (
                &[("www-authenticate", "ApiKey header=X-Api-Key")],
                Some("ApiKey"),
            ),
            (&[("www-authenticate", r#"realm="x""#)], None),
            (
                &[("www-authenticate", "a, b, c, d, e, f")],
                Some("a, b, c, d"),
            ),
        ];
        for (pairs, want) in table {
            let mut map = HeaderMap::new();
            for (k, v) in pairs {
                map.append(*k, http::HeaderValue::from_static(v));
            }
            assert_eq!(auth_schemes(&map).as_deref(), want, "{pairs:?}");
        }
    }
}

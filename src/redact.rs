//! Credentials never leave in text: one function takes them out of anything URL-shaped before
//! it reaches an error, a log line, a span field or a metric label.
//!
//! A status URL can carry a secret in two places. Its *user-info* (`http://user:pass@host/…`)
//! is sent as HTTP Basic authentication; its *query* may hold a token or a signature
//! (`?token=…`, `?api_key=…`, a presigned `?X-Amz-Signature=…`). Both are replaced by `***`.
//! Everything else is kept as written — scheme, host, port, path, the other parameters — so
//! the text still says which job on which host it is about, and a job id (no `://`, no `?`)
//! comes back unchanged.
//!
//! The rule works on text, not on parsed URLs, so it also covers what does not parse (a
//! mistyped status URL in a configuration error) and a URL inside a longer message. Host
//! labels (`host:port`, the breaker's and the hedge tracker's key and metric label) never
//! contain user-info: they are cut after it.

use std::borrow::Cow;
use std::ops::Range;

use url::Url;

/// What a secret is replaced with.
pub(crate) const MASK: &str = "***";

/// `text` with every URL's user-info and the values of query (or fragment) parameters named
/// like credentials replaced by [`MASK`]. Borrows when there is nothing to hide.
pub(crate) fn redact(text: &str) -> Cow<'_, str> {
    let mut hidden: Vec<Range<usize>> = Vec::new();
    let mut offset = 0;
    for word in text.split_inclusive(char::is_whitespace) {
        secrets(word, offset, &mut hidden);
        offset += word.len();
    }
    if hidden.is_empty() {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for range in hidden {
        out.push_str(&text[at..range.start]);
        out.push_str(MASK);
        at = range.end;
    }
    out.push_str(&text[at..]);
    Cow::Owned(out)
}

/// A URL with its secrets masked (still a valid URL: `***` is allowed in user-info and in a
/// query value). `None` when nothing needed hiding.
pub(crate) fn url(url: &Url) -> Option<Url> {
    match redact(url.as_str()) {
        Cow::Borrowed(_) => None,
        Cow::Owned(text) => Url::parse(&text).ok().or_else(|| {
            // Cannot happen for a parsed URL; never hand the original back regardless.
            Url::parse("redacted:").ok()
        }),
    }
}

/// A URL shown without its query and fragment (`https://host/path?***`), user-info masked:
/// for URLs whose query is a signature, whatever its parameters are called (a signed result
/// URL). Text that is not a URL is masked whole.
pub(crate) fn without_query(text: &str) -> String {
    let shown = redact(text);
    match shown.find(['?', '#']) {
        Some(at) => format!("{}?{MASK}", &shown[..at]),
        None if shown.contains("://") => shown.into_owned(),
        None => MASK.to_owned(),
    }
}

/// Whether the URL carries user-info (credentials reqwest sends as HTTP Basic).
pub(crate) fn has_userinfo(url: &Url) -> bool {
    !url.username().is_empty() || url.password().is_some()
}

/// The secret ranges of one whitespace-free word (at `offset` in the whole text), in order.
fn secrets(word: &str, offset: usize, hidden: &mut Vec<Range<usize>>) {
    let word = word.trim_end_matches(char::is_whitespace);
    let mut rest_from = 0;
    if let Some(scheme_end) = word.find("://") {
        let start = scheme_end + 3;
        let authority_len = word[start..]
            .find(['/', '?', '#'])
            .unwrap_or(word.len() - start);
        let authority = &word[start..start + authority_len];
        if let Some(at) = authority.rfind('@') {
            hidden.push(offset + start..offset + start + at);
        }
        rest_from = start + authority_len;
    }
    let Some(query) = word[rest_from..].find(['?', '#']) else {
        return;
    };
    let mut at = rest_from + query + 1;
    for pair in word[at..].split(['&', ';', '#', '?']) {
        if let Some((name, value)) = pair.split_once('=')
            && !value.is_empty()
            && credential_like(name)
        {
            let start = at + name.len() + 1;
            hidden.push(offset + start..offset + start + value.len());
        }
        at += pair.len() + 1;
    }
}

/// Whether a parameter name looks like it holds a credential (`token`, `api_key`, `sig`,
/// `X-Amz-Signature`, `client_secret`, `password`, …). Case, `-`, `_` and `.` do not matter.
fn credential_like(name: &str) -> bool {
    let name: String = name
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    const NAMES: [&str; 8] = [
        "sig",
        "pwd",
        "pass",
        "auth",
        "code",
        "session",
        "sessionid",
        "jwt",
    ];
    const PARTS: [&str; 6] = [
        "token",
        "secret",
        "signature",
        "password",
        "passwd",
        "credential",
    ];
    NAMES.contains(&name.as_str())
        || PARTS.iter().any(|part| name.contains(part))
        || name.ends_with("key")
        || name == "authorization"
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn user_info_and_credential_parameters_are_masked() {
        let table = [
            ("j-42", "j-42"),
            ("http://h:1/status", "http://h:1/status"),
            (
                "http://user:hunter2@h:1/v1/jobs/a/status",
                "http://***@h:1/v1/jobs/a/status",
            ),
            ("https://tok@h/status", "https://***@h/status"),
            ("http://u:p@h", "http://***@h"),
            (
                "http://h/status?job=7&token=abc&x=1",
                "http://h/status?job=7&token=***&x=1",
            ),
            (
                "https://b.s3/o?X-Amz-Credential=AK&X-Amz-Signature=f00&X-Amz-Expires=60",
                "https://b.s3/o?X-Amz-Credential=***&X-Amz-Signature=***&X-Amz-Expires=60",
            ),
            (
                "http://h/s?api_key=k1&apiKey=k2&key=k3&sig=s&access_token=t&client_secret=c",
                "http://h/s?api_key=***&apiKey=***&key=***&sig=***&access_token=***&client_secret=***",
            ),
            ("http://h/s?token=", "http://h/s?token="),
            ("http://h/s#access_token=t", "http://h/s#access_token=***"),
            (
                "job http://a:b@h/x (event stream), see http://h/y?password=p",
                "job http://***@h/x (event stream), see http://h/y?password=***",
            ),
            // Not a URL that parses, still masked.
            (
                "http://user:hunter2@exa mple/status",
                "http://***@exa mple/status",
            ),
            // An `@` in the path is not user-info.
            ("http://h/a@b", "http://h/a@b"),
        ];
        for (raw, want) in table {
            assert_eq!(redact(raw), want, "{raw}");
        }
        assert!(matches!(redact("http://h/status?job=1"), Cow::Borrowed(_)));
    }

    #[test]
    fn a_signed_url_is_shown_without_its_query() {
        let table = [
            (
                "https://cdn.example/v/j-1.mp4?Expires=1&nonce=2&Signature=abc",
                "https://cdn.example/v/j-1.mp4?***",
            ),
            ("https://u:p@h/x#frag", "https://***@h/x?***"),
            ("https://h/x.mp4", "https://h/x.mp4"),
            ("not a url", "***"),
        ];
        for (raw, want) in table {
            assert_eq!(without_query(raw), want, "{raw}");
        }
    }

    #[test]
    fn a_masked_url_is_still_a_url() {
        let url = Url::parse("http://user:pw@h:8/v1/jobs/a/status?token=t&job=a").unwrap();
        let masked = super::url(&url).unwrap();
        assert_eq!(
            masked.as_str(),
            "http://***@h:8/v1/jobs/a/status?token=***&job=a"
        );
        assert!(has_userinfo(&url));
        assert!(super::url(&Url::parse("http://h/status").unwrap()).is_none());
    }
}

//! URL templates: `/v2/video_translate/{id}`, relative to the base URL, and back.
//!
//! A template is a path (and optionally a query) relative to the client's base URL, with
//! `{id}` where the job id goes. It never names a host: every URL it makes is on the base
//! URL's origin, where the credentials are meant to go. The id is percent-encoded whole (a
//! `/` in it stays inside its segment). Read backwards, a status URL the caller hands over is
//! matched against the template to find the job's id — and with it its events and cancel
//! URLs — the way a v1 status URL always led to its events URL.

use url::Url;

use crate::error::Error;

/// Where a job's id goes.
const ID: &str = "{id}";
/// The longest template.
const MAX_TEMPLATE: usize = 512;

/// A checked URL template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    /// The template without its leading `/`.
    raw: String,
}

impl Template {
    /// Checks `raw`: relative (no scheme, no `//host`), at most one `{id}` — exactly one when
    /// `needs_id` — and no other braces.
    pub(crate) fn new(setting: &'static str, raw: &str, needs_id: bool) -> Result<Self, Error> {
        let bad = |problem: &str| {
            Error::config(
                setting,
                format!("{:?} {problem}", crate::model::bounded(raw, 80)),
            )
        };
        if raw.len() > MAX_TEMPLATE {
            return Err(bad("is too long"));
        }
        if raw.contains("://") || raw.starts_with("//") || raw.contains('\\') || raw.contains('#') {
            return Err(bad(
                "must be a path relative to the base URL (\"/v1/jobs/{id}/status\"), never another host",
            ));
        }
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("must not contain spaces or control characters"));
        }
        let ids = raw.matches(ID).count();
        let braces = raw.matches(['{', '}']).count();
        if braces != 2 * ids || ids > 1 || (needs_id && ids == 0) {
            return Err(bad(if needs_id {
                "must contain `{id}` once, and no other braces"
            } else {
                "may contain `{id}` at most once, and no other braces"
            }));
        }
        Ok(Template {
            raw: raw.trim_start_matches('/').to_owned(),
        })
    }

    /// The template as written (without its leading `/`): the route, for what is remembered
    /// about it.
    pub(crate) fn as_str(&self) -> &str {
        &self.raw
    }

    /// The URL for job `id` under `base` (a directory: it ends with `/`).
    pub(crate) fn resolve(&self, base: &Url, id: &str) -> Result<Url, Error> {
        if id.is_empty() || id.chars().all(|c| c == '.') {
            // `.` and `..` are path steps, not names, however they are encoded.
            return Err(Error::config(
                "job",
                format!("{id:?} cannot be a job id: it is empty or only dots"),
            ));
        }
        let filled = self.raw.replace(ID, &encode(id));
        base.join(&filled).map_err(|e| {
            Error::config(
                "base_url",
                format!(
                    "{} cannot be a base for {}: {e}",
                    crate::redact::redact(base.as_str()),
                    self.raw
                ),
            )
        })
    }

    /// The URL of a template without `{id}` (a creation URL) under `base`.
    pub(crate) fn url(&self, base: &Url) -> Result<Url, Error> {
        base.join(&self.raw).map_err(|e| {
            Error::config(
                "base_url",
                format!(
                    "{} cannot be a base for {}: {e}",
                    crate::redact::redact(base.as_str()),
                    self.raw
                ),
            )
        })
    }

    /// The job id in `url` when it has this template's shape, with the base it hangs from:
    /// the template's path is a suffix of the URL's path, `{id}` a non-empty segment of it (or
    /// the value of its query parameter).
    pub(crate) fn extract(&self, url: &Url) -> Option<(String, Url)> {
        let (path, query) = match self.raw.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (self.raw.as_str(), None),
        };
        let wanted: Vec<&str> = path.split('/').collect();
        let have: Vec<&str> = url.path_segments()?.collect();
        let offset = have.len().checked_sub(wanted.len())?;
        let mut id = None;
        for (want, got) in wanted.iter().zip(&have[offset..]) {
            if *want == ID {
                if got.is_empty() {
                    return None;
                }
                id = Some(decode(got)?);
            } else if want != got {
                return None;
            }
        }
        if id.is_none() {
            // `{id}` is in the query: `name={id}`.
            let name = query?
                .split('&')
                .find_map(|pair| pair.strip_suffix(&format!("={ID}")))?;
            id = url
                .query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
                .filter(|v| !v.is_empty());
        }
        let mut base = url.clone();
        base.set_query(None);
        base.set_fragment(None);
        let prefix = have[..offset].join("/");
        base.set_path(&format!("{prefix}/"));
        Some((id?, base))
    }
}

/// Every byte but the unreserved ones percent-encoded (RFC 3986).
fn encode(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for byte in id.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'~' | b'.') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A percent-encoded segment, decoded (`None` when it is not UTF-8).
fn decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn template(raw: &str) -> Template {
        Template::new("t", raw, true).unwrap()
    }

    #[test]
    fn ids_are_encoded_into_their_segment() {
        let base = Url::parse("http://h:1/api/").unwrap();
        let t = template("/v1/jobs/{id}/status");
        let table = [
            ("j-1", "http://h:1/api/v1/jobs/j-1/status"),
            ("a b/c", "http://h:1/api/v1/jobs/a%20b%2Fc/status"),
            ("v1.2", "http://h:1/api/v1/jobs/v1.2/status"),
            ("é?#", "http://h:1/api/v1/jobs/%C3%A9%3F%23/status"),
        ];
        for (id, want) in table {
            let url = t.resolve(&base, id).unwrap();
            assert_eq!(url.as_str(), want, "{id}");
            let (back, prefix) = t.extract(&url).unwrap();
            assert_eq!((back.as_str(), prefix.as_str()), (id, "http://h:1/api/"));
        }
        for id in ["", ".", ".."] {
            assert!(t.resolve(&base, id).is_err(), "{id:?}");
        }
        let query = template("status?job={id}");
        let url = query.resolve(&base, "a&b").unwrap();
        assert_eq!(url.as_str(), "http://h:1/api/status?job=a%26b");
        assert_eq!(query.extract(&url).unwrap().0, "a&b");
    }

    #[test]
    fn only_urls_of_the_shape_give_an_id() {
        let t = template("/v1/jobs/{id}/status");
        for url in [
            "http://h/status",
            "http://h/v1/jobs//status",
            "http://h/v2/jobs/j/status",
            "http://h/v1/jobs/j/events",
        ] {
            assert!(t.extract(&Url::parse(url).unwrap()).is_none(), "{url}");
        }
        let (id, base) = t
            .extract(&Url::parse("http://h/x/v1/jobs/j-9/status?y=1").unwrap())
            .unwrap();
        assert_eq!((id.as_str(), base.as_str()), ("j-9", "http://h/x/"));
        assert!(
            template("status?job={id}")
                .extract(&Url::parse("http://h/status").unwrap())
                .is_none()
        );
    }

    #[test]
    fn templates_stay_on_the_base() {
        for raw in [
            "http://evil/{id}",
            "//evil/{id}",
            "/a/{id}/{id}",
            "/a/{ids}",
            "/a/b",
            "/a/{id} x",
            "/a/{id}#f",
            "\\\\evil\\{id}",
        ] {
            assert!(Template::new("t", raw, true).is_err(), "{raw}");
        }
        assert!(Template::new("t", "/v1/jobs", false).is_ok());
    }
}

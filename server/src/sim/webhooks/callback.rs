//! The checks on a job's `callback_url`, made once, at creation.

use url::{Host, Url};

use crate::error::ApiError;
use crate::settings::WebhookSettings;

/// Parses a `callback_url` and checks it: at most `webhooks.max_callback_url_len` bytes as
/// sent and as stored (parsing percent-encodes, so a short URL can grow), http(s), and a host
/// in `webhooks.allow_hosts`.
pub fn check_callback(raw: &str, settings: &WebhookSettings) -> Result<Url, ApiError> {
    let max = settings.max_callback_url_len;
    let too_long = || {
        ApiError::unprocessable(
            "callback_url_too_long",
            format!("callback_url must be at most {max} bytes (webhooks.max_callback_url_len)"),
        )
    };
    if raw.len() > max {
        return Err(too_long());
    }
    let url = Url::parse(raw).map_err(|e| {
        ApiError::unprocessable("invalid_job", format!("callback_url is not a URL: {e}"))
    })?;
    if url.as_str().len() > max {
        return Err(too_long());
    }
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ApiError::unprocessable(
            "invalid_job",
            "callback_url must be http or https",
        ));
    }
    let host = match url.host() {
        Some(Host::Domain(d)) => d.to_ascii_lowercase(),
        Some(Host::Ipv4(ip)) => ip.to_string(),
        Some(Host::Ipv6(ip)) => ip.to_string(),
        None => String::new(),
    };
    let allow_hosts = &settings.allow_hosts;
    if allow_hosts.iter().any(|h| h.eq_ignore_ascii_case(&host)) {
        Ok(url)
    } else {
        Err(ApiError::unprocessable(
            "callback_not_allowed",
            format!(
                "callback host `{host}` is not in webhooks.allow_hosts ({})",
                allow_hosts.join(", ")
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_hosts_are_checked() {
        let settings = WebhookSettings {
            allow_hosts: vec!["127.0.0.1".to_string(), "localhost".into(), "::1".into()],
            ..crate::Settings::default().webhooks
        };
        let check = |raw: &str| check_callback(raw, &settings);
        assert!(check("http://127.0.0.1:9/hook").is_ok());
        assert!(check("http://LOCALHOST/hook").is_ok());
        assert!(check("http://[::1]:80/x").is_ok());
        let e = check("http://10.0.0.1/hook").unwrap_err();
        assert_eq!(e.code(), "callback_not_allowed");
        assert_eq!(check("ftp://127.0.0.1/").unwrap_err().code(), "invalid_job");
        assert_eq!(check("not a url").unwrap_err().code(), "invalid_job");
    }

    #[test]
    fn callback_urls_are_bounded_as_sent_and_as_stored() {
        let settings = WebhookSettings {
            max_callback_url_len: 32,
            ..crate::Settings::default().webhooks
        };
        let check = |raw: &str| check_callback(raw, &settings).map(|u| u.as_str().len());
        assert_eq!(check("http://127.0.0.1/0123456789abcde").unwrap(), 32);
        for raw in [
            "http://127.0.0.1/0123456789abcdef",
            // 23 bytes sent, 35 stored.
            "http://127.0.0.1/\u{e9}\u{e9}\u{e9}",
        ] {
            assert_eq!(
                check(raw).unwrap_err().code(),
                "callback_url_too_long",
                "{raw}"
            );
        }
    }
}

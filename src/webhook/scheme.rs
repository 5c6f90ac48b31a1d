//! The signature schemes: where each puts its id, timestamp and signatures, and what it signs.
//!
//! Parsing is strict and bounded (every header at most the receiver's header limit, at most
//! [`MAX_SIGNATURES`] signatures, a timestamp of decimal digits); comparison is the HMAC's own
//! constant-time `verify_slice`, once per secret and signature, whatever matches first.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::Mac;
use http::{HeaderMap, HeaderName};

use super::WebhookError;
use super::secret::Secret;

/// The most signatures one delivery may carry (several during a secret's rotation).
pub const MAX_SIGNATURES: usize = 16;

/// The longest delivery id accepted, in bytes.
pub const MAX_DELIVERY_ID: usize = 256;

/// The length of an HMAC-SHA256 tag.
const TAG: usize = 32;

/// How a service signs its webhooks. One receiver verifies one scheme.
///
/// | scheme | headers | signed content | signature |
/// | --- | --- | --- | --- |
/// | [`standard_webhooks`](Self::standard_webhooks) (OpenAI, Replicate, the simulator) | `webhook-id`, `webhook-timestamp`, `webhook-signature` | `{id}.{timestamp}.{body}` | `v1,` + base64, several separated by spaces |
/// | [`heygen`](Self::heygen), [`hex_body`](Self::hex_body) | one header, `signature` by default | the raw body | hex |
/// | [`synthesia`](Self::synthesia), [`timestamped`](Self::timestamped) | `Synthesia-Timestamp`, `Synthesia-Signature` | `{timestamp}.{body}` | hex, several separated by commas |
/// | [`elevenlabs`](Self::elevenlabs), [`timestamped_combined`](Self::timestamped_combined) | `ElevenLabs-Signature: t=…,v0=…` | `{timestamp}.{body}` | hex after `v0=`, several allowed |
///
/// Timestamps are Unix seconds. Every signature is HMAC-SHA256.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Scheme {
    /// [Standard Webhooks](https://www.standardwebhooks.com/).
    StandardWebhooks,
    /// A hex HMAC of the raw body in one header (HeyGen). No id, no timestamp: the delivery id
    /// is the signature, and only the replay cache refuses an old delivery sent again.
    HexBody {
        /// The header that carries the signature.
        header: HeaderName,
    },
    /// A hex HMAC of `{timestamp}.{body}`, the timestamp and signatures in two headers
    /// (Synthesia). The delivery id is the signature.
    Timestamped {
        /// The header with the Unix timestamp.
        timestamp: HeaderName,
        /// The header with the signatures (several separated by commas).
        signature: HeaderName,
    },
    /// A hex HMAC of `{timestamp}.{body}` in one header, `t=<timestamp>,<version>=<hex>`
    /// (ElevenLabs: `v0`; several signatures of the version allowed, others ignored). The
    /// delivery id is the signature.
    TimestampedCombined {
        /// The header.
        header: HeaderName,
        /// The key of the signatures (`v0`).
        version: String,
    },
}

impl Scheme {
    /// Standard Webhooks.
    pub fn standard_webhooks() -> Scheme {
        Scheme::StandardWebhooks
    }

    /// HeyGen's scheme in the `signature` header (the simulator's default; HeyGen does not
    /// publish the header's name: use [`hex_body`](Self::hex_body) for another).
    pub fn heygen() -> Scheme {
        Scheme::hex_body(HeaderName::from_static("signature"))
    }

    /// A hex HMAC of the raw body in `header`.
    pub fn hex_body(header: HeaderName) -> Scheme {
        Scheme::HexBody { header }
    }

    /// Synthesia's scheme: `Synthesia-Timestamp` and `Synthesia-Signature`.
    pub fn synthesia() -> Scheme {
        Scheme::timestamped(
            HeaderName::from_static("synthesia-timestamp"),
            HeaderName::from_static("synthesia-signature"),
        )
    }

    /// A hex HMAC of `{timestamp}.{body}`, the timestamp in one header, the signatures in
    /// another.
    pub fn timestamped(timestamp: HeaderName, signature: HeaderName) -> Scheme {
        Scheme::Timestamped {
            timestamp,
            signature,
        }
    }

    /// ElevenLabs' scheme: `ElevenLabs-Signature: t=<timestamp>,v0=<hex>`.
    pub fn elevenlabs() -> Scheme {
        Scheme::timestamped_combined(HeaderName::from_static("elevenlabs-signature"), "v0")
    }

    /// A hex HMAC of `{timestamp}.{body}` in `header`, as `t=<timestamp>,<version>=<hex>`.
    pub fn timestamped_combined(header: HeaderName, version: impl Into<String>) -> Scheme {
        Scheme::TimestampedCombined {
            header,
            version: version.into(),
        }
    }

    /// Whether deliveries carry a signed timestamp (checked against the tolerance).
    pub fn has_timestamp(&self) -> bool {
        !matches!(self, Scheme::HexBody { .. })
    }

    /// Reads the delivery's headers, judges its timestamp with `fresh` (before any HMAC is
    /// computed), and checks its signatures against `secrets`: the delivery's id and
    /// timestamp when it verifies.
    pub(super) fn verify_timed(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        secrets: &[Secret],
        max_header: usize,
        fresh: impl Fn(u64) -> Result<(), WebhookError>,
    ) -> Result<Signed, WebhookError> {
        match self {
            Scheme::StandardWebhooks => {
                let id = text(headers, "webhook-id", max_header)?;
                if id.is_empty() || id.len() > MAX_DELIVERY_ID {
                    return Err(WebhookError::malformed(
                        "webhook-id",
                        "must have 1 to 256 bytes",
                    ));
                }
                let stamp = text(headers, "webhook-timestamp", max_header)?;
                let timestamp = seconds(stamp, "webhook-timestamp")?;
                fresh(timestamp)?;
                let signatures = text(headers, "webhook-signature", max_header)?;
                let mut tags = Tags::default();
                for entry in signatures.split(' ').filter(|e| !e.is_empty()) {
                    if let Some(encoded) = entry.strip_prefix("v1,") {
                        tags.push_base64(encoded, "webhook-signature")?;
                    }
                }
                tags.check(
                    secrets,
                    &[id.as_bytes(), b".", stamp.as_bytes(), b".", body],
                    "webhook-signature",
                )?;
                Ok(Signed {
                    id: id.to_owned(),
                    timestamp: Some(timestamp),
                })
            }
            Scheme::HexBody { header } => {
                let name = static_name(header);
                let value = text(headers, header.as_str(), max_header)?;
                let mut tags = Tags::default();
                tags.push_hex(value.trim(), name)?;
                let id = tags.check(secrets, &[body], name)?;
                Ok(Signed {
                    id,
                    timestamp: None,
                })
            }
            Scheme::Timestamped {
                timestamp,
                signature,
            } => {
                let stamp = text(headers, timestamp.as_str(), max_header)?.trim();
                let at = seconds(stamp, static_name(timestamp))?;
                fresh(at)?;
                let name = static_name(signature);
                let mut tags = Tags::default();
                for entry in text(headers, signature.as_str(), max_header)?.split(',') {
                    tags.push_hex(entry.trim(), name)?;
                }
                let id = tags.check(secrets, &[stamp.as_bytes(), b".", body], name)?;
                Ok(Signed {
                    id,
                    timestamp: Some(at),
                })
            }
            Scheme::TimestampedCombined { header, version } => {
                let name = static_name(header);
                let mut stamp = None;
                let mut tags = Tags::default();
                for entry in text(headers, header.as_str(), max_header)?.split(',') {
                    let (key, value) = entry
                        .trim()
                        .split_once('=')
                        .ok_or(WebhookError::malformed(name, "expected `key=value` pairs"))?;
                    if key == "t" {
                        if stamp.replace(value).is_some() {
                            return Err(WebhookError::malformed(name, "more than one `t=`"));
                        }
                    } else if key == version {
                        tags.push_hex(value, name)?;
                    }
                }
                let stamp = stamp.ok_or(WebhookError::malformed(name, "no `t=` timestamp"))?;
                let at = seconds(stamp, name)?;
                fresh(at)?;
                let id = tags.check(secrets, &[stamp.as_bytes(), b".", body], name)?;
                Ok(Signed {
                    id,
                    timestamp: Some(at),
                })
            }
        }
    }
}

/// What a verified delivery's headers say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Signed {
    /// The delivery's id: `webhook-id`, or the matching signature (lowercase hex) for schemes
    /// without one.
    pub(super) id: String,
    /// The signed Unix timestamp, for schemes with one.
    pub(super) timestamp: Option<u64>,
}

/// The name of a scheme's header, for errors: the built-in ones by name; a configured one is
/// "signature header" or "timestamp header" (not worth an allocation per refusal).
fn static_name(header: &HeaderName) -> &'static str {
    shown(header.as_str())
}

fn shown(name: &str) -> &'static str {
    match name {
        "webhook-id" => "webhook-id",
        "webhook-timestamp" => "webhook-timestamp",
        "webhook-signature" => "webhook-signature",
        "signature" => "signature",
        "synthesia-timestamp" => "synthesia-timestamp",
        "synthesia-signature" => "synthesia-signature",
        "elevenlabs-signature" => "elevenlabs-signature",
        other if other.contains("timestamp") => "timestamp header",
        _ => "signature header",
    }
}

/// A header's value as text, at most `max` bytes.
fn text<'h>(headers: &'h HeaderMap, name: &str, max: usize) -> Result<&'h str, WebhookError> {
    let shown = shown(name);
    let mut values = headers.get_all(name).iter();
    let value = values.next().ok_or(WebhookError::MissingHeader(shown))?;
    if values.next().is_some() {
        return Err(WebhookError::malformed(shown, "sent more than once"));
    }
    if value.len() > max {
        return Err(WebhookError::malformed(
            shown,
            "longer than the receiver's header limit",
        ));
    }
    value
        .to_str()
        .map_err(|_| WebhookError::malformed(shown, "not visible ASCII"))
}

/// Unix seconds: 1 to 12 decimal digits.
fn seconds(text: &str, header: &'static str) -> Result<u64, WebhookError> {
    if text.is_empty() || text.len() > 12 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(WebhookError::malformed(
            header,
            "the timestamp must be Unix seconds",
        ));
    }
    text.parse()
        .map_err(|_| WebhookError::malformed(header, "the timestamp must be Unix seconds"))
}

/// The candidate tags of one delivery, decoded, at most [`MAX_SIGNATURES`].
#[derive(Default)]
struct Tags {
    tags: Vec<[u8; TAG]>,
}

impl Tags {
    fn push(&mut self, tag: [u8; TAG], header: &'static str) -> Result<(), WebhookError> {
        if self.tags.len() == MAX_SIGNATURES {
            return Err(WebhookError::malformed(header, "more than 16 signatures"));
        }
        self.tags.push(tag);
        Ok(())
    }

    /// A base64 tag; one of another length is ignored (a scheme version this receiver does
    /// not speak).
    fn push_base64(&mut self, encoded: &str, header: &'static str) -> Result<(), WebhookError> {
        let mut tag = [0u8; TAG];
        // Decoding into a fixed buffer: anything longer than a tag fails without allocating.
        if encoded.len() > 64 {
            return Ok(());
        }
        let mut buffer = [0u8; 48];
        match BASE64.decode_slice(encoded, &mut buffer) {
            Ok(TAG) => {
                tag.copy_from_slice(&buffer[..TAG]);
                self.push(tag, header)
            }
            Ok(_) => Ok(()),
            Err(_) => Err(WebhookError::malformed(
                header,
                "a `v1,` signature is not base64",
            )),
        }
    }

    /// A hex tag of exactly 64 digits (either case).
    fn push_hex(&mut self, text: &str, header: &'static str) -> Result<(), WebhookError> {
        let bytes = text.as_bytes();
        if bytes.len() != TAG * 2 {
            return Err(WebhookError::malformed(
                header,
                "a signature must be 64 hex digits",
            ));
        }
        let mut tag = [0u8; TAG];
        for (out, pair) in tag.iter_mut().zip(bytes.chunks_exact(2)) {
            match (nibble(pair[0]), nibble(pair[1])) {
                (Some(high), Some(low)) => *out = high << 4 | low,
                _ => {
                    return Err(WebhookError::malformed(
                        header,
                        "a signature must be 64 hex digits",
                    ));
                }
            }
        }
        self.push(tag, header)
    }

    /// Checks every tag against the HMAC of `parts` under every secret, in constant time
    /// per comparison; the matching tag in lowercase hex.
    fn check(
        &self,
        secrets: &[Secret],
        parts: &[&[u8]],
        header: &'static str,
    ) -> Result<String, WebhookError> {
        if self.tags.is_empty() {
            return Err(WebhookError::malformed(
                header,
                "no signature of a version this receiver verifies",
            ));
        }
        for secret in secrets {
            let mut mac = secret.mac.clone();
            for part in parts {
                mac.update(part);
            }
            for tag in &self.tags {
                if mac.clone().verify_slice(tag).is_ok() {
                    return Ok(hex(tag));
                }
            }
        }
        Err(WebhookError::BadSignature)
    }
}

fn nibble(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// Lowercase hex.
pub(super) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

//! Signing secrets: the HMAC keys a receiver verifies with, never shown.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::WebhookError;

/// HMAC-SHA256, keyed.
pub(super) type Keyed = Hmac<Sha256>;

/// The longest key accepted, in bytes: far above any service's (Standard Webhooks suggests 24
/// to 64), low enough that a key pasted by mistake (a file) is caught.
const MAX_KEY: usize = 1024;

/// A webhook signing secret. Its `Debug` shows no byte of it, and no error of this module
/// carries it.
///
/// ```
/// use translation_status::webhook::Secret;
///
/// // Standard Webhooks: `whsec_` and base64 (the prefix is optional, as in the spec's
/// // libraries).
/// let standard = Secret::whsec("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
/// // HeyGen, Synthesia, ElevenLabs: the secret's text is the key.
/// let heygen = Secret::raw("heygen-simulator-development-secret")?;
/// assert_eq!(format!("{heygen:?}"), "Secret(***)");
/// # Ok::<(), translation_status::webhook::WebhookError>(())
/// ```
#[derive(Clone)]
pub struct Secret {
    /// HMAC-SHA256 with this key, its key schedule done once.
    pub(super) mac: Keyed,
}

impl Secret {
    /// A Standard Webhooks secret: `whsec_` (optional) and the key in standard base64.
    pub fn whsec(text: &str) -> Result<Secret, WebhookError> {
        let encoded = text.trim();
        let encoded = encoded.strip_prefix("whsec_").unwrap_or(encoded);
        if encoded.len() > MAX_KEY * 2 {
            return Err(WebhookError::BadSecret("longer than any signing key"));
        }
        let key = BASE64
            .decode(encoded)
            .map_err(|_| WebhookError::BadSecret("not base64 after `whsec_`"))?;
        Secret::raw(key)
    }

    /// A secret whose bytes are the key as they are (HeyGen, Synthesia and ElevenLabs use the
    /// secret's text; a Standard Webhooks sender with a secret that is not `whsec_` does the
    /// same).
    pub fn raw(key: impl AsRef<[u8]>) -> Result<Secret, WebhookError> {
        let key = key.as_ref();
        if key.is_empty() {
            return Err(WebhookError::BadSecret("empty"));
        }
        if key.len() > MAX_KEY {
            return Err(WebhookError::BadSecret("longer than any signing key"));
        }
        let mac = Keyed::new_from_slice(key)
            .map_err(|_| WebhookError::BadSecret("not usable as an HMAC key"))?;
        Ok(Secret { mac })
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_checked_and_never_shown() {
        assert!(Secret::whsec("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_ok());
        assert!(Secret::whsec("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_ok());
        for bad in ["whsec_!!!", "whsec_", ""] {
            assert!(
                matches!(Secret::whsec(bad), Err(WebhookError::BadSecret(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            Secret::raw(""),
            Err(WebhookError::BadSecret("empty"))
        ));
        assert!(Secret::raw(vec![7u8; MAX_KEY + 1]).is_err());
        let secret = Secret::raw("hunter2-very-secret").unwrap_or_else(|e| panic!("{e}"));
        let shown = format!("{secret:?} {secret:#?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}

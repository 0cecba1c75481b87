//! A browser's push subscription, checked: the push service's endpoint URL and the keys the
//! browser decrypts with (`p256dh`, `auth`), as `PushSubscription.toJSON()` gives them.

use super::vapid::decode_base64url;
use crate::outbound::url::{EndpointUrl, UrlError};

/// Longest endpoint URL accepted, in bytes (push services' endpoints are a few hundred).
pub const MAX_ENDPOINT_BYTES: usize = 1024;
/// Bytes of a subscription's `auth` secret (RFC 8291).
pub const AUTH_BYTES: usize = 16;

/// Why a subscription was refused; each names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscriptionError {
    #[error("subscription.endpoint is {bytes} bytes; at most {MAX_ENDPOINT_BYTES} are accepted")]
    EndpointTooLong { bytes: usize },
    #[error("subscription.endpoint: {0}")]
    Endpoint(UrlError),
    #[error(
        "subscription.endpoint must be an https:// URL (plain http only to loopback, on a hub started with --webhook-allow-private)"
    )]
    NotHttps,
    #[error(
        "subscription.keys.p256dh must be the browser's P-256 public key (65 bytes, base64url)"
    )]
    PublicKey,
    #[error("subscription.keys.auth must be {AUTH_BYTES} bytes in base64url")]
    Auth,
}

/// What a push message is encrypted for.
#[derive(Debug, Clone)]
pub struct SubscriptionKeys {
    pub p256dh: p256::PublicKey,
    pub auth: [u8; AUTH_BYTES],
}

impl SubscriptionKeys {
    /// Reads the keys as the browser gives them (base64url).
    pub fn parse(p256dh: &str, auth: &str) -> Result<SubscriptionKeys, SubscriptionError> {
        let point = decode_base64url(p256dh)
            .filter(|bytes| bytes.len() == 65)
            .ok_or(SubscriptionError::PublicKey)?;
        let p256dh =
            p256::PublicKey::from_sec1_bytes(&point).map_err(|_| SubscriptionError::PublicKey)?;
        let auth = decode_base64url(auth)
            .and_then(|bytes| <[u8; AUTH_BYTES]>::try_from(bytes).ok())
            .ok_or(SubscriptionError::Auth)?;
        Ok(SubscriptionKeys { p256dh, auth })
    }
}

/// Checks a push service's endpoint: `https`, or plain `http` to a loopback address when
/// `allow_private` (a push service under test). Addresses are judged as for webhooks.
pub fn endpoint(text: &str, allow_private: bool) -> Result<EndpointUrl, SubscriptionError> {
    if text.len() > MAX_ENDPOINT_BYTES {
        return Err(SubscriptionError::EndpointTooLong { bytes: text.len() });
    }
    let url = EndpointUrl::parse(text, allow_private).map_err(SubscriptionError::Endpoint)?;
    if !(url.is_https() || allow_private && url.is_loopback()) {
        return Err(SubscriptionError::NotHttps);
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use p256::elliptic_curve::sec1::ToEncodedPoint;

    fn browser_keys() -> (String, String) {
        let secret = p256::SecretKey::from_slice(&[7u8; 32]).unwrap();
        let point = secret.public_key().to_encoded_point(false);
        (
            URL_SAFE_NO_PAD.encode(point.as_bytes()),
            URL_SAFE_NO_PAD.encode([9u8; AUTH_BYTES]),
        )
    }

    #[test]
    fn keys_as_a_browser_gives_them_are_read_and_others_refused() {
        let (p256dh, auth) = browser_keys();
        let keys = SubscriptionKeys::parse(&p256dh, &auth).unwrap();
        assert_eq!(keys.auth, [9u8; AUTH_BYTES]);
        // Padded base64url is read too.
        assert!(SubscriptionKeys::parse(&format!("{p256dh}="), &format!("{auth}==")).is_ok());
        let mut off_curve = decode_base64url(&p256dh).unwrap();
        off_curve[64] ^= 1;
        let off_curve = URL_SAFE_NO_PAD.encode(off_curve);
        assert_eq!(
            SubscriptionKeys::parse(&off_curve, &auth).unwrap_err(),
            SubscriptionError::PublicKey
        );
        assert_eq!(
            SubscriptionKeys::parse("AAAA", &auth).unwrap_err(),
            SubscriptionError::PublicKey
        );
        assert_eq!(
            SubscriptionKeys::parse(&p256dh, "AAAA").unwrap_err(),
            SubscriptionError::Auth
        );
    }

    #[test]
    fn an_endpoint_is_https_unless_a_test_push_service_on_loopback_is_allowed() {
        assert!(endpoint("https://fcm.googleapis.com/fcm/send/abc", false).is_ok());
        assert_eq!(
            endpoint("http://push.example/abc", false).unwrap_err(),
            SubscriptionError::NotHttps
        );
        assert_eq!(
            endpoint("http://push.example/abc", true).unwrap_err(),
            SubscriptionError::NotHttps
        );
        assert!(matches!(
            endpoint("http://127.0.0.1:9/abc", false).unwrap_err(),
            SubscriptionError::Endpoint(UrlError::Private { .. })
        ));
        assert!(endpoint("http://127.0.0.1:9/abc", true).is_ok());
        assert!(endpoint("http://[::1]:9/abc", true).is_ok());
        let long = format!("https://push.example/{}", "a".repeat(MAX_ENDPOINT_BYTES));
        assert!(matches!(
            endpoint(&long, false).unwrap_err(),
            SubscriptionError::EndpointTooLong { .. }
        ));
    }
}

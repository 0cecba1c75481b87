//! One push message: a delivery's JSON body encrypted for one subscription (RFC 8291,
//! `aes128gcm`) with the headers a push service takes (RFC 8030: `TTL`, `Urgency`; RFC
//! 8292: the VAPID `Authorization`).

use super::subscription::SubscriptionKeys;
use super::vapid::VapidKey;

/// Most bytes of an encrypted push message: what every push service accepts (RFC 8291).
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// What encryption adds to a body in one record: salt (16), record size (4), key id length
/// (1), the hub's ephemeral public key (65), padding delimiter (1) and tag (16).
pub const ENCRYPTION_OVERHEAD: usize = 16 + 4 + 1 + 65 + 1 + 16;
/// Most bytes of a body before encryption.
pub const MAX_PLAINTEXT_BYTES: usize = MAX_MESSAGE_BYTES - ENCRYPTION_OVERHEAD;
/// How long a push service keeps a message for a browser that is offline (`TTL`, seconds).
pub const MESSAGE_TTL_SECS: u64 = 24 * 3600;

/// A push request's body and headers, ready to POST to the subscription's endpoint.
#[derive(Debug)]
pub struct PushRequest {
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

/// Encrypts `plaintext` for `keys` and signs for the push service at `audience`.
pub fn build(
    plaintext: &[u8],
    keys: &SubscriptionKeys,
    vapid: &VapidKey,
    audience: &str,
    subject: &str,
    now_secs: u64,
) -> Result<PushRequest, String> {
    if plaintext.len() > MAX_PLAINTEXT_BYTES {
        return Err(format!(
            "the message is {} bytes; a push message carries at most {MAX_PLAINTEXT_BYTES}",
            plaintext.len()
        ));
    }
    let auth = web_push_native::Auth::clone_from_slice(&keys.auth);
    let body = web_push_native::encrypt(plaintext.to_vec(), &keys.p256dh, &auth)
        .map_err(|err| format!("cannot encrypt the push message: {err}"))?;
    let headers = vec![
        ("content-type", "application/octet-stream".to_owned()),
        ("content-encoding", "aes128gcm".to_owned()),
        ("ttl", MESSAGE_TTL_SECS.to_string()),
        ("urgency", "high".to_owned()),
        (
            "authorization",
            vapid.authorization(audience, subject, now_secs)?,
        ),
    ];
    Ok(PushRequest { headers, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_subscriptions_private_key_decrypts_the_message() {
        let browser = p256::SecretKey::from_slice(&[3u8; 32]).unwrap();
        let keys = SubscriptionKeys {
            p256dh: browser.public_key(),
            auth: [5u8; 16],
        };
        let vapid = VapidKey::generate().unwrap();
        let body = br#"{"type":"quorum.decision.made"}"#;
        let request = build(body, &keys, &vapid, "https://push.example", "mailto:a@b", 1).unwrap();
        assert_eq!(request.body.len(), body.len() + ENCRYPTION_OVERHEAD);
        let auth = web_push_native::Auth::clone_from_slice(&keys.auth);
        let plain = web_push_native::decrypt(request.body.clone(), &browser, &auth).unwrap();
        assert_eq!(plain, body);
        let stranger = p256::SecretKey::from_slice(&[4u8; 32]).unwrap();
        assert!(web_push_native::decrypt(request.body.clone(), &stranger, &auth).is_err());
        let names: Vec<_> = request.headers.iter().map(|(name, _)| *name).collect();
        assert_eq!(
            names,
            [
                "content-type",
                "content-encoding",
                "ttl",
                "urgency",
                "authorization"
            ]
        );

        let largest = vec![b'x'; MAX_PLAINTEXT_BYTES];
        let request = build(
            &largest,
            &keys,
            &vapid,
            "https://push.example",
            "mailto:a@b",
            1,
        );
        assert_eq!(request.unwrap().body.len(), MAX_MESSAGE_BYTES);
        let too_large = vec![b'x'; MAX_PLAINTEXT_BYTES + 1];
        assert!(
            build(
                &too_large,
                &keys,
                &vapid,
                "https://push.example",
                "mailto:a@b",
                1
            )
            .is_err()
        );
    }
}

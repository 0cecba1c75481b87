//! Standard Webhooks signatures: an endpoint's secret (`whsec_<base64>`), the `v1,` HMAC-SHA256
//! signature of `{msg_id}.{timestamp}.{body}`, and the `webhook-signature` header value that
//! carries one signature per secret while an endpoint rotates its secret.
//!
//! A receiver verifies a message by recomputing the signature over the raw body with the
//! `webhook-id` and `webhook-timestamp` headers it received, comparing in constant time with
//! each space-separated signature in `webhook-signature` (`verify`), and refusing a
//! timestamp too far from its own clock (the spec suggests five minutes) against replays.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// What a secret's text starts with, as the spec and its libraries print it.
pub const SECRET_PREFIX: &str = "whsec_";
/// The signature scheme this module writes and reads: HMAC-SHA256, base64.
pub const SIGNATURE_VERSION: &str = "v1";
/// Fewest key bytes a secret may hold: shorter keys are guessable.
pub const MIN_SECRET_BYTES: usize = 16;
/// Most key bytes a secret may hold (the spec's upper bound).
pub const MAX_SECRET_BYTES: usize = 64;
/// Key bytes in a secret the hub generates.
pub const GENERATED_SECRET_BYTES: usize = 32;

/// Standard base64 that reads keys with or without their `=` padding.
const KEY_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

type HmacSha256 = Hmac<Sha256>;

/// Why a secret's text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("webhook secret is empty; give whsec_ followed by the base64 of 16 to 64 random bytes")]
    Empty,
    #[error("webhook secret is not valid base64 after whsec_: {0}")]
    NotBase64(String),
    #[error(
        "webhook secret holds {bytes} bytes; it needs at least {MIN_SECRET_BYTES} random bytes"
    )]
    TooShort { bytes: usize },
    #[error("webhook secret holds {bytes} bytes; at most {MAX_SECRET_BYTES} are accepted")]
    TooLong { bytes: usize },
    #[error("the operating system gave no random bytes for a webhook secret: {0}")]
    NoRandomness(String),
}

/// An endpoint's signing key: raw bytes, printed only as `whsec_<base64>` by [`Secret::to_whsec`]
/// and never by `Debug`.
#[derive(Clone)]
pub struct Secret {
    key: Vec<u8>,
}

impl Secret {
    /// A new secret of [`GENERATED_SECRET_BYTES`] random bytes from the operating system.
    pub fn generate() -> Result<Secret, SecretError> {
        let mut key = vec![0u8; GENERATED_SECRET_BYTES];
        getrandom::fill(&mut key).map_err(|err| SecretError::NoRandomness(err.to_string()))?;
        Ok(Secret { key })
    }

    /// Reads `whsec_<base64>`, or the bare base64 as the spec's libraries also accept.
    pub fn parse(text: &str) -> Result<Secret, SecretError> {
        let encoded = text.trim();
        let encoded = encoded.strip_prefix(SECRET_PREFIX).unwrap_or(encoded);
        if encoded.is_empty() {
            return Err(SecretError::Empty);
        }
        let key = KEY_BASE64
            .decode(encoded)
            .map_err(|err| SecretError::NotBase64(err.to_string()))?;
        match key.len() {
            0 => Err(SecretError::Empty),
            bytes if bytes < MIN_SECRET_BYTES => Err(SecretError::TooShort { bytes }),
            bytes if bytes > MAX_SECRET_BYTES => Err(SecretError::TooLong { bytes }),
            _ => Ok(Secret { key }),
        }
    }

    /// The secret as `whsec_<base64>`, the form an endpoint's owner is given once.
    pub fn to_whsec(&self) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(&self.key))
    }

    /// `v1,<base64 HMAC-SHA256(key, "{msg_id}.{timestamp_secs}.{body}")>`.
    pub fn sign(&self, msg_id: &str, timestamp_secs: i64, body: &[u8]) -> String {
        let digest = self
            .mac(msg_id, timestamp_secs, body)
            .finalize()
            .into_bytes();
        format!("{SIGNATURE_VERSION},{}", STANDARD.encode(digest))
    }

    /// The keyed MAC over the signed content, ready to finalize or verify.
    fn mac(&self, msg_id: &str, timestamp_secs: i64, body: &[u8]) -> HmacSha256 {
        let mut mac =
            HmacSha256::new_from_slice(&self.key).expect("HMAC takes a key of any length");
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp_secs.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(redacted)")
    }
}

/// The `webhook-signature` header value: one signature per secret, space-separated, so a
/// receiver holding either the old or the new secret verifies the message during a rotation.
pub fn signature_header(
    secrets: &[&Secret],
    msg_id: &str,
    timestamp_secs: i64,
    body: &[u8],
) -> String {
    secrets
        .iter()
        .map(|secret| secret.sign(msg_id, timestamp_secs, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// True when any `v1,` signature in `header` is the signature of this message under `secret`,
/// compared in constant time. Signatures of other versions are skipped. The timestamp is
/// taken as given: checking it against the receiver's clock is the receiver's part.
#[cfg(test)]
pub fn verify(
    secret: &Secret,
    msg_id: &str,
    timestamp_secs: i64,
    body: &[u8],
    header: &str,
) -> bool {
    let expected = secret.mac(msg_id, timestamp_secs, body);
    header.split_whitespace().any(|signature| {
        let Some((version, encoded)) = signature.split_once(',') else {
            return false;
        };
        if version != SIGNATURE_VERSION {
            return false;
        }
        match STANDARD.decode(encoded) {
            Ok(bytes) => expected.clone().verify_slice(&bytes).is_ok(),
            Err(_) => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector the Standard Webhooks spec and its libraries publish.
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_MSG_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TIMESTAMP: i64 = 1614265330;
    const SPEC_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn spec_secret() -> Secret {
        Secret::parse(SPEC_SECRET).unwrap()
    }

    #[test]
    fn signs_the_spec_test_vector() {
        let signature = spec_secret().sign(SPEC_MSG_ID, SPEC_TIMESTAMP, SPEC_BODY);
        assert_eq!(signature, SPEC_SIGNATURE);
    }

    #[test]
    fn verifies_the_spec_test_vector() {
        assert!(verify(
            &spec_secret(),
            SPEC_MSG_ID,
            SPEC_TIMESTAMP,
            SPEC_BODY,
            SPEC_SIGNATURE
        ));
    }

    #[test]
    fn accepts_the_secret_without_its_prefix_and_without_padding() {
        let bare = Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(bare.key, spec_secret().key);
        assert_eq!(bare.to_whsec(), SPEC_SECRET);
        // 16 bytes encode to 24 characters, two of them padding.
        let padded = Secret::parse("whsec_AAECAwQFBgcICQoLDA0ODw==").unwrap();
        let unpadded = Secret::parse("whsec_AAECAwQFBgcICQoLDA0ODw").unwrap();
        assert_eq!(padded.key, unpadded.key);
        assert_eq!(padded.key, (0u8..16).collect::<Vec<_>>());
    }

    #[test]
    fn a_generated_secret_round_trips_through_its_text() {
        let secret = Secret::generate().unwrap();
        assert_eq!(secret.key.len(), GENERATED_SECRET_BYTES);
        let text = secret.to_whsec();
        assert!(text.starts_with("whsec_"), "{text}");
        assert_eq!(Secret::parse(&text).unwrap().key, secret.key);
        assert_ne!(
            Secret::generate().unwrap().key,
            secret.key,
            "two secrets are two draws"
        );
    }

    #[test]
    fn rotation_header_verifies_with_either_secret() {
        let old = spec_secret();
        let new = Secret::generate().unwrap();
        let header = signature_header(&[&old, &new], SPEC_MSG_ID, SPEC_TIMESTAMP, SPEC_BODY);
        let parts: Vec<&str> = header.split(' ').collect();
        assert_eq!(parts.len(), 2, "{header}");
        assert_eq!(parts[0], SPEC_SIGNATURE);
        assert_eq!(parts[1], new.sign(SPEC_MSG_ID, SPEC_TIMESTAMP, SPEC_BODY));
        for secret in [&old, &new] {
            assert!(verify(
                secret,
                SPEC_MSG_ID,
                SPEC_TIMESTAMP,
                SPEC_BODY,
                &header
            ));
        }
        let stranger = Secret::generate().unwrap();
        assert!(!verify(
            &stranger,
            SPEC_MSG_ID,
            SPEC_TIMESTAMP,
            SPEC_BODY,
            &header
        ));
    }

    #[test]
    fn a_tampered_message_fails_verification() {
        let secret = spec_secret();
        assert!(!verify(
            &secret,
            SPEC_MSG_ID,
            SPEC_TIMESTAMP,
            br#"{"test": 2432232315}"#,
            SPEC_SIGNATURE
        ));
        assert!(!verify(
            &secret,
            SPEC_MSG_ID,
            SPEC_TIMESTAMP + 1,
            SPEC_BODY,
            SPEC_SIGNATURE
        ));
        assert!(!verify(
            &secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJel",
            SPEC_TIMESTAMP,
            SPEC_BODY,
            SPEC_SIGNATURE
        ));
    }

    #[test]
    fn verification_reads_only_well_formed_v1_signatures() {
        let secret = spec_secret();
        let digest = SPEC_SIGNATURE.strip_prefix("v1,").unwrap();
        for header in [
            "",
            " ",
            digest,
            &format!("v2,{digest}"),
            "v1,not-base64!",
            "v1,",
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE",
            // The first six bytes of the right signature.
            "v1,g0hM9SsE",
        ] {
            assert!(
                !verify(&secret, SPEC_MSG_ID, SPEC_TIMESTAMP, SPEC_BODY, header),
                "{header:?} verified"
            );
        }
        let among_others = format!("v1a,xyz v1,AAAA {SPEC_SIGNATURE}");
        assert!(verify(
            &secret,
            SPEC_MSG_ID,
            SPEC_TIMESTAMP,
            SPEC_BODY,
            &among_others
        ));
    }

    #[test]
    fn parse_refuses_empty_short_long_and_non_base64_secrets() {
        assert_eq!(Secret::parse("").map(|_| ()), Err(SecretError::Empty));
        assert_eq!(Secret::parse("whsec_").map(|_| ()), Err(SecretError::Empty));
        assert_eq!(Secret::parse("  ").map(|_| ()), Err(SecretError::Empty));
        // 15 bytes.
        assert_eq!(
            Secret::parse("whsec_AAECAwQFBgcICQoLDA0O").map(|_| ()),
            Err(SecretError::TooShort { bytes: 15 })
        );
        let long = STANDARD.encode([7u8; 65]);
        assert_eq!(
            Secret::parse(&format!("whsec_{long}")).map(|_| ()),
            Err(SecretError::TooLong { bytes: 65 })
        );
        assert!(Secret::parse(&format!("whsec_{}", STANDARD.encode([7u8; 64]))).is_ok());
        let not_base64 = Secret::parse("whsec_not*base64*at*all!").unwrap_err();
        assert!(
            matches!(not_base64, SecretError::NotBase64(_)),
            "{not_base64:?}"
        );
        assert!(
            not_base64
                .to_string()
                .starts_with("webhook secret is not valid base64")
        );
        assert_eq!(
            SecretError::TooShort { bytes: 15 }.to_string(),
            "webhook secret holds 15 bytes; it needs at least 16 random bytes"
        );
    }

    #[test]
    fn debug_never_prints_the_key() {
        let secret = spec_secret();
        assert_eq!(format!("{secret:?}"), "Secret(redacted)");
        assert_eq!(format!("{:?}", Some(&secret)), "Some(Secret(redacted))");
        assert!(!format!("{secret:#?}").contains("MfKQ"));
    }
}

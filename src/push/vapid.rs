//! The hub's VAPID key (RFC 8292): a P-256 key pair that identifies this keyspace's hubs to
//! push services. Browsers subscribe with its public key; each push request carries a JWT
//! signed (ES256) with its private key.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::EncodePrivateKey;
use serde::Serialize;

/// How long a VAPID JWT is valid for (RFC 8292 allows at most 24 hours).
pub const VAPID_VALIDITY_SECS: u64 = 12 * 3600;

/// A VAPID key pair.
#[derive(Clone)]
pub struct VapidKey {
    signing: EncodingKey,
    /// The private key as stored: the 32-byte scalar, base64url without padding.
    private_text: String,
    /// The public key as browsers take it (`applicationServerKey`): the uncompressed point,
    /// base64url without padding.
    public_text: String,
}

impl std::fmt::Debug for VapidKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VapidKey")
            .field("public", &self.public_text)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    aud: &'a str,
    exp: u64,
    sub: &'a str,
}

impl VapidKey {
    /// A new key pair from the OS's randomness.
    pub fn generate() -> Result<VapidKey, String> {
        loop {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes)
                .map_err(|err| format!("no randomness from the OS: {err}"))?;
            // A scalar of zero or past the group order is not a key (about 2^-32 likely).
            if let Ok(secret) = p256::SecretKey::from_slice(&bytes) {
                return VapidKey::from_secret(&secret);
            }
        }
    }

    /// A key pair from its stored form: the private scalar, base64url (padding allowed).
    pub fn parse(text: &str) -> Result<VapidKey, String> {
        let bytes = decode_base64url(text.trim())
            .ok_or("a VAPID private key is 32 bytes in base64url; this does not decode")?;
        if bytes.len() != 32 {
            return Err(format!(
                "a VAPID private key is 32 bytes in base64url; this decodes to {} bytes",
                bytes.len()
            ));
        }
        let secret = p256::SecretKey::from_slice(&bytes)
            .map_err(|_| "this is not a P-256 private key".to_owned())?;
        VapidKey::from_secret(&secret)
    }

    fn from_secret(secret: &p256::SecretKey) -> Result<VapidKey, String> {
        let der = secret
            .to_pkcs8_der()
            .map_err(|err| format!("cannot encode the VAPID key: {err}"))?;
        let public = secret.public_key().to_encoded_point(false);
        Ok(VapidKey {
            signing: EncodingKey::from_ec_der(der.as_bytes()),
            private_text: URL_SAFE_NO_PAD.encode(secret.to_bytes()),
            public_text: URL_SAFE_NO_PAD.encode(public.as_bytes()),
        })
    }

    /// The private key in its stored form.
    pub fn private_text(&self) -> &str {
        &self.private_text
    }

    /// The public key as `pushManager.subscribe` takes it.
    pub fn public_key(&self) -> &str {
        &self.public_text
    }

    /// The `Authorization` header of a push request to a push service at `audience` (the
    /// origin of the subscription's endpoint), made at `now_secs`: `vapid t=<JWT>, k=<key>`.
    pub fn authorization(
        &self,
        audience: &str,
        subject: &str,
        now_secs: u64,
    ) -> Result<String, String> {
        let claims = Claims {
            aud: audience,
            exp: now_secs + VAPID_VALIDITY_SECS,
            sub: subject,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &self.signing)
            .map_err(|err| format!("cannot sign the VAPID token: {err}"))?;
        Ok(format!("vapid t={token}, k={}", self.public_text))
    }
}

/// Decodes base64url, with or without padding (browsers send it without).
pub fn decode_base64url(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    #[test]
    fn a_key_survives_its_stored_form_and_signs_tokens_its_public_key_verifies() {
        let key = VapidKey::generate().unwrap();
        let again = VapidKey::parse(key.private_text()).unwrap();
        assert_eq!(again.public_key(), key.public_key());
        let public = decode_base64url(key.public_key()).unwrap();
        assert_eq!(public.len(), 65, "an uncompressed P-256 point");
        assert_eq!(public[0], 4);

        let header = again
            .authorization("https://push.example", "mailto:ops@example.com", 1_000)
            .unwrap();
        let rest = header.strip_prefix("vapid t=").unwrap();
        let (token, k) = rest.split_once(", k=").unwrap();
        assert_eq!(k, key.public_key());
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_audience(&["https://push.example"]);
        validation.validate_exp = false;
        let claims = jsonwebtoken::decode::<serde_json::Value>(
            token,
            &DecodingKey::from_ec_der(&public),
            &validation,
        )
        .unwrap()
        .claims;
        assert_eq!(claims["sub"], "mailto:ops@example.com");
        assert_eq!(claims["exp"], 1_000 + VAPID_VALIDITY_SECS);

        let other = VapidKey::generate().unwrap();
        let other_public = decode_base64url(other.public_key()).unwrap();
        assert!(
            jsonwebtoken::decode::<serde_json::Value>(
                token,
                &DecodingKey::from_ec_der(&other_public),
                &validation,
            )
            .is_err(),
            "another key verifies the token"
        );
    }

    #[test]
    fn a_stored_key_that_is_not_one_is_refused_with_a_reason() {
        assert!(
            VapidKey::parse("not base64!")
                .unwrap_err()
                .contains("base64url")
        );
        assert!(VapidKey::parse("AAAA").unwrap_err().contains("3 bytes"));
        let zero = URL_SAFE_NO_PAD.encode([0u8; 32]);
        assert!(VapidKey::parse(&zero).unwrap_err().contains("P-256"));
    }
}

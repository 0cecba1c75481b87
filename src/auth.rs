//! Authentication: HS256 JWTs whose `sub` names the one instance the holder may act as,
//! or whose `role` is `observer` (read and watch only) or `admin` (manage the hub's
//! webhooks, read and watch).

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::instance::InstanceId;

/// Shortest secret the hub accepts, in bytes.
pub const MIN_SECRET_LEN: usize = 16;
/// Clock difference tolerated when checking `exp`.
pub const CLOCK_LEEWAY: Duration = Duration::from_secs(5);
/// The `role` claim of a read-only token.
pub const OBSERVER_ROLE: &str = "observer";
/// The `role` claim of a token that manages the hub (its webhooks), and may read and watch.
pub const ADMIN_ROLE: &str = "admin";

/// The claims of a hub token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The instance the holder may register and vote as (absent for observers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// `observer` for a read-only token, `admin` for one that manages the hub.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The roles the instance may register with (none when absent).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Issued at, seconds since the Unix epoch.
    #[serde(default)]
    pub iat: u64,
    /// Not valid before, seconds since the Unix epoch (optional; checked when present).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
}

/// What a caller may do, decided once per session or HTTP call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// The hub runs without a secret: anyone may act as any instance.
    Open,
    /// The hub runs without a secret and the caller is on loopback: as [`Grant::Open`], and
    /// it may manage the hub too.
    Local,
    /// May register, heartbeat, unregister and vote as this instance only, and register it
    /// with these roles only.
    Instance(String, Vec<String>),
    /// May read state and receive events; may not register or vote.
    Observer,
    /// May manage the hub (its webhooks), read state and receive events; may not register
    /// or vote.
    Admin,
}

impl Grant {
    /// Who the grant is for, in words.
    pub fn describe(&self) -> String {
        match self {
            Grant::Open => "anyone (no secret)".into(),
            Grant::Local => "anyone on this machine (no secret)".into(),
            Grant::Admin => "an admin".into(),
            Grant::Instance(sub, _) => format!("instance {sub}"),
            Grant::Observer => "an observer".into(),
        }
    }

    /// Checks that the holder may act as `instance`.
    pub fn may_act_as(&self, instance: &InstanceId) -> Result<(), Error> {
        match self {
            Grant::Open | Grant::Local => Ok(()),
            Grant::Admin => Err(Error::Unauthorized(
                "this is an admin token: it manages the hub, reads state and receives events; it \
                 does not register or vote"
                    .into(),
            )),
            Grant::Instance(sub, _) if sub == instance.as_str() => Ok(()),
            Grant::Instance(sub, _) => Err(Error::Unauthorized(format!(
                "this token is for instance {sub}; it may not act as {instance}"
            ))),
            Grant::Observer => Err(Error::Unauthorized(
                "this is an observer token: it may read state and receive events, not register or vote".into(),
            )),
        }
    }
}

impl Grant {
    /// Checks that the holder may register with `roles`: with a secret, an instance token
    /// grants the roles it lists and no others.
    pub fn may_claim_roles(&self, roles: &[String]) -> Result<(), Error> {
        let Grant::Instance(sub, granted) = self else {
            return Ok(());
        };
        match roles.iter().find(|role| !granted.contains(role)) {
            None => Ok(()),
            Some(role) => Err(Error::Refused {
                reason: "role_not_granted",
                message: format!(
                    "the token for instance {sub} does not grant role {role}; mint one with \
                     quorum-hub token --sub {sub} --role {role}"
                ),
            }),
        }
    }

    /// Checks that the holder may manage the hub (its webhooks): an admin token, or with no
    /// secret a caller on loopback.
    pub fn may_administer(&self) -> Result<(), Error> {
        match self {
            Grant::Admin | Grant::Local => Ok(()),
            Grant::Open => Err(Error::Unauthorized(
                "without --auth-secret only clients on this machine (loopback) manage the hub"
                    .into(),
            )),
            Grant::Instance(..) | Grant::Observer => Err(Error::Unauthorized(format!(
                "managing the hub takes an admin token (quorum-hub token --admin); this token \
                 is for {}",
                self.describe()
            ))),
        }
    }
}

/// A token that checked out: what it allows, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub grant: Grant,
    /// The token's `exp`, in ms since the Unix epoch.
    pub expires_at_ms: u64,
}

/// When a session whose token expires at `expires_at_ms` ends: at `exp`, plus the leeway
/// the hub allows for clock differences (the same rule as at the upgrade).
pub fn session_deadline(expires_at_ms: u64) -> tokio::time::Instant {
    let end = expires_at_ms.saturating_add(CLOCK_LEEWAY.as_millis() as u64);
    let left = end.saturating_sub(crate::clock::now_ms());
    tokio::time::Instant::now() + Duration::from_millis(left)
}

/// The `exp` a token claims, in ms since the Unix epoch, read without checking its
/// signature: for a client deciding when to fetch a newer token, never for trusting one.
pub fn claimed_expiry_ms(token: &str) -> Option<u64> {
    jsonwebtoken::dangerous::insecure_decode_claims::<Claims>(token)
        .ok()
        .map(|claims| claims.exp.saturating_mul(1000))
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("a token is required: send `Authorization: Bearer <token>` (or ?token= on /ws)")]
    Missing,
    #[error("the token is expired")]
    Expired,
    #[error("the token is not valid yet (nbf is in the future)")]
    NotYetValid,
    #[error("the token is invalid: {0}")]
    Invalid(String),
}

/// Checks tokens against the hub's secret, and mints them.
pub struct Authority {
    decoding: DecodingKey,
    encoding: EncodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authority { .. }")
    }
}

impl Authority {
    pub fn new(secret: &str) -> Result<Self, String> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(format!(
                "the auth secret must be at least {MIN_SECRET_LEN} bytes"
            ));
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = CLOCK_LEEWAY.as_secs();
        validation.set_required_spec_claims(&["exp"]);
        validation.validate_exp = true;
        // A token that is not valid yet is refused like an expired one.
        validation.validate_nbf = true;
        Ok(Self {
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            validation,
        })
    }

    /// Checks a token (or its absence) and says what it allows.
    pub fn verify(&self, token: Option<&str>) -> Result<Grant, AuthError> {
        self.check(token).map(|verified| verified.grant)
    }

    /// Checks a token (or its absence) and says what it allows, and until when.
    pub fn check(&self, token: Option<&str>) -> Result<Verified, AuthError> {
        let token = token.filter(|t| !t.is_empty()).ok_or(AuthError::Missing)?;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                jsonwebtoken::errors::ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                _ => AuthError::Invalid(e.to_string()),
            })?;
        let claims = data.claims;
        let expires_at_ms = claims.exp.saturating_mul(1000);
        let grant = match (claims.role.as_deref(), claims.sub) {
            (Some(OBSERVER_ROLE), _) => Grant::Observer,
            (Some(ADMIN_ROLE), _) => Grant::Admin,
            (Some(other), _) => {
                return Err(AuthError::Invalid(format!("unknown role {other:?}")));
            }
            (None, Some(sub)) => {
                InstanceId::parse("sub", &sub).map_err(|e| AuthError::Invalid(e.to_string()))?;
                Grant::Instance(sub, claims.roles)
            }
            (None, None) => {
                return Err(AuthError::Invalid(
                    "the token names no instance (sub) and no role".into(),
                ));
            }
        };
        Ok(Verified {
            grant,
            expires_at_ms,
        })
    }

    /// Mints an admin token, valid for `ttl`.
    pub fn mint_admin(&self, ttl: Duration) -> Result<String, String> {
        let now = crate::clock::now_ms() / 1000;
        let claims = Claims {
            sub: None,
            role: Some(ADMIN_ROLE.to_owned()),
            roles: Vec::new(),
            exp: now + ttl.as_secs(),
            iat: now,
            nbf: None,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| e.to_string())
    }

    /// Mints a token for `sub` (or an observer token), valid for `ttl`.
    pub fn mint(&self, sub: Option<&str>, observer: bool, ttl: Duration) -> Result<String, String> {
        self.mint_with_roles(sub, observer, &[], ttl)
    }

    /// Mints a token for `sub` that lets it register with `roles` (or an observer token),
    /// valid for `ttl`.
    pub fn mint_with_roles(
        &self,
        sub: Option<&str>,
        observer: bool,
        roles: &[String],
        ttl: Duration,
    ) -> Result<String, String> {
        let now = crate::clock::now_ms() / 1000;
        if observer && !roles.is_empty() {
            return Err("an observer token carries no roles (--role needs --sub)".into());
        }
        for role in roles {
            crate::instance::check_name("role", role, crate::instance::MAX_ROLE_LEN)
                .map_err(|e| e.to_string())?;
        }
        let claims = Claims {
            sub: sub.map(str::to_owned),
            role: observer.then(|| OBSERVER_ROLE.to_owned()),
            roles: roles.to_vec(),
            exp: now + ttl.as_secs(),
            iat: now,
            nbf: None,
        };
        if !observer {
            let sub =
                sub.ok_or("a token needs --sub (the instance it may act as) or --observer")?;
            InstanceId::parse("sub", sub).map_err(|e| e.to_string())?;
        }
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "a-test-secret-of-enough-length";

    #[test]
    fn minted_tokens_verify_and_others_do_not() {
        let authority = Authority::new(SECRET).unwrap();
        let token = authority
            .mint(Some("worker-1"), false, Duration::from_secs(60))
            .unwrap();
        assert_eq!(
            authority.verify(Some(&token)).unwrap(),
            Grant::Instance("worker-1".into(), Vec::new())
        );
        let observer = authority.mint(None, true, Duration::from_secs(60)).unwrap();
        assert_eq!(authority.verify(Some(&observer)).unwrap(), Grant::Observer);
        let admin = authority.mint_admin(Duration::from_secs(60)).unwrap();
        assert_eq!(authority.verify(Some(&admin)).unwrap(), Grant::Admin);
        assert!(Grant::Admin.may_administer().is_ok());
        assert!(Grant::Local.may_administer().is_ok());
        for other in [
            Grant::Open,
            Grant::Observer,
            Grant::Instance("w".into(), Vec::new()),
        ] {
            assert!(other.may_administer().is_err(), "{other:?} may administer");
        }
        assert!(
            Grant::Admin
                .may_act_as(&InstanceId::parse("id", "w").unwrap())
                .is_err()
        );

        let other = Authority::new("another-secret-of-enough-length").unwrap();
        assert!(matches!(
            other.verify(Some(&token)),
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(authority.verify(None), Err(AuthError::Missing)));
        assert!(matches!(
            authority.verify(Some("not.a.jwt")),
            Err(AuthError::Invalid(_))
        ));
        assert!(Authority::new("short").is_err());
    }

    #[test]
    fn a_token_that_is_not_valid_yet_is_refused() {
        let authority = Authority::new(SECRET).unwrap();
        let now = crate::clock::now_ms() / 1000;
        let token = |nbf: u64| {
            let claims = Claims {
                sub: Some("worker-1".into()),
                role: None,
                roles: Vec::new(),
                exp: now + 3600,
                iat: now,
                nbf: Some(nbf),
            };
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &authority.encoding)
                .unwrap()
        };
        assert!(matches!(
            authority.verify(Some(&token(now + 600))),
            Err(AuthError::NotYetValid)
        ));
        assert_eq!(
            authority.verify(Some(&token(now - 1))).unwrap(),
            Grant::Instance("worker-1".into(), Vec::new())
        );
    }
}

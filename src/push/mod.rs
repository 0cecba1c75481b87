//! Web Push: decision events to browsers whose dashboard tab is closed, through the
//! browser's own push service. A subscription is one more kind of endpoint of the webhook
//! deliveries (`webhooks::dispatch`): the same durable, shared, retried delivery, with the
//! body encrypted for the browser instead of signed for a receiver.
//!
//! - [`vapid`]: the hub's VAPID key, shared by every hub on the keyspace.
//! - [`subscription`]: a browser's subscription, checked.
//! - [`message`]: one encrypted, signed push request.

pub mod message;
pub mod subscription;
pub mod vapid;

use std::path::Path;

use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use crate::clock::now_ms;
use crate::config::Config;
use crate::error::Error;
use crate::outbound::url::EndpointUrl;
use crate::protocol::LoggedEvent;
use crate::protocol::webhook::{WebhookMessage, event_message};
use crate::store::{Store, StoredEndpoint};
use message::{MAX_PLAINTEXT_BYTES, PushRequest};
use subscription::SubscriptionKeys;
use vapid::VapidKey;

/// The VAPID subject of a hub without `--auth-secret` that names none: a development hub.
pub const DEFAULT_SUBJECT: &str = "mailto:quorum-hub@localhost";

/// Web Push on this hub: the VAPID subject and key.
pub struct Push {
    subject: String,
    /// Read or made at start from `--vapid-key-file`, else taken from Redis when first
    /// needed (the first hub to need it there makes it).
    key: OnceCell<VapidKey>,
}

impl std::fmt::Debug for Push {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Push")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

impl Push {
    /// Web Push as configured: `None` (off) on a hub with `--auth-secret` and no
    /// `--vapid-subject`, which push services need to reach its operator.
    pub fn from_config(config: &Config) -> Result<Option<Push>, String> {
        let subject = match (&config.push.vapid_subject, &config.auth_secret) {
            (Some(subject), _) => check_subject(subject)?,
            (None, Some(_)) => return Ok(None),
            (None, None) => DEFAULT_SUBJECT.to_owned(),
        };
        let key = OnceCell::new();
        if let Some(path) = &config.push.vapid_key_file {
            let _ = key.set(key_from_file(path)?);
        }
        Ok(Some(Push { subject, key }))
    }

    /// The VAPID key: from the file given at start, or the keyspace's.
    pub async fn key(&self, store: &Store) -> Result<&VapidKey, Error> {
        self.key
            .get_or_try_init(async || {
                let candidate = VapidKey::generate().map_err(Error::Internal)?;
                let kept = store.vapid_key(candidate.private_text()).await?;
                VapidKey::parse(&kept).map_err(|err| {
                    Error::Internal(format!("the keyspace's VAPID key is unusable: {err}"))
                })
            })
            .await
    }

    /// The push request for one delivery to a subscription.
    pub async fn request(
        &self,
        store: &Store,
        subscription: &StoredEndpoint,
        message: &WebhookMessage,
    ) -> Result<(EndpointUrl, PushRequest), String> {
        let Some((p256dh, auth)) = &subscription.push_keys else {
            return Err("the subscription has no keys".into());
        };
        let keys = SubscriptionKeys::parse(p256dh, auth).map_err(|err| err.to_string())?;
        let url = EndpointUrl::parse(&subscription.url, true).map_err(|err| err.to_string())?;
        let key = self.key(store).await.map_err(|err| err.to_string())?;
        let request = message::build(
            &message.body,
            &keys,
            key,
            &url.origin(),
            &self.subject,
            now_ms() / 1000,
        )?;
        Ok((url, request))
    }
}

/// A subscription's id: `push_` and 16 hex digits of its endpoint's hash, so the same
/// browser subscribing again replaces its subscription.
pub fn subscription_id(endpoint: &str) -> String {
    let digest = Sha256::digest(endpoint.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("push_{hex}")
}

/// What a push message carries for a logged event: the webhook body, with an expired
/// decision's tally left out if it would not fit in a push message.
pub fn event_payload(logged: &LoggedEvent) -> WebhookMessage {
    let message = event_message(logged);
    match logged {
        LoggedEvent::Expired(expired) if message.body.len() > MAX_PLAINTEXT_BYTES => {
            let mut trimmed = expired.clone();
            trimmed.tally.clear();
            event_message(&LoggedEvent::Expired(trimmed))
        }
        _ => message,
    }
}

fn check_subject(subject: &str) -> Result<String, String> {
    let subject = subject.trim();
    let valid = (subject.starts_with("mailto:") && subject.len() > "mailto:".len())
        || url::Url::parse(subject).is_ok_and(|url| url.scheme() == "https" && url.has_host());
    if valid {
        Ok(subject.to_owned())
    } else {
        Err(format!(
            "--vapid-subject must be a mailto: or https: URL that reaches the operator (got {subject:?})"
        ))
    }
}

/// Reads the key in `path`, or makes one and writes it there (readable by the owner only).
fn key_from_file(path: &Path) -> Result<VapidKey, String> {
    let shown = path.display();
    match std::fs::read_to_string(path) {
        Ok(text) => {
            VapidKey::parse(&text).map_err(|err| format!("--vapid-key-file {shown}: {err}"))
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let key = VapidKey::generate()?;
            write_private(path, key.private_text())
                .map_err(|err| format!("cannot write --vapid-key-file {shown}: {err}"))?;
            tracing::info!(path = %shown, "made a new VAPID key");
            Ok(key)
        }
        Err(err) => Err(format!("cannot read --vapid-key-file {shown}: {err}")),
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(format!("{text}\n").as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subject_is_a_mailto_or_https_url() {
        assert!(check_subject("mailto:ops@example.com").is_ok());
        assert!(check_subject("https://example.com/contact").is_ok());
        assert!(check_subject("http://example.com").is_err());
        assert!(check_subject("mailto:").is_err());
        assert!(check_subject("ops@example.com").is_err());
    }

    #[test]
    fn a_key_file_is_made_once_and_read_after() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vapid.key");
        let made = key_from_file(&path).unwrap();
        let read = key_from_file(&path).unwrap();
        assert_eq!(made.public_key(), read.public_key());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "nonsense").unwrap();
        assert!(
            key_from_file(&path)
                .unwrap_err()
                .contains("--vapid-key-file")
        );
    }

    #[test]
    fn the_same_endpoint_is_the_same_subscription() {
        let a = subscription_id("https://push.example/a");
        assert_eq!(a, subscription_id("https://push.example/a"));
        assert_ne!(a, subscription_id("https://push.example/b"));
        assert!(a.starts_with("push_") && a.len() == 21);
    }
}

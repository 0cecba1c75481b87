//! Where the client's token comes from, and the token it holds: when to ask for a newer
//! one to extend its session with `system.auth.refresh`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::auth;
use crate::clock::now_ms;

/// Share of a token's lifetime after which the client asks its source for a newer one.
const REFRESH_AT_LIFETIME: f64 = 0.8;
/// Pause before asking again when the source had no newer token or the hub refused it.
pub const REFRESH_RETRY: Duration = Duration::from_secs(1);

/// Where the client gets its token: at every (re)connection, and again before the token it
/// holds expires, to extend its session with `system.auth.refresh`.
#[derive(Clone)]
pub enum TokenSource {
    /// One token, used as it is (the session ends when it expires).
    Static(String),
    /// A file holding the token, read again whenever one is needed: rotate it in place.
    File(PathBuf),
    /// Any function that returns the current token, e.g. one asking an identity service.
    Custom(Arc<dyn Fn() -> Result<String, String> + Send + Sync>),
}

impl TokenSource {
    /// The current token, read off the async runtime (a file, or a function that may
    /// block on an identity service).
    pub async fn get(&self) -> Result<String, String> {
        let source = self.clone();
        tokio::task::spawn_blocking(move || source.fetch())
            .await
            .map_err(|e| format!("the token source failed: {e}"))?
    }

    /// The current token, read in the calling thread.
    pub fn fetch(&self) -> Result<String, String> {
        match self {
            TokenSource::Static(token) => Ok(token.clone()),
            TokenSource::File(path) => std::fs::read_to_string(path)
                .map(|text| text.trim().to_owned())
                .map_err(|e| format!("cannot read the token file {}: {e}", path.display())),
            TokenSource::Custom(fetch) => fetch(),
        }
    }

    pub(super) fn can_change(&self) -> bool {
        !matches!(self, TokenSource::Static(_))
    }
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::Static(_) => f.write_str("TokenSource::Static(..)"),
            TokenSource::File(path) => write!(f, "TokenSource::File({})", path.display()),
            TokenSource::Custom(_) => f.write_str("TokenSource::Custom(..)"),
        }
    }
}

/// The token the client holds, and when to look for a newer one.
#[derive(Debug, Clone)]
pub(super) struct HeldToken {
    pub(super) value: String,
    /// Its claimed `exp`, in ms (`None`: unreadable, so never refreshed).
    pub(super) expires_at_ms: Option<u64>,
    /// When to ask the source for a newer one.
    pub(super) refresh_at: Option<tokio::time::Instant>,
}

impl HeldToken {
    pub(super) fn new(value: String) -> Self {
        let expires_at_ms = auth::claimed_expiry_ms(&value);
        let refresh_at = expires_at_ms.map(|exp| {
            let left = exp.saturating_sub(now_ms()) as f64 * REFRESH_AT_LIFETIME;
            tokio::time::Instant::now() + Duration::from_millis(left as u64)
        });
        Self {
            value,
            expires_at_ms,
            refresh_at,
        }
    }

    pub(super) fn retry_later(&mut self) {
        self.refresh_at = Some(tokio::time::Instant::now() + REFRESH_RETRY);
    }
}

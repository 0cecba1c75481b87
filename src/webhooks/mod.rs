//! Webhooks: decision events POSTed, signed, to endpoints that hold no socket, at least
//! once, with retries across hubs.
//!
//! - [`sign`]: Standard Webhooks secrets and signatures.
//! - [`dispatch`]: this hub's share of the deliveries, claimed from Redis, POSTed through
//!   `crate::outbound`.
//!
//! Endpoints and their deliveries live in Redis (`store/webhooks.rs`), so every hub on a
//! keyspace shares them; the `system.webhooks.*` methods manage them.

pub mod dispatch;
pub mod sign;

use std::time::Duration;

use sha2::{Digest, Sha256};

/// How long after a rotation deliveries carry the old secret's signature too.
pub const ROTATION_OVERLAP: Duration = Duration::from_secs(24 * 3600);

/// A new endpoint id: `wh_` and 16 random hex digits.
pub fn new_endpoint_id() -> Result<String, String> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(|err| format!("no randomness from the OS: {err}"))?;
    Ok(format!("wh_{}", hex(&bytes)))
}

/// The id of an endpoint given at start (`--webhook`): the same for the same URL on every
/// hub, so that hubs sharing a keyspace add it once.
pub fn configured_endpoint_id(url: &str) -> String {
    let digest = Sha256::digest(url.as_bytes());
    format!("cfg_{}", hex(&digest[..8]))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

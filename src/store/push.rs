//! Web Push in Redis: the keyspace's VAPID key. Subscriptions are endpoints
//! ([`super::EndpointKind::Push`]) and live with the webhook endpoints.

use super::Store;
use crate::error::Error;

impl Store {
    /// The keyspace's VAPID private key: the one kept there, or `candidate` if there was
    /// none (then it is kept, and every hub signs with it).
    pub(crate) async fn vapid_key(&self, candidate: &str) -> Result<String, Error> {
        let kept: Option<String> = self
            .query(
                redis::cmd("SET")
                    .arg(self.layout.vapid_key())
                    .arg(candidate)
                    .arg("NX")
                    .arg("GET"),
            )
            .await?;
        Ok(kept.unwrap_or_else(|| candidate.to_owned()))
    }
}

//! With `--wait-replicas`: once a second, publishes the decision events that are in the
//! log but were not published yet because their replicas had not confirmed them (the
//! voting hub timed out waiting, or stopped before publishing). Every hub runs it; each
//! event is published once, in log order.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// How often a hub looks for decision events still waiting to be published.
pub const PUBLISH_PERIOD: Duration = Duration::from_secs(1);

/// Runs until `shutdown` is cancelled.
pub async fn run(store: Store, shutdown: CancellationToken) {
    let store = store.unguarded();
    while super::wait(PUBLISH_PERIOD, &shutdown).await {
        match store.publish_acknowledged().await {
            Ok(0) => {}
            Ok(published) => {
                tracing::info!(
                    published,
                    "published decision events once their replicas confirmed them"
                )
            }
            Err(err) => {
                tracing::debug!(%err, "decision events still wait for replicas to confirm them")
            }
        }
    }
}

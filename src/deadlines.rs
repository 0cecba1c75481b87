//! Closes decisions whose deadline passed without quorum: every
//! [`DEADLINE_CHECK_PERIOD`], each hub asks the deadlines index which decisions are due and
//! closes them as expired (`store::lifecycle`). Hubs that race close each decision once.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::now_ms;
use crate::hub::Hub;

/// How often a hub looks for decisions past their deadline: an expiry reaches sessions
/// within about this much of the deadline.
pub const DEADLINE_CHECK_PERIOD: Duration = Duration::from_millis(200);

/// Runs until the hub shuts down.
pub async fn run(hub: Arc<Hub>) {
    // Past the breaker, like the hub's other upkeep: its failures are not callers'.
    let store = hub.store.unguarded();
    let mut failing = false;
    loop {
        tokio::select! {
            _ = hub.shutdown.cancelled() => return,
            _ = tokio::time::sleep(DEADLINE_CHECK_PERIOD) => {}
        }
        let (closed, failure) = store.expire_due(now_ms()).await;
        if closed > 0 {
            tracing::info!(
                closed,
                "closed decisions whose deadline passed without quorum"
            );
        }
        match failure {
            Some(err) if !failing => {
                tracing::warn!(%err, "could not check every decision's deadline; retrying");
                failing = true;
            }
            Some(_) => {}
            None => failing = false,
        }
    }
}

//! Closes decisions whose deadline passed without quorum: every
//! [`DEADLINE_CHECK_PERIOD`], each hub asks the deadlines index which decisions are due and
//! closes them as expired (`store::lifecycle`). Hubs that race close each decision once.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// How often a hub looks for decisions past their deadline: an expiry reaches sessions
/// within about this much of the deadline.
pub const DEADLINE_CHECK_PERIOD: Duration = Duration::from_millis(200);

/// Runs until `shutdown` is cancelled.
pub async fn run(store: Store, shutdown: CancellationToken) {
    // Past the breaker, like the hub's other upkeep: its failures are not callers'.
    let store = store.unguarded();
    let mut failing = false;
    let mut more = false;
    loop {
        // A look that left due decisions behind is followed by another at once.
        let pause = if more {
            Duration::ZERO
        } else {
            DEADLINE_CHECK_PERIOD
        };
        if !super::wait(pause, &shutdown).await {
            return;
        }
        let expiries = store.expire_due().await;
        more = expiries.more && expiries.failure.is_none();
        if expiries.closed > 0 {
            tracing::info!(
                closed = expiries.closed,
                "closed decisions whose deadline passed without quorum"
            );
        }
        match expiries.failure {
            Some(err) if !failing => {
                tracing::warn!(%err, "could not check every decision's deadline; retrying");
                failing = true;
            }
            Some(_) => {}
            None => failing = false,
        }
    }
}

//! While the circuit breaker is open, probes Redis once a second and closes the breaker
//! as soon as every part of Redis answers (on a cluster: every partition, the event log
//! and the instance indexes), so that a failover of a few seconds costs callers a few
//! seconds, not the whole open period.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::protocol::BreakerState;
use crate::store::Store;

/// How often an open breaker's probe asks Redis.
pub const PROBE_PERIOD: Duration = Duration::from_secs(1);

/// Runs until `shutdown` is cancelled.
pub async fn run(store: Store, shutdown: CancellationToken) {
    let store = store.unguarded();
    while super::wait(PROBE_PERIOD, &shutdown).await {
        if store.breaker().state() == BreakerState::Closed {
            continue;
        }
        match store.probe().await {
            Ok(()) => store.breaker().close_after_probe(),
            Err(err) => tracing::debug!(%err, "Redis does not answer the breaker's probe yet"),
        }
    }
}

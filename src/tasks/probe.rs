//! While the circuit breaker is open, probes Redis once a second and closes the breaker
//! as soon as every part of Redis answers (on a cluster: every partition, the event log
//! and the instance indexes), so that a failover of a few seconds costs callers a few
//! seconds, not the whole open period.

use std::sync::Arc;
use std::time::Duration;

use crate::hub::Hub;
use crate::protocol::BreakerState;

/// How often an open breaker's probe asks Redis.
pub const PROBE_PERIOD: Duration = Duration::from_secs(1);

/// Runs until the hub shuts down.
pub async fn run(hub: Arc<Hub>) {
    let store = hub.store.unguarded();
    loop {
        tokio::select! {
            _ = hub.shutdown.cancelled() => return,
            _ = tokio::time::sleep(PROBE_PERIOD) => {}
        }
        if hub.store.breaker().state() == BreakerState::Closed {
            continue;
        }
        match store.probe().await {
            Ok(()) => hub.store.breaker().close_after_probe(),
            Err(err) => tracing::debug!(%err, "Redis does not answer the breaker's probe yet"),
        }
    }
}

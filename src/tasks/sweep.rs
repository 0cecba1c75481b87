//! On a cluster, logs the decisions their deciding hub left unlogged (decided, but their
//! event never written to the log).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::store::Store;

/// How often a hub on a cluster looks for decisions decided but not logged.
pub const SWEEP_PERIOD: Duration = Duration::from_secs(1);
/// How old an unlogged decision must be before the sweep logs it: the hub that decided it
/// is normally done well within this.
pub const SWEEP_GRACE: Duration = Duration::from_secs(1);

/// Runs until `shutdown` is cancelled (cluster only): every [`SWEEP_PERIOD`], logs the
/// decisions decided more than [`SWEEP_GRACE`] ago whose events are not in the log yet.
/// Every hub sweeps; logging is idempotent, so hubs that race log each decision once.
pub async fn sweep_unlogged(store: Store, shutdown: CancellationToken) {
    let store = store.unguarded();
    while super::wait(SWEEP_PERIOD, &shutdown).await {
        let before = now_ms().saturating_sub(SWEEP_GRACE.as_millis() as u64);
        let (logged, failure) = store.log_unlogged(before).await;
        if logged > 0 {
            tracing::info!(logged, "logged decisions their deciding hub left unlogged");
        }
        if let Some(err) = failure {
            tracing::warn!(%err, "could not sweep every partition for unlogged decisions; the next sweep tries again");
        }
    }
}

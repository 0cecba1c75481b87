//! Keeps the dashboards flag (every partition's, on a cluster) set while a session here
//! has subscribed to dashboard events, so that votes on every hub keep being published.

use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::listener::flag_dashboards;
use crate::store::Store;

/// How often a hub with dashboards sets them again.
const DASHBOARDS_FLAG_REFRESH: Duration = Duration::from_secs(1);

/// Runs until `shutdown` is cancelled: while `wanted` says a session here has subscribed
/// to dashboard events, sets the dashboards flags again every
/// [`DASHBOARDS_FLAG_REFRESH`], so that votes on every hub keep being published.
pub async fn keep_dashboards_flagged(
    store: Store,
    wanted: watch::Receiver<bool>,
    shutdown: CancellationToken,
) {
    let store = store.unguarded();
    while super::wait(DASHBOARDS_FLAG_REFRESH, &shutdown).await {
        if *wanted.borrow() {
            flag_dashboards(&store).await;
        }
    }
}

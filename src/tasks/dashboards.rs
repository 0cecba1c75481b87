//! On a cluster, keeps every partition's dashboards flag set while a session here has
//! subscribed to dashboard events, so that votes on every hub keep being published.

use std::sync::Arc;
use std::time::Duration;

use crate::hub::Hub;
use crate::listener::flag_dashboards;

/// How often a hub with dashboards sets them again.
const DASHBOARDS_FLAG_REFRESH: Duration = Duration::from_secs(1);

/// Runs until the hub shuts down (cluster only): while a session here has subscribed to
/// dashboard events, sets every partition's dashboards flag again every
/// [`DASHBOARDS_FLAG_REFRESH`], so that votes on every hub keep being published.
pub async fn keep_dashboards_flagged(hub: Arc<Hub>) {
    let store = hub.store.unguarded();
    let wanted = hub.dashboards_wanted();
    loop {
        tokio::select! {
            _ = hub.shutdown.cancelled() => return,
            _ = tokio::time::sleep(DASHBOARDS_FLAG_REFRESH) => {}
        }
        if *wanted.borrow() {
            flag_dashboards(&store).await;
        }
    }
}

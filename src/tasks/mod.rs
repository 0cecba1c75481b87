//! The hub's background tasks, each running until the hub shuts down: [`probe`] (closes
//! an open breaker once Redis answers), [`deadlines`] (closes decisions past their deadline),
//! [`publisher`] (publishes decision events once replicas confirm them), [`keepalive`]
//! (refreshes open sessions' bindings), [`sweep`] (logs decisions left unlogged, on a
//! cluster), [`dashboards`] (keeps the dashboards flags set) and [`policies`]
//! (keeps the hub's copy of the decision policies current).

pub mod dashboards;
pub mod deadlines;
pub mod keepalive;
pub mod policies;
pub mod probe;
pub mod publisher;
pub mod sweep;

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Waits `pause` unless `shutdown` is cancelled first: true once the pause is over, false
/// when the task should stop. Every task waits on it before each round, so a round starts
/// a whole pause after the previous one ended, however long that one took.
pub async fn wait(pause: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(pause) => true,
    }
}

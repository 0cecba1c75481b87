//! The hub's background tasks, each running until the hub shuts down: [`probe`] (closes
//! an open breaker once Redis answers), [`deadlines`] (closes decisions past their deadline),
//! [`publisher`] (publishes decision events once replicas confirm them), [`keepalive`]
//! (refreshes open sessions' bindings), [`sweep`] (logs decisions left unlogged, on a
//! cluster) and [`dashboards`] (keeps the dashboards flags set, on a cluster).

pub mod dashboards;
pub mod deadlines;
pub mod keepalive;
pub mod probe;
pub mod publisher;
pub mod sweep;

//! quorum-hub: a WebSocket coordination hub. Agents hold a session, register an
//! instance, and vote on named decisions; one Lua script in Redis records each vote and
//! fixes the decision at quorum (or closes it as expired at its deadline); every hub pushes
//! `quorum.decision.made` (or `quorum.decision.expired`) to every session.
//!
//! The library's face is [`server::run`] (a hub), [`client`] (an agent's client) and
//! [`protocol`] (the wire contract both speak); the rest is the hub's own machinery.
//!
//! # Layout
//! - [`config`]: command-line and environment settings.
//! - [`server`]: routes (`/ws`, `/rpc`, `/metrics`, `/readyz`, `/healthz`, `/`), start-up and shutdown.
//! - [`protocol`]: the wire contract: names, typed params, results and events, JSON-RPC framing,
//!   request validation, and the peers' request/response helper.
//! - `session`: one WebSocket session: its loops, its state, replays for resuming clients.
//! - `methods`: the JSON-RPC methods and who may act as which instance.
//! - [`auth`]: tokens (HS256 JWT) and what each allows.
//! - `guards`: what a browser page may reach (the Origin and Host checks).
//! - `budget`: how many calls a session or an `/rpc` client may make per window.
//! - `hub`: shared state of one hub process and the fan-out to its sessions.
//! - `listener`: the pub/sub listener, the event log's continuity check and gap recovery
//!   after a dropped link.
//! - `keepalive`: keeps the instances of open sessions registered.
//! - `probe`: closes an open circuit breaker as soon as Redis answers again.
//! - `deadlines`: closes decisions whose deadline passed without quorum.
//! - `publisher`: with `--wait-replicas`, publishes events replicas confirmed late.
//! - `store`: Redis access; the only module that knows key names and scripts.
//! - [`decision`], [`instance`]: domain types, validation and the quorum rule.
//! - `clock`: wall-clock time as the hub records it.
//! - `sync`: locking a mutex whose data stays consistent even if a holder panicked.
//! - `managed_redis`: the private redis-server a hub starts without `--redis-url`.
//! - `breaker`: the circuit breaker in front of Redis.
//! - [`error`]: the error type, its JSON-RPC code, message and data.
//! - `metrics`: Prometheus metrics at `/metrics`.
//! - [`client`]: an agent's reconnecting client (used by `vote` and `watch`).
//! - [`bench`]: the load generator behind `quorum-hub bench`.
//! - [`tools`]: the `vote` and `watch` subcommands.
#![forbid(unsafe_code)]

pub mod auth;
pub mod bench;
pub mod client;

pub mod config;
pub mod decision;
pub mod error;
pub mod instance;
pub mod protocol;
pub mod server;
pub mod tools;

mod breaker;
mod budget;
mod clock;
mod deadlines;
mod guards;
mod hub;
mod keepalive;
mod listener;
mod managed_redis;
mod methods;
mod metrics;
mod probe;
mod publisher;
mod session;
mod store;
mod sync;
pub(crate) mod upgrade;

pub use store::{
    CLUSTER_SCHEME, SENTINEL_SCHEME, decision_key, event_log_epoch_key, event_log_key,
    instances_by_id_key,
};

//! quorum-hub: a WebSocket coordination hub. Agents hold a session, register an
//! instance, and vote on named decisions; one Lua script in Redis records each vote and
//! fixes the decision at quorum (or closes it as expired at its deadline); every hub pushes
//! `quorum.decision.made` (or `quorum.decision.expired`) to every session.
//!
//! The library's face is [`server::run`] (a hub), [`client`] (an agent's client) and
//! [`protocol`] (the wire contract both speak); the rest is the hub's own machinery.
//!
//! The code map (every module and what it holds) is in ARCHITECTURE.md.
#![forbid(unsafe_code)]

pub mod auth;
pub mod bench_seams;
pub mod client;

pub mod config;
pub mod decision;
pub mod error;
pub mod instance;
pub mod mcp;
pub mod policy;
pub mod protocol;
pub mod server;
pub mod tools;

mod breaker;
mod budget;
mod clock;
mod connection;
mod guards;
mod hub;
mod listener;
mod managed_redis;
mod methods;
mod metrics;
mod outbound;
mod push;
mod session;
mod store;
mod sync;
mod tasks;
pub(crate) mod upgrade;
mod webhooks;

pub use store::{
    CLUSTER_SCHEME, SENTINEL_SCHEME, decision_key, event_log_epoch_key, event_log_key,
    instances_by_id_key,
};

//! quorum-hub: a WebSocket coordination hub. Agents hold a session, register an
//! instance, and vote on named decisions; one Lua script in Redis records each vote and
//! fixes the decision at quorum; every hub pushes `quorum.decision.made` to every session.
//!
//! # Layout
//! - [`config`]: command-line and environment settings.
//! - [`server`]: routes (`/ws`, `/rpc`, `/metrics`, `/readyz`, `/healthz`, `/`), start-up and shutdown.
//! - [`session`]: one WebSocket session: ordered calls, bounded outbound queue, close codes.
//! - [`request`]: a call's method and params validated into a typed request.
//! - [`methods`]: the JSON-RPC methods and who may act as which instance.
//! - [`auth`]: tokens (HS256 JWT) and what each allows.
//! - [`rpc`]: the JSON-RPC 2.0 wire format, the only place the hub itself builds it.
//! - [`hub`]: shared state of one hub process and the fan-out to its sessions.
//! - [`events`]: decision events: the pub/sub listener, gap recovery, client replays.
//! - [`keepalive`]: keeps the instances of open sessions registered.
//! - [`store`]: Redis access; the only module that knows key names and scripts.
//! - [`decision`], [`instance`]: domain types, validation and the quorum rule.
//! - `clock`: wall-clock time as the hub records it.
//! - [`managed_redis`]: the private redis-server a hub starts without `--redis-url`.
//! - [`breaker`]: the circuit breaker in front of Redis.
//! - [`error`]: the error type and its JSON-RPC codes.
//! - [`metrics`]: Prometheus metrics at `/metrics`.
//! - [`client`]: an agent's reconnecting client (used by `vote` and `watch`).
//! - [`bench`]: the load generator behind `quorum-hub bench`.
//! - [`tools`]: the `vote`, `watch` and `bench suite` subcommands.
#![forbid(unsafe_code)]

pub mod auth;
pub mod bench;
pub mod breaker;
pub mod client;
pub(crate) mod clock;
pub mod config;
pub mod decision;
pub mod error;
pub mod events;
pub mod hub;
pub mod instance;
pub mod keepalive;
pub mod managed_redis;
pub mod methods;
pub mod metrics;
pub mod request;
pub mod rpc;
pub mod server;
pub mod session;
pub mod store;
pub mod tools;

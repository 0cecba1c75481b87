//! A session: one client's place on the hub, whatever carries it. Its outbound queue and
//! byte budget, its cursor in the decision event stream with the replay of what it missed,
//! its instance binding and its subscriptions; and the WebSocket transport that carries it
//! today (the wire and the writer). It knows neither the methods nor the hub: the code
//! that serves a connection (`crate::connection`) sits above both.
//!
//! Any transport:
//! - [`state`]: what the rest of the hub sees of a session ([`SessionHandle`]).
//! - [`outbox`]: its bounded outbound queue, byte budget and direct writes.
//! - [`cursor`], [`live`], [`replay`]: where it stands in the decision event stream, live
//!   delivery at that place, and the replay of what it missed.
//! - [`binding`]: the instance it registered as.
//! - [`footprint`]: what an idle session holds, part by part, for the metrics.
//!
//! The transports:
//! - [`writer`]: the half that writes the outbox's queue to a WebSocket.
//! - [`signal`]: how the reading and writing halves of a session's task tell each other
//!   they are done.
//! - [`wire`]: the TCP stream under the WebSocket, which the fan-out writes frames into.
//! - [`sse`]: the body of a Server-Sent Events stream, drained from the same queue; it
//!   takes no direct writes (its outbox has no wire) and reads no calls.

mod binding;
mod cursor;
pub mod footprint;
mod live;
mod outbox;
pub mod queue;
mod replay;
pub mod signal;
pub mod sse;
mod state;
pub mod wire;
pub mod writer;

pub use binding::BindingChange;
pub use outbox::Outbound;
pub use replay::{Resume, replay, resume};
pub use state::{SessionHandle, SessionSettings, SessionSlot};

use std::sync::Arc;

/// A session's WebSocket.
pub type SessionSocket = wire::WireSocket<Arc<SessionHandle>>;

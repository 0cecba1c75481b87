//! A session: one client's place on the hub, whatever carries it. Its outbound queue and
//! byte budget, its cursor in the decision event stream with the replay of what it missed,
//! its instance binding and its subscriptions; and the WebSocket transport that carries it
//! today (the wire and the writer). It knows neither the methods nor the hub: the code
//! that serves a connection (`crate::connection`) sits above both.
//!
//! - [`state`]: what the rest of the hub sees of a session ([`SessionHandle`]).
//! - [`replay`]: live events held while a resuming session replays what it missed.
//! - [`writer`]: the half that writes the outbound queue to a WebSocket.
//! - [`wire`]: the TCP stream under the WebSocket, which the fan-out writes frames into.

mod replay;
mod state;
pub mod wire;
pub mod writer;

pub use replay::{Resume, replay, resume};
pub use state::{Outbound, SessionHandle, SessionSettings, SessionSlot};

use std::sync::Arc;

/// A session's WebSocket.
pub type SessionSocket = wire::WireSocket<Arc<SessionHandle>>;

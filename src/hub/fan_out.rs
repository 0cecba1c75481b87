//! The fan-out: one decision event written to every open session, split across the cores.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::protocol::EventId;
use crate::session::SessionHandle;
use crate::session::wire;

/// Sessions from which an event is written straight into each socket by one task per core
/// (a share each). Below, it is queued for each session's writer, which writes whatever
/// has queued up meanwhile with one flush: at high event rates to few sessions, that
/// batching is worth more than the wake-up it costs.
const FAN_OUT_DIRECT: usize = 1024;
/// Sessions a fan-out loop takes at a time: a few hundred microseconds of writes, so the
/// loops finish within about that of each other.
const FAN_OUT_RUN: usize = 32;
/// Runs a fan-out loop writes between giving its core to the other tasks (about a
/// millisecond of writes). Without it, a call from another session that arrived as a
/// 10,000-session fan-out began waited for all of it: measured with `bench fanout`'s call
/// probe, the calls made during fan-outs had a p99 of up to 42 ms and a max of 54 ms,
/// against 6 to 8 ms and 17 to 23 ms with it, at no cost to the fan-out that alternating
/// rounds beside the floor could tell from noise.
const FAN_OUT_RUNS_PER_YIELD: usize = 4;

/// Gives one event to every session in `sessions`. To many, each session writes it into
/// its socket at once when it can (see [`SessionHandle::push_direct`]), so the cost is
/// mostly one `send` per session, spread evenly over the cores. The loops run outside
/// tokio's cooperative budget: with it, every socket after the first 128 writes of a
/// loop reports "not ready", and the writes fall back to the sessions' own tasks. They
/// yield every [`FAN_OUT_RUNS_PER_YIELD`] runs instead, so that other sessions' calls
/// go on meanwhile.
/// Returns how many sessions had the event written directly (not yet counted).
pub(super) async fn fan_out(
    sessions: Arc<[Arc<SessionHandle>]>,
    id: EventId,
    text: &Utf8Bytes,
) -> u64 {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    if sessions.len() < FAN_OUT_DIRECT {
        for session in sessions.iter() {
            session.push_live(id, text);
        }
        return 0;
    }
    let cores = *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let next = Arc::new(AtomicUsize::new(0));
    // One loop per core, each taking the next run of sessions until none is left: a core
    // that also serves other work (the readers, or a client on the same machine) takes
    // fewer, and all finish together. Every loop is a task of its own: a task spawned
    // from a worker waits in that worker's LIFO slot, which no other worker takes from,
    // so a loop kept inline here would run on one core with it, one after the other.
    let parts: Vec<_> = (0..cores)
        .map(|_| {
            // Copies of its own: a shared reference count, touched by every core for every
            // queued event, would bounce between their caches.
            let (sessions, next) = (sessions.clone(), next.clone());
            let text = Utf8Bytes::from(text.as_str());
            let frame = wire::text_frame(text.as_bytes());
            tokio::spawn(tokio::task::unconstrained(async move {
                let mut written = 0;
                for turn in 1.. {
                    let start = next.fetch_add(FAN_OUT_RUN, Ordering::Relaxed);
                    let Some(run) = sessions.get(start..) else {
                        break;
                    };
                    for session in run.iter().take(FAN_OUT_RUN) {
                        written += u64::from(session.push_live_direct(id, &text, &frame));
                    }
                    if turn % FAN_OUT_RUNS_PER_YIELD == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                written
            }))
        })
        .collect();
    let mut written = 0;
    for part in parts {
        written += part.await.unwrap_or_default();
    }
    written
}

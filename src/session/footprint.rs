//! What one idle WebSocket session holds, part by part, as this build lays it out:
//! reported as `quorum_session_footprint_bytes{part}` for `quorum-hub-bench connections`,
//! which sets the parts beside the hub's measured memory per session.

use std::cell::UnsafeCell;
use std::mem::size_of;
use std::sync::Arc;

use super::{Outbound, SessionHandle, SessionSocket, queue};
use crate::metrics::{Metrics, Part};

/// The two reference counts in front of everything behind an `Arc`.
const ARC_COUNTS: usize = 2 * size_of::<usize>();

/// The parts of one session, in bytes: the session's task (`task_bytes`, its future as
/// spawned; tokio adds a task header), its handle, its queue, its WebSocket, the WebSocket's
/// first read buffer (`read_buffer_bytes`), its ping timer (`pings`: the session pings its
/// peer) and its entry in the hub's map of sessions (before the map's spare room).
pub fn parts(
    task_bytes: usize,
    read_buffer_bytes: usize,
    pings: bool,
) -> [(&'static str, usize); 7] {
    [
        ("task", task_bytes),
        ("session", ARC_COUNTS + size_of::<SessionHandle>()),
        ("queue", ARC_COUNTS + queue::shared_size::<Outbound>()),
        // The halves of the split WebSocket share it in a lock behind one `Arc`: the lock's
        // state and its cell, which the halves can give the socket back from.
        (
            "socket",
            ARC_COUNTS + size_of::<usize>() + size_of::<Option<UnsafeCell<SessionSocket>>>(),
        ),
        ("read_buffer", read_buffer_bytes),
        // A ping interval keeps its timer in a box.
        (
            "ping_timer",
            if pings {
                size_of::<tokio::time::Sleep>()
            } else {
                0
            },
        ),
        // A map entry and its control byte.
        ("map_entry", size_of::<(u64, Arc<SessionHandle>)>() + 1),
    ]
}

/// Reports the parts of a session just opened to the hub's metrics (once: they change only
/// with the build and the configuration).
pub fn report(metrics: &Metrics, task_bytes: usize, read_buffer_bytes: usize, pings: bool) {
    let task = Part { part: "task" };
    let bytes = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    if metrics.session_footprint.get_or_create(&task).get() == bytes(task_bytes) {
        return;
    }
    for (part, size) in parts(task_bytes, read_buffer_bytes, pings) {
        metrics
            .session_footprint
            .get_or_create(&Part { part })
            .set(bytes(size));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parts_are_reported_once_each_with_their_sizes() {
        let metrics = Metrics::new();
        report(&metrics, 1000, 256, true);
        let text = crate::metrics::encode(&metrics.registry());
        let reported: Vec<(String, usize)> = text
            .lines()
            .filter_map(|line| line.strip_prefix("quorum_session_footprint_bytes{part=\""))
            .map(|rest| {
                let (part, value) = rest.split_once("\"} ").expect("a labelled value");
                (part.to_owned(), value.parse().expect("a number"))
            })
            .collect();
        let mut expected: Vec<(String, usize)> = parts(1000, 256, true)
            .iter()
            .map(|(part, size)| ((*part).to_owned(), *size))
            .collect();
        let mut reported = reported;
        reported.sort();
        expected.sort();
        assert_eq!(reported, expected);
        assert!(expected.iter().all(|(_, size)| *size > 0), "{expected:?}");

        // A session whose task is laid out differently (another build) reports anew.
        report(&metrics, 2000, 256, false);
        assert_eq!(
            metrics
                .session_footprint
                .get_or_create(&Part { part: "task" })
                .get(),
            2000
        );
        assert_eq!(
            metrics
                .session_footprint
                .get_or_create(&Part { part: "ping_timer" })
                .get(),
            0
        );
    }
}

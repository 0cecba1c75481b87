//! When the client tries to reconnect: exponential backoff with "full jitter". Every
//! session a hub drops at once (a restart, a network blip) starts its own random pause,
//! so thousands of clients come back spread out instead of in lockstep waves.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{LASTING_CONNECTION, RECONNECT_FIRST_WINDOW, RECONNECT_MAX_WINDOW};

/// The pauses before reconnection attempts. Each pause is a uniform random duration in
/// `[0, window]`; the window starts at [`RECONNECT_FIRST_WINDOW`] after the drop of a
/// connection that lasted ([`LASTING_CONNECTION`]) and doubles after each failed attempt,
/// and after each connection that ended sooner, up to [`RECONNECT_MAX_WINDOW`].
#[derive(Debug)]
pub(super) struct Backoff {
    window: Duration,
    rng: Rng,
}

impl Backoff {
    pub(super) fn new() -> Self {
        Self {
            window: RECONNECT_FIRST_WINDOW,
            rng: Rng::seeded(),
        }
    }

    /// The pause before the next attempt; the window of the one after is twice as wide.
    pub(super) fn next_pause(&mut self) -> Duration {
        let window = self.window.as_nanos() as u64;
        self.window = (self.window * 2).min(RECONNECT_MAX_WINDOW);
        Duration::from_nanos(self.rng.up_to(window))
    }

    /// A connection that had been open for `lasted` dropped: one that lasted starts from
    /// the first window again; one that ended sooner goes on from where the window stands.
    pub(super) fn dropped_after(&mut self, lasted: Duration) {
        if lasted >= LASTING_CONNECTION {
            self.reset();
        }
    }

    fn reset(&mut self) {
        self.window = RECONNECT_FIRST_WINDOW;
    }
}

/// xorshift64*: plenty for spreading pauses, and no dependency.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    /// A seed of its own for every client, even for thousands made in the same instant:
    /// std's `RandomState` keys come from the OS once per thread and differ per instance,
    /// and a process-wide counter and the clock are mixed in.
    fn seeded() -> Self {
        static CREATED: AtomicU64 = AtomicU64::new(0);
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(CREATED.fetch_add(1, Ordering::Relaxed));
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        hasher.write_u64(nanos);
        hasher.write_u32(std::process::id());
        Self(hasher.finish() | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[0, max]` (the high bits of a 128-bit product: no modulo bias to speak of).
    fn up_to(&mut self, max: u64) -> u64 {
        ((u128::from(self.next()) * (u128::from(max) + 1)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DRAWS: usize = 1000;
    const BUCKETS: usize = 10;

    /// Asserts that `pauses` lie within `[0, window]` and cover it: every tenth of the
    /// window holds at least half its share (a fair draw misses that with a chance of
    /// about 1e-7 per tenth), and both ends are reached.
    fn assert_spread(pauses: &[Duration], window: Duration) {
        let mut buckets = [0usize; BUCKETS];
        for pause in pauses {
            assert!(
                *pause <= window,
                "{pause:?} is beyond the window {window:?}"
            );
            let bucket = (pause.as_nanos() * BUCKETS as u128 / (window.as_nanos() + 1)) as usize;
            buckets[bucket] += 1;
        }
        let share = pauses.len() / BUCKETS;
        for (i, count) in buckets.iter().enumerate() {
            assert!(
                *count >= share / 2,
                "tenth {i} of {window:?} got {count} of {} pauses: {buckets:?}",
                pauses.len()
            );
        }
        let (min, max) = (pauses.iter().min().unwrap(), pauses.iter().max().unwrap());
        assert!(*min < window / 50, "the earliest pause was {min:?}");
        assert!(*max > window - window / 50, "the latest pause was {max:?}");
    }

    #[test]
    fn clients_dropped_at_once_spread_their_first_attempt_over_the_first_window() {
        // Made in one instant, as the clients of one process are when their hub goes away.
        let pauses: Vec<Duration> = (0..DRAWS).map(|_| Backoff::new().next_pause()).collect();
        assert_spread(&pauses, RECONNECT_FIRST_WINDOW);
        let mut distinct = pauses.clone();
        distinct.sort();
        distinct.dedup();
        assert!(
            distinct.len() > DRAWS * 99 / 100,
            "clients drew the same pauses"
        );
    }

    #[test]
    fn the_window_doubles_per_failed_attempt_up_to_the_cap_and_resets() {
        let mut backoff = Backoff::new();
        let mut window = RECONNECT_FIRST_WINDOW;
        for _ in 0..20 {
            assert_eq!(backoff.window, window);
            assert!(backoff.next_pause() <= window);
            window = (window * 2).min(RECONNECT_MAX_WINDOW);
        }
        assert_eq!(backoff.window, RECONNECT_MAX_WINDOW);
        // A client that keeps failing draws from the whole capped window, never beyond.
        let pauses: Vec<Duration> = (0..DRAWS).map(|_| backoff.next_pause()).collect();
        assert_spread(&pauses, RECONNECT_MAX_WINDOW);
        backoff.dropped_after(LASTING_CONNECTION);
        assert_eq!(backoff.window, RECONNECT_FIRST_WINDOW);
        assert!(backoff.next_pause() <= RECONNECT_FIRST_WINDOW);
    }

    #[test]
    fn a_connection_that_ended_at_once_does_not_start_the_window_over() {
        // Each attempt connects, and the hub turns the session away at once (it could not
        // read its event log to resume it): the window goes on doubling to the cap.
        let mut backoff = Backoff::new();
        let mut window = RECONNECT_FIRST_WINDOW;
        for _ in 0..5 {
            assert_eq!(backoff.window, window);
            backoff.next_pause();
            backoff.dropped_after(LASTING_CONNECTION - Duration::from_millis(1));
            window = (window * 2).min(RECONNECT_MAX_WINDOW);
        }
        assert_eq!(backoff.window, RECONNECT_MAX_WINDOW);
    }

    #[test]
    fn one_clients_pauses_are_spread_too() {
        // A client retrying at the first window every time (each connection lasts, then
        // drops) does not repeat one pause.
        let mut backoff = Backoff::new();
        let pauses: Vec<Duration> = (0..DRAWS)
            .map(|_| {
                let pause = backoff.next_pause();
                backoff.dropped_after(LASTING_CONNECTION);
                pause
            })
            .collect();
        assert_spread(&pauses, RECONNECT_FIRST_WINDOW);
    }
}

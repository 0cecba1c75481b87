//! The per-hub circuit breaker: after a run of consecutive Redis failures the hub stops
//! calling Redis for a while and answers at once, then lets one trial call through.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::protocol::BreakerState;
use crate::sync::lock;

/// Default number of consecutive backend failures that opens the breaker.
pub const DEFAULT_FAILURES: u32 = 5;
/// Default time the breaker stays open before a trial call.
pub const DEFAULT_OPEN_FOR: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One trial call is in flight; everything else is refused until it reports.
    Trial,
}

/// What the breaker says about a call that wants to reach Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Allowed,
    /// Refused; the breaker may admit a trial after this long.
    Refused {
        retry_after: Duration,
    },
}

#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    open_for: Duration,
    state: Mutex<State>,
}

impl Breaker {
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            open_for,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    /// Asks to make a backend call. Every `Allowed` must be followed by one `record`.
    pub fn admit(&self) -> Admission {
        let mut state = lock(&self.state);
        match *state {
            State::Closed { .. } => Admission::Allowed,
            State::Open { until } => {
                let now = Instant::now();
                if now >= until {
                    *state = State::Trial;
                    tracing::info!("circuit breaker half-open: letting one trial call through");
                    Admission::Allowed
                } else {
                    Admission::Refused {
                        retry_after: until - now,
                    }
                }
            }
            State::Trial => Admission::Refused {
                retry_after: Duration::ZERO,
            },
        }
    }

    /// Reports how an admitted call went. Only backend failures (connection errors,
    /// timeouts) count as failures; a refused vote or bad input is a success here.
    pub fn record(&self, backend_failed: bool) {
        let mut state = lock(&self.state);
        *state = match (*state, backend_failed) {
            (State::Trial, false) => {
                tracing::info!("circuit breaker closed: Redis answers again");
                State::Closed { failures: 0 }
            }
            (State::Closed { .. }, false) => State::Closed { failures: 0 },
            (State::Open { until }, false) => State::Open { until },
            (State::Closed { failures }, true) if failures + 1 < self.threshold => State::Closed {
                failures: failures + 1,
            },
            (State::Open { until }, true) => State::Open { until },
            (_, true) => {
                tracing::warn!(
                    "circuit breaker open for {:?} after {} consecutive Redis failures",
                    self.open_for,
                    self.threshold
                );
                State::Open {
                    until: Instant::now() + self.open_for,
                }
            }
        };
    }

    /// Closes an open breaker because the hub's own probe found every part of Redis
    /// answering (see `probe`): callers need not wait out the open period.
    pub fn close_after_probe(&self) {
        let mut state = lock(&self.state);
        if !matches!(*state, State::Closed { .. }) {
            tracing::info!("circuit breaker closed: the hub's probe found Redis answering again");
            *state = State::Closed { failures: 0 };
        }
    }

    pub fn state(&self) -> BreakerState {
        match *lock(&self.state) {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { until } if Instant::now() < until => BreakerState::Open,
            State::Open { .. } | State::Trial => BreakerState::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_and_closes_after_a_good_trial() {
        let breaker = Breaker::new(3, Duration::ZERO);
        for _ in 0..2 {
            assert_eq!(breaker.admit(), Admission::Allowed);
            breaker.record(true);
        }
        assert_eq!(breaker.state(), BreakerState::Closed);
        breaker.admit();
        breaker.record(true);
        assert_ne!(breaker.state(), BreakerState::Closed);
        // Open period of zero: the next call is the trial; a second one waits for it.
        assert_eq!(breaker.admit(), Admission::Allowed);
        assert!(matches!(breaker.admit(), Admission::Refused { .. }));
        breaker.record(false);
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[test]
    fn a_success_resets_the_run_of_failures() {
        let breaker = Breaker::new(2, Duration::from_secs(60));
        breaker.record(true);
        breaker.record(false);
        breaker.record(true);
        assert_eq!(breaker.state(), BreakerState::Closed);
        breaker.record(true);
        assert_eq!(breaker.state(), BreakerState::Open);
        assert!(matches!(breaker.admit(), Admission::Refused { .. }));
    }
}

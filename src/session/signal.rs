//! A one-way signal between the two halves of a session's task (its reader and its
//! writer): raised once by one, awaited by the other. It lives in the task itself and
//! allocates nothing, where a `CancellationToken` allocates its shared state.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::future::Either;
use tokio::sync::Notify;

/// Raised once, and awaited by one waiter at a time: the wait that is on when it is
/// raised ends, and every wait begun after it ends at once.
#[derive(Default)]
pub struct Signal {
    raised: AtomicBool,
    notify: Notify,
}

impl Signal {
    /// Raises the signal: the wait for it ends, and every later one at once.
    pub fn raise(&self) {
        self.raised.store(true, Ordering::Release);
        // A permit if the waiter has not been polled yet, which its first poll takes.
        self.notify.notify_one();
    }

    /// Completes once the signal is raised. Only the notification itself is kept while
    /// waiting (the wait lives in every idle session).
    pub fn raised(&self) -> impl Future<Output = ()> + Send + '_ {
        if self.raised.load(Ordering::Acquire) {
            Either::Left(std::future::ready(()))
        } else {
            Either::Right(self.notify.notified())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wait_begun_before_the_raise_ends_even_if_first_polled_after_it() {
        let signal = Signal::default();
        let wait = signal.raised();
        signal.raise();
        tokio::time::timeout(std::time::Duration::from_secs(5), wait)
            .await
            .expect("the raise left a permit for the wait");
    }

    #[tokio::test]
    async fn a_wait_ends_when_the_signal_is_raised_and_every_later_wait_at_once() {
        let signal = std::sync::Arc::new(Signal::default());
        let waiting = tokio::spawn({
            let signal = signal.clone();
            async move { signal.raised().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "ended before the signal was raised");
        signal.raise();
        waiting.await.unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), signal.raised())
            .await
            .expect("a wait after the raise ends at once");
    }
}

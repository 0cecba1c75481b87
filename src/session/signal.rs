//! A one-way signal between the two halves of a session's task (its reader and its
//! writer): raised once by one, awaited by the other. It lives in the task itself and
//! allocates nothing, where a `CancellationToken` allocates its shared state.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

/// Raised once; whoever waits for it returns from then on.
#[derive(Default)]
pub struct Signal {
    raised: AtomicBool,
    notify: Notify,
}

impl Signal {
    /// Raises the signal: every wait for it ends, now and later.
    pub fn raise(&self) {
        self.raised.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// Completes once the signal is raised.
    pub async fn raised(&self) {
        loop {
            // Registered before checking, so a raise in between is not missed.
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.raised.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

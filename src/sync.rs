//! Locking shared state whose data stays consistent even if a holder panicked.

use std::sync::{Mutex, MutexGuard};

/// Locks a mutex, also after a holder panicked: every holder in the hub leaves the data
/// consistent at each step, so a poisoned lock is taken as it stands.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

//! The instance a session registered as, and the lock that orders every change of it with
//! its write to Redis.

use std::sync::Mutex;

use crate::instance::{InstanceId, Registration};
use crate::sync::lock;

/// The instance a session registered as, if any: one per session.
#[derive(Default)]
pub struct Binding {
    current: Mutex<Option<Registration>>,
    /// Held across every change of the binding and its Redis write (register, unregister,
    /// close, the keepalive's refresh), so no refresh rewrites a binding that its session
    /// let go of meanwhile.
    change: tokio::sync::Mutex<()>,
}

/// The right to change a session's binding and write the change to Redis; others wait
/// until it is dropped.
pub struct BindingChange<'a> {
    _held: tokio::sync::MutexGuard<'a, ()>,
}

impl Binding {
    /// Waits for the right to change the binding (see [`BindingChange`]).
    pub async fn change(&self) -> BindingChange<'_> {
        BindingChange {
            _held: self.change.lock().await,
        }
    }

    /// The right to change the binding, if no one holds it now.
    pub fn try_change(&self) -> Option<BindingChange<'_>> {
        self.change
            .try_lock()
            .ok()
            .map(|held| BindingChange { _held: held })
    }

    /// The instance the session holds, if any.
    pub fn instance(&self) -> Option<InstanceId> {
        lock(&self.current).as_ref().map(|r| r.instance.clone())
    }

    pub fn is_bound(&self) -> bool {
        lock(&self.current).is_some()
    }

    /// The session's registration, if any.
    pub fn registration(&self) -> Option<Registration> {
        lock(&self.current).clone()
    }

    pub fn set(&self, registration: Registration) {
        *lock(&self.current) = Some(registration);
    }

    /// Lets the binding go; returns what it was.
    pub fn take(&self) -> Option<Registration> {
        lock(&self.current).take()
    }

    /// Whether the session holds `instance` (checked without copying the registration).
    pub fn holds(&self, instance: &InstanceId) -> bool {
        lock(&self.current)
            .as_ref()
            .is_some_and(|r| r.instance == *instance)
    }
}

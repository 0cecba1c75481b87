//! Shared state of one hub process: the store, the open sessions, and fan-out to them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::ws::Utf8Bytes;
use dashmap::DashMap;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::error::Error;
use crate::instance::{InstanceId, Registration};
use crate::store::Store;

/// Messages a session may have queued for its socket before it counts as a slow consumer
/// and is closed (1008). Bounds the hub's memory however many clients stop reading.
pub const SESSION_QUEUE_LEN: usize = 1024;

/// What a session's writer sends next.
#[derive(Debug)]
pub enum Outbound {
    Text(Utf8Bytes),
    /// Close the socket with this code and reason, after everything queued before it.
    Close(u16, &'static str),
}

/// The part of a session that the rest of the hub sees.
pub struct SessionHandle {
    pub id: u64,
    /// Identifies this session in Redis as the owner of its bound instance.
    pub token: String,
    outbound: mpsc::Sender<Outbound>,
    /// Raised when the session fell a full queue behind; its writer closes it.
    pub evicted: Notify,
    /// The instance this session registered as, if any. One per session.
    binding: Mutex<Option<Registration>>,
}

impl SessionHandle {
    /// Queues a reply, waiting while the queue is full (the caller's own backpressure).
    pub async fn send(&self, message: Outbound) -> bool {
        self.outbound.send(message).await.is_ok()
    }

    pub fn bound(&self) -> Option<InstanceId> {
        self.lock_binding().as_ref().map(|r| r.instance.clone())
    }

    pub fn binding(&self) -> Option<Registration> {
        self.lock_binding().clone()
    }

    pub fn bind(&self, registration: Registration) {
        *self.lock_binding() = Some(registration);
    }

    pub fn unbind(&self) -> Option<Registration> {
        self.lock_binding().take()
    }

    /// The owner token to present for `instance`: this session's, if it holds it.
    pub fn owner_token_for(&self, instance: &InstanceId) -> Option<&str> {
        (self.bound().as_ref() == Some(instance)).then_some(self.token.as_str())
    }

    fn lock_binding(&self) -> std::sync::MutexGuard<'_, Option<Registration>> {
        // A panic while holding this lock cannot leave the Option half-written.
        self.binding
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One hub process.
pub struct Hub {
    pub store: Store,
    pub config: Config,
    /// Random id of this process, part of every session token.
    pub id: String,
    sessions: DashMap<u64, Arc<SessionHandle>>,
    next_session: AtomicU64,
    /// True while the decision listener is subscribed; part of readiness.
    listening: AtomicBool,
    /// Cancelled when the hub stops: sessions close with 1001, background tasks end.
    pub shutdown: CancellationToken,
    /// Sessions and background tasks, awaited (bounded) on shutdown.
    pub tracker: TaskTracker,
    started: Instant,
}

impl Hub {
    pub fn new(store: Store, config: Config, shutdown: CancellationToken) -> Self {
        Self {
            store,
            config,
            id: random_id(),
            sessions: DashMap::new(),
            next_session: AtomicU64::new(1),
            listening: AtomicBool::new(false),
            shutdown,
            tracker: TaskTracker::new(),
            started: Instant::now(),
        }
    }

    /// Opens a session: returns its handle and the receiving end of its outbound queue.
    pub fn open_session(&self) -> (Arc<SessionHandle>, mpsc::Receiver<Outbound>) {
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(SESSION_QUEUE_LEN);
        let handle = Arc::new(SessionHandle {
            id,
            token: format!("{}:{id}", self.id),
            outbound: tx,
            evicted: Notify::new(),
            binding: Mutex::new(None),
        });
        self.sessions.insert(id, handle.clone());
        (handle, rx)
    }

    /// Forgets a closed session and frees its instance binding in Redis.
    pub async fn close_session(&self, session: &SessionHandle) {
        self.sessions.remove(&session.id);
        if let Some(registration) = session.unbind()
            && let Err(err) = self
                .store
                .release(&registration.instance, &session.token)
                .await
        {
            // The binding then lapses with its TTL.
            tracing::warn!(%err, instance = %registration.instance, "could not release binding");
        }
    }

    /// Queues `text` on every open session. A session whose queue is full is closed as a
    /// slow consumer rather than silently missing a decision.
    pub fn broadcast(&self, text: &Utf8Bytes) {
        for session in self.sessions.iter() {
            match session.outbound.try_send(Outbound::Text(text.clone())) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(session = session.id, "slow consumer: closing session");
                    session.evicted.notify_one();
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Sessions bound to an instance, with their bindings.
    pub fn bound_sessions(&self) -> Vec<(Arc<SessionHandle>, Registration)> {
        self.sessions
            .iter()
            .filter_map(|s| s.binding().map(|r| (s.clone(), r)))
            .collect()
    }

    pub fn set_listening(&self, listening: bool) {
        self.listening.store(listening, Ordering::Release);
    }

    /// Ready: Redis answers, the scripts are loaded, and decision events are subscribed.
    pub async fn check_ready(&self) -> Result<(), String> {
        self.store
            .check_ready()
            .await
            .map_err(|e: Error| format!("Redis: {e}"))?;
        if !self.listening.load(Ordering::Acquire) {
            return Err("decision listener is not subscribed yet".into());
        }
        Ok(())
    }

    pub fn uptime_seconds(&self) -> u64 {
        self.started.elapsed().as_secs()
    }
}

/// 64 random bits as hex, from the OS; falls back to time and pid.
fn random_id() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 8];
    let from_os = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if from_os.is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        bytes = (nanos ^ (u64::from(std::process::id()) << 32)).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

//! Keeps every instance bound to an open session registered, in one Redis round trip
//! per hub per period, however many sessions the hub holds.

use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;
use crate::hub::Hub;
use crate::instance::Registration;
use crate::protocol::{close, frame};
use crate::session::SessionHandle;
use crate::store::Claim;

/// Longest the keepalive waits to try again after a refresh failed, so that bindings are
/// refreshed (and claimed again) as soon as Redis answers.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_millis(250);

/// How often the hub refreshes its sessions' registrations: three times per TTL, so one
/// missed round never lets a live instance expire.
pub fn period(ttl: Duration) -> Duration {
    (ttl / 3).max(Duration::from_millis(300))
}

/// Runs until the hub shuts down.
pub async fn run(hub: Arc<Hub>) {
    let ttl = hub.config.instance_ttl;
    let mut pause = period(ttl);
    while super::wait(pause, &hub.shutdown).await {
        pause = match refresh(&hub, ttl).await {
            Ok(()) => period(ttl),
            Err(err) => {
                tracing::warn!(%err, "could not refresh session registrations");
                RETRY_AFTER_FAILURE.min(period(ttl))
            }
        };
    }
}

async fn refresh(hub: &Hub, ttl: Duration) -> Result<(), Error> {
    // Past the breaker: an open breaker must not let the bindings of open sessions lapse,
    // and a failed refresh is not a caller's failure.
    let store = hub.store.unguarded();
    let sessions = hub.bound_sessions();
    // Each session's binding is held still for the round: a close, register or unregister
    // waits until the refresh is written, so no refresh writes a binding its session has
    // let go of. A session busy changing its binding is left for the next round.
    let mut held = Vec::with_capacity(sessions.len());
    for session in &sessions {
        if let Some(guard) = session.binding.try_change()
            && let Some(registration) = session.binding.registration()
        {
            held.push((session, registration, guard));
        }
    }
    let pairs: Vec<_> = held
        .iter()
        .map(|(session, registration, _)| {
            (&registration.instance, Some(session.owner_tag.as_str()))
        })
        .collect();
    let claims = store.heartbeat_many(&pairs, ttl).await?;
    drop(pairs);
    // Refreshed bindings are let go at once; the rest stay held until they are settled.
    let unsettled: Vec<_> = held
        .into_iter()
        .zip(claims)
        .filter(|(_, claim)| *claim != Claim::Done)
        .collect();
    let store = &store;
    let settle = unsettled
        .iter()
        .map(|((session, registration, _), claim)| async move {
            match claim {
                // Expired while Redis was unreachable (or Redis lost it): write it again.
                Claim::Missing => {
                    // Written again whether or not replicas confirm it in time: the
                    // next period writes it again if a failover loses it.
                    let (claim, _confirmed) = store
                        .register(registration, Some(&session.owner_tag), ttl)
                        .await?;
                    match claim {
                        Claim::BoundElsewhere => lost(session, registration),
                        Claim::Done | Claim::Missing => {}
                    }
                }
                Claim::BoundElsewhere => lost(session, registration),
                Claim::Done => {}
            }
            Ok::<(), Error>(())
        });
    // Sent together: one round trip's wait, however many lapsed.
    futures::future::join_all(settle)
        .await
        .into_iter()
        .collect::<Result<Vec<()>, Error>>()?;
    Ok(())
}

/// Another session took the instance while this one's binding had lapsed: the session is
/// told, and closed.
fn lost(session: &SessionHandle, registration: &Registration) {
    tracing::warn!(
        session = session.id,
        instance = %registration.instance,
        "binding lapsed and another session took the instance; closing this session"
    );
    session.binding.take();
    let notice = frame::instance_lost(registration.instance.as_str());
    session.outbox.close_with_notice(
        notice.into(),
        close::code::POLICY_VIOLATION,
        close::INSTANCE_TAKEN,
    );
}

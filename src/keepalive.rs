//! Keeps every instance bound to an open session registered, in one Redis round trip
//! per hub per period, however many sessions the hub holds.

use std::sync::Arc;
use std::time::Duration;

use crate::hub::Hub;
use crate::store::Claim;

/// How often the hub refreshes its sessions' registrations: three times per TTL, so one
/// missed round never lets a live instance expire.
pub fn period(ttl: Duration) -> Duration {
    (ttl / 3).max(Duration::from_millis(300))
}

/// Runs until the hub shuts down.
pub async fn run(hub: Arc<Hub>) {
    let ttl = hub.config.instance_ttl;
    let mut ticker = tokio::time::interval(period(ttl));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = hub.shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if let Err(err) = refresh(&hub, ttl).await {
            tracing::warn!(%err, "could not refresh session registrations");
        }
    }
}

async fn refresh(hub: &Hub, ttl: Duration) -> Result<(), crate::error::Error> {
    // Past the breaker: an open breaker must not let the bindings of open sessions lapse,
    // and a failed refresh is not a caller's failure.
    let store = hub.store.unguarded();
    let bound = hub.bound_sessions();
    let pairs: Vec<_> = bound
        .iter()
        .map(|(session, registration)| (&registration.instance, Some(session.owner_tag.as_str())))
        .collect();
    let claims = store.heartbeat_many(&pairs, ttl).await?;
    for ((session, registration), claim) in bound.iter().zip(claims) {
        match claim {
            Claim::Done => {}
            // Expired while Redis was unreachable (or Redis lost it): write it again.
            Claim::Missing => {
                if store
                    .register(registration, Some(&session.owner_tag), ttl)
                    .await?
                    == Claim::BoundElsewhere
                {
                    lost(session, registration);
                }
            }
            Claim::BoundElsewhere => lost(session, registration),
        }
    }
    Ok(())
}

fn lost(session: &crate::session::SessionHandle, registration: &crate::instance::Registration) {
    tracing::warn!(
        session = session.id,
        instance = %registration.instance,
        "binding lapsed and another session took the instance; this session must register again"
    );
    session.unbind();
}

//! Decision events: one Redis pub/sub subscription per hub feeding every session, and gap
//! recovery from the stream after a dropped link. (Replays for resuming clients are the
//! session's: [`crate::session::replay`].)

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use futures::StreamExt;

use crate::error::Error;
use crate::hub::Hub;
use crate::protocol::{
    DecisionEvent, InstanceRegistered, InstanceUnregistered, VoteRecorded, event, frame,
};
use crate::store::{self, DECISION_EVENTS_CHANNEL};

/// First pause before resubscribing after the pub/sub link failed.
pub const RESUBSCRIBE_MIN_DELAY: Duration = Duration::from_millis(100);
/// Longest pause between resubscription attempts.
pub const RESUBSCRIBE_MAX_DELAY: Duration = Duration::from_secs(2);

/// Runs until the hub shuts down, resubscribing with backoff whenever the link drops.
pub async fn listen(hub: Arc<Hub>) {
    let mut delay = RESUBSCRIBE_MIN_DELAY;
    while !hub.shutdown.is_cancelled() {
        match forward(&hub).await {
            Ok(()) => delay = RESUBSCRIBE_MIN_DELAY,
            Err(err) => tracing::warn!(%err, "decision listener failed; retrying in {delay:?}"),
        }
        hub.set_listening(false);
        hub.set_dashboards_live(false);
        hub.metrics.redis_resubscribes.inc();
        tokio::select! {
            _ = hub.shutdown.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(RESUBSCRIBE_MAX_DELAY);
    }
}

/// Subscribes, delivers what was missed while unsubscribed, then delivers live events.
async fn forward(hub: &Hub) -> Result<(), Error> {
    // The starting point is read before subscribing: an event decided between the two is
    // then after it, and the gap read below delivers it (read after subscribing, it would
    // count as delivered without ever being pushed).
    if hub.delivered().is_none() {
        hub.start_delivery_at(hub.store.last_event_id().await?);
    }
    let mut pubsub = hub.store.client().get_async_pubsub().await?;
    pubsub.subscribe(DECISION_EVENTS_CHANNEL).await?;
    // Live events published from here on wait in the subscription while the gap is read;
    // `Hub::deliver` drops the ones the gap read already delivered.
    let caught_up = catch_up(hub).await?;
    if caught_up > 0 {
        tracing::info!(
            events = caught_up,
            "delivered decision events missed while the pub/sub link was down"
        );
    }
    hub.set_listening(true);
    tracing::info!(
        channel = DECISION_EVENTS_CHANNEL,
        "decision listener subscribed"
    );
    let (mut sink, mut messages) = pubsub.split();
    // Dashboard events flow only while some session here wants them: every vote publishes
    // one, and a hub without dashboards should not pay for reading them.
    let mut watched = hub.dashboards_wanted();
    let mut dashboards = false;
    loop {
        let wanted = *watched.borrow_and_update();
        if wanted != dashboards {
            if wanted {
                sink.subscribe(&store::DASHBOARD_CHANNELS[..]).await?;
            } else {
                sink.unsubscribe(&store::DASHBOARD_CHANNELS[..]).await?;
            }
            dashboards = wanted;
            hub.set_dashboards_live(dashboards);
        }
        let message = tokio::select! {
            _ = hub.shutdown.cancelled() => return Ok(()),
            _ = watched.changed() => continue,
            message = messages.next() => message,
        };
        let Some(message) = message else {
            tracing::warn!("pub/sub link to Redis closed");
            return Ok(());
        };
        let channel = message.get_channel_name();
        if channel != DECISION_EVENTS_CHANNEL {
            forward_subscribed(hub, channel, message.get_payload_bytes());
            continue;
        }
        match serde_json::from_slice::<DecisionEvent>(message.get_payload_bytes()) {
            Ok(event) => {
                tracing::info!(decision = %event.decision, value = %event.value, "decision made");
                deliver(hub, &event);
            }
            Err(err) => tracing::error!(%err, "ignoring a malformed decision event"),
        }
    }
}

/// Passes a dashboard event (`quorum.vote.recorded`, `instance.*`) to the sessions that
/// subscribed to it.
fn forward_subscribed(hub: &Hub, channel: &str, payload: &[u8]) {
    let Some(name) = channel.strip_prefix(store::EVENT_CHANNEL_PREFIX) else {
        return;
    };
    // Checked before parsing: the subscription may outlive the last dashboard briefly.
    if !hub.has_watchers() {
        return;
    }
    // Typed on the way through: a record the scripts publish in another shape is logged,
    // never passed on.
    let text = match name {
        event::VOTE_RECORDED => typed::<VoteRecorded>(name, payload),
        event::INSTANCE_REGISTERED => typed::<InstanceRegistered>(name, payload),
        event::INSTANCE_UNREGISTERED => typed::<InstanceUnregistered>(name, payload),
        _ => None,
    };
    if let Some(text) = text {
        hub.broadcast_subscribed(name, &Utf8Bytes::from(text));
    }
}

/// The notification for an event record published by a script, if it has the event's shape.
fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(
    name: &str,
    payload: &[u8],
) -> Option<String> {
    match serde_json::from_slice::<T>(payload) {
        Ok(params) => Some(frame::notification(name, &params)),
        Err(err) => {
            tracing::error!(%err, event = name, "ignoring a malformed event");
            None
        }
    }
}

/// Delivers every stream event after the hub's last delivered one. Returns how many.
async fn catch_up(hub: &Hub) -> Result<usize, Error> {
    let mut delivered = 0;
    while let Some(after) = hub.delivered() {
        let page = hub.store.events_after(after, None).await?;
        for event in &page.events {
            delivered += usize::from(deliver(hub, event));
        }
        if !page.more {
            break;
        }
    }
    Ok(delivered)
}

fn deliver(hub: &Hub, event: &DecisionEvent) -> bool {
    hub.deliver(
        event.event_id,
        &Utf8Bytes::from(frame::decision_made(event)),
    )
}

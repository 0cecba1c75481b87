//! Decision events: one Redis pub/sub subscription per hub feeding every session, gap
//! recovery from the stream after a dropped link, and replays for resuming clients.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use futures::StreamExt;

use crate::decision::{DecisionEvent, EventId, parse_decision_event};
use crate::error::Error;
use crate::hub::{Hub, Outbound, SessionHandle};
use crate::rpc;
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
    let mut pubsub = hub.store.client().get_async_pubsub().await?;
    pubsub.subscribe(DECISION_EVENTS_CHANNEL).await?;
    // Live events published from here on wait in the subscription while the gap is read;
    // `Hub::deliver` drops the ones the gap read already delivered.
    if hub.delivered().is_none() {
        hub.start_delivery_at(hub.store.last_event_id().await?);
    }
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
    let mut watched = hub.watched();
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
        match parse_decision_event(message.get_payload_bytes()) {
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
    match serde_json::from_slice::<serde_json::Value>(payload) {
        Ok(params) => {
            hub.broadcast_subscribed(name, &Utf8Bytes::from(rpc::notification(name, &params)))
        }
        Err(err) => tracing::error!(%err, channel, "ignoring a malformed event"),
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
    match event.event_id.parse::<EventId>() {
        Ok(id) => hub.deliver(id, &Utf8Bytes::from(rpc::decision_notification(event))),
        Err(err) => {
            tracing::error!(%err, "ignoring a decision event without a valid id");
            false
        }
    }
}

/// Sends a session every decision event after `since` that it has not had, in order,
/// before any live event that arrives meanwhile; first a notice if some of them are no
/// longer kept. Returns how many events it replayed.
pub async fn replay(hub: &Hub, session: &SessionHandle, since: EventId) -> Result<usize, Error> {
    let plan = session.begin_replay(since);
    let mut last = None;
    let mut replayed = 0;
    let result = async {
        let Some(upto) = plan else { return Ok(()) };
        if hub.store.events_missing_after(since).await? {
            let notice = rpc::events_incomplete(since);
            session.send(Outbound::Text(notice.into())).await;
        }
        let mut after = since;
        loop {
            let page = hub.store.events_after(after, upto).await?;
            for event in &page.events {
                let Ok(id) = event.event_id.parse::<EventId>() else {
                    continue;
                };
                session
                    .send(Outbound::Text(rpc::decision_notification(event).into()))
                    .await;
                (last, after) = (Some(id), id);
                replayed += 1;
            }
            if !page.more {
                return Ok(());
            }
        }
    }
    .await;
    session.end_replay(since, last);
    result.map(|()| replayed)
}

//! The decision listener: one Redis pub/sub subscription per hub, pushing each
//! `quorum.decision.made` event to every open session.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use futures::StreamExt;

use crate::error::Error;
use crate::hub::Hub;
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
        tokio::select! {
            _ = hub.shutdown.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(RESUBSCRIBE_MAX_DELAY);
    }
}

async fn forward(hub: &Hub) -> Result<(), Error> {
    let mut pubsub = hub.store.client().get_async_pubsub().await?;
    pubsub.subscribe(DECISION_EVENTS_CHANNEL).await?;
    hub.set_listening(true);
    tracing::info!(
        channel = DECISION_EVENTS_CHANNEL,
        "decision listener subscribed"
    );
    let mut messages = pubsub.on_message();
    loop {
        let message = tokio::select! {
            _ = hub.shutdown.cancelled() => return Ok(()),
            message = messages.next() => message,
        };
        let Some(message) = message else {
            tracing::warn!("pub/sub link to Redis closed");
            return Ok(());
        };
        match store::parse_decision_event(message.get_payload_bytes()) {
            Ok(event) => {
                tracing::info!(decision = %event.decision, value = %event.value, "decision made");
                hub.broadcast(&Utf8Bytes::from(rpc::decision_notification(&event)));
            }
            Err(err) => tracing::error!(%err, "ignoring a malformed decision event"),
        }
    }
}

//! Decision events (decisions made and decisions expired, the entries of the event log):
//! one Redis pub/sub subscription per hub feeding every session, gap
//! recovery from the stream after a dropped link (after checking that the log is still the
//! one the hub delivered from). (Replays for resuming clients are the session's:
//! [`crate::session::replay`]; the cluster's sweep for decisions left unlogged is
//! [`crate::tasks::sweep`].)
//!
//! The subscription is a RESP3 connection of its own to the node that carries decision
//! events: the one Redis (`SUBSCRIBE`), or on a cluster the primary serving the event
//! log's slot (`SSUBSCRIBE` on its shard channel, so publishing a decision costs the same
//! however many nodes the cluster has). When that link drops, or the cluster moves the
//! slot, the hub asks again where the events are and subscribes there.

use std::sync::Arc;
use std::time::Duration;

use redis::{AsyncConnectionConfig, PushInfo, PushKind, Value};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::error::Error;
use crate::hub::{Hub, fingerprint};
use crate::protocol::{
    EventId, EventsIncomplete, InstanceRegistered, InstanceUnregistered, LoggedEvent, VoteRecorded,
    event, frame,
};
use crate::store::{self, CursorPlace, Store};

/// First pause before resubscribing after the pub/sub link failed.
pub const RESUBSCRIBE_MIN_DELAY: Duration = Duration::from_millis(100);
/// Longest pause between resubscription attempts.
pub const RESUBSCRIBE_MAX_DELAY: Duration = Duration::from_secs(2);
/// Longest the subscription link waits to connect, or for a reply to a (un)subscribe.
const LINK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the dashboards flags a hub sets live.
const DASHBOARDS_FLAG_TTL: Duration = Duration::from_secs(5);
/// How often the listener checks that its link still answers (`PING`): a link whose peer
/// vanished without closing it would otherwise look quiet forever.
const LINK_CHECK_PERIOD: Duration = Duration::from_secs(5);
/// Dashboard events (`quorum.vote.recorded`, `instance.*`) a hub holds between receiving
/// them from Redis and passing them to their subscribers; beyond it, new ones are dropped
/// and counted. Every vote publishes one, so a hub that cannot keep up holds this many at
/// most instead of a backlog that grows with the vote rate.
pub const DASHBOARD_BACKLOG: usize = 1024;

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
async fn forward(hub: &Arc<Hub>) -> Result<(), Error> {
    // The starting point is read before subscribing: an event decided between the two is
    // then after it, and the gap read below delivers it (read after subscribing, it would
    // count as delivered without ever being pushed).
    if hub.delivered().is_none() {
        hub.start_delivery_at(hub.store.unguarded().last_event().await?.as_ref());
    }
    let store = hub.store.unguarded();
    let channel = store.layout().decision_channel();
    // With sentinels: a new primary means subscribing there (taken before the client, so
    // that no change between the two is missed).
    let mut primary_moves = store.primary_changes();
    let client = store.events_client().await?;
    // Decision events and the link's own messages go to the loop below, unbounded: Redis
    // sends only what this hub subscribed to, and decisions come at the rate they are made.
    // Dashboard events go to a task of their own through a bounded backlog, so that a
    // decision never waits behind them and a vote rate the hub cannot pass on to a
    // dashboard costs dropped dashboard events, never memory.
    let (pushes_tx, mut pushes) = tokio::sync::mpsc::unbounded_channel();
    let (dashboard_tx, dashboard_rx) = tokio::sync::mpsc::channel(DASHBOARD_BACKLOG);
    let dropped = hub.metrics.dashboard_events_dropped.clone();
    let route = move |push: PushInfo| {
        if is_dashboard_event(&push, channel) {
            if dashboard_tx.try_send(push).is_err() {
                dropped.inc();
            }
            return Ok(());
        }
        pushes_tx.send(push)
    };
    let _dashboard_events = AbortOnDrop(tokio::spawn(pass_dashboard_events(
        hub.clone(),
        dashboard_rx,
    )));
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(LINK_TIMEOUT))
        .set_response_timeout(Some(LINK_TIMEOUT))
        .set_push_sender(route);
    let mut link = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    if store.layout().is_cluster() {
        redis::cmd("SSUBSCRIBE")
            .arg(channel)
            .exec_async(&mut link)
            .await?;
    } else {
        link.subscribe(channel).await?;
    }
    // Live events published from here on wait in the subscription while the log is checked
    // and the gap is read; `Hub::deliver` drops the ones the gap read already delivered.
    check_continuity(hub).await?;
    let caught_up = catch_up(hub).await?;
    if caught_up > 0 {
        tracing::info!(
            events = caught_up,
            "delivered decision events missed while the pub/sub link was down"
        );
    }
    hub.set_listening(true);
    tracing::info!(channel, "decision listener subscribed");
    // Dashboard events flow only while some session here wants them: a hub without
    // dashboards should not pay for reading them. Votes are published at all only while
    // some hub keeps the dashboards flags set (the vote script asks), so that a fleet
    // without dashboards does not pay for publishing them.
    let mut watched = hub.dashboards_wanted();
    let mut dashboards = false;
    let mut link_check = tokio::time::interval(LINK_CHECK_PERIOD);
    link_check.reset();
    loop {
        let wanted = *watched.borrow_and_update();
        if wanted != dashboards {
            if wanted {
                link.subscribe(&store::DASHBOARD_CHANNELS[..]).await?;
                // Set before the subscription is reported live, so that votes on any hub
                // are published from then on (`tasks::dashboards` keeps them set).
                flag_dashboards(&store).await;
            } else {
                link.unsubscribe(&store::DASHBOARD_CHANNELS[..]).await?;
            }
            dashboards = wanted;
            hub.set_dashboards_live(dashboards);
        }
        let push = tokio::select! {
            _ = hub.shutdown.cancelled() => return Ok(()),
            _ = watched.changed() => continue,
            _ = primary_moved(&mut primary_moves) => {
                tracing::warn!("the sentinels name a new primary; subscribing there");
                return Ok(());
            }
            _ = link_check.tick() => {
                redis::cmd("PING").exec_async(&mut link).await?;
                continue;
            }
            push = pushes.recv() => push,
        };
        let Some(push) = push else {
            tracing::warn!("pub/sub link to Redis closed");
            return Ok(());
        };
        let (from, payload) = match (push.kind, push.data.as_slice()) {
            (PushKind::Message | PushKind::SMessage, [from, payload, ..]) => (from, payload),
            (PushKind::Disconnection, _) => {
                tracing::warn!("pub/sub link to Redis closed");
                return Ok(());
            }
            // The node no longer serves the event log's slot (moved, or failed over).
            (PushKind::SUnsubscribe, _) => {
                tracing::warn!("the event log's slot moved; subscribing where it is now");
                return Ok(());
            }
            _ => continue,
        };
        let (Value::BulkString(from), Value::BulkString(payload)) = (from, payload) else {
            continue;
        };
        if from.as_slice() != channel.as_bytes() {
            continue;
        }
        // Untagged: a decision made carries `value`, an expired one `tally`, and each type
        // refuses the other's fields.
        match serde_json::from_slice::<LoggedEvent>(payload) {
            Ok(event) => {
                match &event {
                    LoggedEvent::Made(made) => {
                        tracing::info!(decision = %made.decision, value = %made.value, "decision made");
                    }
                    LoggedEvent::Expired(expired) => tracing::info!(
                        decision = %expired.decision,
                        votes = expired.vote_count,
                        quorum = expired.quorum,
                        "decision expired"
                    ),
                }
                deliver(hub, &event).await;
            }
            Err(err) => tracing::error!(%err, "ignoring a malformed decision event"),
        }
    }
}

/// Resolves when the sentinels name another primary; never without sentinels.
async fn primary_moved<T>(moves: &mut Option<tokio::sync::watch::Receiver<T>>) {
    let Some(moves) = moves else {
        return std::future::pending().await;
    };
    if moves.changed().await.is_err() {
        std::future::pending().await
    }
}

/// Sets the dashboards flag, every partition's on a cluster (a failure is logged:
/// dashboard events are best effort).
pub(crate) async fn flag_dashboards(store: &crate::store::Store) {
    match tokio::time::timeout(LINK_TIMEOUT, store.flag_dashboards(DASHBOARDS_FLAG_TTL)).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::warn!(%err, "could not set the dashboards flags"),
        Err(_) => tracing::warn!("setting the dashboards flags timed out"),
    }
}

/// Whether `push` is a message on a channel other than the decision channel: a dashboard
/// event.
fn is_dashboard_event(push: &PushInfo, decision_channel: &str) -> bool {
    matches!(push.kind, PushKind::Message | PushKind::SMessage)
        && matches!(push.data.first(), Some(Value::BulkString(from)) if from.as_slice() != decision_channel.as_bytes())
}

/// Aborts a task when dropped: the dashboard task ends with the link it serves.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Passes the dashboard events of one subscription link to their subscribers, until the
/// link ends.
async fn pass_dashboard_events(hub: Arc<Hub>, mut events: tokio::sync::mpsc::Receiver<PushInfo>) {
    while let Some(push) = events.recv().await {
        if let [Value::BulkString(from), Value::BulkString(payload), ..] = push.data.as_slice()
            && let Ok(from) = std::str::from_utf8(from)
        {
            forward_subscribed(&hub, from, payload);
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

/// Checks, after (re)subscribing, that the event log is a continuation of the one this hub
/// delivered from: the same epoch, and still holding the last event delivered, as it was
/// delivered. Where it is not (a failover to a replica that lacked the newest events, a
/// Redis that lost its data), the hub goes back to the newest event it delivered that the
/// log still holds (or before the log's newest), so that new events are never dropped as
/// already delivered, and tells every session. Where only events after the hub's position
/// were trimmed (it was away longer than the log keeps), it tells every session so.
async fn check_continuity(hub: &Hub) -> Result<(), Error> {
    let store = hub.store.unguarded();
    let epoch = store.log_epoch().await?;
    let replaced = hub.log_epoch().filter(|before| *before != epoch);
    if let Some(delivered) = hub.delivered() {
        follow_log(hub, &store, delivered, replaced.as_deref()).await?;
    }
    // Recorded only once the hub follows the log it found: a check cut short by a Redis
    // error is made again in full.
    hub.set_log_epoch(epoch);
    Ok(())
}

/// [`check_continuity`] for a hub that stands after `delivered`, given the epoch it read
/// before if the log now has another.
async fn follow_log(
    hub: &Hub,
    store: &Store,
    delivered: EventId,
    replaced: Option<&str>,
) -> Result<(), Error> {
    let placed = store.place_cursor(delivered).await?;
    let holding = |notice: EventsIncomplete| notice.holding(placed.oldest, placed.newest);
    let continued = match placed.place {
        // Another epoch is another log (a Redis that lost its data made it anew), whatever
        // ids it holds: sessions are always told, even when every event delivered is in it,
        // unless the hub stands at the very beginning (there is nothing to take back).
        _ if replaced.is_some() => delivered == EventId::ZERO,
        CursorPlace::Kept => still_holds(hub, store, delivered).await?,
        CursorPlace::Trimmed => {
            tracing::warn!(
                %delivered,
                "decision events after the last one this hub delivered are no longer in the event log (it was away longer than the log keeps); telling every session"
            );
            let notice = holding(EventsIncomplete::after(delivered));
            hub.notify_all(&frame::events_incomplete(&notice).into());
            true
        }
        CursorPlace::Missing | CursorPlace::Ahead { .. } => false,
    };
    if continued {
        return Ok(());
    }
    // Never after `delivered`: every event the log holds after it is delivered, whatever
    // its id (a log made anew after a data loss logs ids above the ones delivered).
    let to = match newest_delivered_held(hub, store).await? {
        Some(held) => held.min(delivered),
        // Nothing delivered recently is in the log: its newest events are delivered (at
        // most a bounded number, so that sessions are not flooded), after the notice.
        None => store
            .nth_newest_event(REWOUND_REDELIVERY)
            .await?
            .map_or(EventId::ZERO, EventId::predecessor)
            .min(delivered),
    };
    tracing::warn!(
        %delivered,
        rewound_to = %to,
        epoch_before = ?replaced,
        "the event log is not a continuation of the one this hub delivered from (a Redis failover lost events it delivered, or Redis lost its data); delivering again from the newest event it delivered that the log still holds, and telling every session"
    );
    let notice = frame::events_incomplete(&holding(EventsIncomplete::rewound(delivered, to)));
    hub.rewind(to, Some(&Utf8Bytes::from(notice)));
    Ok(())
}

/// When a hub finds that none of the events it delivered recently is in the log, how many
/// of the log's newest events it delivers again (after the notice): bounded, so that a log
/// replaced wholesale does not close every session as a slow consumer.
const REWOUND_REDELIVERY: usize = 256;

/// Events whose places in the log are looked up per round trip when searching for the
/// newest one this hub delivered.
const DELIVERED_SEARCH_PAGE: usize = 64;

/// Whether the log holds the hub's last delivered event as it was delivered (a promoted
/// replica may have logged another event under its id). A position the hub started at
/// without delivering it, and no longer remembers, is taken as held (the cursor was placed
/// among the log's entries).
async fn still_holds(hub: &Hub, store: &Store, delivered: EventId) -> Result<bool, Error> {
    let Some((_, print)) = hub
        .recent_deliveries()
        .into_iter()
        .find(|(id, _)| *id == delivered)
    else {
        return Ok(true);
    };
    let held = store.events_at(&[delivered]).await?;
    Ok(held
        .first()
        .and_then(Option::as_ref)
        .is_some_and(|event| fingerprint(&frame::logged_event(event)) == print))
}

/// The newest event this hub delivered recently that the log holds as it was delivered.
async fn newest_delivered_held(hub: &Hub, store: &Store) -> Result<Option<EventId>, Error> {
    for page in hub.recent_deliveries().chunks(DELIVERED_SEARCH_PAGE) {
        let ids: Vec<EventId> = page.iter().map(|(id, _)| *id).collect();
        let held = store.events_at(&ids).await?;
        let found = page.iter().zip(held).find_map(|((id, print), event)| {
            event
                .is_some_and(|event| fingerprint(&frame::logged_event(&event)) == *print)
                .then_some(*id)
        });
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

/// Delivers every stream event after the hub's last delivered one. Returns how many.
async fn catch_up(hub: &Hub) -> Result<usize, Error> {
    let mut delivered = 0;
    // Past the breaker, like the subscription: delivery resumes as soon as Redis answers.
    let store = hub.store.unguarded();
    while let Some(after) = hub.delivered() {
        let page = store.events_after(after, None).await?;
        for event in &page.events {
            delivered += usize::from(deliver(hub, event).await);
        }
        if !page.more {
            break;
        }
    }
    Ok(delivered)
}

async fn deliver(hub: &Hub, event: &LoggedEvent) -> bool {
    hub.deliver(
        event.event_id(),
        &Utf8Bytes::from(frame::logged_event(event)),
    )
    .await
}

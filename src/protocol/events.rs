//! The payloads of pushed notifications, and a notification typed by its method name.

use serde::{Deserialize, Serialize};

use super::{EventId, event};

/// `quorum.decision.made`: a decision was fixed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DecisionEvent {
    pub decision: String,
    pub value: String,
    pub vote_count: u64,
    pub quorum: u64,
    pub total_instances: u64,
    /// Unique and identical for every observer; resume after it with `?lastEventId=`.
    pub event_id: EventId,
    pub timestamp: u64,
}

/// `quorum.vote.recorded`: one vote was recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VoteRecorded {
    pub decision: String,
    pub instance_id: String,
    pub value: String,
    pub vote_count: u64,
    pub quorum: u64,
    pub total_instances: u64,
}

/// `instance.registered`: an instance registered or refreshed its registration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstanceRegistered {
    pub instance_id: String,
    pub roles: Vec<String>,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub status: String,
    pub last_seen: u64,
}

/// `instance.unregistered`: an instance was removed, or its session closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstanceUnregistered {
    pub instance_id: String,
    /// `unregistered` or `disconnected`.
    pub reason: String,
}

/// `system.events.incomplete`: the session cannot be given every decision event after its
/// cursor. `since` is where the events that follow pick up: the cursor itself when events
/// after it are lost or unreadable, the newest event when the cursor could not be placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventsIncomplete {
    pub since: EventId,
    pub reason: GapReason,
    pub message: String,
}

/// Why a session's events are incomplete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GapReason {
    /// Events after the cursor are no longer kept (the stream's cap trimmed them).
    Trimmed,
    /// Redis could not be read; resuming from `since` later may fill the gap.
    Unreadable,
    /// The cursor is newer than any event the hub has (another Redis, or made up).
    Ahead,
    /// The cursor is not an event id.
    Malformed,
}

/// Longest part of a rejected cursor quoted back in a notice.
const QUOTED_CURSOR_LEN: usize = 64;

impl EventsIncomplete {
    /// The events after `since` could not be read just now (Redis is unavailable).
    pub fn unreadable(since: EventId) -> Self {
        Self {
            since,
            reason: GapReason::Unreadable,
            message: format!(
                "the decision events after {since} could not be read (Redis is unavailable); \
                 once the hub is ready again, reconnect with lastEventId={since} or call \
                 system.subscribe with since {since}"
            ),
        }
    }

    /// Some events after `since` are no longer kept; the ones that follow are all that remain.
    pub fn after(since: EventId) -> Self {
        Self {
            since,
            reason: GapReason::Trimmed,
            message: format!(
                "some decision events after {since} are no longer kept; the ones that follow \
                 are all that remain, so call system.get_state for the current state of every \
                 decision"
            ),
        }
    }

    /// The cursor `cursor` is newer than the newest event, `newest`; events after `newest`
    /// follow.
    pub fn ahead(cursor: EventId, newest: EventId) -> Self {
        Self {
            since: newest,
            reason: GapReason::Ahead,
            message: format!(
                "event {cursor} is newer than any decision event this hub knows (the newest \
                 is {newest}): it comes from another Redis, or was made up; the events after \
                 {newest} follow, so call system.get_state for the current state of every \
                 decision"
            ),
        }
    }

    /// The cursor `raw` is not an event id; events after `live_after` follow.
    pub fn malformed(raw: &str, live_after: EventId) -> Self {
        let quoted: String = raw.chars().take(QUOTED_CURSOR_LEN).collect();
        Self {
            since: live_after,
            reason: GapReason::Malformed,
            message: format!(
                "lastEventId {quoted:?} is not an event id (expected <ms>-<seq>, e.g. \
                 1764230000000-0); the events after {live_after} follow, so call \
                 system.get_state for the current state of every decision"
            ),
        }
    }
}

/// `system.instance.lost`: this session's instance was taken by another session (its
/// binding lapsed while Redis was unreachable); the session is closed next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstanceLost {
    pub instance_id: String,
    pub message: String,
}

impl InstanceLost {
    pub fn new(instance: &str) -> Self {
        Self {
            instance_id: instance.to_owned(),
            message: format!(
                "instance {instance} is now bound to another session (this session's binding \
                 lapsed while Redis was unreachable); this session closes: open a new one \
                 and register once the other session has let the instance go"
            ),
        }
    }
}

/// A notification as a peer receives it.
#[derive(Debug, Clone, PartialEq)]
pub enum Notification {
    DecisionMade(DecisionEvent),
    EventsIncomplete(EventsIncomplete),
    InstanceLost(InstanceLost),
    VoteRecorded(VoteRecorded),
    InstanceRegistered(InstanceRegistered),
    InstanceUnregistered(InstanceUnregistered),
    /// An event this version does not know, or one whose params did not parse.
    Other {
        method: String,
        params: serde_json::Value,
    },
}

impl Notification {
    /// Types a notification by its method name.
    pub fn parse(method: String, params: serde_json::Value) -> Self {
        fn typed<T: serde::de::DeserializeOwned>(
            params: &serde_json::Value,
            wrap: fn(T) -> Notification,
        ) -> Option<Notification> {
            T::deserialize(params).ok().map(wrap)
        }
        let parsed = match method.as_str() {
            event::DECISION_MADE => typed(&params, Notification::DecisionMade),
            event::EVENTS_INCOMPLETE => typed(&params, Notification::EventsIncomplete),
            event::INSTANCE_LOST => typed(&params, Notification::InstanceLost),
            event::VOTE_RECORDED => typed(&params, Notification::VoteRecorded),
            event::INSTANCE_REGISTERED => typed(&params, Notification::InstanceRegistered),
            event::INSTANCE_UNREGISTERED => typed(&params, Notification::InstanceUnregistered),
            _ => None,
        };
        parsed.unwrap_or(Notification::Other { method, params })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_notifications_are_kept_not_dropped() {
        let n = Notification::parse("future.event".into(), serde_json::json!({"x": 1}));
        assert!(matches!(n, Notification::Other { ref method, .. } if method == "future.event"));
    }
}

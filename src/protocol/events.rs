//! The payloads of pushed notifications, and a notification typed by its method name.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{EventId, event};

/// `quorum.decision.made`: a decision was fixed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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

/// `quorum.decision.expired`: a decision's deadline passed without quorum; it is closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DecisionExpired {
    pub decision: String,
    pub vote_count: u64,
    pub quorum: u64,
    pub total_instances: u64,
    /// Count per value at expiry, in the order each value first received a vote.
    #[schemars(with = "std::collections::BTreeMap<String, u64>")]
    pub tally: serde_json::Map<String, serde_json::Value>,
    /// In the same sequence as decision events; resume after it with `?lastEventId=`.
    pub event_id: EventId,
    /// When the decision expired (ms).
    pub timestamp: u64,
}

/// One entry of the event log: a decision made, or a decision expired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum LoggedEvent {
    Made(DecisionEvent),
    Expired(DecisionExpired),
}

impl LoggedEvent {
    pub fn event_id(&self) -> EventId {
        match self {
            LoggedEvent::Made(event) => event.event_id,
            LoggedEvent::Expired(event) => event.event_id,
        }
    }

    pub fn decision(&self) -> &str {
        match self {
            LoggedEvent::Made(event) => &event.decision,
            LoggedEvent::Expired(event) => &event.decision,
        }
    }
}

/// `quorum.vote.recorded`: one vote was recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstanceRegistered {
    pub instance_id: String,
    pub roles: Vec<String>,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub status: String,
    pub last_seen: u64,
}

/// `instance.unregistered`: an instance was removed, or its session closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstanceUnregistered {
    pub instance_id: String,
    /// `unregistered` or `disconnected`.
    pub reason: String,
}

/// `system.events.incomplete`: the session cannot be given every decision event after its
/// cursor. `since` is where the events that follow pick up: the cursor itself when events
/// after it are lost, unreadable or not in the log, the newest event when the cursor is
/// ahead of the log, the point the hub went back to when its log was rewound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct EventsIncomplete {
    pub since: EventId,
    pub reason: GapReason,
    pub message: String,
    /// The oldest event the hub's event log holds (absent when the log is empty or could
    /// not be read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest: Option<EventId>,
    /// The newest event the hub's event log holds (absent when the log is empty or could
    /// not be read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest: Option<EventId>,
}

/// Why a session's events are incomplete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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
    /// The cursor is within the log's range but not one of its events (lost in a Redis
    /// failover, or from another log); the events after it follow.
    Unknown,
    /// The hub's event log is not a continuation of the one it delivered from (a Redis
    /// failover lost events the hub had delivered, or the log was replaced); the events
    /// that follow may have ids below ones already received.
    Rewound,
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
            oldest: None,
            newest: None,
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
            oldest: None,
            newest: None,
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
            oldest: None,
            newest: None,
        }
    }

    /// The cursor `cursor` is within the log's range but is not one of its events; the
    /// events after it follow.
    pub fn unknown(cursor: EventId) -> Self {
        Self {
            since: cursor,
            reason: GapReason::Unknown,
            message: format!(
                "event {cursor} is not in this hub's event log: it was lost in a Redis \
                 failover, or comes from another log; the decision events after it follow, \
                 but some you have not seen may be missing, so call system.get_state for the \
                 current state of every decision"
            ),
            oldest: None,
            newest: None,
        }
    }

    /// The hub's event log no longer holds events it delivered up to `delivered`; it went
    /// back to `since`, and the events after that in the log as it is now follow.
    pub fn rewound(delivered: EventId, since: EventId) -> Self {
        Self {
            since,
            reason: GapReason::Rewound,
            message: format!(
                "this hub's event log is not the one it delivered from (a Redis failover \
                 lost decision events it had delivered, up to {delivered}, or the log was \
                 replaced): decisions you received may be missing from it, and the events \
                 after {since} that follow may have ids below ones you already have; call \
                 system.get_state for the current state of every decision"
            ),
            oldest: None,
            newest: None,
        }
    }

    /// The same notice, saying which events the log holds.
    pub fn holding(self, oldest: Option<EventId>, newest: Option<EventId>) -> Self {
        Self {
            oldest,
            newest,
            ..self
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
            oldest: None,
            newest: None,
        }
    }
}

/// `system.instance.lost`: this session's instance was taken by another session (its
/// binding lapsed while Redis was unreachable); the session is closed next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
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
    DecisionExpired(DecisionExpired),
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
            event::DECISION_EXPIRED => typed(&params, Notification::DecisionExpired),
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
    fn a_notice_names_what_the_log_holds_only_when_known() {
        let id = |text: &str| text.parse::<EventId>().unwrap();
        let bare = serde_json::to_value(EventsIncomplete::unreadable(id("5-0"))).unwrap();
        assert!(
            bare.get("oldest").is_none() && bare.get("newest").is_none(),
            "{bare}"
        );
        let notice = EventsIncomplete::unknown(id("5-0")).holding(Some(id("1-0")), Some(id("9-0")));
        let sent = serde_json::to_value(&notice).unwrap();
        assert_eq!(sent["reason"], "unknown");
        assert_eq!(
            (&sent["oldest"], &sent["newest"]),
            (&"1-0".into(), &"9-0".into())
        );
        assert_eq!(
            Notification::parse(event::EVENTS_INCOMPLETE.into(), sent),
            Notification::EventsIncomplete(notice)
        );
        // A notice from a hub that does not send them still reads.
        let older = serde_json::json!({"since": "5-0", "reason": "trimmed", "message": "m"});
        let Notification::EventsIncomplete(older) =
            Notification::parse(event::EVENTS_INCOMPLETE.into(), older)
        else {
            panic!("not read as a notice")
        };
        assert_eq!((older.oldest, older.newest), (None, None));
        let rewound =
            serde_json::to_value(EventsIncomplete::rewound(id("9-0"), id("4-0"))).unwrap();
        assert_eq!(
            (&rewound["reason"], &rewound["since"]),
            (&"rewound".into(), &"4-0".into())
        );
    }

    #[test]
    fn an_expired_decision_reads_as_its_own_notification_and_not_as_a_decision() {
        let params = serde_json::json!({
            "decision": "d", "voteCount": 3, "quorum": 3, "totalInstances": 5,
            "tally": {"yes": 1, "no": 2}, "eventId": "7-1", "timestamp": 7,
        });
        let Notification::DecisionExpired(expired) =
            Notification::parse(event::DECISION_EXPIRED.into(), params.clone())
        else {
            panic!("not read as an expired decision")
        };
        assert_eq!(expired.event_id, "7-1".parse::<EventId>().unwrap());
        let order: Vec<&str> = expired.tally.keys().map(String::as_str).collect();
        assert_eq!(order, ["yes", "no"]);
        // What the hub sends is what it read, in the same order.
        assert_eq!(serde_json::to_value(&expired).unwrap(), params);
        // The log's two kinds of payload tell themselves apart.
        let logged: LoggedEvent = serde_json::from_value(params.clone()).unwrap();
        assert_eq!(logged, LoggedEvent::Expired(expired));
        let made = serde_json::json!({
            "decision": "d", "value": "yes", "voteCount": 2, "quorum": 2,
            "totalInstances": 3, "eventId": "5-0", "timestamp": 5,
        });
        assert!(matches!(
            serde_json::from_value::<LoggedEvent>(made.clone()).unwrap(),
            LoggedEvent::Made(_)
        ));
        // Each kind's params under the other's name are not taken for it.
        assert!(matches!(
            Notification::parse(event::DECISION_MADE.into(), params),
            Notification::Other { .. }
        ));
        assert!(matches!(
            Notification::parse(event::DECISION_EXPIRED.into(), made),
            Notification::Other { .. }
        ));
    }

    #[test]
    fn unknown_notifications_are_kept_not_dropped() {
        let n = Notification::parse("future.event".into(), serde_json::json!({"x": 1}));
        assert!(matches!(n, Notification::Other { ref method, .. } if method == "future.event"));
    }
}

//! The wire contract shared by the hub and its peers: method and event names, typed
//! params, results and event payloads. The hub serializes these types; the client, the
//! tools and the bench deserialize the same ones.
//!
//! - here: method and event names, and [`EventId`].
//! - `params`, `results`, `events`: what peers send, what the hub answers, what it pushes.
//! - [`frame`]: JSON-RPC 2.0 framing: parsing frames, encoding replies and notifications.
//! - [`request`]: a call's method and params validated into a typed [`Request`].
//! - [`peer`]: the client side: one request/response helper over a WebSocket.

/// Puts a type on the wire as its text form: serialized with `Display`, read with `FromStr`
/// (whose error becomes the deserializer's).
macro_rules! wire_as_text {
    ($type:ty) => {
        impl serde::Serialize for $type {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $type {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str> as serde::Deserialize<'de>>::deserialize(
                    deserializer,
                )?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// Describes a type put on the wire by [`wire_as_text!`] to JSON Schema: a string with a
/// pattern.
macro_rules! schema_as_text {
    ($type:ty, $name:literal, $pattern:expr, $description:literal) => {
        impl schemars::JsonSchema for $type {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                $name.into()
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "type": "string",
                    "pattern": $pattern,
                    "description": $description,
                })
            }
        }
    };
}

mod events;
mod fields;
pub mod frame;
pub mod openrpc;
mod params;
pub mod peer;
pub mod policy;
pub mod push;
pub mod request;
mod results;
pub mod sse;
pub mod webhook;

pub use events::{
    DecisionEvent, DecisionExpired, EventsIncomplete, GapReason, InstanceLost, InstanceRegistered,
    InstanceUnregistered, LoggedEvent, Notification, VoteRecorded,
};
pub use params::{
    InstanceParams, NoParams, RefreshParams, RegisterParams, StateParams, StatusParams,
    SubscribeParams, UnsubscribeParams, VoteParams,
};
pub use request::Request;
pub use results::{
    Alive, BreakerState, DecisionCursor, DecisionState, DecisionStatus, DecisionSummary, HubInfo,
    InstanceInfo, NotVoted, RecordedVote, Refreshed, Registered, SessionInfo, State, Subscribed,
    Unregistered, VoteReply,
};

/// Method names.
pub mod method {
    pub const REGISTER: &str = "system.register";
    pub const HEARTBEAT: &str = "system.heartbeat";
    pub const UNREGISTER: &str = "system.unregister";
    pub const VOTE: &str = "system.quorum.vote";
    pub const STATUS: &str = "system.quorum.status";
    pub const GET_STATE: &str = "system.get_state";
    pub const SUBSCRIBE: &str = "system.subscribe";
    pub const UNSUBSCRIBE: &str = "system.unsubscribe";
    pub const AUTH_REFRESH: &str = "system.auth.refresh";
    pub const WEBHOOKS_ADD: &str = "system.webhooks.add";
    pub const WEBHOOKS_LIST: &str = "system.webhooks.list";
    pub const WEBHOOKS_REMOVE: &str = "system.webhooks.remove";
    pub const WEBHOOKS_ENABLE: &str = "system.webhooks.enable";
    pub const WEBHOOKS_ROTATE: &str = "system.webhooks.rotate";
    pub const WEBHOOKS_DELIVERIES: &str = "system.webhooks.deliveries";
    pub const PUSH_SUBSCRIBE: &str = "system.push.subscribe";
    pub const PUSH_UNSUBSCRIBE: &str = "system.push.unsubscribe";
    pub const PUSH_LIST: &str = "system.push.list";
    /// Returns the hub's OpenRPC document (the same as `GET /openrpc.json`).
    pub const POLICIES_SET: &str = "system.policies.set";
    pub const POLICIES_LIST: &str = "system.policies.list";
    pub const POLICIES_REMOVE: &str = "system.policies.remove";
    pub const DISCOVER: &str = "rpc.discover";

    /// Every method the hub serves.
    pub const ALL: [&str; 22] = [
        REGISTER,
        HEARTBEAT,
        UNREGISTER,
        VOTE,
        STATUS,
        GET_STATE,
        SUBSCRIBE,
        UNSUBSCRIBE,
        AUTH_REFRESH,
        WEBHOOKS_ADD,
        WEBHOOKS_LIST,
        WEBHOOKS_REMOVE,
        WEBHOOKS_ENABLE,
        WEBHOOKS_ROTATE,
        WEBHOOKS_DELIVERIES,
        PUSH_SUBSCRIBE,
        PUSH_UNSUBSCRIBE,
        PUSH_LIST,
        POLICIES_SET,
        POLICIES_LIST,
        POLICIES_REMOVE,
        DISCOVER,
    ];
}

/// The JSON Schema patterns (ECMA-262, as JSON Schema reads them) of the texts the hub
/// checks; the validation code in `request`, `decision` and `instance` is the rule, these
/// describe it.
pub mod pattern {
    /// Instance ids, decision names and roles: no whitespace, control characters or braces
    /// (Unicode's `White_Space` and `Cc`, spelled out).
    pub const NAME: &str =
        r"^[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000{}]+$";
    /// Vote values: no control characters.
    pub const VALUE: &str = r"^[^\x00-\x1f\x7f-\x9f]+$";
    /// Event ids: `<ms>-<seq>`, or a bare `<ms>`.
    pub const EVENT_ID: &str = r"^[0-9]{1,20}(-[0-9]{1,20})?$";
    /// `get_state` page cursors: `<openedAt>:<decision>`.
    pub const CURSOR: &str = r"^[0-9]{1,20}:.+$";
    /// Webhook endpoint ids.
    pub const WEBHOOK_ID: &str = r"^[A-Za-z0-9_-]{1,64}$";
    /// Subscription patterns: an event name, or a prefix followed by `.*`.
    pub const EVENT_PATTERN: &str = r"^[a-z]+(\.[a-z]+)*(\.\*)?$";
}

/// The reasons a hub gives when it closes a WebSocket session (the close frame's reason).
pub mod close {
    /// Close codes the hub sends (RFC 6455, section 7.4.1).
    pub mod code {
        /// The hub is shutting down.
        pub const GOING_AWAY: u16 = 1001;
        /// A binary frame: the protocol is JSON-RPC in text frames.
        pub const UNSUPPORTED_DATA: u16 = 1003;
        /// The session broke a rule: a slow consumer, a flood of calls, unanswered pings,
        /// an expired token, its instance taken.
        pub const POLICY_VIOLATION: u16 = 1008;
        /// A message over the size limit.
        pub const MESSAGE_TOO_BIG: u16 = 1009;
    }

    pub const SHUTTING_DOWN: &str = "hub shutting down";
    pub const TOKEN_EXPIRED: &str = "token expired";
    pub const INSTANCE_TAKEN: &str = "instance taken by another session";
    pub const SLOW_CONSUMER: &str = "slow consumer";
    pub const PING_TIMEOUT: &str = "ping timeout";
    pub const FLOODING: &str = "flooding: too many calls";
    pub const TOO_BIG: &str = "message too big";
    pub const BINARY: &str = "binary frames are not supported; send JSON-RPC as text";
}

/// Notification (event) names.
pub mod event {
    /// A decision was fixed; pushed to every session.
    pub const DECISION_MADE: &str = "quorum.decision.made";
    /// A decision's deadline passed without quorum; pushed to every session.
    pub const DECISION_EXPIRED: &str = "quorum.decision.expired";
    /// A vote was recorded (dashboards subscribe to it).
    pub const VOTE_RECORDED: &str = "quorum.vote.recorded";
    pub const INSTANCE_REGISTERED: &str = "instance.registered";
    pub const INSTANCE_UNREGISTERED: &str = "instance.unregistered";
    /// A replay could not return every missed decision event.
    pub const EVENTS_INCOMPLETE: &str = "system.events.incomplete";
    /// Another session took this session's instance; the session is closed next.
    pub const INSTANCE_LOST: &str = "system.instance.lost";

    /// Events a session may subscribe to. `quorum.decision.made` and
    /// `quorum.decision.expired` reach every session whether it subscribes or not.
    pub const SUBSCRIBABLE: [&str; 5] = [
        DECISION_MADE,
        DECISION_EXPIRED,
        VOTE_RECORDED,
        INSTANCE_REGISTERED,
        INSTANCE_UNREGISTERED,
    ];

    /// Whether an event name matches a subscription pattern: the exact name, or a prefix
    /// followed by `.*`.
    pub fn pattern_matches(pattern: &str, name: &str) -> bool {
        match pattern.strip_suffix(".*") {
            Some(prefix) => {
                name.len() > prefix.len() + 1
                    && name.starts_with(prefix)
                    && name.as_bytes()[prefix.len()] == b'.'
            }
            None => name == pattern,
        }
    }
}

// ---- event ids ----

/// The id of a decision event in the hub's event log, `<ms>-<seq>`; ordered as Redis
/// orders stream ids. On the wire it is a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId {
    pub ms: u64,
    pub seq: u64,
}

impl EventId {
    pub const ZERO: EventId = EventId { ms: 0, seq: 0 };

    /// The id just before this one, for inclusive ranges that must stop short of it.
    pub fn predecessor(self) -> EventId {
        match (self.ms, self.seq) {
            (0, 0) => EventId::ZERO,
            (ms, 0) => EventId {
                ms: ms - 1,
                seq: u64::MAX,
            },
            (ms, seq) => EventId { ms, seq: seq - 1 },
        }
    }
}

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl std::str::FromStr for EventId {
    type Err = String;

    /// Accepts `<ms>-<seq>` or a bare `<ms>` (as Redis does), nothing else.
    fn from_str(s: &str) -> Result<Self, String> {
        let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
        let number = |part: &str| {
            (!part.is_empty() && part.len() <= 20 && part.bytes().all(|b| b.is_ascii_digit()))
                .then(|| part.parse::<u64>().ok())
                .flatten()
        };
        match (number(ms), number(seq)) {
            (Some(ms), Some(seq)) => Ok(EventId { ms, seq }),
            _ => Err(format!(
                "{s:?} is not an event id (expected <ms>-<seq>, e.g. 1764230000000-0)"
            )),
        }
    }
}

wire_as_text!(EventId);
schema_as_text!(
    EventId,
    "EventId",
    pattern::EVENT_ID,
    "The id of an event in the hub's event log, `<ms>-<seq>`, ordered as Redis orders stream ids."
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_order_like_redis_stream_ids() {
        let a: EventId = "1764230000000-0".parse().unwrap();
        let b: EventId = "1764230000000-1".parse().unwrap();
        let c: EventId = "1764230000001".parse().unwrap();
        assert!(a < b && b < c);
        assert_eq!(b.predecessor(), a);
        assert_eq!(
            c.predecessor(),
            EventId {
                ms: 1764230000000,
                seq: u64::MAX
            }
        );
        assert_eq!(a.to_string(), "1764230000000-0");
        for bad in [
            "",
            "-",
            "1-",
            "x-1",
            "1-2-3",
            "+",
            "1 -2",
            "99999999999999999999999-0",
        ] {
            assert!(bad.parse::<EventId>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn event_ids_are_strings_on_the_wire() {
        let id: EventId = "1764230000000-7".parse().unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"1764230000000-7\"");
        assert_eq!(
            serde_json::from_str::<EventId>("\"1764230000000-7\"").unwrap(),
            id
        );
        assert!(serde_json::from_str::<EventId>("17").is_err());
    }
}

//! What the document says of each method and notification: its name, summary, params
//! and, for a method, its result and the errors it can end with.

use schemars::{JsonSchema, SchemaGenerator};

use super::failures::{AS_INSTANCE, Failure, READS};
use crate::protocol::policy::{PolicyChanged, PolicyList, PolicyPatternParams, PolicySetParams};
use crate::protocol::push::{PushList, PushSubscribeParams, PushSubscribed, PushUnsubscribeParams};
use crate::protocol::webhook::{
    WebhookAddParams, WebhookChanged, WebhookDeliveries, WebhookDeliveriesParams, WebhookIdParams,
    WebhookList, WebhookSecret,
};
use crate::protocol::{
    Alive, DecisionEvent, DecisionExpired, DecisionStatus, EventsIncomplete, InstanceLost,
    InstanceParams, InstanceRegistered, InstanceUnregistered, NoParams, RefreshParams, Refreshed,
    RegisterParams, Registered, State, StateParams, StatusParams, SubscribeParams, Subscribed,
    Unregistered, UnsubscribeParams, VoteParams, VoteRecorded, VoteReply, event, method,
};

/// One method as the document describes it.
pub(super) struct MethodSpec {
    pub(super) name: &'static str,
    pub(super) summary: &'static str,
    pub(super) params: fn(&mut SchemaGenerator) -> schemars::Schema,
    pub(super) result: fn(&mut SchemaGenerator) -> schemars::Schema,
    pub(super) result_name: &'static str,
    pub(super) errors: &'static [Failure],
}

pub(super) fn params<T: JsonSchema>(generator: &mut SchemaGenerator) -> schemars::Schema {
    generator.root_schema_for::<T>()
}

fn result<T: JsonSchema>(generator: &mut SchemaGenerator) -> schemars::Schema {
    generator.subschema_for::<T>()
}

/// What a `system.webhooks.*` or `system.policies.*` call can end with.
const WEBHOOK_FAILURES: [Failure; 4] = [
    Failure::Unauthorized,
    Failure::NotFound,
    Failure::Backend,
    Failure::Internal,
];

/// What a `system.push.*` call can end with; only `system.push.list` asks for an admin.
const PUSH_FAILURES: [Failure; 4] = [
    Failure::Unauthorized,
    Failure::CircuitOpen,
    Failure::Backend,
    Failure::Internal,
];

pub(super) const METHODS: [MethodSpec; 21] = [
    MethodSpec {
        name: method::REGISTER,
        summary: "Registers this session as an instance (one per session); registering again \
                  refreshes roles and metadata.",
        params: params::<RegisterParams>,
        result: result::<Registered>,
        result_name: "Registered",
        errors: &AS_INSTANCE,
    },
    MethodSpec {
        name: method::HEARTBEAT,
        summary: "Keeps a registration alive without an open session.",
        params: params::<InstanceParams>,
        result: result::<Alive>,
        result_name: "Alive",
        errors: &AS_INSTANCE,
    },
    MethodSpec {
        name: method::UNREGISTER,
        summary: "Removes the instance's registration and frees it for another session.",
        params: params::<InstanceParams>,
        result: result::<Unregistered>,
        result_name: "Unregistered",
        errors: &AS_INSTANCE,
    },
    MethodSpec {
        name: method::VOTE,
        summary: "Records this instance's vote on a decision (once, immutable); the vote that \
                  reaches a majority of totalInstances (or the threshold of the decision's \
                  policy, among its electorate) fixes the decision.",
        params: params::<VoteParams>,
        result: result::<VoteReply>,
        result_name: "VoteReply",
        errors: &AS_INSTANCE,
    },
    MethodSpec {
        name: method::STATUS,
        summary: "A decision's state, tally and every recorded vote in arrival order.",
        params: params::<StatusParams>,
        result: result::<DecisionStatus>,
        result_name: "DecisionStatus",
        errors: &[
            Failure::NotFound,
            Failure::CircuitOpen,
            Failure::Backend,
            Failure::Internal,
        ],
    },
    MethodSpec {
        name: method::GET_STATE,
        summary: "One page of registered instances and one of decisions (newest first), with \
                  this hub and session.",
        params: params::<StateParams>,
        result: result::<State>,
        result_name: "State",
        errors: &READS,
    },
    MethodSpec {
        name: method::SUBSCRIBE,
        summary: "Adds event subscriptions; with since, first replays the decision events after \
                  that id. Decision events reach every session without subscribing.",
        params: params::<SubscribeParams>,
        result: result::<Subscribed>,
        result_name: "Subscribed",
        errors: &[],
    },
    MethodSpec {
        name: method::UNSUBSCRIBE,
        summary: "Drops event subscriptions (every one when events is omitted).",
        params: params::<UnsubscribeParams>,
        result: result::<Subscribed>,
        result_name: "Subscribed",
        errors: &[],
    },
    MethodSpec {
        name: method::AUTH_REFRESH,
        summary: "Replaces the session's token with a newer one for the same instance and roles, \
                  before the old one expires.",
        params: params::<RefreshParams>,
        result: result::<Refreshed>,
        result_name: "Refreshed",
        errors: &[Failure::Unauthorized],
    },
    MethodSpec {
        name: method::WEBHOOKS_ADD,
        summary: "Adds a webhook endpoint: decision events are POSTed to it, signed (Standard \
                  Webhooks), from the next event on. Returns its secret, shown only here. Admin \
                  tokens only (without a secret: clients on loopback).",
        params: params::<WebhookAddParams>,
        result: result::<WebhookSecret>,
        result_name: "WebhookSecret",
        errors: &WEBHOOK_FAILURES,
    },
    MethodSpec {
        name: method::WEBHOOKS_LIST,
        summary: "Every webhook endpoint with its state, last attempt and waiting deliveries \
                  (never its secret).",
        params: params::<NoParams>,
        result: result::<WebhookList>,
        result_name: "WebhookList",
        errors: &WEBHOOK_FAILURES,
    },
    MethodSpec {
        name: method::WEBHOOKS_REMOVE,
        summary: "Removes a webhook endpoint and its waiting deliveries.",
        params: params::<WebhookIdParams>,
        result: result::<WebhookChanged>,
        result_name: "WebhookChanged",
        errors: &WEBHOOK_FAILURES,
    },
    MethodSpec {
        name: method::WEBHOOKS_ENABLE,
        summary: "Enables a disabled webhook endpoint; what waited for it is delivered.",
        params: params::<WebhookIdParams>,
        result: result::<WebhookChanged>,
        result_name: "WebhookChanged",
        errors: &WEBHOOK_FAILURES,
    },
    MethodSpec {
        name: method::WEBHOOKS_ROTATE,
        summary: "Gives a webhook endpoint a new secret; for 24 h deliveries carry the old \
                  one's signature too.",
        params: params::<WebhookIdParams>,
        result: result::<WebhookSecret>,
        result_name: "WebhookSecret",
        errors: &WEBHOOK_FAILURES,
    },
    MethodSpec {
        name: method::WEBHOOKS_DELIVERIES,
        summary: "A webhook endpoint's attempt log, newest first.",
        params: params::<WebhookDeliveriesParams>,
        result: result::<WebhookDeliveries>,
        result_name: "WebhookDeliveries",
        errors: &WEBHOOK_FAILURES,
    },
    MethodSpec {
        name: method::PUSH_SUBSCRIBE,
        summary: "Subscribes a browser to decision events by Web Push: each is sent to its push \
                  service encrypted for it (RFC 8291) and signed with the hub's VAPID key \
                  (GET /push/key), with retries. Subscribing the same endpoint again replaces \
                  its keys and patterns. A push service answering 404 or 410 ends it.",
        params: params::<PushSubscribeParams>,
        result: result::<PushSubscribed>,
        result_name: "PushSubscribed",
        errors: &PUSH_FAILURES,
    },
    MethodSpec {
        name: method::PUSH_UNSUBSCRIBE,
        summary: "Ends the push subscription made with this endpoint, and its waiting messages.",
        params: params::<PushUnsubscribeParams>,
        result: result::<PushSubscribed>,
        result_name: "PushSubscribed",
        errors: &PUSH_FAILURES,
    },
    MethodSpec {
        name: method::PUSH_LIST,
        summary: "Every push subscription: its push service, patterns, last outcome and \
                  waiting messages (never the endpoint's path or the keys). Admin tokens only \
                  (without a secret: clients on loopback).",
        params: params::<NoParams>,
        result: result::<PushList>,
        result_name: "PushList",
        errors: &PUSH_FAILURES,
    },
    MethodSpec {
        name: method::POLICIES_SET,
        summary: "Sets the policy of a decision-name pattern (admin); decisions already open \
                  keep the terms they opened under.",
        params: params::<PolicySetParams>,
        result: result::<PolicyChanged>,
        result_name: "PolicyChanged",
        errors: &WEBHOOK_FAILURES,
    },
    MethodSpec {
        name: method::POLICIES_LIST,
        summary: "The decision policies this hub applies, and their version (admin).",
        params: params::<NoParams>,
        result: result::<PolicyList>,
        result_name: "PolicyList",
        errors: &WEBHOOK_FAILURES,
    },
    MethodSpec {
        name: method::POLICIES_REMOVE,
        summary: "Removes the policy of a decision-name pattern (admin).",
        params: params::<PolicyPatternParams>,
        result: result::<PolicyChanged>,
        result_name: "PolicyChanged",
        errors: &WEBHOOK_FAILURES,
    },
];

/// One notification as the document describes it.
pub(super) struct NotificationSpec {
    pub(super) name: &'static str,
    pub(super) summary: &'static str,
    pub(super) params: fn(&mut SchemaGenerator) -> schemars::Schema,
}

pub(super) const NOTIFICATIONS: [NotificationSpec; 7] = [
    NotificationSpec {
        name: event::DECISION_MADE,
        summary: "A decision was fixed. Sent to every session, once, in event id order.",
        params: result::<DecisionEvent>,
    },
    NotificationSpec {
        name: event::DECISION_EXPIRED,
        summary: "A decision's deadline passed without quorum; it is closed. Sent to every \
                  session, in the same sequence as decisions made.",
        params: result::<DecisionExpired>,
    },
    NotificationSpec {
        name: event::EVENTS_INCOMPLETE,
        summary: "The session cannot be given every decision event after its cursor; since \
                  says where the events that follow pick up.",
        params: result::<EventsIncomplete>,
    },
    NotificationSpec {
        name: event::INSTANCE_LOST,
        summary: "Another session took this session's instance; this session is closed next.",
        params: result::<InstanceLost>,
    },
    NotificationSpec {
        name: event::VOTE_RECORDED,
        summary: "A vote was recorded (to sessions subscribed to it).",
        params: result::<VoteRecorded>,
    },
    NotificationSpec {
        name: event::INSTANCE_REGISTERED,
        summary: "An instance registered or refreshed its registration (to sessions subscribed \
                  to it).",
        params: result::<InstanceRegistered>,
    },
    NotificationSpec {
        name: event::INSTANCE_UNREGISTERED,
        summary: "An instance was removed, or its session closed (to sessions subscribed to it).",
        params: result::<InstanceUnregistered>,
    },
];

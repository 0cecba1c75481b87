//! Web Push on the wire: the params and results of the `system.push.*` methods and of
//! `GET /push/key`, and their validation into a [`PushCall`].

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::fields::{Params, decision_event_patterns};
use super::{method, pattern};
use crate::error::Error;

/// Longest subscription endpoint, in bytes (as `push::subscription` checks it).
pub const MAX_PUSH_ENDPOINT_LEN: usize = 1024;
/// Longest base64url key of a subscription (`p256dh` is 87 characters, `auth` 22).
pub const MAX_PUSH_KEY_LEN: usize = 128;
/// Most event patterns one subscription names.
pub const MAX_PUSH_PATTERNS: usize = 16;

/// A validated `system.push.*` call. Whether the endpoint may be reached and the keys are
/// keys is the method's to say.
#[derive(Debug, Clone)]
pub enum PushCall {
    Subscribe {
        endpoint: String,
        p256dh: String,
        auth: String,
        events: Vec<String>,
    },
    Unsubscribe {
        endpoint: String,
    },
    List,
}

/// A browser's push subscription, as `PushSubscription.toJSON()` gives it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PushSubscriptionJson<'a> {
    /// The push service's URL for this browser: `https` (plain `http` only to loopback, on a
    /// hub started with `--webhook-allow-private`).
    #[schemars(length(min = 1, max = MAX_PUSH_ENDPOINT_LEN), regex(pattern = r"^[hH][tT][tT][pP][sS]?://"))]
    pub endpoint: &'a str,
    pub keys: PushKeys<'a>,
    /// Ignored: the push service says when a subscription ends (404 or 410).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiration_time: Option<u64>,
}

/// The keys a push message is encrypted for (RFC 8291).
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PushKeys<'a> {
    /// The browser's P-256 public key, base64url.
    #[schemars(length(min = 1, max = MAX_PUSH_KEY_LEN))]
    pub p256dh: &'a str,
    /// The browser's 16-byte authentication secret, base64url.
    #[schemars(length(min = 1, max = MAX_PUSH_KEY_LEN))]
    pub auth: &'a str,
}

/// Params of `system.push.subscribe`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PushSubscribeParams<'a> {
    pub subscription: PushSubscriptionJson<'a>,
    /// Which decision events it gets, as `system.subscribe` patterns (default: both
    /// decision events, made and expired).
    #[serde(default, skip_serializing_if = "<[String]>::is_empty")]
    #[schemars(inner(regex(pattern = pattern::EVENT_PATTERN)), length(max = MAX_PUSH_PATTERNS))]
    pub events: &'a [String],
}

/// Params of `system.push.unsubscribe`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PushUnsubscribeParams<'a> {
    /// The endpoint the subscription was made with.
    #[schemars(length(min = 1, max = MAX_PUSH_ENDPOINT_LEN))]
    pub endpoint: &'a str,
}

/// Result of `system.push.subscribe` and `system.push.unsubscribe`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PushSubscribed {
    /// The subscription's id: the same for the same endpoint.
    pub id: String,
    /// `subscribed` (new), `renewed` (its keys and patterns replaced), `removed`, or
    /// `absent` (there was no such subscription).
    pub done: String,
}

/// Result of `system.push.list`: every subscription, without its endpoint's path or keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PushList {
    pub subscriptions: Vec<PushInfo>,
}

/// One push subscription as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PushInfo {
    pub id: String,
    /// The push service's origin (the rest of the endpoint identifies the browser).
    pub push_service: String,
    pub events: Vec<String>,
    /// When it was added (ms since the Unix epoch).
    pub added_at: u64,
    /// The latest attempt's outcome, if any (`delivered`, `retry`, `given_up`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_outcome: Option<String>,
    /// Deliveries waiting: due, or being attempted.
    pub pending: u64,
}

/// The body of `GET /push/key`: what `pushManager.subscribe` takes as
/// `applicationServerKey`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PushKey {
    /// The hub's VAPID public key: an uncompressed P-256 point, base64url.
    pub public_key: String,
}

/// Validates the params of a `system.push.*` call.
pub(super) fn push_call(method_name: &str, params: Option<Value>) -> Result<PushCall, Error> {
    Ok(match method_name {
        method::PUSH_SUBSCRIBE => {
            let p = Params::new(params, &["subscription", "events"])?;
            let subscription = p.opt_object("subscription")?;
            if subscription.is_empty() {
                return Err(Error::invalid(
                    "subscription",
                    "subscription is required: the browser's PushSubscription as JSON \
                     ({endpoint, keys: {p256dh, auth}})",
                ));
            }
            let subscription = Params::new(
                Some(Value::Object(subscription)),
                &["endpoint", "keys", "expirationTime"],
            )
            .map_err(|err| in_subscription(err, "subscription"))?;
            let endpoint = bounded(
                &subscription,
                Some("subscription"),
                "endpoint",
                MAX_PUSH_ENDPOINT_LEN,
            )?;
            let keys = subscription
                .opt_object("keys")
                .map_err(|err| in_subscription(err, "subscription"))?;
            let keys = Params::new(Some(Value::Object(keys)), &["p256dh", "auth"])
                .map_err(|err| in_subscription(err, "subscription.keys"))?;
            let events = p.opt_strings("events")?;
            check_patterns(&events)?;
            PushCall::Subscribe {
                endpoint,
                p256dh: bounded(&keys, Some("subscription.keys"), "p256dh", MAX_PUSH_KEY_LEN)?,
                auth: bounded(&keys, Some("subscription.keys"), "auth", MAX_PUSH_KEY_LEN)?,
                events,
            }
        }
        method::PUSH_UNSUBSCRIBE => {
            let p = Params::new(params, &["endpoint"])?;
            PushCall::Unsubscribe {
                endpoint: bounded(&p, None, "endpoint", MAX_PUSH_ENDPOINT_LEN)?,
            }
        }
        _ => {
            Params::new(params, &[])?;
            PushCall::List
        }
    })
}

/// An error about a field of the subscription object, named by its path.
fn in_subscription(err: Error, path: &'static str) -> Error {
    match err {
        Error::InvalidParams {
            unknown, message, ..
        } => Error::InvalidParams {
            field: Some(path),
            unknown,
            message: format!("{path}: {message}"),
        },
        other => other,
    }
}

/// A text field of 1 to `most` bytes. `object` names the object that holds it (`None`: the
/// params themselves), so that an error names the field by its whole path.
fn bounded(
    p: &Params,
    object: Option<&'static str>,
    field: &'static str,
    most: usize,
) -> Result<String, Error> {
    let text = p.str(field).map_err(|err| match object {
        Some(object) => in_subscription(err, object),
        None => err,
    })?;
    if text.is_empty() || text.len() > most {
        let path = object.map_or_else(|| field.to_owned(), |object| format!("{object}.{field}"));
        return Err(Error::invalid(
            object.unwrap_or(field),
            format!("{path}: 1 to {most} bytes (got {})", text.len()),
        ));
    }
    Ok(text.to_owned())
}

fn check_patterns(events: &[String]) -> Result<(), Error> {
    if events.len() > MAX_PUSH_PATTERNS {
        return Err(Error::invalid(
            "events",
            format!("events: at most {MAX_PUSH_PATTERNS} patterns"),
        ));
    }
    decision_event_patterns(events, "push messages")
}

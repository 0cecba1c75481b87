//! Webhooks on the wire: the params and results of the `system.webhooks.*` methods, and
//! what a delivery carries (the Standard Webhooks format): a JSON body with the event's
//! type, time and the notification's params, and the names of the headers that identify
//! and sign it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{EventId, EventsIncomplete, LoggedEvent, event, pattern};

/// Longest webhook URL, in bytes.
pub const MAX_WEBHOOK_URL_LEN: usize = 2048;
/// Longest webhook description, in bytes.
pub const MAX_WEBHOOK_DESCRIPTION_LEN: usize = 256;
/// Attempts one `system.webhooks.deliveries` page lists when no `limit` is given.
pub const DEFAULT_DELIVERIES_PAGE: usize = 50;
/// Largest `limit` of a `system.webhooks.deliveries` page.
pub const MAX_DELIVERIES_PAGE: usize = 1000;

/// Params of `system.webhooks.add`.
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAddParams<'a> {
    /// Where deliveries are POSTed: an `http` or `https` URL.
    #[schemars(length(min = 1, max = MAX_WEBHOOK_URL_LEN), regex(pattern = r"^[hH][tT][tT][pP][sS]?://"))]
    pub url: &'a str,
    /// Which decision events it gets, as `system.subscribe` patterns (default: both
    /// decision events, made and expired).
    #[serde(default, skip_serializing_if = "<[String]>::is_empty")]
    #[schemars(inner(regex(pattern = pattern::EVENT_PATTERN)))]
    pub events: &'a [String],
    /// What the endpoint is for, shown by `system.webhooks.list`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = MAX_WEBHOOK_DESCRIPTION_LEN))]
    pub description: Option<&'a str>,
}

/// Params of `system.webhooks.remove`, `system.webhooks.enable` and
/// `system.webhooks.rotate`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct WebhookIdParams<'a> {
    /// The endpoint's id, as `system.webhooks.add` returned it.
    #[schemars(regex(pattern = pattern::WEBHOOK_ID))]
    pub id: &'a str,
}

/// Params of `system.webhooks.deliveries`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookDeliveriesParams<'a> {
    #[schemars(regex(pattern = pattern::WEBHOOK_ID))]
    pub id: &'a str,
    /// Most attempts to list (default 50).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_DELIVERIES_PAGE))]
    pub limit: Option<u64>,
    /// List the attempts older than this one (`next` of the previous page).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = pattern::EVENT_ID))]
    pub after: Option<&'a str>,
}

/// Result of `system.webhooks.add` and `system.webhooks.rotate`: the endpoint's secret,
/// shown only here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WebhookSecret {
    pub id: String,
    /// A Standard Webhooks secret (`whsec_` and base64): deliveries are signed with it.
    pub secret: String,
}

/// Result of `system.webhooks.list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WebhookList {
    /// Every endpoint, in the order they were added.
    pub webhooks: Vec<WebhookInfo>,
}

/// One webhook endpoint, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookInfo {
    pub id: String,
    pub url: String,
    /// The event patterns it gets.
    pub events: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `enabled`, or `disabled` (see `disabledReason`).
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    /// When it was disabled (ms since the Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_at: Option<u64>,
    /// When it was added (ms since the Unix epoch).
    pub added_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt: Option<WebhookAttempt>,
    /// Deliveries waiting: due, or being attempted. Events logged since the endpoint last
    /// took any (within a second while it is enabled; a disabled one takes none) are not
    /// counted yet.
    pub pending: u64,
}

/// One delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAttempt {
    /// The event delivered (for a notice of missing events, the id after which they are
    /// missing).
    pub event_id: String,
    /// Which attempt at this delivery (from 1; absent for the latest attempt of `list`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// The receiver's HTTP status, if it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why there was no answer (refused address, timeout, connection refused, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How long the attempt took (absent for the latest attempt of `list`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// When it was made (ms since the Unix epoch).
    pub at: u64,
    /// What followed: `delivered`, `retry`, `given_up` or `gone` (the endpoint was
    /// disabled).
    pub outcome: String,
}

/// Result of `system.webhooks.deliveries`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WebhookDeliveries {
    /// The attempt log, newest first.
    pub attempts: Vec<WebhookAttempt>,
    /// Pass as `after` for the next page (absent on the last).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Result of `system.webhooks.remove` and `system.webhooks.enable`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct WebhookChanged {
    pub id: String,
    /// `removed` or `enabled`.
    pub done: String,
}

/// The message id: the event id, the same on every attempt (receivers deduplicate on it).
pub const ID_HEADER: &str = "webhook-id";
/// When the attempt was signed, in seconds since the Unix epoch.
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// `v1,<base64 HMAC-SHA256 of id.timestamp.body>`, space-separated while a rotated secret
/// is still honoured.
pub const SIGNATURE_HEADER: &str = "webhook-signature";

/// A delivery's body.
#[derive(Debug, Serialize)]
pub struct WebhookBody<'a, T: Serialize> {
    /// The notification's method name.
    #[serde(rename = "type")]
    pub kind: &'a str,
    /// When the event happened (RFC 3339, UTC).
    pub timestamp: String,
    /// The notification's params, as a session receives them.
    pub data: &'a T,
}

/// One delivery: its message id and its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookMessage {
    pub id: String,
    pub kind: &'static str,
    pub body: Vec<u8>,
}

/// The name of the notification an event of the log is pushed as.
pub fn event_name(event: &LoggedEvent) -> &'static str {
    match event {
        LoggedEvent::Made(_) => event::DECISION_MADE,
        LoggedEvent::Expired(_) => event::DECISION_EXPIRED,
    }
}

/// The delivery of one event of the log.
pub fn event_message(logged: &LoggedEvent) -> WebhookMessage {
    let at = match logged {
        LoggedEvent::Made(made) => made.timestamp,
        LoggedEvent::Expired(expired) => expired.timestamp,
    };
    let kind = event_name(logged);
    WebhookMessage {
        id: logged.event_id().to_string(),
        kind,
        body: body(kind, at, logged),
    }
}

/// The delivery that tells an endpoint the events after `after` are missing (the log no
/// longer holds them), made at `now_ms`.
pub fn gap_message(after: EventId, now_ms: u64) -> WebhookMessage {
    let kind = event::EVENTS_INCOMPLETE;
    WebhookMessage {
        id: format!("incomplete-{after}"),
        kind,
        body: body(kind, now_ms, &EventsIncomplete::after(after)),
    }
}

fn body(kind: &str, at_ms: u64, data: &impl Serialize) -> Vec<u8> {
    let body = WebhookBody {
        kind,
        timestamp: rfc3339(at_ms),
        data,
    };
    // Serializing these types cannot fail: their maps have string keys.
    serde_json::to_vec(&body).unwrap_or_default()
}

/// A time in ms since the Unix epoch as RFC 3339 in UTC, to the millisecond.
pub fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        ms % 1000
    )
}

/// The Gregorian date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::DecisionEvent;

    #[test]
    fn times_read_as_rfc_3339_in_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_614_265_330_007), "2021-02-25T15:02:10.007Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(4_107_542_399_999), "2100-02-28T23:59:59.999Z");
    }

    #[test]
    fn an_event_goes_as_its_notifications_params_under_its_id() {
        let event = LoggedEvent::Made(DecisionEvent {
            decision: "deploy-v3".into(),
            value: "approve".into(),
            vote_count: 2,
            quorum: 2,
            total_instances: 3,
            event_id: "1614265330007-0".parse().unwrap(),
            timestamp: 1_614_265_330_007,
        });
        let message = event_message(&event);
        assert_eq!(message.id, "1614265330007-0");
        assert_eq!(message.kind, "quorum.decision.made");
        assert_eq!(
            String::from_utf8(message.body).unwrap(),
            r#"{"type":"quorum.decision.made","timestamp":"2021-02-25T15:02:10.007Z","data":{"decision":"deploy-v3","value":"approve","voteCount":2,"quorum":2,"totalInstances":3,"eventId":"1614265330007-0","timestamp":1614265330007}}"#
        );
    }

    #[test]
    fn a_gap_goes_as_an_incomplete_notice_with_an_id_of_its_own() {
        let message = gap_message("5-1".parse().unwrap(), 0);
        assert_eq!(message.id, "incomplete-5-1");
        let body: serde_json::Value = serde_json::from_slice(&message.body).unwrap();
        assert_eq!(body["type"], "system.events.incomplete");
        assert_eq!(body["data"]["since"], "5-1");
        assert_eq!(body["data"]["reason"], "trimmed");
    }
}

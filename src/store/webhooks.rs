//! Webhook endpoints in Redis, shared by every hub on the keyspace: adding, listing and
//! changing them, and the two steps of a delivery: claiming an endpoint's next deliveries
//! (`lua/webhook_next.lua`) and recording what an attempt came to (`lua/webhook_settle.lua`).

use std::collections::HashMap;

use redis::{FromRedisValue, Value};

use super::calls::evalsha;
use super::keys::WebhookPart;
use super::stream::logged_event;
use super::{Store, field_u64, internal};
use crate::error::Error;
use crate::protocol::{EventId, LoggedEvent};

/// Most webhook endpoints one keyspace holds.
pub(crate) const MAX_WEBHOOKS: usize = 100;
/// Most Web Push subscriptions one keyspace holds: each is read on every delivery round
/// of every hub.
pub(crate) const MAX_PUSH_SUBSCRIPTIONS: usize = 200;
/// Most attempts an endpoint's attempt log keeps (about; Redis trims it in whole nodes).
pub(crate) const ATTEMPT_LOG_CAP: usize = 1000;
/// Most events one claim moves from the log into an endpoint's due set.
const TAKE_BATCH: usize = 256;

/// The two kinds of endpoint deliveries go to. They are listed and bounded apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EndpointKind {
    /// A receiver the hub POSTs signed JSON to.
    Webhook,
    /// A browser's push subscription: messages go encrypted through its push service.
    Push,
}

impl EndpointKind {
    fn index(self, layout: &super::Layout) -> &'static str {
        match self {
            EndpointKind::Webhook => layout.webhooks(),
            EndpointKind::Push => layout.push_subscriptions(),
        }
    }

    fn most(self) -> usize {
        match self {
            EndpointKind::Webhook => MAX_WEBHOOKS,
            EndpointKind::Push => MAX_PUSH_SUBSCRIPTIONS,
        }
    }
}

/// What a new endpoint is added with.
pub(crate) struct NewEndpoint<'a> {
    pub kind: EndpointKind,
    pub id: &'a str,
    pub url: &'a str,
    pub events: &'a [String],
    pub description: &'a str,
    /// The `whsec_` secret (none for a push subscription).
    pub secret: &'a str,
    /// A push subscription's keys, `p256dh` and `auth` (base64url). A subscription added
    /// again replaces its keys and patterns and is enabled.
    pub push_keys: Option<(&'a str, &'a str)>,
}

/// How adding an endpoint went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Added {
    /// A new endpoint.
    New,
    /// The keyspace holds the most endpoints of this kind already.
    Full,
    /// An endpoint with this id exists; it was kept as it is (a push subscription: with
    /// the new keys and patterns).
    Exists,
}

/// An endpoint as stored, secrets included (never to be shown after it was added).
#[derive(Debug, Clone)]
pub(crate) struct StoredEndpoint {
    pub id: String,
    pub url: String,
    pub events: Vec<String>,
    pub description: String,
    pub added_at: u64,
    /// Why and when it was disabled (`None`: enabled).
    pub disabled: Option<(String, u64)>,
    pub secret: String,
    /// The secret it had before its last rotation, and until when deliveries carry its
    /// signature too.
    pub previous_secret: Option<(String, u64)>,
    pub last: Option<LastAttempt>,
    /// A push subscription's keys, `p256dh` and `auth` (`None`: a webhook).
    pub push_keys: Option<(String, String)>,
    /// Deliveries due or being attempted.
    pub waiting: u64,
}

/// An endpoint's latest attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LastAttempt {
    pub event: String,
    pub at: u64,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub outcome: String,
}

/// One entry of an endpoint's attempt log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LoggedAttempt {
    /// The entry's id in the attempt log (a page cursor).
    pub id: String,
    pub event: String,
    pub attempt: u32,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u64,
    pub at: u64,
    pub outcome: String,
}

/// One delivery an endpoint is owed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// An event of the log.
    Event(LoggedEvent),
    /// A notice that events after this one are missing (the log no longer holds them).
    Gap(EventId),
    /// An entry of the log that does not read as an event; given up at once.
    Unreadable(String),
}

impl Delivery {
    /// Its member in the endpoint's due set.
    pub(crate) fn member(&self) -> String {
        match self {
            Delivery::Event(event) => event.event_id().to_string(),
            Delivery::Gap(after) => format!("{GAP_PREFIX}{after}"),
            Delivery::Unreadable(id) => id.clone(),
        }
    }
}

const GAP_PREFIX: &str = "gap:";

/// A delivery claimed by this hub, with the number of this attempt at it (from 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Claimed {
    pub delivery: Delivery,
    pub attempt: u32,
}

/// What an attempt came to, as the store records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settled {
    Delivered,
    /// Due again at this time (ms).
    Retry(u64),
    GivenUp,
    /// The receiver answered 410: the endpoint is disabled.
    Gone,
    /// Not an event the endpoint asked for; no attempt was made.
    Skipped,
}

impl Settled {
    fn name(self) -> &'static str {
        match self {
            Settled::Delivered => "delivered",
            Settled::Retry(_) => "retry",
            Settled::GivenUp => "given_up",
            Settled::Gone => "gone",
            Settled::Skipped => "skipped",
        }
    }
}

/// One attempt, for the attempt log.
#[derive(Debug, Clone)]
pub(crate) struct AttemptReport<'a> {
    pub endpoint: &'a str,
    pub delivery: &'a Delivery,
    pub attempt: u32,
    pub settled: Settled,
    pub status: Option<u16>,
    pub error: Option<&'a str>,
    pub duration_ms: u64,
    pub now_ms: u64,
    /// An endpoint whose every attempt failed for this long is disabled.
    pub disable_after_ms: u64,
}

impl Store {
    fn webhook_key(&self, id: &str, part: WebhookPart) -> String {
        self.layout.webhook(id, part)
    }

    /// Adds an endpoint; its deliveries start after the newest event handed out now.
    pub(crate) async fn webhook_add(
        &self,
        new: &NewEndpoint<'_>,
        now_ms: u64,
    ) -> Result<Added, Error> {
        let events = serde_json::to_string(new.events).map_err(internal)?;
        let (p256dh, auth) = new.push_keys.unwrap_or_default();
        let cmd = evalsha(
            &self.scripts.webhook_add,
            &[
                new.kind.index(&self.layout),
                &self.webhook_key(new.id, WebhookPart::Endpoint),
                self.layout.stream(),
                self.layout.published(),
            ],
            &[
                new.id,
                &new.kind.most().to_string(),
                &now_ms.to_string(),
                new.url,
                &events,
                new.description,
                new.secret,
                p256dh,
                auth,
            ],
        );
        let code: i64 = self.query(&cmd).await?;
        Ok(match code {
            1 => Added::New,
            2 => Added::Exists,
            _ => Added::Full,
        })
    }

    /// Every endpoint of a kind, in the order they were added.
    pub(crate) async fn endpoints(&self, kind: EndpointKind) -> Result<Vec<StoredEndpoint>, Error> {
        let ids: Vec<String> = self
            .query(
                redis::cmd("ZRANGE")
                    .arg(kind.index(&self.layout))
                    .arg(0)
                    .arg(-1),
            )
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HGETALL")
                .arg(self.webhook_key(id, WebhookPart::Endpoint))
                .cmd("ZCARD")
                .arg(self.webhook_key(id, WebhookPart::Due));
        }
        let replies: Vec<Value> = self.query_pipe(&pipe).await?;
        let mut endpoints = Vec::with_capacity(ids.len());
        for (id, pair) in ids.into_iter().zip(replies.chunks(2)) {
            let fields: HashMap<String, String> =
                FromRedisValue::from_redis_value_ref(&pair[0]).map_err(internal)?;
            let waiting: u64 = FromRedisValue::from_redis_value_ref(&pair[1]).map_err(internal)?;
            // Removed between the two reads.
            if fields.is_empty() {
                continue;
            }
            endpoints.push(stored_endpoint(id, &fields, waiting));
        }
        Ok(endpoints)
    }

    /// Removes an endpoint with everything it holds; false if there is none.
    pub(crate) async fn endpoint_remove(
        &self,
        kind: EndpointKind,
        id: &str,
    ) -> Result<bool, Error> {
        self.webhook_change(kind, id, &["remove", id]).await
    }

    /// Enables an endpoint again; false if there is none.
    pub(crate) async fn webhook_enable(&self, id: &str) -> Result<bool, Error> {
        self.webhook_change(EndpointKind::Webhook, id, &["enable", id])
            .await
    }

    /// Gives an endpoint a new secret; deliveries carry the old one's signature too until
    /// `previous_until_ms`. False if there is no such endpoint.
    pub(crate) async fn webhook_rotate(
        &self,
        id: &str,
        secret: &str,
        previous_until_ms: u64,
    ) -> Result<bool, Error> {
        let until = previous_until_ms.to_string();
        self.webhook_change(EndpointKind::Webhook, id, &["rotate", id, secret, &until])
            .await
    }

    async fn webhook_change(
        &self,
        kind: EndpointKind,
        id: &str,
        args: &[&str],
    ) -> Result<bool, Error> {
        let cmd = evalsha(
            &self.scripts.webhook_change,
            &[
                kind.index(&self.layout),
                &self.webhook_key(id, WebhookPart::Endpoint),
                &self.webhook_key(id, WebhookPart::Due),
                &self.webhook_key(id, WebhookPart::Tries),
                &self.webhook_key(id, WebhookPart::Attempts),
            ],
            args,
        );
        let code: i64 = self.query(&cmd).await?;
        Ok(code == 1)
    }

    /// An endpoint's attempt log, newest first: at most `limit` entries, older than the
    /// entry `before` when given. `None` when there is no such endpoint.
    pub(crate) async fn webhook_attempts(
        &self,
        id: &str,
        limit: usize,
        before: Option<&str>,
    ) -> Result<Option<Vec<LoggedAttempt>>, Error> {
        let start = before.map_or_else(|| "+".to_owned(), |before| format!("({before}"));
        let mut pipe = redis::pipe();
        pipe.cmd("EXISTS")
            .arg(self.webhook_key(id, WebhookPart::Endpoint))
            .cmd("XREVRANGE")
            .arg(self.webhook_key(id, WebhookPart::Attempts))
            .arg(start)
            .arg("-")
            .arg("COUNT")
            .arg(limit);
        type Entries = Vec<(String, Vec<(String, String)>)>;
        let (exists, entries): (bool, Entries) = self.query_pipe(&pipe).await?;
        if !exists {
            return Ok(None);
        }
        Ok(Some(
            entries
                .into_iter()
                .map(|(id, fields)| logged_attempt(id, &fields.into_iter().collect()))
                .collect(),
        ))
    }

    /// Takes the events logged since the endpoint's cursor and claims up to `room` of its
    /// due deliveries for `lease_ms`. `None` when the endpoint is disabled or gone;
    /// otherwise how many deliveries wait (due or claimed), and the claimed ones.
    pub(crate) async fn webhook_next(
        &self,
        id: &str,
        room: usize,
        now_ms: u64,
        lease_ms: u64,
    ) -> Result<Option<(u64, Vec<Claimed>)>, Error> {
        let cmd = evalsha(
            &self.scripts.webhook_next,
            &[
                &self.webhook_key(id, WebhookPart::Endpoint),
                &self.webhook_key(id, WebhookPart::Due),
                &self.webhook_key(id, WebhookPart::Tries),
                self.layout.stream(),
                self.layout.published(),
            ],
            &[
                &now_ms.to_string(),
                &lease_ms.to_string(),
                &room.to_string(),
                &TAKE_BATCH.to_string(),
            ],
        );
        let reply: Vec<Value> = self.query(&cmd).await?;
        let Some((waiting, claimed)) = reply.split_first() else {
            return Ok(None);
        };
        let waiting: u64 = FromRedisValue::from_redis_value_ref(waiting).map_err(internal)?;
        let claimed = claimed
            .iter()
            .map(|one| {
                let (member, attempt, fields): (String, u32, HashMap<String, String>) =
                    FromRedisValue::from_redis_value_ref(one).map_err(internal)?;
                Ok(Claimed {
                    delivery: delivery(member, fields),
                    attempt,
                })
            })
            .collect::<Result<_, Error>>()?;
        Ok(Some((waiting, claimed)))
    }

    /// Records one attempt and what follows from it. Returns whether it disabled the
    /// endpoint.
    pub(crate) async fn webhook_settle(&self, report: &AttemptReport<'_>) -> Result<bool, Error> {
        let id = report.endpoint;
        let due = match report.settled {
            Settled::Retry(at) => at,
            _ => 0,
        };
        let event = match report.delivery {
            Delivery::Event(event) => event.event_id().to_string(),
            Delivery::Gap(after) => after.to_string(),
            Delivery::Unreadable(id) => id.clone(),
        };
        let cmd = evalsha(
            &self.scripts.webhook_settle,
            &[
                &self.webhook_key(id, WebhookPart::Endpoint),
                &self.webhook_key(id, WebhookPart::Due),
                &self.webhook_key(id, WebhookPart::Tries),
                &self.webhook_key(id, WebhookPart::Attempts),
            ],
            &[
                &report.delivery.member(),
                report.settled.name(),
                &due.to_string(),
                &report.now_ms.to_string(),
                &report.attempt.to_string(),
                &report.status.map(|s| s.to_string()).unwrap_or_default(),
                report.error.unwrap_or_default(),
                &report.duration_ms.to_string(),
                &ATTEMPT_LOG_CAP.to_string(),
                &report.disable_after_ms.to_string(),
                &event,
            ],
        );
        let code: i64 = self.query(&cmd).await?;
        Ok(code == 2)
    }
}

/// A claimed member of a due set, with the log entry's fields.
fn delivery(member: String, fields: HashMap<String, String>) -> Delivery {
    if let Some(after) = member.strip_prefix(GAP_PREFIX) {
        return match after.parse() {
            Ok(after) => Delivery::Gap(after),
            Err(_) => Delivery::Unreadable(member),
        };
    }
    match member.parse::<EventId>() {
        Ok(id) => logged_event(id, fields).map_or(Delivery::Unreadable(member), Delivery::Event),
        Err(_) => Delivery::Unreadable(member),
    }
}

fn text(fields: &HashMap<String, String>, name: &str) -> Option<String> {
    fields.get(name).filter(|v| !v.is_empty()).cloned()
}

fn stored_endpoint(id: String, fields: &HashMap<String, String>, waiting: u64) -> StoredEndpoint {
    let disabled = (fields.get("state").map(String::as_str) == Some("disabled")).then(|| {
        (
            text(fields, "disabledReason").unwrap_or_default(),
            field_u64(fields, "disabledAt"),
        )
    });
    let last = text(fields, "lastEvent").map(|event| LastAttempt {
        event,
        at: field_u64(fields, "lastAt"),
        status: fields.get("lastStatus").and_then(|s| s.parse().ok()),
        error: text(fields, "lastError"),
        outcome: text(fields, "lastOutcome").unwrap_or_default(),
    });
    StoredEndpoint {
        id,
        url: text(fields, "url").unwrap_or_default(),
        events: fields
            .get("events")
            .and_then(|events| serde_json::from_str(events).ok())
            .unwrap_or_default(),
        description: text(fields, "description").unwrap_or_default(),
        added_at: field_u64(fields, "addedAt"),
        disabled,
        secret: text(fields, "secret").unwrap_or_default(),
        previous_secret: text(fields, "previousSecret")
            .map(|secret| (secret, field_u64(fields, "previousUntil"))),
        last,
        push_keys: text(fields, "p256dh").zip(text(fields, "auth")),
        waiting,
    }
}

fn logged_attempt(id: String, fields: &HashMap<String, String>) -> LoggedAttempt {
    LoggedAttempt {
        id,
        event: text(fields, "event").unwrap_or_default(),
        attempt: field_u64(fields, "attempt") as u32,
        status: fields.get("status").and_then(|s| s.parse().ok()),
        error: text(fields, "error"),
        duration_ms: field_u64(fields, "duration"),
        at: field_u64(fields, "at"),
        outcome: text(fields, "outcome").unwrap_or_default(),
    }
}

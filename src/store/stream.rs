//! The event log (decisions made and decisions expired): the newest event, replay pages,
//! where a cursor stands in it, and the log's epoch.

use std::collections::HashMap;

use redis::FromRedisValue;

use super::{Store, field_u64, internal};
use crate::error::Error;
use crate::protocol::{DecisionEvent, DecisionExpired, EventId, LoggedEvent};

/// Approximate number of decision events the stream keeps (`XADD MAXLEN ~`); a client
/// resuming from an older event is told its recovery is incomplete.
pub(crate) const DECISION_STREAM_CAP: u64 = 10_000;
/// Events read from the stream per round trip when replaying a gap.
pub(crate) const REPLAY_PAGE: usize = 500;

/// Events read back from the log, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Replay {
    pub events: Vec<LoggedEvent>,
    /// A full page came back: more events may follow the last one.
    pub more: bool,
}

impl Store {
    /// The newest event in the log, if there is one; while some hub on the keyspace logs
    /// events that wait for replicas (`--wait-replicas`), the newest that is published
    /// (the ones after it reach every hub live once they are published, whether this
    /// hub waits for replicas or not).
    pub(crate) async fn last_event(&self) -> Result<Option<LoggedEvent>, Error> {
        let mut newest = "+".to_owned();
        if let Some(published) = self
            .query::<Option<String>>(redis::cmd("GET").arg(self.layout.published()))
            .await?
        {
            newest = published;
        }
        let mut cmd = redis::cmd("XREVRANGE");
        cmd.arg(self.layout.stream())
            .arg(newest)
            .arg("-")
            .arg("COUNT")
            .arg(1);
        let (events, _) = parse_stream_entries(self.query(&cmd).await?)?;
        Ok(events.into_iter().next())
    }

    /// The id of the `n`-th newest event (the oldest if the log holds fewer), if any.
    pub(crate) async fn nth_newest_event(&self, n: usize) -> Result<Option<EventId>, Error> {
        let mut cmd = redis::cmd("XREVRANGE");
        cmd.arg(self.layout.stream())
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(n.max(1));
        let (events, _) = parse_stream_entries(self.query(&cmd).await?)?;
        Ok(events.last().map(LoggedEvent::event_id))
    }

    /// Up to [`REPLAY_PAGE`] events after `after` and no later than `upto`.
    pub(crate) async fn events_after(
        &self,
        after: EventId,
        upto: Option<EventId>,
    ) -> Result<Replay, Error> {
        let end = upto.map_or_else(|| "+".to_owned(), |id| id.to_string());
        let mut cmd = redis::cmd("XRANGE");
        cmd.arg(self.layout.stream())
            .arg(format!("({after}"))
            .arg(end)
            .arg("COUNT")
            .arg(REPLAY_PAGE);
        // Up to `upto` (where the hub's live delivery stands) every event was published.
        if upto.is_some() {
            let (events, read) = parse_stream_entries(self.query(&cmd).await?)?;
            return Ok(Replay {
                // A full page that yielded nothing readable cannot move the cursor on.
                more: read == REPLAY_PAGE && !events.is_empty(),
                events,
            });
        }
        // While events wait for replicas (some hub on the keyspace runs with
        // --wait-replicas), an event is handed out only once it is published (its write
        // confirmed by replicas), by every hub alike: an open-ended read (the listener's
        // gap read, a replay before the hub knows its position) stops at the last
        // published event; the rest arrive live once published.
        let mut pipe = redis::pipe();
        pipe.cmd("GET")
            .arg(self.layout.published())
            .add_command(cmd);
        let (published, reply): (Option<String>, redis::Value) = self.query_pipe(&pipe).await?;
        let (mut events, read) = parse_stream_entries(reply)?;
        let mut more = read == REPLAY_PAGE && !events.is_empty();
        if let Some(published) = published.and_then(|id| id.parse::<EventId>().ok()) {
            let read = events.len();
            events.retain(|event| event.event_id() <= published);
            more &= events.len() == read;
        }
        Ok(Replay { more, events })
    }

    /// Where a cursor stands against the stream: among its events, before events that are
    /// no longer kept (trimmed by its cap, or deleted), within its range but not one of its
    /// events, or ahead of every event it ever had; and which events it holds. Errs on the
    /// side of "trimmed" when `after` is exactly the last trimmed event. [`EventId::ZERO`]
    /// ("from the beginning") is never missing.
    pub(crate) async fn place_cursor(&self, after: EventId) -> Result<Placement, Error> {
        let stream = self.layout.stream();
        let mut pipe = redis::pipe();
        pipe.cmd("EXISTS").arg(stream);
        let (exists,): (bool,) = self.query_pipe(&pipe).await?;
        if !exists {
            return Ok(Placement {
                place: if after > EventId::ZERO {
                    CursorPlace::Ahead {
                        newest: EventId::ZERO,
                    }
                } else {
                    CursorPlace::Kept
                },
                oldest: None,
                newest: None,
            });
        }
        let mut pipe = redis::pipe();
        pipe.cmd("XINFO")
            .arg("STREAM")
            .arg(stream)
            .cmd("XRANGE")
            .arg(stream)
            .arg(after.to_string())
            .arg(after.to_string());
        let (info, at): (redis::Value, redis::Value) = self.query_pipe(&pipe).await?;
        let info = StreamInfo::parse(info);
        let (_, entries_at) = parse_stream_entries(at)?;
        let held = entries_at > 0;
        let oldest = info.entry_id("first-entry");
        let newest = info.entry_id("last-entry");
        let placed = |place| Placement {
            place,
            oldest,
            newest,
        };
        // Stream ids only grow, so a cursor past the last one generated names no event.
        let generated = info.id("last-generated-id").unwrap_or(EventId::ZERO);
        if after > generated {
            return Ok(placed(CursorPlace::Ahead { newest: generated }));
        }
        let deleted_after = info
            .id("max-deleted-entry-id")
            .is_some_and(|deleted| deleted > after);
        let trimmed = info.number("entries-added") > info.number("length");
        let before_kept = match info.id("recorded-first-entry-id") {
            Some(first) if info.number("length") > 0 => after < first,
            _ => after < generated,
        };
        Ok(placed(if trimmed && before_kept {
            CursorPlace::Trimmed
        } else if !held && after > EventId::ZERO {
            // Within the stream's range, or before the oldest entry of a stream that never
            // trimmed one (a log that restarted after losing its data): this log never held
            // the event, whatever the ids after it.
            CursorPlace::Missing
        } else if deleted_after {
            CursorPlace::Trimmed
        } else {
            CursorPlace::Kept
        }))
    }

    /// The events the stream holds at each of `ids`, in the same order (`None` where it
    /// holds none, or one that does not parse). One round trip.
    pub(crate) async fn events_at(
        &self,
        ids: &[EventId],
    ) -> Result<Vec<Option<LoggedEvent>>, Error> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("XRANGE")
                .arg(self.layout.stream())
                .arg(id.to_string())
                .arg(id.to_string());
        }
        let replies: Vec<redis::Value> = self.query_pipe(&pipe).await?;
        replies
            .into_iter()
            .map(|reply| Ok(parse_stream_entries(reply)?.0.into_iter().next()))
            .collect()
    }

    /// The event log's epoch: an id made when the hub first finds the log without one, and
    /// kept beside it (in its slot on a cluster). A log that lost its data (a Redis that
    /// restarted without it, a keyspace replaced) gets a new one; a replica promoted in a
    /// failover keeps the one it replicated.
    pub(crate) async fn log_epoch(&self) -> Result<String, Error> {
        let fresh = fresh_epoch();
        let found: Option<String> = self
            .query(
                redis::cmd("SET")
                    .arg(self.layout.epoch())
                    .arg(&fresh)
                    .arg("NX")
                    .arg("GET"),
            )
            .await?;
        Ok(found.unwrap_or(fresh))
    }
}

/// Where a cursor stands against the decision event stream, and what the stream holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Placement {
    pub place: CursorPlace,
    /// The oldest event the stream holds (`None`: it holds none).
    pub oldest: Option<EventId>,
    /// The newest event the stream holds (`None`: it holds none).
    pub newest: Option<EventId>,
}

/// Where a cursor stands against the decision event stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CursorPlace {
    /// Every event after the cursor is still kept.
    Kept,
    /// Some events after the cursor are no longer kept.
    Trimmed,
    /// The cursor lies within the stream's range but is not one of its events (lost in a
    /// failover, or from another log). The events after it are still the ones that follow.
    Missing,
    /// The cursor is newer than any event the stream ever had; `newest` is the last id it
    /// generated.
    Ahead { newest: EventId },
}

/// An `XINFO STREAM` reply by field name.
struct StreamInfo(HashMap<String, redis::Value>);

impl StreamInfo {
    fn parse(reply: redis::Value) -> Self {
        let items: Vec<redis::Value> = match reply {
            redis::Value::Array(items) => items,
            redis::Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
            _ => Vec::new(),
        };
        let mut fields = HashMap::new();
        let mut items = items.into_iter();
        while let (Some(name), Some(value)) = (items.next(), items.next()) {
            if let Ok(name) = String::from_redis_value_ref(&name) {
                fields.insert(name, value);
            }
        }
        Self(fields)
    }

    fn text(&self, name: &str) -> Option<String> {
        String::from_redis_value_ref(self.0.get(name)?).ok()
    }

    fn id(&self, name: &str) -> Option<EventId> {
        self.text(name)?.parse().ok()
    }

    fn number(&self, name: &str) -> u64 {
        self.text(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or_default()
    }

    /// The id of an entry field (`first-entry`, `last-entry`: `[id, fields]`, or nil).
    fn entry_id(&self, name: &str) -> Option<EventId> {
        match self.0.get(name)? {
            redis::Value::Array(parts) => String::from_redis_value_ref(parts.first()?)
                .ok()?
                .parse()
                .ok(),
            _ => None,
        }
    }
}

/// A new epoch: 128 bits from the OS, or, if it has none to give, the time, the process
/// and a counter mixed together (unique enough: it only has to differ from the last one).
fn fresh_epoch() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::io::Read;
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut bytes = [0u8; 16];
    let from_os = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if from_os.is_err() {
        for half in bytes.chunks_mut(8) {
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or_default(),
            );
            hasher.write_u32(std::process::id());
            hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
            half.copy_from_slice(&hasher.finish().to_le_bytes());
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses an XRANGE / XREVRANGE reply into logged events, and says how many entries it
/// read. The rule is the same as for live delivery: an entry whose id does not parse, or an
/// expired decision's entry whose tally is not a JSON object, is logged and skipped.
fn parse_stream_entries(reply: redis::Value) -> Result<(Vec<LoggedEvent>, usize), Error> {
    type Entries = Vec<(String, Vec<(String, String)>)>;
    let entries: Entries = FromRedisValue::from_redis_value(reply).map_err(internal)?;
    let read = entries.len();
    let events = entries
        .into_iter()
        .filter_map(|(id, fields)| {
            let event_id = id
                .parse::<EventId>()
                .inspect_err(
                    |err| tracing::error!(%err, "ignoring a decision event without a valid id"),
                )
                .ok()?;
            logged_event(event_id, fields.into_iter().collect())
        })
        .collect();
    Ok((events, read))
}

/// One entry's fields as an event: `event=expired` for a decision that expired, none for a
/// decision made. `None` (logged) for an expired entry whose tally does not parse.
pub(super) fn logged_event(
    event_id: EventId,
    fields: HashMap<String, String>,
) -> Option<LoggedEvent> {
    let text = |name: &str| fields.get(name).cloned().unwrap_or_default();
    if fields.get("event").is_some_and(|kind| kind == EXPIRED) {
        let tally = serde_json::from_str(fields.get("tally").map_or("", String::as_str))
            .inspect_err(|err| {
                tracing::error!(%err, %event_id, "ignoring an expired decision's event whose tally is not a JSON object");
            })
            .ok()?;
        return Some(LoggedEvent::Expired(DecisionExpired {
            decision: text("decision"),
            vote_count: field_u64(&fields, "voteCount"),
            quorum: field_u64(&fields, "quorum"),
            total_instances: field_u64(&fields, "totalInstances"),
            tally,
            event_id,
            timestamp: field_u64(&fields, "timestamp"),
        }));
    }
    Some(LoggedEvent::Made(DecisionEvent {
        decision: text("decision"),
        value: text("value"),
        vote_count: field_u64(&fields, "voteCount"),
        quorum: field_u64(&fields, "quorum"),
        total_instances: field_u64(&fields, "totalInstances"),
        event_id,
        timestamp: field_u64(&fields, "timestamp"),
    }))
}

/// The `event` field of an expired decision's entry (a decision made's has none).
const EXPIRED: &str = "expired";

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, fields: &[(&str, &str)]) -> redis::Value {
        let text = |s: &str| redis::Value::BulkString(s.as_bytes().to_vec());
        redis::Value::Array(vec![
            text(id),
            redis::Value::Array(
                fields
                    .iter()
                    .flat_map(|(k, v)| [text(k), text(v)])
                    .collect(),
            ),
        ])
    }

    #[test]
    fn an_expired_entry_reads_as_expired_with_its_tally_in_order() {
        let reply = redis::Value::Array(vec![
            entry(
                "5-0",
                &[
                    ("decision", "d"),
                    ("value", "yes"),
                    ("voteCount", "2"),
                    ("quorum", "2"),
                    ("totalInstances", "3"),
                    ("timestamp", "5"),
                ],
            ),
            entry(
                "7-1",
                &[
                    ("event", "expired"),
                    ("decision", "e"),
                    ("voteCount", "3"),
                    ("quorum", "3"),
                    ("totalInstances", "5"),
                    ("tally", r#"{"yes":1,"no":2}"#),
                    ("timestamp", "7"),
                ],
            ),
        ]);
        let (events, read) = parse_stream_entries(reply).unwrap();
        assert_eq!(read, 2);
        let LoggedEvent::Made(made) = &events[0] else {
            panic!("{:?}", events[0])
        };
        assert_eq!((made.value.as_str(), made.vote_count), ("yes", 2));
        let LoggedEvent::Expired(expired) = &events[1] else {
            panic!("{:?}", events[1])
        };
        assert_eq!(expired.event_id, "7-1".parse().unwrap());
        assert_eq!(
            (
                expired.decision.as_str(),
                expired.vote_count,
                expired.quorum
            ),
            ("e", 3, 3)
        );
        assert_eq!((expired.total_instances, expired.timestamp), (5, 7));
        let order: Vec<&str> = expired.tally.keys().map(String::as_str).collect();
        assert_eq!(order, ["yes", "no"]);
        // The notification a hub sends for it is the one the scripts publish.
        let sent: serde_json::Value =
            serde_json::from_str(&crate::protocol::frame::logged_event(&events[1])).unwrap();
        assert_eq!(sent["method"], "quorum.decision.expired");
        assert_eq!(
            sent["params"]["tally"],
            serde_json::json!({"yes": 1, "no": 2})
        );
    }

    #[test]
    fn an_expired_entry_with_a_malformed_tally_is_skipped_but_counted_as_read() {
        let reply = redis::Value::Array(vec![
            entry(
                "7-0",
                &[("event", "expired"), ("decision", "e"), ("tally", "{oops")],
            ),
            entry(
                "8-0",
                &[("event", "expired"), ("decision", "e"), ("tally", "[1]")],
            ),
            entry("not-an-id", &[("decision", "d")]),
            entry(
                "9-0",
                &[("event", "expired"), ("decision", "f"), ("tally", "{}")],
            ),
        ]);
        let (events, read) = parse_stream_entries(reply).unwrap();
        assert_eq!(read, 4);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].decision(), "f");
    }
}

//! The decision event stream: the newest event id, replay pages, and whether a gap is lost.

use std::collections::HashMap;

use redis::FromRedisValue;

use super::{Store, field_u64, internal};
use crate::error::Error;
use crate::protocol::{DecisionEvent, EventId};

/// Approximate number of decision events the stream keeps (`XADD MAXLEN ~`); a client
/// resuming from an older event is told its recovery is incomplete.
pub(crate) const DECISION_STREAM_CAP: u64 = 10_000;
/// Events read from the stream per round trip when replaying a gap.
pub(crate) const REPLAY_PAGE: usize = 500;

/// Decision events read back from the stream, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Replay {
    pub events: Vec<DecisionEvent>,
    /// A full page came back: more events may follow the last one.
    pub more: bool,
}

impl Store {
    /// The id of the newest decision event, or zero when there is none.
    pub(crate) async fn last_event_id(&self) -> Result<EventId, Error> {
        let mut cmd = redis::cmd("XREVRANGE");
        cmd.arg(self.layout.stream())
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1);
        let (events, _) = parse_stream_entries(self.query(&cmd).await?)?;
        Ok(events.first().map_or(EventId::ZERO, |e| e.event_id))
    }

    /// Up to [`REPLAY_PAGE`] decision events after `after` and no later than `upto`.
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
        let (events, read) = parse_stream_entries(self.query(&cmd).await?)?;
        Ok(Replay {
            // A full page that yielded nothing readable cannot move the cursor on.
            more: read == REPLAY_PAGE && !events.is_empty(),
            events,
        })
    }

    /// Where a cursor stands against the stream: among its events, before events that are
    /// no longer kept (trimmed by its cap, or deleted), or ahead of every event it ever
    /// had. Errs on the side of "trimmed" when `after` is exactly the last trimmed event.
    pub(crate) async fn place_cursor(&self, after: EventId) -> Result<CursorPlace, Error> {
        let mut pipe = redis::pipe();
        pipe.cmd("EXISTS").arg(self.layout.stream());
        let (exists,): (bool,) = self.query_pipe(&pipe).await?;
        if !exists {
            return Ok(if after > EventId::ZERO {
                CursorPlace::Ahead {
                    newest: EventId::ZERO,
                }
            } else {
                CursorPlace::Kept
            });
        }
        let reply: redis::Value = self
            .query(redis::cmd("XINFO").arg("STREAM").arg(self.layout.stream()))
            .await?;
        let items: Vec<redis::Value> = match reply {
            redis::Value::Array(items) => items,
            redis::Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
            _ => Vec::new(),
        };
        let mut info: HashMap<String, String> = HashMap::new();
        for pair in items.chunks(2) {
            if let [name, value] = pair
                && let (Ok(name), Ok(value)) = (
                    String::from_redis_value_ref(name),
                    String::from_redis_value_ref(value),
                )
            {
                info.insert(name, value);
            }
        }
        let id = |name: &str| info.get(name).and_then(|v| v.parse::<EventId>().ok());
        let number = |name: &str| {
            info.get(name)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or_default()
        };
        // Stream ids only grow, so a cursor past the last one generated names no event.
        let newest = id("last-generated-id").unwrap_or(EventId::ZERO);
        if after > newest {
            return Ok(CursorPlace::Ahead { newest });
        }
        let deleted_after = id("max-deleted-entry-id").is_some_and(|deleted| deleted > after);
        let trimmed = number("entries-added") > number("length");
        let before_kept = match id("recorded-first-entry-id") {
            Some(first) if number("length") > 0 => after < first,
            _ => after < newest,
        };
        Ok(if deleted_after || (trimmed && before_kept) {
            CursorPlace::Trimmed
        } else {
            CursorPlace::Kept
        })
    }
}

/// Where a cursor stands against the decision event stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CursorPlace {
    /// Every event after the cursor is still kept.
    Kept,
    /// Some events after the cursor are no longer kept.
    Trimmed,
    /// The cursor is newer than any event the stream ever had; `newest` is its last.
    Ahead { newest: EventId },
}

/// Parses an XRANGE / XREVRANGE reply into decision events, and says how many entries
/// it read. The rule is the same as for live delivery: an entry whose id does not parse
/// is logged and skipped.
fn parse_stream_entries(reply: redis::Value) -> Result<(Vec<DecisionEvent>, usize), Error> {
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
            let fields: HashMap<String, String> = fields.into_iter().collect();
            Some(DecisionEvent {
                decision: fields.get("decision").cloned().unwrap_or_default(),
                value: fields.get("value").cloned().unwrap_or_default(),
                vote_count: field_u64(&fields, "voteCount"),
                quorum: field_u64(&fields, "quorum"),
                total_instances: field_u64(&fields, "totalInstances"),
                event_id,
                timestamp: field_u64(&fields, "timestamp"),
            })
        })
        .collect();
    Ok((events, read))
}

//! JSON-RPC 2.0 framing: the one place that knows how requests, responses, errors and
//! notifications look on the wire.

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::{DecisionEvent, EventsIncomplete, event};
use crate::error::Error;

/// One call taken from a frame: a request (with `id`) or a notification (without).
#[derive(Debug)]
pub struct Call {
    /// `None` for a notification, which gets no response.
    pub id: Option<Value>,
    pub method: String,
    pub params: Option<Value>,
}

/// One element of an incoming frame: a valid call, or an error to answer at once.
#[derive(Debug)]
pub enum Entry {
    Call(Call),
    /// Answered with this error; `id` is `null` when the request's id is unknown.
    Invalid {
        id: Value,
        error: Error,
    },
}

/// What a frame held.
#[derive(Debug)]
pub enum Frame {
    Single(Entry),
    Batch(Vec<Entry>),
}

/// Deepest nesting of arrays and objects a message may have.
pub const MAX_JSON_DEPTH: usize = 32;

/// How deeply `text` nests arrays and objects (strings are skipped), stopping early once
/// past `limit`.
fn nesting_depth(text: &str, limit: usize) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for byte in text.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
                if deepest > limit {
                    break;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Parses one text frame (or HTTP body) into calls.
pub fn parse_frame(text: &str) -> Frame {
    if nesting_depth(text, MAX_JSON_DEPTH) > MAX_JSON_DEPTH {
        return Frame::Single(Entry::Invalid {
            id: Value::Null,
            error: Error::InvalidRequest(
                format!("JSON nests deeper than {MAX_JSON_DEPTH} levels").into(),
            ),
        });
    }
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return Frame::Single(Entry::Invalid {
                id: Value::Null,
                error: Error::Parse(e.to_string()),
            });
        }
    };
    match value {
        Value::Array(items) if items.is_empty() => Frame::Single(Entry::Invalid {
            id: Value::Null,
            error: Error::InvalidRequest("empty batch".into()),
        }),
        Value::Array(items) => Frame::Batch(items.into_iter().map(parse_entry).collect()),
        other => Frame::Single(parse_entry(other)),
    }
}

fn parse_entry(value: Value) -> Entry {
    let Value::Object(mut obj) = value else {
        return invalid(Value::Null, "a request must be a JSON object");
    };
    // A usable id is echoed even when the rest of the request is wrong.
    let id = match obj.remove("id") {
        None => None,
        Some(id @ (Value::String(_) | Value::Number(_) | Value::Null)) => Some(id),
        Some(_) => return invalid(Value::Null, "\"id\" must be a string, a number or null"),
    };
    let reply_id = id.clone().unwrap_or(Value::Null);
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return invalid(reply_id, "\"jsonrpc\" must be exactly \"2.0\"");
    }
    let method = match obj.remove("method") {
        Some(Value::String(m)) => m,
        Some(_) => return invalid(reply_id, "\"method\" must be a string"),
        None => return invalid(reply_id, "\"method\" is missing"),
    };
    let params = match obj.remove("params") {
        None => None,
        Some(p @ (Value::Object(_) | Value::Array(_))) => Some(p),
        Some(_) => return invalid(reply_id, "\"params\" must be an object or an array"),
    };
    if let Some(extra) = obj.keys().find(|k| k.as_str() != "jsonrpc") {
        return invalid(
            reply_id,
            format!("unexpected member {extra:?} in the request"),
        );
    }
    Entry::Call(Call { id, method, params })
}

fn invalid(id: Value, message: impl Into<String>) -> Entry {
    Entry::Invalid {
        id,
        error: Error::InvalidRequest(message.into().into()),
    }
}

#[derive(Serialize)]
struct Success<'a, T> {
    jsonrpc: &'static str,
    result: &'a T,
    id: &'a Value,
}

/// The response to a successful request.
pub fn success(id: &Value, result: &impl Serialize) -> String {
    serde_json::to_string(&Success {
        jsonrpc: "2.0",
        result,
        id,
    })
    .unwrap_or_else(|err| {
        let error = Error::Internal(format!("a result did not serialize: {err}"));
        failure(id, &error).to_string()
    })
}

/// The response to a failed request: the error's code, its message for the caller and,
/// where it has one, its `data`.
pub fn failure(id: &Value, error: &Error) -> Value {
    error.log_detail();
    let mut body = Map::new();
    body.insert("code".into(), error.code().into());
    body.insert("message".into(), error.public_message().into());
    if let Some(data) = error.data() {
        body.insert("data".into(), data);
    }
    json!({ "jsonrpc": "2.0", "error": body, "id": id })
}

#[derive(Serialize)]
struct Notice<'a, T> {
    jsonrpc: &'static str,
    method: &'a str,
    params: &'a T,
}

/// A notification with the given method and params, as text.
pub fn notification(method: &str, params: &impl Serialize) -> String {
    serde_json::to_string(&Notice {
        jsonrpc: "2.0",
        method,
        params,
    })
    .unwrap_or_else(|err| {
        tracing::error!(%err, method, "could not encode a notification");
        String::new()
    })
}

/// The `quorum.decision.made` notification, serialized once and sent to every session.
pub fn decision_made(event: &DecisionEvent) -> String {
    notification(event::DECISION_MADE, event)
}

/// The `quorum.decision.expired` notification.
pub fn decision_expired(event: &super::DecisionExpired) -> String {
    notification(event::DECISION_EXPIRED, event)
}

/// The notification for one entry of the event log.
pub fn logged_event(event: &super::LoggedEvent) -> String {
    match event {
        super::LoggedEvent::Made(event) => decision_made(event),
        super::LoggedEvent::Expired(event) => decision_expired(event),
    }
}

/// A `system.events.incomplete` notice.
pub fn events_incomplete(notice: &EventsIncomplete) -> String {
    notification(event::EVENTS_INCOMPLETE, notice)
}

/// A `system.instance.lost` notice.
pub fn instance_lost(instance: &str) -> String {
    notification(event::INSTANCE_LOST, &super::InstanceLost::new(instance))
}

/// Joins a batch's serialized replies into one array (nothing if all were notifications).
pub fn encode_batch(replies: Vec<String>) -> Option<String> {
    if replies.is_empty() {
        return None;
    }
    let len = replies.iter().map(|r| r.len() + 1).sum::<usize>() + 1;
    let mut text = String::with_capacity(len);
    text.push('[');
    for (n, reply) in replies.iter().enumerate() {
        if n > 0 {
            text.push(',');
        }
        text.push_str(reply);
    }
    text.push(']');
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_batch_is_one_invalid_request() {
        let Frame::Single(Entry::Invalid { error, .. }) = parse_frame("[]") else {
            panic!()
        };
        assert_eq!(error.code(), -32600);
    }

    #[test]
    fn deep_nesting_is_an_invalid_request_but_brackets_in_strings_are_not_nesting() {
        let deep = format!("{}{}", "[".repeat(40), "]".repeat(40));
        let Frame::Single(Entry::Invalid { error, .. }) = parse_frame(&deep) else {
            panic!()
        };
        assert_eq!(error.code(), -32600);
        let quoted = format!(
            r#"{{"jsonrpc":"2.0","method":"m","params":{{"v":"{}\""}},"id":1}}"#,
            "[".repeat(100)
        );
        assert!(matches!(
            parse_frame(&quoted),
            Frame::Single(Entry::Call(_))
        ));
    }

    #[test]
    fn unknown_param_is_named() {
        let params = Some(json!({"totalinstance": 5}));
        let Err(err) = super::super::fields::Params::new(params, &["totalInstances"]) else {
            panic!()
        };
        let reply = failure(&json!(1), &err);
        assert_eq!(reply["error"]["code"], -32602);
        assert_eq!(reply["error"]["data"]["field"], "totalinstance");
    }
}

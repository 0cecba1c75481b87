//! JSON-RPC 2.0 wire format: the one place that knows how requests, responses,
//! errors and notifications look on the wire.

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::decision::DecisionEvent;
use crate::error::Error;

/// Method name of the decision notification pushed to every session.
pub const DECISION_MADE: &str = "quorum.decision.made";
/// Method name of the notice that a replay could not return every missed event.
pub const EVENTS_INCOMPLETE: &str = "system.events.incomplete";

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
struct SuccessBody<'a> {
    jsonrpc: &'static str,
    result: &'a Value,
    id: &'a Value,
}

/// The response to a successful request.
pub fn success(id: &Value, result: &Value) -> Value {
    json!(SuccessBody {
        jsonrpc: "2.0",
        result,
        id
    })
}

/// The response to a failed request. Internal details are logged, never sent.
pub fn failure(id: &Value, error: &Error) -> Value {
    let message = match error {
        Error::Internal(detail) => {
            tracing::error!(%detail, "internal error");
            "internal error".to_owned()
        }
        Error::Backend(e) => {
            tracing::warn!(err = %e, "Redis call failed");
            "backend unavailable: the hub could not reach Redis; retry the call (a repeated vote is answered already_voted if the first one counted)".to_owned()
        }
        Error::Timeout(after) => format!(
            "the backend did not finish within {after:?}, so the outcome is unknown; retrying is safe \
             (a vote that did count is answered already_voted with its recordedValue)"
        ),
        Error::CircuitOpen { retry_after } => format!(
            "backend circuit open after repeated Redis failures; calls are refused without trying \
             Redis for another {} ms",
            retry_after.as_millis()
        ),
        other => other.to_string(),
    };
    let mut body = Map::new();
    body.insert("code".into(), error.code().into());
    body.insert("message".into(), message.into());
    let data = match error {
        Error::InvalidParams { field, unknown, .. } => unknown
            .as_deref()
            .or(*field)
            .map(|field| json!({ "field": field })),
        Error::Timeout(_) => Some(json!({ "reason": "timeout" })),
        Error::CircuitOpen { retry_after } => Some(
            json!({ "reason": "circuit_open", "retryAfterMs": retry_after.as_millis() as u64 }),
        ),
        Error::RateLimited { retry_after_ms, .. } => {
            Some(json!({ "retryAfterMs": retry_after_ms }))
        }
        _ => None,
    };
    if let Some(data) = data {
        body.insert("data".into(), data);
    }
    json!({ "jsonrpc": "2.0", "error": body, "id": id })
}

/// The `quorum.decision.made` notification, serialized once and sent to every session.
pub fn decision_notification(event: &DecisionEvent) -> String {
    notification(DECISION_MADE, &json!(event))
}

/// A notification with the given method and params.
pub fn notification(method: &str, params: &Value) -> String {
    json!({ "jsonrpc": "2.0", "method": method, "params": params }).to_string()
}

/// The notice sent before a replay whose start is older than the events still kept.
pub fn events_incomplete(since: crate::decision::EventId) -> String {
    let message = format!(
        "some decision events after {since} are no longer kept; the ones that follow are all that \
         remain, so call system.get_state for the current state of every decision"
    );
    json!({
        "jsonrpc": "2.0",
        "method": EVENTS_INCOMPLETE,
        "params": { "since": since.to_string(), "message": message },
    })
    .to_string()
}

/// Serializes what a frame produced: nothing (only notifications), one response, or an array.
pub fn encode_replies(frame_was_batch: bool, mut replies: Vec<Value>) -> Option<String> {
    if frame_was_batch {
        (!replies.is_empty()).then(|| Value::Array(replies).to_string())
    } else {
        replies.pop().map(|r| r.to_string())
    }
}

/// Typed access to a call's `params` that rejects unknown fields by name.
pub struct Params {
    fields: Map<String, Value>,
}

impl Params {
    /// Accepts a missing `params` or an object whose keys are all in `allowed`.
    pub fn new(params: Option<Value>, allowed: &[&str]) -> Result<Self, Error> {
        let fields = match params {
            None => Map::new(),
            Some(Value::Object(fields)) => fields,
            Some(_) => {
                return Err(Error::InvalidParams {
                    field: None,
                    unknown: None,
                    message: "params must be an object with named fields".into(),
                });
            }
        };
        if let Some(unknown) = fields.keys().find(|k| !allowed.contains(&k.as_str())) {
            let expected = allowed.join(", ");
            return Err(Error::InvalidParams {
                field: None,
                unknown: Some(unknown.clone()),
                message: if allowed.is_empty() {
                    format!("unknown field {unknown:?}: this method takes no params")
                } else {
                    format!("unknown field {unknown:?}; expected one of: {expected}")
                },
            });
        }
        Ok(Self { fields })
    }

    pub fn str(&self, field: &'static str) -> Result<&str, Error> {
        match self.fields.get(field) {
            Some(Value::String(s)) => Ok(s),
            Some(other) => Err(Error::invalid(
                field,
                format!("{field} must be a string (got {})", kind(other)),
            )),
            None => Err(Error::invalid(field, format!("{field} is required"))),
        }
    }

    pub fn opt_str(&self, field: &'static str) -> Result<Option<&str>, Error> {
        match self.fields.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(Error::invalid(
                field,
                format!("{field} must be a string (got {})", kind(other)),
            )),
        }
    }

    pub fn opt_u64(&self, field: &'static str) -> Result<Option<u64>, Error> {
        match self.fields.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(v) => Ok(Some(v)),
                None => Err(Error::invalid(
                    field,
                    format!("{field} must be a positive integer (got {n})"),
                )),
            },
            Some(other) => Err(Error::invalid(
                field,
                format!("{field} must be an integer (got {})", kind(other)),
            )),
        }
    }

    pub fn opt_strings(&self, field: &'static str) -> Result<Vec<String>, Error> {
        match self.fields.get(field) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(Error::invalid(
                        field,
                        format!("{field} must hold only strings (got {})", kind(other)),
                    )),
                })
                .collect(),
            Some(other) => Err(Error::invalid(
                field,
                format!("{field} must be an array of strings (got {})", kind(other)),
            )),
        }
    }

    pub fn opt_object(&self, field: &'static str) -> Result<Map<String, Value>, Error> {
        match self.fields.get(field) {
            None | Some(Value::Null) => Ok(Map::new()),
            Some(Value::Object(obj)) => Ok(obj.clone()),
            Some(other) => Err(Error::invalid(
                field,
                format!("{field} must be an object (got {})", kind(other)),
            )),
        }
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
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
        let Err(err) = Params::new(params, &["totalInstances"]) else {
            panic!()
        };
        let reply = failure(&json!(1), &err);
        assert_eq!(reply["error"]["code"], -32602);
        assert_eq!(reply["error"]["data"]["field"], "totalinstance");
    }
}

//! The contract as an OpenRPC 1.3 document: every method with its params, result and
//! errors, and every notification the hub sends, with JSON Schemas generated from the same
//! wire types the hub serializes. Served at `GET /openrpc.json` and by `rpc.discover`.
//!
//! OpenRPC describes calls; the notifications a hub pushes are listed under
//! `x-notifications`, as method objects without a result (OpenRPC's form of a
//! notification), with their params split by name like a method's.

use std::sync::OnceLock;

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::{
    Alive, DecisionEvent, DecisionExpired, DecisionStatus, EventsIncomplete, InstanceLost,
    InstanceParams, InstanceRegistered, InstanceUnregistered, NoParams, RefreshParams, Refreshed,
    RegisterParams, Registered, State, StateParams, StatusParams, SubscribeParams, Subscribed,
    Unregistered, UnsubscribeParams, VoteParams, VoteRecorded, VoteReply, event, method,
};

/// The OpenRPC version the document follows.
pub const OPENRPC_VERSION: &str = "1.3.2";

/// Where the document keeps its shared schemas; `$ref`s point here.
const SCHEMAS_PATH: &str = "/components/schemas";

/// The document, built once.
pub fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(build)
}

/// The document as JSON text, for replies.
pub fn document_text() -> &'static RawValue {
    static TEXT: OnceLock<Box<RawValue>> = OnceLock::new();
    TEXT.get_or_init(|| {
        serde_json::value::to_raw_value(document()).expect("a JSON value serializes")
    })
}

/// The errors a call can end with, by their name in `components.errors`.
#[derive(Debug, Clone, Copy)]
enum Failure {
    InvalidParams,
    RateLimited,
    CircuitOpen,
    Unauthorized,
    BatchReplyFull,
    NotFound,
    Backend,
    Internal,
}

impl Failure {
    const ALL: [Failure; 8] = [
        Failure::InvalidParams,
        Failure::RateLimited,
        Failure::CircuitOpen,
        Failure::Unauthorized,
        Failure::BatchReplyFull,
        Failure::NotFound,
        Failure::Backend,
        Failure::Internal,
    ];

    /// Its code, taken from the hub's own error type.
    fn code(self) -> i64 {
        use crate::error::Error;
        let sample = match self {
            Failure::InvalidParams => Error::invalid("field", ""),
            Failure::RateLimited => Error::RateLimited {
                retry_after_ms: 0,
                message: String::new(),
            },
            Failure::CircuitOpen => Error::CircuitOpen {
                retry_after: std::time::Duration::ZERO,
            },
            Failure::Unauthorized => Error::Unauthorized(String::new()),
            Failure::BatchReplyFull => Error::BatchReplyFull { limit_bytes: 0 },
            Failure::NotFound => Error::NotFound(String::new()),
            Failure::Backend => Error::Timeout(std::time::Duration::ZERO),
            Failure::Internal => Error::Internal(String::new()),
        };
        sample.code()
    }

    fn name(self) -> &'static str {
        match self {
            Failure::InvalidParams => "InvalidParams",
            Failure::RateLimited => "RateLimited",
            Failure::CircuitOpen => "CircuitOpen",
            Failure::Unauthorized => "Unauthorized",
            Failure::BatchReplyFull => "BatchReplyFull",
            Failure::NotFound => "NotFound",
            Failure::Backend => "BackendUnavailable",
            Failure::Internal => "Internal",
        }
    }

    fn meaning(self) -> &'static str {
        match self {
            Failure::InvalidParams => {
                "invalid params: a field is missing, of the wrong type, out of range or unknown; \
                 data.field names it"
            }
            Failure::RateLimited => {
                "rate limited: too many calls from this session, or votes from this instance; \
                 data.retryAfterMs says when to retry"
            }
            Failure::CircuitOpen => {
                "circuit open: Redis failed repeatedly and is not called for a while; \
                 data.retryAfterMs says for how long"
            }
            Failure::Unauthorized => {
                "not allowed: the session is not registered as this instance, the instance is \
                 bound to another session, or the token does not allow it"
            }
            Failure::BatchReplyFull => {
                "not run: this batch's replies reached their size bound; send the call again"
            }
            Failure::NotFound => "no such decision",
            Failure::Backend => {
                "backend unavailable: Redis could not be reached, did not answer in time \
                 (data.reason: timeout) or too few replicas confirmed the write \
                 (data.reason: replication); retrying is safe"
            }
            Failure::Internal => "internal error",
        }
    }
}

/// Errors every method can end with.
const EVERY_CALL: [Failure; 3] = [
    Failure::InvalidParams,
    Failure::RateLimited,
    Failure::BatchReplyFull,
];
/// Errors of a method that acts as a registered instance in Redis.
const AS_INSTANCE: [Failure; 4] = [
    Failure::Unauthorized,
    Failure::CircuitOpen,
    Failure::Backend,
    Failure::Internal,
];
/// Errors of a method that reads Redis.
const READS: [Failure; 3] = [Failure::CircuitOpen, Failure::Backend, Failure::Internal];

/// One method as the document describes it.
struct MethodSpec {
    name: &'static str,
    summary: &'static str,
    params: fn(&mut SchemaGenerator) -> schemars::Schema,
    result: fn(&mut SchemaGenerator) -> schemars::Schema,
    result_name: &'static str,
    errors: &'static [Failure],
}

fn params<T: JsonSchema>(generator: &mut SchemaGenerator) -> schemars::Schema {
    generator.root_schema_for::<T>()
}

fn result<T: JsonSchema>(generator: &mut SchemaGenerator) -> schemars::Schema {
    generator.subschema_for::<T>()
}

const METHODS: [MethodSpec; 9] = [
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
                  reaches a majority of totalInstances fixes the decision.",
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
];

/// One notification as the document describes it.
struct NotificationSpec {
    name: &'static str,
    summary: &'static str,
    params: fn(&mut SchemaGenerator) -> schemars::Schema,
}

const NOTIFICATIONS: [NotificationSpec; 7] = [
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

fn build() -> Value {
    // Params as the hub accepts them, inlined; results and events as the hub sends them,
    // shared through `components.schemas`.
    let mut accepted = SchemaSettings::draft2020_12()
        .for_deserialize()
        .with(|s| s.inline_subschemas = true)
        .into_generator();
    let mut sent = SchemaSettings::draft2020_12()
        .for_serialize()
        .with(|s| s.definitions_path = SCHEMAS_PATH.into())
        .into_generator();
    let methods: Vec<Value> = METHODS
        .iter()
        .map(|spec| {
            let errors: Vec<Value> = EVERY_CALL
                .iter()
                .chain(spec.errors)
                .map(|failure| json!({ "$ref": format!("#/components/errors/{}", failure.name()) }))
                .collect();
            json!({
                "name": spec.name,
                "summary": spec.summary,
                "paramStructure": "by-name",
                "params": descriptors(&(spec.params)(&mut accepted).to_value()),
                "result": { "name": spec.result_name, "schema": (spec.result)(&mut sent) },
                "errors": errors,
            })
        })
        .collect();
    let notifications: Vec<Value> = NOTIFICATIONS
        .iter()
        .map(|spec| {
            let reference = (spec.params)(&mut sent).to_value();
            let definition = resolve(&reference, sent.definitions());
            json!({
                "name": spec.name,
                "summary": spec.summary,
                "paramStructure": "by-name",
                "params": descriptors(&definition),
                "x-params-schema": reference,
            })
        })
        .collect();
    let errors: Map<String, Value> = Failure::ALL
        .iter()
        .map(|failure| {
            (
                failure.name().to_owned(),
                json!({ "code": failure.code(), "message": failure.meaning() }),
            )
        })
        .collect();
    // Keeps `NoParams` honest: a method without params takes an empty object.
    debug_assert!(descriptors(&params::<NoParams>(&mut accepted).to_value()).is_empty());
    let mut document = json!({
        "openrpc": OPENRPC_VERSION,
        "info": {
            "title": "quorum-hub",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "JSON-RPC 2.0 over a WebSocket (`/ws`; every method and every \
                notification) or HTTP POST (`/rpc`; methods only). Params are by name; unknown \
                fields are refused. Resume a session after a drop with `/ws?lastEventId=<id>`: \
                every decision event after that id arrives first, once. `rpc.discover` returns \
                this document.",
            "license": { "name": "MIT" },
        },
        "servers": [
            { "name": "websocket", "url": "/ws", "summary": "Methods and notifications" },
            { "name": "http", "url": "/rpc", "summary": "Methods only (POST)" },
        ],
        "methods": methods,
        "x-notifications": notifications,
        "components": {
            "schemas": sent.take_definitions(true),
            "errors": errors,
        },
    });
    unwrap_descriptions(&mut document);
    document
}

/// Joins the lines of descriptions taken from doc comments (paragraphs stay apart).
fn unwrap_descriptions(value: &mut Value) {
    match value {
        Value::Object(fields) => {
            for (key, field) in fields.iter_mut() {
                match field {
                    Value::String(text) if key == "description" => {
                        *text = text
                            .split("\n\n")
                            .map(|paragraph| paragraph.replace('\n', " "))
                            .collect::<Vec<_>>()
                            .join("\n\n");
                    }
                    _ => unwrap_descriptions(field),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(unwrap_descriptions),
        _ => {}
    }
}

/// A `$ref` to a shared schema, resolved; any other schema as it is.
fn resolve(schema: &Value, definitions: &Map<String, Value>) -> Value {
    schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix(&format!("#{SCHEMAS_PATH}/")))
        .and_then(|name| definitions.get(name))
        .unwrap_or(schema)
        .clone()
}

/// An object schema's properties as OpenRPC content descriptors, in declaration order.
fn descriptors(object: &Value) -> Vec<Value> {
    let required: Vec<&str> = object
        .get("required")
        .and_then(Value::as_array)
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(properties) = object.get("properties").and_then(Value::as_object) else {
        return Vec::new();
    };
    properties
        .iter()
        .map(|(name, schema)| {
            let mut schema = schema.clone();
            let description = schema.as_object_mut().and_then(|s| s.remove("description"));
            let mut descriptor = json!({
                "name": name,
                "required": required.contains(&name.as_str()),
                "schema": schema,
            });
            if let Some(description) = description {
                descriptor["description"] = description;
            }
            descriptor
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_and_event_is_described_once() {
        let doc = document();
        let names: Vec<&str> = doc["methods"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap())
            .collect();
        let mut expected: Vec<&str> = method::ALL
            .into_iter()
            .filter(|m| *m != method::DISCOVER)
            .collect();
        assert_eq!(names, expected);
        expected.sort();
        expected.dedup();
        assert_eq!(expected.len(), names.len());
        let events: Vec<&str> = doc["x-notifications"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["name"].as_str().unwrap())
            .collect();
        for name in event::SUBSCRIBABLE {
            assert!(events.contains(&name), "{name} missing");
        }
        // Every `$ref` points at something the document holds.
        let text = serde_json::to_string(doc).unwrap();
        for reference in text.split("\"$ref\":\"").skip(1) {
            let target = &reference[..reference.find('"').unwrap()];
            let pointer = target.strip_prefix('#').unwrap();
            assert!(doc.pointer(pointer).is_some(), "dangling {target}");
        }
    }

    #[test]
    fn vote_params_carry_the_hubs_limits() {
        let doc = document();
        let vote = doc["methods"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == method::VOTE)
            .unwrap();
        let param = |name: &str| {
            vote["params"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == name)
                .unwrap()
                .clone()
        };
        assert_eq!(param("decision")["required"], true);
        assert_eq!(param("decision")["schema"]["maxLength"], 200);
        assert_eq!(param("totalInstances")["required"], false);
        assert_eq!(param("totalInstances")["schema"]["maximum"], 10_000);
        assert_eq!(param("closeAfterMs")["schema"]["minimum"], 100);
    }
}

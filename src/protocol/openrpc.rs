//! The contract as an OpenRPC 1.3 document: every method with its params, result and
//! errors, and every notification the hub sends, with JSON Schemas generated from the same
//! wire types the hub serializes. Served at `GET /openrpc.json` and by `rpc.discover`.
//!
//! OpenRPC describes calls; the notifications a hub pushes are listed under
//! `x-notifications`, as method objects without a result (OpenRPC's form of a
//! notification), with their params split by name like a method's.

mod failures;
mod specs;

use std::sync::OnceLock;

use schemars::generate::SchemaSettings;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::NoParams;
use failures::{EVERY_CALL, Failure};
use specs::{METHODS, NOTIFICATIONS, params};

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
    use crate::protocol::{event, method};

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

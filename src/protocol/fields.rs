//! Typed access to a call's `params`: each field read as the type it must have, unknown
//! fields refused by name, and the checks that several methods' params share.

use serde_json::{Map, Value};

use super::event;
use crate::error::Error;

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

    pub fn opt_value(&self, field: &'static str) -> Option<&Value> {
        self.fields.get(field)
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

/// Checks that each pattern matches a decision event, which is all that `carrier` (an
/// endpoint's deliveries) carries.
pub(super) fn decision_event_patterns(events: &[String], carrier: &str) -> Result<(), Error> {
    for pattern in events {
        if ![event::DECISION_MADE, event::DECISION_EXPIRED]
            .iter()
            .any(|name| event::pattern_matches(pattern, name))
        {
            return Err(Error::invalid(
                "events",
                format!(
                    "events: {pattern:?} matches no decision event; {carrier} carry {} and {}",
                    event::DECISION_MADE,
                    event::DECISION_EXPIRED
                ),
            ));
        }
    }
    Ok(())
}

//! Typed requests: a JSON-RPC call's method and params, validated into domain types
//! before anything touches Redis. Pure, so it can be fuzzed on its own.

use serde_json::{Map, Value};

use super::{DecisionCursor, EventId, event, method};
use crate::decision::{Ballot, DecisionName, VoteValue, parse_close_after, parse_total_instances};
use crate::error::Error;
use crate::instance::{InstanceId, Registration};

/// A validated call.
#[derive(Debug, Clone)]
pub enum Request {
    Register(Registration),
    Heartbeat(InstanceId),
    Unregister(InstanceId),
    Vote(Ballot),
    Status(DecisionName),
    State(StatePage),
    Subscribe {
        events: Vec<String>,
        since: Option<EventId>,
    },
    Unsubscribe {
        events: Vec<String>,
    },
    /// A newer token for the session (checked by the method, which knows the secret).
    AuthRefresh {
        token: String,
    },
    /// The hub's OpenRPC document.
    Discover,
}

/// Instances and decisions one `system.get_state` page lists when no `limit` is given.
pub const DEFAULT_STATE_PAGE: usize = 100;
/// Largest `limit` of a `system.get_state` page.
pub const MAX_STATE_PAGE: usize = 1000;

/// The page of `system.get_state` a caller asks for.
#[derive(Debug, Clone)]
pub struct StatePage {
    /// Most instances, and most decisions, to list.
    pub limit: usize,
    /// List the instances after this one (`nextInstances` of the previous page).
    pub instances_after: Option<InstanceId>,
    /// List the decisions after this one (`nextDecisions` of the previous page).
    pub decisions_after: Option<DecisionCursor>,
}

/// Longest token `system.auth.refresh` accepts, in bytes.
pub const MAX_TOKEN_LEN: usize = 4096;

impl Request {
    /// Validates `params` for `method`. Unknown methods, unknown fields, wrong types and
    /// out-of-range values are refused with a message naming what is wrong.
    pub fn parse(method: &str, params: Option<Value>) -> Result<Self, Error> {
        match method {
            method::REGISTER => {
                let p = Params::new(params, &["instanceId", "roles", "metadata"])?;
                Ok(Request::Register(Registration::new(
                    instance(&p)?,
                    p.opt_strings("roles")?,
                    p.opt_object("metadata")?,
                )?))
            }
            method::HEARTBEAT => Ok(Request::Heartbeat(instance(&Params::new(
                params,
                &["instanceId"],
            )?)?)),
            method::UNREGISTER => Ok(Request::Unregister(instance(&Params::new(
                params,
                &["instanceId"],
            )?)?)),
            method::VOTE => {
                let p = Params::new(
                    params,
                    &[
                        "instanceId",
                        "decision",
                        "value",
                        "totalInstances",
                        "closeAfterMs",
                    ],
                )?;
                Ok(Request::Vote(Ballot {
                    instance: instance(&p)?,
                    decision: DecisionName::parse("decision", p.str("decision")?)?,
                    value: VoteValue::parse("value", p.str("value")?)?,
                    total_instances: p
                        .opt_u64("totalInstances")?
                        .map(|n| parse_total_instances("totalInstances", n))
                        .transpose()?,
                    close_after_ms: p
                        .opt_u64("closeAfterMs")?
                        .map(|n| parse_close_after("closeAfterMs", n))
                        .transpose()?,
                }))
            }
            method::STATUS => {
                let p = Params::new(params, &["decision"])?;
                Ok(Request::Status(DecisionName::parse(
                    "decision",
                    p.str("decision")?,
                )?))
            }
            method::GET_STATE => {
                let p = Params::new(params, &["limit", "instancesAfter", "decisionsAfter"])?;
                let limit = match p.opt_u64("limit")? {
                    None => DEFAULT_STATE_PAGE,
                    Some(n) if (1..=MAX_STATE_PAGE as u64).contains(&n) => n as usize,
                    Some(n) => {
                        return Err(Error::invalid(
                            "limit",
                            format!("limit: expected 1 to {MAX_STATE_PAGE}, got {n}"),
                        ));
                    }
                };
                let instances_after = p
                    .opt_str("instancesAfter")?
                    .map(|raw| InstanceId::parse("instancesAfter", raw))
                    .transpose()?;
                let decisions_after = p
                    .opt_str("decisionsAfter")?
                    .map(|raw| {
                        raw.parse::<DecisionCursor>().map_err(|e| {
                            Error::invalid("decisionsAfter", format!("decisionsAfter: {e}"))
                        })
                    })
                    .transpose()?;
                Ok(Request::State(StatePage {
                    limit,
                    instances_after,
                    decisions_after,
                }))
            }
            method::SUBSCRIBE => {
                let p = Params::new(params, &["events", "since"])?;
                let since = p
                    .opt_str("since")?
                    .map(|raw| {
                        raw.parse::<EventId>()
                            .map_err(|e| Error::invalid("since", format!("since: {e}")))
                    })
                    .transpose()?;
                Ok(Request::Subscribe {
                    events: event_patterns(&p)?,
                    since,
                })
            }
            method::UNSUBSCRIBE => {
                let p = Params::new(params, &["events"])?;
                Ok(Request::Unsubscribe {
                    events: p.opt_strings("events")?,
                })
            }
            method::AUTH_REFRESH => {
                let p = Params::new(params, &["token"])?;
                let token = p.str("token")?;
                if token.is_empty() || token.len() > MAX_TOKEN_LEN {
                    return Err(Error::invalid(
                        "token",
                        format!("token: expected a JWT of 1 to {MAX_TOKEN_LEN} bytes"),
                    ));
                }
                Ok(Request::AuthRefresh {
                    token: token.to_owned(),
                })
            }
            method::DISCOVER => {
                Params::new(params, &[])?;
                Ok(Request::Discover)
            }
            _ => Err(Error::MethodNotFound(format!(
                "{method:?}; available: {}",
                method::ALL.join(", ")
            ))),
        }
    }
}

fn instance(params: &Params) -> Result<InstanceId, Error> {
    InstanceId::parse("instanceId", params.str("instanceId")?)
}

/// Checks event patterns: exact names, or a prefix followed by `.*`.
fn event_patterns(params: &Params) -> Result<Vec<String>, Error> {
    let patterns = params.opt_strings("events")?;
    for pattern in &patterns {
        if !event::SUBSCRIBABLE
            .iter()
            .any(|name| event::pattern_matches(pattern, name))
        {
            return Err(Error::invalid(
                "events",
                format!(
                    "events: {pattern:?} matches no event; known events: {}",
                    event::SUBSCRIBABLE.join(", ")
                ),
            ));
        }
    }
    Ok(patterns)
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

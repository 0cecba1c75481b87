//! Typed requests: a JSON-RPC call's method and params, validated into domain types
//! before anything touches Redis. Pure, so it can be fuzzed on its own.

use serde_json::Value;

use crate::decision::{Ballot, DecisionName, EventId, VoteValue, parse_total_instances};
use crate::error::Error;
use crate::instance::{InstanceId, Registration};
use crate::rpc::{self, Params};

/// Event names a session may subscribe to. `quorum.decision.made` reaches every session
/// whether it subscribes or not.
pub const EVENT_NAMES: [&str; 4] = [
    rpc::DECISION_MADE,
    "quorum.vote.recorded",
    "instance.registered",
    "instance.unregistered",
];

/// Whether an event name matches a subscription pattern: the exact name, or a prefix
/// followed by `.*`.
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix(".*") {
        Some(prefix) => {
            name.len() > prefix.len() + 1
                && name.starts_with(prefix)
                && name.as_bytes()[prefix.len()] == b'.'
        }
        None => name == pattern,
    }
}

/// Every method the hub serves.
pub const METHODS: [&str; 8] = [
    "system.register",
    "system.heartbeat",
    "system.unregister",
    "system.quorum.vote",
    "system.quorum.status",
    "system.get_state",
    "system.subscribe",
    "system.unsubscribe",
];

/// A validated call.
#[derive(Debug, Clone)]
pub enum Request {
    Register(Registration),
    Heartbeat(InstanceId),
    Unregister(InstanceId),
    Vote(Ballot),
    Status(DecisionName),
    State,
    Subscribe {
        events: Vec<String>,
        since: Option<EventId>,
    },
    Unsubscribe {
        events: Vec<String>,
    },
}

impl Request {
    /// Validates `params` for `method`. Unknown methods, unknown fields, wrong types and
    /// out-of-range values are refused with a message naming what is wrong.
    pub fn parse(method: &str, params: Option<Value>) -> Result<Self, Error> {
        match method {
            "system.register" => {
                let p = Params::new(params, &["instanceId", "roles", "metadata"])?;
                Ok(Request::Register(Registration::new(
                    instance(&p)?,
                    p.opt_strings("roles")?,
                    p.opt_object("metadata")?,
                )?))
            }
            "system.heartbeat" => Ok(Request::Heartbeat(instance(&Params::new(
                params,
                &["instanceId"],
            )?)?)),
            "system.unregister" => Ok(Request::Unregister(instance(&Params::new(
                params,
                &["instanceId"],
            )?)?)),
            "system.quorum.vote" => {
                let p = Params::new(
                    params,
                    &["instanceId", "decision", "value", "totalInstances"],
                )?;
                Ok(Request::Vote(Ballot {
                    instance: instance(&p)?,
                    decision: DecisionName::parse("decision", p.str("decision")?)?,
                    value: VoteValue::parse("value", p.str("value")?)?,
                    total_instances: p
                        .opt_u64("totalInstances")?
                        .map(|n| parse_total_instances("totalInstances", n))
                        .transpose()?,
                }))
            }
            "system.quorum.status" => {
                let p = Params::new(params, &["decision"])?;
                Ok(Request::Status(DecisionName::parse(
                    "decision",
                    p.str("decision")?,
                )?))
            }
            "system.get_state" => {
                Params::new(params, &[])?;
                Ok(Request::State)
            }
            "system.subscribe" => {
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
            "system.unsubscribe" => {
                let p = Params::new(params, &["events"])?;
                Ok(Request::Unsubscribe {
                    events: p.opt_strings("events")?,
                })
            }
            _ => Err(Error::MethodNotFound(format!(
                "{method:?}; available: {}",
                METHODS.join(", ")
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
        if !EVENT_NAMES
            .iter()
            .any(|name| pattern_matches(pattern, name))
        {
            return Err(Error::invalid(
                "events",
                format!(
                    "events: {pattern:?} matches no event; known events: {}",
                    EVENT_NAMES.join(", ")
                ),
            ));
        }
    }
    Ok(patterns)
}

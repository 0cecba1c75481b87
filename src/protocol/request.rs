//! Typed requests: a JSON-RPC call's method and params, validated into domain types
//! before anything touches Redis. Pure, so it can be fuzzed on its own.

use serde_json::Value;

use super::fields::{Params, decision_event_patterns};
use super::policy::PolicyCall;
use super::push::{PushCall, push_call};
use super::webhook::{
    DEFAULT_DELIVERIES_PAGE, MAX_DELIVERIES_PAGE, MAX_WEBHOOK_DESCRIPTION_LEN, MAX_WEBHOOK_URL_LEN,
};
use super::{DecisionCursor, EventId, event, method};
use crate::decision::{Ballot, DecisionName, VoteValue, parse_close_after, parse_total_instances};
use crate::error::Error;
use crate::instance::{InstanceId, Registration};
use crate::policy::{Policy, check_pattern};

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
    /// One of the `system.webhooks.*` methods.
    Webhook(WebhookCall),
    /// One of the `system.push.*` methods.
    Push(PushCall),
    /// One of the `system.policies.*` methods.
    Policy(PolicyCall),
    /// The hub's OpenRPC document.
    Discover,
}

/// A validated `system.webhooks.*` call. The URL is checked for its form here; whether the
/// hub may reach it is the method's to say.
#[derive(Debug, Clone)]
pub enum WebhookCall {
    Add {
        url: String,
        events: Vec<String>,
        description: Option<String>,
    },
    List,
    Remove(String),
    Enable(String),
    Rotate(String),
    Deliveries {
        id: String,
        limit: usize,
        after: Option<EventId>,
    },
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
                let limit = page_limit(&p, DEFAULT_STATE_PAGE, MAX_STATE_PAGE)?;
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
            method::WEBHOOKS_ADD
            | method::WEBHOOKS_LIST
            | method::WEBHOOKS_REMOVE
            | method::WEBHOOKS_ENABLE
            | method::WEBHOOKS_ROTATE
            | method::WEBHOOKS_DELIVERIES => Ok(Request::Webhook(webhook_call(method, params)?)),
            method::PUSH_SUBSCRIBE | method::PUSH_UNSUBSCRIBE | method::PUSH_LIST => {
                Ok(Request::Push(push_call(method, params)?))
            }
            method::POLICIES_SET | method::POLICIES_LIST | method::POLICIES_REMOVE => {
                Ok(Request::Policy(policy_call(method, params)?))
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

fn webhook_call(method: &str, params: Option<Value>) -> Result<WebhookCall, Error> {
    Ok(match method {
        method::WEBHOOKS_ADD => {
            let p = Params::new(params, &["url", "events", "description"])?;
            let url = p.str("url")?;
            let scheme = url.split_once("://").map(|(scheme, _)| scheme);
            if !scheme
                .is_some_and(|s| s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https"))
            {
                return Err(Error::invalid(
                    "url",
                    "url: expected an http:// or https:// URL",
                ));
            }
            if url.len() > MAX_WEBHOOK_URL_LEN {
                return Err(Error::invalid(
                    "url",
                    format!("url: at most {MAX_WEBHOOK_URL_LEN} bytes"),
                ));
            }
            let description = p.opt_str("description")?;
            if description.is_some_and(|d| d.len() > MAX_WEBHOOK_DESCRIPTION_LEN) {
                return Err(Error::invalid(
                    "description",
                    format!("description: at most {MAX_WEBHOOK_DESCRIPTION_LEN} bytes"),
                ));
            }
            let events = p.opt_strings("events")?;
            decision_event_patterns(&events, "webhooks")?;
            WebhookCall::Add {
                url: url.to_owned(),
                events,
                description: description.map(str::to_owned),
            }
        }
        method::WEBHOOKS_LIST => {
            Params::new(params, &[])?;
            WebhookCall::List
        }
        method::WEBHOOKS_DELIVERIES => {
            let p = Params::new(params, &["id", "limit", "after"])?;
            let limit = page_limit(&p, DEFAULT_DELIVERIES_PAGE, MAX_DELIVERIES_PAGE)?;
            let after = p
                .opt_str("after")?
                .map(|raw| {
                    raw.parse::<EventId>()
                        .map_err(|e| Error::invalid("after", format!("after: {e}")))
                })
                .transpose()?;
            WebhookCall::Deliveries {
                id: webhook_id(&p)?,
                limit,
                after,
            }
        }
        _ => {
            let id = webhook_id(&Params::new(params, &["id"])?)?;
            match method {
                method::WEBHOOKS_REMOVE => WebhookCall::Remove(id),
                method::WEBHOOKS_ENABLE => WebhookCall::Enable(id),
                _ => WebhookCall::Rotate(id),
            }
        }
    })
}

/// Parses the params of one `system.policies.*` method.
fn policy_call(name: &str, params: Option<Value>) -> Result<PolicyCall, Error> {
    Ok(match name {
        method::POLICIES_SET => {
            let p = Params::new(params, &["pattern", "policy"])?;
            let pattern = pattern(&p)?;
            let raw = p
                .opt_value("policy")
                .ok_or_else(|| Error::invalid("policy", "missing required field \"policy\""))?;
            let policy: Policy = serde_json::from_value(raw.clone())
                .map_err(|e| Error::invalid("policy", format!("policy: {e}")))?;
            policy.check()?;
            PolicyCall::Set { pattern, policy }
        }
        method::POLICIES_LIST => {
            Params::new(params, &[])?;
            PolicyCall::List
        }
        _ => PolicyCall::Remove(pattern(&Params::new(params, &["pattern"])?)?),
    })
}

/// A policy's pattern: a decision name, or a prefix of one followed by `*`.
fn pattern(p: &Params) -> Result<String, Error> {
    let pattern = p.str("pattern")?;
    check_pattern(pattern)?;
    Ok(pattern.to_owned())
}

/// A webhook endpoint's id: 1 to 64 letters, digits, `_` or `-`.
fn webhook_id(params: &Params) -> Result<String, Error> {
    let id = params.str("id")?;
    let valid = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !valid {
        return Err(Error::invalid(
            "id",
            "id: expected a webhook id (1 to 64 letters, digits, _ or -)",
        ));
    }
    Ok(id.to_owned())
}

/// A page's `limit`: `default` when absent, else 1 to `max`.
fn page_limit(params: &Params, default: usize, max: usize) -> Result<usize, Error> {
    match params.opt_u64("limit")? {
        None => Ok(default),
        Some(n) if (1..=max as u64).contains(&n) => Ok(n as usize),
        Some(n) => Err(Error::invalid(
            "limit",
            format!("limit: expected 1 to {max}, got {n}"),
        )),
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

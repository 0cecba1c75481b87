//! Params of the methods, as peers send them, with their JSON Schemas (the OpenRPC
//! document's params). The hub validates what arrives with [`super::request`], which names
//! the field and the rule a bad value breaks; `tests/openrpc.rs` holds the two to the same
//! limits.

use schemars::JsonSchema;
use serde::Serialize;

use super::{EventId, pattern};
use crate::decision::{
    MAX_CLOSE_AFTER_MS, MAX_DECISION_LEN, MAX_TOTAL_INSTANCES, MAX_VALUE_LEN, MIN_CLOSE_AFTER_MS,
};
use crate::instance::{MAX_INSTANCE_ID_LEN, MAX_ROLE_LEN, MAX_ROLES};
use crate::protocol::request::{MAX_STATE_PAGE, MAX_TOKEN_LEN};

/// Params of `system.register`.
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegisterParams<'a> {
    /// The id to register as (no whitespace, control characters or braces).
    #[schemars(length(min = 1, max = MAX_INSTANCE_ID_LEN), regex(pattern = pattern::NAME))]
    pub instance_id: &'a str,
    /// Role names, listed by `system.get_state` and `instance.registered`.
    #[serde(default, skip_serializing_if = "<[String]>::is_empty")]
    #[schemars(length(max = MAX_ROLES), inner(length(min = 1, max = MAX_ROLE_LEN), regex(pattern = pattern::NAME)))]
    pub roles: &'a [String],
    /// Free-form data shown with the instance: at most 1024 bytes of JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<&'a serde_json::Map<String, serde_json::Value>>,
}

/// Params of `system.heartbeat` and `system.unregister`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceParams<'a> {
    /// The instance this session registered as.
    #[schemars(length(min = 1, max = MAX_INSTANCE_ID_LEN), regex(pattern = pattern::NAME))]
    pub instance_id: &'a str,
}

/// Params of `system.quorum.vote`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VoteParams<'a> {
    /// The instance this session registered as.
    #[schemars(length(min = 1, max = MAX_INSTANCE_ID_LEN), regex(pattern = pattern::NAME))]
    pub instance_id: &'a str,
    /// The decision voted on; the first vote opens it.
    #[schemars(length(min = 1, max = MAX_DECISION_LEN), regex(pattern = pattern::NAME))]
    pub decision: &'a str,
    /// The value voted for.
    #[schemars(length(min = 1, max = MAX_VALUE_LEN), regex(pattern = pattern::VALUE))]
    pub value: &'a str,
    /// Instances expected to vote; fixed by the first vote (default 3). A later vote may
    /// omit it or state the same number.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_TOTAL_INSTANCES))]
    pub total_instances: Option<u64>,
    /// The decision's deadline, from its first vote; fixed by the first vote (default and
    /// upper bound: the hub's `--max-open`). A later vote may omit it or state the same.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = MIN_CLOSE_AFTER_MS, max = MAX_CLOSE_AFTER_MS))]
    pub close_after_ms: Option<u64>,
}

/// Params of `system.quorum.status`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct StatusParams<'a> {
    #[schemars(length(min = 1, max = MAX_DECISION_LEN), regex(pattern = pattern::NAME))]
    pub decision: &'a str,
}

/// Params of `system.get_state`: which page of instances and of decisions.
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StateParams<'a> {
    /// Most instances, and most decisions, to list (default 100).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_STATE_PAGE))]
    pub limit: Option<u64>,
    /// `nextInstances` of the previous page.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = MAX_INSTANCE_ID_LEN), regex(pattern = pattern::NAME))]
    pub instances_after: Option<&'a str>,
    /// `nextDecisions` of the previous page.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = pattern::CURSOR))]
    pub decisions_after: Option<&'a str>,
}

/// Params of `system.subscribe`.
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct SubscribeParams<'a> {
    /// Event names, or a prefix followed by `.*` (`quorum.*`).
    #[serde(default)]
    #[schemars(inner(regex(pattern = pattern::EVENT_PATTERN)))]
    pub events: &'a [&'a str],
    /// Replay the decision events after this one first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<EventId>,
}

/// Params of `system.unsubscribe`.
#[derive(Debug, Clone, Default, Serialize, JsonSchema)]
pub struct UnsubscribeParams<'a> {
    /// Patterns to drop, as they were subscribed; without it, every subscription.
    #[serde(default, skip_serializing_if = "<[&str]>::is_empty")]
    #[schemars(inner(regex(pattern = pattern::EVENT_PATTERN)))]
    pub events: &'a [&'a str],
}

/// Params of `system.auth.refresh`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct RefreshParams<'a> {
    /// A newer token for the same instance and roles (at most 4096 bytes).
    #[schemars(length(min = 1, max = MAX_TOKEN_LEN))]
    pub token: &'a str,
}

/// Params of a method that takes none.
#[derive(Debug, Clone, Copy, Serialize, JsonSchema)]
pub struct NoParams {}

//! Decision policies on the wire: the `system.policies.*` calls, validated, and their
//! results.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::policy::Policy;

/// A validated `system.policies.*` call.
#[derive(Debug, Clone)]
pub enum PolicyCall {
    Set { pattern: String, policy: Policy },
    List,
    Remove(String),
}

/// Params of `system.policies.set`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PolicySetParams<'a> {
    /// A decision name, or a prefix of one followed by `*` (`*` alone: every decision).
    pub pattern: &'a str,
    pub policy: &'a Policy,
}

/// Params of `system.policies.remove`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PolicyPatternParams<'a> {
    pub pattern: &'a str,
}

/// One policy and the pattern it applies to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PolicyEntry {
    pub pattern: String,
    pub policy: Policy,
}

/// Result of `system.policies.list`: the policies this hub applies, and their version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PolicyList {
    pub policies: Vec<PolicyEntry>,
    pub version: u64,
}

/// Result of `system.policies.set` and `system.policies.remove`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PolicyChanged {
    pub pattern: String,
    /// `set` or `removed`.
    pub done: String,
}

/// The terms a decision opened under, as `system.quorum.status` shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DecisionPolicy {
    /// The pattern of the policy.
    pub pattern: String,
    /// `majority`, `two_thirds`, `unanimous` or a count.
    pub threshold: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub electorate: Option<ElectorateSnapshot>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openers: Option<String>,
}

/// A decision's electorate: the instances registered with its role when it opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ElectorateSnapshot {
    pub role: String,
    /// In id order (at most `MAX_ELECTORATE`).
    pub members: Vec<String>,
}

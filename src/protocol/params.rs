//! Params of the methods, as peers send them. (The hub validates what arrives with
//! [`super::request`], which names the field and the rule a bad value breaks.)

use serde::Serialize;

use super::EventId;

/// Params of `system.register`.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterParams<'a> {
    pub instance_id: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub roles: &'a [String],
}

/// Params of `system.quorum.vote`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VoteParams<'a> {
    pub instance_id: &'a str,
    pub decision: &'a str,
    pub value: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_instances: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub close_after_ms: Option<u64>,
}

/// Params of `system.quorum.status`.
#[derive(Debug, Clone, Serialize)]
pub struct StatusParams<'a> {
    pub decision: &'a str,
}

/// Params of `system.subscribe` and `system.unsubscribe`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SubscribeParams<'a> {
    pub events: &'a [&'a str],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<EventId>,
}

/// Params of `system.auth.refresh`.
#[derive(Debug, Clone, Serialize)]
pub struct RefreshParams<'a> {
    pub token: &'a str,
}

/// Params of a method that takes none.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct NoParams {}

//! Decision policies in Redis (one hash and its version counter, shared by every hub), and
//! the role indexes a decision's electorate is read from when it opens.

use std::collections::BTreeMap;

use super::{Store, internal, keys};
use crate::error::Error;
use crate::policy::{MAX_ELECTORATE, MAX_POLICIES, MAX_ROLE_SCAN, Policy, PolicySet};

/// The members of a role when a decision opens.
#[derive(Debug)]
pub(crate) enum RoleMembers {
    Members(Vec<String>),
    /// More than [`MAX_ELECTORATE`] live members.
    TooMany,
}

impl Store {
    /// The keyspace's policies and their version, read together.
    pub(crate) async fn policies(&self) -> Result<PolicySet, Error> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("GET")
            .arg(keys::POLICIES_VERSION)
            .cmd("HGETALL")
            .arg(keys::POLICIES);
        let (version, stored): (Option<u64>, BTreeMap<String, String>) =
            self.query_pipe(&pipe).await?;
        let mut policies = BTreeMap::new();
        for (pattern, text) in stored {
            match serde_json::from_str::<Policy>(&text) {
                Ok(policy) => {
                    policies.insert(pattern, policy);
                }
                Err(err) => {
                    tracing::warn!(%pattern, %err, "a stored policy does not parse; ignored")
                }
            }
        }
        Ok(PolicySet {
            version: version.unwrap_or(0),
            policies,
        })
    }

    /// The version of the keyspace's policies (0 before any was set).
    pub(crate) async fn policies_version(&self) -> Result<u64, Error> {
        let version: Option<u64> = self
            .query(redis::cmd("GET").arg(keys::POLICIES_VERSION))
            .await?;
        Ok(version.unwrap_or(0))
    }

    /// Sets the policy of `pattern`. False when the keyspace holds [`MAX_POLICIES`] others.
    pub(crate) async fn policy_set(&self, pattern: &str, policy: &Policy) -> Result<bool, Error> {
        let text = serde_json::to_string(policy).map_err(internal)?;
        let mut count = redis::pipe();
        count
            .cmd("HLEN")
            .arg(keys::POLICIES)
            .cmd("HEXISTS")
            .arg(keys::POLICIES)
            .arg(pattern);
        let (held, replaces): (usize, bool) = self.query_pipe(&count).await?;
        if !replaces && held >= MAX_POLICIES {
            return Ok(false);
        }
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HSET")
            .arg(keys::POLICIES)
            .arg(pattern)
            .arg(text)
            .ignore()
            .cmd("INCR")
            .arg(keys::POLICIES_VERSION)
            .ignore();
        self.query_pipe::<()>(&pipe).await?;
        Ok(true)
    }

    /// Removes the policy of `pattern`; false when there was none.
    pub(crate) async fn policy_remove(&self, pattern: &str) -> Result<bool, Error> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HDEL")
            .arg(keys::POLICIES)
            .arg(pattern)
            .cmd("INCR")
            .arg(keys::POLICIES_VERSION)
            .ignore();
        let (removed,): (u64,) = self.query_pipe(&pipe).await?;
        Ok(removed == 1)
    }

    /// Commands that list `id` in the index of each of its roles.
    pub(super) fn note_roles(&self, now: &str, id: &str, roles: &[String]) -> Vec<redis::Cmd> {
        roles
            .iter()
            .map(|role| {
                redis::cmd("ZADD")
                    .arg(self.layout.role_index(role))
                    .arg(now)
                    .arg(id)
                    .to_owned()
            })
            .collect()
    }

    /// The roles an instance is registered with now (none when it is not registered).
    pub(crate) async fn roles_of(&self, id: &str) -> Result<Vec<String>, Error> {
        let roles: Option<String> = self
            .query(redis::cmd("HGET").arg(keys::instance(id)).arg("roles"))
            .await?;
        Ok(roles
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default())
    }

    /// The instances registered with `role` now, in id order. Index entries whose
    /// registration lapsed or no longer holds the role leave the index, unless the
    /// instance registered with the role again meanwhile (`lua/forget_role.lua`).
    pub(crate) async fn role_members(&self, role: &str) -> Result<RoleMembers, Error> {
        let index = self.layout.role_index(role);
        let listed: Vec<(String, String)> = self
            .query(
                redis::cmd("ZRANGE")
                    .arg(&index)
                    .arg(0)
                    .arg(MAX_ROLE_SCAN as i64 - 1)
                    .arg("WITHSCORES"),
            )
            .await?;
        if listed.is_empty() {
            return Ok(RoleMembers::Members(Vec::new()));
        }
        let cmds = listed
            .iter()
            .map(|(id, _)| {
                redis::cmd("HGET")
                    .arg(keys::instance(id))
                    .arg("roles")
                    .to_owned()
            })
            .collect();
        let replies = self.query_each(cmds).await?;
        let mut members = Vec::new();
        let mut gone = Vec::new();
        for ((id, score), reply) in listed.into_iter().zip(replies) {
            let roles: Option<String> =
                redis::FromRedisValue::from_redis_value(reply).map_err(internal)?;
            let holds = roles
                .and_then(|text| serde_json::from_str::<Vec<String>>(&text).ok())
                .is_some_and(|roles| roles.iter().any(|r| r == role));
            if holds {
                members.push(id);
            } else {
                gone.push(id);
                gone.push(score);
            }
        }
        if !gone.is_empty() {
            let gone: Vec<&str> = gone.iter().map(String::as_str).collect();
            self.eval::<i64>(&self.scripts.forget_role, &[&index], &gone)
                .await?;
        }
        if members.len() > MAX_ELECTORATE {
            return Ok(RoleMembers::TooMany);
        }
        members.sort();
        Ok(RoleMembers::Members(members))
    }
}

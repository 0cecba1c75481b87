//! The `system.policies.*` methods: setting, listing and removing decision policies. Only
//! an admin token, or without a secret a caller on loopback, may call them. A change is
//! stored in Redis and applied by every hub (this one at once, the others within
//! `POLICY_REFRESH`); a decision already open keeps the terms it opened under.

use super::Caller;
use crate::error::Error;
use crate::hub::Hub;
use crate::policy::MAX_POLICIES;
use crate::protocol::policy::{PolicyCall, PolicyChanged, PolicyEntry, PolicyList};

/// Runs one `system.policies.*` call.
pub(super) async fn call(
    hub: &Hub,
    caller: Caller<'_>,
    call: PolicyCall,
) -> Result<serde_json::Value, Error> {
    caller.grant().may_administer()?;
    let value = match call {
        PolicyCall::Set { pattern, policy } => {
            if !hub.store.policy_set(&pattern, &policy).await? {
                return Err(Error::invalid(
                    "pattern",
                    format!(
                        "the hub holds {MAX_POLICIES} policies, the most it keeps; remove one first"
                    ),
                ));
            }
            reload(hub).await?;
            to_value(PolicyChanged {
                pattern,
                done: "set".into(),
            })
        }
        PolicyCall::List => {
            let current = hub.policies.current();
            to_value(PolicyList {
                policies: current
                    .policies
                    .iter()
                    .map(|(pattern, policy)| PolicyEntry {
                        pattern: pattern.clone(),
                        policy: policy.clone(),
                    })
                    .collect(),
                version: current.version,
            })
        }
        PolicyCall::Remove(pattern) => {
            if !hub.store.policy_remove(&pattern).await? {
                return Err(Error::NotFound(format!("no policy has pattern {pattern}")));
            }
            reload(hub).await?;
            to_value(PolicyChanged {
                pattern,
                done: "removed".into(),
            })
        }
    };
    Ok(value)
}

/// Takes the stored policies into this hub's copy at once.
async fn reload(hub: &Hub) -> Result<(), Error> {
    hub.policies.replace(hub.store.policies().await?);
    Ok(())
}

fn to_value(value: impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or_default()
}

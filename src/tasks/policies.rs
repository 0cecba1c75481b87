//! Keeps a hub's copy of the decision policies current: stores the policy file's policies
//! once Redis answers, then compares the keyspace's policy version with the copy's every
//! [`POLICY_REFRESH`] and reloads when another hub (or this one) changed them.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::hub::Hub;
use crate::policy::{POLICY_REFRESH, Policy};

/// Runs until the hub shuts down.
pub async fn run(hub: Arc<Hub>, mut from_file: BTreeMap<String, Policy>) {
    let store = hub.store.unguarded();
    loop {
        while let Some((pattern, policy)) = from_file.first_key_value() {
            match store.policy_set(pattern, policy).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(%pattern, "the keyspace holds the most policies; not stored")
                }
                Err(err) => {
                    tracing::debug!(%err, "policies from the file are not stored yet");
                    break;
                }
            }
            from_file.pop_first();
        }
        match store.policies_version().await {
            Ok(version) if version != hub.policies.current().version => {
                let went_back = version < hub.policies.current().version;
                match store.policies().await {
                    Ok(set) if went_back => hub.policies.reset(set),
                    Ok(set) => hub.policies.replace(set),
                    Err(err) => tracing::debug!(%err, "policies not reloaded yet"),
                }
            }
            Ok(_) => {}
            Err(err) => tracing::debug!(%err, "policy version not read"),
        }
        if !super::wait(POLICY_REFRESH, &hub.shutdown).await {
            return;
        }
    }
}

//! Instances: validated ids and the registration data an agent supplies.

use serde::Serialize;

use crate::error::Error;

/// Longest instance id, in characters.
pub const MAX_INSTANCE_ID_LEN: usize = 128;
/// Most roles one registration may carry.
pub const MAX_ROLES: usize = 32;
/// Longest role name, in characters.
pub const MAX_ROLE_LEN: usize = 64;
/// Largest registration metadata, in bytes of JSON.
pub const MAX_METADATA_BYTES: usize = 1024;

/// Checks a name that becomes part of a Redis key: length in characters, no whitespace,
/// no control characters, no braces (they would break the key's hash tag).
pub(crate) fn check_name(field: &'static str, raw: &str, max_len: usize) -> Result<(), Error> {
    let len = raw.chars().count();
    if len == 0 || len > max_len {
        return Err(Error::invalid(
            field,
            format!("{field} must be 1-{max_len} characters (got {len})"),
        ));
    }
    if let Some(bad) = raw
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || *c == '{' || *c == '}')
    {
        let what = match bad {
            '{' | '}' => "braces",
            c if c.is_control() => "control characters",
            _ => "whitespace",
        };
        return Err(Error::invalid(
            field,
            format!(
                "{field} must not contain {what} (no whitespace, control characters, '{{' or '}}')"
            ),
        ));
    }
    Ok(())
}

/// The id an agent registers and votes as.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct InstanceId(String);

impl InstanceId {
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, Error> {
        check_name(field, raw, MAX_INSTANCE_ID_LEN)?;
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for InstanceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What `system.register` stores about an instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    pub instance: InstanceId,
    pub roles: Vec<String>,
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

impl Registration {
    /// Validates roles and metadata against the registration limits.
    pub fn new(
        instance: InstanceId,
        roles: Vec<String>,
        metadata: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self, Error> {
        if roles.len() > MAX_ROLES {
            return Err(Error::invalid(
                "roles",
                format!(
                    "roles may hold at most {MAX_ROLES} entries (got {})",
                    roles.len()
                ),
            ));
        }
        for role in &roles {
            check_name("roles", role, MAX_ROLE_LEN)?;
        }
        let size = serde_json::to_string(&metadata)
            .map(|s| s.len())
            .unwrap_or(usize::MAX);
        if size > MAX_METADATA_BYTES {
            return Err(Error::invalid(
                "metadata",
                format!("metadata must be at most {MAX_METADATA_BYTES} bytes of JSON (got {size})"),
            ));
        }
        Ok(Self {
            instance,
            roles,
            metadata,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_refuse_what_would_escape_a_key() {
        for bad in ["", "a b", "a}:votes", "{x}", "a\nb", "a\0b", "tab\t"] {
            assert!(InstanceId::parse("instanceId", bad).is_err(), "{bad:?}");
        }
        for good in ["worker-1", "a:b", "*", "ünïcode", "a.b/c"] {
            assert!(InstanceId::parse("instanceId", good).is_ok(), "{good:?}");
        }
        assert!(InstanceId::parse("instanceId", &"x".repeat(128)).is_ok());
        assert!(InstanceId::parse("instanceId", &"x".repeat(129)).is_err());
    }
}

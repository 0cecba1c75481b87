//! Decision policies: for each kind of decision (a name pattern), who may vote, who may open
//! it, how many must agree, which values count and how long it stays open, as an operator
//! fixed them. A decision keeps the terms it opened under.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::decision::{DEFAULT_TOTAL_INSTANCES, MAX_DECISION_LEN, VoteValue, parse_close_after};
use crate::error::Error;
use crate::instance::{MAX_ROLE_LEN, check_name};

/// Most policies a keyspace holds.
pub const MAX_POLICIES: usize = 256;
/// Most instances one decision's electorate holds; a role with more members opens no
/// decision.
pub const MAX_ELECTORATE: usize = 256;
/// Most entries of a role index read when a decision opens (live members and entries
/// whose registration lapsed or changed, which are dropped as they are found).
pub const MAX_ROLE_SCAN: usize = 4 * MAX_ELECTORATE;
/// Most allowed values one policy lists.
pub const MAX_POLICY_VALUES: usize = 16;
/// How often a hub compares its copy of the policies with the keyspace's version, and
/// reloads them when another hub changed them.
pub const POLICY_REFRESH: Duration = Duration::from_millis(250);
/// The character that ends a prefix pattern.
pub const PREFIX_MARK: char = '*';

/// Who may vote: the instances registered with `role` when the decision opens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Electorate {
    pub role: String,
}

/// How many of the decision's `totalInstances` must vote before it is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Threshold {
    /// `floor(N/2)+1`: the rule of a decision without a policy.
    #[default]
    Majority,
    /// `ceil(2N/3)`.
    TwoThirds,
    /// All `N`.
    Unanimous,
    /// A fixed count (at most `N`, or the decision cannot open).
    Count(u64),
}

impl Threshold {
    /// Votes needed among `total`.
    pub fn quorum(self, total: u64) -> u64 {
        match self {
            Threshold::Majority => crate::decision::quorum_for(total),
            Threshold::TwoThirds => (2 * total).div_ceil(3),
            Threshold::Unanimous => total,
            Threshold::Count(count) => count,
        }
    }

    /// The threshold as written in a policy and shown in a decision's status.
    pub fn label(self) -> String {
        match self {
            Threshold::Majority => "majority".into(),
            Threshold::TwoThirds => "two_thirds".into(),
            Threshold::Unanimous => "unanimous".into(),
            Threshold::Count(count) => count.to_string(),
        }
    }
}

impl Serialize for Threshold {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Threshold::Count(count) => s.serialize_u64(*count),
            named => s.serialize_str(&named.label()),
        }
    }
}

impl<'de> Deserialize<'de> for Threshold {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Count(u64),
            Named(String),
        }
        match Written::deserialize(d)? {
            Written::Count(0) => Err(serde::de::Error::custom("a threshold count is at least 1")),
            Written::Count(count) => Ok(Threshold::Count(count)),
            Written::Named(name) => match name.as_str() {
                "majority" => Ok(Threshold::Majority),
                "two_thirds" => Ok(Threshold::TwoThirds),
                "unanimous" => Ok(Threshold::Unanimous),
                other => Err(serde::de::Error::custom(format!(
                    "threshold is majority, two_thirds, unanimous or a count (got {other:?})"
                ))),
            },
        }
    }
}

impl JsonSchema for Threshold {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Threshold".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "oneOf": [
                {"type": "string", "enum": ["majority", "two_thirds", "unanimous"]},
                {"type": "integer", "minimum": 1}
            ]
        })
    }
}

/// What an operator fixes for the decisions a pattern matches.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Policy {
    /// Only these instances vote, and `totalInstances` is their number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub electorate: Option<Electorate>,
    #[serde(default)]
    pub threshold: Threshold,
    /// The deadline a decision opens with, and the longest a vote may state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_after_ms: Option<u64>,
    /// The only values a vote may carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
    /// Only instances registered with this role open a decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openers: Option<String>,
}

impl Policy {
    /// Checks a policy against the limits.
    pub fn check(&self) -> Result<(), Error> {
        if let Some(electorate) = &self.electorate {
            check_name("policy.electorate.role", &electorate.role, MAX_ROLE_LEN)?;
        }
        if let Some(openers) = &self.openers {
            check_name("policy.openers", openers, MAX_ROLE_LEN)?;
        }
        if let Some(ms) = self.close_after_ms {
            parse_close_after("policy.closeAfterMs", ms)?;
        }
        if let Some(values) = &self.values {
            if values.is_empty() || values.len() > MAX_POLICY_VALUES {
                return Err(Error::invalid(
                    "policy.values",
                    format!("policy.values lists 1 to {MAX_POLICY_VALUES} values"),
                ));
            }
            for value in values {
                VoteValue::parse("policy.values", value)?;
            }
        }
        Ok(())
    }

    /// Whether a decision under this policy needs the hub to read registrations when it
    /// opens (its electorate, or the opener's roles).
    pub fn reads_at_opening(&self) -> bool {
        self.electorate.is_some() || self.openers.is_some()
    }

    /// Whether `value` is one this policy allows.
    pub fn allows(&self, value: &str) -> bool {
        self.values
            .as_ref()
            .is_none_or(|values| values.iter().any(|v| v == value))
    }

    /// `totalInstances` and quorum for a decision opening with `stated` (or the default)
    /// among `electorate` members (when the policy names an electorate).
    pub fn sizes(&self, stated: Option<u64>, electorate: Option<usize>) -> (u64, u64) {
        let total = match electorate {
            Some(members) => members as u64,
            None => stated.unwrap_or(DEFAULT_TOTAL_INSTANCES),
        };
        (total, self.threshold.quorum(total))
    }
}

/// The terms a decision opens under a policy with: fixed by the hub when the decision
/// opens, stored with it by the vote script.
#[derive(Debug, Clone)]
pub struct Terms {
    pub pattern: String,
    pub policy: Policy,
    /// The electorate's members, in id order, when the policy names an electorate.
    pub electorate: Option<Vec<String>>,
    pub total: u64,
    pub quorum: u64,
    /// The deadline the decision opens with (ms after its first vote), when the policy or
    /// the vote gives one.
    pub close_after_ms: Option<u64>,
}

/// How a vote may open its decision.
#[derive(Debug, Clone, Copy)]
pub enum Opening<'a> {
    /// As the vote states (no policy applies).
    Plain,
    /// Not at all: a policy applies whose terms are read only for a decision not open yet,
    /// so the script answers that the decision needs opening.
    Ask,
    /// Under these terms.
    Under(&'a Terms),
}

/// Checks a policy pattern: a decision name, or a prefix of one followed by `*`.
pub fn check_pattern(raw: &str) -> Result<(), Error> {
    let name = raw.strip_suffix(PREFIX_MARK).unwrap_or(raw);
    if name.is_empty() && raw.len() == 1 {
        return Ok(()); // `*`: every decision
    }
    check_name("pattern", name, MAX_DECISION_LEN)
}

/// How specific a pattern is for `name`, when it matches: an exact name beats every
/// prefix, a longer prefix a shorter one.
fn specificity(pattern: &str, name: &str) -> Option<usize> {
    match pattern.strip_suffix(PREFIX_MARK) {
        Some(prefix) => name.starts_with(prefix).then_some(prefix.len()),
        None => (pattern == name).then_some(usize::MAX),
    }
}

/// The policies of a keyspace, by pattern, at one version.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicySet {
    pub version: u64,
    pub policies: BTreeMap<String, Policy>,
}

impl PolicySet {
    /// The most specific policy whose pattern matches `name`, with its pattern.
    pub fn resolve(&self, name: &str) -> Option<(&str, &Policy)> {
        self.policies
            .iter()
            .filter_map(|(pattern, policy)| {
                specificity(pattern, name).map(|rank| (rank, pattern.as_str(), policy))
            })
            .max_by_key(|(rank, ..)| *rank)
            .map(|(_, pattern, policy)| (pattern, policy))
    }
}

/// A hub's copy of the keyspace's policies, replaced whole when they change.
#[derive(Debug, Default)]
pub struct PolicyBook {
    current: RwLock<Arc<PolicySet>>,
}

impl PolicyBook {
    pub fn current(&self) -> Arc<PolicySet> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Takes `set` as read from the keyspace, unless the copy is at a later version already
    /// (two reloads may finish out of order).
    pub fn replace(&self, set: PolicySet) {
        let mut current = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if set.version >= current.version {
            *current = Arc::new(set);
        }
    }

    /// Takes `set` whatever its version: the keyspace's counter went back (it was emptied
    /// or replaced).
    pub fn reset(&self, set: PolicySet) {
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(set);
    }
}

/// Reads a policy file: a JSON object from pattern to policy.
/// A policy file's text: TOML when its name ends `.toml`, JSON otherwise.
fn parse_policy_file(
    path: &std::path::Path,
    text: &str,
) -> Result<BTreeMap<String, Policy>, String> {
    let toml = path
        .extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("toml"));
    let parsed = if toml {
        toml::from_str(text).map_err(|e| e.to_string())
    } else {
        serde_json::from_str(text).map_err(|e| e.to_string())
    };
    parsed.map_err(|e| format!("policy file {}: {e}", path.display()))
}

pub fn read_policy_file(path: &std::path::Path) -> Result<BTreeMap<String, Policy>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read policy file {}: {e}", path.display()))?;
    let policies = parse_policy_file(path, &text)?;
    if policies.len() > MAX_POLICIES {
        return Err(format!(
            "policy file {}: at most {MAX_POLICIES} policies",
            path.display()
        ));
    }
    for (pattern, policy) in &policies {
        check_pattern(pattern)
            .and_then(|()| policy.check())
            .map_err(|e| format!("policy file {}, {pattern}: {e}", path.display()))?;
    }
    Ok(policies)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_file_reads_the_same_in_toml_and_in_json() {
        let json = r#"{"deploy-*": {"electorate": {"role": "deployer"}, "threshold": "two_thirds",
                        "values": ["approve", "deny"], "openers": "deployer"},
                       "emergency-shutdown": {"threshold": 3, "closeAfterMs": 60000}}"#;
        let toml = r#"
            ["deploy-*"]
            electorate = { role = "deployer" }
            threshold = "two_thirds"
            values = ["approve", "deny"]
            openers = "deployer"

            [emergency-shutdown]
            threshold = 3
            closeAfterMs = 60000
        "#;
        let from_json = parse_policy_file(std::path::Path::new("p.json"), json).unwrap();
        let from_toml = parse_policy_file(std::path::Path::new("p.toml"), toml).unwrap();
        assert_eq!(from_json.len(), 2);
        assert_eq!(
            serde_json::to_value(&from_json).unwrap(),
            serde_json::to_value(&from_toml).unwrap()
        );
        let error = parse_policy_file(std::path::Path::new("p.toml"), "[x\n").unwrap_err();
        assert!(error.contains("policy file p.toml"), "{error}");
    }

    #[test]
    fn thresholds_count_votes_among_the_total() {
        let table = [
            (1, 1, 1, 1),
            (3, 2, 2, 3),
            (4, 3, 3, 4),
            (5, 3, 4, 5),
            (6, 4, 4, 6),
        ];
        for (total, majority, two_thirds, unanimous) in table {
            assert_eq!(Threshold::Majority.quorum(total), majority, "{total}");
            assert_eq!(Threshold::TwoThirds.quorum(total), two_thirds, "{total}");
            assert_eq!(Threshold::Unanimous.quorum(total), unanimous, "{total}");
        }
        assert_eq!(Threshold::Count(2).quorum(9), 2);
    }

    #[test]
    fn the_most_specific_pattern_wins() {
        let mut set = PolicySet::default();
        for pattern in ["*", "deploy-*", "deploy-prod-*", "deploy-prod-eu"] {
            set.policies.insert(pattern.into(), Policy::default());
        }
        assert_eq!(set.resolve("deploy-prod-eu").unwrap().0, "deploy-prod-eu");
        assert_eq!(set.resolve("deploy-prod-us").unwrap().0, "deploy-prod-*");
        assert_eq!(set.resolve("deploy-dev").unwrap().0, "deploy-*");
        assert_eq!(set.resolve("other").unwrap().0, "*");
        set.policies.remove("*");
        assert!(set.resolve("other").is_none());
    }

    #[test]
    fn policies_read_as_written() {
        let policy: Policy = serde_json::from_str(
            r#"{"electorate":{"role":"deployer"},"threshold":"two_thirds","values":["approve","deny"]}"#,
        )
        .unwrap();
        assert_eq!(policy.threshold, Threshold::TwoThirds);
        assert!(policy.allows("deny") && !policy.allows("maybe"));
        let count: Policy = serde_json::from_str(r#"{"threshold":2}"#).unwrap();
        assert_eq!(count.threshold, Threshold::Count(2));
        assert!(serde_json::from_str::<Policy>(r#"{"threshold":"most"}"#).is_err());
        assert!(serde_json::from_str::<Policy>(r#"{"quorum":2}"#).is_err());
        assert!(check_pattern("deploy-*").is_ok() && check_pattern("a b").is_err());
    }
}

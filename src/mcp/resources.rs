//! Each decision as an MCP resource, `quorum://decision/{name}`: its status as JSON, the
//! recent ones listed, and the URIs' template.

use rmcp::ErrorData;
use rmcp::model::{
    ListResourcesResult, ReadResourceResult, Resource, ResourceContents, ResourceTemplate,
};

use super::reply::hub_error_json;
use crate::client::{Client, ClientError};
use crate::protocol::{DecisionState, State, StateParams, method};

/// The hub's code for a decision with no votes (or none any more).
const NOT_FOUND: i64 = -32004;

/// What every decision's URI starts with; the decision's name follows, percent-encoded
/// where it holds anything but letters, digits and `-._~`.
const URI_PREFIX: &str = "quorum://decision/";
/// Recent decisions `resources/list` names, newest first.
const LISTED_RESOURCES: u64 = 100;
const MIME_TYPE: &str = "application/json";

/// The resource URI of a decision.
pub(super) fn uri(decision: &str) -> String {
    let mut uri = String::from(URI_PREFIX);
    for byte in decision.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            uri.push(byte as char);
        } else {
            uri.push_str(&format!("%{byte:02X}"));
        }
    }
    uri
}

/// The decision a resource URI names.
pub(super) fn decision_of(uri: &str) -> Result<String, ErrorData> {
    let unknown = || {
        ErrorData::invalid_params(
            format!("not a decision's resource: {uri} (expected {URI_PREFIX}{{name}})"),
            None,
        )
    };
    let encoded = uri.strip_prefix(URI_PREFIX).ok_or_else(unknown)?;
    let mut bytes = Vec::with_capacity(encoded.len());
    let mut rest = encoded.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        if byte == b'%' {
            let hex = tail.get(..2).ok_or_else(unknown)?;
            let hex = std::str::from_utf8(hex).map_err(|_| unknown())?;
            bytes.push(u8::from_str_radix(hex, 16).map_err(|_| unknown())?);
            rest = &tail[2..];
        } else {
            bytes.push(byte);
            rest = tail;
        }
    }
    match String::from_utf8(bytes) {
        Ok(name) if !name.is_empty() => Ok(name),
        _ => Err(unknown()),
    }
}

pub(super) fn template() -> ResourceTemplate {
    ResourceTemplate::new(format!("{URI_PREFIX}{{name}}"), "decision")
        .with_title("A decision's status")
        .with_description(
            "A decision's status as JSON: state (open, decided or expired), tally, votes, \
             quorum, totalInstances, finalDecision once decided, closesAt. Subscribe to be \
             told when it is decided or expires.",
        )
        .with_mime_type(MIME_TYPE)
}

/// The most recent decisions, newest first.
pub(super) async fn list(client: &Client) -> Result<ListResourcesResult, ErrorData> {
    let params = StateParams {
        limit: Some(LISTED_RESOURCES),
        ..StateParams::default()
    };
    let state: State = client
        .call(method::GET_STATE, &params)
        .await
        .map_err(hub_error)?;
    let resources = state
        .decisions
        .iter()
        .map(|decision| {
            let summary = match &decision.final_decision {
                Some(value) => format!("{}: {value}", state_name(decision.state)),
                None => format!(
                    "{}: {} of {} votes needed",
                    state_name(decision.state),
                    decision.vote_count,
                    decision.quorum
                ),
            };
            Resource::new(uri(&decision.decision), decision.decision.clone())
                .with_description(summary)
                .with_mime_type(MIME_TYPE)
        })
        .collect();
    Ok(ListResourcesResult::with_all_items(resources))
}

/// A decision's status, as the hub answers `system.quorum.status`.
pub(super) async fn read(client: &Client, uri: &str) -> Result<ReadResourceResult, ErrorData> {
    let decision = decision_of(uri)?;
    let status = client.status(&decision).await.map_err(hub_error)?;
    let text = serde_json::to_string(&status)
        .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
    Ok(ReadResourceResult::new(vec![
        ResourceContents::text(text, uri).with_mime_type(MIME_TYPE),
    ]))
}

/// A hub's error as a protocol error: an unknown decision as "resource not found", with the
/// hub's code and message in `data`.
pub(super) fn hub_error(err: ClientError) -> ErrorData {
    match err {
        ClientError::Rpc(err) => {
            let data = Some(hub_error_json(&err));
            if err.code == NOT_FOUND {
                ErrorData::resource_not_found(err.message, data)
            } else {
                ErrorData::internal_error(err.message, data)
            }
        }
        other => ErrorData::internal_error(other.to_string(), None),
    }
}

/// A decision's state as the hub spells it.
fn state_name(state: DecisionState) -> &'static str {
    match state {
        DecisionState::Open => "open",
        DecisionState::Decided => "decided",
        DecisionState::Expired => "expired",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decision_name_round_trips_through_its_uri() {
        for name in ["deploy-v3", "release/v1.2#rc", "a%b?c=d", "ü-ñ", "~._-"] {
            let uri = uri(name);
            assert!(uri.starts_with(URI_PREFIX), "{uri}");
            let encoded = &uri[URI_PREFIX.len()..];
            assert!(
                encoded
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)),
                "{uri}"
            );
            assert_eq!(decision_of(&uri).unwrap(), name);
        }
        assert_eq!(
            uri("release/v1.2#rc"),
            "quorum://decision/release%2Fv1.2%23rc"
        );
    }

    #[test]
    fn a_uri_that_names_no_decision_is_refused() {
        for bad in [
            "quorum://decision/",
            "quorum://other/x",
            "https://decision/x",
            "quorum://decision/%",
            "quorum://decision/%G1",
            "quorum://decision/%FF",
        ] {
            let err = decision_of(bad).unwrap_err();
            assert_eq!(err.code, rmcp::model::ErrorCode::INVALID_PARAMS, "{bad}");
            assert!(err.message.contains(bad), "{}", err.message);
        }
    }
}

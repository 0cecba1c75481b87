//! JSON-RPC 2.0 as the tests write it: the one request builder, vote params, and the
//! shape of an expected error.

use serde_json::{Value, json};

/// A request object: `{"jsonrpc": "2.0", "id", "method", "params"}`.
pub fn request(id: impl Into<Value>, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id.into(), "method": method, "params": params})
}

/// Params of `system.quorum.vote`; without `total` the decision's own total applies.
pub fn vote_params(instance: &str, decision: &str, value: &str, total: Option<u64>) -> Value {
    let mut params = json!({"instanceId": instance, "decision": decision, "value": value});
    if let Some(total) = total {
        params["totalInstances"] = json!(total);
    }
    params
}

/// Asserts that a JSON-RPC `error` object has `code` and a message that says `says`.
#[track_caller]
pub fn assert_error(error: &Value, code: i64, says: &str) {
    assert_eq!(error["code"], code, "{error}");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.contains(says), "expected {says:?} in {error}");
}

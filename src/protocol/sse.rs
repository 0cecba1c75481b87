//! Server-Sent Events on the wire (`GET /events`): each notification a session would get
//! on a WebSocket as one event, `id:` its event id (when it has one), `event:` its method
//! and `data:` its params on one line.

use serde::Deserialize;
use serde_json::value::RawValue;

/// How long a client waits before reconnecting after the stream ends, in ms (the `retry:`
/// field, sent first).
pub const RECONNECT_MS: u64 = 2000;
/// A comment line that keeps idle proxies from closing the stream.
pub const HEARTBEAT: &str = ": heartbeat\n\n";

/// The first bytes of every stream: the reconnection delay.
pub fn opening() -> String {
    format!("retry: {RECONNECT_MS}\n\n")
}

#[derive(Deserialize)]
struct Notification<'a> {
    #[serde(borrow)]
    method: &'a str,
    #[serde(borrow)]
    params: &'a RawValue,
}

#[derive(Deserialize)]
struct Params<'a> {
    #[serde(rename = "eventId", borrow, default)]
    event_id: Option<&'a str>,
}

/// A JSON-RPC notification (as the hub queues it for a session) as one SSE event; `None`
/// for text that is not one.
pub fn event(notification: &str) -> Option<String> {
    let parsed: Notification = serde_json::from_str(notification).ok()?;
    let params = parsed.params.get();
    let id = serde_json::from_str::<Params>(params)
        .ok()
        .and_then(|p| p.event_id)
        .map(|id| format!("id: {id}\n"))
        .unwrap_or_default();
    // Serialized JSON holds no raw line breaks: the params are one `data:` line.
    Some(format!("{id}event: {}\ndata: {params}\n\n", parsed.method))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decision_goes_as_one_event_under_its_id() {
        let text = r#"{"jsonrpc":"2.0","method":"quorum.decision.made","params":{"decision":"d","value":"a\nb","eventId":"5-1","timestamp":5}}"#;
        assert_eq!(
            event(text).unwrap(),
            "id: 5-1\nevent: quorum.decision.made\ndata: {\"decision\":\"d\",\"value\":\"a\\nb\",\"eventId\":\"5-1\",\"timestamp\":5}\n\n"
        );
    }

    #[test]
    fn a_notice_without_an_event_id_keeps_the_last_one() {
        let text = r#"{"jsonrpc":"2.0","method":"system.events.incomplete","params":{"since":"5-1","reason":"trimmed","message":"m"}}"#;
        let sse = event(text).unwrap();
        assert!(
            sse.starts_with("event: system.events.incomplete\ndata: {"),
            "{sse}"
        );
        assert!(event("not json").is_none());
    }
}

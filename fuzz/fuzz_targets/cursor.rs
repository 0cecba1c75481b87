//! Fuzzes resume cursors (`?lastEventId=`, `system.subscribe {since}`): any text either
//! parses into an event id that prints back as itself, or becomes a
//! `system.events.incomplete` notice that quotes it safely; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quorum_hub::protocol::{EventId, EventsIncomplete, frame};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match text.parse::<EventId>() {
        Ok(id) => {
            let printed = id.to_string();
            assert_eq!(printed.parse::<EventId>(), Ok(id), "{text:?} -> {printed}");
            let _ = frame::events_incomplete(&EventsIncomplete::ahead(id, EventId::ZERO));
            let notice = EventsIncomplete::unknown(id).holding(Some(EventId::ZERO), Some(id));
            let parsed: EventsIncomplete =
                serde_json::from_value(serde_json::to_value(&notice).expect("serializes"))
                    .expect("a notice reads back");
            assert_eq!(parsed, notice);
        }
        Err(_) => {
            let notice = frame::events_incomplete(&EventsIncomplete::malformed(text, EventId::ZERO));
            let parsed: serde_json::Value = serde_json::from_str(&notice).expect("notice is JSON");
            assert!(parsed["params"]["message"].is_string());
        }
    }
});

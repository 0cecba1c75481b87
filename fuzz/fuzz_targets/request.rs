//! Fuzzes the request decoder and the dispatcher's validation: any bytes, as a text
//! frame, must be either refused with a JSON-RPC error or turned into a typed request,
//! never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quorum_hub::protocol::Request;
use quorum_hub::protocol::frame::{self, Entry, Frame};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let entries = match frame::parse_frame(text) {
        Frame::Single(entry) => vec![entry],
        Frame::Batch(entries) => entries,
    };
    for entry in entries {
        match entry {
            Entry::Call(call) => {
                let id = call.id.clone().unwrap_or_default();
                match Request::parse(&call.method, call.params) {
                    Ok(_) => {}
                    Err(error) => {
                        let _ = frame::failure(&id, &error).to_string();
                    }
                }
            }
            Entry::Invalid { id, error } => {
                let _ = frame::failure(&id, &error).to_string();
            }
        }
    }
});

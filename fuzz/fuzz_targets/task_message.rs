//! Queue messages: `TaskMessage::decode` on any body a queue may hand a worker.
//!
//! Decoding must never panic (a bad body is a poison message, dead-lettered), and a message
//! that decodes must be sent and received unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_domain::TaskMessage;

fuzz_target!(|input: &[u8]| {
    let Ok(raw) = std::str::from_utf8(input) else {
        return;
    };
    let Ok(message) = TaskMessage::decode(raw) else {
        return;
    };
    let body = message.encode();
    let again = TaskMessage::decode(&body)
        .unwrap_or_else(|e| panic!("{message:?} is sent as {body}, which does not decode: {e}"));
    assert_eq!(again, message, "a message changed between send and receive");
});

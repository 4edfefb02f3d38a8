//! Stored events: `Event::decode(type, version, data)` on anything.
//!
//! Input: byte 0 picks the type (one of the stored names, or an unknown one), byte 1 the
//! schema version (-1 to 3), the rest is the payload text. Decoding must never panic, and an
//! event that decodes must encode and decode back to itself (what a projection rebuild does).
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_domain::Event;
use shoal_domain::codec::EVENT_TYPES;

fuzz_target!(|input: &[u8]| {
    let [kind, version, data @ ..] = input else {
        return;
    };
    let Ok(data) = std::str::from_utf8(data) else {
        return;
    };
    let event_type = EVENT_TYPES
        .get(usize::from(*kind) % (EVENT_TYPES.len() + 1))
        .copied()
        .unwrap_or("NoSuchEvent");
    let version = i32::from(*version % 5) - 1;
    let Ok(event) = Event::decode(event_type, version, data) else {
        return;
    };
    let encoded = event.encode();
    let again = Event::decode(
        encoded.event_type,
        encoded.schema_version,
        encoded.data.get(),
    )
    .unwrap_or_else(|e| panic!("{event:?} encodes as {encoded:?}, which does not decode: {e}"));
    assert_eq!(again, event, "an event changed on its way through the log");
    let data: serde_json::Value = serde_json::from_str(encoded.data.get()).unwrap();
    assert_eq!(data, event.to_data());
});

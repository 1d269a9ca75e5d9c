//! A Kafka record's value: the event envelope every consumer decodes first.
#![no_main]
use centralita_platform::bus::Event;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(e) = Event::decode(data) {
        // Whatever decodes is a whole envelope: it encodes and decodes to itself.
        let again = Event::decode(&e.encode()).expect("a decoded envelope re-decodes");
        assert_eq!(again.id, e.id);
        assert_eq!(again.tenant, e.tenant);
    }
});

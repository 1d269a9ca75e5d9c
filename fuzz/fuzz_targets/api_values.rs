//! Values of API requests decoded into domain types: customer identities (phone numbers,
//! emails, social handles) and page tokens.
#![no_main]
use centralita_platform::identity::Identity;
use centralita_proto::crm::v1 as crm;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    let (value, network) = text.split_once('\u{0}').unwrap_or((&text, ""));
    let raw = crm::Identity { kind: i32::from(kind % 8), value: value.to_owned(), network: network.to_owned() };
    if let Ok(id) = Identity::parse(&raw, "34") {
        // The normal form is a fixed point.
        assert_eq!(Identity::parse(&id.to_pb(), "34").expect("the normal form parses"), id);
    }
    let _ = centralita_platform::page::untag("c1", &text);
    let _ = centralita_platform::page::decode(&text, 128);
});

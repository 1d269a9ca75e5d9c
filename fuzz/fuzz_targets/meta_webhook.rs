//! Meta's webhook bodies: WhatsApp Cloud API, Messenger and Instagram.
#![no_main]
use centralita_media::digital::{messaging, meta};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = meta::parse(data);
    let _ = messaging::parse(messaging::Network::Messenger, data);
    let _ = messaging::parse(messaging::Network::Instagram, data);
});

//! A Twilio webhook's form body: an inbound SMS or a status callback.
#![no_main]
use centralita_media::digital::twilio;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(params) = twilio::parse_form(data) {
        let _ = twilio::Inbound::parse(&params);
        let _ = twilio::StatusCallback::parse(&params);
    }
});

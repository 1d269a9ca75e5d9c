//! A Telegram Bot API update.
#![no_main]
use centralita_media::digital::botapi;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = botapi::parse(data);
});

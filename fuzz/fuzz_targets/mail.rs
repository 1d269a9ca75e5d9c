//! A message received over SMTP (RFC 5322 and MIME), as media's mail-in parses it.
#![no_main]
use centralita_media::digital::mail;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = mail::parse(data, "customer@example.com");
});

//! An SDP body of a SIP INVITE or answer, then the codec negotiation over it.
#![no_main]
use centralita_media::rtp::{sdp, Codec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = sdp::parse(data) {
        let _ = sdp::negotiate(&d, &[Codec::Pcmu, Codec::Pcma]);
        let _ = sdp::accept_answer(&d, Codec::Pcma);
    }
});

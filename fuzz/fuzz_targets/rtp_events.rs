//! An RTP payload of RFC 4733 telephone events (DTMF), alone and as a stream of packets.
#![no_main]
use centralita_media::rtp::dtmf;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = dtmf::parse_event(data);
    let mut detector = dtmf::Detector::default();
    // Every two packets share a timestamp: an event's repeats.
    for (i, chunk) in data.chunks(4).enumerate() {
        if let Some(d) = detector.packet((i / 2) as u32 * 160, chunk) {
            assert!("0123456789*#ABCD".contains(d), "{d:?}");
        }
    }
});

//! RFC 4733 telephone events to digits. An event is sent as several packets sharing one RTP
//! timestamp (the event's start), the last three with the end bit; a digit is reported once,
//! on the first packet of its event seen.

/// The payload of one telephone-event packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub code: u8,
    pub end: bool,
    pub volume: u8,
    pub duration: u16,
}

/// Reads a telephone-event payload (4 bytes; more is allowed by the RFC for redundancy and
/// ignored here).
pub fn parse_event(payload: &[u8]) -> Option<Event> {
    let [code, flags, d1, d2, ..] = *payload else { return None };
    Some(Event { code, end: flags & 0x80 != 0, volume: flags & 0x3F, duration: u16::from_be_bytes([d1, d2]) })
}

/// The DTMF digit of an event code (0-9, `*`, `#`, A-D); other events (tones, flash) are
/// none.
pub fn digit(code: u8) -> Option<char> {
    match code {
        0..=9 => Some(char::from(b'0' + code)),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some(char::from(b'A' + code - 12)),
        _ => None,
    }
}

/// Turns one stream's telephone-event packets into digits.
#[derive(Debug, Default)]
pub struct Detector {
    /// The RTP timestamp of the last event reported.
    last: Option<u32>,
}

impl Detector {
    /// The digit this packet starts, if it is the first seen of a new event.
    pub fn packet(&mut self, timestamp: u32, payload: &[u8]) -> Option<char> {
        let event = parse_event(payload)?;
        if self.last == Some(timestamp) {
            return None;
        }
        let d = digit(event.code)?;
        self.last = Some(timestamp);
        Some(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn payload(code: u8, end: bool, duration: u16) -> Vec<u8> {
        let d = duration.to_be_bytes();
        vec![code, if end { 0x80 | 10 } else { 10 }, d[0], d[1]]
    }

    #[test]
    fn one_digit_per_event_whatever_its_repeats() {
        let mut det = Detector::default();
        let mut digits = String::new();
        // "1", "#", "1": each event several packets, the end packet three times.
        for (ts, code) in [(1000u32, 1u8), (3000, 11), (5000, 1)] {
            for (i, end) in [false, false, false, true, true, true].into_iter().enumerate() {
                if let Some(d) = det.packet(ts, &payload(code, end, 160 * (i as u16 + 1))) {
                    digits.push(d);
                }
            }
        }
        assert_eq!(digits, "1#1");
        assert_eq!(parse_event(&payload(5, true, 800)), Some(Event { code: 5, end: true, volume: 10, duration: 800 }));
        assert_eq!(parse_event(&[1, 2, 3]), None);
        assert_eq!((digit(10), digit(15), digit(16)), (Some('*'), Some('D'), None));
    }

    proptest! {
        #[test]
        fn any_payload_is_read_or_refused_without_panic(ts in any::<u32>(), bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
            let mut det = Detector::default();
            if let Some(d) = det.packet(ts, &bytes) {
                prop_assert!(d.is_ascii_digit() || "*#ABCD".contains(d));
                prop_assert_eq!(det.packet(ts, &bytes), None, "the same event again is no new digit");
            }
        }
    }
}

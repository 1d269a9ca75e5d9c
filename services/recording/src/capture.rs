//! The capture core: one call's ingest messages in, stereo PCM out, with no I/O.
//!
//! Audio arrives per leg as G.711 chunks stamped with their media time (frames of 1/8000 s
//! from the call's start), the legs interleaved in any order and a little out of step. The
//! core keeps a window of [`JITTER_FRAMES`] behind the latest audio received, places each
//! chunk's samples in it, and emits every frame older than the window as 16-bit little-endian
//! stereo: left = customer + other party, right = agent + other party (saturating). Frames
//! inside a PCI pause are emitted as zeros whatever audio arrived for them. A chunk (or
//! part of one) older than the window is dropped and counted ([`Capture::late_samples`]):
//! its frames are already written.
//!
//! Every input is checked before it changes anything; a refused input leaves the capture as
//! it was and says why ([`IngestError`]). Nothing here can panic on any input (property
//! tests in this module).

use std::collections::VecDeque;

use crate::g711::Law;

/// Frames (samples per channel) a second.
pub const RATE: u64 = 8000;
/// Bytes of one emitted frame: two 16-bit channels.
pub const FRAME_BYTES: u64 = 4;
/// How far behind the latest audio frames wait for the other legs' audio: one second.
pub const JITTER_FRAMES: u64 = RATE;
/// The longest call recorded: twelve hours.
pub const MAX_CALL_FRAMES: u64 = 12 * 3600 * RATE;
/// At most two seconds of audio in one chunk.
pub const MAX_CHUNK: usize = 2 * RATE as usize;
/// How far beyond the latest audio a chunk may start (a leg silent for a minute is fine, a
/// jump of hours is a broken sender).
pub const MAX_LEAP_FRAMES: u64 = 60 * RATE;

/// Whose audio a chunk is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leg {
    Customer,
    Agent,
    Other,
}

/// One ingest message after the header, media time in frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Audio { leg: Leg, offset: u64, payload: Vec<u8> },
    Pause { offset: u64 },
    Resume { offset: u64 },
    End { offset: u64 },
}

/// Why an input was refused. `field` names the offending message field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: String },
    #[error("the call already ended; nothing may follow its end")]
    AfterEnd,
}

fn invalid(field: &'static str, message: impl Into<String>) -> IngestError {
    IngestError::Invalid { field, message: message.into() }
}

/// Converts a media-time offset (seconds and nanoseconds, as `google.protobuf.Duration`)
/// to frames, rounding to the nearest frame.
pub fn frames_of(field: &'static str, seconds: i64, nanos: i32) -> Result<u64, IngestError> {
    if seconds < 0 || nanos < 0 {
        return Err(invalid(field, "must not be negative"));
    }
    if nanos >= 1_000_000_000 {
        return Err(invalid(field, "nanos must be below one second"));
    }
    let secs = u64::try_from(seconds).map_err(|_| invalid(field, "out of range"))?;
    if secs > MAX_CALL_FRAMES / RATE {
        return Err(invalid(field, "is beyond the longest call recorded (12 h)"));
    }
    Ok(secs * RATE + (u64::from(nanos.unsigned_abs()) * RATE + 500_000_000) / 1_000_000_000)
}

/// A paused span, in frames: `[start, end)`; `end` is `None` while the pause lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: u64,
    pub end: Option<u64>,
}

/// One call being captured.
#[derive(Debug)]
pub struct Capture {
    law: Law,
    /// Frames emitted so far.
    written: u64,
    /// Frames from `written` on: customer, agent and other party samples.
    pending: VecDeque<[i16; 3]>,
    /// The end (exclusive) of the latest audio received.
    highest: u64,
    spans: Vec<Span>,
    /// Media time of the last pause or resume marker.
    last_marker: u64,
    ended: Option<u64>,
    late_samples: u64,
}

impl Capture {
    pub fn new(law: Law) -> Self {
        Self {
            law,
            written: 0,
            pending: VecDeque::new(),
            highest: 0,
            spans: Vec::new(),
            last_marker: 0,
            ended: None,
            late_samples: 0,
        }
    }

    /// Frames emitted so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The call's length once it ended.
    pub fn ended(&self) -> Option<u64> {
        self.ended
    }

    /// Audio samples dropped because their frames were already written.
    pub fn late_samples(&self) -> u64 {
        self.late_samples
    }

    pub fn paused(&self) -> bool {
        self.spans.last().is_some_and(|s| s.end.is_none())
    }

    /// The paused spans so far (the last one open while the pause lasts).
    pub fn spans(&self) -> &[Span] {
        &self.spans
    }

    /// Applies one input, appending the frames it lets out to `out`.
    pub fn push(&mut self, input: Input, out: &mut Vec<u8>) -> Result<(), IngestError> {
        if self.ended.is_some() {
            return Err(IngestError::AfterEnd);
        }
        match input {
            Input::Audio { leg, offset, payload } => self.audio(leg, offset, &payload, out),
            Input::Pause { offset } => {
                self.check_marker("pause.offset", offset)?;
                if self.paused() {
                    return Err(invalid("pause", "recording is already paused"));
                }
                // A pause for frames already written starts at the first frame not written:
                // the metadata says when silence really began.
                self.spans.push(Span { start: offset.max(self.written), end: None });
                self.last_marker = offset;
                Ok(())
            }
            Input::Resume { offset } => {
                self.check_marker("resume.offset", offset)?;
                let Some(open) = self.spans.last_mut().filter(|s| s.end.is_none()) else {
                    return Err(invalid("resume", "recording is not paused"));
                };
                open.end = Some(offset.max(open.start));
                self.last_marker = offset;
                Ok(())
            }
            Input::End { offset } => {
                if offset > MAX_CALL_FRAMES {
                    return Err(invalid("end.offset", "is beyond the longest call recorded (12 h)"));
                }
                if offset < self.last_marker {
                    return Err(invalid("end.offset", "is before the last pause or resume"));
                }
                if offset > self.reached().max(self.last_marker) + MAX_LEAP_FRAMES {
                    return Err(invalid("end.offset", "is more than 60 s beyond the audio received"));
                }
                self.finish(offset, out);
                Ok(())
            }
        }
    }

    /// Ends the capture without a call end (the stream broke): everything received is
    /// written, an open pause is closed. Returns the length.
    pub fn interrupt(&mut self, out: &mut Vec<u8>) -> u64 {
        if let Some(end) = self.ended {
            return end;
        }
        let end = self.highest.max(self.written).max(self.last_marker);
        self.finish(end, out);
        end
    }

    fn finish(&mut self, offset: u64, out: &mut Vec<u8>) {
        let end = offset.max(self.written);
        self.pending.truncate(usize::try_from(end - self.written).unwrap_or(usize::MAX));
        self.flush_to(end, out);
        if let Some(open) = self.spans.last_mut().filter(|s| s.end.is_none()) {
            open.end = Some(end.max(open.start));
        }
        self.ended = Some(end);
    }

    fn check_marker(&self, field: &'static str, offset: u64) -> Result<(), IngestError> {
        if offset > MAX_CALL_FRAMES {
            return Err(invalid(field, "is beyond the longest call recorded (12 h)"));
        }
        if offset < self.last_marker {
            return Err(invalid(field, "is before the previous pause or resume"));
        }
        if offset > self.reached() + MAX_LEAP_FRAMES {
            return Err(invalid(field, "is more than 60 s beyond the audio received"));
        }
        Ok(())
    }

    fn audio(&mut self, leg: Leg, offset: u64, payload: &[u8], out: &mut Vec<u8>) -> Result<(), IngestError> {
        if payload.is_empty() {
            return Err(invalid("audio.payload", "is empty"));
        }
        if payload.len() > MAX_CHUNK {
            return Err(invalid("audio.payload", format!("holds {} samples, more than {MAX_CHUNK}", payload.len())));
        }
        let end = offset.saturating_add(payload.len() as u64);
        if end > MAX_CALL_FRAMES {
            return Err(invalid("audio.offset", "ends beyond the longest call recorded (12 h)"));
        }
        if offset > self.reached() + MAX_LEAP_FRAMES {
            return Err(invalid("audio.offset", "jumps more than 60 s beyond the audio received so far"));
        }
        let skip = self.written.saturating_sub(offset);
        self.late_samples += skip.min(payload.len() as u64);
        let channel = match leg {
            Leg::Customer => 0,
            Leg::Agent => 1,
            Leg::Other => 2,
        };
        if end > self.written {
            let needed = usize::try_from(end - self.written).unwrap_or(usize::MAX);
            if self.pending.len() < needed {
                self.pending.resize(needed, [0; 3]);
            }
            for (i, byte) in payload.iter().enumerate().skip(usize::try_from(skip).unwrap_or(usize::MAX)) {
                let at = (offset + i as u64 - self.written) as usize;
                if let Some(frame) = self.pending.get_mut(at) {
                    frame[channel] = self.law.decode(*byte);
                }
            }
        }
        self.highest = self.highest.max(end);
        self.flush_to(self.highest.saturating_sub(JITTER_FRAMES), out);
        Ok(())
    }

    /// The end of what was received or written.
    fn reached(&self) -> u64 {
        self.highest.max(self.written)
    }

    fn muted(&self, frame: u64) -> bool {
        self.spans.iter().rev().any(|s| frame >= s.start && s.end.is_none_or(|e| frame < e))
    }

    fn flush_to(&mut self, limit: u64, out: &mut Vec<u8>) {
        while self.written < limit {
            let [c, a, o] = self.pending.pop_front().unwrap_or([0; 3]);
            let (l, r) = if self.muted(self.written) { (0, 0) } else { (c.saturating_add(o), a.saturating_add(o)) };
            out.extend_from_slice(&l.to_le_bytes());
            out.extend_from_slice(&r.to_le_bytes());
            self.written += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// µ-law bytes of a constant level: 0x80 is +32124, 0x00 is -32124, 0xff is 0.
    const LOUD: u8 = 0x80;

    fn frames(out: &[u8]) -> Vec<(i16, i16)> {
        out.chunks_exact(4).map(|f| (i16::from_le_bytes([f[0], f[1]]), i16::from_le_bytes([f[2], f[3]]))).collect()
    }

    #[test]
    fn customer_left_agent_right_other_both() {
        let mut c = Capture::new(Law::Mu);
        let mut out = Vec::new();
        c.push(Input::Audio { leg: Leg::Customer, offset: 0, payload: vec![LOUD; 100] }, &mut out).unwrap();
        c.push(Input::Audio { leg: Leg::Agent, offset: 100, payload: vec![LOUD; 100] }, &mut out).unwrap();
        c.push(Input::Audio { leg: Leg::Other, offset: 200, payload: vec![0xfe; 100] }, &mut out).unwrap();
        assert!(out.is_empty(), "all within the jitter window");
        c.push(Input::End { offset: 400 }, &mut out).unwrap();
        let f = frames(&out);
        assert_eq!(f.len(), 400);
        assert_eq!(f[0], (32124, 0));
        assert_eq!(f[150], (0, 32124));
        assert_eq!(f[250], (8, 8));
        assert_eq!(f[350], (0, 0));
        assert_eq!(c.ended(), Some(400));
    }

    #[test]
    fn frames_leave_the_window_as_audio_advances() {
        let mut c = Capture::new(Law::A);
        let mut out = Vec::new();
        for i in 0..100u64 {
            c.push(Input::Audio { leg: Leg::Customer, offset: i * 160, payload: vec![0xd5; 160] }, &mut out).unwrap();
        }
        assert_eq!(out.len() as u64, (100 * 160 - JITTER_FRAMES) * FRAME_BYTES);
        // Audio older than the window is dropped and counted, never rewrites what was written.
        c.push(Input::Audio { leg: Leg::Agent, offset: 0, payload: vec![0xd5; 160] }, &mut out).unwrap();
        assert_eq!(c.late_samples(), 160);
    }

    #[test]
    fn a_pause_is_silence_and_a_span() {
        let mut c = Capture::new(Law::Mu);
        let mut out = Vec::new();
        c.push(Input::Pause { offset: 100 }, &mut out).unwrap();
        assert!(c.push(Input::Pause { offset: 120 }, &mut out).is_err());
        c.push(Input::Audio { leg: Leg::Customer, offset: 0, payload: vec![LOUD; 400] }, &mut out).unwrap();
        c.push(Input::Resume { offset: 300 }, &mut out).unwrap();
        assert!(c.push(Input::Resume { offset: 310 }, &mut out).is_err());
        c.push(Input::End { offset: 400 }, &mut out).unwrap();
        let f = frames(&out);
        assert!(f[..100].iter().all(|s| s.0 == 32124));
        assert!(f[100..300].iter().all(|s| *s == (0, 0)));
        assert!(f[300..].iter().all(|s| s.0 == 32124));
        assert_eq!(c.spans(), &[Span { start: 100, end: Some(300) }]);
    }

    #[test]
    fn a_pause_open_at_the_end_closes_there_and_late_pauses_start_at_the_first_unwritten_frame() {
        let mut c = Capture::new(Law::Mu);
        let mut out = Vec::new();
        c.push(Input::Audio { leg: Leg::Customer, offset: 0, payload: vec![LOUD; 16000] }, &mut out).unwrap();
        assert_eq!(c.written(), 8000);
        c.push(Input::Pause { offset: 4000 }, &mut out).unwrap();
        c.push(Input::End { offset: 16000 }, &mut out).unwrap();
        assert_eq!(c.spans(), &[Span { start: 8000, end: Some(16000) }]);
        let f = frames(&out);
        assert!(f[8000..].iter().all(|s| *s == (0, 0)));
        assert_eq!(c.push(Input::End { offset: 16000 }, &mut out), Err(IngestError::AfterEnd));
    }

    #[test]
    fn refusals_name_the_field() {
        let mut c = Capture::new(Law::Mu);
        let mut out = Vec::new();
        let e = c.push(Input::Audio { leg: Leg::Customer, offset: 0, payload: vec![] }, &mut out).unwrap_err();
        assert!(matches!(e, IngestError::Invalid { field: "audio.payload", .. }), "{e}");
        let e = c
            .push(Input::Audio { leg: Leg::Customer, offset: 0, payload: vec![0; MAX_CHUNK + 1] }, &mut out)
            .unwrap_err();
        assert!(matches!(e, IngestError::Invalid { field: "audio.payload", .. }), "{e}");
        let e = c.push(Input::Audio { leg: Leg::Agent, offset: 3600 * RATE, payload: vec![0; 10] }, &mut out);
        assert!(matches!(e, Err(IngestError::Invalid { field: "audio.offset", .. })), "{e:?}");
        assert!(frames_of("x", -1, 0).is_err());
        assert!(frames_of("x", 0, 1_000_000_000).is_err());
        assert!(frames_of("x", i64::MAX, 0).is_err());
        assert_eq!(frames_of("x", 2, 500_000_000), Ok(20000));
        assert_eq!(frames_of("x", 0, 62_500), Ok(1));
        assert_eq!(c.written(), 0);
    }

    fn input() -> impl Strategy<Value = Input> {
        let leg = prop_oneof![Just(Leg::Customer), Just(Leg::Agent), Just(Leg::Other)];
        let offset = prop_oneof![0u64..40_000, any::<u64>(), Just(MAX_CALL_FRAMES), Just(u64::MAX)];
        prop_oneof![
            6 => (leg, offset.clone(), prop::collection::vec(any::<u8>(), 0..2000))
                .prop_map(|(leg, offset, payload)| Input::Audio { leg, offset, payload }),
            1 => offset.clone().prop_map(|offset| Input::Pause { offset }),
            1 => offset.clone().prop_map(|offset| Input::Resume { offset }),
            1 => offset.prop_map(|offset| Input::End { offset }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Any sequence of inputs: refusals are errors (never panics), a refused input
        /// changes nothing, output is whole frames in order, and paused frames are silent.
        #[test]
        fn any_input_is_applied_or_refused(inputs in prop::collection::vec(input(), 0..40)) {
            let mut c = Capture::new(Law::Mu);
            let mut out = Vec::new();
            for i in inputs {
                let before = (c.written(), out.len(), c.spans().to_vec(), c.ended());
                if c.push(i, &mut out).is_err() {
                    prop_assert_eq!(before, (c.written(), out.len(), c.spans().to_vec(), c.ended()));
                }
                prop_assert_eq!(out.len() as u64, c.written() * FRAME_BYTES);
                prop_assert!(c.pending.len() as u64 <= MAX_LEAP_FRAMES + JITTER_FRAMES + MAX_CHUNK as u64);
            }
            let end = c.interrupt(&mut out);
            prop_assert_eq!(out.len() as u64, end * FRAME_BYTES);
            for s in c.spans() {
                let e = s.end.unwrap_or(end);
                prop_assert!(s.start <= e);
                for f in s.start..e.min(end) {
                    let at = (f * FRAME_BYTES) as usize;
                    prop_assert_eq!(&out[at..at + 4], &[0u8; 4]);
                }
            }
        }
    }
}

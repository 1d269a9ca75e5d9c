//! G.711 encoders (ITU-T G.711, the segment tables of the reference implementation) and the
//! music on hold media plays to a queued caller. Only treatment encodes: relayed audio is
//! never decoded.

use std::f64::consts::TAU;
use std::sync::{Arc, OnceLock};

use super::{Codec, CLOCK_RATE, FRAME_SAMPLES};

/// µ-law of a 16-bit linear sample.
pub fn ulaw(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32635;
    let mut s = i32::from(sample);
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    s = s.min(CLIP) + BIAS;
    // The exponent is the position of the highest set bit above bit 7.
    let exponent = (31 - s.leading_zeros() as i32 - 7).clamp(0, 7);
    let mantissa = (s >> (exponent + 3)) & 0x0F;
    !((sign | (exponent << 4) | mantissa) as u8)
}

/// A-law of a 16-bit linear sample.
pub fn alaw(sample: i16) -> u8 {
    const SEG_END: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];
    let mut pcm = i32::from(sample) >> 3;
    let mask: u8 = if pcm >= 0 {
        0xD5
    } else {
        pcm = -pcm - 1;
        0x55
    };
    let Some(seg) = SEG_END.iter().position(|end| pcm <= *end) else {
        return 0x7F ^ mask;
    };
    let mantissa = if seg < 2 { (pcm >> 1) & 0x0F } else { (pcm >> seg) & 0x0F };
    (((seg as i32) << 4) | mantissa) as u8 ^ mask
}

/// Encodes `samples` in `codec`.
pub fn encode(codec: Codec, samples: &[i16]) -> Vec<u8> {
    match codec {
        Codec::Pcmu => samples.iter().map(|s| ulaw(*s)).collect(),
        Codec::Pcma => samples.iter().map(|s| alaw(*s)).collect(),
    }
}

/// Linear sample of a µ-law byte (the reference decoder). Only the mixer decodes
/// ([`super::mixer`]); the two-party relay never does.
pub fn ulaw_to_linear(u: u8) -> i16 {
    let u = !u;
    let t = ((i32::from(u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4);
    (if u & 0x80 != 0 { 0x84 - t } else { t - 0x84 }) as i16
}

/// Linear sample of an A-law byte (the reference decoder).
pub fn alaw_to_linear(a: u8) -> i16 {
    let a = a ^ 0x55;
    let mut t = i32::from(a & 0x0F) << 4;
    match (a & 0x70) >> 4 {
        0 => t += 8,
        1 => t += 0x108,
        seg => t = (t + 0x108) << (seg - 1),
    }
    (if a & 0x80 != 0 { t } else { -t }) as i16
}

/// Decodes `payload` in `codec`, appending the samples to `into`.
pub fn decode_into(codec: Codec, payload: &[u8], into: &mut impl Extend<i16>) {
    match codec {
        Codec::Pcmu => into.extend(payload.iter().map(|u| ulaw_to_linear(*u))),
        Codec::Pcma => into.extend(payload.iter().map(|a| alaw_to_linear(*a))),
    }
}

/// The notes of the music on hold (C5, E5, G5, E5), 400 ms each with a short fade, so a
/// listener (or a test) can tell it from a party's voice or test tone.
pub const MUSIC_NOTES_HZ: [f64; 4] = [523.25, 659.25, 783.99, 659.25];
const NOTE_MS: usize = 400;

/// A loop of audio, encoded once in both codecs; every queued call plays it from its start.
#[derive(Debug)]
pub struct Loop {
    pcmu: Vec<u8>,
    pcma: Vec<u8>,
}

impl Loop {
    /// `samples` (8 kHz), encoded in both codecs; a last partial frame is padded with
    /// silence.
    pub fn from_samples(samples: &[i16]) -> Self {
        let mut samples = samples.to_vec();
        samples.resize(samples.len().div_ceil(FRAME_SAMPLES) * FRAME_SAMPLES, 0);
        Self { pcmu: encode(Codec::Pcmu, &samples), pcma: encode(Codec::Pcma, &samples) }
    }

    /// How many 20 ms frames it holds.
    pub fn frames(&self) -> u64 {
        (self.pcmu.len() / FRAME_SAMPLES) as u64
    }

    /// The 20 ms frame number `n` (wrapping round the loop) in `codec`.
    pub fn frame(&self, codec: Codec, n: u64) -> &[u8] {
        let data = match codec {
            Codec::Pcmu => &self.pcmu,
            Codec::Pcma => &self.pcma,
        };
        let frames = (data.len() / FRAME_SAMPLES) as u64;
        let at = (n % frames) as usize * FRAME_SAMPLES;
        &data[at..at + FRAME_SAMPLES]
    }
}

/// The music on hold: generated, not read from a file (nothing to ship or download).
pub fn music_on_hold() -> Arc<Loop> {
    static MUSIC: OnceLock<Arc<Loop>> = OnceLock::new();
    MUSIC
        .get_or_init(|| {
            let per_note = CLOCK_RATE as usize * NOTE_MS / 1000;
            let fade = per_note / 10;
            let mut samples = Vec::with_capacity(per_note * MUSIC_NOTES_HZ.len());
            for hz in MUSIC_NOTES_HZ {
                for i in 0..per_note {
                    let envelope = (i.min(per_note - 1 - i).min(fade) as f64) / fade as f64;
                    let v = (TAU * hz * i as f64 / f64::from(CLOCK_RATE)).sin() * envelope * 8000.0;
                    samples.push(v as i16);
                }
            }
            Arc::new(Loop::from_samples(&samples))
        })
        .clone()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// µ-law to linear (the reference decoder), for checking what was encoded.
    pub(crate) fn ulaw_decode(u: u8) -> i16 {
        let u = !u;
        let t = ((i32::from(u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4);
        (if u & 0x80 != 0 { 0x84 - t } else { t - 0x84 }) as i16
    }

    fn alaw_decode(a: u8) -> i16 {
        let a = a ^ 0x55;
        let mut t = i32::from(a & 0x0F) << 4;
        let seg = (a & 0x70) >> 4;
        match seg {
            0 => t += 8,
            1 => t += 0x108,
            _ => t = (t + 0x108) << (seg - 1),
        }
        (if a & 0x80 != 0 { t } else { -t }) as i16
    }

    /// Energy of `hz` in `samples` (Goertzel), normalised by length.
    pub(crate) fn goertzel(samples: &[f64], hz: f64) -> f64 {
        let k = 2.0 * (TAU * hz / f64::from(CLOCK_RATE)).cos();
        let (mut s1, mut s2) = (0.0, 0.0);
        for x in samples {
            let s0 = x + k * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        (s1 * s1 + s2 * s2 - k * s1 * s2) / (samples.len() as f64).powi(2)
    }

    #[test]
    fn the_public_decoders_match_the_reference_ones() {
        for b in 0..=255u8 {
            assert_eq!(ulaw_to_linear(b), ulaw_decode(b));
            assert_eq!(alaw_to_linear(b), alaw_decode(b));
        }
        let mut out = Vec::new();
        decode_into(Codec::Pcma, &[0xD5, 0x2A], &mut out);
        assert_eq!(out, [alaw_decode(0xD5), alaw_decode(0x2A)]);
    }

    #[test]
    fn silence_and_known_codes() {
        assert_eq!(ulaw(0), 0xFF);
        assert_eq!(alaw(0), 0xD5);
        assert_eq!(ulaw(i16::MAX), 0x80);
        assert_eq!(ulaw(i16::MIN), 0x00);
        assert_eq!(alaw(i16::MAX), 0xAA);
        assert_eq!(alaw(i16::MIN), 0x2A);
    }

    #[test]
    fn encoding_then_decoding_stays_within_the_segment_step() {
        for s in (i16::MIN..=i16::MAX).step_by(7) {
            let u = ulaw_decode(ulaw(s));
            let a = alaw_decode(alaw(s));
            let tolerance = (i32::from(s).abs() / 16).max(40);
            assert!((i32::from(u) - i32::from(s)).abs() <= tolerance, "µ-law {s} -> {u}");
            assert!((i32::from(a) - i32::from(s)).abs() <= tolerance, "A-law {s} -> {a}");
        }
    }

    #[test]
    fn the_music_on_hold_plays_its_notes_in_turn() {
        let music = music_on_hold();
        // Frame 5 is inside the first note, frame 25 inside the second.
        for (frame, note) in [(5u64, 0usize), (25, 1), (45, 2)] {
            let pcm: Vec<f64> = music.frame(Codec::Pcmu, frame).iter().map(|u| f64::from(ulaw_decode(*u))).collect();
            let playing = goertzel(&pcm, MUSIC_NOTES_HZ[note]);
            for (other, hz) in
                MUSIC_NOTES_HZ.iter().enumerate().filter(|(i, h)| *i != note && **h != MUSIC_NOTES_HZ[note])
            {
                assert!(playing > 10.0 * goertzel(&pcm, *hz), "frame {frame}: note {note} louder than note {other}");
            }
            assert!(playing > 10.0 * goertzel(&pcm, 1000.0));
        }
        assert_eq!(music.frame(Codec::Pcma, 0).len(), FRAME_SAMPLES);
        assert_eq!(music.frame(Codec::Pcma, 1_000_003), music.frame(Codec::Pcma, 1_000_003 % 80));
    }
}

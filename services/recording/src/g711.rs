//! G.711 decoding (ITU-T G.711, µ-law and A-law) to 16-bit linear PCM, computed rather than
//! tabled: a few shifts per sample, checked against the standard's end points here and
//! against Python's `audioop` encoder in the end-to-end test.

/// The two G.711 laws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Law {
    /// PCMU (North America, Japan).
    Mu,
    /// PCMA (Europe, the rest).
    A,
}

impl Law {
    pub fn name(self) -> &'static str {
        match self {
            Law::Mu => "pcmu",
            Law::A => "pcma",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "pcmu" => Some(Law::Mu),
            "pcma" => Some(Law::A),
            _ => None,
        }
    }

    pub fn decode(self, byte: u8) -> i16 {
        match self {
            Law::Mu => ulaw(byte),
            Law::A => alaw(byte),
        }
    }
}

/// µ-law: the byte is stored inverted; 4 mantissa bits, 3 exponent bits, a bias of 0x84.
pub fn ulaw(byte: u8) -> i16 {
    let u = !byte;
    let t = ((i32::from(u & 0x0f) << 3) + 0x84) << ((u & 0x70) >> 4);
    let v = if u & 0x80 != 0 { 0x84 - t } else { t - 0x84 };
    v as i16
}

/// A-law: even bits inverted (xor 0x55); segment 0 is linear, the others double each step.
pub fn alaw(byte: u8) -> i16 {
    let a = byte ^ 0x55;
    let mut t = i32::from(a & 0x0f) << 4;
    match (a & 0x70) >> 4 {
        0 => t += 8,
        1 => t += 0x108,
        seg => t = (t + 0x108) << (seg - 1),
    }
    let v = if a & 0x80 != 0 { t } else { -t };
    v as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mu_law_end_points() {
        assert_eq!(ulaw(0xff), 0);
        assert_eq!(ulaw(0x7f), 0);
        assert_eq!(ulaw(0x00), -32124);
        assert_eq!(ulaw(0x80), 32124);
        assert_eq!(ulaw(0xfe), 8);
        assert_eq!(ulaw(0x7e), -8);
    }

    #[test]
    fn a_law_end_points() {
        assert_eq!(alaw(0xd5), 8);
        assert_eq!(alaw(0x55), -8);
        assert_eq!(alaw(0xaa), 32256);
        assert_eq!(alaw(0x2a), -32256);
    }

    #[test]
    fn both_laws_are_monotonic_in_magnitude() {
        // µ-law: inverted codes, so within the positive half a larger code is quieter.
        let mu: Vec<i16> = (0x80u8..=0xff).map(ulaw).collect();
        assert!(mu.windows(2).all(|w| w[0] > w[1] || (w[0] == 0 && w[1] == 0)), "{mu:?}");
        // A-law: after undoing the even-bit inversion, a larger code is louder.
        let a: Vec<i16> = (0x80u8..=0xff).map(|b| alaw(b ^ 0x55)).collect();
        assert!(a.windows(2).all(|w| w[0] < w[1]), "{a:?}");
    }
}

//! The media plane: what a call's audio goes through on this replica. Nothing here speaks
//! SIP; the front door negotiates with [`sdp`], takes ports from [`ports`] and runs one
//! [`relay::CallMedia`] per call.
//!
//! - [`sdp`]: offer/answer for one audio stream (G.711 µ-law and A-law, RFC 4733
//!   telephone events); an offer with no codec in common is refused (`488`);
//! - [`ports`]: the UDP port range RTP binds in (`CENTRALITA_RTP_PORTS`);
//! - [`relay`]: a call's media task: queue treatment to the caller until the call is
//!   bridged, then packets relayed between the two legs without decoding (symmetric RTP
//!   with latching, unknown payload types dropped, SSRC/sequence/timestamp rewritten when a
//!   leg's source switches, inactivity timeout), telephone events read as digits;
//! - [`dtmf`]: RFC 4733 events to digits;
//! - [`g711`]: the µ-law and A-law encoders treatment uses and the music on hold.
//!
//! Not built: RTCP (the odd port is not bound; reports are neither sent nor read), SRTP,
//! transcoding (the agent's leg is offered the caller's codec only), announcements.

pub mod dtmf;
pub mod g711;
pub mod ports;
pub mod relay;
pub mod sdp;

/// The audio codecs media carries: G.711, 8 kHz, 20 ms frames of 160 samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    Pcmu,
    Pcma,
}

impl Codec {
    /// The static payload type (RFC 3551).
    pub fn static_payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }

    /// The encoding name in an `rtpmap`.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        if name.eq_ignore_ascii_case("PCMU") {
            Some(Codec::Pcmu)
        } else if name.eq_ignore_ascii_case("PCMA") {
            Some(Codec::Pcma)
        } else {
            None
        }
    }
}

/// The sampling rate of every codec here, and of telephone events.
pub const CLOCK_RATE: u32 = 8000;
/// Samples in one 20 ms frame.
pub const FRAME_SAMPLES: usize = 160;

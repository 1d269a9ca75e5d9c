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
//! - [`g711`]: the µ-law and A-law encoders treatment uses and the music on hold, and the
//!   decoders only the mixer uses;
//! - [`mixer`]: the conference mixer (consults, conferences, supervisors): decoded, summed
//!   per listener without its own voice, saturated, re-encoded per leg.
//!
//! Not built: RTCP (the odd port is not bound; reports are neither sent nor read), SRTP,
//! transcoding (the agent's leg is offered the caller's codec only). Announcements are
//! composed in [`crate::announce`] and played by the relay ([`relay::Announcer`]). The
//! recording fork ([`relay::Forked`]) is consumed by [`crate::recorder`].

pub mod dtmf;
pub mod g711;
pub mod mixer;
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

/// The media plane's settings (flags and `CENTRALITA_RTP_*` environment).
#[derive(Debug, Clone, clap::Args)]
pub struct RtpSettings {
    /// UDP ports RTP binds in, `first-last`; keep it below the kernel's ephemeral range
    /// (`net.ipv4.ip_local_port_range`, 32768 and up by default).
    #[arg(long = "rtp-ports", env = "CENTRALITA_RTP_PORTS", default_value = "20000-29999")]
    pub ports: ports::PortRange,
    /// The address RTP binds and puts in SDP; by default the SIP address's (which must then
    /// not be a wildcard such as `0.0.0.0`).
    #[arg(long = "rtp-ip", env = "CENTRALITA_RTP_IP")]
    pub ip: Option<std::net::IpAddr>,
    /// Seconds without a packet from a party after which its call is ended.
    #[arg(long = "rtp-timeout-secs", env = "CENTRALITA_RTP_TIMEOUT_SECS", default_value_t = 60)]
    pub timeout_secs: u64,
    /// Directory of the queue announcements' prompts (`{language}/{name}.wav`, 8 kHz mono
    /// 16-bit PCM; `deploy/prompts/generate.sh` makes them). Unset: waiting callers hear
    /// music only, whatever their tenant's `spec.voice.announcements`.
    #[arg(long = "prompts-dir", env = "CENTRALITA_PROMPTS_DIR")]
    pub prompts_dir: Option<std::path::PathBuf>,
}

/// What the front door needs of the media plane: where to take ports and how calls play.
#[derive(Debug)]
pub struct MediaPlane {
    pub ports: ports::Ports,
    pub call: relay::Settings,
    /// The prompts queue announcements are made of (none: music only).
    pub prompts: Option<std::sync::Arc<crate::announce::Prompts>>,
}

impl MediaPlane {
    /// The media plane of `settings`, RTP on `sip_ip` unless `CENTRALITA_RTP_IP` says
    /// otherwise; the queue treatment is the generated music on hold.
    pub fn new(
        settings: &RtpSettings,
        sip_ip: std::net::IpAddr,
    ) -> Result<Self, centralita_platform::config::ConfigError> {
        use centralita_platform::config::ConfigError;
        let ip = settings.ip.unwrap_or(sip_ip);
        if ip.is_unspecified() || ip.is_multicast() {
            return Err(ConfigError::new(
                "CENTRALITA_RTP_IP",
                format!("RTP needs an address peers can send to, not {ip} (set it when SIP listens on a wildcard)"),
            ));
        }
        if settings.timeout_secs == 0 {
            return Err(ConfigError::new("CENTRALITA_RTP_TIMEOUT_SECS", "must be at least 1"));
        }
        let prompts = match &settings.prompts_dir {
            Some(dir) => Some(std::sync::Arc::new(
                crate::announce::Prompts::load(dir).map_err(|e| ConfigError::new("CENTRALITA_PROMPTS_DIR", e))?,
            )),
            None => None,
        };
        Ok(Self {
            prompts,
            ports: ports::Ports::new(ip, settings.ports),
            call: relay::Settings {
                timeout: std::time::Duration::from_secs(settings.timeout_secs),
                treatment: Some(g711::music_on_hold()),
                // Set per call by the front door when the tenant records its calls.
                fork: None,
            },
        })
    }
}

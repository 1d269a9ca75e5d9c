//! In-call signalling, decided without I/O: what a re-INVITE's SDP offer means for a leg
//! (its new stream, and whether it holds the call) and what digit a SIP INFO carries. The
//! front door answers the requests and acts on these decisions; every input is the
//! network's, so anything unreadable is an error, never a panic.
//!
//! **Hold by re-INVITE** (RFC 3264 §8.4, RFC 6337 §5.3): an offer whose audio stream is
//! `a=sendonly` or `a=inactive` holds the call, and so does the older form with the
//! connection address `0.0.0.0` (RFC 2543); `a=sendrecv` (or `recvonly`) again resumes. The
//! answer mirrors the offer's direction (`sendonly` → `recvonly`, `inactive` → `inactive`),
//! keeps the leg's codec (media does not transcode, so an offer without it is refused `488`)
//! and media's address and session, with the session version moved on.
//!
//! **DTMF by SIP INFO**: `application/dtmf-relay` (`Signal=5\r\nDuration=160`, the form
//! most phones send) and `application/dtmf` (the digit alone). A signal is one of `0`-`9`,
//! `*`, `#`, `A`-`D` (either case); `10` and `11` are read as `*` and `#` (some gateways send
//! the RFC 4733 event codes). Anything else is refused.
//!
//! **Cold transfer by REFER** (RFC 3515) from the agent's phone: the `Refer-To` URI's user
//! names where the call goes — one of the tenant's own numbers (E.164, with or without `+`:
//! the queue that number leads to) or else an agent id (the agent of the tenant sessions
//! offers it to). A number of no queue of the tenant, or a user that is neither, is refused.

use centralita_platform::identity;
use centralita_platform::tenant::{PhoneNumber, VoiceConfig};

use crate::rtp::sdp::{self, Description, Direction, Negotiated, SdpError};
use crate::rtp::Codec;

/// A re-INVITE's offer, read for a leg carrying `codec`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reoffer {
    pub offer: Description,
    /// The leg's stream from now on (media's direction is the answer's).
    pub negotiated: Negotiated,
    /// The offer puts the call on hold (`sendonly`, `inactive`, or `c=0.0.0.0`).
    pub holds: bool,
}

/// Reads a re-INVITE's SDP offer for a leg whose codec is `codec`.
pub fn reoffer(body: &[u8], codec: Codec) -> Result<Reoffer, SdpError> {
    let offer = sdp::parse(body)?;
    let negotiated = sdp::negotiate(&offer, &[codec])?;
    let holds =
        matches!(offer.direction, Direction::SendOnly | Direction::Inactive) || offer.remote.ip().is_unspecified();
    Ok(Reoffer { offer, negotiated, holds })
}

/// The answer to a [`Reoffer`]: media's stream at `local` (the leg's own RTP address and
/// session, whose version the caller moves on for each new answer).
pub fn answer(reoffer: &Reoffer, local: &sdp::Local) -> String {
    sdp::answer(&reoffer.offer, &reoffer.negotiated, local)
}

/// Where a REFER from the agent's phone sends the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReferTarget {
    /// The queue one of the tenant's numbers leads to.
    Queue(String),
    /// An agent, by id.
    Agent(String),
}

/// Why a REFER's target is refused (`404`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferError {
    #[error("a number that is none of the tenant's")]
    NotTheTenantsNumber,
    #[error("neither a number nor an agent id")]
    Unreadable,
}

/// Reads the user part of a REFER's `Refer-To` for a tenant whose voice configuration is
/// `voice`.
pub fn refer_target(user: &str, voice: &VoiceConfig) -> Result<ReferTarget, ReferError> {
    let user = user.trim();
    let digits = user.strip_prefix('+').unwrap_or(user);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        let number = identity::phone(&format!("+{digits}"), "")
            .ok()
            .and_then(|n| PhoneNumber::parse(&n).ok())
            .ok_or(ReferError::NotTheTenantsNumber)?;
        return voice
            .queue_of(&number)
            .map(|q| ReferTarget::Queue(q.to_owned()))
            .ok_or(ReferError::NotTheTenantsNumber);
    }
    // An agent id as the platform writes them: 1 to 64 of a-z, A-Z, 0-9, `-`, `_`, `.`
    // (sessions checks it is an agent of the contact's queue).
    let agent_like = !user.is_empty()
        && user.len() <= 64
        && user.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if agent_like {
        Ok(ReferTarget::Agent(user.to_owned()))
    } else {
        Err(ReferError::Unreadable)
    }
}

/// Why an INFO carries no digit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InfoError {
    /// Not a DTMF body (another package, or none): `415` with the types media takes.
    #[error("not a DTMF body")]
    NotDtmf,
    /// A DTMF body media cannot read: `400`.
    #[error("unreadable DTMF body: {0}")]
    Unreadable(&'static str),
}

impl InfoError {
    /// The SIP status an INFO with this body gets.
    pub fn sip_status(&self) -> (u16, &'static str) {
        match self {
            InfoError::NotDtmf => (415, "Unsupported Media Type"),
            InfoError::Unreadable(_) => (400, "Bad Request - Unreadable DTMF"),
        }
    }
}

/// The largest INFO body read (a DTMF body is a few dozen bytes).
const MAX_INFO_BODY: usize = 1024;

/// The digit of a SIP INFO with `content_type` and `body`.
pub fn info_digit(content_type: Option<&str>, body: &[u8]) -> Result<char, InfoError> {
    let media_type = content_type
        .and_then(|ct| ct.split(';').next())
        .map(|t| t.trim().to_ascii_lowercase())
        .ok_or(InfoError::NotDtmf)?;
    let relay = match media_type.as_str() {
        "application/dtmf-relay" => true,
        "application/dtmf" => false,
        _ => return Err(InfoError::NotDtmf),
    };
    if body.len() > MAX_INFO_BODY {
        return Err(InfoError::Unreadable("too long"));
    }
    let text = std::str::from_utf8(body).map_err(|_| InfoError::Unreadable("not text"))?;
    let signal = if relay {
        text.lines()
            .filter_map(|l| l.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("signal"))
            .map(|(_, v)| v.trim())
            .ok_or(InfoError::Unreadable("no Signal"))?
    } else {
        text.trim()
    };
    signal_digit(signal).ok_or(InfoError::Unreadable("not a DTMF signal"))
}

fn signal_digit(signal: &str) -> Option<char> {
    match signal {
        "10" => return Some('*'),
        "11" => return Some('#'),
        _ => {}
    }
    let mut chars = signal.chars();
    let (Some(c), None) = (chars.next(), chars.next()) else { return None };
    match c.to_ascii_uppercase() {
        c @ ('0'..='9' | '*' | '#' | 'A'..='D') => Some(c),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const OFFER: &str = "v=0\r\no=phone 9 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n";

    fn local() -> sdp::Local {
        sdp::Local { addr: "127.0.0.1:22000".parse().expect("addr"), session_id: 7, version: 3 }
    }

    fn with(direction: &str) -> String {
        format!("{OFFER}a={direction}\r\n")
    }

    #[test]
    fn sendonly_and_inactive_hold_and_are_answered_recvonly_and_inactive() {
        for (offered, holds, answered) in [
            ("sendonly", true, Direction::RecvOnly),
            ("inactive", true, Direction::Inactive),
            ("sendrecv", false, Direction::SendRecv),
            ("recvonly", false, Direction::SendOnly),
        ] {
            let r = reoffer(with(offered).as_bytes(), Codec::Pcmu).expect("readable");
            assert_eq!((r.holds, r.negotiated.direction), (holds, answered), "{offered}");
            let text = answer(&r, &local());
            let back = sdp::parse(text.as_bytes()).expect("our answer parses");
            assert_eq!(back.direction, answered, "{offered}: the answer says {answered:?}");
            assert_eq!((back.remote, back.codecs.clone()), (local().addr, vec![(0, Codec::Pcmu)]));
            assert!(text.contains("o=centralita 7 3 IN IP4"), "media's session and version: {text}");
        }
        // No direction attribute: sendrecv, no hold.
        assert!(!reoffer(OFFER.as_bytes(), Codec::Pcmu).expect("readable").holds);
        // The session-level attribute counts when the stream has none.
        let session_level = OFFER.replace("t=0 0\r\n", "t=0 0\r\na=inactive\r\n");
        assert!(reoffer(session_level.as_bytes(), Codec::Pcmu).expect("readable").holds);
    }

    #[test]
    fn the_old_hold_with_a_zero_address_holds_and_media_does_not_send_there() {
        let old = OFFER.replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0");
        let r = reoffer(old.as_bytes(), Codec::Pcmu).expect("readable");
        assert!(r.holds);
        assert!(r.negotiated.remote.ip().is_unspecified());
    }

    #[test]
    fn a_reoffer_must_keep_the_legs_codec() {
        assert_eq!(reoffer(with("sendonly").as_bytes(), Codec::Pcma), Err(SdpError::NoCommonCodec));
        assert!(matches!(reoffer(b"garbage", Codec::Pcmu), Err(SdpError::Unreadable(_))));
        assert_eq!(SdpError::NoCommonCodec.sip_status().0, 488);
        // A new address is taken (the phone moved its media).
        let moved = with("sendrecv").replace("m=audio 4000", "m=audio 4100");
        assert_eq!(reoffer(moved.as_bytes(), Codec::Pcmu).expect("readable").negotiated.remote.port(), 4100);
    }

    #[test]
    fn info_bodies_of_both_types() {
        let relay = Some("application/dtmf-relay");
        assert_eq!(info_digit(relay, b"Signal=5\r\nDuration=160\r\n"), Ok('5'));
        assert_eq!(info_digit(relay, b"Signal= #\nDuration= 250"), Ok('#'));
        assert_eq!(info_digit(Some("Application/DTMF-Relay; charset=utf-8"), b"signal=*\r\n"), Ok('*'));
        assert_eq!(info_digit(relay, b"Duration=160\r\nSignal=d\r\n"), Ok('D'));
        assert_eq!(info_digit(relay, b"Signal=10\r\n"), Ok('*'));
        assert_eq!(info_digit(relay, b"Signal=11\r\n"), Ok('#'));
        assert_eq!(info_digit(Some("application/dtmf"), b"7"), Ok('7'));
        assert_eq!(info_digit(Some("application/dtmf"), b" 0 \r\n"), Ok('0'));
        assert_eq!(info_digit(relay, b"Signal=12\r\n"), Err(InfoError::Unreadable("not a DTMF signal")));
        assert_eq!(info_digit(relay, b"Signal=E\r\n"), Err(InfoError::Unreadable("not a DTMF signal")));
        assert_eq!(info_digit(relay, b"Duration=160\r\n"), Err(InfoError::Unreadable("no Signal")));
        assert_eq!(info_digit(relay, b"Signal=\xff"), Err(InfoError::Unreadable("not text")));
        assert_eq!(info_digit(relay, &[b'a'; 2000]), Err(InfoError::Unreadable("too long")));
        assert_eq!(info_digit(Some("application/media_control+xml"), b"<x/>"), Err(InfoError::NotDtmf));
        assert_eq!(info_digit(None, b"Signal=1"), Err(InfoError::NotDtmf));
        assert_eq!(InfoError::NotDtmf.sip_status().0, 415);
        assert_eq!(InfoError::Unreadable("x").sip_status().0, 400);
    }

    #[test]
    fn a_refer_names_a_number_of_the_tenant_or_an_agent() {
        let mut voice = VoiceConfig::default();
        voice.numbers.insert(PhoneNumber::parse("+34910000001").expect("number"), "billing".into());
        assert_eq!(refer_target("+34910000001", &voice), Ok(ReferTarget::Queue("billing".into())));
        assert_eq!(refer_target("34910000001", &voice), Ok(ReferTarget::Queue("billing".into())));
        assert_eq!(refer_target("+34910000002", &voice), Err(ReferError::NotTheTenantsNumber));
        assert_eq!(refer_target("bob-1f2e", &voice), Ok(ReferTarget::Agent("bob-1f2e".into())));
        assert_eq!(refer_target("bob smith", &voice), Err(ReferError::Unreadable));
        assert_eq!(refer_target("", &voice), Err(ReferError::Unreadable));
        assert_eq!(refer_target(&"a".repeat(65), &voice), Err(ReferError::Unreadable));
    }

    proptest! {
        /// Random Refer-To users: a queue of the tenant, an agent id of the allowed
        /// characters, or a refusal; never a panic.
        #[test]
        fn random_refer_users_never_panic(user in "[ -~]{0,80}") {
            let mut voice = VoiceConfig::default();
            voice.numbers.insert(PhoneNumber::parse("+34910000001").expect("number"), "billing".into());
            match refer_target(&user, &voice) {
                Ok(ReferTarget::Queue(q)) => prop_assert_eq!(q, "billing"),
                Ok(ReferTarget::Agent(a)) => prop_assert!(a.len() <= 64 && !a.is_empty()),
                Err(_) => {}
            }
        }

        /// Random bodies and content types: a digit of the DTMF alphabet or an error, never
        /// a panic.
        #[test]
        fn random_info_bodies_never_panic(
            ct in prop_oneof![Just("application/dtmf-relay".to_owned()), Just("application/dtmf".to_owned()), "[ -~]{0,40}"],
            body in proptest::collection::vec(any::<u8>(), 0..1200),
        ) {
            if let Ok(d) = info_digit(Some(&ct), &body) {
                prop_assert!(d.is_ascii_digit() || "*#ABCD".contains(d));
            }
        }

        /// `Signal=` with random text: read only when it is one DTMF signal.
        #[test]
        fn random_signals_are_read_only_when_valid(signal in "[ -~]{0,6}") {
            let body = format!("Signal={signal}\r\nDuration=100\r\n");
            match info_digit(Some("application/dtmf-relay"), body.as_bytes()) {
                Ok(d) => prop_assert!(d.is_ascii_digit() || "*#ABCD".contains(d)),
                Err(e) => prop_assert_eq!(e, InfoError::Unreadable("not a DTMF signal")),
            }
        }

        /// Random bytes as a re-INVITE's offer: read or refused, never a panic; what is read
        /// is answered with SDP that parses back in the mirrored direction.
        #[test]
        fn random_reoffers_never_panic(edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..10), dir in 0usize..5) {
            let dirs = ["sendonly", "inactive", "sendrecv", "recvonly", "bogus"];
            let mut bytes = with(dirs[dir]).into_bytes();
            for (at, b) in edits {
                let n = bytes.len();
                bytes[at % n] = b;
            }
            if let Ok(r) = reoffer(&bytes, Codec::Pcmu) {
                let back = sdp::parse(answer(&r, &local()).as_bytes());
                prop_assert!(back.is_ok());
                prop_assert_eq!(back.map(|b| b.direction).ok(), Some(r.negotiated.direction));
            }
        }
    }
}

//! SDP offer/answer (RFC 3264) for one audio stream, read with `sdp-types`. Media carries
//! G.711 (PCMU, PCMA) and RFC 4733 telephone events at 8 kHz; the first audio stream of a
//! description is the call's, other streams (video) are refused in the answer by a zero
//! port. Every input is the network's: anything unreadable is an [`SdpError`], never a
//! panic.

use std::net::{IpAddr, SocketAddr};

use sdp_types::Session;

use super::{Codec, CLOCK_RATE};

/// The direction attribute of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    fn attribute(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    /// The direction an answer gives to an offer of `self`.
    fn answer(self) -> Direction {
        match self {
            Direction::SendRecv => Direction::SendRecv,
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            Direction::Inactive => Direction::Inactive,
        }
    }
}

/// What a description says of its audio stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description {
    /// Where the peer wants its RTP (the stream's or the session's `c=` and the `m=` port).
    /// An unspecified address (`0.0.0.0`) is kept: media then sends only once latched.
    pub remote: SocketAddr,
    /// The G.711 payload types offered, in the peer's order of preference.
    pub codecs: Vec<(u8, Codec)>,
    /// The payload type of `telephone-event/8000`, if offered.
    pub telephone_event: Option<u8>,
    pub direction: Direction,
    /// The index of the audio stream among the `m=` lines (an answer keeps their order).
    audio_index: usize,
    /// The media types of every `m=` line, for the answer's refused streams.
    media: Vec<String>,
}

/// The outcome of a negotiation: what both sides send on a leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    pub codec: Codec,
    /// The payload type of the codec on this leg.
    pub payload_type: u8,
    pub telephone_event: Option<u8>,
    pub remote: SocketAddr,
    pub direction: Direction,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error("unreadable SDP: {0}")]
    Unreadable(String),
    #[error("no audio stream")]
    NoAudio,
    #[error("no usable connection address for the audio stream")]
    NoAddress,
    #[error("no codec in common (media carries PCMU, PCMA)")]
    NoCommonCodec,
}

impl SdpError {
    /// The SIP status an INVITE with this SDP gets.
    pub fn sip_status(&self) -> (u16, &'static str) {
        match self {
            SdpError::Unreadable(_) => (400, "Bad Request - Unreadable SDP"),
            _ => (488, "Not Acceptable Here"),
        }
    }
}

/// Reads the audio stream of a description (an offer, or an answer to ours).
pub fn parse(body: &[u8]) -> Result<Description, SdpError> {
    let session = Session::parse(body).map_err(|e| SdpError::Unreadable(format!("{e:?}")))?;
    let media: Vec<String> = session.medias.iter().map(|m| m.media.clone()).collect();
    let (audio_index, audio) = session
        .medias
        .iter()
        .enumerate()
        .find(|(_, m)| m.media.eq_ignore_ascii_case("audio") && m.port != 0)
        .ok_or(SdpError::NoAudio)?;
    let connection = audio.connections.first().or(session.connection.as_ref()).ok_or(SdpError::NoAddress)?;
    if connection.nettype != sdp_types::NetType::In {
        return Err(SdpError::NoAddress);
    }
    let ip: IpAddr = connection.connection_address.parse().map_err(|_| SdpError::NoAddress)?;
    if ip.is_multicast() {
        return Err(SdpError::NoAddress);
    }
    // Only plain RTP: SRTP or DTLS profiles have nothing in common with what media speaks.
    let plain = audio.proto.eq_ignore_ascii_case("RTP/AVP");
    let mut codecs = Vec::new();
    let mut telephone_event = None;
    for format in audio.fmt.split_ascii_whitespace() {
        let Ok(pt) = format.parse::<u8>() else { continue };
        if pt > 127 {
            continue;
        }
        match rtpmap(&audio.attributes, pt) {
            Some((name, rate)) if rate == CLOCK_RATE => {
                if let Some(codec) = Codec::from_name(name) {
                    codecs.push((pt, codec));
                } else if name.eq_ignore_ascii_case("telephone-event") && telephone_event.is_none() {
                    telephone_event = Some(pt);
                }
            }
            Some(_) => {}
            // Static types need no rtpmap.
            None if pt == 0 => codecs.push((0, Codec::Pcmu)),
            None if pt == 8 => codecs.push((8, Codec::Pcma)),
            None => {}
        }
    }
    if !plain {
        codecs.clear();
    }
    let direction =
        direction_of(&audio.attributes).or_else(|| direction_of(&session.attributes)).unwrap_or(Direction::SendRecv);
    Ok(Description { remote: SocketAddr::new(ip, audio.port), codecs, telephone_event, direction, audio_index, media })
}

/// The `rtpmap` of `pt`: encoding name and clock rate.
fn rtpmap(attributes: &[sdp_types::Attribute], pt: u8) -> Option<(&str, u32)> {
    attributes.iter().filter(|a| a.attribute.eq_ignore_ascii_case("rtpmap")).find_map(|a| {
        let value = a.value.as_deref()?;
        let (number, encoding) = value.split_once(' ')?;
        if number.trim().parse::<u8>().ok()? != pt {
            return None;
        }
        let mut parts = encoding.trim().split('/');
        let name = parts.next()?;
        let rate = parts.next()?.parse().ok()?;
        Some((name, rate))
    })
}

fn direction_of(attributes: &[sdp_types::Attribute]) -> Option<Direction> {
    attributes.iter().find_map(|a| match a.attribute.to_ascii_lowercase().as_str() {
        "sendrecv" => Some(Direction::SendRecv),
        "sendonly" => Some(Direction::SendOnly),
        "recvonly" => Some(Direction::RecvOnly),
        "inactive" => Some(Direction::Inactive),
        _ => None,
    })
}

/// Chooses, for an offer, the first of its codecs media carries (the offerer's preference)
/// and telephone events if offered; `allowed` narrows the codecs (the agent's leg must
/// match the caller's, as media does not transcode).
pub fn negotiate(offer: &Description, allowed: &[Codec]) -> Result<Negotiated, SdpError> {
    let (payload_type, codec) =
        offer.codecs.iter().copied().find(|(_, c)| allowed.contains(c)).ok_or(SdpError::NoCommonCodec)?;
    Ok(Negotiated {
        codec,
        payload_type,
        telephone_event: offer.telephone_event,
        remote: offer.remote,
        direction: offer.direction.answer(),
    })
}

/// Reads the answer to an offer made with [`offer`]: it must pick the offered codec.
pub fn accept_answer(answer: &Description, offered: Codec) -> Result<Negotiated, SdpError> {
    let (payload_type, codec) =
        answer.codecs.iter().copied().find(|(_, c)| *c == offered).ok_or(SdpError::NoCommonCodec)?;
    Ok(Negotiated {
        codec,
        payload_type,
        telephone_event: answer.telephone_event,
        remote: answer.remote,
        direction: answer.direction,
    })
}

/// Media's own side of a stream: where it receives, and the session's identity.
#[derive(Debug, Clone, Copy)]
pub struct Local {
    pub addr: SocketAddr,
    pub session_id: u64,
    pub version: u64,
}

/// The answer to `offer` once [`negotiate`]d: the chosen codec (and events) on the audio
/// stream, the offer's other streams refused with port 0.
pub fn answer(offer: &Description, chosen: &Negotiated, local: &Local) -> String {
    let mut sdp = header(local);
    for (i, media) in offer.media.iter().enumerate() {
        if i == offer.audio_index {
            sdp.push_str(&audio_stream(
                local.addr.port(),
                chosen.codec,
                chosen.payload_type,
                chosen.telephone_event,
                chosen.direction,
            ));
        } else {
            // A refused stream keeps its type; its format is irrelevant but must be there.
            let kind =
                if media.chars().all(|c| c.is_ascii_alphanumeric()) && !media.is_empty() { media } else { "audio" };
            sdp.push_str(&format!("m={kind} 0 RTP/AVP 0\r\n"));
        }
    }
    sdp
}

/// An offer of one audio stream in `codec` (its static type) with telephone events (101).
pub fn offer(codec: Codec, local: &Local) -> String {
    let mut sdp = header(local);
    sdp.push_str(&audio_stream(
        local.addr.port(),
        codec,
        codec.static_payload_type(),
        Some(OFFERED_EVENT_PT),
        Direction::SendRecv,
    ));
    sdp
}

/// The payload type media offers telephone events on.
pub const OFFERED_EVENT_PT: u8 = 101;

fn header(local: &Local) -> String {
    let family = if local.addr.is_ipv4() { "IP4" } else { "IP6" };
    let ip = local.addr.ip();
    format!(
        "v=0\r\no=centralita {} {} IN {family} {ip}\r\ns=centralita\r\nc=IN {family} {ip}\r\nt=0 0\r\n",
        local.session_id, local.version
    )
}

fn audio_stream(port: u16, codec: Codec, pt: u8, event: Option<u8>, direction: Direction) -> String {
    let mut m = match event {
        Some(e) => format!("m=audio {port} RTP/AVP {pt} {e}\r\n"),
        None => format!("m=audio {port} RTP/AVP {pt}\r\n"),
    };
    m.push_str(&format!("a=rtpmap:{pt} {}/{CLOCK_RATE}\r\n", codec.name()));
    if let Some(e) = event {
        m.push_str(&format!("a=rtpmap:{e} telephone-event/{CLOCK_RATE}\r\na=fmtp:{e} 0-16\r\n"));
    }
    m.push_str(&format!("a=ptime:20\r\na={}\r\n", direction.attribute()));
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SIPP_OFFER: &str = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n";

    fn local() -> Local {
        Local { addr: "127.0.0.1:22000".parse().expect("addr"), session_id: 7, version: 1 }
    }

    #[test]
    fn an_offer_of_g711_and_events_is_answered_with_the_first_codec_and_events() {
        let offer = parse(SIPP_OFFER.as_bytes()).expect("parses");
        assert_eq!(offer.remote, "127.0.0.1:6000".parse().expect("addr"));
        assert_eq!(offer.codecs, vec![(0, Codec::Pcmu), (8, Codec::Pcma)]);
        assert_eq!(offer.telephone_event, Some(101));
        let chosen = negotiate(&offer, &[Codec::Pcmu, Codec::Pcma]).expect("common");
        assert_eq!((chosen.codec, chosen.payload_type), (Codec::Pcmu, 0));
        let text = answer(&offer, &chosen, &local());
        // The answer reads back (with the same parser a peer would use) as what was chosen.
        let back = parse(text.as_bytes()).expect("our answer parses");
        assert_eq!(back.remote, local().addr);
        assert_eq!(back.codecs, vec![(0, Codec::Pcmu)]);
        assert_eq!(back.telephone_event, Some(101));
        assert_eq!(back.direction, Direction::SendRecv);
        // Narrowed to A-law, the second codec is taken.
        let alaw = negotiate(&offer, &[Codec::Pcma]).expect("common");
        assert_eq!((alaw.codec, alaw.payload_type), (Codec::Pcma, 8));
    }

    #[test]
    fn dynamic_types_static_types_without_rtpmap_and_stream_level_addresses() {
        let text = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=video 5000 RTP/AVP 96\r\nm=audio 7000 RTP/AVP 98 8 96\r\nc=IN IP4 10.0.0.2\r\na=rtpmap:98 pcma/8000\r\na=rtpmap:96 telephone-event/8000\r\na=sendonly\r\n";
        let offer = parse(text.as_bytes()).expect("parses");
        assert_eq!(offer.remote, "10.0.0.2:7000".parse().expect("addr"));
        assert_eq!(offer.codecs, vec![(98, Codec::Pcma), (8, Codec::Pcma)]);
        assert_eq!(offer.telephone_event, Some(96));
        let chosen = negotiate(&offer, &[Codec::Pcmu, Codec::Pcma]).expect("common");
        assert_eq!(chosen.direction, Direction::RecvOnly);
        let text = answer(&offer, &chosen, &local());
        let session = Session::parse(text.as_bytes()).expect("parses");
        assert_eq!(session.medias.len(), 2, "one answer line per offered stream");
        assert_eq!((session.medias[0].media.as_str(), session.medias[0].port), ("video", 0));
        assert_eq!(session.medias[1].port, 22000);
    }

    #[test]
    fn refusals() {
        let no_common = SIPP_OFFER
            .replace("m=audio 6000 RTP/AVP 0 8 101", "m=audio 6000 RTP/AVP 18 101")
            .replace("a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n", "a=rtpmap:18 G729/8000\r\n");
        let offer = parse(no_common.as_bytes()).expect("parses");
        assert_eq!(negotiate(&offer, &[Codec::Pcmu, Codec::Pcma]), Err(SdpError::NoCommonCodec));
        assert_eq!(SdpError::NoCommonCodec.sip_status().0, 488);
        let srtp = SIPP_OFFER.replace("RTP/AVP", "RTP/SAVP");
        assert_eq!(negotiate(&parse(srtp.as_bytes()).expect("parses"), &[Codec::Pcmu]), Err(SdpError::NoCommonCodec));
        let wideband = SIPP_OFFER
            .replace("PCMU/8000", "PCMU/16000")
            .replace("m=audio 6000 RTP/AVP 0 8 101", "m=audio 6000 RTP/AVP 0 101");
        assert_eq!(
            negotiate(&parse(wideband.as_bytes()).expect("parses"), &[Codec::Pcmu]),
            Err(SdpError::NoCommonCodec)
        );
        assert_eq!(parse(SIPP_OFFER.replace("m=audio", "m=video").as_bytes()), Err(SdpError::NoAudio));
        assert_eq!(parse(SIPP_OFFER.replace("c=IN IP4 127.0.0.1\r\n", "").as_bytes()), Err(SdpError::NoAddress));
        assert_eq!(
            parse(SIPP_OFFER.replace("c=IN IP4 127.0.0.1", "c=IN IP4 239.0.0.1").as_bytes()),
            Err(SdpError::NoAddress)
        );
        assert_eq!(
            parse(SIPP_OFFER.replace("c=IN IP4 127.0.0.1", "c=IN IP4 host.example").as_bytes()),
            Err(SdpError::NoAddress)
        );
        assert!(matches!(parse(b"hello"), Err(SdpError::Unreadable(_))));
        assert_eq!(SdpError::Unreadable(String::new()).sip_status().0, 400);
    }

    #[test]
    fn an_answer_to_our_offer_must_keep_the_offered_codec() {
        let ours = offer(Codec::Pcma, &local());
        let mine = parse(ours.as_bytes()).expect("parses");
        assert_eq!((mine.codecs.clone(), mine.telephone_event), (vec![(8, Codec::Pcma)], Some(OFFERED_EVENT_PT)));
        let reply = SIPP_OFFER.replace("m=audio 6000 RTP/AVP 0 8 101", "m=audio 6000 RTP/AVP 8 101");
        let ok = accept_answer(&parse(reply.as_bytes()).expect("parses"), Codec::Pcma).expect("kept");
        assert_eq!((ok.payload_type, ok.remote.port()), (8, 6000));
        let wrong = SIPP_OFFER.replace("m=audio 6000 RTP/AVP 0 8 101", "m=audio 6000 RTP/AVP 0");
        assert_eq!(accept_answer(&parse(wrong.as_bytes()).expect("parses"), Codec::Pcma), Err(SdpError::NoCommonCodec));
    }

    proptest! {
        /// Random bytes: an error or a description, never a panic.
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(d) = parse(&bytes) {
                if let Ok(n) = negotiate(&d, &[Codec::Pcmu, Codec::Pcma]) {
                    let _ = answer(&d, &n, &local());
                }
            }
        }

        /// A real offer with bytes changed, removed or inserted: never a panic, and whatever
        /// is accepted is answered with an answer that parses.
        #[test]
        fn mutated_offers_never_panic(edits in proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..12)) {
            let mut bytes = SIPP_OFFER.as_bytes().to_vec();
            for (at, byte, op) in edits {
                let at = at % (bytes.len() + 1);
                match op {
                    0 if at < bytes.len() => bytes[at] = byte,
                    1 if at < bytes.len() => { bytes.remove(at); }
                    _ => bytes.insert(at, byte),
                }
            }
            if let Ok(d) = parse(&bytes) {
                if let Ok(n) = negotiate(&d, &[Codec::Pcmu, Codec::Pcma]) {
                    let text = answer(&d, &n, &local());
                    prop_assert!(parse(text.as_bytes()).is_ok(), "{text}");
                }
            }
        }

        /// Generated offers (random types, maps, ports, addresses) negotiate consistently.
        #[test]
        fn generated_offers_negotiate_consistently(
            pts in proptest::collection::vec(0u8..128, 1..6),
            names in proptest::collection::vec(prop_oneof![Just("PCMU"), Just("PCMA"), Just("G729"), Just("telephone-event"), Just("opus")], 1..6),
            port in 1u16..,
            v4 in any::<[u8; 4]>(),
        ) {
            let ip = std::net::Ipv4Addr::from(v4);
            let fmt: Vec<String> = pts.iter().map(u8::to_string).collect();
            let mut text = format!("v=0\r\no=- 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP {}\r\n", fmt.join(" "));
            for (pt, name) in pts.iter().zip(&names) {
                text.push_str(&format!("a=rtpmap:{pt} {name}/8000\r\n"));
            }
            match parse(text.as_bytes()) {
                Ok(d) => {
                    if let Ok(n) = negotiate(&d, &[Codec::Pcmu, Codec::Pcma]) {
                        prop_assert!(pts.contains(&n.payload_type));
                        let back = parse(answer(&d, &n, &local()).as_bytes()).expect("answer parses");
                        prop_assert_eq!(back.codecs, vec![(n.payload_type, n.codec)]);
                    }
                }
                Err(e) => prop_assert!(ip.is_multicast() || matches!(e, SdpError::Unreadable(_)), "{e:?}"),
            }
        }
    }
}

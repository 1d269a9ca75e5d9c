//! A call's media: one task per call holding the caller's leg and, once bridged, the
//! agent's. Until the call is bridged the caller hears queue treatment (the music on hold);
//! bridged, each leg's packets go to the other leg as they are, without decoding.
//!
//! On every leg:
//! - **symmetric RTP with latching**: media sends to the address the peer's SDP gave until
//!   the first valid packet arrives, then latches to that packet's source and sends there;
//!   packets from any other address are dropped from then on (a peer behind NAT is reached
//!   where it really is, and a third party cannot inject audio once the call is latched);
//! - only RTP version 2 of the leg's negotiated payload types passes: the codec and
//!   telephone events; anything else (other types, RTCP, garbage) is dropped;
//! - what the leg's peer receives is **one stream**: media's own SSRC, sequence numbers and
//!   timestamps continuing across a change of source (treatment, then the agent), the
//!   marker bit set on the first packet after the switch;
//! - telephone events (RFC 4733) are read into digits, reported as [`MediaEvent::Digit`];
//! - a leg silent for longer than the timeout ends the call's media with
//!   [`MediaEvent::Timeout`];
//! - **hold** ([`CallMedia::hold`]): while the call is on hold the caller hears the
//!   treatment again and the agent's phone gets G.711 silence on its stream; nothing passes
//!   between the parties and nothing is forked to the recording (the hold is a gap there:
//!   the music is never recorded, nor what either party says while held); digits are still
//!   read. A leg renegotiated by a re-INVITE ([`CallMedia::renegotiate`]) takes its new
//!   address, types and direction: media sends only if its answer said so, and a leg whose
//!   peer is not to send (`sendonly`/`inactive` from media's side) is not timed out;
//! - the **recording fork**: with [`Settings::fork`] set, every audio packet a party sent
//!   (after the checks above; not treatment, not events) is also handed to that channel as a
//!   [`Forked`] (the leg, its codec, RTP sequence number and timestamp, the G.711 payload),
//!   the parties kept apart and nothing decoded. The hot path never waits on it: a fork that
//!   is not read drops (and counts) what it cannot take. [`crate::recorder`] streams it to
//!   the recording service.
//!
//! The task ends when its [`CallMedia`] handle is dropped, or on a timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rtp_types::{RtpPacket, RtpPacketBuilder, RtpPacketMut};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use super::dtmf::Detector;
use super::g711::Loop;
use super::sdp::{Direction, Negotiated};
use super::{CLOCK_RATE, FRAME_SAMPLES};

/// Which party of the call a leg reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Caller,
    Agent,
}

/// What the media of a call reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// A DTMF digit the party of `side` sent (RFC 4733).
    Digit { side: Side, digit: char },
    /// No packet from `side` for longer than the timeout: the media task has ended.
    Timeout { side: Side },
}

/// Why a received datagram was not relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// From an address other than the latched peer.
    NotLatchedPeer,
    /// Not RTP version 2.
    NotRtp,
    /// A payload type not negotiated on the leg (or RTCP on the RTP port).
    UnknownPayloadType,
}

/// What a valid packet carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Payload {
    Audio,
    Event,
}

/// One side's RTP: the socket media receives and sends on and what was negotiated.
#[derive(Debug)]
pub struct Leg {
    pub(super) socket: UdpSocket,
    pub(super) negotiated: Negotiated,
    latched: Option<SocketAddr>,
    pub(super) last_heard: Instant,
    pub(super) out: Outbound,
    dtmf: Detector,
}

impl Leg {
    pub fn new(socket: UdpSocket, negotiated: Negotiated) -> Self {
        Self {
            socket,
            negotiated,
            latched: None,
            last_heard: Instant::now(),
            out: Outbound::new(rand_u32()),
            dtmf: Detector::default(),
        }
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Where packets for this leg's peer go: the latched address, else the SDP's.
    pub(super) fn destination(&self) -> Option<SocketAddr> {
        self.latched.or_else(|| {
            let r = self.negotiated.remote;
            (!r.ip().is_unspecified() && r.port() != 0).then_some(r)
        })
    }

    /// Whether media sends on this leg (its direction towards the peer).
    pub(super) fn sends(&self) -> bool {
        matches!(self.negotiated.direction, Direction::SendRecv | Direction::SendOnly)
    }

    /// Whether the peer is to send on this leg (media receives): a leg that is not is never
    /// timed out for its silence.
    fn expects_audio(&self) -> bool {
        matches!(self.negotiated.direction, Direction::SendRecv | Direction::RecvOnly)
    }

    /// Takes a renegotiated stream (a re-INVITE): a new address unlatches the leg.
    fn renegotiate(&mut self, negotiated: Negotiated) {
        if negotiated.remote != self.negotiated.remote {
            self.latched = None;
        }
        self.negotiated = negotiated;
        self.last_heard = Instant::now();
    }

    /// Checks a datagram received from `from`, latching on the first valid one.
    pub(super) fn accept(&mut self, from: SocketAddr, datagram: &[u8]) -> Result<Payload, Dropped> {
        if self.latched.is_some_and(|l| l != from) {
            return Err(Dropped::NotLatchedPeer);
        }
        let packet = RtpPacket::parse(datagram).map_err(|_| Dropped::NotRtp)?;
        let pt = packet.payload_type();
        let payload = if pt == self.negotiated.payload_type {
            Payload::Audio
        } else if Some(pt) == self.negotiated.telephone_event {
            Payload::Event
        } else {
            return Err(Dropped::UnknownPayloadType);
        };
        self.latched.get_or_insert(from);
        self.last_heard = Instant::now();
        Ok(payload)
    }
}

/// Where a packet sent to a leg came from: the leg's stream stays one stream across a
/// change of source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    Treatment,
    /// The conference mixer ([`super::mixer`]).
    Mixer,
    /// The other leg's peer, with the SSRC it sent.
    Peer(u32),
}

/// The rewriting of one outgoing stream: media's SSRC, and the offsets mapping the current
/// source's sequence numbers and timestamps onto the stream's.
#[derive(Debug)]
pub(super) struct Outbound {
    pub(super) ssrc: u32,
    source: Option<Source>,
    seq_delta: u16,
    ts_delta: u32,
    /// The last sequence number and timestamp sent, and when.
    last: Option<(u16, u32, Instant)>,
}

impl Outbound {
    fn new(ssrc: u32) -> Self {
        Self { ssrc, source: None, seq_delta: 0, ts_delta: 0, last: None }
    }

    /// The stream's sequence number and timestamp for a packet of `source`, and whether it
    /// starts a new source (the marker bit is then set).
    pub(super) fn map(&mut self, source: Source, seq: u16, ts: u32, now: Instant) -> (u16, u32, bool) {
        let switched = self.source != Some(source);
        if switched {
            let (next_seq, next_ts) = match self.last {
                Some((s, t, at)) => {
                    // The timestamp advances by the time that passed (at least a frame), so
                    // the receiver's jitter buffer sees no jump back or forward.
                    let elapsed = now.saturating_duration_since(at).as_millis() as u64 * u64::from(CLOCK_RATE) / 1000;
                    (s.wrapping_add(1), t.wrapping_add(elapsed.max(FRAME_SAMPLES as u64) as u32))
                }
                None => (rand_u32() as u16, rand_u32()),
            };
            self.seq_delta = next_seq.wrapping_sub(seq);
            self.ts_delta = next_ts.wrapping_sub(ts);
            self.source = Some(source);
        }
        let out = (seq.wrapping_add(self.seq_delta), ts.wrapping_add(self.ts_delta));
        self.last = Some((out.0, out.1, now));
        (out.0, out.1, switched)
    }
}

/// A random SSRC, sequence number or timestamp start (RFC 3550 wants them unpredictable,
/// not secret): the standard library's randomly keyed hasher, freshly keyed each call.
fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64));
    h.finish() as u32
}

/// Settings of a call's media.
#[derive(Debug, Clone)]
pub struct Settings {
    /// A leg silent this long ends the call's media.
    pub timeout: Duration,
    /// What a caller hears until bridged; `None` is silence.
    pub treatment: Option<Arc<Loop>>,
    /// Where the parties' audio is forked to (recording); `None` forks nothing.
    pub fork: Option<mpsc::Sender<Forked>>,
}

/// One packet of a party's audio, as the recording fork carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forked {
    pub side: Side,
    pub codec: super::Codec,
    /// The RTP sequence number and timestamp the party sent (gaps show losses).
    pub sequence: u16,
    pub timestamp: u32,
    /// The G.711 payload, as received.
    pub payload: Vec<u8>,
}

/// Where a call's task reports: its events, and the fork.
struct Outputs {
    events: mpsc::Sender<MediaEvent>,
    fork: Option<mpsc::Sender<Forked>>,
    /// Packets the fork could not take (its reader is behind).
    fork_dropped: u64,
    /// The call is on hold: nothing passes between the legs, nothing is forked.
    held: bool,
}

enum Command {
    Bridge(Box<Leg>),
    Unbridge,
    /// Hold on or off ([`CallMedia::hold`]).
    Hold(bool),
    /// A leg's stream renegotiated by a re-INVITE ([`CallMedia::renegotiate`]).
    Renegotiate(Side, Negotiated),
    /// Hands the agent's leg back (the caller hears treatment meanwhile).
    Detach(tokio::sync::oneshot::Sender<Option<Box<Leg>>>),
    /// Plays an announcement once to a caller waiting unbridged ([`Announcer`]).
    Announce(Arc<Loop>),
    /// Forks the parties' audio from now on (a recording started on demand).
    Fork(mpsc::Sender<Forked>),
}

/// The handle of a call's media task: dropping it stops the task (its sockets close).
#[derive(Debug)]
pub struct CallMedia {
    commands: mpsc::Sender<Command>,
    events: mpsc::Receiver<MediaEvent>,
    caller_addr: SocketAddr,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Bridge(_) => f.write_str("Bridge"),
            Command::Unbridge => f.write_str("Unbridge"),
            Command::Hold(on) => write!(f, "Hold({on})"),
            Command::Renegotiate(side, _) => write!(f, "Renegotiate({side:?})"),
            Command::Detach(_) => f.write_str("Detach"),
            Command::Announce(_) => f.write_str("Announce"),
            Command::Fork(_) => f.write_str("Fork"),
        }
    }
}

impl CallMedia {
    /// Starts the media of a call whose caller is on `caller`: treatment plays at once.
    pub fn start(caller: Leg, settings: Settings) -> std::io::Result<Self> {
        let caller_addr = caller.local_addr()?;
        let (commands, command_rx) = mpsc::channel(4);
        let (event_tx, events) = mpsc::channel(64);
        tokio::spawn(run(caller, settings, command_rx, event_tx));
        Ok(Self { commands, events, caller_addr })
    }

    /// Where media receives the caller's RTP.
    pub fn caller_addr(&self) -> SocketAddr {
        self.caller_addr
    }

    /// Bridges the caller with `agent`: treatment stops and audio flows both ways. `false`
    /// if the media task has ended.
    pub async fn bridge(&self, agent: Leg) -> bool {
        self.commands.send(Command::Bridge(Box::new(agent))).await.is_ok()
    }

    /// Drops the agent's leg: the caller hears treatment again.
    pub async fn unbridge(&self) -> bool {
        self.commands.send(Command::Unbridge).await.is_ok()
    }

    /// Takes the agent's leg out of the bridge and hands it back (to a conference: see
    /// [`super::mixer`]): the caller hears treatment meanwhile. `None` if there was none or
    /// the media task has ended.
    pub async fn detach(&self) -> Option<Box<Leg>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.commands.send(Command::Detach(tx)).await.ok()?;
        rx.await.ok().flatten()
    }

    /// Puts the call on hold (`true`: the caller hears the treatment, the agent silence,
    /// nothing passes between them or to the recording) or takes it off. `false` if the media
    /// task has ended.
    pub async fn hold(&self, on: bool) -> bool {
        self.commands.send(Command::Hold(on)).await.is_ok()
    }

    /// Applies a leg's renegotiated stream (a re-INVITE media answered). `false` if the
    /// media task has ended.
    pub async fn renegotiate(&self, side: Side, negotiated: Negotiated) -> bool {
        self.commands.send(Command::Renegotiate(side, negotiated)).await.is_ok()
    }

    /// Forks the parties' audio to `fork` from now on (a recording started mid-call),
    /// replacing any fork. `false` if the media task has ended.
    pub async fn fork(&self, fork: mpsc::Sender<Forked>) -> bool {
        self.commands.send(Command::Fork(fork)).await.is_ok()
    }

    /// A handle that plays announcements to the waiting caller; it does not keep the media
    /// task alive.
    pub fn announcer(&self) -> Announcer {
        Announcer { commands: self.commands.downgrade() }
    }

    /// The next event; `None` once the task has ended and every event was read.
    pub async fn event(&mut self) -> Option<MediaEvent> {
        self.events.recv().await
    }
}

/// Plays announcements to a call's caller while it waits unbridged: the announcement
/// replaces the music until it has played once, then the music goes on. One arriving while
/// the caller is bridged (or on hold) is dropped; one arriving during another replaces it.
#[derive(Debug, Clone)]
pub struct Announcer {
    commands: mpsc::WeakSender<Command>,
}

impl Announcer {
    /// `false` when the call's media has ended.
    pub async fn announce(&self, audio: Arc<Loop>) -> bool {
        match self.commands.upgrade() {
            Some(commands) => commands.send(Command::Announce(audio)).await.is_ok(),
            None => false,
        }
    }
}

/// The largest datagram read (a G.711 packet is 172 bytes; anything beyond is dropped as
/// truncated garbage by the parser).
const MAX_DATAGRAM: usize = 2048;

async fn recv(leg: &Option<Box<Leg>>, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    match leg {
        Some(leg) => leg.socket.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

async fn run(
    mut caller: Leg,
    settings: Settings,
    mut commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<MediaEvent>,
) {
    let mut out = Outputs { events, fork: settings.fork.clone(), fork_dropped: 0, held: false };
    let mut agent: Option<Box<Leg>> = None;
    let mut from_caller = vec![0u8; MAX_DATAGRAM];
    let mut from_agent = vec![0u8; MAX_DATAGRAM];
    let mut frame_timer = tokio::time::interval(Duration::from_millis(20));
    frame_timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut check = tokio::time::interval(Duration::from_millis(250));
    check.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut frame: u64 = 0;
    // An announcement playing to the unbridged caller, and its frames played so far.
    let mut announcing: Option<(Arc<Loop>, u64)> = None;
    let mut treatment_packet = Vec::with_capacity(12 + FRAME_SAMPLES);
    loop {
        tokio::select! {
            r = caller.socket.recv_from(&mut from_caller) => {
                let Ok((n, from)) = r else { continue };
                forward(&mut caller, agent.as_deref_mut(), Side::Caller, from, &mut from_caller[..n], &mut out).await;
            }
            r = recv(&agent, &mut from_agent) => {
                let Ok((n, from)) = r else { continue };
                if let Some(a) = agent.as_deref_mut() {
                    forward(a, Some(&mut caller), Side::Agent, from, &mut from_agent[..n], &mut out).await;
                }
            }
            _ = frame_timer.tick(), if (agent.is_none() || out.held) && (settings.treatment.is_some() || announcing.is_some()) => {
                if let Some(a) = agent.as_deref_mut().filter(|_| out.held) {
                    send_silence(a, frame).await;
                }
                let spoken = match &mut announcing {
                    Some((audio, played)) if agent.is_none() => {
                        let at = *played;
                        *played += 1;
                        Some((audio.clone(), at, *played >= audio.frames()))
                    }
                    _ => None,
                };
                if spoken.as_ref().is_some_and(|(_, _, done)| *done) {
                    announcing = None;
                }
                let (playing, at) = match (&spoken, &settings.treatment) {
                    (Some((audio, at, _)), _) => (audio, *at),
                    (None, Some(music)) => (music, frame),
                    (None, None) => {
                        frame += 1;
                        continue;
                    }
                };
                let Some(to) = caller.destination() else {
                    frame += 1;
                    continue;
                };
                if !caller.sends() {
                    continue;
                }
                let (seq, ts, marker) = caller.out.map(Source::Treatment, frame as u16, (frame as u32).wrapping_mul(FRAME_SAMPLES as u32), Instant::now());
                treatment_packet.clear();
                let built = RtpPacketBuilder::<&[u8], &[u8]>::new()
                    .payload_type(caller.negotiated.payload_type)
                    .sequence_number(seq)
                    .timestamp(ts)
                    .ssrc(caller.out.ssrc)
                    .marker_bit(marker)
                    .payload(playing.frame(caller.negotiated.codec, at))
                    .write_into_vec(&mut treatment_packet);
                frame += 1;
                if built.is_ok() {
                    let _ = caller.socket.send_to(&treatment_packet, to).await;
                }
            }
            _ = check.tick() => {
                let now = Instant::now();
                // A leg whose peer is not to send is not timed out, nor the agent's while
                // held (a phone that held the call with `inactive` sends nothing).
                let heard = |leg: &Leg| leg.expects_audio().then_some(leg.last_heard);
                let silent = [
                    (Side::Caller, heard(&caller)),
                    (Side::Agent, agent.as_deref().filter(|_| !out.held).and_then(heard)),
                ];
                if let Some((side, _)) = silent.iter().find(|(_, heard)| heard.is_some_and(|h| now.saturating_duration_since(h) > settings.timeout)) {
                    if out.fork_dropped > 0 {
                        tracing::warn!(dropped = out.fork_dropped, "the recording fork fell behind: packets dropped");
                    }
                    let _ = out.events.send(MediaEvent::Timeout { side: *side }).await;
                    return;
                }
            }
            c = commands.recv() => match c {
                None => {
                    if out.fork_dropped > 0 {
                        tracing::warn!(dropped = out.fork_dropped, "the recording fork fell behind: packets dropped");
                    }
                    return;
                }
                Some(Command::Bridge(leg)) => {
                    let mut leg = leg;
                    leg.last_heard = Instant::now();
                    agent = Some(leg);
                    announcing = None;
                }
                Some(Command::Unbridge) => agent = None,
                Some(Command::Hold(on)) => {
                    if out.held && !on {
                        if let Some(a) = agent.as_deref_mut() {
                            a.last_heard = Instant::now();
                        }
                    }
                    out.held = on;
                }
                Some(Command::Renegotiate(side, negotiated)) => match side {
                    Side::Caller => caller.renegotiate(negotiated),
                    Side::Agent => {
                        if let Some(a) = agent.as_deref_mut() {
                            a.renegotiate(negotiated);
                        }
                    }
                },
                Some(Command::Detach(reply)) => {
                    let _ = reply.send(agent.take());
                }
                Some(Command::Fork(fork)) => out.fork = Some(fork),
                Some(Command::Announce(audio)) => {
                    if agent.is_none() && audio.frames() > 0 {
                        announcing = Some((audio, 0));
                    }
                }
            },
        }
    }
}

/// Takes a datagram `from` a peer on `leg`: checked, its digits read, and relayed to `to`
/// rewritten for `to`'s stream (if bridged and `to` takes that kind of payload).
async fn forward(
    leg: &mut Leg,
    to: Option<&mut Leg>,
    side: Side,
    from: SocketAddr,
    datagram: &mut [u8],
    out: &mut Outputs,
) -> Option<Dropped> {
    let kind = match leg.accept(from, datagram) {
        Ok(kind) => kind,
        Err(why) => {
            tracing::trace!(?side, %from, ?why, "RTP dropped");
            return Some(why);
        }
    };
    let Ok(mut packet) = RtpPacketMut::parse(datagram) else { return Some(Dropped::NotRtp) };
    if let (Payload::Event, Some(digit)) = (kind, leg.dtmf.packet(packet.timestamp(), packet.payload())) {
        let _ = out.events.try_send(MediaEvent::Digit { side, digit });
    }
    if out.held {
        // On hold: neither party hears the other, and the recording gets neither.
        return None;
    }
    match kind {
        Payload::Event => {}
        Payload::Audio => {
            if let Some(fork) = &out.fork {
                let forked = Forked {
                    side,
                    codec: leg.negotiated.codec,
                    sequence: packet.sequence_number(),
                    timestamp: packet.timestamp(),
                    payload: packet.payload().to_vec(),
                };
                if fork.try_send(forked).is_err() {
                    out.fork_dropped += 1;
                }
            }
        }
    }
    let to = to?;
    let pt = match kind {
        Payload::Audio if to.negotiated.codec == leg.negotiated.codec => to.negotiated.payload_type,
        Payload::Event => to.negotiated.telephone_event?,
        Payload::Audio => return None,
    };
    let dest = to.destination()?;
    if !to.sends() {
        return None;
    }
    let (seq, ts, switched) =
        to.out.map(Source::Peer(packet.ssrc()), packet.sequence_number(), packet.timestamp(), Instant::now());
    packet.set_ssrc(to.out.ssrc);
    packet.set_sequence_number(seq);
    packet.set_timestamp(ts);
    if switched {
        packet.set_marker_bit(true);
    }
    packet.set_payload_type(pt).ok()?;
    let _ = to.socket.send_to(datagram, dest).await;
    None
}

/// One 20 ms frame of G.711 silence to `leg`'s peer (the agent, while the call is on hold),
/// on the leg's own stream, if media sends on it.
async fn send_silence(leg: &mut Leg, frame: u64) {
    let Some(to) = leg.destination().filter(|_| leg.sends()) else { return };
    let silence = [super::g711::encode(leg.negotiated.codec, &[0])[0]; FRAME_SAMPLES];
    let (seq, ts, marker) =
        leg.out.map(Source::Treatment, frame as u16, (frame as u32).wrapping_mul(FRAME_SAMPLES as u32), Instant::now());
    let mut packet = Vec::with_capacity(12 + FRAME_SAMPLES);
    let built = RtpPacketBuilder::<&[u8], &[u8]>::new()
        .payload_type(leg.negotiated.payload_type)
        .sequence_number(seq)
        .timestamp(ts)
        .ssrc(leg.out.ssrc)
        .marker_bit(marker)
        .payload(silence.as_slice())
        .write_into_vec(&mut packet);
    if built.is_ok() {
        let _ = leg.socket.send_to(&packet, to).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp::g711::tests::{goertzel, ulaw_decode};
    use crate::rtp::g711::{music_on_hold, MUSIC_NOTES_HZ};
    use crate::rtp::Codec;
    use proptest::prelude::*;
    use std::f64::consts::TAU;

    fn negotiated(remote: SocketAddr) -> Negotiated {
        Negotiated {
            codec: Codec::Pcmu,
            payload_type: 0,
            telephone_event: Some(101),
            remote,
            direction: Direction::SendRecv,
        }
    }

    async fn socket() -> UdpSocket {
        UdpSocket::bind("127.0.0.1:0").await.expect("bind")
    }

    fn packet(pt: u8, ssrc: u32, seq: u16, ts: u32, payload: &[u8]) -> Vec<u8> {
        RtpPacketBuilder::<&[u8], &[u8]>::new()
            .payload_type(pt)
            .ssrc(ssrc)
            .sequence_number(seq)
            .timestamp(ts)
            .payload(payload)
            .write_vec()
            .expect("valid packet")
    }

    #[derive(Debug, Clone, PartialEq)]
    struct Got {
        pt: u8,
        ssrc: u32,
        seq: u16,
        ts: u32,
        marker: bool,
        payload: Vec<u8>,
    }

    async fn receive(s: &UdpSocket, within: Duration) -> Option<Got> {
        let mut buf = [0u8; 2048];
        let (n, _) = tokio::time::timeout(within, s.recv_from(&mut buf)).await.ok()?.ok()?;
        let p = RtpPacket::parse(&buf[..n]).expect("media sends RTP");
        Some(Got {
            pt: p.payload_type(),
            ssrc: p.ssrc(),
            seq: p.sequence_number(),
            ts: p.timestamp(),
            marker: p.marker_bit(),
            payload: p.payload().to_vec(),
        })
    }

    /// Reads until a packet with `payload` arrives (treatment may be in between).
    async fn receive_payload(s: &UdpSocket, payload: &[u8]) -> Option<Got> {
        for _ in 0..200 {
            let got = receive(s, Duration::from_secs(2)).await?;
            if got.payload == payload {
                return Some(got);
            }
        }
        None
    }

    struct Call {
        media: CallMedia,
        caller_peer: UdpSocket,
        agent_peer: UdpSocket,
        agent_media: SocketAddr,
    }

    /// A call whose caller and agent are two sockets, bridged.
    async fn bridged(treatment: bool, timeout: Duration) -> Call {
        let caller_peer = socket().await;
        let agent_peer = socket().await;
        let caller = Leg::new(socket().await, negotiated(caller_peer.local_addr().expect("addr")));
        let agent = Leg::new(socket().await, negotiated(agent_peer.local_addr().expect("addr")));
        let agent_media = agent.local_addr().expect("addr");
        let treatment = treatment.then(music_on_hold);
        let media = CallMedia::start(caller, Settings { timeout, treatment, fork: None }).expect("starts");
        assert!(media.bridge(agent).await);
        Call { media, caller_peer, agent_peer, agent_media }
    }

    #[tokio::test]
    async fn audio_flows_both_ways_rewritten_into_media_own_streams() {
        let call = bridged(false, Duration::from_secs(30)).await;
        let to_caller_media = call.media.caller_addr();
        for i in 0..3u16 {
            call.caller_peer
                .send_to(&packet(0, 0xCA11, 100 + i, 1000 + u32::from(i) * 160, &[1, 2, 3]), to_caller_media)
                .await
                .expect("send");
            let got = receive(&call.agent_peer, Duration::from_secs(2)).await.expect("relayed to the agent");
            assert_eq!((got.pt, got.payload.as_slice()), (0, &[1u8, 2, 3][..]));
            assert_ne!(got.ssrc, 0xCA11, "media's own SSRC towards the agent");
            assert_eq!(got.marker, i == 0, "marker on the first packet of the stream only");
        }
        call.agent_peer.send_to(&packet(0, 0xA6E7, 7, 70, &[9, 9]), call.agent_media).await.expect("send");
        let got = receive(&call.caller_peer, Duration::from_secs(2)).await.expect("relayed to the caller");
        assert_eq!(got.payload, vec![9, 9]);
        assert_ne!(got.ssrc, 0xA6E7);
    }

    #[tokio::test]
    async fn an_announcement_replaces_the_music_once_in_the_same_stream() {
        let caller_peer = socket().await;
        let caller = Leg::new(socket().await, negotiated(caller_peer.local_addr().expect("addr")));
        let media = CallMedia::start(
            caller,
            Settings { timeout: Duration::from_secs(30), treatment: Some(music_on_hold()), fork: None },
        )
        .expect("starts");
        let first = receive(&caller_peer, Duration::from_secs(2)).await.expect("music plays");
        // A 1 kHz "announcement" of 10 frames (the last one partial: padded with silence).
        let tone: Vec<i16> =
            (0..FRAME_SAMPLES * 9 + 40).map(|i| ((TAU * 1000.0 * i as f64 / 8000.0).sin() * 8000.0) as i16).collect();
        let audio = Arc::new(Loop::from_samples(&tone));
        assert_eq!(audio.frames(), 10);
        let announcer = media.announcer();
        assert!(announcer.announce(audio.clone()).await);
        let mut frames = Vec::new();
        for _ in 0..60 {
            frames.push(receive(&caller_peer, Duration::from_secs(2)).await.expect("treatment plays"));
        }
        for pair in frames.windows(2) {
            assert_eq!((pair[1].ssrc, pair[1].seq), (first.ssrc, pair[0].seq.wrapping_add(1)), "one stream");
        }
        let is_tone = |g: &Got| {
            let pcm: Vec<f64> = g.payload.iter().map(|u| f64::from(ulaw_decode(*u))).collect();
            goertzel(&pcm, 1000.0) > 10.0 * MUSIC_NOTES_HZ.iter().map(|hz| goertzel(&pcm, *hz)).fold(0.0, f64::max)
        };
        let start = frames.iter().position(is_tone).expect("the announcement is heard");
        assert!(frames[start..start + 9].iter().all(is_tone), "its nine full frames in a row");
        assert_eq!(frames[start + 9].payload, audio.frame(Codec::Pcmu, 9), "then its padded last frame");
        assert!(!frames[start + 10..].iter().any(is_tone), "played once, then the music again");
        // Bridged, an announcement is dropped; once the media has ended, it reports so.
        let agent_peer = socket().await;
        let agent = Leg::new(socket().await, negotiated(agent_peer.local_addr().expect("addr")));
        assert!(media.bridge(agent).await);
        assert!(announcer.announce(audio.clone()).await);
        drop(media);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!announcer.announce(audio).await, "the announcer does not keep the call's media alive");
    }

    #[tokio::test]
    async fn treatment_then_the_agent_is_one_stream_for_the_caller() {
        let caller_peer = socket().await;
        let agent_peer = socket().await;
        let caller = Leg::new(socket().await, negotiated(caller_peer.local_addr().expect("addr")));
        let media = CallMedia::start(
            caller,
            Settings { timeout: Duration::from_secs(30), treatment: Some(music_on_hold()), fork: None },
        )
        .expect("starts");
        // Treatment: 20 ms frames of the music, one SSRC, consecutive numbers.
        let mut heard = Vec::new();
        let mut previous: Option<Got> = None;
        for _ in 0..25 {
            let got = receive(&caller_peer, Duration::from_secs(2)).await.expect("treatment plays");
            assert_eq!((got.pt, got.payload.len()), (0, FRAME_SAMPLES));
            if let Some(p) = &previous {
                assert_eq!(got.ssrc, p.ssrc);
                assert_eq!(got.seq, p.seq.wrapping_add(1));
                assert_eq!(got.ts, p.ts.wrapping_add(FRAME_SAMPLES as u32));
            }
            heard.extend(got.payload.iter().map(|u| f64::from(ulaw_decode(*u))));
            previous = Some(got);
        }
        let first_note: Vec<f64> = heard[..FRAME_SAMPLES * 20].to_vec();
        assert!(
            goertzel(&first_note, MUSIC_NOTES_HZ[0]) > 10.0 * goertzel(&first_note, 1000.0),
            "the caller hears the music"
        );
        let last = previous.expect("heard");

        // The agent's audio then continues the same stream: same SSRC, next sequence
        // number, a later timestamp, the marker bit on the switch.
        let agent = Leg::new(socket().await, negotiated(agent_peer.local_addr().expect("addr")));
        let agent_media = agent.local_addr().expect("addr");
        assert!(media.bridge(agent).await);
        agent_peer.send_to(&packet(0, 0xA6E7, 50_000, 9_000_000, &[7; 160]), agent_media).await.expect("send");
        let first = receive_payload(&caller_peer, &[7; 160]).await.expect("the agent is heard");
        assert_eq!(first.ssrc, last.ssrc, "one SSRC across the switch");
        assert!(first.marker, "the switch is marked");
        let seq_gap = first.seq.wrapping_sub(last.seq);
        assert!((1..=5).contains(&seq_gap), "the sequence continues (gap {seq_gap})");
        let ts_gap = first.ts.wrapping_sub(last.ts);
        assert!(
            (FRAME_SAMPLES as u32..=8000).contains(&ts_gap),
            "the timestamp moves on by the time passed ({ts_gap})"
        );
        agent_peer.send_to(&packet(0, 0xA6E7, 50_001, 9_000_160, &[8; 160]), agent_media).await.expect("send");
        let second = receive(&caller_peer, Duration::from_secs(2)).await.expect("next packet");
        assert_eq!(
            (second.seq, second.ts, second.marker),
            (first.seq.wrapping_add(1), first.ts.wrapping_add(160), false)
        );
        // No treatment while bridged.
        assert!(receive(&caller_peer, Duration::from_millis(200)).await.is_none(), "treatment stopped");

        // A new source on the agent's side (its SSRC changes) is a switch too.
        agent_peer.send_to(&packet(0, 0xB0B0, 3, 3, &[6; 160]), agent_media).await.expect("send");
        let switched = receive(&caller_peer, Duration::from_secs(2)).await.expect("relayed");
        assert_eq!((switched.ssrc, switched.seq, switched.marker), (first.ssrc, second.seq.wrapping_add(1), true));

        // Unbridged, the treatment resumes on the same stream.
        assert!(media.unbridge().await);
        let again = receive(&caller_peer, Duration::from_secs(2)).await.expect("treatment again");
        assert_eq!((again.ssrc, again.seq, again.marker), (first.ssrc, switched.seq.wrapping_add(1), true));
    }

    #[tokio::test]
    async fn the_first_valid_source_is_latched_and_others_are_ignored() {
        let call = bridged(false, Duration::from_secs(30)).await;
        let intruder = socket().await;
        let media_addr = call.media.caller_addr();
        // The intruder's garbage and unknown types do not latch.
        intruder.send_to(b"not rtp at all", media_addr).await.expect("send");
        intruder.send_to(&packet(18, 1, 1, 1, &[1]), media_addr).await.expect("send");
        call.caller_peer.send_to(&packet(0, 2, 1, 1, &[2]), media_addr).await.expect("send");
        assert_eq!(receive(&call.agent_peer, Duration::from_secs(2)).await.expect("relayed").payload, vec![2]);
        // Latched on the caller: the intruder's valid packets are dropped.
        intruder.send_to(&packet(0, 3, 2, 2, &[3]), media_addr).await.expect("send");
        call.caller_peer.send_to(&packet(0, 2, 2, 161, &[4]), media_addr).await.expect("send");
        assert_eq!(receive(&call.agent_peer, Duration::from_secs(2)).await.expect("relayed").payload, vec![4]);
        assert!(receive(&call.agent_peer, Duration::from_millis(200)).await.is_none());
        // And media sends to the latched address, not the SDP's: a caller whose SDP named
        // another port is reached where it sends from.
        let nat_peer = socket().await;
        let sdp_port = socket().await;
        let caller = Leg::new(socket().await, negotiated(sdp_port.local_addr().expect("addr")));
        let agent_peer = socket().await;
        let agent = Leg::new(socket().await, negotiated(agent_peer.local_addr().expect("addr")));
        let agent_media = agent.local_addr().expect("addr");
        let media =
            CallMedia::start(caller, Settings { timeout: Duration::from_secs(30), treatment: None, fork: None })
                .expect("starts");
        assert!(media.bridge(agent).await);
        nat_peer.send_to(&packet(0, 9, 1, 1, &[1]), media.caller_addr()).await.expect("send");
        assert!(receive(&agent_peer, Duration::from_secs(2)).await.is_some());
        agent_peer.send_to(&packet(0, 5, 1, 1, &[5]), agent_media).await.expect("send");
        assert_eq!(
            receive(&nat_peer, Duration::from_secs(2)).await.expect("sent to the latched address").payload,
            vec![5]
        );
        assert!(receive(&sdp_port, Duration::from_millis(200)).await.is_none());
    }

    #[tokio::test]
    async fn unknown_payload_types_are_dropped_and_events_are_digits() {
        let mut call = bridged(false, Duration::from_secs(30)).await;
        let media_addr = call.media.caller_addr();
        // sipp's DTMF also sends an unoffered type; G.729 (18) was never negotiated.
        for pt in [18u8, 96, 100, 127] {
            call.caller_peer.send_to(&packet(pt, 1, 1, 1, &[1, 2]), media_addr).await.expect("send");
        }
        // RTCP (a receiver report) on the RTP port is not relayed either.
        call.caller_peer.send_to(&[0x80, 201, 0, 1, 0, 0, 0, 1], media_addr).await.expect("send");
        assert!(receive(&call.agent_peer, Duration::from_millis(300)).await.is_none(), "nothing relayed");
        // Digit 5: three packets of one event, relayed as events on the agent's type.
        for (i, end) in [(0u16, false), (1, true), (2, true)] {
            let d = (160 * (i + 1)).to_be_bytes();
            call.caller_peer
                .send_to(&packet(101, 1, 10 + i, 5000, &[5, if end { 0x8A } else { 0x0A }, d[0], d[1]]), media_addr)
                .await
                .expect("send");
            let got = receive(&call.agent_peer, Duration::from_secs(2)).await.expect("event relayed");
            assert_eq!((got.pt, got.payload[0]), (101, 5));
        }
        let event = tokio::time::timeout(Duration::from_secs(2), call.media.event()).await.expect("in time");
        assert_eq!(event, Some(MediaEvent::Digit { side: Side::Caller, digit: '5' }));
    }

    #[tokio::test]
    async fn a_silent_leg_times_out() {
        let mut call = bridged(false, Duration::from_millis(600)).await;
        // The caller keeps talking, the agent says nothing.
        let media_addr = call.media.caller_addr();
        let caller_peer = call.caller_peer;
        let talker = tokio::spawn(async move {
            for i in 0..100u16 {
                let _ = caller_peer.send_to(&packet(0, 1, i, u32::from(i) * 160, &[0; 160]), media_addr).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        let event = tokio::time::timeout(Duration::from_secs(3), call.media.event()).await.expect("in time");
        assert_eq!(event, Some(MediaEvent::Timeout { side: Side::Agent }));
        assert_eq!(call.media.event().await, None, "the media task has ended");
        talker.abort();
        let _ = call.agent_peer;
    }

    #[tokio::test]
    async fn the_recording_fork_gets_every_packet_of_each_party_apart_and_nothing_else() {
        let caller_peer = socket().await;
        let agent_peer = socket().await;
        let intruder = socket().await;
        let caller = Leg::new(socket().await, negotiated(caller_peer.local_addr().expect("addr")));
        let agent = Leg::new(socket().await, negotiated(agent_peer.local_addr().expect("addr")));
        let agent_media = agent.local_addr().expect("addr");
        let (fork, mut sink) = mpsc::channel(1024);
        let settings =
            Settings { timeout: Duration::from_secs(30), treatment: Some(music_on_hold()), fork: Some(fork) };
        let media = CallMedia::start(caller, settings).expect("starts");
        let caller_media = media.caller_addr();
        assert!(media.bridge(agent).await);
        let mut sent = (Vec::new(), Vec::new());
        for i in 0..50u16 {
            let from_caller = vec![(i % 251) as u8; 160];
            let from_agent = vec![(i % 241) as u8 ^ 0xAA; 160];
            caller_peer
                .send_to(&packet(0, 0xC, 1000 + i, 160 * u32::from(i), &from_caller), caller_media)
                .await
                .expect("send");
            agent_peer
                .send_to(&packet(0, 0xA, 7000 + i, 80_000 + 160 * u32::from(i), &from_agent), agent_media)
                .await
                .expect("send");
            sent.0.push((1000 + i, 160 * u32::from(i), from_caller));
            sent.1.push((7000 + i, 80_000 + 160 * u32::from(i), from_agent));
            if i % 10 == 0 {
                // Not audio of a party: an event, an unknown type, another source.
                caller_peer
                    .send_to(&packet(101, 0xC, 5000 + i, 1, &[1, 0x0A, 0, 160]), caller_media)
                    .await
                    .expect("send");
                caller_peer.send_to(&packet(18, 0xC, 6000 + i, 1, &[9; 20]), caller_media).await.expect("send");
                intruder.send_to(&packet(0, 0xD, 1, 1, &[3; 160]), caller_media).await.expect("send");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let mut got = (Vec::new(), Vec::new());
        while got.0.len() + got.1.len() < 100 {
            let f =
                tokio::time::timeout(Duration::from_secs(2), sink.recv()).await.expect("in time").expect("fork open");
            assert_eq!(f.codec, Codec::Pcmu);
            let entry = (f.sequence, f.timestamp, f.payload);
            match f.side {
                Side::Caller => got.0.push(entry),
                Side::Agent => got.1.push(entry),
            }
        }
        assert_eq!(got.0, sent.0, "the caller's audio, complete and in order");
        assert_eq!(got.1, sent.1, "the agent's audio, complete and in order");
        assert!(tokio::time::timeout(Duration::from_millis(200), sink.recv()).await.is_err(), "nothing else");
    }

    #[tokio::test]
    async fn on_hold_the_caller_hears_music_the_agent_silence_and_nothing_is_relayed_or_forked() {
        let caller_peer = socket().await;
        let agent_peer = socket().await;
        let caller = Leg::new(socket().await, negotiated(caller_peer.local_addr().expect("addr")));
        let agent = Leg::new(socket().await, negotiated(agent_peer.local_addr().expect("addr")));
        let agent_media = agent.local_addr().expect("addr");
        let (fork, mut sink) = mpsc::channel(1024);
        let settings =
            Settings { timeout: Duration::from_millis(800), treatment: Some(music_on_hold()), fork: Some(fork) };
        let media = CallMedia::start(caller, settings).expect("starts");
        let caller_media = media.caller_addr();
        assert!(media.bridge(agent).await);
        caller_peer.send_to(&packet(0, 0xC, 1, 160, &[1; 160]), caller_media).await.expect("send");
        assert_eq!(receive_payload(&agent_peer, &[1; 160]).await.expect("bridged").payload, vec![1; 160]);
        assert!(tokio::time::timeout(Duration::from_secs(1), sink.recv()).await.expect("forked").is_some());

        assert!(media.hold(true).await);
        // Held: the parties' packets go nowhere (digits are still read).
        let mut music = Vec::new();
        let mut agent_heard = Vec::new();
        for i in 0..30u16 {
            caller_peer
                .send_to(&packet(0, 0xC, 2 + i, 320 + 160 * u32::from(i), &[2; 160]), caller_media)
                .await
                .expect("send");
            agent_peer
                .send_to(&packet(0, 0xA, 2 + i, 320 + 160 * u32::from(i), &[3; 160]), agent_media)
                .await
                .expect("send");
            if let Some(got) = receive(&caller_peer, Duration::from_millis(100)).await {
                assert_ne!(got.payload, vec![3; 160], "the caller does not hear the agent on hold");
                music.extend(got.payload.iter().map(|u| f64::from(ulaw_decode(*u))));
            }
            if let Some(got) = receive(&agent_peer, Duration::from_millis(100)).await {
                assert_ne!(got.payload, vec![2; 160], "the agent does not hear the caller on hold");
                agent_heard.push(got);
            }
        }
        assert!(music.len() >= FRAME_SAMPLES * 10, "the caller hears the treatment on hold");
        let note = &music[..FRAME_SAMPLES * 10];
        let strongest = MUSIC_NOTES_HZ.iter().map(|f| goertzel(note, *f)).fold(0.0, f64::max);
        assert!(strongest > 10.0 * goertzel(note, 1000.0), "music, not a party");
        assert!(agent_heard.len() >= 10, "the agent gets a stream on hold");
        assert!(agent_heard.iter().all(|g| g.payload == vec![0xFF; FRAME_SAMPLES]), "µ-law silence");
        // Nothing of the hold reaches the recording.
        while let Ok(f) = sink.try_recv() {
            assert!(f.payload != vec![2; 160] && f.payload != vec![3; 160], "nothing forked on hold");
        }
        // A phone that holds with `inactive` sends nothing and is not timed out meanwhile.
        let mut inactive = negotiated(agent_peer.local_addr().expect("addr"));
        inactive.direction = Direction::Inactive;
        assert!(media.renegotiate(Side::Agent, inactive).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
        while receive(&agent_peer, Duration::from_millis(50)).await.is_some() {}
        for i in 0..60u16 {
            // Only the caller keeps sending, for longer than the timeout.
            caller_peer
                .send_to(&packet(0, 0xC, 40 + i, 7000 + 160 * u32::from(i), &[4; 160]), caller_media)
                .await
                .expect("send");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(receive(&agent_peer, Duration::from_millis(100)).await.is_none(), "nothing sent to an inactive phone");

        // Resumed (the phone sendrecv again): relayed and forked again.
        assert!(media.renegotiate(Side::Agent, negotiated(agent_peer.local_addr().expect("addr"))).await);
        assert!(media.hold(false).await);
        agent_peer.send_to(&packet(0, 0xA, 500, 99_000, &[5; 160]), agent_media).await.expect("send");
        assert_eq!(receive_payload(&caller_peer, &[5; 160]).await.expect("bridged again").payload, vec![5; 160]);
        caller_peer.send_to(&packet(0, 0xC, 501, 99_000, &[6; 160]), caller_media).await.expect("send");
        assert_eq!(receive_payload(&agent_peer, &[6; 160]).await.expect("bridged again").payload, vec![6; 160]);
        let mut forked_again = false;
        while let Ok(Some(f)) = tokio::time::timeout(Duration::from_millis(300), sink.recv()).await {
            forked_again |= f.payload == vec![5; 160] || f.payload == vec![6; 160];
        }
        assert!(forked_again, "the recording gets the parties again");
        let mut media = media;
        assert!(
            tokio::time::timeout(Duration::from_millis(50), media.event()).await.is_err(),
            "no timeout while the inactive phone was held"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        /// Random datagrams and mutated valid packets into a leg: dropped or relayed, never a
        /// panic, and what is relayed is RTP of a negotiated type with media's SSRC.
        #[test]
        fn random_and_mutated_datagrams_never_panic(
            datagrams in proptest::collection::vec(
                prop_oneof![
                    proptest::collection::vec(any::<u8>(), 0..300),
                    (any::<u8>(), any::<u16>(), any::<u32>(), proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4)).prop_map(|(pt, seq, ts, edits)| {
                        let mut p = packet(pt & 0x7F, 77, seq, ts, &[1; 20]);
                        for (at, b) in edits { let n = p.len(); p[at % n] = b; }
                        p
                    }),
                ],
                1..20,
            )
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async {
                let (tx, _rx) = mpsc::channel(64);
                let mut out = Outputs { events: tx, fork: None, fork_dropped: 0, held: false };
                let caller_peer = socket().await;
                let agent_peer = socket().await;
                let mut caller = Leg::new(socket().await, negotiated(caller_peer.local_addr().expect("addr")));
                let mut agent = Leg::new(socket().await, negotiated(agent_peer.local_addr().expect("addr")));
                let from = caller_peer.local_addr().expect("addr");
                for mut d in datagrams {
                    let relayed_before = receive(&agent_peer, Duration::from_millis(0)).await;
                    prop_assert!(relayed_before.is_none());
                    let dropped = forward(&mut caller, Some(&mut agent), Side::Caller, from, &mut d, &mut out).await;
                    if dropped.is_none() {
                        if let Some(got) = receive(&agent_peer, Duration::from_millis(200)).await {
                            prop_assert!(got.pt == 0 || got.pt == 101);
                            prop_assert_eq!(got.ssrc, agent.out.ssrc);
                        }
                    }
                }
                Ok(())
            })?;
        }
    }
}

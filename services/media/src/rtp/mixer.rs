//! The conference mixer: where a call has more than two parties (a consult between two
//! agents, a three-party conference, a supervisor listening, whispering or barging in),
//! their legs leave the two-party relay ([`super::relay`], which never decodes) and join a
//! mixer task instead. Only here is relayed audio decoded.
//!
//! - every 20 ms each participant's buffered audio (G.711 decoded to 16-bit linear, whatever
//!   its packet size: 20 or 30 ms packets both fill a per-participant FIFO) gives one frame
//!   of 160 samples, once it has a whole one (silence until then: a late packet adds a
//!   frame of delay rather than a gap every time);
//! - each participant hears the **sum of the others it may hear, never itself**, summed in
//!   32 bits and **saturated** to 16 bits (clipping is a clamp, never a wrap-around);
//! - whom a participant is heard by is its [`Audience`]: everyone (a conference, a barge),
//!   nobody (a supervisor listening) or only some (a whisper: the agent only);
//! - the frame is encoded in each listener's own codec (µ-law or A-law: the legs of one
//!   conference may differ) and sent as that leg's one stream (its SSRC, sequence numbers
//!   and timestamps continuing from the relay's, the marker bit at the switch);
//! - a participant's FIFO holds at most [`MAX_BUFFERED`] samples: a peer sending faster
//!   than the mixer's clock loses its oldest audio instead of adding delay;
//! - on each leg the relay's checks hold (latching, only the negotiated payload types);
//!   telephone events are dropped here (digits in a conference are not read).
//!
//! [`Mix`] is the pure part (frames in, frames out, no clock or socket); [`Conference`] is
//! the task that reads the legs' sockets and runs it on a 20 ms timer.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::task::Poll;
use std::time::Duration;

use rtp_types::{RtpPacket, RtpPacketBuilder};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};

use super::g711;
use super::relay::{Leg, Payload, Source};
use super::{Codec, FRAME_SAMPLES};

/// A participant of a mix, as its owner names it.
pub type PartId = u32;

/// The most samples buffered per participant (60 ms).
pub const MAX_BUFFERED: usize = 3 * FRAME_SAMPLES;

/// The most participants of one mix.
pub const MAX_PARTICIPANTS: usize = 8;

/// Who hears a participant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    /// Everyone else in the mix.
    Everyone,
    /// No one (a supervisor listening).
    Nobody,
    /// These participants only (a supervisor whispering to the agent).
    Only(Vec<PartId>),
}

impl Audience {
    fn includes(&self, listener: PartId) -> bool {
        match self {
            Audience::Everyone => true,
            Audience::Nobody => false,
            Audience::Only(ids) => ids.contains(&listener),
        }
    }
}

#[derive(Debug)]
struct Part {
    id: PartId,
    codec: Codec,
    audience: Audience,
    fifo: VecDeque<i16>,
}

/// The pure mixer: participants' audio in, each participant's mixed frame out.
#[derive(Debug, Default)]
pub struct Mix {
    parts: Vec<Part>,
    /// Samples dropped because a participant's FIFO was full.
    pub overflowed: u64,
}

/// Why a participant could not join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinError {
    AlreadyIn,
    Full,
}

impl Mix {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.parts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    pub fn contains(&self, id: PartId) -> bool {
        self.parts.iter().any(|p| p.id == id)
    }

    /// Adds participant `id` speaking and hearing `codec`, heard by `audience`.
    pub fn join(&mut self, id: PartId, codec: Codec, audience: Audience) -> Result<(), JoinError> {
        if self.contains(id) {
            return Err(JoinError::AlreadyIn);
        }
        if self.parts.len() >= MAX_PARTICIPANTS {
            return Err(JoinError::Full);
        }
        self.parts.push(Part { id, codec, audience, fifo: VecDeque::with_capacity(MAX_BUFFERED) });
        Ok(())
    }

    /// Removes participant `id`; `false` if it was not in.
    pub fn leave(&mut self, id: PartId) -> bool {
        let before = self.parts.len();
        self.parts.retain(|p| p.id != id);
        self.parts.len() != before
    }

    /// Changes who hears participant `id`; `false` if it is not in.
    pub fn set_audience(&mut self, id: PartId, audience: Audience) -> bool {
        match self.parts.iter_mut().find(|p| p.id == id) {
            Some(p) => {
                p.audience = audience;
                true
            }
            None => false,
        }
    }

    /// Audio participant `id` sent: a G.711 payload in its codec, any length. Audio of a
    /// participant not in the mix is dropped.
    pub fn push(&mut self, id: PartId, payload: &[u8]) {
        let Some(p) = self.parts.iter_mut().find(|p| p.id == id) else { return };
        g711::decode_into(p.codec, payload, &mut p.fifo);
        let excess = p.fifo.len().saturating_sub(MAX_BUFFERED);
        if excess > 0 {
            p.fifo.drain(..excess);
            self.overflowed += excess as u64;
        }
    }

    /// One 20 ms frame per participant: what it hears, in its codec.
    pub fn tick(&mut self) -> Vec<(PartId, Vec<u8>)> {
        let frames: Vec<[i16; FRAME_SAMPLES]> = self
            .parts
            .iter_mut()
            .map(|p| {
                // Only a whole frame is taken: a part of one waits for the rest, so a packet
                // arriving just after a tick adds a frame of delay instead of a gap each time.
                let mut frame = [0i16; FRAME_SAMPLES];
                if p.fifo.len() >= FRAME_SAMPLES {
                    for (slot, s) in frame.iter_mut().zip(p.fifo.drain(..FRAME_SAMPLES)) {
                        *slot = s;
                    }
                }
                frame
            })
            .collect();
        let inputs: Vec<(PartId, &Audience, [i16; FRAME_SAMPLES])> =
            self.parts.iter().zip(frames).map(|(p, f)| (p.id, &p.audience, f)).collect();
        mix(&inputs)
            .into_iter()
            .zip(self.parts.iter())
            .map(|((id, frame), p)| (id, g711::encode(p.codec, &frame)))
            .collect()
    }
}

/// What each participant hears: the sum of the frames of the others whose audience includes
/// it, never its own, saturated to 16 bits. In the order of `inputs`.
pub fn mix(inputs: &[(PartId, &Audience, [i16; FRAME_SAMPLES])]) -> Vec<(PartId, [i16; FRAME_SAMPLES])> {
    inputs
        .iter()
        .map(|(listener, _, _)| {
            let mut sum = [0i32; FRAME_SAMPLES];
            for (speaker, audience, frame) in inputs {
                if speaker == listener || !audience.includes(*listener) {
                    continue;
                }
                for (acc, s) in sum.iter_mut().zip(frame.iter()) {
                    *acc += i32::from(*s);
                }
            }
            let mut out = [0i16; FRAME_SAMPLES];
            for (o, s) in out.iter_mut().zip(sum.iter()) {
                *o = (*s).clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16;
            }
            (*listener, out)
        })
        .collect()
}

/// What a conference reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConferenceEvent {
    /// No packet from participant `id` for longer than the timeout (it stays in the mix).
    Silent { id: PartId },
}

enum Command {
    Join { id: PartId, leg: Box<Leg>, audience: Audience, done: oneshot::Sender<Result<(), Box<Leg>>> },
    Leave { id: PartId, reply: oneshot::Sender<Option<Box<Leg>>> },
    Audience { id: PartId, audience: Audience },
}

/// The handle of a mixer task: dropping it stops the task (the sockets of the legs still in
/// it close).
#[derive(Debug)]
pub struct Conference {
    commands: mpsc::Sender<Command>,
    events: mpsc::Receiver<ConferenceEvent>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Join { id, .. } => write!(f, "Join({id})"),
            Command::Leave { id, .. } => write!(f, "Leave({id})"),
            Command::Audience { id, audience } => write!(f, "Audience({id}, {audience:?})"),
        }
    }
}

impl Conference {
    /// Starts an empty mixer; a participant silent for `timeout` is reported.
    pub fn start(timeout: Duration) -> Self {
        let (commands, rx) = mpsc::channel(8);
        let (events_tx, events) = mpsc::channel(16);
        tokio::spawn(run(rx, events_tx, timeout));
        Self { commands, events }
    }

    /// Adds `leg` as participant `id`, heard by `audience`. The leg is handed back if it
    /// cannot join (already in, full, the task gone).
    pub async fn join(&self, id: PartId, leg: Box<Leg>, audience: Audience) -> Result<(), Box<Leg>> {
        let (done, rx) = oneshot::channel();
        if let Err(mpsc::error::SendError(c)) = self.commands.send(Command::Join { id, leg, audience, done }).await {
            return match c {
                Command::Join { leg, .. } => Err(leg),
                _ => Ok(()),
            };
        }
        rx.await.unwrap_or(Ok(()))
    }

    /// Takes participant `id` out and hands its leg back.
    pub async fn leave(&self, id: PartId) -> Option<Box<Leg>> {
        let (reply, rx) = oneshot::channel();
        self.commands.send(Command::Leave { id, reply }).await.ok()?;
        rx.await.ok().flatten()
    }

    /// Changes who hears participant `id`.
    pub async fn set_audience(&self, id: PartId, audience: Audience) -> bool {
        self.commands.send(Command::Audience { id, audience }).await.is_ok()
    }

    /// The next event; `None` once the task has ended.
    pub async fn event(&mut self) -> Option<ConferenceEvent> {
        self.events.recv().await
    }
}

const MAX_DATAGRAM: usize = 2048;

/// The next datagram on any of `legs`, with the index of its leg; never with none. Starts
/// polling at `start` so no leg starves the others.
async fn recv_any(
    legs: &[(PartId, Box<Leg>)],
    buf: &mut [u8],
    start: usize,
) -> (usize, std::io::Result<(usize, SocketAddr)>) {
    if legs.is_empty() {
        return std::future::pending().await;
    }
    std::future::poll_fn(|cx| {
        let n = legs.len();
        for k in 0..n {
            let i = (start + k) % n;
            let mut read = tokio::io::ReadBuf::new(buf);
            if let Poll::Ready(r) = legs[i].1.socket.poll_recv_from(cx, &mut read) {
                let len = read.filled().len();
                return Poll::Ready((i, r.map(|from| (len, from))));
            }
        }
        Poll::Pending
    })
    .await
}

async fn run(mut commands: mpsc::Receiver<Command>, events: mpsc::Sender<ConferenceEvent>, timeout: Duration) {
    let mut mix = Mix::new();
    let mut legs: Vec<(PartId, Box<Leg>)> = Vec::new();
    let mut silent_reported: Vec<PartId> = Vec::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut frames = tokio::time::interval(Duration::from_millis(20));
    frames.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut check = tokio::time::interval(Duration::from_millis(250));
    check.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut frame: u64 = 0;
    let mut start = 0usize;
    let mut packet = Vec::with_capacity(12 + FRAME_SAMPLES);
    loop {
        tokio::select! {
            (i, r) = recv_any(&legs, &mut buf, start) => {
                start = start.wrapping_add(1);
                let Ok((n, from)) = r else { continue };
                let (id, leg) = &mut legs[i];
                if let Ok(Payload::Audio) = leg.accept(from, &buf[..n]) {
                    if let Ok(p) = RtpPacket::parse(&buf[..n]) {
                        mix.push(*id, p.payload());
                    }
                }
            }
            _ = frames.tick(), if !legs.is_empty() => {
                let now = Instant::now();
                for (id, payload) in mix.tick() {
                    let Some((_, leg)) = legs.iter_mut().find(|(l, _)| *l == id) else { continue };
                    let Some(to) = leg.destination().filter(|_| leg.sends()) else { continue };
                    let (seq, ts, marker) = leg.out.map(Source::Mixer, frame as u16, (frame as u32).wrapping_mul(FRAME_SAMPLES as u32), now);
                    packet.clear();
                    let built = RtpPacketBuilder::<&[u8], &[u8]>::new()
                        .payload_type(leg.negotiated.payload_type)
                        .sequence_number(seq)
                        .timestamp(ts)
                        .ssrc(leg.out.ssrc)
                        .marker_bit(marker)
                        .payload(payload.as_slice())
                        .write_into_vec(&mut packet);
                    if built.is_ok() {
                        let _ = leg.socket.send_to(&packet, to).await;
                    }
                }
                frame += 1;
            }
            _ = check.tick() => {
                let now = Instant::now();
                for (id, leg) in &legs {
                    let silent = now.saturating_duration_since(leg.last_heard) > timeout;
                    if silent && !silent_reported.contains(id) {
                        silent_reported.push(*id);
                        let _ = events.try_send(ConferenceEvent::Silent { id: *id });
                    } else if !silent {
                        silent_reported.retain(|s| s != id);
                    }
                }
            }
            c = commands.recv() => match c {
                None => {
                    if mix.overflowed > 0 {
                        tracing::debug!(samples = mix.overflowed, "conference: audio dropped from full buffers");
                    }
                    return;
                }
                Some(Command::Join { id, mut leg, audience, done }) => {
                    match mix.join(id, leg.negotiated.codec, audience) {
                        Ok(()) => {
                            leg.last_heard = Instant::now();
                            legs.push((id, leg));
                            let _ = done.send(Ok(()));
                        }
                        Err(_) => {
                            let _ = done.send(Err(leg));
                        }
                    }
                }
                Some(Command::Leave { id, reply }) => {
                    mix.leave(id);
                    silent_reported.retain(|s| *s != id);
                    let leg = legs.iter().position(|(l, _)| *l == id).map(|at| legs.remove(at).1);
                    let _ = reply.send(leg);
                }
                Some(Command::Audience { id, audience }) => {
                    mix.set_audience(id, audience);
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtp::g711::tests::goertzel;
    use crate::rtp::g711::{alaw_to_linear, ulaw_to_linear};
    use crate::rtp::sdp::{Direction, Negotiated};
    use proptest::prelude::*;
    use tokio::net::UdpSocket;

    fn tone(hz: f64, amplitude: f64, frame: usize) -> [i16; FRAME_SAMPLES] {
        let mut out = [0i16; FRAME_SAMPLES];
        for (i, s) in out.iter_mut().enumerate() {
            let t = (frame * FRAME_SAMPLES + i) as f64 / 8000.0;
            *s = (amplitude * (std::f64::consts::TAU * hz * t).sin()) as i16;
        }
        out
    }

    fn constant(v: i16) -> [i16; FRAME_SAMPLES] {
        [v; FRAME_SAMPLES]
    }

    #[test]
    fn each_hears_the_sum_of_the_others_never_itself() {
        let all = Audience::Everyone;
        let out = mix(&[(1, &all, constant(100)), (2, &all, constant(20)), (3, &all, constant(-3))]);
        assert_eq!(out[0], (1, constant(17)));
        assert_eq!(out[1], (2, constant(97)));
        assert_eq!(out[2], (3, constant(120)));
    }

    #[test]
    fn sums_past_sixteen_bits_saturate_instead_of_wrapping() {
        let all = Audience::Everyone;
        let out = mix(&[(1, &all, constant(30_000)), (2, &all, constant(30_000)), (3, &all, constant(0))]);
        assert_eq!(out[2].1, constant(i16::MAX), "clipped high");
        let out = mix(&[(1, &all, constant(-30_000)), (2, &all, constant(-30_000)), (3, &all, constant(0))]);
        assert_eq!(out[2].1, constant(i16::MIN), "clipped low");
        assert_eq!(out[0].1, constant(-30_000), "one other: as it was");
    }

    #[test]
    fn a_whisper_is_heard_by_its_audience_only_and_a_listener_by_no_one() {
        // 1 customer, 2 agent, 3 supervisor whispering to the agent, 4 a listening supervisor.
        let (all, whisper, silent) = (Audience::Everyone, Audience::Only(vec![2]), Audience::Nobody);
        let out = mix(&[
            (1, &all, constant(1)),
            (2, &all, constant(10)),
            (3, &whisper, constant(100)),
            (4, &silent, constant(1000)),
        ]);
        assert_eq!(out[0].1, constant(10), "the customer hears the agent only");
        assert_eq!(out[1].1, constant(101), "the agent hears the customer and the whisper");
        assert_eq!(out[2].1, constant(11), "the whisperer hears both parties");
        assert_eq!(out[3].1, constant(11), "the listener hears the parties, not a whisper meant for the agent");
    }

    #[test]
    fn a_mix_of_codecs_each_encoded_for_its_listener_with_the_tones_of_the_others() {
        let mut m = Mix::new();
        m.join(1, Codec::Pcmu, Audience::Everyone).expect("joins");
        m.join(2, Codec::Pcma, Audience::Everyone).expect("joins");
        m.join(3, Codec::Pcmu, Audience::Everyone).expect("joins");
        assert_eq!(m.join(3, Codec::Pcmu, Audience::Everyone), Err(JoinError::AlreadyIn));
        let mut heard: [Vec<f64>; 3] = Default::default();
        for f in 0..10 {
            m.push(1, &g711::encode(Codec::Pcmu, &tone(440.0, 6000.0, f)));
            m.push(2, &g711::encode(Codec::Pcma, &tone(1000.0, 6000.0, f)));
            m.push(3, &g711::encode(Codec::Pcmu, &tone(2000.0, 6000.0, f)));
            for (id, payload) in m.tick() {
                assert_eq!(payload.len(), FRAME_SAMPLES);
                let decode = if id == 2 { alaw_to_linear } else { ulaw_to_linear };
                heard[id as usize - 1].extend(payload.iter().map(|b| f64::from(decode(*b))));
            }
        }
        let hears = |who: usize, hz: f64| goertzel(&heard[who], hz);
        for (who, own, others) in
            [(0, 440.0, [1000.0, 2000.0]), (1, 1000.0, [440.0, 2000.0]), (2, 2000.0, [440.0, 1000.0])]
        {
            for o in others {
                assert!(hears(who, o) > 100.0 * hears(who, own).max(1.0), "{who} hears {o} Hz, not itself ({own} Hz)");
            }
        }
    }

    #[test]
    fn thirty_millisecond_packets_are_cut_into_twenty_millisecond_frames_and_a_flood_is_capped() {
        let mut m = Mix::new();
        m.join(1, Codec::Pcmu, Audience::Everyone).expect("joins");
        m.join(2, Codec::Pcmu, Audience::Everyone).expect("joins");
        // Two 30 ms packets of a constant: three full 20 ms frames for the other.
        m.push(1, &[g711::ulaw(1000); 240]);
        m.push(1, &[g711::ulaw(1000); 240]);
        for _ in 0..3 {
            let out = m.tick();
            assert!(out[1].1.iter().all(|b| *b == g711::ulaw(1000)));
        }
        let out = m.tick();
        assert!(out[1].1.iter().all(|b| *b == g711::ulaw(0)), "silence once drained");
        // Half a frame waits for the rest.
        m.push(1, &[g711::ulaw(1000); 80]);
        assert!(m.tick()[1].1.iter().all(|b| *b == g711::ulaw(0)), "not half a frame");
        m.push(1, &[g711::ulaw(1000); 80]);
        assert!(m.tick()[1].1.iter().all(|b| *b == g711::ulaw(1000)), "then the whole one");
        // A peer sending far more than real time keeps at most MAX_BUFFERED samples.
        for _ in 0..10 {
            m.push(2, &[g711::ulaw(5); 160]);
        }
        assert_eq!(m.overflowed, (10 * 160 - MAX_BUFFERED) as u64);
        assert!(m.leave(2));
        assert!(!m.leave(2));
        m.push(2, &[0; 160]);
        assert_eq!(m.tick().len(), 1);
    }

    proptest! {
        /// Random participants, codecs, audiences and payloads (any length, any bytes):
        /// never a panic; every participant gets one frame per tick, and it never holds its
        /// own audio when it is alone with silence.
        #[test]
        fn random_frames_never_panic(
            parts in proptest::collection::vec((0u32..6, any::<bool>(), 0u8..3), 0..8),
            pushes in proptest::collection::vec((0u32..8, proptest::collection::vec(any::<u8>(), 0..700)), 0..40),
            ticks in 1usize..6,
        ) {
            let mut m = Mix::new();
            for (id, alaw, aud) in &parts {
                let codec = if *alaw { Codec::Pcma } else { Codec::Pcmu };
                let audience = match aud { 0 => Audience::Everyone, 1 => Audience::Nobody, _ => Audience::Only(vec![id ^ 1]) };
                let _ = m.join(*id, codec, audience);
            }
            for (id, payload) in &pushes {
                m.push(*id, payload);
            }
            for _ in 0..ticks {
                let out = m.tick();
                prop_assert_eq!(out.len(), m.len());
                for (_, frame) in out {
                    prop_assert_eq!(frame.len(), FRAME_SAMPLES);
                }
            }
            if m.len() == 1 {
                let out = m.tick();
                prop_assert!(out[0].1.iter().all(|b| ulaw_to_linear(*b) == 0 || alaw_to_linear(*b).abs() <= 8));
            }
        }
    }

    fn negotiated(codec: Codec, remote: SocketAddr) -> Negotiated {
        Negotiated {
            codec,
            payload_type: codec.static_payload_type(),
            telephone_event: Some(101),
            remote,
            direction: Direction::SendRecv,
        }
    }

    async fn socket() -> UdpSocket {
        UdpSocket::bind("127.0.0.1:0").await.expect("bind")
    }

    fn packet(pt: u8, seq: u16, payload: &[u8]) -> Vec<u8> {
        RtpPacketBuilder::<&[u8], &[u8]>::new()
            .payload_type(pt)
            .ssrc(0x1234)
            .sequence_number(seq)
            .timestamp(u32::from(seq) * 160)
            .payload(payload)
            .write_vec()
            .expect("valid packet")
    }

    /// What `peer` hears from now: the next ten frames.
    async fn settled(peer: &UdpSocket, codec: Codec) -> Vec<Vec<i16>> {
        let mut frames = Vec::new();
        let mut buf = [0u8; 2048];
        // What was queued before now is stale.
        while peer.try_recv_from(&mut buf).is_ok() {}
        for _ in 0..10 {
            let (n, _) = tokio::time::timeout(Duration::from_secs(2), peer.recv_from(&mut buf))
                .await
                .expect("a frame every 20 ms")
                .expect("recv");
            let p = RtpPacket::parse(&buf[..n]).expect("RTP");
            assert_eq!(p.payload_type(), codec.static_payload_type());
            let frame = p
                .payload()
                .iter()
                .map(|b| match codec {
                    Codec::Pcmu => ulaw_to_linear(*b),
                    Codec::Pcma => alaw_to_linear(*b),
                })
                .collect();
            frames.push(frame);
        }
        frames
    }

    /// Each of `senders` (peer, codec, constant, where media listens) sends its constant
    /// every 20 ms, `rounds` times.
    async fn feed(senders: &[(&UdpSocket, Codec, i16, SocketAddr)], rounds: u16) {
        for seq in 0..rounds {
            for (peer, codec, value, to) in senders {
                let p = packet(codec.static_payload_type(), seq, &g711::encode(*codec, &[*value; 160]));
                let _ = peer.send_to(&p, to).await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Most of the frames (a loaded machine may delay a packet past a tick) are `want`.
    fn near(frames: &[Vec<i16>], want: i32) -> bool {
        let good = frames
            .iter()
            .filter(|f| !f.is_empty() && f.iter().all(|s| (i32::from(*s) - want).abs() <= want / 16 + 40))
            .count();
        good * 2 > frames.len()
    }

    fn first(frames: &[Vec<i16>]) -> Vec<i16> {
        frames.iter().map(|f| f.first().copied().unwrap_or_default()).collect()
    }

    /// Three peers on sockets, each sending a constant through the conference task: each
    /// receives the others' sum in its codec, a listener (audience nobody) is not heard;
    /// one who leaves is handed back and no longer heard.
    #[tokio::test]
    async fn the_task_mixes_real_sockets_and_hands_legs_back() {
        let conf = Conference::start(Duration::from_secs(30));
        let peers = [socket().await, socket().await, socket().await];
        let codecs = [Codec::Pcmu, Codec::Pcma, Codec::Pcmu];
        let values = [1000i16, 2000, 4000];
        let mut media = Vec::new();
        for (i, peer) in peers.iter().enumerate() {
            let leg = Leg::new(socket().await, negotiated(codecs[i], peer.local_addr().expect("addr")));
            media.push(leg.local_addr().expect("addr"));
            let audience = if i == 2 { Audience::Nobody } else { Audience::Everyone };
            conf.join(i as u32, Box::new(leg), audience).await.expect("joins");
        }
        let senders: Vec<_> = (0..3).map(|i| (&peers[i], codecs[i], values[i], media[i])).collect();
        feed(&senders, 10).await;
        let listen = async {
            (
                settled(&peers[0], codecs[0]).await,
                settled(&peers[1], codecs[1]).await,
                settled(&peers[2], codecs[2]).await,
            )
        };
        let ((h0, h1, h2), ()) = tokio::join!(listen, feed(&senders, 60));
        assert!(near(&h0, 2000), "0 hears 1 only (2 listens): {:?}", first(&h0));
        assert!(near(&h1, 1000), "1 hears 0 only: {:?}", first(&h1));
        assert!(near(&h2, 3000), "the listener hears both: {:?}", first(&h2));
        let back = conf.leave(1).await.expect("handed back");
        assert_eq!(back.local_addr().expect("addr"), media[1]);
        assert!(conf.leave(1).await.is_none(), "not in any more");
        let senders = [senders[0], senders[2]];
        let (h2, ()) = tokio::join!(settled(&peers[2], codecs[2]), feed(&senders, 40));
        assert!(near(&h2, 1000), "after 1 left, the listener hears 0 only: {:?}", first(&h2));
    }
}

//! Media as a client of recording (`centralita.recording.v1.RecordingService/IngestCall`):
//! the voice role's recording fork ([`crate::rtp::relay::Forked`]) streamed to recording.
//!
//! - **Which calls**: the tenant's policy decides per call
//!   (`RecordingPolicy::voice_call`: `recording.voice`, limited to `recording.queues`, and
//!   for `all` the `samplePercent` sample by contact id); `none` records nothing; a call
//!   recorded `on_demand` is started by the agent (sessions' `ResumeRecording`: the contact
//!   starts with its recording paused), from that moment on, once the agent's phone is on the
//!   call (the relay's fork is attached then: nothing before is recorded).
//! - **From when**: the moment the call is bridged to the agent whose phone answered
//!   (media time zero, the header's `start_time`): the queue's treatment and the caller
//!   waiting in it are not part of the conversation and are not recorded. It ends with the
//!   call (the relay's fork closes): a `CallEnd` at the call's length.
//! - **What**: each party's G.711 payloads as they arrived, kept apart (caller = customer
//!   leg, agent = agent leg), stamped with their media time by [`Chunker`], the pure core:
//!   a leg's first packet is placed at its arrival time, the following by their RTP
//!   timestamps (so jitter does not move them, and lost packets leave gaps), re-anchored
//!   on arrival time when the timestamps jump (a new source) more than [`REANCHOR_FRAMES`];
//!   consecutive packets are sent as one chunk of up to [`CHUNK_BYTES`].
//! - **A stream that breaks** mid-call (recording restarted, the connection lost) is
//!   replaced, once a second at most (up to [`REOPENS`] times): the rest of the call goes to
//!   a new recording of the same contact whose media time starts at the reopening, in the
//!   current PCI pause state; recording finishes the broken one from its spool
//!   (`INTERRUPTED`). What falls between the two is lost (at most the buffered chunks and
//!   about a second).
//! - **Never disturbing the call**: the relay hands packets over without waiting (a full
//!   fork drops them, see the relay); this task hands chunks to the gRPC stream through a
//!   bounded buffer of [`STREAM_BUFFER`] messages without waiting either: a chunk that does
//!   not fit, or finds the stream gone (recording unreachable, or it refused the call), is
//!   dropped and counted (`centralita_media_recording_fork_chunks{outcome="dropped"}`) and
//!   logged once per call. The call goes on whatever recording does.
//! - **Whose token**: media's `channel` token of the call's own tenant, from the same cache
//!   as its calls to sessions ([`Sessions::request`]); recording refuses a header of any
//!   other tenant.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use centralita_platform::tenant::TenantId;
use centralita_platform::tls::{lazy_channel, Tls};
use centralita_proto::recording::v1 as pb;
use pb::ingest_call_request::Event;
use pb::recording_service_client::RecordingServiceClient;
use tokio::sync::{mpsc, oneshot, watch};
use tonic::transport::Channel;

use crate::error::Error;
use crate::metrics::Metrics;
use crate::rtp::relay::{Forked, Side};
use crate::rtp::{Codec, CLOCK_RATE};
use crate::sessions::Sessions;

/// Bytes (samples) of one leg sent as one chunk at most: half a second.
pub const CHUNK_BYTES: usize = CLOCK_RATE as usize / 2;
/// A leg whose timestamps disagree with arrival by more than this is re-anchored: two
/// seconds (recording's jitter window is one).
pub const REANCHOR_FRAMES: u64 = 2 * CLOCK_RATE as u64;
/// Messages waiting for the IngestCall stream at most: 64 half-second chunks, about 16 s of
/// both legs.
pub const STREAM_BUFFER: usize = 64;
/// Packets waiting in a call's fork for this task at most (both legs, 20 ms each: 5 s).
pub const FORK_BUFFER: usize = 512;
/// How long the call's end and recording's answer are waited for, after the call.
const END_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Media time as a protobuf duration.
fn duration(frames: u64) -> prost_types::Duration {
    let rate = u64::from(CLOCK_RATE);
    prost_types::Duration { seconds: (frames / rate) as i64, nanos: ((frames % rate) * (1_000_000_000 / rate)) as i32 }
}

/// Frames (1/8000 s) in `d`.
pub fn frames(d: Duration) -> u64 {
    (d.as_nanos() * u128::from(CLOCK_RATE) / 1_000_000_000) as u64
}

#[derive(Debug, Default)]
struct LegState {
    /// An RTP timestamp of the leg and the media time it stands for.
    anchor: Option<(u32, u64)>,
    /// Media time of `buf`'s first sample.
    start: u64,
    buf: Vec<u8>,
}

/// The pure core: a call's forked packets in, IngestCall messages out.
#[derive(Debug)]
pub struct Chunker {
    codec: Codec,
    legs: [LegState; 2],
    /// The end of the latest audio placed.
    latest: u64,
    /// Packets not taken: of another codec, empty or oversized, or repeating audio.
    pub ignored: u64,
}

impl Chunker {
    pub fn new(codec: Codec) -> Self {
        Self { codec, legs: Default::default(), latest: 0, ignored: 0 }
    }

    /// The header of the call's IngestCall.
    pub fn header(
        &self,
        tenant: &TenantId,
        contact_id: &str,
        queue: &str,
        agent: &str,
        start: SystemTime,
    ) -> pb::IngestCallRequest {
        let since = start.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        pb::IngestCallRequest {
            event: Some(Event::Header(pb::CallHeader {
                tenant: tenant.to_string(),
                contact_id: contact_id.to_owned(),
                queue: queue.to_owned(),
                agent_ids: vec![agent.to_owned()],
                start_time: Some(prost_types::Timestamp {
                    seconds: since.as_secs() as i64,
                    nanos: since.subsec_nanos() as i32,
                }),
                codec: match self.codec {
                    Codec::Pcmu => pb::AudioCodec::Pcmu,
                    Codec::Pcma => pb::AudioCodec::Pcma,
                } as i32,
            })),
        }
    }

    /// Takes packet `f`, which arrived at media time `at`: returns the chunks it completes.
    pub fn push(&mut self, f: Forked, at: u64) -> Vec<pb::IngestCallRequest> {
        if f.codec != self.codec || f.payload.is_empty() || f.payload.len() > CHUNK_BYTES {
            self.ignored += 1;
            return Vec::new();
        }
        let i = side_index(f.side);
        let leg = &mut self.legs[i];
        let predicted = leg.anchor.map(|(ts, off)| off as i64 + i64::from(f.timestamp.wrapping_sub(ts) as i32));
        let offset = match predicted {
            Some(p) if p >= 0 && p.abs_diff(at as i64) <= REANCHOR_FRAMES => p as u64,
            _ => {
                leg.anchor = Some((f.timestamp, at));
                at
            }
        };
        let end = leg.start + leg.buf.len() as u64;
        let mut out = Vec::new();
        if !leg.buf.is_empty() {
            if offset >= leg.start && offset < end {
                // A repeated (or reordered into the buffered chunk) packet: its time is taken.
                self.ignored += 1;
                return out;
            }
            if offset != end {
                out.extend(flush(f.side, leg));
            }
        }
        if leg.buf.is_empty() {
            leg.start = offset;
        }
        leg.buf.extend_from_slice(&f.payload);
        self.latest = self.latest.max(offset + f.payload.len() as u64);
        if leg.buf.len() >= CHUNK_BYTES {
            out.extend(flush(f.side, leg));
        }
        out
    }

    /// PCI pause (`pause`) or resume at media time `at`: what is buffered goes first, then
    /// the marker (never before the latest audio placed).
    pub fn pause(&mut self, pause: bool, at: u64) -> Vec<pb::IngestCallRequest> {
        let mut out = Vec::new();
        for side in [Side::Caller, Side::Agent] {
            let leg = &mut self.legs[side_index(side)];
            out.extend(flush(side, leg));
            // Audio after the span is placed afresh (its timestamps jumped meanwhile).
            leg.anchor = None;
        }
        let offset = Some(duration(at.max(self.latest)));
        out.push(pb::IngestCallRequest {
            event: Some(if pause {
                Event::Pause(pb::RecordingPause { offset })
            } else {
                Event::Resume(pb::RecordingResume { offset })
            }),
        });
        out
    }

    /// The call ended at media time `at`: what is buffered, then the end (never before the
    /// latest audio).
    pub fn finish(&mut self, at: u64) -> Vec<pb::IngestCallRequest> {
        let mut out = Vec::new();
        for side in [Side::Caller, Side::Agent] {
            out.extend(flush(side, &mut self.legs[side_index(side)]));
        }
        out.push(pb::IngestCallRequest {
            event: Some(Event::End(pb::CallEnd { offset: Some(duration(at.max(self.latest))) })),
        });
        out
    }
}

fn side_index(side: Side) -> usize {
    match side {
        Side::Caller => 0,
        Side::Agent => 1,
    }
}

fn flush(side: Side, leg: &mut LegState) -> Option<pb::IngestCallRequest> {
    if leg.buf.is_empty() {
        return None;
    }
    let payload = std::mem::take(&mut leg.buf);
    let start = leg.start;
    leg.start += payload.len() as u64;
    let leg = match side {
        Side::Caller => pb::Leg::Customer,
        Side::Agent => pb::Leg::Agent,
    };
    Some(pb::IngestCallRequest {
        event: Some(Event::Audio(pb::AudioChunk { leg: leg as i32, offset: Some(duration(start)), payload })),
    })
}

/// The call a recording is of.
#[derive(Debug, Clone)]
pub struct Call {
    pub tenant: TenantId,
    /// The contact's id (the `{id}` of `tenants/{tenant}/contacts/{id}`).
    pub contact_id: String,
    pub queue: String,
    pub codec: Codec,
}

impl Call {
    /// The call of contact `contact` (`tenants/{tenant}/contacts/{id}`, as sessions named
    /// it), which must be of `tenant`: the recording is always of the call's own tenant.
    pub fn of(tenant: &TenantId, contact: &str, queue: &str, codec: Codec) -> Result<Self, String> {
        let (of, id) =
            centralita_platform::tenant::parse_contact_name("contact", contact).map_err(|e| e.to_string())?;
        if &of != tenant {
            return Err(format!("contact `{contact}` is not of the call's tenant `{tenant}`"));
        }
        Ok(Self { tenant: tenant.clone(), contact_id: id, queue: queue.to_owned(), codec })
    }
}

/// A call's side of its recording: the fork the relay writes to, the signal that the call
/// is bridged (with the agent's id), and the PCI pause switch (`true`: paused). Dropping
/// them (the call ended) ends the recording.
#[derive(Debug)]
pub struct Fork {
    pub packets: mpsc::Sender<Forked>,
    pub bridged: oneshot::Sender<String>,
    pub paused: watch::Sender<bool>,
}

#[derive(Debug)]
pub struct Recorder {
    client: RecordingServiceClient<Channel>,
    sessions: Arc<Sessions>,
    metrics: Arc<Metrics>,
    /// Recordings still streaming (the drain waits a little for their ends).
    active: watch::Sender<usize>,
}

/// Counts a recording task as active while it lives.
struct Active(watch::Sender<usize>);

impl Drop for Active {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl Recorder {
    /// A client of recording at `endpoint` (`http://host:port`), connected on first use.
    pub fn new(
        endpoint: &str,
        tls: Option<&Arc<Tls>>,
        sessions: Arc<Sessions>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, Error> {
        let channel = lazy_channel(endpoint, tls, |e| e.connect_timeout(CONNECT_TIMEOUT))
            .map_err(|e| Error::Sessions(format!("recording endpoint {e}")))?;
        Ok(Self { client: RecordingServiceClient::new(channel), sessions, metrics, active: watch::channel(0).0 })
    }

    /// Resolves once no recording is streaming (every call's end sent and answered, or
    /// given up).
    pub async fn all_finished(&self) {
        let _ = self.active.subscribe().wait_for(|n| *n == 0).await;
    }

    /// Starts recording `call`: returns the fork to give its media.
    pub fn start(self: &Arc<Self>, call: Call) -> Fork {
        let (packets, fork) = mpsc::channel(FORK_BUFFER);
        let (bridged, bridged_rx) = oneshot::channel();
        let (paused, paused_rx) = watch::channel(false);
        self.active.send_modify(|n| *n += 1);
        let active = Active(self.active.clone());
        let this = self.clone();
        tokio::spawn(async move {
            this.run(call, fork, bridged_rx, paused_rx).await;
            drop(active);
        });
        Fork { packets, bridged, paused }
    }

    async fn run(
        self: Arc<Self>,
        call: Call,
        mut fork: mpsc::Receiver<Forked>,
        mut bridged: oneshot::Receiver<String>,
        mut paused: watch::Receiver<bool>,
    ) {
        // Until the call is bridged the fork carries the caller waiting in the queue: not
        // recorded.
        let agent = loop {
            tokio::select! {
                a = &mut bridged => match a {
                    Ok(agent) => break agent,
                    Err(_) => return,
                },
                p = fork.recv() => if p.is_none() { return },
            }
        };
        let mut stream = self.open(&call, &agent, false);
        tracing::info!(%agent, "recording the call");
        // PCI pause: while paused, the fork's audio is not even passed on (recording keeps
        // the span silent and marked); the switch is read from its current value on.
        let mut is_paused = false;
        let mut switch_open = true;
        // A stream that broke while the call goes on (recording restarted, a connection
        // lost) is replaced by a new recording of the rest of the call, tried at most every
        // REOPEN_EVERY and REOPENS times.
        let mut reopens = 0;
        let mut check = tokio::time::interval(REOPEN_EVERY);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        check.tick().await;
        loop {
            if *paused.borrow_and_update() != is_paused {
                is_paused = !is_paused;
                let at = stream.now();
                for message in stream.chunker.pause(is_paused, at) {
                    stream.sender.send(message);
                }
            }
            tokio::select! {
                packet = fork.recv() => match packet {
                    Some(packet) if !is_paused => {
                        let at = stream.now();
                        for message in stream.chunker.push(packet, at) {
                            stream.sender.send(message);
                        }
                    }
                    Some(_) => {}
                    None => break,
                },
                changed = paused.changed(), if switch_open => if changed.is_err() { switch_open = false },
                _ = check.tick(), if reopens < REOPENS && stream.broken() => {
                    reopens += 1;
                    let broken = std::mem::replace(&mut stream, self.open(&call, &agent, is_paused));
                    self.settle(broken).await;
                    tracing::warn!(attempt = reopens, "the recording stream broke: the rest of the call goes to a new recording");
                }
            }
        }
        self.end(stream).await;
    }

    /// Opens an IngestCall stream for `call` (bridged to `agent`) whose media time starts
    /// now; `paused`: the PCI pause is on, and the recording starts with it.
    fn open<'a>(&'a self, call: &Call, agent: &str, paused: bool) -> Stream<'a> {
        let chunker = Chunker::new(call.codec);
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let header = chunker.header(&call.tenant, &call.contact_id, &call.queue, agent, SystemTime::now());
        let _ = tx.try_send(header);
        let rpc = match self.sessions.request(&call.tenant, tokio_stream::wrappers::ReceiverStream::new(rx)) {
            Ok(request) => {
                let mut client = self.client.clone();
                Some(tokio::spawn(async move { client.ingest_call(request).await }))
            }
            Err(e) => {
                tracing::warn!(error = %e, "no token for recording: the call is not recorded");
                None
            }
        };
        let sender = Sender { tx: rpc.is_some().then_some(tx), metrics: &self.metrics, warned: false, dropped: 0 };
        let mut stream = Stream { start: Instant::now(), chunker, sender, rpc };
        if paused {
            for message in stream.chunker.pause(true, 0) {
                stream.sender.send(message);
            }
        }
        stream
    }

    /// A stream that broke: its answer (an error) is read and counted.
    async fn settle(&self, broken: Stream<'_>) {
        if let Some(rpc) = broken.rpc {
            match rpc.await {
                Ok(Ok(r)) => tracing::info!(recording = %r.into_inner().name, "a recording stream ended early"),
                Ok(Err(status)) => {
                    tracing::warn!(code = ?status.code(), message = status.message(), "recording stream broke")
                }
                Err(e) => tracing::warn!(error = %e, "the recording stream's task failed"),
            }
        }
        self.metrics.recording("failed");
    }

    /// The call is over: the stream's last chunks and end, and recording's answer.
    async fn end(&self, mut stream: Stream<'_>) {
        let at = stream.now();
        let mut last = stream.chunker.finish(at);
        let end = last.pop();
        for message in last {
            stream.sender.send(message);
        }
        let dropped = stream.sender.dropped;
        let tx = stream.sender.tx.take();
        if let (Some(tx), Some(end)) = (tx, end) {
            // The end is worth a short wait (this task is not the call's).
            let _ = tokio::time::timeout(END_TIMEOUT, tx.send(end)).await;
        }
        let Some(rpc) = stream.rpc else {
            self.metrics.recording("failed");
            return;
        };
        match tokio::time::timeout(END_TIMEOUT, rpc).await {
            Ok(Ok(Ok(r))) => {
                let r = r.into_inner();
                self.metrics.recording("complete");
                tracing::info!(recording = %r.name, state = r.state, dropped, ignored = stream.chunker.ignored, "call recorded");
            }
            Ok(Ok(Err(status))) => {
                self.metrics.recording("failed");
                tracing::warn!(code = ?status.code(), message = status.message(), dropped, "recording refused or failed the call's stream");
            }
            Ok(Err(e)) => {
                self.metrics.recording("failed");
                tracing::warn!(error = %e, "the recording stream's task failed");
            }
            Err(_) => {
                self.metrics.recording("failed");
                tracing::warn!("recording did not answer the call's end in time");
            }
        }
    }
}

/// How often a broken recording stream is looked for, and replaced at most.
const REOPEN_EVERY: Duration = Duration::from_secs(1);
/// How many times one call's recording is reopened at most (a recording down for longer
/// leaves the rest of the call unrecorded).
const REOPENS: u32 = 30;

/// One IngestCall stream of a call: its media clock, chunker, sender and RPC.
struct Stream<'a> {
    start: Instant,
    chunker: Chunker,
    sender: Sender<'a>,
    rpc: Option<tokio::task::JoinHandle<Result<tonic::Response<pb::Recording>, tonic::Status>>>,
}

impl Stream<'_> {
    /// Media time of this stream now, in frames.
    fn now(&self) -> u64 {
        frames(self.start.elapsed())
    }

    /// The RPC ended (or its stream's reader is gone) while the call goes on: nothing sent
    /// any more is recorded.
    fn broken(&self) -> bool {
        self.rpc.as_ref().is_some_and(|r| r.is_finished()) || self.sender.tx.as_ref().is_some_and(|tx| tx.is_closed())
    }
}

/// Hands messages to the IngestCall stream without waiting.
struct Sender<'a> {
    tx: Option<mpsc::Sender<pb::IngestCallRequest>>,
    metrics: &'a Metrics,
    warned: bool,
    dropped: u64,
}

impl Sender<'_> {
    fn send(&mut self, message: pb::IngestCallRequest) {
        let result = match &self.tx {
            Some(tx) => tx.try_send(message).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => "recording is behind",
                mpsc::error::TrySendError::Closed(_) => "the recording stream is gone",
            }),
            None => Err("no recording stream"),
        };
        match result {
            Ok(()) => self.metrics.fork_chunk("sent"),
            Err(why) => {
                self.metrics.fork_chunk("dropped");
                self.dropped += 1;
                if !self.warned {
                    self.warned = true;
                    tracing::warn!(why, "recording audio dropped (the call goes on)");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(side: Side, sequence: u16, timestamp: u32, byte: u8) -> Forked {
        Forked { side, codec: Codec::Pcmu, sequence, timestamp, payload: vec![byte; 160] }
    }

    fn audio(m: &pb::IngestCallRequest) -> (pb::Leg, u64, Vec<u8>) {
        let Some(Event::Audio(a)) = &m.event else { panic!("not audio: {m:?}") };
        let o = a.offset.expect("offset");
        let frames = o.seconds as u64 * 8000 + o.nanos as u64 / 125_000;
        assert_eq!(o.nanos % 125_000, 0, "offsets are whole frames");
        (pb::Leg::try_from(a.leg).expect("leg"), frames, a.payload.clone())
    }

    fn marker(m: &pb::IngestCallRequest) -> (bool, u64) {
        let (pause, o) = match &m.event {
            Some(Event::Pause(p)) => (true, p.offset.expect("offset")),
            Some(Event::Resume(r)) => (false, r.offset.expect("offset")),
            other => panic!("not a pause marker: {other:?}"),
        };
        (pause, o.seconds as u64 * 8000 + o.nanos as u64 / 125_000)
    }

    #[test]
    fn a_pci_pause_flushes_what_is_buffered_marks_its_span_and_audio_after_it_is_placed_afresh() {
        let mut c = Chunker::new(Codec::Pcmu);
        let mut out = Vec::new();
        for i in 0..5u32 {
            out.extend(c.push(packet(Side::Caller, i as u16, 1000 + i * 160, 0x11), u64::from(i) * 160));
        }
        assert!(out.is_empty(), "less than a chunk buffered");
        let paused = c.pause(true, 700);
        assert_eq!(paused.len(), 2, "{paused:?}");
        assert_eq!(audio(&paused[0]), (pb::Leg::Customer, 0, vec![0x11; 800]));
        assert_eq!(marker(&paused[1]), (true, 800), "never before the latest audio placed");
        // The call goes on for 2 s (the recorder passes nothing on meanwhile), then resumes:
        // the caller's next packet continues its timestamps but is placed where it arrives.
        assert_eq!(c.pause(false, 16_800).iter().map(marker).collect::<Vec<_>>(), [(false, 16_800)]);
        let mut after = c.push(packet(Side::Caller, 105, 1000 + 105 * 160, 0x33), 16_810);
        after.extend(c.finish(17_000));
        assert_eq!(audio(&after[0]), (pb::Leg::Customer, 16_810, vec![0x33; 160]));
    }

    #[test]
    fn the_legs_are_kept_apart_placed_by_their_timestamps_and_cut_in_half_seconds() {
        let mut c = Chunker::new(Codec::Pcmu);
        let mut out = Vec::new();
        // The caller's stream starts at timestamp 1000 and arrives at 80 frames; the
        // agent's at u32::MAX - 320 (it wraps), arriving at 400, with jitter on arrival.
        for i in 0..30u32 {
            out.extend(c.push(
                packet(Side::Caller, i as u16, 1000 + i * 160, 0x11),
                80 + u64::from(i) * 160 + 37 * u64::from(i % 3),
            ));
            out.extend(c.push(
                packet(Side::Agent, i as u16, (u32::MAX - 320).wrapping_add(i * 160), 0x22),
                400 + u64::from(i) * 160 + 11 * u64::from(i % 2),
            ));
        }
        out.extend(c.finish(5200));
        let chunks: Vec<_> = out[..out.len() - 1].iter().map(audio).collect();
        let caller: Vec<_> = chunks.iter().filter(|(l, ..)| *l == pb::Leg::Customer).collect();
        let agent: Vec<_> = chunks.iter().filter(|(l, ..)| *l == pb::Leg::Agent).collect();
        // 30 packets of 160 = 4800 bytes a leg: one full chunk of 4000 and the rest at the end.
        assert_eq!(caller.iter().map(|(_, o, p)| (*o, p.len())).collect::<Vec<_>>(), vec![(80, 4000), (4080, 800)]);
        assert_eq!(agent.iter().map(|(_, o, p)| (*o, p.len())).collect::<Vec<_>>(), vec![(400, 4000), (4400, 800)]);
        assert!(caller.iter().all(|(_, _, p)| p.iter().all(|b| *b == 0x11)));
        assert!(agent.iter().all(|(_, _, p)| p.iter().all(|b| *b == 0x22)));
        let Some(Event::End(end)) = &out.last().expect("end").event else { panic!("no end") };
        assert_eq!(end.offset, Some(duration(5200)));
        assert_eq!(c.ignored, 0);
    }

    #[test]
    fn a_lost_packet_leaves_a_gap_a_repeat_is_ignored_and_a_jump_re_anchors() {
        let mut c = Chunker::new(Codec::Pcmu);
        let mut out = Vec::new();
        out.extend(c.push(packet(Side::Caller, 1, 0, 1), 0));
        out.extend(c.push(packet(Side::Caller, 2, 160, 1), 160));
        // Packet 3 lost; 4 arrives: a new chunk after the gap.
        out.extend(c.push(packet(Side::Caller, 4, 480, 1), 480));
        // Packet 4 again: ignored.
        out.extend(c.push(packet(Side::Caller, 4, 480, 1), 500));
        // A new source: timestamps jump far; placed where it arrived.
        out.extend(c.push(packet(Side::Caller, 900, 3_000_000, 1), 800));
        // Another codec: ignored.
        out.extend(c.push(Forked { codec: Codec::Pcma, ..packet(Side::Agent, 1, 0, 1) }, 900));
        out.extend(c.finish(100));
        let chunks: Vec<_> = out[..out.len() - 1].iter().map(|m| (audio(m).1, audio(m).2.len())).collect();
        assert_eq!(chunks, vec![(0, 320), (480, 160), (800, 160)]);
        assert_eq!(c.ignored, 2);
        // The end is never before the latest audio.
        let Some(Event::End(end)) = &out.last().expect("end").event else { panic!("no end") };
        assert_eq!(end.offset, Some(duration(960)));
    }

    #[test]
    fn the_header_names_the_calls_tenant_contact_agent_and_codec() {
        let c = Chunker::new(Codec::Pcma);
        let tenant = TenantId::parse("acme").expect("tenant");
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_250);
        let Some(Event::Header(h)) = c.header(&tenant, "c1", "support", "alice", at).event else { panic!() };
        assert_eq!((h.tenant.as_str(), h.contact_id.as_str(), h.queue.as_str()), ("acme", "c1", "support"));
        assert_eq!(h.agent_ids, vec!["alice".to_owned()]);
        assert_eq!(h.codec, pb::AudioCodec::Pcma as i32);
        assert_eq!(h.start_time.map(|t| (t.seconds, t.nanos)), Some((1_700_000_000, 250_000_000)));
    }

    #[test]
    fn a_call_is_recorded_under_its_own_tenant_and_contact_id() {
        let acme = TenantId::parse("acme").expect("tenant");
        let call = Call::of(&acme, "tenants/acme/contacts/0193-abc", "support", Codec::Pcmu).expect("call");
        assert_eq!(
            (call.tenant.as_str(), call.contact_id.as_str(), call.queue.as_str()),
            ("acme", "0193-abc", "support")
        );
        assert!(Call::of(&acme, "tenants/globex/contacts/0193-abc", "support", Codec::Pcmu).is_err());
        assert!(Call::of(&acme, "contacts/0193-abc", "support", Codec::Pcmu).is_err());
        assert!(Call::of(&acme, "tenants/acme/contacts/a/b", "support", Codec::Pcmu).is_err());
    }

    fn counter(text: &str, name: &str, outcome: &str) -> f64 {
        text.lines()
            .find(|l| l.starts_with(name) && l.contains(&format!("outcome=\"{outcome}\"")))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} {outcome} in {text}"))
    }

    #[tokio::test]
    async fn with_recording_unreachable_the_call_side_never_waits_and_the_audio_is_counted() {
        let platform = centralita_platform::metrics::Metrics::new("media");
        let metrics = Arc::new(Metrics::register(&platform));
        let key = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/local/dev-keys/jwt-ed25519.key");
        let signer =
            centralita_platform::auth::Signer::from_file(&key, "centralita", "centralita-api").expect("dev key");
        let sessions = Arc::new(Sessions::new("http://127.0.0.1:9", None, signer, "test".into()).expect("sessions"));
        // A port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let recorder =
            Arc::new(Recorder::new(&format!("http://127.0.0.1:{port}"), None, sessions, metrics).expect("recorder"));
        let acme = TenantId::parse("acme").expect("tenant");
        let fork = recorder.start(Call::of(&acme, "tenants/acme/contacts/c1", "support", Codec::Pcmu).expect("call"));
        // Before the bridge: read and discarded.
        fork.packets.try_send(packet(Side::Caller, 0, 0, 1)).expect("taken");
        // Signalled only once the recorder has taken it: with both ready at once, its
        // `select!` may take the bridge first and record that packet too.
        let taken = tokio::time::timeout(Duration::from_secs(5), async {
            while fork.packets.capacity() < fork.packets.max_capacity() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        taken.await.expect("the recorder takes what comes before the bridge");
        fork.bridged.send("alice".into()).expect("recorder waiting");
        // Two seconds of both legs, handed over without waiting.
        for i in 1..=100u16 {
            let ts = u32::from(i) * 160;
            fork.packets.try_send(packet(Side::Caller, i, ts, 0x11)).expect("never full");
            fork.packets.try_send(packet(Side::Agent, i, ts, 0x22)).expect("never full");
        }
        drop(fork.packets);
        tokio::time::timeout(Duration::from_secs(15), recorder.all_finished()).await.expect("the recording gives up");
        let text = platform.encode();
        let chunks = "centralita_media_recording_fork_chunks_total";
        // 100 packets of 160 bytes a leg: 4 chunks of 4000 each; handed to the stream before
        // it failed, or dropped after.
        assert_eq!(counter(&text, chunks, "sent") + counter(&text, chunks, "dropped"), 8.0, "{text}");
        assert_eq!(counter(&text, "centralita_media_recordings_total", "failed"), 1.0);
        assert_eq!(counter(&text, "centralita_media_recordings_total", "complete"), 0.0);
    }

    #[test]
    fn media_time_converts_both_ways_in_whole_frames() {
        assert_eq!(frames(Duration::from_millis(1500)), 12_000);
        assert_eq!(duration(12_001), prost_types::Duration { seconds: 1, nanos: 500_125_000 });
    }
}

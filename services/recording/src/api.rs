//! The gRPC adapter: `centralita.recording.v1.RecordingService`. Converts the wire types
//! at this edge, enforces the caller's tenant and roles, and audits every playback.

use std::pin::Pin;
use std::sync::Arc;

use centralita_platform::auth::{caller, Caller, Role};
use centralita_platform::error::{Error, Reason};
use centralita_platform::page;
use centralita_platform::registry::TenantRegistry;
use centralita_platform::tenant::{RecordingMode, TenantId};
use centralita_proto::recording::v1 as pb;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt as _;
use tonic::{Request, Response, Status, Streaming};

use crate::capture::{frames_of, IngestError, Input, Leg, RATE};
use crate::crypto::Opener;
use crate::g711::Law;
use crate::ingest::{Header, Recorder};
use crate::keys::Keyring;
use crate::objects::Objects;
use crate::playback::{Audio, Grant, UrlSigner};
use crate::store::{self, Audit, RecordingRow};

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct Api {
    pub recorder: Recorder,
    pub registry: TenantRegistry,
    pub signer: UrlSigner,
    pub url_ttl: std::time::Duration,
}

pub(crate) const RESOURCE: &str = "recordings/";

pub(crate) fn bounded_id(field: &'static str, s: &str, max: usize) -> Result<String, Error> {
    if s.is_empty() || s.len() > max || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:@".contains(&b)) {
        return Err(Error::invalid(field, format!("must be 1-{max} of letters, digits, '-', '_', '.', ':', '@'")));
    }
    Ok(s.to_owned())
}

/// The id of `recordings/{id}`.
pub fn parse_name(field: &'static str, name: &str) -> Result<String, Error> {
    let id = name.strip_prefix(RESOURCE).ok_or_else(|| Error::invalid(field, "must be `recordings/{id}`"))?;
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
        return Err(Error::invalid(field, "must be `recordings/{id}`"));
    }
    Ok(id.to_owned())
}

/// The header of an IngestCall, validated, for a caller of `tenant`.
pub fn header(h: pb::CallHeader, caller_tenant: &TenantId) -> Result<Header, Error> {
    let tenant = TenantId::parse(&h.tenant).map_err(|e| Error::invalid("header.tenant", e))?;
    if &tenant != caller_tenant {
        return Err(Error::PermissionDenied {
            reason: Reason::WrongTenant,
            message: format!("caller may not record for tenant `{tenant}`"),
        });
    }
    let contact_id = bounded_id("header.contact_id", &h.contact_id, 64)?;
    let queue = bounded_id("header.queue", &h.queue, 64)?;
    if h.agent_ids.len() > 16 {
        return Err(Error::invalid("header.agent_ids", "at most 16 agents"));
    }
    let agent_ids = h.agent_ids.iter().map(|a| bounded_id("header.agent_ids", a, 128)).collect::<Result<_, _>>()?;
    let ts = h.start_time.ok_or_else(|| Error::invalid("header.start_time", "is required"))?;
    let start = DateTime::<Utc>::from_timestamp(ts.seconds, u32::try_from(ts.nanos).unwrap_or(u32::MAX))
        .filter(|t| t.timestamp() > 946_684_800 && *t < Utc::now() + chrono::Duration::days(1))
        .ok_or_else(|| Error::invalid("header.start_time", "is not a plausible call start"))?;
    let law = match pb::AudioCodec::try_from(h.codec) {
        Ok(pb::AudioCodec::Pcmu) => Law::Mu,
        Ok(pb::AudioCodec::Pcma) => Law::A,
        _ => return Err(Error::invalid("header.codec", "must be PCMU or PCMA")),
    };
    Ok(Header { tenant, contact_id, queue, agent_ids, start, law })
}

fn offset(field: &'static str, d: Option<prost_types::Duration>) -> Result<u64, IngestError> {
    let d = d.ok_or(IngestError::Invalid { field, message: "is required".into() })?;
    frames_of(field, d.seconds, d.nanos)
}

/// One message after the header, as the capture core's input.
pub fn input(m: pb::IngestCallRequest) -> Result<Input, IngestError> {
    use pb::ingest_call_request::Event;
    let invalid = |field, message: &str| IngestError::Invalid { field, message: message.into() };
    match m.event {
        None => Err(invalid("event", "is empty")),
        Some(Event::Header(_)) => Err(invalid("header", "only the first message is the header")),
        Some(Event::Audio(a)) => {
            let leg = match pb::Leg::try_from(a.leg) {
                Ok(pb::Leg::Customer) => Leg::Customer,
                Ok(pb::Leg::Agent) => Leg::Agent,
                Ok(pb::Leg::OtherParty) => Leg::Other,
                _ => return Err(invalid("audio.leg", "must be CUSTOMER, AGENT or OTHER_PARTY")),
            };
            Ok(Input::Audio { leg, offset: offset("audio.offset", a.offset)?, payload: a.payload })
        }
        Some(Event::Pause(p)) => Ok(Input::Pause { offset: offset("pause.offset", p.offset)? }),
        Some(Event::Resume(r)) => Ok(Input::Resume { offset: offset("resume.offset", r.offset)? }),
        Some(Event::End(e)) => Ok(Input::End { offset: offset("end.offset", e.offset)? }),
    }
}

fn duration(frames: u64) -> prost_types::Duration {
    prost_types::Duration { seconds: (frames / RATE) as i64, nanos: ((frames % RATE) * 125_000) as i32 }
}

pub(crate) fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos() as i32 }
}

/// A stored recording on the wire; `retention_days` gives its expiry.
pub fn to_wire(r: &RecordingRow, retention_days: Option<u32>) -> pb::Recording {
    let frames = r.frames.max(0) as u64;
    let transcript = r.is_transcript();
    pb::Recording {
        name: format!("{RESOURCE}{}", r.id),
        contact_id: r.contact_id.clone(),
        queue: r.queue.clone(),
        agent_ids: r.agent_ids.clone(),
        start_time: Some(timestamp(r.started_at)),
        duration: Some(duration(frames)),
        state: match r.state.as_str() {
            "active" => pb::RecordingState::Active,
            "complete" => pb::RecordingState::Complete,
            _ => pb::RecordingState::Interrupted,
        } as i32,
        paused_spans: r
            .paused_spans
            .iter()
            .map(|(s, e)| pb::PausedSpan {
                start_offset: Some(duration(*s)),
                end_offset: Some(duration(e.unwrap_or(frames))),
            })
            .collect(),
        codec: match Law::from_name(&r.codec) {
            Some(Law::Mu) => pb::AudioCodec::Pcmu,
            Some(Law::A) => pb::AudioCodec::Pcma,
            None => pb::AudioCodec::Unspecified,
        } as i32,
        legal_hold: r.legal_hold,
        legal_hold_reason: r.legal_hold_reason.clone(),
        wav_size_bytes: if transcript { 0 } else { (crate::playback::WAV_HEADER + frames * 4) as i64 },
        expire_time: retention_days.map(|d| timestamp(r.started_at + chrono::Duration::days(i64::from(d)))),
        kind: if transcript { pb::RecordingKind::Transcript } else { pb::RecordingKind::Call } as i32,
        channel: crate::transcripts::channel_to_pb(&r.channel) as i32,
        message_count: r.message_count,
        paused_messages: r.paused_messages,
    }
}

/// Who listens to recordings (and reads transcripts), and which.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Listener<'a> {
    /// The tenant's supervisors and admins: every recording of the tenant.
    Staff(&'a TenantId),
    /// An agent of a tenant with `recording.agentsHearOwn`: those of the contacts it
    /// handled (named among the recording's agents).
    Agent(&'a TenantId, &'a str),
}

impl Listener<'_> {
    pub(crate) fn tenant(&self) -> &TenantId {
        match self {
            Listener::Staff(t) | Listener::Agent(t, _) => t,
        }
    }

    pub(crate) fn may(&self, row: &RecordingRow) -> bool {
        match self {
            Listener::Staff(_) => true,
            Listener::Agent(_, agent) => row.agent_ids.iter().any(|a| a == agent),
        }
    }

    /// `row` if this listener may hear it; NOT_FOUND otherwise (an agent does not learn
    /// that another agent's recording exists).
    pub(crate) fn check(&self, row: RecordingRow) -> Result<RecordingRow, Error> {
        if self.may(&row) {
            Ok(row)
        } else {
            Err(Error::NotFound(format!("{RESOURCE}{}", row.id)))
        }
    }
}

/// Who may listen: the tenant's supervisors and admins; its agents, their own contacts
/// only, when the tenant lets them (`recording.agentsHearOwn`).
pub(crate) fn listener<'a>(c: &'a Caller, registry: &TenantRegistry) -> Result<Listener<'a>, Error> {
    let tenant = c.own_tenant()?;
    if c.has_role(Role::Supervisor) || c.has_role(Role::TenantAdmin) {
        return Ok(Listener::Staff(tenant));
    }
    let allowed = registry.get(tenant).is_some_and(|t| t.recording.agents_hear_own);
    match c.agent_id.as_deref() {
        Some(agent) if c.has_role(Role::Agent) && allowed => Ok(Listener::Agent(tenant, agent)),
        _ => Err(Error::PermissionDenied {
            reason: Reason::RoleMissing,
            message: "recordings are heard by the tenant's supervisors and admins (and by agents, their own \
                      contacts', where the tenant allows it: recording.agentsHearOwn)"
                .into(),
        }),
    }
}

fn roles(c: &Caller) -> Vec<String> {
    c.roles.iter().map(|r| r.as_str().to_owned()).collect()
}

/// Opens a stored recording for reading: its data key unwrapped, its header read.
pub async fn open(
    pool: &Pool,
    keys: &Keyring,
    objects: &Objects,
    tenant: &TenantId,
    row: &RecordingRow,
) -> Result<Audio, Error> {
    if row.state == "active" {
        return Err(Error::FailedPrecondition("the call is still being recorded".into()));
    }
    if row.is_transcript() {
        return Err(Error::FailedPrecondition("a transcript has no audio: read it with GetTranscript".into()));
    }
    let (version, wrapped) = store::data_key(pool, tenant, &row.id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("{RESOURCE}{}", row.id)))?;
    let key = keys.unwrap(tenant.as_str(), &row.id, version, &wrapped).map_err(Error::internal)?;
    let size = objects.size(&row.object_key).await?;
    let header = objects.range(&row.object_key, 0..crate::crypto::HEADER_LEN as u64).await?;
    let opener = Opener::new(&key, tenant.as_str(), &row.id, &header).map_err(Error::internal)?;
    let (pcm_len, segments) = opener.plaintext_len(size).map_err(Error::internal)?;
    Ok(Audio { objects: objects.clone(), key: row.object_key.clone(), opener, pcm_len, segments })
}

impl Api {
    pub(crate) async fn row(&self, tenant: &TenantId, name: &str) -> Result<RecordingRow, Error> {
        let id = parse_name("name", name)?;
        store::get(&self.recorder.pool, tenant, &id).await?.ok_or_else(|| Error::NotFound(name.to_owned()))
    }

    pub(crate) fn retention(&self, tenant: &TenantId) -> Option<u32> {
        self.registry.get(tenant).map(|t| t.data_retention_days)
    }

    pub(crate) async fn audit(
        &self,
        tenant: &TenantId,
        c: &Caller,
        action: &'static str,
        id: &str,
        detail: String,
    ) -> Result<(), Error> {
        let a = Audit { actor: &c.subject, roles: roles(c), action, recording: id, detail, at: Utc::now() };
        store::audit(&self.recorder.pool, tenant, &a).await?;
        self.recorder.metrics.audited(action);
        Ok(())
    }

    async fn ingest(&self, c: Caller, mut stream: Streaming<pb::IngestCallRequest>) -> Result<pb::Recording, Error> {
        if !c.has_role(Role::Channel) {
            return Err(Error::PermissionDenied {
                reason: Reason::RoleMissing,
                message: "only a channel adapter (the media service) records calls".into(),
            });
        }
        let tenant = c.own_tenant()?.clone();
        let first = stream.message().await.map_err(|s| Error::invalid("header", s.message().to_owned()))?;
        let Some(pb::IngestCallRequest { event: Some(pb::ingest_call_request::Event::Header(h)) }) = first else {
            return Err(Error::invalid("header", "the first message must be the call's header"));
        };
        let header = header(h, &tenant)?;
        let policy = self.registry.get(&tenant).map(|t| t.recording.clone());
        if policy.as_ref().is_none_or(|p| p.voice == RecordingMode::None) {
            return Err(Error::FailedPrecondition(format!(
                "tenant `{tenant}` records no calls (recording.voice: none)"
            )));
        }
        let allow_pause = policy.is_some_and(|p| p.allow_pause);
        let mut session = self.recorder.start(&header).await?;
        tracing::info!(recording = %session.id, contact = %header.contact_id, "recording started");
        let mut refused: Option<Error> = None;
        loop {
            let msg = match stream.next().await {
                None => break,
                Some(Err(status)) => {
                    tracing::info!(recording = %session.id, code = ?status.code(), "ingest stream broke");
                    break;
                }
                Some(Ok(m)) => m,
            };
            let applied = match input(msg) {
                Ok(Input::Pause { .. }) if !allow_pause => Err(Error::FailedPrecondition(
                    "the tenant does not allow pausing recordings (recording.allowPause)".into(),
                )),
                Ok(i) => {
                    let end = matches!(i, Input::End { .. });
                    match session.push(i).await? {
                        Ok(()) if end => break,
                        Ok(()) => Ok(()),
                        Err(e) => Err(ingest_error(e)),
                    }
                }
                Err(e) => Err(ingest_error(e)),
            };
            if let Err(e) = applied {
                self.recorder.metrics.refused_inputs.inc();
                refused = Some(e);
                break;
            }
        }
        let row = session.finish().await?;
        tracing::info!(recording = %row.id, state = %row.state, frames = row.frames, "recording finished");
        match refused {
            Some(e) => Err(e),
            None => Ok(to_wire(&row, self.retention(&tenant))),
        }
    }
}

fn ingest_error(e: IngestError) -> Error {
    match e {
        IngestError::Invalid { field, message } => Error::invalid(field, message),
        IngestError::AfterEnd => Error::invalid("event", "the call already ended"),
    }
}

type AudioStream = Pin<Box<dyn Stream<Item = Result<pb::StreamRecordingAudioResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::recording_service_server::RecordingService for Api {
    #[tracing::instrument(skip_all, fields(tenant))]
    async fn ingest_call(
        &self,
        request: Request<Streaming<pb::IngestCallRequest>>,
    ) -> Result<Response<pb::Recording>, Status> {
        let c = caller(&request)?.clone();
        Ok(Response::new(self.ingest(c, request.into_inner()).await?))
    }

    #[tracing::instrument(skip_all, fields(tenant))]
    async fn get_recording(
        &self,
        request: Request<pb::GetRecordingRequest>,
    ) -> Result<Response<pb::Recording>, Status> {
        let c = caller(&request)?;
        let l = listener(c, &self.registry)?;
        let row = l.check(self.row(l.tenant(), &request.get_ref().name).await?)?;
        Ok(Response::new(to_wire(&row, self.retention(l.tenant()))))
    }

    #[tracing::instrument(skip_all, fields(tenant))]
    async fn list_recordings(
        &self,
        request: Request<pb::ListRecordingsRequest>,
    ) -> Result<Response<pb::ListRecordingsResponse>, Status> {
        let c = caller(&request)?;
        let l = listener(c, &self.registry)?;
        let tenant = l.tenant();
        let r = request.get_ref();
        let contact = bounded_id("contact_id", &r.contact_id, 64)?;
        let size = match r.page_size {
            0 => 50,
            n if (1..=100).contains(&n) => i64::from(n),
            _ => return Err(Error::invalid("page_size", "must be 0 to 100").into()),
        };
        let after = page::untag("r1", &r.page_token)?;
        let rows = store::of_contact(&self.recorder.pool, tenant, &contact, after.as_deref(), size + 1).await?;
        let more = rows.len() as i64 > size;
        let rows = &rows[..rows.len().min(size as usize)];
        let next =
            if more { rows.last().map(|r| page::tagged("r1", &r.id)).unwrap_or_default() } else { String::new() };
        let retention = self.retention(tenant);
        Ok(Response::new(pb::ListRecordingsResponse {
            recordings: rows.iter().filter(|r| l.may(r)).map(|r| to_wire(r, retention)).collect(),
            next_page_token: next,
        }))
    }

    type StreamRecordingAudioStream = AudioStream;

    #[tracing::instrument(skip_all, fields(tenant))]
    async fn stream_recording_audio(
        &self,
        request: Request<pb::StreamRecordingAudioRequest>,
    ) -> Result<Response<AudioStream>, Status> {
        let c = caller(&request)?;
        let l = listener(c, &self.registry)?;
        let tenant = l.tenant();
        let row = l.check(self.row(tenant, &request.get_ref().name).await?)?;
        let r = &self.recorder;
        let audio = open(&r.pool, &r.keys, &r.objects, tenant, &row).await?;
        self.audit(tenant, c, "playback", &row.id, "grpc stream".into()).await?;
        let (tx, rx) = mpsc::channel(4);
        let len = audio.wav_len();
        audio.send(0..len, tx);
        let stream = ReceiverStream::new(rx)
            .map(|r| r.map(|data| pb::StreamRecordingAudioResponse { data: data.to_vec() }).map_err(Status::from));
        Ok(Response::new(Box::pin(stream)))
    }

    #[tracing::instrument(skip_all, fields(tenant))]
    async fn create_playback_url(
        &self,
        request: Request<pb::CreatePlaybackUrlRequest>,
    ) -> Result<Response<pb::PlaybackUrl>, Status> {
        let c = caller(&request)?;
        let l = listener(c, &self.registry)?;
        let tenant = l.tenant();
        let row = l.check(self.row(tenant, &request.get_ref().name).await?)?;
        if row.state == "active" {
            return Err(Error::FailedPrecondition("the call is still being recorded".into()).into());
        }
        if row.is_transcript() {
            return Err(
                Error::FailedPrecondition("a transcript has no audio: read it with GetTranscript".into()).into()
            );
        }
        let expires = Utc::now() + chrono::Duration::from_std(self.url_ttl).map_err(Error::internal)?;
        let grant = Grant {
            tenant: tenant.to_string(),
            recording: row.id.clone(),
            subject: c.subject.clone(),
            expires: expires.timestamp(),
        };
        self.audit(tenant, c, "url_issued", &row.id, format!("expires {}", expires.to_rfc3339())).await?;
        Ok(Response::new(pb::PlaybackUrl { url: self.signer.url(&grant), expire_time: Some(timestamp(expires)) }))
    }

    #[tracing::instrument(skip_all, fields(tenant))]
    async fn set_legal_hold(
        &self,
        request: Request<pb::SetLegalHoldRequest>,
    ) -> Result<Response<pb::Recording>, Status> {
        let c = caller(&request)?;
        let r = request.get_ref();
        Ok(Response::new(self.hold(c, &r.name, &r.reason, true).await?))
    }

    #[tracing::instrument(skip_all, fields(tenant))]
    async fn clear_legal_hold(
        &self,
        request: Request<pb::ClearLegalHoldRequest>,
    ) -> Result<Response<pb::Recording>, Status> {
        let c = caller(&request)?;
        let r = request.get_ref();
        Ok(Response::new(self.hold(c, &r.name, &r.reason, false).await?))
    }

    #[tracing::instrument(skip_all, fields(tenant))]
    async fn ingest_transcript(
        &self,
        request: Request<pb::IngestTranscriptRequest>,
    ) -> Result<Response<pb::Recording>, Status> {
        let c = caller(&request)?.clone();
        Ok(Response::new(self.ingest_transcript(&c, request.into_inner()).await?))
    }

    #[tracing::instrument(skip_all, fields(tenant))]
    async fn get_transcript(
        &self,
        request: Request<pb::GetTranscriptRequest>,
    ) -> Result<Response<pb::Transcript>, Status> {
        let c = caller(&request)?;
        Ok(Response::new(self.read_transcript(c, &request.get_ref().name).await?))
    }
}

impl Api {
    async fn hold(&self, c: &Caller, name: &str, reason: &str, hold: bool) -> Result<pb::Recording, Error> {
        let tenant = c.own_tenant()?;
        if !c.has_role(Role::TenantAdmin) {
            return Err(Error::PermissionDenied {
                reason: Reason::RoleMissing,
                message: "only the tenant's admins set and clear legal holds".into(),
            });
        }
        let id = parse_name("name", name)?;
        let reason = reason.trim();
        if reason.is_empty() || reason.len() > 500 {
            return Err(Error::invalid("reason", "is required (at most 500 characters)"));
        }
        let action = if hold { "hold_set" } else { "hold_cleared" };
        let a = Audit {
            actor: &c.subject,
            roles: roles(c),
            action,
            recording: &id,
            detail: reason.to_owned(),
            at: Utc::now(),
        };
        let row = store::set_hold(&self.recorder.pool, tenant, &id, hold, reason, &a)
            .await?
            .ok_or_else(|| Error::NotFound(name.to_owned()))?;
        self.recorder.metrics.audited(action);
        Ok(to_wire(&row, self.retention(tenant)))
    }
}

/// Shared by the HTTP endpoint.
pub type Shared = Arc<Api>;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use prost::Message as _;

    fn valid() -> Vec<pb::IngestCallRequest> {
        vec![
            pb::IngestCallRequest {
                event: Some(pb::ingest_call_request::Event::Header(pb::CallHeader {
                    tenant: "acme".into(),
                    contact_id: "c-1".into(),
                    queue: "support".into(),
                    agent_ids: vec!["a-1".into()],
                    start_time: Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 0 }),
                    codec: pb::AudioCodec::Pcma as i32,
                })),
            },
            pb::IngestCallRequest {
                event: Some(pb::ingest_call_request::Event::Audio(pb::AudioChunk {
                    leg: pb::Leg::Customer as i32,
                    offset: Some(prost_types::Duration { seconds: 1, nanos: 20_000_000 }),
                    payload: vec![0xd5; 160],
                })),
            },
            pb::IngestCallRequest {
                event: Some(pb::ingest_call_request::Event::Pause(pb::RecordingPause {
                    offset: Some(prost_types::Duration { seconds: 2, nanos: 0 }),
                })),
            },
            pb::IngestCallRequest {
                event: Some(pb::ingest_call_request::Event::End(pb::CallEnd {
                    offset: Some(prost_types::Duration { seconds: 9, nanos: 0 }),
                })),
            },
        ]
    }

    #[test]
    fn the_wire_messages_convert() {
        let acme = TenantId::parse("acme").unwrap_or_else(|_| unreachable!());
        let [h, a, p, e] = <[_; 4]>::try_from(valid()).unwrap_or_else(|_| unreachable!());
        let Some(pb::ingest_call_request::Event::Header(h)) = h.event else { unreachable!() };
        assert!(header(h.clone(), &acme).is_ok());
        let globex = TenantId::parse("globex").unwrap_or_else(|_| unreachable!());
        assert!(matches!(header(h, &globex), Err(Error::PermissionDenied { .. })));
        assert_eq!(input(a).ok(), Some(Input::Audio { leg: Leg::Customer, offset: 8160, payload: vec![0xd5; 160] }));
        assert_eq!(input(p).ok(), Some(Input::Pause { offset: 16000 }));
        assert_eq!(input(e).ok(), Some(Input::End { offset: 72000 }));
        assert!(input(pb::IngestCallRequest { event: None }).is_err());
        assert!(parse_name("name", "recordings/0190aaaabbbbccccddddeeeeffff0000").is_ok());
        for bad in [
            "",
            "recordings/",
            "recordings/../x",
            "recordings/0190AAAABBBBCCCCDDDDEEEEFFFF0000",
            "x/0190aaaabbbbccccddddeeeeffff0000",
        ] {
            assert!(parse_name("name", bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Valid messages with bytes flipped, cut or appended at random, and plain random bytes:
        /// whatever decodes converts or is refused with a field, never a panic.
        #[test]
        fn mutated_wire_messages_are_converted_or_refused(
            which in 0usize..4,
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
            cut in any::<prop::sample::Index>(),
            tail in prop::collection::vec(any::<u8>(), 0..16),
            noise in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let acme = TenantId::parse("acme").unwrap_or_else(|_| unreachable!());
            let mut bytes = valid()[which].encode_to_vec();
            for (i, b) in flips {
                let at = i.index(bytes.len());
                bytes[at] ^= b;
            }
            bytes.truncate(cut.index(bytes.len() + 1));
            bytes.extend(tail);
            for b in [bytes, noise] {
                if let Ok(m) = pb::IngestCallRequest::decode(b.as_slice()) {
                    match m.event.clone() {
                        Some(pb::ingest_call_request::Event::Header(h)) => {
                            if let Err(e) = header(h, &acme) {
                                prop_assert!(matches!(e, Error::InvalidArgument(_) | Error::PermissionDenied { .. }), "{e:?}");
                            }
                        }
                        _ => {
                            if let Err(IngestError::Invalid { field, .. }) = input(m) {
                                prop_assert!(!field.is_empty());
                            }
                        }
                    }
                }
            }
        }
    }
}

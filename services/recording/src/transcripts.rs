//! The transcripts' two RPCs: `IngestTranscript` (media's digital role hands over a closed
//! digital contact's conversation) and `GetTranscript` (a supervisor or admin reads it).
//!
//! A transcript is stored like a call's audio: a fresh data key wrapped under the tenant's
//! key (in `data_keys`), the document's JSON ([`crate::transcript`]) sealed in the same
//! segmented container (`docs/recording-format.md`) with the tenant and recording id as
//! associated data, one object per transcript. Small, so it is sealed and written at once
//! and read back whole. Retention, legal hold and erasure find it as a row of `recordings`
//! (kind `transcript`) like any recording, so they treat it alike.

use centralita_platform::auth::{Caller, Role};
use centralita_platform::error::{Error, Reason};
use centralita_platform::tenant::{from_timestamp, TenantId};
use centralita_proto::recording::v1 as pb;
use centralita_proto::tenancy::v1::Channel as PbChannel;
use chrono::Utc;

use crate::api::{bounded_id, listener, timestamp, to_wire, Api, RESOURCE};
use crate::crypto::{DataKey, Opener, Sealer, HEADER_LEN, SEGMENT};
use crate::store::{self, NewTranscript};
use crate::transcript::{Document, Line, Sender, FORMAT};

/// The stored name of a channel (`voice` for calls); digital channels are the ones a
/// transcript may be of.
pub fn channel_name(c: PbChannel) -> Option<&'static str> {
    match c {
        PbChannel::Voice => Some("voice"),
        PbChannel::Chat => Some("chat"),
        PbChannel::Sms => Some("sms"),
        PbChannel::Email => Some("email"),
        PbChannel::Social => Some("social"),
        PbChannel::Task | PbChannel::Unspecified => None,
    }
}

pub fn channel_to_pb(name: &str) -> PbChannel {
    [PbChannel::Voice, PbChannel::Chat, PbChannel::Sms, PbChannel::Email, PbChannel::Social]
        .into_iter()
        .find(|c| channel_name(*c) == Some(name))
        .unwrap_or(PbChannel::Unspecified)
}

/// The object key of a transcript (tenant first, like a recording's).
pub fn object_key(tenant: &TenantId, id: &str) -> String {
    format!("transcripts/{tenant}/{id}.crec")
}

fn time(field: &str, t: Option<&prost_types::Timestamp>) -> Result<chrono::DateTime<Utc>, Error> {
    t.and_then(from_timestamp).ok_or_else(|| Error::invalid(field.to_owned(), "is required (a valid time)"))
}

/// The request as a document for a caller of `tenant`, validated.
pub fn document(r: pb::IngestTranscriptRequest, caller_tenant: &TenantId) -> Result<Document, Error> {
    let tenant = TenantId::parse(&r.tenant).map_err(|e| Error::invalid("tenant", e))?;
    if &tenant != caller_tenant {
        return Err(Error::PermissionDenied {
            reason: Reason::WrongTenant,
            message: format!("caller may not store transcripts for tenant `{tenant}`"),
        });
    }
    let contact_id = bounded_id("contact_id", &r.contact_id, 64)?;
    let queue = bounded_id("queue", &r.queue, 64)?;
    let channel = PbChannel::try_from(r.channel)
        .ok()
        .and_then(channel_name)
        .filter(|c| *c != "voice")
        .ok_or_else(|| Error::invalid("channel", "must be CHAT, SMS, SOCIAL or EMAIL"))?;
    if r.agent_ids.len() > 16 {
        return Err(Error::invalid("agent_ids", "at most 16 agents"));
    }
    let agent_ids = r.agent_ids.iter().map(|a| bounded_id("agent_ids", a, 128)).collect::<Result<_, _>>()?;
    let paused_messages =
        u32::try_from(r.paused_messages).map_err(|_| Error::invalid("paused_messages", "must not be negative"))?;
    let mut messages = Vec::with_capacity(r.messages.len().min(crate::transcript::MAX_MESSAGES + 1));
    for (i, m) in r.messages.into_iter().enumerate() {
        let sender = match pb::transcript_message::Sender::try_from(m.sender) {
            Ok(pb::transcript_message::Sender::Customer) => Sender::Customer,
            Ok(pb::transcript_message::Sender::Agent) => Sender::Agent,
            Ok(pb::transcript_message::Sender::System) => Sender::System,
            _ => return Err(Error::invalid(format!("messages[{i}].sender"), "must be CUSTOMER, AGENT or SYSTEM")),
        };
        let agent_id = if m.agent_id.is_empty() { String::new() } else { bounded_id("agent_id", &m.agent_id, 128)? };
        let time = time(&format!("messages[{i}].time"), m.time.as_ref())?;
        messages.push(Line { sequence: m.sequence, sender, agent_id, text: m.text, time });
    }
    let doc = Document {
        format: FORMAT.into(),
        tenant: tenant.to_string(),
        contact_id,
        channel: channel.into(),
        queue,
        agent_ids,
        start_time: time("start_time", r.start_time.as_ref())?,
        end_time: time("end_time", r.end_time.as_ref())?,
        paused_messages,
        messages,
    };
    doc.validate(Utc::now()).map_err(|e| Error::invalid(e.field, e.message))?;
    Ok(doc)
}

fn line_to_wire(l: &Line) -> pb::TranscriptMessage {
    use pb::transcript_message::Sender as S;
    pb::TranscriptMessage {
        sequence: l.sequence,
        sender: match l.sender {
            Sender::Customer => S::Customer,
            Sender::Agent => S::Agent,
            Sender::System => S::System,
        } as i32,
        agent_id: l.agent_id.clone(),
        text: l.text.clone(),
        time: Some(timestamp(l.time)),
    }
}

impl Api {
    /// Stores a closed contact's transcript, once per contact.
    pub(crate) async fn ingest_transcript(
        &self,
        c: &Caller,
        r: pb::IngestTranscriptRequest,
    ) -> Result<pb::Recording, Error> {
        if !c.has_role(Role::Channel) {
            return Err(Error::PermissionDenied {
                reason: Reason::RoleMissing,
                message: "only a channel adapter (the media service) stores transcripts".into(),
            });
        }
        let tenant = c.own_tenant()?.clone();
        let doc = document(r, &tenant)?;
        if !self.registry.get(&tenant).is_some_and(|t| t.recording.chat_transcripts) {
            return Err(Error::FailedPrecondition(format!(
                "tenant `{tenant}` keeps no transcripts (recording.chatTranscripts is off)"
            )));
        }
        let rec = &self.recorder;
        if let Some(existing) = store::transcript_of(&rec.pool, &tenant, &doc.contact_id).await? {
            return Ok(to_wire(&existing, self.retention(&tenant)));
        }
        let id = store::new_id();
        let key = DataKey::generate().map_err(Error::internal)?;
        let (version, wrapped) = rec
            .keys
            .wrap(tenant.as_str(), &id, &key)
            .map_err(|e| Error::FailedPrecondition(format!("recording keys: {e} (tenant `{tenant}`)")))?;
        let mut sealer = Sealer::new(&key, tenant.as_str(), &id, SEGMENT).map_err(Error::internal)?;
        let mut object = sealer.header().to_vec();
        sealer.push(&doc.to_json(), &mut object).map_err(Error::internal)?;
        sealer.finish(&mut object).map_err(Error::internal)?;
        let object_key = object_key(&tenant, &id);
        let size = rec.objects.put_bytes(&object_key, object).await?;
        let new = NewTranscript {
            id: id.clone(),
            contact_id: doc.contact_id.clone(),
            queue: doc.queue.clone(),
            agent_ids: doc.agent_ids.clone(),
            started_at: doc.start_time,
            channel: doc.channel.clone(),
            message_count: i32::try_from(doc.messages.len()).map_err(Error::internal)?,
            paused_messages: i32::try_from(doc.paused_messages).unwrap_or(i32::MAX),
            object_key: object_key.clone(),
        };
        if !store::create_transcript(&rec.pool, &tenant, &new, version, &wrapped).await? {
            // Another replica stored this contact's transcript meanwhile: keep that one.
            rec.objects.delete(&object_key).await?;
            let existing = store::transcript_of(&rec.pool, &tenant, &doc.contact_id)
                .await?
                .ok_or_else(|| Error::Internal("a transcript vanished".into()))?;
            return Ok(to_wire(&existing, self.retention(&tenant)));
        }
        rec.metrics.finished("transcript", size);
        tracing::info!(recording = %id, contact = %doc.contact_id, messages = doc.messages.len(), "transcript stored");
        let row =
            store::get(&rec.pool, &tenant, &id).await?.ok_or_else(|| Error::Internal("transcript vanished".into()))?;
        Ok(to_wire(&row, self.retention(&tenant)))
    }

    /// A transcript's messages, decrypted, for whoever may hear the contact's recordings;
    /// audited as a read.
    pub(crate) async fn read_transcript(&self, c: &Caller, name: &str) -> Result<pb::Transcript, Error> {
        let l = listener(c, &self.registry)?;
        let tenant = l.tenant();
        let row = l.check(self.row(tenant, name).await?)?;
        if !row.is_transcript() {
            return Err(Error::FailedPrecondition(
                "a call recording has no transcript: hear it with StreamRecordingAudio".into(),
            ));
        }
        let rec = &self.recorder;
        let (version, wrapped) = store::data_key(&rec.pool, tenant, &row.id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("{RESOURCE}{}", row.id)))?;
        let key = rec.keys.unwrap(tenant.as_str(), &row.id, version, &wrapped).map_err(Error::internal)?;
        let size = rec.objects.size(&row.object_key).await?;
        let object = rec.objects.range(&row.object_key, 0..size).await?;
        let header = object.get(..HEADER_LEN).ok_or_else(|| Error::Internal("a transcript without a header".into()))?;
        let opener = Opener::new(&key, tenant.as_str(), &row.id, header).map_err(Error::internal)?;
        let plain = opener.open_all(&object).map_err(Error::internal)?;
        let doc = Document::from_json(&plain).ok_or_else(|| Error::Internal("an unreadable transcript".into()))?;
        self.audit(tenant, c, "transcript_read", &row.id, "grpc".into()).await?;
        Ok(pb::Transcript {
            recording: format!("{RESOURCE}{}", row.id),
            contact_id: row.contact_id.clone(),
            channel: channel_to_pb(&row.channel) as i32,
            messages: doc.messages.iter().map(line_to_wire).collect(),
            paused_messages: i32::try_from(doc.paused_messages).unwrap_or(i32::MAX),
        })
    }
}

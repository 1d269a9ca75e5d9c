//! Transcripts of digital contacts: when sessions closes a chat, SMS, social or email
//! contact of a tenant with `recording.chatTranscripts` on, its conversation is handed to
//! the recording service (`RecordingService.IngestTranscript`), which encrypts and keeps
//! it with the tenant's recordings (retention, legal hold, erasure, audited reads).
//!
//! A consumer of the contacts topic (one group for every replica) sees each digital
//! contact's events in order. A recording pause or resume (the agent's PCI pause) opens or
//! closes a span on the conversation ([`super::store::mark_paused`]); the messages written
//! in a span are left out of the transcript and only counted. A contact's close (its
//! `close_time` set: wrapped up, abandoned or timed out) sends the transcript. Recording
//! keeps one transcript per contact, so a redelivered close sends again harmlessly; a
//! refusal that will not change (the tenant keeps none, no keys, an invalid transcript) is
//! logged and counted, an outage is retried by the consumer until recording answers.

use std::sync::Arc;

use centralita_platform::bus::{Event, EventPayload, Handler};
use centralita_platform::error::Error;
use centralita_platform::registry::TenantRegistry;
use centralita_platform::tenant::{parse_contact_name, timestamp, TenantId};
use centralita_proto::recording::v1 as rpb;
use centralita_proto::recording::v1::recording_service_client::RecordingServiceClient;
use centralita_proto::sessions::v1 as spb;
use centralita_proto::tenancy::v1::Channel;
use chrono::{DateTime, Utc};
use tonic::transport::Channel as Transport;

use super::model::{Message, Sender};
use super::store;
use super::Digital;

/// Messages read from the store at once while building a transcript.
const BATCH: i64 = 500;

/// Whether `at` (ms since the epoch) falls in one of `spans` (`[start, end)`, an open end
/// reaching to now).
pub fn paused_at(spans: &[(i64, Option<i64>)], at: i64) -> bool {
    spans.iter().any(|(start, end)| at >= *start && end.is_none_or(|e| at < e))
}

/// The transcript's lines of `messages`: those written while the recording was paused are
/// left out, and counted.
pub fn lines(messages: &[Message], spans: &[(i64, Option<i64>)]) -> (Vec<rpb::TranscriptMessage>, i32) {
    use rpb::transcript_message::Sender as S;
    let mut out = Vec::with_capacity(messages.len());
    let mut paused = 0;
    for m in messages {
        if paused_at(spans, m.created_at.timestamp_millis()) {
            paused += 1;
            continue;
        }
        let (sender, agent_id) = match &m.sender {
            Sender::Customer => (S::Customer, String::new()),
            Sender::Agent(id) => (S::Agent, id.clone()),
            Sender::System => (S::System, String::new()),
        };
        out.push(rpb::TranscriptMessage {
            sequence: m.sequence,
            sender: sender as i32,
            agent_id,
            // A file is named in the transcript (its bytes stay with the conversation).
            text: match &m.attachment {
                Some(a) => format!("[file: {} ({}, {} bytes)]", a.name, a.content_type, a.size),
                None => m.text.clone(),
            },
            time: Some(timestamp(m.provider_time.unwrap_or(m.created_at))),
        });
    }
    (out, paused)
}

/// The agents a contact went through, in order, once each.
fn agents(c: &spb::Contact) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for a in c.previous_agents.iter().chain(std::iter::once(&c.agent_id)) {
        if !a.is_empty() && !out.contains(a) {
            out.push(a.clone());
        }
    }
    out
}

fn time(t: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    t.and_then(centralita_platform::tenant::from_timestamp)
}

/// Records pauses and sends transcripts, from the contacts topic.
#[derive(Debug)]
pub struct TranscriptsHandler {
    pub digital: Arc<Digital>,
    pub registry: TenantRegistry,
    pub recording: RecordingServiceClient<Transport>,
}

impl TranscriptsHandler {
    async fn send(&self, tenant: &TenantId, id: &str, contact: &spb::Contact) -> Result<(), Error> {
        let pool = &self.digital.pool;
        let Some((started, spans)) = store::transcript_facts(pool, tenant, id).await? else {
            tracing::debug!(contact = id, "a closed digital contact without a conversation: no transcript");
            return Ok(());
        };
        let (mut messages, mut paused, mut after) = (Vec::new(), 0, 0);
        loop {
            let batch = store::messages_after(pool, tenant, id, after, BATCH).await?;
            let Some(last) = batch.last() else { break };
            after = last.sequence;
            let (kept, left) = lines(&batch, &spans);
            messages.extend(kept);
            paused += left;
        }
        let end = time(contact.close_time.as_ref()).unwrap_or_else(Utc::now);
        let request = rpb::IngestTranscriptRequest {
            tenant: tenant.to_string(),
            contact_id: id.to_owned(),
            queue: contact.queue.clone(),
            channel: contact.channel,
            agent_ids: agents(contact),
            start_time: Some(timestamp(started.min(end))),
            end_time: Some(timestamp(end)),
            messages,
            paused_messages: paused,
        };
        let count = request.messages.len();
        let request = self.digital.contacts.request(tenant, request)?;
        match self.recording.clone().ingest_transcript(request).await {
            Ok(r) => {
                self.digital.metrics.transcript("stored");
                tracing::info!(contact = id, recording = %r.get_ref().name, messages = count, paused, "transcript handed to recording");
                Ok(())
            }
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition | tonic::Code::PermissionDenied
                ) =>
            {
                self.digital.metrics.transcript("refused");
                tracing::warn!(contact = id, code = ?s.code(), reason = s.message(), "recording refused the transcript; not retried");
                Ok(())
            }
            Err(s) => Err(Error::Unavailable(format!("recording ({:?}: {})", s.code(), s.message()))),
        }
    }
}

impl Handler for TranscriptsHandler {
    async fn handle(&mut self, event: &Event) -> Result<(), Error> {
        if event.type_name != spb::ContactEvent::TYPE {
            return Ok(());
        }
        let Ok(e) = event.payload::<spb::ContactEvent>() else { return Ok(()) };
        let Some(contact) = e.contact.as_ref() else { return Ok(()) };
        if !matches!(
            Channel::try_from(contact.channel),
            Ok(Channel::Chat | Channel::Sms | Channel::Email | Channel::Social)
        ) {
            return Ok(());
        }
        let Ok((tenant, id)) = parse_contact_name("contact", &contact.name) else { return Ok(()) };
        if tenant != event.tenant {
            tracing::warn!("contact event of another tenant than its envelope; skipped");
            return Ok(());
        }
        use spb::contact_event::Kind;
        match Kind::try_from(e.kind) {
            Ok(Kind::RecordingPaused) => {
                return store::mark_paused(&self.digital.pool, &tenant, &id, true, event.occurred_at.timestamp_millis())
                    .await
            }
            Ok(Kind::RecordingResumed) => {
                return store::mark_paused(
                    &self.digital.pool,
                    &tenant,
                    &id,
                    false,
                    event.occurred_at.timestamp_millis(),
                )
                .await
            }
            _ => {}
        }
        if contact.close_time.is_none() {
            return Ok(());
        }
        if !self.registry.get(&tenant).is_some_and(|t| t.recording.chat_transcripts) {
            return Ok(());
        }
        self.send(&tenant, &id, contact).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digital::model::{Kind, Status};

    fn message(sequence: i64, sender: Sender, at_ms: i64) -> Message {
        Message {
            sequence,
            sender,
            kind: Kind::Text,
            text: format!("m{sequence}"),
            status: Status::Sent,
            failure_reason: String::new(),
            created_at: DateTime::from_timestamp_millis(at_ms).expect("time"),
            provider_time: None,
            attachment: None,
        }
    }

    #[test]
    fn messages_written_while_paused_are_left_out_and_counted() {
        let spans = [(2_000, Some(4_000)), (9_000, None)];
        assert!(!paused_at(&spans, 1_999) && paused_at(&spans, 2_000) && paused_at(&spans, 3_999));
        assert!(!paused_at(&spans, 4_000) && paused_at(&spans, 9_000) && paused_at(&spans, i64::MAX));
        let messages = [
            message(1, Sender::Customer, 1_000),
            message(2, Sender::Agent("ana".into()), 2_500),
            message(3, Sender::Customer, 3_000),
            message(4, Sender::System, 5_000),
            message(5, Sender::Agent("ana".into()), 6_000),
            message(6, Sender::Customer, 9_500),
        ];
        let (kept, paused) = lines(&messages, &spans);
        assert_eq!(paused, 3);
        let got: Vec<_> = kept.iter().map(|m| (m.sequence, m.sender, m.agent_id.as_str(), m.text.as_str())).collect();
        use rpb::transcript_message::Sender as S;
        assert_eq!(
            got,
            [(1, S::Customer as i32, "", "m1"), (4, S::System as i32, "", "m4"), (5, S::Agent as i32, "ana", "m5")]
        );
        assert_eq!(lines(&messages, &[]).0.len(), 6, "nothing paused: everything");
    }

    #[test]
    fn a_file_is_named_in_the_transcript() {
        let mut m = message(1, Sender::Customer, 1_000);
        m.kind = Kind::Attachment;
        m.attachment = Some(crate::digital::model::AttachmentMeta {
            id: "a1".into(),
            name: "factura.pdf".into(),
            content_type: "application/pdf".into(),
            size: 1234,
            sha256: "00".into(),
        });
        assert_eq!(lines(&[m], &[]).0[0].text, "[file: factura.pdf (application/pdf, 1234 bytes)]");
    }

    #[test]
    fn a_contacts_agents_are_listed_once_in_order() {
        let c = spb::Contact {
            agent_id: "bea".into(),
            previous_agents: vec!["ana".into(), "bea".into(), "".into()],
            ..Default::default()
        };
        assert_eq!(agents(&c), ["ana", "bea"]);
        assert!(agents(&spb::Contact::default()).is_empty());
    }
}

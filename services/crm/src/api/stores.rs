//! The subject access export beyond the CRM: what the other services keep about the
//! customer's contacts (the contact ids the CRM linked to the customer), read through their
//! own public APIs **with the caller's own credentials** (a tenant admin's token, forwarded),
//! so each service enforces its tenant and roles as for any call and no new RPC or
//! service-to-service trust is needed:
//! - **sessions** (`ContactService.GetContact`): the contact record while sessions keeps it
//!   (open, and 24 h after closing): identities, attributes, queue, agents, times,
//!   disposition;
//! - **media** (`ConversationService.ListMessages`): a digital contact's conversation, every
//!   message with its text;
//! - **recording** (`RecordingService.ListRecordings`): the contact's recordings (metadata;
//!   the audio itself is fetched with a playback URL by name).
//!
//! A contact a store does not know (NOT_FOUND: a voice call has no conversation, a closed
//! contact's record expired) adds nothing. Each store's section says `included`,
//! `not_configured` (its endpoint is not set) or `unavailable` (with the status code and
//! message); the document's `complete` is true only when every store was included, so an
//! export is never silently partial.

use std::time::Duration;

use centralita_platform::tenant::{contact_name, from_timestamp, TenantId};
use centralita_proto::media::v1 as mpb;
use centralita_proto::recording::v1 as rpb;
use centralita_proto::sessions::v1 as spb;
use chrono::{DateTime, Utc};
use mpb::conversation_service_client::ConversationServiceClient;
use rpb::recording_service_client::RecordingServiceClient;
use serde_json::{json, Value};
use spb::contact_service_client::ContactServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;
use tonic::{Code, Status};

/// How long one call to another service may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Pages followed per contact at most (media: 500 messages a page; recording: 100).
const MAX_PAGES: usize = 100;

/// Channels to the other services, each `None` when its endpoint is not configured.
/// Connected lazily: the CRM starts without them, and a service down answers UNAVAILABLE.
#[derive(Debug, Clone, Default)]
pub struct OtherStores {
    pub sessions: Option<Channel>,
    pub media: Option<Channel>,
    pub recording: Option<Channel>,
}

impl OtherStores {
    /// Lazy channels to the given endpoints (`http://host:port`).
    pub fn new(
        sessions: Option<&str>,
        media: Option<&str>,
        recording: Option<&str>,
        tls: Option<&std::sync::Arc<centralita_platform::tls::Tls>>,
    ) -> Result<Self, String> {
        let channel = |url: Option<&str>| -> Result<Option<Channel>, String> {
            url.map(|u| centralita_platform::tls::lazy_channel(u, tls, |e| e)).transpose()
        };
        Ok(OtherStores { sessions: channel(sessions)?, media: channel(media)?, recording: channel(recording)? })
    }

    /// Each store's section of the export for `contacts` (ids) of `tenant`, and whether
    /// every store was included.
    pub(super) async fn export(
        &self,
        authorization: Option<&MetadataValue<Ascii>>,
        tenant: &TenantId,
        contacts: &[String],
    ) -> (Value, bool) {
        let t = tenant.as_str();
        let sessions = match &self.sessions {
            None => Err(None),
            Some(ch) => {
                let mut client = ContactServiceClient::new(ch.clone());
                let mut out = Vec::new();
                let mut failed = None;
                for id in contacts {
                    let req = authed(
                        tonic::Request::new(spb::GetContactRequest { name: contact_name(t, id) }),
                        authorization,
                    );
                    match client.get_contact(req).await {
                        Ok(c) => out.push(contact_json(&c.into_inner())),
                        Err(s) if s.code() == Code::NotFound => {}
                        Err(s) => {
                            failed = Some(s);
                            break;
                        }
                    }
                }
                failed.map_or(Ok(json!({ "contacts": out })), |s| Err(Some(s)))
            }
        };
        let media = match &self.media {
            None => Err(None),
            Some(ch) => {
                let mut client = ConversationServiceClient::new(ch.clone());
                let mut out = Vec::new();
                let mut failed = None;
                'contacts: for id in contacts {
                    let (mut messages, mut token) = (Vec::new(), String::new());
                    for _ in 0..MAX_PAGES {
                        let req = mpb::ListMessagesRequest {
                            parent: contact_name(t, id),
                            after_sequence: 0,
                            page_size: 500,
                            page_token: token.clone(),
                        };
                        match client.list_messages(authed(tonic::Request::new(req), authorization)).await {
                            Ok(r) => {
                                let r = r.into_inner();
                                messages.extend(r.messages.iter().map(message_json));
                                if r.next_page_token.is_empty() {
                                    break;
                                }
                                token = r.next_page_token;
                            }
                            Err(s) if s.code() == Code::NotFound => continue 'contacts,
                            Err(s) => {
                                failed = Some(s);
                                break 'contacts;
                            }
                        }
                    }
                    out.push(json!({ "contact": contact_name(t, id), "messages": messages }));
                }
                failed.map_or(Ok(json!({ "conversations": out })), |s| Err(Some(s)))
            }
        };
        let recording = match &self.recording {
            None => Err(None),
            Some(ch) => {
                let mut client = RecordingServiceClient::new(ch.clone());
                let mut out = Vec::new();
                let mut failed = None;
                'contacts: for id in contacts {
                    let mut token = String::new();
                    for _ in 0..MAX_PAGES {
                        let req = rpb::ListRecordingsRequest {
                            contact_id: id.clone(),
                            page_size: 100,
                            page_token: token.clone(),
                        };
                        match client.list_recordings(authed(tonic::Request::new(req), authorization)).await {
                            Ok(r) => {
                                let r = r.into_inner();
                                out.extend(r.recordings.iter().map(recording_json));
                                if r.next_page_token.is_empty() {
                                    break;
                                }
                                token = r.next_page_token;
                            }
                            Err(s) if s.code() == Code::NotFound => continue 'contacts,
                            Err(s) => {
                                failed = Some(s);
                                break 'contacts;
                            }
                        }
                    }
                }
                failed.map_or(Ok(json!({ "recordings": out })), |s| Err(Some(s)))
            }
        };
        let mut complete = true;
        let mut section = |r: Result<Value, Option<Status>>| match r {
            Ok(mut v) => {
                v["state"] = json!("included");
                v
            }
            Err(None) => {
                complete = false;
                json!({ "state": "not_configured" })
            }
            Err(Some(s)) => {
                complete = false;
                json!({ "state": "unavailable", "code": format!("{:?}", s.code()), "message": s.message() })
            }
        };
        let doc = json!({
            "sessions": section(sessions),
            "media": section(media),
            "recording": section(recording),
        });
        (doc, complete)
    }
}

/// `r` as a request carrying the caller's `authorization`, with the call timeout.
fn authed<T>(mut r: tonic::Request<T>, authorization: Option<&MetadataValue<Ascii>>) -> tonic::Request<T> {
    if let Some(a) = authorization {
        r.metadata_mut().insert("authorization", a.clone());
    }
    r.set_timeout(CALL_TIMEOUT);
    r
}

fn time(t: Option<DateTime<Utc>>) -> Value {
    t.map_or(Value::Null, |d| json!(d.to_rfc3339()))
}

fn contact_json(c: &spb::Contact) -> Value {
    let identities: Vec<Value> = c
        .customer_identities
        .iter()
        .map(|i| {
            let kind = centralita_proto::crm::v1::IdentityKind::try_from(i.kind)
                .map(|k| k.as_str_name().to_ascii_lowercase())
                .unwrap_or_default();
            json!({ "kind": kind.trim_start_matches("identity_kind_"), "value": i.value, "network": i.network })
        })
        .collect();
    let state = spb::ContactState::try_from(c.state).map(|s| s.as_str_name()).unwrap_or("");
    json!({
        "contact": c.name, "channel": c.channel, "queue": c.queue, "state": state,
        "customer_identities": identities, "attributes": c.attributes, "language": c.language,
        "agent_id": c.agent_id, "previous_agents": c.previous_agents, "disposition": c.disposition,
        "wrap_up_notes": c.wrap_up_notes,
        "create_time": time(c.create_time.as_ref().and_then(from_timestamp)), "connect_time": time(c.connect_time.as_ref().and_then(from_timestamp)),
        "end_time": time(c.end_time.as_ref().and_then(from_timestamp)), "close_time": time(c.close_time.as_ref().and_then(from_timestamp)),
    })
}

fn message_json(m: &mpb::Message) -> Value {
    let sender = mpb::SenderKind::try_from(m.sender).map(|s| s.as_str_name()).unwrap_or("");
    let status = mpb::DeliveryStatus::try_from(m.status).map(|s| s.as_str_name()).unwrap_or("");
    json!({
        "sequence": m.sequence, "sender": sender, "agent_id": m.agent_id, "text": m.text, "status": status,
        "failure_reason": m.failure_reason, "create_time": time(m.create_time.as_ref().and_then(from_timestamp)),
    })
}

fn recording_json(r: &rpb::Recording) -> Value {
    let state = rpb::RecordingState::try_from(r.state).map(|s| s.as_str_name()).unwrap_or("");
    json!({
        "recording": r.name, "contact_id": r.contact_id, "queue": r.queue, "agent_ids": r.agent_ids,
        "start_time": time(r.start_time.as_ref().and_then(from_timestamp)), "duration_seconds": r.duration.as_ref().map(|d| d.seconds),
        "state": state, "legal_hold": r.legal_hold, "legal_hold_reason": r.legal_hold_reason,
        "expire_time": time(r.expire_time.as_ref().and_then(from_timestamp)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_contact_record_in_the_export_holds_what_sessions_keeps_of_the_person() {
        let c = spb::Contact {
            name: "tenants/acme/contacts/c1".into(),
            customer_identities: vec![centralita_proto::crm::v1::Identity {
                kind: centralita_proto::crm::v1::IdentityKind::Phone as i32,
                value: "+34600111222".into(),
                network: String::new(),
            }],
            attributes: [("account_holder".to_owned(), "Ana".to_owned())].into(),
            wrap_up_notes: "call back on Monday".into(),
            ..Default::default()
        };
        let v = contact_json(&c);
        assert_eq!(v["customer_identities"][0]["value"], "+34600111222");
        assert_eq!(
            (v["customer_identities"][0]["kind"].as_str(), v["attributes"]["account_holder"].as_str()),
            (Some("phone"), Some("Ana"))
        );
        assert_eq!(v["wrap_up_notes"], "call back on Monday");
    }
}

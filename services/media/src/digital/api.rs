//! The agents' side: `centralita.media.v1.ConversationService`. Each call names a contact;
//! media asks sessions who holds it ([`super::access::decide`]) before reading or writing.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use centralita_platform::auth::{caller, Caller};
use centralita_platform::error::{Error, Reason};
use centralita_platform::page;
use centralita_platform::tenant::{parse_contact_name, TenantId};
use centralita_proto::media::v1 as pb;
use pb::conversation_service_server::ConversationService;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::access::{decide, Access, Denied};
use super::attachments;
use super::follow::{Follower, Update};
use super::meta;
use super::model::{check_request_id, check_text, Kind, Message, NewAttachment, NewMessage, Sender};
use super::store::Party;
use super::{wire, Digital};
use centralita_proto::tenancy::v1::Channel as PbChannel;

type R<T> = Result<Response<T>, Status>;

/// Default and largest page of ListMessages.
const DEFAULT_PAGE: i64 = 100;
const MAX_PAGE: i64 = 500;
/// How often an open stream asks sessions again whether its caller still holds the contact.
const RECHECK: Duration = Duration::from_secs(3);
/// The page-token tag of ListMessages.
const PAGE_TAG: &str = "m1";

#[derive(Debug, Clone)]
pub struct Api {
    pub digital: Arc<Digital>,
    /// Sends agents' messages of SMS conversations to the provider.
    pub sms: Arc<super::sms::Sms>,
    /// Sends agents' messages of WhatsApp conversations through Meta's Cloud API.
    pub whatsapp: Arc<super::whatsapp::WhatsApp>,
    /// Sends agents' messages of Telegram conversations through the Bot API.
    pub telegram: Arc<super::telegram::Telegram>,
    /// Sends agents' messages of Messenger and Instagram conversations through the Send API.
    pub messenger: Arc<super::pages::Pages>,
    pub instagram: Arc<super::pages::Pages>,
    /// Sends agents' messages of email conversations through the tenant's relay.
    pub email: Arc<super::email::Email>,
}

fn denied(d: Denied) -> Error {
    let (reason, message) = match d {
        Denied::OtherTenant => (Reason::WrongTenant, "this conversation is of another tenant"),
        Denied::NotHolder => (Reason::NotContactHolder, "only the agent holding this contact may use its conversation"),
        Denied::Role => {
            (Reason::RoleMissing, "this call needs an agent holding the contact, a supervisor or a tenant admin")
        }
    };
    Error::PermissionDenied { reason, message: message.into() }
}

impl Digital {
    /// The tenant and contact id of `parent` if the caller may use its conversation.
    pub(crate) async fn authorize(&self, caller: &Caller, parent: &str) -> Result<(TenantId, String, Access), Error> {
        let (tenant, contact) = parse_contact_name("parent", parent)?;
        // Refuse another tenant's caller before asking anyone anything about the contact.
        if caller.tenant.as_ref().is_some_and(|t| *t != tenant) {
            return Err(denied(Denied::OtherTenant));
        }
        let view = self.contacts.view(&tenant, &contact).await?;
        let access = decide(caller, &tenant, view.as_ref()).map_err(denied)?;
        Ok((tenant, contact, access))
    }
}

impl Api {
    /// An agent's new message of a provider or email conversation goes to the provider or
    /// relay too (a repeated request was sent, or failed, the first time); a web chat's
    /// customer reads it from the conversation.
    fn deliver(&self, channel: Option<String>, tenant: &TenantId, contact: &str, stored: &Message) {
        let (tenant, contact, stored) = (tenant.clone(), contact.to_owned(), stored.clone());
        match channel.as_deref() {
            Some(super::store::SMS) => {
                tokio::spawn(self.sms.clone().send(tenant, contact, stored));
            }
            Some(super::store::WHATSAPP) => {
                tokio::spawn(self.whatsapp.clone().send(tenant, contact, stored));
            }
            Some(super::store::TELEGRAM) => {
                tokio::spawn(self.telegram.clone().send(tenant, contact, stored));
            }
            Some(super::store::MESSENGER) => {
                tokio::spawn(self.messenger.clone().send(tenant, contact, stored));
            }
            Some(super::store::INSTAGRAM) => {
                tokio::spawn(self.instagram.clone().send(tenant, contact, stored));
            }
            Some(super::store::EMAIL) => {
                tokio::spawn(self.email.clone().send(tenant, contact, stored));
            }
            _ => {}
        }
    }
}

fn sender_of(access: &Access, caller: &Caller) -> Sender {
    match access {
        Access::Holder(agent) => Sender::Agent(agent.clone()),
        // A supervisor writing in (barge-in) is recorded under its subject.
        Access::Supervisor => Sender::Agent(caller.agent_id.clone().unwrap_or_else(|| caller.subject.clone())),
    }
}

#[tonic::async_trait]
impl ConversationService for Api {
    async fn list_messages(&self, request: Request<pb::ListMessagesRequest>) -> R<pb::ListMessagesResponse> {
        let caller = caller(&request)?.clone();
        let req = request.into_inner();
        let (tenant, contact, _) = self.digital.authorize(&caller, &req.parent).await?;
        let size = match req.page_size {
            n if n < 0 => return Err(Error::invalid("page_size", "must not be negative").into()),
            0 => DEFAULT_PAGE,
            n => i64::from(n).min(MAX_PAGE),
        };
        let after = match page::untag(PAGE_TAG, &req.page_token)? {
            Some(p) => p.parse::<i64>().map_err(|_| Error::invalid("page_token", "is not a token from this API"))?,
            None if req.after_sequence < 0 => {
                return Err(Error::invalid("after_sequence", "must not be negative").into())
            }
            None => req.after_sequence,
        };
        let mut messages = super::store::messages_after(&self.digital.pool, &tenant, &contact, after, size + 1).await?;
        let more = messages.len() as i64 > size;
        messages.truncate(size as usize);
        let next_page_token = match (more, messages.last()) {
            (true, Some(last)) => page::tagged(PAGE_TAG, &last.sequence.to_string()),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListMessagesResponse {
            messages: messages.iter().map(|m| wire::message(tenant.as_str(), &contact, m)).collect(),
            next_page_token,
        }))
    }

    type StreamMessagesStream = Pin<Box<dyn Stream<Item = Result<pb::StreamMessagesResponse, Status>> + Send>>;

    async fn stream_messages(&self, request: Request<pb::StreamMessagesRequest>) -> R<Self::StreamMessagesStream> {
        let caller = caller(&request)?.clone();
        let req = request.into_inner();
        if req.after_sequence < 0 {
            return Err(Error::invalid("after_sequence", "must not be negative").into());
        }
        let (tenant, contact, _) = self.digital.authorize(&caller, &req.parent).await?;
        let digital = self.digital.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let mut follower =
            Follower::new(&digital.hub, tenant.clone(), contact.clone(), Party::Agent, req.after_sequence);
        digital.metrics.stream_opened();
        tokio::spawn(async move {
            let mut checked = Instant::now();
            loop {
                let updates = tokio::select! {
                    _ = tx.closed() => break,
                    u = follower.next(&digital.pool) => u,
                };
                let updates = match updates {
                    Ok(u) => u,
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(e))).await;
                        break;
                    }
                };
                for u in updates {
                    let event = match u {
                        Update::Message(m) => {
                            pb::stream_messages_response::Event::Message(wire::message(tenant.as_str(), &contact, &m))
                        }
                        Update::Typing(active) => pb::stream_messages_response::Event::Typing(pb::Typing {
                            sender: pb::SenderKind::Customer as i32,
                            active,
                        }),
                        Update::Read(sequence) => pb::stream_messages_response::Event::Read(pb::ReadMarker {
                            reader: pb::SenderKind::Customer as i32,
                            sequence,
                        }),
                    };
                    if tx.send(Ok(pb::StreamMessagesResponse { event: Some(event) })).await.is_err() {
                        digital.metrics.stream_closed();
                        return;
                    }
                }
                // The caller must still hold the contact (or be a supervisor): once it ends or
                // moves to another agent the stream ends, with the reason.
                if checked.elapsed() >= RECHECK {
                    checked = Instant::now();
                    if let Err(e) = digital
                        .authorize(&caller, &centralita_platform::tenant::contact_name(tenant.as_str(), &contact))
                        .await
                    {
                        if matches!(e, Error::PermissionDenied { .. }) {
                            let _ = tx.send(Err(Status::from(e))).await;
                            break;
                        }
                    }
                }
            }
            digital.metrics.stream_closed();
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn send_message(&self, request: Request<pb::SendMessageRequest>) -> R<pb::Message> {
        let caller = caller(&request)?.clone();
        let req = request.into_inner();
        let template = match &req.template {
            Some(t) => {
                if !req.text.is_empty() {
                    return Err(Error::invalid("text", "must be empty with a template").into());
                }
                Some(
                    meta::template(&t.name, &t.language, &t.parameters)
                        .map_err(|f| Error::invalid(f.field, f.message))?,
                )
            }
            None => {
                check_text(&req.text).map_err(|r| Error::invalid("text", r.describe()))?;
                None
            }
        };
        if !check_request_id(&req.request_id) {
            return Err(Error::invalid("request_id", "must be up to 64 of A-Z a-z 0-9 - _ .").into());
        }
        let (tenant, contact, access) = self.digital.authorize(&caller, &req.parent).await?;
        let conversation = super::store::conversation(&self.digital.pool, &tenant, &contact).await?;
        let (channel, visitor) = conversation.map(|c| (Some(c.channel), c.visitor)).unwrap_or_default();
        if template.is_some() && channel.as_deref() != Some(super::store::WHATSAPP) {
            return Err(Error::FailedPrecondition("templates are sent on WhatsApp conversations only".into()).into());
        }
        // WhatsApp: a template at any time, a text within 24 hours of the customer's last
        // message. Messenger and Instagram: a text within 7 days (tagged HUMAN_AGENT after
        // the first day).
        let closed = match (channel.as_deref(), &template) {
            (_, Some(_)) => None,
            (Some(super::store::WHATSAPP), None) => (!self.whatsapp.may_write(&tenant, &contact).await?).then_some(
                "WhatsApp's 24-hour customer-service window is closed (the customer last wrote more than a day \
                 ago): only approved templates may be sent",
            ),
            (Some(network @ (super::store::MESSENGER | super::store::INSTAGRAM)), None) => {
                let pages = if network == super::store::MESSENGER { &self.messenger } else { &self.instagram };
                pages.may_write(&tenant, &contact).await?.is_none().then_some(
                    "the Messenger Platform's 7-day human-agent window is closed (the customer last wrote more \
                     than 7 days ago)",
                )
            }
            _ => None,
        };
        if let Some(why) = closed {
            return Err(Error::FailedPrecondition(why.into()).into());
        }
        // WhatsApp has no carrier blocking: a customer who opted out (a keyword, or marked
        // do-not-contact in CRM) gets nothing more from us there.
        if channel.as_deref() == Some(super::store::WHATSAPP) {
            if let Err(why) = self.digital.contacts.may_message(&tenant, &visitor, PbChannel::Social).await? {
                return Err(
                    Error::FailedPrecondition(format!("the customer may not be messaged on WhatsApp: {why}")).into()
                );
            }
        }
        let m = NewMessage {
            sender: sender_of(&access, &caller),
            kind: Kind::Text,
            text: template.as_ref().map_or(req.text, meta::Template::describe),
            provider_time: None,
            request_id: req.request_id,
            attachment: None,
        };
        let (stored, created) = self.digital.append_new(&tenant, &contact, &m).await?;
        if created {
            match template {
                Some(t) => {
                    tokio::spawn(self.whatsapp.clone().send_template(
                        tenant.clone(),
                        contact.clone(),
                        stored.clone(),
                        t,
                    ));
                }
                None => self.deliver(channel, &tenant, &contact, &stored),
            }
        }
        Ok(Response::new(wire::message(tenant.as_str(), &contact, &stored)))
    }

    async fn send_attachment(&self, request: Request<pb::SendAttachmentRequest>) -> R<pb::Message> {
        let caller = caller(&request)?.clone();
        let req = request.into_inner();
        let checked = attachments::check(&req.file_name, &req.content_type, &req.data)
            .map_err(|r| Error::invalid(r.field(), r.describe()))?;
        if !check_request_id(&req.request_id) {
            return Err(Error::invalid("request_id", "must be up to 64 of A-Z a-z 0-9 - _ .").into());
        }
        let (tenant, contact, access) = self.digital.authorize(&caller, &req.parent).await?;
        let conversation = super::store::conversation(&self.digital.pool, &tenant, &contact).await?;
        let channel = conversation.map(|c| c.channel);
        if !channel.as_deref().is_some_and(|c| c == super::store::WEBCHAT || c == super::store::EMAIL) {
            return Err(Error::FailedPrecondition(
                "files go out on web chat and email conversations only (a provider channel takes text)".into(),
            )
            .into());
        }
        let m = NewMessage {
            sender: sender_of(&access, &caller),
            kind: Kind::Attachment,
            text: checked.name.clone(),
            provider_time: None,
            request_id: req.request_id,
            attachment: Some(NewAttachment {
                name: checked.name,
                content_type: checked.content_type,
                sha256: checked.sha256,
                data: req.data,
            }),
        };
        let (stored, created) = self.digital.append_new(&tenant, &contact, &m).await?;
        if created {
            self.deliver(channel, &tenant, &contact, &stored);
        }
        Ok(Response::new(wire::message(tenant.as_str(), &contact, &stored)))
    }

    async fn get_attachment(&self, request: Request<pb::GetAttachmentRequest>) -> R<pb::AttachmentContent> {
        let caller = caller(&request)?.clone();
        let req = request.into_inner();
        let bad = || Error::invalid("name", "must be `tenants/{tenant}/contacts/{contact}/attachments/{attachment}`");
        let (parent, id) = req.name.rsplit_once("/attachments/").ok_or_else(bad)?;
        if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(bad().into());
        }
        let (tenant, contact, _) = self.digital.authorize(&caller, parent).await?;
        let (meta, data) = super::store::attachment(&self.digital.pool, &tenant, &contact, id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("attachment {}", req.name)))?;
        Ok(Response::new(pb::AttachmentContent {
            attachment: Some(wire::attachment(tenant.as_str(), &contact, &meta)),
            data,
        }))
    }

    async fn send_typing(&self, request: Request<pb::SendTypingRequest>) -> R<pb::SendTypingResponse> {
        let caller = caller(&request)?.clone();
        let req = request.into_inner();
        let (tenant, contact, _) = self.digital.authorize(&caller, &req.parent).await?;
        self.digital.typing(&tenant, &contact, Party::Agent, req.active).await?;
        Ok(Response::new(pb::SendTypingResponse {}))
    }

    async fn mark_read(&self, request: Request<pb::MarkReadRequest>) -> R<pb::MarkReadResponse> {
        let caller = caller(&request)?.clone();
        let req = request.into_inner();
        if req.sequence < 0 {
            return Err(Error::invalid("sequence", "must not be negative").into());
        }
        let (tenant, contact, _) = self.digital.authorize(&caller, &req.parent).await?;
        self.digital.mark(&tenant, &contact, Party::Agent, req.sequence, super::model::Status::Read).await?;
        Ok(Response::new(pb::MarkReadResponse {}))
    }
}

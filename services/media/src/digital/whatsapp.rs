//! WhatsApp through Meta's Cloud API: the webhook (subscription handshake, inbound messages
//! and status reports) on the customers' front door beside the web chat and SMS, and the
//! outbound sends of agents' messages. A WhatsApp conversation is a contact of channel
//! `social`; its customer is resolved by phone number, so the CRM finds the same customer
//! as their calls and SMS.
//!
//! - `GET /whatsapp/{tenant}`: Meta's subscription handshake: the `hub.challenge` echoed
//!   when `hub.verify_token` is the tenant's (403 otherwise).
//! - `POST /whatsapp/{tenant}`: a delivery. Checked in this order: the tenant has a
//!   WhatsApp channel (404), the `X-Hub-Signature-256` of the raw body under the tenant's
//!   app secret (401, nothing read further and nothing stored), the JSON (400), every
//!   message for one of the tenant's numbers (404, nothing stored). Each message not seen
//!   before (Meta's id; a redelivery stores nothing) lands in the customer's open WhatsApp
//!   conversation with that number, or a new contact in sessions; each status report of one
//!   of the tenant's sent messages is applied through the delivery-status lattice (reordered
//!   and repeated reports change nothing). Answered 200 at once. A customer's image,
//!   document, voice note, video or sticker is looked up by its media id and downloaded
//!   only from the configured media hosts (no redirects followed; `CENTRALITA_WHATSAPP_MEDIA_HOSTS`
//!   and the base URL's host), checked like every file ([`super::attachments`]) and kept in
//!   the conversation; a download outage answers 503 with nothing stored (Meta delivers
//!   again); a file never to be taken is a line saying why.
//! - Outbound: an agent's message is sent to `{base}/{version}/{phone_number_id}/messages`
//!   with the access token, retried with exponential backoff on network errors, 429 and 5xx;
//!   a 4xx refusal or the last failed attempt marks the message `failed` with the reason.
//!   WhatsApp's 24-hour customer-service window is enforced before anything is stored: more
//!   than a day after the customer's last message an agent's text is refused
//!   (FAILED_PRECONDITION); an approved template (`SendMessageRequest.template`) may be sent
//!   at any time.
//! - Consent: a customer's whole message `STOP`, `BAJA`, … (or `START`, `ALTA`) is recorded in
//!   CRM's consent ledger (channel `social`, purpose `messaging`) before it is stored, with a
//!   notice in the conversation; while the customer has withdrawn consent (or is marked
//!   do-not-contact) every agent's text and template is refused (FAILED_PRECONDITION).
//!
//! The secrets are read from `{CENTRALITA_WHATSAPP_SECRETS_DIR}/{secretName}/appSecret`,
//! `accessToken` and `verifyToken` (the tenant's Secret mounted as a volume; locally files
//! the tests write) on each use, so a rotated Secret applies without a restart. Never logged.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use centralita_platform::error::Error;
use centralita_platform::registry::TenantRegistry;
use centralita_platform::tenant::{TenantId, WhatsApp as WhatsAppChannel};
use chrono::Utc;

use super::attachments;
use super::contacts::ByPhone;
use super::meta::{self, Inbound, MediaRef, Template};
use super::model::{Kind, Message, NewAttachment, NewMessage, Sender};
use super::outbound;
use super::provider::{self, MediaError, Refusal, Subscribe};
use super::store;
use super::twilio::Consent;
use super::Digital;
use centralita_proto::tenancy::v1::Channel as PbChannel;

/// The WhatsApp settings of the digital role.
#[derive(Debug, Clone)]
pub struct WhatsAppSettings {
    /// Where the tenants' Secrets are mounted (`{dir}/{secret}/{key}`).
    pub secrets_dir: Option<PathBuf>,
    /// The Cloud API (`https://graph.facebook.com`).
    pub base_url: String,
    /// The Graph API version in the path (`v21.0`).
    pub api_version: String,
    /// The only hosts a customer's media is downloaded from (the base URL's and Meta's
    /// media host).
    pub media_hosts: Vec<String>,
    /// Attempts of one send (at least 1).
    pub attempts: u32,
    /// The wait after the first failed attempt; doubled after each.
    pub backoff: Duration,
}

/// The WhatsApp adapter's state.
#[derive(Debug)]
pub struct WhatsApp {
    pub digital: Arc<Digital>,
    pub registry: TenantRegistry,
    pub settings: WhatsAppSettings,
    http: reqwest::Client,
    media_http: reqwest::Client,
}

fn unavailable(e: Error) -> Refusal {
    provider::not_taken(e, "unknown_number", "whatsapp")
}

impl WhatsApp {
    pub fn new(digital: Arc<Digital>, registry: TenantRegistry, settings: WhatsAppSettings) -> Result<Self, Error> {
        Ok(Self { digital, registry, settings, http: provider::http_client()?, media_http: provider::media_client()? })
    }

    /// The tenant's WhatsApp channel, if it has one.
    fn channel(&self, tenant: &str) -> Result<(TenantId, WhatsAppChannel), Refusal> {
        let unknown = || Refusal(StatusCode::NOT_FOUND, "unknown_number", "no WhatsApp here".into());
        let id = TenantId::parse(tenant).map_err(|_| unknown())?;
        let t = self.registry.get(&id).ok_or_else(unknown)?;
        let w = t.whatsapp.clone().ok_or_else(unknown)?;
        Ok((id, w))
    }

    /// One key of the channel's Secret.
    fn secret(&self, w: &WhatsAppChannel, key: &str) -> Result<String, Error> {
        let dir = self.settings.secrets_dir.as_ref();
        provider::read_secret(dir, "CENTRALITA_WHATSAPP_SECRETS_DIR", &w.secret_name, key, "WhatsApp")
    }

    /// Whether an agent may write freely in the conversation now (the customer wrote less
    /// than a day ago).
    pub async fn may_write(&self, tenant: &TenantId, contact: &str) -> Result<bool, Error> {
        let last = store::last_from_customer(&self.digital.pool, tenant, contact).await?;
        Ok(meta::within_window(last, Utc::now()))
    }

    /// Stores a verified inbound message of one of the channel's numbers; whether it was new.
    async fn receive(&self, tenant: &TenantId, w: &WhatsAppChannel, m: &Inbound) -> Result<bool, Refusal> {
        let Some(number) = w.number(&m.phone_number_id) else {
            return Err(Refusal(StatusCode::NOT_FOUND, "unknown_number", "not a number of this tenant".into()));
        };
        let origin = number.number.as_str();
        let d = &self.digital;
        if store::sms_known(&d.pool, tenant, &m.message_id).await.map_err(unavailable)? {
            return Ok(false);
        }
        // A file is downloaded first: an outage is answered 503 (Meta delivers the webhook
        // again) before anything is stored; a file that will never be taken is a line saying
        // why instead.
        let (text, file) = match &m.media {
            None => (m.text.clone(), None),
            Some(media) => match self.fetch(w, media).await {
                Ok(file) => (file.name.clone(), Some(file)),
                Err(MediaError::Transient(why)) => {
                    tracing::warn!(tenant = %tenant, why, "WhatsApp media not fetched; the webhook will come again");
                    return Err(Refusal(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "try again later".into()));
                }
                Err(MediaError::Refused(why)) => {
                    d.metrics.whatsapp_webhook("media_refused");
                    (format!("[a WhatsApp {} the platform did not keep: {why}]", media.kind), None)
                }
            },
        };
        // The customer's open conversation with this number continues; else a new contact.
        let create =
            d.contacts.create_by_phone(tenant, ByPhone::WhatsApp, &number.queue, &m.from, origin, &m.message_id);
        let started = "WhatsApp conversation started";
        let contact =
            provider::conversation_for(d, tenant, store::WHATSAPP, &m.from, origin, &number.queue, started, create)
                .await
                .map_err(unavailable)?;
        // A consent keyword goes to CRM's ledger first: if CRM cannot take it, nothing is
        // stored and Meta's redelivery brings it again.
        let keyword = if m.media.is_none() { meta::consent_keyword(&m.text) } else { None };
        if let Some(consent) = keyword {
            let evidence = format!("WhatsApp {} to {origin}: {}", m.message_id, m.text.trim());
            let granted = consent == Consent::OptIn;
            d.contacts
                .record_consent(tenant, &m.from, PbChannel::Social, "whatsapp-keyword", granted, &evidence)
                .await
                .map_err(unavailable)?;
        }
        let new = provider::store_inbound(d, tenant, &contact, &m.message_id, &text, Some(m.time), file)
            .await
            .map_err(unavailable)?;
        if let Some(consent) = keyword {
            let notice = NewMessage {
                sender: Sender::System,
                kind: Kind::Notice,
                text: match consent {
                    Consent::OptOut => "The customer opted out of WhatsApp messages (keyword; recorded in CRM)".into(),
                    Consent::OptIn => {
                        "The customer opted back in to WhatsApp messages (keyword; recorded in CRM)".into()
                    }
                },
                provider_time: None,
                request_id: format!("consent-{}", m.message_id),
                attachment: None,
            };
            d.append(tenant, &contact, &notice).await.map_err(unavailable)?;
        }
        // A file's caption follows it as the customer's text.
        if m.media.is_some() && !m.text.trim().is_empty() {
            let id = format!("{}.caption", m.message_id);
            provider::store_inbound(d, tenant, &contact, &id, &m.text, Some(m.time), None)
                .await
                .map_err(unavailable)?;
        }
        Ok(new)
    }

    /// Looks up a customer's media id with the Cloud API and downloads it from the host the
    /// answer names, if it is one of [`WhatsAppSettings::media_hosts`]; checked as a file
    /// of the conversation.
    async fn fetch(&self, w: &WhatsAppChannel, media: &MediaRef) -> Result<NewAttachment, MediaError> {
        let token = self.secret(w, "accessToken").map_err(|e| MediaError::Transient(e.to_string()))?;
        let lookup =
            format!("{}/{}/{}", self.settings.base_url.trim_end_matches('/'), self.settings.api_version, media.id);
        let (answer, _) =
            provider::fetch_media(&self.media_http, &lookup, &self.settings.media_hosts, |r| r.bearer_auth(&token))
                .await?;
        let answer: serde_json::Value = serde_json::from_slice(&answer)
            .map_err(|_| MediaError::Refused("the media lookup answer is not JSON".into()))?;
        let url = meta::media_url(&answer).ok_or_else(|| MediaError::Refused("the media has no URL".into()))?;
        let (data, given_type) =
            provider::fetch_media(&self.media_http, &url, &self.settings.media_hosts, |r| r.bearer_auth(&token))
                .await?;
        let content_type = if media.mime_type.is_empty() { given_type } else { media.mime_type.clone() };
        let checked = attachments::check(&media.file_name(), &content_type, &data)
            .map_err(|r| MediaError::Refused(r.describe()))?;
        Ok(NewAttachment { name: checked.name, content_type: checked.content_type, sha256: checked.sha256, data })
    }

    /// Sends an agent's message of a WhatsApp conversation, retrying; on the last failure
    /// the message is `failed` with the reason.
    pub async fn send(self: Arc<Self>, tenant: TenantId, contact: String, message: Message) {
        let outcome = self.try_send(&tenant, &contact, &message, None).await;
        let count = |o: &'static str| self.digital.metrics.whatsapp_send(o);
        outbound::settle(&self.digital, &tenant, &contact, &message, outcome, "whatsapp", &count).await;
    }

    /// Sends an approved template (the conversation keeps `message`, which names it), as
    /// [`WhatsApp::send`] does a text.
    pub async fn send_template(self: Arc<Self>, tenant: TenantId, contact: String, message: Message, t: Template) {
        let outcome = self.try_send(&tenant, &contact, &message, Some(&t)).await;
        let count = |o: &'static str| self.digital.metrics.whatsapp_send(o);
        outbound::settle(&self.digital, &tenant, &contact, &message, outcome, "whatsapp", &count).await;
    }

    async fn try_send(
        &self,
        tenant: &TenantId,
        contact: &str,
        message: &Message,
        template: Option<&Template>,
    ) -> Result<String, String> {
        let (_, w) = self.channel(tenant.as_str()).map_err(|_| "the tenant has no WhatsApp channel".to_owned())?;
        let conversation = store::conversation(&self.digital.pool, tenant, contact)
            .await
            .map_err(|e| format!("conversation: {e}"))?
            .ok_or_else(|| "no such conversation".to_owned())?;
        let number_id =
            w.id_of(&conversation.origin).ok_or_else(|| "the number is no longer the tenant's".to_owned())?;
        let token = self.secret(&w, "accessToken").map_err(|e| e.to_string())?;
        let url = format!(
            "{}/{}/{number_id}/messages",
            self.settings.base_url.trim_end_matches('/'),
            self.settings.api_version
        );
        let body = match template {
            Some(t) => meta::template_message(&conversation.visitor, t),
            None => meta::text_message(&conversation.visitor, &message.text),
        };
        let count = |o: &'static str| self.digital.metrics.whatsapp_send(o);
        let retries =
            outbound::Retries { attempts: self.settings.attempts, backoff: self.settings.backoff, count: &count };
        let answer = outbound::post(&retries, || self.http.post(&url).bearer_auth(&token).json(&body)).await?;
        meta::sent_id(&answer).ok_or_else(|| "provider answer has no message id".into())
    }
}

/// The router of the WhatsApp webhook.
pub fn router(state: Arc<WhatsApp>) -> Router {
    Router::new()
        .route("/whatsapp/{tenant}", get(handshake).post(delivery))
        .layer(DefaultBodyLimit::max(meta::MAX_WEBHOOK_BYTES))
        .with_state(state)
}

fn counted(w: &WhatsApp, r: Result<Response, Refusal>) -> Response {
    match r {
        Ok(r) => r,
        Err(refusal) => {
            w.digital.metrics.whatsapp_webhook(refusal.1);
            refusal.into_response()
        }
    }
}

async fn handshake(State(w): State<Arc<WhatsApp>>, Path(tenant): Path<String>, Query(q): Query<Subscribe>) -> Response {
    let r = w.channel(&tenant).and_then(|(id, channel)| {
        let answer = provider::meta_handshake(&id, &q, w.secret(&channel, "verifyToken"))?;
        w.digital.metrics.whatsapp_webhook("subscribed");
        Ok(answer)
    });
    counted(&w, r)
}

async fn delivery(
    State(w): State<Arc<WhatsApp>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = async {
        let (id, channel) = w.channel(&tenant)?;
        provider::meta_signed(&id, &headers, &body, w.secret(&channel, "appSecret"))?;
        let delivery = meta::parse(&body)
            .map_err(|f| Refusal(StatusCode::BAD_REQUEST, "invalid", format!("{}: {}", f.field, f.message)))?;
        if delivery.messages.iter().any(|m| channel.number(&m.phone_number_id).is_none()) {
            return Err(Refusal(StatusCode::NOT_FOUND, "unknown_number", "not a number of this tenant".into()));
        }
        for m in &delivery.messages {
            let new = w.receive(&id, &channel, m).await?;
            w.digital.metrics.whatsapp_webhook(if new { "stored" } else { "duplicate" });
        }
        let d = &w.digital;
        for s in &delivery.statuses {
            // A report of a message this tenant did not send (another installation's, or one
            // erased since) is skipped.
            let Some((contact, seq)) = store::outbound_sms(&d.pool, &id, &s.message_id).await.map_err(unavailable)?
            else {
                continue;
            };
            store::report_status(&d.pool, &id, &contact, seq, s.status, &s.reason, Some(s.time))
                .await
                .map_err(unavailable)?;
            d.written(&id, &contact);
            d.metrics.whatsapp_webhook("status");
        }
        Ok(StatusCode::OK.into_response())
    }
    .await;
    counted(&w, r)
}

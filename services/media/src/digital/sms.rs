//! SMS through Twilio: the inbound webhook and status callbacks on the customers' front door
//! (beside the web chat), and the outbound sends of agents' messages.
//!
//! - `POST /sms/twilio/{tenant}`: an inbound message. Checked in this order: the tenant has
//!   an SMS channel (404), the `X-Twilio-Signature` over the full URL and the form of the raw
//!   body under the tenant's auth token (401, nothing read further and nothing stored), the
//!   form (400), the `To` number is the tenant's (404), the `MessageSid` not seen before (a
//!   redelivery stores nothing and answers 200). The message lands in the customer's open
//!   SMS conversation with that number, or a new SMS contact in sessions (the customer's
//!   E.164 as its phone identity). Answered with empty TwiML.
//! - `POST /sms/twilio/{tenant}/status`: a status callback of an outbound message, signed the
//!   same way, applied through the delivery-status lattice.
//! - Outbound: an agent's message in an SMS conversation is sent with the provider's REST API
//!   at `CENTRALITA_TWILIO_BASE_URL`, retried with exponential backoff on network errors,
//!   429 and 5xx; a 4xx refusal or the last failed attempt marks the message `failed` with
//!   the reason. The provider's id of a sent message is kept for its status callbacks.
//!
//! The auth token is read from `{CENTRALITA_SMS_SECRETS_DIR}/{authTokenSecret}/authToken`
//! (the tenant's Secret mounted as a volume; locally a file the scripts write), on each use,
//! so a rotated Secret applies without a restart. It is never logged.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use centralita_platform::error::Error;
use centralita_platform::registry::TenantRegistry;
use centralita_platform::tenant::{Sms as SmsChannel, TenantId};

use super::attachments;
use super::contacts::ByPhone;
use super::model::NewAttachment;
use super::model::{Kind, Message, NewMessage, Sender};
use super::outbound;
use super::provider::{self, MediaError, Refusal};
use super::store;
use super::twilio::{self, Consent, Inbound, StatusCallback};
use super::Digital;
use centralita_proto::tenancy::v1::Channel as PbChannel;

/// The SMS settings of the digital role.
#[derive(Debug, Clone)]
pub struct SmsSettings {
    /// Where the tenants' auth-token Secrets are mounted (`{dir}/{secret}/authToken`).
    pub secrets_dir: Option<PathBuf>,
    /// The provider's REST API (`https://api.twilio.com`).
    pub base_url: String,
    /// The public base URL the provider calls the webhooks at (`https://hooks.example.com`);
    /// the signature covers it. Without it, `http://` and the request's `Host`.
    pub public_url: Option<String>,
    /// Attempts of one send (at least 1).
    pub attempts: u32,
    /// The wait after the first failed attempt; doubled after each.
    pub backoff: Duration,
    /// The only hosts an MMS's media is downloaded from (the base URL's, Twilio's media
    /// hosts and the storage its media URLs redirect to).
    pub media_hosts: Vec<String>,
}

/// The SMS adapter's state.
#[derive(Debug)]
pub struct Sms {
    pub digital: Arc<Digital>,
    pub registry: TenantRegistry,
    pub settings: SmsSettings,
    http: reqwest::Client,
    media_http: reqwest::Client,
}

fn twiml() -> Response {
    ([(header::CONTENT_TYPE, "text/xml")], twilio::EMPTY_TWIML).into_response()
}

impl Sms {
    pub fn new(digital: Arc<Digital>, registry: TenantRegistry, settings: SmsSettings) -> Result<Self, Error> {
        Ok(Self { digital, registry, settings, http: provider::http_client()?, media_http: provider::media_client()? })
    }

    /// The tenant's SMS channel, if it has one.
    fn channel(&self, tenant: &str) -> Result<(TenantId, SmsChannel), Refusal> {
        let unknown = || Refusal(StatusCode::NOT_FOUND, "unknown_number", "no SMS here".into());
        let id = TenantId::parse(tenant).map_err(|_| unknown())?;
        let t = self.registry.get(&id).ok_or_else(unknown)?;
        let sms = t.sms.clone().ok_or_else(unknown)?;
        Ok((id, sms))
    }

    /// The account's auth token, from its Secret.
    fn auth_token(&self, sms: &SmsChannel) -> Result<String, Error> {
        let dir = self.settings.secrets_dir.as_ref();
        provider::read_secret(dir, "CENTRALITA_SMS_SECRETS_DIR", &sms.auth_token_secret, "authToken", "SMS")
    }

    /// The URL the provider requested, as it signed it.
    fn url(&self, uri: &Uri, headers: &HeaderMap) -> String {
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        match &self.settings.public_url {
            Some(base) => format!("{}{path}", base.trim_end_matches('/')),
            None => {
                let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
                format!("http://{host}{path}")
            }
        }
    }

    /// The tenant, its channel and the verified form of a webhook; nothing else is read
    /// from the body before the signature is checked.
    fn verified(
        &self,
        tenant: &str,
        uri: &Uri,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(TenantId, SmsChannel, twilio::Params), Refusal> {
        let (id, sms) = self.channel(tenant)?;
        let token = self.auth_token(&sms).map_err(|e| {
            tracing::warn!(tenant = %id, error = %e, "cannot check an SMS webhook");
            Refusal(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "try again later".into())
        })?;
        let bad = || Refusal(StatusCode::UNAUTHORIZED, "signature", "the request is not signed for this tenant".into());
        let signature = headers.get(twilio::SIGNATURE_HEADER).and_then(|h| h.to_str().ok()).ok_or_else(bad)?;
        let params = twilio::parse_form(body).map_err(|_| bad())?;
        if !twilio::verify(&token, &self.url(uri, headers), &params, signature) {
            return Err(bad());
        }
        Ok((id, sms, params))
    }

    /// Stores a verified inbound message; whether it was new.
    async fn receive(&self, tenant: &TenantId, sms: &SmsChannel, m: &Inbound) -> Result<bool, Refusal> {
        let Some(queue) = sms.queue_of(&m.to) else {
            return Err(Refusal(StatusCode::NOT_FOUND, "unknown_number", "not a number of this tenant".into()));
        };
        let d = &self.digital;
        if store::sms_known(&d.pool, tenant, &m.message_sid).await.map_err(refusal)? {
            return Ok(false);
        }
        // An MMS's media first: an outage is answered 503 (Twilio retries) before anything
        // is stored; a file never to be taken is a line saying why.
        let mut files = Vec::new();
        for (i, media) in m.media.iter().enumerate() {
            files.push(match self.fetch(sms, media, i).await {
                Ok(f) => Ok(f),
                Err(MediaError::Transient(why)) => {
                    tracing::warn!(tenant = %tenant, why, "MMS media not fetched; Twilio will retry");
                    return Err(Refusal(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "try again later".into()));
                }
                Err(MediaError::Refused(why)) => Err(format!("[an MMS file the platform did not keep: {why}]")),
            });
        }
        // The customer's open conversation with this number continues; else a new contact.
        let create = d.contacts.create_by_phone(tenant, ByPhone::Sms, queue, &m.from, &m.to, &m.message_sid);
        let started = "SMS conversation started";
        let contact = provider::conversation_for(d, tenant, store::SMS, &m.from, &m.to, queue, started, create)
            .await
            .map_err(refusal)?;
        // A consent keyword goes to CRM's ledger first: if CRM cannot take it, nothing is
        // stored and the provider's retry brings it again.
        if let Some(consent) = m.keyword() {
            let evidence = format!("SMS {} to {}: {}", m.message_sid, m.to, m.body.trim());
            d.contacts
                .record_consent(tenant, &m.from, PbChannel::Sms, "sms-keyword", consent == Consent::OptIn, &evidence)
                .await
                .map_err(refusal)?;
        }
        // The text under the message's SID (its dedupe key), each file under `{sid}#{n}`
        // (the first under the SID when there is no text).
        let new = provider::store_inbound_with_files(d, tenant, &contact, &m.message_sid, &m.body, None, files)
            .await
            .map_err(refusal)?;
        if !new {
            return Ok(false);
        }
        if let Some(consent) = m.keyword() {
            let notice = NewMessage {
                sender: Sender::System,
                kind: Kind::Notice,
                text: match consent {
                    Consent::OptOut => "The customer opted out of SMS (keyword; recorded in CRM)".into(),
                    Consent::OptIn => "The customer opted back in to SMS (keyword; recorded in CRM)".into(),
                },
                provider_time: None,
                request_id: format!("consent-{}", m.message_sid),
                attachment: None,
            };
            d.append(tenant, &contact, &notice).await.map_err(refusal)?;
        }
        d.written(tenant, &contact);
        Ok(true)
    }

    /// Downloads one media item of an MMS (with the account's credentials while on Twilio's
    /// API host; never to other hosts than [`SmsSettings::media_hosts`]) as a file.
    async fn fetch(&self, sms: &SmsChannel, media: &twilio::MediaRef, i: usize) -> Result<NewAttachment, MediaError> {
        let token = self.auth_token(sms).map_err(|e| MediaError::Transient(e.to_string()))?;
        let (data, given) = provider::fetch_media(&self.media_http, &media.url, &self.settings.media_hosts, |r| {
            r.basic_auth(&sms.account_sid, Some(&token))
        })
        .await?;
        let content_type = if media.content_type.is_empty() { given } else { media.content_type.clone() };
        let name = format!("mms-{}.{}", i + 1, attachments::extension(&content_type));
        let checked = attachments::check(&name, &content_type, &data).map_err(|r| MediaError::Refused(r.describe()))?;
        Ok(NewAttachment { name: checked.name, content_type: checked.content_type, sha256: checked.sha256, data })
    }

    /// Sends an agent's message of an SMS conversation, retrying; on the last failure the
    /// message is `failed` with the reason.
    pub async fn send(self: Arc<Self>, tenant: TenantId, contact: String, message: Message) {
        let outcome = self.try_send(&tenant, &contact, &message).await;
        let count = |o: &'static str| self.digital.metrics.sms_send(o);
        outbound::settle(&self.digital, &tenant, &contact, &message, outcome, "sms", &count).await;
    }

    async fn try_send(&self, tenant: &TenantId, contact: &str, message: &Message) -> Result<String, String> {
        let (_, sms) = self.channel(tenant.as_str()).map_err(|_| "the tenant has no SMS channel".to_owned())?;
        let conversation = store::conversation(&self.digital.pool, tenant, contact)
            .await
            .map_err(|e| format!("conversation: {e}"))?
            .ok_or_else(|| "no such conversation".to_owned())?;
        let token = self.auth_token(&sms).map_err(|e| e.to_string())?;
        let url = format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            self.settings.base_url.trim_end_matches('/'),
            sms.account_sid
        );
        let mut form = vec![
            ("To", conversation.visitor.clone()),
            ("From", conversation.origin.clone()),
            ("Body", message.text.clone()),
        ];
        if let Some(base) = &self.settings.public_url {
            form.push(("StatusCallback", format!("{}/sms/twilio/{tenant}/status", base.trim_end_matches('/'))));
        }
        let count = |o: &'static str| self.digital.metrics.sms_send(o);
        let retries =
            outbound::Retries { attempts: self.settings.attempts, backoff: self.settings.backoff, count: &count };
        let answer =
            outbound::post(&retries, || self.http.post(&url).basic_auth(&sms.account_sid, Some(&token)).form(&form))
                .await?;
        match answer.get("sid").and_then(|s| s.as_str()) {
            Some(sid) if twilio::is_message_sid(sid) => Ok(sid.to_owned()),
            _ => Err("provider answer has no message sid".into()),
        }
    }
}

fn refusal(e: Error) -> Refusal {
    provider::not_taken(e, "unknown_number", "sms")
}

/// The router of the SMS webhooks.
pub fn router(state: Arc<Sms>) -> Router {
    Router::new()
        .route("/sms/twilio/{tenant}", post(inbound))
        .route("/sms/twilio/{tenant}/status", post(status))
        .layer(DefaultBodyLimit::max(twilio::MAX_WEBHOOK_BYTES))
        .with_state(state)
}

fn counted(sms: &Sms, r: Result<Response, Refusal>) -> Response {
    match r {
        Ok(r) => r,
        Err(refusal) => {
            sms.digital.metrics.sms_webhook(refusal.1);
            refusal.into_response()
        }
    }
}

async fn inbound(
    State(sms): State<Arc<Sms>>,
    Path(tenant): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = async {
        let (id, channel, params) = sms.verified(&tenant, &uri, &headers, &body)?;
        let m = Inbound::parse(&params)
            .map_err(|f| Refusal(StatusCode::BAD_REQUEST, "invalid", format!("{}: {}", f.field, f.message)))?;
        let new = sms.receive(&id, &channel, &m).await?;
        sms.digital.metrics.sms_webhook(if new { "stored" } else { "duplicate" });
        Ok(twiml())
    }
    .await;
    counted(&sms, r)
}

async fn status(
    State(sms): State<Arc<Sms>>,
    Path(tenant): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = async {
        let (id, _, params) = sms.verified(&tenant, &uri, &headers, &body)?;
        let cb = StatusCallback::parse(&params)
            .map_err(|f| Refusal(StatusCode::BAD_REQUEST, "invalid", format!("{}: {}", f.field, f.message)))?;
        let d = &sms.digital;
        let Some((contact, seq)) = store::outbound_sms(&d.pool, &id, &cb.message_sid).await.map_err(refusal)? else {
            return Err(Refusal(StatusCode::NOT_FOUND, "unknown_number", "no such message".into()));
        };
        if let Some(report) = cb.status {
            store::report_status(&d.pool, &id, &contact, seq, report, &cb.reason, None).await.map_err(refusal)?;
            d.written(&id, &contact);
        }
        d.metrics.sms_webhook("status");
        Ok(StatusCode::NO_CONTENT.into_response())
    }
    .await;
    counted(&sms, r)
}

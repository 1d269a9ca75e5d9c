//! Messenger and Instagram through Meta's Messenger Platform: one adapter for both networks
//! (the same webhook scheme, Send API and 24-hour window), each with its own path, manifest
//! section (`spec.messenger`, `spec.instagram`) and CRM network. A conversation is a contact
//! of channel `social`; its customer is a CRM social identity (network `messenger` or
//! `instagram`, the page-scoped id Meta gives the customer).
//!
//! - `GET /{network}/{tenant}`: Meta's subscription handshake (the `hub.challenge` for the
//!   tenant's verify token only, 403 otherwise).
//! - `POST /{network}/{tenant}`: a delivery. Checked in this order: the tenant has the
//!   network (404), the `X-Hub-Signature-256` of the raw body under its app secret (401,
//!   nothing read further and nothing stored), the JSON (400), every message and receipt for
//!   one of the tenant's Pages (404, nothing stored). Each message not seen before (Meta's
//!   `mid`) lands in the customer's open conversation with that Page or a new contact; its
//!   files are downloaded only from Meta's media hosts (`CENTRALITA_MESSENGER_MEDIA_HOSTS`,
//!   no redirects, 5 MiB) and kept as files of the conversation (an outage answers 503 with
//!   nothing stored, so Meta delivers again; a file never to be taken is a line saying why).
//!   Delivery receipts name message ids; read receipts a time (Messenger: everything sent
//!   before it) or a message id (Instagram): applied through the delivery-status lattice.
//! - Outbound: an agent's text goes to `{base}/{version}/{page_id}/messages` with the Page
//!   access token (`messaging_type` `RESPONSE`), retried like the other providers, `failed`
//!   with the reason at the end. Within 24 hours of the customer's last message a reply is a
//!   `RESPONSE`; for 7 days after, it is tagged `HUMAN_AGENT` (a person answering: the app
//!   needs Meta's Human Agent permission); later it is refused before anything is stored.
//!
//! The secrets are read from `{CENTRALITA_MESSENGER_SECRETS_DIR}/{secretName}/appSecret`,
//! `pageAccessToken` and `verifyToken` on each use. Never logged.

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
use centralita_platform::tenant::{Pages as PagesChannel, TenantId};
use chrono::Utc;

use super::attachments;
use super::contacts::BySocial;
use super::messaging::{self, FileRef, Inbound, Network, Receipt};
use super::model::{Message, NewAttachment, Status};
use super::outbound;
use super::provider::{self, MediaError, Refusal, Subscribe};
use super::store::{self, Party};
use super::Digital;

/// The settings of both networks.
#[derive(Debug, Clone)]
pub struct PagesSettings {
    /// Where the tenants' Secrets are mounted (`{dir}/{secret}/{key}`).
    pub secrets_dir: Option<PathBuf>,
    /// The Graph API (`https://graph.facebook.com`).
    pub base_url: String,
    /// The Graph API version in the path (`v21.0`).
    pub api_version: String,
    /// Hosts customers' files are downloaded from (an entry starting with `.` is a domain).
    pub media_hosts: Vec<String>,
    pub attempts: u32,
    pub backoff: Duration,
}

/// One network's adapter.
#[derive(Debug)]
pub struct Pages {
    pub network: Network,
    pub digital: Arc<Digital>,
    pub registry: TenantRegistry,
    pub settings: PagesSettings,
    http: reqwest::Client,
    media_http: reqwest::Client,
}

fn unavailable(e: Error) -> Refusal {
    provider::not_taken(e, "unknown_page", "messenger platform")
}

impl Pages {
    pub fn new(
        network: Network,
        digital: Arc<Digital>,
        registry: TenantRegistry,
        settings: PagesSettings,
    ) -> Result<Self, Error> {
        Ok(Self {
            network,
            digital,
            registry,
            settings,
            http: provider::http_client()?,
            media_http: provider::media_client()?,
        })
    }

    /// The conversations' channel name.
    fn channel_name(&self) -> &'static str {
        match self.network {
            Network::Messenger => store::MESSENGER,
            Network::Instagram => store::INSTAGRAM,
        }
    }

    fn count(&self, outcome: &'static str) {
        self.digital.metrics.page_webhook(self.network, outcome);
    }

    /// The tenant's Pages of this network, if it has any.
    fn channel(&self, tenant: &str) -> Result<(TenantId, PagesChannel), Refusal> {
        let unknown = || Refusal(StatusCode::NOT_FOUND, "unknown_page", format!("no {} here", self.network.title()));
        let id = TenantId::parse(tenant).map_err(|_| unknown())?;
        let t = self.registry.get(&id).ok_or_else(unknown)?;
        let pages = match self.network {
            Network::Messenger => t.messenger.clone(),
            Network::Instagram => t.instagram.clone(),
        };
        Ok((id, pages.ok_or_else(unknown)?))
    }

    fn secret(&self, pages: &PagesChannel, key: &str) -> Result<String, Error> {
        let dir = self.settings.secrets_dir.as_ref();
        provider::read_secret(dir, "CENTRALITA_MESSENGER_SECRETS_DIR", &pages.secret_name, key, self.network.title())
    }

    /// How an agent may reply in the conversation now ([`messaging::reply`]): `None` more
    /// than 7 days after the customer's last message.
    pub async fn may_write(&self, tenant: &TenantId, contact: &str) -> Result<Option<messaging::Reply>, Error> {
        let last = store::last_from_customer(&self.digital.pool, tenant, contact).await?;
        Ok(messaging::reply(last, Utc::now()))
    }

    /// Downloads a customer's file from Meta's media hosts and checks it.
    async fn fetch(&self, file: &FileRef) -> Result<NewAttachment, MediaError> {
        let (data, content_type) =
            provider::fetch_media(&self.media_http, &file.url, &self.settings.media_hosts, |r| r).await?;
        let name = file.file_name(self.network, &content_type);
        let checked = attachments::check(&name, &content_type, &data).map_err(|r| MediaError::Refused(r.describe()))?;
        Ok(NewAttachment { name: checked.name, content_type: checked.content_type, sha256: checked.sha256, data })
    }

    /// Stores a verified message to one of the tenant's Pages; whether it was new.
    async fn receive(&self, tenant: &TenantId, queue: &str, m: &Inbound) -> Result<bool, Refusal> {
        let d = &self.digital;
        if store::sms_known(&d.pool, tenant, &m.message_id).await.map_err(unavailable)? {
            return Ok(false);
        }
        // Files first: an outage is answered 503 before anything is stored.
        let mut files = Vec::new();
        for f in &m.files {
            files.push(match self.fetch(f).await {
                Ok(file) => Ok(file),
                Err(MediaError::Transient(why)) => {
                    tracing::warn!(tenant = %tenant, why, "customer's file not fetched; the webhook will come again");
                    return Err(Refusal(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "try again later".into()));
                }
                Err(MediaError::Refused(why)) => {
                    self.count("media_refused");
                    Err(format!("[a {} {} the platform did not keep: {why}]", self.network.title(), f.kind))
                }
            });
        }
        let via = match self.network {
            Network::Messenger => BySocial::Messenger,
            Network::Instagram => BySocial::Instagram,
        };
        let notice = format!("{} conversation started", self.network.title());
        let create = d.contacts.create_by_social(tenant, via, queue, &m.sender, &m.page_id, &m.message_id);
        let contact =
            provider::conversation_for(d, tenant, self.channel_name(), &m.sender, &m.page_id, queue, &notice, create)
                .await
                .map_err(unavailable)?;
        // The text under the message id (its dedupe key), each file under `{mid}#{n}`.
        let new = provider::store_inbound_with_files(d, tenant, &contact, &m.message_id, &m.text, Some(m.time), files)
            .await
            .map_err(unavailable)?;
        Ok(new)
    }

    /// Applies a receipt of the business's messages to the customer's conversation.
    async fn receipt(&self, tenant: &TenantId, r: &messaging::ReceiptOf) -> Result<(), Refusal> {
        let d = &self.digital;
        match &r.receipt {
            Receipt::Delivered(mids) => {
                for mid in mids {
                    if let Some((contact, seq)) =
                        store::outbound_sms(&d.pool, tenant, mid).await.map_err(unavailable)?
                    {
                        store::report_status(&d.pool, tenant, &contact, seq, Status::Delivered, "", None)
                            .await
                            .map_err(unavailable)?;
                        d.written(tenant, &contact);
                    }
                }
            }
            Receipt::ReadMessage(mid) => {
                if let Some((contact, seq)) = store::outbound_sms(&d.pool, tenant, mid).await.map_err(unavailable)? {
                    d.mark(tenant, &contact, Party::Customer, seq, Status::Read).await.map_err(unavailable)?;
                }
            }
            Receipt::ReadUntil(time) => {
                let latest = store::latest_conversation(&d.pool, tenant, self.channel_name(), &r.customer, &r.page_id)
                    .await
                    .map_err(unavailable)?;
                if let Some(contact) = latest {
                    if let Some(seq) =
                        store::last_sent_until(&d.pool, tenant, &contact, *time).await.map_err(unavailable)?
                    {
                        d.mark(tenant, &contact, Party::Customer, seq, Status::Read).await.map_err(unavailable)?;
                    }
                }
            }
        }
        self.count("receipt");
        Ok(())
    }

    /// Sends an agent's message, retrying; on the last failure the message is `failed` with
    /// the reason.
    pub async fn send(self: Arc<Self>, tenant: TenantId, contact: String, message: Message) {
        let outcome = self.try_send(&tenant, &contact, &message).await;
        let network = self.network;
        let count = |o: &'static str| self.digital.metrics.page_send(network, o);
        outbound::settle(&self.digital, &tenant, &contact, &message, outcome, network.name(), &count).await;
    }

    async fn try_send(&self, tenant: &TenantId, contact: &str, message: &Message) -> Result<String, String> {
        let (_, pages) =
            self.channel(tenant.as_str()).map_err(|_| format!("the tenant has no {} channel", self.network.title()))?;
        let conversation = store::conversation(&self.digital.pool, tenant, contact)
            .await
            .map_err(|e| format!("conversation: {e}"))?
            .ok_or_else(|| "no such conversation".to_owned())?;
        if pages.queue(&conversation.origin).is_none() {
            return Err("the page is no longer the tenant's".into());
        }
        let token = self.secret(&pages, "pageAccessToken").map_err(|e| e.to_string())?;
        let url = format!(
            "{}/{}/{}/messages",
            self.settings.base_url.trim_end_matches('/'),
            self.settings.api_version,
            conversation.origin
        );
        // The window is read again at send time (a retry an hour later may need the tag).
        let reply = self
            .may_write(tenant, contact)
            .await
            .map_err(|e| format!("conversation: {e}"))?
            .ok_or_else(|| "the 7-day window to reply closed before the message went".to_owned())?;
        let body = messaging::text_message(&conversation.visitor, &message.text, reply);
        let network = self.network;
        let count = |o: &'static str| self.digital.metrics.page_send(network, o);
        let retries =
            outbound::Retries { attempts: self.settings.attempts, backoff: self.settings.backoff, count: &count };
        let answer = outbound::post(&retries, || self.http.post(&url).bearer_auth(&token).json(&body)).await?;
        messaging::sent_id(&answer).ok_or_else(|| "provider answer has no message id".into())
    }
}

/// The router of one network's webhook (`/messenger/{tenant}` or `/instagram/{tenant}`).
pub fn router(state: Arc<Pages>) -> Router {
    let path = format!("/{}/{{tenant}}", state.network.name());
    Router::new()
        .route(&path, get(handshake).post(delivery))
        .layer(DefaultBodyLimit::max(messaging::MAX_WEBHOOK_BYTES))
        .with_state(state)
}

fn counted(p: &Pages, r: Result<Response, Refusal>) -> Response {
    match r {
        Ok(r) => r,
        Err(refusal) => {
            p.count(refusal.1);
            refusal.into_response()
        }
    }
}

async fn handshake(State(p): State<Arc<Pages>>, Path(tenant): Path<String>, Query(q): Query<Subscribe>) -> Response {
    let r = p.channel(&tenant).and_then(|(id, pages)| {
        let answer = provider::meta_handshake(&id, &q, p.secret(&pages, "verifyToken"))?;
        p.count("subscribed");
        Ok(answer)
    });
    counted(&p, r)
}

async fn delivery(
    State(p): State<Arc<Pages>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = async {
        let (id, pages) = p.channel(&tenant)?;
        provider::meta_signed(&id, &headers, &body, p.secret(&pages, "appSecret"))?;
        let delivery = messaging::parse(p.network, &body)
            .map_err(|f| Refusal(StatusCode::BAD_REQUEST, "invalid", format!("{}: {}", f.field, f.message)))?;
        let pages_named =
            delivery.messages.iter().map(|m| &m.page_id).chain(delivery.receipts.iter().map(|r| &r.page_id));
        for page in pages_named {
            if pages.queue(page).is_none() {
                return Err(Refusal(StatusCode::NOT_FOUND, "unknown_page", "not a page of this tenant".into()));
            }
        }
        for m in &delivery.messages {
            let queue = pages.queue(&m.page_id).unwrap_or_default().to_owned();
            let new = p.receive(&id, &queue, m).await?;
            p.count(if new { "stored" } else { "duplicate" });
        }
        for r in &delivery.receipts {
            p.receipt(&id, r).await?;
        }
        Ok(StatusCode::OK.into_response())
    }
    .await;
    counted(&p, r)
}

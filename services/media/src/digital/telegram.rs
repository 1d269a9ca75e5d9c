//! Telegram through the Bot API: the webhook on the customers' front door beside the web
//! chat, SMS and WhatsApp, and the outbound sends of agents' messages. A Telegram
//! conversation is a contact of channel `social`; its customer is a CRM social identity
//! (network `telegram`, the private chat's id).
//!
//! - `POST /telegram/{tenant}`: an update. Checked in this order: the tenant has a Telegram
//!   bot (404), the `X-Telegram-Bot-Api-Secret-Token` is the webhook's secret (401, nothing
//!   read further and nothing stored), the JSON (400). An update that is not a private
//!   chat's message (an edit, a group's message) is answered 200 and ignored. The update id
//!   not seen before (a redelivery stores nothing) lands in the customer's open Telegram
//!   conversation with the bot, or a new contact in sessions. Answered 200 at once.
//!   A photo, document, voice note, audio or video is looked up with `getFile` and
//!   downloaded from the Bot API's host only, checked like every file
//!   ([`super::attachments`]) and kept (its caption after it); an outage answers 503 with
//!   nothing stored.
//! - Outbound: an agent's message is sent with `sendMessage` to `{base}/bot{token}/`,
//!   retried like SMS and WhatsApp ([`super::outbound`]). Telegram reports no delivery or
//!   read: a message that went out stays `sent`.
//!
//! The bot's token and the webhook's secret are read from
//! `{CENTRALITA_TELEGRAM_SECRETS_DIR}/{secretName}/botToken` and `webhookSecret` on each use
//! (the token must be the bot's: `{botId}:…`). Never logged.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use centralita_platform::error::Error;
use centralita_platform::registry::TenantRegistry;
use centralita_platform::tenant::{Telegram as TelegramBot, TenantId};

use super::attachments;
use super::botapi::{self, Inbound};
use super::contacts::BySocial;
use super::model::Message;
use super::model::NewAttachment;
use super::outbound;
use super::provider::{self, MediaError, Refusal};
use super::store;
use super::Digital;

/// The Telegram settings of the digital role.
#[derive(Debug, Clone)]
pub struct TelegramSettings {
    /// Where the tenants' Secrets are mounted (`{dir}/{secret}/{key}`).
    pub secrets_dir: Option<PathBuf>,
    /// The Bot API (`https://api.telegram.org`).
    pub base_url: String,
    pub attempts: u32,
    pub backoff: Duration,
}

/// The Telegram adapter's state.
#[derive(Debug)]
pub struct Telegram {
    pub digital: Arc<Digital>,
    pub registry: TenantRegistry,
    pub settings: TelegramSettings,
    http: reqwest::Client,
    media_http: reqwest::Client,
}

fn unavailable(e: Error) -> Refusal {
    tracing::warn!(error = %e, "Telegram webhook not taken");
    Refusal(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "try again later".into())
}

impl Telegram {
    pub fn new(digital: Arc<Digital>, registry: TenantRegistry, settings: TelegramSettings) -> Result<Self, Error> {
        Ok(Self { digital, registry, settings, http: provider::http_client()?, media_http: provider::media_client()? })
    }

    fn bot(&self, tenant: &str) -> Result<(TenantId, TelegramBot), Refusal> {
        let unknown = || Refusal(StatusCode::NOT_FOUND, "unknown_bot", "no Telegram bot here".into());
        let id = TenantId::parse(tenant).map_err(|_| unknown())?;
        let t = self.registry.get(&id).ok_or_else(unknown)?;
        let bot = t.telegram.clone().ok_or_else(unknown)?;
        Ok((id, bot))
    }

    fn secret(&self, bot: &TelegramBot, key: &str) -> Result<String, Error> {
        let dir = self.settings.secrets_dir.as_ref();
        provider::read_secret(dir, "CENTRALITA_TELEGRAM_SECRETS_DIR", &bot.secret_name, key, "Telegram")
    }

    /// Stores a verified message; whether it was new.
    async fn receive(&self, tenant: &TenantId, bot: &TelegramBot, m: &Inbound) -> Result<bool, Refusal> {
        let d = &self.digital;
        let provider_id = format!("telegram:{}:{}", bot.bot_id, m.update_id);
        if store::sms_known(&d.pool, tenant, &provider_id).await.map_err(unavailable)? {
            return Ok(false);
        }
        // A file first: an outage is answered 503 (Telegram delivers the update again)
        // before anything is stored; a file never to be taken is a line saying why.
        let file = match &m.file {
            None => None,
            Some(f) => match self.fetch(bot, f).await {
                Ok(file) => Some(Ok(file)),
                Err(MediaError::Transient(why)) => {
                    tracing::warn!(tenant = %tenant, why, "Telegram file not fetched; the update will come again");
                    return Err(Refusal(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "try again later".into()));
                }
                Err(MediaError::Refused(why)) => {
                    Some(Err(format!("[a Telegram file the platform did not keep: {why}]")))
                }
            },
        };
        let chat = m.chat_id.to_string();
        let create =
            d.contacts.create_by_social(tenant, BySocial::Telegram, &bot.queue, &chat, &bot.bot_id, &provider_id);
        let started = "Telegram conversation started";
        let contact =
            provider::conversation_for(d, tenant, store::TELEGRAM, &chat, &bot.bot_id, &bot.queue, started, create)
                .await
                .map_err(unavailable)?;
        let mut new = false;
        let mut caption_id = provider_id.clone();
        if let Some(file) = file {
            let (text, file) = match file {
                Ok(f) => (f.name.clone(), Some(f)),
                Err(line) => (line, None),
            };
            new = provider::store_inbound(d, tenant, &contact, &provider_id, &text, Some(m.time), file)
                .await
                .map_err(unavailable)?;
            caption_id = format!("{provider_id}:caption");
        }
        if !m.text.trim().is_empty() {
            new |= provider::store_inbound(d, tenant, &contact, &caption_id, &m.text, Some(m.time), None)
                .await
                .map_err(unavailable)?;
        }
        Ok(new)
    }

    /// Looks a customer's file up with `getFile` and downloads it from the Bot API's host
    /// (no other host: the path is Telegram's, checked), as a file of the conversation.
    async fn fetch(&self, bot: &TelegramBot, f: &botapi::FileRef) -> Result<NewAttachment, MediaError> {
        let token = self.secret(bot, "botToken").map_err(|e| MediaError::Transient(e.to_string()))?;
        let base = self.settings.base_url.trim_end_matches('/');
        let hosts: Vec<String> =
            reqwest::Url::parse(base).ok().and_then(|u| u.host_str().map(str::to_owned)).into_iter().collect();
        let lookup = format!("{base}/bot{token}/getFile?file_id={}", f.file_id);
        let (answer, _) = provider::fetch_media(&self.media_http, &lookup, &hosts, |r| r).await?;
        let answer: serde_json::Value =
            serde_json::from_slice(&answer).map_err(|_| MediaError::Refused("getFile's answer is not JSON".into()))?;
        let path =
            botapi::file_path(&answer).ok_or_else(|| MediaError::Refused("getFile gave no usable path".into()))?;
        let (data, _) =
            provider::fetch_media(&self.media_http, &format!("{base}/file/bot{token}/{path}"), &hosts, |r| r).await?;
        let checked =
            attachments::check(&f.name, &f.content_type, &data).map_err(|r| MediaError::Refused(r.describe()))?;
        Ok(NewAttachment { name: checked.name, content_type: checked.content_type, sha256: checked.sha256, data })
    }

    /// Sends an agent's message of a Telegram conversation, retrying; on the last failure
    /// the message is `failed` with the reason.
    pub async fn send(self: Arc<Self>, tenant: TenantId, contact: String, message: Message) {
        let outcome = self.try_send(&tenant, &contact, &message).await;
        let count = |o: &'static str| self.digital.metrics.telegram_send(o);
        outbound::settle(&self.digital, &tenant, &contact, &message, outcome, "telegram", &count).await;
    }

    async fn try_send(&self, tenant: &TenantId, contact: &str, message: &Message) -> Result<String, String> {
        let (_, bot) = self.bot(tenant.as_str()).map_err(|_| "the tenant has no Telegram bot".to_owned())?;
        let conversation = store::conversation(&self.digital.pool, tenant, contact)
            .await
            .map_err(|e| format!("conversation: {e}"))?
            .ok_or_else(|| "no such conversation".to_owned())?;
        let token = self.secret(&bot, "botToken").map_err(|e| e.to_string())?;
        if token.split_once(':').map(|(id, _)| id) != Some(bot.bot_id.as_str()) {
            return Err("the bot token is not the bot's (it must start with its id and `:`)".into());
        }
        let url = format!("{}/bot{token}/sendMessage", self.settings.base_url.trim_end_matches('/'));
        let body = botapi::send_message(&conversation.visitor, &message.text);
        let count = |o: &'static str| self.digital.metrics.telegram_send(o);
        let retries =
            outbound::Retries { attempts: self.settings.attempts, backoff: self.settings.backoff, count: &count };
        let answer = outbound::post(&retries, || self.http.post(&url).json(&body)).await?;
        let id = botapi::sent_id(&answer).ok_or_else(|| "provider answer has no message id".to_owned())?;
        Ok(format!("telegram:{}:out:{}:{id}", bot.bot_id, conversation.visitor))
    }
}

/// The router of the Telegram webhook.
pub fn router(state: Arc<Telegram>) -> Router {
    Router::new()
        .route("/telegram/{tenant}", post(update))
        .layer(DefaultBodyLimit::max(botapi::MAX_WEBHOOK_BYTES))
        .with_state(state)
}

async fn update(
    State(t): State<Arc<Telegram>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = async {
        let (id, bot) = t.bot(&tenant)?;
        let secret = t.secret(&bot, "webhookSecret").map_err(|e| {
            tracing::warn!(tenant = %id, error = %e, "cannot check a Telegram webhook");
            Refusal(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "try again later".into())
        })?;
        let given = headers.get(botapi::SECRET_HEADER).and_then(|h| h.to_str().ok()).unwrap_or("");
        if !botapi::verify(&secret, given) {
            return Err(Refusal(StatusCode::UNAUTHORIZED, "secret", "not this tenant's webhook".into()));
        }
        let parsed = botapi::parse(&body)
            .map_err(|f| Refusal(StatusCode::BAD_REQUEST, "invalid", format!("{}: {}", f.field, f.message)))?;
        let outcome = match parsed {
            Some(m) if t.receive(&id, &bot, &m).await? => "stored",
            Some(_) => "duplicate",
            None => "ignored",
        };
        t.digital.metrics.telegram_webhook(outcome);
        Ok(StatusCode::OK.into_response())
    }
    .await;
    match r {
        Ok(r) => r,
        Err(refusal) => {
            t.digital.metrics.telegram_webhook(refusal.1);
            refusal.into_response()
        }
    }
}

//! What the provider adapters (SMS through Twilio, WhatsApp through Meta, Telegram) share on
//! the way in: their HTTP client, a key of a tenant's mounted Secret, a webhook's refusal,
//! and the customer's open conversation with one of the tenant's addresses.

use std::path::PathBuf;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use centralita_platform::error::Error;
use centralita_platform::tenant::TenantId;

use chrono::{DateTime, Utc};

use super::model::{Kind, NewMessage, Sender};
use super::{store, Digital};

/// The client the adapters send with: 10 s a request, 5 s to connect.
pub fn http_client() -> Result<reqwest::Client, Error> {
    // reqwest's rustls is built without a crypto provider (no aws-lc-rs): use ring's.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| Error::Internal(format!("HTTP client: {e}")))
}

/// Key `key` of the tenant's Secret `secret` mounted under `dir` (the setting `var` names
/// it), trimmed; read on each use, so a rotated Secret applies without a restart. The value
/// is never logged; `what` names the channel in the errors.
pub fn read_secret(dir: Option<&PathBuf>, var: &str, secret: &str, key: &str, what: &str) -> Result<String, Error> {
    let dir = dir.ok_or_else(|| Error::Unavailable(format!("{var} is not set")))?;
    let path = dir.join(secret).join(key);
    let value = std::fs::read_to_string(&path)
        .map_err(|e| Error::Unavailable(format!("the {what} {key} ({}): {e}", path.display())))?;
    let value = value.trim().to_owned();
    if value.is_empty() {
        return Err(Error::Unavailable(format!("the {what} {key} ({}) is empty", path.display())));
    }
    Ok(value)
}

/// A refusal of a webhook: its status, the metric's outcome and a short message.
#[derive(Debug)]
pub struct Refusal(pub StatusCode, pub &'static str, pub String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, self.2).into_response()
    }
}

/// The customer's (`visitor`) conversation of `channel` with the tenant's address
/// (`origin`) that is still open in sessions, if any: a new message continues it.
pub async fn open_conversation(
    d: &Digital,
    tenant: &TenantId,
    channel: &str,
    visitor: &str,
    origin: &str,
) -> Result<Option<String>, Error> {
    let Some(latest) = store::latest_conversation(&d.pool, tenant, channel, visitor, origin).await? else {
        return Ok(None);
    };
    Ok(match d.contacts.view(tenant, &latest).await? {
        Some(v) if v.open => Some(latest),
        _ => None,
    })
}

/// Stores a customer's message in `contact`'s conversation under the provider's id
/// (`provider_id`, also its idempotency key) and wakes its followers; whether it was new (a
/// redelivery stores nothing).
pub async fn store_inbound(
    d: &Digital,
    tenant: &TenantId,
    contact: &str,
    provider_id: &str,
    text: &str,
    time: DateTime<Utc>,
) -> Result<bool, Error> {
    let m = NewMessage {
        sender: Sender::Customer,
        kind: Kind::Text,
        text: text.to_owned(),
        provider_time: Some(time),
        request_id: provider_id.to_owned(),
        attachment: None,
    };
    if store::append_inbound_sms(&d.pool, tenant, contact, provider_id, &m).await?.is_none() {
        return Ok(false);
    }
    d.metrics.message_stored(&Sender::Customer);
    d.written(tenant, contact);
    Ok(true)
}

//! What the provider adapters (SMS through Twilio, WhatsApp through Meta, Telegram) share on
//! the way in: their HTTP client, a key of a tenant's mounted Secret, a webhook's refusal,
//! and the customer's open conversation with one of the tenant's addresses.

use std::path::PathBuf;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use centralita_platform::error::Error;
use centralita_platform::tenant::TenantId;

use chrono::{DateTime, Utc};

use super::model::{Kind, NewAttachment, NewMessage, Sender};
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

/// The client media is downloaded with: it follows no redirect (a redirect could lead
/// anywhere, past the host check of [`fetch_media`]).
pub fn media_client() -> Result<reqwest::Client, Error> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| Error::Internal(format!("HTTP client: {e}")))
}

/// Why a customer's media could not be taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaError {
    /// The provider could not be reached or failed (5xx, 429): the webhook is answered 503
    /// so the provider delivers it again.
    Transient(String),
    /// It will never be taken (a host not the provider's, too large, refused): the message
    /// is kept with a notice instead of the file.
    Refused(String),
}

/// Whether `url` may be fetched: http(s), no user info, its host one of `hosts`: exactly,
/// or, for an entry starting with a dot (`.fbcdn.net`), any host under that domain. The
/// only guard between a provider's (or a forger's) URL and the network.
pub fn media_url_allowed(url: &str, hosts: &[String]) -> bool {
    let Ok(u) = reqwest::Url::parse(url) else { return false };
    let Some(host) = u.host_str().map(str::to_ascii_lowercase) else { return false };
    let allowed = |entry: &String| {
        let entry = entry.to_ascii_lowercase();
        match entry.strip_prefix('.') {
            Some(domain) => host.len() > domain.len() + 1 && host.ends_with(&entry),
            None => host == entry,
        }
    };
    matches!(u.scheme(), "http" | "https")
        && u.username().is_empty()
        && u.password().is_none()
        && hosts.iter().any(allowed)
}

/// Downloads a customer's media from `url` (checked by [`media_url_allowed`]) with the
/// request `authorize` makes, reading at most [`super::attachments::MAX_BYTES`]: the bytes
/// and the `Content-Type` the provider gave. Up to 3 redirects are followed, each checked
/// like the first URL; `authorize` is applied only while the host stays the first one (a
/// provider's credentials never go to its CDN or anywhere else).
pub async fn fetch_media(
    client: &reqwest::Client,
    url: &str,
    hosts: &[String],
    authorize: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
) -> Result<(Vec<u8>, String), MediaError> {
    let first = reqwest::Url::parse(url).map_err(|_| MediaError::Refused("the media URL is not a URL".into()))?;
    let mut current = first.clone();
    let mut answer = None;
    for _ in 0..4 {
        if !media_url_allowed(current.as_str(), hosts) {
            return Err(MediaError::Refused("the media URL is not on the provider's hosts".into()));
        }
        let mut request = client.get(current.clone());
        if current.host_str() == first.host_str() && current.port_or_known_default() == first.port_or_known_default() {
            request = authorize(request);
        }
        let r = request
            .send()
            .await
            .map_err(|e| MediaError::Transient(format!("media unreachable: {}", e.without_url())))?;
        if r.status().is_redirection() {
            let location = r
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|h| h.to_str().ok())
                .and_then(|l| current.join(l).ok())
                .ok_or_else(|| MediaError::Refused("a redirect without a usable Location".into()))?;
            current = location;
            continue;
        }
        answer = Some(r);
        break;
    }
    let Some(mut answer) = answer else {
        return Err(MediaError::Refused("too many redirects".into()));
    };
    let status = answer.status();
    if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        return Err(MediaError::Transient(format!("media answered {status}")));
    }
    if !status.is_success() {
        return Err(MediaError::Refused(format!("media answered {status}")));
    }
    let limit = super::attachments::MAX_BYTES;
    if answer.content_length().is_some_and(|n| n > limit as u64) {
        return Err(MediaError::Refused("the file is larger than 5 MiB".into()));
    }
    let content_type = answer
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut data = Vec::new();
    while let Some(chunk) =
        answer.chunk().await.map_err(|e| MediaError::Transient(format!("media cut: {}", e.without_url())))?
    {
        if data.len() + chunk.len() > limit {
            return Err(MediaError::Refused("the file is larger than 5 MiB".into()));
        }
        data.extend_from_slice(&chunk);
    }
    Ok((data, content_type))
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

/// Meta's subscription handshake (`GET ?hub.mode=subscribe&hub.verify_token=…&hub.challenge=…`)
/// of a WhatsApp, Messenger or Instagram webhook.
#[derive(Debug, serde::Deserialize)]
pub struct Subscribe {
    #[serde(rename = "hub.mode", default)]
    mode: String,
    #[serde(rename = "hub.verify_token", default)]
    token: String,
    #[serde(rename = "hub.challenge", default)]
    challenge: String,
}

/// Why a tenant's Secret could not be read, as a webhook's answer (logged with the tenant).
fn secret_unavailable(tenant: &TenantId, e: &Error) -> Refusal {
    tracing::warn!(tenant = %tenant, error = %e, "a provider Secret cannot be read");
    Refusal(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "try again later".into())
}

/// Answers Meta's handshake: the challenge when the token is the tenant's verify token
/// (`expected`, as read from its Secret), 403 otherwise.
pub fn meta_handshake(tenant: &TenantId, q: &Subscribe, expected: Result<String, Error>) -> Result<Response, Refusal> {
    let expected = expected.map_err(|e| secret_unavailable(tenant, &e))?;
    match super::meta::handshake(&q.mode, &q.token, &q.challenge, &expected) {
        Some(challenge) => Ok(challenge.to_owned().into_response()),
        None => Err(Refusal(StatusCode::FORBIDDEN, "signature", "not this tenant's verify token".into())),
    }
}

/// Checks a Meta webhook's `X-Hub-Signature-256` over the raw body with the tenant's app
/// secret (`secret`, as read from its Secret): 401 when it is not the tenant's.
pub fn meta_signed(
    tenant: &TenantId,
    headers: &HeaderMap,
    body: &[u8],
    secret: Result<String, Error>,
) -> Result<(), Refusal> {
    let secret = secret.map_err(|e| secret_unavailable(tenant, &e))?;
    let signature = headers.get(super::meta::SIGNATURE_HEADER).and_then(|h| h.to_str().ok()).unwrap_or("");
    if super::meta::verify(&secret, body, signature) {
        Ok(())
    } else {
        Err(Refusal(StatusCode::UNAUTHORIZED, "signature", "the request is not signed for this tenant".into()))
    }
}

/// A failure while taking a webhook, as its answer: a missing number, Page or conversation
/// 404 (counted as `unknown`), anything else (the store or a peer down) 503 so the provider
/// delivers it again, logged naming the channel (`what`).
pub fn not_taken(e: Error, unknown: &'static str, what: &str) -> Refusal {
    match e {
        Error::NotFound(m) => Refusal(StatusCode::NOT_FOUND, unknown, m),
        e => {
            tracing::warn!(error = %e, channel = what, "webhook not taken");
            Refusal(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "try again later".into())
        }
    }
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

/// The customer's (`visitor`) open conversation of `channel` with the tenant's `origin`, or
/// a new one: the contact `create` makes in sessions, and its conversation in `queue`
/// starting with `notice`.
#[allow(clippy::too_many_arguments)]
pub async fn conversation_for<F>(
    d: &Digital,
    tenant: &TenantId,
    channel: &'static str,
    visitor: &str,
    origin: &str,
    queue: &str,
    notice: &str,
    create: F,
) -> Result<String, Error>
where
    F: std::future::Future<Output = Result<String, Error>>,
{
    if let Some(open) = open_conversation(d, tenant, channel, visitor, origin).await? {
        return Ok(open);
    }
    let contact = create.await?;
    let new = store::NewConversation {
        contact_id: contact.clone(),
        channel,
        queue: queue.to_owned(),
        visitor: visitor.to_owned(),
        origin: origin.to_owned(),
    };
    store::create_conversation(&d.pool, tenant, &new, notice).await?;
    Ok(contact)
}

/// Stores a customer's message of text and files (SMS with MMS media, Messenger,
/// Instagram): the text under the provider's id (its dedupe key), each file under `{id}#{n}`
/// (the first under the id when there is no text); a file that could not be kept is stored
/// as the line saying why. Whether anything was new.
pub async fn store_inbound_with_files(
    d: &Digital,
    tenant: &TenantId,
    contact: &str,
    provider_id: &str,
    text: &str,
    time: Option<DateTime<Utc>>,
    files: Vec<Result<NewAttachment, String>>,
) -> Result<bool, Error> {
    let has_text = !text.trim().is_empty();
    let mut new = has_text && store_inbound(d, tenant, contact, provider_id, text, time, None).await?;
    for (i, f) in files.into_iter().enumerate() {
        let id = if !has_text && i == 0 { provider_id.to_owned() } else { format!("{provider_id}#{i}") };
        let (line, file) = match f {
            Ok(file) => (file.name.clone(), Some(file)),
            Err(line) => (line, None),
        };
        new |= store_inbound(d, tenant, contact, &id, &line, time, file).await?;
    }
    Ok(new)
}

/// Stores a customer's message in `contact`'s conversation under the provider's id
/// (`provider_id`, also its idempotency key) and wakes its followers; whether it was new (a
/// redelivery stores nothing). With `file`, the message is that file (`text` its name).
pub async fn store_inbound(
    d: &Digital,
    tenant: &TenantId,
    contact: &str,
    provider_id: &str,
    text: &str,
    time: Option<DateTime<Utc>>,
    file: Option<NewAttachment>,
) -> Result<bool, Error> {
    let m = NewMessage {
        sender: Sender::Customer,
        kind: if file.is_some() { Kind::Attachment } else { Kind::Text },
        text: text.to_owned(),
        provider_time: time,
        request_id: provider_id.to_owned(),
        attachment: file,
    };
    if store::append_inbound_sms(&d.pool, tenant, contact, provider_id, &m).await?.is_none() {
        return Ok(false);
    }
    d.metrics.message_stored(&Sender::Customer);
    d.written(tenant, contact);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_is_fetched_only_from_the_providers_hosts() {
        let hosts = vec!["lookaside.fbsbx.com".to_owned(), "127.0.0.1".to_owned()];
        assert!(media_url_allowed("https://lookaside.fbsbx.com/whatsapp_business/attachments/?mid=1", &hosts));
        assert!(media_url_allowed("http://127.0.0.1:8491/media/1", &hosts));
        assert!(media_url_allowed("https://LOOKASIDE.fbsbx.com/x", &hosts));
        let cdn = vec![".fbcdn.net".to_owned()];
        assert!(media_url_allowed("https://scontent.xx.fbcdn.net/v/t1/abc.jpg?oh=1", &cdn));
        for bad in [
            "https://fbcdn.net/x",
            "https://evilfbcdn.net/x",
            "https://fbcdn.net.evil.example/x",
            "https://x.fbcdn.net.evil/",
        ] {
            assert!(!media_url_allowed(bad, &cdn), "{bad}");
        }
        for bad in [
            "https://lookaside.fbsbx.com.evil.example/x",
            "https://evil.example/?u=lookaside.fbsbx.com",
            "http://169.254.169.254/latest/meta-data/",
            "http://localhost:8491/media/1",
            "http://[::1]:8491/",
            "file:///etc/passwd",
            "gopher://127.0.0.1:6379/",
            "https://user:pw@lookaside.fbsbx.com/x",
            "http://127.0.0.1@evil.example/",
            "not a url",
            "",
        ] {
            assert!(!media_url_allowed(bad, &hosts), "{bad}");
        }
    }
}

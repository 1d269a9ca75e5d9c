//! Email as a channel: inbound mail accepted by the SMTP listener (`super::smtp`) stored in
//! conversations, and agents' replies sent through the tenant's relay with `lettre`.
//!
//! Inbound, per tenant a message is addressed to (each of its recipients is one of the
//! tenant's `spec.email.addresses`, checked at `RCPT TO`):
//! - a Message-ID stored before in the tenant is a redelivery: nothing new is stored;
//! - an `In-Reply-To`/`References` id naming a message we sent or received continues that
//!   conversation while its contact is open; otherwise a new EMAIL contact in sessions (the
//!   sender's address as its CRM email identity) in the address's queue, and its
//!   conversation (whose first notice names the earlier contact of the thread, if any);
//! - the message and its record (`email_messages`: Message-ID, subject, reply references,
//!   attachments' names, types and sizes) are stored in one transaction, then each
//!   attachment `super::attachments` takes as a file of the conversation (the others named
//!   in a notice), each under a request id of its own, before the listener answers 250: what
//!   was accepted is stored, and a redelivery after a failure stores what was missing.
//! - an agent's file (SendAttachment) goes out as a MIME attachment.
//!
//! Outbound: an agent's message in an email conversation is recorded under a Message-ID of
//! ours (so the customer's answer threads), then sent From the tenant's `fromAddress` To
//! the customer, `Subject: Re: …`, `In-Reply-To` the customer's newest email and
//! `References` per RFC 5322 §3.6.4; retried with doubling backoff on transient failures
//! (connection, 4xx); a permanent refusal (5xx) or the last failed attempt marks the
//! message `failed` with the reason.
//!
//! Relay credentials are read from `{CENTRALITA_EMAIL_SECRETS_DIR}/{credentialsSecret}/
//! username` and `…/password` (the tenant's Secret mounted as a volume) on each send, so a
//! rotated Secret applies without a restart. They are never logged.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use centralita_platform::error::Error;
use centralita_platform::registry::TenantRegistry;
use centralita_platform::tenant::{Email as EmailChannel, EmailTls, TenantId};
use lettre::message::{header::ContentType, Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::attachments;
use super::mail::{self, InboundMail};
use super::model::{Kind, Message, NewAttachment, NewMessage, Sender, Status};
use super::store::{self, EmailRecord, NewConversation};
use super::Digital;

/// The email settings of the digital role.
#[derive(Debug, Clone)]
pub struct EmailSettings {
    /// Where the tenants' relay-credential Secrets are mounted (`{dir}/{secret}/username`).
    pub secrets_dir: Option<PathBuf>,
    /// Attempts of one send (at least 1).
    pub attempts: u32,
    /// The wait after the first failed attempt; doubled after each.
    pub backoff: Duration,
    /// Timeout of one SMTP conversation with the relay.
    pub timeout: Duration,
}

/// The email adapter's state.
#[derive(Debug)]
pub struct Email {
    pub digital: Arc<Digital>,
    pub registry: TenantRegistry,
    pub settings: EmailSettings,
}

/// How an inbound message went for one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// Stored in the conversation of this contact.
    New(String),
    /// Its Message-ID was stored before: nothing new.
    Duplicate,
}

impl Email {
    pub fn new(digital: Arc<Digital>, registry: TenantRegistry, settings: EmailSettings) -> Self {
        // lettre's rustls takes the process's provider: ring's, as reqwest's.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Self { digital, registry, settings }
    }

    /// The tenant's email channel, if it has one and is active.
    pub fn channel(&self, tenant: &TenantId) -> Option<EmailChannel> {
        self.registry.get(tenant).filter(|t| t.is_active()).and_then(|t| t.email.clone())
    }

    /// The tenant and queue of an inbound address: the one active tenant that claims it
    /// (an address two tenants claim is no one's).
    pub fn recipient(&self, address: &str) -> Option<(TenantId, String)> {
        let tenants = self.registry.list();
        let owners = centralita_platform::tenant::email_owners(&tenants, address);
        match owners.as_slice() {
            [t] if t.is_active() => {
                let queue = t.email.as_ref()?.queue_of(address)?.to_owned();
                Some((t.id.clone(), queue))
            }
            _ => None,
        }
    }

    /// Keeps each attachment of an allowed type whose bytes are of that type as a file of
    /// the conversation, and names the others in a notice; each under a request id of its
    /// own (a repeat stores nothing).
    async fn keep_files(&self, tenant: &TenantId, contact: &str, m: &InboundMail, key: &str) -> Result<(), Error> {
        let d = &self.digital;
        // Each attachment of an allowed type whose bytes are of that type is kept as a file
        // of the conversation; the others are named in a notice.
        let mut not_kept = Vec::new();
        for (i, a) in m.attachments.iter().enumerate() {
            let name = attachments::clean_name(&a.name, "attachment");
            match attachments::check(&name, &a.content_type, &a.data) {
                Ok(checked) => {
                    let file = NewMessage {
                        sender: Sender::Customer,
                        kind: Kind::Attachment,
                        text: checked.name.clone(),
                        provider_time: None,
                        request_id: format!("{}-f{i}", mail::request_id(tenant.as_str(), key)),
                        attachment: Some(NewAttachment {
                            name: checked.name,
                            content_type: checked.content_type,
                            sha256: checked.sha256,
                            data: a.data.clone(),
                        }),
                    };
                    d.append(tenant, contact, &file).await?;
                }
                Err(why) => not_kept.push(format!(
                    "{} ({}, {} bytes: {})",
                    if a.name.is_empty() { "unnamed" } else { &a.name },
                    a.content_type,
                    a.size,
                    why.describe()
                )),
            }
        }
        if !not_kept.is_empty() {
            let notice = NewMessage {
                sender: Sender::System,
                kind: Kind::Notice,
                text: mail::fit_text(&format!("The email had attachments not kept: {}", not_kept.join(", "))),
                provider_time: None,
                request_id: format!("{}-att", mail::request_id(tenant.as_str(), key)),
                attachment: None,
            };
            d.append(tenant, contact, &notice).await?;
        }
        Ok(())
    }

    /// Stores a read message for `tenant`, addressed to `address` (of its `queue`); `raw`
    /// is the message as received (its hash keys a message without a Message-ID).
    pub async fn receive(
        &self,
        tenant: &TenantId,
        address: &str,
        queue: &str,
        m: &InboundMail,
        raw: &[u8],
    ) -> Result<Stored, Error> {
        let d = &self.digital;
        let key = m.key(raw);
        if store::email_known(&d.pool, tenant, &key).await? {
            // Its files are stored too (by their request ids, nothing twice), in case storing
            // them failed after the message the first time.
            if let Some(contact) = store::email_thread(&d.pool, tenant, std::slice::from_ref(&key)).await? {
                self.keep_files(tenant, &contact, m, &key).await?;
            }
            return Ok(Stored::Duplicate);
        }
        // A reply to a message of an open conversation continues it; else a new contact.
        let thread = store::email_thread(&d.pool, tenant, &m.thread_ids()).await?;
        let open = match &thread {
            Some(c) => match d.contacts.view(tenant, c).await? {
                Some(v) if v.open => Some(c.clone()),
                _ => None,
            },
            None => None,
        };
        let contact = match open {
            Some(c) => c,
            None => {
                let request = mail::request_id(tenant.as_str(), &key);
                let c = d.contacts.create_email(tenant, queue, &m.from, address, &request).await?;
                let new = NewConversation {
                    contact_id: c.clone(),
                    channel: store::EMAIL,
                    queue: queue.to_owned(),
                    visitor: m.from.clone(),
                    origin: address.to_owned(),
                };
                let subject = if m.subject.is_empty() { "(no subject)" } else { &m.subject };
                // An answer in a thread whose contact is over starts a new contact; the
                // notice names the earlier one, so the agent can look it up.
                let notice = match &thread {
                    Some(earlier) => format!("Email conversation started: {subject} (continues contact {earlier})"),
                    None => format!("Email conversation started: {subject}"),
                };
                store::create_conversation(&d.pool, tenant, &new, &notice).await?;
                c
            }
        };
        let record = EmailRecord {
            message_id: key.clone(),
            subject: m.subject.clone(),
            refs: m.references_for_reply(&key),
            attachments: serde_json::to_value(&m.attachments)
                .map_err(|e| Error::Internal(format!("attachments as JSON: {e}")))?,
        };
        let text = NewMessage {
            sender: Sender::Customer,
            kind: Kind::Text,
            text: m.text.clone(),
            provider_time: None,
            request_id: mail::request_id(tenant.as_str(), &key),
            attachment: None,
        };
        let new = store::append_email(&d.pool, tenant, &contact, true, &record, &text).await?.is_some();
        if new {
            d.metrics.message_stored(&Sender::Customer);
        }
        self.keep_files(tenant, &contact, m, &key).await?;
        if !new {
            return Ok(Stored::Duplicate);
        }
        d.written(tenant, &contact);
        Ok(Stored::New(contact))
    }

    /// Sends an agent's message of an email conversation, retrying; on the last failure the
    /// message is `failed` with the reason.
    pub async fn send(self: Arc<Self>, tenant: TenantId, contact: String, message: Message) {
        let outcome = self.try_send(&tenant, &contact, &message).await;
        let d = &self.digital;
        match outcome {
            Ok(()) => d.metrics.email_send("sent"),
            Err(reason) => {
                tracing::warn!(tenant = %tenant, contact, seq = message.sequence, reason, "email send failed");
                match store::report_status(&d.pool, &tenant, &contact, message.sequence, Status::Failed, &reason, None)
                    .await
                {
                    Ok(_) => d.written(&tenant, &contact),
                    Err(e) => tracing::error!(tenant = %tenant, contact, error = %e, "cannot mark an email failed"),
                }
            }
        }
    }

    /// The relay's credentials, from the tenant's Secret.
    fn credentials(&self, secret: &str) -> Result<Credentials, String> {
        let dir = self.settings.secrets_dir.as_ref().ok_or("CENTRALITA_EMAIL_SECRETS_DIR is not set")?;
        let read = |key: &str| -> Result<String, String> {
            let path = dir.join(secret).join(key);
            let v = std::fs::read_to_string(&path).map_err(|e| format!("the relay {key} ({}): {e}", path.display()))?;
            let v = v.trim().to_owned();
            if v.is_empty() {
                return Err(format!("the relay {key} ({}) is empty", path.display()));
            }
            Ok(v)
        };
        Ok(Credentials::new(read("username")?, read("password")?))
    }

    fn transport(&self, channel: &EmailChannel) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
        let relay = &channel.relay;
        let params = || TlsParameters::new(relay.host.clone()).map_err(|e| format!("TLS to the relay: {e}"));
        let tls = match relay.tls {
            EmailTls::None => Tls::None,
            EmailTls::Starttls => Tls::Required(params()?),
            EmailTls::Implicit => Tls::Wrapper(params()?),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(relay.host.clone())
            .port(relay.port)
            .tls(tls)
            .timeout(Some(self.settings.timeout));
        if let Some(secret) = &relay.credentials_secret {
            builder = builder.credentials(self.credentials(secret)?);
        }
        Ok(builder.build())
    }

    async fn try_send(&self, tenant: &TenantId, contact: &str, message: &Message) -> Result<(), String> {
        let channel = self.channel(tenant).ok_or("the tenant has no email channel")?;
        let d = &self.digital;
        let conversation = store::conversation(&d.pool, tenant, contact)
            .await
            .map_err(|e| format!("conversation: {e}"))?
            .ok_or("no such conversation")?;
        let parent = store::email_parent(&d.pool, tenant, contact)
            .await
            .map_err(|e| format!("conversation: {e}"))?
            .ok_or("the conversation has no email to answer")?;
        let id = mail::new_message_id(&channel.from_address);
        let (in_reply_to, references) = mail::reply_headers(&parent.message_id, &parent.refs);
        let subject = mail::reply_subject(&parent.subject);
        let mut refs = parent.refs.clone();
        refs.push(id.clone());
        let record = EmailRecord {
            message_id: id.clone(),
            subject: subject.clone(),
            refs: mail::trim_references(refs),
            attachments: serde_json::Value::Array(Vec::new()),
        };
        store::record_outbound_email(&d.pool, tenant, contact, message.sequence, &record)
            .await
            .map_err(|e| format!("cannot record the email: {e}"))?;
        let from: Mailbox = channel.from_address.parse().map_err(|e| format!("from address: {e}"))?;
        let to: Mailbox = conversation.visitor.parse().map_err(|e| format!("customer address: {e}"))?;
        let builder = lettre::Message::builder()
            .from(from)
            .to(to)
            .subject(subject)
            .message_id(Some(format!("<{id}>")))
            .in_reply_to(in_reply_to)
            .references(references);
        let email = match &message.attachment {
            // A file goes as a MIME attachment beside a line naming it.
            Some(a) => {
                let (_, data) = store::attachment(&d.pool, tenant, contact, &a.id)
                    .await
                    .map_err(|e| format!("the file: {e}"))?
                    .ok_or("the file is no longer kept")?;
                let kind = ContentType::parse(&a.content_type).map_err(|e| format!("file type: {e}"))?;
                builder.multipart(
                    MultiPart::mixed()
                        .singlepart(SinglePart::plain(format!("Attached: {}", a.name)))
                        .singlepart(lettre::message::Attachment::new(a.name.clone()).body(data, kind)),
                )
            }
            None => builder.header(ContentType::TEXT_PLAIN).body(message.text.clone()),
        }
        .map_err(|e| format!("cannot build the email: {e}"))?;
        let transport = self.transport(&channel)?;
        let attempts = self.settings.attempts.max(1);
        let mut reason = String::new();
        for attempt in 1..=attempts {
            match transport.send(email.clone()).await {
                Ok(_) => return Ok(()),
                Err(e) if e.is_permanent() => {
                    d.metrics.email_send("refused");
                    return Err(format!("the relay refused it: {e}"));
                }
                Err(e) => reason = format!("relay {}:{}: {e}", channel.relay.host, channel.relay.port),
            }
            if attempt < attempts {
                d.metrics.email_send("retried");
                tokio::time::sleep(self.settings.backoff * 2u32.saturating_pow(attempt - 1)).await;
            }
        }
        d.metrics.email_send("failed");
        Err(format!("after {attempts} attempts: {reason}"))
    }
}

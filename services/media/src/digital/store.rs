//! PostgreSQL side of the conversations: every read and write in a transaction whose tenant
//! is set for row-level security, and each event queued in the outbox of the transaction
//! that caused it (published by [`super::relay`]).
//!
//! Sequence numbers: appending a message increments the conversation's `last_seq` under
//! its row lock and stores the message under that number, in one transaction, so a
//! conversation's sequences are 1, 2, 3, … without gaps or repeats, in commit order.

use centralita_platform::bus::Event;
use centralita_platform::db::begin;
use centralita_platform::error::Error;
use centralita_platform::tenant::{contact_name, timestamp, TenantId};
use centralita_proto::media::v1 as pb;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Pool, Transaction};
use tokio_postgres::Row;

use super::model::{AttachmentMeta, Kind, Message, NewMessage, Sender, Status};
use super::wire;

/// The topic (without the installation's prefix) of conversation events.
pub const TOPIC_BASE: &str = "conversations";

/// The PostgreSQL channel on which every write to a conversation is announced, at commit
/// (payload `{tenant}/{contact}`), to the followers on every replica ([`super::listen`]).
pub const NOTIFY_CHANNEL: &str = "media_conversations";

/// Announces a write to the conversation when the transaction commits.
async fn announce(tx: &Transaction<'_>, tenant: &TenantId, contact: &str) -> Result<(), Error> {
    tx.execute("SELECT pg_notify($1, $2)", &[&NOTIFY_CHANNEL, &format!("{tenant}/{contact}")]).await?;
    Ok(())
}

/// How long a typing marker lasts without being renewed.
pub const TYPING_SECONDS: f64 = 6.0;

/// A conversation's head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    pub contact_id: String,
    pub channel: String,
    pub queue: String,
    pub visitor: String,
    pub origin: String,
    pub last_seq: i64,
    pub customer_read_seq: i64,
    pub agent_read_seq: i64,
    pub customer_typing: bool,
    pub agent_typing: bool,
}

/// The conversation's head, in the caller's tenant.
pub async fn conversation(pool: &Pool, tenant: &TenantId, contact: &str) -> Result<Option<Conversation>, Error> {
    let mut client = pool.get().await?;
    let tx = begin(&mut client, tenant).await?;
    let row = tx
        .query_opt(
            "SELECT contact_id, channel, queue, visitor, origin, last_seq, customer_read_seq, agent_read_seq,
                    coalesce(customer_typing_until > now(), false), coalesce(agent_typing_until > now(), false)
             FROM conversations WHERE tenant = $1 AND contact_id = $2",
            &[&tenant.as_str(), &contact],
        )
        .await?;
    tx.commit().await?;
    Ok(row.map(|r| Conversation {
        contact_id: r.get(0),
        channel: r.get(1),
        queue: r.get(2),
        visitor: r.get(3),
        origin: r.get(4),
        last_seq: r.get(5),
        customer_read_seq: r.get(6),
        agent_read_seq: r.get(7),
        customer_typing: r.get(8),
        agent_typing: r.get(9),
    }))
}

/// What starts a conversation.
#[derive(Debug, Clone)]
pub struct NewConversation {
    pub contact_id: String,
    pub channel: &'static str,
    pub queue: String,
    pub visitor: String,
    pub origin: String,
}

/// Creates the conversation of a contact (nothing if it exists) with a first system notice;
/// whether it was created now.
pub async fn create_conversation(
    pool: &Pool,
    tenant: &TenantId,
    c: &NewConversation,
    notice: &str,
) -> Result<bool, Error> {
    let mut client = pool.get().await?;
    let tx = begin(&mut client, tenant).await?;
    let created = tx
        .execute(
            "INSERT INTO conversations (tenant, contact_id, channel, queue, visitor, origin)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            &[&tenant.as_str(), &c.contact_id, &c.channel, &c.queue, &c.visitor, &c.origin],
        )
        .await?;
    if created == 1 {
        let m = NewMessage {
            sender: Sender::System,
            kind: Kind::Notice,
            text: notice.to_owned(),
            provider_time: None,
            request_id: String::new(),
            attachment: None,
        };
        append_in(&tx, tenant, &c.contact_id, &m).await?;
    }
    tx.commit().await?;
    Ok(created == 1)
}

fn message_of(r: &Row) -> Result<Message, Error> {
    let bad = |what: &str| Error::Internal(format!("stored message has an unknown {what}"));
    Ok(Message {
        sequence: r.get("seq"),
        sender: Sender::from_stored(r.get("sender"), r.get("agent_id")).ok_or_else(|| bad("sender"))?,
        kind: Kind::from_stored(r.get("kind")).ok_or_else(|| bad("kind"))?,
        text: r.get("body"),
        status: Status::from_stored(r.get("status")).ok_or_else(|| bad("status"))?,
        failure_reason: r.get("failure_reason"),
        created_at: r.get("created_at"),
        provider_time: r.get("provider_time"),
        attachment: r
            .get::<_, Option<serde_json::Value>>("attachment")
            .map(serde_json::from_value)
            .transpose()
            .map_err(|_| bad("attachment"))?,
    })
}

const COLUMNS: &str =
    "seq, sender, agent_id, kind, body, status, failure_reason, created_at, provider_time, attachment";

/// Appends a message; returns it and whether it was stored now (false: the sender's
/// `request_id` was seen before, and the message stored then is returned). `None` when the
/// conversation does not exist.
pub async fn append(
    pool: &Pool,
    tenant: &TenantId,
    contact: &str,
    m: &NewMessage,
) -> Result<Option<(Message, bool)>, Error> {
    let mut client = pool.get().await?;
    let tx = begin(&mut client, tenant).await?;
    let Some(stored) = append_in(&tx, tenant, contact, m).await? else {
        return Ok(None);
    };
    tx.commit().await?;
    Ok(Some(stored))
}

async fn append_in(
    tx: &Transaction<'_>,
    tenant: &TenantId,
    contact: &str,
    m: &NewMessage,
) -> Result<Option<(Message, bool)>, Error> {
    // The conversation's row lock serialises appends: sequences follow commit order and the
    // check for an earlier request is not racy.
    let Some(last) = tx
        .query_opt(
            "SELECT last_seq FROM conversations WHERE tenant = $1 AND contact_id = $2 FOR UPDATE",
            &[&tenant.as_str(), &contact],
        )
        .await?
        .map(|r| r.get::<_, i64>(0))
    else {
        return Ok(None);
    };
    if !m.request_id.is_empty() {
        let earlier = tx
            .query_opt(
                &format!(
                    "SELECT {COLUMNS} FROM messages
                     WHERE tenant = $1 AND contact_id = $2 AND sender = $3 AND request_id = $4"
                ),
                &[&tenant.as_str(), &contact, &m.sender.code(), &m.request_id],
            )
            .await?;
        if let Some(r) = earlier {
            return Ok(Some((message_of(&r)?, false)));
        }
    }
    let seq = last + 1;
    tx.execute(
        "UPDATE conversations SET last_seq = $3 WHERE tenant = $1 AND contact_id = $2",
        &[&tenant.as_str(), &contact, &seq],
    )
    .await?;
    let meta = m.attachment.as_ref().map(|a| AttachmentMeta {
        id: uuid::Uuid::now_v7().simple().to_string(),
        name: a.name.clone(),
        content_type: a.content_type.clone(),
        size: a.data.len() as i64,
        sha256: a.sha256.clone(),
    });
    let meta_json = meta
        .as_ref()
        .map(serde_json::to_value)
        .transpose()
        .map_err(|e| Error::Internal(format!("attachment as JSON: {e}")))?;
    let row = tx
        .query_one(
            &format!(
                "INSERT INTO messages (tenant, contact_id, seq, sender, agent_id, kind, body, status, request_id,
                                       provider_time, attachment)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING {COLUMNS}"
            ),
            &[
                &tenant.as_str(),
                &contact,
                &seq,
                &m.sender.code(),
                &m.sender.agent_id(),
                &m.kind.code(),
                &m.text,
                &Status::Sent.code(),
                &m.request_id,
                &m.provider_time,
                &meta_json,
            ],
        )
        .await?;
    if let (Some(a), Some(meta)) = (&m.attachment, &meta) {
        tx.execute(
            "INSERT INTO attachments (tenant, contact_id, id, seq, content_type, data) VALUES ($1, $2, $3, $4, $5, $6)",
            &[&tenant.as_str(), &contact, &meta.id, &seq, &a.content_type, &a.data],
        )
        .await?;
    }
    let stored = message_of(&row)?;
    // The topic carries a reference to the message (its name and sequence), never its text:
    // a topic cannot be erased per person (issue 23). Readers ask ListMessages.
    let wire =
        pb::Message { text: String::new(), attachment: None, ..wire::message(tenant.as_str(), contact, &stored) };
    let kind = match m.sender {
        Sender::Customer => pb::conversation_event::Kind::MessageReceived(wire),
        _ => pb::conversation_event::Kind::MessageSent(wire),
    };
    queue_event(tx, tenant, contact, kind).await?;
    announce(tx, tenant, contact).await?;
    Ok(Some((stored, true)))
}

async fn queue_event(
    tx: &Transaction<'_>,
    tenant: &TenantId,
    contact: &str,
    kind: pb::conversation_event::Kind,
) -> Result<(), Error> {
    let event = Event::new(
        tenant.clone(),
        &pb::ConversationEvent { contact: contact_name(tenant.as_str(), contact), kind: Some(kind) },
    );
    centralita_platform::db::outbox::queue(tx, tenant.as_str(), TOPIC_BASE, contact, &event.encode()).await
}

/// Up to `limit` messages after `after`, in sequence order.
pub async fn messages_after(
    pool: &Pool,
    tenant: &TenantId,
    contact: &str,
    after: i64,
    limit: i64,
) -> Result<Vec<Message>, Error> {
    let mut client = pool.get().await?;
    let tx = begin(&mut client, tenant).await?;
    let rows = tx
        .query(
            &format!(
                "SELECT {COLUMNS} FROM messages WHERE tenant = $1 AND contact_id = $2 AND seq > $3
                 ORDER BY seq LIMIT $4"
            ),
            &[&tenant.as_str(), &contact, &after, &limit],
        )
        .await?;
    tx.commit().await?;
    rows.iter().map(message_of).collect()
}

/// A file of the conversation (`id` from its message's [`AttachmentMeta`]): its message's
/// description and its bytes; `None` for no such file.
pub async fn attachment(
    pool: &Pool,
    tenant: &TenantId,
    contact: &str,
    id: &str,
) -> Result<Option<(AttachmentMeta, Vec<u8>)>, Error> {
    let mut client = pool.get().await?;
    let tx = begin(&mut client, tenant).await?;
    let row = tx
        .query_opt(
            "SELECT m.attachment, a.data FROM attachments a
             JOIN messages m ON m.tenant = a.tenant AND m.contact_id = a.contact_id AND m.seq = a.seq
             WHERE a.tenant = $1 AND a.contact_id = $2 AND a.id = $3",
            &[&tenant.as_str(), &contact, &id],
        )
        .await?;
    tx.commit().await?;
    let Some(row) = row else { return Ok(None) };
    let meta: AttachmentMeta = serde_json::from_value(row.get(0))
        .map_err(|e| Error::Internal(format!("stored attachment description: {e}")))?;
    Ok(Some((meta, row.get(1))))
}

/// Applies a delivery report to one message (the [`Status::join`] of what is stored and
/// the report); returns the status now stored, `None` for no such message.
pub async fn report_status(
    pool: &Pool,
    tenant: &TenantId,
    contact: &str,
    sequence: i64,
    report: Status,
    reason: &str,
    provider_time: Option<DateTime<Utc>>,
) -> Result<Option<Status>, Error> {
    let mut client = pool.get().await?;
    let tx = begin(&mut client, tenant).await?;
    let row = tx
        .query_opt(
            "SELECT status FROM messages WHERE tenant = $1 AND contact_id = $2 AND seq = $3 FOR UPDATE",
            &[&tenant.as_str(), &contact, &sequence],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    let stored = Status::from_stored(row.get(0)).ok_or_else(|| Error::Internal("unknown stored status".into()))?;
    let now = stored.join(report);
    if now != stored {
        set_status(&tx, tenant, contact, sequence, now, reason, provider_time).await?;
        announce(&tx, tenant, contact).await?;
    }
    tx.commit().await?;
    Ok(Some(now))
}

async fn set_status(
    tx: &Transaction<'_>,
    tenant: &TenantId,
    contact: &str,
    sequence: i64,
    status: Status,
    reason: &str,
    provider_time: Option<DateTime<Utc>>,
) -> Result<(), Error> {
    let reason = if status == Status::Failed { reason } else { "" };
    tx.execute(
        "UPDATE messages SET status = $4, failure_reason = $5 WHERE tenant = $1 AND contact_id = $2 AND seq = $3",
        &[&tenant.as_str(), &contact, &sequence, &status.code(), &reason],
    )
    .await?;
    let changed = pb::StatusChanged {
        sequence,
        status: wire::status(status) as i32,
        failure_reason: reason.to_owned(),
        provider_time: provider_time.map(timestamp),
    };
    queue_event(tx, tenant, contact, pb::conversation_event::Kind::StatusChanged(changed)).await
}

/// Which party read or received messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    Customer,
    Agent,
}

/// `party` received (`Delivered`) or read (`Read`) the other party's messages up to
/// `sequence` (capped at the last one): each such message's status joins the report, and a
/// read moves the party's read marker forward (never back). Returns the read marker.
pub async fn mark(
    pool: &Pool,
    tenant: &TenantId,
    contact: &str,
    party: Party,
    sequence: i64,
    report: Status,
) -> Result<Option<i64>, Error> {
    let mut client = pool.get().await?;
    let tx = begin(&mut client, tenant).await?;
    let marker = match party {
        Party::Customer => "customer_read_seq",
        Party::Agent => "agent_read_seq",
    };
    // The customer receives what agents and the system wrote; agents what the customer wrote.
    let senders = match party {
        Party::Customer => "2, 3",
        Party::Agent => "1",
    };
    let seq = if report == Status::Read {
        tx.query_opt(
            &format!(
                "UPDATE conversations SET {marker} = GREATEST({marker}, LEAST($3, last_seq))
                 WHERE tenant = $1 AND contact_id = $2 RETURNING {marker}"
            ),
            &[&tenant.as_str(), &contact, &sequence],
        )
        .await?
    } else {
        tx.query_opt(
            "SELECT LEAST($3, last_seq) FROM conversations WHERE tenant = $1 AND contact_id = $2",
            &[&tenant.as_str(), &contact, &sequence],
        )
        .await?
    };
    let Some(upto) = seq.map(|r| r.get::<_, i64>(0)) else { return Ok(None) };
    announce(&tx, tenant, contact).await?;
    let rows = tx
        .query(
            &format!(
                "SELECT seq, status FROM messages WHERE tenant = $1 AND contact_id = $2 AND seq <= $3
                 AND sender IN ({senders}) AND kind = 1 AND status <> $4 ORDER BY seq FOR UPDATE"
            ),
            &[&tenant.as_str(), &contact, &upto, &Status::Read.code()],
        )
        .await?;
    for r in rows {
        let stored = Status::from_stored(r.get(1)).ok_or_else(|| Error::Internal("unknown stored status".into()))?;
        let now = stored.join(report);
        if now != stored {
            set_status(&tx, tenant, contact, r.get(0), now, "", None).await?;
        }
    }
    tx.commit().await?;
    Ok(Some(upto))
}

/// `party` is typing (for [`TYPING_SECONDS`]) or stopped.
pub async fn set_typing(
    pool: &Pool,
    tenant: &TenantId,
    contact: &str,
    party: Party,
    active: bool,
) -> Result<bool, Error> {
    let mut client = pool.get().await?;
    let tx = begin(&mut client, tenant).await?;
    let column = match party {
        Party::Customer => "customer_typing_until",
        Party::Agent => "agent_typing_until",
    };
    let n = tx
        .execute(
            &format!(
                "UPDATE conversations SET {column} = CASE WHEN $3 THEN now() + make_interval(secs => $4) END
                 WHERE tenant = $1 AND contact_id = $2"
            ),
            &[&tenant.as_str(), &contact, &active, &TYPING_SECONDS],
        )
        .await?;
    if n == 1 {
        announce(&tx, tenant, contact).await?;
    }
    tx.commit().await?;
    Ok(n == 1)
}

/// The channel name of web chat conversations.
pub const WEBCHAT: &str = "chat";

/// The channel name of Messenger conversations.
pub const MESSENGER: &str = "messenger";

/// The channel name of Instagram conversations.
pub const INSTAGRAM: &str = "instagram";

/// The sequence of the last message of the business (an agent's or the system's) stored at
/// or before `time`, if any: what a read receipt with a watermark time covers.
pub async fn last_sent_until(
    pool: &Pool,
    tenant: &TenantId,
    contact: &str,
    time: DateTime<Utc>,
) -> Result<Option<i64>, Error> {
    let mut client = pool.get().await?;
    let tx = begin(&mut client, tenant).await?;
    let row = tx
        .query_one(
            "SELECT max(seq) FROM messages WHERE tenant = $1 AND contact_id = $2 AND sender <> $3 AND created_at <= $4",
            &[&tenant.as_str(), &contact, &Sender::Customer.code(), &time],
        )
        .await?;
    tx.commit().await?;
    Ok(row.get(0))
}

/// The channel name of SMS conversations.
pub const SMS: &str = "sms";

/// Whether an SMS with this provider id was stored already (inbound or outbound).
pub async fn sms_known(pool: &Pool, tenant: &TenantId, sid: &str) -> Result<bool, Error> {
    let mut client = pool.get().await?;
    let tx = begin(&mut client, tenant).await?;
    let row = tx
        .query_opt("SELECT 1 FROM sms_messages WHERE tenant = $1 AND message_sid = $2", &[&tenant.as_str(), &sid])
        .await?;
    tx.commit().await?;
    Ok(row.is_some())
}

/// The newest SMS conversation between a customer's number and one of the tenant's.
pub async fn latest_sms_conversation(
    pool: &Pool,
    tenant: &TenantId,
    customer: &str,
    number: &str,
) -> Result<Option<String>, Error> {
    latest_conversation(pool, tenant, SMS, customer, number).await
}

/// The channel name of WhatsApp conversations. Their provider message ids (Meta's
/// `wamid.…`) are kept in `sms_messages` like SMS ids: one table of provider ids.
pub const WHATSAPP: &str = "whatsapp";

/// The channel name of Telegram conversations (`visitor`: the private chat's id, `origin`:
/// the bot's id). Their update ids are kept in `sms_messages` too (`telegram:{bot}:{update}`).
pub const TELEGRAM: &str = "telegram";

/// The newest conversation of `channel` between a customer (`visitor`) and one of the
/// tenant's addresses (`origin`).
pub async fn latest_conversation(
    pool: &Pool,
    tenant: &TenantId,
    channel: &str,
    visitor: &str,
    origin: &str,
) -> Result<Option<String>, Error> {
    let mut client = pool.get().await?;
    let tx = begin(&mut client, tenant).await?;
    let row = tx
        .query_opt(
            "SELECT contact_id FROM conversations WHERE tenant = $1 AND channel = $2 AND visitor = $3 AND origin = $4
             ORDER BY created_at DESC LIMIT 1",
            &[&tenant.as_str(), &channel, &visitor, &origin],
        )
        .await?;
    tx.commit().await?;
    Ok(row.map(|r| r.get(0)))
}

/// When the customer last wrote in the conversation (the provider's time when it gave one),
/// if ever.
pub async fn last_from_customer(pool: &Pool, tenant: &TenantId, contact: &str) -> Result<Option<DateTime<Utc>>, Error> {
    let mut client = pool.get().await?;
    let tx = begin(&mut client, tenant).await?;
    let row = tx
        .query_one(
            "SELECT max(coalesce(provider_time, created_at)) FROM messages
             WHERE tenant = $1 AND contact_id = $2 AND sender = $3",
            &[&tenant.as_str(), &contact, &Sender::Customer.code()],
        )
        .await?;
    tx.commit().await?;
    Ok(row.get(0))
}

/// Stores an inbound SMS in the conversation under its provider id, in one transaction;
/// `None` when that id was stored before (a redelivery: nothing new is stored) or the
/// conversation does not exist.
pub async fn append_inbound_sms(
    pool: &Pool,
    tenant: &TenantId,
    contact: &str,
    sid: &str,
    m: &NewMessage,
) -> Result<Option<Message>, Error> {
    let mut client = pool.get().await?;
    let tx = begin(&mut client, tenant).await?;
    let Some((stored, true)) = append_in(&tx, tenant, contact, m).await? else {
        return Ok(None);
    };
    // A concurrent delivery of the same id waits here for the first to commit, then
    // conflicts: it rolls back (sequence included).
    let n = tx
        .execute(
            "INSERT INTO sms_messages (tenant, message_sid, contact_id, seq, inbound) VALUES ($1, $2, $3, $4, true)
             ON CONFLICT DO NOTHING",
            &[&tenant.as_str(), &sid, &contact, &stored.sequence],
        )
        .await?;
    if n == 0 {
        return Ok(None);
    }
    tx.commit().await?;
    Ok(Some(stored))
}

/// Records the provider id of an outbound SMS (the message `seq` of the conversation).
pub async fn record_outbound_sms(
    pool: &Pool,
    tenant: &TenantId,
    contact: &str,
    seq: i64,
    sid: &str,
) -> Result<(), Error> {
    let mut client = pool.get().await?;
    let tx = begin(&mut client, tenant).await?;
    tx.execute(
        "INSERT INTO sms_messages (tenant, message_sid, contact_id, seq, inbound) VALUES ($1, $2, $3, $4, false)
         ON CONFLICT DO NOTHING",
        &[&tenant.as_str(), &sid, &contact, &seq],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The message an outbound SMS id belongs to: `(contact, seq)`.
pub async fn outbound_sms(pool: &Pool, tenant: &TenantId, sid: &str) -> Result<Option<(String, i64)>, Error> {
    let mut client = pool.get().await?;
    let tx = begin(&mut client, tenant).await?;
    let row = tx
        .query_opt(
            "SELECT contact_id, seq FROM sms_messages WHERE tenant = $1 AND message_sid = $2 AND NOT inbound",
            &[&tenant.as_str(), &sid],
        )
        .await?;
    tx.commit().await?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

/// The channel name of email conversations.
pub const EMAIL: &str = "email";

/// The conversation of the tenant's email messages with any of `ids` (Message-IDs, the
/// most telling first): the first id found wins.
pub async fn email_thread(pool: &Pool, tenant: &TenantId, ids: &[String]) -> Result<Option<String>, Error> {
    if ids.is_empty() {
        return Ok(None);
    }
    let mut client = pool.get().await?;
    let tx = begin(&mut client, tenant).await?;
    let rows = tx
        .query(
            "SELECT message_id, contact_id FROM email_messages WHERE tenant = $1 AND message_id = ANY($2)",
            &[&tenant.as_str(), &ids],
        )
        .await?;
    tx.commit().await?;
    let found: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    Ok(ids.iter().find_map(|id| found.iter().find(|(m, _)| m == id).map(|(_, c)| c.clone())))
}

/// Whether an email with this Message-ID (or dedupe key) was stored already.
pub async fn email_known(pool: &Pool, tenant: &TenantId, message_id: &str) -> Result<bool, Error> {
    let mut client = pool.get().await?;
    let tx = begin(&mut client, tenant).await?;
    let row = tx
        .query_opt(
            "SELECT 1 FROM email_messages WHERE tenant = $1 AND message_id = $2",
            &[&tenant.as_str(), &message_id],
        )
        .await?;
    tx.commit().await?;
    Ok(row.is_some())
}

/// An email's own record beside its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailRecord {
    pub message_id: String,
    pub subject: String,
    /// The `References` a reply to it carries.
    pub refs: Vec<String>,
    /// JSON array of the attachments' name, type and size.
    pub attachments: serde_json::Value,
}

/// Stores an email in the conversation under its Message-ID, in one transaction: the
/// message and its record. `None` when that id was stored before (a redelivery: nothing new
/// is stored) or the conversation does not exist.
pub async fn append_email(
    pool: &Pool,
    tenant: &TenantId,
    contact: &str,
    inbound: bool,
    record: &EmailRecord,
    m: &NewMessage,
) -> Result<Option<Message>, Error> {
    let mut client = pool.get().await?;
    let tx = begin(&mut client, tenant).await?;
    let Some((stored, true)) = append_in(&tx, tenant, contact, m).await? else {
        return Ok(None);
    };
    // A concurrent delivery of the same id waits here for the first to commit, then
    // conflicts: it rolls back (sequence included).
    let n = insert_email(&tx, tenant, contact, stored.sequence, inbound, record).await?;
    if n == 0 {
        return Ok(None);
    }
    tx.commit().await?;
    Ok(Some(stored))
}

async fn insert_email(
    tx: &Transaction<'_>,
    tenant: &TenantId,
    contact: &str,
    seq: i64,
    inbound: bool,
    r: &EmailRecord,
) -> Result<u64, Error> {
    Ok(tx
        .execute(
            "INSERT INTO email_messages (tenant, message_id, contact_id, seq, inbound, subject, refs, attachments)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
            &[&tenant.as_str(), &r.message_id, &contact, &seq, &inbound, &r.subject, &r.refs.join(" "), &r.attachments],
        )
        .await?)
}

/// Records an outbound email (the agent's message `seq`) under our Message-ID before it is
/// sent, so the customer's answer finds the conversation.
pub async fn record_outbound_email(
    pool: &Pool,
    tenant: &TenantId,
    contact: &str,
    seq: i64,
    record: &EmailRecord,
) -> Result<(), Error> {
    let mut client = pool.get().await?;
    let tx = begin(&mut client, tenant).await?;
    insert_email(&tx, tenant, contact, seq, false, record).await?;
    tx.commit().await?;
    Ok(())
}

/// The email an agent's reply answers: the customer's newest in the conversation (or, with
/// none, the newest of any).
pub async fn email_parent(pool: &Pool, tenant: &TenantId, contact: &str) -> Result<Option<EmailRecord>, Error> {
    let mut client = pool.get().await?;
    let tx = begin(&mut client, tenant).await?;
    let row = tx
        .query_opt(
            "SELECT message_id, subject, refs, attachments FROM email_messages WHERE tenant = $1 AND contact_id = $2
             ORDER BY inbound DESC, seq DESC LIMIT 1",
            &[&tenant.as_str(), &contact],
        )
        .await?;
    tx.commit().await?;
    Ok(row.map(|r| EmailRecord {
        message_id: r.get(0),
        subject: r.get(1),
        refs: r.get::<_, String>(2).split_whitespace().map(str::to_owned).collect(),
        attachments: r.get(3),
    }))
}

pub use centralita_platform::db::outbox::{pending, published, Outgoing};

/// A pause of the contact's recording began (`paused`) or ended at `at` (ms since the
/// epoch): a span opens or the open one closes. A pause while paused, a resume while not,
/// and a pause already recorded at `at` (a redelivered event) change nothing; so does an
/// unknown conversation.
pub async fn mark_paused(pool: &Pool, tenant: &TenantId, contact: &str, paused: bool, at: i64) -> Result<(), Error> {
    let mut client = pool.get().await?;
    let tx = begin(&mut client, tenant).await?;
    let row = tx
        .query_opt(
            "SELECT paused_spans FROM conversations WHERE tenant = $1 AND contact_id = $2 FOR UPDATE",
            &[&tenant.as_str(), &contact],
        )
        .await?;
    let Some(row) = row else { return Ok(()) };
    let mut spans: Vec<(i64, Option<i64>)> = serde_json::from_value(row.get(0)).unwrap_or_default();
    let open = spans.last().is_some_and(|(_, end)| end.is_none());
    match (paused, open) {
        (true, false) if !spans.iter().any(|(start, _)| *start == at) => spans.push((at, None)),
        (false, true) => {
            if let Some(last) = spans.last_mut() {
                last.1 = Some(at.max(last.0));
            }
        }
        _ => return Ok(()),
    }
    let value = serde_json::to_value(&spans).map_err(Error::internal)?;
    tx.execute(
        "UPDATE conversations SET paused_spans = $3 WHERE tenant = $1 AND contact_id = $2",
        &[&tenant.as_str(), &contact, &value],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// What a transcript needs of its conversation besides the messages: when it started and
/// the spans the recording was paused; `None` for an unknown conversation.
pub async fn transcript_facts(
    pool: &Pool,
    tenant: &TenantId,
    contact: &str,
) -> Result<Option<(DateTime<Utc>, Vec<(i64, Option<i64>)>)>, Error> {
    let mut client = pool.get().await?;
    let tx = begin(&mut client, tenant).await?;
    let row = tx
        .query_opt(
            "SELECT created_at, paused_spans FROM conversations WHERE tenant = $1 AND contact_id = $2",
            &[&tenant.as_str(), &contact],
        )
        .await?;
    tx.commit().await?;
    Ok(row.map(|r| (r.get(0), serde_json::from_value(r.get(1)).unwrap_or_default())))
}

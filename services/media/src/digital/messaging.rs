//! Messenger and Instagram through Meta's Messenger Platform, pure: the webhook's JSON read
//! into customers' messages and receipts, and an outbound message's JSON. The signature
//! (`X-Hub-Signature-256`) and the subscription handshake are WhatsApp's ([`super::meta`]):
//! the same Meta app scheme. No I/O here.
//!
//! A delivery (`object` `page` for Messenger, `instagram` for Instagram) batches entries,
//! each of one Page (or account) with its `messaging` events: a customer's `message` (text
//! and attachments by URL), our own messages echoed back (`is_echo`, skipped), `delivery`
//! receipts (the message ids delivered), `read` receipts (Messenger: every message sent
//! before a watermark time; Instagram: up to one message id), and kinds this adapter does
//! not take (postbacks, reactions, referrals), skipped.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::meta::{id, invalid, Invalid};
use super::model::MAX_TEXT_BYTES;

/// Largest webhook body taken.
pub const MAX_WEBHOOK_BYTES: usize = 256 * 1024;

/// The two networks of the Messenger Platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Network {
    Messenger,
    Instagram,
}

impl Network {
    /// The webhook's `object`.
    pub fn object(self) -> &'static str {
        match self {
            Network::Messenger => "page",
            Network::Instagram => "instagram",
        }
    }

    /// Lowercase name: the webhook's path, the conversation's channel, the CRM network.
    pub fn name(self) -> &'static str {
        match self {
            Network::Messenger => "messenger",
            Network::Instagram => "instagram",
        }
    }

    /// As people write it.
    pub fn title(self) -> &'static str {
        match self {
            Network::Messenger => "Messenger",
            Network::Instagram => "Instagram",
        }
    }
}

#[derive(Debug, Deserialize)]
struct Webhook {
    object: String,
    #[serde(default)]
    entry: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
struct Entry {
    id: String,
    #[serde(default)]
    messaging: Vec<Event>,
}

#[derive(Debug, Deserialize)]
struct Party {
    id: String,
}

#[derive(Debug, Deserialize)]
struct Event {
    sender: Party,
    recipient: Party,
    #[serde(default)]
    timestamp: Option<i64>,
    #[serde(default)]
    message: Option<WireMessage>,
    #[serde(default)]
    delivery: Option<WireDelivery>,
    #[serde(default)]
    read: Option<WireRead>,
}

#[derive(Debug, Deserialize)]
struct WireMessage {
    mid: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    is_echo: bool,
    #[serde(default)]
    attachments: Vec<WireAttachment>,
}

#[derive(Debug, Deserialize)]
struct WireAttachment {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    payload: Option<Payload>,
}

#[derive(Debug, Deserialize)]
struct Payload {
    #[serde(default)]
    url: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WireDelivery {
    #[serde(default)]
    mids: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct WireRead {
    #[serde(default)]
    watermark: Option<i64>,
    #[serde(default)]
    mid: Option<String>,
}

/// A file a customer sent: its kind (`image`, `video`, `audio`, `file`) and the URL Meta
/// serves it from (fetched only from Meta's hosts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    pub kind: String,
    pub url: String,
}

impl FileRef {
    /// A name to keep the file under, from its kind and type.
    pub fn file_name(&self, network: Network, content_type: &str) -> String {
        let ext = super::attachments::extension(content_type);
        format!("{}-{}.{ext}", network.name(), self.kind)
    }
}

/// A customer's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    /// The tenant's Page (or account) it was sent to.
    pub page_id: String,
    /// The customer's page-scoped id (PSID, IGSID).
    pub sender: String,
    /// Meta's message id, unique: a redelivery carries the same.
    pub message_id: String,
    pub time: DateTime<Utc>,
    /// The text (empty when the message is only files).
    pub text: String,
    pub files: Vec<FileRef>,
}

/// A receipt of the business's messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Receipt {
    /// These message ids reached the customer.
    Delivered(Vec<String>),
    /// The customer read every message sent to them up to this time (Messenger).
    ReadUntil(DateTime<Utc>),
    /// The customer read this message (Instagram), and so the ones before it.
    ReadMessage(String),
}

/// A receipt with the conversation it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptOf {
    pub page_id: String,
    pub customer: String,
    pub receipt: Receipt,
}

/// What one webhook delivery carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivery {
    pub messages: Vec<Inbound>,
    pub receipts: Vec<ReceiptOf>,
}

fn millis(field: &str, ms: i64) -> Result<DateTime<Utc>, Invalid> {
    DateTime::from_timestamp_millis(ms)
        .filter(|_| ms > 0)
        .ok_or_else(|| invalid(field, "must be milliseconds since the epoch"))
}

/// Reads a verified webhook body of `network`.
pub fn parse(network: Network, body: &[u8]) -> Result<Delivery, Invalid> {
    let hook: Webhook = serde_json::from_slice(body).map_err(|e| invalid("body", format!("not a webhook: {e}")))?;
    if hook.object != network.object() {
        return Err(invalid("object", format!("must be `{}`", network.object())));
    }
    let mut out = Delivery::default();
    for (i, entry) in hook.entry.iter().enumerate() {
        id(&format!("entry[{i}].id"), &entry.id)?;
        for (j, e) in entry.messaging.iter().enumerate() {
            let at = |f: &str| format!("entry[{i}].messaging[{j}].{f}");
            let sender = id(&at("sender.id"), &e.sender.id)?;
            let recipient = id(&at("recipient.id"), &e.recipient.id)?;
            if let Some(m) = &e.message {
                if m.is_echo {
                    // Our own message, echoed: the customer is the recipient; nothing to store.
                    continue;
                }
                let text = m.text.clone().unwrap_or_default();
                if text.len() > MAX_TEXT_BYTES {
                    return Err(invalid(at("message.text"), format!("must be at most {MAX_TEXT_BYTES} bytes")));
                }
                let mut files = Vec::new();
                for (k, a) in m.attachments.iter().enumerate() {
                    let url = a.payload.as_ref().and_then(|p| p.url.clone()).unwrap_or_default();
                    let kind = a.kind.as_str();
                    if !(1..=32).contains(&kind.len()) || !kind.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                        return Err(invalid(
                            at(&format!("message.attachments[{k}].type")),
                            "is not an attachment type",
                        ));
                    }
                    if url.is_empty() || url.len() > 4096 {
                        // A sticker without URL, a location, a share: no file to fetch.
                        continue;
                    }
                    files.push(FileRef { kind: kind.to_owned(), url });
                }
                let text = if text.trim().is_empty() && files.is_empty() {
                    format!("[{}: a message of a kind not taken here]", network.title())
                } else {
                    text
                };
                out.messages.push(Inbound {
                    page_id: recipient,
                    sender,
                    message_id: id(&at("message.mid"), &m.mid)?,
                    time: millis(&at("timestamp"), e.timestamp.unwrap_or(0))?,
                    text,
                    files,
                });
            } else if let Some(d) = &e.delivery {
                let mids = d
                    .mids
                    .iter()
                    .enumerate()
                    .map(|(k, m)| id(&at(&format!("delivery.mids[{k}]")), m))
                    .collect::<Result<Vec<_>, _>>()?;
                if !mids.is_empty() {
                    let receipt = Receipt::Delivered(mids);
                    out.receipts.push(ReceiptOf { page_id: recipient, customer: sender, receipt });
                }
            } else if let Some(r) = &e.read {
                let receipt = match (r.watermark, &r.mid) {
                    (_, Some(mid)) => Receipt::ReadMessage(id(&at("read.mid"), mid)?),
                    (Some(w), None) => Receipt::ReadUntil(millis(&at("read.watermark"), w)?),
                    (None, None) => return Err(invalid(at("read"), "needs a watermark or a mid")),
                };
                out.receipts.push(ReceiptOf { page_id: recipient, customer: sender, receipt });
            }
        }
    }
    Ok(out)
}

/// How a business may reply on the Messenger Platform: within 24 hours of the customer's
/// last message a standard `RESPONSE`; after that, for 7 days, a message tagged
/// `HUMAN_AGENT` (a person answering; the app needs Meta's Human Agent permission); later
/// not at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    Response,
    HumanAgent,
}

/// Meta's standard messaging window.
pub const STANDARD_WINDOW: chrono::Duration = chrono::Duration::hours(24);
/// The `HUMAN_AGENT` tag's window.
pub const HUMAN_AGENT_WINDOW: chrono::Duration = chrono::Duration::days(7);

/// How an agent may reply at `now`, the customer having last written at `last` (never:
/// `None`, as after 7 days).
pub fn reply(last: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Option<Reply> {
    let since = now - last?;
    if since < STANDARD_WINDOW {
        Some(Reply::Response)
    } else if since < HUMAN_AGENT_WINDOW {
        Some(Reply::HumanAgent)
    } else {
        None
    }
}

/// The Send API's body of a text reply to the customer `to`.
pub fn text_message(to: &str, body: &str, reply: Reply) -> serde_json::Value {
    let mut m = serde_json::json!({
        "recipient": { "id": to },
        "messaging_type": "RESPONSE",
        "message": { "text": body },
    });
    if reply == Reply::HumanAgent {
        m["messaging_type"] = "MESSAGE_TAG".into();
        m["tag"] = "HUMAN_AGENT".into();
    }
    m
}

/// The id of the message the Send API accepted, from its answer.
pub fn sent_id(answer: &serde_json::Value) -> Option<String> {
    let id = answer.get("message_id")?.as_str()?;
    (!id.is_empty() && id.len() <= 256 && id.bytes().all(|b| b.is_ascii_graphic())).then(|| id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    // The shapes of Meta's Messenger Platform webhook reference (messages, message_deliveries,
    // message_reads, echoes) with made-up ids.
    const MESSENGER: &str = r#"{
      "object": "page",
      "entry": [{ "id": "104293851", "time": 1458692752478, "messaging": [
        { "sender": { "id": "2415566" }, "recipient": { "id": "104293851" }, "timestamp": 1458692752478,
          "message": { "mid": "m_AG5Hz2U", "text": "¿Hacen envíos a Canarias?" } },
        { "sender": { "id": "2415566" }, "recipient": { "id": "104293851" }, "timestamp": 1458692752480,
          "message": { "mid": "m_IMG", "attachments": [
            { "type": "image", "payload": { "url": "https://scontent.xx.fbcdn.net/v/t1/abc.jpg?oh=1" } },
            { "type": "location", "payload": { "coordinates": { "lat": 28.1, "long": -15.4 } } } ] } },
        { "sender": { "id": "104293851" }, "recipient": { "id": "2415566" }, "timestamp": 1458692752490,
          "message": { "mid": "m_ECHO", "text": "Sí", "is_echo": true } },
        { "sender": { "id": "2415566" }, "recipient": { "id": "104293851" },
          "delivery": { "mids": ["m_OUT1", "m_OUT2"], "watermark": 1458668856253 } },
        { "sender": { "id": "2415566" }, "recipient": { "id": "104293851" }, "timestamp": 1458668856463,
          "read": { "watermark": 1458668856253 } },
        { "sender": { "id": "2415566" }, "recipient": { "id": "104293851" }, "timestamp": 1458668856463,
          "postback": { "title": "Empezar", "payload": "START" } }
      ] }]
    }"#;

    #[test]
    fn a_messenger_delivery_is_read_into_messages_and_receipts() {
        let d = parse(Network::Messenger, MESSENGER.as_bytes()).expect("valid");
        assert_eq!(d.messages.len(), 2, "the echo and the postback are skipped");
        let m = &d.messages[0];
        assert_eq!(
            (m.page_id.as_str(), m.sender.as_str(), m.message_id.as_str()),
            ("104293851", "2415566", "m_AG5Hz2U")
        );
        assert_eq!((m.text.as_str(), m.time.timestamp_millis()), ("¿Hacen envíos a Canarias?", 1_458_692_752_478));
        let img = &d.messages[1];
        assert_eq!(img.text, "");
        assert_eq!(
            img.files,
            [FileRef { kind: "image".into(), url: "https://scontent.xx.fbcdn.net/v/t1/abc.jpg?oh=1".into() }],
            "a location has no file"
        );
        assert_eq!(img.files[0].file_name(Network::Messenger, "image/jpeg"), "messenger-image.jpg");
        let receipts: Vec<_> = d.receipts.iter().map(|r| r.receipt.clone()).collect();
        assert_eq!(
            receipts,
            [
                Receipt::Delivered(vec!["m_OUT1".into(), "m_OUT2".into()]),
                Receipt::ReadUntil(DateTime::from_timestamp_millis(1_458_668_856_253).unwrap())
            ]
        );
        assert!(d.receipts.iter().all(|r| r.page_id == "104293851" && r.customer == "2415566"));
    }

    #[test]
    fn an_instagram_delivery_reads_by_message_id() {
        let body = r#"{"object": "instagram", "entry": [{"id": "17841405", "time": 1, "messaging": [
            {"sender": {"id": "5312"}, "recipient": {"id": "17841405"}, "timestamp": 1700000000000,
             "message": {"mid": "aWdfZA", "text": "Hola"}},
            {"sender": {"id": "5312"}, "recipient": {"id": "17841405"}, "timestamp": 1700000000100,
             "message": {"mid": "aWdfZB", "attachments": [{"type": "share"}]}},
            {"sender": {"id": "5312"}, "recipient": {"id": "17841405"}, "timestamp": 1700000000200,
             "read": {"mid": "aWdfOUT"}}]}]}"#;
        let d = parse(Network::Instagram, body.as_bytes()).expect("valid");
        assert_eq!(d.messages[0].text, "Hola");
        assert_eq!(d.messages[1].text, "[Instagram: a message of a kind not taken here]");
        assert_eq!(d.receipts[0].receipt, Receipt::ReadMessage("aWdfOUT".into()));
        assert_eq!(parse(Network::Messenger, body.as_bytes()).expect_err("not a page").field, "object");
    }

    #[test]
    fn malformed_deliveries_are_refused_with_their_field() {
        let field = |s: &str| parse(Network::Messenger, s.as_bytes()).expect_err("refused").field;
        assert_eq!(field("{"), "body");
        assert_eq!(
            field(&MESSENGER.replace(r#""mid": "m_AG5Hz2U""#, r#""mid": """#)),
            "entry[0].messaging[0].message.mid"
        );
        assert_eq!(
            field(&MESSENGER.replace(r#""timestamp": 1458692752478,"#, r#""timestamp": -5,"#)),
            "entry[0].messaging[0].timestamp"
        );
        let long = "x".repeat(MAX_TEXT_BYTES + 1);
        assert_eq!(field(&MESSENGER.replace("¿Hacen envíos a Canarias?", &long)), "entry[0].messaging[0].message.text");
        assert_eq!(
            field(&MESSENGER.replace(r#""type": "image""#, r#""type": "IMAGE!""#)),
            "entry[0].messaging[1].message.attachments[0].type"
        );
        assert_eq!(
            field(&MESSENGER.replace(r#""read": { "watermark": 1458668856253 }"#, r#""read": {}"#)),
            "entry[0].messaging[4].read"
        );
        assert_eq!(
            field(&MESSENGER.replace(r#""sender": { "id": "2415566" }"#, r#""sender": { "id": "a b" }"#)),
            "entry[0].messaging[0].sender.id"
        );
    }

    #[test]
    fn an_outbound_text_and_its_answer() {
        let m = text_message("2415566", "Sí, en 48 h", Reply::Response);
        assert_eq!(m["recipient"]["id"], "2415566");
        assert_eq!(
            (m["messaging_type"].as_str(), m["message"]["text"].as_str()),
            (Some("RESPONSE"), Some("Sí, en 48 h"))
        );
        assert_eq!(
            sent_id(&serde_json::json!({"recipient_id": "2415566", "message_id": "m_OUT9"})).as_deref(),
            Some("m_OUT9")
        );
        assert_eq!(sent_id(&serde_json::json!({"error": {"message": "x"}})), None);
        let tagged = text_message("2415566", "Sigo con su caso", Reply::HumanAgent);
        assert_eq!(
            (tagged["messaging_type"].as_str(), tagged["tag"].as_str()),
            (Some("MESSAGE_TAG"), Some("HUMAN_AGENT"))
        );
        assert!(m.get("tag").is_none());
    }

    #[test]
    fn a_reply_within_a_day_responds_within_a_week_is_tagged_and_later_none() {
        let t = DateTime::from_timestamp(1_700_000_000, 0).expect("time");
        let h = chrono::Duration::hours;
        assert_eq!(reply(Some(t), t + h(23)), Some(Reply::Response));
        assert_eq!(reply(Some(t), t + h(24)), Some(Reply::HumanAgent));
        assert_eq!(reply(Some(t), t + h(24 * 7 - 1)), Some(Reply::HumanAgent));
        assert_eq!(reply(Some(t), t + h(24 * 7)), None);
        assert_eq!(reply(None, t), None, "the customer never wrote");
    }
}

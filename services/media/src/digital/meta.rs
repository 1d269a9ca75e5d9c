//! WhatsApp through Meta's Cloud API, pure: the `X-Hub-Signature-256` check on the raw
//! body, the subscription handshake, the webhook's JSON read into inbound messages and
//! status reports, the 24-hour customer-service window, and an outbound message's JSON. No
//! I/O here.
//!
//! The signature (Meta's "Validating payloads", the X-Hub scheme of WebSub): `sha256=`
//! and the lowercase hex HMAC-SHA256 of the raw request body, keyed with the app secret.
//! It is checked on the raw body before anything else is read from it.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use super::model::{Status, MAX_TEXT_BYTES};
use super::twilio::Consent;

/// The header Meta signs webhook deliveries with.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";

/// Largest webhook body taken (a delivery batches a few messages and statuses).
pub const MAX_WEBHOOK_BYTES: usize = 256 * 1024;

/// How long after the customer's last message a business may write freely; after it only
/// approved templates (WhatsApp's customer-service window).
pub const SERVICE_WINDOW: chrono::Duration = chrono::Duration::hours(24);

/// The `object` of WhatsApp Business webhooks.
pub const OBJECT: &str = "whatsapp_business_account";

fn mac(app_secret: &str, body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(app_secret.as_bytes()).expect("HMAC takes any key length");
    m.update(body);
    m
}

/// The header value Meta sends for `body` under `app_secret`.
pub fn signature(app_secret: &str, body: &[u8]) -> String {
    let bytes = mac(app_secret, body).finalize().into_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Whether `header` is the signature of `body` under `app_secret`; compared in constant
/// time. An empty secret never verifies.
pub fn verify(app_secret: &str, body: &[u8], header: &str) -> bool {
    if app_secret.is_empty() {
        return false;
    }
    let Some(hex) = header.trim().strip_prefix("sha256=") else { return false };
    if hex.len() != 64 {
        return false;
    }
    let mut given = [0u8; 32];
    for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
        let Some(byte) = std::str::from_utf8(pair).ok().and_then(|p| u8::from_str_radix(p, 16).ok()) else {
            return false;
        };
        given[i] = byte;
    }
    mac(app_secret, body).verify_slice(&given).is_ok()
}

/// The subscription handshake (`GET ?hub.mode=subscribe&hub.verify_token=…&hub.challenge=…`):
/// the challenge to echo when the mode is `subscribe` and the token is the tenant's.
pub fn handshake<'a>(mode: &str, token: &str, challenge: &'a str, expected: &str) -> Option<&'a str> {
    let same = token.len() == expected.len()
        && token.bytes().zip(expected.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
    (mode == "subscribe" && !expected.is_empty() && same && !challenge.is_empty() && challenge.len() <= 256)
        .then_some(challenge)
}

#[derive(Debug, Deserialize)]
struct Webhook {
    object: String,
    #[serde(default)]
    entry: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
struct Entry {
    #[serde(default)]
    changes: Vec<Change>,
}

#[derive(Debug, Deserialize)]
struct Change {
    field: String,
    value: Value,
}

#[derive(Debug, Deserialize)]
struct Value {
    metadata: Metadata,
    #[serde(default)]
    contacts: Vec<Profile>,
    #[serde(default)]
    messages: Vec<WireMessage>,
    #[serde(default)]
    statuses: Vec<WireStatus>,
}

#[derive(Debug, Deserialize)]
struct Metadata {
    phone_number_id: String,
}

#[derive(Debug, Deserialize)]
struct Profile {
    wa_id: String,
    #[serde(default)]
    profile: Option<ProfileName>,
}

#[derive(Debug, Deserialize)]
struct ProfileName {
    #[serde(default)]
    name: String,
}

#[derive(Debug, Deserialize)]
struct WireMessage {
    from: String,
    id: String,
    timestamp: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<Text>,
    #[serde(default)]
    image: Option<WireMedia>,
    #[serde(default)]
    document: Option<WireMedia>,
    #[serde(default)]
    audio: Option<WireMedia>,
    #[serde(default)]
    video: Option<WireMedia>,
    #[serde(default)]
    sticker: Option<WireMedia>,
}

#[derive(Debug, Deserialize)]
struct Text {
    body: String,
}

#[derive(Debug, Deserialize)]
struct WireMedia {
    id: String,
    #[serde(default)]
    mime_type: String,
    #[serde(default)]
    filename: String,
    #[serde(default)]
    caption: String,
}

/// A file a customer sent (an image, document, voice note, video or sticker): Meta's media
/// id, to be looked up ([`media_url`]) and downloaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRef {
    pub id: String,
    /// `image`, `document`, `audio`, `video` or `sticker`.
    pub kind: String,
    pub mime_type: String,
    /// The document's name, if the customer's app gave one.
    pub filename: String,
}

impl MediaRef {
    /// The name to keep the file under: the document's, else one made of the kind and type.
    pub fn file_name(&self) -> String {
        let ext = super::attachments::extension(&self.mime_type);
        super::attachments::clean_name(&self.filename, &format!("whatsapp-{}.{ext}", self.kind))
    }
}

#[derive(Debug, Deserialize)]
struct WireStatus {
    id: String,
    status: String,
    timestamp: String,
    #[serde(default)]
    errors: Vec<WireError>,
}

#[derive(Debug, Deserialize)]
struct WireError {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    title: String,
}

/// A customer's message, as read from a webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    /// The tenant's WhatsApp number it was sent to (Meta's id of the number).
    pub phone_number_id: String,
    /// The customer's number, E.164 (`+` and the `wa_id`'s digits).
    pub from: String,
    /// The customer's WhatsApp profile name, if given (not stored: the CRM has names).
    pub profile_name: String,
    /// Meta's message id (`wamid.…`), unique: a redelivery carries the same.
    pub message_id: String,
    pub time: DateTime<Utc>,
    /// The text; a file's caption (may be empty); other kinds (locations, contacts, …) a
    /// line naming the kind.
    pub text: String,
    /// The file of an image, document, audio, video or sticker message.
    pub media: Option<MediaRef>,
}

/// A delivery report of one of the business's messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusReport {
    pub message_id: String,
    pub status: Status,
    pub time: DateTime<Utc>,
    /// Why it failed (Meta's error code and title), empty otherwise.
    pub reason: String,
}

/// What one webhook delivery carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivery {
    pub messages: Vec<Inbound>,
    pub statuses: Vec<StatusReport>,
}

/// Why a delivery is refused: the field and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

pub(super) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid { field: field.into(), message: message.into() }
}

/// A provider's id: 1-256 printable ASCII characters.
pub(super) fn id(field: &str, s: &str) -> Result<String, Invalid> {
    if s.is_empty() || s.len() > 256 || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(field, "must be 1-256 printable ASCII characters"));
    }
    Ok(s.to_owned())
}

fn time(field: &str, s: &str) -> Result<DateTime<Utc>, Invalid> {
    s.parse::<i64>()
        .ok()
        .and_then(|secs| DateTime::from_timestamp(secs, 0))
        .ok_or_else(|| invalid(field, "must be seconds since the epoch"))
}

/// `wa_id` (the customer's number, digits only) as E.164.
fn e164(field: &str, wa_id: &str) -> Result<String, Invalid> {
    if !(7..=15).contains(&wa_id.len()) || !wa_id.bytes().all(|b| b.is_ascii_digit()) || wa_id.starts_with('0') {
        return Err(invalid(field, "must be a phone number's 7-15 digits"));
    }
    Ok(format!("+{wa_id}"))
}

fn status(s: &str) -> Option<Status> {
    match s {
        "sent" => Some(Status::Sent),
        "delivered" => Some(Status::Delivered),
        "read" => Some(Status::Read),
        "failed" => Some(Status::Failed),
        _ => None,
    }
}

/// Reads a verified webhook body. Changes of other fields than `messages` are skipped;
/// a status of a kind the lattice does not know (`deleted`, …) too.
pub fn parse(body: &[u8]) -> Result<Delivery, Invalid> {
    let hook: Webhook = serde_json::from_slice(body).map_err(|e| invalid("body", format!("not a webhook: {e}")))?;
    if hook.object != OBJECT {
        return Err(invalid("object", format!("must be `{OBJECT}`")));
    }
    let mut out = Delivery::default();
    for (i, entry) in hook.entry.iter().enumerate() {
        for (j, change) in entry.changes.iter().enumerate() {
            if change.field != "messages" {
                continue;
            }
            let at = format!("entry[{i}].changes[{j}].value");
            let v = &change.value;
            let number = id(&format!("{at}.metadata.phone_number_id"), &v.metadata.phone_number_id)?;
            for (k, m) in v.messages.iter().enumerate() {
                let f = |name: &str| format!("{at}.messages[{k}].{name}");
                let from = e164(&f("from"), &m.from)?;
                let file = match m.kind.as_str() {
                    "image" => m.image.as_ref(),
                    "document" => m.document.as_ref(),
                    "audio" => m.audio.as_ref(),
                    "video" => m.video.as_ref(),
                    "sticker" => m.sticker.as_ref(),
                    _ => None,
                };
                let (text, media) = match (m.kind.as_str(), &m.text, file) {
                    ("text", Some(t), _) => (t.body.clone(), None),
                    ("text", None, _) => return Err(invalid(f("text"), "is required for a text message")),
                    (kind @ ("image" | "document" | "audio" | "video" | "sticker"), _, Some(w)) => {
                        let media = MediaRef {
                            id: id(&f(&format!("{kind}.id")), &w.id)?,
                            kind: kind.to_owned(),
                            mime_type: w.mime_type.chars().take(100).collect(),
                            filename: w.filename.chars().take(300).collect(),
                        };
                        (w.caption.clone(), Some(media))
                    }
                    (kind @ ("image" | "document" | "audio" | "video" | "sticker"), _, None) => {
                        return Err(invalid(f(kind), format!("is required for a {kind} message")))
                    }
                    (kind, _, _) if kind.len() <= 32 && kind.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') => {
                        (format!("[a WhatsApp {kind} message: this kind is not taken here]"), None)
                    }
                    _ => return Err(invalid(f("type"), "is not a message type")),
                };
                if (media.is_none() && text.trim().is_empty()) || text.len() > MAX_TEXT_BYTES {
                    return Err(invalid(f("text.body"), format!("must be 1 to {MAX_TEXT_BYTES} bytes")));
                }
                let profile_name = v
                    .contacts
                    .iter()
                    .find(|c| c.wa_id == m.from)
                    .and_then(|c| c.profile.as_ref())
                    .map(|p| p.name.clone())
                    .unwrap_or_default();
                out.messages.push(Inbound {
                    phone_number_id: number.clone(),
                    from,
                    profile_name,
                    message_id: id(&f("id"), &m.id)?,
                    time: time(&f("timestamp"), &m.timestamp)?,
                    text,
                    media,
                });
            }
            for (k, s) in v.statuses.iter().enumerate() {
                let f = |name: &str| format!("{at}.statuses[{k}].{name}");
                let Some(report) = status(&s.status) else { continue };
                let reason = s
                    .errors
                    .iter()
                    .map(|e| format!("{} {}", e.code, e.title.chars().take(200).collect::<String>()))
                    .collect::<Vec<_>>()
                    .join("; ");
                out.statuses.push(StatusReport {
                    message_id: id(&f("id"), &s.id)?,
                    status: report,
                    time: time(&f("timestamp"), &s.timestamp)?,
                    reason,
                });
            }
        }
    }
    Ok(out)
}

/// Whether the business may still write freely: the customer's last message (if any) is
/// less than [`SERVICE_WINDOW`] before `now`.
pub fn within_window(last_from_customer: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    last_from_customer.is_some_and(|t| now - t < SERVICE_WINDOW)
}

/// The consent keyword a customer's whole message is, if any. WhatsApp has no carrier
/// keywords: the platform takes Twilio's standard ones (`STOP`, `UNSUBSCRIBE`, … and
/// `START`, …) and their Spanish counterparts (`BAJA`, `PARAR`, `CANCELAR` and `ALTA`), any
/// case, spaces around.
pub fn consent_keyword(text: &str) -> Option<Consent> {
    if let Some(c) = super::twilio::keyword(text) {
        return Some(c);
    }
    match text.trim().to_uppercase().as_str() {
        "BAJA" | "PARAR" | "CANCELAR" | "DETENER" => Some(Consent::OptOut),
        "ALTA" | "SUSCRIBIR" => Some(Consent::OptIn),
        _ => None,
    }
}

/// A message template to send (see [`template`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub name: String,
    pub language: String,
    pub parameters: Vec<String>,
}

impl Template {
    /// What the conversation keeps of it: its name, language and parameters.
    pub fn describe(&self) -> String {
        let mut s = format!("[WhatsApp template {} ({})]", self.name, self.language);
        if !self.parameters.is_empty() {
            s.push(' ');
            s.push_str(&self.parameters.join(" · "));
        }
        s
    }
}

/// A template as WhatsApp takes it, or the field that is wrong: the name 1-512 of `a-z 0-9
/// _`, the language a code (`es`, `en_US`), at most 10 parameters of 1-1024 characters
/// without newlines or tabs.
pub fn template(name: &str, language: &str, parameters: &[String]) -> Result<Template, Invalid> {
    if name.is_empty()
        || name.len() > 512
        || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(invalid("template.name", "must be 1-512 of a-z, 0-9 and _"));
    }
    let lang_ok = match language.split_once('_') {
        None => (2..=3).contains(&language.len()) && language.bytes().all(|b| b.is_ascii_lowercase()),
        Some((l, r)) => {
            (2..=3).contains(&l.len())
                && l.bytes().all(|b| b.is_ascii_lowercase())
                && (2..=4).contains(&r.len())
                && r.bytes().all(|b| b.is_ascii_alphanumeric())
        }
    };
    if !lang_ok {
        return Err(invalid("template.language", "must be a language code such as es or en_US"));
    }
    if parameters.len() > 10 {
        return Err(invalid("template.parameters", "at most 10"));
    }
    for (i, p) in parameters.iter().enumerate() {
        if p.trim().is_empty() || p.chars().count() > 1024 || p.chars().any(|c| c.is_control()) {
            return Err(invalid(
                format!("template.parameters[{i}]"),
                "must be 1-1024 characters without newlines, tabs or other control characters",
            ));
        }
    }
    Ok(Template { name: name.to_owned(), language: language.to_owned(), parameters: parameters.to_vec() })
}

/// The Cloud API's body of a template message to `to` (E.164).
pub fn template_message(to: &str, t: &Template) -> serde_json::Value {
    let mut template = serde_json::json!({ "name": t.name, "language": { "code": t.language } });
    if !t.parameters.is_empty() {
        let parameters: Vec<_> =
            t.parameters.iter().map(|p| serde_json::json!({ "type": "text", "text": p })).collect();
        template["components"] = serde_json::json!([{ "type": "body", "parameters": parameters }]);
    }
    serde_json::json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to.trim_start_matches('+'),
        "type": "template",
        "template": template,
    })
}

/// The Cloud API's body of a text message to `to` (E.164).
pub fn text_message(to: &str, body: &str) -> serde_json::Value {
    serde_json::json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to.trim_start_matches('+'),
        "type": "text",
        "text": { "preview_url": false, "body": body },
    })
}

/// The download URL of a media id, from the Cloud API's answer to `GET /{version}/{media-id}`
/// (`{"url": …, "mime_type": …, "file_size": …}`).
pub fn media_url(answer: &serde_json::Value) -> Option<String> {
    let url = answer.get("url")?.as_str()?;
    (!url.is_empty() && url.len() <= 2048).then(|| url.to_owned())
}

/// The id of the message the Cloud API accepted, from its answer.
pub fn sent_id(answer: &serde_json::Value) -> Option<String> {
    let id = answer.get("messages")?.get(0)?.get("id")?.as_str()?;
    (!id.is_empty() && id.len() <= 256 && id.bytes().all(|b| b.is_ascii_graphic())).then(|| id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_published_x_hub_signature_256_example_verifies() {
        // The worked example of the X-Hub-Signature-256 scheme published with GitHub's
        // webhook documentation (the scheme Meta uses): secret "It's a Secret to
        // Everybody", payload "Hello, World!".
        let (secret, body) = ("It's a Secret to Everybody", b"Hello, World!");
        let expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(signature(secret, body), expected);
        assert!(verify(secret, body, expected));
        assert!(verify(secret, body, &format!("  {expected} ")));
        assert!(!verify(secret, b"Hello, World?", expected), "one byte changed");
        assert!(!verify("another secret", body, expected));
        assert!(!verify("", body, &signature("", body)), "no secret: nothing verifies");
        for bad in ["", "sha256=", "sha1=757107ea", &expected.replace("sha256=", "sha512="), &expected[..70]] {
            assert!(!verify(secret, body, bad), "{bad}");
        }
        assert!(!verify(secret, body, &expected.replace('7', "x")));
    }

    #[test]
    fn the_handshake_echoes_the_challenge_only_for_the_tenants_token() {
        assert_eq!(handshake("subscribe", "tok-1", "1158201444", "tok-1"), Some("1158201444"));
        assert_eq!(handshake("subscribe", "tok-2", "1158201444", "tok-1"), None);
        assert_eq!(handshake("unsubscribe", "tok-1", "1158201444", "tok-1"), None);
        assert_eq!(handshake("subscribe", "", "1158201444", ""), None);
        assert_eq!(handshake("subscribe", "tok-1", "", "tok-1"), None);
    }

    const DELIVERY: &str = r#"{
      "object": "whatsapp_business_account",
      "entry": [{ "id": "102290129340398", "changes": [{ "field": "messages", "value": {
        "messaging_product": "whatsapp",
        "metadata": { "display_phone_number": "15550783881", "phone_number_id": "106540352242922" },
        "contacts": [{ "profile": { "name": "Sheena Nelson" }, "wa_id": "16505551234" }],
        "messages": [
          { "from": "16505551234", "id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=",
            "timestamp": "1749416383", "type": "text", "text": { "body": "Does it come in another color?" } },
          { "from": "16505551234", "id": "wamid.IMG", "timestamp": "1749416390", "type": "image",
            "image": { "mime_type": "image/jpeg", "id": "1003383421387256" } }
        ],
        "statuses": [
          { "id": "wamid.OUT1", "status": "read", "timestamp": "1749416400", "recipient_id": "16505551234" },
          { "id": "wamid.OUT2", "status": "failed", "timestamp": "1749416401", "recipient_id": "16505551234",
            "errors": [{ "code": 131047, "title": "Re-engagement message" }] },
          { "id": "wamid.OUT3", "status": "deleted", "timestamp": "1749416402", "recipient_id": "16505551234" }
        ] } },
        { "field": "account_update", "value": { "metadata": { "phone_number_id": "x" } } }] }]
    }"#;

    #[test]
    fn a_delivery_is_read_into_messages_and_statuses() {
        let d = parse(DELIVERY.as_bytes()).expect("valid");
        assert_eq!(d.messages.len(), 2);
        let m = &d.messages[0];
        assert_eq!((m.phone_number_id.as_str(), m.from.as_str()), ("106540352242922", "+16505551234"));
        assert_eq!((m.profile_name.as_str(), m.text.as_str()), ("Sheena Nelson", "Does it come in another color?"));
        assert_eq!(m.time.timestamp(), 1_749_416_383);
        let image = &d.messages[1];
        assert_eq!(image.text, "", "no caption");
        let media = image.media.as_ref().expect("an image");
        assert_eq!((media.id.as_str(), media.kind.as_str()), ("1003383421387256", "image"));
        assert_eq!(media.file_name(), "whatsapp-image.jpg");
        let doc = MediaRef {
            id: "1".into(),
            kind: "document".into(),
            mime_type: "application/pdf".into(),
            filename: "../factura 7.pdf".into(),
        };
        assert_eq!(doc.file_name(), "factura 7.pdf");
        let location = DELIVERY.replace(r#""type": "image""#, r#""type": "location""#);
        assert_eq!(
            parse(location.as_bytes()).expect("valid").messages[1].text,
            "[a WhatsApp location message: this kind is not taken here]"
        );
        let answer = serde_json::json!({"url": "https://lookaside.fbsbx.com/x", "mime_type": "image/jpeg"});
        assert_eq!(media_url(&answer).as_deref(), Some("https://lookaside.fbsbx.com/x"));
        assert_eq!(media_url(&serde_json::json!({"error": {}})), None);
        let got: Vec<_> = d.statuses.iter().map(|s| (s.message_id.as_str(), s.status, s.reason.as_str())).collect();
        assert_eq!(
            got,
            [("wamid.OUT1", Status::Read, ""), ("wamid.OUT2", Status::Failed, "131047 Re-engagement message")],
            "an unknown status is skipped"
        );
    }

    #[test]
    fn malformed_deliveries_are_refused_with_their_field() {
        let field = |s: &str| parse(s.as_bytes()).expect_err("refused").field;
        assert_eq!(field("{"), "body");
        assert_eq!(field(&DELIVERY.replace("whatsapp_business_account", "page")), "object");
        assert_eq!(
            field(
                &DELIVERY.replace(r#""from": "16505551234", "id": "wamid.HB"#, r#""from": "+1650", "id": "wamid.HB"#)
            ),
            "entry[0].changes[0].value.messages[0].from"
        );
        assert_eq!(
            field(&DELIVERY.replace("\"1749416383\"", "\"soon\"")),
            "entry[0].changes[0].value.messages[0].timestamp"
        );
        assert_eq!(
            field(&DELIVERY.replace("Does it come in another color?", "")),
            "entry[0].changes[0].value.messages[0].text.body"
        );
        let long = "x".repeat(MAX_TEXT_BYTES + 1);
        assert_eq!(
            field(&DELIVERY.replace("Does it come in another color?", &long)),
            "entry[0].changes[0].value.messages[0].text.body"
        );
        assert_eq!(
            field(&DELIVERY.replace("\"type\": \"image\"", "\"type\": \"IMAGE!\"")),
            "entry[0].changes[0].value.messages[1].type"
        );
        assert_eq!(field(&DELIVERY.replace("wamid.OUT1", "")), "entry[0].changes[0].value.statuses[0].id");
        assert_eq!(
            field(&DELIVERY.replace(r#""image": { "mime_type""#, r#""photo": { "mime_type""#)),
            "entry[0].changes[0].value.messages[1].image"
        );
        assert_eq!(
            field(&DELIVERY.replace(r#""id": "1003383421387256""#, r#""id": """#)),
            "entry[0].changes[0].value.messages[1].image.id"
        );
    }

    #[test]
    fn templates_are_checked_and_sent_in_the_cloud_apis_shape() {
        let t = template("order_update", "es", &["Ana".into(), "4711".into()]).expect("valid");
        assert_eq!(t.describe(), "[WhatsApp template order_update (es)] Ana · 4711");
        let m = template_message("+34600112233", &t);
        assert_eq!((m["to"].as_str(), m["type"].as_str()), (Some("34600112233"), Some("template")));
        assert_eq!(m["template"]["language"]["code"], "es");
        assert_eq!(
            m["template"]["components"][0]["parameters"][1],
            serde_json::json!({"type": "text", "text": "4711"})
        );
        let bare = template_message("+34600112233", &template("hello_world", "en_US", &[]).expect("valid"));
        assert!(bare["template"].get("components").is_none());
        let field = |n: &str, l: &str, p: &[&str]| {
            template(n, l, &p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect_err("refused").field
        };
        assert_eq!(field("Order-Update", "es", &[]), "template.name");
        assert_eq!(field("x", "spanish", &[]), "template.language");
        assert_eq!(field("x", "en_us_x", &[]), "template.language");
        assert_eq!(field("x", "es", &["a\nb"]), "template.parameters[0]");
        assert_eq!(field("x", "es", &["ok", " "]), "template.parameters[1]");
        assert_eq!(field("x", "es", &["p"; 11]), "template.parameters");
    }

    #[test]
    fn consent_keywords_in_english_and_spanish() {
        assert_eq!(consent_keyword(" stop "), Some(Consent::OptOut));
        assert_eq!(consent_keyword("Baja"), Some(Consent::OptOut));
        assert_eq!(consent_keyword("CANCELAR"), Some(Consent::OptOut));
        assert_eq!(consent_keyword("alta"), Some(Consent::OptIn));
        assert_eq!(consent_keyword("START"), Some(Consent::OptIn));
        assert_eq!(consent_keyword("quiero darme de baja"), None, "only the whole message");
        assert_eq!(consent_keyword(""), None);
    }

    #[test]
    fn the_service_window_is_24_hours_from_the_customers_last_message() {
        let t = DateTime::from_timestamp(1_749_416_383, 0).expect("time");
        assert!(within_window(Some(t), t + chrono::Duration::hours(23)));
        assert!(!within_window(Some(t), t + chrono::Duration::hours(24)));
        assert!(!within_window(None, t), "the customer never wrote");
    }

    #[test]
    fn an_outbound_text_and_its_answer() {
        let m = text_message("+16505551234", "Hola");
        assert_eq!(m["to"], "16505551234");
        assert_eq!((m["type"].as_str(), m["text"]["body"].as_str()), (Some("text"), Some("Hola")));
        let answer = serde_json::json!({"messaging_product": "whatsapp", "contacts": [{"input": "16505551234", "wa_id": "16505551234"}], "messages": [{"id": "wamid.OUT9"}]});
        assert_eq!(sent_id(&answer).as_deref(), Some("wamid.OUT9"));
        assert_eq!(sent_id(&serde_json::json!({"messages": []})), None);
    }
}

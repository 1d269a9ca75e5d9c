//! Telegram's Bot API, pure: the webhook's secret-token check, an update read into a
//! customer's message, and `sendMessage`'s body and answer. No I/O here.
//!
//! Telegram signs nothing: a webhook set with `secret_token` makes Telegram send that token
//! in `X-Telegram-Bot-Api-Secret-Token` on every update; it is compared in constant time.
//! Only private chats are taken (a bot added to a group sees the group's messages; they are
//! not a customer's).

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::model::MAX_TEXT_BYTES;

/// The header Telegram sends the webhook's secret token in.
pub const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";

/// Largest update taken (an update is one message).
pub const MAX_WEBHOOK_BYTES: usize = 64 * 1024;

/// Whether `header` is the webhook's secret `expected`; compared in constant time. An empty
/// secret never matches.
pub fn verify(expected: &str, header: &str) -> bool {
    !expected.is_empty()
        && header.len() == expected.len()
        && header.bytes().zip(expected.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

#[derive(Debug, Deserialize)]
struct Update {
    update_id: i64,
    #[serde(default)]
    message: Option<WireMessage>,
}

#[derive(Debug, Deserialize)]
struct WireMessage {
    message_id: i64,
    date: i64,
    chat: Chat,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    caption: Option<String>,
    /// The sizes of a photo, smallest first.
    #[serde(default)]
    photo: Vec<WireFile>,
    #[serde(default)]
    document: Option<WireFile>,
    #[serde(default)]
    voice: Option<WireFile>,
    #[serde(default)]
    audio: Option<WireFile>,
    #[serde(default)]
    video: Option<WireFile>,
}

#[derive(Debug, Deserialize)]
struct WireFile {
    file_id: String,
    #[serde(default)]
    file_name: Option<String>,
    #[serde(default)]
    mime_type: Option<String>,
}

/// A file a customer sent (a photo, document, voice note, audio or video): Telegram's id of
/// it, looked up with `getFile` and downloaded from the Bot API's host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    pub file_id: String,
    /// The name to keep it under.
    pub name: String,
    /// Its type as Telegram gives it (a photo is always JPEG).
    pub content_type: String,
}

#[derive(Debug, Deserialize)]
struct Chat {
    id: i64,
    #[serde(rename = "type")]
    kind: String,
}

/// A customer's message, as read from an update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    /// Telegram's id of the update (the bot's, increasing): a redelivery carries the same.
    pub update_id: i64,
    /// The private chat with the customer (its id is the customer's user id).
    pub chat_id: i64,
    pub message_id: i64,
    pub time: DateTime<Utc>,
    /// The text, or a file's caption (may be empty then); other kinds (stickers,
    /// locations, …) a line saying so.
    pub text: String,
    pub file: Option<FileRef>,
}

/// Why an update is refused: the field and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: &'static str,
    pub message: String,
}

/// Reads a verified update: `Ok(None)` for an update that is not a customer's message (an
/// edit, a group's message, a callback): answered and ignored.
pub fn parse(body: &[u8]) -> Result<Option<Inbound>, Invalid> {
    let u: Update =
        serde_json::from_slice(body).map_err(|e| Invalid { field: "body", message: format!("not an update: {e}") })?;
    if u.update_id < 0 {
        return Err(Invalid { field: "update_id", message: "must not be negative".into() });
    }
    let Some(m) = u.message else { return Ok(None) };
    if m.chat.kind != "private" {
        return Ok(None);
    }
    let time = DateTime::from_timestamp(m.date, 0)
        .ok_or(Invalid { field: "message.date", message: "must be seconds since the epoch".into() })?;
    let file_id = |f: &WireFile, field: &'static str| {
        let ok = !f.file_id.is_empty() && f.file_id.len() <= 256 && f.file_id.bytes().all(|b| b.is_ascii_graphic());
        ok.then(|| f.file_id.clone()).ok_or(Invalid { field, message: "must be Telegram's file id".into() })
    };
    let named = |f: &WireFile, fallback: &str, mime: &str| {
        (
            super::attachments::clean_name(f.file_name.as_deref().unwrap_or(""), fallback),
            f.mime_type.clone().unwrap_or(mime.into()),
        )
    };
    let file = if let Some(p) = m.photo.last() {
        Some(FileRef {
            file_id: file_id(p, "message.photo")?,
            name: "telegram-photo.jpg".into(),
            content_type: "image/jpeg".into(),
        })
    } else {
        let found = [
            (&m.document, "message.document", "telegram-document", "application/octet-stream"),
            (&m.voice, "message.voice", "telegram-voice.ogg", "audio/ogg"),
            (&m.audio, "message.audio", "telegram-audio.mp3", "audio/mpeg"),
            (&m.video, "message.video", "telegram-video.mp4", "video/mp4"),
        ]
        .into_iter()
        .find_map(|(f, field, fallback, mime)| f.as_ref().map(|f| (f, field, fallback, mime)));
        match found {
            Some((f, field, fallback, mime)) => {
                let (name, content_type) = named(f, fallback, mime);
                Some(FileRef { file_id: file_id(f, field)?, name, content_type })
            }
            None => None,
        }
    };
    let text = match (m.text, m.caption, &file) {
        (Some(t), _, _) => t,
        (None, Some(c), Some(_)) => c,
        (None, None, Some(_)) => String::new(),
        (None, _, None) => "[a Telegram message of a kind not taken here]".into(),
    };
    if (file.is_none() && text.trim().is_empty()) || text.len() > MAX_TEXT_BYTES {
        return Err(Invalid { field: "message.text", message: format!("must be 1 to {MAX_TEXT_BYTES} bytes") });
    }
    Ok(Some(Inbound { update_id: u.update_id, chat_id: m.chat.id, message_id: m.message_id, time, text, file }))
}

/// The file's path on the Bot API's file host, from `getFile`'s answer (`ok` and
/// `result.file_path`): relative, without `..`, printable.
pub fn file_path(answer: &serde_json::Value) -> Option<String> {
    if !answer.get("ok")?.as_bool()? {
        return None;
    }
    let p = answer.get("result")?.get("file_path")?.as_str()?;
    let ok = !p.is_empty()
        && p.len() <= 512
        && !p.starts_with('/')
        && !p.split('/').any(|seg| seg == ".." || seg.is_empty())
        && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b));
    ok.then(|| p.to_owned())
}

/// `sendMessage`'s body: `text` to chat `chat_id`.
pub fn send_message(chat_id: &str, text: &str) -> serde_json::Value {
    serde_json::json!({ "chat_id": chat_id, "text": text })
}

/// The id of the message Telegram accepted, from `sendMessage`'s answer (`ok` and
/// `result.message_id`).
pub fn sent_id(answer: &serde_json::Value) -> Option<i64> {
    if answer.get("ok")?.as_bool()? {
        answer.get("result")?.get("message_id")?.as_i64()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPDATE: &str = r#"{"update_id": 10000, "message": {"date": 1441645532,
        "chat": {"last_name": "Test Lastname", "id": 1111111, "type": "private", "first_name": "Test Firstname", "username": "Testusername"},
        "message_id": 1365, "from": {"last_name": "Test Lastname", "id": 1111111, "first_name": "Test Firstname", "username": "Testusername"},
        "text": "/start"}}"#;

    #[test]
    fn the_secret_token_is_compared_whole() {
        assert!(verify("s3cr3t-token_1", "s3cr3t-token_1"));
        assert!(!verify("s3cr3t-token_1", "s3cr3t-token_2"));
        assert!(!verify("s3cr3t-token_1", "s3cr3t-token_"));
        assert!(!verify("", ""));
    }

    #[test]
    fn an_update_is_read_into_a_customers_message() {
        let m = parse(UPDATE.as_bytes()).expect("valid").expect("a message");
        assert_eq!((m.update_id, m.chat_id, m.message_id, m.text.as_str()), (10000, 1111111, 1365, "/start"));
        assert_eq!(m.time.timestamp(), 1_441_645_532);
        let sticker = UPDATE.replace(r#""text": "/start""#, r#""sticker": {"file_id": "CAAD"}"#);
        assert!(parse(sticker.as_bytes()).expect("valid").expect("a message").text.contains("not taken here"));
        let photo = UPDATE.replace(
            r#""text": "/start""#,
            r#""photo": [{"file_id": "AgAD-small", "file_unique_id": "a", "width": 90, "height": 90},
                         {"file_id": "AgAD-big", "file_unique_id": "b", "width": 1280, "height": 960}],
               "caption": "mi recibo""#,
        );
        let m = parse(photo.as_bytes()).expect("valid").expect("a message");
        assert_eq!(m.text, "mi recibo");
        assert_eq!(
            m.file,
            Some(FileRef {
                file_id: "AgAD-big".into(),
                name: "telegram-photo.jpg".into(),
                content_type: "image/jpeg".into()
            }),
            "the largest size"
        );
        let doc = UPDATE.replace(
            r#""text": "/start""#,
            r#""document": {"file_id": "BQAD", "file_name": "../parte 9.pdf", "mime_type": "application/pdf"}"#,
        );
        let m = parse(doc.as_bytes()).expect("valid").expect("a message");
        assert_eq!((m.text.as_str(), m.file.expect("a file").name), ("", "parte 9.pdf".to_owned()));
        let voice = UPDATE.replace(r#""text": "/start""#, r#""voice": {"file_id": "AwAD", "duration": 3}"#);
        let f = parse(voice.as_bytes()).expect("valid").expect("a message").file.expect("a file");
        assert_eq!((f.name.as_str(), f.content_type.as_str()), ("telegram-voice.ogg", "audio/ogg"));
        let group = UPDATE.replace(r#""type": "private""#, r#""type": "group""#);
        assert_eq!(parse(group.as_bytes()), Ok(None), "a group's message is not a customer's");
        assert_eq!(parse(br#"{"update_id": 7, "edited_message": {}}"#), Ok(None));
    }

    #[test]
    fn malformed_updates_are_refused_with_their_field() {
        let field = |s: &str| parse(s.as_bytes()).expect_err("refused").field;
        assert_eq!(field("{"), "body");
        assert_eq!(field(r#"{"message": {}}"#), "body");
        assert_eq!(field(&UPDATE.replace("10000", "-1")), "update_id");
        assert_eq!(field(&UPDATE.replace("\"/start\"", "\"\"")), "message.text");
        assert_eq!(
            field(&UPDATE.replace("\"/start\"", &format!("\"{}\"", "x".repeat(MAX_TEXT_BYTES + 1)))),
            "message.text"
        );
        assert_eq!(field(&UPDATE.replace("1441645532", "99999999999999999")), "message.date");
    }

    #[test]
    fn get_files_answer_gives_a_safe_path() {
        let answer = |p: &str| serde_json::json!({"ok": true, "result": {"file_id": "x", "file_path": p}});
        assert_eq!(file_path(&answer("photos/file_7.jpg")).as_deref(), Some("photos/file_7.jpg"));
        for bad in ["", "/etc/passwd", "photos/../../x", "a//b", "a b.jpg", "http://evil/x"] {
            assert_eq!(file_path(&answer(bad)), None, "{bad}");
        }
        assert_eq!(file_path(&serde_json::json!({"ok": false})), None);
    }

    #[test]
    fn send_message_and_its_answer() {
        let b = send_message("1111111", "Hola");
        assert_eq!((b["chat_id"].as_str(), b["text"].as_str()), (Some("1111111"), Some("Hola")));
        let ok = serde_json::json!({"ok": true, "result": {"message_id": 1366, "chat": {"id": 1111111}}});
        assert_eq!(sent_id(&ok), Some(1366));
        assert_eq!(sent_id(&serde_json::json!({"ok": false, "error_code": 403, "description": "Forbidden"})), None);
    }
}

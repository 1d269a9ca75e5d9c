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
    /// The text; other kinds (photos, stickers, …) are a line saying so, since attachments
    /// are not taken yet.
    pub text: String,
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
    let text = m.text.unwrap_or_else(|| "[a Telegram message without text: only text is taken here]".into());
    if text.trim().is_empty() || text.len() > MAX_TEXT_BYTES {
        return Err(Invalid { field: "message.text", message: format!("must be 1 to {MAX_TEXT_BYTES} bytes") });
    }
    Ok(Some(Inbound { update_id: u.update_id, chat_id: m.chat.id, message_id: m.message_id, time, text }))
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
        let photo = UPDATE.replace(r#""text": "/start""#, r#""photo": []"#);
        assert!(parse(photo.as_bytes()).expect("valid").expect("a message").text.contains("without text"));
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
    fn send_message_and_its_answer() {
        let b = send_message("1111111", "Hola");
        assert_eq!((b["chat_id"].as_str(), b["text"].as_str()), (Some("1111111"), Some("Hola")));
        let ok = serde_json::json!({"ok": true, "result": {"message_id": 1366, "chat": {"id": 1111111}}});
        assert_eq!(sent_id(&ok), Some(1366));
        assert_eq!(sent_id(&serde_json::json!({"ok": false, "error_code": 403, "description": "Forbidden"})), None);
    }
}

//! Digital transcripts, pure: an `IngestTranscript` request validated into a [`Document`],
//! and the document's JSON, which is what a transcript object encrypts (the container is a
//! recording's, `docs/recording-format.md`). No I/O: the adapter (`crate::api`) stores and
//! reads.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The `format` of every transcript document this service writes.
pub const FORMAT: &str = "centralita.transcript.v1";
/// Messages in one transcript at most.
pub const MAX_MESSAGES: usize = 10_000;
/// Bytes of one message's text at most.
pub const MAX_TEXT: usize = 64 * 1024;
/// Bytes of a transcript's JSON at most.
pub const MAX_DOCUMENT: usize = 16 << 20;

/// A digital contact's conversation as stored (and encrypted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Document {
    pub format: String,
    pub tenant: String,
    pub contact_id: String,
    /// `chat`, `sms`, `social` or `email`.
    pub channel: String,
    pub queue: String,
    pub agent_ids: Vec<String>,
    pub start_time: DateTime<Utc>,
    pub end_time: DateTime<Utc>,
    /// Messages left out because the recording was paused when they were written.
    pub paused_messages: u32,
    pub messages: Vec<Line>,
}

/// One message of a transcript.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub sequence: i64,
    pub sender: Sender,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub agent_id: String,
    pub text: String,
    pub time: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sender {
    Customer,
    Agent,
    System,
}

/// Why a transcript is refused: the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid { field: field.into(), message: message.into() }
}

/// A time a transcript may carry: after 2000 and not more than a day ahead of `now`.
pub fn plausible(t: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    t.timestamp() > 946_684_800 && t < now + chrono::Duration::days(1)
}

impl Document {
    /// Checks what the header fields alone cannot: the times' order and plausibility, the
    /// messages' count, order, senders, agents and sizes, and the whole's size once encoded.
    /// Ids and the channel are checked by the adapter as it reads them.
    pub fn validate(&self, now: DateTime<Utc>) -> Result<(), Invalid> {
        if !plausible(self.start_time, now) {
            return Err(invalid("start_time", "is not a plausible time"));
        }
        if !plausible(self.end_time, now) || self.end_time < self.start_time {
            return Err(invalid("end_time", "is not a plausible time after the start"));
        }
        if self.messages.len() > MAX_MESSAGES {
            return Err(invalid("messages", format!("at most {MAX_MESSAGES}")));
        }
        let mut last = 0;
        for (i, m) in self.messages.iter().enumerate() {
            let at = |f: &str| format!("messages[{i}].{f}");
            if m.sequence <= last {
                return Err(invalid(at("sequence"), "must be positive and increasing"));
            }
            last = m.sequence;
            if m.text.len() > MAX_TEXT {
                return Err(invalid(at("text"), format!("at most {MAX_TEXT} bytes")));
            }
            if !plausible(m.time, now) {
                return Err(invalid(at("time"), "is not a plausible time"));
            }
            match (m.sender, m.agent_id.is_empty()) {
                (Sender::Agent, true) => return Err(invalid(at("agent_id"), "is required for an agent's message")),
                (Sender::Customer | Sender::System, false) => {
                    return Err(invalid(at("agent_id"), "only an agent's message names an agent"))
                }
                _ => {}
            }
        }
        if self.to_json().len() > MAX_DOCUMENT {
            return Err(invalid("messages", format!("the transcript is over {MAX_DOCUMENT} bytes")));
        }
        Ok(())
    }

    pub fn to_json(&self) -> Vec<u8> {
        // A struct of strings, numbers and times always serialises.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// A stored document; `None` if it is not one (or of another format).
    pub fn from_json(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice::<Self>(bytes).ok().filter(|d| d.format == FORMAT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000 + s, 0).expect("time")
    }

    fn doc() -> Document {
        Document {
            format: FORMAT.into(),
            tenant: "acme".into(),
            contact_id: "c1".into(),
            channel: "chat".into(),
            queue: "support".into(),
            agent_ids: vec!["ana".into()],
            start_time: t(0),
            end_time: t(60),
            paused_messages: 1,
            messages: vec![
                Line {
                    sequence: 1,
                    sender: Sender::Customer,
                    agent_id: String::new(),
                    text: "Hola".into(),
                    time: t(1),
                },
                Line {
                    sequence: 2,
                    sender: Sender::System,
                    agent_id: String::new(),
                    text: "Ana joined".into(),
                    time: t(2),
                },
                Line {
                    sequence: 4,
                    sender: Sender::Agent,
                    agent_id: "ana".into(),
                    text: "¿En qué…?".into(),
                    time: t(3),
                },
            ],
        }
    }

    #[test]
    fn a_transcript_round_trips_through_its_json() {
        let d = doc();
        assert_eq!(d.validate(t(100)), Ok(()));
        let json = d.to_json();
        assert_eq!(Document::from_json(&json), Some(d.clone()));
        let v: serde_json::Value = serde_json::from_slice(&json).expect("json");
        assert_eq!(v["messages"][0]["sender"], "customer");
        assert!(v["messages"][0].get("agent_id").is_none(), "no empty agent");
        assert_eq!(v["messages"][2]["agent_id"], "ana");
        let mut other = d;
        other.format = "something.else".into();
        assert_eq!(Document::from_json(&other.to_json()), None);
        assert_eq!(Document::from_json(b"not json"), None);
    }

    #[test]
    fn bad_transcripts_are_refused_with_their_field() {
        let now = t(100);
        let field = |d: Document| d.validate(now).expect_err("refused").field;
        let mut d = doc();
        d.messages[1].sequence = 1;
        assert_eq!(field(d), "messages[1].sequence");
        let mut d = doc();
        d.messages[0].sequence = 0;
        assert_eq!(field(d), "messages[0].sequence");
        let mut d = doc();
        d.messages[2].agent_id.clear();
        assert_eq!(field(d), "messages[2].agent_id");
        let mut d = doc();
        d.messages[0].agent_id = "ana".into();
        assert_eq!(field(d), "messages[0].agent_id");
        let mut d = doc();
        d.messages[0].text = "x".repeat(MAX_TEXT + 1);
        assert_eq!(field(d), "messages[0].text");
        let mut d = doc();
        d.end_time = t(-1);
        assert_eq!(field(d), "end_time");
        let mut d = doc();
        d.start_time = DateTime::from_timestamp(0, 0).expect("epoch");
        assert_eq!(field(d), "start_time");
        let mut d = doc();
        d.messages[0].time = now + chrono::Duration::days(2);
        assert_eq!(field(d), "messages[0].time");
        let mut d = doc();
        let line = d.messages[0].clone();
        d.messages = (1..=MAX_MESSAGES as i64 + 1).map(|sequence| Line { sequence, ..line.clone() }).collect();
        assert_eq!(field(d), "messages");
        let mut d = doc();
        let line = Line { text: "y".repeat(MAX_TEXT), ..d.messages[0].clone() };
        d.messages = (1..=300).map(|sequence| Line { sequence, ..line.clone() }).collect();
        assert_eq!(field(d), "messages", "over the document's size");
    }
}

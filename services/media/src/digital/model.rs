//! The conversation's plain types and pure rules: who may send what, how long a message may
//! be, and the delivery-status lattice. No I/O here.

use chrono::{DateTime, Utc};

/// Longest text of one message, in bytes of UTF-8.
pub const MAX_TEXT_BYTES: usize = 4096;

/// Who wrote a message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Sender {
    Customer,
    Agent(String),
    System,
}

impl Sender {
    /// The stored code (`messages.sender`).
    pub fn code(&self) -> i16 {
        match self {
            Sender::Customer => 1,
            Sender::Agent(_) => 2,
            Sender::System => 3,
        }
    }

    pub fn from_stored(code: i16, agent: String) -> Option<Self> {
        match code {
            1 => Some(Sender::Customer),
            2 => Some(Sender::Agent(agent)),
            3 => Some(Sender::System),
            _ => None,
        }
    }

    pub fn agent_id(&self) -> &str {
        match self {
            Sender::Agent(a) => a,
            _ => "",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Text,
    Notice,
    /// A file ([`Message::attachment`]); the text is its name.
    Attachment,
}

impl Kind {
    pub fn code(self) -> i16 {
        match self {
            Kind::Text => 1,
            Kind::Notice => 2,
            Kind::Attachment => 3,
        }
    }
    pub fn from_stored(code: i16) -> Option<Self> {
        match code {
            1 => Some(Kind::Text),
            2 => Some(Kind::Notice),
            3 => Some(Kind::Attachment),
            _ => None,
        }
    }
}

/// Delivery status of a message to its recipient.
///
/// A lattice (here a chain): `Sent < Failed < Delivered < Read`. Reports from a channel
/// come repeated and out of order (a provider's "delivered" callback after its "read"); the
/// stored status is the [`Status::join`] of every report, so order and repetition do not
/// matter and it never moves back. `Failed` is final against `Sent` only: a receipt that the
/// recipient got or read the message is evidence it was delivered, whatever a failure report
/// of an earlier attempt says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Sent,
    Delivered,
    Read,
    Failed,
}

impl Status {
    /// The position in the chain.
    fn rank(self) -> u8 {
        match self {
            Status::Sent => 0,
            Status::Failed => 1,
            Status::Delivered => 2,
            Status::Read => 3,
        }
    }

    /// The least upper bound of two reports.
    pub fn join(self, other: Status) -> Status {
        if other.rank() > self.rank() {
            other
        } else {
            self
        }
    }

    pub fn code(self) -> i16 {
        match self {
            Status::Sent => 1,
            Status::Delivered => 2,
            Status::Read => 3,
            Status::Failed => 4,
        }
    }

    pub fn from_stored(code: i16) -> Option<Self> {
        match code {
            1 => Some(Status::Sent),
            2 => Some(Status::Delivered),
            3 => Some(Status::Read),
            4 => Some(Status::Failed),
            _ => None,
        }
    }
}

/// The status after applying `reports` in order to `start`: the join of all of them.
pub fn apply_reports(start: Status, reports: impl IntoIterator<Item = Status>) -> Status {
    reports.into_iter().fold(start, Status::join)
}

/// A stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub sequence: i64,
    pub sender: Sender,
    pub kind: Kind,
    pub text: String,
    pub status: Status,
    pub failure_reason: String,
    pub created_at: DateTime<Utc>,
    pub provider_time: Option<DateTime<Utc>>,
    /// The file of an attachment message (its bytes are read apart).
    pub attachment: Option<AttachmentMeta>,
}

/// What is known of a stored file without reading its bytes (kept with its message as
/// JSON: `messages.attachment`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AttachmentMeta {
    pub id: String,
    pub name: String,
    pub content_type: String,
    pub size: i64,
    pub sha256: String,
}

/// A file to store with its message (checked by [`super::attachments::check`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAttachment {
    pub name: String,
    pub content_type: String,
    pub sha256: String,
    pub data: Vec<u8>,
}

/// A message to store: its sequence and time are the store's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub sender: Sender,
    pub kind: Kind,
    pub text: String,
    pub provider_time: Option<DateTime<Utc>>,
    /// Idempotency key of the sender; empty for none.
    pub request_id: String,
    /// The file of a [`Kind::Attachment`] message.
    pub attachment: Option<NewAttachment>,
}

/// Why a text is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextRefusal {
    Empty,
    TooLong,
    ControlCharacters,
}

impl TextRefusal {
    pub fn describe(self) -> String {
        match self {
            TextRefusal::Empty => "must not be empty".into(),
            TextRefusal::TooLong => format!("must be at most {MAX_TEXT_BYTES} bytes"),
            TextRefusal::ControlCharacters => "must not contain control characters other than newline and tab".into(),
        }
    }
}

/// A message text: non-blank, at most [`MAX_TEXT_BYTES`], no control characters but `\n`,
/// `\r` and `\t`.
pub fn check_text(text: &str) -> Result<(), TextRefusal> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(TextRefusal::TooLong);
    }
    if text.trim().is_empty() {
        return Err(TextRefusal::Empty);
    }
    if text.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
        return Err(TextRefusal::ControlCharacters);
    }
    Ok(())
}

/// Longest idempotency key.
pub const MAX_REQUEST_ID: usize = 64;

/// An idempotency key: empty, or up to 64 of `A-Z a-z 0-9 - _ .`.
pub fn check_request_id(id: &str) -> bool {
    id.len() <= MAX_REQUEST_ID && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use Status::*;

    const ALL: [Status; 4] = [Sent, Delivered, Read, Failed];

    fn status() -> impl Strategy<Value = Status> {
        prop::sample::select(ALL.to_vec())
    }

    #[test]
    fn statuses_move_forward_only() {
        assert_eq!(Sent.join(Delivered), Delivered);
        assert_eq!(Delivered.join(Sent), Delivered, "a late `sent` does not move it back");
        assert_eq!(Read.join(Delivered), Read, "a late `delivered` does not move it back");
        assert_eq!(Sent.join(Failed), Failed);
        assert_eq!(Failed.join(Sent), Failed, "a late `sent` does not undo a failure");
        assert_eq!(Failed.join(Delivered), Delivered, "a delivery receipt outweighs a failed attempt");
        assert_eq!(Delivered.join(Failed), Delivered);
        assert_eq!(Failed.join(Read), Read, "a read message was delivered");
        assert_eq!(apply_reports(Sent, [Read, Delivered, Sent, Delivered]), Read);
    }

    #[test]
    fn stored_codes_round_trip() {
        for s in ALL {
            assert_eq!(Status::from_stored(s.code()), Some(s));
        }
        assert_eq!(Status::from_stored(0), None);
        for k in [Kind::Text, Kind::Notice] {
            assert_eq!(Kind::from_stored(k.code()), Some(k));
        }
        for s in [Sender::Customer, Sender::Agent("a-1".into()), Sender::System] {
            assert_eq!(Sender::from_stored(s.code(), s.agent_id().to_owned()), Some(s.clone()));
        }
    }

    #[test]
    fn texts_are_checked() {
        assert_eq!(check_text("hola"), Ok(()));
        assert_eq!(check_text("line\nline\ttab"), Ok(()));
        assert_eq!(check_text(""), Err(TextRefusal::Empty));
        assert_eq!(check_text(" \n "), Err(TextRefusal::Empty));
        assert_eq!(check_text(&"a".repeat(MAX_TEXT_BYTES)), Ok(()));
        assert_eq!(check_text(&"a".repeat(MAX_TEXT_BYTES + 1)), Err(TextRefusal::TooLong));
        assert_eq!(check_text(&"é".repeat(MAX_TEXT_BYTES / 2 + 1)), Err(TextRefusal::TooLong), "bytes, not chars");
        assert_eq!(check_text("a\u{0}b"), Err(TextRefusal::ControlCharacters));
        assert!(check_request_id("") && check_request_id("req-1.a_B"));
        assert!(!check_request_id("a b") && !check_request_id(&"a".repeat(65)));
    }

    proptest! {
        /// The lattice laws: the stored status does not depend on the order or repetition
        /// of reports.
        #[test]
        fn join_is_a_semilattice(a in status(), b in status(), c in status()) {
            prop_assert_eq!(a.join(b), b.join(a));
            prop_assert_eq!(a.join(b).join(c), a.join(b.join(c)));
            prop_assert_eq!(a.join(a), a);
        }

        /// Any permutation of any reports, any repeated, ends at the same status, and each
        /// step is at least where it was (never back).
        #[test]
        fn reports_in_any_order_end_the_same(
            reports in prop::collection::vec(status(), 0..12),
            seed in any::<u64>(),
        ) {
            let mut shuffled = reports.clone();
            // Fisher-Yates with a small LCG, so the permutation comes from the seed.
            let mut x = seed | 1;
            for i in (1..shuffled.len()).rev() {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let j = (x >> 33) as usize % (i + 1);
                shuffled.swap(i, j);
            }
            let mut repeated = shuffled.clone();
            repeated.extend(reports.iter().copied());
            let once = apply_reports(Sent, reports.clone());
            prop_assert_eq!(apply_reports(Sent, shuffled.clone()), once);
            prop_assert_eq!(apply_reports(Sent, repeated), once);
            let mut at = Sent;
            for r in shuffled {
                let next = at.join(r);
                prop_assert_eq!(next.join(at), next, "a step never moves back");
                at = next;
            }
        }
    }
}

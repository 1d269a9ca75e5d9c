//! Email, pure: an inbound message read from its MIME (with `mail-parser`), the attachment
//! rule, the threading ids and the headers of a reply (RFC 5322 §3.6.4). No I/O here.
//!
//! - The text: the first text/plain body; a message with only HTML has it reduced to text
//!   (`mail-parser`'s converter drops tags, scripts and styles' markup and decodes
//!   entities: nothing of the HTML is ever rendered). Cut to [`MAX_TEXT_BYTES`] at a
//!   character boundary, marked.
//! - Attachments: each one's name, type and size are recorded; their contents are not kept
//!   (media has no object store yet). A message carrying an executable or script (by name
//!   or by type, [`forbidden`]) is refused whole.
//! - The customer is the `From` address (the envelope sender if `From` has none), lower case.

use std::borrow::Cow;

use mail_parser::{MessageParser, MimeHeaders};
use sha2::{Digest, Sha256};

use super::model::MAX_TEXT_BYTES;

/// Longest Message-ID we keep (without the angle brackets).
pub const MAX_MESSAGE_ID: usize = 250;
/// At most this many ids are carried in a reply's `References` (the root and the newest).
pub const MAX_REFERENCES: usize = 20;
/// Longest subject kept, in bytes.
pub const MAX_SUBJECT: usize = 500;
/// What an over-long text ends with.
const CUT: &str = "\n[… cut: the message is longer]";

/// An attachment of an inbound email: its description (kept with the email) and its bytes
/// (kept as a file of the conversation when [`super::attachments::check`] takes it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Attachment {
    pub name: String,
    pub content_type: String,
    pub size: usize,
    #[serde(skip)]
    pub data: Vec<u8>,
}

/// An inbound email, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundMail {
    /// Without angle brackets; `None` when the message has no valid one.
    pub message_id: Option<String>,
    pub in_reply_to: Vec<String>,
    pub references: Vec<String>,
    /// The customer's address, lower case.
    pub from: String,
    pub subject: String,
    pub text: String,
    pub attachments: Vec<Attachment>,
}

/// Why a message is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// Not a message `mail-parser` can read.
    Malformed,
    /// No usable sender address.
    NoSender,
    /// It carries an attachment of a forbidden type (the attachment's name).
    Forbidden(String),
}

/// File endings refused as attachments: executables, installers and scripts that run when
/// opened on the agents' desktops.
const FORBIDDEN_ENDINGS: [&str; 22] = [
    "exe", "com", "bat", "cmd", "scr", "pif", "msi", "msp", "dll", "cpl", "js", "jse", "vbs", "vbe", "wsf", "wsh",
    "ps1", "hta", "jar", "lnk", "reg", "sh",
];

/// Content types refused whatever the name says.
const FORBIDDEN_TYPES: [&str; 8] = [
    "application/x-msdownload",
    "application/x-msdos-program",
    "application/x-ms-installer",
    "application/x-dosexec",
    "application/x-executable",
    "application/x-sh",
    "application/javascript",
    "application/java-archive",
];

/// Whether an attachment of this name and type is refused.
pub fn forbidden(name: &str, content_type: &str) -> bool {
    let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
    let ending = name.rsplit_once('.').map(|(_, e)| e);
    ending.is_some_and(|e| FORBIDDEN_ENDINGS.contains(&e)) || FORBIDDEN_TYPES.contains(&content_type)
}

/// Whether `s` is a Message-ID as we keep it (`left@right`, printable ASCII, no brackets or
/// spaces).
pub fn is_message_id(s: &str) -> bool {
    (3..=MAX_MESSAGE_ID).contains(&s.len())
        && s.contains('@')
        && s.bytes().all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>' && b != b'"' && b != b'\\')
}

/// `s` cut to at most `max` bytes at a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The text of a message as a conversation stores it: trimmed, at most [`MAX_TEXT_BYTES`].
pub fn fit_text(text: &str) -> String {
    let text = text.trim();
    if text.is_empty() {
        return "(no text)".into();
    }
    if text.len() <= MAX_TEXT_BYTES {
        return text.to_owned();
    }
    format!("{}{CUT}", cut(text, MAX_TEXT_BYTES - CUT.len()))
}

fn ids(v: &mail_parser::HeaderValue<'_>) -> Vec<String> {
    v.as_text_list()
        .unwrap_or_default()
        .iter()
        .map(|s| s.trim().trim_start_matches('<').trim_end_matches('>').to_owned())
        .filter(|s| is_message_id(s))
        .collect()
}

/// Reads a raw message; `envelope_sender` is the `MAIL FROM` address, the customer when the
/// `From` header has no address.
pub fn parse(raw: &[u8], envelope_sender: &str) -> Result<InboundMail, Refused> {
    let m = MessageParser::default().parse(raw).ok_or(Refused::Malformed)?;
    if m.headers().is_empty() {
        return Err(Refused::Malformed);
    }
    let from = m
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .map(str::to_owned)
        .unwrap_or_else(|| envelope_sender.to_owned())
        .to_ascii_lowercase();
    if !centralita_platform::tenant::is_email_address(&from) {
        return Err(Refused::NoSender);
    }
    let mut attachments = Vec::new();
    for a in m.attachments() {
        let content_type = a
            .content_type()
            .map(|c| match c.subtype() {
                Some(s) => format!("{}/{}", c.ctype(), s),
                None => c.ctype().to_owned(),
            })
            .unwrap_or_else(|| "application/octet-stream".into())
            .to_ascii_lowercase();
        let name = a.attachment_name().unwrap_or("").to_owned();
        if forbidden(&name, &content_type) {
            return Err(Refused::Forbidden(if name.is_empty() { content_type } else { name }));
        }
        attachments.push(Attachment {
            name: cut(&name, 255).to_owned(),
            content_type,
            size: a.contents().len(),
            data: a.contents().to_vec(),
        });
    }
    let text: Cow<'_, str> = m.body_text(0).unwrap_or_default();
    Ok(InboundMail {
        message_id: m.message_id().map(str::to_owned).filter(|s| is_message_id(s)),
        in_reply_to: ids(m.in_reply_to()),
        references: ids(m.references()),
        from,
        // No control characters: the subject is echoed in our reply's header.
        subject: cut(&m.subject().unwrap_or("").replace(|c: char| c.is_control(), " "), MAX_SUBJECT).trim().to_owned(),
        text: fit_text(&text),
        attachments,
    })
}

impl InboundMail {
    /// The key the message is deduplicated by in its tenant: its Message-ID, or for a
    /// message without one the SHA-256 of its bytes (a retry of the same bytes is the same).
    pub fn key(&self, raw: &[u8]) -> String {
        match &self.message_id {
            Some(id) => id.clone(),
            None => format!("sha256-{}@centralita.invalid", hex(&Sha256::digest(raw))),
        }
    }

    /// The ids that may name a message of an earlier conversation, the most telling first:
    /// `In-Reply-To`, then `References` from the newest to the root.
    pub fn thread_ids(&self) -> Vec<String> {
        let mut out: Vec<String> = self.in_reply_to.clone();
        for r in self.references.iter().rev() {
            if !out.contains(r) {
                out.push(r.clone());
            }
        }
        out
    }

    /// The `References` a reply to this message carries (RFC 5322 §3.6.4): this message's
    /// `References` (or, without them, its single `In-Reply-To`) followed by its own id.
    pub fn references_for_reply(&self, key: &str) -> Vec<String> {
        let mut refs = if !self.references.is_empty() {
            self.references.clone()
        } else if self.in_reply_to.len() == 1 {
            self.in_reply_to.clone()
        } else {
            Vec::new()
        };
        refs.push(key.to_owned());
        trim_references(refs)
    }
}

/// Keeps the root and the newest ids of a long `References` chain (RFC 5322 lets a
/// reply shorten it; the root and the parent are the ones threading needs).
pub fn trim_references(mut refs: Vec<String>) -> Vec<String> {
    refs.dedup();
    if refs.len() > MAX_REFERENCES {
        let tail = refs.split_off(refs.len() - (MAX_REFERENCES - 1));
        refs.truncate(1);
        refs.extend(tail);
    }
    refs
}

/// The headers of a reply to a message (`parent_id`, whose reply references are
/// `parent_refs`): `In-Reply-To` and `References`, each id in angle brackets.
pub fn reply_headers(parent_id: &str, parent_refs: &[String]) -> (String, String) {
    let refs: Vec<String> = parent_refs.iter().map(|r| format!("<{r}>")).collect();
    (format!("<{parent_id}>"), refs.join(" "))
}

/// `Re: subject`, once (a subject that already starts with `Re:` keeps it).
pub fn reply_subject(subject: &str) -> String {
    let s = subject.trim();
    if s.len() >= 3 && s[..3].eq_ignore_ascii_case("re:") {
        s.to_owned()
    } else if s.is_empty() {
        "Re: your message".into()
    } else {
        format!("Re: {s}")
    }
}

/// A Message-ID of ours for a reply sent from `from` (`{uuid v7}@{from's domain}`).
pub fn new_message_id(from: &str) -> String {
    let domain = from.rsplit_once('@').map_or("centralita.invalid", |(_, d)| d);
    format!("{}@{domain}", uuid::Uuid::now_v7().simple())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A short stable id of a message for requests to sessions (`em-` and 40 hex digits: a
/// retried delivery creates the same contact once).
pub fn request_id(tenant: &str, key: &str) -> String {
    let d = Sha256::digest(format!("{tenant}/{key}").as_bytes());
    format!("em-{}", &hex(&d)[..40])
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: &str = "From: Ana <Ana@Customer.example>\r\nTo: help@acme.example\r\nSubject: My policy\r\nMessage-ID: <abc-1@customer.example>\r\n\r\nHello, I need help.\r\n";

    #[test]
    fn a_plain_message_is_read() {
        let m = parse(PLAIN.as_bytes(), "bounce@elsewhere.example").expect("parsed");
        assert_eq!(m.from, "ana@customer.example");
        assert_eq!(m.subject, "My policy");
        assert_eq!(m.text, "Hello, I need help.");
        assert_eq!(m.message_id.as_deref(), Some("abc-1@customer.example"));
        assert!(m.in_reply_to.is_empty() && m.references.is_empty() && m.attachments.is_empty());
        assert_eq!(m.key(PLAIN.as_bytes()), "abc-1@customer.example");
        assert_eq!(m.references_for_reply("abc-1@customer.example"), ["abc-1@customer.example"]);
    }

    #[test]
    fn html_only_is_reduced_to_text() {
        let raw = "From: a@b.example\r\nSubject: x\r\nContent-Type: text/html\r\n\r\n<html><head><style>p{color:red}</style></head><body><p>Hi &amp; <b>bye</b></p><script>alert(1)</script></body></html>\r\n";
        let m = parse(raw.as_bytes(), "").expect("parsed");
        assert!(m.text.contains("Hi & bye"), "{}", m.text);
        assert!(!m.text.contains('<'), "{}", m.text);
        assert!(m.message_id.is_none());
        let key = m.key(raw.as_bytes());
        assert!(key.starts_with("sha256-") && is_message_id(&key), "{key}");
        assert_eq!(key, m.key(raw.as_bytes()));
    }

    #[test]
    fn plain_text_is_preferred_to_html() {
        let raw = "From: a@b.example\r\nSubject: x\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nplain words\r\n--b1\r\nContent-Type: text/html\r\n\r\n<p>html words</p>\r\n--b1--\r\n";
        let m = parse(raw.as_bytes(), "").expect("parsed");
        assert_eq!(m.text, "plain words");
    }

    #[test]
    fn attachments_are_described_and_executables_refused() {
        let with = |name: &str, ctype: &str| {
            format!(
                "From: a@b.example\r\nSubject: x\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--b1\r\nContent-Type: {ctype}; name=\"{name}\"\r\nContent-Disposition: attachment; filename=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\n\r\naGVsbG8gd29ybGQ=\r\n--b1--\r\n"
            )
        };
        let m = parse(with("claim.pdf", "application/pdf").as_bytes(), "").expect("parsed");
        assert_eq!(m.text, "see attached");
        assert_eq!(
            m.attachments,
            [Attachment {
                name: "claim.pdf".into(),
                content_type: "application/pdf".into(),
                size: 11,
                data: b"hello world".to_vec()
            }]
        );
        assert_eq!(
            parse(with("invoice.PDF.exe", "application/octet-stream").as_bytes(), ""),
            Err(Refused::Forbidden("invoice.PDF.exe".into()))
        );
        assert_eq!(
            parse(with("notes.txt", "application/x-msdownload").as_bytes(), ""),
            Err(Refused::Forbidden("notes.txt".into()))
        );
        assert!(forbidden("run.ps1", "text/plain") && forbidden("x.JS.", "") && !forbidden("photo.jpg", "image/jpeg"));
    }

    #[test]
    fn bad_input_is_refused_not_a_panic() {
        assert_eq!(parse(b"", ""), Err(Refused::Malformed));
        assert_eq!(parse(b"Subject: no sender\r\n\r\nbody\r\n", ""), Err(Refused::NoSender));
        assert_eq!(parse(b"From: not an address\r\n\r\nbody\r\n", "also bad"), Err(Refused::NoSender));
        // The envelope sender stands in for a From without an address.
        let m = parse(b"Subject: s\r\n\r\nbody\r\n", "Bounce@Customer.example").expect("parsed");
        assert_eq!(m.from, "bounce@customer.example");
        for junk in [
            &b"\xff\xfe\x00garbage"[..],
            b"From: <<<@>>>\r\n\r\n",
            b"\r\n\r\n\r\n",
            b"Content-Type: multipart/mixed; boundary=\"\"\r\nFrom: a@b.example\r\n\r\n--\r\n",
        ] {
            let _ = parse(junk, "");
        }
    }

    #[test]
    fn long_text_and_subject_are_cut_at_a_character() {
        let body = "ñ".repeat(MAX_TEXT_BYTES);
        let raw = format!(
            "From: a@b.example\r\nSubject: {}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n",
            "s".repeat(2000)
        );
        let m = parse(raw.as_bytes(), "").expect("parsed");
        assert!(m.text.len() <= MAX_TEXT_BYTES, "{}", m.text.len());
        assert!(m.text.ends_with("longer]"));
        assert_eq!(m.subject.len(), MAX_SUBJECT);
        assert_eq!(fit_text("  "), "(no text)");
    }

    #[test]
    fn threading_ids_and_reply_headers_follow_rfc_5322() {
        let raw = "From: a@b.example\r\nSubject: Re: Re: claim\r\nMessage-ID: <m3@b.example>\r\nIn-Reply-To: <m2@acme.example>\r\nReferences: <m1@b.example> <m2@acme.example>\r\n\r\nthanks\r\n";
        let m = parse(raw.as_bytes(), "").expect("parsed");
        assert_eq!(m.in_reply_to, ["m2@acme.example"]);
        assert_eq!(m.references, ["m1@b.example", "m2@acme.example"]);
        assert_eq!(m.thread_ids(), ["m2@acme.example", "m1@b.example"]);
        // A reply to it: its References, then its own id.
        let refs = m.references_for_reply("m3@b.example");
        assert_eq!(refs, ["m1@b.example", "m2@acme.example", "m3@b.example"]);
        let (irt, references) = reply_headers("m3@b.example", &refs);
        assert_eq!(irt, "<m3@b.example>");
        assert_eq!(references, "<m1@b.example> <m2@acme.example> <m3@b.example>");
        // Without References, a single In-Reply-To stands in for them.
        let only = InboundMail { references: vec![], ..m.clone() };
        assert_eq!(only.references_for_reply("m3@b.example"), ["m2@acme.example", "m3@b.example"]);
        assert_eq!(reply_subject(&m.subject), "Re: Re: claim");
        let raw = "From: a@b.example\r\nSubject: =?utf-8?q?line=0D=0ABcc:_x@evil.example?=\r\n\r\nhi\r\n";
        let m2 = parse(raw.as_bytes(), "").expect("parsed");
        assert!(!m2.subject.contains('\n') && !m2.subject.contains('\r'), "{:?}", m2.subject);
        assert!(m2.subject.starts_with("line") && m2.subject.ends_with("Bcc: x@evil.example"), "{:?}", m2.subject);
        assert_eq!(reply_subject("claim"), "Re: claim");
        assert_eq!(reply_subject("RE: x"), "RE: x");
        assert_eq!(reply_subject(""), "Re: your message");
    }

    #[test]
    fn a_long_chain_keeps_its_root_and_newest() {
        let chain: Vec<String> = (0..50).map(|i| format!("m{i}@x.example")).collect();
        let kept = trim_references(chain.clone());
        assert_eq!(kept.len(), MAX_REFERENCES);
        assert_eq!(kept[0], "m0@x.example");
        assert_eq!(kept.last(), chain.last());
    }

    #[test]
    fn our_ids_are_valid_and_unique() {
        let a = new_message_id("help@acme.example");
        let b = new_message_id("help@acme.example");
        assert!(is_message_id(&a) && a.ends_with("@acme.example") && a != b);
        assert!(!is_message_id("no-at-sign") && !is_message_id("a b@c") && !is_message_id("<a@b>"));
        let r = request_id("acme", "abc@x");
        assert_eq!(r.len(), 43);
        assert_eq!(r, request_id("acme", "abc@x"));
        assert_ne!(r, request_id("beta", "abc@x"));
    }
}

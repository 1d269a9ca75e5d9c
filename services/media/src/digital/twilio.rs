//! Twilio's SMS webhooks, pure: the `X-Twilio-Signature` check, the form of an inbound
//! message and of a status callback, opt-out keywords and E.164 numbers. No I/O here.
//!
//! The signature (Twilio's "Webhooks security"): HMAC-SHA1, keyed with the account's auth
//! token, over the full URL Twilio requested followed by every POST parameter as
//! `name` + `value`, names in sorted order (a repeated name's values sorted too), base64.
//! It is checked on the raw body before anything else is read from it.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;

use super::model::{Status, MAX_TEXT_BYTES};

/// The header Twilio signs requests with.
pub const SIGNATURE_HEADER: &str = "x-twilio-signature";

/// The answer to an inbound message: empty TwiML (no auto-reply).
pub const EMPTY_TWIML: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>";

/// Largest webhook body taken (Twilio's SMS forms are a few kilobytes).
pub const MAX_WEBHOOK_BYTES: usize = 64 * 1024;

/// Twilio's standard opt-out keywords (the whole message, any case, surrounding spaces).
pub const OPT_OUT_KEYWORDS: &[&str] = &["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"];
/// Twilio's standard opt-in keywords.
pub const OPT_IN_KEYWORDS: &[&str] = &["START", "YES", "UNSTOP"];

/// The form parameters of a webhook, in the order sent.
pub type Params = Vec<(String, String)>;

/// The signature Twilio computes for a request to `url` with `params`.
pub fn signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    base64::engine::general_purpose::STANDARD.encode(mac(auth_token, url, params).finalize().into_bytes())
}

fn mac(auth_token: &str, url: &str, params: &[(String, String)]) -> Hmac<Sha1> {
    let mut sorted: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (k, v) in params {
        sorted.entry(k).or_default().insert(v);
    }
    // HMAC takes a key of any length.
    let mut m = <Hmac<Sha1> as Mac>::new_from_slice(auth_token.as_bytes()).expect("HMAC takes any key length");
    m.update(url.as_bytes());
    for (k, values) in sorted {
        for v in values {
            m.update(k.as_bytes());
            m.update(v.as_bytes());
        }
    }
    m
}

/// Whether `header` (the request's `X-Twilio-Signature`) is the signature of `url` and
/// `params` under `auth_token`; compared in constant time.
pub fn verify(auth_token: &str, url: &str, params: &[(String, String)], header: &str) -> bool {
    let Ok(given) = base64::engine::general_purpose::STANDARD.decode(header.trim()) else {
        return false;
    };
    mac(auth_token, url, params).verify_slice(&given).is_ok()
}

/// The parameters of an `application/x-www-form-urlencoded` body; refuses a body that is
/// not UTF-8 once decoded (Twilio sends UTF-8).
pub fn parse_form(body: &[u8]) -> Result<Params, String> {
    let mut out = Vec::new();
    for (k, v) in form_urlencoded::parse(body) {
        // `parse` replaces invalid UTF-8 with U+FFFD: refuse rather than store a mangled text.
        if k.contains('\u{FFFD}') || v.contains('\u{FFFD}') {
            return Err("the form is not UTF-8".into());
        }
        out.push((k.into_owned(), v.into_owned()));
    }
    Ok(out)
}

fn get<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Whether `s` is an E.164 number: `+`, a non-zero digit, 7 to 15 digits in all.
pub fn is_e164(s: &str) -> bool {
    let Some(digits) = s.strip_prefix('+') else { return false };
    (7..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0')
}

/// Whether `s` is a Twilio message SID: `SM` or `MM` and 32 hex digits.
pub fn is_message_sid(s: &str) -> bool {
    s.len() == 34 && (s.starts_with("SM") || s.starts_with("MM")) && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// An inbound SMS, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    pub message_sid: String,
    pub account_sid: String,
    /// The customer's number (E.164).
    pub from: String,
    /// The tenant's number it was sent to (E.164).
    pub to: String,
    /// The text (may be empty when the message carries media).
    pub body: String,
    /// An MMS's media (`MediaUrl{n}`, `MediaContentType{n}` for n < `NumMedia`).
    pub media: Vec<MediaRef>,
}

/// One media item of an MMS: where Twilio serves it and its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRef {
    pub url: String,
    pub content_type: String,
}

/// At most this many media items in one message (Twilio's limit).
pub const MAX_MEDIA: usize = 10;

/// What is wrong with a webhook's form: the parameter and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormRefusal {
    pub field: &'static str,
    pub message: String,
}

fn refuse(field: &'static str, message: impl Into<String>) -> FormRefusal {
    FormRefusal { field, message: message.into() }
}

impl Inbound {
    pub fn parse(params: &[(String, String)]) -> Result<Self, FormRefusal> {
        let sid = get(params, "MessageSid").or_else(|| get(params, "SmsSid")).unwrap_or_default();
        if !is_message_sid(sid) {
            return Err(refuse("MessageSid", "must be SM or MM and 32 hex digits"));
        }
        let from = get(params, "From").unwrap_or_default();
        if !is_e164(from) {
            return Err(refuse("From", "must be an E.164 number"));
        }
        let to = get(params, "To").unwrap_or_default();
        if !is_e164(to) {
            return Err(refuse("To", "must be an E.164 number"));
        }
        let body = get(params, "Body").unwrap_or_default();
        if body.len() > MAX_TEXT_BYTES {
            return Err(refuse("Body", format!("longer than {MAX_TEXT_BYTES} bytes")));
        }
        let count = match get(params, "NumMedia").unwrap_or("0").parse::<usize>() {
            Ok(n) if n <= MAX_MEDIA => n,
            _ => return Err(refuse("NumMedia", format!("must be 0 to {MAX_MEDIA}"))),
        };
        let mut media = Vec::with_capacity(count);
        for i in 0..count {
            let url = get(params, &format!("MediaUrl{i}")).unwrap_or_default();
            if url.is_empty() || url.len() > 2048 {
                return Err(refuse("MediaUrl", format!("MediaUrl{i} must be a URL")));
            }
            let content_type = get(params, &format!("MediaContentType{i}")).unwrap_or_default();
            media.push(MediaRef { url: url.to_owned(), content_type: content_type.chars().take(100).collect() });
        }
        if body.trim().is_empty() && media.is_empty() {
            return Err(refuse("Body", "is empty and the message has no media"));
        }
        Ok(Inbound {
            message_sid: sid.to_owned(),
            account_sid: get(params, "AccountSid").unwrap_or_default().to_owned(),
            from: from.to_owned(),
            to: to.to_owned(),
            body: body.to_owned(),
            media,
        })
    }

    /// The consent keyword the whole message is, if any.
    pub fn keyword(&self) -> Option<Consent> {
        keyword(&self.body)
    }
}

/// A consent keyword.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consent {
    OptOut,
    OptIn,
}

/// The consent keyword `body` is, if any (the whole message, any case, spaces around).
pub fn keyword(body: &str) -> Option<Consent> {
    let word = body.trim().to_ascii_uppercase();
    if OPT_OUT_KEYWORDS.contains(&word.as_str()) {
        Some(Consent::OptOut)
    } else if OPT_IN_KEYWORDS.contains(&word.as_str()) {
        Some(Consent::OptIn)
    } else {
        None
    }
}

/// A status callback of an outbound message, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusCallback {
    pub message_sid: String,
    /// `None` for the statuses before the carrier has it (`queued`, `sending`, …): they
    /// change nothing in the lattice.
    pub status: Option<Status>,
    /// `ErrorCode` and the status, for a failure.
    pub reason: String,
}

impl StatusCallback {
    pub fn parse(params: &[(String, String)]) -> Result<Self, FormRefusal> {
        let sid = get(params, "MessageSid").or_else(|| get(params, "SmsSid")).unwrap_or_default();
        if !is_message_sid(sid) {
            return Err(refuse("MessageSid", "must be SM or MM and 32 hex digits"));
        }
        let raw = get(params, "MessageStatus").or_else(|| get(params, "SmsStatus")).unwrap_or_default();
        let status = match raw {
            "accepted" | "scheduled" | "queued" | "sending" | "sent" => None,
            "delivered" => Some(Status::Delivered),
            "read" => Some(Status::Read),
            "failed" | "undelivered" | "canceled" => Some(Status::Failed),
            _ => return Err(refuse("MessageStatus", format!("`{raw}` is not a message status"))),
        };
        let reason = match (status, get(params, "ErrorCode")) {
            (Some(Status::Failed), Some(code)) if !code.is_empty() => format!("twilio {raw} (error {code})"),
            (Some(Status::Failed), _) => format!("twilio {raw}"),
            _ => String::new(),
        };
        Ok(StatusCallback { message_sid: sid.to_owned(), status, reason })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Params {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    /// Twilio's documented examples (docs "Webhooks security"; the same values come out of
    /// the PyPI `twilio` 9.13 `RequestValidator.compute_signature`).
    #[test]
    fn twilios_documented_signatures() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let a = p(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675310"),
            ("Digits", "1234"),
            ("From", "+14158675310"),
            ("To", "+18005551212"),
        ]);
        assert_eq!(signature("12345", url, &a), "GvWf1cFY/Q7PnoempGyD5oXAezc=");
        assert!(verify("12345", url, &a, "GvWf1cFY/Q7PnoempGyD5oXAezc="));
        let b = p(&[
            ("To", "+18005551212"),
            ("From", "+12349013030"),
            ("Digits", "1234"),
            ("Caller", "+12349013030"),
            ("CallSid", "CA1234567890ABCDE"),
        ]);
        assert_eq!(signature("12345", url, &b), "0/KCTR6DLpKmkAf8muzZqo1nDgQ=");
    }

    #[test]
    fn any_change_breaks_the_signature() {
        let url = "https://hooks.example/sms/twilio/acme";
        let params = p(&[("Body", "hello"), ("From", "+15551230000"), ("To", "+15559870000")]);
        let good = signature("tok", url, &params);
        assert!(verify("tok", url, &params, &good));
        assert!(!verify("tok2", url, &params, &good), "another token");
        assert!(!verify("tok", "https://hooks.example/sms/twilio/other", &params, &good), "another url");
        let changed = p(&[("Body", "hellp"), ("From", "+15551230000"), ("To", "+15559870000")]);
        assert!(!verify("tok", url, &changed, &good), "one byte of the body");
        assert!(!verify("tok", url, &params, ""), "no signature");
        assert!(!verify("tok", url, &params, "not base64!"), "garbage");
        let mut flipped = good.into_bytes();
        flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
        assert!(!verify("tok", url, &params, &String::from_utf8(flipped).expect("ascii")));
    }

    #[test]
    fn forms_parse_and_refuse() {
        let form = parse_form(
            b"MessageSid=SM0123456789abcdef0123456789abcdef&From=%2B15551230000&To=%2B15559870000&Body=Hi+there%21",
        )
        .expect("form");
        let m = Inbound::parse(&form).expect("inbound");
        assert_eq!(m.from, "+15551230000");
        assert_eq!(m.to, "+15559870000");
        assert_eq!(m.body, "Hi there!");
        assert_eq!(m.keyword(), None);
        assert!(parse_form(b"Body=%FF%FE").is_err());
        let refusal = |s: &[u8]| Inbound::parse(&parse_form(s).expect("form")).expect_err("refused").field;
        assert_eq!(refusal(b"From=%2B15551230000&To=%2B15559870000"), "MessageSid");
        assert_eq!(refusal(b"MessageSid=SM0123456789abcdef0123456789abcdef&From=5551230000&To=%2B15559870000"), "From");
        assert_eq!(refusal(b"MessageSid=SM0123456789abcdef0123456789abcdef&From=%2B15551230000&To=x"), "To");
        let long = format!(
            "MessageSid=SM0123456789abcdef0123456789abcdef&From=%2B15551230000&To=%2B15559870000&Body={}",
            "a".repeat(MAX_TEXT_BYTES + 1)
        );
        assert_eq!(refusal(long.as_bytes()), "Body");
        let base = "MessageSid=MM0123456789abcdef0123456789abcdef&From=%2B15551230000&To=%2B15559870000";
        assert_eq!(refusal(base.as_bytes()), "Body", "no text and no media");
        assert_eq!(refusal(format!("{base}&NumMedia=11").as_bytes()), "NumMedia");
        assert_eq!(refusal(format!("{base}&NumMedia=x").as_bytes()), "NumMedia");
        assert_eq!(refusal(format!("{base}&NumMedia=1").as_bytes()), "MediaUrl");
        let mms = format!(
            "{base}&NumMedia=2&MediaUrl0=https%3A%2F%2Fapi.twilio.com%2F2010-04-01%2FAccounts%2FAC1%2FMessages%2FMM1%2FMedia%2FME1\
             &MediaContentType0=image%2Fjpeg&MediaUrl1=https%3A%2F%2Fapi.twilio.com%2Fm2&MediaContentType1=application%2Fpdf"
        );
        let m = Inbound::parse(&parse_form(mms.as_bytes()).expect("form")).expect("an MMS");
        assert_eq!(m.body, "");
        assert_eq!(
            m.media.iter().map(|x| (x.url.as_str(), x.content_type.as_str())).collect::<Vec<_>>(),
            [
                ("https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1", "image/jpeg"),
                ("https://api.twilio.com/m2", "application/pdf")
            ]
        );
    }

    #[test]
    fn numbers_and_sids() {
        for good in ["+15551230000", "+4930123456", "+1234567"] {
            assert!(is_e164(good), "{good}");
        }
        for bad in ["", "+", "15551230000", "+0555123000", "+1234567890123456", "+1555 123", "+1555-1230000"] {
            assert!(!is_e164(bad), "{bad}");
        }
        assert!(is_message_sid("SM0123456789abcdef0123456789abcdef"));
        assert!(is_message_sid("MM0123456789ABCDEF0123456789ABCDEF"));
        assert!(!is_message_sid("CA0123456789abcdef0123456789abcdef"));
        assert!(!is_message_sid("SM0123456789abcdef0123456789abcdeg"));
        assert!(!is_message_sid("SM0123"));
    }

    #[test]
    fn consent_keywords() {
        assert_eq!(keyword("STOP"), Some(Consent::OptOut));
        assert_eq!(keyword("  unsubscribe \n"), Some(Consent::OptOut));
        assert_eq!(keyword("Start"), Some(Consent::OptIn));
        assert_eq!(keyword("please stop calling"), None);
        assert_eq!(keyword(""), None);
    }

    #[test]
    fn status_callbacks_map_onto_the_lattice() {
        let sid = "SM0123456789abcdef0123456789abcdef";
        let cb = |s: &str, e: &str| {
            StatusCallback::parse(&p(&[("MessageSid", sid), ("MessageStatus", s), ("ErrorCode", e)]))
        };
        assert_eq!(cb("sent", "").expect("ok").status, None);
        assert_eq!(cb("delivered", "").expect("ok").status, Some(Status::Delivered));
        assert_eq!(cb("read", "").expect("ok").status, Some(Status::Read));
        let failed = cb("undelivered", "30003").expect("ok");
        assert_eq!(failed.status, Some(Status::Failed));
        assert_eq!(failed.reason, "twilio undelivered (error 30003)");
        assert_eq!(cb("exploded", "").expect_err("refused").field, "MessageStatus");
    }
}

//! Customer identities (phone, email, chat visitor, social handle) and their one normal
//! form, shared by sessions (which refuses a malformed identity when a contact is created)
//! and the CRM (which matches profiles on the normal form).
//!
//! Normal forms:
//! - phone: E.164, `+` then 7 to 15 digits, the first not `0`. Spaces, `-`, `.`, `/` and
//!   parentheses are dropped; `00` is read as `+`; a number without either takes the
//!   caller's default country calling code, dropping one trunk `0`.
//! - email: lower case, one `@`, an ASCII local part of dot-atoms (RFC 5322 `atext`) up to
//!   64 bytes, a domain of at least two LDH labels (punycode for non-ASCII), at most 254
//!   bytes in all.
//! - chat: a visitor id of 1 to 128 visible ASCII characters, case kept.
//! - social: `network:handle`, both lower case, the handle without a leading `@`; a
//!   WhatsApp handle is a phone number and takes the phone form.

use centralita_proto::crm::v1 as pb;

/// Most identities one request or contact may carry.
pub const MAX_IDENTITIES: usize = 20;
/// Longest raw identity accepted before normalising.
const MAX_RAW: usize = 320;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Phone,
    Email,
    Chat,
    Social,
}

impl Kind {
    pub fn code(self) -> i16 {
        match self {
            Kind::Phone => 1,
            Kind::Email => 2,
            Kind::Chat => 3,
            Kind::Social => 4,
        }
    }

    pub fn from_code(code: i16) -> Option<Self> {
        Some(match code {
            1 => Kind::Phone,
            2 => Kind::Email,
            3 => Kind::Chat,
            4 => Kind::Social,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Phone => "phone",
            Kind::Email => "email",
            Kind::Chat => "chat",
            Kind::Social => "social",
        }
    }
}

/// An identity in normal form.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Identity {
    pub kind: Kind,
    /// The normal form (`network:handle` for social).
    pub value: String,
}

impl Identity {
    /// Normalises a wire identity. `default_country_code` (digits, may be empty) applies
    /// to phone numbers written without `+` or `00`. The error says what is wrong, for a
    /// field violation.
    pub fn parse(raw: &pb::Identity, default_country_code: &str) -> Result<Self, String> {
        if raw.value.len() > MAX_RAW {
            return Err(format!("at most {MAX_RAW} bytes"));
        }
        let kind = match pb::IdentityKind::try_from(raw.kind).unwrap_or(pb::IdentityKind::Unspecified) {
            pb::IdentityKind::Unspecified => return Err("kind is required (phone, email, chat or social)".into()),
            pb::IdentityKind::Phone => Kind::Phone,
            pb::IdentityKind::Email => Kind::Email,
            pb::IdentityKind::Chat => Kind::Chat,
            pb::IdentityKind::Social => Kind::Social,
        };
        if kind != Kind::Social && !raw.network.is_empty() {
            return Err("network is only for social identities".into());
        }
        let value = match kind {
            Kind::Phone => phone(&raw.value, default_country_code)?,
            Kind::Email => email(&raw.value)?,
            Kind::Chat => chat(&raw.value)?,
            Kind::Social => social(&raw.network, &raw.value, default_country_code)?,
        };
        Ok(Self { kind, value })
    }

    /// Rebuilds an identity read back from storage (already normal).
    pub fn stored(kind: i16, value: String) -> Option<Self> {
        Kind::from_code(kind).map(|kind| Self { kind, value })
    }

    pub fn to_pb(&self) -> pb::Identity {
        let kind = match self.kind {
            Kind::Phone => pb::IdentityKind::Phone,
            Kind::Email => pb::IdentityKind::Email,
            Kind::Chat => pb::IdentityKind::Chat,
            Kind::Social => pb::IdentityKind::Social,
        } as i32;
        match (self.kind, self.value.split_once(':')) {
            (Kind::Social, Some((network, handle))) => {
                pb::Identity { kind, value: handle.to_owned(), network: network.to_owned() }
            }
            _ => pb::Identity { kind, value: self.value.clone(), network: String::new() },
        }
    }
}

/// Checks a default country calling code: 1 to 3 digits, not starting with 0.
pub fn country_code(cc: &str) -> Result<(), String> {
    if cc.is_empty() || (cc.len() <= 3 && cc.bytes().all(|b| b.is_ascii_digit()) && !cc.starts_with('0')) {
        Ok(())
    } else {
        Err("must be a country calling code: 1 to 3 digits, not starting with 0 (for example 44)".into())
    }
}

/// E.164 normal form of a phone number.
pub fn phone(raw: &str, default_country_code: &str) -> Result<String, String> {
    country_code(default_country_code).map_err(|e| format!("default_country_code {e}"))?;
    let s = raw.trim();
    let (plus, rest) = match s.strip_prefix('+') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let mut digits = String::with_capacity(rest.len());
    for c in rest.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' | '.' | '/' | '(' | ')' => {}
            _ => {
                return Err(format!(
                    "`{c}` is not allowed in a phone number (digits, spaces, - . / ( ) and a leading +)"
                ))
            }
        }
    }
    let international = if plus {
        digits
    } else if let Some(d) = digits.strip_prefix("00") {
        d.to_owned()
    } else if !default_country_code.is_empty() {
        let national = digits.strip_prefix('0').unwrap_or(&digits);
        format!("{default_country_code}{national}")
    } else {
        return Err(
            "must be international (+ or 00 and the country code) unless a default country code is given".into()
        );
    };
    if international.starts_with('0') {
        return Err("a country code does not start with 0".into());
    }
    if !(7..=15).contains(&international.len()) {
        return Err(format!("has {} digits with the country code; E.164 allows 7 to 15", international.len()));
    }
    Ok(format!("+{international}"))
}

fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+/=?^_`{|}~-".contains(&b)
}

/// Normal form of an email address.
pub fn email(raw: &str) -> Result<String, String> {
    let s = raw.trim().to_ascii_lowercase();
    if !s.is_ascii() {
        return Err("must be ASCII (give an internationalised domain in punycode)".into());
    }
    if s.len() > 254 {
        return Err("at most 254 bytes".into());
    }
    let (local, domain) = s.split_once('@').ok_or("must contain @")?;
    if domain.contains('@') {
        return Err("must contain a single @".into());
    }
    if local.is_empty() || local.len() > 64 {
        return Err("the part before @ must be 1 to 64 bytes".into());
    }
    if local.split('.').any(|atom| atom.is_empty() || !atom.bytes().all(is_atext)) {
        return Err("the part before @ has a character not allowed, or a leading, trailing or double dot".into());
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return Err("the domain needs at least two labels (example.com)".into());
    }
    for l in &labels {
        if l.is_empty()
            || l.len() > 63
            || l.starts_with('-')
            || l.ends_with('-')
            || !l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(format!("`{l}` is not a valid domain label"));
        }
    }
    if labels.last().is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit())) {
        return Err("the top-level domain cannot be numeric".into());
    }
    Ok(s)
}

/// Normal form of a web-chat visitor id.
pub fn chat(raw: &str) -> Result<String, String> {
    let s = raw.trim();
    if s.is_empty() || s.len() > 128 || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("must be 1 to 128 visible ASCII characters".into());
    }
    Ok(s.to_owned())
}

/// Normal form of a social handle: `network:handle`.
pub fn social(network: &str, handle: &str, default_country_code: &str) -> Result<String, String> {
    let network = network.trim().to_ascii_lowercase();
    if network.is_empty()
        || network.len() > 32
        || !network.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Err("network must be 1-32 of a-z, 0-9, - and _ (whatsapp, facebook, instagram, x, …)".into());
    }
    if network == "whatsapp" {
        return Ok(format!("whatsapp:{}", phone(handle, default_country_code)?));
    }
    let h = handle.trim();
    // Every leading `@`: a handle written `@@ana` (found by fuzzing) is `ana` too, so the
    // normal form is a fixed point (one `@` stripped left `@ana`, normalised again to `ana`).
    let h = h.trim_start_matches('@').to_lowercase();
    if h.is_empty() || h.chars().count() > 100 || h.chars().any(|c| c.is_whitespace() || c.is_control() || c == ':') {
        return Err("handle must be 1 to 100 characters without spaces, control characters or `:`".into());
    }
    Ok(format!("{network}:{h}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(kind: pb::IdentityKind, value: &str, network: &str) -> pb::Identity {
        pb::Identity { kind: kind as i32, value: value.into(), network: network.into() }
    }

    #[test]
    fn a_handle_with_several_leading_ats_has_one_normal_form() {
        // The input of fuzz/regressions/api_values/: a normal form that normalised again to
        // something else.
        let once = Identity::parse(&id(pb::IdentityKind::Social, "@@\u{fffd}", "A"), "").unwrap();
        assert_eq!(once.value, "a:\u{fffd}");
        assert_eq!(Identity::parse(&once.to_pb(), "").unwrap(), once);
        assert_eq!(social("x", "@@Ana", "").unwrap(), "x:ana");
        assert!(social("x", "@@", "").is_err());
    }

    #[test]
    fn phone_numbers_take_the_e164_form() {
        assert_eq!(phone("+44 20 7946 0958", "").unwrap(), "+442079460958");
        assert_eq!(phone("0044 (20) 7946-0958", "").unwrap(), "+442079460958");
        assert_eq!(phone("020 7946 0958", "44").unwrap(), "+442079460958");
        assert_eq!(phone("  +1 (415) 555.0132 ", "").unwrap(), "+14155550132");
        assert!(phone("020 7946 0958", "").unwrap_err().contains("international"));
        assert!(phone("+44 20 7946 0958 ext 12", "").unwrap_err().contains("not allowed"));
        assert!(phone("+0 123 4567", "").unwrap_err().contains("0"));
        assert!(phone("+1234", "").unwrap_err().contains("7 to 15"));
        assert!(phone("+1234567890123456", "").unwrap_err().contains("7 to 15"));
        assert!(phone("12+34567890", "").is_err());
        assert!(phone("0207946", "044").unwrap_err().contains("default_country_code"));
    }

    #[test]
    fn emails_are_lower_case_and_checked() {
        assert_eq!(email(" Ana.Lopez+VIP@Example.COM ").unwrap(), "ana.lopez+vip@example.com");
        for bad in [
            "ana",
            "ana@",
            "@example.com",
            "ana@@example.com",
            "a..b@example.com",
            ".a@example.com",
            "ana@localhost",
            "ana@-x.com",
            "ana@x.123",
            "añа@example.com",
            "a b@example.com",
        ] {
            assert!(email(bad).is_err(), "{bad} accepted");
        }
        assert!(email(&format!("{}@example.com", "a".repeat(65))).is_err());
    }

    #[test]
    fn chat_and_social_handles() {
        assert_eq!(chat(" visitor-42 ").unwrap(), "visitor-42");
        assert!(chat("has space").is_err());
        assert_eq!(social("Instagram", "@Ana_Lopez", "").unwrap(), "instagram:ana_lopez");
        assert_eq!(social("whatsapp", "+34 612 34 56 78", "").unwrap(), "whatsapp:+34612345678");
        assert!(social("", "ana", "").is_err());
        assert!(social("x", "a b", "").is_err());
        let p = Identity::parse(&id(pb::IdentityKind::Social, "@Ana", "X"), "").unwrap();
        assert_eq!(p.to_pb(), id(pb::IdentityKind::Social, "ana", "x"));
        assert!(Identity::parse(&id(pb::IdentityKind::Email, "a@b.co", "x"), "").unwrap_err().contains("network"));
        assert!(Identity::parse(&id(pb::IdentityKind::Unspecified, "a", ""), "").is_err());
        assert!(Identity::parse(&id(pb::IdentityKind::Chat, &"a".repeat(400), ""), "").unwrap_err().contains("320"));
    }

    fn formatted_phone() -> impl Strategy<Value = (String, String)> {
        // A valid number and one way of writing it.
        (
            "[1-9][0-9]{6,14}",
            proptest::collection::vec(prop_oneof![Just(""), Just(" "), Just("-"), Just(".")], 15),
            any::<bool>(),
        )
            .prop_map(|(digits, seps, double_zero)| {
                let mut written = String::from(if double_zero { "00" } else { "+" });
                for (i, c) in digits.chars().enumerate() {
                    written.push(c);
                    written.push_str(seps[i]);
                }
                (format!("+{digits}"), written)
            })
    }

    proptest! {
        #[test]
        fn any_way_of_writing_a_number_gives_its_e164_form((e164, written) in formatted_phone()) {
            prop_assert_eq!(phone(&written, "").unwrap(), e164.clone());
            prop_assert_eq!(phone(&e164, "").unwrap(), e164);
        }

        #[test]
        fn normalising_is_idempotent_and_never_panics(raw in "\\PC{0,40}", kind in 1i32..=4, network in "[A-Za-z_-]{0,6}", cc in "[0-9]{0,3}") {
            let network = if kind == 4 { network } else { String::new() };
            let input = pb::Identity { kind, value: raw, network };
            if let Ok(first) = Identity::parse(&input, &cc) {
                let again = Identity::parse(&first.to_pb(), "").expect("a normal form is accepted");
                prop_assert_eq!(&again, &first);
                if first.kind == Kind::Phone {
                    prop_assert!(first.value.starts_with('+') && (8..=16).contains(&first.value.len()));
                    prop_assert!(first.value[1..].bytes().all(|b| b.is_ascii_digit()));
                }
            }
        }

        #[test]
        fn email_case_does_not_matter(local in "[a-zA-Z0-9]{1,10}(\\.[a-zA-Z0-9_+-]{1,8})?", domain in "[a-zA-Z0-9]{1,10}\\.[a-zA-Z]{2,6}") {
            let a = email(&format!("{local}@{domain}")).unwrap();
            let b = email(&format!("{}@{}", local.to_uppercase(), domain.to_lowercase())).unwrap();
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(email(&a).unwrap(), a);
        }
    }
}

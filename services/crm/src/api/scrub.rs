//! The reason of an erasure is an administrator's free text, kept on the audit record and
//! published in `CustomerErased` on the customers topic (which cannot be erased per person):
//! it must not name the person it erases. [`redact`] replaces, before anything is stored or
//! published, every occurrence of the family's identities (and an email's local part, a
//! phone's digits however they are spaced), the family's display names (whole, and each
//! word of three letters or more as a whole word, any case), any email address, and any
//! run of nine or more digits (a phone number written another way) with `[redacted]`.
//! A reference such as `ticket 4411` or `DSR-2026-118` stays. The retention sweeper clears
//! the reasons of erasures older than the tenant's `dataRetentionDays` as well
//! (`crate::retention`), so what redaction cannot recognise (a name the profile never had)
//! is not kept longer than the contract allows.

use centralita_platform::identity::Kind;

use crate::store::View;

const MARK: &str = "[redacted]";
/// Shortest digit run taken for a phone number.
const PHONE_DIGITS: usize = 9;

/// `reason` with what could identify the family of `view` (or anyone: emails, phone-like
/// digit runs) replaced by `[redacted]`.
pub(super) fn redact(reason: &str, view: &View) -> String {
    let mut needles: Vec<(String, bool)> = Vec::new(); // (lowercase text, whole word only)
    for c in &view.family {
        let name = c.display_name.trim();
        if !name.is_empty() {
            needles.push((lower(name), false));
            for word in name.split(|ch: char| !ch.is_alphanumeric()).filter(|w| w.chars().count() >= 3) {
                needles.push((lower(word), true));
            }
        }
    }
    for i in &view.identities {
        needles.push((lower(&i.value), false));
        if i.kind == Kind::Email {
            if let Some((local, _)) = i.value.split_once('@').filter(|(l, _)| l.chars().count() >= 3) {
                needles.push((lower(local), false));
            }
        }
    }
    redact_with(reason, &needles)
}

fn lower(s: &str) -> String {
    s.chars().map(fold).collect()
}

/// One char to one char (so positions stay aligned): its first lowercase char.
fn fold(c: char) -> char {
    c.to_lowercase().next().unwrap_or(c)
}

fn redact_with(reason: &str, needles: &[(String, bool)]) -> String {
    let chars: Vec<char> = reason.chars().collect();
    let folded: Vec<char> = chars.iter().copied().map(fold).collect();
    let mut hide = vec![false; chars.len()];
    for (needle, whole_word) in needles {
        let n: Vec<char> = needle.chars().collect();
        if n.is_empty() || n.len() > folded.len() {
            continue;
        }
        for start in 0..=folded.len() - n.len() {
            if folded[start..start + n.len()] != n[..] {
                continue;
            }
            let end = start + n.len();
            let bounded = (start == 0 || !folded[start - 1].is_alphanumeric())
                && (end == folded.len() || !folded[end].is_alphanumeric());
            if !whole_word || bounded {
                hide[start..end].iter_mut().for_each(|h| *h = true);
            }
        }
    }
    // Any email address: the whole whitespace-separated token holding an `@`.
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && !chars[i].is_whitespace() {
            i += 1;
        }
        if chars[start..i].contains(&'@') {
            hide[start..i].iter_mut().for_each(|h| *h = true);
        }
    }
    // Phone-like digit runs: digits with spaces, dashes, dots, slashes or brackets between.
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = if i > 0 && matches!(chars[i - 1], '+' | '(') { i - 1 } else { i };
        let (mut end, mut digits, mut j) = (i, 0, i);
        while j < chars.len() {
            if chars[j].is_ascii_digit() {
                digits += 1;
                end = j + 1;
            } else if !matches!(chars[j], ' ' | '-' | '.' | '/' | '(' | ')') {
                break;
            }
            j += 1;
        }
        if digits >= PHONE_DIGITS {
            hide[start..end].iter_mut().for_each(|h| *h = true);
        }
        i = end.max(i + 1);
    }
    let mut out = String::with_capacity(reason.len());
    let mut k = 0;
    while k < chars.len() {
        if hide[k] {
            out.push_str(MARK);
            while k < chars.len() && hide[k] {
                k += 1;
            }
        } else {
            out.push(chars[k]);
            k += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use centralita_platform::identity::Identity;
    use chrono::Utc;

    use super::*;
    use crate::store::CustomerRow;

    fn view(names: &[&str], ids: &[(Kind, &str)]) -> View {
        let row = |name: &str| CustomerRow {
            id: "c".into(),
            display_name: name.into(),
            preferred_language: String::new(),
            value_tier: 0,
            attributes: BTreeMap::new(),
            tags: Vec::new(),
            do_not_contact: false,
            do_not_contact_reason: String::new(),
            merged_into: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        };
        let family: Vec<CustomerRow> = names.iter().map(|n| row(n)).collect();
        View {
            root: family.first().cloned().unwrap_or_else(|| row("")),
            family,
            identities: ids.iter().map(|(kind, value)| Identity { kind: *kind, value: (*value).into() }).collect(),
        }
    }

    #[test]
    fn names_identities_emails_and_phone_numbers_are_redacted() {
        let v = view(&["Zoe Pérez-Ortiz"], &[(Kind::Phone, "+34911000111"), (Kind::Email, "zoe.po@example.com")]);
        assert_eq!(redact("Zoe Pérez-Ortiz asked, ticket 4411", &v), "[redacted] asked, ticket 4411");
        assert_eq!(redact("asked by ZOE on the phone", &v), "asked by [redacted] on the phone");
        assert_eq!(redact("per pérez's call", &v), "per [redacted]'s call");
        assert_eq!(redact("caller +34 911 000 111 asked", &v), "caller [redacted] asked");
        assert_eq!(redact("caller 911-000-111 asked", &v), "caller [redacted] asked");
        assert_eq!(redact("mail from zoe.po@example.com", &v), "mail from [redacted]");
        assert_eq!(redact("mail from someone@else.org today", &v), "mail from [redacted] today");
        assert_eq!(redact("login zoe.po on the portal", &v), "login [redacted] on the portal");
    }

    #[test]
    fn references_and_other_words_stay() {
        let v = view(&["Ana Li"], &[(Kind::Phone, "+34911000222")]);
        assert_eq!(redact("GDPR art. 17, ticket 4411", &v), "GDPR art. 17, ticket 4411");
        assert_eq!(redact("DSR-2026-118: banana", &v), "DSR-2026-118: banana", "a name word only as a whole word");
        assert_eq!(redact("case 12345678", &v), "case 12345678", "eight digits are a reference");
        assert_eq!(redact("", &v), "");
        assert_eq!(redact("Ana Li", &view(&[], &[])), "Ana Li", "nothing known, nothing phone-like");
    }
}

//! Validation of requests: names, texts, codes, identities and channels, each failure a
//! field violation (all of a request's violations are returned together, see [`done`]).

use std::collections::BTreeMap;

use centralita_platform::error::{Error, FieldViolation};
use centralita_platform::identity::{self, Identity, MAX_IDENTITIES};
use centralita_proto::crm::v1 as pb;
use centralita_proto::tenancy::v1::Channel;

const MAX_ATTRIBUTES: usize = 50;
const MAX_TAGS: usize = 50;

/// A customer id from `customers/{id}`.
pub(super) fn customer_id(name: &str, field: &str) -> Result<String, Error> {
    match name.strip_prefix("customers/") {
        Some(id) if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) => {
            Ok(id.to_owned())
        }
        _ => Err(Error::invalid(field, "must be `customers/{id}`")),
    }
}

pub(super) fn not_found(name: &str) -> Error {
    Error::NotFound(name.to_owned())
}

pub(super) fn text(v: &mut Vec<FieldViolation>, field: &str, s: &str, min: usize, max: usize) {
    let n = s.chars().count();
    if n < min || n > max {
        let what = if min == 0 { format!("at most {max} characters") } else { format!("{min} to {max} characters") };
        v.push(FieldViolation::new(field, format!("must be {what} (is {n})")));
    }
}

pub(super) fn is_code(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

pub(super) fn done(v: Vec<FieldViolation>) -> Result<(), Error> {
    if v.is_empty() {
        Ok(())
    } else {
        Err(Error::InvalidArgument(v))
    }
}

pub(super) fn identities(raw: &[pb::Identity], cc: &str, field: &str, v: &mut Vec<FieldViolation>) -> Vec<Identity> {
    if raw.len() > MAX_IDENTITIES {
        v.push(FieldViolation::new(field, format!("at most {MAX_IDENTITIES}")));
        return Vec::new();
    }
    if let Err(e) = identity::country_code(cc) {
        v.push(FieldViolation::new("default_country_code", e));
        return Vec::new();
    }
    let mut out = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        match Identity::parse(r, cc) {
            Ok(id) if !out.contains(&id) => out.push(id),
            Ok(_) => {}
            Err(e) => v.push(FieldViolation::new(format!("{field}[{i}]"), e)),
        }
    }
    out
}

pub(super) fn channel_code(channel: i32, field: &str, v: &mut Vec<FieldViolation>) -> i16 {
    match Channel::try_from(channel) {
        Ok(Channel::Unspecified) | Err(_) => {
            v.push(FieldViolation::new(field, "is required (voice, chat, sms, email, social, task)"));
            0
        }
        Ok(c) => c as i16,
    }
}

pub(super) fn check_attributes(a: &BTreeMap<String, String>, v: &mut Vec<FieldViolation>) {
    if a.len() > MAX_ATTRIBUTES {
        v.push(FieldViolation::new("customer.attributes", format!("at most {MAX_ATTRIBUTES}")));
    }
    for (k, val) in a {
        if k.is_empty() || k.len() > 64 || val.len() > 1024 {
            v.push(FieldViolation::new(
                format!("customer.attributes[{k}]"),
                "keys must be 1-64 bytes, values at most 1024",
            ));
        }
    }
}

pub(super) fn check_tags(tags: &[String], v: &mut Vec<FieldViolation>) {
    if tags.len() > MAX_TAGS {
        v.push(FieldViolation::new("customer.tags", format!("at most {MAX_TAGS}")));
    }
    for (i, t) in tags.iter().enumerate() {
        if !is_code(t, 64) {
            v.push(FieldViolation::new(format!("customer.tags[{i}]"), "must be 1-64 of a-z, 0-9, - and _"));
        }
    }
}

pub(super) fn check_language(l: &str, field: &str, v: &mut Vec<FieldViolation>) {
    let tag = (2..=8).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_lowercase());
    if !l.is_empty() && !tag {
        v.push(FieldViolation::new(field, "must be a BCP 47 primary language tag such as `en`"));
    }
}

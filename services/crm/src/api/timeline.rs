//! The timeline of a customer's family (interactions, notes, answers, consents), newest
//! first, paged with opaque tokens.
//!
//! A page token names the last entry of the page before it by its sort key (time, kind,
//! id), so entries written while a caller pages (new ones are the newest, at the front)
//! neither repeat nor push others out of the pages still to come. The token is hex of a
//! small versioned record: callers cannot read or build one, and its form can change
//! behind a new version. It also carries a fingerprint of the `customer` it pages through:
//! a token of another listing is refused (AIP-158). It is not secret: a crafted token only
//! moves the cursor within a listing the caller may read anyway.

use centralita_platform::error::Error;
use centralita_platform::tenant::timestamp;
use centralita_proto::crm::v1 as pb;
use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;

use super::wire::{answer_pb, consent_pb, interaction_pb, note_pb};
use crate::store;

/// Where an entry sorts: its time (microseconds, the stored precision), its kind, its id.
/// The timeline is in descending order of this key; ids are unique within a kind.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Key {
    at_micros: i64,
    kind: u8,
    id: String,
}

impl Key {
    fn new(at: DateTime<Utc>, kind: u8, id: &str) -> Self {
        Key { at_micros: at.timestamp_micros(), kind, id: id.to_owned() }
    }
}

/// One timeline entry with its sort key.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    key: Key,
    at: DateTime<Utc>,
    entry: pb::timeline_entry::Entry,
}

/// Every entry of the family `ids`, newest first.
pub(super) async fn entries(tx: &Transaction<'_>, tenant: &str, ids: &[String]) -> Result<Vec<Entry>, Error> {
    use pb::timeline_entry::Entry as E;
    let mut out = Vec::new();
    let mut push = |at: DateTime<Utc>, kind: u8, id: &str, entry: E| {
        out.push(Entry { key: Key::new(at, kind, id), at, entry });
    };
    for i in store::interactions(tx, tenant, ids, i64::MAX).await? {
        push(i.created_at, 0, &i.contact_id, E::Interaction(interaction_pb(tenant, &i)));
    }
    for n in store::notes(tx, tenant, ids, i64::MAX).await? {
        push(n.created_at, 1, &n.id, E::Note(note_pb(&n)));
    }
    for a in store::answers(tx, tenant, ids).await? {
        push(a.asked_at, 2, &a.id, E::Answer(answer_pb(&a)));
    }
    for c in store::consents(tx, tenant, ids).await? {
        push(c.recorded_at, 3, &c.id, E::Consent(consent_pb(&c)));
    }
    out.sort_by(|a, b| b.key.cmp(&a.key));
    Ok(out)
}

/// The page of up to `size` entries after `after` (from the start without one) and the
/// key to continue after, if any entry is left.
pub(super) fn page(entries: Vec<Entry>, after: Option<&Key>, size: usize) -> (Vec<pb::TimelineEntry>, Option<Key>) {
    let mut rest = entries.into_iter().filter(|e| after.is_none_or(|a| e.key < *a)).peekable();
    let mut page = Vec::new();
    let mut last = None;
    for e in rest.by_ref().take(size) {
        last = Some(e.key);
        page.push(pb::TimelineEntry { time: Some(timestamp(e.at)), entry: Some(e.entry) });
    }
    let next = if rest.peek().is_some() { last } else { None };
    (page, next)
}

/// The first byte of every token: the layout of what follows.
const VERSION: u8 = 1;
/// Version, fingerprint, time, kind.
const FIXED: usize = 1 + 8 + 8 + 1;
/// Ids are 32 characters today; anything much longer did not come from here.
const MAX_ID: usize = 128;

/// A stable fingerprint of the listing a token belongs to (FNV-1a, 64 bits: a check that
/// the token is used with the request it was made for, not a security measure).
fn fingerprint(customer: &str) -> u64 {
    customer.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// The token of the page after `after` in the timeline of `customer` (as requested).
pub(super) fn token(customer: &str, after: &Key) -> String {
    let mut bytes = Vec::with_capacity(FIXED + after.id.len());
    bytes.push(VERSION);
    bytes.extend_from_slice(&fingerprint(customer).to_be_bytes());
    bytes.extend_from_slice(&after.at_micros.to_be_bytes());
    bytes.push(after.kind);
    bytes.extend_from_slice(after.id.as_bytes());
    centralita_platform::page::encode(&bytes)
}

/// Where the page of `token` starts in the timeline of `customer`: `None` for the first
/// page; INVALID_ARGUMENT on `page_token` for a token this API did not return for it.
pub(super) fn after(customer: &str, token: &str) -> Result<Option<Key>, Error> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || Error::invalid("page_token", "is not a token this API returned");
    let bytes = centralita_platform::page::decode(token, FIXED + MAX_ID)?;
    if bytes.len() <= FIXED || bytes[0] != VERSION {
        return Err(bad());
    }
    let word = |at: usize| bytes.get(at..at + 8).and_then(|w| <[u8; 8]>::try_from(w).ok()).ok_or_else(bad);
    if u64::from_be_bytes(word(1)?) != fingerprint(customer) {
        return Err(Error::invalid("page_token", "belongs to another listing: page with the same `customer`"));
    }
    let at_micros = i64::from_be_bytes(word(9)?);
    let kind = bytes[17];
    let id = std::str::from_utf8(&bytes[FIXED..]).map_err(|_| bad())?;
    if kind > 3 {
        return Err(bad());
    }
    Ok(Some(Key { at_micros, kind, id: id.to_owned() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(secs: i64, kind: u8, id: &str) -> Entry {
        let at = DateTime::from_timestamp(secs, 0).unwrap_or_default();
        let entry = pb::timeline_entry::Entry::Note(pb::Note { name: id.into(), ..Default::default() });
        Entry { key: Key::new(at, kind, id), at, entry }
    }

    fn names(page: &[pb::TimelineEntry]) -> Vec<String> {
        page.iter()
            .map(|e| match &e.entry {
                Some(pb::timeline_entry::Entry::Note(n)) => n.name.clone(),
                _ => String::new(),
            })
            .collect()
    }

    #[test]
    fn tokens_round_trip_and_are_opaque() {
        let key = Key { at_micros: 1_790_000_000_123_456, kind: 2, id: "0192f0c8a3b47c1e9d2a6b5f4e3d2c1b".into() };
        let t = token("customers/abc", &key);
        assert!(t.bytes().all(|b| b.is_ascii_hexdigit()), "{t}");
        assert!(!t.contains(&key.id) && !t.contains("1790000000123456"), "{t}");
        assert_eq!(after("customers/abc", &t).unwrap(), Some(key));
        assert_eq!(after("customers/abc", "").unwrap(), None);
    }

    #[test]
    fn a_malformed_token_or_one_of_another_listing_is_an_invalid_page_token() {
        let key = Key { at_micros: 5, kind: 0, id: "c1".into() };
        let good = token("customers/abc", &key);
        let mut unknown_version = good.clone();
        unknown_version.replace_range(0..2, "02");
        let mut unknown_kind = good.clone();
        unknown_kind.replace_range(34..36, "09");
        let long = token("customers/abc", &Key { id: "x".repeat(MAX_ID + 1), ..key.clone() });
        for bad in [
            "o2",
            "5",
            "zz",
            "0",
            "01",
            &good[..good.len() - 1],
            &good[..FIXED * 2],
            &unknown_version,
            &unknown_kind,
            &long,
        ] {
            let err = after("customers/abc", bad).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidArgument(v) if v.len() == 1 && v[0].field == "page_token"),
                "{bad}: {err:?}"
            );
        }
        assert!(
            matches!(after("customers/other", &good), Err(Error::InvalidArgument(v)) if v[0].field == "page_token")
        );
    }

    #[test]
    fn pages_continue_after_the_last_entry_even_when_newer_ones_arrive() {
        let all = vec![entry(40, 1, "d"), entry(30, 0, "c"), entry(30, 3, "b2"), entry(20, 1, "b"), entry(10, 2, "a")];
        let mut sorted = all.clone();
        sorted.sort_by(|a, b| b.key.cmp(&a.key));
        let (first, next) = page(sorted.clone(), None, 2);
        assert_eq!(names(&first), ["d", "b2"]);
        let next = next.expect("more entries");
        // A newer entry arrives before the second page is asked for: it is not on it.
        let mut grown = sorted.clone();
        grown.insert(0, entry(50, 1, "e"));
        let (second, next) = page(grown.clone(), Some(&next), 2);
        assert_eq!(names(&second), ["c", "b"]);
        let (third, next) = page(grown, next.as_ref(), 2);
        assert_eq!((names(&third), next), (vec!["a".to_owned()], None));
        // An exact fit leaves no token.
        let (all_of_it, next) = page(sorted, None, 5);
        assert_eq!((all_of_it.len(), next), (5, None));
    }
}

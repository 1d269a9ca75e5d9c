//! The registrar's decisions on a REGISTER (RFC 3261 §10.3), pure: no SIP stack, no Redis,
//! no files. The adapter (`super`) reads the request into a [`Register`], asks
//! [`authenticate`] what the credentials are worth (looking the agent's HA1 up in between),
//! then [`binding`] what to do with the contact, and answers with [`Reply::status`].
//!
//! The order of the checks, each refusing at once:
//! 1. the Request-URI's domain (or, when it is no tenant's, the To URI's) is one tenant's
//!    registrar domain (`404` otherwise) and the To header names `sip:{agent}@{that
//!    domain}` (`404`); the tenant is active (`403`);
//! 2. credentials for that realm with a nonce of ours (`401` with a new nonce otherwise,
//!    `stale=true` for an expired one); the digest username is the To user (`403`);
//! 3. the response matches the agent's HA1 (`403`): an unknown agent, an agent without a
//!    digest and a wrong password get the same `403` after the same work, so answers tell
//!    nothing about which agents exist;
//! 4. the contact: `*` with `Expires: 0` removes the binding, `Expires: 0` (header or
//!    parameter) removes that contact's binding, no Contact asks for the binding, one
//!    contact is bound for its expiry, at least the minimum (`423` with `Min-Expires`) and
//!    at most the maximum (shortened to it). One phone per agent: a new contact replaces
//!    the previous one; more than one Contact in one REGISTER is refused (`400`).

use std::collections::HashMap;
use std::net::IpAddr;

use super::digest::{Credentials, CredentialsError};
use super::nonce::{Freshness, NonceKey};

/// Expiry when the REGISTER gives none (RFC 3261 §10.2.1.1 suggests one hour).
pub const DEFAULT_EXPIRES: u32 = 3600;

/// A REGISTER, as read from the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Register {
    /// The Request-URI's host (the registrar's domain).
    pub domain: String,
    /// The To URI: the address of record `sip:{user}@{host}`.
    pub to_user: Option<String>,
    pub to_host: String,
    pub contacts: Contacts,
    /// The `Expires` header.
    pub expires: Option<u32>,
    /// The `Authorization` header, if any, read (or why it could not be).
    pub credentials: Option<Result<Credentials, CredentialsError>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contacts {
    /// No Contact: a query of the current binding.
    None,
    /// `Contact: *`.
    Star,
    /// One contact URI and its `expires` parameter.
    One { uri: String, expires: Option<u32> },
    /// More than one Contact (one phone per agent: refused).
    Many,
}

/// What the registrar answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `401` with a challenge (`stale`: the nonce only expired).
    Challenge { stale: bool },
    /// `403`: wrong credentials, unknown agent, too many failures from the source.
    Forbidden,
    /// `403`: the tenant is suspended.
    TenantSuspended,
    /// `404`: not a registrar domain, or not an address of it.
    NotFound,
    /// `400` and why.
    BadRequest(&'static str),
    /// `423` with `Min-Expires`.
    IntervalTooBrief { min: u32 },
    /// `200`, with the binding now in place (its contact and seconds left), if any.
    Ok { binding: Option<(String, u32)> },
    /// `503`: the registrations store (or the nonce key) is out of reach.
    Unavailable,
}

impl Reply {
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            Reply::Challenge { .. } => (401, "Unauthorized"),
            Reply::Forbidden => (403, "Forbidden"),
            Reply::TenantSuspended => (403, "Forbidden - Tenant Suspended"),
            Reply::NotFound => (404, "Not Found"),
            Reply::BadRequest(_) => (400, "Bad Request"),
            Reply::IntervalTooBrief { .. } => (423, "Interval Too Brief"),
            Reply::Ok { .. } => (200, "OK"),
            Reply::Unavailable => (503, "Service Unavailable"),
        }
    }

    /// The bounded label of the registrations counter.
    pub fn outcome(&self) -> &'static str {
        match self {
            Reply::Challenge { .. } => "challenged",
            Reply::Forbidden => "forbidden",
            Reply::TenantSuspended => "suspended",
            Reply::NotFound => "not_found",
            Reply::BadRequest(_) => "bad_request",
            Reply::IntervalTooBrief { .. } => "too_brief",
            Reply::Ok { .. } => "ok",
            Reply::Unavailable => "unavailable",
        }
    }
}

/// Outcome labels of [`Reply::outcome`] plus the adapter's own (`removed`, `throttled`).
pub const OUTCOMES: [&str; 10] = [
    "challenged",
    "forbidden",
    "suspended",
    "not_found",
    "bad_request",
    "too_brief",
    "ok",
    "unavailable",
    "removed",
    "throttled",
];

/// Step 1's check of the address of record: the agent (To user) whose binding this is, for
/// a request to `domain` (the tenant's registrar domain).
pub fn address_of_record<'a>(r: &'a Register, domain: &str) -> Result<&'a str, Reply> {
    if !r.to_host.eq_ignore_ascii_case(domain) {
        return Err(Reply::NotFound);
    }
    r.to_user.as_deref().filter(|u| !u.is_empty()).ok_or(Reply::NotFound)
}

/// Step 2: the credentials to check against the agent's HA1, or the answer without them.
pub fn authenticate<'a>(
    r: &'a Register,
    agent: &str,
    realm: &str,
    key: &NonceKey,
    now: u64,
) -> Result<&'a Credentials, Reply> {
    let c = match &r.credentials {
        None => return Err(Reply::Challenge { stale: false }),
        Some(Err(_)) => return Err(Reply::BadRequest("unreadable Authorization header")),
        Some(Ok(c)) => c,
    };
    if c.realm != realm {
        // Credentials for another realm (another tenant's): challenge for ours.
        return Err(Reply::Challenge { stale: false });
    }
    match key.check(&c.nonce, realm, now) {
        Freshness::Fresh => {}
        Freshness::Stale => return Err(Reply::Challenge { stale: true }),
        Freshness::NotOurs => return Err(Reply::Challenge { stale: false }),
    }
    if c.username != agent {
        return Err(Reply::Forbidden);
    }
    Ok(c)
}

/// The registrar's bounds on a binding's expiry, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub min: u32,
    pub max: u32,
}

/// What to do with the binding once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Report the binding in place.
    Query,
    /// Bind the agent to `uri` for `expires` seconds (replacing any other).
    Set { uri: String, expires: u32 },
    /// Remove the binding: `Some(uri)` only if it is that contact's, `None` whatever it is.
    Remove { uri: Option<String> },
}

/// Step 4.
pub fn binding(r: &Register, bounds: Bounds) -> Result<Change, Reply> {
    match &r.contacts {
        Contacts::None => Ok(Change::Query),
        Contacts::Many => Err(Reply::BadRequest("one Contact per REGISTER (one phone per agent)")),
        Contacts::Star if r.expires == Some(0) => Ok(Change::Remove { uri: None }),
        Contacts::Star => Err(Reply::BadRequest("Contact: * needs Expires: 0")),
        Contacts::One { uri, expires } => match expires.or(r.expires).unwrap_or(DEFAULT_EXPIRES) {
            0 => Ok(Change::Remove { uri: Some(uri.clone()) }),
            e if e < bounds.min => Err(Reply::IntervalTooBrief { min: bounds.min }),
            e => Ok(Change::Set { uri: uri.clone(), expires: e.min(bounds.max) }),
        },
    }
}

/// Failed authentications per source address: past `limit` failures within `window`
/// seconds, the source's REGISTERs are refused (`403`) without being checked until the
/// window ends. Per replica (a source spread over replicas gets `limit` per replica).
#[derive(Debug)]
pub struct Throttle {
    limit: u32,
    window: u64,
    failures: HashMap<IpAddr, (u64, u32)>,
}

/// At most this many sources are remembered; older windows are dropped first.
const MAX_SOURCES: usize = 100_000;

impl Throttle {
    pub fn new(limit: u32, window: u64) -> Self {
        Self { limit, window, failures: HashMap::new() }
    }

    /// Whether `source` is refused at `now` (seconds).
    pub fn blocked(&self, source: IpAddr, now: u64) -> bool {
        self.failures
            .get(&source)
            .is_some_and(|(since, n)| *n >= self.limit && now.saturating_sub(*since) < self.window)
    }

    pub fn failed(&mut self, source: IpAddr, now: u64) {
        if self.failures.len() >= MAX_SOURCES {
            let window = self.window;
            self.failures.retain(|_, (since, _)| now.saturating_sub(*since) < window);
        }
        let entry = self.failures.entry(source).or_insert((now, 0));
        if now.saturating_sub(entry.0) >= self.window {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }

    pub fn succeeded(&mut self, source: IpAddr) {
        self.failures.remove(&source);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registrar::digest::Ha1;

    const NOW: u64 = 1_800_000_000;

    fn key() -> NonceKey {
        NonceKey::new([3; 32])
    }

    fn register(contacts: Contacts, expires: Option<u32>, credentials: Option<Credentials>) -> Register {
        Register {
            domain: "acme.example".into(),
            to_user: Some("alice".into()),
            to_host: "acme.example".into(),
            contacts,
            expires,
            credentials: credentials.map(Ok),
        }
    }

    fn credentials(username: &str, realm: &str, nonce: String) -> Credentials {
        Credentials {
            username: username.into(),
            realm: realm.into(),
            nonce,
            uri: "sip:acme.example".into(),
            response: String::new(),
            algorithm: Some("MD5".into()),
            qop: Some("auth".into()),
            nc: Some("00000001".into()),
            cnonce: Some("abc".into()),
            opaque: None,
        }
    }

    fn one(uri: &str) -> Contacts {
        Contacts::One { uri: uri.into(), expires: None }
    }

    #[test]
    fn the_address_of_record_is_an_agent_of_the_domain() {
        let r = register(Contacts::None, None, None);
        assert_eq!(address_of_record(&r, "acme.example"), Ok("alice"));
        assert_eq!(address_of_record(&r, "ACME.example"), Ok("alice"));
        assert_eq!(address_of_record(&r, "globex.example"), Err(Reply::NotFound));
        let anonymous = Register { to_user: None, ..r };
        assert_eq!(address_of_record(&anonymous, "acme.example"), Err(Reply::NotFound));
    }

    #[test]
    fn credentials_are_challenged_until_they_are_for_this_realm_with_our_fresh_nonce() {
        let realm = "acme.example";
        let nonce = key().issue(realm, NOW);
        let none = register(one("sip:alice@10.0.0.1"), None, None);
        assert_eq!(authenticate(&none, "alice", realm, &key(), NOW), Err(Reply::Challenge { stale: false }));
        let ours = register(one("sip:alice@10.0.0.1"), None, Some(credentials("alice", realm, nonce.clone())));
        assert_eq!(authenticate(&ours, "alice", realm, &key(), NOW).map(|c| c.username.as_str()), Ok("alice"));
        assert_eq!(
            authenticate(&ours, "alice", realm, &key(), NOW + 301),
            Err(Reply::Challenge { stale: true }),
            "an expired nonce is stale"
        );
        // Another tenant's realm, or a nonce issued for it: a challenge for this realm.
        let other_realm = register(one("sip:a@h"), None, Some(credentials("alice", "globex.example", nonce.clone())));
        assert_eq!(authenticate(&other_realm, "alice", realm, &key(), NOW), Err(Reply::Challenge { stale: false }));
        let other_nonce =
            register(one("sip:a@h"), None, Some(credentials("alice", realm, key().issue("globex.example", NOW))));
        assert_eq!(authenticate(&other_nonce, "alice", realm, &key(), NOW), Err(Reply::Challenge { stale: false }));
        // Bob's credentials for Alice's binding.
        let bob = register(one("sip:a@h"), None, Some(credentials("bob", realm, nonce)));
        assert_eq!(authenticate(&bob, "alice", realm, &key(), NOW), Err(Reply::Forbidden));
        let unreadable = Register { credentials: Some(Err(CredentialsError::NotDigest)), ..none };
        assert!(matches!(authenticate(&unreadable, "alice", realm, &key(), NOW), Err(Reply::BadRequest(_))));
    }

    #[test]
    fn a_response_made_with_another_tenants_password_does_not_verify() {
        // The same agent id and password registered with globex's realm: the HA1 differs.
        let realm = "acme.example";
        let mut c = credentials("alice", realm, key().issue(realm, NOW));
        let globex = Ha1::of("alice", "globex.example", "pw");
        c.response = crate::registrar::digest::expected_response(&globex, "REGISTER", &c);
        assert!(crate::registrar::digest::verify(&Ha1::of("alice", realm, "pw"), "REGISTER", &c).is_err());
    }

    #[test]
    fn bindings_follow_contacts_and_expiry_within_bounds() {
        let b = Bounds { min: 60, max: 3600 };
        let set = |uri: &str, expires| Ok(Change::Set { uri: uri.into(), expires });
        assert_eq!(binding(&register(one("sip:a@h"), None, None), b), set("sip:a@h", DEFAULT_EXPIRES));
        assert_eq!(binding(&register(one("sip:a@h"), Some(120), None), b), set("sip:a@h", 120));
        let param = Contacts::One { uri: "sip:a@h".into(), expires: Some(90) };
        assert_eq!(binding(&register(param, Some(600), None), b), set("sip:a@h", 90), "the parameter wins");
        assert_eq!(binding(&register(one("sip:a@h"), Some(86_400), None), b), set("sip:a@h", 3600), "shortened");
        assert_eq!(binding(&register(one("sip:a@h"), Some(59), None), b), Err(Reply::IntervalTooBrief { min: 60 }));
        assert_eq!(
            binding(&register(one("sip:a@h"), Some(0), None), b),
            Ok(Change::Remove { uri: Some("sip:a@h".into()) })
        );
        let zero = Contacts::One { uri: "sip:a@h".into(), expires: Some(0) };
        assert_eq!(binding(&register(zero, Some(600), None), b), Ok(Change::Remove { uri: Some("sip:a@h".into()) }));
        assert_eq!(binding(&register(Contacts::Star, Some(0), None), b), Ok(Change::Remove { uri: None }));
        assert!(matches!(binding(&register(Contacts::Star, None, None), b), Err(Reply::BadRequest(_))));
        assert!(matches!(binding(&register(Contacts::Star, Some(60), None), b), Err(Reply::BadRequest(_))));
        assert!(matches!(binding(&register(Contacts::Many, None, None), b), Err(Reply::BadRequest(_))));
        assert_eq!(binding(&register(Contacts::None, None, None), b), Ok(Change::Query));
    }

    #[test]
    fn every_reply_is_a_final_status_with_a_known_outcome() {
        for r in [
            Reply::Challenge { stale: true },
            Reply::Forbidden,
            Reply::TenantSuspended,
            Reply::NotFound,
            Reply::BadRequest("x"),
            Reply::IntervalTooBrief { min: 60 },
            Reply::Ok { binding: None },
            Reply::Unavailable,
        ] {
            let (code, reason) = r.status();
            assert!((200..600).contains(&code) && !reason.is_empty(), "{r:?}");
            assert!(OUTCOMES.contains(&r.outcome()), "{r:?}");
        }
    }

    #[test]
    fn a_source_failing_too_often_is_blocked_for_the_window() {
        let ip: IpAddr = "192.0.2.7".parse().expect("ip");
        let other: IpAddr = "192.0.2.8".parse().expect("ip");
        let mut t = Throttle::new(3, 60);
        for i in 0..3 {
            assert!(!t.blocked(ip, NOW + i));
            t.failed(ip, NOW + i);
        }
        assert!(t.blocked(ip, NOW + 3), "the limit reached");
        assert!(!t.blocked(other, NOW + 3), "per source");
        assert!(t.blocked(ip, NOW + 59));
        assert!(!t.blocked(ip, NOW + 60), "the window is over");
        t.failed(ip, NOW + 61);
        assert!(!t.blocked(ip, NOW + 61), "a new window counts from one");
        t.failed(ip, NOW + 62);
        t.succeeded(ip);
        t.failed(ip, NOW + 63);
        t.failed(ip, NOW + 63);
        assert!(!t.blocked(ip, NOW + 63), "a success starts over");
    }
}

//! The voice channel's numbers and trunks (`spec.voice`): the numbers (DIDs, E.164) a tenant
//! owns and the queue each leads to, the carrier trunks allowed to send its calls, by
//! source address and optionally digest credentials, the agents' phones at fixed SIP
//! addresses, and the registrar agents' phones register to (`registrar`: a SIP domain, also
//! the digest realm, and the Secret of the agents' HA1 digests).
//!
//! Credentials are named, never carried: a trunk names the Kubernetes Secret (keys
//! `username` and `password`) that media reads them from, the registrar the Secret of its
//! agents' HA1 digests, so the manifest, the tenants topic, events and logs only ever hold
//! the Secret's name.
//!
//! A number belongs to one tenant: a manifest file naming it twice is refused here, and
//! whoever looks a number up across the tenant set ([`owners_of`]) treats a number claimed
//! by two tenants as owned by none (two files applied separately can still both claim it).

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use centralita_proto::tenancy::v1 as pb;
use serde::{Deserialize, Serialize};

use super::Tenant;
use crate::error::FieldViolation;

/// At most this many numbers and trunks a tenant, and source blocks a trunk: bounds that
/// catch a pasted list by mistake rather than limit real tenants.
pub const MAX_NUMBERS: usize = 10_000;
pub const MAX_TRUNKS: usize = 100;
pub const MAX_TRUNK_SOURCES: usize = 100;
pub const MAX_PHONES: usize = 10_000;
/// The longest SIP URI of a phone.
pub const MAX_PHONE_URI: usize = 256;

// ---------------------------------------------------------------------------------------
// Manifest form (`spec.voice`).
// ---------------------------------------------------------------------------------------

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VoiceSpec {
    /// The numbers (DIDs) of the tenant, each leading to one of its queues.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub numbers: Vec<NumberSpec>,
    /// Carrier trunks allowed to send the tenant's calls.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trunks: Vec<TrunkSpec>,
    /// Agents' phones at fixed SIP addresses: media rings an agent's phone there when
    /// routing offers the agent a call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phones: Vec<PhoneSpec>,
    /// The registrar of the tenant's agents' phones: they register (digest authentication)
    /// to this SIP domain, and media rings an agent's registered phone when the agent has
    /// no fixed one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registrar: Option<RegistrarSpec>,
    /// What a caller waiting in a queue hears between the music: its position and the
    /// wait to expect, spoken in the tenant's language. Unset: music only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announcements: Option<AnnouncementsSpec>,
}

impl VoiceSpec {
    pub fn is_empty(&self) -> bool {
        self.numbers.is_empty()
            && self.trunks.is_empty()
            && self.phones.is_empty()
            && self.registrar.is_none()
            && self.announcements.is_none()
    }
}

/// The languages media has announcement prompts for.
pub const ANNOUNCEMENT_LANGUAGES: [&str; 2] = ["en", "es"];
/// Bounds of `everySeconds`.
pub const ANNOUNCE_EVERY_SECONDS: std::ops::RangeInclusive<u32> = 10..=600;

fn yes() -> bool {
    true
}

/// Queue announcements (`spec.voice.announcements`).
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AnnouncementsSpec {
    /// Seconds between two announcements to a waiting caller, 10-600 (the first comes a
    /// few seconds after the call is answered).
    #[cfg_attr(feature = "schema", schemars(range(min = 10, max = 600)))]
    pub every_seconds: u32,
    /// The language the prompts are spoken in: `en` or `es`.
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^(en|es)$")))]
    pub language: String,
    /// Announce the caller's position in the queue.
    #[serde(default = "yes")]
    pub position: bool,
    /// Announce the wait the caller can expect (unknown until the queue has a handle time
    /// and an agent: then left out).
    #[serde(default = "yes")]
    pub expected_wait: bool,
}

/// Agents' phones registering (`spec.voice.registrar`). The credentials are never in the
/// manifest: `credentialsSecret` names the Kubernetes Secret that holds, under each agent
/// id, the agent's HA1 digest `MD5(agentId:domain:password)` in hex (the password itself is
/// stored nowhere).
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegistrarSpec {
    /// The SIP domain the agents register to (`sip:{agentId}@{domain}`), also the digest
    /// realm: a lowercase DNS name, one tenant's.
    #[cfg_attr(
        feature = "schema",
        schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$"))
    )]
    pub domain: String,
    /// Name of the Secret in media's namespace with one key per agent id whose value is the
    /// agent's HA1 (32 hex digits).
    #[cfg_attr(
        feature = "schema",
        schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$"))
    )]
    pub credentials_secret: String,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PhoneSpec {
    /// The agent's id (`agents/{agentId}` in sessions), 1-40 of a-z, 0-9, - and _.
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[a-z0-9_-]{1,40}$")))]
    pub agent_id: String,
    /// `sip:[user@]host[:port]`: an IP address or DNS name, no parameters.
    #[cfg_attr(feature = "schema", schemars(length(min = 5, max = 256)))]
    pub uri: String,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NumberSpec {
    /// E.164: `+`, country code and number, up to 15 digits (`+34910000001`).
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^\+[1-9][0-9]{1,14}$")))]
    pub number: String,
    /// The queue (of `spec.routing.queues`) a call to this number joins.
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[a-z0-9_-]{1,40}$")))]
    pub queue: String,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrunkSpec {
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")))]
    pub name: String,
    /// IP addresses or CIDR blocks (`203.0.113.7`, `198.51.100.0/24`, `2001:db8::/32`) the
    /// trunk's calls come from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
    /// Digest credentials the trunk authenticates with, by Secret reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<TrunkCredentialsSpec>,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrunkCredentialsSpec {
    /// Name of a Secret in media's namespace with keys `username` and `password`.
    #[cfg_attr(
        feature = "schema",
        schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$"))
    )]
    pub secret_name: String,
}

// ---------------------------------------------------------------------------------------
// Domain form.
// ---------------------------------------------------------------------------------------

/// A number in E.164 form: `+` then 2 to 15 digits, the first not 0.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PhoneNumber(String);

impl PhoneNumber {
    pub fn parse(s: &str) -> Result<Self, String> {
        let digits = s.strip_prefix('+').unwrap_or("");
        let ok =
            (2..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(format!("`{s}` is not an E.164 number (`+`, country code and number, up to 15 digits)"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An IP block: an address and a prefix length, with no bits set past the prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpBlock {
    addr: IpAddr,
    prefix: u8,
}

impl IpBlock {
    /// `a.b.c.d`, `a.b.c.d/n`, an IPv6 address or `addr/n`; an address alone is a block of one.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| format!("`{s}` is not an IP address or CIDR block"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("`{s}`: the prefix length must be 0 to {max}")),
            },
        };
        let block = Self { addr, prefix };
        if block.network_bits(addr) != bits(addr) {
            return Err(format!("`{s}` has address bits set past the /{prefix} prefix"));
        }
        Ok(block)
    }

    fn network_bits(&self, ip: IpAddr) -> u128 {
        let width = if ip.is_ipv4() { 32 } else { 128 };
        let host = width - u32::from(self.prefix);
        let mask = if host >= 128 { 0 } else { (u128::MAX << host) & (u128::MAX >> (128 - width)) };
        bits(ip) & mask
    }

    /// Whether `ip` is in the block (an IPv4-mapped IPv6 address counts as its IPv4 one).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        ip.is_ipv4() == self.addr.is_ipv4() && self.network_bits(ip) == bits(self.addr)
    }
}

fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

impl fmt::Display for IpBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trunk {
    pub name: String,
    pub sources: Vec<IpBlock>,
    /// The Secret holding the trunk's digest credentials, if it has any.
    pub credentials_secret: Option<String>,
}

/// A tenant's numbers and trunks, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VoiceConfig {
    /// Each number and the queue it leads to.
    pub numbers: BTreeMap<PhoneNumber, String>,
    pub trunks: Vec<Trunk>,
    /// Each agent's phone, by agent id: a `sip:` URI.
    pub phones: BTreeMap<String, String>,
    /// Where the agents' phones register, if they do.
    pub registrar: Option<Registrar>,
    /// What a waiting caller hears announced, if anything (validated: the spec's form).
    pub announcements: Option<AnnouncementsSpec>,
}

/// A tenant's registrar, validated: the SIP domain (and digest realm) and the Secret of the
/// agents' HA1 digests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registrar {
    pub domain: String,
    pub credentials_secret: String,
}

/// A lowercase DNS name of labels of a-z, 0-9 and - (not at a label's ends), at most 253
/// characters, with at least one dot (a SIP domain, not a bare host name).
pub fn is_sip_domain(s: &str) -> bool {
    s.len() <= 253
        && s.contains('.')
        && s.split('.').all(|l| {
            (1..=63).contains(&l.len())
                && l.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// The tenants among `tenants` whose registrar serves `domain` (compared without case): one
/// for a domain in order, none for an unknown one, more than one when two tenants'
/// manifests both claim it (then it is treated as no one's).
pub fn registrar_owners<'a, T>(tenants: &'a [T], domain: &str) -> Vec<&'a T>
where
    T: std::borrow::Borrow<Tenant>,
{
    tenants
        .iter()
        .filter(|t| t.borrow().voice.registrar.as_ref().is_some_and(|r| r.domain.eq_ignore_ascii_case(domain)))
        .collect()
}

impl VoiceConfig {
    /// The SIP URI of the phone of agent `agent_id`, if it has a fixed one.
    pub fn phone_of(&self, agent_id: &str) -> Option<&str> {
        self.phones.get(agent_id).map(String::as_str)
    }

    /// Whether the tenant's calls can reach agent `agent_id`, whose phone is `registered`
    /// with the tenant's registrar or not. A tenant with a registrar reaches an agent through
    /// its fixed phone or its registered one. A tenant without one reaches every agent: its
    /// phones are fixed (an agent without one has an offer rejected at once by media) or its
    /// voice contacts come from an outside system through the API.
    pub fn reaches(&self, agent_id: &str, registered: bool) -> bool {
        self.registrar.is_none() || registered || self.phones.contains_key(agent_id)
    }

    /// The queue a call to `number` joins, if the tenant owns the number.
    pub fn queue_of(&self, number: &PhoneNumber) -> Option<&str> {
        self.numbers.get(number).map(String::as_str)
    }

    /// The first trunk whose sources include `ip`.
    pub fn trunk_from(&self, ip: IpAddr) -> Option<&Trunk> {
        self.trunks.iter().find(|t| t.sources.iter().any(|b| b.contains(ip)))
    }
}

/// The tenants among `tenants` that claim `number`: one for a number in order, none for an
/// unknown one, more than one when two tenants' manifests both claim it.
pub fn owners_of<'a, T>(tenants: &'a [T], number: &PhoneNumber) -> Vec<&'a T>
where
    T: std::ops::Deref<Target = Tenant>,
{
    tenants.iter().filter(|t| t.voice.numbers.contains_key(number)).collect()
}

// ---------------------------------------------------------------------------------------
// Validation.
// ---------------------------------------------------------------------------------------

fn is_trunk_name(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=63).contains(&b.len())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// `sip:[user@]host[:port]`: the user of unreserved characters (RFC 3261's, without
/// escapes), the host an IPv4 address, a bracketed IPv6 address or a DNS name, the port
/// 1-65535; no parameters, headers or spaces.
pub fn is_phone_uri(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("sip:") else { return false };
    if s.len() > MAX_PHONE_URI {
        return false;
    }
    let (user, host_port) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let user_ok = user.is_none_or(|u| {
        !u.is_empty() && u.bytes().all(|c| c.is_ascii_alphanumeric() || b"-_.!~*'()&=+$,;?/".contains(&c))
    });
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        let Some((ip, rest)) = v6.split_once(']') else { return false };
        if ip.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match rest {
            "" => (ip, None),
            _ => match rest.strip_prefix(':') {
                Some(p) => (ip, Some(p)),
                None => return false,
            },
        }
    } else {
        match host_port.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        }
    };
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0) && p.bytes().all(|c| c.is_ascii_digit()));
    let host_ok = host_port.starts_with('[')
        || host.parse::<std::net::Ipv4Addr>().is_ok()
        || (!host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            }));
    user_ok && host_ok && port_ok
}

fn is_agent_id(s: &str) -> bool {
    (1..=40).contains(&s.len())
        && s.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_')
}

pub(crate) fn is_secret_name(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=253).contains(&b.len())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'.')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

impl VoiceSpec {
    /// Validates into a [`VoiceConfig`]; `queues` are the tenant's queue ids and `voice`
    /// whether the voice channel is enabled. Violations are pushed with paths under
    /// `spec.voice`.
    pub fn validate<'q>(
        &self,
        queues: impl Fn(&str) -> bool + 'q,
        voice: bool,
        v: &mut Vec<FieldViolation>,
    ) -> VoiceConfig {
        let mut bad = |field: String, msg: String| v.push(FieldViolation::new(field, msg));
        let mut config = VoiceConfig::default();
        if !self.numbers.is_empty() && !voice {
            bad("spec.voice.numbers".into(), "needs the voice channel in spec.channels".into());
        }
        if self.numbers.len() > MAX_NUMBERS {
            bad("spec.voice.numbers".into(), format!("at most {MAX_NUMBERS} numbers"));
        }
        for (i, n) in self.numbers.iter().enumerate() {
            let path = format!("spec.voice.numbers[{i}]");
            match PhoneNumber::parse(&n.number) {
                Err(e) => bad(format!("{path}.number"), e),
                Ok(number) if config.numbers.contains_key(&number) => {
                    bad(format!("{path}.number"), format!("`{number}` is listed twice"))
                }
                Ok(number) => {
                    config.numbers.insert(number, n.queue.clone());
                }
            }
            if !queues(&n.queue) {
                bad(format!("{path}.queue"), format!("`{}` is not a queue of spec.routing.queues", n.queue));
            }
        }
        if self.trunks.len() > MAX_TRUNKS {
            bad("spec.voice.trunks".into(), format!("at most {MAX_TRUNKS} trunks"));
        }
        for (i, t) in self.trunks.iter().enumerate() {
            let path = format!("spec.voice.trunks[{i}]");
            if !is_trunk_name(&t.name) {
                bad(
                    format!("{path}.name"),
                    format!("`{}` must be 1-63 of a-z, 0-9 and -, not starting or ending with -", t.name),
                );
            } else if config.trunks.iter().any(|x| x.name == t.name) {
                bad(format!("{path}.name"), format!("trunk `{}` is listed twice", t.name));
            }
            if t.sources.is_empty() && t.credentials.is_none() {
                bad(path.clone(), "needs sources, credentials or both: otherwise no call is accepted from it".into());
            }
            if t.sources.len() > MAX_TRUNK_SOURCES {
                bad(format!("{path}.sources"), format!("at most {MAX_TRUNK_SOURCES} sources"));
            }
            let mut sources = Vec::new();
            for (j, s) in t.sources.iter().enumerate() {
                match IpBlock::parse(s) {
                    Ok(b) => sources.push(b),
                    Err(e) => bad(format!("{path}.sources[{j}]"), e),
                }
            }
            let credentials_secret = t.credentials.as_ref().map(|c| c.secret_name.clone());
            if let Some(name) = credentials_secret.as_deref().filter(|n| !is_secret_name(n)) {
                bad(
                    format!("{path}.credentials.secretName"),
                    format!("`{name}` is not a Kubernetes Secret name (lowercase a-z, 0-9, - and .)"),
                );
            }
            config.trunks.push(Trunk { name: t.name.clone(), sources, credentials_secret });
        }
        if !self.phones.is_empty() && !voice {
            bad("spec.voice.phones".into(), "needs the voice channel in spec.channels".into());
        }
        if self.phones.len() > MAX_PHONES {
            bad("spec.voice.phones".into(), format!("at most {MAX_PHONES} phones"));
        }
        for (i, p) in self.phones.iter().enumerate() {
            let path = format!("spec.voice.phones[{i}]");
            if !is_agent_id(&p.agent_id) {
                bad(format!("{path}.agentId"), format!("`{}` must be 1-40 of a-z, 0-9, - and _", p.agent_id));
            } else if config.phones.contains_key(&p.agent_id) {
                bad(format!("{path}.agentId"), format!("agent `{}` has a phone listed twice", p.agent_id));
            }
            if !is_phone_uri(&p.uri) {
                bad(
                    format!("{path}.uri"),
                    "must be `sip:[user@]host[:port]` (no parameters), at most 256 characters".into(),
                );
            } else if is_agent_id(&p.agent_id) {
                config.phones.entry(p.agent_id.clone()).or_insert_with(|| p.uri.clone());
            }
        }
        if let Some(r) = &self.registrar {
            let before = v.len();
            let mut bad = |field: &str, msg: String| v.push(FieldViolation::new(field, msg));
            if !voice {
                bad("spec.voice.registrar", "needs the voice channel in spec.channels".into());
            }
            if !is_sip_domain(&r.domain) {
                bad(
                    "spec.voice.registrar.domain",
                    format!(
                        "`{}` must be a lowercase DNS name with a dot (labels of a-z, 0-9 and -), at most 253 characters",
                        r.domain
                    ),
                );
            }
            if !is_secret_name(&r.credentials_secret) {
                bad(
                    "spec.voice.registrar.credentialsSecret",
                    format!("`{}` is not a Kubernetes Secret name (lowercase a-z, 0-9, - and .)", r.credentials_secret),
                );
            }
            if v.len() == before {
                config.registrar =
                    Some(Registrar { domain: r.domain.clone(), credentials_secret: r.credentials_secret.clone() });
            }
        }
        if let Some(a) = &self.announcements {
            let before = v.len();
            let mut bad = |field: &str, msg: String| v.push(FieldViolation::new(field, msg));
            if !voice {
                bad("spec.voice.announcements", "needs the voice channel in spec.channels".into());
            }
            if !ANNOUNCE_EVERY_SECONDS.contains(&a.every_seconds) {
                bad(
                    "spec.voice.announcements.everySeconds",
                    format!(
                        "{} is out of range: {}-{} seconds",
                        a.every_seconds,
                        ANNOUNCE_EVERY_SECONDS.start(),
                        ANNOUNCE_EVERY_SECONDS.end()
                    ),
                );
            }
            if !ANNOUNCEMENT_LANGUAGES.contains(&a.language.as_str()) {
                bad(
                    "spec.voice.announcements.language",
                    format!("`{}`: prompts exist in {}", a.language, ANNOUNCEMENT_LANGUAGES.join(", ")),
                );
            }
            if !a.position && !a.expected_wait {
                bad(
                    "spec.voice.announcements",
                    "announces nothing: set position, expectedWait or both (or leave announcements out)".into(),
                );
            }
            if v.len() == before {
                config.announcements = Some(a.clone());
            }
        }
        config
    }
}

impl From<&VoiceConfig> for VoiceSpec {
    fn from(c: &VoiceConfig) -> Self {
        VoiceSpec {
            numbers: c.numbers.iter().map(|(n, q)| NumberSpec { number: n.to_string(), queue: q.clone() }).collect(),
            trunks: c
                .trunks
                .iter()
                .map(|t| TrunkSpec {
                    name: t.name.clone(),
                    sources: t.sources.iter().map(ToString::to_string).collect(),
                    credentials: t.credentials_secret.as_ref().map(|s| TrunkCredentialsSpec { secret_name: s.clone() }),
                })
                .collect(),
            phones: c.phones.iter().map(|(a, u)| PhoneSpec { agent_id: a.clone(), uri: u.clone() }).collect(),
            registrar: c
                .registrar
                .as_ref()
                .map(|r| RegistrarSpec { domain: r.domain.clone(), credentials_secret: r.credentials_secret.clone() }),
            announcements: c.announcements.clone(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Wire form (`centralita.tenancy.v1.VoiceConfig`).
// ---------------------------------------------------------------------------------------

impl From<&VoiceConfig> for pb::VoiceConfig {
    fn from(c: &VoiceConfig) -> Self {
        let spec = VoiceSpec::from(c);
        pb::VoiceConfig {
            numbers: spec.numbers.into_iter().map(|n| pb::VoiceNumber { number: n.number, queue: n.queue }).collect(),
            trunks: spec
                .trunks
                .into_iter()
                .map(|t| pb::VoiceTrunk {
                    name: t.name,
                    sources: t.sources,
                    credentials_secret: t.credentials.map(|c| c.secret_name).unwrap_or_default(),
                })
                .collect(),
            phones: spec.phones.into_iter().map(|p| pb::VoicePhone { agent_id: p.agent_id, uri: p.uri }).collect(),
            registrar: spec
                .registrar
                .map(|r| pb::VoiceRegistrar { domain: r.domain, credentials_secret: r.credentials_secret }),
            announcements: spec.announcements.map(|a| pb::VoiceAnnouncements {
                every_seconds: a.every_seconds,
                language: a.language,
                position: a.position,
                expected_wait: a.expected_wait,
            }),
        }
    }
}

impl From<pb::VoiceConfig> for VoiceSpec {
    fn from(c: pb::VoiceConfig) -> Self {
        VoiceSpec {
            numbers: c.numbers.into_iter().map(|n| NumberSpec { number: n.number, queue: n.queue }).collect(),
            trunks: c
                .trunks
                .into_iter()
                .map(|t| TrunkSpec {
                    name: t.name,
                    sources: t.sources,
                    credentials: Some(t.credentials_secret)
                        .filter(|s| !s.is_empty())
                        .map(|secret_name| TrunkCredentialsSpec { secret_name }),
                })
                .collect(),
            phones: c.phones.into_iter().map(|p| PhoneSpec { agent_id: p.agent_id, uri: p.uri }).collect(),
            registrar: c
                .registrar
                .map(|r| RegistrarSpec { domain: r.domain, credentials_secret: r.credentials_secret }),
            announcements: c.announcements.map(|a| AnnouncementsSpec {
                every_seconds: a.every_seconds,
                language: a.language,
                position: a.position,
                expected_wait: a.expected_wait,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_with_a_registrar_reaches_agents_with_a_phone() {
        let mut v = VoiceConfig::default();
        assert!(v.reaches("ana", false), "no registrar: every agent (API-driven voice)");
        v.phones.insert("ana".into(), "sip:ana@192.0.2.1".into());
        assert!(v.reaches("bea", false), "fixed phones only: media rejects an offer to an agent without one");
        v.registrar = Some(Registrar { domain: "acme.example.com".into(), credentials_secret: "s".into() });
        assert!(v.reaches("ana", false), "a fixed phone");
        assert!(v.reaches("bea", true) && !v.reaches("bea", false), "a registered phone, or none");
    }

    #[test]
    fn e164_numbers() {
        for ok in ["+34910000001", "+12", "+123456789012345"] {
            assert!(PhoneNumber::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["34910000001", "+0349", "+1", "+1234567890123456", "+34 91", "+34-91", "", "+"] {
            assert!(PhoneNumber::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ip_blocks() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let b = IpBlock::parse("198.51.100.0/24").expect("block");
        assert!(b.contains(ip("198.51.100.7")) && !b.contains(ip("198.51.101.7")));
        assert!(b.contains(ip("::ffff:198.51.100.9")), "IPv4-mapped");
        let one = IpBlock::parse("127.0.0.1").expect("address");
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        assert_eq!(one.to_string(), "127.0.0.1/32");
        let all = IpBlock::parse("0.0.0.0/0").expect("everything");
        assert!(all.contains(ip("8.8.8.8")) && !all.contains(ip("2001:db8::1")));
        let v6 = IpBlock::parse("2001:db8::/32").expect("v6");
        assert!(v6.contains(ip("2001:db8:1::5")) && !v6.contains(ip("2001:db9::5")));
        assert!(IpBlock::parse("::/0").expect("all v6").contains(ip("2001:db9::5")));
        for bad in ["10.0.0.1/8", "10.0.0.0/33", "2001:db8::/129", "host.example", "10.0.0.0/", "10.0.0.0/x"] {
            assert!(IpBlock::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn phone_uris() {
        for ok in [
            "sip:alice@127.0.0.1:5080",
            "sip:127.0.0.1",
            "sip:bob@pbx.acme.example",
            "sip:+34600111222@[2001:db8::1]:5060",
            "sip:[::1]",
        ] {
            assert!(is_phone_uri(ok), "{ok}");
        }
        for bad in [
            "alice@127.0.0.1",
            "sips:alice@127.0.0.1",
            "sip:",
            "sip:@127.0.0.1",
            "sip:alice@127.0.0.1:0",
            "sip:alice@127.0.0.1:70000",
            "sip:alice@127.0.0.1:+80",
            "sip:alice@127.0.0.1;transport=tcp",
            "sip:alice@host..example",
            "sip:al ice@127.0.0.1",
            "sip:alice@[::1]x",
            "sip:alice@[nope]",
            "sip:alice@-bad.example",
        ] {
            assert!(!is_phone_uri(bad), "{bad}");
        }
        assert!(!is_phone_uri(&format!("sip:{}@127.0.0.1", "a".repeat(250))));
    }

    proptest::proptest! {
        /// Any text, and `sip:` followed by any text: accepted or refused, never a panic;
        /// what is accepted has no space, parameter or header and fits the bound.
        #[test]
        fn phone_uris_never_panic(tail in ".{0,300}", raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let uri = format!("sip:{tail}");
            if is_phone_uri(&uri) {
                proptest::prop_assert!(uri.len() <= MAX_PHONE_URI);
                proptest::prop_assert!(!uri.chars().any(|c| c.is_whitespace() || "<>\"".contains(c)), "{uri}");
                let host = uri.rsplit_once('@').map_or(&uri[4..], |(_, h)| h);
                proptest::prop_assert!(!host.contains([';', '?']), "parameters or headers in {uri}");
            }
            let _ = is_phone_uri(&String::from_utf8_lossy(&raw));
        }
    }

    #[test]
    fn the_registrar_is_validated_with_its_paths_and_round_trips() {
        let spec = VoiceSpec {
            registrar: Some(RegistrarSpec {
                domain: "acme.sip.example".into(),
                credentials_secret: "acme-phones".into(),
            }),
            ..VoiceSpec::default()
        };
        let mut v = Vec::new();
        let config = spec.validate(|_| true, true, &mut v);
        assert!(v.is_empty(), "{v:?}");
        assert_eq!(
            config.registrar,
            Some(Registrar { domain: "acme.sip.example".into(), credentials_secret: "acme-phones".into() })
        );
        assert_eq!(VoiceSpec::from(pb::VoiceConfig::from(&config)), spec, "manifest -> wire -> manifest");

        let bad = VoiceSpec {
            registrar: Some(RegistrarSpec { domain: "Acme.example".into(), credentials_secret: "Acme_Phones".into() }),
            ..VoiceSpec::default()
        };
        let mut v = Vec::new();
        let config = bad.validate(|_| true, false, &mut v);
        let fields: Vec<&str> = v.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(
            fields,
            ["spec.voice.registrar", "spec.voice.registrar.domain", "spec.voice.registrar.credentialsSecret"]
        );
        assert_eq!(config.registrar, None, "an invalid registrar is not kept");
        for ok in ["acme.example", "sip.acme-1.example", "a.b"] {
            assert!(is_sip_domain(ok), "{ok}");
        }
        for no in
            ["acme", "acme..example", "-acme.example", "acme-.example", "acme.example.", "ACME.example", "a b.c", ""]
        {
            assert!(!is_sip_domain(no), "{no}");
        }
        assert!(!is_sip_domain(&format!("{}.example", "a".repeat(64))));
    }

    #[test]
    fn announcements_are_validated_with_their_paths_and_round_trip() {
        let spec: VoiceSpec = serde_yaml::from_str("announcements: {everySeconds: 30, language: es}").expect("yaml");
        let a = spec.announcements.clone().expect("announcements");
        assert!(a.position && a.expected_wait, "both announced by default");
        let mut v = Vec::new();
        let config = spec.validate(|_| true, true, &mut v);
        assert!(v.is_empty(), "{v:?}");
        assert_eq!(config.announcements, Some(a));
        assert_eq!(VoiceSpec::from(pb::VoiceConfig::from(&config)), spec, "manifest -> wire -> manifest");

        let bad = VoiceSpec {
            announcements: Some(AnnouncementsSpec {
                every_seconds: 5,
                language: "fr".into(),
                position: false,
                expected_wait: false,
            }),
            ..VoiceSpec::default()
        };
        let mut v = Vec::new();
        let config = bad.validate(|_| true, false, &mut v);
        let found: Vec<(&str, &str)> = v.iter().map(|f| (f.field.as_str(), f.description.as_str())).collect();
        assert_eq!(
            found,
            [
                ("spec.voice.announcements", "needs the voice channel in spec.channels"),
                ("spec.voice.announcements.everySeconds", "5 is out of range: 10-600 seconds"),
                ("spec.voice.announcements.language", "`fr`: prompts exist in en, es"),
                (
                    "spec.voice.announcements",
                    "announces nothing: set position, expectedWait or both (or leave announcements out)"
                ),
            ]
        );
        assert_eq!(config.announcements, None, "invalid announcements are not kept");
        assert!(
            serde_yaml::from_str::<VoiceSpec>("announcements: {everySeconds: 30, language: es, loud: true}").is_err()
        );
    }

    #[test]
    fn phones_are_validated_with_their_paths_and_round_trip() {
        let phone = |a: &str, u: &str| PhoneSpec { agent_id: a.into(), uri: u.into() };
        let spec = VoiceSpec {
            phones: vec![phone("alice", "sip:alice@127.0.0.1:5080"), phone("bob", "sip:bob@10.0.0.2")],
            ..VoiceSpec::default()
        };
        let mut v = Vec::new();
        let config = spec.validate(|_| true, true, &mut v);
        assert!(v.is_empty(), "{v:?}");
        assert_eq!(config.phone_of("alice"), Some("sip:alice@127.0.0.1:5080"));
        assert_eq!(config.phone_of("carol"), None);
        assert_eq!(VoiceSpec::from(pb::VoiceConfig::from(&config)), spec, "manifest -> wire -> manifest");

        let bad = VoiceSpec {
            phones: vec![
                phone("Alice", "sip:a@127.0.0.1"),
                phone("bob", "tel:+1"),
                phone("bob", "sip:b@h"),
                phone("bob", "sip:c@h"),
            ],
            ..VoiceSpec::default()
        };
        let mut v = Vec::new();
        let config = bad.validate(|_| true, false, &mut v);
        let fields: Vec<&str> = v.iter().map(|f| f.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.voice.phones",
                "spec.voice.phones[0].agentId",
                "spec.voice.phones[1].uri",
                "spec.voice.phones[3].agentId"
            ]
        );
        assert_eq!(config.phone_of("bob"), Some("sip:b@h"));
    }
}

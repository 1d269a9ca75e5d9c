//! Requests into core values: every field checked, every offending field listed.

use std::collections::BTreeMap;

use centralita_platform::error::{Error, FieldViolation};
use centralita_platform::identity::Identity;
use centralita_platform::queue::is_code;
use centralita_platform::tenant::{Channel as TenantChannel, Tenant};
use centralita_proto::crm::v1 as crm;
use centralita_proto::sessions::v1 as pb;
use centralita_routing_contract::wire::channel_from_pb;
use centralita_routing_contract::{AgentId, Channel};

use crate::core::{Agent, AgentState, ChannelCapacity, CustomerTier, Direction, SkillRequirement};

const MAX_ATTRIBUTES: usize = 50;

/// Most customer identities one contact carries.
const MAX_CONTACT_IDENTITIES: usize = 10;

fn violations(v: Vec<FieldViolation>) -> Result<(), Error> {
    if v.is_empty() {
        Ok(())
    } else {
        Err(Error::InvalidArgument(v))
    }
}

/// What a new contact asks for, checked against its tenant `t`.
#[derive(Debug, Clone)]
pub struct NewContact {
    pub channel: Channel,
    pub direction: Direction,
    pub queue: String,
    pub priority: i32,
    pub tier: CustomerTier,
    pub language: String,
    pub required_skills: Vec<SkillRequirement>,
    pub attributes: BTreeMap<String, String>,
    pub preferred_agent: Option<AgentId>,
    pub customer_identities: Vec<Identity>,
}

pub fn new_contact(t: &Tenant, c: &pb::Contact) -> Result<NewContact, Error> {
    let tenant = &t.id;
    let mut v = Vec::new();
    let mut bad = |f: &str, m: String| v.push(FieldViolation::new(format!("contact.{f}"), m));
    let channel = match channel_from_pb(c.channel) {
        Ok(ch) => {
            let enabled = match ch {
                Channel::Voice => TenantChannel::Voice,
                Channel::Chat => TenantChannel::Chat,
                Channel::Sms => TenantChannel::Sms,
                Channel::Email => TenantChannel::Email,
                Channel::Social => TenantChannel::Social,
                Channel::Task => TenantChannel::Task,
            };
            if !t.channels.contains(&enabled) {
                bad("channel", format!("{ch:?} is not enabled for tenant {tenant}").to_lowercase());
            }
            Some(ch)
        }
        Err(e) => {
            bad("channel", e.to_string());
            None
        }
    };
    if !t.routing.queues.contains_key(&c.queue) {
        bad("queue", format!("`{}` is not a queue of tenant {tenant}", c.queue));
    }
    if !(-100..=100).contains(&c.priority) {
        bad("priority", "must be between -100 and 100".into());
    }
    if !c.language.is_empty() && !(2..=8).contains(&c.language.len()) {
        bad("language", "must be a BCP 47 primary tag such as `en`".into());
    }
    if c.required_skills.len() > 16 {
        bad("required_skills", "at most 16".into());
    }
    for (i, s) in c.required_skills.iter().enumerate() {
        if !is_code(&s.skill) {
            bad(&format!("required_skills[{i}].skill"), "must be 1-40 of a-z, 0-9, - and _".into());
        }
        if !(1..=5).contains(&s.min_proficiency) {
            bad(&format!("required_skills[{i}].min_proficiency"), "must be 1 to 5".into());
        }
    }
    if c.attributes.len() > MAX_ATTRIBUTES {
        bad("attributes", format!("at most {MAX_ATTRIBUTES}"));
    }
    if c.attributes.iter().any(|(k, v)| k.is_empty() || k.len() > 64 || v.len() > 1024) {
        bad("attributes", "keys must be 1-64 bytes and values at most 1024".into());
    }
    if !c.preferred_agent_id.is_empty() && !is_code(&c.preferred_agent_id) {
        bad("preferred_agent_id", "is not an agent id".into());
    }
    violations(v)?;
    let customer_identities = normal_identities(&c.customer_identities)?;
    Ok(NewContact {
        channel: channel.ok_or_else(|| Error::invalid("contact.channel", "is required"))?,
        direction: crate::wire::direction_from_pb(c.direction),
        queue: c.queue.clone(),
        priority: c.priority,
        tier: crate::wire::tier_from_pb(c.customer_tier),
        language: c.language.clone(),
        required_skills: crate::wire::skills_from_pb(&c.required_skills),
        attributes: c.attributes.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        preferred_agent: (!c.preferred_agent_id.is_empty()).then(|| AgentId(c.preferred_agent_id.clone())),
        customer_identities,
    })
}

/// The contact's customer identities in normal form (E.164 phones, lower-case emails, …),
/// duplicates dropped; a malformed one is refused with its field.
fn normal_identities(raw: &[crm::Identity]) -> Result<Vec<Identity>, Error> {
    if raw.len() > MAX_CONTACT_IDENTITIES {
        return Err(Error::invalid("contact.customer_identities", format!("at most {MAX_CONTACT_IDENTITIES}")));
    }
    let mut out: Vec<Identity> = Vec::with_capacity(raw.len());
    let mut v = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        match Identity::parse(r, "") {
            Ok(id) => {
                if !out.contains(&id) {
                    out.push(id);
                }
            }
            Err(e) => v.push(FieldViolation::new(format!("contact.customer_identities[{i}]"), e)),
        }
    }
    violations(v)?;
    Ok(out)
}

/// Longest end cause kept on a contact.
pub const MAX_END_CAUSE: usize = 64;

/// EndContact's `cause`: up to [`MAX_END_CAUSE`] printable ASCII characters (spaces
/// included), or empty.
pub fn end_cause(cause: &str) -> Result<&str, Error> {
    if cause.len() > MAX_END_CAUSE || !cause.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return Err(Error::InvalidArgument(vec![FieldViolation::new(
            "cause",
            format!("up to {MAX_END_CAUSE} printable ASCII characters"),
        )]));
    }
    Ok(cause)
}

/// The longest phone registration media may report (a day).
pub const MAX_PHONE_EXPIRY_MS: i64 = 86_400_000;

/// A reported phone registration's length: `None` (unregistered) for zero or unset,
/// milliseconds otherwise, at most [`MAX_PHONE_EXPIRY_MS`].
pub fn phone_expiry(expires: Option<&prost_types::Duration>) -> Result<Option<i64>, Error> {
    let Some(d) = expires else { return Ok(None) };
    let bad = || Error::invalid("expires", "must be 0 to 86400 s (0: unregistered)");
    if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 {
        return Err(bad());
    }
    let ms = d.seconds.checked_mul(1000).and_then(|s| s.checked_add(i64::from(d.nanos / 1_000_000))).ok_or_else(bad)?;
    if ms > MAX_PHONE_EXPIRY_MS {
        return Err(bad());
    }
    Ok((ms > 0).then_some(ms))
}

/// An admin's agent profile: the core's agent (state, contacts and phones left for the
/// core to keep; routing's profile is made from it, `core::agent::profile`).
pub fn agent(a: &pb::Agent) -> Result<Agent, Error> {
    let id = crate::wire::agent_id_from_name("agent.name", &a.name)
        .map_err(|_| Error::invalid("agent.name", "must be `agents/{agent}`, id 1-40 of a-z, 0-9, - and _"))?;
    let mut v = Vec::new();
    let mut bad = |f: String, m: &str| v.push(FieldViolation::new(format!("agent.{f}"), m));
    if a.queues.is_empty() || a.queues.len() > 200 {
        bad("queues".into(), "must assign 1 to 200 queues");
    }
    for (i, q) in a.queues.iter().enumerate() {
        if centralita_platform::tenant::TenantId::parse(&q.tenant).is_err() || !is_code(&q.queue) {
            bad(format!("queues[{i}]"), "needs a tenant id and a queue id");
        }
    }
    for (k, p) in &a.skills {
        if !is_code(k) || !(1..=5).contains(p) {
            bad(format!("skills[{k}]"), "skill ids are codes and proficiency is 1 to 5");
        }
    }
    if a.languages.iter().any(|l| !(2..=8).contains(&l.len())) {
        bad("languages".into(), "must be BCP 47 primary tags such as `en`");
    }
    let mut capacity = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (i, c) in a.capacity.iter().enumerate() {
        match channel_from_pb(c.channel) {
            Ok(ch) if (1..=20).contains(&c.max_contacts) => {
                if !seen.insert(ch) {
                    bad(format!("capacity[{i}].channel"), "appears twice");
                }
                capacity.push(ChannelCapacity { channel: ch, max_contacts: c.max_contacts, exclusive: c.exclusive });
            }
            Ok(_) => bad(format!("capacity[{i}].max_contacts"), "must be 1 to 20"),
            Err(_) => bad(format!("capacity[{i}].channel"), "is not a channel"),
        }
    }
    if seen.is_empty() {
        bad("capacity".into(), "must allow at least one channel");
    }
    violations(v)?;
    let agent = Agent {
        id,
        display_name: a.display_name.clone(),
        queues: a
            .queues
            .iter()
            .map(|q| centralita_routing_contract::QueueRef::new(q.tenant.clone(), q.queue.clone()))
            .collect(),
        skills: a.skills.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        languages: a.languages.clone(),
        capacity,
        max_total_contacts: a.max_total_contacts,
        state: AgentState::Offline,
        away_reason: String::new(),
        contacts: Vec::new(),
        state_time: None,
        agent_pool: String::new(),
        phones: Default::default(),
    };
    Ok(agent)
}

#[cfg(test)]
mod end_cause_tests {
    #[test]
    fn an_end_cause_is_short_printable_ascii() {
        assert_eq!(super::end_cause("").ok(), Some(""));
        assert_eq!(super::end_cause("media lost the call").ok(), Some("media lost the call"));
        assert!(super::end_cause(&"x".repeat(super::MAX_END_CAUSE)).is_ok());
        for bad in ["x".repeat(super::MAX_END_CAUSE + 1), "line\nbreak".into(), "caf\u{e9}".into(), "\u{0}".into()] {
            assert!(super::end_cause(&bad).is_err(), "{bad:?}");
        }
    }
}

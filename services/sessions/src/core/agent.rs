//! One named function per command or input on an agent: sign-in, state changes, sign-out,
//! the admin's upsert, the two ways the platform makes an agent away (no answer to an
//! offer, no event stream for the presence grace), and its phones coming and going.

use std::collections::BTreeSet;

use centralita_platform::queue::{DEFAULT_AGENT_POOL, DISCONNECTED, NOT_RESPONDING, SIGNED_IN};
use centralita_platform::tenant::TenantId;
use centralita_routing_contract::{AgentProfile, CapacityProfile, Input};

use super::effects::{AgentEventKind, Change, Effect, Notice, Timer};
use super::model::{Agent, AgentState, ContactRef, Millis};
use super::refusal::Refusal;

/// Whether a tenant's calls reach an agent: `(tenant, agent, registered)`, where
/// `registered` says whether the agent's phone is registered with the tenant now (the
/// adapter reads the tenant's voice settings, `VoiceConfig::reaches`).
pub type Reach<'a> = &'a dyn Fn(&str, &str, bool) -> bool;

/// The tenants of the agent's queues whose calls cannot reach it at `now`.
pub fn phoneless(a: &Agent, now: Millis, reach: Reach<'_>) -> BTreeSet<String> {
    a.queues
        .iter()
        .map(|q| q.tenant.as_str())
        .filter(|t| !reach(t, &a.id.0, a.phones.get(*t).is_some_and(|until| *until > now)))
        .map(str::to_owned)
        .collect()
}

/// What routing knows of the agent at `now`: its assignments, skills and capacity (all
/// validated when written), and the tenants whose calls cannot reach it.
pub fn profile(a: &Agent, now: Millis, reach: Reach<'_>) -> AgentProfile {
    AgentProfile {
        id: a.id.clone(),
        queues: a.queues.iter().cloned().collect(),
        skills: a.skills.iter().map(|(k, v)| (k.clone(), u8::try_from(*v).unwrap_or(u8::MAX))).collect(),
        languages: a.languages.iter().cloned().collect(),
        capacity: CapacityProfile {
            limits: a.capacity.iter().map(|c| (c.channel, c.max_contacts)).collect(),
            exclusive: a.capacity.iter().filter(|c| c.exclusive).map(|c| c.channel).collect(),
            max_total: a.max_total_contacts,
        },
        phoneless_tenants: phoneless(a, now, reach),
    }
}

/// Media reports the agent's phone with `tenant`: registered until `until`, or gone
/// (`None`). Registrations already past their expiry are dropped. Routing hears the
/// agent's profile again when the tenant's calls start or stop reaching it (a refresh of a
/// live registration changes nothing for routing); a timer fires at the expiry.
pub fn phone(a: &Agent, tenant: &TenantId, until: Option<Millis>, now: Millis, reach: Reach<'_>) -> Change<Agent> {
    let was_live = a.phones.get(tenant.as_str()).is_some_and(|u| *u > now);
    let until = until.filter(|u| *u > now);
    let mut change = Change::new(a.clone());
    change.record.phones.retain(|_, u| *u > now);
    let timer = Timer::Phone { tenant: tenant.clone(), agent: a.id.clone() };
    match until {
        Some(until) => {
            change.record.phones.insert(tenant.to_string(), until);
            change.push(Effect::Schedule { timer, due: until });
        }
        None => {
            change.record.phones.remove(tenant.as_str());
            change.push(Effect::Cancel(timer));
        }
    }
    if was_live != until.is_some() {
        reprofile(&mut change, now, reach);
    }
    change
}

/// The registration of the agent's phone with `tenant` reached its expiry unrefreshed:
/// the phone is gone and routing stops offering the tenant's calls (unless a fixed phone
/// still reaches the agent). A registration refreshed meanwhile is left as it is.
pub fn phone_lapsed(a: &Agent, tenant: &TenantId, now: Millis, reach: Reach<'_>) -> Change<Agent> {
    let mut change = Change::new(a.clone());
    if change.record.phones.get(tenant.as_str()).is_none_or(|until| *until > now) {
        return change;
    }
    change.record.phones.retain(|_, u| *u > now);
    reprofile(&mut change, now, reach);
    change
}

/// The agent's profile sent to routing again, as it stands now (registrations past their
/// expiry dropped): at sign-in, so a change of a tenant's phone settings since the last
/// upsert or phone report reaches routing.
pub fn refresh_profile(a: &Agent, now: Millis, reach: Reach<'_>) -> Change<Agent> {
    let mut change = Change::new(a.clone());
    change.record.phones.retain(|_, u| *u > now);
    reprofile(&mut change, now, reach);
    change
}

fn reprofile(change: &mut Change<Agent>, now: Millis, reach: Reach<'_>) {
    let profile = profile(&change.record, now, reach);
    change.push(Effect::Route(Input::AgentUpserted(profile)));
    let agent = change.record.id.clone();
    change.push(Effect::Notify { agent, notice: Notice::Agent });
}

/// How long an agent stays signed out before it may change agent pool: an offer made just
/// before it signed out reaches its contact list through the outbox within that time, so
/// the agent cannot be free in a new pool while the old one still books it.
pub const POOL_MOVE_QUIET_MS: Millis = 10_000;

/// What an agent asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateCommand {
    /// Signs in, available or away (`signed_in`).
    SignIn {
        available: bool,
    },
    /// Changes state while signed in: available, or away with a reason.
    Set,
    SignOut,
}

fn announce(change: &mut Change<Agent>, kind: AgentEventKind) {
    change.push(Effect::AgentEvent(kind));
    let agent = change.record.id.clone();
    change.push(Effect::Notify { agent, notice: Notice::Agent });
}

/// Moves the agent to `state` (with `reason` when away); `reason_allowed` says whether a
/// reason is one of the agent's tenants' away reasons. Routing hears when the agent
/// becomes ready or stops being ready.
pub fn set_state(
    a: &Agent,
    command: StateCommand,
    state: AgentState,
    reason: &str,
    reason_allowed: impl Fn(&str) -> bool,
    now: Millis,
) -> Result<Change<Agent>, Refusal> {
    let (state, reason) = match command {
        StateCommand::SignIn { available: true } => (AgentState::Available, ""),
        StateCommand::SignIn { available: false } => (AgentState::Away, SIGNED_IN),
        StateCommand::SignOut => (AgentState::Offline, ""),
        StateCommand::Set => (state, reason),
    };
    if command == StateCommand::Set && a.state == AgentState::Offline {
        return Err(Refusal::NotSignedIn);
    }
    if state == AgentState::Offline && !a.contacts.is_empty() {
        return Err(Refusal::HoldsContacts);
    }
    if state == AgentState::Away
        && !centralita_platform::queue::BUILT_IN_AWAY_REASONS.contains(&reason)
        && !reason_allowed(reason)
    {
        return Err(Refusal::UnknownAwayReason(reason.to_owned()));
    }
    let was = a.state;
    let mut change = Change::new(a.clone());
    change.record.state = state;
    change.record.away_reason = if state == AgentState::Away { reason.to_owned() } else { String::new() };
    change.record.state_time = Some(now);
    let agent = a.id.clone();
    if state == AgentState::Available && was != AgentState::Available {
        change.push(Effect::Route(Input::AgentReady { agent }));
    } else if state != AgentState::Available && was == AgentState::Available {
        change.push(Effect::Route(Input::AgentNotReady { agent }));
    }
    let kind = match command {
        StateCommand::SignIn { .. } => AgentEventKind::SignedIn,
        StateCommand::Set => AgentEventKind::StateChanged,
        StateCommand::SignOut => AgentEventKind::SignedOut,
    };
    announce(&mut change, kind);
    Ok(change)
}

/// The agent did not answer an offer: if still available, it is made away (not
/// responding). Routing already knows (the declined offer said so).
pub fn not_responding(a: &Agent, now: Millis) -> Change<Agent> {
    make_away(a, NOT_RESPONDING, false, now)
}

/// No event stream of the agent refreshed its presence within the grace: if available,
/// it is made away (disconnected) and routing stops offering to it.
pub fn presence_lapsed(a: &Agent, now: Millis) -> Change<Agent> {
    make_away(a, DISCONNECTED, true, now)
}

fn make_away(a: &Agent, reason: &str, tell_routing: bool, now: Millis) -> Change<Agent> {
    let mut change = Change::new(a.clone());
    if a.state != AgentState::Available {
        return change;
    }
    change.record.state = AgentState::Away;
    change.record.away_reason = reason.to_owned();
    change.record.state_time = Some(now);
    if tell_routing {
        change.push(Effect::Route(Input::AgentNotReady { agent: a.id.clone() }));
    }
    announce(&mut change, AgentEventKind::StateChanged);
    change
}

/// The agent may change pool: signed out for [`POOL_MOVE_QUIET_MS`], holding no contacts.
pub fn movable(a: &Agent, now: Millis) -> bool {
    a.state == AgentState::Offline && a.contacts.is_empty() && now - a.state_time.unwrap_or(0) >= POOL_MOVE_QUIET_MS
}

/// An admin writes the agent's profile (`input`, validated); its queues are in agent pool
/// `pool`. The agent's state, contacts and phones are kept. A signed-in agent, one still
/// holding a contact or one signed out moments ago stays in its pool (a router may have it
/// booked); any other takes its queues' pool now.
pub fn upsert(
    current: Option<&Agent>,
    input: &Agent,
    pool: &str,
    now: Millis,
    reach: Reach<'_>,
) -> Result<Change<Agent>, Refusal> {
    let mut a = input.clone();
    match current {
        Some(cur) => {
            a.state = cur.state;
            a.away_reason.clone_from(&cur.away_reason);
            a.contacts.clone_from(&cur.contacts);
            a.state_time = cur.state_time;
            a.phones.clone_from(&cur.phones);
            a.agent_pool = if movable(cur, now) {
                pool.to_owned()
            } else if cur.agent_pool.is_empty() {
                // Signed in before pools were recorded: the default pool.
                DEFAULT_AGENT_POOL.to_owned()
            } else {
                cur.agent_pool.clone()
            };
        }
        None => {
            a.state = AgentState::Offline;
            a.away_reason.clear();
            a.contacts.clear();
            a.state_time = None;
            a.phones.clear();
            a.agent_pool = pool.to_owned();
        }
    }
    if a.agent_pool != pool {
        return Err(Refusal::PoolPinned {
            agent: a.id.clone(),
            current: a.agent_pool,
            wanted: pool.to_owned(),
            quiet_s: POOL_MOVE_QUIET_MS / 1000,
        });
    }
    let profile = profile(&a, now, reach);
    let mut change = Change::new(a);
    change.push(Effect::Route(Input::AgentUpserted(profile)));
    change.push(Effect::AgentEvent(AgentEventKind::Upserted));
    Ok(change)
}

/// Adds `contact` to the agent's list (at the end) or removes it.
pub fn list_contact(a: &Agent, contact: &ContactRef, add: bool) -> Agent {
    let mut a = a.clone();
    a.contacts.retain(|c| c != contact);
    if add {
        a.contacts.push(contact.clone());
    }
    a
}

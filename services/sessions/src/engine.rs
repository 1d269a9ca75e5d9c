//! What sessions does on every transition, whoever causes it (an RPC, a routing decision,
//! a timer): compare-and-set the contact (and agent) record, then publish the lifecycle
//! event, the routing input, and the agent-stream notification.

use std::sync::Arc;

use centralita_platform::bus::{Event, Producer, Topics};
use centralita_platform::error::Error;
use centralita_platform::registry::TenantRegistry;
use centralita_platform::tenant::TenantId;
use centralita_proto::sessions::v1::{self as pb, contact_event::Kind, ContactState};
use centralita_routing::core::{self as rc, Input};
use centralita_routing::wire;
use prost_types::Timestamp;
use tokio::sync::broadcast;

use crate::lifecycle::{self, Action};
use crate::store::{self, Store};

/// Key of the routing log records: the agent pool. One pool per installation today; every
/// queue whose agents may overlap must be in the same pool.
pub const POOL: &str = "pool-default";

/// A notification for the agent streams: (agent id, event).
pub type Notice = (String, pb::AgentStreamEvent);

#[derive(Clone)]
pub struct Engine {
    pub store: Store,
    pub producer: Arc<Producer>,
    pub registry: TenantRegistry,
    pub topics: Topics,
    pub notices: broadcast::Sender<Notice>,
    /// Redis pub/sub channel of agent notifications.
    pub redis_channel: String,
    /// Sorted set of timers (offer expiry, end of after-contact work).
    pub deadlines: String,
    /// Set of every agent id.
    pub agents_index: String,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub fn ts(ms: i64) -> Option<Timestamp> {
    Some(wire::millis_to_pb(ms))
}

pub fn contact_name(tenant: &str, id: &str) -> String {
    format!("tenants/{tenant}/contacts/{id}")
}

/// `tenants/{tenant}/contacts/{id}` into its parts.
pub fn parse_contact_name(name: &str) -> Result<(TenantId, String), Error> {
    let bad = || Error::invalid("name", "must be `tenants/{tenant}/contacts/{contact}`");
    let rest = name.strip_prefix("tenants/").ok_or_else(bad)?;
    let (tenant, id) = rest.split_once("/contacts/").ok_or_else(bad)?;
    let tenant = TenantId::parse(tenant).map_err(|_| bad())?;
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(bad());
    }
    Ok((tenant, id.to_owned()))
}

pub fn contact_id(c: &pb::Contact) -> &str {
    c.name.rsplit('/').next().unwrap_or_default()
}

fn ttl(c: &pb::Contact) -> i64 {
    let state = ContactState::try_from(c.state).unwrap_or(ContactState::Unspecified);
    if lifecycle::is_terminal(state) {
        store::CLOSED_TTL_MS
    } else {
        0
    }
}

impl Engine {
    pub fn input_topic(&self) -> String {
        centralita_routing::input_topic(&self.topics)
    }

    /// Applies `action` to the contact, with `edit` filling in the details, atomically.
    /// Returns the contact before and after.
    pub async fn transition(
        &self,
        tenant: &TenantId,
        id: &str,
        action: Action,
        mut edit: impl FnMut(&mut pb::Contact) -> Result<(), Error>,
    ) -> Result<(pb::Contact, pb::Contact), Error> {
        let key = store::contact_key(tenant, id);
        let (after, before) = self
            .store
            .update::<pb::Contact, pb::Contact>(
                &key,
                |current| {
                    let before = current.ok_or_else(|| Error::NotFound(contact_name(tenant.as_str(), id)))?;
                    let from = ContactState::try_from(before.state).unwrap_or(ContactState::Unspecified);
                    let to = lifecycle::next(from, action)?;
                    let mut after = before.clone();
                    after.state = to as i32;
                    edit(&mut after)?;
                    Ok((after, before))
                },
                ttl,
            )
            .await?;
        let state = ContactState::try_from(after.state).unwrap_or(ContactState::Unspecified);
        if lifecycle::is_terminal(state) {
            let mut conn = self.store.conn()?;
            let _: i64 = redis::AsyncCommands::zrem(&mut conn, store::open_index(tenant), id).await?;
        }
        Ok((before, after))
    }

    pub async fn publish_contact(
        &self,
        kind: Kind,
        before: &pb::Contact,
        after: &pb::Contact,
        agent: &str,
        notes: &str,
    ) -> Result<(), Error> {
        let tenant = TenantId::parse(&after.tenant).map_err(Error::internal)?;
        let event = pb::ContactEvent {
            kind: kind as i32,
            contact: Some(after.clone()),
            previous_state: before.state,
            agent_id: agent.to_owned(),
            notes: notes.to_owned(),
        };
        self.producer.publish(&self.topics.contacts(), contact_id(after), &Event::new(tenant, &event)).await?;
        Ok(())
    }

    pub async fn route(&self, tenant: &TenantId, input: &Input) -> Result<(), Error> {
        let event = Event::new(tenant.clone(), &wire::input_to_pb(input));
        self.producer.publish(&self.input_topic(), POOL, &event).await?;
        Ok(())
    }

    /// Tells the agent's stream (on whichever replica it is open) about a change.
    pub async fn notify(&self, agent: &str, event: pb::agent_stream_event::Event) -> Result<(), Error> {
        if agent.is_empty() {
            return Ok(());
        }
        let message = pb::AgentStreamEvent { event: Some(event) };
        let mut payload = agent.as_bytes().to_vec();
        payload.push(b'\n');
        payload.extend(prost::Message::encode_to_vec(&message));
        let mut conn = self.store.conn()?;
        let _: i64 = redis::AsyncCommands::publish(&mut conn, &self.redis_channel, payload).await?;
        Ok(())
    }

    /// Adds or removes a contact from an agent's list, atomically.
    pub async fn agent_contacts(&self, agent: &str, contact: &str, add: bool) -> Result<pb::Agent, Error> {
        let (a, ()) = self
            .store
            .update::<pb::Agent, ()>(
                &store::agent_key(agent),
                |current| {
                    let mut a = current.ok_or_else(|| Error::NotFound(format!("agents/{agent}")))?;
                    a.contacts.retain(|c| c != contact);
                    if add {
                        a.contacts.push(contact.to_owned());
                    }
                    Ok((a, ()))
                },
                |_| 0,
            )
            .await?;
        Ok(a)
    }

    /// The routing view of a queued contact: priority, aging, relaxation steps and the
    /// maximum wait from the tenant's queue configuration.
    pub fn queued(&self, c: &pb::Contact) -> Result<rc::QueuedContact, Error> {
        let tenant = TenantId::parse(&c.tenant).map_err(Error::internal)?;
        let t = self.registry.require_active(&tenant)?;
        let q = t.routing.queues.get(&c.queue).ok_or_else(|| {
            Error::invalid("contact.queue", format!("`{}` is not a queue of tenant {tenant}", c.queue))
        })?;
        let enqueued_at = c.enqueue_time.as_ref().map(wire::millis_from_pb).unwrap_or_else(now_ms);
        let vip = c.customer_tier == pb::CustomerTier::Vip as i32;
        let steps = q
            .steps
            .iter()
            .map(|s| {
                let mut requirements: Vec<rc::Requirement> = if s.drop_skills {
                    Vec::new()
                } else {
                    c.required_skills
                        .iter()
                        .map(|r| rc::Requirement::Skill {
                            name: r.skill.clone(),
                            min_proficiency: (r.min_proficiency as u8).saturating_sub(s.proficiency_drop).max(1),
                        })
                        .collect()
                };
                if !c.language.is_empty() && !s.drop_language {
                    requirements.push(rc::Requirement::Language(c.language.clone()));
                }
                rc::Step { after_ms: s.after.as_millis() as i64, requirements }
            })
            .collect();
        let preferred = (!c.preferred_agent_id.is_empty() && !q.preferred_agent_window.is_zero()).then(|| {
            (rc::AgentId(c.preferred_agent_id.clone()), enqueued_at + q.preferred_agent_window.as_millis() as i64)
        });
        Ok(rc::QueuedContact {
            id: rc::ContactId(contact_id(c).to_owned()),
            queue: rc::QueueRef::new(c.tenant.clone(), c.queue.clone()),
            channel: wire::channel_from_pb(c.channel).map_err(|e| Error::invalid("contact.channel", e))?,
            priority: i64::from(q.priority) + i64::from(c.priority) + if vip { i64::from(q.vip_boost) } else { 0 },
            aging_per_minute: i64::from(q.aging_per_minute),
            enqueued_at,
            steps,
            preferred,
            offer_timeout_ms: q.offer_timeout.as_millis() as i64,
            max_wait: q.max_wait.map(|m| rc::MaxWait {
                after_ms: m.as_millis() as i64,
                overflow_to: q.overflow_queue.as_ref().map(|o| rc::QueueRef::new(c.tenant.clone(), o.clone())),
            }),
        })
    }

    /// Releases the agent of a contact it held: routing frees the capacity, the agent's
    /// list and stream are updated.
    pub async fn release(
        &self,
        tenant: &TenantId,
        after: &pb::Contact,
        agent: &str,
        booked: bool,
    ) -> Result<(), Error> {
        let id = contact_id(after).to_owned();
        if booked {
            self.route(
                tenant,
                &Input::ContactReleased { contact: rc::ContactId(id.clone()), agent: rc::AgentId(agent.into()) },
            )
            .await?;
        }
        let a = self.agent_contacts(agent, &after.name, false).await?;
        self.notify(agent, pb::agent_stream_event::Event::Contact(after.clone())).await?;
        self.notify(agent, pb::agent_stream_event::Event::Agent(a)).await
    }

    /// Schedules (or cancels) a timer for a contact: an offer's expiry or the end of
    /// after-contact work. Members are `kind|tenant|contact|token`.
    pub async fn schedule(
        &self,
        kind: &str,
        tenant: &str,
        contact: &str,
        token: &str,
        at_ms: i64,
    ) -> Result<(), Error> {
        self.store.zadd(&self.deadlines, &format!("{kind}|{tenant}|{contact}|{token}"), at_ms).await
    }
}

//! What sessions does on every transition, whoever causes it (an RPC, a routing decision,
//! a timer): compare-and-set the contact (or agent) record together with its side effects
//! (lifecycle event, routing input, timers, the agent's list and stream), then carry the
//! effects out. The effects sit in the record's outbox, written by the same atomic script
//! as the record, until they are done: if the process dies in between, a sweeper on any
//! replica finishes them ([`Engine::sweep_outboxes`]). Effects are idempotent or deduped
//! downstream (events keep their id), so doing one twice is harmless.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use centralita_platform::bus::{Event, Producer, Topics};
use centralita_platform::error::Error;
use centralita_platform::queue::{DEFAULT_AGENT_POOL, NOT_RESPONDING};
use centralita_platform::registry::TenantRegistry;
pub use centralita_platform::tenant::contact_name;
use centralita_platform::tenant::{self, TenantId};
use centralita_proto::sessions::v1::{
    self as pb, agent_stream_event::Event as Notify, contact_event::Kind, outbox_effect::Effect as Fx, ContactState,
};
use centralita_routing::core::{self as rc, Input};
use centralita_routing::wire;
use prost::Message as _;
use prost_types::Timestamp;
use tokio::sync::broadcast;

use crate::lifecycle::{self, Action};
use crate::store::{self, Outbox, Store};

/// Key of the routing log records of an agent pool (`spec.routing.agentPool` of the
/// tenants in it; empty is the default pool). Every input about a contact goes to the pool
/// it was created in, every input about an agent to the pool it signed in to, so one
/// router sees all of a pool's bookings.
pub fn pool_key(pool: &str) -> String {
    format!("pool-{}", if pool.is_empty() { DEFAULT_AGENT_POOL } else { pool })
}

/// The agent streams open on this replica, one channel per agent: a notice wakes only the
/// streams of the agent it is for (one channel for all woke every stream for every notice,
/// which made each contact cost O(signed-in agents) in clones and wake-ups).
#[derive(Clone, Default)]
pub struct Notices {
    agents: Arc<Mutex<HashMap<String, broadcast::Sender<pb::AgentStreamEvent>>>>,
}

impl std::fmt::Debug for Notices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notices").field("agents", &self.len()).finish()
    }
}

/// Notices an agent stream may fall behind by before it is told to reconnect.
const NOTICE_BACKLOG: usize = 256;

impl Notices {
    fn agents(&self) -> std::sync::MutexGuard<'_, HashMap<String, broadcast::Sender<pb::AgentStreamEvent>>> {
        // The map holds no invariant a panicking holder could break.
        self.agents.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Receives every later notice for `agent`.
    pub fn subscribe(&self, agent: &str) -> broadcast::Receiver<pb::AgentStreamEvent> {
        self.agents().entry(agent.to_owned()).or_insert_with(|| broadcast::channel(NOTICE_BACKLOG).0).subscribe()
    }

    /// Hands `event` to the agent's open streams on this replica, if any.
    pub fn send(&self, agent: &str, event: pb::AgentStreamEvent) {
        let mut agents = self.agents();
        if let Some(tx) = agents.get(agent) {
            if tx.send(event).is_err() {
                // Every stream of the agent has ended.
                agents.remove(agent);
            }
        }
    }

    /// Agents with a channel (streams open, or ended since their last notice).
    pub fn len(&self) -> usize {
        self.agents().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Clone)]
pub struct Engine {
    pub store: Store,
    pub producer: Arc<Producer>,
    pub registry: TenantRegistry,
    pub topics: Topics,
    pub notices: Notices,
    /// Redis pub/sub channel of agent notifications.
    pub redis_channel: String,
    /// Sorted set of timers (offer expiry, end of after-contact work).
    pub deadlines: String,
    /// Set of every agent id.
    pub agents_index: String,
    /// Carry out a write's side effects in the background instead of before returning
    /// (the routing-decision consumer: its next decision need not wait for Kafka).
    pub detach_effects: bool,
    /// How long an agent whose event stream closed stays as it was before it is made away
    /// (`disconnected`); zero: never.
    pub presence_grace: std::time::Duration,
    /// Tenants' pinned agent pools, as read from Redis (they never change once pinned).
    pub pools: Arc<Mutex<HashMap<String, String>>>,
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

/// `tenants/{tenant}/contacts/{id}` into its parts (the request field is `name`).
pub fn parse_contact_name(name: &str) -> Result<(TenantId, String), Error> {
    tenant::parse_contact_name("name", name)
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

/// The side effects of one write, in the order they are carried out.
#[derive(Debug, Default)]
pub struct Effects(Vec<pb::OutboxEffect>);

impl Effects {
    fn push(&mut self, e: Fx) {
        self.0.push(pb::OutboxEffect { effect: Some(e) });
    }
    pub fn publish(&mut self, topic: String, key: &str, event: &Event) {
        self.push(Fx::Publish(pb::PublishEffect { topic, key: key.to_owned(), envelope: event.encode() }));
    }
    pub fn schedule(&mut self, member: String, due_unix_ms: i64) {
        self.push(Fx::Schedule(pb::TimerEffect { member, due_unix_ms }));
    }
    pub fn cancel(&mut self, member: String) {
        self.push(Fx::Cancel(pb::TimerEffect { member, due_unix_ms: 0 }));
    }
    pub fn notify(&mut self, agent: &str, event: Notify) {
        if !agent.is_empty() {
            let event = Some(pb::AgentStreamEvent { event: Some(event) });
            self.push(Fx::Notify(pb::NotifyEffect { agent_id: agent.to_owned(), event }));
        }
    }
    /// Adds or removes `contact` from the agent's list; with `notify`, tells the agent's
    /// stream about the contact and then the agent.
    pub fn agent_contact(&mut self, agent: &str, contact: &pb::Contact, add: bool, notify: bool) {
        self.push(Fx::AgentContact(pb::AgentContactEffect {
            agent_id: agent.to_owned(),
            contact_name: contact.name.clone(),
            add,
            notify: notify.then(|| contact.clone()),
        }));
    }
    /// A change to the other contact of a consult ([`crate::consult::apply_linked`]).
    pub fn linked(&mut self, effect: pb::LinkedContactEffect) {
        self.push(Fx::LinkedContact(effect));
    }
    pub fn not_responding(&mut self, agent: &str) {
        self.push(Fx::AgentNotResponding(pb::AgentNotRespondingEffect { agent_id: agent.to_owned() }));
    }
    fn close(&mut self, tenant: &TenantId, id: &str) {
        self.push(Fx::Close(pb::CloseEffect { tenant: tenant.to_string(), contact_id: id.to_owned() }));
    }
    fn encode(self) -> Vec<u8> {
        if self.0.is_empty() {
            Vec::new()
        } else {
            pb::OutboxEntry { effects: self.0 }.encode_to_vec()
        }
    }
}

/// Timer member: `kind|tenant|contact|token`.
pub fn timer(kind: &str, tenant: &TenantId, contact: &str, token: &str) -> String {
    format!("{kind}|{tenant}|{contact}|{token}")
}

/// Timer member of an agent's presence: due `presence_grace` after the last refresh by one
/// of its open event streams.
pub fn presence_timer(agent: &str) -> String {
    timer("presence", &TenantId::bpo(), agent, "-")
}

/// How long a record's effects may stay pending before the sweeper carries them out (the
/// writer normally does it within milliseconds).
const SWEEP_AFTER_MS: i64 = 1_000;

impl Engine {
    pub fn input_topic(&self) -> String {
        centralita_routing::input_topic(&self.topics)
    }

    /// Applies `action` to the contact, with `edit` filling in the details and `effects`
    /// giving the side effects of (before, after), atomically. Returns the contact before
    /// and after.
    pub async fn transition(
        &self,
        tenant: &TenantId,
        id: &str,
        action: Action,
        mut edit: impl FnMut(&mut pb::Contact) -> Result<(), Error>,
        mut effects: impl FnMut(&pb::Contact, &pb::Contact, &mut Effects) -> Result<(), Error>,
    ) -> Result<(pb::Contact, pb::Contact), Error> {
        let key = store::contact_key(tenant, id);
        let outbox = Outbox::contact(tenant, id);
        let (after, before) = self
            .store
            .update_with::<pb::Contact, pb::Contact>(
                &key,
                &outbox,
                |current| {
                    let before = current.ok_or_else(|| Error::NotFound(contact_name(tenant.as_str(), id)))?;
                    let from = ContactState::try_from(before.state).unwrap_or(ContactState::Unspecified);
                    let to = lifecycle::next(from, action)?;
                    let mut after = before.clone();
                    after.state = to as i32;
                    edit(&mut after)?;
                    let mut fx = Effects::default();
                    effects(&before, &after, &mut fx)?;
                    if lifecycle::is_terminal(to) {
                        fx.close(tenant, id);
                    }
                    Ok((after, before, fx.encode()))
                },
                ttl,
            )
            .await?;
        self.finish(&outbox).await;
        Ok((before, after))
    }

    /// Writes a new contact (or returns the one already written under this id) with its
    /// side effects.
    pub async fn create(
        &self,
        tenant: &TenantId,
        contact: &pb::Contact,
        mut effects: impl FnMut(&mut Effects) -> Result<(), Error>,
    ) -> Result<pb::Contact, Error> {
        let id = contact_id(contact).to_owned();
        let outbox = Outbox::contact(tenant, &id);
        let (written, ()) = self
            .store
            .update_with::<pb::Contact, ()>(
                &store::contact_key(tenant, &id),
                &outbox,
                |current| {
                    if let Some(existing) = current {
                        return Ok((existing, (), Vec::new()));
                    }
                    let mut fx = Effects::default();
                    effects(&mut fx)?;
                    Ok((contact.clone(), (), fx.encode()))
                },
                ttl,
            )
            .await?;
        self.finish(&outbox).await;
        Ok(written)
    }

    /// Updates the agent record with `f`, which also gives the side effects, atomically.
    pub async fn update_agent<R>(
        &self,
        agent: &str,
        mut f: impl FnMut(Option<pb::Agent>, &mut Effects) -> Result<(pb::Agent, R), Error>,
    ) -> Result<(pb::Agent, R), Error> {
        let outbox = Outbox::agent(agent);
        let result = self
            .store
            .update_with::<pb::Agent, R>(
                &store::agent_key(agent),
                &outbox,
                |current| {
                    let mut fx = Effects::default();
                    let (a, r) = f(current, &mut fx)?;
                    Ok((a, r, fx.encode()))
                },
                |_| 0,
            )
            .await?;
        self.finish(&outbox).await;
        Ok(result)
    }

    /// The lifecycle event of a contact transition.
    pub fn contact_event(
        &self,
        fx: &mut Effects,
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
        fx.publish(self.topics.contacts(), contact_id(after), &Event::new(tenant, &event));
        Ok(())
    }

    /// An agent event (agents are BPO-wide: the envelope carries the pool tenant).
    pub fn agent_event(&self, fx: &mut Effects, kind: pb::agent_event::Kind, agent: &pb::Agent) {
        let event = pb::AgentEvent { kind: kind as i32, agent: Some(agent.clone()) };
        let id = agent.name.strip_prefix("agents/").unwrap_or(&agent.name);
        fx.publish(self.topics.agents(), id, &Event::new(centralita_routing::engine::pool_tenant(), &event));
    }

    /// A routing input about contact `c`, keyed by the contact's agent pool.
    pub fn route(&self, fx: &mut Effects, tenant: &TenantId, c: &pb::Contact, input: &Input) {
        let event = Event::new(tenant.clone(), &wire::input_to_pb(input));
        fx.publish(self.input_topic(), &pool_key(&c.agent_pool), &event);
    }

    /// A routing input about agent `a` (the pool tenant), keyed by the agent's pool.
    pub fn route_agent(&self, fx: &mut Effects, a: &pb::Agent, input: &Input) {
        let event = Event::new(centralita_routing::engine::pool_tenant(), &wire::input_to_pb(input));
        fx.publish(self.input_topic(), &pool_key(&a.agent_pool), &event);
    }

    /// Publishes a routing input to `pool` now, outside any record write (nothing to make
    /// atomic).
    pub async fn route_now(&self, tenant: &TenantId, pool: &str, input: &Input) -> Result<(), Error> {
        let event = Event::new(tenant.clone(), &wire::input_to_pb(input));
        self.producer.publish(&self.input_topic(), &pool_key(pool), &event).await?;
        Ok(())
    }

    /// The agent pool of `tenant`: its manifest's `agentPool` when sessions first routed
    /// for it, pinned in Redis for good. A later change of the manifest is not followed
    /// (it is logged): the tenant's queued contacts and booked agents are in the first
    /// pool's router, and moving them while both routers run could book an agent twice.
    pub async fn tenant_pool(&self, tenant: &TenantId) -> Result<String, Error> {
        let known =
            self.registry.get(tenant).ok_or_else(|| Error::NotFound(format!("tenant {tenant} is not known here")))?;
        if let Some(pinned) = self.pools.lock().unwrap_or_else(|p| p.into_inner()).get(tenant.as_str()) {
            return Ok(pinned.clone());
        }
        let wanted = known.routing.agent_pool.clone();
        let wanted = if wanted.is_empty() { DEFAULT_AGENT_POOL.to_owned() } else { wanted };
        let key = store::tenant_pool_key(tenant);
        let mut conn = self.store.conn()?;
        let set: Option<String> =
            redis::cmd("SET").arg(&key).arg(&wanted).arg("NX").query_async(&mut conn).await.map_err(Error::from)?;
        let pinned = if set.is_some() {
            wanted.clone()
        } else {
            let got: Option<String> = redis::AsyncCommands::get(&mut conn, &key).await.map_err(Error::from)?;
            // Gone between the two calls: not cached, pinned again next time.
            let Some(got) = got else { return Ok(wanted) };
            got
        };
        if pinned != wanted {
            tracing::warn!(%tenant, pinned = %pinned, manifest = %wanted, "a tenant's agentPool cannot change once it is in use; the change is ignored");
        }
        self.pools.lock().unwrap_or_else(|p| p.into_inner()).insert(tenant.to_string(), pinned.clone());
        Ok(pinned)
    }

    /// The agent pool of an agent serving `queues`: the one pool of their tenants. Queues
    /// of tenants in different pools, or of tenants not known here, are refused (`field`
    /// names them), since two routers would each book the agent.
    pub async fn pool_of_queues(&self, queues: &[pb::QueueAssignment], field: &str) -> Result<String, Error> {
        let mut pools: BTreeMap<String, &str> = BTreeMap::new();
        for q in queues {
            let tenant = TenantId::parse(&q.tenant).map_err(|e| Error::invalid(field, e))?;
            let pool = match self.tenant_pool(&tenant).await {
                Ok(p) => p,
                Err(Error::NotFound(why)) => return Err(Error::invalid(field, why)),
                Err(e) => return Err(e),
            };
            pools.entry(pool).or_insert(&q.tenant);
        }
        if pools.len() > 1 {
            let list: Vec<String> = pools.iter().map(|(p, t)| format!("{p} (tenant {t})")).collect();
            return Err(Error::invalid(
                field,
                format!(
                    "the queues are in agent pools {}; an agent serves the tenants of one pool",
                    list.join(" and ")
                ),
            ));
        }
        Ok(pools.into_keys().next().unwrap_or_else(|| DEFAULT_AGENT_POOL.to_owned()))
    }

    /// The agent of a contact it held is released: routing frees the capacity (when it was
    /// booked there), the agent's list and stream are updated.
    pub fn release(&self, fx: &mut Effects, tenant: &TenantId, after: &pb::Contact, agent: &str, booked: bool) {
        if agent.is_empty() {
            return;
        }
        if booked {
            self.route(
                fx,
                tenant,
                after,
                &Input::ContactReleased {
                    contact: rc::ContactId(contact_id(after).to_owned()),
                    agent: rc::AgentId(agent.into()),
                },
            );
        }
        fx.agent_contact(agent, after, false, true);
    }

    /// Carries out the effects of a write just made; whatever fails is left to the sweeper.
    async fn finish(&self, outbox: &Outbox) {
        if self.detach_effects {
            let (engine, outbox) = (self.clone(), outbox.clone());
            tokio::spawn(async move {
                if let Err(e) = engine.drain(&outbox, true).await {
                    tracing::warn!(error = %e, outbox = %outbox.list, "side effects left for the sweeper");
                }
            });
        } else if let Err(e) = self.drain(outbox, true).await {
            tracing::warn!(error = %e, outbox = %outbox.list, "side effects left for the sweeper");
        }
    }

    /// Carries out the outbox of one record, in order, under its drain lock. With `wait`,
    /// waits (up to about a second) for another drainer to finish first.
    pub fn drain<'a>(
        &'a self,
        outbox: &'a Outbox,
        wait: bool,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Error>> + Send + 'a>> {
        Box::pin(self.drain_inner(outbox, wait))
    }

    async fn drain_inner(&self, outbox: &Outbox, wait: bool) -> Result<(), Error> {
        for _ in 0..200 {
            if self.store.outbox_len(outbox).await? == 0 {
                return Ok(());
            }
            if let Some(token) = self.store.lock_outbox(outbox).await? {
                let result = self.drain_locked(outbox).await;
                self.store.unlock_outbox(outbox, &token).await?;
                result?;
                continue;
            }
            if !wait {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        Ok(())
    }

    async fn drain_locked(&self, outbox: &Outbox) -> Result<(), Error> {
        loop {
            let entries = self.store.peek_outbox(outbox, 32).await?;
            if entries.is_empty() {
                return Ok(());
            }
            for bytes in entries {
                match pb::OutboxEntry::decode(bytes.as_slice()) {
                    Ok(entry) => {
                        // Consecutive publishes go out together (the producer keeps their
                        // order per partition); everything else in order, one by one.
                        let mut publishes = Vec::new();
                        for effect in entry.effects.into_iter().filter_map(|e| e.effect) {
                            match effect {
                                Fx::Publish(p) => publishes.push(p),
                                other => {
                                    self.publish_all(std::mem::take(&mut publishes)).await?;
                                    Box::pin(self.carry_out(other)).await?;
                                }
                            }
                        }
                        self.publish_all(publishes).await?;
                    }
                    Err(e) => tracing::error!(error = %e, outbox = %outbox.list, "undecodable outbox entry dropped"),
                }
                self.store.pop_outbox(outbox, &bytes).await?;
            }
        }
    }

    async fn publish_all(&self, publishes: Vec<pb::PublishEffect>) -> Result<(), Error> {
        let mut sends = Vec::with_capacity(publishes.len());
        for p in &publishes {
            let event = Event::decode(&p.envelope)?;
            sends.push(async move { self.producer.publish(&p.topic, &p.key, &event).await });
        }
        futures::future::try_join_all(sends).await?;
        Ok(())
    }

    async fn carry_out(&self, effect: Fx) -> Result<(), Error> {
        match effect {
            Fx::Publish(p) => {
                let event = Event::decode(&p.envelope)?;
                self.producer.publish(&p.topic, &p.key, &event).await?;
            }
            Fx::AgentContact(e) => match self.agent_contacts(&e.agent_id, &e.contact_name, e.add).await {
                Ok(a) => {
                    if let Some(c) = e.notify {
                        self.notify(&e.agent_id, Notify::Contact(c)).await?;
                        self.notify(&e.agent_id, Notify::Agent(a)).await?;
                    }
                }
                Err(Error::NotFound(what)) => tracing::warn!(%what, "agent gone; contact list not updated"),
                Err(e) => return Err(e),
            },
            Fx::Schedule(t) => self.store.zadd(&self.deadlines, &t.member, t.due_unix_ms).await?,
            Fx::Cancel(t) => {
                self.store.zrem(&self.deadlines, &t.member).await?;
            }
            Fx::Notify(n) => {
                if let Some(event) = n.event.and_then(|e| e.event) {
                    self.notify(&n.agent_id, event).await?;
                }
            }
            Fx::AgentNotResponding(n) => {
                let agent = n.agent_id;
                let result = self
                    .update_agent(&agent, |cur, fx| {
                        let mut a = cur.ok_or_else(|| Error::NotFound(format!("agents/{agent}")))?;
                        if a.state == pb::AgentState::Available as i32 {
                            a.state = pb::AgentState::Away as i32;
                            a.away_reason = NOT_RESPONDING.into();
                            a.state_time = ts(now_ms());
                            self.agent_event(fx, pb::agent_event::Kind::StateChanged, &a);
                            fx.notify(&agent, Notify::Agent(a.clone()));
                        }
                        Ok((a, ()))
                    })
                    .await;
                match result {
                    Ok(_) => {}
                    Err(Error::NotFound(what)) => tracing::warn!(%what, "agent gone; not made away"),
                    Err(e) => return Err(e),
                }
            }
            Fx::LinkedContact(e) => crate::consult::apply_linked(self, e).await?,
            Fx::Close(c) => {
                let tenant = TenantId::parse(&c.tenant).map_err(Error::internal)?;
                let mut conn = self.store.conn()?;
                let _: i64 = redis::AsyncCommands::zrem(&mut conn, store::open_index(&tenant), &c.contact_id).await?;
            }
        }
        Ok(())
    }

    /// Carries out side effects a writer left behind (it died, or Kafka was down): contact
    /// outboxes pending for more than a second, per tenant, and every non-empty agent outbox.
    pub async fn sweep_outboxes(&self) -> Result<usize, Error> {
        let mut conn = self.store.conn()?;
        let mut done = 0;
        let before = now_ms() - SWEEP_AFTER_MS;
        for t in self.registry.list() {
            let pending: Vec<String> = redis::AsyncCommands::zrangebyscore_limit(
                &mut conn,
                Outbox::contact(&t.id, "").pending,
                "-inf",
                before,
                0,
                100,
            )
            .await?;
            for id in pending {
                let outbox = Outbox::contact(&t.id, &id);
                self.drain(&outbox, false).await?;
                self.store.forget_if_drained(&outbox).await?;
                done += 1;
            }
        }
        let agents: Vec<String> = redis::AsyncCommands::smembers(&mut conn, &self.agents_index).await?;
        for chunk in agents.chunks(500) {
            let mut pipe = redis::pipe();
            for a in chunk {
                pipe.llen(Outbox::agent(a).list);
            }
            let lens: Vec<i64> = pipe.query_async(&mut conn).await?;
            for (a, n) in chunk.iter().zip(lens) {
                if n > 0 {
                    self.drain(&Outbox::agent(a), false).await?;
                    done += 1;
                }
            }
        }
        Ok(done)
    }

    /// Tells the agent's stream (on whichever replica it is open) about a change.
    pub async fn notify(&self, agent: &str, event: Notify) -> Result<(), Error> {
        if agent.is_empty() {
            return Ok(());
        }
        let message = pb::AgentStreamEvent { event: Some(event) };
        let mut payload = agent.as_bytes().to_vec();
        payload.push(b'\n');
        payload.extend(message.encode_to_vec());
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
        // A transferred contact does not go straight back to the agent who transferred it
        // (unless that agent is the explicit target).
        let excluded = match c.previous_agents.last() {
            Some(last) if c.transfer_count > 0 && *last != c.preferred_agent_id => vec![rc::AgentId(last.clone())],
            _ => Vec::new(),
        };
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
            excluded,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use centralita_proto::sessions::v1::agent_stream_event::Event as Notify;

    fn notice(agent: &str) -> pb::AgentStreamEvent {
        pb::AgentStreamEvent {
            event: Some(Notify::Agent(pb::Agent { name: format!("agents/{agent}"), ..Default::default() })),
        }
    }

    #[test]
    fn a_notice_reaches_only_its_agents_streams() {
        let notices = Notices::default();
        let mut a1 = notices.subscribe("a");
        let mut a2 = notices.subscribe("a");
        let mut b = notices.subscribe("b");
        notices.send("a", notice("a"));
        notices.send("nobody", notice("nobody"));
        assert_eq!(a1.try_recv().unwrap(), notice("a"));
        assert_eq!(a2.try_recv().unwrap(), notice("a"));
        assert!(b.try_recv().is_err(), "b's stream must not see a's notice");
        assert_eq!(notices.len(), 2, "no channel is made for an agent without a stream");
        // Once every stream of an agent has ended, its next notice drops the channel.
        drop((a1, a2));
        notices.send("a", notice("a"));
        assert_eq!(notices.len(), 1);
        notices.send("b", notice("b"));
        assert_eq!(b.try_recv().unwrap(), notice("b"));
    }
}

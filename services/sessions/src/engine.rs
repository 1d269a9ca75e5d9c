//! What sessions does with every change the core decides, whoever causes it (an RPC, a
//! routing decision, a timer): load the record, call the core, compare-and-set the record
//! together with its effects (`crate::outbox`), then carry the effects out. The effects sit
//! in the record's outbox until they are done: if the process dies in between, a sweeper on
//! any replica finishes them ([`Engine::sweep_outboxes`]). Effects are idempotent or deduped
//! downstream (events keep their id), so doing one twice is harmless.

use std::sync::Arc;

use centralita_platform::bus::{Event, Producer, Topics};
use centralita_platform::error::Error;
use centralita_platform::registry::TenantRegistry;
use centralita_platform::telemetry;
use centralita_platform::tenant::TenantId;
use centralita_proto::sessions::v1 as pb;
use centralita_routing_contract::{input_topic, pool_key, Input};
use prost::Message as _;
use tracing::Instrument as _;

use crate::core::{self, Agent, AgentId, Change, Contact, ContactId, ContactRef, Linked, Refusal};
use crate::metrics::Metrics;
use crate::outbox::{self, proto::outbox_effect::Effect as Fx, Op, OutboxEntry};
use crate::store::{Outbox, Store, Write};
use crate::streams::Notices;

/// The lifecycle event kinds among `effects`, for the metrics.
fn contact_events(effects: &[crate::core::Effect]) -> Vec<crate::core::ContactEventKind> {
    effects
        .iter()
        .filter_map(|e| match e {
            crate::core::Effect::ContactEvent { kind, .. } => Some(*kind),
            _ => None,
        })
        .collect()
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The time the engine decides by, in Unix milliseconds: the system's wall clock (timers in
/// Redis are shared by every replica, so they are on wall time), or, in tests, a clock the
/// test moves by hand so timer-driven behaviour is checked without sleeping.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    #[default]
    System,
    Manual(Arc<std::sync::atomic::AtomicI64>),
}

impl Clock {
    pub fn now(&self) -> i64 {
        match self {
            Clock::System => now_ms(),
            Clock::Manual(ms) => ms.load(std::sync::atomic::Ordering::SeqCst),
        }
    }
}

/// A write the core refused, or one that failed.
#[derive(Debug)]
pub enum Failure {
    Refused(Refusal),
    Failed(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Failed(e)
    }
}

impl From<Refusal> for Failure {
    fn from(r: Refusal) -> Self {
        Failure::Refused(r)
    }
}

/// A change applied: the record before and after.
pub type Applied<T> = Result<(T, T), Failure>;

#[derive(Clone)]
pub struct Engine {
    pub store: Store,
    pub producer: Arc<Producer>,
    pub registry: TenantRegistry,
    pub topics: Topics,
    pub notices: Notices,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
    /// Carry out a write's side effects in the background instead of before returning
    /// (the API and the routing-decision consumer: the caller, or the next decision, need
    /// not wait for Kafka).
    pub detach_effects: bool,
    /// How long an agent whose event stream closed stays as it was before it is made away
    /// (`disconnected`); zero: never.
    pub presence_grace: std::time::Duration,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

/// How long a record's effects may stay pending before the sweeper carries them out (the
/// writer normally does it within milliseconds).
const SWEEP_AFTER_MS: i64 = 1_000;

impl Engine {
    /// Whether a tenant's calls reach an agent (`core::agent::Reach`), from the tenants'
    /// voice settings as this replica knows them; a tenant it does not know rings nothing.
    pub fn reaches(&self, tenant: &str, agent: &str, registered: bool) -> bool {
        TenantId::parse(tenant)
            .ok()
            .and_then(|t| self.registry.get(&t))
            .is_none_or(|t| t.voice.reaches(agent, registered))
    }

    /// Applies `f` (a core function) to contact `c` as stored and writes the result with
    /// its effects, atomically; the contact before and after.
    pub async fn transition(
        &self,
        c: &ContactRef,
        mut f: impl FnMut(&Contact) -> Result<Change<Contact>, Refusal>,
    ) -> Applied<Contact> {
        let outbox = Outbox::contact(c);
        let topics = &self.topics;
        let result = self
            .store
            .write_contact(c, &outbox, |current| {
                let before = current.ok_or_else(|| Refusal::ContactGone(c.id.clone()))?;
                let change = f(&before)?;
                let entry = outbox::contact_entry(topics, Some(before.state), &change.record, &change.effects);
                let after = change.record;
                let events = contact_events(&change.effects);
                Ok::<_, Failure>(Write::Put { record: after.clone(), entry, result: (before, after, events) })
            })
            .await;
        // A refused change wrote nothing, so there is nothing new to carry out.
        let (before, after, events) = result?;
        self.finish(&outbox).await;
        events.into_iter().for_each(|k| self.metrics.event(k));
        Ok((before, after))
    }

    /// Writes a new contact with its effects, or returns the one already written under its
    /// id (a retry).
    pub async fn create(&self, change: Change<Contact>) -> Result<Contact, Error> {
        let c = change.record.key();
        let outbox = Outbox::contact(&c);
        let entry = outbox::contact_entry(&self.topics, None, &change.record, &change.effects);
        let (written, new) = self
            .store
            .write_contact(&c, &outbox, |current| {
                Ok::<_, Error>(match current {
                    Some(existing) => Write::Keep((existing, false)),
                    None => Write::Put {
                        record: change.record.clone(),
                        entry: entry.clone(),
                        result: (change.record.clone(), true),
                    },
                })
            })
            .await?;
        self.finish(&outbox).await;
        if new {
            self.metrics.contact_created(&written);
        }
        Ok(written)
    }

    /// Applies `f` (a core function) to agent `agent` as stored (`None`: no record yet)
    /// and writes the result with its effects, atomically.
    pub async fn update_agent(
        &self,
        agent: &AgentId,
        mut f: impl FnMut(Option<&Agent>) -> Result<Change<Agent>, Refusal>,
    ) -> Result<Agent, Failure> {
        let outbox = Outbox::agent(agent);
        let topics = &self.topics;
        let result = self
            .store
            .write_agent(agent, &outbox, |current| {
                let change = f(current.as_ref())?;
                if current.as_ref() == Some(&change.record) && change.effects.is_empty() {
                    return Ok::<_, Failure>(Write::Keep((change.record, false)));
                }
                let entry = outbox::agent_entry(topics, &change.record, &change.effects);
                let effects = !entry.is_empty();
                Ok(Write::Put { record: change.record.clone(), entry, result: (change.record, effects) })
            })
            .await;
        // Only a write with effects has anything to carry out (a contact list change, on
        // every offer and release, has none: no drain round trip for it).
        let (agent, effects) = result?;
        if effects {
            self.finish(&outbox).await;
        }
        Ok(agent)
    }

    /// Like [`Engine::update_agent`] for an agent that must exist.
    pub async fn change_agent(
        &self,
        agent: &AgentId,
        mut f: impl FnMut(&Agent) -> Result<Change<Agent>, Refusal>,
    ) -> Result<Agent, Failure> {
        self.update_agent(agent, |a| f(a.ok_or_else(|| Refusal::AgentGone(agent.clone()))?)).await
    }

    /// Publishes a routing input to `pool` now, outside any record write (nothing to make
    /// atomic).
    pub async fn route_now(&self, tenant: &TenantId, pool: &str, input: &Input) -> Result<(), Error> {
        let event = Event::new(tenant.clone(), &centralita_proto::routing::v1::RoutingInput::from(input));
        self.producer.publish(&input_topic(&self.topics), &pool_key(pool), &event).await?;
        Ok(())
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
                match OutboxEntry::decode(bytes.as_slice()) {
                    Ok(entry) => {
                        // In a span continuing the command that wrote the entry: what it
                        // publishes (the producer puts the current context in the record
                        // headers), notifies and writes belongs to that command's trace.
                        let span = tracing::info_span!(
                            "outbox",
                            otel.kind = "producer",
                            outbox = %outbox.list,
                            effects = entry.effects.len()
                        );
                        let trace =
                            [("traceparent", entry.traceparent.as_str()), ("tracestate", entry.tracestate.as_str())];
                        telemetry::set_parent_from(&span, trace.into_iter().filter(|(_, v)| !v.is_empty()));
                        self.carry_out_entry(entry).instrument(span).await?;
                    }
                    Err(e) => tracing::error!(error = %e, outbox = %outbox.list, "undecodable outbox entry dropped"),
                }
                self.store.pop_outbox(outbox, &bytes).await?;
            }
        }
    }

    /// Carries out the effects of one entry, in order. Consecutive publishes go out together
    /// (the producer keeps their order per partition); everything else one by one.
    async fn carry_out_entry(&self, entry: OutboxEntry) -> Result<(), Error> {
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
        self.publish_all(publishes).await
    }

    async fn publish_all(&self, publishes: Vec<outbox::PublishEffect>) -> Result<(), Error> {
        let mut sends = Vec::with_capacity(publishes.len());
        for p in &publishes {
            let event = Event::decode(&p.envelope)?;
            sends.push(async move { self.producer.publish(&p.topic, &p.key, &event).await });
        }
        futures::future::try_join_all(sends).await?;
        Ok(())
    }

    /// Carries out one stored effect. An effect about a record that is gone, or that no
    /// longer fits it, is done (logged): it was overtaken.
    async fn carry_out(&self, effect: Fx) -> Result<(), Error> {
        match effect {
            Fx::Publish(p) => self.publish_all(vec![p]).await?,
            Fx::AgentContact(e) => {
                let agent = AgentId(e.agent_id);
                let contact = crate::wire::contact_ref("contact_name", &e.contact_name).map_err(Error::internal)?;
                match self.list_contact(&agent, &contact, e.add).await {
                    Ok(a) => {
                        if let Some(c) = e.notify {
                            self.notify(&agent, pb::agent_stream_event::Event::Contact(c)).await?;
                            self.notify(&agent, pb::agent_stream_event::Event::Agent(pb::Agent::from(&a))).await?;
                        }
                    }
                    Err(Failure::Refused(why)) => tracing::warn!(%why, "contact list not updated"),
                    Err(Failure::Failed(e)) => return Err(e),
                }
            }
            Fx::Schedule(t) => self.store.schedule(&t.member, t.due_unix_ms).await?,
            Fx::Cancel(t) => self.store.cancel(&t.member).await?,
            Fx::Notify(n) => {
                if let Some(event) = n.event.and_then(|e| e.event) {
                    self.notify(&AgentId(n.agent_id), event).await?;
                }
            }
            Fx::AgentNotResponding(n) => {
                let agent = AgentId(n.agent_id);
                let now = self.clock.now();
                match self.change_agent(&agent, |a| Ok(core::agent::not_responding(a, now))).await {
                    Ok(_) => {}
                    Err(Failure::Refused(why)) => tracing::warn!(%why, "agent not made away"),
                    Err(Failure::Failed(e)) => return Err(e),
                }
            }
            Fx::LinkedContact(e) => self.apply_linked(e).await?,
            Fx::Close(c) => {
                let tenant = TenantId::parse(&c.tenant).map_err(Error::internal)?;
                if c.handled_ms > 0 {
                    self.store.record_handled(&tenant, &c.queue, &c.contact_id, c.handled_ms, c.closed_at).await?;
                }
                self.store.unindex_open(&ContactRef { tenant, id: ContactId(c.contact_id) }).await?;
            }
        }
        Ok(())
    }

    /// The other side of a consult step. A change that no longer fits is overtaken (the
    /// leg closed, the consult ended) and has nothing left to do.
    async fn apply_linked(&self, e: outbox::LinkedContactEffect) -> Result<(), Error> {
        let tenant = TenantId::parse(&e.tenant).map_err(Error::internal)?;
        let target = ContactRef { tenant, id: ContactId(e.contact_id) };
        let change = match Op::try_from(e.op).unwrap_or(Op::Unspecified) {
            Op::LegHandedOver => Linked::LegHandedOver,
            Op::LegCancelled => Linked::LegCancelled,
            Op::LegEnded => Linked::LegEnded {
                leg: ContactId(e.leg_id),
                agent: (!e.agent_id.is_empty()).then_some(AgentId(e.agent_id)),
            },
            Op::Unspecified => return Err(Error::internal("linked contact effect without an op")),
        };
        let now = self.clock.now();
        match self.transition(&target, |c| core::consult::linked(c, &change, now)).await {
            Ok(_) => Ok(()),
            Err(Failure::Refused(why)) => {
                tracing::info!(contact = %target.id, %why, "linked consult change overtaken; dropped");
                Ok(())
            }
            Err(Failure::Failed(e)) => Err(e),
        }
    }

    /// Adds or removes a contact from an agent's list, atomically.
    async fn list_contact(&self, agent: &AgentId, contact: &ContactRef, add: bool) -> Result<Agent, Failure> {
        self.change_agent(agent, |a| Ok(Change::new(core::agent::list_contact(a, contact, add)))).await
    }

    /// Carries out side effects a writer left behind (it died, or Kafka was down): contact
    /// outboxes pending for more than a second, per tenant, and every non-empty agent outbox.
    /// Sets the backlog metrics from what it found (before carrying anything out).
    pub async fn sweep_outboxes(&self) -> Result<usize, Error> {
        let mut done = 0;
        let now = self.clock.now();
        let before = now - SWEEP_AFTER_MS;
        let (mut pending, mut oldest) = (0, now);
        for t in self.registry.list() {
            let (count, since) = self.store.outbox_backlog(&t.id).await?;
            pending += count;
            oldest = oldest.min(since.unwrap_or(now));
            for id in self.store.pending_contacts(&t.id, before, 100).await? {
                let outbox = Outbox::contact(&ContactRef { tenant: t.id.clone(), id: ContactId(id) });
                self.drain(&outbox, false).await?;
                self.store.forget_if_drained(&outbox).await?;
                done += 1;
            }
        }
        let agents = self.store.agent_ids().await?;
        let agents = self.store.agents_with_pending(&agents).await?;
        self.metrics.outbox((pending + agents.len()) as i64, now - oldest);
        for a in agents {
            self.drain(&Outbox::agent(&a), false).await?;
            done += 1;
        }
        Ok(done)
    }

    /// Tells the agent's stream (on whichever replica it is open) about a change.
    pub async fn notify(&self, agent: &AgentId, event: pb::agent_stream_event::Event) -> Result<(), Error> {
        self.store.publish_notice(crate::streams::encode_notice(agent, event)).await
    }
}

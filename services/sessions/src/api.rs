//! The gRPC adapters: `centralita.sessions.v1.ContactService` and `AgentService`. Each
//! method checks the caller (tenant from the verified token, never from a request field),
//! validates the request, and hands the transition to the [`Engine`].

use std::collections::BTreeMap;
use std::pin::Pin;
use std::time::Duration;

use centralita_platform::auth::{caller, Caller, Role};
use centralita_platform::error::{Error, FieldViolation};
use centralita_platform::queue::{is_code, BUILT_IN_AWAY_REASONS, DEFAULT_AGENT_POOL, SIGNED_IN};
use centralita_platform::tenant::TenantId;
use centralita_proto::sessions::v1::{
    self as pb, agent_stream_event::Event as Notice, contact_event::Kind, ContactState,
};
use centralita_routing::core::{self as rc, Input};
use centralita_routing::wire;
use futures::Stream;
use tonic::{Request, Response, Status};

use crate::engine::{contact_id, contact_name, now_ms, parse_contact_name, timer, ts, Engine};
use crate::lifecycle::Action;
use crate::store;

const MAX_ATTRIBUTES: usize = 50;
const MAX_PAGE: usize = 500;

#[derive(Debug, Clone)]
pub struct Api {
    pub engine: Engine,
}

type R<T> = Result<Response<T>, Status>;

fn agent_id_from_name(name: &str) -> Result<String, Error> {
    let id = name.strip_prefix("agents/").ok_or_else(|| Error::invalid("name", "must be `agents/{agent}`"))?;
    if !is_code(id) {
        return Err(Error::invalid("name", "agent id must be 1-40 of a-z, 0-9, - and _"));
    }
    Ok(id.to_owned())
}

/// An agent acts on itself only; admins act on any agent.
fn authorize_agent(caller: &Caller, agent: &str) -> Result<(), Error> {
    if caller.is_bpo_admin() || caller.agent_id.as_deref() == Some(agent) {
        Ok(())
    } else {
        Err(Error::PermissionDenied {
            reason: centralita_platform::error::Reason::WrongTenant,
            message: format!("caller may not act as agent `{agent}`"),
        })
    }
}

/// Who may read a contact: its tenant's admins, supervisors and channel adapters, the
/// agent it is offered to or held by, a BPO admin.
fn authorize_contact(caller: &Caller, tenant: &TenantId, contact: Option<&pb::Contact>) -> Result<(), Error> {
    if caller.is_bpo_admin() {
        return Ok(());
    }
    if let (Some(agent), Some(c)) = (&caller.agent_id, contact) {
        if caller.has_role(Role::Agent) && crate::consult::is_participant(c, agent) {
            return Ok(());
        }
    }
    caller.authorize_tenant(tenant)?;
    caller.require_any_role(&[Role::TenantAdmin, Role::Supervisor, Role::Channel])
}

/// The contact's holder must be the calling agent.
fn require_holder(caller: &Caller, c: &pb::Contact) -> Result<String, Error> {
    match &caller.agent_id {
        Some(a) if *a == c.agent_id => Ok(a.clone()),
        _ => Err(Error::PermissionDenied {
            reason: centralita_platform::error::Reason::WrongTenant,
            message: "only the agent holding this contact may do that".into(),
        }),
    }
}

/// Where a transfer or a consult goes (the request's `target`).
enum Destination {
    Queue(String),
    Agent(String),
}

impl Api {
    /// Checks where the holder `agent` of `c` sends it: a queue of the tenant, or another
    /// agent through the contact's queue, which needs a preferred-agent window (`verb`
    /// names the move in that error).
    fn destination(
        &self,
        tenant: &TenantId,
        c: &pb::Contact,
        agent: &str,
        to: Option<Destination>,
        verb: &str,
    ) -> Result<crate::consult::Target, Error> {
        let t = self.engine.registry.require_active(tenant)?;
        let target = match to {
            Some(Destination::Queue(q)) if t.routing.queues.contains_key(&q) => {
                crate::consult::Target { queue: q, agent: String::new() }
            }
            Some(Destination::Queue(q)) => {
                return Err(Error::invalid("queue", format!("`{q}` is not a queue of tenant {tenant}")))
            }
            Some(Destination::Agent(a)) if is_code(&a) && a != agent => {
                crate::consult::Target { queue: c.queue.clone(), agent: a }
            }
            Some(Destination::Agent(_)) => return Err(Error::invalid("agent_id", "must be another agent's id")),
            None => return Err(Error::invalid("target", "a queue or an agent is required")),
        };
        if !target.agent.is_empty()
            && t.routing.queues.get(&target.queue).is_some_and(|q| q.preferred_agent_window.is_zero())
        {
            return Err(Error::FailedPrecondition(format!(
                "queue `{}` has no preferred-agent window to {verb} an agent",
                target.queue
            )));
        }
        Ok(target)
    }

    async fn load_contact(&self, caller: &Caller, name: &str) -> Result<(TenantId, pb::Contact), Error> {
        let (tenant, id) = parse_contact_name(name)?;
        if !caller.is_bpo_admin() && caller.tenant.is_some() && caller.tenant.as_ref() != Some(&tenant) {
            // Same answer as for a contact that does not exist: ids of other tenants are not
            // confirmed.
            return Err(Error::NotFound(name.to_owned()));
        }
        let c = self
            .engine
            .store
            .load::<pb::Contact>(&store::contact_key(&tenant, &id))
            .await?
            .map(|(_, c)| c)
            .ok_or_else(|| Error::NotFound(name.to_owned()))?;
        authorize_contact(caller, &tenant, Some(&c)).map_err(|_| Error::NotFound(name.to_owned()))?;
        Ok((tenant, c))
    }

    fn validate_new(&self, tenant: &TenantId, c: &pb::Contact) -> Result<(), Error> {
        let t = self.engine.registry.require_active(tenant)?;
        let mut v = Vec::new();
        let mut bad = |f: &str, m: String| v.push(FieldViolation::new(format!("contact.{f}"), m));
        match wire::channel_from_pb(c.channel) {
            Ok(ch) => {
                let platform_channel = match ch {
                    rc::Channel::Voice => centralita_platform::tenant::Channel::Voice,
                    rc::Channel::Chat => centralita_platform::tenant::Channel::Chat,
                    rc::Channel::Sms => centralita_platform::tenant::Channel::Sms,
                    rc::Channel::Email => centralita_platform::tenant::Channel::Email,
                    rc::Channel::Social => centralita_platform::tenant::Channel::Social,
                    rc::Channel::Task => centralita_platform::tenant::Channel::Task,
                };
                if !t.channels.contains(&platform_channel) {
                    bad("channel", format!("{ch:?} is not enabled for tenant {tenant}").to_lowercase());
                }
            }
            Err(e) => bad("channel", e),
        }
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
        if v.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidArgument(v))
        }
    }
}

/// Most customer identities one contact carries.
const MAX_CONTACT_IDENTITIES: usize = 10;

/// The contact's customer identities in normal form (E.164 phones, lower-case emails, …),
/// duplicates dropped; a malformed one is refused with its field.
fn normal_identities(
    raw: &[centralita_proto::crm::v1::Identity],
) -> Result<Vec<centralita_proto::crm::v1::Identity>, Error> {
    if raw.len() > MAX_CONTACT_IDENTITIES {
        return Err(Error::invalid("contact.customer_identities", format!("at most {MAX_CONTACT_IDENTITIES}")));
    }
    let mut out: Vec<centralita_proto::crm::v1::Identity> = Vec::with_capacity(raw.len());
    let mut v = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        match centralita_platform::identity::Identity::parse(r, "") {
            Ok(id) => {
                let pb = id.to_pb();
                if !out.contains(&pb) {
                    out.push(pb);
                }
            }
            Err(e) => v.push(FieldViolation::new(format!("contact.customer_identities[{i}]"), e)),
        }
    }
    if v.is_empty() {
        Ok(out)
    } else {
        Err(Error::InvalidArgument(v))
    }
}

#[tonic::async_trait]
impl pb::contact_service_server::ContactService for Api {
    #[tracing::instrument(skip_all, fields(tenant, contact))]
    async fn create_contact(&self, request: Request<pb::CreateContactRequest>) -> R<pb::Contact> {
        let caller = caller(&request)?.clone();
        let tenant = caller.own_tenant()?.clone();
        caller.require_any_role(&[Role::TenantAdmin, Role::Supervisor, Role::Channel])?;
        let req = request.into_inner();
        let input = req.contact.ok_or_else(|| Error::invalid("contact", "is required"))?;
        self.validate_new(&tenant, &input)?;
        let customer_identities = normal_identities(&input.customer_identities)?;
        // Outside business hours live channels are turned away (the IVR or chat widget tells
        // the customer); email, SMS, social and tasks queue and wait for the agents.
        let live =
            [centralita_proto::tenancy::v1::Channel::Voice as i32, centralita_proto::tenancy::v1::Channel::Chat as i32];
        let t = self.engine.registry.require_active(&tenant)?;
        if live.contains(&input.channel) && !t.business_hours.is_open(chrono::Utc::now()) {
            return Err(Error::FailedPrecondition(format!(
                "tenant {tenant} is closed now (business hours in {}); voice and chat are not queued",
                t.business_hours.time_zone.name()
            ))
            .into());
        }
        if req.request_id.len() > 64 {
            return Err(Error::invalid("request_id", "at most 64 bytes").into());
        }
        let mut id = uuid::Uuid::now_v7().simple().to_string();
        if !req.request_id.is_empty() {
            // The first attempt reserves the id; a retry finds it and returns (or, if the
            // first attempt died before writing, finishes) that contact.
            let mut conn = self.engine.store.conn()?;
            let key = store::request_key(&tenant, &req.request_id);
            let existing: Option<String> = redis::cmd("SET")
                .arg(&key)
                .arg(&id)
                .arg("NX")
                .arg("GET")
                .arg("EX")
                .arg(86_400)
                .query_async(&mut conn)
                .await
                .map_err(Error::from)?;
            if let Some(existing) = existing {
                if let Some((_, c)) =
                    self.engine.store.load::<pb::Contact>(&store::contact_key(&tenant, &existing)).await?
                {
                    return Ok(Response::new(c));
                }
                id = existing;
            }
        }
        tracing::Span::current().record("tenant", tenant.as_str()).record("contact", id.as_str());
        let now = now_ms();
        let contact = pb::Contact {
            name: contact_name(tenant.as_str(), &id),
            tenant: tenant.to_string(),
            channel: input.channel,
            direction: if input.direction == 0 { pb::Direction::Inbound as i32 } else { input.direction },
            queue: input.queue,
            state: ContactState::Queued as i32,
            priority: input.priority,
            customer_tier: input.customer_tier,
            language: input.language,
            required_skills: input.required_skills,
            attributes: input.attributes,
            preferred_agent_id: input.preferred_agent_id,
            customer_identities,
            agent_pool: self.engine.tenant_pool(&tenant).await?,
            create_time: ts(now),
            enqueue_time: ts(now),
            ..Default::default()
        };
        let queued = self.engine.queued(&contact)?;
        // Listed before it is written: a listing skips ids without a record.
        self.engine.store.zadd(&store::open_index(&tenant), &id, now).await?;
        let written = self
            .engine
            .create(&tenant, &contact, |fx| {
                self.engine.contact_event(fx, Kind::Queued, &pb::Contact::default(), &contact, "", "")?;
                self.engine.route(fx, &tenant, &contact, &Input::ContactQueued(queued.clone()));
                Ok(())
            })
            .await?;
        Ok(Response::new(written))
    }

    async fn get_contact(&self, request: Request<pb::GetContactRequest>) -> R<pb::Contact> {
        let caller = caller(&request)?.clone();
        let (_, c) = self.load_contact(&caller, &request.get_ref().name).await?;
        Ok(Response::new(c))
    }

    async fn list_contacts(&self, request: Request<pb::ListContactsRequest>) -> R<pb::ListContactsResponse> {
        let caller = caller(&request)?.clone();
        let tenant = caller.own_tenant()?.clone();
        caller.require_any_role(&[Role::TenantAdmin, Role::Supervisor])?;
        let req = request.into_inner();
        let page = match req.page_size {
            n if n < 0 => return Err(Error::invalid("page_size", "must not be negative").into()),
            0 => 100,
            n => (n as usize).min(MAX_PAGE),
        };
        let after: i64 = if req.page_token.is_empty() {
            0
        } else {
            req.page_token.parse().map_err(|_| Error::invalid("page_token", "is not a token from this API"))?
        };
        let mut conn = self.engine.store.conn()?;
        let ids: Vec<String> = redis::AsyncCommands::zrange(&mut conn, store::open_index(&tenant), after as isize, -1)
            .await
            .map_err(Error::from)?;
        let mut contacts = Vec::new();
        let mut position = after;
        for id in ids {
            position += 1;
            if let Some((_, c)) = self.engine.store.load::<pb::Contact>(&store::contact_key(&tenant, &id)).await? {
                let queue_ok = req.queue.is_empty() || c.queue == req.queue;
                let state_ok = req.state == 0 || c.state == req.state;
                if queue_ok && state_ok {
                    contacts.push(c);
                }
            }
            if contacts.len() == page {
                break;
            }
        }
        let total: i64 =
            redis::AsyncCommands::zcard(&mut conn, store::open_index(&tenant)).await.map_err(Error::from)?;
        let next_page_token =
            if position < total && contacts.len() == page { position.to_string() } else { String::new() };
        Ok(Response::new(pb::ListContactsResponse { contacts, next_page_token }))
    }

    #[tracing::instrument(skip_all, fields(contact))]
    async fn accept_contact(&self, request: Request<pb::AcceptContactRequest>) -> R<pb::Contact> {
        let caller = caller(&request)?.clone();
        let req = request.into_inner();
        let (tenant, c) = self.load_contact(&caller, &req.name).await?;
        let agent = require_holder(&caller, &c)?;
        let id = contact_id(&c).to_owned();
        let now = now_ms();
        let engine = &self.engine;
        let (_, after) = engine
            .transition(
                &tenant,
                &id,
                Action::Accept,
                |c| {
                    if c.offer_id != req.offer_id || c.agent_id != agent {
                        return Err(Error::FailedPrecondition("this offer is no longer open".into()));
                    }
                    if c.offer_expire_time.as_ref().map(wire::millis_from_pb).is_some_and(|exp| exp < now) {
                        return Err(Error::FailedPrecondition("this offer has expired".into()));
                    }
                    c.connect_time = ts(now);
                    crate::consult::accepted(c, &agent, now);
                    Ok(())
                },
                |before, after, fx| {
                    fx.cancel(timer("offer", &tenant, &id, &req.offer_id));
                    let input =
                        Input::OfferAccepted { contact: rc::ContactId(id.clone()), agent: rc::AgentId(agent.clone()) };
                    engine.route(fx, &tenant, after, &input);
                    engine.contact_event(fx, Kind::Accepted, before, after, &agent, "")?;
                    fx.notify(&agent, Notice::Contact(after.clone()));
                    Ok(())
                },
            )
            .await?;
        Ok(Response::new(after))
    }

    async fn reject_contact(&self, request: Request<pb::RejectContactRequest>) -> R<pb::Contact> {
        let caller = caller(&request)?.clone();
        let req = request.into_inner();
        let (tenant, c) = self.load_contact(&caller, &req.name).await?;
        let agent = require_holder(&caller, &c)?;
        let after = crate::flow::decline(&self.engine, &tenant, contact_id(&c), &req.offer_id, &agent, false).await?;
        Ok(Response::new(after))
    }

    async fn hold_contact(&self, request: Request<pb::HoldContactRequest>) -> R<pb::Contact> {
        self.hold(request.extensions().get::<Caller>().cloned(), &request.get_ref().name, true).await
    }

    async fn resume_contact(&self, request: Request<pb::ResumeContactRequest>) -> R<pb::Contact> {
        self.hold(request.extensions().get::<Caller>().cloned(), &request.get_ref().name, false).await
    }

    #[tracing::instrument(skip_all, fields(contact))]
    async fn transfer_contact(&self, request: Request<pb::TransferContactRequest>) -> R<pb::Contact> {
        use pb::transfer_contact_request::Target;
        let caller = caller(&request)?.clone();
        let req = request.into_inner();
        let (tenant, c) = self.load_contact(&caller, &req.name).await?;
        let agent = require_holder(&caller, &c)?;
        let to = req.target.map(|t| match t {
            Target::Queue(q) => Destination::Queue(q),
            Target::AgentId(a) => Destination::Agent(a),
        });
        let crate::consult::Target { queue, agent: preferred } =
            self.destination(&tenant, &c, &agent, to, "transfer to")?;
        let id = contact_id(&c).to_owned();
        let now = now_ms();
        let engine = &self.engine;
        let (_, after) = engine
            .transition(
                &tenant,
                &id,
                Action::Transfer,
                |c| {
                    if !c.consult_leg.is_empty() {
                        return Err(Error::FailedPrecondition(
                            "the contact has a consult leg; complete or cancel the consult first".into(),
                        ));
                    }
                    crate::consult::leave(c, now, |_| true);
                    c.queue.clone_from(&queue);
                    c.preferred_agent_id.clone_from(&preferred);
                    c.previous_agents.push(agent.clone());
                    c.agent_id.clear();
                    c.offer_id.clear();
                    c.on_hold = false;
                    c.transfer_count += 1;
                    c.enqueue_time = ts(now);
                    Ok(())
                },
                |before, after, fx| {
                    engine.contact_event(fx, Kind::Transferred, before, after, &agent, "")?;
                    engine.release(fx, &tenant, after, &agent, true);
                    engine.route(fx, &tenant, after, &Input::ContactQueued(engine.queued(after)?));
                    Ok(())
                },
            )
            .await?;
        Ok(Response::new(after))
    }

    async fn consult_contact(&self, request: Request<pb::ConsultContactRequest>) -> R<pb::Contact> {
        use pb::consult_contact_request::Target;
        let caller = caller(&request)?.clone();
        let req = request.into_inner();
        let (tenant, c) = self.load_contact(&caller, &req.name).await?;
        let agent = require_holder(&caller, &c)?;
        let to = req.target.map(|t| match t {
            Target::Queue(q) => Destination::Queue(q),
            Target::AgentId(a) => Destination::Agent(a),
        });
        let target = self.destination(&tenant, &c, &agent, to, "consult")?;
        let leg = crate::consult::start(&self.engine, &tenant, &c, &agent, target).await?;
        Ok(Response::new(leg))
    }

    async fn complete_consult(&self, request: Request<pb::CompleteConsultRequest>) -> R<pb::Contact> {
        let caller = caller(&request)?.clone();
        let req = request.into_inner();
        // Unknown values read as unspecified, which `consult::complete` refuses.
        let outcome = pb::complete_consult_request::Outcome::try_from(req.outcome).unwrap_or_default();
        let (tenant, c) = self.load_contact(&caller, &req.name).await?;
        let agent = require_holder(&caller, &c)?;
        let after = crate::consult::complete(&self.engine, &tenant, &c, &agent, outcome).await?;
        Ok(Response::new(after))
    }

    #[tracing::instrument(skip_all, fields(contact))]
    async fn end_contact(&self, request: Request<pb::EndContactRequest>) -> R<pb::Contact> {
        let caller = caller(&request)?.clone();
        let req = request.into_inner();
        let (tenant, c) = self.load_contact(&caller, &req.name).await?;
        if caller.agent_id.as_deref().is_some_and(|a| a != c.agent_id)
            && !caller.is_bpo_admin()
            && caller.require_any_role(&[Role::TenantAdmin, Role::Supervisor, Role::Channel]).is_err()
        {
            return Err(Error::FailedPrecondition(
                "only the agent holding the contact ends it; a conferenced agent leaves by ending its consult leg"
                    .into(),
            )
            .into());
        }
        let id = contact_id(&c).to_owned();
        let now = now_ms();
        let acw = self
            .engine
            .registry
            .get(&tenant)
            .and_then(|t| t.routing.queues.get(&c.queue).map(|q| q.after_contact_work));
        let acw_ms = acw.map(|d| d.as_millis() as i64).unwrap_or(30_000);
        let engine = &self.engine;
        let (_, after) = engine
            .transition(
                &tenant,
                &id,
                Action::End,
                |c| {
                    c.end_time = ts(now);
                    if c.state == ContactState::Abandoned as i32 {
                        c.close_time = ts(now);
                    }
                    crate::consult::leave(c, now, |_| true);
                    c.consult_leg.clear();
                    Ok(())
                },
                |before, after, fx| {
                    let agent = &before.agent_id;
                    crate::consult::ended(fx, before);
                    if after.state == ContactState::Abandoned as i32 {
                        engine.contact_event(fx, Kind::Abandoned, before, after, agent, "")?;
                        let withdrawn = Input::ContactWithdrawn { contact: rc::ContactId(id.clone()) };
                        engine.route(fx, &tenant, after, &withdrawn);
                        if !agent.is_empty() {
                            fx.cancel(timer("offer", &tenant, &id, &before.offer_id));
                            engine.release(fx, &tenant, after, agent, false);
                        }
                    } else {
                        engine.contact_event(fx, Kind::Ended, before, after, agent, "")?;
                        fx.schedule(timer("acw", &tenant, &id, ""), now + acw_ms);
                        fx.notify(agent, Notice::Contact(after.clone()));
                    }
                    Ok(())
                },
            )
            .await?;
        Ok(Response::new(after))
    }

    async fn list_queue_stats(&self, request: Request<pb::ListQueueStatsRequest>) -> R<pb::ListQueueStatsResponse> {
        let caller = caller(&request)?.clone();
        Ok(Response::new(self.queue_stats(&caller, &request.get_ref().queue).await?))
    }

    #[tracing::instrument(skip_all, fields(contact))]
    async fn wrap_up_contact(&self, request: Request<pb::WrapUpContactRequest>) -> R<pb::Contact> {
        let caller = caller(&request)?.clone();
        let req = request.into_inner();
        let (tenant, c) = self.load_contact(&caller, &req.name).await?;
        require_holder(&caller, &c)?;
        let t = self.engine.registry.require_active(&tenant)?;
        if !t.routing.disposition_codes.contains(&req.disposition) {
            return Err(Error::invalid(
                "disposition",
                format!("`{}` is not a disposition code of tenant {tenant}", req.disposition),
            )
            .into());
        }
        if req.notes.chars().count() > 4000 {
            return Err(Error::invalid("notes", "at most 4000 characters").into());
        }
        let after = crate::flow::close(&self.engine, &tenant, contact_id(&c), &req.disposition, &req.notes).await?;
        Ok(Response::new(after))
    }
}

impl Api {
    async fn queue_stats(&self, caller: &Caller, only: &str) -> Result<pb::ListQueueStatsResponse, Error> {
        let tenant = caller.own_tenant()?.clone();
        caller.require_any_role(&[Role::TenantAdmin, Role::Supervisor])?;
        let t = self.engine.registry.require_active(&tenant)?;
        if !only.is_empty() && !t.routing.queues.contains_key(only) {
            return Err(Error::NotFound(format!("tenants/{tenant}/queues/{only}")));
        }
        let mut stats: BTreeMap<&str, pb::QueueStats> = t
            .routing
            .queues
            .keys()
            .filter(|q| only.is_empty() || q.as_str() == only)
            .map(|q| (q.as_str(), pb::QueueStats { queue: q.clone(), ..Default::default() }))
            .collect();
        let now = now_ms();
        let mut conn = self.engine.store.conn()?;
        let ids: Vec<String> =
            redis::AsyncCommands::zrange(&mut conn, store::open_index(&tenant), 0, -1).await.map_err(Error::from)?;
        let keys: Vec<String> = ids.iter().map(|id| store::contact_key(&tenant, id)).collect();
        for c in self.engine.store.load_many::<pb::Contact>(&keys).await?.into_iter().flatten() {
            let Some(s) = stats.get_mut(c.queue.as_str()) else { continue };
            if !c.consult_of.is_empty() {
                s.consults += 1;
                continue;
            }
            match ContactState::try_from(c.state) {
                Ok(ContactState::Queued) => {
                    s.waiting += 1;
                    let since = c.enqueue_time.as_ref().map(wire::millis_from_pb).unwrap_or(now);
                    s.longest_wait_ms = s.longest_wait_ms.max(now - since);
                }
                Ok(ContactState::Offered) => s.offered += 1,
                Ok(ContactState::Connected) => s.connected += 1,
                Ok(ContactState::AfterContactWork) => s.after_contact_work += 1,
                _ => {}
            }
        }
        let agent_ids: Vec<String> =
            redis::AsyncCommands::smembers(&mut conn, &self.engine.agents_index).await.map_err(Error::from)?;
        let keys: Vec<String> = agent_ids.iter().map(|a| store::agent_key(a)).collect();
        for a in self.engine.store.load_many::<pb::Agent>(&keys).await?.into_iter().flatten() {
            for q in a.queues.iter().filter(|q| q.tenant == tenant.as_str()) {
                let Some(s) = stats.get_mut(q.queue.as_str()) else { continue };
                match pb::AgentState::try_from(a.state) {
                    Ok(pb::AgentState::Available) => s.agents_available += 1,
                    Ok(pb::AgentState::Away) => s.agents_away += 1,
                    _ => s.agents_offline += 1,
                }
                if a.state != pb::AgentState::Offline as i32 && !a.contacts.is_empty() {
                    s.agents_busy += 1;
                }
            }
        }
        Ok(pb::ListQueueStatsResponse { queues: stats.into_values().collect(), as_of: ts(now) })
    }

    async fn hold(&self, caller: Option<Caller>, name: &str, hold: bool) -> R<pb::Contact> {
        let caller = caller.ok_or_else(|| Status::unauthenticated("no verified caller on this request"))?;
        let (tenant, c) = self.load_contact(&caller, name).await?;
        let agent = require_holder(&caller, &c)?;
        let action = if hold { Action::Hold } else { Action::Resume };
        let kind = if hold { Kind::Held } else { Kind::Resumed };
        let engine = &self.engine;
        let (_, after) = engine
            .transition(
                &tenant,
                contact_id(&c),
                action,
                |c| {
                    if c.on_hold == hold {
                        return Err(Error::FailedPrecondition(
                            if hold { "the contact is already on hold" } else { "the contact is not on hold" }.into(),
                        ));
                    }
                    c.on_hold = hold;
                    Ok(())
                },
                |before, after, fx| {
                    engine.contact_event(fx, kind, before, after, &agent, "")?;
                    fx.notify(&agent, Notice::Contact(after.clone()));
                    Ok(())
                },
            )
            .await?;
        Ok(Response::new(after))
    }
}

// ---------------------------------------------------------------------------------------
// Agents.
// ---------------------------------------------------------------------------------------

fn activity(a: &pb::Agent, contacts: &[pb::Contact]) -> pb::AgentActivity {
    use pb::AgentActivity as A;
    let states: Vec<i32> = contacts.iter().map(|c| c.state).collect();
    if states.contains(&(ContactState::Connected as i32)) {
        A::OnContact
    } else if states.contains(&(ContactState::AfterContactWork as i32)) {
        A::AfterContactWork
    } else if !a.contacts.is_empty() {
        A::Offered
    } else {
        A::Idle
    }
}

fn validate_agent(a: &pb::Agent) -> Result<(String, rc::AgentProfile), Error> {
    let id = agent_id_from_name(&a.name)
        .map_err(|_| Error::invalid("agent.name", "must be `agents/{agent}`, id 1-40 of a-z, 0-9, - and _"))?;
    let mut v = Vec::new();
    let mut bad = |f: String, m: &str| v.push(FieldViolation::new(format!("agent.{f}"), m));
    if a.queues.is_empty() || a.queues.len() > 200 {
        bad("queues".into(), "must assign 1 to 200 queues");
    }
    for (i, q) in a.queues.iter().enumerate() {
        if TenantId::parse(&q.tenant).is_err() || !is_code(&q.queue) {
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
    let mut limits = BTreeMap::new();
    for (i, c) in a.capacity.iter().enumerate() {
        match wire::channel_from_pb(c.channel) {
            Ok(ch) if (1..=20).contains(&c.max_contacts) => {
                if limits.insert(ch, c).is_some() {
                    bad(format!("capacity[{i}].channel"), "appears twice");
                }
            }
            Ok(_) => bad(format!("capacity[{i}].max_contacts"), "must be 1 to 20"),
            Err(_) => bad(format!("capacity[{i}].channel"), "is not a channel"),
        }
    }
    if limits.is_empty() {
        bad("capacity".into(), "must allow at least one channel");
    }
    if !v.is_empty() {
        return Err(Error::InvalidArgument(v));
    }
    let profile = wire::profile_from_pb(centralita_proto::routing::v1::AgentProfile {
        agent_id: id.clone(),
        queues: a
            .queues
            .iter()
            .map(|q| centralita_proto::routing::v1::QueueRef { tenant: q.tenant.clone(), queue: q.queue.clone() })
            .collect(),
        skills: a.skills.clone().into_iter().collect(),
        languages: a.languages.clone(),
        capacity: a
            .capacity
            .iter()
            .map(|c| centralita_proto::routing::v1::CapacityLimit {
                channel: c.channel,
                max_contacts: c.max_contacts,
                exclusive: c.exclusive,
            })
            .collect(),
        max_total_contacts: a.max_total_contacts,
    })
    .map_err(|e| Error::invalid("agent", e))?;
    Ok((id, profile))
}

/// How long an agent stays signed out before it may change agent pool: an offer made just
/// before it signed out reaches its contact list through the outbox within that time, so
/// the agent cannot be free in a new pool while the old one still books it.
const POOL_MOVE_QUIET_MS: i64 = 10_000;

/// The agent may change pool: signed out for `POOL_MOVE_QUIET_MS`, holding no contacts.
fn movable(a: &pb::Agent, now: i64) -> bool {
    let since = a.state_time.as_ref().map(wire::millis_from_pb).unwrap_or(0);
    a.state == pb::AgentState::Offline as i32 && a.contacts.is_empty() && now - since >= POOL_MOVE_QUIET_MS
}

/// The part of an agent a tenant's supervisor may see: only its assignments to that tenant.
fn scoped(mut a: pb::Agent, caller: &Caller) -> Option<pb::Agent> {
    if caller.is_bpo_admin() || caller.agent_id.as_deref() == a.name.strip_prefix("agents/") {
        return Some(a);
    }
    let tenant = caller.tenant.as_ref()?.to_string();
    if !caller.has_role(Role::Supervisor) && !caller.has_role(Role::TenantAdmin) {
        return None;
    }
    a.queues.retain(|q| q.tenant == tenant);
    if a.queues.is_empty() {
        return None;
    }
    let prefix = format!("tenants/{tenant}/");
    a.contacts.retain(|c| c.starts_with(&prefix));
    Some(a)
}

type AgentStream = Pin<Box<dyn Stream<Item = Result<pb::AgentStreamEvent, Status>> + Send>>;

impl Api {
    async fn set_state(
        &self,
        caller: &Caller,
        id: &str,
        state: pb::AgentState,
        reason: &str,
        kind: pb::agent_event::Kind,
    ) -> Result<pb::Agent, Error> {
        authorize_agent(caller, id)?;
        let now = now_ms();
        let engine = &self.engine;
        let (agent, ()) = engine
            .update_agent(id, |current, fx| {
                let mut a = current.ok_or_else(|| Error::NotFound(format!("agents/{id}")))?;
                let was = a.state;
                if kind == pb::agent_event::Kind::StateChanged && was == pb::AgentState::Offline as i32 {
                    return Err(Error::FailedPrecondition("the agent is not signed in".into()));
                }
                if state == pb::AgentState::Offline && !a.contacts.is_empty() {
                    return Err(Error::FailedPrecondition("the agent still holds contacts".into()));
                }
                if state == pb::AgentState::Away {
                    let allowed = BUILT_IN_AWAY_REASONS.contains(&reason)
                        || a.queues.iter().any(|q| {
                            TenantId::parse(&q.tenant)
                                .ok()
                                .and_then(|t| self.engine.registry.get(&t))
                                .is_some_and(|t| t.routing.is_away_reason(reason))
                        });
                    if !allowed {
                        return Err(Error::invalid(
                            "away_reason",
                            format!("`{reason}` is not an away reason of the agent's tenants"),
                        ));
                    }
                }
                a.state = state as i32;
                a.away_reason = if state == pb::AgentState::Away { reason.to_owned() } else { String::new() };
                a.state_time = ts(now);
                let aid = rc::AgentId(id.to_owned());
                if state == pb::AgentState::Available && was != pb::AgentState::Available as i32 {
                    engine.route_agent(fx, &a, &Input::AgentReady { agent: aid });
                } else if state != pb::AgentState::Available && was == pb::AgentState::Available as i32 {
                    engine.route_agent(fx, &a, &Input::AgentNotReady { agent: aid });
                }
                engine.agent_event(fx, kind, &a);
                fx.notify(id, Notice::Agent(a.clone()));
                Ok((a, ()))
            })
            .await?;
        Ok(agent)
    }
}

#[tonic::async_trait]
impl pb::agent_service_server::AgentService for Api {
    #[tracing::instrument(skip_all, fields(agent))]
    async fn upsert_agent(&self, request: Request<pb::UpsertAgentRequest>) -> R<pb::Agent> {
        let caller = caller(&request)?.clone();
        if !caller.is_bpo_admin() {
            return Err(Error::PermissionDenied {
                reason: centralita_platform::error::Reason::RoleMissing,
                message: "only a BPO admin manages agents".into(),
            }
            .into());
        }
        let input = request.into_inner().agent.ok_or_else(|| Error::invalid("agent", "is required"))?;
        let (id, profile) = validate_agent(&input)?;
        let pool = self.engine.pool_of_queues(&input.queues, "agent.queues").await?;
        // Indexed before it is written: the index may name an agent without a record.
        let mut conn = self.engine.store.conn()?;
        let _: i64 =
            redis::AsyncCommands::sadd(&mut conn, &self.engine.agents_index, &id).await.map_err(Error::from)?;
        let engine = &self.engine;
        let (agent, ()) = engine
            .update_agent(&id, |current, fx| {
                let mut a = input.clone();
                let cur = current.unwrap_or(pb::Agent { state: pb::AgentState::Offline as i32, ..Default::default() });
                let movable = movable(&cur, now_ms());
                a.state = cur.state;
                a.away_reason = cur.away_reason;
                a.contacts = cur.contacts;
                a.state_time = cur.state_time;
                a.activity = 0;
                // A signed-in agent, one still holding a contact or one signed out moments
                // ago stays in its pool (a router may have it booked); any other takes its
                // queues' pool now. (Tenants' pools are pinned, so only an upsert moves an
                // agent; records from before pools have none, which is the default pool.)
                a.agent_pool = match cur.agent_pool {
                    _ if movable => pool.clone(),
                    // Signed in before pools were recorded: the default pool.
                    p if p.is_empty() => DEFAULT_AGENT_POOL.to_owned(),
                    p => p,
                };
                if a.agent_pool != pool {
                    return Err(Error::FailedPrecondition(format!(
                        "agent {id} is in agent pool {} (signed in, holding contacts, or signed out less than {} s ago); its new queues are in pool {pool}: sign it out first",
                        a.agent_pool,
                        POOL_MOVE_QUIET_MS / 1000
                    )));
                }
                engine.route_agent(fx, &a, &Input::AgentUpserted(profile.clone()));
                engine.agent_event(fx, pb::agent_event::Kind::Upserted, &a);
                Ok((a, ()))
            })
            .await?;
        Ok(Response::new(agent))
    }

    async fn get_agent(&self, request: Request<pb::GetAgentRequest>) -> R<pb::Agent> {
        let caller = caller(&request)?.clone();
        let id = agent_id_from_name(&request.get_ref().name)?;
        let not_found = || Status::from(Error::NotFound(format!("agents/{id}")));
        let (_, mut a) = self.engine.store.load::<pb::Agent>(&store::agent_key(&id)).await?.ok_or_else(not_found)?;
        let mut contacts = Vec::new();
        for name in &a.contacts {
            if let Ok((t, cid)) = parse_contact_name(name) {
                if let Some((_, c)) = self.engine.store.load::<pb::Contact>(&store::contact_key(&t, &cid)).await? {
                    contacts.push(c);
                }
            }
        }
        a.activity = activity(&a, &contacts) as i32;
        Ok(Response::new(scoped(a, &caller).ok_or_else(not_found)?))
    }

    async fn list_agents(&self, request: Request<pb::ListAgentsRequest>) -> R<pb::ListAgentsResponse> {
        let caller = caller(&request)?.clone();
        let req = request.into_inner();
        let page = match req.page_size {
            n if n < 0 => return Err(Error::invalid("page_size", "must not be negative").into()),
            0 => 100,
            n => (n as usize).min(MAX_PAGE),
        };
        let mut conn = self.engine.store.conn()?;
        let mut ids: Vec<String> =
            redis::AsyncCommands::smembers(&mut conn, &self.engine.agents_index).await.map_err(Error::from)?;
        ids.sort();
        let mut agents = Vec::new();
        let mut next_page_token = String::new();
        for id in ids.into_iter().filter(|id| req.page_token.is_empty() || *id > req.page_token) {
            if let Some((_, a)) = self.engine.store.load::<pb::Agent>(&store::agent_key(&id)).await? {
                if let Some(a) = scoped(a, &caller) {
                    if agents.len() == page {
                        next_page_token = agents
                            .last()
                            .map(|a: &pb::Agent| a.name.trim_start_matches("agents/").to_owned())
                            .unwrap_or_default();
                        break;
                    }
                    agents.push(a);
                }
            }
        }
        Ok(Response::new(pb::ListAgentsResponse { agents, next_page_token }))
    }

    async fn sign_in(&self, request: Request<pb::SignInRequest>) -> R<pb::Agent> {
        let caller = caller(&request)?.clone();
        let req = request.into_inner();
        let id = agent_id_from_name(&req.name)?;
        let (state, reason) =
            if req.available { (pb::AgentState::Available, "") } else { (pb::AgentState::Away, SIGNED_IN) };
        Ok(Response::new(self.set_state(&caller, &id, state, reason, pb::agent_event::Kind::SignedIn).await?))
    }

    async fn set_agent_state(&self, request: Request<pb::SetAgentStateRequest>) -> R<pb::Agent> {
        let caller = caller(&request)?.clone();
        let req = request.into_inner();
        let id = agent_id_from_name(&req.name)?;
        let state = match pb::AgentState::try_from(req.state) {
            Ok(s @ (pb::AgentState::Available | pb::AgentState::Away)) => s,
            _ => return Err(Error::invalid("state", "must be AVAILABLE or AWAY").into()),
        };
        Ok(Response::new(
            self.set_state(&caller, &id, state, &req.away_reason, pb::agent_event::Kind::StateChanged).await?,
        ))
    }

    async fn sign_out(&self, request: Request<pb::SignOutRequest>) -> R<pb::Agent> {
        let caller = caller(&request)?.clone();
        let id = agent_id_from_name(&request.get_ref().name)?;
        Ok(Response::new(
            self.set_state(&caller, &id, pb::AgentState::Offline, "", pb::agent_event::Kind::SignedOut).await?,
        ))
    }

    type StreamAgentEventsStream = AgentStream;

    async fn stream_agent_events(&self, request: Request<pb::StreamAgentEventsRequest>) -> R<AgentStream> {
        let caller = caller(&request)?.clone();
        let id = agent_id_from_name(&request.get_ref().name)?;
        authorize_agent(&caller, &id)?;
        // Subscribe before reading the current state, so nothing falls in between.
        let notices = self.engine.notices.subscribe(&id);
        let (_, agent) = self
            .engine
            .store
            .load::<pb::Agent>(&store::agent_key(&id))
            .await?
            .ok_or_else(|| Error::NotFound(format!("agents/{id}")))?;
        let mut initial = vec![pb::AgentStreamEvent { event: Some(Notice::Agent(agent.clone())) }];
        for name in &agent.contacts {
            if let Ok((t, cid)) = parse_contact_name(name) {
                if let Some((_, c)) = self.engine.store.load::<pb::Contact>(&store::contact_key(&t, &cid)).await? {
                    let event =
                        if c.state == ContactState::Offered as i32 { Notice::Offer(c) } else { Notice::Contact(c) };
                    initial.push(pb::AgentStreamEvent { event: Some(event) });
                }
            }
        }
        let presence = Presence::start(&self.engine, &id).await?;
        Ok(Response::new(agent_stream(initial, notices, presence)))
    }
}

/// An open event stream is the agent's presence: while it is open the agent's presence
/// timer is pushed `presence_grace` ahead every third of that; once the stream closes (the
/// client went away, or HTTP/2 keepalive found the connection dead) the timer runs out and
/// the agent is made away as disconnected ([`crate::flow`]).
struct Presence {
    engine: Engine,
    member: String,
}

impl Presence {
    async fn start(engine: &Engine, agent: &str) -> Result<Option<Self>, Error> {
        if engine.presence_grace.is_zero() {
            return Ok(None);
        }
        let p = Presence { engine: engine.clone(), member: crate::engine::presence_timer(agent) };
        p.refresh().await?;
        Ok(Some(p))
    }

    fn every(&self) -> Duration {
        self.engine.presence_grace / 3
    }

    async fn refresh(&self) -> Result<(), Error> {
        let due = now_ms() + self.engine.presence_grace.as_millis() as i64;
        self.engine.store.zadd(&self.engine.deadlines, &self.member, due).await
    }
}

/// The initial events, then every notice of the agent (a lagging subscriber is told to
/// reconnect, which replays the current state), keeping the agent's presence fresh.
fn agent_stream(
    initial: Vec<pb::AgentStreamEvent>,
    mut notices: tokio::sync::broadcast::Receiver<pb::AgentStreamEvent>,
    presence: Option<Presence>,
) -> AgentStream {
    use tokio::sync::broadcast::error::RecvError;
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        for e in initial {
            if tx.send(Ok(e)).await.is_err() {
                return;
            }
        }
        let every = presence.as_ref().map_or(Duration::from_secs(3600), Presence::every);
        let mut refresh = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tokio::select! {
                notice = notices.recv() => match notice {
                    Ok(e) => {
                        if tx.send(Ok(e)).await.is_err() {
                            return;
                        }
                    }
                    Err(RecvError::Lagged(_)) => {
                        let _ = tx.send(Err(Status::aborted("the stream fell behind; reconnect to resume"))).await;
                        return;
                    }
                    Err(RecvError::Closed) => return,
                },
                _ = refresh.tick() => {
                    if let Some(p) = &presence {
                        if let Err(e) = p.refresh().await {
                            // A missed refresh is retried at the next tick, well within the grace.
                            tracing::warn!(error = %e, "agent presence not refreshed");
                        }
                    }
                }
                // The client is gone: stop refreshing, so the presence timer runs out.
                _ = tx.closed() => return,
            }
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

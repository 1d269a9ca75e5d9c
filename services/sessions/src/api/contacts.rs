//! `centralita.sessions.v1.ContactService`.

use std::collections::BTreeMap;

use centralita_platform::auth::{caller, Caller, Role};
use centralita_platform::error::Error;
use centralita_platform::queue::{is_code, QueueConfig};
use centralita_platform::tenant::{Tenant, TenantId};
use centralita_proto::sessions::v1 as pb;
use centralita_routing_contract::wire::millis_to_pb;
use tonic::{Request, Response};
use tracing::Instrument as _;

use super::{page_size, page_token, page_token_value, require_holder, validate, Api, PageKind, R};
use crate::core::consult::Outcome;
use crate::core::contact::Target;
use crate::core::{self, AgentId, Contact, ContactId, ContactRef, ContactState, OfferId, Refusal};
use crate::store::Outbox;

/// The span a command on contact `record` runs in: a child of the contact's trace (the call
/// that created it) linked to the calling trace, so an agent's accept, a supervisor's end or
/// media's hang-up continue the contact's one trace, and their own calls still lead to it.
fn command_span(record: &Contact, command: &'static str) -> tracing::Span {
    let span = tracing::info_span!(
        "contact_command",
        command,
        tenant = record.tenant.as_str(),
        contact = record.id.0.as_str(),
    );
    centralita_platform::telemetry::continue_stored(&span, &record.trace_parent);
    span
}

/// Where a transfer or a consult goes (the request's `target`).
enum Destination {
    Queue(String),
    Agent(String),
}

impl Api {
    /// Checks where the holder `agent` of `c` sends it: a queue of the tenant, or another
    /// agent through the contact's queue, which needs a preferred-agent window (`verb`
    /// names the move in that error). Returns the target and its queue's configuration.
    fn destination(
        &self,
        tenant: &TenantId,
        c: &Contact,
        agent: &AgentId,
        to: Option<Destination>,
        verb: &str,
    ) -> Result<(Target, QueueConfig), Error> {
        let t = self.engine.registry.require_active(tenant)?;
        let target = match to {
            Some(Destination::Queue(q)) if t.routing.queues.contains_key(&q) => Target { queue: q, agent: None },
            Some(Destination::Queue(q)) => {
                return Err(Error::invalid("queue", format!("`{q}` is not a queue of tenant {}", t.id)))
            }
            Some(Destination::Agent(a)) if is_code(&a) && a != agent.0 => {
                Target { queue: c.queue.clone(), agent: Some(AgentId(a)) }
            }
            Some(Destination::Agent(_)) => return Err(Error::invalid("agent_id", "must be another agent's id")),
            None => return Err(Error::invalid("target", "a queue or an agent is required")),
        };
        let q = t.routing.queues.get(&target.queue).cloned().ok_or_else(|| Refusal::QueueGone(target.queue.clone()))?;
        if target.agent.is_some() && q.preferred_agent_window.is_zero() {
            return Err(Error::FailedPrecondition(format!(
                "queue `{}` has no preferred-agent window to {verb} an agent",
                target.queue
            )));
        }
        Ok((target, q))
    }

    /// The contact `name` as stored and its holder, who must be the caller; the span of
    /// the call records the tenant (the contact is named by the command's span, in the
    /// contact's trace: [`command_span`]).
    async fn held(&self, caller: &Caller, name: &str) -> Result<(ContactRef, Contact, AgentId), Error> {
        let (c, record) = self.load_contact(caller, name).await?;
        tracing::Span::current().record("tenant", c.tenant.as_str());
        let agent = require_holder(caller, &record)?;
        Ok((c, record, agent))
    }

    /// Applies `f` (a core command) to contact `c` and answers with the contact written.
    async fn apply(
        &self,
        c: &ContactRef,
        f: impl FnMut(&Contact) -> Result<core::Change<Contact>, Refusal>,
    ) -> R<pb::Contact> {
        let (_, after) = self.engine.transition(c, f).await.map_err(Error::from)?;
        Ok(Response::new(pb::Contact::from(&after)))
    }

    async fn hold(&self, request: &Request<impl Sized>, name: &str, hold: bool) -> R<pb::Contact> {
        let caller = caller(request)?.clone();
        let (c, record, agent) = self.held(&caller, name).await?;
        let span = command_span(&record, if hold { "hold" } else { "resume" });
        self.apply(&c, |r| if hold { core::contact::hold(r, &agent) } else { core::contact::resume(r, &agent) })
            .instrument(span)
            .await
    }

    async fn pause_recording(&self, request: &Request<impl Sized>, name: &str, pause: bool) -> R<pb::Contact> {
        let caller = caller(request)?.clone();
        let (c, record, agent) = self.held(&caller, name).await?;
        let t = self.engine.registry.require_active(&c.tenant)?;
        if pause && !t.recording.allow_pause {
            return Err(Error::FailedPrecondition(format!(
                "tenant {} does not allow pausing recordings (recording.allowPause)",
                c.tenant
            ))
            .into());
        }
        if pause && record.channel != core::Channel::Voice && !t.recording.chat_transcripts {
            return Err(Error::FailedPrecondition(format!(
                "tenant {} keeps no transcripts of conversations (recording.chatTranscripts)",
                c.tenant
            ))
            .into());
        }
        let span = command_span(&record, if pause { "pause_recording" } else { "resume_recording" });
        self.apply(&c, |r| core::contact::pause_recording(r, &agent, pause)).instrument(span).await
    }

    async fn queue_stats(&self, caller: &Caller, only: &str) -> Result<pb::ListQueueStatsResponse, Error> {
        let tenant = caller.own_tenant()?.clone();
        caller.require_any_role(&[Role::TenantAdmin, Role::Supervisor])?;
        let now = self.engine.clock.now();
        let (stats, _) = self.tenant_queue_stats(&tenant, only, now).await?;
        Ok(pb::ListQueueStatsResponse { queues: stats, as_of: Some(millis_to_pb(now)) })
    }

    /// The live state of `tenant`'s queues (`only` one, or all), ordered by queue id, and
    /// the agents read to count them (every agent of the BPO, as stored).
    async fn tenant_queue_stats(
        &self,
        tenant: &TenantId,
        only: &str,
        now: core::Millis,
    ) -> Result<(Vec<pb::QueueStats>, Vec<core::Agent>), Error> {
        let t = self.engine.registry.require_active(tenant)?;
        if !only.is_empty() && !t.routing.queues.contains_key(only) {
            return Err(Error::NotFound(format!("tenants/{tenant}/queues/{only}")));
        }
        let contacts = self.open_records(tenant).await?;
        self.queue_stats_of(&t, only, &contacts, now).await
    }

    /// The tenant's open contacts as stored, oldest first.
    async fn open_records(&self, tenant: &TenantId) -> Result<Vec<Contact>, Error> {
        let (ids, _) = self.engine.store.open_contacts(tenant, 0).await?;
        let refs: Vec<ContactRef> =
            ids.into_iter().map(|id| ContactRef { tenant: tenant.clone(), id: ContactId(id) }).collect();
        Ok(self.engine.store.contacts(&refs).await?.into_iter().flatten().collect())
    }

    /// [`Self::tenant_queue_stats`] of the tenant's open `contacts`.
    async fn queue_stats_of(
        &self,
        t: &Tenant,
        only: &str,
        contacts: &[Contact],
        now: core::Millis,
    ) -> Result<(Vec<pb::QueueStats>, Vec<core::Agent>), Error> {
        let tenant = &t.id;
        let mut stats: BTreeMap<&str, pb::QueueStats> = t
            .routing
            .queues
            .keys()
            .filter(|q| only.is_empty() || q.as_str() == only)
            .map(|q| (q.as_str(), pb::QueueStats { queue: q.clone(), ..Default::default() }))
            .collect();
        for c in contacts {
            let Some(s) = stats.get_mut(c.queue.as_str()) else { continue };
            if c.consult_of.is_some() {
                s.consults += 1;
                continue;
            }
            match c.state {
                ContactState::Queued => {
                    s.waiting += 1;
                    s.longest_wait_ms = s.longest_wait_ms.max(now - c.enqueued_at.unwrap_or(now));
                }
                ContactState::Offered => s.offered += 1,
                ContactState::Connected => s.connected += 1,
                ContactState::AfterContactWork => s.after_contact_work += 1,
                _ => {}
            }
        }
        let ids = self.engine.store.agent_ids().await?;
        let agents: Vec<core::Agent> = self.engine.store.agents(&ids).await?.into_iter().flatten().collect();
        for a in &agents {
            for q in a.queues.iter().filter(|q| q.tenant == tenant.as_str()) {
                let Some(s) = stats.get_mut(q.queue.as_str()) else { continue };
                match a.state {
                    core::AgentState::Available => s.agents_available += 1,
                    core::AgentState::Away => s.agents_away += 1,
                    core::AgentState::Offline => s.agents_offline += 1,
                }
                if a.state != core::AgentState::Offline && !a.contacts.is_empty() {
                    s.agents_busy += 1;
                }
            }
        }
        Ok((stats.into_values().collect(), agents))
    }

    /// Where contact `name` stands in its queue and the wait it can expect
    /// (`GetQueuePosition`, [`core::position`]).
    async fn queue_position(&self, caller: &Caller, name: &str) -> Result<pb::QueuePosition, Error> {
        let (c, record) = self.load_contact(caller, name).await?;
        let t = self.engine.registry.require_active(&c.tenant)?;
        let q = t.routing.queues.get(&record.queue).ok_or_else(|| Refusal::QueueGone(record.queue.clone()))?;
        let now = self.engine.clock.now();
        let contacts = self.open_records(&c.tenant).await?;
        let position = core::position::position(&record, &contacts, q, now);
        let (stats, _) = self.queue_stats_of(&t, &record.queue, &contacts, now).await?;
        let stats = stats.into_iter().next().unwrap_or_default();
        let mean_handle = core::position::mean_handle(&self.engine.store.handle_times(&c.tenant, &record.queue).await?);
        let expected = core::position::expected_wait(position, stats.agents_available, mean_handle);
        Ok(pb::QueuePosition {
            queue: record.queue.clone(),
            position,
            waiting: stats.waiting,
            agents_available: stats.agents_available,
            mean_handle_ms: mean_handle,
            expected_wait_ms: expected.unwrap_or(-1),
        })
    }

    /// Where the holder of contact `name` may transfer or consult it
    /// (`ListTransferTargets`).
    async fn transfer_targets(&self, caller: &Caller, name: &str) -> Result<pb::ListTransferTargetsResponse, Error> {
        let (c, record) = self.load_contact(caller, name).await?;
        if !caller.is_bpo_admin() && !caller.has_role(Role::Supervisor) && !caller.has_role(Role::TenantAdmin) {
            require_holder(caller, &record)?;
        }
        let (stats, agents) = self.tenant_queue_stats(&c.tenant, "", self.engine.clock.now()).await?;
        let queues = stats
            .into_iter()
            .map(|s| pb::TransferQueue {
                queue: s.queue,
                waiting: s.waiting,
                longest_wait_ms: s.longest_wait_ms,
                agents_available: s.agents_available,
            })
            .collect();
        let tenant = c.tenant.as_str();
        let agents: Vec<core::Agent> = agents
            .into_iter()
            .filter(|a| a.state != core::AgentState::Offline && Some(a.id.0.as_str()) != caller.agent_id.as_deref())
            .filter(|a| a.queues.iter().any(|q| q.tenant == tenant))
            .collect();
        // What each holds, read at once, for its activity.
        let refs: Vec<ContactRef> = agents.iter().flat_map(|a| a.contacts.iter().cloned()).collect();
        let held: BTreeMap<ContactRef, Contact> = refs
            .iter()
            .cloned()
            .zip(self.engine.store.contacts(&refs).await?)
            .filter_map(|(r, c)| Some((r, c?)))
            .collect();
        let mut directory: Vec<pb::TransferAgent> = agents
            .iter()
            .map(|a| {
                let contacts: Vec<Contact> = a.contacts.iter().filter_map(|r| held.get(r).cloned()).collect();
                pb::TransferAgent {
                    name: format!("agents/{}", a.id),
                    display_name: a.display_name.clone(),
                    state: pb::AgentState::from(a.state) as i32,
                    activity: pb::AgentActivity::from(a.activity(&contacts)) as i32,
                    queues: a.queues.iter().filter(|q| q.tenant == tenant).map(|q| q.queue.clone()).collect(),
                }
            })
            .collect();
        let available = pb::AgentState::Available as i32;
        directory.sort_by(|a, b| {
            (a.state != available, &a.display_name, &a.name).cmp(&(b.state != available, &b.display_name, &b.name))
        });
        Ok(pb::ListTransferTargetsResponse { queues, agents: directory })
    }
}

fn queue_of(t: &Tenant, queue: &str) -> Result<QueueConfig, Error> {
    t.routing
        .queues
        .get(queue)
        .cloned()
        .ok_or_else(|| Error::invalid("contact.queue", format!("`{queue}` is not a queue of tenant {}", t.id)))
}

#[tonic::async_trait]
impl pb::contact_service_server::ContactService for Api {
    #[tracing::instrument(skip_all, fields(tenant, contact))]
    async fn create_contact(&self, request: Request<pb::CreateContactRequest>) -> R<pb::Contact> {
        let caller = caller(&request)?.clone();
        let tenant = caller.own_tenant()?.clone();
        tracing::Span::current().record("tenant", tenant.as_str());
        caller.require_any_role(&[Role::TenantAdmin, Role::Supervisor, Role::Channel])?;
        let req = request.into_inner();
        let input = req.contact.ok_or_else(|| Error::invalid("contact", "is required"))?;
        let t = self.engine.registry.require_active(&tenant)?;
        let new = validate::new_contact(&t, &input)?;
        // Outside business hours live channels are turned away (the IVR or chat widget tells
        // the customer); email, SMS, social and tasks queue and wait for the agents.
        let live = matches!(new.channel, core::Channel::Voice | core::Channel::Chat);
        if live && !t.business_hours.is_open(chrono::Utc::now()) {
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
            if let Some(existing) = self.engine.store.reserve_request(&tenant, &req.request_id, &id).await? {
                let c = ContactRef { tenant: tenant.clone(), id: ContactId(existing.clone()) };
                if let Some(written) = self.engine.store.contact(&c).await? {
                    return Ok(Response::new(pb::Contact::from(&written)));
                }
                id = existing;
            }
        }
        tracing::Span::current().record("contact", id.as_str());
        let now = self.engine.clock.now();
        let q = queue_of(&t, &new.queue)?;
        let pool = self.pools.of_tenant(&tenant).await?;
        let contact = Contact {
            direction: new.direction,
            priority: new.priority,
            tier: new.tier,
            language: new.language,
            required_skills: new.required_skills,
            attributes: new.attributes,
            preferred_agent: new.preferred_agent,
            customer_identities: new.customer_identities,
            trace_parent: centralita_platform::telemetry::current_trace_headers()
                .remove("traceparent")
                .unwrap_or_default(),
            // A call the tenant records on demand starts with its recording paused: the
            // agent's ResumeRecording starts it (media records nothing before).
            recording_paused: new.channel == core::Channel::Voice
                && t.recording.voice_call(&id, &new.queue) == centralita_platform::tenant::VoiceRecording::OnDemand,
            ..Contact::queued(tenant.clone(), ContactId(id.clone()), new.channel, new.queue.clone(), pool, now)
        };
        // Listed before it is written: a listing skips ids without a record.
        self.engine.store.index_open(&contact.key(), now).await?;
        let written = self.engine.create(core::contact::create(contact, &q, now)).await?;
        Ok(Response::new(pb::Contact::from(&written)))
    }

    async fn get_contact(&self, request: Request<pb::GetContactRequest>) -> R<pb::Contact> {
        let caller = caller(&request)?.clone();
        let (_, c) = self.load_contact(&caller, &request.get_ref().name).await?;
        Ok(Response::new(pb::Contact::from(&c)))
    }

    async fn list_contacts(&self, request: Request<pb::ListContactsRequest>) -> R<pb::ListContactsResponse> {
        let caller = caller(&request)?.clone();
        let tenant = caller.own_tenant()?.clone();
        caller.require_any_role(&[Role::TenantAdmin, Role::Supervisor])?;
        let req = request.into_inner();
        let page = page_size(req.page_size)?;
        let state = match req.state {
            0 => None,
            s => Some(ContactState::try_from(s).map_err(|e| Error::invalid("state", e.message))?),
        };
        let after = match page_token_value(PageKind::Contacts, &req.page_token)? {
            None => 0,
            Some(p) => p.parse().map_err(|_| Error::invalid("page_token", "is not a token from this API"))?,
        };
        let (ids, total) = self.engine.store.open_contacts(&tenant, after).await?;
        let mut contacts = Vec::new();
        let mut position = after;
        'pages: for chunk in ids.chunks(page.max(50)) {
            let refs: Vec<ContactRef> =
                chunk.iter().map(|id| ContactRef { tenant: tenant.clone(), id: ContactId(id.clone()) }).collect();
            for c in self.engine.store.contacts(&refs).await? {
                position += 1;
                if let Some(c) =
                    c.filter(|c| (req.queue.is_empty() || c.queue == req.queue) && state.is_none_or(|s| c.state == s))
                {
                    contacts.push(pb::Contact::from(&c));
                }
                if contacts.len() == page {
                    break 'pages;
                }
            }
        }
        let next_page_token = if position < total && contacts.len() == page {
            page_token(PageKind::Contacts, &position.to_string())
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListContactsResponse { contacts, next_page_token }))
    }

    #[tracing::instrument(skip_all, fields(tenant))]
    async fn accept_contact(&self, request: Request<pb::AcceptContactRequest>) -> R<pb::Contact> {
        let caller = caller(&request)?.clone();
        let req = request.into_inner();
        let (c, record, agent) = self.held(&caller, &req.name).await?;
        let offer = OfferId(req.offer_id);
        let now = self.engine.clock.now();
        self.apply(&c, |r| core::contact::accept(r, &agent, &offer, now))
            .instrument(command_span(&record, "accept"))
            .await
    }

    #[tracing::instrument(skip_all, fields(tenant))]
    async fn reject_contact(&self, request: Request<pb::RejectContactRequest>) -> R<pb::Contact> {
        let caller = caller(&request)?.clone();
        let req = request.into_inner();
        let (c, record, agent) = self.held(&caller, &req.name).await?;
        let offer = OfferId(req.offer_id);
        self.apply(&c, |r| core::contact::reject(r, &agent, &offer)).instrument(command_span(&record, "reject")).await
    }

    async fn hold_contact(&self, request: Request<pb::HoldContactRequest>) -> R<pb::Contact> {
        let name = request.get_ref().name.clone();
        self.hold(&request, &name, true).await
    }

    async fn resume_contact(&self, request: Request<pb::ResumeContactRequest>) -> R<pb::Contact> {
        let name = request.get_ref().name.clone();
        self.hold(&request, &name, false).await
    }

    #[tracing::instrument(skip_all, fields(tenant))]
    async fn pause_recording(&self, request: Request<pb::PauseRecordingRequest>) -> R<pb::Contact> {
        let name = request.get_ref().name.clone();
        Api::pause_recording(self, &request, &name, true).await
    }

    #[tracing::instrument(skip_all, fields(tenant))]
    async fn resume_recording(&self, request: Request<pb::ResumeRecordingRequest>) -> R<pb::Contact> {
        let name = request.get_ref().name.clone();
        Api::pause_recording(self, &request, &name, false).await
    }

    #[tracing::instrument(skip_all, fields(tenant))]
    async fn transfer_contact(&self, request: Request<pb::TransferContactRequest>) -> R<pb::Contact> {
        use pb::transfer_contact_request::Target as T;
        let caller = caller(&request)?.clone();
        let req = request.into_inner();
        let (c, record, agent) = self.held(&caller, &req.name).await?;
        let to = req.target.map(|t| match t {
            T::Queue(q) => Destination::Queue(q),
            T::AgentId(a) => Destination::Agent(a),
        });
        let (target, q) = self.destination(&c.tenant, &record, &agent, to, "transfer to")?;
        let now = self.engine.clock.now();
        self.apply(&c, |r| core::contact::transfer(r, &agent, &target, &q, now))
            .instrument(command_span(&record, "transfer"))
            .await
    }

    #[tracing::instrument(skip_all, fields(tenant))]
    async fn consult_contact(&self, request: Request<pb::ConsultContactRequest>) -> R<pb::Contact> {
        use pb::consult_contact_request::Target as T;
        let caller = caller(&request)?.clone();
        let req = request.into_inner();
        let (c, record, agent) = self.held(&caller, &req.name).await?;
        let to = req.target.map(|t| match t {
            T::Queue(q) => Destination::Queue(q),
            T::AgentId(a) => Destination::Agent(a),
        });
        let (target, q) = self.destination(&c.tenant, &record, &agent, to, "consult")?;
        let leg_id = ContactId(uuid::Uuid::now_v7().simple().to_string());
        let now = self.engine.clock.now();
        async {
            // The leg of the attempt that was written (the customer's record may be retried).
            let mut leg = None;
            self.engine
                .transition(&c, |r| {
                    let consult = core::consult::consult(r, &agent, &target, &q, leg_id.clone(), now)?;
                    leg = Some(consult.leg);
                    Ok(consult.customer)
                })
                .await
                .map_err(Error::from)?;
            let leg = leg.ok_or_else(|| Error::internal("consult written without its leg"))?;
            self.engine.store.index_open(&leg.record.key(), now).await?;
            let written = self.engine.create(leg).await?;
            Ok(Response::new(pb::Contact::from(&written)))
        }
        .instrument(command_span(&record, "consult"))
        .await
    }

    #[tracing::instrument(skip_all, fields(tenant))]
    async fn complete_consult(&self, request: Request<pb::CompleteConsultRequest>) -> R<pb::Contact> {
        use pb::complete_consult_request::Outcome as O;
        let caller = caller(&request)?.clone();
        let req = request.into_inner();
        let (c, record, agent) = self.held(&caller, &req.name).await?;
        let outcome = match O::try_from(req.outcome).unwrap_or_default() {
            O::Transfer => Outcome::Transfer,
            O::Conference => Outcome::Conference,
            O::Cancel => Outcome::Cancel,
            O::Unspecified => return Err(Error::invalid("outcome", "TRANSFER, CONFERENCE or CANCEL").into()),
        };
        let leg_id = record.consult_leg.clone().ok_or(Refusal::NoConsultLeg).map_err(Error::from)?;
        let leg = ContactRef { tenant: c.tenant.clone(), id: leg_id.clone() };
        async {
            // The leg's agent, for a transfer or conference: it must have accepted the leg.
            let consulted = match outcome {
                Outcome::Transfer | Outcome::Conference => {
                    let leg_record = self.engine.store.contact(&leg).await?;
                    let consulted = core::consult::consulted_agent(leg_record.as_ref()).map_err(Error::from)?;
                    // The leg's own effects (its acceptance, on the routing log) go out
                    // before the ones below, which build on them.
                    self.engine.drain(&Outbox::contact(&leg), true).await?;
                    Some(consulted)
                }
                Outcome::Cancel => None,
            };
            let now = self.engine.clock.now();
            self.apply(&c, |r| core::consult::complete_consult(r, &agent, &leg_id, outcome, consulted.as_ref(), now))
                .await
        }
        .instrument(command_span(&record, "complete_consult"))
        .await
    }

    #[tracing::instrument(skip_all, fields(tenant))]
    async fn monitor_contact(&self, request: Request<pb::MonitorContactRequest>) -> R<pb::Contact> {
        use core::MonitorMode as M;
        let caller = caller(&request)?.clone();
        caller.require_any_role(&[Role::TenantAdmin, Role::Supervisor])?;
        let req = request.into_inner();
        let mode = match pb::MonitorMode::try_from(req.mode).unwrap_or_default() {
            pb::MonitorMode::Listen => M::Listen,
            pb::MonitorMode::Whisper => M::Whisper,
            pb::MonitorMode::Barge => M::Barge,
            pb::MonitorMode::Unspecified => return Err(Error::invalid("mode", "LISTEN, WHISPER or BARGE").into()),
        };
        let (c, record) = self.load_contact(&caller, &req.name).await?;
        tracing::Span::current().record("tenant", c.tenant.as_str());
        let supervisor = supervisor_id(&caller);
        let now = self.engine.clock.now();
        self.apply(&c, |r| core::monitor::monitor(r, &supervisor, mode, now))
            .instrument(command_span(&record, "monitor"))
            .await
    }

    #[tracing::instrument(skip_all, fields(tenant))]
    async fn stop_monitoring(&self, request: Request<pb::StopMonitoringRequest>) -> R<pb::Contact> {
        let caller = caller(&request)?.clone();
        // Media (channel role) acts for the supervisor whose phone hung up.
        caller.require_any_role(&[Role::TenantAdmin, Role::Supervisor, Role::Channel])?;
        let req = request.into_inner();
        let (c, record) = self.load_contact(&caller, &req.name).await?;
        tracing::Span::current().record("tenant", c.tenant.as_str());
        let supervisor = supervisor_id(&caller);
        self.apply(&c, |r| core::monitor::stop_monitoring(r, &supervisor))
            .instrument(command_span(&record, "stop_monitoring"))
            .await
    }

    #[tracing::instrument(skip_all, fields(tenant))]
    async fn end_contact(&self, request: Request<pb::EndContactRequest>) -> R<pb::Contact> {
        let caller = caller(&request)?.clone();
        let req = request.into_inner();
        let cause = validate::end_cause(&req.cause)?;
        let (c, record) = self.load_contact(&caller, &req.name).await?;
        tracing::Span::current().record("tenant", c.tenant.as_str());
        let holder = record.agent.as_ref().map(|a| a.0.as_str());
        if caller.agent_id.as_deref().is_some_and(|a| Some(a) != holder)
            && !caller.is_bpo_admin()
            && caller.require_any_role(&[Role::TenantAdmin, Role::Supervisor, Role::Channel]).is_err()
        {
            return Err(Error::from(Refusal::OnlyHolderEnds).into());
        }
        let acw = self
            .engine
            .registry
            .get(&c.tenant)
            .and_then(|t| t.routing.queues.get(&record.queue).map(|q| q.after_contact_work));
        let acw_ms = acw.map(|d| d.as_millis() as i64).unwrap_or(30_000);
        let now = self.engine.clock.now();
        self.apply(&c, |r| core::contact::end_with_cause(r, cause, acw_ms, now))
            .instrument(command_span(&record, "end"))
            .await
    }

    async fn list_queue_stats(&self, request: Request<pb::ListQueueStatsRequest>) -> R<pb::ListQueueStatsResponse> {
        let caller = caller(&request)?.clone();
        Ok(Response::new(self.queue_stats(&caller, &request.get_ref().queue).await?))
    }

    async fn get_queue_position(&self, request: Request<pb::GetQueuePositionRequest>) -> R<pb::QueuePosition> {
        let caller = caller(&request)?.clone();
        Ok(Response::new(self.queue_position(&caller, &request.get_ref().name).await?))
    }

    async fn list_transfer_targets(
        &self,
        request: Request<pb::ListTransferTargetsRequest>,
    ) -> R<pb::ListTransferTargetsResponse> {
        let caller = caller(&request)?.clone();
        Ok(Response::new(self.transfer_targets(&caller, &request.get_ref().name).await?))
    }

    #[tracing::instrument(skip_all, fields(tenant))]
    async fn wrap_up_contact(&self, request: Request<pb::WrapUpContactRequest>) -> R<pb::Contact> {
        let caller = caller(&request)?.clone();
        let req = request.into_inner();
        let (c, record, _) = self.held(&caller, &req.name).await?;
        let t = self.engine.registry.require_active(&c.tenant)?;
        if !t.routing.dispositions_of(&record.queue).contains(&req.disposition) {
            return Err(Error::invalid(
                "disposition",
                format!(
                    "`{}` is not a disposition code of queue {} of tenant {}",
                    req.disposition, record.queue, c.tenant
                ),
            )
            .into());
        }
        if req.notes.chars().count() > 4000 {
            return Err(Error::invalid("notes", "at most 4000 characters").into());
        }
        let now = self.engine.clock.now();
        self.apply(&c, |r| core::contact::wrap_up(r, &req.disposition, &req.notes, now))
            .instrument(command_span(&record, "wrap_up"))
            .await
    }
}

/// Who a monitoring supervisor is: its token's agent id (the id its phone is given under in
/// `spec.voice.phones`), else its subject.
fn supervisor_id(caller: &Caller) -> String {
    caller.agent_id.clone().unwrap_or_else(|| caller.subject.clone())
}

//! `centralita.sessions.v1.AgentService`.

use centralita_platform::auth::{caller, Caller, Role};
use centralita_platform::error::{Error, Reason};
use centralita_platform::tenant::TenantId;
use centralita_proto::sessions::v1 as pb;
use tonic::{Request, Response, Status};

use super::{authorize_agent, page_size, page_token, page_token_value, validate, Api, PageKind, R};
use crate::core::agent::StateCommand;
use crate::core::{self, Agent, AgentId, AgentState, ContactState};
use crate::streams::{agent_stream, AgentStream, Presence};

fn agent_id(name: &str) -> Result<AgentId, Error> {
    crate::wire::agent_id_from_name("name", name).map_err(|e| Error::invalid(e.field, e.message))
}

/// The part of an agent a tenant's supervisor may see: only its assignments to that tenant.
fn scoped(a: pb::Agent, caller: &Caller) -> Option<pb::Agent> {
    if caller.is_bpo_admin() || caller.agent_id.as_deref() == a.name.strip_prefix("agents/") {
        return Some(a);
    }
    if !caller.has_role(Role::Supervisor) && !caller.has_role(Role::TenantAdmin) {
        return None;
    }
    of_tenant(a, caller.tenant.as_ref()?)
}

/// The part of an agent that concerns `tenant`: its assignments, contacts and phones there;
/// `None` when it serves none of the tenant's queues.
fn of_tenant(mut a: pb::Agent, tenant: &TenantId) -> Option<pb::Agent> {
    let tenant = tenant.as_str();
    a.queues.retain(|q| q.tenant == tenant);
    if a.queues.is_empty() {
        return None;
    }
    let prefix = format!("tenants/{tenant}/");
    a.contacts.retain(|c| c.starts_with(&prefix));
    a.phones.retain(|p| p.tenant == tenant);
    Some(a)
}

impl Api {
    async fn set_state(
        &self,
        caller: &Caller,
        id: &AgentId,
        command: StateCommand,
        state: AgentState,
        reason: &str,
    ) -> Result<pb::Agent, Error> {
        authorize_agent(caller, id)?;
        let now = self.engine.clock.now();
        let registry = &self.engine.registry;
        // Whether `reason` is an away reason of one of the agent's tenants.
        let allowed = |a: &Agent, reason: &str| {
            a.queues.iter().any(|q| {
                TenantId::parse(&q.tenant)
                    .ok()
                    .and_then(|t| registry.get(&t))
                    .is_some_and(|t| t.routing.is_away_reason(reason))
            })
        };
        if matches!(command, StateCommand::SignIn { .. }) {
            // Routing hears the profile as the tenants' phone settings make it now.
            let reach = |t: &str, a: &str, registered: bool| self.engine.reaches(t, a, registered);
            self.engine.change_agent(id, |a| Ok(core::agent::refresh_profile(a, now, &reach))).await?;
        }
        let agent = self
            .engine
            .change_agent(id, |a| core::agent::set_state(a, command, state, reason, |r| allowed(a, r), now))
            .await?;
        Ok(pb::Agent::from(&agent))
    }
}

#[tonic::async_trait]
impl pb::agent_service_server::AgentService for Api {
    #[tracing::instrument(skip_all, fields(agent))]
    async fn upsert_agent(&self, request: Request<pb::UpsertAgentRequest>) -> R<pb::Agent> {
        let caller = caller(&request)?.clone();
        if !caller.is_bpo_admin() {
            return Err(Error::PermissionDenied {
                reason: Reason::RoleMissing,
                message: "only a BPO admin manages agents".into(),
            }
            .into());
        }
        let input = request.into_inner().agent.ok_or_else(|| Error::invalid("agent", "is required"))?;
        let agent = validate::agent(&input)?;
        tracing::Span::current().record("agent", agent.id.0.as_str());
        let pool = self.pools.of_queues(&agent.queues, "agent.queues").await?;
        // Indexed before it is written: the index may name an agent without a record.
        self.engine.store.index_agent(&agent.id).await?;
        let now = self.engine.clock.now();
        let reach = |t: &str, a: &str, registered: bool| self.engine.reaches(t, a, registered);
        let written = self
            .engine
            .update_agent(&agent.id, |current| core::agent::upsert(current, &agent, &pool, now, &reach))
            .await
            .map_err(Error::from)?;
        Ok(Response::new(pb::Agent::from(&written)))
    }

    async fn get_agent(&self, request: Request<pb::GetAgentRequest>) -> R<pb::Agent> {
        let caller = caller(&request)?.clone();
        let id = agent_id(&request.get_ref().name)?;
        let not_found = || Status::from(Error::NotFound(format!("agents/{id}")));
        let a = self.engine.store.agent(&id).await?.ok_or_else(not_found)?;
        let contacts: Vec<_> = self.engine.store.contacts(&a.contacts).await?.into_iter().flatten().collect();
        let mut wire = pb::Agent::from(&a);
        wire.activity = pb::AgentActivity::from(a.activity(&contacts)) as i32;
        Ok(Response::new(scoped(wire, &caller).ok_or_else(not_found)?))
    }

    async fn list_agents(&self, request: Request<pb::ListAgentsRequest>) -> R<pb::ListAgentsResponse> {
        let caller = caller(&request)?.clone();
        let req = request.into_inner();
        let page = page_size(req.page_size)?;
        let after = page_token_value(PageKind::Agents, &req.page_token)?;
        let ids: Vec<AgentId> = self
            .engine
            .store
            .agent_ids()
            .await?
            .into_iter()
            .filter(|id| after.as_ref().is_none_or(|after| id.0 > *after))
            .collect();
        let mut agents = Vec::new();
        let mut next_page_token = String::new();
        'pages: for chunk in ids.chunks(page.max(50)) {
            for a in self.engine.store.agents(chunk).await?.into_iter().flatten() {
                if let Some(a) = scoped(pb::Agent::from(&a), &caller) {
                    if agents.len() == page {
                        next_page_token = agents
                            .last()
                            .map(|a: &pb::Agent| page_token(PageKind::Agents, a.name.trim_start_matches("agents/")))
                            .unwrap_or_default();
                        break 'pages;
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
        let id = agent_id(&req.name)?;
        let command = StateCommand::SignIn { available: req.available };
        Ok(Response::new(self.set_state(&caller, &id, command, AgentState::Away, "").await?))
    }

    async fn set_agent_state(&self, request: Request<pb::SetAgentStateRequest>) -> R<pb::Agent> {
        let caller = caller(&request)?.clone();
        let req = request.into_inner();
        let id = agent_id(&req.name)?;
        let state = match pb::AgentState::try_from(req.state) {
            Ok(pb::AgentState::Available) => AgentState::Available,
            Ok(pb::AgentState::Away) => AgentState::Away,
            _ => return Err(Error::invalid("state", "must be AVAILABLE or AWAY").into()),
        };
        Ok(Response::new(self.set_state(&caller, &id, StateCommand::Set, state, &req.away_reason).await?))
    }

    async fn sign_out(&self, request: Request<pb::SignOutRequest>) -> R<pb::Agent> {
        let caller = caller(&request)?.clone();
        let id = agent_id(&request.get_ref().name)?;
        Ok(Response::new(self.set_state(&caller, &id, StateCommand::SignOut, AgentState::Offline, "").await?))
    }

    #[tracing::instrument(skip_all, fields(agent))]
    async fn report_phone(&self, request: Request<pb::ReportPhoneRequest>) -> R<pb::Agent> {
        let caller = caller(&request)?.clone();
        let req = request.into_inner();
        let id = agent_id(&req.name)?;
        tracing::Span::current().record("agent", id.0.as_str());
        let tenant = match caller.tenant.clone() {
            Some(t) if caller.has_role(Role::Channel) => t,
            _ => {
                return Err(Error::PermissionDenied {
                    reason: Reason::RoleMissing,
                    message: "only a tenant's channel adapters (media) report phones".into(),
                }
                .into())
            }
        };
        let expires = validate::phone_expiry(req.expires.as_ref())?;
        let not_found = || Status::from(Error::NotFound(format!("agents/{id}")));
        // An agent of another tenant's queues does not exist for this one.
        let a = self.engine.store.agent(&id).await?.ok_or_else(not_found)?;
        if !a.queues.iter().any(|q| q.tenant == tenant.as_str()) {
            return Err(not_found());
        }
        let now = self.engine.clock.now();
        let until = expires.map(|ms| now + ms);
        let reach = |t: &str, a: &str, registered: bool| self.engine.reaches(t, a, registered);
        let written = self
            .engine
            .change_agent(&id, |a| Ok(core::agent::phone(a, &tenant, until, now, &reach)))
            .await
            .map_err(Error::from)?;
        Ok(Response::new(of_tenant(pb::Agent::from(&written), &tenant).ok_or_else(not_found)?))
    }

    type StreamAgentEventsStream = AgentStream;

    async fn stream_agent_events(&self, request: Request<pb::StreamAgentEventsRequest>) -> R<AgentStream> {
        let caller = caller(&request)?.clone();
        let id = agent_id(&request.get_ref().name)?;
        authorize_agent(&caller, &id)?;
        // Subscribe before reading the current state, so nothing falls in between.
        let notices = self.engine.notices.subscribe(&id.0);
        let agent = self.engine.store.agent(&id).await?.ok_or_else(|| Error::NotFound(format!("agents/{id}")))?;
        let mut initial = vec![pb::AgentStreamEvent {
            event: Some(pb::agent_stream_event::Event::Agent(pb::Agent::from(&agent))),
            send_time: None,
        }];
        for c in self.engine.store.contacts(&agent.contacts).await?.into_iter().flatten() {
            let wire = pb::Contact::from(&c);
            let event = if c.state == ContactState::Offered {
                pb::agent_stream_event::Event::Offer(wire)
            } else {
                pb::agent_stream_event::Event::Contact(wire)
            };
            initial.push(pb::AgentStreamEvent { event: Some(event), send_time: None });
        }
        let presence = Presence::start(&self.engine, &id).await?;
        Ok(Response::new(agent_stream(&self.engine, initial, notices, presence)))
    }
}

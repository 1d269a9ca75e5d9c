//! The gRPC adapters: `centralita.sessions.v1.ContactService` ([`contacts`]) and
//! `AgentService` ([`agents`]). Each method is thin: authorize the caller (tenant from the
//! verified token, never from a request field), convert and validate the request
//! ([`validate`]), load, call the core through the [`Engine`], and answer with the record
//! written. This module is the one place a core [`Refusal`] becomes a gRPC status.

mod agents;
mod contacts;
mod validate;

use centralita_platform::auth::{Caller, Role};
use centralita_platform::error::{Error, Reason};
use centralita_platform::tenant::{contact_name, TenantId};
use tonic::Status;

use crate::core::{AgentId, Contact, ContactRef, Refusal};
use crate::engine::{Engine, Failure};
use crate::pools::Pools;

const MAX_PAGE: usize = 500;

#[derive(Debug, Clone)]
pub struct Api {
    pub engine: Engine,
    pub pools: Pools,
}

type R<T> = Result<tonic::Response<T>, Status>;

/// The status of a refusal: what the caller asked does not fit the record now.
fn refused(r: Refusal) -> Error {
    match r {
        Refusal::ContactGone(id) => Error::NotFound(format!("contact {id}")),
        Refusal::AgentGone(id) => Error::NotFound(format!("agents/{id}")),
        Refusal::UnknownAwayReason(_) => Error::invalid("away_reason", r.to_string()),
        other => Error::FailedPrecondition(other.to_string()),
    }
}

impl From<Failure> for Error {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Refused(r) => refused(r),
            Failure::Failed(e) => e,
        }
    }
}

impl From<Refusal> for Error {
    fn from(r: Refusal) -> Self {
        refused(r)
    }
}

/// An agent acts on itself only; BPO admins act on any agent.
fn authorize_agent(caller: &Caller, agent: &AgentId) -> Result<(), Error> {
    if caller.is_bpo_admin() || caller.agent_id.as_deref() == Some(agent.0.as_str()) {
        Ok(())
    } else {
        Err(Error::PermissionDenied {
            reason: Reason::NotThisAgent,
            message: format!("caller may not act as agent `{agent}`"),
        })
    }
}

/// Who may read a contact: its tenant's admins, supervisors and channel adapters, the
/// agent it is offered to or held by (or conferenced in), a BPO admin.
fn authorize_contact(caller: &Caller, tenant: &TenantId, contact: &Contact) -> Result<(), Error> {
    if caller.is_bpo_admin() {
        return Ok(());
    }
    if let Some(agent) = &caller.agent_id {
        if caller.has_role(Role::Agent) && contact.is_participant(&AgentId(agent.clone())) {
            return Ok(());
        }
    }
    caller.authorize_tenant(tenant)?;
    caller.require_any_role(&[Role::TenantAdmin, Role::Supervisor, Role::Channel])
}

/// The contact's holder must be the calling agent.
fn require_holder(caller: &Caller, c: &Contact) -> Result<AgentId, Error> {
    match (&caller.agent_id, &c.agent) {
        (Some(a), Some(holder)) if *a == holder.0 => Ok(holder.clone()),
        _ => Err(Error::PermissionDenied {
            reason: Reason::NotContactHolder,
            message: "only the agent holding this contact may do that".into(),
        }),
    }
}

impl Api {
    /// The contact named `name`, if the caller may see it. A contact of another tenant, or
    /// one the caller may not read, is NOT_FOUND like one that does not exist: ids of other
    /// tenants are not confirmed.
    async fn load_contact(&self, caller: &Caller, name: &str) -> Result<(ContactRef, Contact), Error> {
        let c = crate::wire::contact_ref("name", name).map_err(|e| Error::invalid(e.field, e.message))?;
        let not_found = || Error::NotFound(contact_name(c.tenant.as_str(), &c.id.0));
        if !caller.is_bpo_admin() && caller.tenant.is_some() && caller.tenant.as_ref() != Some(&c.tenant) {
            return Err(not_found());
        }
        let record = self.engine.store.contact(&c).await?.ok_or_else(not_found)?;
        authorize_contact(caller, &c.tenant, &record).map_err(|_| not_found())?;
        Ok((c, record))
    }
}

/// `page_size` within bounds (0 is the default page).
fn page_size(n: i32) -> Result<usize, Error> {
    match n {
        n if n < 0 => Err(Error::invalid("page_size", "must not be negative")),
        0 => Ok(100),
        n => Ok((n as usize).min(MAX_PAGE)),
    }
}

/// What a page token pages through: a token of one list is refused by another.
#[derive(Debug, Clone, Copy)]
enum PageKind {
    Contacts,
    Agents,
}

impl PageKind {
    fn tag(self) -> &'static str {
        match self {
            PageKind::Contacts => "c1",
            PageKind::Agents => "a1",
        }
    }
}

/// A page token of `kind` for `position` ([`centralita_platform::page`]).
fn page_token(kind: PageKind, position: &str) -> String {
    centralita_platform::page::tagged(kind.tag(), position)
}

/// The position a page token of `kind` names (`None` for the first page).
fn page_token_value(kind: PageKind, token: &str) -> Result<Option<String>, Error> {
    centralita_platform::page::untag(kind.tag(), token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_token_of_one_list_is_refused_by_the_other() {
        let t = page_token(PageKind::Contacts, "12");
        assert_eq!(page_token_value(PageKind::Contacts, &t).unwrap().as_deref(), Some("12"));
        assert!(page_token_value(PageKind::Agents, &t).is_err());
        assert_eq!(page_token_value(PageKind::Agents, "").unwrap(), None);
    }
}

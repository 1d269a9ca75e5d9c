//! Who may do what: the caller's tenant and role, the agent holding a contact, and the
//! customer a note or answer is about.

use std::time::Duration;

use centralita_platform::auth::{Caller, Role};
use centralita_platform::error::{Error, Reason};
use centralita_platform::tenant::{parse_contact_name, TenantId};

use super::validate::customer_id;
use super::Api;
use crate::store::{self, InteractionRow};

/// How long a screen-pop waits for the contact events to show the calling agent holding
/// the contact (an offer reaches the agent and the CRM at about the same time).
const HOLD_WAIT: Duration = Duration::from_secs(2);

pub(super) const STAFF: &[Role] = &[Role::TenantAdmin, Role::Supervisor];
pub(super) const STAFF_AND_CHANNELS: &[Role] = &[Role::TenantAdmin, Role::Supervisor, Role::Channel];

/// The caller's own tenant, if it has one of `roles`. Customer data is the tenant's: a BPO
/// admin token without a tenant is refused.
pub(super) fn tenant_for(caller: &Caller, roles: &[Role]) -> Result<TenantId, Error> {
    caller.require_any_role(roles)?;
    Ok(caller.own_tenant()?.clone())
}

/// Who wrote something: the agent id for an agent, the token subject otherwise.
pub(super) fn author(caller: &Caller) -> String {
    caller.agent_id.clone().unwrap_or_else(|| caller.subject.clone())
}

impl Api {
    /// The interaction of `contact` if the calling agent holds it, waiting up to
    /// [`HOLD_WAIT`] for the contact events to catch up. The same PERMISSION_DENIED for a
    /// contact held by another agent, unknown, or of another tenant.
    pub(super) async fn held(&self, caller: &Caller, contact: &str) -> Result<(TenantId, InteractionRow), Error> {
        let denied = || Error::PermissionDenied {
            reason: Reason::WrongTenant,
            message: "only the agent holding this contact may do that".into(),
        };
        let (tenant, id) = parse_contact_name("contact", contact)?;
        let agent = match (&caller.agent_id, caller.has_role(Role::Agent)) {
            (Some(a), true) => a.clone(),
            _ => return Err(denied()),
        };
        if caller.tenant.as_ref().is_some_and(|own| *own != tenant) {
            return Err(denied());
        }
        let deadline = tokio::time::Instant::now() + HOLD_WAIT;
        let mut applied = self.applied.clone();
        loop {
            applied.borrow_and_update();
            let mut client = self.client().await?;
            let tx = store::begin(&mut client, &tenant).await?;
            let row = store::interaction(&tx, tenant.as_str(), &id).await?;
            tx.commit().await?;
            if let Some(row) = row.filter(|r| r.holder == agent) {
                return Ok((tenant, row));
            }
            if tokio::time::timeout_at(deadline, applied.changed()).await.is_err() {
                return Err(denied());
            }
        }
    }

    /// The customer a note or answer is about: for an agent, the customer of the contact it
    /// holds; for staff, the customer named (and the contact, if given, must be the tenant's).
    pub(super) async fn subject_of(
        &self,
        caller: &Caller,
        customer: &str,
        contact: &str,
    ) -> Result<(TenantId, String, String), Error> {
        if caller.has_role(Role::Agent) && !caller.has_role(Role::TenantAdmin) && !caller.has_role(Role::Supervisor) {
            if contact.is_empty() {
                return Err(Error::invalid("contact", "is required: an agent writes about the contact it holds"));
            }
            let (tenant, row) = self.held(caller, contact).await?;
            let cid = row
                .customer_id
                .ok_or_else(|| Error::FailedPrecondition("this contact carries no customer identity".into()))?;
            if !customer.is_empty() {
                let named = customer_id(customer, "customer")?;
                let mut client = self.client().await?;
                let tx = store::begin(&mut client, &tenant).await?;
                let same = store::root_of(&tx, tenant.as_str(), &named).await?
                    == store::root_of(&tx, tenant.as_str(), &cid).await?;
                tx.commit().await?;
                if !same {
                    return Err(Error::invalid("customer", "is not the customer of this contact"));
                }
            }
            return Ok((tenant, cid, contact.to_owned()));
        }
        let tenant = tenant_for(caller, STAFF)?;
        let id = customer_id(customer, "customer")?;
        if !contact.is_empty() && parse_contact_name("contact", contact)?.0 != tenant {
            return Err(Error::invalid("contact", "is a contact of another tenant"));
        }
        Ok((tenant, id, contact.to_owned()))
    }
}

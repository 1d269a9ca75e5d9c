//! Who may read and write a conversation: a pure decision over the verified caller and the
//! contact as sessions reports it (sessions owns contact state; media asks it on every call).

use centralita_platform::auth::{Caller, Role};
use centralita_platform::tenant::TenantId;

/// Where the contact is in its life, as far as access goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Queued,
    /// Offered, connected or in after-contact work: an agent holds it.
    Held,
    Ended,
}

/// The contact as sessions reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactView {
    pub phase: Phase,
    /// The agent offered or holding it; empty for none.
    pub agent_id: String,
    /// The customer's side is still open (queued, offered or connected): in after-contact
    /// work the agent still holds the contact, but the customer's conversation is over.
    pub open: bool,
}

/// How the caller reaches the conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// The agent offered or holding the contact.
    Holder(String),
    /// A supervisor or tenant admin of the contact's tenant.
    Supervisor,
}

/// Why the caller may not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// The caller's token is of another tenant.
    OtherTenant,
    /// An agent that does not hold the contact (or it is not held any more).
    NotHolder,
    /// No role that reads conversations.
    Role,
}

/// Decides access to the conversation of a contact of `tenant`. `contact` is `None` when
/// sessions does not know it (it is then readable only by the tenant's supervisors, e.g. a
/// transcript after the contact's record expired). BPO admins are not let in: a
/// conversation is the tenant's data, and a BPO admin token without a tenant names none.
pub fn decide(caller: &Caller, tenant: &TenantId, contact: Option<&ContactView>) -> Result<Access, Denied> {
    if caller.tenant.as_ref().is_some_and(|t| t != tenant) {
        return Err(Denied::OtherTenant);
    }
    let own_tenant = caller.tenant.as_ref() == Some(tenant);
    if own_tenant && (caller.has_role(Role::Supervisor) || caller.has_role(Role::TenantAdmin)) {
        return Ok(Access::Supervisor);
    }
    if caller.has_role(Role::Agent) {
        let agent = caller.agent_id.as_deref().unwrap_or_default();
        return match contact {
            Some(c) if c.phase == Phase::Held && !agent.is_empty() && c.agent_id == agent => {
                Ok(Access::Holder(agent.to_owned()))
            }
            _ => Err(Denied::NotHolder),
        };
    }
    Err(Denied::Role)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn caller(tenant: Option<&str>, roles: &[Role], agent: Option<&str>) -> Caller {
        Caller {
            subject: "t".into(),
            tenant: tenant.map(|t| TenantId::parse(t).unwrap()),
            roles: roles.iter().copied().collect::<BTreeSet<_>>(),
            agent_id: agent.map(str::to_owned),
        }
    }

    fn held(agent: &str) -> ContactView {
        ContactView { phase: Phase::Held, agent_id: agent.into(), open: true }
    }

    #[test]
    fn holder_and_supervisors_only() {
        let acme = TenantId::parse("acme").unwrap();
        let bob = caller(None, &[Role::Agent], Some("bob"));
        let alice = caller(Some("acme"), &[Role::Agent], Some("alice"));
        assert_eq!(decide(&bob, &acme, Some(&held("bob"))), Ok(Access::Holder("bob".into())));
        assert_eq!(decide(&alice, &acme, Some(&held("bob"))), Err(Denied::NotHolder));
        assert_eq!(
            decide(&bob, &acme, Some(&ContactView { phase: Phase::Ended, agent_id: "bob".into(), open: false })),
            Err(Denied::NotHolder),
            "not after it ended"
        );
        assert_eq!(
            decide(&bob, &acme, Some(&ContactView { phase: Phase::Queued, agent_id: String::new(), open: true })),
            Err(Denied::NotHolder)
        );
        assert_eq!(decide(&bob, &acme, None), Err(Denied::NotHolder));
        let sup = caller(Some("acme"), &[Role::Supervisor], None);
        assert_eq!(decide(&sup, &acme, None), Ok(Access::Supervisor));
        assert_eq!(decide(&caller(Some("acme"), &[Role::TenantAdmin], None), &acme, None), Ok(Access::Supervisor));
        assert_eq!(decide(&caller(Some("acme"), &[Role::Channel], None), &acme, None), Err(Denied::Role));
        assert_eq!(decide(&caller(None, &[Role::BpoAdmin], None), &acme, None), Err(Denied::Role));
    }

    #[test]
    fn another_tenant_never() {
        let acme = TenantId::parse("acme").unwrap();
        let globex_sup = caller(Some("globex"), &[Role::Supervisor, Role::TenantAdmin], None);
        assert_eq!(decide(&globex_sup, &acme, None), Err(Denied::OtherTenant));
        // An agent token bound to another tenant, even naming the holder, is refused.
        let globex_bob = caller(Some("globex"), &[Role::Agent], Some("bob"));
        assert_eq!(decide(&globex_bob, &acme, Some(&held("bob"))), Err(Denied::OtherTenant));
    }
}

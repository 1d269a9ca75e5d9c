//! Whether an incoming call may enter the platform, and where it goes: a pure function of
//! the call's addresses, the tenant set and the calls in progress. No SIP, no I/O: the front
//! door (`front_door`) asks, then answers the caller with [`Refusal::status`].
//!
//! The rules, in order (the first that fails refuses, and nothing is created):
//! 1. the called number is an E.164 number that exactly one tenant claims (two tenants
//!    claiming it, which two separately applied manifests can do, is treated as unknown:
//!    the call is not given to either);
//! 2. the call comes from one of *that* tenant's trunks (a trunk of another tenant does not
//!    count): a trunk takes the call when its `sources` include the caller's address (or it
//!    lists none) and, when it has digest credentials, only once the INVITE proved them
//!    (`authenticated`: the trunk whose credentials the front door verified,
//!    [`crate::trunk_auth`]); a source only credential trunks accept is asked for them
//!    ([`Refusal::Unauthenticated`], `407`);
//! 3. the tenant is active;
//! 4. the tenant's calls in progress are below its concurrent-contact quota.

use std::net::IpAddr;
use std::sync::Arc;

use crate::registrar::digest::{Credentials, CredentialsError};
use centralita_platform::identity;
use centralita_platform::tenant::{owners_of, PhoneNumber, Tenant, TenantId};

/// What the front door knows of an INVITE once it has parsed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The user part of the Request-URI: the number dialled.
    pub called: String,
    /// The user part of the From URI: the caller, as the trunk presents it.
    pub caller: String,
    pub source: IpAddr,
    /// The INVITE's `Proxy-Authorization` (a trunk's digest credentials), as read.
    pub credentials: Option<Result<Credentials, CredentialsError>>,
}

/// An admitted call: the tenant and queue it joins, and who is calling.
#[derive(Debug, Clone, PartialEq)]
pub struct Admitted {
    pub tenant: Arc<Tenant>,
    pub queue: String,
    pub trunk: String,
    pub called: PhoneNumber,
    /// The caller's number in E.164 form, if it is one (an anonymous or national-format
    /// caller id is no identity: the contact is created without one).
    pub caller: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The number is not one the platform serves (or two tenants claim it).
    UnknownNumber,
    /// The source is not a trunk of the number's tenant.
    NotATrunk {
        tenant: TenantId,
    },
    /// Only trunks with digest credentials take calls from this source: the INVITE must
    /// prove one's (these, by name and Secret).
    Unauthenticated {
        tenant: TenantId,
        trunks: Vec<(String, String)>,
    },
    TenantSuspended {
        tenant: TenantId,
    },
    OverQuota {
        tenant: TenantId,
        limit: u32,
    },
    /// Shutting down: no new calls.
    Draining,
}

impl Refusal {
    /// The SIP status and reason phrase the caller gets.
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            Refusal::UnknownNumber => (404, "Not Found"),
            Refusal::NotATrunk { .. } => (403, "Forbidden - Not An Allowed Trunk"),
            Refusal::Unauthenticated { .. } => (407, "Proxy Authentication Required"),
            Refusal::TenantSuspended { .. } => (403, "Forbidden - Tenant Suspended"),
            Refusal::OverQuota { .. } => (486, "Busy Here - Tenant At Concurrent Contact Quota"),
            Refusal::Draining => (503, "Service Unavailable - Draining"),
        }
    }
}

/// Decides on `call` against `tenants` (the registry's list); `in_progress` gives a tenant's
/// calls in progress on this replica; `authenticated` is the trunk whose digest credentials
/// the INVITE proved, if any.
pub fn admit(
    call: &Call,
    tenants: &[Arc<Tenant>],
    in_progress: impl Fn(&TenantId) -> u32,
    authenticated: Option<&str>,
) -> Result<Admitted, Refusal> {
    let called = identity::phone(&call.called, "")
        .ok()
        .and_then(|n| PhoneNumber::parse(&n).ok())
        .ok_or(Refusal::UnknownNumber)?;
    let tenant = match owners_of(tenants, &called).as_slice() {
        [one] => Arc::clone(one),
        _ => return Err(Refusal::UnknownNumber),
    };
    // The tenant's trunks that take calls from this source: listed there, or listing none
    // (then they must have credentials: validation refuses a trunk with neither).
    let from_here: Vec<_> = tenant
        .voice
        .trunks
        .iter()
        .filter(|t| {
            if t.sources.is_empty() {
                t.credentials_secret.is_some()
            } else {
                t.sources.iter().any(|b| b.contains(call.source))
            }
        })
        .collect();
    let trunk = match from_here.iter().find(|t| t.credentials_secret.is_none()) {
        Some(open) => open.name.clone(),
        None => match from_here.iter().find(|t| authenticated == Some(t.name.as_str())) {
            Some(proved) => proved.name.clone(),
            None if from_here.is_empty() => return Err(Refusal::NotATrunk { tenant: tenant.id.clone() }),
            None => {
                return Err(Refusal::Unauthenticated {
                    tenant: tenant.id.clone(),
                    trunks: from_here
                        .iter()
                        .filter_map(|t| Some((t.name.clone(), t.credentials_secret.clone()?)))
                        .collect(),
                })
            }
        },
    };
    if !tenant.is_active() {
        return Err(Refusal::TenantSuspended { tenant: tenant.id.clone() });
    }
    let limit = tenant.quotas.max_concurrent_contacts;
    if in_progress(&tenant.id) >= limit {
        return Err(Refusal::OverQuota { tenant: tenant.id.clone(), limit });
    }
    let queue = tenant.voice.queue_of(&called).ok_or(Refusal::UnknownNumber)?.to_owned();
    Ok(Admitted { tenant, queue, trunk, called, caller: identity::phone(&call.caller, "").ok() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use centralita_platform::tenant::{TenantManifest, TenantStatus};

    fn tenant(id: &str, number: &str, source: &str, max: u32) -> Arc<Tenant> {
        tenant_with(id, number, &format!(r#"[{{ name: carrier, sources: ["{source}"] }}]"#), max)
    }

    /// A voice tenant with one number to `support` and the trunks `trunks` (YAML).
    fn tenant_with(id: &str, number: &str, trunks: &str, max: u32) -> Arc<Tenant> {
        let text = format!(
            r#"
apiVersion: centralita.io/v1
kind: Tenant
metadata: {{ name: {id} }}
spec:
  displayName: {id}
  channels: [voice]
  serviceLevel: {{ targetPercent: 80, thresholdSeconds: 20 }}
  quotas: {{ maxConcurrentContacts: {max}, apiRequestsPerSecond: 10 }}
  businessHours: {{ timeZone: UTC }}
  dataRetentionDays: 30
  recording: {{ voice: none }}
  routing: {{ queues: [{{ id: support }}] }}
  voice:
    numbers: [{{ number: "{number}", queue: support }}]
    trunks: {trunks}
"#
        );
        let at = chrono::DateTime::from_timestamp(1_790_000_000, 0).expect("valid");
        Arc::new(TenantManifest::parse_all(&text, at).expect("valid").remove(0))
    }

    fn call(called: &str, caller: &str, source: &str) -> Call {
        Call { called: called.into(), caller: caller.into(), source: source.parse().expect("ip"), credentials: None }
    }

    fn world() -> Vec<Arc<Tenant>> {
        vec![tenant("acme", "+34910000001", "10.0.0.0/8", 2), tenant("globex", "+34910000002", "192.0.2.1", 5)]
    }

    #[test]
    fn a_call_to_a_number_from_its_tenants_trunk_joins_the_numbers_queue() {
        let ok = admit(&call("+34910000001", "+34600111222", "10.1.2.3"), &world(), |_| 0, None).expect("admitted");
        assert_eq!((ok.tenant.id.as_str(), ok.queue.as_str(), ok.trunk.as_str()), ("acme", "support", "carrier"));
        assert_eq!(ok.caller.as_deref(), Some("+34600111222"));
        let anonymous = admit(&call("+34910000001", "anonymous", "10.1.2.3"), &world(), |_| 0, None).expect("admitted");
        assert_eq!(anonymous.caller, None, "no identity rather than a refusal");
        let written =
            admit(&call("0034910000001", "0034 600 111 222", "10.1.2.3"), &world(), |_| 0, None).expect("admitted");
        assert_eq!((written.called.as_str(), written.caller.as_deref()), ("+34910000001", Some("+34600111222")));
    }

    #[test]
    fn refusals() {
        let w = world();
        let acme = TenantId::parse("acme").expect("id");
        assert_eq!(admit(&call("+34910000009", "+1", "10.1.2.3"), &w, |_| 0, None), Err(Refusal::UnknownNumber));
        assert_eq!(admit(&call("support", "+1", "10.1.2.3"), &w, |_| 0, None), Err(Refusal::UnknownNumber));
        // Globex's trunk calling acme's number: refused, not given to either tenant.
        assert_eq!(
            admit(&call("+34910000001", "+1", "192.0.2.1"), &w, |_| 0, None),
            Err(Refusal::NotATrunk { tenant: acme.clone() })
        );
        assert_eq!(
            admit(&call("+34910000001", "+1", "10.1.2.3"), &w, |_| 2, None),
            Err(Refusal::OverQuota { tenant: acme.clone(), limit: 2 })
        );
        let mut suspended = (*w[0]).clone();
        suspended.status = TenantStatus::Suspended;
        let w2 = vec![Arc::new(suspended), w[1].clone()];
        assert_eq!(
            admit(&call("+34910000001", "+1", "10.1.2.3"), &w2, |_| 0, None),
            Err(Refusal::TenantSuspended { tenant: acme })
        );
        // Two tenants claiming one number: neither gets the call.
        let w3 = vec![w[0].clone(), tenant("initech", "+34910000001", "10.0.0.0/8", 5)];
        assert_eq!(admit(&call("+34910000001", "+1", "10.1.2.3"), &w3, |_| 0, None), Err(Refusal::UnknownNumber));
    }

    #[test]
    fn a_trunk_with_credentials_takes_a_call_only_once_they_are_proved() {
        let with = |trunks: &str| vec![tenant_with("acme", "+34910000001", trunks, 5)];
        let acme = TenantId::parse("acme").expect("id");
        // Credentials only: any source, once proved.
        let w = with("[{name: sbc, credentials: {secretName: acme-sbc}}]");
        let anywhere = call("+34910000001", "+1", "203.0.113.9");
        assert_eq!(
            admit(&anywhere, &w, |_| 0, None),
            Err(Refusal::Unauthenticated { tenant: acme.clone(), trunks: vec![("sbc".into(), "acme-sbc".into())] })
        );
        assert_eq!(admit(&anywhere, &w, |_| 0, Some("sbc")).expect("proved").trunk, "sbc");
        assert_eq!(
            admit(&anywhere, &w, |_| 0, Some("other")),
            Err(Refusal::Unauthenticated { tenant: acme.clone(), trunks: vec![("sbc".into(), "acme-sbc".into())] }),
            "another trunk's name proves nothing"
        );
        // Sources and credentials: both. From elsewhere: not a trunk, not even challenged.
        let w = with("[{name: carrier, sources: [\"10.0.0.0/8\"], credentials: {secretName: acme-carrier}}]");
        assert!(matches!(
            admit(&call("+34910000001", "+1", "10.1.2.3"), &w, |_| 0, None),
            Err(Refusal::Unauthenticated { .. })
        ));
        assert_eq!(
            admit(&call("+34910000001", "+1", "10.1.2.3"), &w, |_| 0, Some("carrier")).expect("both").trunk,
            "carrier"
        );
        assert_eq!(
            admit(&call("+34910000001", "+1", "192.0.2.1"), &w, |_| 0, Some("carrier")),
            Err(Refusal::NotATrunk { tenant: acme.clone() })
        );
        // A trunk by source alone still takes its calls without a challenge.
        let w = with("[{name: sbc, credentials: {secretName: acme-sbc}}, {name: legacy, sources: [\"10.0.0.0/8\"]}]");
        assert_eq!(admit(&call("+34910000001", "+1", "10.1.2.3"), &w, |_| 0, None).expect("by source").trunk, "legacy");
        assert!(matches!(
            admit(&call("+34910000001", "+1", "192.0.2.1"), &w, |_| 0, None),
            Err(Refusal::Unauthenticated { .. })
        ));
    }

    #[test]
    fn every_refusal_is_a_final_failure_status() {
        let t = TenantId::parse("acme").expect("id");
        for r in [
            Refusal::UnknownNumber,
            Refusal::NotATrunk { tenant: t.clone() },
            Refusal::Unauthenticated { tenant: t.clone(), trunks: Vec::new() },
            Refusal::TenantSuspended { tenant: t.clone() },
            Refusal::OverQuota { tenant: t, limit: 1 },
            Refusal::Draining,
        ] {
            let (code, reason) = r.status();
            assert!((400..600).contains(&code) && !reason.is_empty(), "{r:?}");
        }
    }
}

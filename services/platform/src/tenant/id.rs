//! Tenant ids, and the contact resource names built on them.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::error::Error;

/// A tenant id: a DNS label (`[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters), so the
/// same id can name a Kubernetes resource, a Kafka key and a Redis hash tag.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct TenantId(String);

/// The tenant id on envelopes of BPO-wide records (agents, routing ticks and agent facts):
/// agents belong to the BPO, not to one client. Reserved: no client tenant may take it.
pub const BPO_TENANT: &str = "bpo";

impl TenantId {
    /// [`BPO_TENANT`].
    pub fn bpo() -> Self {
        TenantId(BPO_TENANT.to_owned())
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        let ok_chars = s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if s.is_empty() || s.len() > 63 {
            return Err("must be 1 to 63 characters".into());
        }
        if !ok_chars || s.starts_with('-') || s.ends_with('-') {
            return Err("must be lowercase letters, digits and '-', starting and ending with a letter or digit".into());
        }
        Ok(TenantId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The AIP-122 resource name, `tenants/{id}`.
    pub fn resource_name(&self) -> String {
        format!("tenants/{}", self.0)
    }

    /// Parses `tenants/{id}`.
    pub fn from_resource_name(name: &str) -> Result<Self, String> {
        let id = name.strip_prefix("tenants/").ok_or_else(|| "must look like `tenants/{tenant_id}`".to_string())?;
        Self::parse(id)
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl FromStr for TenantId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// The resource name of a contact: `tenants/{tenant}/contacts/{id}`.
pub fn contact_name(tenant: &str, id: &str) -> String {
    format!("tenants/{tenant}/contacts/{id}")
}

/// A contact's resource name into its tenant and id; `field` names it in the error.
pub fn parse_contact_name(field: &str, name: &str) -> Result<(TenantId, String), Error> {
    let bad = || Error::invalid(field, "must be `tenants/{tenant}/contacts/{contact}`");
    let rest = name.strip_prefix("tenants/").ok_or_else(bad)?;
    let (tenant, id) = rest.split_once("/contacts/").ok_or_else(bad)?;
    let tenant = TenantId::parse(tenant).map_err(|_| bad())?;
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(bad());
    }
    Ok((tenant, id.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn tenant_ids_are_dns_labels(s in "\\PC{0,70}") {
            if let Ok(id) = TenantId::parse(&s) {
                proptest::prop_assert!(id.as_str().len() <= 63);
                proptest::prop_assert!(id.as_str().bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
                proptest::prop_assert_eq!(TenantId::from_resource_name(&id.resource_name()), Ok(id.clone()));
            }
        }
    }

    #[test]
    fn contact_names_carry_their_tenant() {
        let (t, id) = parse_contact_name("contact", &contact_name("acme", "0190-ab")).expect("a contact name");
        assert_eq!((t.as_str(), id.as_str()), ("acme", "0190-ab"));
        for bad in [
            "contacts/x",
            "tenants/acme/contacts/",
            "tenants/acme/contacts/a/b",
            "tenants/acme/x/y",
            "tenants/A B/contacts/x",
        ] {
            let e = parse_contact_name("contact", bad).unwrap_err();
            assert!(e.to_string().contains("contact:"), "{bad}: {e}");
        }
    }
}

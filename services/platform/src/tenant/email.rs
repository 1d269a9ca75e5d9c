//! The email channel (`spec.email`): the tenant's inbound addresses (each leading to a
//! queue), the address replies are sent from, and the SMTP relay they are sent through. The
//! relay's credentials are never in the manifest: only the name of the Kubernetes Secret
//! holding them (`credentialsSecret`, keys `username` and `password`), read by media at run
//! time.

use std::collections::BTreeMap;

use centralita_proto::tenancy::v1 as pb;
use serde::{Deserialize, Serialize};

use super::voice::{is_secret_name, is_sip_domain};
use crate::error::FieldViolation;

/// At most this many inbound addresses a tenant.
pub const MAX_EMAIL_ADDRESSES: usize = 100;

/// How media talks to the relay.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmailTls {
    /// Plain SMTP (a relay on the same host or network only).
    None,
    /// SMTP upgraded with STARTTLS (required: a relay that does not offer it is refused).
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Implicit,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EmailSpec {
    /// The tenant's inbound addresses, each leading to one of its queues.
    #[serde(default)]
    pub addresses: Vec<EmailAddressSpec>,
    /// The address replies are sent from: one of `addresses`, so the customer's answers
    /// come back to the tenant.
    pub from_address: String,
    /// The SMTP relay replies are sent through.
    pub relay: EmailRelaySpec,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EmailAddressSpec {
    /// `local@domain`, compared without case.
    #[cfg_attr(feature = "schema", schemars(length(min = 3, max = 254)))]
    pub address: String,
    /// The queue (of `spec.routing.queues`) its mail joins.
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[a-z0-9_-]{1,40}$")))]
    pub queue: String,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EmailRelaySpec {
    /// Host name or IPv4 address of the relay.
    pub host: String,
    /// Its port (587 for STARTTLS, 465 for implicit TLS, 25).
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 65535)))]
    pub port: i64,
    /// `starttls` (the default), `implicit` or `none`.
    #[serde(default)]
    pub tls: EmailTls,
    /// The Kubernetes Secret holding the relay's `username` and `password`; none: the
    /// relay takes mail without authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "schema",
        schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$"))
    )]
    pub credentials_secret: Option<String>,
}

/// The relay of a tenant, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailRelay {
    pub host: String,
    pub port: u16,
    pub tls: EmailTls,
    pub credentials_secret: Option<String>,
}

/// The email channel of a tenant, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    /// Address (lower case) → queue.
    pub addresses: BTreeMap<String, String>,
    /// Lower case, one of `addresses`.
    pub from_address: String,
    pub relay: EmailRelay,
}

impl Email {
    /// The queue of one of the tenant's addresses (compared without case).
    pub fn queue_of(&self, address: &str) -> Option<&str> {
        self.addresses.get(&address.to_ascii_lowercase()).map(String::as_str)
    }
}

/// Whether `s` is a plain mailbox address `local@domain` as the manifest takes it: a
/// dot-atom local part (RFC 5322 §3.4.1, no quoted strings) of up to 64 characters and a
/// domain name with a dot (or `localhost`), at most 254 characters in all.
pub fn is_email_address(s: &str) -> bool {
    let Some((local, domain)) = s.rsplit_once('@') else { return false };
    let atext = |c: u8| c.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&c);
    s.len() <= 254
        && (1..=64).contains(&local.len())
        && local.split('.').all(|a| !a.is_empty() && a.bytes().all(atext))
        && (is_sip_domain(&domain.to_ascii_lowercase()) || domain.eq_ignore_ascii_case("localhost"))
}

fn is_host(s: &str) -> bool {
    s.parse::<std::net::Ipv4Addr>().is_ok() || is_sip_domain(s) || s == "localhost"
}

/// The tenants among `tenants` that receive mail at `address` (compared without case): one
/// for an address in order, none for an unknown one, more than one when two tenants'
/// manifests both claim it (then it is treated as no one's).
pub fn email_owners<'a, T>(tenants: &'a [T], address: &str) -> Vec<&'a T>
where
    T: std::borrow::Borrow<super::Tenant>,
{
    tenants.iter().filter(|t| t.borrow().email.as_ref().is_some_and(|e| e.queue_of(address).is_some())).collect()
}

impl EmailSpec {
    /// The channel, or violations under `spec.email`. `queues` says whether a queue is the
    /// tenant's; `email` whether the email channel is enabled.
    pub fn validate(&self, queues: impl Fn(&str) -> bool, email: bool, v: &mut Vec<FieldViolation>) -> Option<Email> {
        let before = v.len();
        let mut bad = |field: &str, msg: String| v.push(FieldViolation::new(field, msg));
        if !email {
            bad("spec.email", "needs the email channel in spec.channels".into());
        }
        if self.addresses.is_empty() {
            bad("spec.email.addresses", "must name at least one address".into());
        }
        if self.addresses.len() > MAX_EMAIL_ADDRESSES {
            bad("spec.email.addresses", format!("at most {MAX_EMAIL_ADDRESSES} addresses"));
        }
        let mut addresses = BTreeMap::new();
        for (i, a) in self.addresses.iter().enumerate() {
            let lower = a.address.to_ascii_lowercase();
            if !is_email_address(&a.address) {
                bad(&format!("spec.email.addresses[{i}].address"), format!("`{}` is not an address", a.address));
            } else if let std::collections::btree_map::Entry::Vacant(e) = addresses.entry(lower) {
                e.insert(a.queue.clone());
            } else {
                bad(&format!("spec.email.addresses[{i}].address"), format!("`{}` is listed twice", a.address));
            }
            if !queues(&a.queue) {
                bad(
                    &format!("spec.email.addresses[{i}].queue"),
                    format!("`{}` is not a queue of spec.routing.queues", a.queue),
                );
            }
        }
        let from = self.from_address.to_ascii_lowercase();
        if !addresses.contains_key(&from) {
            bad("spec.email.fromAddress", "must be one of spec.email.addresses (replies must come back)".into());
        }
        let r = &self.relay;
        if !is_host(&r.host) {
            bad("spec.email.relay.host", format!("`{}` is not a host name or IPv4 address", r.host));
        }
        let port = u16::try_from(r.port).ok().filter(|p| *p > 0);
        if port.is_none() {
            bad("spec.email.relay.port", format!("must be between 1 and 65535, got {}", r.port));
        }
        if let Some(name) = r.credentials_secret.as_deref().filter(|n| !is_secret_name(n)) {
            bad(
                "spec.email.relay.credentialsSecret",
                format!("`{name}` is not a Kubernetes Secret name (a-z, 0-9, - and ., 1 to 253)"),
            );
        }
        (v.len() == before).then(|| Email {
            addresses,
            from_address: from,
            relay: EmailRelay {
                host: r.host.clone(),
                port: port.unwrap_or_default(),
                tls: r.tls,
                credentials_secret: r.credentials_secret.clone(),
            },
        })
    }
}

impl From<&Email> for EmailSpec {
    fn from(e: &Email) -> Self {
        EmailSpec {
            addresses: e
                .addresses
                .iter()
                .map(|(a, q)| EmailAddressSpec { address: a.clone(), queue: q.clone() })
                .collect(),
            from_address: e.from_address.clone(),
            relay: EmailRelaySpec {
                host: e.relay.host.clone(),
                port: e.relay.port.into(),
                tls: e.relay.tls,
                credentials_secret: e.relay.credentials_secret.clone(),
            },
        }
    }
}

impl From<&Email> for pb::EmailConfig {
    fn from(e: &Email) -> Self {
        pb::EmailConfig {
            addresses: e
                .addresses
                .iter()
                .map(|(a, q)| pb::EmailAddress { address: a.clone(), queue: q.clone() })
                .collect(),
            from_address: e.from_address.clone(),
            relay: Some(pb::EmailRelay {
                host: e.relay.host.clone(),
                port: e.relay.port.into(),
                tls: match e.relay.tls {
                    EmailTls::None => pb::EmailTls::None,
                    EmailTls::Starttls => pb::EmailTls::Starttls,
                    EmailTls::Implicit => pb::EmailTls::Implicit,
                } as i32,
                credentials_secret: e.relay.credentials_secret.clone().unwrap_or_default(),
            }),
        }
    }
}

impl From<pb::EmailConfig> for EmailSpec {
    /// An unknown TLS mode reads as STARTTLS, the safe default (TLS stays required).
    fn from(e: pb::EmailConfig) -> Self {
        let relay = e.relay.unwrap_or_default();
        EmailSpec {
            addresses: e
                .addresses
                .into_iter()
                .map(|a| EmailAddressSpec { address: a.address, queue: a.queue })
                .collect(),
            from_address: e.from_address,
            relay: EmailRelaySpec {
                host: relay.host,
                port: relay.port.into(),
                tls: match pb::EmailTls::try_from(relay.tls) {
                    Ok(pb::EmailTls::None) => EmailTls::None,
                    Ok(pb::EmailTls::Implicit) => EmailTls::Implicit,
                    _ => EmailTls::Starttls,
                },
                credentials_secret: Some(relay.credentials_secret).filter(|s| !s.is_empty()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> EmailSpec {
        EmailSpec {
            addresses: vec![
                EmailAddressSpec { address: "Support@Acme.example".into(), queue: "support".into() },
                EmailAddressSpec { address: "billing@acme.example".into(), queue: "billing".into() },
            ],
            from_address: "support@acme.example".into(),
            relay: EmailRelaySpec {
                host: "smtp.acme.example".into(),
                port: 587,
                tls: EmailTls::Starttls,
                credentials_secret: Some("acme-smtp".into()),
            },
        }
    }

    #[test]
    fn addresses_are_checked() {
        for good in ["a@b.example", "first.last+tag@mail.acme.example", "x@localhost", "o'neil@acme.example"] {
            assert!(is_email_address(good), "{good}");
        }
        for bad in [
            "",
            "plain",
            "@acme.example",
            "a@",
            "a@nodot",
            "a..b@acme.example",
            ".a@acme.example",
            "a b@acme.example",
            "\"q\"@acme.example",
            "a@-x.example",
            "a@acme.example>",
            "a@acme_x.example",
        ] {
            assert!(!is_email_address(bad), "{bad}");
        }
        assert!(!is_email_address(&format!("{}@acme.example", "a".repeat(65))));
    }

    #[test]
    fn email_is_validated_with_field_paths() {
        let mut v = Vec::new();
        let e = spec().validate(|q| q == "support" || q == "billing", true, &mut v).expect("valid");
        assert!(v.is_empty());
        assert_eq!(e.queue_of("SUPPORT@acme.EXAMPLE"), Some("support"));
        assert_eq!(e.queue_of("sales@acme.example"), None);
        assert_eq!(e.from_address, "support@acme.example");
        let bad = EmailSpec {
            addresses: vec![
                EmailAddressSpec { address: "not-an-address".into(), queue: "support".into() },
                EmailAddressSpec { address: "a@acme.example".into(), queue: "nowhere".into() },
                EmailAddressSpec { address: "A@acme.example".into(), queue: "support".into() },
            ],
            from_address: "other@acme.example".into(),
            relay: EmailRelaySpec {
                host: "bad host".into(),
                port: 70000,
                tls: EmailTls::None,
                credentials_secret: Some("Not_A_Secret".into()),
            },
        };
        let mut v = Vec::new();
        assert!(bad.validate(|q| q == "support", false, &mut v).is_none());
        let fields: Vec<_> = v.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.email",
                "spec.email.addresses[0].address",
                "spec.email.addresses[1].queue",
                "spec.email.addresses[2].address",
                "spec.email.fromAddress",
                "spec.email.relay.host",
                "spec.email.relay.port",
                "spec.email.relay.credentialsSecret",
            ]
        );
        let mut v = Vec::new();
        assert!(EmailSpec { addresses: vec![], ..spec() }.validate(|_| true, true, &mut v).is_none());
        assert_eq!(v[0].field, "spec.email.addresses");
    }

    #[test]
    fn a_manifest_with_email_parses_and_round_trips() {
        use crate::tenant::tests::{now, DEMO};
        use crate::tenant::{Tenant, TenantManifest};
        let email = "  email:\n    addresses:\n      - { address: help@acme.example, queue: support }\n    fromAddress: help@acme.example\n    relay: { host: 127.0.0.1, port: 2525, tls: none }\n";
        let text = DEMO.to_owned() + email;
        let t = TenantManifest::parse_all(&text, now()).expect("valid").remove(0);
        let e = t.email.as_ref().expect("email");
        assert_eq!(e.queue_of("help@acme.example"), Some("support"));
        assert_eq!(e.relay.tls, EmailTls::None);
        assert_eq!(e.relay.credentials_secret, None);
        let wire = Tenant::try_from(pb::Tenant::from(&t)).expect("wire");
        assert_eq!(wire.email, t.email);
        let yaml = serde_yaml::to_string(&TenantManifest::from(&t)).expect("yaml");
        assert!(yaml.contains("fromAddress: help@acme.example"), "{yaml}");
        let without = DEMO.replace("channels: [voice, chat, email]", "channels: [voice, chat]") + email;
        assert!(TenantManifest::parse_all(&without, now()).is_err(), "email needs the email channel");
        let tenants = [t];
        assert_eq!(email_owners(&tenants, "HELP@acme.example").len(), 1);
        assert!(email_owners(&tenants, "nobody@acme.example").is_empty());
        // A second tenant claiming the address in the same file is refused.
        let second = text.replace("name: acme", "name: beta");
        let both = format!("{text}---\n{second}");
        let err = TenantManifest::parse_all(&both, now()).expect_err("claimed twice").to_string();
        assert!(err.contains("help@acme.example") && err.contains("acme"), "{err}");
    }

    #[test]
    fn email_survives_the_wire() {
        let mut v = Vec::new();
        let e = spec().validate(|_| true, true, &mut v).expect("valid");
        let back = EmailSpec::from(pb::EmailConfig::from(&e));
        assert_eq!(back.validate(|_| true, true, &mut v), Some(e));
    }
}

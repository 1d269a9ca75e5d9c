//! The SMS channel (`spec.sms`): the tenant's numbers (E.164), each leading to a queue, and
//! its provider account. The provider's auth token is never in the manifest: only the name
//! of the Kubernetes Secret that holds it (`authTokenSecret`), read by media at run time.

use std::collections::BTreeMap;

use centralita_proto::tenancy::v1 as pb;
use serde::{Deserialize, Serialize};

use super::voice::{is_secret_name, PhoneNumber};
use crate::error::FieldViolation;

/// At most this many SMS numbers a tenant.
pub const MAX_SMS_NUMBERS: usize = 100;

/// The one provider so far.
pub const PROVIDER_TWILIO: &str = "twilio";

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SmsSpec {
    /// The provider: `twilio`.
    #[serde(default = "default_provider")]
    pub provider: String,
    /// The provider account (Twilio's `AC` and 32 hex digits).
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^AC[0-9a-fA-F]{32}$")))]
    pub account_sid: String,
    /// The Kubernetes Secret (in the installation's namespace) holding the account's auth
    /// token under the key `authToken`; the token itself is never in the manifest.
    #[cfg_attr(
        feature = "schema",
        schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$"))
    )]
    pub auth_token_secret: String,
    /// The tenant's SMS numbers, each leading to one of its queues.
    #[serde(default)]
    pub numbers: Vec<SmsNumberSpec>,
}

fn default_provider() -> String {
    PROVIDER_TWILIO.to_owned()
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SmsNumberSpec {
    /// E.164 (`+34910000001`).
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^\+[1-9][0-9]{1,14}$")))]
    pub number: String,
    /// The queue (of `spec.routing.queues`) its messages join.
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[a-z0-9_-]{1,40}$")))]
    pub queue: String,
}

/// The SMS channel of a tenant, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sms {
    pub provider: String,
    pub account_sid: String,
    pub auth_token_secret: String,
    /// Number → queue.
    pub numbers: BTreeMap<PhoneNumber, String>,
}

impl Sms {
    /// The queue of one of the tenant's numbers.
    pub fn queue_of(&self, number: &str) -> Option<&str> {
        let n = PhoneNumber::parse(number).ok()?;
        self.numbers.get(&n).map(String::as_str)
    }
}

fn is_account_sid(s: &str) -> bool {
    s.len() == 34 && s.starts_with("AC") && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

impl SmsSpec {
    /// The channel, or violations under `spec.sms`. `queues` says whether a queue is the
    /// tenant's; `sms` whether the SMS channel is enabled.
    pub fn validate(&self, queues: impl Fn(&str) -> bool, sms: bool, v: &mut Vec<FieldViolation>) -> Option<Sms> {
        let before = v.len();
        let mut bad = |field: &str, msg: String| v.push(FieldViolation::new(field, msg));
        if !sms {
            bad("spec.sms", "needs the sms channel in spec.channels".into());
        }
        if self.provider != PROVIDER_TWILIO {
            bad("spec.sms.provider", format!("`{}` is not a provider (twilio)", self.provider));
        }
        if !is_account_sid(&self.account_sid) {
            bad("spec.sms.accountSid", "must be AC and 32 hex digits".into());
        }
        if !is_secret_name(&self.auth_token_secret) {
            bad("spec.sms.authTokenSecret", "must be a Kubernetes Secret name (a-z, 0-9, - and ., 1 to 253)".into());
        }
        if self.numbers.is_empty() {
            bad("spec.sms.numbers", "must name at least one number".into());
        }
        if self.numbers.len() > MAX_SMS_NUMBERS {
            bad("spec.sms.numbers", format!("at most {MAX_SMS_NUMBERS} numbers"));
        }
        let mut numbers = BTreeMap::new();
        for (i, n) in self.numbers.iter().enumerate() {
            match PhoneNumber::parse(&n.number) {
                Ok(p) if numbers.contains_key(&p) => {
                    bad(&format!("spec.sms.numbers[{i}].number"), format!("`{}` is listed twice", n.number))
                }
                Ok(p) => {
                    numbers.insert(p, n.queue.clone());
                }
                Err(e) => bad(&format!("spec.sms.numbers[{i}].number"), e),
            }
            if !queues(&n.queue) {
                bad(
                    &format!("spec.sms.numbers[{i}].queue"),
                    format!("`{}` is not a queue of spec.routing.queues", n.queue),
                );
            }
        }
        (v.len() == before).then(|| Sms {
            provider: self.provider.clone(),
            account_sid: self.account_sid.clone(),
            auth_token_secret: self.auth_token_secret.clone(),
            numbers,
        })
    }
}

impl From<&Sms> for SmsSpec {
    fn from(s: &Sms) -> Self {
        SmsSpec {
            provider: s.provider.clone(),
            account_sid: s.account_sid.clone(),
            auth_token_secret: s.auth_token_secret.clone(),
            numbers: s
                .numbers
                .iter()
                .map(|(n, q)| SmsNumberSpec { number: n.as_str().to_owned(), queue: q.clone() })
                .collect(),
        }
    }
}

impl From<&Sms> for pb::SmsConfig {
    fn from(s: &Sms) -> Self {
        pb::SmsConfig {
            provider: s.provider.clone(),
            account_sid: s.account_sid.clone(),
            auth_token_secret: s.auth_token_secret.clone(),
            numbers: s
                .numbers
                .iter()
                .map(|(n, q)| pb::SmsNumber { number: n.as_str().to_owned(), queue: q.clone() })
                .collect(),
        }
    }
}

impl From<pb::SmsConfig> for SmsSpec {
    fn from(s: pb::SmsConfig) -> Self {
        SmsSpec {
            provider: s.provider,
            account_sid: s.account_sid,
            auth_token_secret: s.auth_token_secret,
            numbers: s.numbers.into_iter().map(|n| SmsNumberSpec { number: n.number, queue: n.queue }).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SmsSpec {
        SmsSpec {
            provider: "twilio".into(),
            account_sid: "AC0123456789abcdef0123456789abcdef".into(),
            auth_token_secret: "acme-twilio".into(),
            numbers: vec![
                SmsNumberSpec { number: "+15550001111".into(), queue: "support".into() },
                SmsNumberSpec { number: "+15550002222".into(), queue: "billing".into() },
            ],
        }
    }

    #[test]
    fn sms_is_validated_with_field_paths() {
        let mut v = Vec::new();
        let s = spec().validate(|q| q == "support" || q == "billing", true, &mut v).expect("valid");
        assert!(v.is_empty());
        assert_eq!(s.queue_of("+15550002222"), Some("billing"));
        assert_eq!(s.queue_of("+15550003333"), None);
        assert_eq!(s.queue_of("garbage"), None);
        assert_eq!(SmsSpec::from(&s).numbers.len(), 2);
        let bad = SmsSpec {
            provider: "carrier-pigeon".into(),
            account_sid: "AC123".into(),
            auth_token_secret: "Not_A_Secret".into(),
            numbers: vec![
                SmsNumberSpec { number: "5550001111".into(), queue: "support".into() },
                SmsNumberSpec { number: "+15550002222".into(), queue: "nowhere".into() },
                SmsNumberSpec { number: "+15550002222".into(), queue: "support".into() },
            ],
        };
        let mut v = Vec::new();
        assert!(bad.validate(|q| q == "support", false, &mut v).is_none());
        let fields: Vec<_> = v.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.sms",
                "spec.sms.provider",
                "spec.sms.accountSid",
                "spec.sms.authTokenSecret",
                "spec.sms.numbers[0].number",
                "spec.sms.numbers[1].queue",
                "spec.sms.numbers[2].number",
            ]
        );
        let mut v = Vec::new();
        assert!(SmsSpec { numbers: vec![], ..spec() }.validate(|_| true, true, &mut v).is_none());
        assert_eq!(v[0].field, "spec.sms.numbers");
    }

    #[test]
    fn a_manifest_with_sms_parses_and_round_trips() {
        use crate::tenant::tests::{now, DEMO};
        use crate::tenant::{Tenant, TenantManifest};
        let text = DEMO.replace("channels: [voice, chat, email]", "channels: [voice, chat, sms, email]")
            + "  sms:\n    accountSid: AC0123456789abcdef0123456789abcdef\n    authTokenSecret: acme-twilio\n    numbers:\n      - { number: \"+34910000101\", queue: support }\n";
        let t = TenantManifest::parse_all(&text, now()).expect("valid").remove(0);
        let sms = t.sms.as_ref().expect("sms");
        assert_eq!(sms.queue_of("+34910000101"), Some("support"));
        assert_eq!(sms.auth_token_secret, "acme-twilio");
        let wire = Tenant::try_from(pb::Tenant::from(&t)).expect("wire");
        assert_eq!(wire.sms, t.sms);
        let yaml = serde_yaml::to_string(&TenantManifest::from(&t)).expect("yaml");
        assert!(yaml.contains("authTokenSecret: acme-twilio"), "{yaml}");
        let without = DEMO.to_owned() + "  sms:\n    accountSid: AC0123456789abcdef0123456789abcdef\n    authTokenSecret: acme-twilio\n    numbers:\n      - { number: \"+34910000101\", queue: support }\n";
        assert!(TenantManifest::parse_all(&without, now()).is_err(), "sms needs the sms channel");
    }

    #[test]
    fn sms_survives_the_wire() {
        let mut v = Vec::new();
        let s = spec().validate(|_| true, true, &mut v).expect("valid");
        let back = SmsSpec::from(pb::SmsConfig::from(&s));
        assert_eq!(back.validate(|_| true, true, &mut v), Some(s));
    }
}

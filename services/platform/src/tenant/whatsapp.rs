//! The WhatsApp channel (`spec.whatsapp`): the tenant's WhatsApp Business numbers on Meta's
//! Cloud API (Meta's id of each number, its E.164 form and the queue its messages join),
//! and the name of the Kubernetes Secret holding the app secret (webhook signatures), the
//! access token (sends) and the webhook's verify token. No secret is ever in the manifest.
//! A WhatsApp conversation is a contact of channel `social`.

use std::collections::BTreeMap;

use centralita_proto::tenancy::v1 as pb;
use serde::{Deserialize, Serialize};

use super::voice::{is_secret_name, PhoneNumber};
use crate::error::FieldViolation;

/// At most this many WhatsApp numbers a tenant.
pub const MAX_WHATSAPP_NUMBERS: usize = 50;

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WhatsAppSpec {
    /// The Kubernetes Secret (in the installation's namespace) with the keys `appSecret`,
    /// `accessToken` and `verifyToken`.
    #[cfg_attr(
        feature = "schema",
        schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$"))
    )]
    pub secret_name: String,
    /// The tenant's WhatsApp numbers, each leading to one of its queues.
    #[serde(default)]
    pub numbers: Vec<WhatsAppNumberSpec>,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WhatsAppNumberSpec {
    /// Meta's id of the number (`phone_number_id`: digits).
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[0-9]{1,32}$")))]
    pub phone_number_id: String,
    /// The number, E.164 (`+34910000001`).
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^\+[1-9][0-9]{1,14}$")))]
    pub number: String,
    /// The queue (of `spec.routing.queues`) its messages join.
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[a-z0-9_-]{1,40}$")))]
    pub queue: String,
}

/// One WhatsApp number of a tenant, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhatsAppNumber {
    pub number: PhoneNumber,
    pub queue: String,
}

/// The WhatsApp channel of a tenant, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhatsApp {
    pub secret_name: String,
    /// Meta's number id → the number and its queue.
    pub numbers: BTreeMap<String, WhatsAppNumber>,
}

impl WhatsApp {
    /// The number with Meta's id `phone_number_id`, if it is the tenant's.
    pub fn number(&self, phone_number_id: &str) -> Option<&WhatsAppNumber> {
        self.numbers.get(phone_number_id)
    }

    /// Meta's id of the tenant's number `number` (E.164), if it is one.
    pub fn id_of(&self, number: &str) -> Option<&str> {
        self.numbers.iter().find(|(_, n)| n.number.as_str() == number).map(|(id, _)| id.as_str())
    }
}

fn is_number_id(s: &str) -> bool {
    (1..=32).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

impl WhatsAppSpec {
    /// The channel, or violations under `spec.whatsapp`. `queues` says whether a queue is
    /// the tenant's; `social` whether the social channel is enabled.
    pub fn validate(
        &self,
        queues: impl Fn(&str) -> bool,
        social: bool,
        v: &mut Vec<FieldViolation>,
    ) -> Option<WhatsApp> {
        let before = v.len();
        let mut bad = |field: &str, msg: String| v.push(FieldViolation::new(field, msg));
        if !social {
            bad("spec.whatsapp", "needs the social channel in spec.channels".into());
        }
        if !is_secret_name(&self.secret_name) {
            bad("spec.whatsapp.secretName", "must be a Kubernetes Secret name (a-z, 0-9, - and ., 1 to 253)".into());
        }
        if self.numbers.is_empty() || self.numbers.len() > MAX_WHATSAPP_NUMBERS {
            bad("spec.whatsapp.numbers", format!("must name 1 to {MAX_WHATSAPP_NUMBERS} numbers"));
        }
        let mut numbers: BTreeMap<String, WhatsAppNumber> = BTreeMap::new();
        for (i, n) in self.numbers.iter().enumerate() {
            let at = |f: &str| format!("spec.whatsapp.numbers[{i}].{f}");
            if !is_number_id(&n.phone_number_id) {
                bad(&at("phoneNumberId"), "must be Meta's id of the number (1 to 32 digits)".into());
            } else if numbers.contains_key(&n.phone_number_id) {
                bad(&at("phoneNumberId"), format!("`{}` is listed twice", n.phone_number_id));
            }
            let number = match PhoneNumber::parse(&n.number) {
                Ok(p) if numbers.values().any(|m| m.number == p) => {
                    bad(&at("number"), format!("`{}` is listed twice", n.number));
                    None
                }
                Ok(p) => Some(p),
                Err(e) => {
                    bad(&at("number"), e);
                    None
                }
            };
            if !queues(&n.queue) {
                bad(&at("queue"), format!("`{}` is not a queue of spec.routing.queues", n.queue));
            }
            if let Some(number) = number {
                numbers.entry(n.phone_number_id.clone()).or_insert(WhatsAppNumber { number, queue: n.queue.clone() });
            }
        }
        (v.len() == before).then(|| WhatsApp { secret_name: self.secret_name.clone(), numbers })
    }
}

impl From<&WhatsApp> for WhatsAppSpec {
    fn from(w: &WhatsApp) -> Self {
        WhatsAppSpec {
            secret_name: w.secret_name.clone(),
            numbers: w
                .numbers
                .iter()
                .map(|(id, n)| WhatsAppNumberSpec {
                    phone_number_id: id.clone(),
                    number: n.number.as_str().to_owned(),
                    queue: n.queue.clone(),
                })
                .collect(),
        }
    }
}

impl From<&WhatsApp> for pb::WhatsAppConfig {
    fn from(w: &WhatsApp) -> Self {
        pb::WhatsAppConfig {
            secret_name: w.secret_name.clone(),
            numbers: w
                .numbers
                .iter()
                .map(|(id, n)| pb::WhatsAppNumber {
                    phone_number_id: id.clone(),
                    number: n.number.as_str().to_owned(),
                    queue: n.queue.clone(),
                })
                .collect(),
        }
    }
}

impl From<pb::WhatsAppConfig> for WhatsAppSpec {
    fn from(w: pb::WhatsAppConfig) -> Self {
        WhatsAppSpec {
            secret_name: w.secret_name,
            numbers: w
                .numbers
                .into_iter()
                .map(|n| WhatsAppNumberSpec { phone_number_id: n.phone_number_id, number: n.number, queue: n.queue })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> WhatsAppSpec {
        WhatsAppSpec {
            secret_name: "acme-whatsapp".into(),
            numbers: vec![WhatsAppNumberSpec {
                phone_number_id: "106540352242922".into(),
                number: "+34910000009".into(),
                queue: "support".into(),
            }],
        }
    }

    fn fields(s: &WhatsAppSpec, social: bool) -> Vec<String> {
        let mut v = Vec::new();
        s.validate(|q| q == "support", social, &mut v);
        v.into_iter().map(|f| f.field).collect()
    }

    #[test]
    fn a_channel_validates_and_round_trips() {
        let mut v = Vec::new();
        let w = spec().validate(|q| q == "support", true, &mut v).expect("valid");
        assert!(v.is_empty());
        let n = w.number("106540352242922").expect("its number");
        assert_eq!((n.number.as_str(), n.queue.as_str()), ("+34910000009", "support"));
        assert_eq!(w.id_of("+34910000009"), Some("106540352242922"));
        assert_eq!((w.number("1"), w.id_of("+34910000001")), (None, None));
        assert_eq!(WhatsAppSpec::from(&w), spec());
        assert_eq!(WhatsAppSpec::from(pb::WhatsAppConfig::from(&w)), spec());
    }

    #[test]
    fn refusals_name_their_field() {
        assert_eq!(fields(&spec(), false), ["spec.whatsapp"]);
        let mut s = spec();
        s.secret_name = "Not_A_Secret".into();
        s.numbers[0].phone_number_id = "10654-x".into();
        s.numbers[0].number = "34910000009".into();
        s.numbers[0].queue = "nope".into();
        assert_eq!(
            fields(&s, true),
            [
                "spec.whatsapp.secretName",
                "spec.whatsapp.numbers[0].phoneNumberId",
                "spec.whatsapp.numbers[0].number",
                "spec.whatsapp.numbers[0].queue"
            ]
        );
        let mut twice = spec();
        twice.numbers.push(twice.numbers[0].clone());
        assert_eq!(fields(&twice, true), ["spec.whatsapp.numbers[1].phoneNumberId", "spec.whatsapp.numbers[1].number"]);
        let mut none = spec();
        none.numbers.clear();
        assert_eq!(fields(&none, true), ["spec.whatsapp.numbers"]);
    }
}

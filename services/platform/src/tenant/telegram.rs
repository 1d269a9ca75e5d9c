//! The Telegram channel (`spec.telegram`): the tenant's bot (its numeric id, the part of its
//! token before `:`), the queue its customers' messages join, and the name of the Kubernetes
//! Secret holding the bot's token (`botToken`) and the webhook's secret token
//! (`webhookSecret`). No secret is ever in the manifest. A Telegram conversation is a contact
//! of channel `social`.

use centralita_proto::tenancy::v1 as pb;
use serde::{Deserialize, Serialize};

use super::voice::is_secret_name;
use crate::error::FieldViolation;

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TelegramSpec {
    /// The bot's id: the digits of its token before `:`.
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[0-9]{1,20}$")))]
    pub bot_id: String,
    /// The Kubernetes Secret with the keys `botToken` and `webhookSecret`.
    #[cfg_attr(
        feature = "schema",
        schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$"))
    )]
    pub secret_name: String,
    /// The queue (of `spec.routing.queues`) its messages join.
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[a-z0-9_-]{1,40}$")))]
    pub queue: String,
}

/// The Telegram channel of a tenant, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Telegram {
    pub bot_id: String,
    pub secret_name: String,
    pub queue: String,
}

fn is_bot_id(s: &str) -> bool {
    (1..=20).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

impl TelegramSpec {
    /// The channel, or violations under `spec.telegram`. `queues` says whether a queue is
    /// the tenant's; `social` whether the social channel is enabled.
    pub fn validate(
        &self,
        queues: impl Fn(&str) -> bool,
        social: bool,
        v: &mut Vec<FieldViolation>,
    ) -> Option<Telegram> {
        let before = v.len();
        let mut bad = |field: &str, msg: &str| v.push(FieldViolation::new(field, msg));
        if !social {
            bad("spec.telegram", "needs the social channel in spec.channels");
        }
        if !is_bot_id(&self.bot_id) {
            bad("spec.telegram.botId", "must be the bot's id (the 1 to 20 digits of its token before `:`)");
        }
        if !is_secret_name(&self.secret_name) {
            bad("spec.telegram.secretName", "must be a Kubernetes Secret name (a-z, 0-9, - and ., 1 to 253)");
        }
        if !queues(&self.queue) {
            bad("spec.telegram.queue", "is not a queue of spec.routing.queues");
        }
        (v.len() == before).then(|| Telegram {
            bot_id: self.bot_id.clone(),
            secret_name: self.secret_name.clone(),
            queue: self.queue.clone(),
        })
    }
}

impl From<&Telegram> for TelegramSpec {
    fn from(t: &Telegram) -> Self {
        TelegramSpec { bot_id: t.bot_id.clone(), secret_name: t.secret_name.clone(), queue: t.queue.clone() }
    }
}

impl From<&Telegram> for pb::TelegramConfig {
    fn from(t: &Telegram) -> Self {
        pb::TelegramConfig { bot_id: t.bot_id.clone(), secret_name: t.secret_name.clone(), queue: t.queue.clone() }
    }
}

impl From<pb::TelegramConfig> for TelegramSpec {
    fn from(t: pb::TelegramConfig) -> Self {
        TelegramSpec { bot_id: t.bot_id, secret_name: t.secret_name, queue: t.queue }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> TelegramSpec {
        TelegramSpec { bot_id: "123456789".into(), secret_name: "acme-telegram".into(), queue: "support".into() }
    }

    #[test]
    fn a_bot_validates_and_round_trips() {
        let mut v = Vec::new();
        let t = spec().validate(|q| q == "support", true, &mut v).expect("valid");
        assert!(v.is_empty());
        assert_eq!(TelegramSpec::from(&t), spec());
        assert_eq!(TelegramSpec::from(pb::TelegramConfig::from(&t)), spec());
    }

    #[test]
    fn refusals_name_their_field() {
        let fields = |s: &TelegramSpec, social: bool| {
            let mut v = Vec::new();
            s.validate(|q| q == "support", social, &mut v);
            v.into_iter().map(|f| f.field).collect::<Vec<_>>()
        };
        assert_eq!(fields(&spec(), false), ["spec.telegram"]);
        let bad = TelegramSpec { bot_id: "123:AA".into(), secret_name: "Bad_Name".into(), queue: "nope".into() };
        assert_eq!(fields(&bad, true), ["spec.telegram.botId", "spec.telegram.secretName", "spec.telegram.queue"]);
    }
}

//! The manifest (`tenant.yaml`), Kubernetes-shaped: apiVersion, kind, metadata.name, spec;
//! and a [`Tenant`] written back as one. Its validation into a [`Tenant`] is in `validate`.

use serde::{Deserialize, Serialize};

use super::{
    Channel, EmailSpec, PagesSpec, RecordingMode, SmsSpec, TelegramSpec, Tenant, TenantStatus, VoiceSpec, WebChatSpec,
    Weekday, WhatsAppSpec,
};
use crate::queue::RoutingSpec;

pub const API_VERSION: &str = "centralita.io/v1";
pub const KIND: &str = "Tenant";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenantManifest {
    pub api_version: String,
    pub kind: String,
    pub metadata: ManifestMetadata,
    pub spec: TenantSpec,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ManifestMetadata {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// The `spec` of a tenant. Numbers are read as signed so a negative quota gets a message
/// that names the rule rather than a type error. The agent pool cannot change once set (a
/// transition rule the API server checks on update).
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(
    feature = "schema",
    schemars(extend("x-kubernetes-validations" = [{
        "rule": "(has(self.routing) && has(self.routing.agentPool) ? self.routing.agentPool : 'default') == (has(oldSelf.routing) && has(oldSelf.routing.agentPool) ? oldSelf.routing.agentPool : 'default')",
        "message": "spec.routing.agentPool cannot change once the tenant exists"
    }]))
)]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenantSpec {
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 200)))]
    pub display_name: String,
    #[serde(default = "default_status")]
    pub status: TenantStatus,
    #[cfg_attr(feature = "schema", schemars(length(min = 1)))]
    pub channels: Vec<Channel>,
    pub service_level: ServiceLevelSpec,
    pub quotas: QuotasSpec,
    pub business_hours: BusinessHoursSpec,
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 10950)))]
    pub data_retention_days: i64,
    pub recording: RecordingSpec,
    #[serde(default)]
    pub routing: RoutingSpec,
    /// Numbers and trunks of the voice channel.
    #[serde(default, skip_serializing_if = "VoiceSpec::is_empty")]
    pub voice: VoiceSpec,
    /// The web chat widget: its key, the sites allowed to use it and its queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webchat: Option<WebChatSpec>,
    /// The SMS channel: numbers (each to a queue), the provider account and the name of the
    /// Secret holding its auth token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sms: Option<SmsSpec>,
    /// The email channel: inbound addresses (each to a queue), the reply address and the
    /// SMTP relay (with the name of the Secret holding its credentials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailSpec>,
    /// WhatsApp through Meta's Cloud API: the numbers (each to a queue) and the name of the
    /// Secret holding the app secret, access token and webhook verify token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whatsapp: Option<WhatsAppSpec>,
    /// Telegram: the bot, its queue and the name of the Secret holding its token and the
    /// webhook's secret token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telegram: Option<TelegramSpec>,
    /// Facebook Messenger: the tenant's Pages (each to a queue) and the name of the Secret
    /// holding the app secret, Page access token and webhook verify token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messenger: Option<PagesSpec>,
    /// Instagram Direct: the tenant's professional accounts (each to a queue) and the name
    /// of the Secret, as for Messenger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instagram: Option<PagesSpec>,
}

fn default_status() -> TenantStatus {
    TenantStatus::Active
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceLevelSpec {
    #[cfg_attr(feature = "schema", schemars(range(max = 100.0), extend("minimum" = 0.0, "exclusiveMinimum" = true)))]
    pub target_percent: f64,
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 86400)))]
    pub threshold_seconds: i64,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QuotasSpec {
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 1000000)))]
    pub max_concurrent_contacts: i64,
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 1000000)))]
    pub api_requests_per_second: i64,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BusinessHoursSpec {
    pub time_zone: String,
    #[serde(default)]
    pub windows: Vec<WindowSpec>,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WindowSpec {
    pub days: Vec<Weekday>,
    /// `HH:MM`, local time.
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$")))]
    pub open: String,
    /// `HH:MM`, local time; `24:00` closes at midnight.
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$")))]
    pub close: String,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecordingSpec {
    pub voice: RecordingMode,
    #[serde(default)]
    pub chat_transcripts: bool,
    #[serde(default)]
    pub allow_pause: bool,
    /// With `voice: all`, the share of calls recorded, 1-100 (100 when left out); which calls
    /// is decided per contact, the same way on every replica.
    #[serde(default = "hundred", skip_serializing_if = "is_hundred")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 100)))]
    pub sample_percent: u32,
    /// Only the calls of these queues are recorded (`all`) or may be (`on_demand`); empty:
    /// every queue's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queues: Vec<String>,
    /// Agents may hear the recordings (and read the transcripts) of the contacts they
    /// handled; otherwise only the tenant's supervisors and admins may.
    #[serde(default, skip_serializing_if = "is_false")]
    pub agents_hear_own: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn hundred() -> u32 {
    100
}

fn is_hundred(n: &u32) -> bool {
    *n == 100
}

pub(super) fn parse_hhmm(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    if m >= 60 || h > 24 || (h == 24 && m != 0) {
        return None;
    }
    Some(h * 60 + m)
}

pub(super) fn fmt_hhmm(minute: u32) -> String {
    format!("{:02}:{:02}", minute / 60, minute % 60)
}

impl From<&Tenant> for TenantManifest {
    fn from(t: &Tenant) -> Self {
        let mut windows: Vec<WindowSpec> = Vec::new();
        for w in &t.business_hours.windows {
            let (open, close) = (fmt_hhmm(w.open_minute), fmt_hhmm(w.close_minute));
            match windows.iter_mut().find(|x| x.open == open && x.close == close) {
                Some(x) => x.days.push(w.day),
                None => windows.push(WindowSpec { days: vec![w.day], open, close }),
            }
        }
        TenantManifest {
            api_version: API_VERSION.into(),
            kind: KIND.into(),
            metadata: ManifestMetadata {
                name: t.id.to_string(),
                namespace: None,
                labels: Default::default(),
                annotations: Default::default(),
            },
            spec: TenantSpec {
                display_name: t.display_name.clone(),
                status: t.status,
                channels: t.channels.iter().copied().collect(),
                service_level: ServiceLevelSpec {
                    target_percent: t.service_level.target_percent,
                    threshold_seconds: t.service_level.threshold.as_secs() as i64,
                },
                quotas: QuotasSpec {
                    max_concurrent_contacts: t.quotas.max_concurrent_contacts.into(),
                    api_requests_per_second: t.quotas.api_requests_per_second.into(),
                },
                business_hours: BusinessHoursSpec { time_zone: t.business_hours.time_zone.name().into(), windows },
                data_retention_days: t.data_retention_days.into(),
                recording: RecordingSpec {
                    voice: t.recording.voice,
                    chat_transcripts: t.recording.chat_transcripts,
                    allow_pause: t.recording.allow_pause,
                    sample_percent: t.recording.sample_percent,
                    queues: t.recording.queues.iter().cloned().collect(),
                    agents_hear_own: t.recording.agents_hear_own,
                },
                routing: RoutingSpec::from(&t.routing),
                voice: VoiceSpec::from(&t.voice),
                webchat: t.webchat.as_ref().map(WebChatSpec::from),
                sms: t.sms.as_ref().map(SmsSpec::from),
                whatsapp: t.whatsapp.as_ref().map(WhatsAppSpec::from),
                telegram: t.telegram.as_ref().map(TelegramSpec::from),
                messenger: t.messenger.as_ref().map(PagesSpec::from),
                instagram: t.instagram.as_ref().map(PagesSpec::from),
                email: t.email.as_ref().map(EmailSpec::from),
            },
        }
    }
}

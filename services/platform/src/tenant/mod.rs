//! The `Tenant`: one client company of the BPO, with its channels, contracted service level,
//! quotas, business hours, retention and recording policy.
//!
//! Three shapes of the same thing, converted at the edges:
//! - [`TenantManifest`]: the `tenant.yaml` file (the same shape as the Kubernetes `Tenant`
//!   resource), parsed strictly: unknown fields are refused.
//! - [`Tenant`]: the validated domain value every service works with.
//! - `centralita_proto::tenancy::v1::Tenant`: the wire form on gRPC and on the tenants topic.
//!
//! # Layout
//! - this file: [`Tenant`] and the parts it is made of;
//! - `id`: [`TenantId`] (and the reserved [`BPO_TENANT`]), and contact resource names
//!   ([`contact_name`], [`parse_contact_name`]);
//! - `manifest`: [`TenantManifest`] and its spec types, and a [`Tenant`] written back as one;
//! - `validate`: [`TenantManifest::into_tenant`] and [`TenantManifest::parse_all`], the rules
//!   every tenant obeys whichever shape it arrives in;
//! - `voice`: numbers, trunks, agents' fixed phones and the registrar of agents' phones of
//!   the voice channel ([`VoiceConfig`],
//!   `spec.voice`);
//! - `email`: the inbound addresses, reply address and SMTP relay ([`Email`], `spec.email`);
//! - `sms`: the SMS numbers and provider account ([`Sms`], `spec.sms`);
//! - `whatsapp`: the WhatsApp Business numbers and their Secret ([`WhatsApp`], `spec.whatsapp`);
//! - `telegram`: the Telegram bot and its Secret ([`Telegram`], `spec.telegram`);
//! - `pages`: Messenger's Pages and Instagram's accounts and their Secret ([`Pages`],
//!   `spec.messenger`, `spec.instagram`);
//! - `webchat`: the web chat widget: key, allowed origins, queue ([`WebChat`], `spec.webchat`);
//! - `wire`: the protobuf conversions (decoding goes through the same validation), and
//!   [`timestamp`] / [`from_timestamp`].

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::queue::RoutingConfig;

mod email;
mod id;
mod manifest;
mod pages;
mod sms;
mod telegram;
mod validate;
mod voice;
mod webchat;
mod whatsapp;
mod wire;

pub use email::{
    email_owners, is_email_address, Email, EmailAddressSpec, EmailRelay, EmailRelaySpec, EmailSpec, EmailTls,
    MAX_EMAIL_ADDRESSES,
};
pub use id::{contact_name, parse_contact_name, TenantId, BPO_TENANT};
pub use manifest::{
    BusinessHoursSpec, ManifestMetadata, QuotasSpec, RecordingSpec, ServiceLevelSpec, TenantManifest, TenantSpec,
    WindowSpec, API_VERSION, KIND,
};
pub use pages::{PageSpec, Pages, PagesSpec};
pub use sms::{Sms, SmsNumberSpec, SmsSpec, MAX_SMS_NUMBERS, PROVIDER_TWILIO};
pub use telegram::{Telegram, TelegramSpec};
pub use validate::{MAX_API_RPS, MAX_CONCURRENT_CONTACTS, MAX_RETENTION_DAYS, MAX_THRESHOLD_SECONDS};
pub use voice::{
    is_phone_uri, is_sip_domain, owners_of, registrar_owners, AnnouncementsSpec, IpBlock, NumberSpec, PhoneNumber,
    PhoneSpec, Registrar, RegistrarSpec, Trunk, TrunkCredentialsSpec, TrunkSpec, VoiceConfig, VoiceSpec,
    ANNOUNCEMENT_LANGUAGES, ANNOUNCE_EVERY_SECONDS, MAX_NUMBERS, MAX_PHONES, MAX_PHONE_URI, MAX_TRUNKS,
    MAX_TRUNK_SOURCES,
};
pub use webchat::{normalise_origin, WebChat, WebChatSpec, MAX_ORIGINS};
pub use whatsapp::{WhatsApp, WhatsAppNumber, WhatsAppNumberSpec, WhatsAppSpec, MAX_WHATSAPP_NUMBERS};
pub use wire::{from_timestamp, timestamp};

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TenantStatus {
    Active,
    Suspended,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Voice,
    Chat,
    Sms,
    Email,
    Social,
    Task,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordingMode {
    None,
    All,
    OnDemand,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl From<chrono::Weekday> for Weekday {
    fn from(d: chrono::Weekday) -> Self {
        match d {
            chrono::Weekday::Mon => Weekday::Mon,
            chrono::Weekday::Tue => Weekday::Tue,
            chrono::Weekday::Wed => Weekday::Wed,
            chrono::Weekday::Thu => Weekday::Thu,
            chrono::Weekday::Fri => Weekday::Fri,
            chrono::Weekday::Sat => Weekday::Sat,
            chrono::Weekday::Sun => Weekday::Sun,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServiceLevel {
    /// Contracted share answered within `threshold`, percent in (0, 100].
    pub target_percent: f64,
    pub threshold: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quotas {
    pub max_concurrent_contacts: u32,
    pub api_requests_per_second: u32,
}

/// One opening window in the tenant's local time, minutes after midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct OpeningWindow {
    pub day: Weekday,
    pub open_minute: u32,
    pub close_minute: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BusinessHours {
    pub time_zone: chrono_tz::Tz,
    /// No windows: open around the clock.
    pub windows: Vec<OpeningWindow>,
}

impl BusinessHours {
    /// Whether `at` falls inside an opening window, in the tenant's local time (daylight
    /// saving included).
    pub fn is_open(&self, at: DateTime<Utc>) -> bool {
        use chrono::{Datelike, Timelike};
        if self.windows.is_empty() {
            return true;
        }
        let local = at.with_timezone(&self.time_zone);
        let minute = local.hour() * 60 + local.minute();
        let day = Weekday::from(local.weekday());
        self.windows.iter().any(|w| w.day == day && w.open_minute <= minute && minute < w.close_minute)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingPolicy {
    pub voice: RecordingMode,
    pub chat_transcripts: bool,
    pub allow_pause: bool,
    /// With `voice: all`, the share of calls recorded (1-100).
    pub sample_percent: u32,
    /// Only these queues' calls are recorded (or may be); empty: every queue's.
    pub queues: std::collections::BTreeSet<String>,
    /// Agents may hear the recordings (and read the transcripts) of the contacts they
    /// handled.
    pub agents_hear_own: bool,
}

/// How one voice call is recorded under a tenant's [`RecordingPolicy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoiceRecording {
    /// From the bridge to the end (the agent may pause it when the tenant allows).
    Always,
    /// Only once the agent starts it (`ResumeRecording`): the contact starts with its
    /// recording paused and nothing is recorded before the start.
    OnDemand,
    Never,
}

impl RecordingPolicy {
    /// How the voice call of contact `contact_id` in `queue` is recorded: the mode, limited
    /// to the policy's queues, and for `all` the sample — the contact's id hashed (FNV-1a,
    /// stable across replicas and restarts) into 0-99, recorded when below the percentage.
    pub fn voice_call(&self, contact_id: &str, queue: &str) -> VoiceRecording {
        if !self.queues.is_empty() && !self.queues.contains(queue) {
            return VoiceRecording::Never;
        }
        match self.voice {
            RecordingMode::None => VoiceRecording::Never,
            RecordingMode::OnDemand => VoiceRecording::OnDemand,
            RecordingMode::All if sample_bucket(contact_id) < self.sample_percent => VoiceRecording::Always,
            RecordingMode::All => VoiceRecording::Never,
        }
    }
}

/// The contact's bucket 0-99 of a recording sample (FNV-1a 64 of its id).
pub fn sample_bucket(contact_id: &str) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in contact_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % 100) as u32
}

/// A validated tenant configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    pub id: TenantId,
    pub display_name: String,
    pub status: TenantStatus,
    pub channels: BTreeSet<Channel>,
    pub service_level: ServiceLevel,
    pub quotas: Quotas,
    pub business_hours: BusinessHours,
    pub data_retention_days: u32,
    pub recording: RecordingPolicy,
    pub routing: RoutingConfig,
    /// Numbers and trunks of the voice channel.
    pub voice: VoiceConfig,
    /// The web chat widget, if the tenant has one.
    pub webchat: Option<WebChat>,
    /// The SMS channel: numbers, provider account, the auth token's Secret name.
    pub sms: Option<Sms>,
    /// WhatsApp: the numbers on Meta's Cloud API and the name of their Secret.
    pub whatsapp: Option<WhatsApp>,
    /// Telegram: the bot and the name of its Secret.
    pub telegram: Option<Telegram>,
    /// Messenger: the Pages and the name of their Secret.
    pub messenger: Option<Pages>,
    /// Instagram: the professional accounts and the name of their Secret.
    pub instagram: Option<Pages>,
    /// The email channel: inbound addresses, the reply address, the relay.
    pub email: Option<Email>,
    pub updated_at: DateTime<Utc>,
}

impl Tenant {
    pub fn is_active(&self) -> bool {
        self.status == TenantStatus::Active
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example tenant the tests of every file of this module start from.
    pub(crate) const DEMO: &str = r#"
apiVersion: centralita.io/v1
kind: Tenant
metadata:
  name: acme
spec:
  displayName: Acme Corp
  channels: [voice, chat, email]
  serviceLevel: { targetPercent: 80, thresholdSeconds: 20 }
  quotas: { maxConcurrentContacts: 200, apiRequestsPerSecond: 100 }
  businessHours:
    timeZone: Europe/Madrid
    windows:
      - { days: [mon, tue, wed, thu, fri], open: "08:00", close: "20:00" }
      - { days: [sat], open: "09:00", close: "14:00" }
  dataRetentionDays: 365
  recording: { voice: all, chatTranscripts: true, allowPause: true }
  routing:
    awayReasons: [break, lunch]
    dispositionCodes: [resolved, escalated]
    queues:
      - id: support
        priority: 5
        agingPerMinute: 2
        maxWaitSeconds: 300
        overflowQueue: billing
        steps:
          - { afterSeconds: 0 }
          - { afterSeconds: 30, proficiencyDrop: 1 }
          - { afterSeconds: 90, dropSkills: true, dropLanguage: true }
      - id: billing
        offerTimeoutSeconds: 20
        serviceLevelTargetPercent: 90
        serviceLevelDefinition: left-queue
        abandonRateDefinition: excluding-short
        shortAbandonSeconds: 10
        script:
          en: ["Hello {customer}, this is billing at {tenant}.", "Ask for the invoice number."]
          es: ["Hola {customer}, le atiende facturación de {tenant}."]
        resolutionQuestion: { en: "Is your invoice clear now?", es: "¿Le ha quedado clara la factura?" }
        dispositionCodes: [refund, explained]
  voice:
    numbers:
      - { number: "+34910000001", queue: support }
      - { number: "+34910000002", queue: billing }
    trunks:
      - { name: carrier-a, sources: ["198.51.100.0/24", "203.0.113.7"] }
      - { name: carrier-b, sources: ["2001:db8::/32"], credentials: { secretName: acme-carrier-b } }
  webchat:
    widgetKey: wk_acme_0123456789abcdef
    allowedOrigins: ["https://www.acme.example", "http://localhost:8000"]
    queue: support
"#;

    pub(crate) fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000, 0).expect("valid")
    }

    #[test]
    fn business_hours_follow_local_time_and_daylight_saving() {
        let t = TenantManifest::parse_all(DEMO, now()).expect("valid").remove(0);
        let at = |s: &str| DateTime::parse_from_rfc3339(s).expect("valid").with_timezone(&Utc);
        let bh = &t.business_hours;
        // Monday 23 November 2026, Madrid is UTC+1.
        assert!(!bh.is_open(at("2026-11-23T06:59:00Z")), "07:59 local");
        assert!(bh.is_open(at("2026-11-23T07:00:00Z")), "08:00 local");
        assert!(bh.is_open(at("2026-11-23T18:59:00Z")), "19:59 local");
        assert!(!bh.is_open(at("2026-11-23T19:00:00Z")), "20:00 local closes");
        // Saturday morning only; Sunday closed.
        assert!(bh.is_open(at("2026-11-28T12:30:00Z")));
        assert!(!bh.is_open(at("2026-11-28T13:30:00Z")));
        assert!(!bh.is_open(at("2026-11-29T10:00:00Z")));
        // Monday 6 July 2026, summer time (UTC+2).
        assert!(!bh.is_open(at("2026-07-06T05:30:00Z")), "07:30 local");
        assert!(bh.is_open(at("2026-07-06T06:30:00Z")), "08:30 local");
        // No windows: always open.
        let always = BusinessHours { time_zone: chrono_tz::UTC, windows: Vec::new() };
        assert!(always.is_open(at("2026-11-29T03:00:00Z")));
    }
}

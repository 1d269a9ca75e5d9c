//! The `Tenant`: one client company of the BPO, with its channels, contracted service level,
//! quotas, business hours, retention and recording policy.
//!
//! Three shapes of the same thing, converted at the edges:
//! - [`TenantManifest`]: the `tenant.yaml` file (the same shape as the Kubernetes `Tenant`
//!   resource), parsed strictly: unknown fields are refused.
//! - [`Tenant`]: the validated domain value every service works with.
//! - `centralita_proto::tenancy::v1::Tenant`: the wire form on gRPC and on the tenants topic.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use centralita_proto::tenancy::v1 as pb;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, FieldViolation};
use crate::queue::{RoutingConfig, RoutingSpec};

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
    pub updated_at: DateTime<Utc>,
}

impl Tenant {
    pub fn is_active(&self) -> bool {
        self.status == TenantStatus::Active
    }
}

// ---------------------------------------------------------------------------------------
// The manifest (`tenant.yaml`), Kubernetes-shaped: apiVersion, kind, metadata.name, spec.
// ---------------------------------------------------------------------------------------

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
}

/// Upper bounds that catch typos (an extra zero) rather than limit real tenants.
pub const MAX_CONCURRENT_CONTACTS: i64 = 1_000_000;
pub const MAX_API_RPS: i64 = 1_000_000;
pub const MAX_RETENTION_DAYS: i64 = 3650 * 3;
pub const MAX_THRESHOLD_SECONDS: i64 = 86_400;

fn parse_hhmm(s: &str) -> Option<u32> {
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

fn fmt_hhmm(minute: u32) -> String {
    format!("{:02}:{:02}", minute / 60, minute % 60)
}

impl TenantManifest {
    /// Validates the manifest into a [`Tenant`], listing every invalid field by its path.
    pub fn into_tenant(self, updated_at: DateTime<Utc>) -> Result<Tenant, Error> {
        let mut v = Vec::new();
        let mut bad = |field: &str, msg: String| v.push(FieldViolation::new(field, msg));
        if self.api_version != API_VERSION {
            bad("apiVersion", format!("must be `{API_VERSION}`, got `{}`", self.api_version));
        }
        if self.kind != KIND {
            bad("kind", format!("must be `{KIND}`, got `{}`", self.kind));
        }
        let id = TenantId::parse(&self.metadata.name)
            .and_then(|id| match id.as_str() {
                BPO_TENANT => Err(format!("`{BPO_TENANT}` is reserved for the BPO's own records")),
                _ => Ok(id),
            })
            .map_err(|e| bad("metadata.name", e))
            .ok();
        let s = self.spec;
        let display_name = s.display_name.trim().to_owned();
        if display_name.is_empty() || display_name.chars().count() > 200 {
            bad("spec.displayName", "must be 1 to 200 characters".into());
        }
        let channels: BTreeSet<Channel> = s.channels.iter().copied().collect();
        if channels.is_empty() {
            bad("spec.channels", "must enable at least one channel".into());
        } else if channels.len() != s.channels.len() {
            bad("spec.channels", "lists a channel twice".into());
        }
        let sl = &s.service_level;
        if !(sl.target_percent > 0.0 && sl.target_percent <= 100.0) {
            bad("spec.serviceLevel.targetPercent", format!("must be in (0, 100], got {}", sl.target_percent));
        }
        if !(1..=MAX_THRESHOLD_SECONDS).contains(&sl.threshold_seconds) {
            bad(
                "spec.serviceLevel.thresholdSeconds",
                format!("must be between 1 and {MAX_THRESHOLD_SECONDS}, got {}", sl.threshold_seconds),
            );
        }
        let q = &s.quotas;
        if !(1..=MAX_CONCURRENT_CONTACTS).contains(&q.max_concurrent_contacts) {
            bad(
                "spec.quotas.maxConcurrentContacts",
                format!("must be between 1 and {MAX_CONCURRENT_CONTACTS}, got {}", q.max_concurrent_contacts),
            );
        }
        if !(1..=MAX_API_RPS).contains(&q.api_requests_per_second) {
            bad(
                "spec.quotas.apiRequestsPerSecond",
                format!("must be between 1 and {MAX_API_RPS}, got {}", q.api_requests_per_second),
            );
        }
        let tz = match s.business_hours.time_zone.parse::<chrono_tz::Tz>() {
            Ok(tz) => Some(tz),
            Err(_) => {
                bad(
                    "spec.businessHours.timeZone",
                    format!("`{}` is not an IANA time zone (for example Europe/Madrid)", s.business_hours.time_zone),
                );
                None
            }
        };
        let mut windows = Vec::new();
        for (i, w) in s.business_hours.windows.iter().enumerate() {
            let path = format!("spec.businessHours.windows[{i}]");
            if w.days.is_empty() {
                bad(&format!("{path}.days"), "must list at least one day".into());
            }
            let open = parse_hhmm(&w.open);
            let close = parse_hhmm(&w.close);
            if open.is_none() {
                bad(&format!("{path}.open"), format!("`{}` is not a time HH:MM", w.open));
            }
            if close.is_none() {
                bad(&format!("{path}.close"), format!("`{}` is not a time HH:MM", w.close));
            }
            if let (Some(o), Some(c)) = (open, close) {
                if c <= o {
                    bad(&format!("{path}.close"), "must be after open".into());
                }
                for d in &w.days {
                    windows.push(OpeningWindow { day: *d, open_minute: o, close_minute: c });
                }
            }
        }
        windows.sort();
        for pair in windows.windows(2) {
            if pair[0].day == pair[1].day && pair[1].open_minute < pair[0].close_minute {
                bad("spec.businessHours.windows", format!("windows overlap on {:?}", pair[0].day).to_lowercase());
                break;
            }
        }
        if !(1..=MAX_RETENTION_DAYS).contains(&s.data_retention_days) {
            bad(
                "spec.dataRetentionDays",
                format!("must be between 1 and {MAX_RETENTION_DAYS}, got {}", s.data_retention_days),
            );
        }
        if s.recording.allow_pause && s.recording.voice == RecordingMode::None && !s.recording.chat_transcripts {
            bad("spec.recording.allowPause", "makes no sense when nothing is recorded".into());
        }
        let threshold = Duration::from_secs(sl.threshold_seconds.clamp(1, MAX_THRESHOLD_SECONDS) as u64);
        let routing = s.routing.validate(threshold, &mut v);
        match (id, tz) {
            (Some(id), Some(time_zone)) if v.is_empty() => Ok(Tenant {
                id,
                display_name,
                status: s.status,
                channels,
                service_level: ServiceLevel {
                    target_percent: sl.target_percent,
                    threshold: Duration::from_secs(sl.threshold_seconds as u64),
                },
                quotas: Quotas {
                    max_concurrent_contacts: q.max_concurrent_contacts as u32,
                    api_requests_per_second: q.api_requests_per_second as u32,
                },
                business_hours: BusinessHours { time_zone, windows },
                data_retention_days: s.data_retention_days as u32,
                recording: RecordingPolicy {
                    voice: s.recording.voice,
                    chat_transcripts: s.recording.chat_transcripts,
                    allow_pause: s.recording.allow_pause,
                },
                routing,
                updated_at,
            }),
            _ => Err(Error::InvalidArgument(v)),
        }
    }

    /// Reads every YAML document of `text` (separated by `---`) as a manifest. The whole file
    /// is refused if any document is invalid, naming the document and field.
    pub fn parse_all(text: &str, updated_at: DateTime<Utc>) -> Result<Vec<Tenant>, Error> {
        let mut tenants = Vec::new();
        let mut violations = Vec::new();
        let mut seen = BTreeSet::new();
        for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let prefix = |field: &str| format!("document {}: {field}", i + 1);
            let value = match serde_yaml::Value::deserialize(doc) {
                Ok(serde_yaml::Value::Null) => continue,
                Ok(v) => v,
                Err(e) => {
                    violations.push(FieldViolation::new(prefix("(yaml)"), e.to_string()));
                    continue;
                }
            };
            let manifest: TenantManifest = match serde_path_to_error::deserialize(value) {
                Ok(m) => m,
                Err(e) => {
                    let path = e.path().to_string();
                    let field = if path == "." { "(root)".to_string() } else { path };
                    violations.push(FieldViolation::new(prefix(&field), e.into_inner().to_string()));
                    continue;
                }
            };
            match manifest.into_tenant(updated_at) {
                Ok(t) => {
                    if !seen.insert(t.id.clone()) {
                        violations.push(FieldViolation::new(
                            prefix("metadata.name"),
                            format!("tenant `{}` appears twice", t.id),
                        ));
                    }
                    tenants.push(t);
                }
                Err(Error::InvalidArgument(vs)) => {
                    violations.extend(vs.into_iter().map(|f| FieldViolation::new(prefix(&f.field), f.description)))
                }
                Err(other) => return Err(other),
            }
        }
        if !violations.is_empty() {
            return Err(Error::InvalidArgument(violations));
        }
        if tenants.is_empty() {
            return Err(Error::invalid("(file)", "holds no Tenant document"));
        }
        Ok(tenants)
    }
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
                },
                routing: RoutingSpec::from(&t.routing),
            },
        }
    }
}

// ---------------------------------------------------------------------------------------
// Wire form.
// ---------------------------------------------------------------------------------------

fn channel_to_pb(c: Channel) -> pb::Channel {
    match c {
        Channel::Voice => pb::Channel::Voice,
        Channel::Chat => pb::Channel::Chat,
        Channel::Sms => pb::Channel::Sms,
        Channel::Email => pb::Channel::Email,
        Channel::Social => pb::Channel::Social,
        Channel::Task => pb::Channel::Task,
    }
}

fn weekday_to_pb(d: Weekday) -> pb::DayOfWeek {
    match d {
        Weekday::Mon => pb::DayOfWeek::Monday,
        Weekday::Tue => pb::DayOfWeek::Tuesday,
        Weekday::Wed => pb::DayOfWeek::Wednesday,
        Weekday::Thu => pb::DayOfWeek::Thursday,
        Weekday::Fri => pb::DayOfWeek::Friday,
        Weekday::Sat => pb::DayOfWeek::Saturday,
        Weekday::Sun => pb::DayOfWeek::Sunday,
    }
}

pub fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos() as i32 }
}

pub fn from_timestamp(t: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?)
}

impl From<&Tenant> for pb::Tenant {
    fn from(t: &Tenant) -> Self {
        pb::Tenant {
            name: t.id.resource_name(),
            display_name: t.display_name.clone(),
            status: match t.status {
                TenantStatus::Active => pb::TenantStatus::Active,
                TenantStatus::Suspended => pb::TenantStatus::Suspended,
            } as i32,
            channels: t.channels.iter().map(|c| channel_to_pb(*c) as i32).collect(),
            service_level: Some(pb::ServiceLevel {
                target_percent: t.service_level.target_percent,
                threshold: Some(prost_types::Duration {
                    seconds: t.service_level.threshold.as_secs() as i64,
                    nanos: 0,
                }),
            }),
            quotas: Some(pb::Quotas {
                max_concurrent_contacts: t.quotas.max_concurrent_contacts,
                api_requests_per_second: t.quotas.api_requests_per_second,
            }),
            business_hours: Some(pb::BusinessHours {
                time_zone: t.business_hours.time_zone.name().to_owned(),
                windows: t
                    .business_hours
                    .windows
                    .iter()
                    .map(|w| pb::OpeningWindow {
                        day: weekday_to_pb(w.day) as i32,
                        open_minute: w.open_minute,
                        close_minute: w.close_minute,
                    })
                    .collect(),
            }),
            data_retention_days: t.data_retention_days,
            recording: Some(pb::RecordingPolicy {
                voice: match t.recording.voice {
                    RecordingMode::None => pb::RecordingMode::None,
                    RecordingMode::All => pb::RecordingMode::All,
                    RecordingMode::OnDemand => pb::RecordingMode::OnDemand,
                } as i32,
                chat_transcripts: t.recording.chat_transcripts,
                allow_pause: t.recording.allow_pause,
            }),
            update_time: Some(timestamp(t.updated_at)),
            routing: Some(pb::RoutingConfig::from(&t.routing)),
        }
    }
}

/// Decodes the wire form through the same validation as a manifest, so a tenant read from
/// the topic obeys exactly the rules a tenant written by the CLI did.
impl TryFrom<pb::Tenant> for Tenant {
    type Error = Error;

    fn try_from(p: pb::Tenant) -> Result<Self, Error> {
        let id = TenantId::from_resource_name(&p.name).map_err(|e| Error::invalid("name", e))?;
        let status = match pb::TenantStatus::try_from(p.status) {
            Ok(pb::TenantStatus::Active) => TenantStatus::Active,
            Ok(pb::TenantStatus::Suspended) => TenantStatus::Suspended,
            _ => return Err(Error::invalid("status", "must be ACTIVE or SUSPENDED")),
        };
        let channel = |c: i32| -> Result<Channel, Error> {
            Ok(match pb::Channel::try_from(c) {
                Ok(pb::Channel::Voice) => Channel::Voice,
                Ok(pb::Channel::Chat) => Channel::Chat,
                Ok(pb::Channel::Sms) => Channel::Sms,
                Ok(pb::Channel::Email) => Channel::Email,
                Ok(pb::Channel::Social) => Channel::Social,
                Ok(pb::Channel::Task) => Channel::Task,
                _ => return Err(Error::invalid("channels", format!("unknown channel {c}"))),
            })
        };
        let day = |d: i32| -> Result<Weekday, Error> {
            Ok(match pb::DayOfWeek::try_from(d) {
                Ok(pb::DayOfWeek::Monday) => Weekday::Mon,
                Ok(pb::DayOfWeek::Tuesday) => Weekday::Tue,
                Ok(pb::DayOfWeek::Wednesday) => Weekday::Wed,
                Ok(pb::DayOfWeek::Thursday) => Weekday::Thu,
                Ok(pb::DayOfWeek::Friday) => Weekday::Fri,
                Ok(pb::DayOfWeek::Saturday) => Weekday::Sat,
                Ok(pb::DayOfWeek::Sunday) => Weekday::Sun,
                _ => return Err(Error::invalid("business_hours.windows.day", format!("unknown day {d}"))),
            })
        };
        let sl = p.service_level.ok_or_else(|| Error::invalid("service_level", "is required"))?;
        let q = p.quotas.ok_or_else(|| Error::invalid("quotas", "is required"))?;
        let bh = p.business_hours.ok_or_else(|| Error::invalid("business_hours", "is required"))?;
        let rec = p.recording.ok_or_else(|| Error::invalid("recording", "is required"))?;
        let updated_at = p
            .update_time
            .as_ref()
            .and_then(from_timestamp)
            .ok_or_else(|| Error::invalid("update_time", "is required"))?;
        let mut windows = Vec::new();
        for w in &bh.windows {
            windows.push(WindowSpec {
                days: vec![day(w.day)?],
                open: fmt_hhmm(w.open_minute.min(24 * 60)),
                close: fmt_hhmm(w.close_minute.min(24 * 60)),
            });
        }
        let manifest = TenantManifest {
            api_version: API_VERSION.into(),
            kind: KIND.into(),
            metadata: ManifestMetadata {
                name: id.to_string(),
                namespace: None,
                labels: Default::default(),
                annotations: Default::default(),
            },
            spec: TenantSpec {
                display_name: p.display_name,
                status,
                channels: p.channels.into_iter().map(channel).collect::<Result<_, _>>()?,
                service_level: ServiceLevelSpec {
                    target_percent: sl.target_percent,
                    threshold_seconds: sl.threshold.map(|d| d.seconds).unwrap_or(0),
                },
                quotas: QuotasSpec {
                    max_concurrent_contacts: q.max_concurrent_contacts.into(),
                    api_requests_per_second: q.api_requests_per_second.into(),
                },
                business_hours: BusinessHoursSpec { time_zone: bh.time_zone, windows },
                data_retention_days: p.data_retention_days.into(),
                recording: RecordingSpec {
                    voice: match pb::RecordingMode::try_from(rec.voice) {
                        Ok(pb::RecordingMode::None) => RecordingMode::None,
                        Ok(pb::RecordingMode::All) => RecordingMode::All,
                        Ok(pb::RecordingMode::OnDemand) => RecordingMode::OnDemand,
                        _ => return Err(Error::invalid("recording.voice", "must be NONE, ALL or ON_DEMAND")),
                    },
                    chat_transcripts: rec.chat_transcripts,
                    allow_pause: rec.allow_pause,
                },
                routing: p.routing.map(RoutingSpec::from).unwrap_or_default(),
            },
        };
        manifest.into_tenant(updated_at)
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
"#;

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000, 0).expect("valid")
    }

    fn violations(text: &str) -> Vec<FieldViolation> {
        match TenantManifest::parse_all(text, now()) {
            Err(Error::InvalidArgument(v)) => v,
            other => panic!("expected invalid argument, got {other:?}"),
        }
    }

    #[test]
    fn demo_manifest_is_valid() {
        let t = TenantManifest::parse_all(DEMO, now()).expect("valid").remove(0);
        assert_eq!(t.id.as_str(), "acme");
        assert_eq!(t.business_hours.windows.len(), 6);
        assert_eq!(t.business_hours.time_zone, chrono_tz::Europe::Madrid);
        assert!(t.is_active());
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

    #[test]
    fn unknown_field_is_named() {
        let v = violations(&DEMO.replace("dataRetentionDays: 365", "dataRetentionDays: 365\n  colour: blue"));
        assert_eq!(v.len(), 1);
        assert!(v[0].field.contains("spec"), "{v:?}");
        assert!(v[0].description.contains("colour"), "{v:?}");
    }

    #[test]
    fn bad_time_zone_is_named() {
        let v = violations(&DEMO.replace("Europe/Madrid", "Mars/Olympus_Mons"));
        assert_eq!(v[0].field, "document 1: spec.businessHours.timeZone");
        assert!(v[0].description.contains("Mars/Olympus_Mons"));
    }

    #[test]
    fn negative_quota_is_named() {
        let v = violations(&DEMO.replace("maxConcurrentContacts: 200", "maxConcurrentContacts: -5"));
        assert_eq!(v[0].field, "document 1: spec.quotas.maxConcurrentContacts");
        assert!(v[0].description.contains("-5"));
    }

    #[test]
    fn every_problem_is_listed_at_once() {
        let text = DEMO
            .replace("targetPercent: 80", "targetPercent: 180")
            .replace("\"20:00\"", "\"07:00\"")
            .replace("name: acme", "name: Acme_Corp");
        let fields: Vec<_> = violations(&text).into_iter().map(|v| v.field).collect();
        assert_eq!(
            fields,
            [
                "document 1: metadata.name",
                "document 1: spec.serviceLevel.targetPercent",
                "document 1: spec.businessHours.windows[0].close"
            ]
        );
    }

    #[test]
    fn queue_problems_are_named() {
        let text = DEMO
            .replace("serviceLevelDefinition: left-queue", "serviceLevelDefinition: best")
            .replace("serviceLevelTargetPercent: 90", "serviceLevelTargetPercent: 0")
            .replace("overflowQueue: billing", "overflowQueue: nowhere")
            .replace("afterSeconds: 30, proficiencyDrop: 1", "afterSeconds: 30, proficiencyDrop: 9")
            .replace("awayReasons: [break, lunch]", "agentPool: East\n    awayReasons: [break, break, not_responding]");
        let fields: Vec<_> = violations(&text).into_iter().map(|v| v.field).collect();
        assert_eq!(
            fields,
            [
                "document 1: spec.routing.agentPool",
                "document 1: spec.routing.awayReasons[1]",
                "document 1: spec.routing.awayReasons[2]",
                "document 1: spec.routing.queues[0].overflowQueue",
                "document 1: spec.routing.queues[0].steps[1].proficiencyDrop",
                "document 1: spec.routing.queues[1].serviceLevelDefinition",
                "document 1: spec.routing.queues[1].serviceLevelTargetPercent",
            ]
        );
        let t = TenantManifest::parse_all(DEMO, now()).expect("valid").remove(0);
        let support = &t.routing.queues["support"];
        assert_eq!(support.steps.len(), 3);
        assert_eq!(support.service_level_threshold, Duration::from_secs(20));
        let billing = &t.routing.queues["billing"];
        assert_eq!(billing.offer_timeout, Duration::from_secs(20));
        assert_eq!(billing.service_level_definition, crate::queue::ServiceLevelDefinition::LeftQueue);
        assert_eq!(billing.abandon_rate_definition, crate::queue::AbandonRateDefinition::ExcludingShort);
        assert_eq!(
            (billing.short_abandon_threshold, billing.service_level_target_percent),
            (Duration::from_secs(10), Some(90.0))
        );
        assert_eq!(support.service_level_definition, crate::queue::ServiceLevelDefinition::Default);
        assert_eq!(support.short_abandon_threshold, Duration::from_secs(5));
        assert!(t.routing.is_away_reason("not_responding") && t.routing.is_away_reason("lunch"));
        assert_eq!(t.routing.agent_pool, "default");
        let east = DEMO.replace("awayReasons: [break, lunch]", "agentPool: east\n    awayReasons: [break, lunch]");
        assert_eq!(TenantManifest::parse_all(&east, now()).expect("valid").remove(0).routing.agent_pool, "east");
    }

    #[test]
    fn the_bpo_tenant_id_is_reserved() {
        let v = violations(&DEMO.replace("name: acme", "name: bpo"));
        assert_eq!(v[0].field, "document 1: metadata.name");
        assert!(v[0].description.contains("reserved"));
    }

    #[test]
    fn wire_round_trip_keeps_everything() {
        let east = DEMO.replace("awayReasons: [break, lunch]", "agentPool: east\n    awayReasons: [break, lunch]");
        for text in [DEMO.to_owned(), east] {
            let t = TenantManifest::parse_all(&text, now()).expect("valid").remove(0);
            let back = Tenant::try_from(pb::Tenant::from(&t)).expect("round trip");
            assert_eq!(back, t);
            let again = TenantManifest::from(&t).into_tenant(now()).expect("manifest round trip");
            assert_eq!(again, t);
        }
    }

    #[test]
    fn several_documents_and_duplicates() {
        let two = format!("{DEMO}\n---\n{}", DEMO.replace("name: acme", "name: globex"));
        assert_eq!(TenantManifest::parse_all(&two, now()).expect("valid").len(), 2);
        let dup = format!("{DEMO}\n---\n{DEMO}");
        assert!(violations(&dup)[0].description.contains("twice"));
        assert!(violations("# nothing\n").iter().any(|v| v.field == "(file)"));
    }

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

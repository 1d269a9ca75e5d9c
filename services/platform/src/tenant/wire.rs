//! The wire form, `centralita.tenancy.v1.Tenant`, on gRPC and on the tenants topic; and
//! the protobuf timestamps every crate converts with.

use centralita_proto::tenancy::v1 as pb;
use chrono::{DateTime, Utc};

use super::manifest::fmt_hhmm;
use super::{
    BusinessHoursSpec, Channel, EmailSpec, ManifestMetadata, PagesSpec, QuotasSpec, RecordingMode, RecordingSpec,
    ServiceLevelSpec, SmsSpec, TelegramSpec, Tenant, TenantId, TenantManifest, TenantSpec, TenantStatus, VoiceSpec,
    WebChatSpec, Weekday, WhatsAppSpec, WindowSpec, API_VERSION, KIND,
};
use crate::error::Error;
use crate::queue::RoutingSpec;

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
                sample_percent: t.recording.sample_percent,
                queues: t.recording.queues.iter().cloned().collect(),
                agents_hear_own: t.recording.agents_hear_own,
            }),
            update_time: Some(timestamp(t.updated_at)),
            routing: Some(pb::RoutingConfig::from(&t.routing)),
            voice: Some(pb::VoiceConfig::from(&t.voice)).filter(|v| {
                !v.numbers.is_empty()
                    || !v.trunks.is_empty()
                    || !v.phones.is_empty()
                    || v.registrar.is_some()
                    || v.announcements.is_some()
            }),
            webchat: t.webchat.as_ref().map(pb::WebChatConfig::from),
            sms: t.sms.as_ref().map(pb::SmsConfig::from),
            whatsapp: t.whatsapp.as_ref().map(pb::WhatsAppConfig::from),
            telegram: t.telegram.as_ref().map(pb::TelegramConfig::from),
            messenger: t.messenger.as_ref().map(pb::PagesConfig::from),
            instagram: t.instagram.as_ref().map(pb::PagesConfig::from),
            email: t.email.as_ref().map(pb::EmailConfig::from),
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
                    // Absent on the wire (older writers): every call.
                    sample_percent: if rec.sample_percent == 0 { 100 } else { rec.sample_percent },
                    queues: rec.queues,
                    agents_hear_own: rec.agents_hear_own,
                },
                routing: p.routing.map(RoutingSpec::from).unwrap_or_default(),
                voice: p.voice.map(VoiceSpec::from).unwrap_or_default(),
                webchat: p.webchat.map(WebChatSpec::from),
                sms: p.sms.map(SmsSpec::from),
                whatsapp: p.whatsapp.map(WhatsAppSpec::from),
                telegram: p.telegram.map(TelegramSpec::from),
                messenger: p.messenger.map(PagesSpec::from),
                instagram: p.instagram.map(PagesSpec::from),
                email: p.email.map(EmailSpec::from),
            },
        };
        manifest.into_tenant(updated_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenant::tests::{now, DEMO};

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
}

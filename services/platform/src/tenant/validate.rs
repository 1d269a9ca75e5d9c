//! A manifest validated into a [`Tenant`], every invalid field named by its path.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::manifest::parse_hhmm;
use super::{
    BusinessHours, Channel, OpeningWindow, Quotas, RecordingMode, RecordingPolicy, ServiceLevel, Tenant, TenantId,
    TenantManifest, API_VERSION, BPO_TENANT, KIND,
};
use crate::error::{Error, FieldViolation};

/// Upper bounds that catch typos (an extra zero) rather than limit real tenants.
pub const MAX_CONCURRENT_CONTACTS: i64 = 1_000_000;
pub const MAX_API_RPS: i64 = 1_000_000;
pub const MAX_RETENTION_DAYS: i64 = 3650 * 3;
pub const MAX_THRESHOLD_SECONDS: i64 = 86_400;

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
        if s.recording.agents_hear_own && s.recording.voice == RecordingMode::None && !s.recording.chat_transcripts {
            bad("spec.recording.agentsHearOwn", "makes no sense when nothing is recorded".into());
        }
        let threshold = Duration::from_secs(sl.threshold_seconds.clamp(1, MAX_THRESHOLD_SECONDS) as u64);
        let routing = s.routing.validate(threshold, &mut v);
        let r = &s.recording;
        if !(1..=100).contains(&r.sample_percent) {
            v.push(FieldViolation::new(
                "spec.recording.samplePercent",
                format!("must be 1-100, got {}", r.sample_percent),
            ));
        } else if r.sample_percent < 100 && r.voice != RecordingMode::All {
            v.push(FieldViolation::new("spec.recording.samplePercent", "samples only `voice: all`".to_owned()));
        }
        if !r.queues.is_empty() && r.voice == RecordingMode::None {
            v.push(FieldViolation::new("spec.recording.queues", "`voice: none` records no queue".to_owned()));
        }
        for (i, q) in r.queues.iter().enumerate() {
            if !routing.queues.contains_key(q) {
                v.push(FieldViolation::new(
                    format!("spec.recording.queues[{i}]"),
                    format!("`{q}` is not a queue of spec.routing.queues"),
                ));
            } else if r.queues[..i].contains(q) {
                v.push(FieldViolation::new(format!("spec.recording.queues[{i}]"), format!("`{q}` is listed twice")));
            }
        }
        let voice = s.voice.validate(|q| routing.queues.contains_key(q), channels.contains(&Channel::Voice), &mut v);
        let webchat = s
            .webchat
            .as_ref()
            .and_then(|w| w.validate(|q| routing.queues.contains_key(q), channels.contains(&Channel::Chat), &mut v));
        let sms = s
            .sms
            .as_ref()
            .and_then(|m| m.validate(|q| routing.queues.contains_key(q), channels.contains(&Channel::Sms), &mut v));
        let whatsapp = s
            .whatsapp
            .as_ref()
            .and_then(|w| w.validate(|q| routing.queues.contains_key(q), channels.contains(&Channel::Social), &mut v));
        let telegram = s
            .telegram
            .as_ref()
            .and_then(|t| t.validate(|q| routing.queues.contains_key(q), channels.contains(&Channel::Social), &mut v));
        let social = channels.contains(&Channel::Social);
        let messenger = s
            .messenger
            .as_ref()
            .and_then(|p| p.validate("spec.messenger", |q| routing.queues.contains_key(q), social, &mut v));
        let instagram = s
            .instagram
            .as_ref()
            .and_then(|p| p.validate("spec.instagram", |q| routing.queues.contains_key(q), social, &mut v));
        let email = s
            .email
            .as_ref()
            .and_then(|m| m.validate(|q| routing.queues.contains_key(q), channels.contains(&Channel::Email), &mut v));
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
                    sample_percent: s.recording.sample_percent,
                    queues: s.recording.queues.iter().cloned().collect(),
                    agents_hear_own: s.recording.agents_hear_own,
                },
                routing,
                voice,
                webchat,
                sms,
                email,
                whatsapp,
                telegram,
                messenger,
                instagram,
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
                    // The document iterator does not move past a syntax error: it would
                    // yield the same error for ever (found by tests/hostile_input.rs).
                    break;
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
                    // A number belongs to one tenant (media refuses calls to a number two
                    // tenants claim; within one file the second claim is refused here).
                    for n in t.voice.numbers.keys() {
                        if let Some(other) = tenants.iter().find(|o: &&Tenant| o.voice.numbers.contains_key(n)) {
                            violations.push(FieldViolation::new(
                                prefix("spec.voice.numbers"),
                                format!("`{n}` belongs to tenant `{}` already", other.id),
                            ));
                        }
                    }
                    // So does a registrar's SIP domain (media treats a domain two tenants
                    // claim as no one's).
                    if let Some(r) = &t.voice.registrar {
                        if let Some(other) = super::registrar_owners(&tenants, &r.domain).first() {
                            violations.push(FieldViolation::new(
                                prefix("spec.voice.registrar.domain"),
                                format!("`{}` is the registrar domain of tenant `{}` already", r.domain, other.id),
                            ));
                        }
                    }
                    // And an email address (media takes mail for an address two tenants
                    // claim for no one).
                    if let Some(e) = &t.email {
                        for a in e.addresses.keys() {
                            if let Some(other) = super::email_owners(&tenants, a).first() {
                                violations.push(FieldViolation::new(
                                    prefix("spec.email.addresses"),
                                    format!("`{a}` is an address of tenant `{}` already", other.id),
                                ));
                            }
                        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenant::tests::{now, DEMO};
    use crate::tenant::{sample_bucket, VoiceRecording};

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
    fn the_recording_policy_samples_and_limits_queues() {
        let rec = "recording: { voice: all, chatTranscripts: true, allowPause: true }";
        let with = |r: &str| DEMO.replace(rec, r);
        let t = TenantManifest::parse_all(
            &with("recording: { voice: all, samplePercent: 30, queues: [support], agentsHearOwn: true }"),
            now(),
        )
        .expect("valid")
        .remove(0);
        assert_eq!((t.recording.sample_percent, t.recording.queues.len()), (30, 1));
        assert!(t.recording.agents_hear_own);
        // Wire and manifest round trips keep both.
        let back = Tenant::try_from(centralita_proto::tenancy::v1::Tenant::from(&t)).expect("wire");
        assert_eq!(back.recording, t.recording);
        let manifest = TenantManifest::from(&t);
        assert_eq!(
            (manifest.spec.recording.sample_percent, manifest.spec.recording.queues.clone()),
            (30, vec!["support".to_owned()])
        );
        assert!(manifest.spec.recording.agents_hear_own);
        // A call of another queue is never recorded; of the queue, about 30 in 100.
        assert_eq!(t.recording.voice_call("c1", "billing"), VoiceRecording::Never);
        let recorded = (0..10_000)
            .filter(|i| t.recording.voice_call(&format!("01a2{i:08}"), "support") == VoiceRecording::Always)
            .count();
        assert!((2_700..3_300).contains(&recorded), "{recorded} of 10000");
        assert_eq!(sample_bucket("abc"), sample_bucket("abc"), "the same on every replica");
        let all = TenantManifest::parse_all(DEMO, now()).expect("valid").remove(0);
        assert_eq!(
            (all.recording.sample_percent, all.recording.voice_call("x", "support")),
            (100, VoiceRecording::Always)
        );
        let on_demand =
            TenantManifest::parse_all(&with("recording: { voice: on_demand }"), now()).expect("valid").remove(0);
        assert_eq!(on_demand.recording.voice_call("x", "support"), VoiceRecording::OnDemand);

        let fields = |r: &str| violations(&with(r)).into_iter().map(|v| (v.field, v.description)).collect::<Vec<_>>();
        let f = |a: &str, b: &str| ("document 1: ".to_owned() + a, b.to_owned());
        assert_eq!(
            fields("recording: { voice: all, samplePercent: 0 }"),
            [f("spec.recording.samplePercent", "must be 1-100, got 0")]
        );
        assert_eq!(
            fields("recording: { voice: on_demand, samplePercent: 50 }"),
            [f("spec.recording.samplePercent", "samples only `voice: all`")]
        );
        assert_eq!(
            fields("recording: { voice: all, queues: [support, nope, support] }"),
            [
                f("spec.recording.queues[1]", "`nope` is not a queue of spec.routing.queues"),
                f("spec.recording.queues[2]", "`support` is listed twice")
            ]
        );
        assert_eq!(
            fields("recording: { voice: none, queues: [support] }"),
            [f("spec.recording.queues", "`voice: none` records no queue")]
        );
        assert_eq!(
            fields("recording: { voice: none, agentsHearOwn: true }"),
            [f("spec.recording.agentsHearOwn", "makes no sense when nothing is recorded")]
        );
        let transcripts = with("recording: { voice: none, chatTranscripts: true, agentsHearOwn: true }");
        assert!(TenantManifest::parse_all(&transcripts, now()).expect("valid").remove(0).recording.agents_hear_own);
    }

    #[test]
    fn canned_replies_are_validated_with_their_paths_and_round_trip() {
        let codes = "dispositionCodes: [refund, explained]";
        let with = |replies: &str| DEMO.replace(codes, &format!("{codes}\n        cannedReplies: {replies}"));
        let text = with(
            r#"{ es: ["Un momento, {customer}, lo compruebo.", "¿Algo más en lo que pueda ayudarle?"], en: ["One moment please."] }"#,
        );
        let t = TenantManifest::parse_all(&text, now()).expect("valid").remove(0);
        let billing = &t.routing.queues["billing"];
        assert_eq!(billing.canned_replies["es"].len(), 2);
        assert_eq!(billing.canned_replies["en"], ["One moment please."]);
        let back = Tenant::try_from(centralita_proto::tenancy::v1::Tenant::from(&t)).expect("wire");
        assert_eq!(back.routing.queues["billing"].canned_replies, billing.canned_replies);
        let manifest = TenantManifest::from(&t);
        let q = manifest.spec.routing.queues.iter().find(|q| q.id == "billing").expect("billing");
        assert_eq!(q.canned_replies, billing.canned_replies);

        let long = "x".repeat(1001);
        let fields: Vec<_> =
            violations(&with(&format!(r#"{{ ES: ["a"], es: ["Hi {{name}}", " ", "ok", "ok", "{long}"], en: [] }}"#)))
                .into_iter()
                .map(|v| (v.field, v.description))
                .collect();
        let f = |a: &str, b: &str| ("document 1: spec.routing.queues[1].cannedReplies.".to_owned() + a, b.to_owned());
        assert_eq!(
            fields,
            [
                f("ES", "a language is 2 or 3 lower-case letters (en, es)"),
                f("en", "must have 1 to 20 replies"),
                f("es[0]", "`{name}` is not one of {customer}, {tenant}, {queue}"),
                f("es[1]", "must not be blank"),
                f("es[3]", "is listed twice"),
                f("es[4]", "must be at most 1000 characters"),
            ]
        );
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
    fn queue_scripts_and_questions_are_validated_and_kept() {
        let t = TenantManifest::parse_all(DEMO, now()).expect("valid").remove(0);
        let billing = &t.routing.queues["billing"];
        assert_eq!(billing.script["en"][1], "Ask for the invoice number.");
        assert_eq!(billing.resolution_question["es"], "¿Le ha quedado clara la factura?");
        assert!(t.routing.queues["support"].script.is_empty());
        // Billing wraps up with its own codes; support with the tenant's.
        let codes = |q: &str| t.routing.dispositions_of(q).iter().cloned().collect::<Vec<_>>();
        assert_eq!(codes("billing"), ["explained", "refund"]);
        assert_eq!(codes("support"), ["escalated", "resolved"]);
        let bad = DEMO.replace("dispositionCodes: [refund, explained]", "dispositionCodes: [refund, Refund, refund]");
        let fields: Vec<_> = violations(&bad).into_iter().map(|v| v.field).collect();
        assert_eq!(
            fields,
            [
                "document 1: spec.routing.queues[1].dispositionCodes[1]",
                "document 1: spec.routing.queues[1].dispositionCodes[2]"
            ]
        );
        let long = "x".repeat(301);
        let text = DEMO
            .replace("es: [\"Hola {customer}", "EN: [\"Hola {customer}")
            .replace("\"Ask for the invoice number.\"", "\"Ask {name} for it.\", \"  \"")
            .replace("es: \"¿Le ha quedado clara la factura?\"", &format!("es: \"{long}\""));
        let fields: Vec<_> = violations(&text).into_iter().map(|v| (v.field, v.description)).collect();
        assert_eq!(
            fields,
            [
                (
                    "document 1: spec.routing.queues[1].script.EN".to_owned(),
                    "a language is 2 or 3 lower-case letters (en, es)".to_owned()
                ),
                (
                    "document 1: spec.routing.queues[1].script.en[1]".to_owned(),
                    "`{name}` is not one of {customer}, {tenant}, {queue}".to_owned()
                ),
                ("document 1: spec.routing.queues[1].script.en[2]".to_owned(), "must not be blank".to_owned()),
                (
                    "document 1: spec.routing.queues[1].resolutionQuestion.es".to_owned(),
                    "must be at most 300 characters".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn voice_numbers_and_trunks() {
        let t = TenantManifest::parse_all(DEMO, now()).expect("valid").remove(0);
        let number = |s: &str| crate::tenant::PhoneNumber::parse(s).expect("E.164");
        assert_eq!(t.voice.queue_of(&number("+34910000002")), Some("billing"));
        assert_eq!(t.voice.queue_of(&number("+34910000009")), None);
        let ip = |s: &str| s.parse().expect("ip");
        assert_eq!(t.voice.trunk_from(ip("203.0.113.7")).map(|t| t.name.as_str()), Some("carrier-a"));
        assert_eq!(t.voice.trunk_from(ip("2001:db8::1")).map(|t| t.name.as_str()), Some("carrier-b"));
        assert!(t.voice.trunk_from(ip("203.0.113.8")).is_none());
        assert_eq!(t.voice.trunks[1].credentials_secret.as_deref(), Some("acme-carrier-b"));
        let text = DEMO
            .replace("\"+34910000002\", queue: billing", "\"+34910000001\", queue: nowhere")
            .replace(
                "sources: [\"198.51.100.0/24\", \"203.0.113.7\"]",
                "sources: [\"198.51.100.1/24\", \"carrier.example\"]",
            )
            .replace("name: carrier-b", "name: Carrier_B")
            .replace("secretName: acme-carrier-b", "secretName: \"../etc\"");
        let fields: Vec<_> = violations(&text).into_iter().map(|v| v.field).collect();
        assert_eq!(
            fields,
            [
                "document 1: spec.voice.numbers[1].number",
                "document 1: spec.voice.numbers[1].queue",
                "document 1: spec.voice.trunks[0].sources[0]",
                "document 1: spec.voice.trunks[0].sources[1]",
                "document 1: spec.voice.trunks[1].name",
                "document 1: spec.voice.trunks[1].credentials.secretName",
            ]
        );
        let bare = DEMO
            .replace("- { name: carrier-a, sources: [\"198.51.100.0/24\", \"203.0.113.7\"] }", "- { name: carrier-a }");
        assert_eq!(violations(&bare)[0].field, "document 1: spec.voice.trunks[0]");
        let no_voice = DEMO.replace("channels: [voice, chat, email]", "channels: [chat]");
        assert_eq!(violations(&no_voice)[0].field, "document 1: spec.voice.numbers");
        let none = DEMO.split("  voice:\n").next().expect("head").to_owned();
        assert_eq!(TenantManifest::parse_all(&none, now()).expect("valid")[0].voice, Default::default());
    }

    #[test]
    fn a_registrar_domain_belongs_to_one_tenant() {
        let with = |name: &str, domain: &str| {
            DEMO.replace("name: acme", &format!("name: {name}"))
                .replace("+3491000000", &format!("+3492{}00000", name.len()))
                .replace("wk_acme_", &format!("wk_{name}_"))
                .replace(
                    "  webchat:",
                    &format!("    registrar: {{ domain: {domain}, credentialsSecret: {name}-phones }}\n  webchat:"),
                )
        };
        let one = TenantManifest::parse_all(&with("acme", "acme.sip.example"), now()).expect("valid").remove(0);
        let r = one.voice.registrar.as_ref().expect("registrar");
        assert_eq!((r.domain.as_str(), r.credentials_secret.as_str()), ("acme.sip.example", "acme-phones"));
        let both = format!("{}---\n{}", with("acme", "acme.sip.example"), with("globex", "acme.sip.example"));
        let v = violations(&both);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].field, "document 2: spec.voice.registrar.domain");
        let apart = format!("{}---\n{}", with("acme", "acme.sip.example"), with("globex", "globex.sip.example"));
        assert_eq!(TenantManifest::parse_all(&apart, now()).expect("valid").len(), 2);
    }

    #[test]
    fn the_web_chat_widget() {
        let t = TenantManifest::parse_all(DEMO, now()).expect("valid").remove(0);
        let w = t.webchat.as_ref().expect("a widget");
        assert_eq!(w.queue, "support");
        assert!(w.allows("https://www.acme.example") && !w.allows("https://www.acme.example.evil"));
        let text = DEMO
            .replace("widgetKey: wk_acme_0123456789abcdef", "widgetKey: \"key with spaces\"")
            .replace("\"http://localhost:8000\"", "\"http://localhost:8000/chat\"")
            .replace("    queue: support\n", "    queue: nowhere\n");
        let fields: Vec<_> = violations(&text).into_iter().map(|v| v.field).collect();
        assert_eq!(
            fields,
            [
                "document 1: spec.webchat.widgetKey",
                "document 1: spec.webchat.allowedOrigins[1]",
                "document 1: spec.webchat.queue",
            ]
        );
        let no_chat = DEMO.replace("channels: [voice, chat, email]", "channels: [voice]");
        assert_eq!(violations(&no_chat)[0].field, "document 1: spec.webchat");
        let none = DEMO.split("  webchat:\n").next().expect("head").to_owned();
        assert_eq!(TenantManifest::parse_all(&none, now()).expect("valid")[0].webchat, None);
        let unknown = DEMO.replace("    queue: support\n", "    queue: support\n    theme: dark\n");
        assert!(TenantManifest::parse_all(&unknown, now()).is_err(), "unknown fields are refused");
    }

    #[test]
    fn a_number_belongs_to_one_tenant_of_a_file() {
        let two = format!(
            "{DEMO}\n---\n{}",
            DEMO.replace("name: acme", "name: globex").replace("+34910000002", "+34910000003")
        );
        let v = violations(&two);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].field, "document 2: spec.voice.numbers");
        assert!(v[0].description.contains("+34910000001") && v[0].description.contains("acme"), "{v:?}");
    }

    #[test]
    fn the_bpo_tenant_id_is_reserved() {
        let v = violations(&DEMO.replace("name: acme", "name: bpo"));
        assert_eq!(v[0].field, "document 1: metadata.name");
        assert!(v[0].description.contains("reserved"));
    }

    #[test]
    fn several_documents_and_duplicates() {
        // Numbers are the tenant's own: globex has others.
        let globex = DEMO.replace("name: acme", "name: globex").replace("+3491000000", "+3492000000");
        let two = format!("{DEMO}\n---\n{globex}");
        assert_eq!(TenantManifest::parse_all(&two, now()).expect("valid").len(), 2);
        let dup = format!("{DEMO}\n---\n{DEMO}");
        assert!(violations(&dup)[0].description.contains("twice"));
        assert!(violations("# nothing\n").iter().any(|v| v.field == "(file)"));
    }
}

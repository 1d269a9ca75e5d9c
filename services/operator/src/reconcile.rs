//! The reconcile decisions, as pure functions: what a `Tenant` resource means for the
//! platform, and the status it gets. No I/O here; `controller` carries them out.

use centralita_platform::error::{Error as PlatformError, FieldViolation};
use centralita_platform::tenant::{
    ManifestMetadata, Tenant as TenantConfig, TenantManifest, TenantStatus, API_VERSION, KIND,
};
use chrono::{DateTime, SecondsFormat, Utc};
use kube::ResourceExt;

use crate::crd::{Condition, Tenant, TenantResourceStatus};

/// Held on every `Tenant` the operator has published, so deleting one suspends the tenant
/// before the resource goes away.
pub const FINALIZER: &str = "centralita.io/suspend-tenant";

/// The platform configuration a resource stands for, or every violation found (with the
/// field path the CLI reports for the same document).
pub fn validate(resource: &Tenant, now: DateTime<Utc>) -> Result<TenantConfig, Vec<FieldViolation>> {
    let manifest = TenantManifest {
        api_version: API_VERSION.into(),
        kind: KIND.into(),
        metadata: ManifestMetadata {
            name: resource.name_any(),
            namespace: resource.namespace(),
            labels: resource.labels().clone(),
            annotations: Default::default(),
        },
        spec: resource.spec.spec.clone(),
    };
    manifest.into_tenant(now).map_err(|e| match e {
        PlatformError::InvalidArgument(v) => v,
        other => vec![FieldViolation::new("spec", other.to_string())],
    })
}

/// What deleting the resource publishes: the same tenant, suspended (its data stays; a BPO
/// admin can resume it with the CLI).
pub fn suspended(mut config: TenantConfig) -> TenantConfig {
    config.status = TenantStatus::Suspended;
    config
}

/// The outcome of one reconcile of a live (not deleted) resource.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Published to the tenants topic.
    Published,
    /// Refused: nothing published; the message lists every violation.
    Invalid(String),
}

pub const READY: &str = "Ready";

/// The status after `outcome`, keeping the previous transition time when the condition did
/// not change.
pub fn status(resource: &Tenant, outcome: &Outcome, now: DateTime<Utc>) -> TenantResourceStatus {
    let generation = resource.metadata.generation;
    let (status, reason, message) = match outcome {
        Outcome::Published => ("True", "Published", "the tenant configuration is published to the platform".to_owned()),
        Outcome::Invalid(why) => ("False", "InvalidSpec", why.clone()),
    };
    let stamp = now.to_rfc3339_opts(SecondsFormat::Secs, true);
    let previous = resource.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == READY));
    let last_transition_time = match previous {
        Some(p) if p.status == status && p.reason == reason => p.last_transition_time.clone(),
        _ => stamp.clone(),
    };
    let published_at = match outcome {
        Outcome::Published => Some(stamp),
        Outcome::Invalid(_) => resource.status.as_ref().and_then(|s| s.published_at.clone()),
    };
    TenantResourceStatus {
        conditions: vec![Condition {
            type_: READY.into(),
            status: status.into(),
            reason: reason.into(),
            message,
            last_transition_time,
            observed_generation: generation,
        }],
        observed_generation: generation,
        published_at,
    }
}

/// Whether `next` says something the current status does not (worth an event).
pub fn changed(resource: &Tenant, next: &TenantResourceStatus) -> bool {
    let key = |s: &TenantResourceStatus| {
        s.conditions.iter().map(|c| (c.status.clone(), c.reason.clone(), c.message.clone())).collect::<Vec<_>>()
    };
    match &resource.status {
        Some(current) => key(current) != key(next) || current.observed_generation != next.observed_generation,
        None => true,
    }
}

/// The violations as one status message: `field: problem; field: problem`.
pub fn describe(violations: &[FieldViolation]) -> String {
    violations.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// Delay before retrying a resource that failed `failures` times in a row: 5 s doubling,
/// at most 5 minutes.
pub fn backoff(failures: u32) -> std::time::Duration {
    let secs = 5u64.saturating_mul(1u64 << failures.min(6));
    std::time::Duration::from_secs(secs.min(300))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::TenantResourceSpec;

    const SPEC: &str = r#"
displayName: Demo Client
channels: [voice, chat]
serviceLevel: { targetPercent: 80, thresholdSeconds: 20 }
quotas: { maxConcurrentContacts: 50, apiRequestsPerSecond: 100 }
businessHours: { timeZone: Europe/Madrid }
dataRetentionDays: 90
recording: { voice: all }
"#;

    fn resource(name: &str, spec: &str, generation: i64) -> Tenant {
        let spec: TenantResourceSpec = serde_yaml::from_str(spec).expect("spec");
        let mut t = Tenant::new(name, spec);
        t.metadata.namespace = Some("clients".into());
        t.metadata.generation = Some(generation);
        t
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000, 0).expect("time")
    }

    #[test]
    fn a_valid_resource_is_the_tenant_the_cli_would_publish() {
        let t = validate(&resource("demo", SPEC, 1), now()).expect("valid");
        assert_eq!((t.id.as_str(), t.display_name.as_str(), t.status), ("demo", "Demo Client", TenantStatus::Active));
        let cli = TenantManifest::parse_all(
            &format!(
                "apiVersion: centralita.io/v1\nkind: Tenant\nmetadata: {{ name: demo }}\nspec:\n{}",
                SPEC.replace('\n', "\n  ")
            ),
            now(),
        )
        .expect("cli")
        .remove(0);
        assert_eq!(t, cli);
        assert_eq!(suspended(t).status, TenantStatus::Suspended);
    }

    #[test]
    fn an_invalid_resource_names_every_field() {
        let bad = SPEC.replace("targetPercent: 80", "targetPercent: 180").replace("Europe/Madrid", "Mars/Olympus");
        let v = validate(&resource("demo", &bad, 1), now()).expect_err("invalid");
        let fields: Vec<_> = v.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["spec.serviceLevel.targetPercent", "spec.businessHours.timeZone"]);
        assert!(describe(&v).contains("spec.businessHours.timeZone"));
        // A name that is no tenant id is refused too.
        let v = validate(&resource("Demo_Client", SPEC, 1), now()).expect_err("invalid name");
        assert_eq!(v[0].field, "metadata.name");
    }

    #[test]
    fn status_conditions_track_generation_and_transitions() {
        let mut t = resource("demo", SPEC, 3);
        let s = status(&t, &Outcome::Published, now());
        assert_eq!(
            (s.observed_generation, s.conditions[0].status.as_str(), s.conditions[0].reason.as_str()),
            (Some(3), "True", "Published")
        );
        assert!(changed(&t, &s));
        t.status = Some(s.clone());
        // The same outcome later keeps the transition time and is no change worth an event.
        let later = now() + chrono::Duration::minutes(5);
        let again = status(&t, &Outcome::Published, later);
        assert_eq!(again.conditions[0].last_transition_time, s.conditions[0].last_transition_time);
        assert!(!changed(&t, &again));
        // An invalid update flips Ready to False, with the reason and a new transition time.
        t.metadata.generation = Some(4);
        let bad = status(
            &t,
            &Outcome::Invalid("spec.quotas.maxConcurrentContacts: must be between 1 and 1000000".into()),
            later,
        );
        assert_eq!(
            (bad.conditions[0].status.as_str(), bad.conditions[0].reason.as_str(), bad.observed_generation),
            ("False", "InvalidSpec", Some(4))
        );
        assert_ne!(bad.conditions[0].last_transition_time, s.conditions[0].last_transition_time);
        assert_eq!(bad.published_at, s.published_at, "the last publication is kept");
        assert!(changed(&t, &bad));
    }

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        let secs: Vec<u64> = (0..9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(secs, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
    }
}

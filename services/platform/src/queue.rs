//! A tenant's routing configuration: queues, away reasons and disposition codes. It is
//! part of the tenant manifest (`spec.routing`) and travels with the tenant on the tenants
//! topic, so sessions and routing act on the same queues the operator or CLI published.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use centralita_proto::tenancy::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::error::FieldViolation;

/// Away reason every tenant has: the agent let an offer ring out (RONA).
pub const NOT_RESPONDING: &str = "not_responding";
/// Away reason of an agent that signed in without becoming available.
pub const SIGNED_IN: &str = "signed_in";
/// Away reason of an agent whose frontend went away (no event stream open for the
/// presence grace).
pub const DISCONNECTED: &str = "disconnected";
/// The away reasons every tenant has.
pub const BUILT_IN_AWAY_REASONS: [&str; 3] = [NOT_RESPONDING, SIGNED_IN, DISCONNECTED];

pub const DEFAULT_OFFER_TIMEOUT: Duration = Duration::from_secs(15);
pub const DEFAULT_AFTER_CONTACT_WORK: Duration = Duration::from_secs(30);
/// The agent pool of a tenant that names none.
pub const DEFAULT_AGENT_POOL: &str = "default";
const MAX_QUEUES: usize = 500;
const MAX_CODES: usize = 200;
const MAX_STEPS: usize = 8;
const MAX_SECONDS: i64 = 7 * 86_400;

/// Validated routing configuration of one tenant.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RoutingConfig {
    /// The agent pool routing this tenant's contacts: one routing writer per pool, and an
    /// agent serves the tenants of one pool (`DEFAULT_AGENT_POOL` unless set).
    pub agent_pool: String,
    pub away_reasons: BTreeSet<String>,
    pub disposition_codes: BTreeSet<String>,
    pub queues: BTreeMap<String, QueueConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QueueConfig {
    pub id: String,
    pub display_name: String,
    pub priority: i32,
    pub aging_per_minute: u32,
    pub vip_boost: u32,
    pub service_level_threshold: Duration,
    pub offer_timeout: Duration,
    pub after_contact_work: Duration,
    pub max_wait: Option<Duration>,
    pub overflow_queue: Option<String>,
    pub preferred_agent_window: Duration,
    /// Sorted by `after`, the first at zero (a default step is added when none is given).
    pub steps: Vec<RelaxStep>,
    /// Contracted service-level target in percent; `None` means the tenant's.
    pub service_level_target_percent: Option<f64>,
    pub service_level_definition: ServiceLevelDefinition,
    pub abandon_rate_definition: AbandonRateDefinition,
    pub short_abandon_threshold: Duration,
    /// The agent's script for the queue's contacts, per language (`en`, `es`, …): lines
    /// with [`SCRIPT_PLACEHOLDERS`] filled in by the frontend. Empty: the frontend's own.
    pub script: BTreeMap<String, Vec<String>>,
    /// The question the agent asks once a contact is resolved (its answer is recorded in
    /// the CRM), per language. Empty: the frontend's own.
    pub resolution_question: BTreeMap<String, String>,
    /// The disposition codes an agent wraps this queue's contacts up with; empty: the
    /// tenant's (`RoutingConfig::disposition_codes`). See [`RoutingConfig::dispositions_of`].
    pub disposition_codes: BTreeSet<String>,
    /// Replies an agent inserts into a chat or message with one click, per language, with
    /// [`SCRIPT_PLACEHOLDERS`] filled in by the frontend. Empty: none.
    pub canned_replies: BTreeMap<String, Vec<String>>,
}

/// Replies per language in a queue's `cannedReplies`, and characters per reply.
pub const MAX_CANNED_REPLIES: usize = 20;
pub const MAX_CANNED_CHARS: usize = 1000;

/// What a queue's script may name, filled in per contact: the customer's name (or nothing
/// when unknown), the tenant's and the queue's display names.
pub const SCRIPT_PLACEHOLDERS: [&str; 3] = ["{customer}", "{tenant}", "{queue}"];
/// Languages a script or question may be given in, lines per script, characters per line
/// or question.
pub const MAX_SCRIPT_LANGUAGES: usize = 8;
pub const MAX_SCRIPT_LINES: usize = 12;
pub const MAX_SCRIPT_CHARS: usize = 300;

pub const DEFAULT_SHORT_ABANDON: Duration = Duration::from_secs(5);

/// The service-level formulas a queue may report with (`docs/metrics.md#service-level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash, PartialOrd, Ord)]
pub enum ServiceLevelDefinition {
    /// answered within T ÷ (answered + abandoned − short abandoned)
    #[default]
    Default,
    /// answered within T ÷ answered (Asterisk "SL", Wazo QoS)
    Answered,
    /// (answered within T + abandoned within T) ÷ (answered + abandoned) (Asterisk "SL2")
    AnsweredAndAbandoned,
    /// contacts leaving the queue within T ÷ offered (Amazon Connect)
    LeftQueue,
}

impl ServiceLevelDefinition {
    pub const ALL: [Self; 4] = [Self::Default, Self::Answered, Self::AnsweredAndAbandoned, Self::LeftQueue];

    pub fn name(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::Answered => "answered",
            Self::AnsweredAndAbandoned => "answered-and-abandoned",
            Self::LeftQueue => "left-queue",
        }
    }

    /// The formula, as printed beside a figure.
    pub fn formula(self) -> &'static str {
        match self {
            Self::Default => "answered within T / (answered + abandoned - short abandoned)",
            Self::Answered => "answered within T / answered",
            Self::AnsweredAndAbandoned => "(answered within T + abandoned within T) / (answered + abandoned)",
            Self::LeftQueue => "left the queue within T / offered",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.name() == s || (s.is_empty() && *d == Self::Default))
    }
}

/// The abandon-rate formulas a queue may report with (`docs/metrics.md#abandon-rate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash, PartialOrd, Ord)]
pub enum AbandonRateDefinition {
    /// abandoned ÷ offered
    #[default]
    Default,
    /// (abandoned − short abandoned) ÷ (offered − short abandoned)
    ExcludingShort,
}

impl AbandonRateDefinition {
    pub const ALL: [Self; 2] = [Self::Default, Self::ExcludingShort];

    pub fn name(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::ExcludingShort => "excluding-short",
        }
    }

    pub fn formula(self) -> &'static str {
        match self {
            Self::Default => "abandoned / offered",
            Self::ExcludingShort => "(abandoned - short abandoned) / (offered - short abandoned)",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.name() == s || (s.is_empty() && *d == Self::Default))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelaxStep {
    pub after: Duration,
    pub proficiency_drop: u8,
    pub drop_skills: bool,
    pub drop_language: bool,
}

impl RoutingConfig {
    /// The disposition codes a contact of `queue` is wrapped up with: the queue's own, else
    /// the tenant's.
    pub fn dispositions_of(&self, queue: &str) -> &BTreeSet<String> {
        match self.queues.get(queue) {
            Some(q) if !q.disposition_codes.is_empty() => &q.disposition_codes,
            _ => &self.disposition_codes,
        }
    }

    /// Whether `reason` is an away reason an agent of this tenant may give.
    pub fn is_away_reason(&self, reason: &str) -> bool {
        BUILT_IN_AWAY_REASONS.contains(&reason) || self.away_reasons.contains(reason)
    }
}

// ---------------------------------------------------------------------------------------
// Manifest form (`spec.routing`).
// ---------------------------------------------------------------------------------------

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoutingSpec {
    /// The agent pool routing this tenant's contacts (`default` when absent). Tenants of one
    /// pool may share agents; an agent serves the tenants of one pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[a-z0-9_-]{1,40}$")))]
    pub agent_pool: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "schema", schemars(inner(regex(pattern = r"^[a-z0-9_-]{1,40}$"))))]
    pub away_reasons: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "schema", schemars(inner(regex(pattern = r"^[a-z0-9_-]{1,40}$"))))]
    pub disposition_codes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queues: Vec<QueueSpec>,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueueSpec {
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[a-z0-9_-]{1,40}$")))]
    pub id: String,
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(length(max = 200)))]
    pub display_name: String,
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(range(min = -100, max = 100)))]
    pub priority: i64,
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(range(min = 0, max = 1000)))]
    pub aging_per_minute: i64,
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(range(min = 0, max = 1000)))]
    pub vip_boost: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 604800)))]
    pub service_level_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 604800)))]
    pub offer_timeout_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(min = 0, max = 604800)))]
    pub after_contact_work_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 604800)))]
    pub max_wait_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(regex(pattern = r"^[a-z0-9_-]{1,40}$")))]
    pub overflow_queue: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(min = 0, max = 604800)))]
    pub preferred_agent_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "schema", schemars(length(max = 8)))]
    pub steps: Vec<StepSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(max = 100.0), extend("minimum" = 0.0, "exclusiveMinimum" = true)))]
    pub service_level_target_percent: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(extend("enum" = ["default", "answered", "answered-and-abandoned", "left-queue"])))]
    pub service_level_definition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(extend("enum" = ["default", "excluding-short"])))]
    pub abandon_rate_definition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(min = 0, max = 604800)))]
    pub short_abandon_seconds: Option<i64>,
    /// The agent's script per language (`en: [line, …]`); `{customer}`, `{tenant}` and
    /// `{queue}` are filled in per contact.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub script: BTreeMap<String, Vec<String>>,
    /// The post-resolution question per language.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resolution_question: BTreeMap<String, String>,
    /// The queue's own disposition codes (instead of the tenant's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "schema", schemars(length(max = 100)))]
    pub disposition_codes: Vec<String>,
    /// Replies an agent inserts into a chat with one click, per language (`es: [text, …]`);
    /// `{customer}`, `{tenant}` and `{queue}` are filled in per contact.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub canned_replies: BTreeMap<String, Vec<String>>,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StepSpec {
    #[cfg_attr(feature = "schema", schemars(range(min = 0, max = 604800)))]
    pub after_seconds: i64,
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(range(min = 0, max = 4)))]
    pub proficiency_drop: i64,
    #[serde(default)]
    pub drop_skills: bool,
    #[serde(default)]
    pub drop_language: bool,
}

/// Codes and ids: lower-case letters, digits, `-` and `_`, 1 to 40 characters.
pub fn is_code(s: &str) -> bool {
    (1..=40).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

impl RoutingSpec {
    /// Validates into a [`RoutingConfig`]; `default_threshold` is the tenant's service-level
    /// threshold. Violations are pushed with paths under `spec.routing`.
    pub fn validate(&self, default_threshold: Duration, v: &mut Vec<FieldViolation>) -> RoutingConfig {
        let mut bad = |field: String, msg: String| v.push(FieldViolation::new(field, msg));
        let agent_pool = match self.agent_pool.as_deref() {
            None => DEFAULT_AGENT_POOL.to_owned(),
            Some(p) if is_code(p) => p.to_owned(),
            Some(p) => {
                bad("spec.routing.agentPool".into(), format!("`{p}` must be 1-40 of a-z, 0-9, - and _"));
                DEFAULT_AGENT_POOL.to_owned()
            }
        };
        let mut codes = |list: &[String], path: &str| {
            let mut set = BTreeSet::new();
            if list.len() > MAX_CODES {
                bad(format!("spec.routing.{path}"), format!("at most {MAX_CODES} codes"));
            }
            for (i, c) in list.iter().enumerate() {
                if !is_code(c) {
                    bad(format!("spec.routing.{path}[{i}]"), format!("`{c}` must be 1-40 of a-z, 0-9, - and _"));
                } else if BUILT_IN_AWAY_REASONS.contains(&c.as_str()) && path == "awayReasons" {
                    bad(format!("spec.routing.{path}[{i}]"), format!("`{c}` is built in"));
                } else if !set.insert(c.clone()) {
                    bad(format!("spec.routing.{path}[{i}]"), format!("`{c}` appears twice"));
                }
            }
            set
        };
        let away_reasons = codes(&self.away_reasons, "awayReasons");
        let disposition_codes = codes(&self.disposition_codes, "dispositionCodes");
        let mut queues = BTreeMap::new();
        if self.queues.len() > MAX_QUEUES {
            bad("spec.routing.queues".into(), format!("at most {MAX_QUEUES} queues"));
        }
        let ids: BTreeSet<&str> = self.queues.iter().map(|q| q.id.as_str()).collect();
        for (i, q) in self.queues.iter().enumerate() {
            let path = format!("spec.routing.queues[{i}]");
            let mut seconds = |field: &str, value: Option<i64>, min: i64, default: Duration| -> Duration {
                match value {
                    None => default,
                    Some(s) if (min..=MAX_SECONDS).contains(&s) => Duration::from_secs(s as u64),
                    Some(s) => {
                        bad(format!("{path}.{field}"), format!("must be between {min} and {MAX_SECONDS}, got {s}"));
                        default
                    }
                }
            };
            let threshold = seconds("serviceLevelSeconds", q.service_level_seconds, 1, default_threshold);
            let offer_timeout = seconds("offerTimeoutSeconds", q.offer_timeout_seconds, 1, DEFAULT_OFFER_TIMEOUT);
            let acw = seconds("afterContactWorkSeconds", q.after_contact_work_seconds, 0, DEFAULT_AFTER_CONTACT_WORK);
            let max_wait = q.max_wait_seconds.map(|s| seconds("maxWaitSeconds", Some(s), 1, Duration::ZERO));
            let preferred = seconds("preferredAgentSeconds", q.preferred_agent_seconds, 0, Duration::ZERO);
            let short_abandon = seconds("shortAbandonSeconds", q.short_abandon_seconds, 0, DEFAULT_SHORT_ABANDON);
            let sl_definition = q.service_level_definition.as_deref().unwrap_or_default();
            let sl_definition = ServiceLevelDefinition::parse(sl_definition).unwrap_or_else(|| {
                let names: Vec<_> = ServiceLevelDefinition::ALL.iter().map(|d| d.name()).collect();
                bad(
                    format!("{path}.serviceLevelDefinition"),
                    format!("`{sl_definition}` is not one of {}", names.join(", ")),
                );
                ServiceLevelDefinition::Default
            });
            let ar_definition = q.abandon_rate_definition.as_deref().unwrap_or_default();
            let ar_definition = AbandonRateDefinition::parse(ar_definition).unwrap_or_else(|| {
                let names: Vec<_> = AbandonRateDefinition::ALL.iter().map(|d| d.name()).collect();
                bad(
                    format!("{path}.abandonRateDefinition"),
                    format!("`{ar_definition}` is not one of {}", names.join(", ")),
                );
                AbandonRateDefinition::Default
            });
            let target = match q.service_level_target_percent {
                Some(t) if t > 0.0 && t <= 100.0 => Some(t),
                None => None,
                Some(t) => {
                    bad(format!("{path}.serviceLevelTargetPercent"), format!("must be in (0, 100], got {t}"));
                    None
                }
            };
            if !is_code(&q.id) {
                bad(format!("{path}.id"), format!("`{}` must be 1-40 of a-z, 0-9, - and _", q.id));
            } else if queues.contains_key(&q.id) {
                bad(format!("{path}.id"), format!("queue `{}` appears twice", q.id));
            }
            if q.display_name.chars().count() > 200 {
                bad(format!("{path}.displayName"), "must be at most 200 characters".into());
            }
            if !(-100..=100).contains(&q.priority) {
                bad(format!("{path}.priority"), format!("must be between -100 and 100, got {}", q.priority));
            }
            if !(0..=1000).contains(&q.aging_per_minute) {
                bad(
                    format!("{path}.agingPerMinute"),
                    format!("must be between 0 and 1000, got {}", q.aging_per_minute),
                );
            }
            if !(0..=1000).contains(&q.vip_boost) {
                bad(format!("{path}.vipBoost"), format!("must be between 0 and 1000, got {}", q.vip_boost));
            }
            if let Some(to) = &q.overflow_queue {
                if *to == q.id {
                    bad(format!("{path}.overflowQueue"), "must not be the queue itself".into());
                } else if !ids.contains(to.as_str()) {
                    bad(format!("{path}.overflowQueue"), format!("`{to}` is not a queue of this tenant"));
                }
                if q.max_wait_seconds.is_none() {
                    bad(format!("{path}.overflowQueue"), "needs maxWaitSeconds".into());
                }
            }
            if q.steps.len() > MAX_STEPS {
                bad(format!("{path}.steps"), format!("at most {MAX_STEPS} steps"));
            }
            let mut steps = Vec::new();
            for (j, s) in q.steps.iter().enumerate() {
                let sp = format!("{path}.steps[{j}]");
                if !(0..=MAX_SECONDS).contains(&s.after_seconds) {
                    bad(format!("{sp}.afterSeconds"), format!("must be between 0 and {MAX_SECONDS}"));
                } else if j == 0 && s.after_seconds != 0 {
                    bad(format!("{sp}.afterSeconds"), "the first step must start at 0".into());
                } else if j > 0 && s.after_seconds <= q.steps[j - 1].after_seconds {
                    bad(format!("{sp}.afterSeconds"), "must be later than the step before".into());
                }
                if !(0..=4).contains(&s.proficiency_drop) {
                    bad(
                        format!("{sp}.proficiencyDrop"),
                        format!("must be between 0 and 4, got {}", s.proficiency_drop),
                    );
                }
                steps.push(RelaxStep {
                    after: Duration::from_secs(s.after_seconds.clamp(0, MAX_SECONDS) as u64),
                    proficiency_drop: s.proficiency_drop.clamp(0, 4) as u8,
                    drop_skills: s.drop_skills,
                    drop_language: s.drop_language,
                });
            }
            if steps.is_empty() {
                steps.push(RelaxStep {
                    after: Duration::ZERO,
                    proficiency_drop: 0,
                    drop_skills: false,
                    drop_language: false,
                });
            }
            validate_words(&path, &q.script, &q.resolution_question, &mut bad);
            validate_canned(&path, &q.canned_replies, &mut bad);
            let mut queue_codes = BTreeSet::new();
            if q.disposition_codes.len() > MAX_CODES {
                bad(format!("{path}.dispositionCodes"), format!("at most {MAX_CODES} codes"));
            }
            for (j, c) in q.disposition_codes.iter().enumerate() {
                if !is_code(c) {
                    bad(format!("{path}.dispositionCodes[{j}]"), format!("`{c}` must be 1-40 of a-z, 0-9, - and _"));
                } else if !queue_codes.insert(c.clone()) {
                    bad(format!("{path}.dispositionCodes[{j}]"), format!("`{c}` appears twice"));
                }
            }
            queues.insert(
                q.id.clone(),
                QueueConfig {
                    id: q.id.clone(),
                    display_name: if q.display_name.is_empty() { q.id.clone() } else { q.display_name.clone() },
                    priority: q.priority.clamp(-100, 100) as i32,
                    aging_per_minute: q.aging_per_minute.clamp(0, 1000) as u32,
                    vip_boost: q.vip_boost.clamp(0, 1000) as u32,
                    service_level_threshold: threshold,
                    offer_timeout,
                    after_contact_work: acw,
                    max_wait,
                    overflow_queue: q.overflow_queue.clone(),
                    preferred_agent_window: preferred,
                    steps,
                    service_level_target_percent: target,
                    service_level_definition: sl_definition,
                    abandon_rate_definition: ar_definition,
                    short_abandon_threshold: short_abandon,
                    script: q.script.clone(),
                    resolution_question: q.resolution_question.clone(),
                    canned_replies: q.canned_replies.clone(),
                    disposition_codes: queue_codes,
                },
            );
        }
        RoutingConfig { agent_pool, away_reasons, disposition_codes, queues }
    }
}

impl From<&RoutingConfig> for RoutingSpec {
    fn from(r: &RoutingConfig) -> Self {
        let secs = |d: Duration| d.as_secs() as i64;
        RoutingSpec {
            agent_pool: Some(r.agent_pool.clone()).filter(|p| p != DEFAULT_AGENT_POOL),
            away_reasons: r.away_reasons.iter().cloned().collect(),
            disposition_codes: r.disposition_codes.iter().cloned().collect(),
            queues: r
                .queues
                .values()
                .map(|q| QueueSpec {
                    id: q.id.clone(),
                    display_name: q.display_name.clone(),
                    priority: q.priority.into(),
                    aging_per_minute: q.aging_per_minute.into(),
                    vip_boost: q.vip_boost.into(),
                    service_level_seconds: Some(secs(q.service_level_threshold)),
                    offer_timeout_seconds: Some(secs(q.offer_timeout)),
                    after_contact_work_seconds: Some(secs(q.after_contact_work)),
                    max_wait_seconds: q.max_wait.map(secs),
                    overflow_queue: q.overflow_queue.clone(),
                    preferred_agent_seconds: Some(secs(q.preferred_agent_window)),
                    steps: q
                        .steps
                        .iter()
                        .map(|s| StepSpec {
                            after_seconds: secs(s.after),
                            proficiency_drop: s.proficiency_drop.into(),
                            drop_skills: s.drop_skills,
                            drop_language: s.drop_language,
                        })
                        .collect(),
                    service_level_target_percent: q.service_level_target_percent,
                    service_level_definition: Some(q.service_level_definition.name().into()),
                    abandon_rate_definition: Some(q.abandon_rate_definition.name().into()),
                    short_abandon_seconds: Some(secs(q.short_abandon_threshold)),
                    script: q.script.clone(),
                    resolution_question: q.resolution_question.clone(),
                    canned_replies: q.canned_replies.clone(),
                    disposition_codes: q.disposition_codes.iter().cloned().collect(),
                })
                .collect(),
        }
    }
}

/// A script's languages and lines, and a question's, within bounds: a language is 2 or 3
/// lower-case letters; lines and questions are not blank, at most [`MAX_SCRIPT_CHARS`]
/// characters, and name no placeholder but [`SCRIPT_PLACEHOLDERS`] (a typo would show to
/// the agent as written).
fn validate_words(
    path: &str,
    script: &BTreeMap<String, Vec<String>>,
    question: &BTreeMap<String, String>,
    bad: &mut impl FnMut(String, String),
) {
    let is_lang = |l: &str| (2..=3).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_lowercase());
    let problem = |t: &str| -> Option<String> {
        if t.trim().is_empty() {
            Some("must not be blank".into())
        } else if t.chars().count() > MAX_SCRIPT_CHARS {
            Some(format!("must be at most {MAX_SCRIPT_CHARS} characters"))
        } else {
            unknown_placeholder(t).map(|p| format!("`{p}` is not one of {}", SCRIPT_PLACEHOLDERS.join(", ")))
        }
    };
    for (name, langs) in [("script", script.len()), ("resolutionQuestion", question.len())] {
        if langs > MAX_SCRIPT_LANGUAGES {
            bad(format!("{path}.{name}"), format!("at most {MAX_SCRIPT_LANGUAGES} languages"));
        }
    }
    let langs = script.keys().map(|l| ("script", l)).chain(question.keys().map(|l| ("resolutionQuestion", l)));
    for (name, lang) in langs.filter(|(_, l)| !is_lang(l)) {
        bad(format!("{path}.{name}.{lang}"), "a language is 2 or 3 lower-case letters (en, es)".into());
    }
    for (lang, lines) in script.iter().filter(|(l, _)| is_lang(l)) {
        if lines.is_empty() || lines.len() > MAX_SCRIPT_LINES {
            bad(format!("{path}.script.{lang}"), format!("must have 1 to {MAX_SCRIPT_LINES} lines"));
        }
        for (i, line) in lines.iter().enumerate() {
            if let Some(p) = problem(line) {
                bad(format!("{path}.script.{lang}[{i}]"), p);
            }
        }
    }
    for (lang, q) in question.iter().filter(|(l, _)| is_lang(l)) {
        if let Some(p) = problem(q) {
            bad(format!("{path}.resolutionQuestion.{lang}"), p);
        }
    }
}

/// A queue's canned replies within bounds: at most [`MAX_SCRIPT_LANGUAGES`] languages of 2
/// or 3 lower-case letters, 1 to [`MAX_CANNED_REPLIES`] replies each, each not blank, at
/// most [`MAX_CANNED_CHARS`] characters, naming no placeholder but [`SCRIPT_PLACEHOLDERS`].
fn validate_canned(path: &str, replies: &BTreeMap<String, Vec<String>>, bad: &mut impl FnMut(String, String)) {
    if replies.len() > MAX_SCRIPT_LANGUAGES {
        bad(format!("{path}.cannedReplies"), format!("at most {MAX_SCRIPT_LANGUAGES} languages"));
    }
    for (lang, texts) in replies {
        let at = format!("{path}.cannedReplies.{lang}");
        if !((2..=3).contains(&lang.len()) && lang.bytes().all(|b| b.is_ascii_lowercase())) {
            bad(at, "a language is 2 or 3 lower-case letters (en, es)".into());
            continue;
        }
        if texts.is_empty() || texts.len() > MAX_CANNED_REPLIES {
            bad(at.clone(), format!("must have 1 to {MAX_CANNED_REPLIES} replies"));
        }
        for (i, t) in texts.iter().enumerate() {
            let problem = if t.trim().is_empty() {
                Some("must not be blank".to_owned())
            } else if t.chars().count() > MAX_CANNED_CHARS {
                Some(format!("must be at most {MAX_CANNED_CHARS} characters"))
            } else if texts[..i].contains(t) {
                Some("is listed twice".to_owned())
            } else {
                unknown_placeholder(t).map(|p| format!("`{p}` is not one of {}", SCRIPT_PLACEHOLDERS.join(", ")))
            };
            if let Some(p) = problem {
                bad(format!("{at}[{i}]"), p);
            }
        }
    }
}

/// The first `{…}` in `t` that is not a known placeholder.
fn unknown_placeholder(t: &str) -> Option<&str> {
    let mut rest = t;
    while let Some(start) = rest.find('{') {
        let tail = &rest[start..];
        let end = tail.find('}').map_or(tail.len(), |e| e + 1);
        let p = &tail[..end];
        if !SCRIPT_PLACEHOLDERS.contains(&p) {
            return Some(p);
        }
        rest = &tail[end..];
    }
    None
}

// ---------------------------------------------------------------------------------------
// Wire form.
// ---------------------------------------------------------------------------------------

fn duration(d: Duration) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds: d.as_secs() as i64, nanos: 0 })
}

fn seconds(d: &Option<prost_types::Duration>) -> Option<i64> {
    d.as_ref().map(|d| d.seconds)
}

impl From<&RoutingConfig> for pb::RoutingConfig {
    fn from(r: &RoutingConfig) -> Self {
        pb::RoutingConfig {
            agent_pool: r.agent_pool.clone(),
            away_reasons: r.away_reasons.iter().cloned().collect(),
            disposition_codes: r.disposition_codes.iter().cloned().collect(),
            queues: r
                .queues
                .values()
                .map(|q| pb::Queue {
                    id: q.id.clone(),
                    display_name: q.display_name.clone(),
                    priority: q.priority,
                    aging_per_minute: q.aging_per_minute,
                    vip_boost: q.vip_boost,
                    service_level_threshold: duration(q.service_level_threshold),
                    offer_timeout: duration(q.offer_timeout),
                    after_contact_work: duration(q.after_contact_work),
                    max_wait: q.max_wait.and_then(duration),
                    overflow_queue: q.overflow_queue.clone().unwrap_or_default(),
                    preferred_agent_window: duration(q.preferred_agent_window),
                    steps: q
                        .steps
                        .iter()
                        .map(|s| pb::RoutingStep {
                            after: duration(s.after),
                            proficiency_drop: s.proficiency_drop.into(),
                            drop_skills: s.drop_skills,
                            drop_language: s.drop_language,
                        })
                        .collect(),
                    service_level_target_percent: q.service_level_target_percent.unwrap_or(0.0),
                    service_level_definition: q.service_level_definition.name().into(),
                    abandon_rate_definition: q.abandon_rate_definition.name().into(),
                    short_abandon_threshold: duration(q.short_abandon_threshold),
                    script: q
                        .script
                        .iter()
                        .map(|(l, lines)| (l.clone(), pb::ScriptLines { lines: lines.clone() }))
                        .collect(),
                    resolution_question: q.resolution_question.iter().map(|(l, t)| (l.clone(), t.clone())).collect(),
                    disposition_codes: q.disposition_codes.iter().cloned().collect(),
                    canned_replies: q
                        .canned_replies
                        .iter()
                        .map(|(l, texts)| (l.clone(), pb::ScriptLines { lines: texts.clone() }))
                        .collect(),
                })
                .collect(),
        }
    }
}

/// The wire form read back into the manifest form, so it passes the same validation.
impl From<pb::RoutingConfig> for RoutingSpec {
    fn from(r: pb::RoutingConfig) -> Self {
        RoutingSpec {
            agent_pool: Some(r.agent_pool).filter(|p| !p.is_empty()),
            away_reasons: r.away_reasons,
            disposition_codes: r.disposition_codes,
            queues: r
                .queues
                .into_iter()
                .map(|q| QueueSpec {
                    id: q.id,
                    display_name: q.display_name,
                    priority: q.priority.into(),
                    aging_per_minute: q.aging_per_minute.into(),
                    vip_boost: q.vip_boost.into(),
                    service_level_seconds: seconds(&q.service_level_threshold),
                    offer_timeout_seconds: seconds(&q.offer_timeout),
                    after_contact_work_seconds: seconds(&q.after_contact_work),
                    max_wait_seconds: seconds(&q.max_wait),
                    overflow_queue: Some(q.overflow_queue).filter(|s| !s.is_empty()),
                    preferred_agent_seconds: seconds(&q.preferred_agent_window),
                    steps: q
                        .steps
                        .into_iter()
                        .map(|s| StepSpec {
                            after_seconds: seconds(&s.after).unwrap_or(0),
                            proficiency_drop: s.proficiency_drop.into(),
                            drop_skills: s.drop_skills,
                            drop_language: s.drop_language,
                        })
                        .collect(),
                    service_level_target_percent: Some(q.service_level_target_percent).filter(|t| *t != 0.0),
                    service_level_definition: Some(q.service_level_definition).filter(|s| !s.is_empty()),
                    abandon_rate_definition: Some(q.abandon_rate_definition).filter(|s| !s.is_empty()),
                    short_abandon_seconds: seconds(&q.short_abandon_threshold),
                    script: q.script.into_iter().map(|(l, s)| (l, s.lines)).collect(),
                    resolution_question: q.resolution_question.into_iter().collect(),
                    disposition_codes: q.disposition_codes,
                    canned_replies: q.canned_replies.into_iter().map(|(l, s)| (l, s.lines)).collect(),
                })
                .collect(),
        }
    }
}

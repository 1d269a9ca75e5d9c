//! Scenario files (`loadtest/scenarios/*.yaml`): who calls, who answers, for how long.
//!
//! Every time and rate in a scenario is in **simulated** time; `timeScale` simulated
//! seconds pass per real second (arrival rates are multiplied by it, durations divided), so
//! a 30-minute scenario with AHT 240 s runs in two minutes at `timeScale: 15` with the same
//! queueing maths. A file is refused with every problem listed, each naming its field.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Simulated seconds per real second (1 = real time).
    pub time_scale: f64,
    /// How long customers keep arriving (simulated seconds). Ignored with `ramp`.
    #[serde(default)]
    pub duration_seconds: f64,
    /// Contacts arriving in the first part of the run are left out of service level, ASA
    /// and occupancy (the floor starts empty), simulated seconds.
    #[serde(default)]
    pub warmup_seconds: f64,
    /// Longest the run waits, after arrivals stop, for every contact to finish (real s).
    #[serde(default = "default_drain")]
    pub drain_seconds: f64,
    /// The enqueue→offer p99 a ramp step must stay under (real milliseconds).
    #[serde(default = "default_target")]
    pub target_p99_ms: f64,
    /// Random seed for arrivals, handle times and agent behaviour.
    #[serde(default = "default_seed")]
    pub seed: u64,
    pub tenants: Vec<TenantSpec>,
    #[serde(default)]
    pub ramp: Option<Ramp>,
    /// Compare one queue with Erlang C (`docs/metrics.md#erlang-c`): only meaningful for
    /// Poisson arrivals, exponential handle times, one channel, FCFS and no abandonment.
    #[serde(default)]
    pub erlang_c: Option<ErlangCheck>,
}

fn default_drain() -> f64 {
    120.0
}
fn default_target() -> f64 {
    25.0
}
fn default_seed() -> u64 {
    42
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenantSpec {
    /// Tenant id stem; the run id is appended so runs never share tenants.
    pub id: String,
    /// Identical, independent copies of this tenant (own agents, own arrivals), measured
    /// together: more contacts per real minute, and independent replications for the
    /// confidence interval.
    #[serde(default = "one")]
    pub replicas: u32,
    /// The tenant this one is a replica of (its own id for the first).
    #[serde(skip)]
    pub group: String,
    pub queues: Vec<QueueSpec>,
    pub agents: Vec<AgentGroup>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QueueSpec {
    pub id: String,
    /// Service-level threshold T (simulated seconds); T / timeScale must be a whole number of
    /// seconds for the reporting service's own figure (queues are configured in seconds).
    pub service_level_seconds: f64,
    /// Poisson arrival rate (contacts per simulated second).
    pub arrivals_per_second: f64,
    /// Channel mix, shares summing to 1 (`voice`, `chat`, `sms`, `email`, `social`, `task`).
    #[serde(default = "voice_only")]
    pub channels: BTreeMap<String, f64>,
    pub handle: Distribution,
    /// Customers hang up after a drawn patience if still queued (none: they wait forever).
    #[serde(default)]
    pub patience: Option<Distribution>,
}

fn one() -> u32 {
    1
}

fn voice_only() -> BTreeMap<String, f64> {
    [("voice".to_owned(), 1.0)].into()
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Distribution {
    pub distribution: Shape,
    pub mean_seconds: f64,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    Exponential,
    Fixed,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentGroup {
    pub count: u32,
    /// Queue ids of this tenant the agents serve.
    pub queues: Vec<String>,
    /// Contacts at once per channel; voice is exclusive.
    #[serde(default = "one_voice")]
    pub capacity: BTreeMap<String, u32>,
    /// Time to react to an offer (simulated seconds).
    #[serde(default)]
    pub think_seconds: f64,
    #[serde(default)]
    pub reject_probability: f64,
    /// Offers left to ring out (RONA); the agent makes itself available again a second later.
    #[serde(default)]
    pub ignore_probability: f64,
    /// After-contact work before wrapping up (simulated seconds).
    #[serde(default)]
    pub wrap_up_seconds: f64,
}

fn one_voice() -> BTreeMap<String, u32> {
    [("voice".to_owned(), 1)].into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ramp {
    /// Each step multiplies every queue's arrival rate by this.
    pub multipliers: Vec<f64>,
    /// Real seconds per step.
    pub step_seconds: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ErlangCheck {
    pub tenant: String,
    pub queue: String,
    /// Service-level tolerance in percentage points.
    #[serde(default = "two")]
    pub service_level_points: f64,
    /// ASA tolerance, percent of the Erlang C figure.
    #[serde(default = "fifteen")]
    pub asa_percent: f64,
}

fn two() -> f64 {
    2.0
}
fn fifteen() -> f64 {
    15.0
}

pub const CHANNELS: [&str; 6] = ["voice", "chat", "sms", "email", "social", "task"];

/// Reads and validates a scenario; the error lists every problem with its field path.
pub fn parse(text: &str) -> Result<Scenario, String> {
    let de = serde_yaml::Deserializer::from_str(text);
    let scenario: Scenario = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        if path == "." {
            inner
        } else {
            format!("{path}: {inner}")
        }
    })?;
    let problems = validate(&scenario);
    if !problems.is_empty() {
        return Err(problems.join("\n"));
    }
    let mut scenario = scenario;
    scenario.tenants = scenario
        .tenants
        .iter()
        .flat_map(|t| {
            (1..=t.replicas).map(move |k| TenantSpec {
                id: if k == 1 { t.id.clone() } else { format!("{}r{k}", t.id) },
                replicas: 1,
                group: t.id.clone(),
                ..t.clone()
            })
        })
        .collect();
    Ok(scenario)
}

fn is_id(s: &str) -> bool {
    (1..=20).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn validate(s: &Scenario) -> Vec<String> {
    let mut bad = Vec::new();
    let mut check = |ok: bool, field: String, msg: &str| {
        if !ok {
            bad.push(format!("{field}: {msg}"));
        }
    };
    let positive = |v: f64| v.is_finite() && v > 0.0;
    let non_negative = |v: f64| v.is_finite() && v >= 0.0;
    let probability = |v: f64| (0.0..=1.0).contains(&v);
    check(!s.name.trim().is_empty(), "name".into(), "must not be empty");
    check(positive(s.time_scale) && s.time_scale <= 1000.0, "timeScale".into(), "must be above 0 and at most 1000");
    if s.ramp.is_none() {
        check(positive(s.duration_seconds), "durationSeconds".into(), "must be above 0 (or give a ramp)");
    }
    let warmup_ok = non_negative(s.warmup_seconds) && (s.ramp.is_some() || s.warmup_seconds < s.duration_seconds);
    check(warmup_ok, "warmupSeconds".into(), "must be at least 0 and below durationSeconds");
    check(positive(s.drain_seconds), "drainSeconds".into(), "must be above 0");
    check(positive(s.target_p99_ms), "targetP99Ms".into(), "must be above 0");
    check(!s.tenants.is_empty(), "tenants".into(), "at least one tenant");
    let mut ids = std::collections::BTreeSet::new();
    for (i, t) in s.tenants.iter().enumerate() {
        let p = format!("tenants[{i}]");
        check(is_id(&t.id), format!("{p}.id"), "1-20 of a-z, 0-9 and -");
        check(ids.insert(t.id.clone()), format!("{p}.id"), "appears twice");
        check((1..=100).contains(&t.replicas), format!("{p}.replicas"), "must be between 1 and 100");
        check(!t.queues.is_empty(), format!("{p}.queues"), "at least one queue");
        check(!t.agents.is_empty(), format!("{p}.agents"), "at least one agent group");
        let mut queues = std::collections::BTreeSet::new();
        for (j, q) in t.queues.iter().enumerate() {
            let p = format!("{p}.queues[{j}]");
            check(is_id(&q.id), format!("{p}.id"), "1-20 of a-z, 0-9 and -");
            check(queues.insert(q.id.clone()), format!("{p}.id"), "appears twice");
            check(positive(q.service_level_seconds), format!("{p}.serviceLevelSeconds"), "must be above 0");
            check(positive(q.arrivals_per_second), format!("{p}.arrivalsPerSecond"), "must be above 0");
            check(positive(q.handle.mean_seconds), format!("{p}.handle.meanSeconds"), "must be above 0");
            if let Some(pat) = q.patience {
                check(positive(pat.mean_seconds), format!("{p}.patience.meanSeconds"), "must be above 0");
            }
            let total: f64 = q.channels.values().sum();
            check(
                !q.channels.is_empty() && (total - 1.0).abs() < 1e-6,
                format!("{p}.channels"),
                "shares must sum to 1",
            );
            for (c, share) in &q.channels {
                check(
                    CHANNELS.contains(&c.as_str()),
                    format!("{p}.channels.{c}"),
                    "is not a channel (voice, chat, sms, email, social, task)",
                );
                check(probability(*share), format!("{p}.channels.{c}"), "must be between 0 and 1");
            }
        }
        for (j, g) in t.agents.iter().enumerate() {
            let p = format!("{p}.agents[{j}]");
            check(g.count > 0 && g.count <= 10_000, format!("{p}.count"), "must be between 1 and 10000");
            check(!g.queues.is_empty(), format!("{p}.queues"), "at least one queue");
            for (k, q) in g.queues.iter().enumerate() {
                check(queues.contains(q), format!("{p}.queues[{k}]"), "is not a queue of this tenant");
            }
            check(!g.capacity.is_empty(), format!("{p}.capacity"), "at least one channel");
            for (c, n) in &g.capacity {
                check(CHANNELS.contains(&c.as_str()), format!("{p}.capacity.{c}"), "is not a channel");
                check((1..=10).contains(n), format!("{p}.capacity.{c}"), "must be between 1 and 10");
            }
            check(non_negative(g.think_seconds), format!("{p}.thinkSeconds"), "must be at least 0");
            check(non_negative(g.wrap_up_seconds), format!("{p}.wrapUpSeconds"), "must be at least 0");
            check(probability(g.reject_probability), format!("{p}.rejectProbability"), "must be between 0 and 1");
            check(probability(g.ignore_probability), format!("{p}.ignoreProbability"), "must be between 0 and 1");
            check(
                g.reject_probability + g.ignore_probability <= 1.0,
                format!("{p}.ignoreProbability"),
                "reject + ignore must be at most 1",
            );
        }
        // Every channel a queue receives must be handled by some agent of the tenant.
        for (j, q) in t.queues.iter().enumerate() {
            for c in q.channels.keys() {
                let served = t.agents.iter().any(|g| g.queues.contains(&q.id) && g.capacity.contains_key(c));
                check(
                    served,
                    format!("{p}.queues[{j}].channels.{c}"),
                    "no agent group of the tenant serves this queue on this channel",
                );
            }
        }
    }
    if let Some(r) = &s.ramp {
        check(!r.multipliers.is_empty() && r.multipliers.len() <= 50, "ramp.multipliers".into(), "1 to 50 steps");
        for (i, m) in r.multipliers.iter().enumerate() {
            check(positive(*m), format!("ramp.multipliers[{i}]"), "must be above 0");
        }
        check(positive(r.step_seconds), "ramp.stepSeconds".into(), "must be above 0");
    }
    if let Some(e) = &s.erlang_c {
        let target = s.tenants.iter().find(|t| t.id == e.tenant);
        check(target.is_some(), "erlangC.tenant".into(), "is not a tenant of the scenario");
        if let Some(t) = target {
            let q = t.queues.iter().find(|q| q.id == e.queue);
            check(q.is_some(), "erlangC.queue".into(), "is not a queue of that tenant");
            if let Some(q) = q {
                check(
                    q.handle.distribution == Shape::Exponential,
                    "erlangC.queue".into(),
                    "Erlang C needs exponential handle times",
                );
                check(
                    q.patience.is_none(),
                    "erlangC.queue".into(),
                    "Erlang C assumes no abandonment (remove patience)",
                );
                check(q.channels.len() == 1, "erlangC.queue".into(), "Erlang C needs a single channel");
                let whole = q.service_level_seconds / s.time_scale;
                check((whole - whole.round()).abs() < 1e-9 && whole >= 1.0, "erlangC.queue".into(), "serviceLevelSeconds / timeScale must be a whole number of seconds (>= 1) for the reporting service");
            }
        }
        check(s.ramp.is_none(), "erlangC".into(), "cannot be combined with a ramp");
        check(positive(e.service_level_points), "erlangC.serviceLevelPoints".into(), "must be above 0");
        check(positive(e.asa_percent), "erlangC.asaPercent".into(), "must be above 0");
    }
    bad
}

/// Agents serving `queue` of tenant `t` (for Erlang C's N).
pub fn agents_on(t: &TenantSpec, queue: &str) -> u32 {
    t.agents.iter().filter(|g| g.queues.iter().any(|q| q == queue)).map(|g| g.count).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name: test
timeScale: 15
durationSeconds: 600
tenants:
  - id: ec
    queues:
      - id: support
        serviceLevelSeconds: 15
        arrivalsPerSecond: 0.2
        handle: { distribution: exponential, meanSeconds: 240 }
    agents:
      - { count: 55, queues: [support] }
erlangC: { tenant: ec, queue: support }
"#;

    #[test]
    fn the_checked_in_scenarios_are_valid() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).expect("scenarios dir") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "yaml") {
                parse(&std::fs::read_to_string(&path).expect("read"))
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                n += 1;
            }
        }
        assert!(n >= 3, "expected the scenarios to be there");
        let replicated = parse(&GOOD.replace("  - id: ec\n", "  - id: ec\n    replicas: 3\n")).expect("valid");
        let ids: Vec<(&str, &str)> = replicated.tenants.iter().map(|t| (t.id.as_str(), t.group.as_str())).collect();
        assert_eq!(ids, [("ec", "ec"), ("ecr2", "ec"), ("ecr3", "ec")]);
        let s = parse(GOOD).expect("valid");
        assert_eq!((agents_on(&s.tenants[0], "support"), s.seed), (55, 42));
    }

    #[test]
    fn bad_files_name_the_field() {
        let err = |text: &str| parse(text).expect_err("must be refused");
        assert!(err(&GOOD.replace("meanSeconds: 240", "meanSeconds: -1"))
            .contains("tenants[0].queues[0].handle.meanSeconds"));
        assert!(err(&GOOD.replace("exponential", "lognormal")).contains("tenants[0].queues[0].handle.distribution"));
        assert!(err(&GOOD.replace("timeScale: 15", "timeScale: 15\ncolour: blue")).contains("colour"));
        assert!(err(&GOOD.replace("queues: [support]", "queues: [sales]")).contains("tenants[0].agents[0].queues[0]"));
        assert!(err(&GOOD.replace("arrivalsPerSecond: 0.2", "arrivalsPerSecond: lots"))
            .contains("tenants[0].queues[0].arrivalsPerSecond"));
        assert!(err(&GOOD.replace("timeScale: 15", "timeScale: 7")).contains("whole number"));
        let two =
            err(&GOOD.replace("count: 55", "count: 0").replace("serviceLevelSeconds: 15", "serviceLevelSeconds: 0"));
        assert!(
            two.contains("tenants[0].agents[0].count") && two.contains("tenants[0].queues[0].serviceLevelSeconds"),
            "{two}"
        );
        assert!(err(&GOOD.replace("handle:", "channels: { voice: 0.5, fax: 0.5 }\n        handle:"))
            .contains("channels.fax"));
    }
}

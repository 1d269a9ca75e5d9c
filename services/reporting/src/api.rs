//! gRPC adapters: `ReportingService` (tenant-scoped figures) and `StaffingService`
//! (Erlang C).

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use centralita_platform::auth::{caller, Caller, Role};
use centralita_platform::error::{Error, FieldViolation};
use centralita_platform::queue::{AbandonRateDefinition, QueueConfig, ServiceLevelDefinition};
use centralita_platform::registry::TenantRegistry;
use centralita_platform::shutdown::Shutdown;
use centralita_platform::tenant::{Tenant, TenantId};
use centralita_proto::reporting::v1::{
    self as pb, reporting_service_server::ReportingService, staffing_service_server::StaffingService,
};
use centralita_proto::sessions::v1 as spb;
use centralita_proto::tenancy::v1::Channel;
use chrono_tz::Tz;
use deadpool_postgres::Pool;
use futures::Stream;
use tonic::{Request, Response, Status};

use crate::core::agents::{agent_time, AgentTime, Span, AVAILABLE, AWAY};
use crate::core::rollup::{self, GroupBy, Period, RowKey};
use crate::core::{Counts, Leg, Millis, QueueRules, INTERVAL_MS};
use crate::erlang;
use crate::store;

type R<T> = Result<Response<T>, Status>;

/// Longest history range one query may cover.
const MAX_RANGE_MS: i64 = 400 * 86_400_000;
/// Wallboard push period.
const PUSH_EVERY: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct Api {
    pub pool: Pool,
    pub registry: TenantRegistry,
    pub shutdown: Shutdown,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api").finish_non_exhaustive()
    }
}

pub fn now_ms() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

pub fn ts(ms: Millis) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: ms.div_euclid(1000), nanos: (ms.rem_euclid(1000) * 1_000_000) as i32 }
}

fn millis(t: &Option<prost_types::Timestamp>, field: &str) -> Result<Millis, Error> {
    let t = t.as_ref().ok_or_else(|| Error::invalid(field, "is required"))?;
    if !(0..=253_402_300_799).contains(&t.seconds) || !(0..1_000_000_000).contains(&t.nanos) {
        return Err(Error::invalid(field, "is not a valid timestamp"));
    }
    Ok(t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
}

/// The tenant a request is about: a tenant's token its own (naming another is refused);
/// a BPO admin must name one.
fn resolve_tenant(caller: &Caller, named: &str, registry: &TenantRegistry) -> Result<Arc<Tenant>, Error> {
    caller.require_any_role(&[Role::TenantAdmin, Role::Supervisor])?;
    let id = if named.is_empty() {
        caller.own_tenant()?.clone()
    } else {
        TenantId::parse(named).map_err(|e| Error::invalid("tenant", e.to_string()))?
    };
    caller.authorize_tenant(&id)?;
    registry.get(&id).ok_or_else(|| Error::NotFound(format!("tenants/{id}")))
}

fn rules_of(tenant: &Tenant, queue: &str) -> QueueRules {
    match tenant.routing.queues.get(queue) {
        Some(q) => QueueRules {
            threshold_ms: q.service_level_threshold.as_millis() as i64,
            short_abandon_ms: q.short_abandon_threshold.as_millis() as i64,
        },
        None => QueueRules { threshold_ms: tenant.service_level.threshold.as_millis() as i64, ..QueueRules::default() },
    }
}

fn definitions(
    queue: Option<&QueueConfig>,
    sl_override: Option<ServiceLevelDefinition>,
) -> (ServiceLevelDefinition, AbandonRateDefinition) {
    let sl = sl_override.or(queue.map(|q| q.service_level_definition)).unwrap_or_default();
    (sl, queue.map(|q| q.abandon_rate_definition).unwrap_or_default())
}

fn seconds(ms: i64, n: u64) -> Option<f64> {
    (n > 0).then(|| ms as f64 / 1000.0 / n as f64)
}

pub fn figures(c: &Counts, sl: ServiceLevelDefinition, ar: AbandonRateDefinition) -> pb::Figures {
    pb::Figures {
        offered: c.offered,
        answered: c.answered,
        answered_within_threshold: c.answered_within,
        abandoned: c.abandoned,
        short_abandoned: c.short_abandoned,
        abandoned_within_threshold: c.abandoned_within,
        left_within_threshold: c.left_within,
        overflowed: c.overflowed,
        timed_out: c.timed_out,
        waiting: c.waiting,
        handled: c.handled,
        transferred: c.transferred,
        transferred_while_waiting: c.transferred_waiting,
        service_level_percent: c.service_level(sl),
        service_level_definition: sl.name().into(),
        service_level_formula: sl.formula().into(),
        asa_seconds: c.asa_seconds(),
        aht_seconds: c.aht_seconds(),
        talk_seconds: seconds(c.talk_ms, c.handled),
        hold_seconds: seconds(c.hold_ms, c.handled),
        after_contact_work_seconds: seconds(c.acw_ms, c.handled),
        abandon_rate_percent: c.abandon_rate(ar),
        abandon_rate_definition: ar.name().into(),
        abandon_rate_formula: ar.formula().into(),
    }
}

fn channel_name(c: i32) -> String {
    Channel::try_from(c)
        .map(|c| c.as_str_name().trim_start_matches("CHANNEL_").to_ascii_lowercase())
        .unwrap_or_else(|_| c.to_string())
}

struct HistoryQuery {
    tenant: Arc<Tenant>,
    from: Millis,
    to: Millis,
    period: Period,
    group: GroupBy,
    queue: Option<String>,
    sl_override: Option<ServiceLevelDefinition>,
}

fn history_query(
    caller: &Caller,
    q: &pb::QueryHistoryRequest,
    registry: &TenantRegistry,
) -> Result<HistoryQuery, Error> {
    let tenant = resolve_tenant(caller, &q.tenant, registry)?;
    let mut bad = Vec::new();
    let from = millis(&q.start_time, "start_time").map_err(|e| bad.push(e)).ok();
    let to = millis(&q.end_time, "end_time").map_err(|e| bad.push(e)).ok();
    if let (Some(f), Some(t)) = (from, to) {
        if t <= f {
            bad.push(Error::invalid("end_time", "must be after start_time"));
        } else if t - f > MAX_RANGE_MS {
            bad.push(Error::invalid("end_time", "the range may cover at most 400 days"));
        }
    }
    let period = match pb::Granularity::try_from(q.granularity) {
        Ok(pb::Granularity::Interval) => Some(Period::Interval),
        Ok(pb::Granularity::Hour) => Some(Period::Hour),
        Ok(pb::Granularity::Day) => Some(Period::Day),
        Ok(pb::Granularity::Month) => Some(Period::Month),
        _ => {
            bad.push(Error::invalid("granularity", "must be INTERVAL, HOUR, DAY or MONTH"));
            None
        }
    };
    let mut group = GroupBy::default();
    for (i, d) in q.group_by.iter().enumerate() {
        match pb::Dimension::try_from(*d) {
            Ok(pb::Dimension::Queue) => group.queue = true,
            Ok(pb::Dimension::Channel) => group.channel = true,
            Ok(pb::Dimension::Agent) => group.agent = true,
            _ => bad.push(Error::invalid(format!("group_by[{i}]"), "must be QUEUE, CHANNEL or AGENT")),
        }
    }
    let sl_override = if q.service_level_definition.is_empty() {
        None
    } else {
        let d = ServiceLevelDefinition::parse(&q.service_level_definition);
        if d.is_none() {
            let names: Vec<_> = ServiceLevelDefinition::ALL.iter().map(|d| d.name()).collect();
            bad.push(Error::invalid("service_level_definition", format!("must be one of {}", names.join(", "))));
        }
        d
    };
    if !bad.is_empty() {
        return Err(merge(bad));
    }
    Ok(HistoryQuery {
        tenant,
        from: from.unwrap_or_default(),
        to: to.unwrap_or_default(),
        period: period.unwrap_or(Period::Interval),
        group,
        queue: Some(q.queue.clone()).filter(|q| !q.is_empty()),
        sl_override,
    })
}

fn merge(errors: Vec<Error>) -> Error {
    let mut all: Vec<FieldViolation> = Vec::new();
    for e in errors {
        match e {
            Error::InvalidArgument(v) => all.extend(v),
            other => return other,
        }
    }
    Error::InvalidArgument(all)
}

impl Api {
    async fn history_rows(&self, q: &HistoryQuery) -> Result<Vec<pb::HistoryRow>, Error> {
        let legs = self.legs(&q.tenant, q.from, q.to, q.queue.as_deref()).await?;
        let tz = q.tenant.business_hours.time_zone;
        let tenant = q.tenant.clone();
        let mut rows = rollup::rows(&legs, q.from, q.to, q.period, tz, q.group, |queue| rules_of(&tenant, queue));
        let agent_times = if q.group == (GroupBy { agent: true, ..GroupBy::default() }) {
            self.agent_history(q, &mut rows).await?
        } else {
            BTreeMap::new()
        };
        Ok(rows
            .into_iter()
            .map(|(key, counts)| {
                let agent_time =
                    key.agent.as_ref().and_then(|a| agent_times.get(&(key.period_start, a.clone()))).map(agent_time_pb);
                let queue = key.queue.as_deref().or(q.queue.as_deref());
                let (sl, ar) = definitions(queue.and_then(|id| q.tenant.routing.queues.get(id)), q.sl_override);
                pb::HistoryRow {
                    period_start: Some(ts(key.period_start)),
                    queue: key.queue.unwrap_or_default(),
                    channel: key.channel.map(channel_name).unwrap_or_default(),
                    agent: key.agent.unwrap_or_default(),
                    figures: Some(figures(&counts, sl, ar)),
                    agent_time,
                }
            })
            .collect())
    }

    /// Agent time per (period, agent) while serving the tenant (and queue); agents with
    /// time but no contacts in a period get an empty row in `rows`.
    async fn agent_history(
        &self,
        q: &HistoryQuery,
        rows: &mut BTreeMap<RowKey, Counts>,
    ) -> Result<BTreeMap<(Millis, String), AgentTime>, Error> {
        let tenant = q.tenant.id.as_str();
        let (spans, legs) = store::agent_activity(&self.pool, &q.tenant.id, q.from, q.to).await?;
        let mut by_agent: BTreeMap<&str, (Vec<&Span>, Vec<&Leg>)> = BTreeMap::new();
        for s in spans.iter().filter(|s| s.serves(tenant, q.queue.as_deref())) {
            by_agent.entry(s.agent.as_str()).or_default().0.push(s);
        }
        for l in &legs {
            if let Some(e) = by_agent.get_mut(l.agent.as_str()) {
                e.1.push(l);
            }
        }
        let to = q.to.min(now_ms() + 1);
        let mut out = BTreeMap::new();
        for (start, end) in rollup::periods(q.period, q.tenant.business_hours.time_zone, q.from, to) {
            let key_start = rollup::period_start(q.period, q.tenant.business_hours.time_zone, start);
            for (agent, (spans, legs)) in &by_agent {
                let t = agent_time(spans, legs, start, end);
                if t == AgentTime::default() {
                    continue;
                }
                rows.entry(RowKey {
                    period_start: key_start,
                    queue: None,
                    channel: None,
                    agent: Some((*agent).to_owned()),
                })
                .or_default();
                out.insert((key_start, (*agent).to_owned()), t);
            }
        }
        Ok(out)
    }

    async fn legs(&self, tenant: &Tenant, from: Millis, to: Millis, queue: Option<&str>) -> Result<Vec<Leg>, Error> {
        let mut legs = store::legs_between(&self.pool, &tenant.id, from, to).await?;
        if let Some(q) = queue {
            legs.retain(|l| l.queue == q);
        }
        Ok(legs)
    }

    async fn realtime(&self, caller: &Caller, q: &pb::GetRealtimeMetricsRequest) -> Result<pb::RealtimeMetrics, Error> {
        let tenant = resolve_tenant(caller, &q.tenant, &self.registry)?;
        let now = now_ms();
        let tz = tenant.business_hours.time_zone;
        let today = rollup::period_start(Period::Day, tz, now);
        let rolling = now - INTERVAL_MS;
        let only = Some(q.queue.as_str()).filter(|s| !s.is_empty());
        let legs = self.legs(&tenant, today.min(rolling), now + 1, only).await?;
        let waiting = store::waiting(&self.pool, &tenant.id).await?;
        let by_queue = GroupBy { queue: true, ..GroupBy::default() };
        let rules = |queue: &str| rules_of(&tenant, queue);
        let window = |from: Millis| -> BTreeMap<String, Counts> {
            rollup::rows(&legs, from, now + 1, Period::Month, Tz::UTC, by_queue, rules).into_iter().fold(
                BTreeMap::new(),
                |mut m, (RowKey { queue, .. }, c)| {
                    m.entry(queue.unwrap_or_default()).or_insert_with(Counts::default).merge(&c);
                    m
                },
            )
        };
        let (day, last) = (window(today), window(rolling));
        let (spans, agent_legs) = store::agent_activity(&self.pool, &tenant.id, today.min(rolling), now + 1).await?;
        let floor = AgentFloor::new(&spans, &agent_legs, tenant.id.as_str(), now, today, rolling);
        let mut queues: Vec<String> = tenant.routing.queues.keys().cloned().collect();
        queues.extend(day.keys().cloned());
        queues.extend(waiting.iter().map(|l| l.queue.clone()));
        queues.sort();
        queues.dedup();
        queues.retain(|id| only.is_none_or(|o| o == id));
        let out = queues
            .into_iter()
            .map(|id| {
                let config = tenant.routing.queues.get(&id);
                let (sl, ar) = definitions(config, None);
                let r = rules_of(&tenant, &id);
                let mine: Vec<&Leg> = waiting.iter().filter(|l| l.queue == id).collect();
                pb::RealtimeQueue {
                    waiting: mine.len() as u64,
                    longest_wait_ms: mine.iter().map(|l| now - l.enqueued_at).max().unwrap_or(0).max(0),
                    today: Some(figures(&day.get(&id).copied().unwrap_or_default(), sl, ar)),
                    rolling_15m: Some(figures(&last.get(&id).copied().unwrap_or_default(), sl, ar)),
                    threshold_seconds: r.threshold_ms / 1000,
                    short_abandon_seconds: r.short_abandon_ms / 1000,
                    agents: Some(floor.by_state(Some(&id))),
                    agents_today: Some(floor.time(Some(&id), true)),
                    agents_rolling_15m: Some(floor.time(Some(&id), false)),
                    queue: id,
                }
            })
            .collect();
        Ok(pb::RealtimeMetrics {
            tenant: tenant.id.as_str().into(),
            as_of: Some(ts(now)),
            queues: out,
            agents: floor.agents(),
        })
    }

    async fn sla(&self, caller: &Caller, q: &pb::GetSlaComplianceRequest) -> Result<pb::SlaCompliance, Error> {
        let hq = history_query(
            caller,
            &pb::QueryHistoryRequest {
                tenant: q.tenant.clone(),
                start_time: q.start_time,
                end_time: q.end_time,
                granularity: pb::Granularity::Interval as i32,
                group_by: vec![pb::Dimension::Queue as i32],
                queue: q.queue.clone(),
                service_level_definition: String::new(),
            },
            &self.registry,
        )?;
        let tenant = hq.tenant.clone();
        let tz = tenant.business_hours.time_zone;
        let legs = self.legs(&tenant, hq.from, hq.to, hq.queue.as_deref()).await?;
        let rules = |queue: &str| rules_of(&tenant, queue);
        let by_queue = GroupBy { queue: true, ..GroupBy::default() };
        let per = |period| rollup::rows(&legs, hq.from, hq.to, period, tz, by_queue, rules);
        let (intervals, days, months) = (per(Period::Interval), per(Period::Day), per(Period::Month));
        let mut queues: Vec<String> = intervals.keys().filter_map(|k| k.queue.clone()).collect();
        queues.dedup();
        let out = queues
            .into_iter()
            .map(|id| {
                let config = tenant.routing.queues.get(&id);
                let (def, _) = definitions(config, None);
                let target =
                    config.and_then(|c| c.service_level_target_percent).unwrap_or(tenant.service_level.target_percent);
                let periods = |rows: &BTreeMap<RowKey, Counts>, g: pb::Granularity| -> Vec<pb::SlaPeriod> {
                    rows.iter()
                        .filter(|(k, _)| k.queue.as_deref() == Some(id.as_str()))
                        .map(|(k, c)| {
                            let (_, judged) = c.service_level_parts(def);
                            let achieved = c.service_level(def);
                            pb::SlaPeriod {
                                period_start: Some(ts(k.period_start)),
                                granularity: g as i32,
                                achieved_percent: achieved,
                                target_percent: target,
                                met: achieved.is_none_or(|a| a >= target),
                                judged,
                            }
                        })
                        .filter(|p| p.judged > 0 || g != pb::Granularity::Interval)
                        .collect()
                };
                let intervals = periods(&intervals, pb::Granularity::Interval);
                let breaches = intervals.iter().filter(|p| !p.met).cloned().collect();
                pb::QueueSla {
                    target_percent: target,
                    threshold_seconds: rules_of(&tenant, &id).threshold_ms / 1000,
                    service_level_definition: def.name().into(),
                    intervals,
                    days: periods(&days, pb::Granularity::Day),
                    months: periods(&months, pb::Granularity::Month),
                    breaches,
                    queue: id,
                }
            })
            .collect();
        Ok(pb::SlaCompliance { tenant: tenant.id.as_str().into(), time_zone: tz.name().into(), queues: out })
    }
}

fn agent_time_pb(t: &AgentTime) -> pb::AgentTime {
    pb::AgentTime {
        signed_in_ms: t.signed_in_ms,
        available_ms: t.available_ms,
        away_ms: t.away_ms,
        handling_ms: t.handling_ms,
        idle_ms: t.idle_ms,
        occupancy_percent: t.occupancy(),
    }
}

/// The agents serving a tenant now: their current span, whether they hold a contact, and
/// their time today and over the last 15 minutes.
struct AgentFloor<'a> {
    tenant: &'a str,
    agents: Vec<FloorAgent<'a>>,
}

struct FloorAgent<'a> {
    current: &'a Span,
    handling: bool,
    today: AgentTime,
    rolling: AgentTime,
}

impl<'a> AgentFloor<'a> {
    fn new(spans: &'a [Span], legs: &'a [Leg], tenant: &'a str, now: Millis, today: Millis, rolling: Millis) -> Self {
        let mut by_agent: BTreeMap<&str, (Vec<&Span>, Vec<&Leg>)> = BTreeMap::new();
        for s in spans {
            by_agent.entry(s.agent.as_str()).or_default().0.push(s);
        }
        for l in legs {
            if let Some(e) = by_agent.get_mut(l.agent.as_str()) {
                e.1.push(l);
            }
        }
        let agents = by_agent
            .into_values()
            .filter_map(|(spans, legs)| {
                let current = *spans.iter().max_by_key(|s| s.since)?;
                // Only agents that serve the tenant now are on its floor.
                if current.until.is_some() || !current.serves(tenant, None) {
                    return None;
                }
                Some(FloorAgent {
                    current,
                    handling: legs.iter().any(|l| l.handled_at.is_none()),
                    today: agent_time(&spans, &legs, today, now + 1),
                    rolling: agent_time(&spans, &legs, rolling, now + 1),
                })
            })
            .collect();
        Self { tenant, agents }
    }

    fn serving(&self, queue: Option<&'a str>) -> impl Iterator<Item = &FloorAgent<'a>> {
        self.agents.iter().filter(move |a| a.current.serves(self.tenant, queue))
    }

    fn by_state(&self, queue: Option<&'a str>) -> pb::AgentsByState {
        let mut out = pb::AgentsByState::default();
        for a in self.serving(queue) {
            match (a.handling, a.current.state) {
                (true, _) => out.busy += 1,
                (false, AVAILABLE) => out.available += 1,
                (false, AWAY) => out.away += 1,
                _ => out.offline += 1,
            }
        }
        out
    }

    fn time(&self, queue: Option<&'a str>, today: bool) -> pb::AgentTime {
        let mut t = AgentTime::default();
        for a in self.serving(queue) {
            t.merge(if today { &a.today } else { &a.rolling });
        }
        agent_time_pb(&t)
    }

    fn agents(&self) -> Vec<pb::RealtimeAgent> {
        self.agents
            .iter()
            .map(|a| pb::RealtimeAgent {
                agent: a.current.agent.clone(),
                state: spb::AgentState::try_from(i32::from(a.current.state))
                    .map(|s| s.as_str_name().to_owned())
                    .unwrap_or_default(),
                away_reason: a.current.away_reason.clone(),
                state_since: Some(ts(a.current.since)),
                handling: a.handling,
                today: Some(agent_time_pb(&a.today)),
                rolling_15m: Some(agent_time_pb(&a.rolling)),
            })
            .collect()
    }
}

/// `[start, end)` of the month `YYYY-MM` in `tz`.
fn month_range(month: &str, tz: Tz) -> Result<(Millis, Millis), Error> {
    let bad = || Error::invalid("month", format!("`{month}` is not a month like 2026-11"));
    let (y, m) = month.split_once('-').ok_or_else(bad)?;
    let (y, m): (i32, u32) = (y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if y.to_string().len() != 4 || !(1..=12).contains(&m) || month.len() != 7 {
        return Err(bad());
    }
    let first = chrono::NaiveDate::from_ymd_opt(y, m, 1).ok_or_else(bad)?;
    let next = if m == 12 {
        chrono::NaiveDate::from_ymd_opt(y + 1, 1, 1)
    } else {
        chrono::NaiveDate::from_ymd_opt(y, m + 1, 1)
    }
    .ok_or_else(bad)?;
    let at = |d: chrono::NaiveDate| {
        let noon = d.and_hms_opt(12, 0, 0).and_then(|n| n.and_local_timezone(tz).earliest());
        noon.map(|n| rollup::period_start(Period::Day, tz, n.timestamp_millis()))
    };
    Ok((at(first).ok_or_else(bad)?, at(next).ok_or_else(bad)?))
}

/// What a tenant used in `[from, to)`.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageFigures {
    pub channels: Vec<pb::ChannelUsage>,
    pub agent_signed_in_hours: f64,
    pub agents: u32,
}

impl Api {
    /// Handled contacts and handle minutes per channel (handling ended in the range) and
    /// the signed-in hours of the agents serving the tenant (up to now at most).
    pub async fn usage_between(&self, tenant: &TenantId, from: Millis, to: Millis) -> Result<UsageFigures, Error> {
        let legs = store::legs_between(&self.pool, tenant, from, to).await?;
        let mut per_channel: BTreeMap<i32, Counts> = BTreeMap::new();
        for leg in legs.iter().filter(|l| l.handled_at.is_some_and(|h| (from..to).contains(&h))) {
            per_channel.entry(leg.channel).or_default().add_handling(leg);
        }
        let (spans, _) = store::agent_activity(&self.pool, tenant, from, to).await?;
        let serving: Vec<&Span> = spans.iter().filter(|s| s.serves(tenant.as_str(), None)).collect();
        let signed_in = agent_time(&serving, &[], from, to.min(now_ms())).signed_in_ms;
        let mut agents: Vec<&str> = serving.iter().map(|s| s.agent.as_str()).collect();
        agents.sort_unstable();
        agents.dedup();
        Ok(UsageFigures {
            channels: per_channel
                .into_iter()
                .map(|(c, counts)| pb::ChannelUsage {
                    channel: channel_name(c),
                    handled: counts.handled,
                    handle_minutes: counts.handle_ms as f64 / 60_000.0,
                })
                .collect(),
            agent_signed_in_hours: signed_in as f64 / 3_600_000.0,
            agents: agents.len() as u32,
        })
    }

    async fn usage(&self, caller: &Caller, q: &pb::GetUsageRequest) -> Result<pb::Usage, Error> {
        let tenant = resolve_tenant(caller, &q.tenant, &self.registry)?;
        let tz = tenant.business_hours.time_zone;
        let (from, to) = month_range(&q.month, tz)?;
        let u = self.usage_between(&tenant.id, from, to).await?;
        Ok(pb::Usage {
            tenant: tenant.id.as_str().into(),
            month: q.month.clone(),
            time_zone: tz.name().into(),
            period_start: Some(ts(from)),
            period_end: Some(ts(to)),
            channels: u.channels,
            agent_signed_in_hours: u.agent_signed_in_hours,
            agents: u.agents,
            complete: now_ms() >= to,
        })
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// RFC 4180 CSV of history rows, one header line first.
pub fn to_csv(rows: &[pb::HistoryRow]) -> String {
    let mut out = String::from(
        "period_start,queue,channel,agent,offered,answered,answered_within_threshold,abandoned,short_abandoned,\
         waiting,handled,service_level_percent,service_level_definition,asa_seconds,aht_seconds,abandon_rate_percent,\
         abandon_rate_definition\r\n",
    );
    let opt = |v: Option<f64>| v.map(|v| format!("{v:.4}")).unwrap_or_default();
    for r in rows {
        let f = r.figures.clone().unwrap_or_default();
        let start = r
            .period_start
            .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos as u32))
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default();
        let cols = [
            start,
            csv_field(&r.queue),
            csv_field(&r.channel),
            csv_field(&r.agent),
            f.offered.to_string(),
            f.answered.to_string(),
            f.answered_within_threshold.to_string(),
            f.abandoned.to_string(),
            f.short_abandoned.to_string(),
            f.waiting.to_string(),
            f.handled.to_string(),
            opt(f.service_level_percent),
            f.service_level_definition.clone(),
            opt(f.asa_seconds),
            opt(f.aht_seconds),
            opt(f.abandon_rate_percent),
            f.abandon_rate_definition.clone(),
        ];
        out.push_str(&cols.join(","));
        out.push_str("\r\n");
    }
    out
}

type MetricsStream = Pin<Box<dyn Stream<Item = Result<pb::RealtimeMetrics, Status>> + Send>>;

#[tonic::async_trait]
impl ReportingService for Api {
    async fn get_realtime_metrics(&self, request: Request<pb::GetRealtimeMetricsRequest>) -> R<pb::RealtimeMetrics> {
        let caller = caller(&request)?;
        Ok(Response::new(self.realtime(caller, request.get_ref()).await?))
    }

    type StreamRealtimeMetricsStream = MetricsStream;

    async fn stream_realtime_metrics(
        &self,
        request: Request<pb::StreamRealtimeMetricsRequest>,
    ) -> R<Self::StreamRealtimeMetricsStream> {
        let caller = caller(&request)?.clone();
        let query = request.into_inner().query.unwrap_or_default();
        // Refused up front (wrong tenant, no such tenant) rather than as a stream error.
        let first = self.realtime(&caller, &query).await?;
        let api = self.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let strip = |m: &pb::RealtimeMetrics| pb::RealtimeMetrics { as_of: None, ..m.clone() };
            let mut last = strip(&first);
            if tx.send(Ok(first)).await.is_err() {
                return;
            }
            let mut tick = tokio::time::interval(PUSH_EVERY);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = api.shutdown.wait() => return,
                    _ = tx.closed() => return,
                    _ = tick.tick() => {}
                }
                match api.realtime(&caller, &query).await {
                    // Pushed only when something changed (the wait ages every second,
                    // so a non-empty queue changes every push).
                    Ok(m) if strip(&m) != last => {
                        last = strip(&m);
                        if tx.send(Ok(m)).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(Error::Unavailable(what)) => tracing::warn!(%what, "wallboard refresh failed; retrying"),
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn query_history(&self, request: Request<pb::QueryHistoryRequest>) -> R<pb::QueryHistoryResponse> {
        let caller = caller(&request)?;
        let q = history_query(caller, request.get_ref(), &self.registry)?;
        let rows = self.history_rows(&q).await?;
        Ok(Response::new(pb::QueryHistoryResponse {
            tenant: q.tenant.id.as_str().into(),
            time_zone: q.tenant.business_hours.time_zone.name().into(),
            rows,
        }))
    }

    async fn export_history_csv(
        &self,
        request: Request<pb::ExportHistoryCsvRequest>,
    ) -> R<pb::ExportHistoryCsvResponse> {
        let caller = caller(&request)?;
        let query = request.get_ref().query.clone().unwrap_or_default();
        let q = history_query(caller, &query, &self.registry)?;
        let rows = self.history_rows(&q).await?;
        Ok(Response::new(pb::ExportHistoryCsvResponse { csv: to_csv(&rows) }))
    }

    async fn get_sla_compliance(&self, request: Request<pb::GetSlaComplianceRequest>) -> R<pb::SlaCompliance> {
        let caller = caller(&request)?;
        Ok(Response::new(self.sla(caller, request.get_ref()).await?))
    }

    async fn get_usage(&self, request: Request<pb::GetUsageRequest>) -> R<pb::Usage> {
        let caller = caller(&request)?;
        Ok(Response::new(self.usage(caller, request.get_ref()).await?))
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Staffing;

fn staffing_figures(e: &erlang::Expected) -> pb::StaffingFigures {
    pb::StaffingFigures {
        agents: e.agents,
        load_erlangs: e.load_erlangs,
        probability_of_waiting: e.p_wait,
        asa_seconds: e.asa_seconds,
        service_level_percent: e.service_level * 100.0,
        occupancy_percent: e.occupancy * 100.0,
    }
}

fn erlang_error(e: erlang::ErlangError) -> Error {
    match e {
        erlang::ErlangError::Invalid { field, reason } => Error::invalid(field, reason),
        erlang::ErlangError::Unreachable => Error::FailedPrecondition(e.to_string()),
    }
}

#[tonic::async_trait]
impl StaffingService for Staffing {
    async fn compute_staffing(&self, request: Request<pb::ComputeStaffingRequest>) -> R<pb::ComputeStaffingResponse> {
        caller(&request)?;
        let q = request.get_ref();
        if q.evaluate_agents.len() > 50 {
            return Err(Error::invalid("evaluate_agents", "at most 50 team sizes").into());
        }
        let answer = erlang::required(&erlang::Question {
            arrivals_per_second: q.arrivals_per_second,
            aht_seconds: q.aht_seconds,
            threshold_seconds: q.threshold_seconds,
            target_service_level: q.target_service_level_percent / 100.0,
            max_occupancy: (q.max_occupancy_percent != 0.0).then_some(q.max_occupancy_percent / 100.0),
        })
        .map_err(erlang_error)?;
        let mut evaluated = Vec::new();
        for (i, n) in q.evaluate_agents.iter().enumerate() {
            let e = erlang::expected(q.arrivals_per_second, q.aht_seconds, q.threshold_seconds, *n).map_err(
                |e| match e {
                    erlang::ErlangError::Invalid { reason, .. } => {
                        Error::invalid(format!("evaluate_agents[{i}]"), reason)
                    }
                    other => erlang_error(other),
                },
            )?;
            evaluated.push(staffing_figures(&e));
        }
        Ok(Response::new(pb::ComputeStaffingResponse {
            required: Some(staffing_figures(&answer.expected)),
            agents_for_service_level: answer.agents_for_service_level,
            occupancy_capped: answer.occupancy_capped,
            evaluated,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_start_at_local_midnight() {
        let madrid: Tz = "Europe/Madrid".parse().expect("tz");
        let (from, to) = month_range("2026-03", madrid).expect("valid");
        let iso = |ms: Millis| chrono::DateTime::from_timestamp_millis(ms).expect("ms").to_rfc3339();
        assert_eq!((iso(from), iso(to)), ("2026-02-28T23:00:00+00:00".into(), "2026-03-31T22:00:00+00:00".into()));
        let (_, to) = month_range("2026-12", madrid).expect("valid");
        assert_eq!(iso(to), "2026-12-31T23:00:00+00:00");
        for bad in ["2026-13", "2026-1", "26-01", "2026/01", "", "2026-01-01"] {
            assert!(matches!(month_range(bad, madrid), Err(Error::InvalidArgument(_))), "{bad}");
        }
    }

    #[test]
    fn csv_quotes_what_needs_quoting() {
        let row = pb::HistoryRow {
            period_start: Some(ts(1_790_000_100_000)),
            queue: "sales, \"north\"".into(),
            channel: "voice".into(),
            agent: String::new(),
            figures: Some(figures(
                &Counts { offered: 2, answered: 1, answered_within: 1, ..Counts::default() },
                ServiceLevelDefinition::Default,
                AbandonRateDefinition::Default,
            )),
            agent_time: None,
        };
        let csv = to_csv(&[row]);
        let lines: Vec<&str> = csv.split("\r\n").collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("period_start,queue,channel,agent,offered"));
        assert_eq!(lines[1], "2026-09-21T14:15:00Z,\"sales, \"\"north\"\"\",voice,,2,1,1,0,0,0,0,100.0000,default,0.0000,,0.0000,default");
    }
}

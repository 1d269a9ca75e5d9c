//! History by period and dimension, its CSV export, and SLA compliance per queue.

use std::collections::BTreeMap;
use std::sync::Arc;

use centralita_platform::auth::Caller;
use centralita_platform::error::{Error, FieldViolation};
use centralita_platform::queue::ServiceLevelDefinition;
use centralita_platform::registry::TenantRegistry;
use centralita_platform::tenant::Tenant;
use centralita_proto::reporting::v1 as pb;

use super::realtime::agent_time_pb;
use super::{definitions, duration, figures, millis, now_ms, resolve_tenant, rules_of, ts, Api, MAX_RANGE_MS};
use crate::core::agents::{agent_time, AgentTime, Span};
use crate::core::rollup::{self, GroupBy, Period, RowKey};
use crate::core::{Counts, Leg, Millis};
use crate::store;

pub(super) struct HistoryQuery {
    pub(super) tenant: Arc<Tenant>,
    from: Millis,
    to: Millis,
    period: Period,
    group: GroupBy,
    queue: Option<String>,
    sl_override: Option<ServiceLevelDefinition>,
}

pub(super) fn history_query(
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
    pub(super) async fn history_rows(&self, q: &HistoryQuery) -> Result<Vec<pb::HistoryRow>, Error> {
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
                    channel: key.channel.map(|c| c.as_str().to_owned()).unwrap_or_default(),
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

    // Writes each queue's deprecated whole-second threshold too, for clients older than the
    // Duration that replaces it.
    #[allow(deprecated)]
    pub(super) async fn sla(
        &self,
        caller: &Caller,
        q: &pb::GetSlaComplianceRequest,
    ) -> Result<pb::SlaCompliance, Error> {
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
                let threshold_ms = rules_of(&tenant, &id).threshold_ms;
                pb::QueueSla {
                    target_percent: target,
                    threshold_seconds: threshold_ms / 1000,
                    service_level_threshold: Some(duration(threshold_ms)),
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

#[cfg(test)]
mod tests {
    use centralita_platform::queue::AbandonRateDefinition;

    use super::*;

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

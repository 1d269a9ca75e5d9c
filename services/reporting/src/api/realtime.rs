//! Real-time figures: today's and the last 15 minutes' per queue, who is waiting, the
//! agents on the floor; and the wallboard stream that pushes them when they change.

use std::collections::BTreeMap;
use std::time::Duration;

use centralita_platform::auth::Caller;
use centralita_platform::error::Error;
use centralita_platform::tenant::Tenant;
use centralita_proto::reporting::v1 as pb;
use centralita_proto::sessions::v1 as spb;
use chrono_tz::Tz;

use super::{definitions, duration, figures, now_ms, resolve_tenant, rules_of, ts, Api, MetricsStream};
use crate::core::agents::{agent_time, AgentTime, Span, AVAILABLE, AWAY};
use crate::core::rollup::{self, GroupBy, Period, RowKey};
use crate::core::{Counts, Leg, Millis, INTERVAL_MS};
use crate::store;

/// Wallboard push period.
const PUSH_EVERY: Duration = Duration::from_secs(1);

impl Api {
    // Writes each queue's deprecated whole-second thresholds too, for clients older than
    // the Durations that replace them.
    #[allow(deprecated)]
    pub(super) async fn realtime(
        &self,
        caller: &Caller,
        q: &pb::GetRealtimeMetricsRequest,
    ) -> Result<pb::RealtimeMetrics, Error> {
        let tenant = resolve_tenant(caller, &q.tenant, &self.registry)?;
        self.realtime_of(&tenant, Some(q.queue.as_str()).filter(|s| !s.is_empty())).await
    }

    /// The real-time figures of `tenant` (of one queue with `only`), for a caller already
    /// authorized for it, or for the service itself ([`crate::floor`]).
    #[allow(deprecated)]
    pub(crate) async fn realtime_of(&self, tenant: &Tenant, only: Option<&str>) -> Result<pb::RealtimeMetrics, Error> {
        let now = now_ms();
        let tz = tenant.business_hours.time_zone;
        let today = rollup::period_start(Period::Day, tz, now);
        let rolling = now - INTERVAL_MS;
        let legs = self.legs(tenant, today.min(rolling), now + 1, only).await?;
        let waiting = store::waiting(&self.pool, &tenant.id).await?;
        let by_queue = GroupBy { queue: true, ..GroupBy::default() };
        let rules = |queue: &str| rules_of(tenant, queue);
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
                let r = rules_of(tenant, &id);
                let mine: Vec<&Leg> = waiting.iter().filter(|l| l.queue == id).collect();
                pb::RealtimeQueue {
                    waiting: mine.len() as u64,
                    longest_wait_ms: mine.iter().map(|l| now - l.enqueued_at).max().unwrap_or(0).max(0),
                    today: Some(figures(&day.get(&id).copied().unwrap_or_default(), sl, ar)),
                    rolling_15m: Some(figures(&last.get(&id).copied().unwrap_or_default(), sl, ar)),
                    threshold_seconds: r.threshold_ms / 1000,
                    short_abandon_seconds: r.short_abandon_ms / 1000,
                    service_level_threshold: Some(duration(r.threshold_ms)),
                    short_abandon_threshold: Some(duration(r.short_abandon_ms)),
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
}

pub(super) fn agent_time_pb(t: &AgentTime) -> pb::AgentTime {
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

impl Api {
    /// The wallboard: `first`, then the figures again every [`PUSH_EVERY`] when they
    /// changed, until the caller hangs up or the service shuts down.
    pub(super) fn wallboard(
        &self,
        caller: Caller,
        query: pb::GetRealtimeMetricsRequest,
        first: pb::RealtimeMetrics,
    ) -> MetricsStream {
        let api = self.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let subscriber = self.metrics.wallboard_opened();
        tokio::spawn(async move {
            // Counted as a subscriber until this task ends, however it ends.
            let _subscriber = subscriber;
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
        Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
    }
}

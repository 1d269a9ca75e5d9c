//! Usage per tenant and month: handled contacts and handle minutes per channel, agents'
//! signed-in hours (also what the usage publisher sends, see `crate::usage`).

use std::collections::BTreeMap;

use centralita_platform::auth::Caller;
use centralita_platform::error::Error;
use centralita_platform::tenant::TenantId;
use centralita_proto::reporting::v1 as pb;
use chrono_tz::Tz;

use super::{now_ms, resolve_tenant, ts, Api};
use crate::core::agents::{agent_time, Span};
use crate::core::rollup::{self, Period};
use crate::core::{Channel, Counts, Millis};
use crate::store;

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
        let mut per_channel: BTreeMap<Channel, Counts> = BTreeMap::new();
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
                    channel: c.as_str().to_owned(),
                    handled: counts.handled,
                    handle_minutes: counts.handle_ms as f64 / 60_000.0,
                })
                .collect(),
            agent_signed_in_hours: signed_in as f64 / 3_600_000.0,
            agents: agents.len() as u32,
        })
    }

    pub(super) async fn usage(&self, caller: &Caller, q: &pb::GetUsageRequest) -> Result<pb::Usage, Error> {
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
}

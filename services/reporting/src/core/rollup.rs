//! Legs into rows: per period (15-minute interval, hour, day, month in the tenant's time
//! zone) and the chosen dimensions, the queue side counted where the leg entered the
//! queue and the handling side where it ended. Pure.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

use super::{interval_start, Channel, Counts, Leg, Millis, QueueRules};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Period {
    Interval,
    Hour,
    Day,
    Month,
}

/// Start of the period holding `at`, in `tz` for hours, days and months.
pub fn period_start(period: Period, tz: Tz, at: Millis) -> Millis {
    let Some(utc) = DateTime::<Utc>::from_timestamp_millis(at) else { return at };
    let local = utc.with_timezone(&tz);
    match period {
        Period::Interval => interval_start(at),
        // Offsets change on whole hours (or quarters), so the local hour starts this far back.
        Period::Hour => {
            at - i64::from(local.minute() * 60 + local.second()) * 1000 - i64::from(local.timestamp_subsec_millis())
        }
        Period::Day => local_midnight(tz, local.date_naive()).unwrap_or(at),
        Period::Month => local.date_naive().with_day(1).and_then(|d| local_midnight(tz, d)).unwrap_or(at),
    }
}

/// The periods covering `[from, to)`, each clipped to it, in order.
pub fn periods(period: Period, tz: Tz, from: Millis, to: Millis) -> Vec<(Millis, Millis)> {
    // A point certainly inside the next period: periods last 15 min, 1 h (30 min at a
    // half-hour DST shift), 23-25 h, 28-31 days.
    let step = match period {
        Period::Interval => super::INTERVAL_MS,
        Period::Hour => 90 * 60_000,
        Period::Day => 36 * 3_600_000,
        Period::Month => 45 * 86_400_000,
    };
    let mut out = Vec::new();
    let mut start = period_start(period, tz, from);
    while start < to {
        let next = period_start(period, tz, start + step).max(start + 1);
        out.push((start.max(from), next.min(to)));
        start = next;
    }
    out
}

/// The first instant of `day` in `tz` (midnight, or the first time after a gap).
fn local_midnight(tz: Tz, day: NaiveDate) -> Option<Millis> {
    (0..=3).find_map(|h| {
        day.and_hms_opt(h, 0, 0)
            .and_then(|naive| tz.from_local_datetime(&naive).earliest())
            .map(|t| t.timestamp_millis())
    })
}

/// Which leg attributes break the rows down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupBy {
    pub queue: bool,
    pub channel: bool,
    pub agent: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RowKey {
    pub period_start: Millis,
    pub queue: Option<String>,
    pub channel: Option<Channel>,
    pub agent: Option<String>,
}

/// Rows of the legs in `[from, to)`: a leg's queue side counts if it entered the queue in
/// the range, its handling side if the handling ended in it.
pub fn rows(
    legs: &[Leg],
    from: Millis,
    to: Millis,
    period: Period,
    tz: Tz,
    group: GroupBy,
    rules: impl Fn(&str) -> QueueRules,
) -> BTreeMap<RowKey, Counts> {
    let mut out: BTreeMap<RowKey, Counts> = BTreeMap::new();
    let key = |leg: &Leg, at: Millis| RowKey {
        period_start: period_start(period, tz, at),
        queue: group.queue.then(|| leg.queue.clone()),
        channel: group.channel.then_some(leg.channel),
        agent: group.agent.then(|| leg.agent.clone()),
    };
    for leg in legs {
        if leg.role.queue_side() && (from..to).contains(&leg.enqueued_at) {
            out.entry(key(leg, leg.enqueued_at)).or_default().add_queue(leg, rules(&leg.queue));
        }
        if let Some(done) = leg.handled_at.filter(|d| leg.role.handling_side() && (from..to).contains(d)) {
            out.entry(key(leg, done)).or_default().add_handling(leg);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Outcome, Role, INTERVAL_MS};

    fn ms(s: &str) -> Millis {
        DateTime::parse_from_rfc3339(s).expect("rfc3339").timestamp_millis()
    }

    #[test]
    fn periods_cover_a_range_without_gaps() {
        let madrid: Tz = "Europe/Madrid".parse().expect("tz");
        // The day of the spring DST change has 23 hours; the range starts mid-day.
        let p = periods(Period::Day, madrid, ms("2026-03-28T12:00:00Z"), ms("2026-03-31T00:00:00Z"));
        assert_eq!(
            p,
            vec![
                (ms("2026-03-28T12:00:00Z"), ms("2026-03-28T23:00:00Z")),
                (ms("2026-03-28T23:00:00Z"), ms("2026-03-29T22:00:00Z")),
                (ms("2026-03-29T22:00:00Z"), ms("2026-03-30T22:00:00Z")),
                (ms("2026-03-30T22:00:00Z"), ms("2026-03-31T00:00:00Z")),
            ]
        );
        let months = periods(Period::Month, madrid, ms("2026-01-15T00:00:00Z"), ms("2026-04-01T00:00:00Z"));
        assert_eq!(months.len(), 4);
        assert!(months.windows(2).all(|w| w[0].1 == w[1].0));
        assert_eq!(periods(Period::Interval, madrid, ms("2026-01-01T00:10:00Z"), ms("2026-01-01T00:40:00Z")).len(), 3);
    }

    #[test]
    fn periods_start_in_the_tenant_time_zone() {
        let madrid: Tz = "Europe/Madrid".parse().expect("tz");
        let kolkata: Tz = "Asia/Kolkata".parse().expect("tz");
        let at = ms("2026-03-29T10:40:12.345Z");
        assert_eq!(period_start(Period::Interval, madrid, at), ms("2026-03-29T10:30:00Z"));
        assert_eq!(period_start(Period::Hour, madrid, at), ms("2026-03-29T10:00:00Z"));
        // Kolkata is UTC+5:30: its hours start at :30 UTC.
        assert_eq!(period_start(Period::Hour, kolkata, at), ms("2026-03-29T10:30:00Z"));
        // The day Madrid went to summer time (CET to CEST at 02:00 local) began at 23:00 UTC.
        assert_eq!(period_start(Period::Day, madrid, at), ms("2026-03-28T23:00:00Z"));
        // ...and its month began in winter time.
        assert_eq!(period_start(Period::Month, madrid, at), ms("2026-02-28T23:00:00Z"));
        // A day in summer time starts at 22:00 UTC.
        assert_eq!(period_start(Period::Day, madrid, ms("2026-07-01T21:59:59Z")), ms("2026-06-30T22:00:00Z"));
        assert_eq!(period_start(Period::Day, madrid, ms("2026-07-01T22:00:00Z")), ms("2026-07-01T22:00:00Z"));
    }

    fn leg(contact: &str, queue: &str, entered: Millis, answered: Option<Millis>, done: Option<Millis>) -> Leg {
        let mut l = Leg::open("acme", contact, 0, queue, Channel::Voice, entered);
        if let Some(a) = answered {
            l.outcome = Outcome::Answered;
            l.left_at = Some(a);
            l.agent = "agent-1".into();
            l.ended_at = done;
            l.handled_at = done;
        }
        l
    }

    #[test]
    fn rows_split_the_two_sides_by_their_own_time() {
        let utc: Tz = "UTC".parse().expect("tz");
        let t = ms("2026-05-04T09:55:00Z");
        let legs = vec![
            leg("c1", "support", t, Some(t + 10_000), Some(t + 400_000)), // handled at 10:01:40
            leg("c2", "billing", t + 60_000, None, None),
            // Entered before the range; handled within it: only the handling counts.
            leg("c0", "support", t - INTERVAL_MS, Some(t - INTERVAL_MS + 5_000), Some(t + 30_000)),
        ];
        let rules = |_: &str| QueueRules::default();
        let by_queue = GroupBy { queue: true, ..GroupBy::default() };
        let rows =
            rows(&legs, ms("2026-05-04T09:45:00Z"), ms("2026-05-04T10:15:00Z"), Period::Interval, utc, by_queue, rules);
        let get =
            |p: &str, q: &str| rows[&RowKey { period_start: ms(p), queue: Some(q.into()), channel: None, agent: None }];
        let support_0945 = get("2026-05-04T09:45:00Z", "support");
        assert_eq!((support_0945.offered, support_0945.answered, support_0945.handled), (1, 1, 1));
        assert_eq!(support_0945.handle_ms, 30_000 + INTERVAL_MS - 5_000);
        let support_1000 = get("2026-05-04T10:00:00Z", "support");
        assert_eq!((support_1000.offered, support_1000.handled, support_1000.handle_ms), (0, 1, 390_000));
        assert_eq!(get("2026-05-04T09:45:00Z", "billing").waiting, 1);
        assert_eq!(rows.len(), 3);
        // One row per hour without dimensions: everything in the 09:00 and 10:00 hours.
        let hourly = super::rows(
            &legs,
            ms("2026-05-04T09:00:00Z"),
            ms("2026-05-04T11:00:00Z"),
            Period::Hour,
            utc,
            GroupBy::default(),
            rules,
        );
        let nine =
            hourly[&RowKey { period_start: ms("2026-05-04T09:00:00Z"), queue: None, channel: None, agent: None }];
        assert_eq!((nine.offered, nine.answered, nine.handled, nine.waiting), (3, 2, 1, 1));
    }

    #[test]
    fn an_agents_rows_count_a_hand_over_as_handling_and_a_consult_not_at_all() {
        let utc: Tz = "UTC".parse().expect("tz");
        // The consult leg enters in the 09:00 hour; everything else happens in the 10:00 one.
        let t = ms("2026-05-04T09:59:00Z");
        let mut taken = leg("c1", "support", t + 60_000, Some(t + 60_000), Some(t + 120_000));
        (taken.seq, taken.agent, taken.role) = (1, "agent-2".into(), Role::HandedOver);
        let mut consult = leg("leg1", "support", t + 20_000, Some(t + 30_000), Some(t + 60_000));
        (consult.agent, consult.role) = ("agent-2".into(), Role::Consult);
        let by_agent = GroupBy { agent: true, ..GroupBy::default() };
        let rows =
            super::rows(&[taken, consult], t, t + 3_600_000, Period::Hour, utc, by_agent, |_| QueueRules::default());
        let only: Vec<_> = rows.iter().map(|(k, c)| (k.agent.as_deref(), c.offered, c.handled, c.handle_ms)).collect();
        assert_eq!(only, [(Some("agent-2"), 0, 1, 60_000)]);
    }
}

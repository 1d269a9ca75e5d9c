//! Agent time: how long agents were signed in, available, away and handling contacts, and
//! their occupancy (handling ÷ (handling + available idle time), `docs/metrics.md#occupancy`).
//!
//! Agents are BPO-wide: a state span comes from the agent events, handling from the legs the
//! agent answered (from answer to the end of after-contact work, over every tenant: a shared
//! agent busy with one tenant's contact is not idle for another). Handling is the union of
//! those legs, so three chats at once count once. Pure.

use super::{Leg, Millis};

/// `centralita.sessions.v1.AgentState` numbers.
pub const OFFLINE: i16 = 1;
pub const AVAILABLE: i16 = 2;
pub const AWAY: i16 = 3;

/// From `since` (until `until`, or still open) the agent was in `state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub agent: String,
    pub since: Millis,
    pub until: Option<Millis>,
    pub state: i16,
    pub away_reason: String,
    /// `tenant/queue` of every queue the agent was assigned to.
    pub queues: Vec<String>,
}

impl Span {
    pub fn tenants(&self) -> impl Iterator<Item = &str> {
        self.queues.iter().filter_map(|q| q.split_once('/').map(|(t, _)| t))
    }

    pub fn serves(&self, tenant: &str, queue: Option<&str>) -> bool {
        self.queues.iter().any(|q| match q.split_once('/') {
            Some((t, qq)) => t == tenant && queue.is_none_or(|want| want == qq),
            None => false,
        })
    }
}

/// What the agent's next span is after an agent event at `at`: `None` when nothing changes
/// (same state, reason and queues) or when the event is older than the open span.
pub fn next_span(
    open: Option<&Span>,
    agent: &str,
    at: Millis,
    state: i16,
    away_reason: &str,
    queues: Vec<String>,
) -> Option<Span> {
    if let Some(o) = open {
        if at < o.since || (o.state == state && o.away_reason == away_reason && o.queues == queues) {
            return None;
        }
    }
    Some(Span { agent: agent.into(), since: at, until: None, state, away_reason: away_reason.into(), queues })
}

/// A late agent event (older than the open span) lands inside the span `containing` its
/// time: that span ends at `at`, and the event's state runs from `at` to where the
/// containing span ended (the next change already known). `None` when the state is the
/// same as the containing span's.
pub fn split_late(
    containing: &Span,
    at: Millis,
    state: i16,
    away_reason: &str,
    queues: Vec<String>,
) -> Option<(Span, Span)> {
    if at <= containing.since
        || (containing.state == state && containing.away_reason == away_reason && containing.queues == queues)
    {
        return None;
    }
    let before = Span { until: Some(at), ..containing.clone() };
    let late = Span {
        agent: containing.agent.clone(),
        since: at,
        until: containing.until,
        state,
        away_reason: away_reason.into(),
        queues,
    };
    Some((before, late))
}

/// Time of one agent within a window, milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AgentTime {
    pub signed_in_ms: i64,
    pub available_ms: i64,
    pub away_ms: i64,
    pub handling_ms: i64,
    /// Available and handling nothing.
    pub idle_ms: i64,
}

impl AgentTime {
    pub fn merge(&mut self, o: &AgentTime) {
        self.signed_in_ms += o.signed_in_ms;
        self.available_ms += o.available_ms;
        self.away_ms += o.away_ms;
        self.handling_ms += o.handling_ms;
        self.idle_ms += o.idle_ms;
    }

    /// Occupancy in percent; absent without handling or idle time.
    pub fn occupancy(&self) -> Option<f64> {
        let den = self.handling_ms + self.idle_ms;
        (den > 0).then(|| 100.0 * self.handling_ms as f64 / den as f64)
    }
}

fn clip(a: Millis, b: Millis, from: Millis, to: Millis) -> Option<(Millis, Millis)> {
    let (s, e) = (a.max(from), b.min(to));
    (s < e).then_some((s, e))
}

/// Sorted, disjoint union of the agent's handling intervals within `[from, to)`; a leg still
/// being handled runs to `to`.
pub fn handling(legs: &[&Leg], from: Millis, to: Millis) -> Vec<(Millis, Millis)> {
    let mut iv: Vec<(Millis, Millis)> = legs
        .iter()
        .filter_map(|l| l.answered_at().and_then(|a| clip(a, l.handled_at.unwrap_or(to), from, to)))
        .collect();
    iv.sort_unstable();
    let mut out: Vec<(Millis, Millis)> = Vec::with_capacity(iv.len());
    for (s, e) in iv {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

fn covered(union: &[(Millis, Millis)], s: Millis, e: Millis) -> i64 {
    union.iter().filter_map(|&(a, b)| clip(a, b, s, e)).map(|(a, b)| b - a).sum()
}

/// The agent's time in `[from, to)` from its spans (any order) and the legs it answered.
pub fn agent_time(spans: &[&Span], legs: &[&Leg], from: Millis, to: Millis) -> AgentTime {
    let union = handling(legs, from, to);
    let mut t = AgentTime { handling_ms: union.iter().map(|(a, b)| b - a).sum(), ..AgentTime::default() };
    for span in spans {
        let Some((s, e)) = clip(span.since, span.until.unwrap_or(to), from, to) else { continue };
        let len = e - s;
        match span.state {
            AVAILABLE => {
                t.signed_in_ms += len;
                t.available_ms += len;
                t.idle_ms += len - covered(&union, s, e);
            }
            AWAY => {
                t.signed_in_ms += len;
                t.away_ms += len;
            }
            _ => {}
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Channel, Outcome};

    fn span(since: Millis, until: Option<Millis>, state: i16) -> Span {
        Span {
            agent: "a1".into(),
            since,
            until,
            state,
            away_reason: String::new(),
            queues: vec!["acme/support".into()],
        }
    }

    fn leg(answered: Millis, handled: Option<Millis>) -> Leg {
        let mut l = Leg::open("acme", &format!("c{answered}"), 0, "support", Channel::Chat, answered - 5);
        l.outcome = Outcome::Answered;
        l.left_at = Some(answered);
        l.agent = "a1".into();
        l.handled_at = handled;
        l
    }

    #[test]
    fn occupancy_counts_concurrent_contacts_once() {
        // Available from 0 to 100 s, away 100–120 s, offline after. Two chats overlap
        // (10–40 s and 30–50 s: 40 s of handling), one more 60–70 s; the last contact's
        // after-contact work runs on while the agent is away (95–110 s).
        let spans =
            [span(0, Some(100_000), AVAILABLE), span(100_000, Some(120_000), AWAY), span(120_000, None, OFFLINE)];
        let legs = [
            leg(10_000, Some(40_000)),
            leg(30_000, Some(50_000)),
            leg(60_000, Some(70_000)),
            leg(95_000, Some(110_000)),
        ];
        let s: Vec<&Span> = spans.iter().collect();
        let l: Vec<&Leg> = legs.iter().collect();
        let t = agent_time(&s, &l, 0, 200_000);
        assert_eq!(t.handling_ms, 40_000 + 10_000 + 15_000);
        assert_eq!((t.signed_in_ms, t.available_ms, t.away_ms), (120_000, 100_000, 20_000));
        // Idle: available 100 s minus handling inside it (40 + 10 + 5 s).
        assert_eq!(t.idle_ms, 45_000);
        assert_eq!(t.occupancy().map(|o| format!("{o:.4}")), Some("59.0909".into()));
        // A window cuts everything at its edges; an open span and an unfinished leg run
        // to the window's end.
        let t = agent_time(&s, &l, 35_000, 65_000);
        assert_eq!((t.handling_ms, t.available_ms, t.idle_ms), (15_000 + 5_000, 30_000, 10_000));
        let open = [span(0, None, AVAILABLE)];
        let busy = [leg(50_000, None)];
        let t = agent_time(&open.iter().collect::<Vec<_>>(), &busy.iter().collect::<Vec<_>>(), 0, 80_000);
        assert_eq!((t.handling_ms, t.idle_ms), (30_000, 50_000));
        assert_eq!(AgentTime::default().occupancy(), None);
    }

    #[test]
    fn spans_change_only_when_something_changes() {
        let q = vec!["acme/support".to_owned()];
        let first = next_span(None, "a1", 1_000, AVAILABLE, "", q.clone()).expect("first span");
        assert_eq!(next_span(Some(&first), "a1", 2_000, AVAILABLE, "", q.clone()), None);
        assert_eq!(next_span(Some(&first), "a1", 500, AWAY, "break", q.clone()), None, "older than the open span");
        let away = next_span(Some(&first), "a1", 3_000, AWAY, "break", q.clone()).expect("a change");
        assert_eq!((away.since, away.state, away.away_reason.as_str()), (3_000, AWAY, "break"));
        // A late event lands inside the span holding its time, up to the next known change.
        let closed = Span { until: Some(3_000), ..first.clone() };
        let (before, late) = split_late(&closed, 2_000, AWAY, "break", q.clone()).expect("split");
        assert_eq!((before.since, before.until, before.state), (1_000, Some(2_000), AVAILABLE));
        assert_eq!(
            (late.since, late.until, late.state, late.away_reason.as_str()),
            (2_000, Some(3_000), AWAY, "break")
        );
        assert_eq!(split_late(&closed, 2_000, AVAILABLE, "", q.clone()), None, "no change");
        assert_eq!(split_late(&closed, 1_000, AWAY, "break", q.clone()), None, "not inside");
        let moved = next_span(Some(&first), "a1", 4_000, AVAILABLE, "", vec!["acme/sales".into()]).expect("new queues");
        assert!(moved.serves("acme", Some("sales")) && !moved.serves("acme", Some("support")));
        assert_eq!(moved.tenants().collect::<Vec<_>>(), ["acme"]);
    }
}

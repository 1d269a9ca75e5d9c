//! Hand-built event sequences with the exact figures each definition gives.

use std::collections::BTreeMap;

use super::*;

const T0: Millis = 1_790_000_100_000 - 1_790_000_100_000 % INTERVAL_MS; // an interval start
const S: i64 = 1000;

struct World {
    legs: BTreeMap<(String, i32), Leg>,
}

impl World {
    fn new() -> Self {
        Self { legs: BTreeMap::new() }
    }

    fn last(&self, contact: &str) -> Option<Leg> {
        self.legs
            .range((contact.to_owned(), i32::MIN)..=(contact.to_owned(), i32::MAX))
            .next_back()
            .map(|(_, l)| l.clone())
    }

    fn event(&mut self, contact: &str, kind: Kind, queue: &str, at: Millis) {
        self.event_with(contact, kind, queue, "agent-1", at);
    }

    fn event_with(&mut self, contact: &str, kind: Kind, queue: &str, agent: &str, at: Millis) {
        let fact = ContactFact {
            tenant: "acme".into(),
            contact: contact.into(),
            kind,
            queue: queue.into(),
            channel: Channel::Voice,
            agent: agent.into(),
            disposition: if kind == Kind::WrappedUp { "resolved".into() } else { String::new() },
            enqueued_at: (kind == Kind::Queued).then_some(at),
            consult: contact.starts_with("leg"),
            at,
        };
        for leg in apply(self.last(contact), &fact) {
            self.legs.insert((leg.contact.clone(), leg.seq), leg);
        }
    }

    /// A contact queued at `q`, answered at `a`, talk until `e`, wrapped up at `w`.
    fn handled(&mut self, id: &str, q: Millis, a: Millis, e: Millis, w: Millis) {
        self.event(id, Kind::Queued, "support", q);
        self.event(id, Kind::Offered, "support", a - S / 2);
        self.event(id, Kind::Accepted, "support", a);
        self.event(id, Kind::Ended, "support", e);
        self.event(id, Kind::WrappedUp, "support", w);
    }

    fn abandoned(&mut self, id: &str, q: Millis, gone: Millis) {
        self.event(id, Kind::Queued, "support", q);
        self.event(id, Kind::Abandoned, "support", gone);
    }

    /// Counts per interval: queue side by entry, handling side by end of handling.
    fn intervals(&self, queue: &str) -> BTreeMap<Millis, Counts> {
        let rules = QueueRules { threshold_ms: 20 * S, short_abandon_ms: 5 * S };
        let mut out: BTreeMap<Millis, Counts> = BTreeMap::new();
        for leg in self.legs.values().filter(|l| l.queue == queue) {
            out.entry(interval_start(leg.enqueued_at)).or_default().add_queue(leg, rules);
            if let Some(done) = leg.handled_at {
                out.entry(interval_start(done)).or_default().add_handling(leg);
            }
        }
        out
    }

    fn total(&self, queue: &str) -> Counts {
        let mut c = Counts::default();
        for i in self.intervals(queue).values() {
            c.merge(i);
        }
        c
    }
}

/// Ten contacts in one interval: 6 answered (4 within 20 s), 3 abandoned (1 short, 2 of
/// them within 20 s), 1 still waiting.
fn floor() -> World {
    let mut w = World::new();
    let t = T0 + 60 * S;
    w.handled("c1", t, t + 5 * S, t + 65 * S, t + 75 * S); // wait 5
    w.handled("c2", t, t + 10 * S, t + 70 * S, t + 80 * S); // wait 10
    w.handled("c3", t, t + 20 * S, t + 80 * S, t + 90 * S); // wait 20: within (<= T)
    w.handled("c4", t, t + 15 * S, t + 75 * S, t + 85 * S); // wait 15
    w.handled("c5", t, t + 30 * S, t + 90 * S, t + 100 * S); // wait 30
    w.handled("c6", t, t + 40 * S, t + 100 * S, t + 110 * S); // wait 40
    w.abandoned("c7", t, t + 3 * S); // short abandon, within T
    w.abandoned("c8", t, t + 12 * S); // within T
    w.abandoned("c9", t, t + 50 * S);
    w.event("c10", Kind::Queued, "support", t + 100 * S);
    w
}

#[test]
fn counts_of_a_simple_interval() {
    let c = floor().total("support");
    assert_eq!((c.offered, c.answered, c.answered_within), (10, 6, 4));
    assert_eq!((c.abandoned, c.short_abandoned, c.abandoned_within, c.waiting), (3, 1, 2, 1));
    // Left within 20 s: c1 c2 c3 c4 (answered) + c7 c8 (abandoned).
    assert_eq!(c.left_within, 6);
    assert_eq!(c.answered_wait_ms, (5 + 10 + 20 + 15 + 30 + 40) * S);
    assert_eq!((c.handled, c.handle_ms, c.talk_ms, c.acw_ms, c.hold_ms), (6, 6 * 70 * S, 6 * 60 * S, 6 * 10 * S, 0));
}

#[test]
fn service_level_under_each_definition() {
    let c = floor().total("support");
    // 4 / (6 + 3 - 1)
    assert_eq!(c.service_level(ServiceLevelDefinition::Default), Some(50.0));
    // 4 / 6
    assert_eq!(c.service_level(ServiceLevelDefinition::Answered).map(|v| format!("{v:.4}")), Some("66.6667".into()));
    // (4 + 2) / (6 + 3)
    assert_eq!(
        c.service_level(ServiceLevelDefinition::AnsweredAndAbandoned).map(|v| format!("{v:.4}")),
        Some("66.6667".into())
    );
    // 6 / 10 (the contact still waiting counts as offered)
    assert_eq!(c.service_level(ServiceLevelDefinition::LeftQueue), Some(60.0));
}

#[test]
fn abandon_rate_asa_and_aht() {
    let c = floor().total("support");
    // 3 / 10 and (3 - 1) / (10 - 1)
    assert_eq!(c.abandon_rate(AbandonRateDefinition::Default), Some(30.0));
    assert_eq!(
        c.abandon_rate(AbandonRateDefinition::ExcludingShort).map(|v| format!("{v:.4}")),
        Some("22.2222".into())
    );
    // (5 + 10 + 20 + 15 + 30 + 40) / 6 = 20 s
    assert_eq!(c.asa_seconds(), Some(20.0));
    assert_eq!(c.aht_seconds(), Some(70.0));
}

#[test]
fn empty_denominators_give_no_figure() {
    let c = Counts::default();
    for d in ServiceLevelDefinition::ALL {
        assert_eq!(c.service_level(d), None);
    }
    assert_eq!((c.asa_seconds(), c.aht_seconds(), c.abandon_rate(AbandonRateDefinition::Default)), (None, None, None));
    // Only short abandons: the default service level has nothing to judge.
    let mut w = World::new();
    w.abandoned("c1", T0, T0 + 2 * S);
    let c = w.total("support");
    assert_eq!(c.service_level(ServiceLevelDefinition::Default), None);
    assert_eq!(c.service_level(ServiceLevelDefinition::AnsweredAndAbandoned), Some(100.0));
    assert_eq!(c.abandon_rate(AbandonRateDefinition::ExcludingShort), None);
}

#[test]
fn a_contact_spanning_two_intervals_counts_where_it_was_offered_and_handled() {
    let mut w = World::new();
    // Queued 10 s before the boundary, answered 25 s later (after the boundary), handled
    // for 100 s; everything after the boundary.
    let q = T0 + INTERVAL_MS - 10 * S;
    w.handled("c1", q, q + 25 * S, q + 95 * S, q + 125 * S);
    let by = w.intervals("support");
    let first = by[&T0];
    let second = by[&(T0 + INTERVAL_MS)];
    assert_eq!((first.offered, first.answered, first.answered_within, first.handled), (1, 1, 0, 0));
    assert_eq!(first.answered_wait_ms, 25 * S);
    assert_eq!((second.offered, second.handled, second.handle_ms), (0, 1, 100 * S));
    assert_eq!((second.talk_ms, second.acw_ms), (70 * S, 30 * S));
}

#[test]
fn hold_time_is_part_of_handling_but_not_talk() {
    let mut w = World::new();
    let t = T0 + S;
    w.event("c1", Kind::Queued, "support", t);
    w.event("c1", Kind::Accepted, "support", t + 4 * S);
    w.event("c1", Kind::Held, "support", t + 10 * S);
    w.event("c1", Kind::Resumed, "support", t + 25 * S);
    w.event("c1", Kind::Held, "support", t + 30 * S);
    // Ended while still on hold: the hold runs to the end of talk.
    w.event("c1", Kind::Ended, "support", t + 40 * S);
    w.event("c1", Kind::WrappedUp, "support", t + 50 * S);
    let c = w.total("support");
    assert_eq!((c.handle_ms, c.hold_ms, c.talk_ms, c.acw_ms), (46 * S, 25 * S, 11 * S, 10 * S));
    assert_eq!(c.asa_seconds(), Some(4.0));
}

#[test]
fn a_transfer_closes_the_first_leg_and_opens_one_in_the_target_queue() {
    let mut w = World::new();
    let t = T0 + S;
    w.event("c1", Kind::Queued, "support", t);
    w.event_with("c1", Kind::Accepted, "support", "agent-1", t + 8 * S);
    w.event_with("c1", Kind::Transferred, "billing", "agent-1", t + 68 * S);
    w.event_with("c1", Kind::Accepted, "billing", "agent-2", t + 98 * S);
    w.event_with("c1", Kind::Ended, "billing", "agent-2", t + 158 * S);
    w.event_with("c1", Kind::WrappedUp, "billing", "agent-2", t + 168 * S);
    let support = w.total("support");
    assert_eq!((support.offered, support.answered, support.handled, support.transferred), (1, 1, 1, 1));
    // The first agent's handling ends at the transfer: 60 s of talk, no after-contact work.
    assert_eq!((support.handle_ms, support.talk_ms, support.acw_ms), (60 * S, 60 * S, 0));
    let billing = w.total("billing");
    assert_eq!((billing.offered, billing.answered, billing.answered_within), (1, 1, 0));
    // The billing leg waited from the transfer: 30 s.
    assert_eq!(billing.asa_seconds(), Some(30.0));
    assert_eq!((billing.handled, billing.handle_ms, billing.transferred), (1, 70 * S, 0));
    let legs: Vec<_> = w.legs.values().map(|l| (l.seq, l.queue.as_str(), l.agent.as_str())).collect();
    assert_eq!(legs, [(0, "support", "agent-1"), (1, "billing", "agent-2")]);
}

#[test]
fn a_warm_transfer_hands_the_handling_to_the_consulted_agent_without_a_queue_side() {
    // agent-1 answers c1, consults agent-2 on leg1 and hands the call over.
    let mut w = World::new();
    let t = T0 + S;
    w.event("c1", Kind::Queued, "support", t);
    w.event_with("c1", Kind::Accepted, "support", "agent-1", t + 5 * S);
    // The consult: the customer waits on hold from 35 s until agent-2 takes over at 65 s.
    w.event_with("c1", Kind::Held, "support", "agent-1", t + 35 * S);
    w.event_with("leg1", Kind::Queued, "support", "", t + 35 * S);
    w.event_with("leg1", Kind::Accepted, "support", "agent-2", t + 40 * S);
    w.event_with("c1", Kind::HandedOver, "support", "agent-2", t + 65 * S);
    w.event_with("leg1", Kind::ConsultClosed, "support", "agent-1", t + 65 * S);
    w.event_with("c1", Kind::Ended, "support", "agent-2", t + 125 * S);
    w.event_with("c1", Kind::WrappedUp, "support", "agent-2", t + 140 * S);
    let c = w.total("support");
    // One contact offered and answered (5 s), whatever the number of agents.
    assert_eq!((c.offered, c.answered, c.answered_within, c.waiting), (1, 1, 1, 0));
    assert_eq!(c.asa_seconds(), Some(5.0));
    // Two handlings: agent-1's ends at the hand-over (30 s talk, 30 s hold, no wrap-up),
    // agent-2's from the hand-over to its wrap-up (60 s talk, 15 s wrap-up).
    assert_eq!((c.handled, c.transferred), (2, 1));
    assert_eq!((c.handle_ms, c.talk_ms, c.hold_ms, c.acw_ms), (135 * S, 90 * S, 30 * S, 15 * S));
    let legs: Vec<_> =
        w.legs.values().map(|l| (l.contact.as_str(), l.seq, l.agent.as_str(), l.role, l.handled_at)).collect();
    assert_eq!(
        legs,
        [
            ("c1", 0, "agent-1", Role::Customer, Some(t + 65 * S)),
            ("c1", 1, "agent-2", Role::HandedOver, Some(t + 140 * S)),
            // The consult leg is agent-2's busy time from 40 s to the hand-over, nothing else.
            ("leg1", 0, "agent-2", Role::Consult, Some(t + 65 * S)),
        ]
    );
}

#[test]
fn a_consult_leg_withdrawn_before_answer_is_not_left_waiting() {
    let mut w = World::new();
    let t = T0 + S;
    w.event_with("leg1", Kind::Queued, "support", "", t);
    w.event_with("leg1", Kind::ConsultClosed, "support", "agent-1", t + 9 * S);
    let leg = w.last("leg1").unwrap();
    assert_eq!((leg.role, leg.outcome, leg.left_at), (Role::Consult, Outcome::Abandoned, Some(t + 9 * S)));
    assert_eq!(w.total("support"), Counts::default());
}

#[test]
fn a_consult_leg_moved_on_stays_a_consult() {
    let mut w = World::new();
    let t = T0 + S;
    w.event_with("leg1", Kind::Queued, "support", "", t);
    w.event_with("leg1", Kind::Overflowed, "billing", "", t + 30 * S);
    w.event_with("leg1", Kind::Accepted, "billing", "agent-2", t + 40 * S);
    w.event_with("leg1", Kind::Transferred, "sales", "agent-2", t + 50 * S);
    let roles: Vec<_> = w.legs.values().map(|l| (l.queue.as_str(), l.role)).collect();
    assert_eq!(roles, [("support", Role::Consult), ("billing", Role::Consult), ("sales", Role::Consult)]);
    for q in ["support", "billing", "sales"] {
        assert_eq!(w.total(q), Counts::default(), "{q}");
    }
}

#[test]
fn a_hand_over_seen_without_the_answer_does_not_leave_the_contact_waiting() {
    let mut w = World::new();
    let t = T0 + S;
    w.event("c1", Kind::Queued, "support", t);
    w.event_with("c1", Kind::HandedOver, "support", "agent-2", t + 65 * S);
    let c = w.total("support");
    assert_eq!((c.offered, c.waiting, c.transferred_waiting, c.answered), (1, 0, 1, 0));
}

#[test]
fn overflow_and_time_out_leave_the_queue_without_answer() {
    let mut w = World::new();
    let t = T0 + S;
    w.event("c1", Kind::Queued, "support", t);
    w.event("c1", Kind::Offered, "support", t + S);
    w.event("c1", Kind::NotAnswered, "support", t + 16 * S);
    w.event("c1", Kind::Overflowed, "billing", t + 60 * S);
    w.event("c1", Kind::TimedOut, "billing", t + 360 * S);
    let support = w.total("support");
    assert_eq!((support.offered, support.overflowed, support.answered, support.abandoned), (1, 1, 0, 0));
    assert_eq!(support.service_level(ServiceLevelDefinition::Default), None);
    assert_eq!(support.service_level(ServiceLevelDefinition::LeftQueue), Some(0.0));
    let billing = w.total("billing");
    assert_eq!((billing.offered, billing.timed_out), (1, 1));
    let first = w.legs[&("c1".to_owned(), 0)].clone();
    assert_eq!((first.offers, first.declines), (1, 1));
}

#[test]
fn a_stream_picked_up_mid_way_still_counts_what_it_can() {
    // The contact's QUEUED event is gone (retention): the leg opens at its queue time.
    let mut w = World::new();
    let fact = ContactFact {
        tenant: "acme".into(),
        contact: "c1".into(),
        kind: Kind::Accepted,
        queue: "support".into(),
        channel: Channel::Voice,
        agent: "agent-1".into(),
        disposition: String::new(),
        enqueued_at: Some(T0),
        consult: false,
        at: T0 + 7 * S,
    };
    for leg in apply(None, &fact) {
        w.legs.insert((leg.contact.clone(), leg.seq), leg);
    }
    assert_eq!(w.total("support").asa_seconds(), Some(7.0));
}

#[test]
fn counts_merge_like_one_pass() {
    let w = floor();
    let mut merged = Counts::default();
    for c in w.intervals("support").values() {
        merged.merge(c);
    }
    let rules = QueueRules { threshold_ms: 20 * S, short_abandon_ms: 5 * S };
    let mut direct = Counts::default();
    for leg in w.legs.values() {
        direct.add_queue(leg, rules);
        if leg.handled_at.is_some() {
            direct.add_handling(leg);
        }
    }
    assert_eq!(merged, direct);
}

#[test]
fn channel_names_are_the_stored_ones_and_read_back() {
    // The names are what `legs.channel` holds (migration 6 wrote them): never renamed.
    let names: Vec<&str> = Channel::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(names, ["unspecified", "voice", "chat", "sms", "email", "social", "task"]);
    for c in Channel::ALL {
        assert_eq!(Channel::parse(c.as_str()), Some(c));
    }
    assert_eq!(Channel::parse("fax"), None);
    assert_eq!(Channel::parse("Voice"), None);
}

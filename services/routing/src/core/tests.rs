//! Unit tests of the matching core.

use super::*;

// ---------------------------------------------------------------------------------------
// Builders
// ---------------------------------------------------------------------------------------

fn q(tenant: &str, queue: &str) -> QueueRef {
    QueueRef::new(tenant, queue)
}

fn aid(s: &str) -> AgentId {
    AgentId::from(s)
}

fn cid(s: &str) -> ContactId {
    ContactId::from(s)
}

fn caps(limits: &[(Channel, u32)], exclusive: &[Channel], max_total: u32) -> CapacityProfile {
    CapacityProfile {
        limits: limits.iter().copied().collect(),
        exclusive: exclusive.iter().copied().collect(),
        max_total,
    }
}

/// An agent of the given queues taking one contact of each channel.
fn agent(id: &str, queues: &[QueueRef]) -> AgentProfile {
    AgentProfile {
        id: aid(id),
        queues: queues.iter().cloned().collect(),
        skills: BTreeMap::new(),
        languages: BTreeSet::new(),
        capacity: caps(&Channel::ALL.map(|c| (c, 1)), &[], 1),
        phoneless_tenants: BTreeSet::new(),
    }
}

fn skill(name: &str, min: u8) -> Requirement {
    Requirement::Skill { name: name.into(), min_proficiency: min }
}

fn lang(l: &str) -> Requirement {
    Requirement::Language(l.into())
}

fn step(after_ms: i64, requirements: Vec<Requirement>) -> Step {
    Step { after_ms, requirements }
}

/// A chat contact of priority 0, no aging, no requirements, 30 s to accept.
fn contact(id: &str, queue: &QueueRef, enqueued_at: Millis) -> QueuedContact {
    QueuedContact {
        id: cid(id),
        queue: queue.clone(),
        channel: Channel::Chat,
        priority: 0,
        aging_per_minute: 0,
        enqueued_at,
        steps: Vec::new(),
        preferred: None,
        offer_timeout_ms: 30_000,
        max_wait: None,
        excluded: Vec::new(),
    }
}

fn offer(c: &QueuedContact, agent: &str, at: Millis) -> Decision {
    Decision::Offer {
        contact: c.id.clone(),
        agent: aid(agent),
        queue: c.queue.clone(),
        channel: c.channel,
        expires_at: at + c.offer_timeout_ms,
    }
}

fn ok(router: &mut Router, at: Millis, input: Input) -> Vec<Decision> {
    match router.apply(at, input.clone()) {
        Ok(d) => d,
        Err(e) => panic!("{input:?} at {at} rejected: {e}"),
    }
}

fn upsert(router: &mut Router, at: Millis, profile: AgentProfile) {
    assert_eq!(ok(router, at, Input::AgentUpserted(profile)), vec![]);
}

fn ready(router: &mut Router, at: Millis, agent: &str) -> Vec<Decision> {
    ok(router, at, Input::AgentReady { agent: aid(agent) })
}

fn queue(router: &mut Router, at: Millis, c: &QueuedContact) -> Vec<Decision> {
    ok(router, at, Input::ContactQueued(c.clone()))
}

fn accept(router: &mut Router, at: Millis, contact: &str, agent: &str) {
    assert_eq!(ok(router, at, Input::OfferAccepted { contact: cid(contact), agent: aid(agent) }), vec![]);
}

fn release(router: &mut Router, at: Millis, contact: &str, agent: &str) -> Vec<Decision> {
    ok(router, at, Input::ContactReleased { contact: cid(contact), agent: aid(agent) })
}

// ---------------------------------------------------------------------------------------
// Examples
// ---------------------------------------------------------------------------------------

#[test]
fn longest_available_agent_is_offered_first() {
    let sales = q("acme", "sales");
    let mut r = Router::new();
    for a in ["a", "b", "c"] {
        upsert(&mut r, 0, agent(a, std::slice::from_ref(&sales)));
    }
    // Ready order b (t=100), c (t=200), a (t=300): b has waited longest.
    assert_eq!(ready(&mut r, 100, "b"), vec![]);
    assert_eq!(ready(&mut r, 200, "c"), vec![]);
    assert_eq!(ready(&mut r, 300, "a"), vec![]);
    let c1 = contact("c1", &sales, 1_000);
    assert_eq!(queue(&mut r, 1_000, &c1), vec![offer(&c1, "b", 1_000)]);
    // b is full; next is c.
    let c2 = contact("c2", &sales, 1_100);
    assert_eq!(queue(&mut r, 1_100, &c2), vec![offer(&c2, "c", 1_100)]);
    // b frees capacity, but was routed at 1_000, after a became ready at 300.
    accept(&mut r, 1_200, "c1", "b");
    assert_eq!(release(&mut r, 1_300, "c1", "b"), vec![]);
    let c3 = contact("c3", &sales, 1_400);
    assert_eq!(queue(&mut r, 1_400, &c3), vec![offer(&c3, "a", 1_400)]);
    let c4 = contact("c4", &sales, 1_500);
    assert_eq!(queue(&mut r, 1_500, &c4), vec![offer(&c4, "b", 1_500)]);
}

#[test]
fn a_moved_booking_keeps_its_capacity_until_the_new_contact_is_released() {
    let sales = q("acme", "sales");
    let mut r = Router::new();
    for (t, a) in [(10, "a"), (20, "b")] {
        upsert(&mut r, 0, agent(a, std::slice::from_ref(&sales)));
        assert_eq!(ready(&mut r, t, a), vec![]);
    }
    // The customer's contact c1 is with a; a's consult leg is with b.
    let c1 = contact("c1", &sales, 100);
    assert_eq!(queue(&mut r, 100, &c1), vec![offer(&c1, "a", 100)]);
    accept(&mut r, 110, "c1", "a");
    let leg = contact("leg1", &sales, 200);
    assert_eq!(queue(&mut r, 200, &leg), vec![offer(&leg, "b", 200)]);
    accept(&mut r, 210, "leg1", "b");
    // The transfer completes: a lets go of c1 and b's booking moves from the leg to c1.
    assert_eq!(release(&mut r, 300, "c1", "a"), vec![]);
    let moved = Input::BookingMoved { from: cid("leg1"), to: cid("c1"), agent: aid("b") };
    assert_eq!(ok(&mut r, 300, moved), vec![]);
    assert_eq!(r.holdings(&aid("b")), vec![(cid("c1"), Channel::Chat, Hold::Booked)]);
    // b is still full: the next contact goes to a.
    let c2 = contact("c2", &sales, 400);
    assert_eq!(queue(&mut r, 400, &c2), vec![offer(&c2, "a", 400)]);
    // Moving a booking that is gone, or onto a contact routing holds, changes nothing.
    let before = r.clone();
    let gone = r.apply(450, Input::BookingMoved { from: cid("leg1"), to: cid("c9"), agent: aid("b") });
    assert!(matches!(gone, Err(Rejected::NotBooked(..))), "{gone:?}");
    let taken = r.apply(450, Input::BookingMoved { from: cid("c1"), to: cid("c2"), agent: aid("b") });
    assert!(matches!(taken, Err(Rejected::DuplicateContact(_))), "{taken:?}");
    assert!(r == before);
    // b's capacity comes back when c1 is released by b.
    let c3 = contact("c3", &sales, 500);
    assert_eq!(queue(&mut r, 500, &c3), vec![]);
    assert_eq!(release(&mut r, 600, "c1", "b"), vec![offer(&c3, "b", 600)]);
}

#[test]
fn skills_and_language_filter_agents() {
    let support = q("acme", "support");
    let mut r = Router::new();
    for (id, billing, language) in [("a", 2, "en"), ("b", 4, "es"), ("c", 5, "en")] {
        let mut p = agent(id, std::slice::from_ref(&support));
        p.skills.insert("billing".into(), billing);
        p.languages.insert(language.into());
        upsert(&mut r, 0, p);
    }
    for (t, a) in [(10, "a"), (20, "b"), (30, "c")] {
        assert_eq!(ready(&mut r, t, a), vec![]);
    }
    // billing >= 4 and English: only c, although a and b have waited longer.
    let mut c1 = contact("c1", &support, 100);
    c1.steps = vec![step(0, vec![skill("billing", 4), lang("en")])];
    assert_eq!(queue(&mut r, 100, &c1), vec![offer(&c1, "c", 100)]);
    // billing >= 3: b (a is not proficient enough).
    let mut c2 = contact("c2", &support, 200);
    c2.steps = vec![step(0, vec![skill("billing", 3)])];
    assert_eq!(queue(&mut r, 200, &c2), vec![offer(&c2, "b", 200)]);
    // A skill nobody has: nobody.
    let mut c3 = contact("c3", &support, 300);
    c3.steps = vec![step(0, vec![skill("fraud", 1)])];
    assert_eq!(queue(&mut r, 300, &c3), vec![]);
    assert_eq!(r.waiting(), 1);
}

#[test]
fn relaxation_step_lets_a_weaker_agent_take_the_contact_on_tick() {
    let support = q("acme", "support");
    let mut r = Router::new();
    let mut weak = agent("weak", std::slice::from_ref(&support));
    weak.skills.insert("tech".into(), 2);
    upsert(&mut r, 0, weak);
    ready(&mut r, 0, "weak");
    let mut c1 = contact("c1", &support, 1_000);
    c1.steps = vec![step(0, vec![skill("tech", 4)]), step(10_000, vec![skill("tech", 2)])];
    assert_eq!(queue(&mut r, 1_000, &c1), vec![]);
    assert_eq!(ok(&mut r, 5_000, Input::Tick), vec![]);
    assert_eq!(ok(&mut r, 10_999, Input::Tick), vec![]);
    assert_eq!(ok(&mut r, 11_000, Input::Tick), vec![offer(&c1, "weak", 11_000)]);
}

/// One agent taking one contact at a time, busy with `busy` (offered at `at`).
fn busy_single_agent(queue_ref: &QueueRef, at: Millis) -> Router {
    let mut r = Router::new();
    upsert(&mut r, 0, agent("a", std::slice::from_ref(queue_ref)));
    ready(&mut r, 0, "a");
    let busy = contact("busy", queue_ref, at);
    assert_eq!(queue(&mut r, at, &busy), vec![offer(&busy, "a", at)]);
    accept(&mut r, at, "busy", "a");
    r
}

#[test]
fn higher_priority_is_offered_before_earlier_contacts() {
    let sales = q("acme", "sales");
    let mut r = busy_single_agent(&sales, 0);
    let c1 = contact("c1", &sales, 1_000);
    let c2 = QueuedContact { priority: 5, ..contact("c2", &sales, 2_000) };
    let c3 = contact("c3", &sales, 3_000);
    for c in [&c1, &c2, &c3] {
        assert_eq!(queue(&mut r, c.enqueued_at, c), vec![]);
    }
    assert_eq!(release(&mut r, 4_000, "busy", "a"), vec![offer(&c2, "a", 4_000)]);
    accept(&mut r, 4_000, "c2", "a");
    // Equal priority: first come, first served.
    assert_eq!(release(&mut r, 5_000, "c2", "a"), vec![offer(&c1, "a", 5_000)]);
    accept(&mut r, 5_000, "c1", "a");
    assert_eq!(release(&mut r, 6_000, "c1", "a"), vec![offer(&c3, "a", 6_000)]);
}

#[test]
fn aging_lets_an_old_low_priority_contact_beat_a_newer_high_priority_one() {
    let sales = q("acme", "sales");
    // Aging 2 points/minute. After 2 minutes "old" (priority 0) has 4 points; "new"
    // (priority 3, just queued) has 3: old wins. Against priority 5, new wins.
    for (new_priority, winner) in [(3, "old"), (5, "new")] {
        let mut r = busy_single_agent(&sales, 0);
        let old = QueuedContact { aging_per_minute: 2, ..contact("old", &sales, 0) };
        let new = QueuedContact { aging_per_minute: 2, priority: new_priority, ..contact("new", &sales, 120_000) };
        assert_eq!(queue(&mut r, 0, &old), vec![]);
        assert_eq!(queue(&mut r, 120_000, &new), vec![]);
        let expected = if winner == "old" { &old } else { &new };
        assert_eq!(release(&mut r, 120_000, "busy", "a"), vec![offer(expected, "a", 120_000)], "{new_priority}");
    }
}

#[test]
fn preferred_agent_is_waited_for_until_the_window_ends() {
    let sales = q("acme", "sales");
    let mut r = Router::new();
    upsert(&mut r, 0, agent("a", std::slice::from_ref(&sales)));
    upsert(&mut r, 0, agent("b", std::slice::from_ref(&sales)));
    ready(&mut r, 0, "b");
    ready(&mut r, 10, "a");
    let c0 = contact("c0", &sales, 100);
    assert_eq!(queue(&mut r, 100, &c0), vec![offer(&c0, "b", 100)]);
    accept(&mut r, 100, "c0", "b");
    // c1 wants b until 20 s although a is idle.
    let c1 = QueuedContact { preferred: Some((aid("b"), 20_000)), ..contact("c1", &sales, 1_000) };
    assert_eq!(queue(&mut r, 1_000, &c1), vec![]);
    assert_eq!(ok(&mut r, 19_999, Input::Tick), vec![]);
    assert_eq!(ok(&mut r, 20_000, Input::Tick), vec![offer(&c1, "a", 20_000)]);
    // c2 wants b until 60 s; b frees up at 30 s and gets it.
    let c2 = QueuedContact { preferred: Some((aid("b"), 60_000)), ..contact("c2", &sales, 21_000) };
    assert_eq!(queue(&mut r, 21_000, &c2), vec![]);
    assert_eq!(release(&mut r, 30_000, "c0", "b"), vec![offer(&c2, "b", 30_000)]);
}

#[test]
fn a_transferred_contact_skips_the_agent_who_transferred_it() {
    let sales = q("acme", "sales");
    let mut r = Router::new();
    upsert(&mut r, 0, agent("a", std::slice::from_ref(&sales)));
    upsert(&mut r, 0, agent("b", std::slice::from_ref(&sales)));
    ready(&mut r, 0, "a");
    // Only `a` is ready and `a` transferred it: it waits.
    let c = QueuedContact { excluded: vec![aid("a")], ..contact("c", &sales, 100) };
    assert_eq!(queue(&mut r, 100, &c), vec![]);
    // `b` becomes ready later than `a` (so `a` is the longest idle) and still gets it.
    assert_eq!(ready(&mut r, 200, "b"), vec![offer(&c, "b", 200)]);
}

#[test]
fn voice_is_exclusive_while_chat_goes_up_to_three() {
    let sales = q("acme", "sales");
    let mut r = Router::new();
    let mut a = agent("a", std::slice::from_ref(&sales));
    a.capacity = caps(&[(Channel::Voice, 1), (Channel::Chat, 3)], &[Channel::Voice], 0);
    upsert(&mut r, 0, a);
    ready(&mut r, 0, "a");
    let chats: Vec<QueuedContact> = (1..=5).map(|i| contact(&format!("ch{i}"), &sales, i)).collect();
    let voice = QueuedContact { channel: Channel::Voice, ..contact("v1", &sales, 4) };
    for c in &chats[..3] {
        assert_eq!(queue(&mut r, c.enqueued_at, c), vec![offer(c, "a", c.enqueued_at)]);
        accept(&mut r, c.enqueued_at, &c.id.0, "a");
    }
    assert_eq!(queue(&mut r, 4, &chats[3]), vec![], "a fourth chat");
    assert_eq!(queue(&mut r, 4, &voice), vec![], "voice while holding chats");
    // ch4 was queued before v1 at the same instant (same score, id order).
    assert_eq!(release(&mut r, 10, "ch1", "a"), vec![offer(&chats[3], "a", 10)]);
    accept(&mut r, 10, "ch4", "a");
    assert_eq!(release(&mut r, 11, "ch2", "a"), vec![]);
    assert_eq!(release(&mut r, 12, "ch3", "a"), vec![]);
    assert_eq!(release(&mut r, 13, "ch4", "a"), vec![offer(&voice, "a", 13)]);
    assert_eq!(queue(&mut r, 20, &chats[4]), vec![], "chat while on voice");
    accept(&mut r, 21, "v1", "a");
    assert_eq!(r.holdings(&aid("a")), vec![(cid("v1"), Channel::Voice, Hold::Booked)]);
    assert_eq!(release(&mut r, 30, "v1", "a"), vec![offer(&chats[4], "a", 30)]);
}

#[test]
fn a_tenants_calls_wait_while_the_agent_has_no_phone_there() {
    let (acme, globex) = (q("acme", "sales"), q("globex", "sales"));
    let mut r = Router::new();
    let mut a = agent("a", &[acme.clone(), globex.clone()]);
    a.capacity = caps(&[(Channel::Voice, 1), (Channel::Chat, 2)], &[], 0);
    a.phoneless_tenants = ["acme".to_owned()].into();
    upsert(&mut r, 0, a.clone());
    ready(&mut r, 0, "a");
    let acme_call = QueuedContact { channel: Channel::Voice, ..contact("v1", &acme, 1) };
    let globex_call = QueuedContact { channel: Channel::Voice, ..contact("v2", &globex, 2) };
    let acme_chat = contact("ch1", &acme, 3);
    // Acme's call waits; Acme's chat and Globex's call (a phone there) are offered.
    assert_eq!(queue(&mut r, 1, &acme_call), vec![]);
    assert_eq!(queue(&mut r, 3, &acme_chat), vec![offer(&acme_chat, "a", 3)]);
    assert_eq!(queue(&mut r, 4, &globex_call), vec![offer(&globex_call, "a", 4)]);
    accept(&mut r, 5, "v2", "a");
    assert_eq!(release(&mut r, 5, "v2", "a"), vec![]);
    // The phone registers with Acme: the waiting call is offered at once.
    a.phoneless_tenants.clear();
    assert_eq!(ok(&mut r, 6, Input::AgentUpserted(a)), vec![offer(&acme_call, "a", 6)]);
}

#[test]
fn shared_agent_of_two_tenants_never_exceeds_capacity() {
    let acme = q("acme", "sales");
    let globex = q("globex", "sales");
    let mut r = Router::new();
    let mut s = agent("shared", &[acme.clone(), globex.clone()]);
    s.capacity = caps(&[(Channel::Chat, 3)], &[], 2);
    upsert(&mut r, 0, s);
    ready(&mut r, 0, "shared");
    let a1 = contact("a1", &acme, 1);
    let g1 = contact("g1", &globex, 2);
    let a2 = contact("a2", &acme, 3);
    let g2 = contact("g2", &globex, 4);
    assert_eq!(queue(&mut r, 1, &a1), vec![offer(&a1, "shared", 1)]);
    assert_eq!(queue(&mut r, 2, &g1), vec![offer(&g1, "shared", 2)]);
    assert_eq!(queue(&mut r, 3, &a2), vec![]);
    assert_eq!(queue(&mut r, 4, &g2), vec![]);
    assert_eq!(r.holdings(&aid("shared")).len(), 2);
    // A queue of the same name in another tenant is another queue.
    let other = agent("acme-only", std::slice::from_ref(&acme));
    upsert(&mut r, 5, other);
    assert_eq!(ready(&mut r, 5, "acme-only"), vec![offer(&a2, "acme-only", 5)]);
    accept(&mut r, 6, "g1", "shared");
    assert_eq!(release(&mut r, 7, "g1", "shared"), vec![offer(&g2, "shared", 7)]);
    assert_eq!(r.holdings(&aid("shared")).len(), 2);
}

#[test]
fn rona_offers_the_contact_to_another_agent_and_makes_the_first_not_ready() {
    let sales = q("acme", "sales");
    let mut r = Router::new();
    upsert(&mut r, 0, agent("a", std::slice::from_ref(&sales)));
    upsert(&mut r, 0, agent("b", std::slice::from_ref(&sales)));
    ready(&mut r, 0, "a");
    ready(&mut r, 1, "b");
    let c1 = contact("c1", &sales, 100);
    assert_eq!(queue(&mut r, 100, &c1), vec![offer(&c1, "a", 100)]);
    let rona = Input::OfferDeclined { contact: cid("c1"), agent: aid("a"), not_responding: true };
    assert_eq!(ok(&mut r, 30_100, rona), vec![offer(&c1, "b", 30_100)]);
    assert!(!r.is_ready(&aid("a")));
    assert_eq!(r.holdings(&aid("a")), vec![]);
    // a is back but c1 is not offered to it again, even after b rejects it.
    assert_eq!(ready(&mut r, 31_000, "a"), vec![]);
    let reject = Input::OfferDeclined { contact: cid("c1"), agent: aid("b"), not_responding: false };
    assert_eq!(ok(&mut r, 32_000, reject), vec![]);
    assert!(r.is_ready(&aid("b")));
    assert_eq!((r.offered_to(&cid("c1")), r.waiting()), (None, 1));
    // b (offered at 30 100) has waited longer than a (ready at 31 000).
    let c2 = contact("c2", &sales, 40_000);
    assert_eq!(queue(&mut r, 40_000, &c2), vec![offer(&c2, "b", 40_000)]);
    upsert(&mut r, 41_000, agent("c", std::slice::from_ref(&sales)));
    assert_eq!(ready(&mut r, 41_000, "c"), vec![offer(&c1, "c", 41_000)]);
}

#[test]
fn an_undelivered_offer_returns_the_contact_without_counting_as_declined() {
    let sales = q("acme", "sales");
    let mut r = Router::new();
    upsert(&mut r, 0, agent("a", std::slice::from_ref(&sales)));
    ready(&mut r, 0, "a");
    let c1 = contact("c1", &sales, 100);
    assert_eq!(queue(&mut r, 100, &c1), vec![offer(&c1, "a", 100)]);
    // Sessions found a away already: the offer is void and a takes nothing new...
    let void = Input::OfferUndelivered { contact: cid("c1"), agent: aid("a") };
    assert_eq!(ok(&mut r, 200, void.clone()), vec![]);
    assert!(!r.is_ready(&aid("a")));
    assert_eq!(r.holdings(&aid("a")), vec![]);
    assert_eq!((r.offered_to(&cid("c1")), r.waiting()), (None, 1));
    // ...until it is ready again, when c1 is offered to it: a never declined it.
    assert_eq!(ready(&mut r, 1_000, "a"), vec![offer(&c1, "a", 1_000)]);
    // Only the agent holding the offer can void it.
    assert!(r.apply(1_100, Input::OfferUndelivered { contact: cid("c1"), agent: aid("b") }).is_err());
    assert!(r.apply(1_100, void).is_ok());
}

#[test]
fn withdrawing_an_offered_contact_frees_capacity_for_the_next() {
    let sales = q("acme", "sales");
    let mut r = Router::new();
    upsert(&mut r, 0, agent("a", std::slice::from_ref(&sales)));
    ready(&mut r, 0, "a");
    let c1 = contact("c1", &sales, 1);
    let c2 = contact("c2", &sales, 2);
    assert_eq!(queue(&mut r, 1, &c1), vec![offer(&c1, "a", 1)]);
    assert_eq!(queue(&mut r, 2, &c2), vec![]);
    assert_eq!(ok(&mut r, 3, Input::ContactWithdrawn { contact: cid("c1") }), vec![offer(&c2, "a", 3)]);
    assert_eq!(r.holdings(&aid("a")), vec![(cid("c2"), Channel::Chat, Hold::Reserved)]);
    assert!(!r.is_routing(&cid("c1")));
    // Withdrawing a booked contact frees it too.
    accept(&mut r, 4, "c2", "a");
    let c3 = contact("c3", &sales, 5);
    assert_eq!(queue(&mut r, 5, &c3), vec![]);
    assert_eq!(ok(&mut r, 6, Input::ContactWithdrawn { contact: cid("c2") }), vec![offer(&c3, "a", 6)]);
}

#[test]
fn max_wait_overflows_to_its_target_or_times_out() {
    let sales = q("acme", "sales");
    let overflow = q("acme", "overflow");
    let mut r = Router::new();
    let c1 = QueuedContact {
        max_wait: Some(MaxWait { after_ms: 60_000, overflow_to: Some(overflow.clone()) }),
        ..contact("c1", &sales, 0)
    };
    let c2 =
        QueuedContact { max_wait: Some(MaxWait { after_ms: 30_000, overflow_to: None }), ..contact("c2", &sales, 0) };
    assert_eq!(queue(&mut r, 0, &c1), vec![]);
    assert_eq!(queue(&mut r, 0, &c2), vec![]);
    assert_eq!(ok(&mut r, 29_999, Input::Tick), vec![]);
    assert_eq!(ok(&mut r, 30_000, Input::Tick), vec![Decision::TimedOut { contact: cid("c2"), queue: sales.clone() }]);
    assert_eq!(ok(&mut r, 59_999, Input::Tick), vec![]);
    assert_eq!(
        ok(&mut r, 70_000, Input::Tick),
        vec![Decision::Overflow { contact: cid("c1"), from: sales.clone(), to: overflow }]
    );
    assert!(!r.is_routing(&cid("c1")) && !r.is_routing(&cid("c2")));
    assert_eq!(ok(&mut r, 80_000, Input::Tick), vec![]);
}

#[test]
fn invalid_inputs_are_rejected_and_leave_the_router_unchanged() {
    let sales = q("acme", "sales");
    let mut r = Router::new();
    upsert(&mut r, 0, agent("a", std::slice::from_ref(&sales)));
    ready(&mut r, 0, "a");
    let c1 = contact("c1", &sales, 1);
    let c2 = contact("c2", &sales, 2);
    queue(&mut r, 1, &c1);
    queue(&mut r, 2, &c2);
    let mut too_skilled = agent("a", std::slice::from_ref(&sales));
    too_skilled.skills.insert("billing".into(), 6);
    let unsorted = QueuedContact {
        steps: vec![step(0, vec![]), step(20_000, vec![]), step(10_000, vec![])],
        ..contact("c3", &sales, 3)
    };
    let no_timeout = QueuedContact { offer_timeout_ms: 0, ..contact("c4", &sales, 3) };
    type Expected = fn(&Rejected) -> bool;
    let cases: Vec<(Input, Expected)> = vec![
        (Input::AgentUpserted(too_skilled), |e| matches!(e, Rejected::Invalid(_))),
        (Input::ContactQueued(unsorted), |e| matches!(e, Rejected::Invalid(_))),
        (Input::ContactQueued(no_timeout), |e| matches!(e, Rejected::Invalid(_))),
        (Input::ContactQueued(c1.clone()), |e| matches!(e, Rejected::DuplicateContact(_))),
        // c2 is waiting, not offered; c1 is offered to a, not to b.
        (Input::OfferAccepted { contact: cid("c2"), agent: aid("a") }, |e| matches!(e, Rejected::NotOffered(..))),
        (Input::OfferAccepted { contact: cid("c1"), agent: aid("b") }, |e| matches!(e, Rejected::NotOffered(..))),
        (Input::ContactReleased { contact: cid("c1"), agent: aid("a") }, |e| matches!(e, Rejected::NotBooked(..))),
        (Input::BookingMoved { from: cid("c1"), to: cid("c9"), agent: aid("a") }, |e| {
            matches!(e, Rejected::NotBooked(..))
        }),
        (Input::AgentReady { agent: aid("nobody") }, |e| matches!(e, Rejected::UnknownAgent(_))),
    ];
    for (input, expected) in cases {
        let before = r.clone();
        let result = r.apply(50_000, input.clone());
        assert!(result.as_ref().is_err_and(expected), "{input:?}: {result:?}");
        assert!(r == before, "{input:?} changed the router");
    }
    // Still usable, and the clock did not move to 50 000.
    accept(&mut r, 10, "c1", "a");
    assert_eq!(release(&mut r, 10, "c1", "a"), vec![offer(&c2, "a", 10)]);
}

#[test]
fn waiting_contacts_by_channel_and_ready_agents_are_counted() {
    let sales = q("acme", "sales");
    let mut r = Router::new();
    assert_eq!((r.waiting_by_channel(), r.ready_agents()), (BTreeMap::new(), 0));
    for a in ["a", "b"] {
        upsert(&mut r, 0, agent(a, std::slice::from_ref(&sales)));
    }
    assert_eq!(r.ready_agents(), 0);
    ready(&mut r, 10, "a");
    // a takes c1; the rest wait. An offered contact is not waiting.
    let c1 = contact("c1", &sales, 100);
    assert_eq!(queue(&mut r, 100, &c1), vec![offer(&c1, "a", 100)]);
    queue(&mut r, 200, &contact("c2", &sales, 200));
    for (id, t) in [("c3", 300), ("c4", 400)] {
        queue(&mut r, t, &QueuedContact { channel: Channel::Voice, ..contact(id, &sales, t) });
    }
    assert_eq!(r.waiting_by_channel(), BTreeMap::from([(Channel::Chat, 1), (Channel::Voice, 2)]));
    assert_eq!((r.waiting(), r.ready_agents()), (3, 1));
    // a lets the offer ring out: c1 waits again and a takes no new offers.
    let rona = Input::OfferDeclined { contact: cid("c1"), agent: aid("a"), not_responding: true };
    assert_eq!(ok(&mut r, 500, rona), vec![]);
    assert_eq!(r.waiting_by_channel(), BTreeMap::from([(Channel::Chat, 2), (Channel::Voice, 2)]));
    assert_eq!(r.ready_agents(), 0);
    // b is ready and takes c1, the longest waiting.
    assert_eq!(ready(&mut r, 600, "b"), vec![offer(&c1, "b", 600)]);
    assert_eq!(r.waiting_by_channel(), BTreeMap::from([(Channel::Chat, 1), (Channel::Voice, 2)]));
    assert_eq!(r.ready_agents(), 1);
    // Counts survive a snapshot.
    let restored = round_trip(&r);
    assert_eq!((restored.waiting_by_channel(), restored.ready_agents()), (r.waiting_by_channel(), 1));
}

/// Snapshot → JSON → restore.
fn round_trip(r: &Router) -> Router {
    let json = serde_json::to_string(&r.snapshot()).expect("snapshot serialises");
    Router::restore(serde_json::from_str(&json).expect("snapshot deserialises"))
}

#[test]
fn restored_router_continues_with_the_same_decisions() {
    // y relaxes (at 32 s) before x (at 35 s); x's first wakeup (at 0) already fired before
    // the snapshot. On the tick at 40 s both are eligible for the one agent.
    let sales = q("acme", "sales");
    let mut r = Router::new();
    let mut a = agent("a", std::slice::from_ref(&sales));
    a.skills.insert("tech".into(), 1);
    upsert(&mut r, 0, a);
    ready(&mut r, 0, "a");
    let x = QueuedContact {
        steps: vec![step(0, vec![skill("tech", 5)]), step(35_000, vec![skill("tech", 1)])],
        ..contact("x", &sales, 0)
    };
    let y = QueuedContact {
        steps: vec![step(0, vec![skill("tech", 5)]), step(30_000, vec![skill("tech", 1)])],
        ..contact("y", &sales, 2_000)
    };
    queue(&mut r, 0, &x);
    assert_eq!(ok(&mut r, 1_000, Input::Tick), vec![]);
    queue(&mut r, 2_000, &y);
    let mut restored = round_trip(&r);
    assert_eq!(restored.snapshot(), r.snapshot());
    // A snapshot written before wakeups were recorded still restores, rescheduling them.
    let mut legacy = serde_json::to_value(r.snapshot()).expect("snapshot serialises");
    legacy.as_object_mut().expect("an object").remove("wakeups").expect("wakeups recorded");
    let mut legacy = Router::restore(serde_json::from_value(legacy).expect("legacy snapshot deserialises"));
    assert_eq!(ok(&mut legacy, 40_000, Input::Tick).len(), 1);
    let expected = vec![offer(&y, "a", 40_000)];
    assert_eq!(ok(&mut r, 40_000, Input::Tick), expected);
    assert_eq!(ok(&mut restored, 40_000, Input::Tick), expected, "after restore");
}

// ---------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------

mod props {
    use proptest::collection::vec as pvec;
    use proptest::prelude::*;

    use super::*;

    const QUEUES: [(&str, &str); 3] = [("t1", "q1"), ("t1", "q2"), ("t2", "q1")];
    const SKILLS: [&str; 2] = ["billing", "tech"];
    const LANGUAGES: [&str; 2] = ["en", "es"];
    const CHANNELS: [Channel; 3] = [Channel::Voice, Channel::Chat, Channel::Email];

    fn queue_ref(i: usize) -> QueueRef {
        let (t, name) = QUEUES[i % QUEUES.len()];
        q(t, name)
    }

    /// Agents "a0".. with random queues (a bit mask over [`QUEUES`], so some serve both
    /// tenants), skills, languages and capacities.
    fn arb_agents() -> impl Strategy<Value = Vec<AgentProfile>> {
        let one = (1..8u8, [0..=5u8, 0..=5u8], 0..4u8, [0..=1u32, 0..=3u32, 0..=2u32], any::<bool>(), 0..=3u32);
        pvec(one, 3..=6).prop_map(|specs| {
            specs
                .into_iter()
                .enumerate()
                .map(|(i, (queues, skills, languages, limits, voice_exclusive, max_total))| AgentProfile {
                    id: aid(&format!("a{i}")),
                    queues: (0..QUEUES.len()).filter(|b| queues & (1 << b) != 0).map(queue_ref).collect(),
                    skills: SKILLS
                        .iter()
                        .zip(skills)
                        .filter(|(_, l)| *l > 0)
                        .map(|(s, l)| (s.to_string(), l))
                        .collect(),
                    languages: (0..2).filter(|b| languages & (1 << b) != 0).map(|b| LANGUAGES[b].to_string()).collect(),
                    capacity: CapacityProfile {
                        limits: CHANNELS.into_iter().zip(limits).collect(),
                        exclusive: if voice_exclusive { [Channel::Voice].into() } else { BTreeSet::new() },
                        max_total,
                    },
                    phoneless_tenants: BTreeSet::new(),
                })
                .collect()
        })
    }

    fn arb_requirement() -> impl Strategy<Value = Requirement> {
        prop_oneof![
            (0..SKILLS.len(), 1..=5u8).prop_map(|(s, l)| skill(SKILLS[s], l)),
            (0..LANGUAGES.len()).prop_map(|l| lang(LANGUAGES[l])),
        ]
    }

    /// Steps starting at 0, each later one `gap` ms after the previous.
    fn arb_steps() -> impl Strategy<Value = Vec<Step>> {
        pvec((1..=40_000i64, pvec(arb_requirement(), 0..=2)), 0..=3).prop_map(|steps| {
            let mut after = 0;
            steps
                .into_iter()
                .enumerate()
                .map(|(i, (gap, requirements))| {
                    if i > 0 {
                        after += gap;
                    }
                    step(after, requirements)
                })
                .collect()
        })
    }

    #[derive(Debug, Clone)]
    struct ContactSpec {
        queue: usize,
        channel: Channel,
        priority: i64,
        aging: i64,
        steps: Vec<Step>,
        /// Agent index and window length.
        preferred: Option<(usize, i64)>,
        /// After, and overflow queue index.
        max_wait: Option<(i64, Option<usize>)>,
    }

    fn arb_contact() -> impl Strategy<Value = ContactSpec> {
        (
            0..QUEUES.len(),
            proptest::sample::select(CHANNELS.to_vec()),
            0..=3i64,
            0..=3i64,
            arb_steps(),
            proptest::option::weighted(0.2, (0..6usize, 1..=60_000i64)),
            proptest::option::weighted(0.3, (1..=120_000i64, proptest::option::of(0..QUEUES.len()))),
        )
            .prop_map(|(queue, channel, priority, aging, steps, preferred, max_wait)| ContactSpec {
                queue,
                channel,
                priority,
                aging,
                steps,
                preferred,
                max_wait,
            })
    }

    /// Indexes are taken modulo the number of candidates at the time.
    #[derive(Debug, Clone)]
    enum Op {
        Ready(usize),
        NotReady(usize),
        Queue(ContactSpec),
        Accept(usize),
        Decline(usize, bool),
        Undeliver(usize),
        Withdraw(usize),
        Release(usize),
        /// A booking moves to a contact never seen by routing (a warm transfer).
        Move(usize),
        Tick,
    }

    /// An op and the time before it, in ms.
    fn arb_ops() -> impl Strategy<Value = Vec<(i64, Op)>> {
        let op = prop_oneof![
            3 => (0..6usize).prop_map(Op::Ready),
            1 => (0..6usize).prop_map(Op::NotReady),
            4 => arb_contact().prop_map(Op::Queue),
            3 => any::<usize>().prop_map(Op::Accept),
            1 => (any::<usize>(), any::<bool>()).prop_map(|(i, n)| Op::Decline(i, n)),
            1 => any::<usize>().prop_map(Op::Undeliver),
            1 => any::<usize>().prop_map(Op::Withdraw),
            3 => any::<usize>().prop_map(Op::Release),
            1 => any::<usize>().prop_map(Op::Move),
            2 => Just(Op::Tick),
        ];
        pvec((0..=5_000i64, op), 0..=150)
    }

    fn requirements_at(c: &QueuedContact, now: Millis) -> &[Requirement] {
        let waited = now - c.enqueued_at;
        let current = c.steps.iter().rev().find(|s| s.after_ms <= waited).or(c.steps.first());
        current.map(|s| s.requirements.as_slice()).unwrap_or(&[])
    }

    fn meets(p: &AgentProfile, requirements: &[Requirement]) -> bool {
        requirements.iter().all(|r| match r {
            Requirement::Skill { name, min_proficiency } => p.skills.get(name).is_some_and(|l| l >= min_proficiency),
            Requirement::Language(l) => p.languages.contains(l),
        })
    }

    /// (a): what the agent holds fits its capacity profile.
    fn check_capacity(p: &AgentProfile, held: &[(ContactId, Channel, Hold)]) -> Result<(), String> {
        let cap = &p.capacity;
        for ch in Channel::ALL {
            let n = held.iter().filter(|h| h.1 == ch).count() as u32;
            if n > cap.limits.get(&ch).copied().unwrap_or(0) {
                return Err(format!("{}: {n} {ch:?} contacts, {held:?}", p.id));
            }
        }
        if cap.max_total > 0 && held.len() as u32 > cap.max_total {
            return Err(format!("{}: {} contacts over max_total {}", p.id, held.len(), cap.max_total));
        }
        if held.len() > 1 && held.iter().any(|h| cap.exclusive.contains(&h.1)) {
            return Err(format!("{}: exclusive channel shared: {held:?}", p.id));
        }
        Ok(())
    }

    /// What the test knows independently of the router.
    #[derive(Default)]
    struct Model {
        profiles: BTreeMap<AgentId, AgentProfile>,
        ready: BTreeSet<AgentId>,
        /// Current version of every contact ever queued.
        contacts: BTreeMap<ContactId, QueuedContact>,
        declined: BTreeMap<ContactId, BTreeSet<AgentId>>,
    }

    impl Model {
        fn before(&mut self, input: &Input) {
            match input {
                Input::AgentUpserted(p) => {
                    self.profiles.insert(p.id.clone(), p.clone());
                }
                Input::AgentReady { agent } => {
                    self.ready.insert(agent.clone());
                }
                Input::AgentNotReady { agent } => {
                    self.ready.remove(agent);
                }
                Input::ContactQueued(c) => {
                    self.contacts.insert(c.id.clone(), c.clone());
                    self.declined.remove(&c.id);
                }
                Input::OfferDeclined { contact, agent, not_responding } => {
                    self.declined.entry(contact.clone()).or_default().insert(agent.clone());
                    if *not_responding {
                        self.ready.remove(agent);
                    }
                }
                Input::OfferUndelivered { agent, .. } => {
                    self.ready.remove(agent);
                }
                _ => {}
            }
        }

        /// (b) for one decision, plus sanity of overflows and time-outs.
        fn check(&self, now: Millis, d: &Decision) -> Result<(), String> {
            match d {
                Decision::Offer { contact, agent, queue, channel, expires_at } => {
                    let c = &self.contacts[contact];
                    let p = &self.profiles[agent];
                    let why = if !self.ready.contains(agent) {
                        "agent not ready"
                    } else if *queue != c.queue || *channel != c.channel || *expires_at != now + c.offer_timeout_ms {
                        "offer does not match the contact"
                    } else if !p.queues.contains(&c.queue) {
                        "agent not assigned to the queue"
                    } else if !meets(p, requirements_at(c, now)) {
                        "agent does not meet the current step"
                    } else if self.declined.get(contact).is_some_and(|d| d.contains(agent)) {
                        "agent declined the contact"
                    } else if c.preferred.as_ref().is_some_and(|(a, until)| now < *until && a != agent) {
                        "not the preferred agent within its window"
                    } else {
                        return Ok(());
                    };
                    Err(format!("at {now}: {d:?}: {why}"))
                }
                Decision::Overflow { contact, from, to } => {
                    let c = &self.contacts[contact];
                    let m = c.max_wait.as_ref().ok_or("overflow without max wait")?;
                    let ok =
                        *from == c.queue && m.overflow_to.as_ref() == Some(to) && now - c.enqueued_at >= m.after_ms;
                    if ok {
                        Ok(())
                    } else {
                        Err(format!("at {now}: bad {d:?} of {c:?}"))
                    }
                }
                Decision::TimedOut { contact, queue } => {
                    let c = &self.contacts[contact];
                    let m = c.max_wait.as_ref().ok_or("time-out without max wait")?;
                    let ok = *queue == c.queue && m.overflow_to.is_none() && now - c.enqueued_at >= m.after_ms;
                    if ok {
                        Ok(())
                    } else {
                        Err(format!("at {now}: bad {d:?} of {c:?}"))
                    }
                }
            }
        }
    }

    type Log = Vec<(Millis, Input)>;

    /// Drives a fresh router through the ops, checking (a) and (b) after every input.
    /// Returns every input applied and the decisions of each.
    fn drive(agents: &[AgentProfile], ops: &[(i64, Op)]) -> Result<(Router, Log, Vec<Vec<Decision>>), String> {
        let mut router = Router::new();
        let mut model = Model::default();
        let (mut log, mut results) = (Log::new(), Vec::new());
        let ids: Vec<AgentId> = agents.iter().map(|a| a.id.clone()).collect();
        let mut pending: Vec<Input> = agents.iter().cloned().map(Input::AgentUpserted).collect();
        let mut now = 0;
        let mut next_contact = 0;
        let mut ops = ops.iter();
        loop {
            if pending.is_empty() {
                let Some((dt, op)) = ops.next() else { break };
                now += dt;
                let holds = |want: Option<Hold>| -> Vec<(ContactId, AgentId)> {
                    ids.iter()
                        .flat_map(|a| router.holdings(a).into_iter().map(move |(c, _, h)| (c, a.clone(), h)))
                        .filter(|(_, _, h)| want.is_none_or(|w| w == *h))
                        .map(|(c, a, _)| (c, a))
                        .collect()
                };
                let pick = |v: Vec<(ContactId, AgentId)>, i: usize| (!v.is_empty()).then(|| v[i % v.len()].clone());
                let input = match op {
                    Op::Ready(i) => Some(Input::AgentReady { agent: ids[i % ids.len()].clone() }),
                    Op::NotReady(i) => Some(Input::AgentNotReady { agent: ids[i % ids.len()].clone() }),
                    Op::Queue(spec) => {
                        next_contact += 1;
                        Some(Input::ContactQueued(QueuedContact {
                            id: cid(&format!("c{next_contact:03}")),
                            queue: queue_ref(spec.queue),
                            channel: spec.channel,
                            priority: spec.priority,
                            aging_per_minute: spec.aging,
                            enqueued_at: now,
                            steps: spec.steps.clone(),
                            preferred: spec.preferred.map(|(a, w)| (ids[a % ids.len()].clone(), now + w)),
                            offer_timeout_ms: 20_000,
                            max_wait: spec
                                .max_wait
                                .map(|(after_ms, to)| MaxWait { after_ms, overflow_to: to.map(queue_ref) }),
                            excluded: Vec::new(),
                        }))
                    }
                    Op::Accept(i) => pick(holds(Some(Hold::Reserved)), *i)
                        .map(|(contact, agent)| Input::OfferAccepted { contact, agent }),
                    Op::Decline(i, not_responding) => pick(holds(Some(Hold::Reserved)), *i).map(|(contact, agent)| {
                        Input::OfferDeclined { contact, agent, not_responding: *not_responding }
                    }),
                    Op::Undeliver(i) => pick(holds(Some(Hold::Reserved)), *i)
                        .map(|(contact, agent)| Input::OfferUndelivered { contact, agent }),
                    Op::Release(i) => pick(holds(Some(Hold::Booked)), *i)
                        .map(|(contact, agent)| Input::ContactReleased { contact, agent }),
                    Op::Move(i) => pick(holds(Some(Hold::Booked)), *i).map(|(from, agent)| {
                        let to = cid(&format!("{}-moved", from.0));
                        Input::BookingMoved { from, to, agent }
                    }),
                    // Any contact ever queued: waiting, offered, booked or already gone.
                    Op::Withdraw(i) => (next_contact > 0)
                        .then(|| Input::ContactWithdrawn { contact: cid(&format!("c{:03}", i % next_contact + 1)) }),
                    Op::Tick => Some(Input::Tick),
                };
                pending.extend(input);
                continue;
            }
            let input = pending.remove(0);
            model.before(&input);
            let decisions = router.apply(now, input.clone()).map_err(|e| format!("{input:?} at {now}: {e}"))?;
            for d in &decisions {
                model.check(now, d)?;
                match d {
                    Decision::Offer { contact, agent, .. } if router.offered_to(contact) != Some(agent) => {
                        return Err(format!("{d:?} is not held by the router"));
                    }
                    // The overflowed contact joins its new queue, without a maximum wait.
                    Decision::Overflow { contact, to, .. } => {
                        let c = &model.contacts[contact];
                        let moved = QueuedContact { queue: to.clone(), enqueued_at: now, max_wait: None, ..c.clone() };
                        pending.push(Input::ContactQueued(moved));
                    }
                    _ => {}
                }
            }
            for (id, profile) in &model.profiles {
                check_capacity(profile, &router.holdings(id))?;
                if router.is_ready(id) != model.ready.contains(id) {
                    return Err(format!("readiness of {id} differs from the model"));
                }
            }
            if router.ready_agents() != model.ready.len() {
                return Err(format!("{} ready agents, the model has {}", router.ready_agents(), model.ready.len()));
            }
            if router.waiting_by_channel().values().sum::<usize>() != router.waiting() {
                return Err(format!("waiting by channel {:?} does not add up", router.waiting_by_channel()));
            }
            log.push((now, input));
            results.push(decisions);
        }
        Ok((router, log, results))
    }

    /// Applies a log to a fresh router, through a JSON snapshot after `restart_at` inputs.
    fn replay(log: &Log, restart_at: Option<usize>) -> (Router, Vec<Vec<Decision>>) {
        let mut router = Router::new();
        let mut results = Vec::new();
        for (i, (at, input)) in log.iter().enumerate() {
            if restart_at == Some(i) {
                router = round_trip(&router);
            }
            results.push(router.apply(*at, input.clone()).expect("replayed input applies"));
        }
        (router, results)
    }

    fn fifo_contact(i: usize, queue_ref: &QueueRef, priority: i64, aging: i64, at: Millis) -> QueuedContact {
        QueuedContact { priority, aging_per_minute: aging, ..contact(&format!("c{i:03}"), queue_ref, at) }
    }

    /// Accepts (if only offered) and releases the agent's oldest contact; returns the offers
    /// that follow.
    fn serve_oldest(r: &mut Router, at: Millis, agent: &str) -> Option<Vec<Decision>> {
        let (contact, _, hold) = r.holdings(&aid(agent)).into_iter().next()?;
        if hold == Hold::Reserved {
            accept(r, at, &contact.0, agent);
        }
        Some(release(r, at, &contact.0, agent))
    }

    fn offered(decisions: Vec<Decision>) -> impl Iterator<Item = ContactId> {
        decisions.into_iter().filter_map(|d| match d {
            Decision::Offer { contact, .. } => Some(contact),
            _ => None,
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// (a) no agent ever holds more than its capacity profile allows; (b) every offer
        /// goes to a ready agent of the queue that meets the contact's current step, has not
        /// declined it and is the preferred agent while the window lasts.
        #[test]
        fn random_worlds_respect_capacity_and_eligibility(agents in arb_agents(), ops in arb_ops()) {
            drive(&agents, &ops).map_err(TestCaseError::fail)?;
        }

        /// (c) the same inputs give the same decisions and state; so does a router restored
        /// from a JSON snapshot taken anywhere in the run.
        #[test]
        fn random_worlds_replay_identically_through_snapshots(
            agents in arb_agents(),
            ops in arb_ops(),
            restart in 0..=100usize,
        ) {
            let (router, log, results) = drive(&agents, &ops).map_err(TestCaseError::fail)?;
            let (again, replayed) = replay(&log, None);
            prop_assert_eq!(&replayed, &results);
            prop_assert!(again == router, "same inputs, different state");
            let restart_at = log.len() * restart / 100;
            let (restored, continued) = replay(&log, Some(restart_at));
            prop_assert_eq!(&continued, &results, "restored after {} of {} inputs", restart_at, log.len());
            prop_assert_eq!(restored.snapshot(), router.snapshot());
        }

        /// (d) one queue, equal priority and aging, no requirements, one agent serving
        /// contacts as they come: contacts are offered in the order they were queued.
        #[test]
        fn one_queue_of_equal_priority_is_first_come_first_served(
            n in 1..=30usize,
            ops in pvec((any::<bool>(), 0..=3_000i64), 0..=100),
            priority in -3..=3i64,
            aging in 0..=5i64,
            chat_limit in 1..=3u32,
        ) {
            let sales = q("t1", "q1");
            let mut r = Router::new();
            let mut a = agent("a", std::slice::from_ref(&sales));
            a.capacity = caps(&[(Channel::Chat, chat_limit)], &[], 0);
            upsert(&mut r, 0, a);
            ready(&mut r, 0, "a");
            let (mut now, mut queued, mut order) = (0, 0, Vec::new());
            for (queue_next, dt) in ops {
                now += dt;
                if queue_next && queued < n {
                    order.extend(offered(queue(&mut r, now, &fifo_contact(queued, &sales, priority, aging, now))));
                    queued += 1;
                } else if let Some(decisions) = serve_oldest(&mut r, now, "a") {
                    order.extend(offered(decisions));
                }
            }
            for i in queued..n {
                order.extend(offered(queue(&mut r, now, &fifo_contact(i, &sales, priority, aging, now))));
            }
            while let Some(decisions) = serve_oldest(&mut r, now, "a") {
                order.extend(offered(decisions));
            }
            let expected: Vec<ContactId> = (0..n).map(|i| cid(&format!("c{i:03}"))).collect();
            prop_assert_eq!(order, expected);
        }

        /// (e) with aging, a low-priority contact is offered within a bounded time although
        /// higher-priority contacts arrive every `gap` ms, faster than the one agent serves
        /// them (each takes `gap + extra` ms): once it has waited `high` minutes / `aging` it
        /// outranks every newer arrival, so only the older ones go first.
        #[test]
        fn aging_prevents_starvation_of_a_low_priority_contact(
            high in 1..=2i64,
            aging in 2..=10i64,
            gap in 1_000..=5_000i64,
            extra in 1..=5_000i64,
        ) {
            let sales = q("t1", "q1");
            let handle = gap + extra.min(gap);
            let bound = (high * 60_000 / aging / gap + 3) * handle;
            let mut r = Router::new();
            upsert(&mut r, 0, agent("a", std::slice::from_ref(&sales)));
            ready(&mut r, 0, "a");
            let h = |k: i64| QueuedContact { priority: high, aging_per_minute: aging, ..contact(&format!("h{k:04}"), &sales, k * gap) };
            prop_assert_eq!(queue(&mut r, 0, &h(0)), vec![offer(&h(0), "a", 0)]);
            accept(&mut r, 0, "h0000", "a");
            let low = QueuedContact { aging_per_minute: aging, ..contact("low", &sales, 1) };
            prop_assert_eq!(queue(&mut r, 1, &low), vec![]);
            let (mut next, mut release_at) = (1, handle);
            let low_offered_at = loop {
                prop_assert!(release_at.min(next * gap) <= bound, "low not offered by {}", bound);
                let decisions = if release_at <= next * gap {
                    serve_oldest(&mut r, release_at, "a").expect("the agent holds a contact")
                } else {
                    next += 1;
                    queue(&mut r, (next - 1) * gap, &h(next - 1))
                };
                if let Some(contact) = offered(decisions).next() {
                    accept(&mut r, release_at, &contact.0, "a");
                    if contact.0 == "low" {
                        break release_at;
                    }
                    release_at += handle;
                }
            };
            prop_assert!(low_offered_at <= bound);
            // High-priority contacts were still waiting: low did not just get an idle agent.
            prop_assert!(r.waiting() > 0);
        }
    }
}

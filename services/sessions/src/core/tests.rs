//! One test per command and per refusal of the core, without Redis or a runtime.

use std::time::Duration;

use centralita_platform::queue::{AbandonRateDefinition, QueueConfig, RelaxStep, ServiceLevelDefinition};
use centralita_platform::tenant::TenantId;
use centralita_routing_contract::Input;

use super::agent::{self, StateCommand};
use super::consult::{self, Outcome};
use super::contact::{self, Target};
use super::decision::{offer_verdict, OfferVerdict};
use super::effects::Change;
use super::effects::{AgentEventKind, ContactEventKind as Kind, Effect, Linked, Notice, Timer};
use super::lifecycle::Action;
use super::model::*;
use super::refusal::Refusal;

pub(super) fn queue(id: &str) -> QueueConfig {
    QueueConfig {
        id: id.into(),
        display_name: id.into(),
        priority: 0,
        aging_per_minute: 0,
        vip_boost: 0,
        service_level_threshold: Duration::from_secs(20),
        offer_timeout: Duration::from_secs(15),
        after_contact_work: Duration::from_secs(30),
        max_wait: None,
        overflow_queue: None,
        preferred_agent_window: Duration::from_secs(60),
        steps: vec![RelaxStep { after: Duration::ZERO, proficiency_drop: 0, drop_skills: false, drop_language: false }],
        service_level_target_percent: None,
        service_level_definition: ServiceLevelDefinition::default(),
        abandon_rate_definition: AbandonRateDefinition::default(),
        short_abandon_threshold: Duration::from_secs(5),
        script: Default::default(),
        resolution_question: Default::default(),
        disposition_codes: Default::default(),
        canned_replies: Default::default(),
    }
}

pub(super) fn a(id: &str) -> AgentId {
    AgentId(id.into())
}

pub(super) fn new_contact(id: &str, now: Millis) -> Contact {
    let tenant = TenantId::parse("acme").unwrap();
    Contact::queued(tenant, ContactId(id.into()), Channel::Voice, "sales".into(), "default".into(), now)
}

fn offered(agent: &str) -> Contact {
    contact::offer(&new_contact("c1", 0), &a(agent), OfferId("o1".into()), 15_000).unwrap().record
}

fn connected(agent: &str) -> Contact {
    contact::accept(&offered(agent), &a(agent), &OfferId("o1".into()), 100).unwrap().record
}

fn o1() -> OfferId {
    OfferId("o1".into())
}

fn events(effects: &[Effect]) -> Vec<Kind> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::ContactEvent { kind, .. } => Some(*kind),
            _ => None,
        })
        .collect()
}

#[test]
fn create_queues_and_asks_routing() {
    let change = contact::create(new_contact("c1", 5), &queue("sales"), 5);
    assert_eq!(change.record.state, ContactState::Queued);
    assert_eq!(events(&change.effects), [Kind::Queued]);
    assert!(
        matches!(&change.effects[1], Effect::Route(Input::ContactQueued(q)) if q.id.0 == "c1" && q.enqueued_at == 5)
    );
}

#[test]
fn offer_books_the_agent_and_sets_the_offer_timer() {
    let change = contact::offer(&new_contact("c1", 0), &a("ana"), o1(), 15_000).unwrap();
    assert_eq!(change.record.state, ContactState::Offered);
    assert_eq!(change.record.agent, Some(a("ana")));
    let timer = Timer::Offer { tenant: TenantId::parse("acme").unwrap(), contact: ContactId("c1".into()), offer: o1() };
    assert!(change.effects.contains(&Effect::Schedule { timer, due: 15_000 }));
    assert!(change.effects.contains(&Effect::Notify { agent: a("ana"), notice: Notice::Offer }));
    assert_eq!(events(&change.effects), [Kind::Offered]);
}

#[test]
fn offer_refused_unless_queued() {
    let e = contact::offer(&offered("ana"), &a("bob"), o1(), 1).unwrap_err();
    assert_eq!(e, Refusal::IllegalMove { action: Action::Offer, state: ContactState::Offered });
}

#[test]
fn accept_connects_the_holder() {
    let change = contact::accept(&offered("ana"), &a("ana"), &o1(), 100).unwrap();
    assert_eq!(change.record.state, ContactState::Connected);
    assert_eq!(change.record.connected_at, Some(100));
    assert_eq!(change.record.open_participants().count(), 1);
    assert!(change
        .effects
        .contains(&Effect::Route(Input::OfferAccepted { contact: ContactId("c1".into()), agent: a("ana") })));
}

#[test]
fn accept_refuses_another_offer_another_agent_and_a_late_answer() {
    assert_eq!(
        contact::accept(&offered("ana"), &a("ana"), &OfferId("old".into()), 1).unwrap_err(),
        Refusal::OfferNotOpen
    );
    assert_eq!(contact::accept(&offered("ana"), &a("bob"), &o1(), 1).unwrap_err(), Refusal::OfferNotOpen);
    assert_eq!(contact::accept(&offered("ana"), &a("ana"), &o1(), 15_001).unwrap_err(), Refusal::OfferExpired);
}

#[test]
fn reject_puts_the_contact_back_and_releases_the_agent() {
    let change = contact::reject(&offered("ana"), &a("ana"), &o1()).unwrap();
    assert_eq!(change.record.state, ContactState::Queued);
    assert_eq!(change.record.agent, None);
    assert_eq!(events(&change.effects), [Kind::Rejected]);
    assert!(change.effects.contains(&Effect::AgentContact { agent: a("ana"), add: false, notify: true }));
    assert!(!change.effects.iter().any(|e| matches!(e, Effect::AgentNotResponding(_))));
}

#[test]
fn rona_also_makes_the_agent_not_responding() {
    let change = contact::rona(&offered("ana"), &a("ana"), &o1()).unwrap();
    assert_eq!(events(&change.effects), [Kind::NotAnswered]);
    assert!(change.effects.contains(&Effect::AgentNotResponding(a("ana"))));
    assert!(change
        .effects
        .iter()
        .any(|e| matches!(e, Effect::Route(Input::OfferDeclined { not_responding: true, .. }))));
}

#[test]
fn a_calls_recording_is_paused_and_resumed_by_its_holder_only() {
    let change = contact::pause_recording(&connected("ana"), &a("ana"), true).unwrap();
    assert!(change.record.recording_paused && change.record.state == ContactState::Connected);
    assert_eq!(events(&change.effects), [Kind::RecordingPaused]);
    let paused = change.record;
    assert_eq!(contact::pause_recording(&paused, &a("ana"), true).unwrap_err(), Refusal::RecordingAlreadyPaused);
    assert_eq!(contact::pause_recording(&paused, &a("bob"), false).unwrap_err(), Refusal::NotHeldByAgent);
    let resumed = contact::pause_recording(&paused, &a("ana"), false).unwrap();
    assert!(!resumed.record.recording_paused);
    assert_eq!(events(&resumed.effects), [Kind::RecordingResumed]);
    assert_eq!(contact::pause_recording(&resumed.record, &a("ana"), false).unwrap_err(), Refusal::RecordingNotPaused);
    // A connected call or conversation (its transcript); not a task.
    let chat = Contact { channel: Channel::Chat, ..connected("ana") };
    assert!(contact::pause_recording(&chat, &a("ana"), true).unwrap().record.recording_paused);
    let task = Contact { channel: Channel::Task, ..connected("ana") };
    assert_eq!(contact::pause_recording(&task, &a("ana"), true).unwrap_err(), Refusal::NotACall);
    assert!(matches!(
        contact::pause_recording(&offered("ana"), &a("ana"), true).unwrap_err(),
        Refusal::IllegalMove { .. }
    ));
}

#[test]
fn hold_and_resume_toggle_and_refuse_repeats() {
    let held = contact::hold(&connected("ana"), &a("ana")).unwrap().record;
    assert!(held.on_hold);
    assert_eq!(contact::hold(&held, &a("ana")).unwrap_err(), Refusal::AlreadyOnHold);
    let resumed = contact::resume(&held, &a("ana")).unwrap().record;
    assert!(!resumed.on_hold);
    assert_eq!(contact::resume(&resumed, &a("ana")).unwrap_err(), Refusal::NotOnHold);
    assert_eq!(contact::hold(&connected("ana"), &a("bob")).unwrap_err(), Refusal::NotHeldByAgent);
}

#[test]
fn transfer_requeues_elsewhere_without_the_transferring_agent() {
    let to = Target { queue: "support".into(), agent: None };
    let change = contact::transfer(&connected("ana"), &a("ana"), &to, &queue("support"), 500).unwrap();
    let c = &change.record;
    assert_eq!((c.state, c.queue.as_str(), c.transfer_count), (ContactState::Queued, "support", 1));
    assert_eq!(c.previous_agents, [a("ana")]);
    let Some(Effect::Route(Input::ContactQueued(q))) = change.effects.last() else { panic!("requeued last") };
    assert_eq!(q.excluded, [a("ana")]);
    assert!(change
        .effects
        .contains(&Effect::Route(Input::ContactReleased { contact: ContactId("c1".into()), agent: a("ana") })));
}

#[test]
fn transfer_refused_during_a_consult() {
    let mut c = connected("ana");
    c.consult_leg = Some(ContactId("leg".into()));
    let to = Target { queue: "support".into(), agent: None };
    assert_eq!(contact::transfer(&c, &a("ana"), &to, &queue("support"), 1).unwrap_err(), Refusal::ConsultInProgress);
}

#[test]
fn end_while_waiting_abandons_and_withdraws() {
    let change = contact::end(&offered("ana"), 30_000, 50).unwrap();
    assert_eq!(change.record.state, ContactState::Abandoned);
    assert_eq!(change.record.closed_at, Some(50));
    assert_eq!(events(&change.effects), [Kind::Abandoned]);
    assert!(change.effects.contains(&Effect::Route(Input::ContactWithdrawn { contact: ContactId("c1".into()) })));
    assert_eq!(change.effects.last(), Some(&Effect::Close));
}

#[test]
fn an_end_with_a_cause_keeps_it_and_otherwise_ends_alike() {
    for c in [offered("ana"), connected("ana")] {
        let plain = contact::end(&c, 30_000, 1_000).unwrap();
        let caused = contact::end_with_cause(&c, "media lost the call", 30_000, 1_000).unwrap();
        assert_eq!(caused.record.end_cause, "media lost the call");
        assert_eq!((caused.record.state, &caused.effects), (plain.record.state, &plain.effects));
        assert_eq!(plain.record.end_cause, "");
    }
    let ended = contact::end_with_cause(&connected("ana"), "caller hung up", 30_000, 1_000).unwrap().record;
    assert!(contact::end_with_cause(&ended, "media lost the call", 30_000, 2_000).is_err(), "ended once only");
}

#[test]
fn end_when_connected_starts_after_contact_work() {
    let change = contact::end(&connected("ana"), 30_000, 1_000).unwrap();
    assert_eq!(change.record.state, ContactState::AfterContactWork);
    let timer = Timer::AfterContactWork { tenant: TenantId::parse("acme").unwrap(), contact: ContactId("c1".into()) };
    assert!(change.effects.contains(&Effect::Schedule { timer, due: 31_000 }));
    assert!(!change.effects.contains(&Effect::Close));
}

#[test]
fn wrap_up_closes_and_frees_the_agent() {
    let acw = contact::end(&connected("ana"), 30_000, 1_000).unwrap().record;
    let change = contact::wrap_up(&acw, "sold", "notes", 2_000).unwrap();
    assert_eq!((change.record.state, change.record.disposition.as_str()), (ContactState::Closed, "sold"));
    assert!(change.effects.contains(&Effect::ContactEvent { kind: Kind::WrappedUp, agent: Some(a("ana")) }));
    assert_eq!(change.record.wrap_up_notes, "notes", "the notes stay on the record");
    assert!(change
        .effects
        .contains(&Effect::Route(Input::ContactReleased { contact: ContactId("c1".into()), agent: a("ana") })));
    assert_eq!(change.effects.last(), Some(&Effect::Close));
    let e = contact::wrap_up(&connected("ana"), "sold", "", 1).unwrap_err();
    assert_eq!(e, Refusal::IllegalMove { action: Action::WrapUp, state: ContactState::Connected });
}

#[test]
fn acw_elapsed_closes_without_a_disposition() {
    let acw = contact::end(&connected("ana"), 30_000, 1_000).unwrap().record;
    let change = contact::acw_elapsed(&acw, 31_000).unwrap();
    assert_eq!((change.record.state, change.record.disposition.as_str()), (ContactState::Closed, ""));
}

#[test]
fn overflow_moves_a_waiting_contact_only() {
    let change = contact::overflow(&new_contact("c1", 0), "spill", &queue("spill"), 9).unwrap();
    assert_eq!((change.record.queue.as_str(), change.record.enqueued_at), ("spill", Some(9)));
    assert!(contact::overflow(&offered("ana"), "spill", &queue("spill"), 9).is_err());
}

#[test]
fn time_out_ends_a_waiting_contact() {
    let change = contact::time_out(&new_contact("c1", 0), 9).unwrap();
    assert_eq!(change.record.state, ContactState::TimedOut);
    assert_eq!(change.effects.last(), Some(&Effect::Close));
    assert!(contact::time_out(&connected("ana"), 9).is_err());
}

fn consulting() -> (Contact, Contact) {
    let to = Target { queue: "sales".into(), agent: Some(a("bob")) };
    let k = consult::consult(&connected("ana"), &a("ana"), &to, &queue("sales"), ContactId("leg".into()), 200).unwrap();
    (k.customer.record, k.leg.record)
}

#[test]
fn consult_holds_the_customer_and_opens_a_leg() {
    let (customer, leg) = consulting();
    assert!(customer.on_hold);
    assert_eq!(customer.consult_leg, Some(ContactId("leg".into())));
    assert_eq!(
        (leg.state, leg.consult_of.clone(), leg.preferred_agent.clone()),
        (ContactState::Queued, Some(ContactId("c1".into())), Some(a("bob")))
    );
}

#[test]
fn consult_refusals() {
    let (customer, leg) = consulting();
    let to = Target { queue: "sales".into(), agent: None };
    let q = queue("sales");
    let again = consult::consult(&customer, &a("ana"), &to, &q, ContactId("x".into()), 1).unwrap_err();
    assert_eq!(again, Refusal::AlreadyConsulting("tenants/acme/contacts/leg".into()));
    let mut leg_connected = leg.clone();
    leg_connected.state = ContactState::Connected;
    leg_connected.agent = Some(a("bob"));
    let on_leg = consult::consult(&leg_connected, &a("bob"), &to, &q, ContactId("x".into()), 1).unwrap_err();
    assert_eq!(on_leg, Refusal::LegCannotConsult);
    let other = consult::consult(&connected("ana"), &a("bob"), &to, &q, ContactId("x".into()), 1).unwrap_err();
    assert_eq!(other, Refusal::NotHeldByAgent);
}

#[test]
fn complete_consult_transfer_hands_over_and_moves_the_booking() {
    let (customer, _) = consulting();
    let leg = ContactId("leg".into());
    let change =
        consult::complete_consult(&customer, &a("ana"), &leg, Outcome::Transfer, Some(&a("bob")), 300).unwrap();
    let c = &change.record;
    assert_eq!((c.agent.clone(), c.on_hold, c.consult_leg.clone()), (Some(a("bob")), false, None));
    assert!(change.effects.contains(&Effect::Route(Input::BookingMoved {
        from: leg.clone(),
        to: ContactId("c1".into()),
        agent: a("bob")
    })));
    assert!(change.effects.contains(&Effect::Linked { contact: leg, change: Linked::LegHandedOver }));
    let holders: Vec<_> = c.open_participants().map(|p| p.agent.clone()).collect();
    assert_eq!(holders, [a("bob")]);
}

#[test]
fn complete_consult_conference_and_cancel() {
    let (customer, _) = consulting();
    let leg = ContactId("leg".into());
    let conf =
        consult::complete_consult(&customer, &a("ana"), &leg, Outcome::Conference, Some(&a("bob")), 300).unwrap();
    assert_eq!(conf.record.open_participants().count(), 2);
    let again = consult::complete_consult(&conf.record, &a("ana"), &leg, Outcome::Conference, Some(&a("bob")), 301)
        .unwrap_err();
    assert_eq!(again, Refusal::AlreadyParticipant);
    let cancel = consult::complete_consult(&customer, &a("ana"), &leg, Outcome::Cancel, None, 300).unwrap();
    assert_eq!(cancel.record.consult_leg, None);
    assert!(cancel.effects.contains(&Effect::Linked { contact: leg, change: Linked::LegCancelled }));
}

#[test]
fn complete_consult_refusals() {
    let (customer, leg) = consulting();
    let other = ContactId("other".into());
    let e = consult::complete_consult(&customer, &a("ana"), &other, Outcome::Cancel, None, 1).unwrap_err();
    assert_eq!(e, Refusal::ConsultLegChanged);
    let id = ContactId("leg".into());
    let e = consult::complete_consult(&customer, &a("bob"), &id, Outcome::Cancel, None, 1).unwrap_err();
    assert_eq!(e, Refusal::NotHeldByAgent);
    assert_eq!(consult::consulted_agent(Some(&leg)).unwrap_err(), Refusal::ConsultNotAccepted);
    assert_eq!(consult::consulted_agent(None).unwrap_err(), Refusal::ConsultNotAccepted);
    let e = consult::complete_consult(&customer, &a("ana"), &id, Outcome::Transfer, None, 1).unwrap_err();
    assert_eq!(e, Refusal::ConsultNotAccepted);
}

#[test]
fn linked_changes_close_the_leg_or_end_the_consult_and_refuse_when_overtaken() {
    let (customer, leg) = consulting();
    let closed = consult::linked(&leg, &Linked::LegCancelled, 400).unwrap();
    assert_eq!(closed.record.state, ContactState::Closed);
    assert!(closed.effects.contains(&Effect::Route(Input::ContactWithdrawn { contact: ContactId("leg".into()) })));
    assert_eq!(consult::linked(&customer, &Linked::LegCancelled, 1).unwrap_err(), Refusal::NotALeg);
    let ended = Linked::LegEnded { leg: ContactId("leg".into()), agent: Some(a("bob")) };
    assert_eq!(consult::linked(&customer, &ended, 500).unwrap().record.consult_leg, None);
    let stale = Linked::LegEnded { leg: ContactId("old".into()), agent: None };
    assert_eq!(consult::linked(&customer, &stale, 500).unwrap_err(), Refusal::ConsultOver);
}

#[test]
fn ending_a_contact_with_a_leg_cancels_the_leg() {
    let (customer, _) = consulting();
    let change = contact::end(&customer, 30_000, 600).unwrap();
    assert!(change
        .effects
        .contains(&Effect::Linked { contact: ContactId("leg".into()), change: Linked::LegCancelled }));
}

fn agent_record(state: AgentState) -> Agent {
    Agent {
        id: a("ana"),
        display_name: "Ana".into(),
        queues: vec![QueueRef::new("acme", "sales")],
        skills: Default::default(),
        languages: Vec::new(),
        capacity: vec![ChannelCapacity { channel: Channel::Voice, max_contacts: 1, exclusive: false }],
        max_total_contacts: 0,
        state,
        away_reason: String::new(),
        contacts: Vec::new(),
        state_time: Some(0),
        agent_pool: "default".into(),
        phones: Default::default(),
    }
}

#[test]
fn sign_in_set_state_and_sign_out() {
    let off = agent_record(AgentState::Offline);
    let on =
        agent::set_state(&off, StateCommand::SignIn { available: true }, AgentState::Away, "", |_| false, 1).unwrap();
    assert_eq!(on.record.state, AgentState::Available);
    assert!(on.effects.contains(&Effect::Route(Input::AgentReady { agent: a("ana") })));
    assert!(on.effects.contains(&Effect::AgentEvent(AgentEventKind::SignedIn)));
    let away = agent::set_state(&on.record, StateCommand::Set, AgentState::Away, "lunch", |r| r == "lunch", 2).unwrap();
    assert_eq!((away.record.state, away.record.away_reason.as_str()), (AgentState::Away, "lunch"));
    assert!(away.effects.contains(&Effect::Route(Input::AgentNotReady { agent: a("ana") })));
    let out = agent::set_state(&away.record, StateCommand::SignOut, AgentState::Offline, "", |_| false, 3).unwrap();
    assert_eq!(out.record.state, AgentState::Offline);
}

#[test]
fn state_refusals() {
    let off = agent_record(AgentState::Offline);
    let e = agent::set_state(&off, StateCommand::Set, AgentState::Available, "", |_| true, 1).unwrap_err();
    assert_eq!(e, Refusal::NotSignedIn);
    let mut busy = agent_record(AgentState::Available);
    busy.contacts.push(ContactRef { tenant: TenantId::parse("acme").unwrap(), id: ContactId("c1".into()) });
    let e = agent::set_state(&busy, StateCommand::SignOut, AgentState::Offline, "", |_| true, 1).unwrap_err();
    assert_eq!(e, Refusal::HoldsContacts);
    let on = agent_record(AgentState::Available);
    let e = agent::set_state(&on, StateCommand::Set, AgentState::Away, "nap", |_| false, 1).unwrap_err();
    assert_eq!(e, Refusal::UnknownAwayReason("nap".into()));
}

#[test]
fn not_responding_and_presence_lapse_only_touch_an_available_agent() {
    let on = agent_record(AgentState::Available);
    let nr = agent::not_responding(&on, 5);
    assert_eq!((nr.record.state, nr.record.away_reason.as_str()), (AgentState::Away, "not_responding"));
    assert!(!nr.effects.iter().any(|e| matches!(e, Effect::Route(_))), "routing already knows");
    let lapsed = agent::presence_lapsed(&on, 5);
    assert_eq!(lapsed.record.away_reason, "disconnected");
    assert!(lapsed.effects.contains(&Effect::Route(Input::AgentNotReady { agent: a("ana") })));
    let off = agent_record(AgentState::Offline);
    assert_eq!(agent::presence_lapsed(&off, 5).record, off);
    assert!(agent::presence_lapsed(&off, 5).effects.is_empty());
}

#[test]
fn upsert_keeps_state_and_pins_the_pool_while_busy() {
    let all = |_: &str, _: &str, _: bool| true;
    let input = agent_record(AgentState::Offline);
    let new = agent::upsert(None, &input, "blue", 100_000, &all).unwrap();
    assert_eq!(new.record.agent_pool, "blue");
    let mut signed_in = agent_record(AgentState::Available);
    signed_in.agent_pool = "blue".into();
    let e = agent::upsert(Some(&signed_in), &input, "green", 100_000, &all).unwrap_err();
    assert!(matches!(e, Refusal::PoolPinned { .. }), "{e}");
    let kept = agent::upsert(Some(&signed_in), &input, "blue", 100_000, &all).unwrap();
    assert_eq!(kept.record.state, AgentState::Available);
    let mut long_gone = agent_record(AgentState::Offline);
    long_gone.state_time = Some(0);
    assert_eq!(agent::upsert(Some(&long_gone), &input, "green", 100_000, &all).unwrap().record.agent_pool, "green");
}

#[test]
fn a_phone_registered_with_a_tenant_lets_its_calls_reach_the_agent_until_it_expires() {
    let acme = TenantId::parse("acme").unwrap();
    // Acme has a registrar: only a registered phone reaches ana (no fixed phone).
    let reach = |_: &str, _: &str, registered: bool| registered;
    let profile_of = |c: &Change<Agent>| {
        c.effects.iter().find_map(|e| match e {
            Effect::Route(Input::AgentUpserted(p)) => Some(p.phoneless_tenants.clone()),
            _ => None,
        })
    };
    let ana = agent_record(AgentState::Available);
    assert_eq!(agent::profile(&ana, 0, &reach).phoneless_tenants, ["acme".to_owned()].into());
    let up = agent::phone(&ana, &acme, Some(60_000), 1_000, &reach);
    assert_eq!(up.record.phones.get("acme"), Some(&60_000));
    assert_eq!(profile_of(&up), Some(Default::default()), "routing hears acme's calls reach ana");
    assert!(up
        .effects
        .contains(&Effect::Schedule { timer: Timer::Phone { tenant: acme.clone(), agent: a("ana") }, due: 60_000 }));
    // A refresh moves the expiry and tells routing nothing.
    let refreshed = agent::phone(&up.record, &acme, Some(120_000), 50_000, &reach);
    assert_eq!(refreshed.record.phones.get("acme"), Some(&120_000));
    assert_eq!(profile_of(&refreshed), None);
    // The old timer fires after the refresh: nothing happens.
    let early = agent::phone_lapsed(&refreshed.record, &acme, 60_000, &reach);
    assert_eq!(early.record, refreshed.record);
    assert!(early.effects.is_empty());
    // At the expiry the phone is gone and routing hears so.
    let lapsed = agent::phone_lapsed(&refreshed.record, &acme, 120_000, &reach);
    assert!(lapsed.record.phones.is_empty());
    assert_eq!(profile_of(&lapsed), Some(["acme".to_owned()].into()));
    // An unregister removes it at once and cancels the timer.
    let gone = agent::phone(&up.record, &acme, None, 2_000, &reach);
    assert!(gone.record.phones.is_empty());
    assert_eq!(profile_of(&gone), Some(["acme".to_owned()].into()));
    assert!(gone.effects.contains(&Effect::Cancel(Timer::Phone { tenant: acme.clone(), agent: a("ana") })));
    // An upsert keeps the phones, and its profile says what reaches the agent now.
    let mut input = agent_record(AgentState::Offline);
    input.max_total_contacts = 2;
    let kept = agent::upsert(Some(&up.record), &input, "default", 3_000, &reach).unwrap();
    assert_eq!(kept.record.phones, up.record.phones);
    assert_eq!(profile_of(&kept), Some(Default::default()));
    assert_eq!(
        profile_of(&agent::upsert(Some(&up.record), &input, "default", 70_000, &reach).unwrap()),
        Some(["acme".to_owned()].into()),
        "upserted after the expiry"
    );
}

#[test]
fn offer_verdicts() {
    let queued = new_contact("c1", 0);
    let mut ana = agent_record(AgentState::Available);
    assert_eq!(offer_verdict(Some(&queued), Some(&ana), 0, 15_000, 10), OfferVerdict::Make);
    assert_eq!(offer_verdict(Some(&offered("bob")), Some(&ana), 0, 15_000, 10), OfferVerdict::Stale);
    assert_eq!(offer_verdict(None, Some(&ana), 0, 15_000, 10), OfferVerdict::Stale);
    assert!(matches!(
        offer_verdict(Some(&queued), Some(&ana), 0, 15_000, 14_500),
        OfferVerdict::Void { same_pool: true, .. }
    ));
    ana.agent_pool = "other".into();
    assert!(matches!(
        offer_verdict(Some(&queued), Some(&ana), 0, 15_000, 10),
        OfferVerdict::Void { same_pool: false, agent_available: true, .. }
    ));
    let away = agent_record(AgentState::Away);
    assert!(matches!(
        offer_verdict(Some(&queued), Some(&away), 0, 15_000, 10),
        OfferVerdict::Void { agent_available: false, .. }
    ));
}

#[test]
fn erase_removes_the_customers_identities_and_attributes_and_nothing_else() {
    use centralita_platform::identity::{Identity, Kind};
    let mut c = connected("ana");
    c.customer_identities = vec![
        Identity { kind: Kind::Phone, value: "+34600111222".into() },
        Identity { kind: Kind::Email, value: "someone@example.com".into() },
    ];
    c.attributes.insert("account_holder".into(), "Ana Pérez".into());
    c.disposition = "resolved".into();
    c.wrap_up_notes = "Ana will call back".into();
    let change = contact::erase(&c).unwrap();
    assert!(change.effects.is_empty(), "an erasure has no effects: {:?}", change.effects);
    let erased = change.record;
    assert!(erased.customer_identities.is_empty());
    assert!(erased.attributes.is_empty());
    // The rest is the contact-center's work: a live contact goes on as it was.
    let mut expected = c.clone();
    expected.customer_identities.clear();
    expected.attributes.clear();
    expected.wrap_up_notes.clear();
    assert_eq!(erased, expected);
    assert_eq!((erased.state, erased.agent.clone()), (ContactState::Connected, Some(a("ana"))));
    // Idempotent: once erased there is nothing left to write.
    assert_eq!(contact::erase(&erased), Err(Refusal::NothingToErase));
    assert_eq!(contact::erase(&new_contact("c2", 0)), Err(Refusal::NothingToErase));
    // Attributes alone are erased too.
    let mut only_attributes = new_contact("c3", 0);
    only_attributes.attributes.insert("note".into(), "x".into());
    assert!(contact::erase(&only_attributes).unwrap().record.attributes.is_empty());
    // And notes alone.
    let mut only_notes = new_contact("c4", 0);
    only_notes.wrap_up_notes = "x".into();
    assert!(contact::erase(&only_notes).unwrap().record.wrap_up_notes.is_empty());
}

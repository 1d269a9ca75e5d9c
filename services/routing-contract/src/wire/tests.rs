//! Tests of the wire conversions.
use super::*;

fn queue(q: &str) -> QueueRef {
    QueueRef::new("acme", q)
}

fn contact() -> QueuedContact {
    QueuedContact {
        id: "c1".into(),
        queue: queue("support"),
        channel: Channel::Chat,
        priority: 10,
        aging_per_minute: 2,
        enqueued_at: 1_700_000_000_123,
        steps: vec![
            Step {
                after_ms: 0,
                requirements: vec![
                    Requirement::Skill { name: "billing".into(), min_proficiency: 4 },
                    Requirement::Language("es".into()),
                ],
            },
            Step { after_ms: 30_000, requirements: vec![] },
        ],
        preferred: Some(("a1".into(), 1_700_000_030_123)),
        offer_timeout_ms: 15_000,
        max_wait: Some(MaxWait { after_ms: 600_000, overflow_to: Some(queue("overflow")) }),
        excluded: vec!["a2".into()],
    }
}

fn round_trip_input(input: Input) {
    let back = Input::try_from(pb::RoutingInput::from(&input));
    assert_eq!(back, Ok(input));
}

#[test]
fn every_input_survives_the_wire() {
    let (c, a) = (ContactId::from("c1"), AgentId::from("a1"));
    round_trip_input(Input::AgentUpserted(AgentProfile {
        id: a.clone(),
        queues: [queue("support"), QueueRef::new("globex", "sales")].into(),
        skills: [("billing".to_owned(), 5), ("returns".to_owned(), 1)].into(),
        languages: ["en".to_owned(), "es".to_owned()].into(),
        capacity: CapacityProfile {
            limits: [(Channel::Voice, 1), (Channel::Chat, 3)].into(),
            exclusive: [Channel::Voice].into(),
            max_total: 3,
        },
        phoneless_tenants: ["globex".to_owned()].into(),
    }));
    round_trip_input(Input::AgentReady { agent: a.clone() });
    round_trip_input(Input::AgentNotReady { agent: a.clone() });
    round_trip_input(Input::ContactQueued(contact()));
    round_trip_input(Input::ContactQueued(QueuedContact { preferred: None, max_wait: None, ..contact() }));
    round_trip_input(Input::ContactWithdrawn { contact: c.clone() });
    round_trip_input(Input::OfferAccepted { contact: c.clone(), agent: a.clone() });
    round_trip_input(Input::OfferDeclined { contact: c.clone(), agent: a.clone(), not_responding: true });
    round_trip_input(Input::OfferUndelivered { contact: c.clone(), agent: a.clone() });
    round_trip_input(Input::ContactReleased { contact: c.clone(), agent: a.clone() });
    round_trip_input(Input::BookingMoved { from: c, to: "c2".into(), agent: a });
    round_trip_input(Input::Tick);
}

#[test]
fn every_decision_survives_the_wire() {
    for d in [
        Decision::Offer {
            contact: "c1".into(),
            agent: "a1".into(),
            queue: queue("support"),
            channel: Channel::Voice,
            expires_at: 1_700_000_015_000,
        },
        Decision::Overflow { contact: "c1".into(), from: queue("support"), to: queue("overflow") },
        Decision::TimedOut { contact: "c1".into(), queue: queue("support") },
    ] {
        assert_eq!(Decision::try_from(pb::RoutingDecision::from(&d)), Ok(d));
    }
}

#[test]
fn instants_keep_their_millisecond_on_both_sides_of_the_epoch() {
    for ms in [0, 1, 999, 1_000, 1_700_000_000_123, -1, -999, -1_001] {
        let t = millis_to_pb(ms);
        assert!((0..1_000_000_000).contains(&t.nanos), "{t:?}");
        assert_eq!(millis_from_pb(&t), ms);
    }
}

fn span(seconds: i64, nanos: i32) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds, nanos })
}

#[test]
#[allow(deprecated)]
fn queued_contacts_write_both_forms_of_their_spans() {
    let c = pb::QueuedContact::from(&contact());
    assert_eq!((c.offer_timeout_ms, c.offer_timeout), (15_000, span(15, 0)));
    assert_eq!((c.max_wait_ms, c.max_wait), (600_000, span(600, 0)));
    let steps: Vec<_> = c.steps.iter().map(|s| (s.after_ms, s.after)).collect();
    assert_eq!(steps, [(0, span(0, 0)), (30_000, span(30, 0))]);
    // No maximum wait: zero milliseconds, and no Duration.
    let c = pb::QueuedContact::from(&QueuedContact { max_wait: None, ..contact() });
    assert_eq!((c.max_wait_ms, c.max_wait), (0, None));
}

#[test]
#[allow(deprecated)]
fn queued_contacts_read_the_duration_when_it_is_set() {
    let mut c = pb::QueuedContact::from(&contact());
    c.offer_timeout_ms = 0;
    c.max_wait_ms = 0;
    c.offer_timeout = span(20, 500_000_000);
    c.max_wait = span(90, 0);
    for s in &mut c.steps {
        s.after_ms = 0;
    }
    c.steps[1].after = span(45, 999_999);
    let read = QueuedContact::try_from(c).unwrap();
    assert_eq!(read.offer_timeout_ms, 20_500);
    assert_eq!(read.max_wait.map(|m| m.after_ms), Some(90_000));
    assert_eq!(read.steps.iter().map(|s| s.after_ms).collect::<Vec<_>>(), [0, 45_000]);
    // The Duration wins over a deprecated field that disagrees; a zero one means no
    // maximum wait, as zero milliseconds did.
    let mut c = pb::QueuedContact::from(&contact());
    c.offer_timeout = span(5, 0);
    c.max_wait = span(0, 0);
    let read = QueuedContact::try_from(c).unwrap();
    assert_eq!((read.offer_timeout_ms, read.max_wait), (5_000, None));
}

#[test]
#[allow(deprecated)]
fn queued_contacts_written_before_the_durations_still_read() {
    // What a writer older than the Duration fields put on the input log.
    let old = pb::QueuedContact {
        offer_timeout: None,
        max_wait: None,
        steps: pb::QueuedContact::from(&contact()).steps.into_iter().map(|s| pb::Step { after: None, ..s }).collect(),
        ..pb::QueuedContact::from(&contact())
    };
    assert_eq!(old.steps[1].after_ms, 30_000);
    let input = pb::RoutingInput { input: Some(pb::routing_input::Input::ContactQueued(old)) };
    let bytes = prost::Message::encode_to_vec(&input);
    let decoded: pb::RoutingInput = prost::Message::decode(bytes.as_slice()).unwrap();
    assert_eq!(Input::try_from(decoded), Ok(Input::ContactQueued(contact())));
    let no_max_wait = pb::QueuedContact { max_wait: None, ..pb::QueuedContact::from(&contact()) };
    let no_max_wait = pb::QueuedContact { max_wait_ms: 0, ..no_max_wait };
    assert_eq!(QueuedContact::try_from(no_max_wait).map(|c| c.max_wait), Ok(None));
}

#[test]
fn spans_keep_their_millisecond_and_malformed_durations_are_refused() {
    for ms in [0, 1, 999, 1_000, 15_000, 86_400_123, -1, -1_001] {
        let d = duration_to_pb(ms);
        assert!(d.seconds == 0 || d.nanos == 0 || (d.seconds > 0) == (d.nanos > 0), "{d:?}");
        assert_eq!(duration_from_pb(&d, "x"), Ok(ms));
    }
    // Finer than a millisecond is dropped.
    assert_eq!(duration_from_pb(&span(1, 999_999).unwrap(), "x"), Ok(1_000));
    for bad in [span(1, -1), span(-1, 1), span(0, 1_000_000_000), span(0, i32::MIN), span(i64::MIN, 0)] {
        assert_eq!(duration_from_pb(&bad.unwrap(), "x"), Err(WireError::Duration("x")));
    }
    let mut c = pb::QueuedContact::from(&contact());
    c.offer_timeout = span(1, -5);
    assert_eq!(
        QueuedContact::try_from(c).map_err(|e| e.to_string()),
        Err("offer_timeout is not a well-formed duration".into())
    );
    let mut c = pb::QueuedContact::from(&contact());
    c.steps[1].after = span(0, 2_000_000_000);
    assert_eq!(QueuedContact::try_from(c), Err(WireError::Duration("step after")));
}

#[test]
fn every_channel_survives_the_wire() {
    for c in Channel::ALL {
        assert_eq!(channel_from_pb(channel_to_pb(c) as i32), Ok(c));
    }
    assert_eq!(channel_from_pb(PbChannel::Unspecified as i32), Err(WireError::UnknownChannel(0)));
}

#[test]
fn a_record_that_does_not_convert_is_refused_whole() {
    fn queued(f: impl FnOnce(&mut pb::QueuedContact)) -> Result<Input, String> {
        let mut c = pb::QueuedContact::from(&contact());
        f(&mut c);
        Input::try_from(pb::RoutingInput { input: Some(pb::routing_input::Input::ContactQueued(c)) })
            .map_err(|e| e.to_string())
    }
    assert_eq!(queued(|c| c.queue = None), Err("queue is missing".into()));
    assert_eq!(queued(|c| c.queue.as_mut().unwrap().queue.clear()), Err("queue needs a tenant and a queue id".into()));
    assert_eq!(queued(|c| c.channel = 99), Err("unknown channel 99".into()));
    assert_eq!(queued(|c| c.enqueue_time = None), Err("enqueue_time is missing".into()));
    assert_eq!(queued(|c| c.steps[0].requirements[0].requirement = None), Err("empty requirement".into()));
    let skill = pb::SkillLevel { skill: "billing".into(), min_proficiency: 300 };
    let requirement = pb::Requirement { requirement: Some(pb::requirement::Requirement::Skill(skill)) };
    assert_eq!(queued(|c| c.steps[0].requirements[0] = requirement), Err("proficiency 300 is out of range".into()));
    assert_eq!(
        Input::try_from(pb::RoutingInput { input: None }).map_err(|e| e.to_string()),
        Err("empty routing input".into())
    );
    assert_eq!(
        Decision::try_from(pb::RoutingDecision { decision: None }).map_err(|e| e.to_string()),
        Err("empty routing decision".into())
    );
}

/// Hostile input: a routing input or decision read from the log, its bytes mutated at
/// random, converts or is refused with a reason — never a panic — and what converts
/// converts back to itself.
mod hostile {
    use super::*;
    use proptest::prelude::*;

    fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8)]) -> Vec<u8> {
        for (at, b) in edits {
            let at = at % bytes.len().max(1);
            if let Some(x) = bytes.get_mut(at) {
                *x = *b;
            }
        }
        bytes
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn mutated_inputs_convert_or_are_refused(edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
            let valid = prost::Message::encode_to_vec(&pb::RoutingInput::from(&Input::ContactQueued(contact())));
            if let Ok(wire) = <pb::RoutingInput as prost::Message>::decode(mutate(valid, &edits).as_slice()) {
                if let Ok(input) = Input::try_from(wire) {
                    prop_assert_eq!(Input::try_from(pb::RoutingInput::from(&input)).expect("converts back"), input);
                }
            }
        }

        #[test]
        fn mutated_decisions_convert_or_are_refused(edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
            let offer = Decision::Offer {
                contact: "c1".into(),
                agent: "a1".into(),
                queue: queue("support"),
                channel: Channel::Voice,
                expires_at: 1_700_000_015_000,
            };
            let valid = prost::Message::encode_to_vec(&pb::RoutingDecision::from(&offer));
            if let Ok(wire) = <pb::RoutingDecision as prost::Message>::decode(mutate(valid, &edits).as_slice()) {
                if let Ok(d) = Decision::try_from(wire) {
                    prop_assert_eq!(Decision::try_from(pb::RoutingDecision::from(&d)).expect("converts back"), d);
                }
            }
        }
    }
}

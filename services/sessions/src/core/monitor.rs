//! A supervisor on a call: listening (hears both parties, heard by no one), whispering
//! (heard by the agent only) or barging in (a three-way call). One supervisor at a time
//! per contact: a second is refused while the first is on (it sees who in the contact).
//! The supervisor changes mode while on, and stops. Only a connected voice call that is a
//! customer's contact (not a consult leg) can be monitored; the contact carries its
//! monitor (output only) and each step is an event on the contacts topic. Media follows:
//! it rings the supervisor's phone and mixes accordingly.

use super::contact::{event, step};
use super::effects::{Change, ContactEventKind as Kind};
use super::lifecycle::Action;
use super::model::{Channel, Contact, Millis, Monitor, MonitorMode};
use super::refusal::Refusal;

/// `supervisor` monitors contact `c` in `mode`, or changes its mode.
pub fn monitor(c: &Contact, supervisor: &str, mode: MonitorMode, now: Millis) -> Result<Change<Contact>, Refusal> {
    let mut change = step(c, Action::Monitor)?;
    if c.channel != Channel::Voice || c.consult_of.is_some() {
        return Err(Refusal::NotACustomerCall);
    }
    let kind = match &c.monitor {
        Some(m) if m.supervisor != supervisor => return Err(Refusal::MonitoredByAnother(m.supervisor.clone())),
        Some(m) if m.mode == mode => return Err(Refusal::AlreadyMonitoring),
        Some(_) => Kind::MonitorChanged,
        None => Kind::MonitorStarted,
    };
    let since = c.monitor.as_ref().map_or(now, |m| m.since);
    change.record.monitor = Some(Monitor { supervisor: supervisor.to_owned(), mode, since });
    change.push(event(kind, None));
    Ok(change)
}

/// `supervisor` stops monitoring contact `c`.
pub fn stop_monitoring(c: &Contact, supervisor: &str) -> Result<Change<Contact>, Refusal> {
    let mut change = step(c, Action::Monitor)?;
    match &c.monitor {
        Some(m) if m.supervisor == supervisor => {}
        _ => return Err(Refusal::NotMonitoring),
    }
    change.record.monitor = None;
    change.push(event(Kind::MonitorStopped, None));
    Ok(change)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::contact;
    use crate::core::effects::Effect;
    use crate::core::model::{ContactState, OfferId};
    use crate::core::tests::{a, new_contact};

    fn connected() -> Contact {
        let offered = contact::offer(&new_contact("c1", 0), &a("ana"), OfferId("o1".into()), 15_000).unwrap().record;
        contact::accept(&offered, &a("ana"), &OfferId("o1".into()), 100).unwrap().record
    }

    fn kinds(change: &Change<Contact>) -> Vec<Kind> {
        change
            .effects
            .iter()
            .filter_map(|e| match e {
                Effect::ContactEvent { kind, .. } => Some(*kind),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_supervisor_listens_then_whispers_then_barges_then_stops() {
        let c = connected();
        let on = monitor(&c, "sue", MonitorMode::Listen, 1_000).expect("monitors");
        assert_eq!(kinds(&on), [Kind::MonitorStarted]);
        assert_eq!(
            on.record.monitor,
            Some(Monitor { supervisor: "sue".into(), mode: MonitorMode::Listen, since: 1_000 })
        );
        assert_eq!(on.record.state, ContactState::Connected);
        let whisper = monitor(&on.record, "sue", MonitorMode::Whisper, 2_000).expect("changes");
        assert_eq!(kinds(&whisper), [Kind::MonitorChanged]);
        let barge = monitor(&whisper.record, "sue", MonitorMode::Barge, 3_000).expect("changes");
        assert_eq!(barge.record.monitor.as_ref().map(|m| (m.mode, m.since)), Some((MonitorMode::Barge, 1_000)));
        // The call ending or transferred takes the supervisor off.
        assert_eq!(contact::end(&barge.record, 30_000, 4_000).expect("ends").record.monitor, None);
        let to = contact::Target { queue: "sales".into(), agent: None };
        let transferred = contact::transfer(&barge.record, &a("ana"), &to, &crate::core::tests::queue("sales"), 4_000);
        assert_eq!(transferred.expect("transfers").record.monitor, None);
        let off = stop_monitoring(&barge.record, "sue").expect("stops");
        assert_eq!(kinds(&off), [Kind::MonitorStopped]);
        assert_eq!(off.record.monitor, None);
        // Nothing else changes: no routing input, no agent notice.
        assert!(off.effects.iter().all(|e| matches!(e, Effect::ContactEvent { .. })));
    }

    #[test]
    fn monitoring_refusals() {
        let c = connected();
        let on = monitor(&c, "sue", MonitorMode::Whisper, 1_000).expect("monitors").record;
        assert_eq!(monitor(&on, "sue", MonitorMode::Whisper, 2), Err(Refusal::AlreadyMonitoring));
        assert_eq!(monitor(&on, "tom", MonitorMode::Listen, 2), Err(Refusal::MonitoredByAnother("sue".into())));
        assert_eq!(stop_monitoring(&on, "tom"), Err(Refusal::NotMonitoring));
        assert_eq!(stop_monitoring(&c, "sue"), Err(Refusal::NotMonitoring));
        // Not connected: queued, offered, after-contact work.
        let queued = new_contact("c2", 0);
        assert!(matches!(monitor(&queued, "sue", MonitorMode::Listen, 1), Err(Refusal::IllegalMove { .. })));
        let ended = contact::end(&c, 30_000, 500).expect("ends").record;
        assert!(matches!(monitor(&ended, "sue", MonitorMode::Listen, 1), Err(Refusal::IllegalMove { .. })));
        // Not a call, or a consult leg.
        let mut chat = c.clone();
        chat.channel = Channel::Chat;
        assert_eq!(monitor(&chat, "sue", MonitorMode::Listen, 1), Err(Refusal::NotACustomerCall));
        let mut leg = c.clone();
        leg.consult_of = Some(crate::core::model::ContactId("c0".into()));
        assert_eq!(monitor(&leg, "sue", MonitorMode::Listen, 1), Err(Refusal::NotACustomerCall));
    }
}

//! The contacts topic folded into interactions: one row per contact, linked to the
//! customer its identities resolve to (found or created), with the agent holding it now
//! (for screen-pop), the agents that handled it, times, disposition and wrap-up notes.
//!
//! The events carry no personal data (issue 23): the identities and the wrap-up notes are
//! read from sessions' record of the contact ([`crate::sessions`]) when an event says there
//! are some (`customer_identified`, `has_notes`) and the CRM still needs them. Identities or
//! notes an old event still carries are never read: once sessions' record is erased or
//! expired there is nothing to link, so a replay cannot recreate an erased person.
//!
//! Each event is applied once: its id is recorded in the transaction that applies it, so a
//! redelivery or a replay from the start changes nothing. Contacts of an erased customer
//! are remembered and their events ignored, so a replay cannot bring the customer back.

use std::sync::Arc;

use centralita_platform::bus::{
    BatchConsumer, BatchHandler, ConsumerSettings, Event, EventPayload, FETCH_WAIT_DEFAULT,
};
use centralita_platform::error::Error;
use centralita_platform::identity::Identity;
use centralita_platform::metrics::Metrics;
use centralita_platform::tenant::{from_timestamp, parse_contact_name};
use centralita_proto::sessions::v1::{self as spb, contact_event::Kind, ContactState};
use deadpool_postgres::{Object, Pool};
use tokio::sync::watch;

use crate::metrics::{Entry, Source};
use crate::sessions::{ContactDetails, ContactReader};
use crate::store::{self, InteractionRow};

/// Folds contact events into interactions; bumps `applied` after every batch so waiting
/// screen-pops look again.
#[derive(Debug)]
pub struct ContactEvents {
    pub pool: Pool,
    pub applied: Arc<watch::Sender<u64>>,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Sessions' contact records; `None` (not configured): contacts are not linked to
    /// customers and wrap-up notes are not kept.
    pub sessions: Option<Arc<ContactReader>>,
}

pub fn consumer(
    brokers: &str,
    group_id: String,
    topic: String,
    group_instance_id: Option<String>,
    handler: ContactEvents,
    metrics: Option<Arc<Metrics>>,
) -> Result<BatchConsumer<ContactEvents>, Error> {
    BatchConsumer::new(
        ConsumerSettings {
            brokers: brokers.into(),
            group_id,
            topics: vec![topic],
            fetch_wait: FETCH_WAIT_DEFAULT,
            group_instance_id,
        },
        handler,
        500,
        std::time::Duration::from_millis(5),
        metrics,
    )
}

impl BatchHandler for ContactEvents {
    async fn handle_batch(&mut self, events: &[Event]) -> Result<(), Error> {
        let mut client = self.pool.get().await?;
        for e in events {
            let applied = apply(&mut client, e, self.sessions.as_deref()).await?;
            if let Some(created) = applied.resolved {
                self.metrics.customer_resolved(Source::ContactEvent, created);
            }
            if applied.written {
                self.metrics.entry_written(Entry::Interaction);
            }
        }
        self.applied.send_modify(|n| *n = n.wrapping_add(1));
        Ok(())
    }
}

pub fn state_name(state: i32) -> &'static str {
    match ContactState::try_from(state).unwrap_or(ContactState::Unspecified) {
        ContactState::Unspecified => "unspecified",
        ContactState::Queued => "queued",
        ContactState::Offered => "offered",
        ContactState::Connected => "connected",
        ContactState::AfterContactWork => "after_contact_work",
        ContactState::Closed => "closed",
        ContactState::Abandoned => "abandoned",
        ContactState::TimedOut => "timed_out",
    }
}

/// What applying one event did (committed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// The contact's interaction was written; false when the event was skipped, applied
    /// before, or of an erased customer's contact.
    pub written: bool,
    /// The event resolved the contact's customer: `Some(true)` when it created the profile.
    pub resolved: Option<bool>,
}

/// Applies one event in its own transaction. A payload that cannot be read is skipped
/// (logged): retrying it would never succeed. Database errors, and sessions unreachable when
/// its record is needed, are returned, and the batch is retried.
pub async fn apply(client: &mut Object, event: &Event, sessions: Option<&ContactReader>) -> Result<Applied, Error> {
    if event.type_name != spb::ContactEvent::TYPE {
        return Ok(Applied::default());
    }
    let ce: spb::ContactEvent = match event.payload() {
        Ok(ce) => ce,
        Err(e) => {
            tracing::warn!(error = %e, event_id = %event.id, "skipping unreadable contact event");
            return Ok(Applied::default());
        }
    };
    let c = ce.contact.clone().unwrap_or_default();
    let tenant = event.tenant.as_str();
    let Some(contact_id) =
        parse_contact_name("contact", &c.name).ok().filter(|(t, _)| *t == event.tenant).map(|(_, id)| id)
    else {
        tracing::warn!(event_id = %event.id, contact = %c.name, "skipping contact event for another tenant or without a contact");
        return Ok(Applied::default());
    };
    let tx = store::begin(client, &event.tenant).await?;
    if !store::first_application(&tx, tenant, &event.id.to_string()).await?
        || store::is_erased_contact(&tx, tenant, &contact_id).await?
    {
        tx.commit().await?;
        return Ok(Applied::default());
    }
    let created_at = c.create_time.as_ref().and_then(from_timestamp).unwrap_or(event.occurred_at);
    let mut row = match store::interaction(&tx, tenant, &contact_id).await? {
        Some(row) => row,
        None => InteractionRow::new(contact_id.clone(), created_at),
    };
    let mut resolved = None;
    // An event of a sessions release before issue 23 still carries identities: they say
    // there are some (never read here).
    let identified = ce.customer_identified || !c.customer_identities.is_empty();
    let wants_identities = row.customer_id.is_none() && identified;
    let wants_notes = Kind::try_from(ce.kind) == Ok(Kind::WrappedUp) && ce.has_notes;
    let details = match sessions {
        Some(s) if wants_identities || wants_notes => s.read(&event.tenant, &c.name).await?.unwrap_or_default(),
        _ => ContactDetails::default(),
    };
    if wants_identities && !details.identities.is_empty() {
        let ids: Vec<Identity> = details
            .identities
            .iter()
            .filter_map(|i| match Identity::parse(i, "") {
                Ok(id) => Some(id),
                Err(e) => {
                    tracing::warn!(error = %e, contact = %contact_id, "ignoring a malformed identity on a contact event");
                    None
                }
            })
            .collect();
        if !ids.is_empty() {
            let r = store::resolve(&tx, tenant, &ids, "").await?;
            row.customer_id = Some(r.root);
            resolved = Some(r.created);
        }
    }
    fold(&mut row, &ce, &c, &details.wrap_up_notes);
    store::write_interaction(&tx, tenant, &row).await?;
    tx.commit().await?;
    Ok(Applied { written: true, resolved })
}

/// The interaction after one event (pure); `notes` are the wrap-up notes read from
/// sessions' record for a wrap-up event (empty: none).
pub fn fold(row: &mut InteractionRow, e: &spb::ContactEvent, c: &spb::Contact, notes: &str) {
    row.channel = i16::try_from(c.channel).unwrap_or(0);
    row.direction = match spb::Direction::try_from(c.direction).unwrap_or(spb::Direction::Unspecified) {
        spb::Direction::Outbound => "outbound",
        _ => "inbound",
    }
    .into();
    row.queue.clone_from(&c.queue);
    row.state = state_name(c.state).into();
    let holds = matches!(
        ContactState::try_from(c.state),
        Ok(ContactState::Offered | ContactState::Connected | ContactState::AfterContactWork)
    );
    row.holder = if holds { c.agent_id.clone() } else { String::new() };
    // The agents who talked with the customer: who accepted, who was conferenced in, who
    // took the contact over in a warm transfer (the event names the agent that left).
    let joined = match Kind::try_from(e.kind) {
        Ok(Kind::Accepted) => Some(if e.agent_id.is_empty() { &c.agent_id } else { &e.agent_id }),
        Ok(Kind::Conferenced) => Some(&e.agent_id),
        Ok(Kind::HandedOver) => Some(&c.agent_id),
        _ => None,
    };
    if let Some(agent) = joined {
        if !agent.is_empty() && row.agents.last() != Some(agent) {
            row.agents.push(agent.clone());
        }
    }
    if row.connected_at.is_none() {
        row.connected_at = c.connect_time.as_ref().and_then(from_timestamp);
    }
    if let Some(t) = c.end_time.as_ref().and_then(from_timestamp) {
        row.ended_at = Some(t);
    }
    if !c.disposition.is_empty() {
        row.disposition.clone_from(&c.disposition);
    }
    if Kind::try_from(e.kind) == Ok(Kind::WrappedUp) && !notes.is_empty() {
        notes.clone_into(&mut row.wrap_up_notes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> InteractionRow {
        InteractionRow::new("c1".into(), chrono::DateTime::from_timestamp(0, 0).unwrap_or_default())
    }

    fn step(r: &mut InteractionRow, kind: Kind, state: ContactState, agent: &str, notes: &str) {
        let c = spb::Contact {
            queue: "support".into(),
            channel: 1,
            state: state as i32,
            agent_id: agent.into(),
            connect_time: (state == ContactState::Connected)
                .then_some(prost_types::Timestamp { seconds: 10, nanos: 0 }),
            disposition: if kind == Kind::WrappedUp { "resolved".into() } else { String::new() },
            ..Default::default()
        };
        let e = spb::ContactEvent {
            kind: kind as i32,
            contact: Some(c.clone()),
            agent_id: agent.into(),
            has_notes: !notes.is_empty(),
            ..Default::default()
        };
        fold(r, &e, &c, notes);
    }

    #[test]
    fn conferenced_and_warm_transfer_agents_join_the_interaction() {
        let mut r = row();
        step(&mut r, Kind::Accepted, ContactState::Connected, "a1", "");
        step(&mut r, Kind::Conferenced, ContactState::Connected, "a2", "");
        // A warm transfer: the event names the agent that left, the contact the new holder.
        let c = spb::Contact { state: ContactState::Connected as i32, agent_id: "a2".into(), ..Default::default() };
        let e = spb::ContactEvent {
            kind: Kind::HandedOver as i32,
            contact: Some(c.clone()),
            agent_id: "a1".into(),
            ..Default::default()
        };
        fold(&mut r, &e, &c, "");
        assert_eq!(r.agents, vec!["a1".to_string(), "a2".to_string()]);
        assert_eq!(r.holder, "a2");
        let mut direct = row();
        step(&mut direct, Kind::Accepted, ContactState::Connected, "a1", "");
        let c = spb::Contact { state: ContactState::Connected as i32, agent_id: "a3".into(), ..Default::default() };
        let e = spb::ContactEvent { kind: Kind::HandedOver as i32, contact: Some(c.clone()), ..Default::default() };
        fold(&mut direct, &e, &c, "");
        assert_eq!(direct.agents, vec!["a1".to_string(), "a3".to_string()]);
    }

    #[test]
    fn the_holder_is_the_agent_while_offered_connected_or_wrapping_up() {
        let mut r = row();
        step(&mut r, Kind::Queued, ContactState::Queued, "", "");
        assert_eq!((r.state.as_str(), r.holder.as_str()), ("queued", ""));
        step(&mut r, Kind::Offered, ContactState::Offered, "a1", "");
        assert_eq!(r.holder, "a1");
        step(&mut r, Kind::NotAnswered, ContactState::Queued, "a1", "");
        assert_eq!(r.holder, "", "a RONA'd offer is no longer held");
        step(&mut r, Kind::Offered, ContactState::Offered, "a2", "");
        step(&mut r, Kind::Accepted, ContactState::Connected, "a2", "");
        step(&mut r, Kind::Ended, ContactState::AfterContactWork, "a2", "");
        assert_eq!((r.holder.as_str(), r.agents.clone()), ("a2", vec!["a2".to_owned()]));
        step(&mut r, Kind::WrappedUp, ContactState::Closed, "a2", "called back");
        assert_eq!(
            (r.state.as_str(), r.holder.as_str(), r.disposition.as_str(), r.wrap_up_notes.as_str()),
            ("closed", "", "resolved", "called back")
        );
        assert_eq!(r.connected_at.map(|t| t.timestamp()), Some(10));
    }

    #[test]
    fn notes_are_kept_from_a_wrap_up_only() {
        let mut r = row();
        let c = spb::Contact { state: ContactState::Connected as i32, ..Default::default() };
        let e = spb::ContactEvent { kind: Kind::Accepted as i32, contact: Some(c.clone()), ..Default::default() };
        fold(&mut r, &e, &c, "not a wrap-up");
        assert_eq!(r.wrap_up_notes, "");
    }
}

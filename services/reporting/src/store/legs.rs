//! Legs: contact events reduced to facts ([`fact`]) and folded into legs in batches, each
//! event once ([`apply_batch`]); the legs read back for figures.

use std::sync::Arc;

use centralita_platform::bus::{BatchConsumer, BatchHandler, ConsumerSettings, Event, FETCH_WAIT_DEFAULT};
use centralita_platform::db::set_tenant;
use centralita_platform::error::Error;
use centralita_platform::tenant::TenantId;
use centralita_proto::sessions::v1::{self as spb, contact_event::Kind as PbKind};
use centralita_proto::tenancy::v1 as tpb;
use deadpool_postgres::Pool;

use super::tenant_query;
use crate::core::{self, Channel, ContactFact, Kind, Leg, Millis, Outcome, Role};
use crate::metrics::Metrics;

pub(super) const LEG_COLUMNS: &str =
    "tenant, contact_id, seq, queue, channel, enqueued_at, outcome, left_at, agent_id, \
     held_since, hold_ms, ended_at, handled_at, transferred, offers, declines, disposition, role";

pub(super) fn leg_from_row(r: &tokio_postgres::Row) -> Result<Leg, Error> {
    let outcome: i16 = r.try_get(6)?;
    Ok(Leg {
        tenant: r.try_get(0)?,
        contact: r.try_get(1)?,
        seq: r.try_get(2)?,
        queue: r.try_get(3)?,
        channel: {
            let channel: String = r.try_get(4)?;
            Channel::parse(&channel).ok_or_else(|| Error::internal(format!("leg channel {channel}")))?
        },
        enqueued_at: r.try_get(5)?,
        outcome: Outcome::from_i16(outcome).ok_or_else(|| Error::internal(format!("leg outcome {outcome}")))?,
        left_at: r.try_get(7)?,
        agent: r.try_get(8)?,
        held_since: r.try_get(9)?,
        hold_ms: r.try_get(10)?,
        ended_at: r.try_get(11)?,
        handled_at: r.try_get(12)?,
        transferred: r.try_get(13)?,
        offers: r.try_get(14)?,
        declines: r.try_get(15)?,
        disposition: r.try_get(16)?,
        role: {
            let role: i16 = r.try_get(17)?;
            Role::from_i16(role).ok_or_else(|| Error::internal(format!("leg role {role}")))?
        },
    })
}

/// Reduces a contact event to a fact; `None` for kinds reporting does not count.
pub fn fact(event: &Event) -> Result<Option<ContactFact>, Error> {
    let e: spb::ContactEvent = event.payload()?;
    let kind = match PbKind::try_from(e.kind).unwrap_or(PbKind::Unspecified) {
        PbKind::Unspecified => return Ok(None),
        PbKind::Queued => Kind::Queued,
        PbKind::Offered => Kind::Offered,
        PbKind::Accepted => Kind::Accepted,
        PbKind::Rejected => Kind::Rejected,
        PbKind::NotAnswered => Kind::NotAnswered,
        PbKind::Held => Kind::Held,
        PbKind::Resumed => Kind::Resumed,
        PbKind::Transferred => Kind::Transferred,
        PbKind::Ended => Kind::Ended,
        PbKind::WrappedUp => Kind::WrappedUp,
        PbKind::Abandoned => Kind::Abandoned,
        PbKind::Overflowed => Kind::Overflowed,
        PbKind::TimedOut => Kind::TimedOut,
        // The customer waits on hold while its agent consults; a conference takes it off
        // hold. A warm transfer passes it to the consulted agent, on a leg of its own.
        PbKind::ConsultStarted => Kind::Held,
        PbKind::Conferenced => Kind::Resumed,
        PbKind::HandedOver => Kind::HandedOver,
        PbKind::ConsultClosed => Kind::ConsultClosed,
        PbKind::ConsultEnded => return Ok(None),
        // A PCI pause of the call's recording changes no figure.
        PbKind::RecordingPaused | PbKind::RecordingResumed => return Ok(None),
        // A supervisor listening, whispering or barging in is no contact and no handling.
        PbKind::MonitorStarted | PbKind::MonitorChanged | PbKind::MonitorStopped => return Ok(None),
    };
    let c = e.contact.unwrap_or_default();
    let contact = c.name.strip_prefix("contacts/").unwrap_or(&c.name).to_owned();
    if contact.is_empty() || c.queue.is_empty() {
        return Err(Error::invalid("contact", "a contact event names no contact or queue"));
    }
    let millis =
        |t: &Option<prost_types::Timestamp>| t.as_ref().map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000);
    Ok(Some(ContactFact {
        tenant: event.tenant.as_str().to_owned(),
        contact,
        kind,
        queue: c.queue,
        channel: channel(c.channel),
        // The event names the agent that acted; after a hand-over the contact's holder is
        // the one the new leg is for.
        agent: if e.agent_id.is_empty() || kind == Kind::HandedOver { c.agent_id } else { e.agent_id },
        disposition: c.disposition,
        enqueued_at: millis(&c.create_time).or(millis(&c.enqueue_time)),
        // A consult leg is agents talking to each other, not a customer in a queue: it
        // counts only as their busy time.
        consult: !c.consult_of.is_empty(),
        at: event.occurred_at.timestamp_millis(),
    }))
}

/// The domain channel of a `centralita.tenancy.v1.Channel` number (one this build does not
/// know is unspecified).
fn channel(number: i32) -> Channel {
    match tpb::Channel::try_from(number) {
        Ok(tpb::Channel::Voice) => Channel::Voice,
        Ok(tpb::Channel::Chat) => Channel::Chat,
        Ok(tpb::Channel::Sms) => Channel::Sms,
        Ok(tpb::Channel::Email) => Channel::Email,
        Ok(tpb::Channel::Social) => Channel::Social,
        Ok(tpb::Channel::Task) => Channel::Task,
        Ok(tpb::Channel::Unspecified) | Err(_) => Channel::Unspecified,
    }
}

/// A tenant's facts of a batch, each with its event id, in log order.
type TenantFacts = (TenantId, Vec<(String, ContactFact)>);

/// What a batch of contact events changed, once committed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Folded {
    /// Events applied (duplicates and unreadable events are not).
    pub events: usize,
    /// The role of every leg created or changed.
    pub legs_written: Vec<Role>,
    /// How each customer's leg that left its queue in this batch left it.
    pub left_queue: Vec<Outcome>,
}

/// Applies a batch of contact events in one transaction ([`fold_batch`]); how many events
/// were applied.
pub async fn apply_batch(pool: &Pool, events: &[Event]) -> Result<usize, Error> {
    fold_batch(pool, events).await.map(|f| f.events)
}

/// Applies a batch of contact events in one transaction, each at most once: per tenant, the
/// batch's event ids are inserted into `applied_events` in one statement (those already
/// there are skipped), the open legs of the contacts concerned are read in one query, the
/// events folded in order, and the changed legs written back. Unreadable events are
/// skipped (logged).
pub async fn fold_batch(pool: &Pool, events: &[Event]) -> Result<Folded, Error> {
    // Facts grouped by tenant, in log order.
    let mut by_tenant: std::collections::BTreeMap<&str, TenantFacts> = Default::default();
    for event in events {
        match fact(event) {
            Ok(Some(f)) => {
                let entry =
                    by_tenant.entry(event.tenant.as_str()).or_insert_with(|| (event.tenant.clone(), Vec::new()));
                entry.1.push((event.id.to_string(), f));
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, event_id = %event.id, "unreadable contact event skipped"),
        }
    }
    if by_tenant.is_empty() {
        return Ok(Folded::default());
    }
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let mut folded = Folded::default();
    for (tenant, facts) in by_tenant.values() {
        set_tenant(&tx, tenant).await?;
        let ids: Vec<&str> = facts.iter().map(|(id, _)| id.as_str()).collect();
        let fresh: std::collections::HashSet<String> = tx
            .query(
                "INSERT INTO applied_events (event_id, tenant) SELECT DISTINCT unnest($1::text[]), $2 \
                 ON CONFLICT DO NOTHING RETURNING event_id",
                &[&ids, &tenant.as_str()],
            )
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        let mut todo: Vec<&ContactFact> = Vec::new();
        let mut taken = std::collections::HashSet::new();
        for (id, f) in facts {
            // A duplicate within the batch is applied once, at its first place.
            if fresh.contains(id) && taken.insert(id.as_str()) {
                todo.push(f);
            }
        }
        if todo.is_empty() {
            continue;
        }
        let contacts: Vec<&str> = todo.iter().map(|f| f.contact.as_str()).collect();
        // Every leg of those contacts, locked (a contact has a handful); the latest of each
        // is where its next event applies.
        let mut last: std::collections::HashMap<String, Leg> = std::collections::HashMap::new();
        let rows = tx
            .query(
                &format!("SELECT {LEG_COLUMNS} FROM legs WHERE tenant = $1 AND contact_id = ANY ($2) FOR UPDATE"),
                &[&tenant.as_str(), &contacts],
            )
            .await?;
        // How the legs were before the batch: a leg leaves its queue once.
        let mut before: std::collections::HashMap<(String, i32), Outcome> = Default::default();
        for r in &rows {
            let leg = leg_from_row(r)?;
            before.insert((leg.contact.clone(), leg.seq), leg.outcome);
            if last.get(&leg.contact).is_none_or(|l| l.seq < leg.seq) {
                last.insert(leg.contact.clone(), leg);
            }
        }
        let mut changed: std::collections::BTreeMap<(String, i32), Leg> = Default::default();
        for f in &todo {
            let legs = core::apply(last.remove(&f.contact), f);
            for leg in legs {
                changed.insert((leg.contact.clone(), leg.seq), leg.clone());
                last.insert(leg.contact.clone(), leg);
            }
        }
        // Pipelined on the transaction's connection.
        futures::future::try_join_all(changed.values().map(|l| upsert(&tx, l))).await?;
        folded.events += todo.len();
        for (key, leg) in &changed {
            folded.legs_written.push(leg.role);
            let was = before.get(key).copied().unwrap_or(Outcome::Waiting);
            if leg.role.queue_side() && was == Outcome::Waiting && leg.outcome != Outcome::Waiting {
                folded.left_queue.push(leg.outcome);
            }
        }
    }
    tx.commit().await?;
    Ok(folded)
}

async fn upsert(tx: &deadpool_postgres::Transaction<'_>, l: &Leg) -> Result<(), Error> {
    tx.execute(
        &format!(
            "INSERT INTO legs ({LEG_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) \
             ON CONFLICT (tenant, contact_id, seq) DO UPDATE SET queue = EXCLUDED.queue, channel = EXCLUDED.channel, \
             enqueued_at = EXCLUDED.enqueued_at, outcome = EXCLUDED.outcome, left_at = EXCLUDED.left_at, \
             agent_id = EXCLUDED.agent_id, held_since = EXCLUDED.held_since, hold_ms = EXCLUDED.hold_ms, \
             ended_at = EXCLUDED.ended_at, handled_at = EXCLUDED.handled_at, transferred = EXCLUDED.transferred, \
             offers = EXCLUDED.offers, declines = EXCLUDED.declines, disposition = EXCLUDED.disposition, \
             role = EXCLUDED.role"
        ),
        &[
            &l.tenant,
            &l.contact,
            &l.seq,
            &l.queue,
            &l.channel.as_str(),
            &l.enqueued_at,
            &(l.outcome as i16),
            &l.left_at,
            &l.agent,
            &l.held_since,
            &l.hold_ms,
            &l.ended_at,
            &l.handled_at,
            &l.transferred,
            &l.offers,
            &l.declines,
            &l.disposition,
            &(l.role as i16),
        ],
    )
    .await?;
    Ok(())
}

/// Legs of `tenant` that entered a queue in `[from, to)` or whose handling ended in it.
pub async fn legs_between(pool: &Pool, tenant: &TenantId, from: Millis, to: Millis) -> Result<Vec<Leg>, Error> {
    let sql = format!(
        "SELECT {LEG_COLUMNS} FROM legs WHERE tenant = $1 AND ((enqueued_at >= $2 AND enqueued_at < $3) \
         OR (handled_at >= $2 AND handled_at < $3))"
    );
    tenant_query(pool, tenant, &sql, &[&tenant.as_str(), &from, &to]).await?.iter().map(leg_from_row).collect()
}

/// Customers' legs of `tenant` still waiting in a queue.
pub async fn waiting(pool: &Pool, tenant: &TenantId) -> Result<Vec<Leg>, Error> {
    let sql = format!("SELECT {LEG_COLUMNS} FROM legs WHERE tenant = $1 AND outcome = 0 AND role = 0");
    tenant_query(pool, tenant, &sql, &[&tenant.as_str()]).await?.iter().map(leg_from_row).collect()
}

/// The consumer of the contacts topic that folds events into legs (`group_id` decides where
/// it resumes; a new group replays the topic from the start).
pub fn contact_consumer(
    brokers: &str,
    group_id: String,
    topic: String,
    group_instance_id: Option<String>,
    pool: Pool,
    domain: Arc<Metrics>,
    metrics: Option<Arc<centralita_platform::metrics::Metrics>>,
) -> Result<BatchConsumer<ContactEvents>, Error> {
    BatchConsumer::new(
        ConsumerSettings {
            brokers: brokers.into(),
            group_id,
            topics: vec![topic],
            fetch_wait: FETCH_WAIT_DEFAULT,
            group_instance_id,
        },
        ContactEvents { pool, metrics: domain },
        BATCH_MAX,
        BATCH_LINGER,
        metrics,
    )
}

/// Largest batch of contact events applied in one transaction.
const BATCH_MAX: usize = 1000;
/// How long a batch waits for more records after its first (the floor of event→visible).
const BATCH_LINGER: std::time::Duration = std::time::Duration::from_millis(5);

/// The contact-event consumer's handler: batches, each applied in one transaction.
#[derive(Debug, Clone)]
pub struct ContactEvents {
    pub pool: Pool,
    pub metrics: Arc<Metrics>,
}

impl BatchHandler for ContactEvents {
    async fn handle_batch(&mut self, events: &[Event]) -> Result<(), Error> {
        let folded = fold_batch(&self.pool, events).await?;
        self.metrics.folded(&folded);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: PbKind, consult_of: &str) -> Event {
        let contact = spb::Contact {
            name: "tenants/acme/contacts/c1".into(),
            queue: "support".into(),
            agent_id: "ana".into(),
            consult_of: consult_of.into(),
            ..Default::default()
        };
        let e = spb::ContactEvent { kind: kind as i32, contact: Some(contact), ..Default::default() };
        Event::new(TenantId::parse("acme").unwrap(), &e)
    }

    #[test]
    fn a_consult_holds_and_resumes_the_customer_and_its_leg_is_a_consult() {
        let kind = |k: PbKind, of: &str| fact(&event(k, of)).unwrap().map(|f| f.kind);
        assert_eq!(kind(PbKind::ConsultStarted, ""), Some(Kind::Held));
        assert_eq!(kind(PbKind::Conferenced, ""), Some(Kind::Resumed));
        assert_eq!(kind(PbKind::HandedOver, ""), Some(Kind::HandedOver));
        // The hand-over's leg is the new holder's, not the agent that acted.
        let mut e: spb::ContactEvent = event(PbKind::HandedOver, "").payload().unwrap();
        e.agent_id = "the-consulting-agent".into();
        let handed = fact(&Event::new(TenantId::parse("acme").unwrap(), &e)).unwrap().unwrap();
        assert_eq!(handed.agent, "ana");
        assert_eq!(kind(PbKind::ConsultEnded, ""), None);
        // A consult leg's events are facts of a consult.
        let consult = |k: PbKind, of: &str| fact(&event(k, of)).unwrap().map(|f| (f.kind, f.consult));
        assert_eq!(consult(PbKind::Accepted, "tenants/acme/contacts/c0"), Some((Kind::Accepted, true)));
        assert_eq!(consult(PbKind::ConsultClosed, "tenants/acme/contacts/c0"), Some((Kind::ConsultClosed, true)));
        assert_eq!(consult(PbKind::Accepted, ""), Some((Kind::Accepted, false)));
    }

    #[test]
    fn a_supervisor_monitoring_a_call_is_no_fact() {
        for k in [PbKind::MonitorStarted, PbKind::MonitorChanged, PbKind::MonitorStopped] {
            assert_eq!(fact(&event(k, "")).unwrap(), None, "{k:?}");
        }
    }

    #[test]
    fn a_facts_channel_is_the_domain_channel_of_the_contacts_number() {
        let numbered = |n: i32| {
            let mut e: spb::ContactEvent = event(PbKind::Queued, "").payload().unwrap();
            e.contact.as_mut().unwrap().channel = n;
            fact(&Event::new(TenantId::parse("acme").unwrap(), &e)).unwrap().unwrap().channel
        };
        let all = [
            (tpb::Channel::Voice, Channel::Voice),
            (tpb::Channel::Chat, Channel::Chat),
            (tpb::Channel::Sms, Channel::Sms),
            (tpb::Channel::Email, Channel::Email),
            (tpb::Channel::Social, Channel::Social),
            (tpb::Channel::Task, Channel::Task),
            (tpb::Channel::Unspecified, Channel::Unspecified),
        ];
        for (wire, domain) in all {
            assert_eq!(numbered(wire as i32), domain);
        }
        assert_eq!(numbered(99), Channel::Unspecified, "a channel this build does not know");
    }
}

//! Interactions (the timeline's contacts) as the contact events fold them, the ids of the
//! events already applied, and the contacts of erased customers.

use centralita_platform::error::Error;
use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;

/// One contact as the CRM keeps it: what the customer experienced, not the queue maths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InteractionRow {
    pub contact_id: String,
    pub customer_id: Option<String>,
    pub channel: i16,
    pub direction: String,
    pub queue: String,
    pub state: String,
    pub holder: String,
    pub agents: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub connected_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
    pub disposition: String,
    pub wrap_up_notes: String,
}

impl InteractionRow {
    /// A contact's interaction before any of its events is folded in.
    pub fn new(contact_id: String, created_at: DateTime<Utc>) -> Self {
        InteractionRow {
            contact_id,
            customer_id: None,
            channel: 0,
            direction: String::new(),
            queue: String::new(),
            state: String::new(),
            holder: String::new(),
            agents: Vec::new(),
            created_at,
            connected_at: None,
            ended_at: None,
            disposition: String::new(),
            wrap_up_notes: String::new(),
        }
    }
}

const INTERACTION_COLUMNS: &str = "contact_id, customer_id, channel, direction, queue, state, holder, agents, \
     created_at, connected_at, ended_at, disposition, wrap_up_notes";

fn interaction_from_row(r: &tokio_postgres::Row) -> InteractionRow {
    InteractionRow {
        contact_id: r.get(0),
        customer_id: r.get(1),
        channel: r.get(2),
        direction: r.get(3),
        queue: r.get(4),
        state: r.get(5),
        holder: r.get(6),
        agents: r.get(7),
        created_at: r.get(8),
        connected_at: r.get(9),
        ended_at: r.get(10),
        disposition: r.get(11),
        wrap_up_notes: r.get(12),
    }
}

pub async fn interaction(tx: &Transaction<'_>, tenant: &str, contact: &str) -> Result<Option<InteractionRow>, Error> {
    let row = tx
        .query_opt(
            &format!("SELECT {INTERACTION_COLUMNS} FROM interactions WHERE tenant = $1 AND contact_id = $2"),
            &[&tenant, &contact],
        )
        .await?;
    Ok(row.as_ref().map(interaction_from_row))
}

pub async fn interactions(
    tx: &Transaction<'_>,
    tenant: &str,
    family: &[String],
    limit: i64,
) -> Result<Vec<InteractionRow>, Error> {
    let rows = tx
        .query(
            &format!(
                "SELECT {INTERACTION_COLUMNS} FROM interactions WHERE tenant = $1 AND customer_id = ANY($2)
                 ORDER BY created_at DESC, contact_id DESC LIMIT $3"
            ),
            &[&tenant, &family, &limit],
        )
        .await?;
    Ok(rows.iter().map(interaction_from_row).collect())
}

pub async fn write_interaction(tx: &Transaction<'_>, tenant: &str, i: &InteractionRow) -> Result<(), Error> {
    tx.execute(
        &format!(
            "INSERT INTO interactions (tenant, {INTERACTION_COLUMNS})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
             ON CONFLICT (tenant, contact_id) DO UPDATE SET
                 customer_id = EXCLUDED.customer_id, channel = EXCLUDED.channel, direction = EXCLUDED.direction,
                 queue = EXCLUDED.queue, state = EXCLUDED.state, holder = EXCLUDED.holder, agents = EXCLUDED.agents,
                 created_at = EXCLUDED.created_at, connected_at = EXCLUDED.connected_at,
                 ended_at = EXCLUDED.ended_at, disposition = EXCLUDED.disposition,
                 wrap_up_notes = EXCLUDED.wrap_up_notes"
        ),
        &[
            &tenant,
            &i.contact_id,
            &i.customer_id,
            &i.channel,
            &i.direction,
            &i.queue,
            &i.state,
            &i.holder,
            &i.agents,
            &i.created_at,
            &i.connected_at,
            &i.ended_at,
            &i.disposition,
            &i.wrap_up_notes,
        ],
    )
    .await?;
    Ok(())
}

/// Records an event id; false when it was applied before.
pub async fn first_application(tx: &Transaction<'_>, tenant: &str, event_id: &str) -> Result<bool, Error> {
    Ok(tx
        .execute(
            "INSERT INTO applied_events (tenant, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&tenant, &event_id],
        )
        .await?
        == 1)
}

pub async fn is_erased_contact(tx: &Transaction<'_>, tenant: &str, contact: &str) -> Result<bool, Error> {
    Ok(tx
        .query_opt("SELECT 1 FROM erased_contacts WHERE tenant = $1 AND contact_id = $2", &[&tenant, &contact])
        .await?
        .is_some())
}

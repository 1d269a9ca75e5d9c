//! The consent ledger: entries are only added; the one in force for a channel and purpose
//! is the latest effective at the time asked about.

use centralita_platform::error::Error;
use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentRow {
    pub id: String,
    pub customer_id: String,
    pub channel: i16,
    pub purpose: String,
    pub granted: bool,
    pub effective_at: DateTime<Utc>,
    pub source: String,
    pub evidence: String,
    pub recorded_by: String,
    pub recorded_at: DateTime<Utc>,
}

const CONSENT_COLUMNS: &str =
    "id, customer_id, channel, purpose, granted, effective_at, source, evidence, recorded_by, recorded_at";

fn consent_from_row(r: &tokio_postgres::Row) -> ConsentRow {
    ConsentRow {
        id: r.get(0),
        customer_id: r.get(1),
        channel: r.get(2),
        purpose: r.get(3),
        granted: r.get(4),
        effective_at: r.get(5),
        source: r.get(6),
        evidence: r.get(7),
        recorded_by: r.get(8),
        recorded_at: r.get(9),
    }
}

pub async fn add_consent(tx: &Transaction<'_>, tenant: &str, c: &ConsentRow) -> Result<ConsentRow, Error> {
    let at: DateTime<Utc> = tx
        .query_one(
            "INSERT INTO consents (tenant, id, customer_id, channel, purpose, granted, effective_at, source, evidence,
                                   recorded_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING recorded_at",
            &[
                &tenant,
                &c.id,
                &c.customer_id,
                &c.channel,
                &c.purpose,
                &c.granted,
                &c.effective_at,
                &c.source,
                &c.evidence,
                &c.recorded_by,
            ],
        )
        .await?
        .get(0);
    Ok(ConsentRow { recorded_at: at, ..c.clone() })
}

/// The ledger entry in force at `at` for a channel and purpose: the latest effective at or
/// before `at` (ties go to the one recorded last).
pub async fn consent_in_force(
    tx: &Transaction<'_>,
    tenant: &str,
    family: &[String],
    channel: i16,
    purpose: &str,
    at: DateTime<Utc>,
) -> Result<Option<ConsentRow>, Error> {
    let row = tx
        .query_opt(
            &format!(
                "SELECT {CONSENT_COLUMNS} FROM consents
                 WHERE tenant = $1 AND customer_id = ANY($2) AND channel = $3 AND purpose = $4 AND effective_at <= $5
                 ORDER BY effective_at DESC, recorded_at DESC, id DESC LIMIT 1"
            ),
            &[&tenant, &family, &channel, &purpose, &at],
        )
        .await?;
    Ok(row.as_ref().map(consent_from_row))
}

pub async fn consents(tx: &Transaction<'_>, tenant: &str, family: &[String]) -> Result<Vec<ConsentRow>, Error> {
    let rows = tx
        .query(
            &format!(
                "SELECT {CONSENT_COLUMNS} FROM consents WHERE tenant = $1 AND customer_id = ANY($2)
                 ORDER BY recorded_at DESC, id DESC"
            ),
            &[&tenant, &family],
        )
        .await?;
    Ok(rows.iter().map(consent_from_row).collect())
}

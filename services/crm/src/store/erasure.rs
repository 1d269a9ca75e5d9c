//! GDPR erasure: every row about a family deleted in one transaction, with an audit record.

use std::collections::BTreeMap;

use centralita_platform::error::Error;
use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use serde_json::json;

use super::new_id;

/// What an erasure removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErasureRow {
    pub id: String,
    pub customer_ids: Vec<String>,
    pub contact_ids: Vec<String>,
    pub deleted_rows: BTreeMap<String, i64>,
    pub requested_by: String,
    pub reason: String,
    pub erased_at: DateTime<Utc>,
}

/// Deletes every row about the family; remembers its contact ids (so a replayed contact
/// event cannot bring the customer back) and writes the audit record.
pub async fn erase(
    tx: &Transaction<'_>,
    tenant: &str,
    family: &[String],
    requested_by: &str,
    reason: &str,
) -> Result<ErasureRow, Error> {
    let id = new_id();
    let contacts: Vec<String> = tx
        .query(
            "SELECT contact_id FROM interactions WHERE tenant = $1 AND customer_id = ANY($2) ORDER BY contact_id",
            &[&tenant, &family],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut deleted = BTreeMap::new();
    for (table, column) in [
        ("identities", "customer_id"),
        ("notes", "customer_id"),
        ("answers", "customer_id"),
        ("consents", "customer_id"),
        ("interactions", "customer_id"),
    ] {
        let n = tx
            .execute(&format!("DELETE FROM {table} WHERE tenant = $1 AND {column} = ANY($2)"), &[&tenant, &family])
            .await?;
        deleted.insert(table.to_owned(), n as i64);
    }
    let n = tx
        .execute("DELETE FROM merges WHERE tenant = $1 AND (target = ANY($2) OR source = ANY($2))", &[&tenant, &family])
        .await?;
    deleted.insert("merges".into(), n as i64);
    let n = tx.execute("DELETE FROM customers WHERE tenant = $1 AND id = ANY($2)", &[&tenant, &family]).await?;
    deleted.insert("customers".into(), n as i64);
    tx.execute(
        "INSERT INTO erased_contacts (tenant, contact_id, erasure_id) SELECT $1, c, $3 FROM unnest($2::text[]) AS c
         ON CONFLICT DO NOTHING",
        &[&tenant, &contacts, &id],
    )
    .await?;
    let at: DateTime<Utc> = tx
        .query_one(
            "INSERT INTO erasures (tenant, id, customer_ids, contact_ids, deleted_rows, requested_by, reason)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING erased_at",
            &[&tenant, &id, &family, &contacts, &json!(deleted), &requested_by, &reason],
        )
        .await?
        .get(0);
    Ok(ErasureRow {
        id,
        customer_ids: family.to_vec(),
        contact_ids: contacts,
        deleted_rows: deleted,
        requested_by: requested_by.into(),
        reason: reason.into(),
        erased_at: at,
    })
}

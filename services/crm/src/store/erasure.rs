//! GDPR erasure: every row about a family deleted in one transaction, with an audit record
//! that lists each store outside the CRM holding data about the family's contacts, pending
//! until the service keeping it reports it erased (`StoreErased`).

use std::collections::BTreeMap;

use centralita_platform::error::Error;
use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use serde_json::json;

use super::new_id;

/// The stores outside the CRM that every erasure waits for: each service keeping one
/// erases the erasure's contacts there and reports it (`StoreErased.store`).
pub const ERASURE_STORES: &[&str] = &["media", "recording", "reporting", "sessions"];

/// One store's progress on an erasure: pending while `done_at` is `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreRow {
    pub store: String,
    pub done_at: Option<DateTime<Utc>>,
    pub records_erased: i64,
}

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
    pub stores: Vec<StoreRow>,
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
    let deleted = delete_families(tx, tenant, family).await?;
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
    tx.execute(
        "INSERT INTO erasure_stores (tenant, erasure_id, store) SELECT $1, $2, s FROM unnest($3::text[]) AS s",
        &[&tenant, &id, &ERASURE_STORES],
    )
    .await?;
    let stores =
        ERASURE_STORES.iter().map(|s| StoreRow { store: (*s).to_owned(), done_at: None, records_erased: 0 }).collect();
    Ok(ErasureRow {
        id,
        customer_ids: family.to_vec(),
        contact_ids: contacts,
        deleted_rows: deleted,
        requested_by: requested_by.into(),
        reason: reason.into(),
        erased_at: at,
        stores,
    })
}

/// Deletes every row about the profiles `ids` (whole families: a merged profile's
/// `merged_into` must be among them): identities, notes, answers, consents, interactions,
/// the merges naming any of them, then the profiles. The rows deleted per table. Shared by
/// an erasure and the retention sweeper (`super::retention`).
pub(super) async fn delete_families(
    tx: &Transaction<'_>,
    tenant: &str,
    ids: &[String],
) -> Result<BTreeMap<String, i64>, Error> {
    let mut deleted = BTreeMap::new();
    for table in ["identities", "notes", "answers", "consents", "interactions"] {
        let n = tx
            .execute(&format!("DELETE FROM {table} WHERE tenant = $1 AND customer_id = ANY($2)"), &[&tenant, &ids])
            .await?;
        deleted.insert(table.to_owned(), n as i64);
    }
    let n = tx
        .execute("DELETE FROM merges WHERE tenant = $1 AND (target = ANY($2) OR source = ANY($2))", &[&tenant, &ids])
        .await?;
    deleted.insert("merges".into(), n as i64);
    let n = tx.execute("DELETE FROM customers WHERE tenant = $1 AND id = ANY($2)", &[&tenant, &ids]).await?;
    deleted.insert("customers".into(), n as i64);
    Ok(deleted)
}

/// The audit record of erasure `id` with each store's progress, if the tenant has it.
pub async fn erasure(tx: &Transaction<'_>, tenant: &str, id: &str) -> Result<Option<ErasureRow>, Error> {
    let Some(r) = tx
        .query_opt(
            "SELECT customer_ids, contact_ids, deleted_rows, requested_by, reason, erased_at
             FROM erasures WHERE tenant = $1 AND id = $2",
            &[&tenant, &id],
        )
        .await?
    else {
        return Ok(None);
    };
    let deleted: serde_json::Value = r.get(2);
    let deleted_rows = serde_json::from_value(deleted).map_err(Error::internal)?;
    let stores = tx
        .query(
            "SELECT store, done_at, records_erased FROM erasure_stores WHERE tenant = $1 AND erasure_id = $2
             ORDER BY store",
            &[&tenant, &id],
        )
        .await?
        .iter()
        .map(|s| StoreRow { store: s.get(0), done_at: s.get(1), records_erased: s.get(2) })
        .collect();
    Ok(Some(ErasureRow {
        id: id.to_owned(),
        customer_ids: r.get(0),
        contact_ids: r.get(1),
        deleted_rows,
        requested_by: r.get(3),
        reason: r.get(4),
        erased_at: r.get(5),
        stores,
    }))
}

/// Records that `store` erased erasure `id` at `at`, `records` more records: the first
/// report sets the time, later ones (redeliveries, which erase nothing more) only add their
/// count. A store not listed when the erasure was made is added. False when the tenant has
/// no such erasure.
pub async fn store_erased(
    tx: &Transaction<'_>,
    tenant: &str,
    id: &str,
    store: &str,
    records: i64,
    at: DateTime<Utc>,
) -> Result<bool, Error> {
    let n = tx
        .execute(
            "INSERT INTO erasure_stores (tenant, erasure_id, store, done_at, records_erased)
             SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM erasures WHERE tenant = $1 AND id = $2)
             ON CONFLICT (tenant, erasure_id, store) DO UPDATE
             SET done_at = COALESCE(erasure_stores.done_at, EXCLUDED.done_at),
                 records_erased = erasure_stores.records_erased + EXCLUDED.records_erased",
            &[&tenant, &id, &store, &at, &records],
        )
        .await?;
    Ok(n > 0)
}

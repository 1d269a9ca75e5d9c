//! Merges of root profiles and their undo: the source points at the target, nothing moves.

use centralita_platform::error::Error;
use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;

use super::new_id;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeRow {
    pub id: String,
    pub target: String,
    pub source: String,
    pub reason: String,
    pub merged_by: String,
    pub merged_at: DateTime<Utc>,
    pub undone_by: String,
    pub undone_at: Option<DateTime<Utc>>,
}

const MERGE_COLUMNS: &str = "id, target, source, reason, merged_by, merged_at, undone_by, undone_at";

fn merge_from_row(r: &tokio_postgres::Row) -> MergeRow {
    MergeRow {
        id: r.get(0),
        target: r.get(1),
        source: r.get(2),
        reason: r.get(3),
        merged_by: r.get(4),
        merged_at: r.get(5),
        undone_by: r.get(6),
        undone_at: r.get(7),
    }
}

/// Merges root `source` into root `target` (both checked by the caller).
pub async fn merge(
    tx: &Transaction<'_>,
    tenant: &str,
    target: &str,
    source: &str,
    reason: &str,
    by: &str,
) -> Result<MergeRow, Error> {
    let n = tx
        .execute(
            "UPDATE customers SET merged_into = $3 WHERE tenant = $1 AND id = $2 AND merged_into IS NULL",
            &[&tenant, &source, &target],
        )
        .await?;
    if n != 1 {
        return Err(Error::FailedPrecondition(format!("customers/{source} is already merged")));
    }
    let id = new_id();
    let row = tx
        .query_one(
            &format!(
                "INSERT INTO merges (tenant, id, target, source, reason, merged_by) VALUES ($1, $2, $3, $4, $5, $6)
                 RETURNING {MERGE_COLUMNS}"
            ),
            &[&tenant, &id, &target, &source, &reason, &by],
        )
        .await?;
    Ok(merge_from_row(&row))
}

pub async fn get_merge(tx: &Transaction<'_>, tenant: &str, id: &str) -> Result<Option<MergeRow>, Error> {
    let row = tx
        .query_opt(&format!("SELECT {MERGE_COLUMNS} FROM merges WHERE tenant = $1 AND id = $2"), &[&tenant, &id])
        .await?;
    Ok(row.as_ref().map(merge_from_row))
}

pub async fn undo_merge(tx: &Transaction<'_>, tenant: &str, m: &MergeRow, by: &str) -> Result<MergeRow, Error> {
    let n = tx
        .execute(
            "UPDATE customers SET merged_into = NULL WHERE tenant = $1 AND id = $2 AND merged_into = $3",
            &[&tenant, &m.source, &m.target],
        )
        .await?;
    if n != 1 {
        return Err(Error::FailedPrecondition(format!("merges/{} is no longer in effect", m.id)));
    }
    let row = tx
        .query_one(
            &format!(
                "UPDATE merges SET undone_by = $3, undone_at = now() WHERE tenant = $1 AND id = $2
                 RETURNING {MERGE_COLUMNS}"
            ),
            &[&tenant, &m.id, &by],
        )
        .await?;
    Ok(merge_from_row(&row))
}

pub async fn merges_of(tx: &Transaction<'_>, tenant: &str, family: &[String]) -> Result<Vec<MergeRow>, Error> {
    let rows = tx
        .query(
            &format!(
                "SELECT {MERGE_COLUMNS} FROM merges WHERE tenant = $1 AND (target = ANY($2) OR source = ANY($2))
                 ORDER BY merged_at, id"
            ),
            &[&tenant, &family],
        )
        .await?;
    Ok(rows.iter().map(merge_from_row).collect())
}

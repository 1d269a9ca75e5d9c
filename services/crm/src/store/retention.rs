//! What the retention sweeper deletes (the policy is in [`crate::retention`]); each call is
//! one bounded batch inside the caller's transaction, so no pass holds a large transaction.

use std::collections::{BTreeMap, BTreeSet};

use centralita_platform::error::Error;
use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;

use super::erasure::delete_families;

/// A kind of record that ages on its own, while its customer stays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    /// A contact on the timeline (with its wrap-up notes), aged from its latest time:
    /// created, connected or ended.
    Interactions,
    /// A note, aged from when it was written.
    Notes,
    /// A post-resolution answer, aged from when it was asked.
    Answers,
}

impl Record {
    pub const ALL: [Record; 3] = [Record::Interactions, Record::Notes, Record::Answers];

    pub fn table(self) -> &'static str {
        match self {
            Record::Interactions => "interactions",
            Record::Notes => "notes",
            Record::Answers => "answers",
        }
    }

    fn delete_sql(self) -> &'static str {
        // Rows being written at this moment are skipped (the next pass sees them).
        match self {
            Record::Interactions => {
                "DELETE FROM interactions WHERE tenant = $1 AND contact_id IN (
                     SELECT contact_id FROM interactions WHERE tenant = $1 AND created_at < $2
                       AND GREATEST(created_at, connected_at, ended_at) < $2
                     LIMIT $3 FOR UPDATE SKIP LOCKED)"
            }
            Record::Notes => {
                "DELETE FROM notes WHERE tenant = $1 AND id IN (
                     SELECT id FROM notes WHERE tenant = $1 AND created_at < $2 LIMIT $3 FOR UPDATE SKIP LOCKED)"
            }
            Record::Answers => {
                "DELETE FROM answers WHERE tenant = $1 AND id IN (
                     SELECT id FROM answers WHERE tenant = $1 AND asked_at < $2 LIMIT $3 FOR UPDATE SKIP LOCKED)"
            }
        }
    }
}

/// Deletes up to `batch` records of `kind` older than `cutoff`; how many went.
pub async fn delete_expired_records(
    tx: &Transaction<'_>,
    tenant: &str,
    kind: Record,
    cutoff: DateTime<Utc>,
    batch: i64,
) -> Result<u64, Error> {
    Ok(tx.execute(kind.delete_sql(), &[&tenant, &cutoff, &batch]).await?)
}

/// Looks at the next `batch` root profiles after `after` (by id) not updated since
/// `cutoff`, and deletes each one's whole family (the root and the profiles merged into it)
/// when no profile of it shows any activity since `cutoff`: no update, interaction, note,
/// answer, consent entry or merge (or undo) at or after it. Everything about a deleted
/// family goes (identities, consents, merges naming it, what is left of its records).
/// Returns the rows deleted per table and the last root looked at, `None` once none is left.
pub async fn delete_expired_families(
    tx: &Transaction<'_>,
    tenant: &str,
    cutoff: DateTime<Utc>,
    after: &str,
    batch: i64,
) -> Result<(BTreeMap<String, i64>, Option<String>), Error> {
    // Locked, so no note, answer, consent, identity or merge can refer to them until this
    // transaction ends (their foreign keys wait on the lock); roots busy elsewhere are
    // skipped until the next pass.
    let roots: Vec<String> = tx
        .query(
            "SELECT id FROM customers
             WHERE tenant = $1 AND merged_into IS NULL AND updated_at < $2 AND id > $3
             ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED",
            &[&tenant, &cutoff, &after, &batch],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let next = if (roots.len() as i64) < batch { None } else { roots.last().cloned() };
    if roots.is_empty() {
        return Ok((BTreeMap::new(), next));
    }
    let members: Vec<(String, String)> = tx
        .query(
            "WITH RECURSIVE fam(root, id, depth) AS (
                 SELECT id, id, 0 FROM customers WHERE tenant = $1 AND id = ANY($2)
                 UNION ALL
                 SELECT fam.root, c.id, fam.depth + 1 FROM customers c
                 JOIN fam ON c.tenant = $1 AND c.merged_into = fam.id WHERE fam.depth < 1000)
             SELECT root, id FROM fam",
            &[&tenant, &roots],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let ids: Vec<String> = members.iter().map(|(_, id)| id.clone()).collect();
    tx.execute("SELECT 1 FROM customers WHERE tenant = $1 AND id = ANY($2) FOR UPDATE", &[&tenant, &ids]).await?;
    let active: BTreeSet<String> = tx
        .query(
            "SELECT id FROM customers WHERE tenant = $1 AND id = ANY($2) AND updated_at >= $3
             UNION SELECT customer_id FROM interactions WHERE tenant = $1 AND customer_id = ANY($2)
                 AND GREATEST(created_at, connected_at, ended_at) >= $3
             UNION SELECT customer_id FROM notes WHERE tenant = $1 AND customer_id = ANY($2) AND created_at >= $3
             UNION SELECT customer_id FROM answers WHERE tenant = $1 AND customer_id = ANY($2) AND asked_at >= $3
             UNION SELECT customer_id FROM consents WHERE tenant = $1 AND customer_id = ANY($2) AND recorded_at >= $3
             UNION SELECT target FROM merges WHERE tenant = $1 AND target = ANY($2)
                 AND GREATEST(merged_at, undone_at) >= $3
             UNION SELECT source FROM merges WHERE tenant = $1 AND source = ANY($2)
                 AND GREATEST(merged_at, undone_at) >= $3",
            &[&tenant, &ids, &cutoff],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut families: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (root, id) in &members {
        families.entry(root.as_str()).or_default().push(id.as_str());
    }
    let expired: Vec<String> = families
        .values()
        .filter(|family| family.iter().all(|id| !active.contains(*id)))
        .flat_map(|family| family.iter().map(|id| (*id).to_owned()))
        .collect();
    if expired.is_empty() {
        return Ok((BTreeMap::new(), next));
    }
    Ok((delete_families(tx, tenant, &expired).await?, next))
}

/// Clears the reason text (an administrator's free text) of up to `batch` erasure records
/// made before `cutoff`; the record itself (ids, counts, who, when, each store's progress)
/// stays as the proof of the erasure. How many were cleared.
pub async fn clear_erasure_reasons(
    tx: &Transaction<'_>,
    tenant: &str,
    cutoff: DateTime<Utc>,
    batch: i64,
) -> Result<u64, Error> {
    Ok(tx
        .execute(
            "UPDATE erasures SET reason = '' WHERE tenant = $1 AND id IN (
                 SELECT id FROM erasures WHERE tenant = $1 AND erased_at < $2 AND reason <> ''
                 LIMIT $3 FOR UPDATE SKIP LOCKED)",
            &[&tenant, &cutoff, &batch],
        )
        .await?)
}

//! The expired contacts' legs anonymised (the policy is in [`crate::retention`]), one
//! bounded batch per call in its own transaction.

use centralita_platform::db::set_tenant;
use centralita_platform::error::Error;
use centralita_platform::tenant::TenantId;
use deadpool_postgres::Pool;

use crate::core::Millis;

/// How an anonymised leg's contact id starts: a pseudonym of `anon:` and 32 random hex
/// digits, one per contact (its legs stay together), linked to nothing anywhere. Real ids
/// are contact names or ids, never this.
pub const ANONYMOUS_PREFIX: &str = "anon:";

/// Anonymises up to `batch` contacts of `tenant` whose every leg's latest time (entered,
/// left, held, ended, handled) is before `cutoff`: their contact id becomes a random
/// pseudonym. Returns how many contacts were found expired, and how many contacts and legs
/// this call anonymised.
pub async fn anonymise_expired(
    pool: &Pool,
    tenant: &TenantId,
    cutoff: Millis,
    batch: i64,
) -> Result<(u64, u64, u64), Error> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    set_tenant(&tx, tenant).await?;
    let t = tenant.as_str();
    // `legs_identified` finds the candidates; a contact with any later leg is not expired.
    let expired: Vec<String> = tx
        .query(
            "SELECT DISTINCT l.contact_id FROM legs l
             WHERE l.tenant = $1 AND l.enqueued_at < $2 AND l.contact_id NOT LIKE 'anon:%'
               AND NOT EXISTS (SELECT 1 FROM legs m WHERE m.tenant = $1 AND m.contact_id = l.contact_id
                   AND GREATEST(m.enqueued_at, m.left_at, m.held_since, m.ended_at, m.handled_at) >= $2)
             LIMIT $3",
            &[&t, &cutoff, &batch],
        )
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    if expired.is_empty() {
        tx.commit().await?;
        return Ok((0, 0, 0));
    }
    // A contact another replica anonymised meanwhile matches no leg any more (the update
    // waits for its rows, then finds them changed): it is not counted twice.
    let changed = pseudonymise(&tx, t, &expired).await?;
    tx.commit().await?;
    let contacts = changed.iter().collect::<std::collections::BTreeSet<_>>().len();
    Ok((expired.len() as u64, contacts as u64, changed.len() as u64))
}

/// Anonymises the legs of `contacts` of `tenant` now, whatever their age (a customer's
/// erasure): each contact gets a fresh pseudonym. Ids already anonymised or never seen match
/// nothing, so a repeat changes nothing. Returns how many contacts and legs changed.
pub async fn anonymise_contacts(pool: &Pool, tenant: &TenantId, contacts: &[String]) -> Result<(u64, u64), Error> {
    if contacts.is_empty() {
        return Ok((0, 0));
    }
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    set_tenant(&tx, tenant).await?;
    let changed = pseudonymise(&tx, tenant.as_str(), contacts).await?;
    tx.commit().await?;
    let distinct = changed.iter().collect::<std::collections::BTreeSet<_>>().len();
    Ok((distinct as u64, changed.len() as u64))
}

/// Gives every leg of each of `contacts` (of tenant `t`, set on `tx`) its contact's fresh
/// pseudonym; the old contact id of every leg changed.
async fn pseudonymise(
    tx: &deadpool_postgres::Transaction<'_>,
    t: &str,
    contacts: &[String],
) -> Result<Vec<String>, Error> {
    Ok(tx
        .query(
            "UPDATE legs SET contact_id = n.anon
             FROM (SELECT old, 'anon:' || replace(gen_random_uuid()::text, '-', '') AS anon
                   FROM unnest($2::text[]) AS old) n
             WHERE legs.tenant = $1 AND legs.contact_id = n.old
             RETURNING n.old",
            &[&t, &contacts],
        )
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?)
}

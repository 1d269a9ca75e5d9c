//! Customer profiles and their identities: resolution (find or create by identity),
//! the family view of a root profile, and updates of a profile's own fields.

use std::collections::{BTreeMap, BTreeSet};

use centralita_platform::error::Error;
use centralita_platform::identity::Identity;
use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use serde_json::json;

use super::new_id;

#[derive(Debug, Clone, PartialEq)]
pub struct CustomerRow {
    pub id: String,
    pub display_name: String,
    pub preferred_language: String,
    pub value_tier: i16,
    pub attributes: BTreeMap<String, String>,
    pub tags: Vec<String>,
    pub do_not_contact: bool,
    pub do_not_contact_reason: String,
    pub merged_into: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const CUSTOMER_COLUMNS: &str = "id, display_name, preferred_language, value_tier, attributes, tags, do_not_contact, \
     do_not_contact_reason, merged_into, created_at, updated_at";

fn customer_from_row(r: &tokio_postgres::Row) -> Result<CustomerRow, Error> {
    let attributes: serde_json::Value = r.try_get(4)?;
    Ok(CustomerRow {
        id: r.try_get(0)?,
        display_name: r.try_get(1)?,
        preferred_language: r.try_get(2)?,
        value_tier: r.try_get(3)?,
        attributes: serde_json::from_value(attributes).map_err(Error::internal)?,
        tags: r.try_get(5)?,
        do_not_contact: r.try_get(6)?,
        do_not_contact_reason: r.try_get(7)?,
        merged_into: r.try_get(8)?,
        created_at: r.try_get(9)?,
        updated_at: r.try_get(10)?,
    })
}

/// A root profile as its readers see it: the root, its family (root included, oldest
/// first) and the identities of the whole family.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    pub root: CustomerRow,
    pub family: Vec<CustomerRow>,
    pub identities: Vec<Identity>,
}

impl View {
    pub fn ids(&self) -> Vec<String> {
        self.family.iter().map(|c| c.id.clone()).collect()
    }

    /// The root's fields win; empty ones are filled from the rest of the family, oldest
    /// first. Tags are the union, the tier the highest, do-not-contact set if any is.
    pub fn merged(&self) -> CustomerRow {
        let mut m = self.root.clone();
        for c in &self.family {
            if m.display_name.is_empty() {
                m.display_name.clone_from(&c.display_name);
            }
            if m.preferred_language.is_empty() {
                m.preferred_language.clone_from(&c.preferred_language);
            }
            m.value_tier = m.value_tier.max(c.value_tier);
            for (k, v) in &c.attributes {
                m.attributes.entry(k.clone()).or_insert_with(|| v.clone());
            }
            if c.do_not_contact && !m.do_not_contact {
                m.do_not_contact = true;
                m.do_not_contact_reason.clone_from(&c.do_not_contact_reason);
            }
        }
        let tags: BTreeSet<String> = self.family.iter().flat_map(|c| c.tags.iter().cloned()).collect();
        m.tags = tags.into_iter().collect();
        m
    }
}

/// The root profile of `id` (itself when not merged), or `None` if there is no such
/// profile in this tenant.
pub async fn root_of(tx: &Transaction<'_>, tenant: &str, id: &str) -> Result<Option<String>, Error> {
    let row = tx
        .query_opt(
            "WITH RECURSIVE up AS (
                 SELECT id, merged_into, 0 AS depth FROM customers WHERE tenant = $1 AND id = $2
                 UNION ALL
                 SELECT c.id, c.merged_into, up.depth + 1 FROM customers c
                 JOIN up ON c.tenant = $1 AND c.id = up.merged_into WHERE up.depth < 1000)
             SELECT id FROM up WHERE merged_into IS NULL",
            &[&tenant, &id],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

pub async fn view(tx: &Transaction<'_>, tenant: &str, id: &str) -> Result<Option<View>, Error> {
    let Some(root) = root_of(tx, tenant, id).await? else { return Ok(None) };
    let rows = tx
        .query(
            &format!(
                "WITH RECURSIVE fam AS (
                     SELECT id, 0 AS depth FROM customers WHERE tenant = $1 AND id = $2
                     UNION ALL
                     SELECT c.id, fam.depth + 1 FROM customers c
                     JOIN fam ON c.tenant = $1 AND c.merged_into = fam.id WHERE fam.depth < 1000)
                 SELECT {CUSTOMER_COLUMNS} FROM customers
                 WHERE tenant = $1 AND id IN (SELECT id FROM fam) ORDER BY created_at, id"
            ),
            &[&tenant, &root],
        )
        .await?;
    let family = rows.iter().map(customer_from_row).collect::<Result<Vec<_>, _>>()?;
    let root_row = family.iter().find(|c| c.id == root).cloned().ok_or_else(|| Error::internal("root vanished"))?;
    let ids: Vec<String> = family.iter().map(|c| c.id.clone()).collect();
    let rows = tx
        .query(
            "SELECT DISTINCT kind, value FROM identities WHERE tenant = $1 AND customer_id = ANY($2)
             ORDER BY kind, value",
            &[&tenant, &ids],
        )
        .await?;
    let identities = rows.iter().filter_map(|r| Identity::stored(r.get(0), r.get(1))).collect();
    Ok(Some(View { root: root_row, family, identities }))
}

/// The root profiles (oldest first) carrying any of `ids`.
pub async fn roots_with(tx: &Transaction<'_>, tenant: &str, ids: &[Identity]) -> Result<Vec<String>, Error> {
    let kinds: Vec<i16> = ids.iter().map(|i| i.kind.code()).collect();
    let values: Vec<&str> = ids.iter().map(|i| i.value.as_str()).collect();
    let rows = tx
        .query(
            "SELECT DISTINCT i.customer_id FROM identities i
             JOIN unnest($2::smallint[], $3::text[]) AS q(kind, value) ON i.kind = q.kind AND i.value = q.value
             WHERE i.tenant = $1",
            &[&tenant, &kinds, &values],
        )
        .await?;
    let mut roots: Vec<(DateTime<Utc>, String)> = Vec::new();
    for r in rows {
        let id: String = r.get(0);
        if let Some(root) = root_of(tx, tenant, &id).await? {
            if !roots.iter().any(|(_, r)| *r == root) {
                let created: DateTime<Utc> = tx
                    .query_one("SELECT created_at FROM customers WHERE tenant = $1 AND id = $2", &[&tenant, &root])
                    .await?
                    .get(0);
                roots.push((created, root));
            }
        }
    }
    roots.sort();
    Ok(roots.into_iter().map(|(_, id)| id).collect())
}

/// Serialises resolutions of the same identities (two first contacts from one new number
/// at once create one profile, not two).
async fn lock_identities(tx: &Transaction<'_>, tenant: &str, ids: &[Identity]) -> Result<(), Error> {
    let keys: BTreeSet<String> =
        ids.iter().map(|i| format!("crm\x1f{tenant}\x1f{}\x1f{}", i.kind.code(), i.value)).collect();
    for k in keys {
        tx.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", &[&k]).await?;
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq)]
pub struct Resolution {
    pub root: String,
    pub created: bool,
    pub duplicates: Vec<String>,
}

/// Finds the profile of any of `ids` or creates one; identities no profile carries yet are
/// added to the one found. When several profiles match, the oldest wins and the others are
/// reported as duplicates.
pub async fn resolve(
    tx: &Transaction<'_>,
    tenant: &str,
    ids: &[Identity],
    display_name: &str,
) -> Result<Resolution, Error> {
    lock_identities(tx, tenant, ids).await?;
    let roots = roots_with(tx, tenant, ids).await?;
    let (root, created) = match roots.first() {
        Some(r) => (r.clone(), false),
        None => {
            let id = new_id();
            tx.execute(
                "INSERT INTO customers (tenant, id, display_name) VALUES ($1, $2, $3)",
                &[&tenant, &id, &display_name],
            )
            .await?;
            (id, true)
        }
    };
    // Identities no profile carries yet join the one found (or created).
    let kinds: Vec<i16> = ids.iter().map(|i| i.kind.code()).collect();
    let values: Vec<&str> = ids.iter().map(|i| i.value.as_str()).collect();
    tx.execute(
        "INSERT INTO identities (tenant, customer_id, kind, value)
         SELECT $1, $2, q.kind, q.value FROM unnest($3::smallint[], $4::text[]) AS q(kind, value)
         WHERE NOT EXISTS (SELECT 1 FROM identities i WHERE i.tenant = $1 AND i.kind = q.kind AND i.value = q.value)
         ON CONFLICT DO NOTHING",
        &[&tenant, &root, &kinds, &values],
    )
    .await?;
    Ok(Resolution { root, created, duplicates: roots.into_iter().skip(1).collect() })
}

pub async fn add_identity(tx: &Transaction<'_>, tenant: &str, customer: &str, i: &Identity) -> Result<(), Error> {
    tx.execute(
        "INSERT INTO identities (tenant, customer_id, kind, value) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        &[&tenant, &customer, &i.kind.code(), &i.value],
    )
    .await?;
    Ok(())
}

/// Removes an identity from every profile of a family; how many rows went.
pub async fn remove_identity(
    tx: &Transaction<'_>,
    tenant: &str,
    family: &[String],
    i: &Identity,
) -> Result<u64, Error> {
    Ok(tx
        .execute(
            "DELETE FROM identities WHERE tenant = $1 AND customer_id = ANY($2) AND kind = $3 AND value = $4",
            &[&tenant, &family, &i.kind.code(), &i.value],
        )
        .await?)
}

/// Changes of a profile's own fields (`None` leaves a field as it is).
#[derive(Debug, Clone, Default)]
pub struct Changes {
    pub display_name: Option<String>,
    pub preferred_language: Option<String>,
    pub value_tier: Option<i16>,
    pub attributes: Option<BTreeMap<String, String>>,
    pub tags: Option<Vec<String>>,
    pub do_not_contact: Option<(bool, String)>,
}

pub async fn update(tx: &Transaction<'_>, tenant: &str, id: &str, ch: &Changes) -> Result<(), Error> {
    let attributes = ch.attributes.as_ref().map(|a| json!(a));
    let (dnc, dnc_reason) = match &ch.do_not_contact {
        Some((d, r)) => (Some(*d), Some(r.clone())),
        None => (None, None),
    };
    tx.execute(
        "UPDATE customers SET
             display_name = COALESCE($3, display_name),
             preferred_language = COALESCE($4, preferred_language),
             value_tier = COALESCE($5, value_tier),
             attributes = COALESCE($6, attributes),
             tags = COALESCE($7, tags),
             do_not_contact = COALESCE($8, do_not_contact),
             do_not_contact_reason = COALESCE($9, do_not_contact_reason),
             updated_at = now()
         WHERE tenant = $1 AND id = $2",
        &[
            &tenant,
            &id,
            &ch.display_name,
            &ch.preferred_language,
            &ch.value_tier,
            &attributes,
            &ch.tags,
            &dnc,
            &dnc_reason,
        ],
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(id: &str, secs: i64) -> CustomerRow {
        let at = DateTime::from_timestamp(secs, 0).unwrap_or_default();
        CustomerRow {
            id: id.into(),
            display_name: String::new(),
            preferred_language: String::new(),
            value_tier: 1,
            attributes: BTreeMap::new(),
            tags: Vec::new(),
            do_not_contact: false,
            do_not_contact_reason: String::new(),
            merged_into: None,
            created_at: at,
            updated_at: at,
        }
    }

    #[test]
    fn a_merged_view_keeps_the_roots_values_and_fills_gaps_from_the_family() {
        let mut root = profile("r", 10);
        root.attributes.insert("plan".into(), "basic".into());
        root.tags = vec!["loyal".into()];
        let mut old = profile("o", 5);
        old.display_name = "Ana".into();
        old.attributes.insert("plan".into(), "gold".into());
        old.attributes.insert("city".into(), "Madrid".into());
        old.tags = vec!["web".into(), "loyal".into()];
        old.value_tier = 2;
        old.do_not_contact = true;
        old.do_not_contact_reason = "asked".into();
        old.merged_into = Some("r".into());
        let v = View { root: root.clone(), family: vec![old, root], identities: Vec::new() };
        let m = v.merged();
        assert_eq!(m.id, "r");
        assert_eq!(m.display_name, "Ana");
        assert_eq!(m.attributes.get("plan").map(String::as_str), Some("basic"));
        assert_eq!(m.attributes.get("city").map(String::as_str), Some("Madrid"));
        assert_eq!(m.tags, vec!["loyal".to_owned(), "web".to_owned()]);
        assert_eq!((m.value_tier, m.do_not_contact, m.do_not_contact_reason.as_str()), (2, true, "asked"));
    }
}

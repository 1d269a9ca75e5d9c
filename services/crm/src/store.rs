//! PostgreSQL side of the CRM: the schema, and every read and write, each inside a
//! transaction whose tenant is set for row-level security ([`begin`]).
//!
//! Merging moves nothing: the source profile points at the target (`merged_into`) and
//! every read works on the *family* of a root profile (the root and the profiles merged
//! into it, transitively). Undo clears the pointer, so both profiles are exactly as before.

use std::collections::{BTreeMap, BTreeSet};

use centralita_platform::db::set_tenant;
use centralita_platform::error::Error;
use centralita_platform::identity::Identity;
use centralita_platform::tenant::TenantId;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Object, Pool, Transaction};
use serde_json::json;

/// Version 2 of the `crm` schema. Every table carries the tenant and is under forced
/// row-level security: a transaction that set no tenant sees and writes nothing.
pub const CUSTOMERS_SQL: &str = r#"
CREATE TABLE customers (
    tenant text NOT NULL,
    id text NOT NULL,
    display_name text NOT NULL DEFAULT '',
    preferred_language text NOT NULL DEFAULT '',
    value_tier smallint NOT NULL DEFAULT 0,
    attributes jsonb NOT NULL DEFAULT '{}',
    tags text[] NOT NULL DEFAULT '{}',
    do_not_contact boolean NOT NULL DEFAULT false,
    do_not_contact_reason text NOT NULL DEFAULT '',
    merged_into text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, id),
    FOREIGN KEY (tenant, merged_into) REFERENCES customers (tenant, id)
);
CREATE INDEX customers_merged ON customers (tenant, merged_into) WHERE merged_into IS NOT NULL;
CREATE TABLE identities (
    tenant text NOT NULL,
    customer_id text NOT NULL,
    kind smallint NOT NULL,
    value text NOT NULL,
    added_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, customer_id, kind, value),
    FOREIGN KEY (tenant, customer_id) REFERENCES customers (tenant, id)
);
CREATE INDEX identities_lookup ON identities (tenant, kind, value);
CREATE TABLE notes (
    tenant text NOT NULL,
    id text NOT NULL,
    customer_id text NOT NULL,
    contact text NOT NULL DEFAULT '',
    author text NOT NULL,
    body text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, id),
    FOREIGN KEY (tenant, customer_id) REFERENCES customers (tenant, id)
);
CREATE INDEX notes_by_customer ON notes (tenant, customer_id, created_at);
CREATE TABLE answers (
    tenant text NOT NULL,
    id text NOT NULL,
    customer_id text NOT NULL,
    contact text NOT NULL DEFAULT '',
    question text NOT NULL,
    answer text NOT NULL,
    asked_by text NOT NULL,
    asked_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, id),
    FOREIGN KEY (tenant, customer_id) REFERENCES customers (tenant, id)
);
CREATE INDEX answers_by_customer ON answers (tenant, customer_id, asked_at);
CREATE TABLE consents (
    tenant text NOT NULL,
    id text NOT NULL,
    customer_id text NOT NULL,
    channel smallint NOT NULL,
    purpose text NOT NULL,
    granted boolean NOT NULL,
    effective_at timestamptz NOT NULL,
    source text NOT NULL,
    evidence text NOT NULL DEFAULT '',
    recorded_by text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, id),
    FOREIGN KEY (tenant, customer_id) REFERENCES customers (tenant, id)
);
CREATE INDEX consents_lookup ON consents (tenant, customer_id, channel, purpose, effective_at);
CREATE TABLE merges (
    tenant text NOT NULL,
    id text NOT NULL,
    target text NOT NULL,
    source text NOT NULL,
    reason text NOT NULL,
    merged_by text NOT NULL,
    merged_at timestamptz NOT NULL DEFAULT now(),
    undone_by text NOT NULL DEFAULT '',
    undone_at timestamptz,
    PRIMARY KEY (tenant, id)
);
CREATE TABLE interactions (
    tenant text NOT NULL,
    contact_id text NOT NULL,
    customer_id text,
    channel smallint NOT NULL,
    direction text NOT NULL,
    queue text NOT NULL,
    state text NOT NULL,
    holder text NOT NULL DEFAULT '',
    agents text[] NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL,
    connected_at timestamptz,
    ended_at timestamptz,
    disposition text NOT NULL DEFAULT '',
    wrap_up_notes text NOT NULL DEFAULT '',
    PRIMARY KEY (tenant, contact_id)
);
CREATE INDEX interactions_by_customer ON interactions (tenant, customer_id, created_at);
CREATE TABLE applied_events (
    tenant text NOT NULL,
    event_id text NOT NULL,
    PRIMARY KEY (tenant, event_id)
);
CREATE TABLE erased_contacts (
    tenant text NOT NULL,
    contact_id text NOT NULL,
    erasure_id text NOT NULL,
    PRIMARY KEY (tenant, contact_id)
);
CREATE TABLE erasures (
    tenant text NOT NULL,
    id text NOT NULL,
    customer_ids text[] NOT NULL,
    contact_ids text[] NOT NULL,
    deleted_rows jsonb NOT NULL,
    requested_by text NOT NULL,
    reason text NOT NULL,
    erased_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, id)
);
CREATE TABLE outbox (
    tenant text NOT NULL,
    seq bigserial,
    topic_base text NOT NULL,
    key text NOT NULL,
    envelope bytea NOT NULL,
    PRIMARY KEY (tenant, seq)
);
DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['customers', 'identities', 'notes', 'answers', 'consents', 'merges',
                             'interactions', 'applied_events', 'erased_contacts', 'erasures', 'outbox']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY %I ON %I USING (tenant = centralita_current_tenant()) '
                       'WITH CHECK (tenant = centralita_current_tenant())', t || '_tenant', t);
    END LOOP;
END $$;
-- The outbox relay publishes for every tenant under the BPO scope.
CREATE POLICY outbox_relay ON outbox USING (centralita_current_tenant() = 'bpo');
"#;

/// A transaction with the tenant set for row-level security.
pub async fn begin<'a>(client: &'a mut Object, tenant: &TenantId) -> Result<Transaction<'a>, Error> {
    let tx = client.transaction().await?;
    set_tenant(&tx, tenant).await?;
    Ok(tx)
}

pub fn new_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteRow {
    pub id: String,
    pub customer_id: String,
    pub contact: String,
    pub author: String,
    pub body: String,
    pub created_at: DateTime<Utc>,
}

pub async fn add_note(
    tx: &Transaction<'_>,
    tenant: &str,
    customer: &str,
    contact: &str,
    author: &str,
    body: &str,
) -> Result<NoteRow, Error> {
    let id = new_id();
    let at: DateTime<Utc> = tx
        .query_one(
            "INSERT INTO notes (tenant, id, customer_id, contact, author, body) VALUES ($1, $2, $3, $4, $5, $6)
             RETURNING created_at",
            &[&tenant, &id, &customer, &contact, &author, &body],
        )
        .await?
        .get(0);
    Ok(NoteRow {
        id,
        customer_id: customer.into(),
        contact: contact.into(),
        author: author.into(),
        body: body.into(),
        created_at: at,
    })
}

pub async fn notes(tx: &Transaction<'_>, tenant: &str, family: &[String], limit: i64) -> Result<Vec<NoteRow>, Error> {
    let rows = tx
        .query(
            "SELECT id, customer_id, contact, author, body, created_at FROM notes
             WHERE tenant = $1 AND customer_id = ANY($2) ORDER BY created_at DESC, id DESC LIMIT $3",
            &[&tenant, &family, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| NoteRow {
            id: r.get(0),
            customer_id: r.get(1),
            contact: r.get(2),
            author: r.get(3),
            body: r.get(4),
            created_at: r.get(5),
        })
        .collect())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerRow {
    pub id: String,
    pub customer_id: String,
    pub contact: String,
    pub question: String,
    pub answer: String,
    pub asked_by: String,
    pub asked_at: DateTime<Utc>,
}

pub async fn add_answer(tx: &Transaction<'_>, tenant: &str, a: &AnswerRow) -> Result<AnswerRow, Error> {
    let at: DateTime<Utc> = tx
        .query_one(
            "INSERT INTO answers (tenant, id, customer_id, contact, question, answer, asked_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING asked_at",
            &[&tenant, &a.id, &a.customer_id, &a.contact, &a.question, &a.answer, &a.asked_by],
        )
        .await?
        .get(0);
    Ok(AnswerRow { asked_at: at, ..a.clone() })
}

pub async fn answers(tx: &Transaction<'_>, tenant: &str, family: &[String]) -> Result<Vec<AnswerRow>, Error> {
    let rows = tx
        .query(
            "SELECT id, customer_id, contact, question, answer, asked_by, asked_at FROM answers
             WHERE tenant = $1 AND customer_id = ANY($2) ORDER BY asked_at DESC, id DESC",
            &[&tenant, &family],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| AnswerRow {
            id: r.get(0),
            customer_id: r.get(1),
            contact: r.get(2),
            question: r.get(3),
            answer: r.get(4),
            asked_by: r.get(5),
            asked_at: r.get(6),
        })
        .collect())
}

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

/// Queues an event for the relay, in the caller's transaction.
pub async fn outbox(
    tx: &Transaction<'_>,
    tenant: &str,
    topic_base: &str,
    key: &str,
    envelope: &[u8],
) -> Result<(), Error> {
    tx.execute(
        "INSERT INTO outbox (tenant, topic_base, key, envelope) VALUES ($1, $2, $3, $4)",
        &[&tenant, &topic_base, &key, &envelope],
    )
    .await?;
    Ok(())
}

/// One queued event.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub tenant: String,
    pub seq: i64,
    pub topic_base: String,
    pub key: String,
    pub envelope: Vec<u8>,
}

/// Up to `limit` queued events of every tenant, oldest first (BPO scope).
pub async fn pending(pool: &Pool, limit: i64) -> Result<Vec<Outgoing>, Error> {
    let mut client = pool.get().await?;
    let tx = begin(&mut client, &TenantId::bpo()).await?;
    let rows =
        tx.query("SELECT tenant, seq, topic_base, key, envelope FROM outbox ORDER BY seq LIMIT $1", &[&limit]).await?;
    tx.commit().await?;
    Ok(rows
        .iter()
        .map(|r| Outgoing { tenant: r.get(0), seq: r.get(1), topic_base: r.get(2), key: r.get(3), envelope: r.get(4) })
        .collect())
}

pub async fn published(pool: &Pool, tenant: &str, seq: i64) -> Result<(), Error> {
    let mut client = pool.get().await?;
    let tx = begin(&mut client, &TenantId::bpo()).await?;
    tx.execute("DELETE FROM outbox WHERE tenant = $1 AND seq = $2", &[&tenant, &seq]).await?;
    tx.commit().await?;
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

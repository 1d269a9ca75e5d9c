//! PostgreSQL side of recording: the schema and every query, each in a transaction whose
//! tenant is set for row-level security ([`begin`]).
//!
//! - `recordings`: one row per recording, linked to its contact (id, queue, agents, start,
//!   duration, paused spans), with its state, object key and legal hold.
//! - `data_keys`: each recording's data key wrapped under a version of its tenant's key.
//!   Deleting the row is what makes the object unreadable (crypto-shredding).
//! - `audit`: who did what to which recording, when: playback, URL issue, download, legal
//!   hold set and cleared, retention deletion.

use centralita_platform::error::Error;
use centralita_platform::tenant::TenantId;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Pool, Transaction};

/// Version 2 of the `recording` schema. Every table carries the tenant and is under forced
/// row-level security: a transaction that set no tenant sees and writes nothing.
pub const RECORDINGS_SQL: &str = r#"
CREATE TABLE recordings (
    tenant text NOT NULL,
    id text NOT NULL,
    contact_id text NOT NULL,
    queue text NOT NULL,
    agent_ids text[] NOT NULL,
    started_at timestamptz NOT NULL,
    codec text NOT NULL,
    state text NOT NULL CHECK (state IN ('active', 'complete', 'interrupted')),
    frames bigint NOT NULL DEFAULT 0,
    paused_spans jsonb NOT NULL DEFAULT '[]',
    object_key text NOT NULL,
    legal_hold boolean NOT NULL DEFAULT false,
    legal_hold_reason text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    PRIMARY KEY (tenant, id)
);
CREATE INDEX recordings_by_contact ON recordings (tenant, contact_id, id);
CREATE INDEX recordings_by_start ON recordings (tenant, started_at) WHERE NOT legal_hold;
CREATE TABLE data_keys (
    tenant text NOT NULL,
    recording_id text NOT NULL,
    key_version integer NOT NULL,
    wrapped bytea NOT NULL,
    PRIMARY KEY (tenant, recording_id)
);
CREATE TABLE audit (
    tenant text NOT NULL,
    seq bigserial,
    at timestamptz NOT NULL,
    actor text NOT NULL,
    roles text[] NOT NULL,
    action text NOT NULL,
    recording_id text NOT NULL,
    detail text NOT NULL DEFAULT '',
    PRIMARY KEY (tenant, seq)
);
DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['recordings', 'data_keys', 'audit']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY %I ON %I USING (tenant = centralita_current_tenant()) '
                       'WITH CHECK (tenant = centralita_current_tenant())', t || '_tenant', t);
    END LOOP;
END $$;
"#;

/// Version 3: digital transcripts beside call recordings. `kind` says which a row is; a
/// transcript's `channel` is its contact's, `message_count` and `paused_messages` what it
/// holds and left out; one transcript per contact.
pub const TRANSCRIPTS_SQL: &str = r#"
ALTER TABLE recordings ADD COLUMN kind text NOT NULL DEFAULT 'call' CHECK (kind IN ('call', 'transcript'));
ALTER TABLE recordings ADD COLUMN channel text NOT NULL DEFAULT 'voice';
ALTER TABLE recordings ADD COLUMN message_count integer NOT NULL DEFAULT 0;
ALTER TABLE recordings ADD COLUMN paused_messages integer NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX recordings_one_transcript ON recordings (tenant, contact_id) WHERE kind = 'transcript';
"#;

pub use centralita_platform::db::begin;

/// What a recording is when it starts.
#[derive(Debug, Clone)]
pub struct NewRecording {
    pub id: String,
    pub contact_id: String,
    pub queue: String,
    pub agent_ids: Vec<String>,
    pub started_at: DateTime<Utc>,
    pub codec: String,
    pub object_key: String,
}

/// A recording as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordingRow {
    pub id: String,
    pub contact_id: String,
    pub queue: String,
    pub agent_ids: Vec<String>,
    pub started_at: DateTime<Utc>,
    pub codec: String,
    pub state: String,
    pub frames: i64,
    /// `[start, end)` frames of each PCI pause; the end is `None` while the pause lasts.
    pub paused_spans: Vec<(u64, Option<u64>)>,
    pub object_key: String,
    pub legal_hold: bool,
    pub legal_hold_reason: String,
    /// `call` or `transcript`.
    pub kind: String,
    /// The contact's channel (`voice` for a call).
    pub channel: String,
    pub message_count: i32,
    pub paused_messages: i32,
}

impl RecordingRow {
    pub fn is_transcript(&self) -> bool {
        self.kind == "transcript"
    }
}

const COLUMNS: &str = "id, contact_id, queue, agent_ids, started_at, codec, state, frames, paused_spans, \
                       object_key, legal_hold, legal_hold_reason, kind, channel, message_count, paused_messages";

fn row(r: &tokio_postgres::Row) -> RecordingRow {
    let spans: serde_json::Value = r.get(8);
    let paused_spans = serde_json::from_value(spans).unwrap_or_default();
    RecordingRow {
        id: r.get(0),
        contact_id: r.get(1),
        queue: r.get(2),
        agent_ids: r.get(3),
        started_at: r.get(4),
        codec: r.get(5),
        state: r.get(6),
        frames: r.get(7),
        paused_spans,
        object_key: r.get(9),
        legal_hold: r.get(10),
        legal_hold_reason: r.get(11),
        kind: r.get(12),
        channel: r.get(13),
        message_count: r.get(14),
        paused_messages: r.get(15),
    }
}

/// A transcript to store (its object already written).
#[derive(Debug, Clone)]
pub struct NewTranscript {
    pub id: String,
    pub contact_id: String,
    pub queue: String,
    pub agent_ids: Vec<String>,
    pub started_at: DateTime<Utc>,
    pub channel: String,
    pub message_count: i32,
    pub paused_messages: i32,
    pub object_key: String,
}

/// Inserts a finished transcript and its wrapped data key, unless the contact has one
/// already: `true` if inserted, `false` if another was there (nothing written).
pub async fn create_transcript(
    pool: &Pool,
    tenant: &TenantId,
    t: &NewTranscript,
    version: u32,
    wrapped: &[u8],
) -> Result<bool, Error> {
    let mut client = pool.get().await?;
    let tx = begin(&mut client, tenant).await?;
    let n = tx
        .execute(
            "INSERT INTO recordings (tenant, id, contact_id, queue, agent_ids, started_at, codec, state, object_key, \
             kind, channel, message_count, paused_messages, finished_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 'none', 'complete', $7, 'transcript', $8, $9, $10, now()) \
             ON CONFLICT (tenant, contact_id) WHERE kind = 'transcript' DO NOTHING",
            &[
                &tenant.as_str(),
                &t.id,
                &t.contact_id,
                &t.queue,
                &t.agent_ids,
                &t.started_at,
                &t.object_key,
                &t.channel,
                &t.message_count,
                &t.paused_messages,
            ],
        )
        .await?;
    if n == 0 {
        return Ok(false);
    }
    let version = i32::try_from(version).map_err(Error::internal)?;
    tx.execute(
        "INSERT INTO data_keys (tenant, recording_id, key_version, wrapped) VALUES ($1, $2, $3, $4)",
        &[&tenant.as_str(), &t.id, &version, &wrapped],
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// The transcript of a contact, if it has one.
pub async fn transcript_of(pool: &Pool, tenant: &TenantId, contact: &str) -> Result<Option<RecordingRow>, Error> {
    let mut client = pool.get().await?;
    let tx = begin(&mut client, tenant).await?;
    let r = tx
        .query_opt(
            &format!("SELECT {COLUMNS} FROM recordings WHERE contact_id = $1 AND kind = 'transcript'"),
            &[&contact],
        )
        .await?;
    tx.commit().await?;
    Ok(r.as_ref().map(row))
}

/// Inserts a recording (state `active`) and its wrapped data key.
pub async fn create(
    pool: &Pool,
    tenant: &TenantId,
    rec: &NewRecording,
    version: u32,
    wrapped: &[u8],
) -> Result<(), Error> {
    let mut client = pool.get().await?;
    let tx = begin(&mut client, tenant).await?;
    tx.execute(
        "INSERT INTO recordings (tenant, id, contact_id, queue, agent_ids, started_at, codec, state, object_key) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'active', $8)",
        &[
            &tenant.as_str(),
            &rec.id,
            &rec.contact_id,
            &rec.queue,
            &rec.agent_ids,
            &rec.started_at,
            &rec.codec,
            &rec.object_key,
        ],
    )
    .await?;
    let version = i32::try_from(version).map_err(Error::internal)?;
    tx.execute(
        "INSERT INTO data_keys (tenant, recording_id, key_version, wrapped) VALUES ($1, $2, $3, $4)",
        &[&tenant.as_str(), &rec.id, &version, &wrapped],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Records the end of a recording: its state, length and paused spans.
pub async fn finish(
    pool: &Pool,
    tenant: &TenantId,
    id: &str,
    state: &str,
    frames: u64,
    spans: &[(u64, Option<u64>)],
) -> Result<(), Error> {
    let mut client = pool.get().await?;
    let tx = begin(&mut client, tenant).await?;
    let frames = i64::try_from(frames).map_err(Error::internal)?;
    let spans = serde_json::to_value(spans).map_err(Error::internal)?;
    tx.execute(
        "UPDATE recordings SET state = $2, frames = $3, paused_spans = $4, finished_at = now() WHERE id = $1",
        &[&id, &state, &frames, &spans],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Records the paused spans of a recording still in progress (kept if the process dies).
pub async fn set_spans(pool: &Pool, tenant: &TenantId, id: &str, spans: &[(u64, Option<u64>)]) -> Result<(), Error> {
    let mut client = pool.get().await?;
    let tx = begin(&mut client, tenant).await?;
    let spans = serde_json::to_value(spans).map_err(Error::internal)?;
    tx.execute("UPDATE recordings SET paused_spans = $2 WHERE id = $1", &[&id, &spans]).await?;
    tx.commit().await?;
    Ok(())
}

pub async fn get(pool: &Pool, tenant: &TenantId, id: &str) -> Result<Option<RecordingRow>, Error> {
    let mut client = pool.get().await?;
    let tx = begin(&mut client, tenant).await?;
    let r = tx.query_opt(&format!("SELECT {COLUMNS} FROM recordings WHERE id = $1"), &[&id]).await?;
    tx.commit().await?;
    Ok(r.as_ref().map(row))
}

/// Recordings of a contact after `after` (an id), oldest first, at most `limit`.
pub async fn of_contact(
    pool: &Pool,
    tenant: &TenantId,
    contact: &str,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<RecordingRow>, Error> {
    let mut client = pool.get().await?;
    let tx = begin(&mut client, tenant).await?;
    let rows = tx
        .query(
            &format!("SELECT {COLUMNS} FROM recordings WHERE contact_id = $1 AND id > $2 ORDER BY id LIMIT $3"),
            &[&contact, &after.unwrap_or(""), &limit],
        )
        .await?;
    tx.commit().await?;
    Ok(rows.iter().map(row).collect())
}

/// The wrapped data key of a recording and the version of the tenant key wrapping it.
pub async fn data_key(pool: &Pool, tenant: &TenantId, id: &str) -> Result<Option<(u32, Vec<u8>)>, Error> {
    let mut client = pool.get().await?;
    let tx = begin(&mut client, tenant).await?;
    let r = tx.query_opt("SELECT key_version, wrapped FROM data_keys WHERE recording_id = $1", &[&id]).await?;
    tx.commit().await?;
    Ok(r.map(|r| (r.get::<_, i32>(0).unsigned_abs(), r.get(1))))
}

/// Data keys of the tenant wrapped under another version than `version`, at most `limit`:
/// (recording id, version, wrapped).
pub async fn keys_not_at(
    pool: &Pool,
    tenant: &TenantId,
    version: u32,
    limit: i64,
) -> Result<Vec<(String, u32, Vec<u8>)>, Error> {
    let mut client = pool.get().await?;
    let tx = begin(&mut client, tenant).await?;
    let version = i32::try_from(version).map_err(Error::internal)?;
    let rows = tx
        .query(
            "SELECT recording_id, key_version, wrapped FROM data_keys WHERE key_version <> $1 ORDER BY recording_id LIMIT $2",
            &[&version, &limit],
        )
        .await?;
    tx.commit().await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get::<_, i32>(1).unsigned_abs(), r.get(2))).collect())
}

/// Replaces a data key's wrapping, if it is still wrapped under `from`. Whether it was.
pub async fn rewrap_key(
    pool: &Pool,
    tenant: &TenantId,
    id: &str,
    from: u32,
    to: u32,
    wrapped: &[u8],
) -> Result<bool, Error> {
    let mut client = pool.get().await?;
    let tx = begin(&mut client, tenant).await?;
    let (from, to) = (i32::try_from(from).map_err(Error::internal)?, i32::try_from(to).map_err(Error::internal)?);
    let n = tx
        .execute(
            "UPDATE data_keys SET key_version = $3, wrapped = $4 WHERE recording_id = $1 AND key_version = $2",
            &[&id, &from, &to, &wrapped],
        )
        .await?;
    tx.commit().await?;
    Ok(n == 1)
}

/// Who did what to which recording.
#[derive(Debug, Clone)]
pub struct Audit<'a> {
    pub actor: &'a str,
    pub roles: Vec<String>,
    pub action: &'a str,
    pub recording: &'a str,
    pub detail: String,
    pub at: DateTime<Utc>,
}

pub async fn audit(pool: &Pool, tenant: &TenantId, a: &Audit<'_>) -> Result<(), Error> {
    let mut client = pool.get().await?;
    let tx = begin(&mut client, tenant).await?;
    insert_audit(&tx, tenant, a).await?;
    tx.commit().await?;
    Ok(())
}

async fn insert_audit(tx: &Transaction<'_>, tenant: &TenantId, a: &Audit<'_>) -> Result<(), Error> {
    tx.execute(
        "INSERT INTO audit (tenant, at, actor, roles, action, recording_id, detail) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[&tenant.as_str(), &a.at, &a.actor, &a.roles, &a.action, &a.recording, &a.detail],
    )
    .await?;
    Ok(())
}

/// Sets or clears the legal hold, audited in the same transaction. `None` if no such
/// recording.
pub async fn set_hold(
    pool: &Pool,
    tenant: &TenantId,
    id: &str,
    hold: bool,
    reason: &str,
    audit: &Audit<'_>,
) -> Result<Option<RecordingRow>, Error> {
    let mut client = pool.get().await?;
    let tx = begin(&mut client, tenant).await?;
    let kept = if hold { reason } else { "" };
    let r = tx
        .query_opt(
            &format!("UPDATE recordings SET legal_hold = $2, legal_hold_reason = $3 WHERE id = $1 RETURNING {COLUMNS}"),
            &[&id, &hold, &kept],
        )
        .await?;
    if r.is_some() {
        insert_audit(&tx, tenant, audit).await?;
    }
    tx.commit().await?;
    Ok(r.as_ref().map(row))
}

/// Finished recordings of the tenant started before `cutoff` and not on legal hold.
pub async fn expired(
    pool: &Pool,
    tenant: &TenantId,
    cutoff: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<RecordingRow>, Error> {
    let mut client = pool.get().await?;
    let tx = begin(&mut client, tenant).await?;
    let rows = tx
        .query(
            &format!(
                "SELECT {COLUMNS} FROM recordings WHERE started_at < $1 AND NOT legal_hold AND state <> 'active' \
                 ORDER BY started_at LIMIT $2"
            ),
            &[&cutoff, &limit],
        )
        .await?;
    tx.commit().await?;
    Ok(rows.iter().map(row).collect())
}

/// Deletes a recording's row and its data key, audited, unless it went on legal hold in
/// the meantime. Whether it was deleted.
pub async fn delete(pool: &Pool, tenant: &TenantId, id: &str, audit: &Audit<'_>) -> Result<bool, Error> {
    let mut client = pool.get().await?;
    let tx = begin(&mut client, tenant).await?;
    let n = tx.execute("DELETE FROM recordings WHERE id = $1 AND NOT legal_hold", &[&id]).await?;
    if n == 1 {
        tx.execute("DELETE FROM data_keys WHERE recording_id = $1", &[&id]).await?;
        insert_audit(&tx, tenant, audit).await?;
    }
    tx.commit().await?;
    Ok(n == 1)
}

pub fn new_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

//! One call being recorded: the capture core's PCM sealed segment by segment into a spool
//! file on local disk (each sealed segment synced to disk), then, at the end, the spool
//! uploaded to the object store and the recording's row finished.
//!
//! A segment is one second of audio and is sealed once the next one begins, and the
//! capture holds one second for the legs to line up: a crash loses about the last three
//! seconds, and every segment already in the spool decrypts on its own.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use centralita_platform::error::Error;
use centralita_platform::tenant::TenantId;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use tokio::io::AsyncWriteExt;

use crate::capture::{Capture, IngestError, Input};
use crate::crypto::{DataKey, Sealer, SEGMENT};
use crate::g711::Law;
use crate::keys::Keyring;
use crate::metrics::Metrics;
use crate::objects::Objects;
use crate::store::{self, NewRecording, RecordingRow};

/// A call's header, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub tenant: TenantId,
    pub contact_id: String,
    pub queue: String,
    pub agent_ids: Vec<String>,
    pub start: DateTime<Utc>,
    pub law: Law,
}

/// What recording needs to record.
#[derive(Debug, Clone)]
pub struct Recorder {
    pub pool: Pool,
    pub keys: Arc<Keyring>,
    pub objects: Objects,
    pub spool: PathBuf,
    pub metrics: Arc<Metrics>,
}

/// The object key of a recording: tenant first, so a store's listing and lifecycle rules
/// can work per tenant.
pub fn object_key(tenant: &TenantId, id: &str) -> String {
    format!("recordings/{tenant}/{id}.crec")
}

fn io(e: std::io::Error) -> Error {
    Error::Unavailable(format!("spool disk ({e})"))
}

/// A recording in progress.
#[derive(Debug)]
pub struct Session {
    pub id: String,
    tenant: TenantId,
    capture: Capture,
    sealer: Sealer,
    file: tokio::fs::File,
    path: PathBuf,
    pcm: Vec<u8>,
    sealed: Vec<u8>,
    recorder: Recorder,
}

impl Recorder {
    /// Starts recording a call: a data key wrapped under the tenant's key, the row, the spool.
    pub async fn start(&self, header: &Header) -> Result<Session, Error> {
        let id = store::new_id();
        let tenant = &header.tenant;
        let key = DataKey::generate().map_err(Error::internal)?;
        let (version, wrapped) = self
            .keys
            .wrap(tenant.as_str(), &id, &key)
            .map_err(|e| Error::FailedPrecondition(format!("recording keys: {e} (tenant `{tenant}`)")))?;
        let sealer = Sealer::new(&key, tenant.as_str(), &id, SEGMENT).map_err(Error::internal)?;
        let dir = self.spool.join(tenant.as_str());
        tokio::fs::create_dir_all(&dir).await.map_err(io)?;
        let path = dir.join(format!("{id}.crec"));
        let mut file = tokio::fs::File::create(&path).await.map_err(io)?;
        file.write_all(sealer.header()).await.map_err(io)?;
        file.sync_data().await.map_err(io)?;
        let rec = NewRecording {
            id: id.clone(),
            contact_id: header.contact_id.clone(),
            queue: header.queue.clone(),
            agent_ids: header.agent_ids.clone(),
            started_at: header.start,
            codec: header.law.name().into(),
            object_key: object_key(tenant, &id),
        };
        if let Err(e) = store::create(&self.pool, tenant, &rec, version, &wrapped).await {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(e);
        }
        self.metrics.started.inc();
        Ok(Session {
            id,
            tenant: tenant.clone(),
            capture: Capture::new(header.law),
            sealer,
            file,
            path,
            pcm: Vec::new(),
            sealed: Vec::new(),
            recorder: self.clone(),
        })
    }
}

impl Session {
    pub fn paused(&self) -> bool {
        self.capture.paused()
    }

    /// Applies one message; a refused one changes nothing and is returned as the error.
    pub async fn push(&mut self, input: Input) -> Result<Result<(), IngestError>, Error> {
        let late = self.capture.late_samples();
        if let Err(e) = self.capture.push(input, &mut self.pcm) {
            return Ok(Err(e));
        }
        self.recorder.metrics.late_samples.inc_by(self.capture.late_samples() - late);
        self.drain().await?;
        Ok(Ok(()))
    }

    async fn drain(&mut self) -> Result<(), Error> {
        if self.pcm.is_empty() {
            return Ok(());
        }
        self.sealer.push(&self.pcm, &mut self.sealed).map_err(Error::internal)?;
        self.recorder.metrics.pcm_bytes.inc_by(self.pcm.len() as u64);
        self.pcm.clear();
        if !self.sealed.is_empty() {
            self.file.write_all(&self.sealed).await.map_err(io)?;
            self.file.sync_data().await.map_err(io)?;
            self.sealed.clear();
        }
        Ok(())
    }

    /// Finishes the recording: `complete` if the call's end came, else `interrupted` with
    /// what was received. Uploads the object, records the length and spans, removes the
    /// spool.
    pub async fn finish(mut self) -> Result<RecordingRow, Error> {
        let state = if self.capture.ended().is_some() { "complete" } else { "interrupted" };
        let frames = self.capture.interrupt(&mut self.pcm);
        self.drain().await?;
        let Session { id, tenant, capture, sealer, mut file, path, mut sealed, recorder, .. } = self;
        sealer.finish(&mut sealed).map_err(Error::internal)?;
        file.write_all(&sealed).await.map_err(io)?;
        file.sync_all().await.map_err(io)?;
        drop(file);
        let spans: Vec<(u64, u64)> = capture.spans().iter().map(|s| (s.start, s.end.unwrap_or(frames))).collect();
        let size = recorder.objects.put_file(&object_key(&tenant, &id), &path).await?;
        store::finish(&recorder.pool, &tenant, &id, state, frames, &spans).await?;
        remove(&path).await;
        recorder.metrics.finished(state, size);
        store::get(&recorder.pool, &tenant, &id).await?.ok_or_else(|| Error::Internal("recording vanished".into()))
    }
}

async fn remove(path: &Path) {
    if let Err(e) = tokio::fs::remove_file(path).await {
        tracing::warn!(error = %e, path = %path.display(), "cannot remove a spool file");
    }
}

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
use crate::crypto::{DataKey, Opener, Sealer, HEADER_LEN, SEGMENT};
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
    /// A pause or resume is written to the row at once, so a recording finished after a
    /// crash still says where its silences are.
    pub async fn push(&mut self, input: Input) -> Result<Result<(), IngestError>, Error> {
        let late = self.capture.late_samples();
        let marker = matches!(input, Input::Pause { .. } | Input::Resume { .. });
        if let Err(e) = self.capture.push(input, &mut self.pcm) {
            return Ok(Err(e));
        }
        self.recorder.metrics.late_samples.inc_by(self.capture.late_samples() - late);
        self.drain().await?;
        if marker {
            let spans: Vec<_> = self.capture.spans().iter().map(|s| (s.start, s.end)).collect();
            store::set_spans(&self.recorder.pool, &self.tenant, &self.id, &spans).await?;
        }
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
        let spans: Vec<_> = capture.spans().iter().map(|s| (s.start, Some(s.end.unwrap_or(frames)))).collect();
        let size = recorder.objects.put_file(&object_key(&tenant, &id), &path).await?;
        store::finish(&recorder.pool, &tenant, &id, state, frames, &spans).await?;
        remove(&path).await;
        recorder.metrics.finished(state, size);
        store::get(&recorder.pool, &tenant, &id).await?.ok_or_else(|| Error::Internal("recording vanished".into()))
    }
}

impl Recorder {
    /// Finishes the spool files a previous process left (a crash, a kill): each whose
    /// recording is still `active` is re-sealed at its last complete segment, uploaded and
    /// marked `interrupted`; a spool whose recording finished (or never got a row) is
    /// removed. Returns how many recordings were finished.
    pub async fn recover(&self) -> Result<usize, Error> {
        let (mut done, mut failed) = (0, 0);
        let mut tenants = match tokio::fs::read_dir(&self.spool).await {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io(e)),
        };
        while let Some(dir) = tenants.next_entry().await.map_err(io)? {
            let Ok(tenant) = TenantId::parse(&dir.file_name().to_string_lossy()) else { continue };
            let mut files = tokio::fs::read_dir(dir.path()).await.map_err(io)?;
            while let Some(f) = files.next_entry().await.map_err(io)? {
                let name = f.file_name().to_string_lossy().into_owned();
                let Some(id) = name.strip_suffix(".crec") else { continue };
                match self.recover_one(&tenant, id, &f.path()).await {
                    Ok(true) => done += 1,
                    Ok(false) => {}
                    Err(e) => {
                        failed += 1;
                        tracing::warn!(error = %e, recording = id, "cannot finish a spool left behind; will retry");
                    }
                }
            }
        }
        if failed > 0 {
            return Err(Error::Unavailable(format!("{failed} spool files left to finish")));
        }
        Ok(done)
    }

    async fn recover_one(&self, tenant: &TenantId, id: &str, path: &Path) -> Result<bool, Error> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let row = store::get(&self.pool, tenant, id).await?;
        let Some(row) = row.filter(|r| r.state == "active") else {
            remove(path).await;
            return Ok(false);
        };
        let (version, wrapped) = store::data_key(&self.pool, tenant, id)
            .await?
            .ok_or_else(|| Error::Internal("an active recording without its data key".into()))?;
        let key = self.keys.unwrap(tenant.as_str(), id, version, &wrapped).map_err(Error::internal)?;
        let mut file = tokio::fs::OpenOptions::new().read(true).write(true).open(path).await.map_err(io)?;
        let len = file.metadata().await.map_err(io)?.len();
        let mut header = [0u8; HEADER_LEN];
        if len < HEADER_LEN as u64 || file.read_exact(&mut header).await.is_err() {
            // Not even a header: nothing was recorded.
            drop(file);
            remove(path).await;
            store::finish(&self.pool, tenant, id, "interrupted", 0, &[]).await?;
            return Ok(false);
        }
        let opener = Opener::new(&key, tenant.as_str(), id, &header).map_err(Error::internal)?;
        let sealed_len = opener.sealed_segment() as u64;
        let complete = (len - HEADER_LEN as u64) / sealed_len;
        // The last complete segment becomes the last one: decrypted as sealed, sealed again
        // with the last flag (a different nonce); anything after it was never synced whole.
        let mut out = Vec::new();
        let kept = complete.saturating_sub(1);
        let mut sealer = Sealer::resume(&key, tenant.as_str(), id, &header, kept as u32).map_err(Error::internal)?;
        let mut plain_len = kept * opener.segment() as u64;
        if complete > 0 {
            let at = HEADER_LEN as u64 + kept * sealed_len;
            file.seek(std::io::SeekFrom::Start(at)).await.map_err(io)?;
            let mut seg = vec![0u8; sealed_len as usize];
            file.read_exact(&mut seg).await.map_err(io)?;
            let plain = opener.open(kept as u32, false, &seg).map_err(Error::internal)?;
            plain_len += plain.len() as u64;
            sealer.push(&plain, &mut out).map_err(Error::internal)?;
        }
        sealer.finish(&mut out).map_err(Error::internal)?;
        file.set_len(HEADER_LEN as u64 + kept * sealed_len).await.map_err(io)?;
        file.seek(std::io::SeekFrom::End(0)).await.map_err(io)?;
        file.write_all(&out).await.map_err(io)?;
        file.sync_all().await.map_err(io)?;
        drop(file);
        let frames = plain_len / crate::capture::FRAME_BYTES;
        let spans: Vec<_> =
            row.paused_spans.iter().map(|(s, e)| ((*s).min(frames), Some(e.unwrap_or(frames).min(frames)))).collect();
        let size = self.objects.put_file(&row.object_key, path).await?;
        store::finish(&self.pool, tenant, id, "interrupted", frames, &spans).await?;
        remove(path).await;
        self.metrics.finished("interrupted", size);
        tracing::info!(recording = id, frames, "finished a recording left by a previous process");
        Ok(true)
    }
}

/// Runs [`Recorder::recover`] until it succeeds once (the database may not be migrated yet
/// when the process starts), every few seconds, or until `shutdown`.
pub async fn recover_at_start(recorder: Recorder, shutdown: centralita_platform::shutdown::Shutdown) {
    loop {
        match recorder.recover().await {
            Ok(n) => {
                if n > 0 {
                    tracing::info!(recordings = n, "finished the recordings a previous process left");
                }
                return;
            }
            Err(e) => tracing::info!(error = %e, "spool recovery will retry"),
        }
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(3)) => {}
        }
    }
}

async fn remove(path: &Path) {
    if let Err(e) = tokio::fs::remove_file(path).await {
        tracing::warn!(error = %e, path = %path.display(), "cannot remove a spool file");
    }
}

//! The object store behind `object_store`: local disk (`file:///dir`, the default) or any
//! S3-compatible store (`s3://bucket`, configured by the standard `AWS_*` environment:
//! `AWS_ENDPOINT`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_ALLOW_HTTP` for a plain-HTTP endpoint, …). An object is written from its spool file in
//! parts (S3 multipart upload) and read back by byte ranges, so no recording is ever held in
//! memory whole.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt as _, WriteMultipart};
use tokio::io::AsyncReadExt;

use centralita_platform::error::Error;

/// Where recordings are stored.
#[derive(Debug, Clone)]
pub struct Objects {
    store: Arc<dyn ObjectStore>,
}

fn failed(e: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("object store ({e})"))
}

impl Objects {
    /// The store a `file:///dir` (the directory is created) or `s3://bucket` URL names.
    pub fn from_url(url: &str) -> Result<Self, String> {
        if url.starts_with("s3://") {
            return Self::s3(url, object_store::aws::AmazonS3Builder::from_env());
        }
        let Some(dir) = url.strip_prefix("file://") else {
            return Err(format!("`{url}`: must be file:///<dir> or s3://<bucket>"));
        };
        if !dir.starts_with('/') {
            return Err(format!("`{url}`: the directory must be absolute (file:///<dir>)"));
        }
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {dir} ({e})"))?;
        let fs = LocalFileSystem::new_with_prefix(dir).map_err(|e| e.to_string())?;
        Ok(Self { store: Arc::new(fs) })
    }

    /// An S3 store of `s3://bucket` configured by `builder` (the environment, or a test's).
    pub fn s3(url: &str, builder: object_store::aws::AmazonS3Builder) -> Result<Self, String> {
        // reqwest's rustls is built without a crypto provider (no aws-lc-rs): use ring's.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let s3 = builder.with_url(url).build().map_err(|e| format!("`{url}`: {e}"))?;
        Ok(Self { store: Arc::new(s3) })
    }

    /// Uploads the file at `from` as `key`, a part at a time.
    pub async fn put_file(&self, key: &str, from: &Path) -> Result<u64, Error> {
        let upload = self.store.put_multipart(&ObjectPath::from(key)).await.map_err(failed)?;
        let mut writer = WriteMultipart::new(upload);
        let mut file = tokio::fs::File::open(from).await.map_err(failed)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = file.read(&mut buf).await.map_err(failed)?;
            if n == 0 {
                break;
            }
            writer.wait_for_capacity(4).await.map_err(failed)?;
            writer.write(&buf[..n]);
            total += n as u64;
        }
        writer.finish().await.map_err(failed)?;
        Ok(total)
    }

    /// Writes `data` as `key` at once (a transcript: small, already in memory).
    pub async fn put_bytes(&self, key: &str, data: Vec<u8>) -> Result<u64, Error> {
        let len = data.len() as u64;
        self.store.put(&ObjectPath::from(key), Bytes::from(data).into()).await.map_err(failed)?;
        Ok(len)
    }

    pub async fn size(&self, key: &str) -> Result<u64, Error> {
        Ok(self.store.head(&ObjectPath::from(key)).await.map_err(failed)?.size)
    }

    pub async fn range(&self, key: &str, range: std::ops::Range<u64>) -> Result<Bytes, Error> {
        self.store.get_range(&ObjectPath::from(key), range).await.map_err(failed)
    }

    /// Deletes `key`; an object already gone is fine.
    pub async fn delete(&self, key: &str) -> Result<(), Error> {
        match self.store.delete(&ObjectPath::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(failed(e)),
        }
    }
}

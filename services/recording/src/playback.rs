//! Playback: a recording as a WAV file (a 44-byte header made from its length, then its
//! decrypted PCM), read from the object store a few segments at a time for any byte range;
//! and the short-lived signed URLs of the HTTP endpoint.

use std::ops::Range;

use base64::Engine as _;
use bytes::Bytes;
use centralita_platform::error::Error;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::mpsc;

use crate::crypto::{Opener, HEADER_LEN};
use crate::objects::Objects;

/// Bytes of the WAV header.
pub const WAV_HEADER: u64 = 44;
/// Segments read from the store at once.
const SEGMENTS_PER_READ: u64 = 8;

/// The canonical 44-byte header of 16-bit PCM, 8 kHz, stereo with `data` bytes of samples.
pub fn wav_header(data: u64) -> [u8; 44] {
    let data = u32::try_from(data).unwrap_or(u32::MAX - 36);
    let mut h = [0u8; 44];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&(36 + data).to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes());
    h[22..24].copy_from_slice(&2u16.to_le_bytes());
    h[24..28].copy_from_slice(&8000u32.to_le_bytes());
    h[28..32].copy_from_slice(&32000u32.to_le_bytes());
    h[32..34].copy_from_slice(&4u16.to_le_bytes());
    h[34..36].copy_from_slice(&16u16.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data.to_le_bytes());
    h
}

/// A stored recording opened for reading.
#[derive(Debug)]
pub struct Audio {
    pub objects: Objects,
    pub key: String,
    pub opener: Opener,
    pub pcm_len: u64,
    pub segments: u64,
}

impl Audio {
    pub fn wav_len(&self) -> u64 {
        WAV_HEADER + self.pcm_len
    }

    /// Sends the WAV bytes of `range` (within [`Self::wav_len`]) in order, a few segments at a
    /// time, until done or the receiver is gone. An error ends the stream with it.
    pub fn send(self, range: Range<u64>, tx: mpsc::Sender<Result<Bytes, Error>>) {
        tokio::spawn(async move {
            if let Err(e) = self.send_range(range, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
    }

    async fn send_range(&self, range: Range<u64>, tx: &mpsc::Sender<Result<Bytes, Error>>) -> Result<(), Error> {
        let mut at = range.start;
        if at < WAV_HEADER {
            let h = wav_header(self.pcm_len);
            let end = range.end.min(WAV_HEADER);
            if tx.send(Ok(Bytes::copy_from_slice(&h[at as usize..end as usize]))).await.is_err() {
                return Ok(());
            }
            at = end;
        }
        let seg = self.opener.segment() as u64;
        let sealed = self.opener.sealed_segment() as u64;
        while at < range.end {
            let pcm_at = at - WAV_HEADER;
            let first = pcm_at / seg;
            let last = (first + SEGMENTS_PER_READ).min(self.segments);
            let from = HEADER_LEN as u64 + first * sealed;
            let to = (HEADER_LEN as u64 + last * sealed).min(HEADER_LEN as u64 + self.pcm_len + self.segments * 16);
            let bytes = self.objects.range(&self.key, from..to).await?;
            let mut plain = Vec::with_capacity(bytes.len());
            for (i, chunk) in bytes.chunks(sealed as usize).enumerate() {
                let n = first + i as u64;
                let p = self
                    .opener
                    .open(n as u32, n + 1 == self.segments, chunk)
                    .map_err(|e| Error::Internal(format!("stored recording does not decrypt: {e}")))?;
                plain.extend_from_slice(&p);
            }
            let base = first * seg;
            let skip = (pcm_at - base) as usize;
            let want = ((range.end - WAV_HEADER) - base).min(plain.len() as u64) as usize;
            if skip >= want {
                return Err(Error::Internal("stored recording is shorter than its size says".into()));
            }
            let out = Bytes::from(plain).slice(skip..want);
            at += out.len() as u64;
            if tx.send(Ok(out)).await.is_err() {
                return Ok(());
            }
        }
        Ok(())
    }
}

/// A `Range` header this endpoint cannot satisfy (416).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsatisfiable;

/// Parses a single `Range: bytes=…` value against a resource of `len` bytes. `Ok(None)`
/// means the whole resource.
pub fn parse_range(value: &str, len: u64) -> Result<Option<Range<u64>>, Unsatisfiable> {
    let spec = value.trim().strip_prefix("bytes=").ok_or(Unsatisfiable)?;
    if spec.contains(',') {
        return Err(Unsatisfiable);
    }
    let (a, b) = spec.split_once('-').ok_or(Unsatisfiable)?;
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| Unsatisfiable)?;
        if n == 0 {
            return Err(Unsatisfiable);
        }
        len.saturating_sub(n)..len
    } else {
        let start: u64 = a.parse().map_err(|_| Unsatisfiable)?;
        let end =
            if b.is_empty() { len } else { b.parse::<u64>().map_err(|_| Unsatisfiable)?.saturating_add(1).min(len) };
        start..end
    };
    if range.start >= len || range.start >= range.end {
        return Err(Unsatisfiable);
    }
    Ok(Some(range))
}

/// Signs and checks playback URLs: HMAC-SHA256 over the tenant, recording, expiry and the
/// subject it was issued to.
#[derive(Clone)]
pub struct UrlSigner {
    key: Vec<u8>,
    /// `http://host:port`, no trailing slash.
    pub base: String,
}

impl std::fmt::Debug for UrlSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UrlSigner").field("base", &self.base).finish_non_exhaustive()
    }
}

/// What a valid signed URL grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub tenant: String,
    pub recording: String,
    pub subject: String,
    pub expires: i64,
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

impl UrlSigner {
    pub fn new(key: Vec<u8>, base: String) -> Self {
        Self { key, base: base.trim_end_matches('/').to_owned() }
    }

    fn mac(&self, g: &Grant) -> Hmac<Sha256> {
        // Any key length is valid for HMAC.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!());
        mac.update(
            format!("centralita.recording.url.v1\n{}\n{}\n{}\n{}", g.tenant, g.recording, g.expires, g.subject)
                .as_bytes(),
        );
        mac
    }

    /// The path and query of a URL for `g`.
    pub fn path(&self, g: &Grant) -> String {
        let sig = B64.encode(self.mac(g).finalize().into_bytes());
        format!(
            "/v1/recordings/{}/{}.wav?exp={}&sub={}&sig={sig}",
            g.tenant,
            g.recording,
            g.expires,
            B64.encode(&g.subject)
        )
    }

    pub fn url(&self, g: &Grant) -> String {
        format!("{}{}", self.base, self.path(g))
    }

    /// Checks a request's path parts and query; `now` in Unix seconds.
    pub fn verify(&self, tenant: &str, file: &str, query: &str, now: i64) -> Result<Grant, &'static str> {
        let recording = file.strip_suffix(".wav").ok_or("not a recording URL")?;
        let (mut exp, mut sub, mut sig) = (None, None, None);
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("exp", v)) if exp.is_none() => exp = Some(v),
                Some(("sub", v)) if sub.is_none() => sub = Some(v),
                Some(("sig", v)) if sig.is_none() => sig = Some(v),
                _ => return Err("the URL was altered"),
            }
        }
        let (Some(exp), Some(sub), Some(sig)) = (exp, sub, sig) else { return Err("the URL was altered") };
        let expires: i64 = exp.parse().map_err(|_| "the URL was altered")?;
        let subject = B64.decode(sub).ok().and_then(|s| String::from_utf8(s).ok()).ok_or("the URL was altered")?;
        let sig = B64.decode(sig).map_err(|_| "the URL was altered")?;
        let g = Grant { tenant: tenant.to_owned(), recording: recording.to_owned(), subject, expires };
        self.mac(&g).verify_slice(&sig).map_err(|_| "the URL was altered")?;
        if now > expires {
            return Err("the URL has expired");
        }
        Ok(g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-99", 1000), Ok(Some(0..100)));
        assert_eq!(parse_range("bytes=900-", 1000), Ok(Some(900..1000)));
        assert_eq!(parse_range("bytes=-100", 1000), Ok(Some(900..1000)));
        assert_eq!(parse_range("bytes=990-5000", 1000), Ok(Some(990..1000)));
        assert_eq!(parse_range("bytes=1000-", 1000), Err(Unsatisfiable));
        assert_eq!(parse_range("bytes=5-2", 1000), Err(Unsatisfiable));
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), Err(Unsatisfiable));
        assert_eq!(parse_range("items=0-1", 1000), Err(Unsatisfiable));
        assert_eq!(parse_range("bytes=-0", 1000), Err(Unsatisfiable));
    }

    #[test]
    fn signed_urls_refuse_any_alteration_and_expire() {
        let s = UrlSigner::new(b"k".to_vec(), "http://127.0.0.1:1/".into());
        let g = Grant { tenant: "acme".into(), recording: "r1".into(), subject: "sup".into(), expires: 1000 };
        let path = s.path(&g);
        let (p, q) = path.split_once('?').unwrap();
        let parts: Vec<&str> = p.split('/').collect();
        assert_eq!(s.verify(parts[3], parts[4], q, 999), Ok(g.clone()));
        assert_eq!(s.verify(parts[3], parts[4], q, 1001), Err("the URL has expired"));
        assert!(s.verify("globex", parts[4], q, 999).is_err());
        assert!(s.verify(parts[3], "r2.wav", q, 999).is_err());
        assert!(s.verify(parts[3], parts[4], &q.replace("exp=1000", "exp=9000"), 999).is_err());
        assert!(s.verify(parts[3], parts[4], &format!("{q}&exp=1"), 999).is_err());
        let other = UrlSigner::new(b"other".to_vec(), "http://x".into());
        assert!(other.verify(parts[3], parts[4], q, 999).is_err());
    }

    #[test]
    fn wav_header_is_canonical() {
        let h = wav_header(32000);
        assert_eq!(&h[..4], b"RIFF");
        assert_eq!(u32::from_le_bytes([h[4], h[5], h[6], h[7]]), 32036);
        assert_eq!(u32::from_le_bytes([h[40], h[41], h[42], h[43]]), 32000);
    }
}

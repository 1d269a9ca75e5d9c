//! Envelope encryption of recordings (the format is `docs/recording-format.md`).
//!
//! - A fresh 256-bit **data key** per recording encrypts its audio with AES-256-GCM in the
//!   STREAM construction ([`Sealer`], [`Opener`]): the audio is cut into segments of
//!   [`SEGMENT`] bytes, each sealed on its own with a nonce made of a random 7-byte prefix,
//!   the segment's 32-bit big-endian counter and a last-segment flag byte (the nonce layout
//!   of RustCrypto's `StreamBE32`), so a file is encrypted and decrypted a segment at a time,
//!   never whole, and truncation, reordering or splicing is detected.
//! - Every segment's associated data is the object header plus the tenant id and the
//!   recording id ([`associated_data`]): an object decrypts only as the recording of the
//!   tenant it was written for.
//! - The data key is **wrapped** (AES-256-GCM) by the tenant's key of a given version
//!   ([`crate::keys`]), the tenant, recording and version bound as associated data
//!   ([`wrap`], [`unwrap`]). Only the wrapped key is stored (PostgreSQL); deleting it makes
//!   the audio unreadable wherever copies of the object are (crypto-shredding).

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::Aes256Gcm;

/// Plaintext bytes of every segment but the last: one second of 8 kHz 16-bit stereo.
pub const SEGMENT: usize = 32_000;
/// Bytes of the AES-GCM tag after each segment's ciphertext.
pub const TAG: usize = 16;
/// Bytes of the object header.
pub const HEADER_LEN: usize = 16;
const MAGIC: &[u8; 4] = b"CREC";
const VERSION: u8 = 1;
const PREFIX_LEN: usize = 7;
const KEY_CONTEXT: &[u8] = b"centralita.recording.data-key.v1\0";
/// Bytes of a wrapped data key: nonce, encrypted key, tag.
pub const WRAPPED_LEN: usize = 12 + 32 + TAG;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("not a recording object (bad header)")]
    BadHeader,
    #[error("a segment does not authenticate (wrong key, tenant or recording, or altered)")]
    Segment,
    #[error("the object ends without its last segment (truncated)")]
    Truncated,
    #[error("the wrapped data key does not authenticate (wrong tenant key, tenant or recording)")]
    Unwrap,
    #[error("no randomness available: {0}")]
    Random(String),
}

/// 32 random bytes: a data key.
#[derive(Clone, PartialEq, Eq)]
pub struct DataKey(pub [u8; 32]);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey([redacted])")
    }
}

impl DataKey {
    pub fn generate() -> Result<Self, CryptoError> {
        let mut k = [0u8; 32];
        getrandom::fill(&mut k).map_err(|e| CryptoError::Random(e.to_string()))?;
        Ok(Self(k))
    }

    fn cipher(&self) -> Aes256Gcm {
        // A 32-byte slice is always a valid AES-256 key.
        Aes256Gcm::new(&self.0.into())
    }
}

fn random<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| CryptoError::Random(e.to_string()))?;
    Ok(b)
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Tenant and recording ids are short ASCII (validated well below 64 KiB).
    out.extend_from_slice(&(s.len().min(u16::MAX as usize) as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// The associated data of every segment of an object: its header, then the tenant id and
/// the recording id, each as a 16-bit big-endian length and its UTF-8 bytes.
pub fn associated_data(header: &[u8; HEADER_LEN], tenant: &str, recording: &str) -> Vec<u8> {
    let mut aad = header.to_vec();
    put_str(&mut aad, tenant);
    put_str(&mut aad, recording);
    aad
}

fn key_aad(tenant: &str, recording: &str, version: u32) -> Vec<u8> {
    let mut aad = KEY_CONTEXT.to_vec();
    put_str(&mut aad, tenant);
    put_str(&mut aad, recording);
    aad.extend_from_slice(&version.to_be_bytes());
    aad
}

/// Wraps `key` under the tenant key `kek` of `version`: nonce (12) ‖ ciphertext ‖ tag.
pub fn wrap(
    kek: &[u8; 32],
    version: u32,
    tenant: &str,
    recording: &str,
    key: &DataKey,
) -> Result<Vec<u8>, CryptoError> {
    let nonce = random::<12>()?;
    let aad = key_aad(tenant, recording, version);
    let ct = Aes256Gcm::new(&(*kek).into())
        .encrypt(&nonce.into(), Payload { msg: &key.0, aad: &aad })
        .map_err(|_| CryptoError::Unwrap)?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Unwraps a data key [`wrap`] made.
pub fn unwrap(
    kek: &[u8; 32],
    version: u32,
    tenant: &str,
    recording: &str,
    wrapped: &[u8],
) -> Result<DataKey, CryptoError> {
    if wrapped.len() != WRAPPED_LEN {
        return Err(CryptoError::Unwrap);
    }
    let (nonce, ct) = wrapped.split_at(12);
    let nonce: [u8; 12] = nonce.try_into().map_err(|_| CryptoError::Unwrap)?;
    let aad = key_aad(tenant, recording, version);
    let key = Aes256Gcm::new(&(*kek).into())
        .decrypt(&nonce.into(), Payload { msg: ct, aad: &aad })
        .map_err(|_| CryptoError::Unwrap)?;
    let key: [u8; 32] = key.try_into().map_err(|_| CryptoError::Unwrap)?;
    Ok(DataKey(key))
}

fn nonce(prefix: &[u8; PREFIX_LEN], counter: u32, last: bool) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..PREFIX_LEN].copy_from_slice(prefix);
    n[PREFIX_LEN..11].copy_from_slice(&counter.to_be_bytes());
    n[11] = u8::from(last);
    n
}

/// Parses an object header: its segment size and nonce prefix.
pub fn parse_header(h: &[u8]) -> Result<([u8; HEADER_LEN], usize, [u8; PREFIX_LEN]), CryptoError> {
    let h: [u8; HEADER_LEN] = h.get(..HEADER_LEN).and_then(|h| h.try_into().ok()).ok_or(CryptoError::BadHeader)?;
    if &h[..4] != MAGIC || h[4] != VERSION {
        return Err(CryptoError::BadHeader);
    }
    let size = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) as usize;
    if size == 0 || size > 1 << 24 {
        return Err(CryptoError::BadHeader);
    }
    let mut prefix = [0u8; PREFIX_LEN];
    prefix.copy_from_slice(&h[9..16]);
    Ok((h, size, prefix))
}

/// Encrypts a stream of plaintext a segment at a time.
pub struct Sealer {
    cipher: Aes256Gcm,
    prefix: [u8; PREFIX_LEN],
    aad: Vec<u8>,
    header: [u8; HEADER_LEN],
    counter: u32,
    buf: Vec<u8>,
    segment: usize,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer").field("counter", &self.counter).field("buffered", &self.buf.len()).finish()
    }
}

impl Sealer {
    /// A sealer with a fresh nonce prefix; [`Self::header`] is the object's first bytes.
    pub fn new(key: &DataKey, tenant: &str, recording: &str, segment: usize) -> Result<Self, CryptoError> {
        let prefix = random::<PREFIX_LEN>()?;
        let mut header = [0u8; HEADER_LEN];
        header[..4].copy_from_slice(MAGIC);
        header[4] = VERSION;
        header[5..9].copy_from_slice(&(segment as u32).to_be_bytes());
        header[9..].copy_from_slice(&prefix);
        Ok(Self {
            cipher: key.cipher(),
            prefix,
            aad: associated_data(&header, tenant, recording),
            header,
            counter: 0,
            buf: Vec::with_capacity(segment),
            segment,
        })
    }

    /// Continues an object whose first `sealed` segments are written (recovery).
    pub fn resume(
        key: &DataKey,
        tenant: &str,
        recording: &str,
        header: &[u8],
        sealed: u32,
    ) -> Result<Self, CryptoError> {
        let (header, segment, prefix) = parse_header(header)?;
        Ok(Self {
            cipher: key.cipher(),
            prefix,
            aad: associated_data(&header, tenant, recording),
            header,
            counter: sealed,
            buf: Vec::with_capacity(segment),
            segment,
        })
    }

    pub fn header(&self) -> &[u8; HEADER_LEN] {
        &self.header
    }

    /// Segments sealed so far.
    pub fn sealed(&self) -> u32 {
        self.counter
    }

    fn seal(&mut self, plaintext: &[u8], last: bool, out: &mut Vec<u8>) -> Result<(), CryptoError> {
        let n = nonce(&self.prefix, self.counter, last);
        let ct = self
            .cipher
            .encrypt(&n.into(), Payload { msg: plaintext, aad: &self.aad })
            .map_err(|_| CryptoError::Segment)?;
        out.extend_from_slice(&ct);
        self.counter = self.counter.checked_add(1).ok_or(CryptoError::Segment)?;
        Ok(())
    }

    /// Buffers `data`, appending every segment that is complete and not the last to `out`.
    /// A segment is sealed only once more data follows it, so the last one is never empty
    /// unless the whole stream is.
    pub fn push(&mut self, mut data: &[u8], out: &mut Vec<u8>) -> Result<(), CryptoError> {
        while !data.is_empty() {
            if self.buf.len() == self.segment {
                let full = std::mem::take(&mut self.buf);
                self.seal(&full, false, out)?;
                self.buf = full;
                self.buf.clear();
            }
            let take = (self.segment - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        Ok(())
    }

    /// Seals what is buffered as the last segment.
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<(), CryptoError> {
        let rest = std::mem::take(&mut self.buf);
        self.seal(&rest, true, out)
    }
}

/// Decrypts an object's segments.
pub struct Opener {
    cipher: Aes256Gcm,
    prefix: [u8; PREFIX_LEN],
    aad: Vec<u8>,
    segment: usize,
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener").field("segment", &self.segment).finish()
    }
}

impl Opener {
    pub fn new(key: &DataKey, tenant: &str, recording: &str, header: &[u8]) -> Result<Self, CryptoError> {
        let (header, segment, prefix) = parse_header(header)?;
        Ok(Self { cipher: key.cipher(), prefix, aad: associated_data(&header, tenant, recording), segment })
    }

    /// Plaintext bytes of each segment but the last.
    pub fn segment(&self) -> usize {
        self.segment
    }

    /// Bytes of each sealed segment but the last.
    pub fn sealed_segment(&self) -> usize {
        self.segment + TAG
    }

    /// Decrypts segment `counter`, which is the object's last if `last`.
    pub fn open(&self, counter: u32, last: bool, ciphertext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let n = nonce(&self.prefix, counter, last);
        self.cipher.decrypt(&n.into(), Payload { msg: ciphertext, aad: &self.aad }).map_err(|_| CryptoError::Segment)
    }

    /// Plaintext length of an object of `object_len` bytes, and its number of segments.
    pub fn plaintext_len(&self, object_len: u64) -> Result<(u64, u64), CryptoError> {
        let body = object_len.checked_sub(HEADER_LEN as u64).ok_or(CryptoError::BadHeader)?;
        let sealed = self.sealed_segment() as u64;
        let segments = body.div_ceil(sealed).max(1);
        let plain = body.checked_sub(segments * TAG as u64).ok_or(CryptoError::Truncated)?;
        Ok((plain, segments))
    }

    /// Decrypts a whole object held in memory (tests and small objects).
    pub fn open_all(&self, object: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let (_, segments) = self.plaintext_len(object.len() as u64)?;
        let body = &object[HEADER_LEN..];
        let mut out = Vec::new();
        for (i, chunk) in body.chunks(self.sealed_segment()).enumerate() {
            let last = i as u64 + 1 == segments;
            out.extend(self.open(i as u32, last, chunk)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal_all(key: &DataKey, tenant: &str, rec: &str, data: &[u8], segment: usize) -> Vec<u8> {
        let mut s = Sealer::new(key, tenant, rec, segment).unwrap();
        let mut out = s.header().to_vec();
        for piece in data.chunks(37) {
            s.push(piece, &mut out).unwrap();
        }
        s.finish(&mut out).unwrap();
        out
    }

    #[test]
    fn round_trip_at_every_length_around_segment_boundaries() {
        let key = DataKey::generate().unwrap();
        for len in [0usize, 1, 99, 100, 101, 199, 200, 201, 1000] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let obj = seal_all(&key, "acme", "r1", &data, 100);
            let o = Opener::new(&key, "acme", "r1", &obj).unwrap();
            assert_eq!(o.plaintext_len(obj.len() as u64).unwrap().0, len as u64);
            assert_eq!(o.open_all(&obj).unwrap(), data, "len {len}");
        }
    }

    #[test]
    fn swapped_ids_another_key_truncation_and_alteration_are_refused() {
        let key = DataKey::generate().unwrap();
        let data = vec![5u8; 450];
        let obj = seal_all(&key, "acme", "r1", &data, 100);
        let open = |k: &DataKey, t: &str, r: &str, o: &[u8]| Opener::new(k, t, r, o).and_then(|x| x.open_all(o));
        assert_eq!(open(&key, "globex", "r1", &obj), Err(CryptoError::Segment));
        assert_eq!(open(&key, "acme", "r2", &obj), Err(CryptoError::Segment));
        assert_eq!(open(&key, "r1", "acme", &obj), Err(CryptoError::Segment));
        assert_eq!(open(&DataKey::generate().unwrap(), "acme", "r1", &obj), Err(CryptoError::Segment));
        // Dropping the last segment: the new last one was not sealed as last.
        assert!(open(&key, "acme", "r1", &obj[..HEADER_LEN + 4 * 116]).is_err());
        let mut bad = obj.clone();
        bad[HEADER_LEN + 3] ^= 1;
        assert!(open(&key, "acme", "r1", &bad).is_err());
        let mut bad = obj.clone();
        bad[10] ^= 1; // the nonce prefix in the header
        assert!(open(&key, "acme", "r1", &bad).is_err());
    }

    #[test]
    fn wrapped_keys_bind_tenant_recording_and_version() {
        let kek = [7u8; 32];
        let key = DataKey::generate().unwrap();
        let w = wrap(&kek, 3, "acme", "r1", &key).unwrap();
        assert_eq!(w.len(), WRAPPED_LEN);
        assert_eq!(unwrap(&kek, 3, "acme", "r1", &w).unwrap(), key);
        assert_eq!(unwrap(&kek, 3, "globex", "r1", &w), Err(CryptoError::Unwrap));
        assert_eq!(unwrap(&kek, 3, "acme", "r2", &w), Err(CryptoError::Unwrap));
        assert_eq!(unwrap(&kek, 2, "acme", "r1", &w), Err(CryptoError::Unwrap));
        assert_eq!(unwrap(&[8u8; 32], 3, "acme", "r1", &w), Err(CryptoError::Unwrap));
        assert_eq!(unwrap(&kek, 3, "acme", "r1", &w[..40]), Err(CryptoError::Unwrap));
    }
}

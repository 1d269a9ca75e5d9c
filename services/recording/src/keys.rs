//! Tenant keys: the key-encryption keys that wrap each recording's data key.
//!
//! They come from one YAML file (`CENTRALITA_RECORDING_KEYS_FILE`, mounted from a
//! Kubernetes Secret in a cluster), read once at start:
//!
//! ```yaml
//! # Versioned root keys (base64 of 32 bytes). A tenant without keys of its own gets
//! # HMAC-SHA256(root[v], "centralita.recording.tenant-key.v1\0" ‖ tenant) as its key v.
//! current: 2
//! roots:
//!   1: "…"
//!   2: "…"
//! # A tenant may have its own versioned keys instead (erasing them shreds all its audio).
//! tenants:
//!   acme: { current: 1, keys: { 1: "…" } }
//! ```
//!
//! New recordings are wrapped under the tenant's current version; older versions stay in
//! the file for as long as data keys wrapped under them exist. Rotating is adding a version
//! and making it current: audio is never re-encrypted, and [`Keyring::rewrap`] moves a data
//! key to the current version without touching its object.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::crypto::{self, CryptoError, DataKey};

const DERIVE_CONTEXT: &[u8] = b"centralita.recording.tenant-key.v1\0";

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Versions {
    current: u32,
    #[serde(alias = "roots")]
    keys: BTreeMap<u32, String>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    #[serde(default)]
    current: Option<u32>,
    #[serde(default)]
    roots: BTreeMap<u32, String>,
    #[serde(default)]
    tenants: BTreeMap<String, Versions>,
}

#[derive(Clone)]
struct Set {
    current: u32,
    keys: BTreeMap<u32, [u8; 32]>,
}

/// The tenant keys, by version. Never printed.
#[derive(Clone)]
pub struct Keyring {
    roots: Option<Set>,
    tenants: BTreeMap<String, Set>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring").field("tenants", &self.tenants.keys().collect::<Vec<_>>()).finish_non_exhaustive()
    }
}

fn decode(where_: &str, b64: &str) -> Result<[u8; 32], String> {
    let raw =
        base64::engine::general_purpose::STANDARD.decode(b64.trim()).map_err(|_| format!("{where_}: not base64"))?;
    raw.try_into().map_err(|_| format!("{where_}: must be 32 bytes"))
}

fn set(where_: &str, current: u32, keys: &BTreeMap<u32, String>) -> Result<Set, String> {
    let keys = keys
        .iter()
        .map(|(v, k)| decode(&format!("{where_}.{v}"), k).map(|k| (*v, k)))
        .collect::<Result<BTreeMap<_, _>, _>>()?;
    if !keys.contains_key(&current) {
        return Err(format!("{where_}: the current version {current} has no key"));
    }
    Ok(Set { current, keys })
}

impl Keyring {
    /// Parses the key file's text. Errors name the entry, never a key.
    pub fn parse(yaml: &str) -> Result<Self, String> {
        let f: KeyFile = serde_yaml::from_str(yaml).map_err(|e| format!("not a key file ({e})"))?;
        let roots = match (f.current, f.roots.is_empty()) {
            (None, true) => None,
            (Some(c), false) => Some(set("roots", c, &f.roots)?),
            _ => return Err("`current` and `roots` go together".into()),
        };
        let tenants = f
            .tenants
            .iter()
            .map(|(t, v)| set(&format!("tenants.{t}"), v.current, &v.keys).map(|s| (t.clone(), s)))
            .collect::<Result<_, _>>()?;
        if roots.is_none() && f.tenants.is_empty() {
            return Err("holds no key".into());
        }
        Ok(Self { roots, tenants })
    }

    /// A keyring without keys: nothing can be recorded.
    pub fn empty() -> Self {
        Self { roots: None, tenants: BTreeMap::new() }
    }

    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {} ({e})", path.display()))?;
        Self::parse(&text)
    }

    /// The tenant's key of `version`, if the keyring has it.
    pub fn key(&self, tenant: &str, version: u32) -> Option<[u8; 32]> {
        if let Some(own) = self.tenants.get(tenant) {
            return own.keys.get(&version).copied();
        }
        let root = self.roots.as_ref()?.keys.get(&version)?;
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(root).ok()?;
        mac.update(DERIVE_CONTEXT);
        mac.update(tenant.as_bytes());
        Some(mac.finalize().into_bytes().into())
    }

    /// The version new data keys of the tenant are wrapped under.
    pub fn current(&self, tenant: &str) -> Option<u32> {
        match self.tenants.get(tenant) {
            Some(own) => Some(own.current),
            None => self.roots.as_ref().map(|r| r.current),
        }
    }

    /// Wraps a data key under the tenant's current key: (version, wrapped).
    pub fn wrap(&self, tenant: &str, recording: &str, key: &DataKey) -> Result<(u32, Vec<u8>), KeyError> {
        let version = self.current(tenant).ok_or(KeyError::NoKey)?;
        let kek = self.key(tenant, version).ok_or(KeyError::NoKey)?;
        Ok((version, crypto::wrap(&kek, version, tenant, recording, key)?))
    }

    pub fn unwrap(&self, tenant: &str, recording: &str, version: u32, wrapped: &[u8]) -> Result<DataKey, KeyError> {
        let kek = self.key(tenant, version).ok_or(KeyError::NoKey)?;
        Ok(crypto::unwrap(&kek, version, tenant, recording, wrapped)?)
    }

    /// The data key re-wrapped under the tenant's current version, or `None` when it is
    /// wrapped under it already. The audio object is not touched.
    pub fn rewrap(
        &self,
        tenant: &str,
        recording: &str,
        version: u32,
        wrapped: &[u8],
    ) -> Result<Option<(u32, Vec<u8>)>, KeyError> {
        if self.current(tenant) == Some(version) {
            return Ok(None);
        }
        let key = self.unwrap(tenant, recording, version, wrapped)?;
        self.wrap(tenant, recording, &key).map(Some)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("no key for this tenant and version in the keyring")]
    NoKey,
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
    const K2: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";

    #[test]
    fn derived_and_own_keys_rotate_without_touching_audio() {
        let v1 = Keyring::parse(&format!("current: 1\nroots: {{1: \"{K1}\"}}\n")).unwrap();
        let v2 = Keyring::parse(&format!("current: 2\nroots: {{1: \"{K1}\", 2: \"{K2}\"}}\n")).unwrap();
        assert_ne!(v1.key("acme", 1), v1.key("globex", 1), "each tenant its own key");
        let key = DataKey::generate().unwrap();
        let (version, wrapped) = v1.wrap("acme", "r1", &key).unwrap();
        assert_eq!(version, 1);
        let (nv, nw) = v2.rewrap("acme", "r1", version, &wrapped).unwrap().unwrap();
        assert_eq!(nv, 2);
        assert_eq!(v2.unwrap("acme", "r1", nv, &nw).unwrap(), key);
        assert!(v2.rewrap("acme", "r1", nv, &nw).unwrap().is_none());
        assert!(v1.unwrap("acme", "r1", 2, &nw).is_err(), "v1's ring lacks version 2");
        assert!(v2.unwrap("globex", "r1", nv, &nw).is_err());
    }

    #[test]
    fn own_tenant_keys_override_roots_and_bad_files_say_where() {
        let ring = Keyring::parse(&format!(
            "current: 1\nroots: {{1: \"{K1}\"}}\ntenants:\n  acme: {{current: 1, keys: {{1: \"{K2}\"}}}}\n"
        ))
        .unwrap();
        assert_eq!(ring.key("acme", 1), Some([2u8; 32]));
        assert!(ring.key("acme", 2).is_none());
        let e = Keyring::parse("current: 3\nroots: {1: \"AQ==\"}\n").unwrap_err();
        assert!(e.contains("roots.1"), "{e}");
        let e = Keyring::parse(&format!("current: 3\nroots: {{1: \"{K1}\"}}\n")).unwrap_err();
        assert!(e.contains("current version 3"), "{e}");
        assert!(!format!("{ring:?}").contains(K1));
        assert!(Keyring::parse("{}").is_err());
    }
}

//! Registrations in Redis, so any media replica reaches any agent's phone: one key per
//! tenant and agent, `{t:<tenant>}:sip:reg:<agent>`, holding the contact the phone
//! registered (JSON: `contact`, `source`), expiring with the registration (`EX`). The
//! nonces' shared key is `{media}:sip:nonce-key` (see `nonce`), set once by whichever
//! replica needs it first; each accepted digest's (nonce, cnonce, nc) is remembered for the
//! nonce's lifetime under `{t:<tenant>}:sip:nc:<hash>`, so a replayed REGISTER is refused.

use centralita_platform::cache::{tenant_key, RedisHandle};
use centralita_platform::tenant::TenantId;
use serde::{Deserialize, Serialize};

use super::nonce::NonceKey;

const NONCE_KEY: &str = "{media}:sip:nonce-key";

/// A phone's registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// The Contact URI the phone registered: where its calls are sent.
    pub contact: String,
    /// The address the REGISTER came from (`ip:port`), for the operator's eyes.
    pub source: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(String),
}

impl From<centralita_platform::error::Error> for StoreError {
    fn from(e: centralita_platform::error::Error) -> Self {
        StoreError::Redis(e.to_string())
    }
}

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        StoreError::Redis(e.to_string())
    }
}

#[derive(Debug, Clone)]
pub struct Registrations {
    redis: RedisHandle,
}

pub fn key(tenant: &TenantId, agent: &str) -> String {
    tenant_key(tenant, &["sip", "reg", agent])
}

impl Registrations {
    pub fn new(redis: RedisHandle) -> Self {
        Self { redis }
    }

    /// Binds `agent` to `binding` for `expires` seconds (replacing any other binding).
    pub async fn set(&self, tenant: &TenantId, agent: &str, binding: &Binding, expires: u32) -> Result<(), StoreError> {
        let mut c = self.redis.conn()?;
        let value = serde_json::to_string(binding).map_err(|e| StoreError::Redis(e.to_string()))?;
        let _: () = redis::cmd("SET")
            .arg(key(tenant, agent))
            .arg(value)
            .arg("EX")
            .arg(expires.max(1))
            .query_async(&mut c)
            .await?;
        Ok(())
    }

    /// The agent's binding and its seconds left, if it has one.
    pub async fn get(&self, tenant: &TenantId, agent: &str) -> Result<Option<(Binding, u32)>, StoreError> {
        let mut c = self.redis.conn()?;
        let k = key(tenant, agent);
        let (value, ttl): (Option<String>, i64) =
            redis::pipe().cmd("GET").arg(&k).cmd("TTL").arg(&k).query_async(&mut c).await?;
        // An unreadable value (not ours) is no binding.
        Ok(value
            .and_then(|v| serde_json::from_str::<Binding>(&v).ok())
            .map(|b| (b, u32::try_from(ttl.max(0)).unwrap_or(u32::MAX))))
    }

    /// Removes the agent's binding: any (`contact` None) or only one to `contact`. Whether
    /// one was removed.
    pub async fn remove(&self, tenant: &TenantId, agent: &str, contact: Option<&str>) -> Result<bool, StoreError> {
        let mut c = self.redis.conn()?;
        let k = key(tenant, agent);
        // Compare and delete in one step, so a phone re-registering meanwhile keeps its
        // new binding.
        let script = redis::Script::new(
            r"
            local v = redis.call('GET', KEYS[1])
            if not v then return 0 end
            if ARGV[1] ~= '' then
              local ok, b = pcall(cjson.decode, v)
              if not ok or b['contact'] ~= ARGV[1] then return 0 end
            end
            return redis.call('DEL', KEYS[1])
            ",
        );
        let removed: i64 = script.key(k).arg(contact.unwrap_or("")).invoke_async(&mut c).await?;
        Ok(removed > 0)
    }

    /// Records the use of a digest's (`nonce`, `cnonce`, `nc`) for `ttl` seconds (the
    /// nonce's lifetime); `false` if it was used already: a replayed REGISTER.
    pub async fn first_use(
        &self,
        tenant: &TenantId,
        nonce: &str,
        cnonce: &str,
        nc: &str,
        ttl: u64,
    ) -> Result<bool, StoreError> {
        use sha2::Digest;
        let mut c = self.redis.conn()?;
        // Client-chosen strings: hashed into a key of bounded length.
        let digest = sha2::Sha256::digest(format!("{nonce}\n{cnonce}\n{nc}").as_bytes());
        let id: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        let set: Option<String> = redis::cmd("SET")
            .arg(tenant_key(tenant, &["sip", "nc", &id]))
            .arg(1)
            .arg("NX")
            .arg("EX")
            .arg(ttl.max(1))
            .query_async(&mut c)
            .await?;
        Ok(set.is_some())
    }

    /// The nonces' key shared by the replicas: the one in Redis, or a new random one put
    /// there first.
    pub async fn nonce_key(&self) -> Result<NonceKey, StoreError> {
        let mut c = self.redis.conn()?;
        let mut fresh = [0u8; 32];
        getrandom::fill(&mut fresh).map_err(|e| StoreError::Redis(format!("no randomness: {e}")))?;
        let hex: String = fresh.iter().map(|b| format!("{b:02x}")).collect();
        let _: Option<String> = redis::cmd("SET").arg(NONCE_KEY).arg(&hex).arg("NX").query_async(&mut c).await?;
        let stored: Option<String> = redis::cmd("GET").arg(NONCE_KEY).query_async(&mut c).await?;
        stored
            .as_deref()
            .and_then(NonceKey::parse_hex)
            .ok_or_else(|| StoreError::Redis(format!("{NONCE_KEY} does not hold 64 hex digits")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the local stack's Redis (`CENTRALITA_REDIS_URL`); skipped without it.
    async fn store() -> Option<Registrations> {
        let url = std::env::var("CENTRALITA_REDIS_URL").ok()?;
        let conn = centralita_platform::cache::connect(&url).await.ok()?;
        Some(Registrations::new(RedisHandle::connected(conn)))
    }

    #[tokio::test]
    async fn bindings_expire_replace_and_are_removed_by_contact() {
        let Some(s) = store().await else {
            eprintln!("CENTRALITA_REDIS_URL not set: skipped");
            return;
        };
        let tenant = TenantId::parse(&format!("reg-test-{}", uuid::Uuid::now_v7().simple())).expect("id");
        let b = |contact: &str| Binding { contact: contact.into(), source: "127.0.0.1:5062".into() };
        assert_eq!(s.get(&tenant, "alice").await.expect("get"), None);
        s.set(&tenant, "alice", &b("sip:alice@127.0.0.1:5062"), 120).await.expect("set");
        let (got, ttl) = s.get(&tenant, "alice").await.expect("get").expect("bound");
        assert_eq!(got, b("sip:alice@127.0.0.1:5062"));
        assert!((115..=120).contains(&ttl), "{ttl}");
        // Another contact replaces it; removing the old contact leaves the new one.
        s.set(&tenant, "alice", &b("sip:alice@127.0.0.1:5064"), 60).await.expect("set");
        assert!(!s.remove(&tenant, "alice", Some("sip:alice@127.0.0.1:5062")).await.expect("remove"));
        assert_eq!(
            s.get(&tenant, "alice").await.expect("get").map(|(b, _)| b.contact),
            Some("sip:alice@127.0.0.1:5064".into())
        );
        assert!(s.remove(&tenant, "alice", Some("sip:alice@127.0.0.1:5064")).await.expect("remove"));
        assert_eq!(s.get(&tenant, "alice").await.expect("get"), None);
        s.set(&tenant, "alice", &b("sip:alice@127.0.0.1:5066"), 60).await.expect("set");
        assert!(s.remove(&tenant, "alice", None).await.expect("remove any"));
        assert_eq!(s.get(&tenant, "alice").await.expect("get"), None);
        // Expiry: a 1 s binding is gone after it.
        s.set(&tenant, "bob", &b("sip:bob@127.0.0.1:5068"), 1).await.expect("set");
        tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
        assert_eq!(s.get(&tenant, "bob").await.expect("get"), None);
        // Another tenant's agent of the same id is another key.
        let other = TenantId::parse(&format!("{tenant}-x")).expect("id");
        s.set(&tenant, "carol", &b("sip:carol@127.0.0.1:5070"), 60).await.expect("set");
        assert_eq!(s.get(&other, "carol").await.expect("get"), None);
        s.remove(&tenant, "carol", None).await.expect("cleanup");
        // A digest's (nonce, cnonce, nc) is used once.
        assert!(s.first_use(&tenant, "n1", "c1", "00000001", 5).await.expect("first"));
        assert!(!s.first_use(&tenant, "n1", "c1", "00000001", 5).await.expect("replay"));
        assert!(s.first_use(&tenant, "n1", "c1", "00000002", 5).await.expect("next nc"));
        assert!(s.first_use(&other, "n1", "c1", "00000001", 5).await.expect("another tenant"));
        // The nonce key is the same for every caller.
        let k1 = s.nonce_key().await.expect("key");
        let k2 = s.nonce_key().await.expect("key");
        let n = k1.issue("acme.example", 1_000);
        assert_eq!(k2.check(&n, "acme.example", 1_000), super::super::nonce::Freshness::Fresh);
    }
}

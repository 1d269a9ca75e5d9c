//! Tokens of the BPO's identity provider (OpenID Connect): its signing keys, read from its
//! JSON Web Key Set (`jwks_uri`) and refreshed, verify the tokens it issues to people signing
//! in, beside the platform's own Ed25519 key (which signs the CLI's, the services' and the
//! development sign-in's tokens).
//!
//! Which key verifies a token: a token whose header names a key (`kid`) is the identity
//! provider's and is verified with that key of the set, under the provider's issuer and
//! audience; a token without one is the platform's own (EdDSA). A key is used only for the
//! algorithms of its type (RSA: RS*/PS*, EC P-256/P-384: ES256/ES384, OKP Ed25519: EdDSA),
//! narrowed to its `alg` when the set gives one; symmetric (`oct`) keys, encryption keys
//! (`use: enc`) and keys without an id are never used — a token cannot pick HS256 over an
//! RSA key's id (the algorithm-confusion attack). The claims are the platform's
//! ([`super::Claims`]: `tenant`, `roles`, `agent_id`), which the provider's claim mappers add.
//!
//! The set is fetched at start and every `CENTRALITA_JWT_JWKS_REFRESH` (default 5 min), and
//! sooner (at most every 30 s) once a token names a key the set does not have (a rotation).
//! A failed fetch keeps the keys already known; until the first succeeds, the provider's
//! tokens are refused as unknown keys.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

/// Keys read from one set at most (a provider publishes a handful).
pub const MAX_KEYS: usize = 64;
/// The largest key set read, in bytes.
pub const MAX_SET_BYTES: usize = 256 * 1024;
/// The soonest a token naming an unknown key makes the set be fetched again.
pub const UNKNOWN_KEY_REFETCH: Duration = Duration::from_secs(30);

/// One usable key: what verifies, and with which algorithms.
#[derive(Clone)]
struct IdpKey {
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
}

/// A provider's signing keys by key id.
#[derive(Clone, Default)]
pub struct KeySet {
    keys: HashMap<String, IdpKey>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut ids: Vec<&String> = self.keys.keys().collect();
        ids.sort();
        f.debug_struct("KeySet").field("kids", &ids).finish()
    }
}

/// The algorithms a key of this type may verify, before its own `alg` narrows them.
fn algorithms_of(params: &AlgorithmParameters) -> Vec<Algorithm> {
    use Algorithm::*;
    match params {
        AlgorithmParameters::RSA(_) => vec![RS256, RS384, RS512, PS256, PS384, PS512],
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => vec![ES256],
            EllipticCurve::P384 => vec![ES384],
            _ => Vec::new(),
        },
        AlgorithmParameters::OctetKeyPair(_) => vec![EdDSA],
        // Symmetric keys never verify a token from the provider, nor do kinds unknown here.
        _ => Vec::new(),
    }
}

fn algorithm(a: &KeyAlgorithm) -> Option<Algorithm> {
    use Algorithm::*;
    Some(match a {
        KeyAlgorithm::RS256 => RS256,
        KeyAlgorithm::RS384 => RS384,
        KeyAlgorithm::RS512 => RS512,
        KeyAlgorithm::PS256 => PS256,
        KeyAlgorithm::PS384 => PS384,
        KeyAlgorithm::PS512 => PS512,
        KeyAlgorithm::ES256 => ES256,
        KeyAlgorithm::ES384 => ES384,
        KeyAlgorithm::EdDSA => EdDSA,
        _ => return None,
    })
}

impl KeySet {
    /// Reads a JSON Web Key Set: the usable keys, and how many were left out (symmetric,
    /// for encryption, without an id, of an unsupported type or unreadable). Refused: a set
    /// that is not JSON with a `keys` list, or larger than [`MAX_SET_BYTES`].
    pub fn parse(json: &[u8]) -> Result<(Self, usize), String> {
        if json.len() > MAX_SET_BYTES {
            return Err(format!("the key set is larger than {MAX_SET_BYTES} bytes"));
        }
        let doc: serde_json::Value = serde_json::from_slice(json).map_err(|e| format!("not JSON: {e}"))?;
        let list = doc.get("keys").and_then(|k| k.as_array()).ok_or("no `keys` list")?;
        let mut keys = HashMap::new();
        let mut skipped = 0;
        for value in list.iter().take(MAX_KEYS) {
            match Self::usable(value) {
                Some((kid, key)) => {
                    keys.insert(kid, key);
                }
                None => skipped += 1,
            }
        }
        skipped += list.len().saturating_sub(MAX_KEYS);
        Ok((Self { keys }, skipped))
    }

    fn usable(value: &serde_json::Value) -> Option<(String, IdpKey)> {
        let jwk: Jwk = serde_json::from_value(value.clone()).ok()?;
        let kid = jwk.common.key_id.clone().filter(|k| !k.is_empty() && k.len() <= 256)?;
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption) | Some(PublicKeyUse::Other(_))) {
            return None;
        }
        let mut algorithms = algorithms_of(&jwk.algorithm);
        if let Some(a) = &jwk.common.key_algorithm {
            let a = algorithm(a)?;
            algorithms.retain(|x| *x == a);
        }
        if algorithms.is_empty() {
            return None;
        }
        let key = DecodingKey::from_jwk(&jwk).ok()?;
        Some((kid, IdpKey { key, algorithms }))
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The identity provider: its issuer and audience, and its current keys.
pub struct Idp {
    issuer: String,
    audience: String,
    keys: RwLock<Arc<KeySet>>,
    /// A token named a key the set does not have: fetch again soon.
    unknown_key: AtomicBool,
}

impl std::fmt::Debug for Idp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idp").field("issuer", &self.issuer).field("audience", &self.audience).finish()
    }
}

/// Why an identity provider's token is refused (the caller's words are in [`super`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    UnknownKey,
    Algorithm,
    Token(jsonwebtoken::errors::ErrorKind),
}

impl Idp {
    pub fn new(issuer: &str, audience: &str) -> Self {
        Self {
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            keys: RwLock::default(),
            unknown_key: AtomicBool::new(false),
        }
    }

    /// Puts in a freshly read set.
    pub fn replace(&self, keys: KeySet) {
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
        self.unknown_key.store(false, Ordering::Release);
    }

    pub fn keys(&self) -> Arc<KeySet> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether a token named a key the set lacks since the last refresh.
    pub fn wants_refresh(&self) -> bool {
        self.unknown_key.load(Ordering::Acquire)
    }

    /// Verifies `token`, whose header names key `kid` and algorithm `alg`, and reads its
    /// claims.
    pub fn decode<C: serde::de::DeserializeOwned>(&self, token: &str, kid: &str, alg: Algorithm) -> Result<C, Refused> {
        let keys = self.keys();
        let Some(k) = keys.keys.get(kid) else {
            self.unknown_key.store(true, Ordering::Release);
            return Err(Refused::UnknownKey);
        };
        if !k.algorithms.contains(&alg) {
            return Err(Refused::Algorithm);
        }
        let mut validation = Validation::new(alg);
        validation.algorithms = vec![alg];
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 30;
        jsonwebtoken::decode::<C>(token, &k.key, &validation)
            .map(|d| d.claims)
            .map_err(|e| Refused::Token(e.into_kind()))
    }
}

/// Fetches the key set at `url` now and then every `every` (sooner when a token names an
/// unknown key), until `shutdown`. A failure keeps the keys known and is retried.
pub async fn refresh_loop(idp: Arc<Idp>, url: String, every: Duration, shutdown: crate::shutdown::Shutdown) {
    // reqwest's rustls is built without a crypto provider (no aws-lc-rs): use ring's.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = match reqwest::Client::builder().timeout(Duration::from_secs(10)).build() {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "no HTTP client for the identity provider's keys");
            return;
        }
    };
    let mut last = tokio::time::Instant::now();
    let mut first = true;
    loop {
        let due = first || last.elapsed() >= every || (idp.wants_refresh() && last.elapsed() >= UNKNOWN_KEY_REFETCH);
        if due {
            first = false;
            last = tokio::time::Instant::now();
            match fetch(&http, &url).await {
                Ok((keys, skipped)) => {
                    tracing::info!(keys = keys.len(), skipped, "identity provider keys read");
                    idp.replace(keys);
                }
                Err(e) => tracing::warn!(error = %e, url, "identity provider keys not read; keeping the known ones"),
            }
        }
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

async fn fetch(http: &reqwest::Client, url: &str) -> Result<(KeySet, usize), String> {
    let r = http.get(url).send().await.map_err(|e| format!("unreachable: {e}"))?;
    if !r.status().is_success() {
        return Err(format!("answered {}", r.status()));
    }
    if r.content_length().is_some_and(|n| n as usize > MAX_SET_BYTES) {
        return Err(format!("the key set is larger than {MAX_SET_BYTES} bytes"));
    }
    let body = r.bytes().await.map_err(|e| format!("unreadable: {e}"))?;
    KeySet::parse(&body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Caller, Role, Verifier};
    use crate::error::Error;

    const JWKS: &str = include_str!("../../tests/fixtures/idp-jwks.json");
    const TOKENS: &str = include_str!("../../tests/fixtures/idp-tokens.json");
    const PUBLIC: &str = include_str!("../../../../deploy/local/dev-keys/jwt-ed25519.pub");
    const PRIVATE: &str = include_str!("../../../../deploy/local/dev-keys/jwt-ed25519.key");
    const ISSUER: &str = "https://idp.example/realms/bpo";

    /// A token of the fixtures, signed by PyJWT (`tests/fixtures/idp_fixtures.py`).
    fn token(name: &str) -> String {
        let all: serde_json::Value = serde_json::from_str(TOKENS).expect("fixtures");
        all[name].as_str().unwrap_or_else(|| panic!("no fixture token {name}")).to_owned()
    }

    fn verifier() -> (Verifier, Arc<Idp>) {
        let idp = Arc::new(Idp::new(ISSUER, "centralita-api"));
        idp.replace(KeySet::parse(JWKS.as_bytes()).expect("set").0);
        let v =
            Verifier::from_pem(PUBLIC.as_bytes(), "centralita", "centralita-api").expect("key").with_idp(idp.clone());
        (v, idp)
    }

    fn refusal(r: Result<Caller, Error>) -> (String, String) {
        match r {
            Err(Error::Unauthenticated { reason, message }) => (reason.as_str().to_owned(), message),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_key_set_keeps_only_signing_keys_with_an_id() {
        let (set, skipped) = KeySet::parse(JWKS.as_bytes()).expect("set");
        assert_eq!(format!("{set:?}"), r#"KeySet { kids: ["idp-ec-1", "idp-rsa-1"] }"#);
        assert_eq!(skipped, 2, "the encryption key and the symmetric key");
        for bad in [&b"not json"[..], b"{}", b"{\"keys\": 3}"] {
            assert!(KeySet::parse(bad).is_err());
        }
        let huge = format!("{{\"keys\": [], \"pad\": \"{}\"}}", "x".repeat(MAX_SET_BYTES));
        assert!(KeySet::parse(huge.as_bytes()).is_err());
        let (empty, _) = KeySet::parse(br#"{"keys": [{"kty": "RSA"}, {"kid": "x"}]}"#).expect("set");
        assert!(empty.is_empty());
    }

    #[test]
    fn the_providers_tokens_give_their_callers_and_the_platforms_own_still_verify() {
        let (v, _) = verifier();
        let sup = v.verify(&token("rs256_supervisor")).expect("RS256 token");
        assert_eq!((sup.subject.as_str(), sup.tenant.as_ref().map(|t| t.as_str())), ("user-1", Some("acme")));
        assert!(sup.has_role(Role::Supervisor));
        let agent = v.verify(&token("es256_agent")).expect("ES256 token");
        assert_eq!((agent.tenant, agent.agent_id.as_deref()), (None, Some("agent-7")));
        let own = crate::auth::Signer::from_pem(PRIVATE.as_bytes(), "centralita", "centralita-api")
            .expect("key")
            .mint(&crate::auth::TokenRequest {
                subject: "cli".into(),
                tenant: None,
                roles: vec![Role::BpoAdmin],
                agent_id: None,
                ttl: Duration::from_secs(60),
            })
            .expect("mint");
        assert!(v.verify(&own).expect("the platform's own token").is_bpo_admin());
    }

    #[test]
    fn forged_confused_expired_or_foreign_tokens_are_refused() {
        let (v, idp) = verifier();
        assert_eq!(refusal(v.verify(&token("expired"))).0, "TOKEN_EXPIRED");
        for (name, says) in [
            ("wrong_issuer", "issuer"),
            ("wrong_audience", "audience"),
            ("other_key_same_kid", "signature"),
            ("hs256_with_rsa_kid", "algorithm"),
            ("es256_under_rsa_kid", "algorithm"),
            ("no_kid", "algorithm"),
            ("encryption_key", "does not list"),
            ("symmetric_key", "does not list"),
        ] {
            let (reason, message) = refusal(v.verify(&token(name)));
            assert_eq!(reason, "TOKEN_INVALID", "{name}");
            assert!(message.contains(says), "{name}: {message}");
        }
        assert!(idp.wants_refresh(), "a key the set lacks asks for a refresh");
        let (_, message) = refusal(v.verify(&token("unknown_kid")));
        assert!(message.contains("does not list"), "{message}");
        // Without a provider, a token naming a key is refused.
        let plain = Verifier::from_pem(PUBLIC.as_bytes(), "centralita", "centralita-api").expect("key");
        assert!(refusal(plain.verify(&token("rs256_supervisor"))).1.contains("does not know"));
    }

    /// A one-request-at-a-time HTTP server answering each GET with the next of `bodies`
    /// (the last repeated); `None` answers 500.
    async fn serve(bodies: Vec<Option<String>>) -> (String, tokio::task::JoinHandle<()>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/jwks", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            let mut i = 0;
            loop {
                let Ok((mut s, _)) = listener.accept().await else { return };
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let reply = match &bodies[i.min(bodies.len() - 1)] {
                    Some(b) => {
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}", b.len())
                    }
                    None => {
                        "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into()
                    }
                };
                let _ = s.write_all(reply.as_bytes()).await;
                i += 1;
            }
        });
        (url, task)
    }

    #[tokio::test]
    async fn the_set_is_read_at_start_and_again_and_a_failed_read_keeps_the_keys() {
        let (url, server) = serve(vec![Some(r#"{"keys": []}"#.into()), Some(JWKS.into()), None]).await;
        let idp = Arc::new(Idp::new(ISSUER, "centralita-api"));
        let shutdown = crate::shutdown::Shutdown::new();
        let task = tokio::spawn(refresh_loop(idp.clone(), url, Duration::from_millis(500), shutdown.clone()));
        let v =
            Verifier::from_pem(PUBLIC.as_bytes(), "centralita", "centralita-api").expect("key").with_idp(idp.clone());
        // The first read has no keys, the next the fixtures' two.
        let mut seen = Vec::new();
        for _ in 0..100 {
            seen.push(idp.keys().len());
            if idp.keys().len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(idp.keys().len(), 2, "{seen:?}");
        assert!(v.verify(&token("rs256_supervisor")).is_ok());
        // Later reads fail (500): the keys stay.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(idp.keys().len(), 2);
        assert!(v.verify(&token("es256_agent")).is_ok());
        shutdown.trigger();
        task.await.expect("loop ends at shutdown");
        server.abort();
    }
}

//! Digest authentication of carrier trunks (`spec.voice.trunks[].credentials`): a trunk
//! with credentials takes calls only once its INVITE proves them (RFC 3261 §22.3, the
//! proxy-style `407` / `Proxy-Authorization` exchange), MD5 with `qop=auth` as the
//! registrar's.
//!
//! - **Realm**: `{tenant}.trunks.centralita` — one per tenant, so a digest made for one
//!   tenant's challenge never proves another's trunk.
//! - **Nonces**: the registrar's ([`crate::registrar::nonce`]): stateless, checkable by any
//!   replica (the key is shared in Redis), fresh for five minutes; a stale one gets a new
//!   challenge with `stale=true`. Each accepted (nonce, cnonce, nc) is remembered for the
//!   nonce's lifetime, so a captured INVITE replayed is challenged again, never admitted.
//! - **Credentials**: the trunk's Secret (`credentials.secretName`) mounted as files
//!   `{CENTRALITA_SIP_SECRETS_DIR}/{secret}/username` and `password`, read on each check (a
//!   rotated Secret applies at once), never logged. The response is checked against
//!   `MD5(username:realm:password)`; every candidate trunk whose username matches is tried,
//!   and a username matching none costs the same check against nothing, so timing says
//!   nothing of which usernames exist.
//! - Without Redis (no registrar) no nonce can be issued: a credential trunk's calls are
//!   refused `403` and the reason logged.
//!
//! [`decide`] is the pure decision; [`TrunkAuth::check`] reads the key, the Secrets and the
//! replay store around it.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use centralita_platform::tenant::TenantId;

use crate::registrar::digest::{self, Credentials, CredentialsError, Ha1};
use crate::registrar::nonce::{Freshness, NonceKey};
use crate::registrar::Registrar;

/// What the front door does with an INVITE a credential trunk must prove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Proved: the trunk's name.
    Authenticated(String),
    /// `407` with this `Proxy-Authenticate` value.
    Challenge(String),
    /// `403`: wrong credentials (or none can be checked).
    Forbidden,
    /// `400`: an unreadable `Proxy-Authorization`.
    BadRequest,
    /// `503`: the replay store is unreachable.
    Unavailable,
}

/// A candidate trunk's credentials, as read from its Secret.
#[derive(Debug, Clone)]
pub struct Secret {
    pub trunk: String,
    pub username: String,
    pub password: String,
}

/// The digest realm of `tenant`'s trunks.
pub fn realm(tenant: &TenantId) -> String {
    format!("{tenant}.trunks.centralita")
}

/// The challenge for `realm` with a fresh nonce (the registrar's form).
pub fn challenge(key: &NonceKey, realm: &str, now: u64, stale: bool) -> String {
    key.challenge(realm, now, stale)
}

/// The decision on `credentials` (the INVITE's, if any) against the candidate trunks'
/// `secrets`, before the replay check: the trunk proved and the credentials that proved it,
/// or the outcome.
pub fn decide<'a>(
    credentials: Option<&'a Result<Credentials, CredentialsError>>,
    secrets: &[Secret],
    realm: &str,
    key: &NonceKey,
    now: u64,
) -> Result<(String, &'a Credentials), Outcome> {
    let c = match credentials {
        None => return Err(Outcome::Challenge(challenge(key, realm, now, false))),
        Some(Err(_)) => return Err(Outcome::BadRequest),
        Some(Ok(c)) => c,
    };
    if c.realm != realm {
        // Made for another realm (another tenant's challenge): ask for ours.
        return Err(Outcome::Challenge(challenge(key, realm, now, false)));
    }
    match key.check(&c.nonce, realm, now) {
        Freshness::Fresh => {}
        Freshness::Stale => return Err(Outcome::Challenge(challenge(key, realm, now, true))),
        Freshness::NotOurs => return Err(Outcome::Challenge(challenge(key, realm, now, false))),
    }
    let mut proved = None;
    let mut checked = false;
    for s in secrets.iter().filter(|s| s.username == c.username) {
        checked = true;
        if proved.is_none() && digest::verify(&Ha1::of(&s.username, realm, &s.password), "INVITE", c).is_ok() {
            proved = Some(s.trunk.clone());
        }
    }
    if !checked {
        // The same work for an unknown username.
        let _ = digest::verify(&Ha1::of("", realm, ""), "INVITE", c);
    }
    proved.map(|t| (t, c)).ok_or(Outcome::Forbidden)
}

/// Checks trunks' digest credentials with the registrar's nonce key, replay store and
/// Secrets directory.
#[derive(Debug, Clone)]
pub struct TrunkAuth {
    registrar: Option<Arc<Registrar>>,
}

impl TrunkAuth {
    pub fn new(registrar: Option<Arc<Registrar>>) -> Self {
        Self { registrar }
    }

    /// The outcome for an INVITE to `tenant` that one of `trunks` (name, Secret) must prove
    /// with `credentials`.
    pub async fn check(
        &self,
        tenant: &TenantId,
        trunks: &[(String, String)],
        credentials: Option<&Result<Credentials, CredentialsError>>,
    ) -> Outcome {
        let Some(registrar) = &self.registrar else {
            tracing::warn!(tenant = %tenant, "a trunk with credentials needs CENTRALITA_REDIS_URL (nonces): call refused");
            return Outcome::Forbidden;
        };
        let key = match registrar.shared_nonce_key().await {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(error = %e, "no nonce key: a credential trunk's INVITE refused");
                return Outcome::Unavailable;
            }
        };
        let secrets: Vec<Secret> = trunks
            .iter()
            .filter_map(|(trunk, secret)| {
                let found = registrar.secret_value(secret, "username").zip(registrar.secret_value(secret, "password"));
                if found.is_none() {
                    tracing::warn!(tenant = %tenant, trunk, secret, "the trunk's credentials Secret is not readable (username, password)");
                }
                let (username, password) = found?;
                Some(Secret { trunk: trunk.clone(), username, password })
            })
            .collect();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let realm = realm(tenant);
        let (trunk, c) = match decide(credentials, &secrets, &realm, &key, now) {
            Ok(proved) => proved,
            Err(outcome) => return outcome,
        };
        let (cnonce, nc) = (c.cnonce.as_deref().unwrap_or(""), c.nc.as_deref().unwrap_or(""));
        match registrar.first_digest_use(tenant, &c.nonce, cnonce, nc).await {
            Ok(true) => Outcome::Authenticated(trunk),
            Ok(false) => {
                tracing::info!(tenant = %tenant, trunk, "replayed INVITE digest: challenged again");
                Outcome::Challenge(challenge(&key, &realm, now, false))
            }
            Err(e) => {
                tracing::warn!(error = %e, "digest replay store unavailable");
                Outcome::Unavailable
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_790_000_000;

    fn key() -> NonceKey {
        NonceKey::new([7; 32])
    }

    fn secrets() -> Vec<Secret> {
        vec![
            Secret { trunk: "carrier-a".into(), username: "acme-a".into(), password: "s3cret".into() },
            Secret { trunk: "carrier-b".into(), username: "acme-b".into(), password: "other".into() },
        ]
    }

    /// The credentials a trunk sends for `challenge` with `user` / `password`.
    fn answer(challenge: &str, user: &str, password: &str) -> Credentials {
        let param = |name: &str| {
            let at = challenge.find(&format!("{name}=\"")).expect(name) + name.len() + 2;
            challenge[at..].split('"').next().expect("value").to_owned()
        };
        let (realm, nonce) = (param("realm"), param("nonce"));
        let mut c = Credentials {
            username: user.into(),
            realm: realm.clone(),
            nonce,
            uri: "sip:+34910000001@127.0.0.1:5060".into(),
            response: String::new(),
            algorithm: Some("MD5".into()),
            qop: Some("auth".into()),
            nc: Some("00000001".into()),
            cnonce: Some("0a4f113b".into()),
            opaque: None,
        };
        c.response = digest::expected_response(&Ha1::of(user, &realm, password), "INVITE", &c);
        c
    }

    #[test]
    fn an_invite_without_credentials_is_challenged_for_the_tenants_realm() {
        let acme = TenantId::parse("acme").expect("id");
        let Err(Outcome::Challenge(ch)) = decide(None, &secrets(), &realm(&acme), &key(), NOW) else {
            panic!("not challenged")
        };
        assert!(ch.starts_with("Digest realm=\"acme.trunks.centralita\", nonce=\""), "{ch}");
        assert!(ch.ends_with("algorithm=MD5, qop=\"auth\""), "{ch}");
    }

    #[test]
    fn the_right_password_proves_its_trunk_and_only_it() {
        let r = realm(&TenantId::parse("acme").expect("id"));
        let ch = challenge(&key(), &r, NOW, false);
        let good = Ok(answer(&ch, "acme-b", "other"));
        let (trunk, _) = decide(Some(&good), &secrets(), &r, &key(), NOW + 10).expect("proved");
        assert_eq!(trunk, "carrier-b");
        // Wrong password, unknown user, another trunk's password: forbidden.
        for (user, password) in [("acme-b", "s3cret"), ("nobody", "s3cret"), ("acme-a", "other")] {
            let bad = Ok(answer(&ch, user, password));
            assert_eq!(decide(Some(&bad), &secrets(), &r, &key(), NOW + 10).unwrap_err(), Outcome::Forbidden, "{user}");
        }
        // Unreadable header: 400.
        let unreadable = Err(CredentialsError::Unreadable);
        assert_eq!(decide(Some(&unreadable), &secrets(), &r, &key(), NOW).unwrap_err(), Outcome::BadRequest);
    }

    #[test]
    fn another_tenants_digest_or_an_old_nonce_is_challenged_again() {
        let acme = realm(&TenantId::parse("acme").expect("id"));
        let globex = realm(&TenantId::parse("globex").expect("id"));
        // Proved for globex's challenge (same username and password): not acme's.
        let theirs = Ok(answer(&challenge(&key(), &globex, NOW, false), "acme-a", "s3cret"));
        assert!(matches!(decide(Some(&theirs), &secrets(), &acme, &key(), NOW), Err(Outcome::Challenge(_))));
        // A nonce made with another key: not ours.
        let forged = Ok(answer(&challenge(&NonceKey::new([9; 32]), &acme, NOW, false), "acme-a", "s3cret"));
        assert!(
            matches!(decide(Some(&forged), &secrets(), &acme, &key(), NOW), Err(Outcome::Challenge(c)) if !c.contains("stale"))
        );
        // Ten minutes later: stale, challenged with stale=true (the trunk answers again).
        let old = Ok(answer(&challenge(&key(), &acme, NOW, false), "acme-a", "s3cret"));
        assert!(
            matches!(decide(Some(&old), &secrets(), &acme, &key(), NOW + 600), Err(Outcome::Challenge(c)) if c.ends_with("stale=true"))
        );
    }
}

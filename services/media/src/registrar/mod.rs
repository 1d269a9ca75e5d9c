//! The registrar of agents' phones (RFC 3261 §10): a phone registers `sip:{agent}@{domain}`
//! with digest authentication (MD5, `qop=auth`) against its tenant's registrar
//! (`spec.voice.registrar`), and media rings the registered contact when routing offers the
//! agent a call and the agent has no fixed phone (`spec.voice.phones`).
//!
//! - Tenant: the Request-URI's domain is the registrar domain of exactly one tenant (also
//!   its digest realm), so credentials of one tenant never open another's bindings.
//! - Credentials: never in clear. The tenant's Secret (`credentialsSecret`) holds, per agent
//!   id, the agent's `HA1 = MD5(agent:domain:password)` in hex; media reads
//!   `{CENTRALITA_SIP_SECRETS_DIR}/{secret}/{agent}` (a mounted Kubernetes Secret, one key a
//!   file) at each authenticated REGISTER, so a rotated digest is used at once. Nothing of it
//!   is logged.
//! - Nonces: stateless ([`nonce`]), keyed by a secret shared through Redis; each accepted
//!   digest is good once (its nonce, cnonce and nc remembered in Redis for the nonce's
//!   lifetime), so a captured REGISTER cannot be replayed.
//! - Registrations: in Redis with the registration's expiry ([`store`]), one phone per agent.
//!   Each registration, refresh and removal is reported to sessions (`ReportPhone`), which
//!   has routing offer the tenant's calls to the agent only while its phone is registered
//!   (and withdraws them at the expiry by its own timer).
//! - Failures: a source with too many failed authentications is refused for a while
//!   ([`policy::Throttle`], per replica).
//!
//! # Layout
//! - [`digest`]: the digest computation and check (pure);
//! - [`nonce`]: nonces (pure);
//! - [`policy`]: the decisions on a REGISTER (pure);
//! - [`store`]: the registrations and the nonce key in Redis;
//! - this file: the adapter that reads the HA1 files and runs a REGISTER through the rest.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use centralita_platform::cache::RedisHandle;
use centralita_platform::config::ConfigError;
use centralita_platform::registry::TenantRegistry;
use centralita_platform::tenant::{registrar_owners, Registrar as TenantRegistrar, Tenant, TenantId};
use tokio::sync::OnceCell;

use crate::metrics::Metrics;
use crate::sessions::Sessions;
use crate::sip::{Extra, Incoming};

pub mod digest;
pub mod nonce;
pub mod policy;
pub mod store;

use digest::Ha1;
use nonce::NonceKey;
use policy::{Bounds, Change, Reply, Throttle};
use store::{Binding, Registrations};

/// The registrar's settings.
#[derive(Debug, Clone, clap::Args)]
pub struct RegistrarArgs {
    /// Directory where the tenants' registrar Secrets are mounted: agent `a`'s HA1 (32 hex
    /// digits, `MD5(a:domain:password)`) is read from `{dir}/{credentialsSecret}/{a}`.
    /// Without it no phone can register.
    #[arg(id = "sip_secrets_dir", long = "sip-secrets-dir", env = "CENTRALITA_SIP_SECRETS_DIR")]
    pub secrets_dir: Option<PathBuf>,
    /// The shortest registration accepted, in seconds (shorter ones get `423`).
    #[arg(long = "sip-register-min-expires", env = "CENTRALITA_SIP_REGISTER_MIN_EXPIRES", default_value_t = 60)]
    pub min_expires: u32,
    /// The longest registration granted, in seconds (longer ones are shortened).
    #[arg(long = "sip-register-max-expires", env = "CENTRALITA_SIP_REGISTER_MAX_EXPIRES", default_value_t = 3600)]
    pub max_expires: u32,
    /// Failed authentications from one source address, within a minute, after which its
    /// REGISTERs are refused until the minute is over.
    #[arg(long = "sip-register-max-failures", env = "CENTRALITA_SIP_REGISTER_MAX_FAILURES", default_value_t = 10)]
    pub max_failures: u32,
}

impl RegistrarArgs {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=86_400).contains(&self.min_expires) {
            return Err(ConfigError::new("CENTRALITA_SIP_REGISTER_MIN_EXPIRES", "must be 1 to 86400"));
        }
        if self.max_expires < self.min_expires || self.max_expires > 86_400 {
            return Err(ConfigError::new(
                "CENTRALITA_SIP_REGISTER_MAX_EXPIRES",
                "must be at least CENTRALITA_SIP_REGISTER_MIN_EXPIRES and at most 86400",
            ));
        }
        if self.max_failures == 0 {
            return Err(ConfigError::new("CENTRALITA_SIP_REGISTER_MAX_FAILURES", "must be at least 1"));
        }
        Ok(())
    }
}

/// The window of [`RegistrarArgs::max_failures`], in seconds.
const FAILURE_WINDOW_SECS: u64 = 60;
/// Attempts at reporting a registration to sessions, and the first wait between them
/// (doubling).
const REPORT_ATTEMPTS: u32 = 4;
const REPORT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(500);

/// The registrar: answers REGISTERs and finds agents' registered phones.
#[derive(Debug)]
pub struct Registrar {
    registry: TenantRegistry,
    store: Registrations,
    key: OnceCell<NonceKey>,
    secrets_dir: Option<PathBuf>,
    bounds: Bounds,
    throttle: Mutex<Throttle>,
    metrics: Arc<Metrics>,
    /// Where registrations and their ends are reported (sessions), if anywhere.
    sessions: Option<Arc<Sessions>>,
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Stands in for an unknown agent's HA1, so its check costs what a known agent's does.
fn no_ha1() -> Ha1 {
    Ha1::of("", "", "")
}

/// The one tenant serving `domain`.
fn tenant_of(tenants: &[Arc<Tenant>], domain: &str) -> Option<(Arc<Tenant>, TenantRegistrar)> {
    match registrar_owners(tenants, domain).as_slice() {
        [one] => one.voice.registrar.clone().map(|r| (Arc::clone(one), r)),
        _ => None,
    }
}

fn is_agent_id(s: &str) -> bool {
    (1..=40).contains(&s.len())
        && s.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_')
}

impl Registrar {
    pub fn new(registry: TenantRegistry, redis: RedisHandle, args: &RegistrarArgs, metrics: Arc<Metrics>) -> Self {
        Self {
            registry,
            store: Registrations::new(redis),
            key: OnceCell::new(),
            secrets_dir: args.secrets_dir.clone(),
            bounds: Bounds { min: args.min_expires, max: args.max_expires },
            throttle: Mutex::new(Throttle::new(args.max_failures, FAILURE_WINDOW_SECS)),
            metrics,
            sessions: None,
        }
    }

    /// Reports every registration, refresh and removal to `sessions` (routing offers a
    /// tenant's calls to an agent only while its phone is registered there).
    pub fn reporting_to(mut self, sessions: Arc<Sessions>) -> Self {
        self.sessions = Some(sessions);
        self
    }

    /// Tells sessions, in the background, that `agent`'s phone is registered with `tenant`
    /// for `expires` seconds (0: gone), retrying a few times on failure. A report that
    /// cannot be made is logged; the phone's next refresh reports again.
    fn report(&self, tenant: &TenantId, agent: &str, expires: u32) {
        let Some(sessions) = self.sessions.clone() else { return };
        let (tenant, agent) = (tenant.clone(), agent.to_owned());
        tokio::spawn(async move {
            for attempt in 0..REPORT_ATTEMPTS {
                match sessions.report_phone(&tenant, &agent, expires).await {
                    Ok(true) => return,
                    Ok(false) => {
                        tracing::info!(%tenant, agent, "a phone registered for an agent sessions has not on the tenant's queues");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, %tenant, agent, attempt, "cannot report the phone to sessions");
                        tokio::time::sleep(REPORT_BACKOFF * 2u32.pow(attempt)).await;
                    }
                }
            }
        });
    }

    /// The agent's HA1 from the tenant's Secret; `None` for an agent without one (or an
    /// unreadable one, logged without its content).
    fn ha1(&self, secret: &str, agent: &str) -> Option<Ha1> {
        if !is_agent_id(agent) {
            return None;
        }
        let path = self.secrets_dir.as_ref()?.join(secret).join(agent);
        let text = std::fs::read_to_string(&path).ok()?;
        let ha1 = Ha1::parse_hex(&text);
        if ha1.is_none() {
            tracing::warn!(path = %path.display(), "an agent's SIP digest is not 32 hex digits: ignored");
        }
        ha1
    }

    async fn nonce_key(&self) -> Result<&NonceKey, store::StoreError> {
        self.key.get_or_try_init(|| self.store.nonce_key()).await
    }

    /// The nonce key every replica shares: trunks' digest challenges use it too
    /// ([`crate::trunk_auth`]).
    pub(crate) async fn shared_nonce_key(&self) -> Result<NonceKey, store::StoreError> {
        self.nonce_key().await.cloned()
    }

    /// Whether a digest's (nonce, cnonce, nc) is used for the first time in `tenant` (a
    /// replayed INVITE or REGISTER is not).
    pub(crate) async fn first_digest_use(
        &self,
        tenant: &TenantId,
        nonce: &str,
        cnonce: &str,
        nc: &str,
    ) -> Result<bool, store::StoreError> {
        self.store.first_use(tenant, nonce, cnonce, nc, nonce::NONCE_LIFETIME_SECS).await
    }

    /// `key` of the Secret `secret` (a file `{CENTRALITA_SIP_SECRETS_DIR}/{secret}/{key}`,
    /// its final newline trimmed), read on each use so a rotated Secret applies at once;
    /// `None` when absent. Never logged.
    pub(crate) fn secret_value(&self, secret: &str, key: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.secrets_dir.as_ref()?.join(secret).join(key)).ok()?;
        Some(text.trim_end_matches(['\r', '\n']).to_owned()).filter(|v| !v.is_empty())
    }

    /// Answers a REGISTER.
    pub async fn handle(&self, request: Incoming) {
        let source = request.source();
        let (reply, extras, outcome) = match request.register() {
            Err(why) => {
                tracing::info!(?source, why, "malformed REGISTER");
                (Reply::BadRequest("malformed"), Vec::new(), "bad_request")
            }
            Ok(register) => self.decide(&register, source).await,
        };
        self.metrics.sip_register(outcome);
        let (code, reason) = reply.status();
        request.reply_with(code, reason, extras).await;
    }

    /// The answer to `r` from `source`, its extra headers and its outcome label.
    async fn decide(&self, r: &policy::Register, source: Option<SocketAddr>) -> (Reply, Vec<Extra>, &'static str) {
        let ip = source.map(|s| s.ip()).unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let now = now();
        if self.throttle.lock().unwrap_or_else(|p| p.into_inner()).blocked(ip, now) {
            return (Reply::Forbidden, Vec::new(), "throttled");
        }
        // The Request-URI names the registrar's domain; a phone set up with the proxy's
        // address as its server sends that instead, and then its To domain tells.
        let tenants = self.registry.list();
        let Some((tenant, registrar)) = tenant_of(&tenants, &r.domain).or_else(|| tenant_of(&tenants, &r.to_host))
        else {
            return (Reply::NotFound, Vec::new(), "not_found");
        };
        let done = |reply: Reply| {
            let outcome = reply.outcome();
            (reply, Vec::new(), outcome)
        };
        let agent = match policy::address_of_record(r, &registrar.domain) {
            Ok(a) => a,
            Err(reply) => return done(reply),
        };
        if !tenant.is_active() {
            return done(Reply::TenantSuspended);
        }
        let key = match self.nonce_key().await {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(error = %e, "no nonce key: REGISTER refused");
                return done(Reply::Unavailable);
            }
        };
        let realm = registrar.domain.as_str();
        let credentials = match policy::authenticate(r, agent, realm, key, now) {
            Ok(c) => c,
            Err(Reply::Challenge { stale }) => return self.challenge(key, realm, now, stale),
            Err(reply) => {
                if reply == Reply::Forbidden {
                    self.throttle.lock().unwrap_or_else(|p| p.into_inner()).failed(ip, now);
                }
                return done(reply);
            }
        };
        // The same work whether the agent has a digest or not.
        let known = self.ha1(&registrar.credentials_secret, agent);
        let verified = digest::verify(known.as_ref().unwrap_or(&no_ha1()), "REGISTER", credentials);
        if known.is_none() || verified.is_err() {
            self.throttle.lock().unwrap_or_else(|p| p.into_inner()).failed(ip, now);
            tracing::info!(tenant = %tenant.id, ?source, "REGISTER with wrong credentials refused");
            return done(Reply::Forbidden);
        }
        self.throttle.lock().unwrap_or_else(|p| p.into_inner()).succeeded(ip);
        // A digest is good once: the same (nonce, cnonce, nc) again is a replay (the
        // Contact is not covered by the digest, so a replay could move the binding).
        let (cnonce, nc) = (credentials.cnonce.as_deref().unwrap_or(""), credentials.nc.as_deref().unwrap_or(""));
        match self.store.first_use(&tenant.id, &credentials.nonce, cnonce, nc, nonce::NONCE_LIFETIME_SECS).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(tenant = %tenant.id, ?source, "replayed REGISTER digest: challenged again");
                return self.challenge(key, realm, now, false);
            }
            Err(e) => {
                tracing::warn!(error = %e, "registrations store unavailable");
                return done(Reply::Unavailable);
            }
        }
        let change = match policy::binding(r, self.bounds) {
            Ok(c) => c,
            Err(reply) => {
                let extras = match &reply {
                    Reply::IntervalTooBrief { min } => vec![Extra::MinExpires(*min)],
                    _ => Vec::new(),
                };
                let outcome = reply.outcome();
                return (reply, extras, outcome);
            }
        };
        self.apply(&tenant.id, agent, change, source).await
    }

    /// `401` with a new nonce for `realm`.
    fn challenge(&self, key: &NonceKey, realm: &str, now: u64, stale: bool) -> (Reply, Vec<Extra>, &'static str) {
        (Reply::Challenge { stale }, vec![Extra::WwwAuthenticate(key.challenge(realm, now, stale))], "challenged")
    }

    async fn apply(
        &self,
        tenant: &TenantId,
        agent: &str,
        change: Change,
        source: Option<SocketAddr>,
    ) -> (Reply, Vec<Extra>, &'static str) {
        let result = match change {
            Change::Set { uri, expires } => {
                let binding = Binding { contact: uri, source: source.map(|s| s.to_string()).unwrap_or_default() };
                self.store.set(tenant, agent, &binding, expires).await.map(|()| {
                    tracing::info!(%tenant, agent, expires, "phone registered");
                    self.report(tenant, agent, expires);
                    (Some((binding.contact, expires)), "ok")
                })
            }
            Change::Remove { uri } => self.store.remove(tenant, agent, uri.as_deref()).await.map(|removed| {
                tracing::info!(%tenant, agent, removed, "phone unregistered");
                if removed {
                    self.report(tenant, agent, 0);
                }
                (None, "removed")
            }),
            Change::Query => self.store.get(tenant, agent).await.map(|b| (b.map(|(b, left)| (b.contact, left)), "ok")),
        };
        match result {
            Ok((binding, outcome)) => {
                let extras = binding
                    .iter()
                    .map(|(uri, expires)| Extra::Contact { uri: uri.clone(), expires: *expires })
                    .collect();
                (Reply::Ok { binding }, extras, outcome)
            }
            Err(e) => {
                tracing::warn!(error = %e, %tenant, "registrations store unavailable");
                (Reply::Unavailable, Vec::new(), "unavailable")
            }
        }
    }

    /// The contact of `agent`'s registered phone, if it has one (`Err` when the store is
    /// out of reach).
    pub async fn contact_of(&self, tenant: &TenantId, agent: &str) -> Result<Option<String>, store::StoreError> {
        Ok(self.store.get(tenant, agent).await?.map(|(b, _)| b.contact))
    }
}

#[cfg(test)]
mod tests {
    //! The adapter against the local stack's Redis (`CENTRALITA_REDIS_URL`; skipped
    //! without it), HA1 files in a directory of its own and a tenant registry: what a
    //! REGISTER gets, without the SIP stack.
    use super::*;
    use centralita_platform::tenant::{TenantManifest, TenantStatus};
    use digest::Credentials;
    use policy::{Contacts, Register};

    fn tenant(id: &str) -> Tenant {
        let text = format!(
            r#"
apiVersion: centralita.io/v1
kind: Tenant
metadata: {{ name: {id} }}
spec:
  displayName: {id}
  channels: [voice]
  serviceLevel: {{ targetPercent: 80, thresholdSeconds: 20 }}
  quotas: {{ maxConcurrentContacts: 5, apiRequestsPerSecond: 10 }}
  businessHours: {{ timeZone: UTC }}
  dataRetentionDays: 30
  recording: {{ voice: none }}
  routing: {{ queues: [{{ id: support }}] }}
  voice:
    registrar: {{ domain: {id}.sip.example, credentialsSecret: {id}-phones }}
"#
        );
        let at = chrono::DateTime::from_timestamp(1_790_000_000, 0).expect("valid");
        TenantManifest::parse_all(&text, at).expect("valid").remove(0)
    }

    struct World {
        registrar: Registrar,
        a: TenantId,
        b: TenantId,
        dir: PathBuf,
    }

    impl Drop for World {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    async fn world(max_failures: u32) -> Option<World> {
        let url = std::env::var("CENTRALITA_REDIS_URL").ok()?;
        let conn = centralita_platform::cache::connect(&url).await.ok()?;
        let run = uuid::Uuid::now_v7().simple().to_string();
        let (a, b) = (format!("reg-a-{}", &run[20..]), format!("reg-b-{}", &run[20..]));
        let dir = std::env::temp_dir().join(format!("centralita-registrar-{run}"));
        for (t, agent, password) in [(&a, "alice", "a-pw"), (&b, "alice", "b-pw"), (&b, "bob", "bob-pw")] {
            std::fs::create_dir_all(dir.join(format!("{t}-phones"))).expect("dir");
            let ha1 = Ha1::of(agent, &format!("{t}.sip.example"), password);
            std::fs::write(dir.join(format!("{t}-phones")).join(agent), format!("{}\n", ha1.hex())).expect("write");
        }
        let registry = TenantRegistry::new();
        registry.upsert(tenant(&a));
        registry.upsert(tenant(&b));
        let args = RegistrarArgs { secrets_dir: Some(dir.clone()), min_expires: 60, max_expires: 3600, max_failures };
        let platform = centralita_platform::metrics::Metrics::new("media");
        let registrar =
            Registrar::new(registry, RedisHandle::connected(conn), &args, Arc::new(Metrics::register(&platform)));
        Some(World { registrar, a: TenantId::parse(&a).expect("id"), b: TenantId::parse(&b).expect("id"), dir })
    }

    /// Source `n` is address 127.0.0.n (the throttle counts per address).
    fn source(n: u8) -> Option<SocketAddr> {
        Some(SocketAddr::from(([127, 0, 0, n], 5060)))
    }

    fn request(domain: &str, user: &str, contact: &str) -> Register {
        Register {
            domain: domain.into(),
            to_user: Some(user.into()),
            to_host: domain.into(),
            contacts: Contacts::One { uri: contact.into(), expires: None },
            expires: Some(120),
            credentials: None,
        }
    }

    /// Challenged first, then answered with `password` for the challenge's realm (or
    /// `realm`), as a phone does.
    async fn register(w: &World, r: &Register, password: &str, realm: Option<&str>, from: u8) -> Reply {
        let (reply, extras, _) = w.registrar.decide(r, source(from)).await;
        let Reply::Challenge { .. } = reply else { return reply };
        let Some(Extra::WwwAuthenticate(challenge)) = extras.first() else { panic!("no challenge: {extras:?}") };
        let param = |name: &str| {
            let at = challenge.find(&format!("{name}=\"")).expect(name) + name.len() + 2;
            challenge[at..].split('"').next().expect("value").to_owned()
        };
        let realm = realm.map(str::to_owned).unwrap_or_else(|| param("realm"));
        let user = r.to_user.clone().expect("user");
        let mut c = Credentials {
            username: user.clone(),
            realm: realm.clone(),
            nonce: param("nonce"),
            uri: format!("sip:{}", r.domain),
            response: String::new(),
            algorithm: Some("MD5".into()),
            qop: Some("auth".into()),
            nc: Some("00000001".into()),
            cnonce: Some(uuid::Uuid::now_v7().simple().to_string()),
            opaque: None,
        };
        c.response = digest::expected_response(&Ha1::of(&user, &realm, password), "REGISTER", &c);
        let answered = Register { credentials: Some(Ok(c)), ..r.clone() };
        w.registrar.decide(&answered, source(from)).await.0
    }

    #[tokio::test]
    async fn registers_per_tenant_and_never_across_tenants() {
        let Some(w) = world(100).await else {
            eprintln!("CENTRALITA_REDIS_URL not set: skipped");
            return;
        };
        let (a_domain, b_domain) = (format!("{}.sip.example", w.a), format!("{}.sip.example", w.b));
        let alice_a = request(&a_domain, "alice", "sip:alice@127.0.0.1:5062");
        assert_eq!(
            register(&w, &alice_a, "a-pw", None, 1).await,
            Reply::Ok { binding: Some(("sip:alice@127.0.0.1:5062".into(), 120)) }
        );
        assert_eq!(
            w.registrar.contact_of(&w.a, "alice").await.expect("redis"),
            Some("sip:alice@127.0.0.1:5062".into())
        );
        assert_eq!(w.registrar.contact_of(&w.b, "alice").await.expect("redis"), None, "B's alice is another agent");
        // B's alice's password, B's bob, B's realm: none register on A's domain.
        let alice_b_on_a = request(&a_domain, "alice", "sip:evil@127.0.0.1:5064");
        assert_eq!(register(&w, &alice_b_on_a, "b-pw", None, 2).await, Reply::Forbidden);
        let bob_on_a = request(&a_domain, "bob", "sip:bob@127.0.0.1:5066");
        assert_eq!(register(&w, &bob_on_a, "bob-pw", None, 2).await, Reply::Forbidden, "no bob in A: same 403");
        assert!(matches!(register(&w, &bob_on_a, "bob-pw", Some(&b_domain), 2).await, Reply::Challenge { .. }));
        assert_eq!(w.registrar.contact_of(&w.a, "bob").await.expect("redis"), None);
        assert_eq!(
            w.registrar.contact_of(&w.a, "alice").await.expect("redis"),
            Some("sip:alice@127.0.0.1:5062".into())
        );
        // An address of B's domain in a REGISTER to A's: not A's.
        let crossed = Register { to_host: b_domain.clone(), ..alice_a.clone() };
        assert_eq!(w.registrar.decide(&crossed, source(3)).await.0, Reply::NotFound);
        // An unknown domain.
        assert_eq!(
            w.registrar.decide(&request("nobody.example", "alice", "sip:a@h"), source(3)).await.0,
            Reply::NotFound
        );
        // B's own agents register with B.
        let bob_b = request(&b_domain, "bob", "sip:bob@127.0.0.1:5066");
        assert!(matches!(register(&w, &bob_b, "bob-pw", None, 4).await, Reply::Ok { .. }));
        // Unregister everything.
        let star = Register { contacts: Contacts::Star, expires: Some(0), ..alice_a.clone() };
        assert_eq!(register(&w, &star, "a-pw", None, 1).await, Reply::Ok { binding: None });
        let star_b = Register { contacts: Contacts::Star, expires: Some(0), ..bob_b.clone() };
        assert_eq!(register(&w, &star_b, "bob-pw", None, 4).await, Reply::Ok { binding: None });
        assert_eq!(w.registrar.contact_of(&w.a, "alice").await.expect("redis"), None);
        // A suspended tenant: refused before any challenge.
        let mut suspended = tenant(w.a.as_str());
        suspended.status = TenantStatus::Suspended;
        w.registrar.registry.upsert(suspended);
        assert_eq!(w.registrar.decide(&alice_a, source(1)).await.0, Reply::TenantSuspended);
    }

    #[tokio::test]
    async fn a_source_failing_too_often_is_refused_even_with_the_right_password() {
        let Some(w) = world(3).await else {
            eprintln!("CENTRALITA_REDIS_URL not set: skipped");
            return;
        };
        let domain = format!("{}.sip.example", w.a);
        let alice = request(&domain, "alice", "sip:alice@127.0.0.1:5062");
        for _ in 0..3 {
            assert_eq!(register(&w, &alice, "guess", None, 7).await, Reply::Forbidden);
        }
        let (reply, _, outcome) = w.registrar.decide(&alice, source(7)).await;
        assert_eq!((reply, outcome), (Reply::Forbidden, "throttled"), "not even challenged");
        assert_eq!(w.registrar.contact_of(&w.a, "alice").await.expect("redis"), None);
        // Another source is not held back.
        assert!(matches!(register(&w, &alice, "a-pw", None, 8).await, Reply::Ok { .. }));
        let remove = Register { contacts: Contacts::Star, expires: Some(0), ..alice };
        assert_eq!(register(&w, &remove, "a-pw", None, 8).await, Reply::Ok { binding: None });
    }

    #[tokio::test]
    async fn without_redis_a_register_is_answered_503() {
        let registry = TenantRegistry::new();
        registry.upsert(tenant("reg-down"));
        let args = RegistrarArgs { secrets_dir: None, min_expires: 60, max_expires: 3600, max_failures: 10 };
        let platform = centralita_platform::metrics::Metrics::new("media");
        let registrar = Registrar::new(registry, RedisHandle::default(), &args, Arc::new(Metrics::register(&platform)));
        let r = request("reg-down.sip.example", "alice", "sip:alice@127.0.0.1:5062");
        assert_eq!(registrar.decide(&r, source(1)).await.0, Reply::Unavailable);
        assert!(registrar.contact_of(&TenantId::parse("reg-down").expect("id"), "alice").await.is_err());
    }
}

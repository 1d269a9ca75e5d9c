//! Authentication and tenancy of every gRPC call.
//!
//! A caller presents `authorization: Bearer <JWT>`; the token is an EdDSA (Ed25519) JWT
//! whose claims carry the tenant, roles and agent id. [`Authenticator`] verifies it
//! (signature, expiry, issuer, audience), checks that the tenant is onboarded and active,
//! takes one request from the tenant's rate quota and puts the verified [`Caller`] into the
//! request extensions. Handlers take the tenant from the `Caller` only, never from a field
//! a caller can set.
//!
//! Every API is wrapped in [`Authenticated`], the asynchronous form: when the service has a
//! Redis ([`Authenticator::share_quota`], done by `Runtime::redis`), the quota is one for all
//! replicas ([`ratelimit`]: GCRA in Redis, falling back to the per-replica limiter while
//! Redis cannot be reached); without one it is counted per replica. The `tonic` interceptor
//! form ([`tonic::service::Interceptor`]) is synchronous, so it can only count per replica.
//!
//! Nothing here logs or returns token material: refusals say why in words and a reason code.

pub mod jwks;
pub mod ratelimit;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::cache::RedisHandle;
use crate::error::{Error, Reason};
use crate::metrics::Metrics;
use crate::registry::TenantRegistry;
use crate::tenant::{Tenant, TenantId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The BPO operator: every tenant.
    BpoAdmin,
    TenantAdmin,
    Supervisor,
    /// A BPO agent. Agents are not owned by a tenant: an agent token may name no tenant
    /// and then reaches tenants only through the contacts routed to the agent.
    Agent,
    /// A channel adapter of a tenant (the media service, a webhook bridge): creates
    /// contacts and reports what the customer does.
    Channel,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::BpoAdmin => "bpo_admin",
            Role::TenantAdmin => "tenant_admin",
            Role::Supervisor => "supervisor",
            Role::Agent => "agent",
            Role::Channel => "channel",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "bpo_admin" => Role::BpoAdmin,
            "tenant_admin" => Role::TenantAdmin,
            "supervisor" => Role::Supervisor,
            "agent" => Role::Agent,
            "channel" => Role::Channel,
            _ => return Err(format!("unknown role `{s}` (bpo_admin, tenant_admin, supervisor, agent, channel)")),
        })
    }
}

/// The JWT claims Centralita reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub iat: i64,
    pub exp: i64,
    /// The tenant; absent only for a `bpo_admin`, who acts across tenants, and for an
    /// `agent`, who serves the tenants whose queues it is assigned to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub roles: Vec<Role>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
}

/// Who is calling, verified. Put into every authenticated request by [`Authenticator`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub subject: String,
    /// `None` for a BPO admin without a tenant in the token.
    pub tenant: Option<TenantId>,
    pub roles: BTreeSet<Role>,
    pub agent_id: Option<String>,
}

impl Caller {
    pub fn is_bpo_admin(&self) -> bool {
        self.roles.contains(&Role::BpoAdmin)
    }

    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Refuses unless the caller may act on `tenant`: its own tenant, or any as BPO admin.
    pub fn authorize_tenant(&self, tenant: &TenantId) -> Result<(), Error> {
        if self.is_bpo_admin() || self.tenant.as_ref() == Some(tenant) {
            Ok(())
        } else {
            Err(Error::PermissionDenied {
                reason: Reason::WrongTenant,
                message: format!("caller may not access tenant `{tenant}`"),
            })
        }
    }

    /// The caller's own tenant; refuses a BPO admin token that names none.
    pub fn own_tenant(&self) -> Result<&TenantId, Error> {
        self.tenant.as_ref().ok_or_else(|| Error::PermissionDenied {
            reason: Reason::WrongTenant,
            message: "this call needs a token bound to a tenant".into(),
        })
    }

    pub fn require_any_role(&self, roles: &[Role]) -> Result<(), Error> {
        if self.is_bpo_admin() || roles.iter().any(|r| self.roles.contains(r)) {
            Ok(())
        } else {
            let names: Vec<_> = roles.iter().map(|r| r.as_str()).collect();
            Err(Error::PermissionDenied {
                reason: Reason::RoleMissing,
                message: format!("this call needs one of the roles {}", names.join(", ")),
            })
        }
    }
}

/// The verified caller of a request, or UNAUTHENTICATED if the interceptor did not run.
pub fn caller<T>(request: &tonic::Request<T>) -> Result<&Caller, tonic::Status> {
    request
        .extensions()
        .get::<Caller>()
        .ok_or_else(|| tonic::Status::unauthenticated("no verified caller on this request"))
}

fn unauthenticated(reason: Reason, message: &str) -> Error {
    Error::Unauthenticated { reason, message: message.into() }
}

/// Verifies tokens: the platform's own against one Ed25519 public key, issuer and audience;
/// those naming a key (`kid`) against the identity provider's keys, when one is configured
/// ([`jwks`]).
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
    idp: Option<Arc<jwks::Idp>>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("iss", &self.validation.iss).field("aud", &self.validation.aud).finish()
    }
}

impl Verifier {
    pub fn from_pem(public_key_pem: &[u8], issuer: &str, audience: &str) -> Result<Self, String> {
        let key =
            DecodingKey::from_ed_pem(public_key_pem).map_err(|e| format!("not an Ed25519 public key PEM ({e})"))?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 30;
        Ok(Self { key, validation, idp: None })
    }

    /// Also accepts the tokens of identity provider `idp`.
    pub fn with_idp(mut self, idp: Arc<jwks::Idp>) -> Self {
        self.idp = Some(idp);
        self
    }

    pub fn from_file(path: &Path, issuer: &str, audience: &str) -> Result<Self, String> {
        let pem = std::fs::read(path).map_err(|e| format!("cannot read {} ({e})", path.display()))?;
        Self::from_pem(&pem, issuer, audience)
    }

    /// Verifies `token` and turns its claims into a [`Caller`].
    pub fn verify(&self, token: &str) -> Result<Caller, Error> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| unauthenticated(Reason::TokenInvalid, "token is malformed"))?;
        let c: Claims = match (header.kid.as_deref(), &self.idp) {
            (None, _) => {
                jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
                    .map_err(|e| token_refusal(e.kind()))?
                    .claims
            }
            (Some(kid), Some(idp)) => idp.decode(token, kid, header.alg).map_err(|r| match r {
                jwks::Refused::UnknownKey => unauthenticated(
                    Reason::TokenInvalid,
                    "token is signed with a key the identity provider does not list",
                ),
                jwks::Refused::Algorithm => unauthenticated(Reason::TokenInvalid, "token algorithm is not accepted"),
                jwks::Refused::Token(kind) => token_refusal(&kind),
            })?,
            (Some(_), None) => {
                return Err(unauthenticated(
                    Reason::TokenInvalid,
                    "token names a signing key this platform does not know",
                ))
            }
        };
        let roles: BTreeSet<Role> = c.roles.into_iter().collect();
        if roles.is_empty() {
            return Err(unauthenticated(Reason::TokenInvalid, "token grants no role"));
        }
        let tenant = match c.tenant {
            Some(t) => Some(
                TenantId::parse(&t).map_err(|_| unauthenticated(Reason::TokenInvalid, "token tenant is malformed"))?,
            ),
            None if roles.contains(&Role::BpoAdmin) => None,
            None if roles.iter().all(|r| *r == Role::Agent) => None,
            None => return Err(unauthenticated(Reason::TokenInvalid, "token names no tenant")),
        };
        if roles.contains(&Role::Agent) && c.agent_id.as_deref().is_none_or(str::is_empty) {
            return Err(unauthenticated(Reason::TokenInvalid, "agent token names no agent_id"));
        }
        Ok(Caller { subject: c.sub, tenant, roles, agent_id: c.agent_id })
    }
}

/// The refusal of a token the JOSE library did not accept.
fn token_refusal(kind: &jsonwebtoken::errors::ErrorKind) -> Error {
    use jsonwebtoken::errors::ErrorKind;
    match kind {
        ErrorKind::ExpiredSignature => unauthenticated(Reason::TokenExpired, "token has expired"),
        ErrorKind::InvalidSignature => unauthenticated(Reason::TokenInvalid, "token signature is not valid"),
        ErrorKind::InvalidIssuer => unauthenticated(Reason::TokenInvalid, "token issuer is not accepted"),
        ErrorKind::InvalidAudience => unauthenticated(Reason::TokenInvalid, "token audience is not accepted"),
        ErrorKind::ImmatureSignature => unauthenticated(Reason::TokenInvalid, "token is not valid yet"),
        ErrorKind::InvalidAlgorithm => unauthenticated(Reason::TokenInvalid, "token algorithm is not accepted"),
        _ => unauthenticated(Reason::TokenInvalid, "token is malformed"),
    }
}

/// Mints tokens with an Ed25519 private key: the dev CLI and tests use it; production tokens
/// come from the identity provider that holds the key.
#[derive(Clone)]
pub struct Signer {
    key: EncodingKey,
    pub issuer: String,
    pub audience: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("issuer", &self.issuer).field("audience", &self.audience).finish()
    }
}

/// What a minted token says.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub subject: String,
    pub tenant: Option<TenantId>,
    pub roles: Vec<Role>,
    pub agent_id: Option<String>,
    pub ttl: Duration,
}

impl Signer {
    pub fn from_pem(private_key_pem: &[u8], issuer: &str, audience: &str) -> Result<Self, String> {
        let key =
            EncodingKey::from_ed_pem(private_key_pem).map_err(|e| format!("not an Ed25519 private key PEM ({e})"))?;
        Ok(Self { key, issuer: issuer.into(), audience: audience.into() })
    }

    pub fn from_file(path: &Path, issuer: &str, audience: &str) -> Result<Self, String> {
        let pem = std::fs::read(path).map_err(|e| format!("cannot read {} ({e})", path.display()))?;
        Self::from_pem(&pem, issuer, audience)
    }

    pub fn mint(&self, req: &TokenRequest) -> Result<String, Error> {
        self.mint_at(req, chrono::Utc::now().timestamp())
    }

    /// Mints as if `now` (seconds since the epoch) were the time: lets tests make expired tokens.
    pub fn mint_at(&self, req: &TokenRequest, now: i64) -> Result<String, Error> {
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: req.subject.clone(),
            iat: now,
            exp: now + req.ttl.as_secs() as i64,
            tenant: req.tenant.as_ref().map(ToString::to_string),
            roles: req.roles.clone(),
            agent_id: req.agent_id.clone(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &self.key).map_err(Error::internal)
    }
}

/// Authenticates every call of a gRPC service: in [`Authenticated`] (shared quota) or as a
/// `tonic` interceptor (per-replica quota). Clones share the quota.
#[derive(Debug, Clone)]
pub struct Authenticator {
    verifier: Arc<Verifier>,
    tenants: TenantRegistry,
    metrics: Arc<Metrics>,
    /// Set once the service has a Redis to share quotas in.
    shared: Arc<OnceLock<ratelimit::SharedQuota>>,
}

impl Authenticator {
    pub fn new(verifier: Arc<Verifier>, tenants: TenantRegistry, metrics: Arc<Metrics>) -> Self {
        Self { verifier, tenants, metrics, shared: Arc::default() }
    }

    /// Counts tenant quotas in `redis`, shared with every replica (of any service) using the
    /// same Redis, from now on and for every clone; the first call wins. The handle may not
    /// be connected yet: until it is, quotas are counted per replica.
    pub fn share_quota(&self, redis: RedisHandle) {
        let gauge = self.metrics.auth_rate_limiter_fallback.clone();
        let _ = self.shared.get_or_init(|| ratelimit::SharedQuota::new(redis, gauge));
    }

    /// The synchronous part of authentication: the token, and the tenant when it names one
    /// (known and active), without taking from its quota.
    pub fn identify(&self, authorization: Option<&[u8]>) -> Result<(Caller, Option<Arc<Tenant>>), Error> {
        let header = authorization.ok_or_else(|| unauthenticated(Reason::TokenMissing, "missing bearer token"))?;
        let header =
            std::str::from_utf8(header).map_err(|_| unauthenticated(Reason::TokenInvalid, "token is malformed"))?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| unauthenticated(Reason::TokenMissing, "authorization must be `Bearer <token>`"))?;
        let caller = self.verifier.verify(token.trim())?;
        // Known from here on, so also on the call's span when the tenant is then refused.
        tracing::Span::current().record("tenant", caller.tenant.as_ref().map(|t| t.as_str()).unwrap_or("*"));
        let tenant = caller.tenant.as_ref().map(|t| self.tenants.require_active(t)).transpose()?;
        Ok((caller, tenant))
    }

    /// Takes one call from `tenant`'s quota: shared when the service has a Redis, else (and
    /// while that Redis cannot be reached) counted in this replica.
    pub async fn take_quota(&self, tenant: &Tenant) -> Result<(), Error> {
        match self.shared.get() {
            Some(shared) => shared.take(tenant, &self.tenants).await,
            None => self.tenants.take_request(tenant),
        }
    }

    /// Authenticates a call given its `authorization` metadata value, taking from the
    /// tenant's quota as [`Self::take_quota`] does. A caller without a tenant (a BPO admin,
    /// a BPO agent) has no quota and costs no round trip.
    pub async fn admit(&self, authorization: Option<&[u8]>) -> Result<Caller, Error> {
        let (caller, tenant) = self.identify(authorization)?;
        if let Some(tenant) = tenant {
            self.take_quota(&tenant).await?;
        }
        Ok(caller)
    }

    /// [`Self::admit`] without waiting: the tenant's quota is counted in this replica only.
    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Caller, Error> {
        let (caller, tenant) = self.identify(authorization)?;
        if let Some(tenant) = tenant {
            self.tenants.take_request(&tenant)?;
        }
        Ok(caller)
    }

    /// Counts and logs a refusal, and gives the status the caller sees.
    fn refused(&self, e: Error) -> tonic::Status {
        let reason = match &e {
            Error::Unauthenticated { reason, .. }
            | Error::PermissionDenied { reason, .. }
            | Error::ResourceExhausted { reason, .. } => reason.as_str(),
            _ => "OTHER",
        };
        self.metrics.auth_rejected(reason);
        tracing::info!(reason, "call refused by authentication");
        e.into()
    }
}

/// The synchronous form, for a service built without [`Authenticated`]: it cannot wait for
/// Redis, so it counts tenant quotas per replica.
impl tonic::service::Interceptor for Authenticator {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let auth = request.metadata().get("authorization").map(|v| v.as_bytes());
        match self.authenticate(auth) {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                Ok(request)
            }
            Err(e) => Err(self.refused(e)),
        }
    }
}

/// A gRPC service behind the [`Authenticator`], used as
/// `routes.add_service(Authenticated::new(FooServiceServer::new(api), runtime.authenticator.clone()))`:
/// the call reaches `inner` with its [`Caller`] in the request extensions, or is answered
/// with the refusal. Unlike `tonic`'s interceptor it may wait, for the shared quota check.
#[derive(Debug, Clone)]
pub struct Authenticated<S> {
    inner: S,
    auth: Authenticator,
}

impl<S> Authenticated<S> {
    pub fn new(inner: S, auth: Authenticator) -> Self {
        Self { inner, auth }
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for Authenticated<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B, R> tonic::codegen::Service<http::Request<B>> for Authenticated<S>
where
    S: tonic::codegen::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
    R: Default + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let auth = self.auth.clone();
        // The clone that was polled ready serves this call; the fresh clone serves the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        // Everything happens in the future, which runs in the call's span (the tenant is
        // recorded on it); the header is cloned (a reference count) so the request can move.
        let authorization = request.headers().get(http::header::AUTHORIZATION).cloned();
        Box::pin(async move {
            match auth.admit(authorization.as_ref().map(|v| v.as_bytes())).await {
                Ok(caller) => {
                    request.extensions_mut().insert(caller);
                    inner.call(request).await
                }
                Err(e) => Ok(auth.refused(e).into_http()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::tests::tenant;

    const PRIVATE: &str = include_str!("../../../deploy/local/dev-keys/jwt-ed25519.key");
    const PUBLIC: &str = include_str!("../../../deploy/local/dev-keys/jwt-ed25519.pub");
    const OTHER_PRIVATE: &str = include_str!("../tests/fixtures/other-ed25519.key");

    fn signer() -> Signer {
        Signer::from_pem(PRIVATE.as_bytes(), "centralita", "centralita-api").expect("key")
    }

    fn agent(tenant: &str) -> TokenRequest {
        TokenRequest {
            subject: "alice".into(),
            tenant: Some(TenantId::parse(tenant).expect("id")),
            roles: vec![Role::Agent],
            agent_id: Some("agent-1".into()),
            ttl: Duration::from_secs(600),
        }
    }

    fn authn() -> Authenticator {
        let v = Verifier::from_pem(PUBLIC.as_bytes(), "centralita", "centralita-api").expect("key");
        let reg = TenantRegistry::new();
        reg.upsert(tenant("acme", 1000, 1));
        let mut suspended = tenant("initech", 1000, 1);
        suspended.status = crate::tenant::TenantStatus::Suspended;
        reg.upsert(suspended);
        Authenticator::new(Arc::new(v), reg, Arc::new(Metrics::new("test")))
    }

    fn bearer(t: &str) -> Vec<u8> {
        format!("Bearer {t}").into_bytes()
    }

    fn reason_of(r: Result<Caller, Error>) -> &'static str {
        match r {
            Err(Error::Unauthenticated { reason, .. }) | Err(Error::PermissionDenied { reason, .. }) => reason.as_str(),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn valid_token_gives_the_caller() {
        let token = signer().mint(&agent("acme")).expect("mint");
        let caller = authn().authenticate(Some(&bearer(&token))).expect("valid");
        assert_eq!(caller.tenant.as_ref().map(TenantId::as_str), Some("acme"));
        assert_eq!(caller.agent_id.as_deref(), Some("agent-1"));
    }

    #[test]
    fn refusals() {
        let a = authn();
        let s = signer();
        let expired = s.mint_at(&agent("acme"), chrono::Utc::now().timestamp() - 3600).expect("mint");
        assert_eq!(reason_of(a.authenticate(Some(&bearer(&expired)))), "TOKEN_EXPIRED");
        let forged = Signer::from_pem(OTHER_PRIVATE.as_bytes(), "centralita", "centralita-api")
            .expect("key")
            .mint(&agent("acme"))
            .expect("mint");
        assert_eq!(reason_of(a.authenticate(Some(&bearer(&forged)))), "TOKEN_INVALID");
        let wrong_aud = Signer::from_pem(PRIVATE.as_bytes(), "centralita", "elsewhere")
            .expect("key")
            .mint(&agent("acme"))
            .expect("mint");
        assert_eq!(reason_of(a.authenticate(Some(&bearer(&wrong_aud)))), "TOKEN_INVALID");
        let wrong_iss = Signer::from_pem(PRIVATE.as_bytes(), "mallory", "centralita-api")
            .expect("key")
            .mint(&agent("acme"))
            .expect("mint");
        assert_eq!(reason_of(a.authenticate(Some(&bearer(&wrong_iss)))), "TOKEN_INVALID");
        assert_eq!(reason_of(a.authenticate(None)), "TOKEN_MISSING");
        assert_eq!(reason_of(a.authenticate(Some(b"Basic abc"))), "TOKEN_MISSING");
        assert_eq!(reason_of(a.authenticate(Some(&bearer("not.a.jwt")))), "TOKEN_INVALID");
        let unknown = s.mint(&agent("globex")).expect("mint");
        assert_eq!(reason_of(a.authenticate(Some(&bearer(&unknown)))), "TENANT_UNKNOWN");
        let suspended = s.mint(&agent("initech")).expect("mint");
        assert_eq!(reason_of(a.authenticate(Some(&bearer(&suspended)))), "TENANT_SUSPENDED");
        let mut no_agent = agent("acme");
        no_agent.agent_id = None;
        let t = s.mint(&no_agent).expect("mint");
        assert_eq!(reason_of(a.authenticate(Some(&bearer(&t)))), "TOKEN_INVALID");
    }

    #[test]
    fn tenant_scoping() {
        let acme = TenantId::parse("acme").expect("id");
        let globex = TenantId::parse("globex").expect("id");
        let agent = Caller {
            subject: "a".into(),
            tenant: Some(acme.clone()),
            roles: [Role::Agent].into(),
            agent_id: Some("x".into()),
        };
        assert!(agent.authorize_tenant(&acme).is_ok());
        assert!(agent.authorize_tenant(&globex).is_err());
        assert!(agent.require_any_role(&[Role::Supervisor]).is_err());
        let admin = Caller { subject: "ops".into(), tenant: None, roles: [Role::BpoAdmin].into(), agent_id: None };
        assert!(admin.authorize_tenant(&globex).is_ok());
        assert!(admin.own_tenant().is_err());
    }

    #[tokio::test]
    async fn without_a_reachable_redis_the_replica_counts_the_quota() {
        let a = authn();
        let tiny = crate::registry::tests::tenant("tiny", 1, 1);
        a.tenants.upsert(tiny);
        let token = bearer(&signer().mint(&agent("tiny")).expect("mint"));
        let mut admitted = 0;
        for _ in 0..20 {
            admitted += usize::from(a.admit(Some(&token)).await.is_ok());
        }
        // No Redis: the local limiter, and nothing to fall back from.
        assert_eq!(admitted, ratelimit::burst(1) as usize);
        assert_eq!(a.metrics.auth_rate_limiter_fallback.get(), 0);
        // A Redis that never answered: the same limiter (its tokens spent above), flagged.
        a.share_quota(RedisHandle::default());
        let over = a.admit(Some(&token)).await;
        assert_eq!(a.metrics.auth_rate_limiter_fallback.get(), 1);
        assert!(matches!(over, Err(Error::ResourceExhausted { reason: Reason::TenantRateLimited, .. })), "{over:?}");
        // A BPO admin has no quota.
        let admin = TokenRequest { tenant: None, roles: vec![Role::BpoAdmin], agent_id: None, ..agent("acme") };
        let admin = signer().mint(&admin).expect("mint");
        for _ in 0..20 {
            assert!(a.admit(Some(&bearer(&admin))).await.is_ok());
        }
    }

    #[test]
    fn refusal_messages_hold_no_token_material() {
        let token = signer().mint_at(&agent("acme"), 1000).expect("mint");
        let status = tonic::Status::from(authn().authenticate(Some(&bearer(&token))).unwrap_err());
        for part in token.split('.') {
            assert!(!status.message().contains(part));
        }
    }
}

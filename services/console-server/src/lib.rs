//! `centralita-console`: serves the web console (the built app of `services/console`) and,
//! only when explicitly enabled, its **development sign-in**.
//!
//! The console itself talks to the services directly over gRPC-Web (each service's gRPC
//! port, CORS granted to this server's origin by `CENTRALITA_GRPC_WEB_ORIGINS`); this server
//! holds no API of its own beyond:
//! - `GET /api/config`: where the browser finds each service (`CENTRALITA_CONSOLE_ENDPOINTS`),
//!   whether development sign-in is on, and the server's clock (the browser measures its
//!   offset from it, so an offer's countdown follows the platform's clock, not the PC's).
//! - `POST /api/dev/sign-in`: mints a JWT with the development key for a tenant and role the
//!   page names (agent, supervisor). Off unless `CENTRALITA_CONSOLE_DEV_SIGN_IN=true` and a
//!   private key is given: it hands any tenant's token to anyone who can reach it, so it is
//!   for a developer's loopback only.
//! - **Sign-in through the BPO's identity provider** (`CENTRALITA_CONSOLE_OIDC_ISSUER`): the
//!   config tells the browser the provider's issuer, the console's client id, the scopes
//!   and the API resource (RFC 8707) to ask a token for; the browser runs the OpenID
//!   Connect authorization-code flow with PKCE itself (`services/console/src/oidc.ts`), a
//!   public client holding no secret, and calls the services with the provider's access
//!   token, which they verify against the provider's JWKS (`CENTRALITA_JWT_JWKS_URL`). The
//!   provider's origin is added to the pages' `connect-src`.
//! - `GET /livez`; and on a second, admin port (`CENTRALITA_CONSOLE_ADMIN_ADDR`) the
//!   platform's `/livez`, `/readyz` and `/metrics` (with `centralita_console_dev_sign_ins`).
//!
//! Everything else is the app: files of the built `dist` directory, and `index.html` for any
//! other path (the app routes in the browser).
//!
//! # Layout
//! - [`Config`]: flags and `CENTRALITA_CONSOLE_*` environment, validated once.
//! - [`signin`]: the development sign-in (request validation, minting, its errors).
//! - [`metrics`]: the server's own metrics.
//! - [`router`] and [`run`]: the HTTP server; `main.rs` only parses and calls `run`.

pub mod metrics;
pub mod signin;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use centralita_platform::auth::Signer;
use centralita_platform::config::{parse_duration, ConfigError, TelemetryConfig};
use centralita_platform::health::Readiness;
use centralita_platform::shutdown::Shutdown;
use tower_http::services::{ServeDir, ServeFile};

/// Services the browser may be pointed at (the gRPC APIs the console uses).
pub const SERVICES: [&str; 6] = ["sessions", "crm", "reporting", "routing", "media", "recording"];
/// Services the console cannot work without.
pub const REQUIRED: [&str; 3] = ["sessions", "crm", "reporting"];

#[derive(Debug, Clone, clap::Parser)]
#[command(name = "centralita-console", version, about = "Serves the Centralita web console")]
pub struct Config {
    /// Address of the console's HTTP port.
    #[arg(long, env = "CENTRALITA_CONSOLE_ADDR", default_value = "127.0.0.1:9650")]
    pub addr: SocketAddr,
    /// Address of the admin port (`/livez`, `/readyz`, `/metrics`).
    #[arg(long, env = "CENTRALITA_CONSOLE_ADMIN_ADDR", default_value = "127.0.0.1:9651")]
    pub admin_addr: SocketAddr,
    /// The built app (`services/console/dist`, made by `npm run build`).
    #[arg(long, env = "CENTRALITA_CONSOLE_DIST")]
    pub dist: PathBuf,
    /// Where the browser reaches each service's gRPC-Web API, comma-separated
    /// `name=http(s)://host:port` (sessions, crm and reporting at least).
    #[arg(long, env = "CENTRALITA_CONSOLE_ENDPOINTS", value_delimiter = ',', required = true)]
    pub endpoints: Vec<String>,
    /// Development sign-in: mint tokens with the private key for whoever asks. Never in
    /// production.
    #[arg(long, env = "CENTRALITA_CONSOLE_DEV_SIGN_IN", default_value_t = false, action = clap::ArgAction::Set)]
    pub dev_sign_in: bool,
    /// Ed25519 private key PEM the development sign-in signs with (needed only with it).
    #[arg(long, env = "CENTRALITA_JWT_PRIVATE_KEY_FILE")]
    pub private_key_file: Option<PathBuf>,
    #[arg(long = "jwt-issuer", env = "CENTRALITA_JWT_ISSUER", default_value = "centralita")]
    pub issuer: String,
    #[arg(long = "jwt-audience", env = "CENTRALITA_JWT_AUDIENCE", default_value = "centralita-api")]
    pub audience: String,
    /// The BPO's OpenID Connect provider the console signs in with (authorization code with
    /// PKCE): its issuer, `https://host[:port][/path]` (`http://` only on loopback, for the
    /// local stack). Unset: no such sign-in.
    #[arg(long, env = "CENTRALITA_CONSOLE_OIDC_ISSUER")]
    pub oidc_issuer: Option<String>,
    /// The console's client id at the provider (a public client: no secret).
    #[arg(long, env = "CENTRALITA_CONSOLE_OIDC_CLIENT_ID", default_value = "centralita-console")]
    pub oidc_client_id: String,
    /// The scopes asked for (space-separated, `openid` among them).
    #[arg(long, env = "CENTRALITA_CONSOLE_OIDC_SCOPE", default_value = "openid profile")]
    pub oidc_scope: String,
    /// The API resource (RFC 8707) the access token is asked for, an absolute URI; empty:
    /// none (the provider's default audience).
    #[arg(long, env = "CENTRALITA_CONSOLE_OIDC_RESOURCE", default_value = "")]
    pub oidc_resource: String,
    /// Lifetime of a development token (a shift).
    #[arg(long, env = "CENTRALITA_CONSOLE_DEV_TOKEN_TTL", default_value = "8h", value_parser = parse_duration)]
    pub dev_token_ttl: Duration,
    #[command(flatten)]
    pub telemetry: TelemetryConfig,
}

impl Config {
    /// The endpoints by service name; refuses unknown names, URLs that are not
    /// `http(s)://host:port`, duplicates and missing required services.
    pub fn endpoint_map(&self) -> Result<BTreeMap<String, String>, ConfigError> {
        const SETTING: &str = "CENTRALITA_CONSOLE_ENDPOINTS";
        let mut map = BTreeMap::new();
        for entry in self.endpoints.iter().filter(|e| !e.trim().is_empty()) {
            let (name, url) =
                entry.split_once('=').ok_or_else(|| ConfigError::new(SETTING, format!("`{entry}` is not name=url")))?;
            if !SERVICES.contains(&name) {
                return Err(ConfigError::new(SETTING, format!("unknown service `{name}` (one of {SERVICES:?})")));
            }
            let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"));
            let ok = rest
                .is_some_and(|r| !r.is_empty() && r.chars().all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c)));
            if !ok {
                return Err(ConfigError::new(SETTING, format!("`{url}` of {name} must be http(s)://host[:port]")));
            }
            if map.insert(name.to_owned(), url.to_owned()).is_some() {
                return Err(ConfigError::new(SETTING, format!("{name} is given twice")));
            }
        }
        if let Some(missing) = REQUIRED.iter().find(|r| !map.contains_key(**r)) {
            return Err(ConfigError::new(SETTING, format!("{missing} is missing")));
        }
        Ok(map)
    }

    /// Everything [`run`] needs, checked: endpoints, the app's `index.html`, and the key when
    /// development sign-in is on.
    pub fn validate(&self) -> Result<Prepared, ConfigError> {
        let endpoints = self.endpoint_map()?;
        if !self.dist.join("index.html").is_file() {
            return Err(ConfigError::new(
                "CENTRALITA_CONSOLE_DIST",
                format!("{} has no index.html (run `npm --prefix services/console run build`)", self.dist.display()),
            ));
        }
        let signer = if self.dev_sign_in {
            let path = self.private_key_file.as_ref().ok_or_else(|| {
                ConfigError::new("CENTRALITA_JWT_PRIVATE_KEY_FILE", "needed by CENTRALITA_CONSOLE_DEV_SIGN_IN=true")
            })?;
            let signer = Signer::from_file(path, &self.issuer, &self.audience)
                .map_err(|m| ConfigError::new("CENTRALITA_JWT_PRIVATE_KEY_FILE", m))?;
            Some(Arc::new(signer))
        } else {
            None
        };
        if self.dev_token_ttl.is_zero() || self.dev_token_ttl > Duration::from_secs(24 * 3600) {
            return Err(ConfigError::new("CENTRALITA_CONSOLE_DEV_TOKEN_TTL", "must be more than 0 and at most 24h"));
        }
        let oidc = self.oidc()?;
        Ok(Prepared { endpoints, signer, ttl: self.dev_token_ttl, dist: self.dist.clone(), oidc })
    }

    /// The identity provider's settings, checked, when an issuer is given.
    pub fn oidc(&self) -> Result<Option<Oidc>, ConfigError> {
        let Some(issuer) = self.oidc_issuer.as_deref().map(str::trim).filter(|i| !i.is_empty()) else {
            return Ok(None);
        };
        let origin = issuer_origin(issuer).ok_or_else(|| {
            ConfigError::new(
                "CENTRALITA_CONSOLE_OIDC_ISSUER",
                format!("`{issuer}` must be https://host[:port][/path] (http:// only on 127.0.0.1, [::1] or localhost), without query or fragment"),
            )
        })?;
        let client_id = self.oidc_client_id.trim();
        if client_id.is_empty() || client_id.len() > 128 || !client_id.chars().all(|c| c.is_ascii_graphic()) {
            return Err(ConfigError::new("CENTRALITA_CONSOLE_OIDC_CLIENT_ID", "1-128 printable characters, no spaces"));
        }
        let scopes: Vec<&str> = self.oidc_scope.split_whitespace().collect();
        if !scopes.contains(&"openid")
            || scopes.iter().any(|s| !s.chars().all(|c| c.is_ascii_graphic() && c != '"' && c != '\\'))
        {
            return Err(ConfigError::new(
                "CENTRALITA_CONSOLE_OIDC_SCOPE",
                "space-separated scopes, `openid` among them",
            ));
        }
        let resource = self.oidc_resource.trim();
        let absolute = resource.split_once(':').is_some_and(|(scheme, rest)| {
            !scheme.is_empty()
                && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
                && !rest.is_empty()
        });
        if !resource.is_empty()
            && (!absolute || resource.contains('#') || !resource.chars().all(|c| c.is_ascii_graphic()))
        {
            return Err(ConfigError::new(
                "CENTRALITA_CONSOLE_OIDC_RESOURCE",
                format!("`{resource}` must be an absolute URI without a fragment (RFC 8707)"),
            ));
        }
        Ok(Some(Oidc {
            issuer: issuer.to_owned(),
            origin,
            client_id: client_id.to_owned(),
            scope: scopes.join(" "),
            resource: resource.to_owned(),
        }))
    }
}

/// The `scheme://host[:port]` of an issuer URL that is `https://…`, or `http://…` on a
/// loopback host; `None` otherwise (or with a query, fragment, user info or odd character).
pub fn issuer_origin(issuer: &str) -> Option<String> {
    let (scheme, rest) = issuer.split_once("://")?;
    let authority = rest.split('/').next()?;
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if !authority.ends_with(']') => {
            port.parse::<u16>().ok().filter(|p| *p > 0)?;
            h
        }
        _ => authority,
    };
    let clean = |s: &str| s.chars().all(|c| c.is_ascii_alphanumeric() || "-._~/:[]%".contains(c));
    let loopback = matches!(host, "127.0.0.1" | "[::1]" | "localhost");
    let ok_scheme = scheme == "https" || (scheme == "http" && loopback);
    (ok_scheme && !host.is_empty() && clean(rest) && !rest.contains("//")).then(|| format!("{scheme}://{authority}"))
}

/// The identity provider the browser signs in with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Oidc {
    pub issuer: String,
    /// Its `scheme://host[:port]`, allowed in the pages' `connect-src`.
    pub origin: String,
    pub client_id: String,
    pub scope: String,
    pub resource: String,
}

/// A validated configuration.
#[derive(Clone)]
pub struct Prepared {
    pub endpoints: BTreeMap<String, String>,
    /// Set only when development sign-in is on.
    pub signer: Option<Arc<Signer>>,
    pub ttl: Duration,
    pub dist: PathBuf,
    /// The BPO's identity provider, when the console signs in through it.
    pub oidc: Option<Oidc>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("endpoints", &self.endpoints)
            .field("dev_sign_in", &self.signer.is_some())
            .field("ttl", &self.ttl)
            .field("dist", &self.dist)
            .field("oidc", &self.oidc)
            .finish()
    }
}

/// What the handlers share.
#[derive(Debug)]
pub struct AppState {
    pub prepared: Prepared,
    pub metrics: metrics::Metrics,
}

async fn config_json(State(app): State<Arc<AppState>>) -> Response {
    let p = &app.prepared;
    let body = serde_json::json!({
        "endpoints": p.endpoints,
        "devSignIn": p.signer.is_some(),
        "oidc": p.oidc.as_ref().map(|o| serde_json::json!({
            "issuer": o.issuer,
            "clientId": o.client_id,
            "scope": o.scope,
            "resource": o.resource,
        })),
        "serverTimeMs": chrono::Utc::now().timestamp_millis(),
    });
    ([(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))], Json(body)).into_response()
}

async fn no_such_api() -> Response {
    (StatusCode::NOT_FOUND, Json(serde_json::json!({ "error": "no such API" }))).into_response()
}

/// The Content-Security-Policy of every response: the app's own files, and calls only to
/// this server, the configured service endpoints and the identity provider (`idp`, its
/// origin: discovery and the token endpoint); never framed.
pub fn content_security_policy(endpoints: &BTreeMap<String, String>, idp: Option<&str>) -> String {
    let connect: Vec<&str> = endpoints.values().map(String::as_str).chain(idp).collect();
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self' {}; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        connect.join(" ")
    )
}

/// Adds the browser-hardening headers to a response.
fn harden(csp: HeaderValue, mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, csp);
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

/// The console's routes over a validated configuration.
pub fn router(state: Arc<AppState>) -> Router {
    // Endpoints are validated (scheme://host[:port]), so the policy is a valid header value.
    let idp = state.prepared.oidc.as_ref().map(|o| o.origin.as_str());
    let csp = HeaderValue::from_str(&content_security_policy(&state.prepared.endpoints, idp))
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'"));
    let index = state.prepared.dist.join("index.html");
    let app = ServeDir::new(&state.prepared.dist).fallback(ServeFile::new(index));
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/api/config", get(config_json))
        .route("/api/dev/sign-in", post(signin::handle))
        .route("/api/{*rest}", get(no_such_api).post(no_such_api))
        .fallback_service(app)
        .layer(axum::middleware::map_response(move |r: Response| {
            let csp = csp.clone();
            async move { harden(csp, r) }
        }))
        .with_state(state)
}

/// The console's two listening sockets.
#[derive(Debug)]
pub struct Listeners {
    pub app: tokio::net::TcpListener,
    pub admin: tokio::net::TcpListener,
}

/// Serves the app and the admin port until `shutdown`, then stops accepting and finishes
/// open requests (readiness turns false first).
pub async fn run(prepared: Prepared, listeners: Listeners, shutdown: Shutdown) -> anyhow::Result<()> {
    if prepared.signer.is_some() {
        tracing::warn!("development sign-in is ON: anyone reaching this port can get a token of any tenant");
    }
    tracing::info!(
        addr = %listeners.app.local_addr()?,
        admin = %listeners.admin.local_addr()?,
        dist = %prepared.dist.display(),
        "serving the console"
    );
    let platform = Arc::new(centralita_platform::metrics::Metrics::new("console"));
    let state = Arc::new(AppState { metrics: metrics::Metrics::register(&platform), prepared });
    let readiness = Readiness::new();
    readiness.register("app");
    readiness.set("app", true, "ok");
    let admin_stop = Shutdown::new();
    let admin = axum::serve(listeners.admin, centralita_platform::admin::router(readiness.clone(), platform))
        .with_graceful_shutdown({
            let s = admin_stop.clone();
            async move { s.wait().await }
        });
    let admin = tokio::spawn(async move { admin.await });
    let served = axum::serve(listeners.app, router(state))
        .with_graceful_shutdown(async move {
            shutdown.wait().await;
            readiness.set_shutting_down();
        })
        .await;
    admin_stop.trigger();
    admin.await??;
    served?;
    Ok(())
}

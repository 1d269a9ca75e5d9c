//! The `media` service (`centralita-media`): the channel adapters that turn customers'
//! interactions into contacts of sessions.
//!
//! The **voice role**: an INVITE to a tenant's number from one of its trunks creates an
//! inbound voice contact in the number's queue (the caller's number as its identity), is
//! answered (SDP offer/answer, G.711) with generated music on hold, and when routing offers
//! the contact to an agent with a phone (`spec.voice.phones`) the phone is rung; its answer
//! accepts the offer and the legs are bridged through the RTP relay; a CANCEL or BYE ends
//! the contact; bridged calls of tenants that record are streamed to recording. Agents'
//! phones register (`spec.voice.registrar`, [`registrar`]) and an agent without a fixed
//! phone is rung at its registered one; a waiting caller hears its position and expected
//! wait announced ([`announce`]). Not built yet: digest authentication of trunks.
//! In-call hold, DTMF (RFC 4733 and SIP INFO), cold transfer by REFER and the
//! calls' leg events on Kafka are built ([`legs`]).
//!
//! The **digital role** ([`digital`]) keeps the conversations of digital contacts (web chat
//! and SMS through Twilio so far) in PostgreSQL and serves them to agents
//! (`centralita.media.v1.ConversationService`).
//! The roles deploy separately (`CENTRALITA_MEDIA_ROLES`, both by default).
//!
//! # What runs
//! - voice: SIP on `CENTRALITA_SIP_ADDR` (UDP and TCP, one port), RTP on
//!   `CENTRALITA_RTP_PORTS`;
//! - digital: `ConversationService` on the gRPC port, the `media` schema
//!   (`CENTRALITA_DATABASE_URL`) and the conversations topic;
//! - gRPC: health and reflection, and the tenant directory from the tenants topic;
//! - the admin port: `/livez`, `/readyz` (Kafka, the tenant set, the SIP listener, the
//!   digital role and PostgreSQL), `/metrics` (the platform's and `centralita_media_*`);
//! - media is a client of sessions (`CENTRALITA_SESSIONS_ENDPOINT`), signing its own
//!   `channel` tokens with `CENTRALITA_JWT_PRIVATE_KEY_FILE`.
//!
//! # Layout
//! - `lib.rs`: [`SERVICE`], [`Settings`] / [`Config`], [`Roles`] and [`run`];
//! - `digital`: the digital role (its own layout is in its module docs);
//! - `admission`: the pure decision on an INVITE (number → tenant → trunk → status →
//!   quota);
//! - `announce`: queue announcements (the prompts, their composition, each waiting call's
//!   announcer);
//! - `sip`: the thin adapter over the SIP stack (`rsipstack`, pinned); nothing else names it;
//! - `front_door`: the request loop, each call's task, and the drain; its `control`: in-call
//!   control of a call (hold and resume from the contact, the phone or the trunk, DTMF);
//! - `in_call`: the pure reading of a re-INVITE's offer (hold or not, the answer) and of a
//!   SIP INFO's digit;
//! - `legs`: the calls' leg events on `<prefix>media.legs` (created, ringing, answered,
//!   held, resumed, DTMF, ended), never holding a call up;
//! - `offers`: the contacts-topic follower that rings agents' phones for offered calls;
//! - `rtp`: the media plane (SDP, ports, relay, DTMF, G.711 and music on hold);
//! - `sessions`: the gRPC client of sessions' `ContactService` and media's tokens;
//! - `recorder`: the voice role's recording fork streamed to recording's `IngestCall`
//!   (`CENTRALITA_RECORDING_ENDPOINT`), from the bridge to the call's end;
//! - `registrar`: agents' phones registering with digest authentication (HA1 digests from
//!   `CENTRALITA_SIP_SECRETS_DIR`, registrations in Redis: `CENTRALITA_REDIS_URL`);
//! - `metrics`, `error`: the crate's metrics and its one error type.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use centralita_platform::auth::Signer;
use centralita_platform::config::{ConfigError, Secret, ServiceArgs, Validate};
use centralita_platform::server::{Listeners, Runtime};
use centralita_platform::shutdown::Shutdown;

pub mod admission;
pub mod announce;
pub mod calls;
pub mod digital;
mod error;
pub mod flood;
mod front_door;
mod in_call;
pub mod legs;
pub mod metrics;
mod offers;
pub mod recorder;
pub mod registrar;
pub mod rtp;
mod sessions;
mod sip;
pub mod trunk_auth;

pub use error::Error;

pub const SERVICE: &str = "media";
/// The readiness check of the SIP listener.
pub const CHECK_SIP: &str = "sip";
/// The readiness check of the digital role (its store and the web chat listener).
pub const CHECK_DIGITAL: &str = "digital";

/// Which roles a process runs (`CENTRALITA_MEDIA_ROLES`): they deploy separately in
/// production (voice holds calls on its pod, digital is stateless) and together locally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub voice: bool,
    pub digital: bool,
}

impl std::str::FromStr for Roles {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut roles = Roles { voice: false, digital: false };
        for r in s.split(',').map(str::trim) {
            match r {
                "voice" => roles.voice = true,
                "digital" => roles.digital = true,
                _ => return Err(format!("unknown role `{r}` (voice, digital)")),
            }
        }
        Ok(roles)
    }
}

/// The hosts a provider's media may be downloaded from: its base URL's host and the
/// configured ones, lowercase (`digital::provider::media_url_allowed`).
fn media_hosts(base_url: &str, configured: &[String]) -> Vec<String> {
    let base = base_url.parse::<http::Uri>().ok().and_then(|u| u.host().map(str::to_ascii_lowercase));
    base.into_iter().chain(configured.iter().map(|h| h.trim().to_ascii_lowercase())).filter(|h| !h.is_empty()).collect()
}

/// SMS settings of the digital role (`digital::sms`).
#[derive(Debug, Clone, clap::Args)]
pub struct SmsArgs {
    /// Directory where the tenants' auth-token Secrets are mounted: the token of a tenant's
    /// `spec.sms.authTokenSecret` is read from `{dir}/{secret}/authToken`.
    #[arg(long = "sms-secrets-dir", env = "CENTRALITA_SMS_SECRETS_DIR")]
    pub secrets_dir: Option<PathBuf>,
    /// Base URL of Twilio's REST API (tests point it at a local fake provider).
    #[arg(long = "twilio-base-url", env = "CENTRALITA_TWILIO_BASE_URL", default_value = "https://api.twilio.com")]
    pub twilio_base_url: String,
    /// Public base URL at which Twilio calls the webhooks (`https://hooks.example.com`): the
    /// signature covers the full URL. Without it, `http://` and the request's `Host`.
    #[arg(long = "sms-public-url", env = "CENTRALITA_SMS_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Attempts of one outbound SMS before it is `failed`.
    #[arg(long = "sms-send-attempts", env = "CENTRALITA_SMS_SEND_ATTEMPTS", default_value_t = 4)]
    pub send_attempts: u32,
    /// Wait after the first failed attempt, in milliseconds; doubled after each.
    #[arg(long = "sms-send-backoff-ms", env = "CENTRALITA_SMS_SEND_BACKOFF_MS", default_value_t = 500)]
    pub send_backoff_ms: u64,
    /// Hosts (comma-separated) an MMS's media may be downloaded from, besides the base URL's
    /// host (an entry starting with `.` takes every host of that domain): Twilio's media
    /// URLs redirect to its media storage. No other host is ever fetched (no SSRF).
    #[arg(
        id = "twilio_media_hosts",
        long = "twilio-media-hosts",
        env = "CENTRALITA_TWILIO_MEDIA_HOSTS",
        default_value = ".twilio.com,.twiliocdn.com,s3-external-1.amazonaws.com",
        value_delimiter = ','
    )]
    pub media_hosts: Vec<String>,
}

impl SmsArgs {
    pub fn settings(&self) -> digital::sms::SmsSettings {
        digital::sms::SmsSettings {
            secrets_dir: self.secrets_dir.clone(),
            base_url: self.twilio_base_url.clone(),
            public_url: self.public_url.clone(),
            media_hosts: media_hosts(&self.twilio_base_url, &self.media_hosts),
            attempts: self.send_attempts,
            backoff: std::time::Duration::from_millis(self.send_backoff_ms),
        }
    }
}

/// WhatsApp settings of the digital role (`digital::whatsapp`); sends retry as SMS do
/// (`CENTRALITA_SMS_SEND_ATTEMPTS`, `CENTRALITA_SMS_SEND_BACKOFF_MS`).
#[derive(Debug, Clone, clap::Args)]
pub struct WhatsAppArgs {
    /// Directory where the tenants' WhatsApp Secrets are mounted: `{dir}/{secretName}/` holds
    /// `appSecret`, `accessToken` and `verifyToken`.
    #[arg(id = "whatsapp_secrets_dir", long = "whatsapp-secrets-dir", env = "CENTRALITA_WHATSAPP_SECRETS_DIR")]
    pub secrets_dir: Option<PathBuf>,
    /// Base URL of Meta's Cloud API (tests point it at a local fake provider).
    #[arg(
        long = "whatsapp-base-url",
        env = "CENTRALITA_WHATSAPP_BASE_URL",
        default_value = "https://graph.facebook.com"
    )]
    pub base_url: String,
    /// The Graph API version in the send URL.
    #[arg(
        id = "whatsapp_api_version",
        long = "whatsapp-api-version",
        env = "CENTRALITA_WHATSAPP_API_VERSION",
        default_value = "v21.0"
    )]
    pub api_version: String,
    /// Hosts (comma-separated) a customer's media may be downloaded from, besides the base
    /// URL's host: Meta serves media from `lookaside.fbsbx.com`. No other host is ever
    /// fetched, whatever a media URL says (no SSRF).
    #[arg(
        id = "whatsapp_media_hosts",
        long = "whatsapp-media-hosts",
        env = "CENTRALITA_WHATSAPP_MEDIA_HOSTS",
        default_value = "lookaside.fbsbx.com",
        value_delimiter = ','
    )]
    pub media_hosts: Vec<String>,
}

impl WhatsAppArgs {
    pub fn settings(&self, sms: &SmsArgs) -> digital::whatsapp::WhatsAppSettings {
        digital::whatsapp::WhatsAppSettings {
            secrets_dir: self.secrets_dir.clone(),
            base_url: self.base_url.clone(),
            api_version: self.api_version.clone(),
            media_hosts: media_hosts(&self.base_url, &self.media_hosts),
            attempts: sms.send_attempts,
            backoff: std::time::Duration::from_millis(sms.send_backoff_ms),
        }
    }
}

/// Messenger and Instagram settings of the digital role (`digital::pages`); sends retry as
/// SMS do.
#[derive(Debug, Clone, clap::Args)]
pub struct MessengerArgs {
    /// Directory where the tenants' Messenger and Instagram Secrets are mounted:
    /// `{dir}/{secretName}/` holds `appSecret`, `pageAccessToken` and `verifyToken`.
    #[arg(id = "messenger_secrets_dir", long = "messenger-secrets-dir", env = "CENTRALITA_MESSENGER_SECRETS_DIR")]
    pub secrets_dir: Option<PathBuf>,
    /// Base URL of the Graph API the Send API is on (tests point it at a local fake).
    #[arg(
        id = "messenger_base_url",
        long = "messenger-base-url",
        env = "CENTRALITA_MESSENGER_BASE_URL",
        default_value = "https://graph.facebook.com"
    )]
    pub base_url: String,
    /// The Graph API version in the send URL.
    #[arg(
        id = "messenger_api_version",
        long = "messenger-api-version",
        env = "CENTRALITA_MESSENGER_API_VERSION",
        default_value = "v21.0"
    )]
    pub api_version: String,
    /// Hosts (comma-separated) customers' files may be downloaded from, besides the base
    /// URL's host; an entry starting with `.` takes every host of that domain. No other host
    /// is ever fetched, whatever a file's URL says (no SSRF).
    #[arg(
        id = "messenger_media_hosts",
        long = "messenger-media-hosts",
        env = "CENTRALITA_MESSENGER_MEDIA_HOSTS",
        default_value = ".fbcdn.net,.fbsbx.com,.cdninstagram.com",
        value_delimiter = ','
    )]
    pub media_hosts: Vec<String>,
}

impl MessengerArgs {
    pub fn settings(&self, sms: &SmsArgs) -> digital::pages::PagesSettings {
        digital::pages::PagesSettings {
            secrets_dir: self.secrets_dir.clone(),
            base_url: self.base_url.clone(),
            api_version: self.api_version.clone(),
            media_hosts: media_hosts(&self.base_url, &self.media_hosts),
            attempts: sms.send_attempts,
            backoff: std::time::Duration::from_millis(sms.send_backoff_ms),
        }
    }
}

/// Telegram settings of the digital role (`digital::telegram`); sends retry as SMS do.
#[derive(Debug, Clone, clap::Args)]
pub struct TelegramArgs {
    /// Directory where the tenants' Telegram Secrets are mounted: `{dir}/{secretName}/`
    /// holds `botToken` and `webhookSecret`.
    #[arg(id = "telegram_secrets_dir", long = "telegram-secrets-dir", env = "CENTRALITA_TELEGRAM_SECRETS_DIR")]
    pub secrets_dir: Option<PathBuf>,
    /// Base URL of the Bot API (tests point it at a local fake).
    #[arg(
        id = "telegram_base_url",
        long = "telegram-base-url",
        env = "CENTRALITA_TELEGRAM_BASE_URL",
        default_value = "https://api.telegram.org"
    )]
    pub base_url: String,
}

impl TelegramArgs {
    pub fn settings(&self, sms: &SmsArgs) -> digital::telegram::TelegramSettings {
        digital::telegram::TelegramSettings {
            secrets_dir: self.secrets_dir.clone(),
            base_url: self.base_url.clone(),
            attempts: sms.send_attempts,
            backoff: std::time::Duration::from_millis(sms.send_backoff_ms),
        }
    }
}

/// Email settings of the digital role (`digital::smtp`, `digital::email`).
#[derive(Debug, Clone, clap::Args)]
pub struct EmailArgs {
    /// Address of the inbound SMTP listener; unset: no inbound email (replies still go out).
    #[arg(long = "smtp-addr", env = "CENTRALITA_SMTP_ADDR")]
    pub smtp_addr: Option<SocketAddr>,
    /// The name the listener greets with.
    #[arg(long = "smtp-hostname", env = "CENTRALITA_SMTP_HOSTNAME", default_value = "centralita-media")]
    pub smtp_hostname: String,
    /// Largest message taken, in bytes (`552` above).
    #[arg(long = "smtp-max-message-bytes", env = "CENTRALITA_SMTP_MAX_MESSAGE_BYTES", default_value_t = 10 * 1024 * 1024)]
    pub smtp_max_message_bytes: usize,
    /// Most recipients of one message (`452` beyond).
    #[arg(long = "smtp-max-recipients", env = "CENTRALITA_SMTP_MAX_RECIPIENTS", default_value_t = 20)]
    pub smtp_max_recipients: usize,
    /// Most SMTP connections at once (`421` beyond).
    #[arg(long = "smtp-max-connections", env = "CENTRALITA_SMTP_MAX_CONNECTIONS", default_value_t = 200)]
    pub smtp_max_connections: usize,
    /// A connection silent this long is closed (`421`).
    #[arg(
        long = "smtp-idle-timeout",
        env = "CENTRALITA_SMTP_IDLE_TIMEOUT",
        default_value = "60s",
        value_parser = centralita_platform::config::parse_duration
    )]
    pub smtp_idle_timeout: std::time::Duration,
    /// Directory where the tenants' relay-credential Secrets are mounted: a tenant's
    /// `spec.email.relay.credentialsSecret` is read from `{dir}/{secret}/username` and `password`.
    #[arg(long = "email-secrets-dir", env = "CENTRALITA_EMAIL_SECRETS_DIR")]
    pub email_secrets_dir: Option<PathBuf>,
    /// Attempts of one outbound email before it is `failed`.
    #[arg(long = "email-send-attempts", env = "CENTRALITA_EMAIL_SEND_ATTEMPTS", default_value_t = 4)]
    pub email_send_attempts: u32,
    /// Wait after the first failed attempt, in milliseconds; doubled after each.
    #[arg(long = "email-send-backoff-ms", env = "CENTRALITA_EMAIL_SEND_BACKOFF_MS", default_value_t = 1000)]
    pub email_send_backoff_ms: u64,
}

impl EmailArgs {
    pub fn settings(&self) -> digital::email::EmailSettings {
        digital::email::EmailSettings {
            secrets_dir: self.email_secrets_dir.clone(),
            attempts: self.email_send_attempts,
            backoff: std::time::Duration::from_millis(self.email_send_backoff_ms),
            timeout: std::time::Duration::from_secs(30),
        }
    }

    pub fn limits(&self) -> digital::smtp::SmtpLimits {
        digital::smtp::SmtpLimits {
            max_message_bytes: self.smtp_max_message_bytes,
            max_recipients: self.smtp_max_recipients,
            max_connections: self.smtp_max_connections,
            idle: self.smtp_idle_timeout,
            ..digital::smtp::SmtpLimits::default()
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !(1024..=100 * 1024 * 1024).contains(&self.smtp_max_message_bytes) {
            return Err(ConfigError::new("CENTRALITA_SMTP_MAX_MESSAGE_BYTES", "must be between 1024 and 104857600"));
        }
        if !(1..=1000).contains(&self.smtp_max_recipients) {
            return Err(ConfigError::new("CENTRALITA_SMTP_MAX_RECIPIENTS", "must be between 1 and 1000"));
        }
        if !(1..=100_000).contains(&self.smtp_max_connections) {
            return Err(ConfigError::new("CENTRALITA_SMTP_MAX_CONNECTIONS", "must be between 1 and 100000"));
        }
        if self.smtp_idle_timeout.is_zero() {
            return Err(ConfigError::new("CENTRALITA_SMTP_IDLE_TIMEOUT", "must be more than zero"));
        }
        if self.smtp_hostname.is_empty()
            || !self.smtp_hostname.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        {
            return Err(ConfigError::new("CENTRALITA_SMTP_HOSTNAME", "must be a host name"));
        }
        if !(1..=10).contains(&self.email_send_attempts) {
            return Err(ConfigError::new("CENTRALITA_EMAIL_SEND_ATTEMPTS", "must be between 1 and 10"));
        }
        if self.email_send_backoff_ms > 60_000 {
            return Err(ConfigError::new("CENTRALITA_EMAIL_SEND_BACKOFF_MS", "must be at most 60000"));
        }
        Ok(())
    }
}

/// Media's own settings.
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// UDP and TCP address of the SIP front door.
    #[arg(long = "sip-addr", env = "CENTRALITA_SIP_ADDR", default_value = "127.0.0.1:5060")]
    pub sip_addr: SocketAddr,
    /// Address of SIP over TLS (trunks, SBCs and phones that speak `sips:`); unset: no TLS.
    /// Needs the certificate and key files.
    #[arg(long = "sip-tls-addr", env = "CENTRALITA_SIP_TLS_ADDR")]
    pub sip_tls_addr: Option<SocketAddr>,
    /// PEM file of the TLS certificate chain (watched: a rotated file is used without a
    /// restart).
    #[arg(long = "sip-tls-cert-file", env = "CENTRALITA_SIP_TLS_CERT_FILE")]
    pub sip_tls_cert_file: Option<PathBuf>,
    /// PEM file of the TLS private key.
    #[arg(long = "sip-tls-key-file", env = "CENTRALITA_SIP_TLS_KEY_FILE")]
    pub sip_tls_key_file: Option<PathBuf>,
    /// gRPC endpoint of sessions, `http://host:port`.
    #[arg(long = "sessions-endpoint", env = "CENTRALITA_SESSIONS_ENDPOINT", default_value = "http://127.0.0.1:50051")]
    pub sessions_endpoint: String,
    /// gRPC endpoint of CRM, `http://host:port`: the digital role records SMS opt-out and
    /// opt-in keywords in its consent ledger.
    #[arg(long = "crm-endpoint", env = "CENTRALITA_CRM_ENDPOINT", default_value = "http://127.0.0.1:50054")]
    pub crm_endpoint: String,
    /// gRPC endpoint of recording, `http://host:port`: the voice role streams the calls of
    /// tenants with `recording.voice: all` there (`IngestCall`), from the bridge to the end.
    #[arg(
        long = "recording-endpoint",
        env = "CENTRALITA_RECORDING_ENDPOINT",
        default_value = "http://127.0.0.1:50055"
    )]
    pub recording_endpoint: String,
    /// PEM file with the Ed25519 private key media signs its own `channel` tokens for
    /// sessions with (one per tenant, short-lived). Without it media cannot create
    /// contacts: SIP stays off and the `sip` readiness check says why.
    #[arg(long = "jwt-private-key-file", env = "CENTRALITA_JWT_PRIVATE_KEY_FILE")]
    pub jwt_private_key_file: Option<PathBuf>,
    /// The media plane of the voice role (RTP ports, address, timeout).
    #[command(flatten)]
    pub rtp: rtp::RtpSettings,
    /// The roles this process runs, comma-separated: `voice`, `digital`.
    #[arg(long = "roles", env = "CENTRALITA_MEDIA_ROLES", default_value = "voice,digital")]
    pub roles: Roles,
    /// HTTP address of the web chat front door (digital role).
    #[arg(long = "webchat-addr", env = "CENTRALITA_WEBCHAT_ADDR", default_value = "127.0.0.1:8480")]
    pub webchat_addr: SocketAddr,
    /// PostgreSQL URL of the conversations (schema `media`); the digital role needs it.
    #[arg(id = "database_url", value_name = "URL", long = "database-url", env = "CENTRALITA_DATABASE_URL")]
    pub database_url: Option<Secret<String>>,
    /// Maximum pooled PostgreSQL connections (digital role).
    #[arg(long = "database-pool-size", env = "CENTRALITA_DATABASE_POOL_SIZE", default_value_t = 16)]
    pub database_pool_size: usize,
    /// SMS through Twilio (digital role).
    #[command(flatten)]
    pub sms: SmsArgs,
    /// WhatsApp through Meta's Cloud API (digital role).
    #[command(flatten)]
    pub whatsapp: WhatsAppArgs,
    /// Telegram through the Bot API (digital role).
    #[command(flatten)]
    pub telegram: TelegramArgs,
    #[command(flatten)]
    pub messenger: MessengerArgs,
    /// Email: the inbound SMTP listener and replies through the tenants' relays (digital role).
    #[command(flatten)]
    pub email: EmailArgs,
    /// Redis URL, `redis://[:password@]host:port[/db]`: the registrations of agents' phones
    /// (voice role). Without it phones cannot register (REGISTER gets `405`).
    #[arg(id = "redis_url", value_name = "URL", long = "redis-url", env = "CENTRALITA_REDIS_URL")]
    pub redis_url: Option<Secret<String>>,
    /// The registrar of agents' phones (voice role).
    #[command(flatten)]
    pub registrar: registrar::RegistrarArgs,
    /// The registry of the calls each voice replica carries, so a replica's crash leaves
    /// no contact open (voice role, with Redis).
    #[command(flatten)]
    pub calls: calls::CallsArgs,
    /// How long the voice role's calls in progress may go on after SIGTERM (new calls get
    /// `503` meanwhile) before those left are hung up (BYE to both sides, contact ended
    /// `drained`). Unset: half of `CENTRALITA_SHUTDOWN_TIMEOUT`. It must leave at least
    /// [`DRAIN_MARGIN`] of the shutdown timeout, for ending the calls left and the rest of
    /// the shutdown.
    #[arg(
        long = "sip-drain",
        env = "CENTRALITA_SIP_DRAIN",
        value_parser = centralita_platform::config::parse_duration
    )]
    pub sip_drain: Option<std::time::Duration>,
    /// INVITE flood limiting per source address (voice role).
    #[command(flatten)]
    pub flood: flood::FloodArgs,
    /// How often the digital role's retention sweeper deletes the conversations whose last
    /// activity is older than their tenant's `dataRetentionDays` (`digital::retention`).
    #[arg(
        long = "conversation-sweep-interval",
        env = "CENTRALITA_MEDIA_SWEEP_INTERVAL",
        default_value = "1h",
        value_parser = centralita_platform::config::parse_duration
    )]
    pub sweep_interval: std::time::Duration,
}

impl Settings {
    /// SIP over TLS, when its address is set (validated: with both files).
    pub fn sip_tls(&self) -> Option<sip::TlsSettings> {
        match (self.sip_tls_addr, &self.sip_tls_cert_file, &self.sip_tls_key_file) {
            (Some(addr), Some(cert), Some(key)) => {
                Some(sip::TlsSettings { addr, cert_file: cert.clone(), key_file: key.clone() })
            }
            _ => None,
        }
    }
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), ConfigError> {
        match (self.sip_tls_addr.is_some(), self.sip_tls_cert_file.is_some(), self.sip_tls_key_file.is_some()) {
            (false, false, false) | (true, true, true) => {}
            (true, _, _) => {
                return Err(ConfigError::new(
                    "CENTRALITA_SIP_TLS_ADDR",
                    "needs CENTRALITA_SIP_TLS_CERT_FILE and CENTRALITA_SIP_TLS_KEY_FILE",
                ))
            }
            (false, _, _) => {
                return Err(ConfigError::new(
                    "CENTRALITA_SIP_TLS_CERT_FILE",
                    "is for SIP over TLS: set CENTRALITA_SIP_TLS_ADDR (and both files)",
                ))
            }
        }
        if let Some(tls) = self.sip_tls_addr {
            if tls.port() == self.sip_addr.port() && tls.ip() == self.sip_addr.ip() {
                return Err(ConfigError::new(
                    "CENTRALITA_SIP_TLS_ADDR",
                    "must differ from CENTRALITA_SIP_ADDR (TCP takes it)",
                ));
            }
        }
        match self.sessions_endpoint.parse::<http::Uri>() {
            Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => {}
            _ => return Err(ConfigError::new("CENTRALITA_SESSIONS_ENDPOINT", "must be an http:// or https:// URL")),
        }
        match self.crm_endpoint.parse::<http::Uri>() {
            Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => {}
            _ => return Err(ConfigError::new("CENTRALITA_CRM_ENDPOINT", "must be an http:// or https:// URL")),
        }
        match self.recording_endpoint.parse::<http::Uri>() {
            Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => {}
            _ => return Err(ConfigError::new("CENTRALITA_RECORDING_ENDPOINT", "must be an http:// or https:// URL")),
        }
        if !self.roles.voice && !self.roles.digital {
            return Err(ConfigError::new("CENTRALITA_MEDIA_ROLES", "must name at least one role (voice, digital)"));
        }
        if self.roles.digital && self.database_url.is_none() {
            return Err(ConfigError::new(
                "CENTRALITA_DATABASE_URL",
                "the digital role needs it (or run only the voice role: CENTRALITA_MEDIA_ROLES=voice)",
            ));
        }
        if self.database_pool_size == 0 {
            return Err(ConfigError::new("CENTRALITA_DATABASE_POOL_SIZE", "must be at least 1"));
        }
        let url_ok = |s: &str| {
            s.parse::<http::Uri>().is_ok_and(|u| {
                matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() && u.query().is_none()
            })
        };
        if !url_ok(&self.sms.twilio_base_url) {
            return Err(ConfigError::new("CENTRALITA_TWILIO_BASE_URL", "must be an http:// or https:// URL"));
        }
        if !url_ok(&self.telegram.base_url) {
            return Err(ConfigError::new("CENTRALITA_TELEGRAM_BASE_URL", "must be an http:// or https:// URL"));
        }
        if !url_ok(&self.messenger.base_url) {
            return Err(ConfigError::new("CENTRALITA_MESSENGER_BASE_URL", "must be an http:// or https:// URL"));
        }
        if !url_ok(&self.whatsapp.base_url) {
            return Err(ConfigError::new("CENTRALITA_WHATSAPP_BASE_URL", "must be an http:// or https:// URL"));
        }
        for (version, var) in [
            (&self.whatsapp.api_version, "CENTRALITA_WHATSAPP_API_VERSION"),
            (&self.messenger.api_version, "CENTRALITA_MESSENGER_API_VERSION"),
        ] {
            if !(version.len() <= 16
                && version.starts_with('v')
                && version[1..].bytes().all(|b| b.is_ascii_digit() || b == b'.'))
                || version.len() < 2
            {
                return Err(ConfigError::new(var, "must be a Graph API version such as v21.0"));
            }
        }
        if self.sms.public_url.as_deref().is_some_and(|u| !url_ok(u)) {
            return Err(ConfigError::new("CENTRALITA_SMS_PUBLIC_URL", "must be an http:// or https:// URL"));
        }
        if !(1..=10).contains(&self.sms.send_attempts) {
            return Err(ConfigError::new("CENTRALITA_SMS_SEND_ATTEMPTS", "must be between 1 and 10"));
        }
        if self.sms.send_backoff_ms > 60_000 {
            return Err(ConfigError::new("CENTRALITA_SMS_SEND_BACKOFF_MS", "must be at most 60000"));
        }
        self.email.validate()?;
        if let Some(url) = &self.redis_url {
            centralita_platform::config::RedisConfig { url: url.clone() }.validate()?;
        }
        self.registrar.validate()?;
        self.calls.validate()?;
        self.flood.validate()?;
        if self.sweep_interval.is_zero() {
            return Err(ConfigError::new("CENTRALITA_MEDIA_SWEEP_INTERVAL", "must be more than zero"));
        }
        Ok(())
    }
}

/// Flags and `CENTRALITA_*` environment: the common ones plus [`Settings`].
pub type Config = ServiceArgs<Settings>;

/// What the shutdown deadline keeps after the voice drain window: the calls left are hung
/// up and their contacts ended (3 s at most), their recordings' ends sent (3 s), the SIP
/// stack and the registry stopped.
pub const DRAIN_MARGIN: std::time::Duration = std::time::Duration::from_secs(10);

/// The voice drain window: `drain` (`CENTRALITA_SIP_DRAIN`) or half of `shutdown`
/// (`CENTRALITA_SHUTDOWN_TIMEOUT`), leaving [`DRAIN_MARGIN`] of the shutdown.
pub fn drain_window(
    drain: Option<std::time::Duration>,
    shutdown: std::time::Duration,
) -> Result<std::time::Duration, ConfigError> {
    match drain {
        None => Ok(shutdown / 2),
        Some(d) if d + DRAIN_MARGIN <= shutdown => Ok(d),
        Some(_) => Err(ConfigError::new(
            "CENTRALITA_SIP_DRAIN",
            "must leave at least 10s of CENTRALITA_SHUTDOWN_TIMEOUT (raise that, and the pod's grace period)",
        )),
    }
}

/// Runs the service on `listeners` until `shutdown`, with the roles of
/// `CENTRALITA_MEDIA_ROLES`: voice (SIP on the configured address) and digital.
pub async fn run(config: Config, listeners: Listeners, shutdown: Shutdown) -> anyhow::Result<()> {
    let sip = match config.service.roles.voice {
        true => Some(sip::SipServer::bind(config.service.sip_addr, config.service.sip_tls().as_ref()).await?),
        false => None,
    };
    let webchat = match config.service.roles.digital {
        true => Some(bind_webchat(config.service.webchat_addr).await?),
        false => None,
    };
    run_roles(config, listeners, sip, webchat, shutdown).await
}

async fn bind_webchat(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for web chat on {addr} (CENTRALITA_WEBCHAT_ADDR): {e}"))
}

/// The voice role alone, with SIP listening on `sip_addr` (port 0 picks one); returns the
/// SIP address taken and the service's future (tests).
pub async fn start(
    mut config: Config,
    listeners: Listeners,
    sip_addr: SocketAddr,
    shutdown: Shutdown,
) -> anyhow::Result<(SocketAddr, impl std::future::Future<Output = anyhow::Result<()>>)> {
    config.service.roles = Roles { voice: true, digital: false };
    let sip = sip::SipServer::bind(sip_addr, config.service.sip_tls().as_ref()).await?;
    Ok((sip.local_addr(), run_roles(config, listeners, Some(sip), None, shutdown)))
}

/// The digital role alone, with web chat on `webchat_addr` (port 0 picks one); returns the
/// web chat address taken and the service's future (tests).
pub async fn start_digital(
    mut config: Config,
    listeners: Listeners,
    webchat_addr: SocketAddr,
    shutdown: Shutdown,
) -> anyhow::Result<(SocketAddr, impl std::future::Future<Output = anyhow::Result<()>>)> {
    config.service.roles = Roles { voice: false, digital: true };
    let webchat = bind_webchat(webchat_addr).await?;
    Ok((webchat.local_addr()?, run_roles(config, listeners, None, Some(webchat), shutdown)))
}

async fn run_roles(
    config: Config,
    listeners: Listeners,
    sip: Option<sip::SipServer>,
    webchat: Option<tokio::net::TcpListener>,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let auth = &config.common.auth;
    let signer = match &config.service.jwt_private_key_file {
        Some(path) => Some(
            Signer::from_file(path, &auth.issuer, &auth.audience)
                .map_err(|m| ConfigError::new("CENTRALITA_JWT_PRIVATE_KEY_FILE", m))?,
        ),
        None => None,
    };
    let mut runtime = Runtime::new(SERVICE, &config.common, shutdown)?;
    let mut topics = vec![runtime.topics.contacts()];
    if sip.is_some() {
        topics.push(runtime.topics.name(legs::TOPIC_BASE));
    }
    if webchat.is_some() {
        topics.push(runtime.topics.name(digital::store::TOPIC_BASE));
    }
    runtime.with_topics(&topics);
    let mut routes = tonic::service::RoutesBuilder::default();
    if let Some(webchat) = webchat {
        digital::start(&mut runtime, &config, signer.clone(), webchat, &mut routes)?;
    }
    if let Some(sip) = sip {
        start_voice(&mut runtime, &config, signer, sip)?;
    }
    runtime.serve(listeners, routes).await
}

/// The voice role: the SIP front door on `sip`.
fn start_voice(
    runtime: &mut Runtime,
    config: &Config,
    signer: Option<Signer>,
    sip: sip::SipServer,
) -> anyhow::Result<()> {
    let metrics = Arc::new(metrics::Metrics::register(&runtime.metrics));
    runtime.readiness.register(CHECK_SIP);
    let Some(signer) = signer else {
        runtime.readiness.set(CHECK_SIP, false, "CENTRALITA_JWT_PRIVATE_KEY_FILE is not set: no contacts, SIP off");
        drop(sip);
        return Ok(());
    };
    let instance = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| SERVICE.to_owned());
    let sessions = Arc::new(sessions::Sessions::new(
        &config.service.sessions_endpoint,
        runtime.tls.as_ref(),
        signer,
        instance.clone(),
    )?);

    let local = sip.local_addr();
    let tls = sip.tls_addr();
    let dialer = sip.dialer();
    let (requests, stopper) = sip.start();
    let listening = match tls {
        Some(t) => format!("listening on {local} (udp, tcp) and {t} (tls)"),
        None => format!("listening on {local} (udp, tcp)"),
    };
    runtime.readiness.set(CHECK_SIP, true, listening);
    tracing::info!(sip_addr = %local, sip_tls_addr = ?tls, "SIP listening");
    let media = rtp::MediaPlane::new(&config.service.rtp, local.ip())?;
    let offers = offers::follow(runtime, config, &instance)?;
    let recorder = Arc::new(recorder::Recorder::new(
        &config.service.recording_endpoint,
        runtime.tls.as_ref(),
        sessions.clone(),
        metrics.clone(),
    )?);
    // The registrar of agents' phones, with its registrations in Redis (a `redis` readiness
    // check follows it).
    let redis = config
        .service
        .redis_url
        .as_ref()
        .map(|url| runtime.redis(&centralita_platform::config::RedisConfig { url: url.clone() }));
    let registrar = redis.clone().map(|redis| {
        Arc::new(
            registrar::Registrar::new(runtime.registry.clone(), redis, &config.service.registrar, metrics.clone())
                .reporting_to(sessions.clone()),
        )
    });
    // The calls this process carries, written down under its lease; it also ends the calls
    // of replicas that died (`calls`). The replica's stable name: the pod's (group
    // instance id locally, else the host name).
    let carried = redis.map(|redis| {
        let replica = config.common.kafka.group_instance_id.clone().unwrap_or_else(|| instance.clone());
        let me = calls::Incarnation::new(&replica);
        tracing::info!(incarnation = %me, "voice calls registry");
        let store = calls::Store::new(redis, &config.common.kafka.topic_prefix);
        let recovery = Arc::new(metrics::RecoveryMetrics::register(&runtime.metrics));
        Arc::new(calls::Carried::new(me, store, sessions.clone(), config.service.calls.clone(), recovery))
    });
    if carried.is_none() {
        tracing::warn!("CENTRALITA_REDIS_URL is not set: the calls of a replica that dies stay open in sessions");
    }
    // The calls' leg events, published through the platform's producer (`legs`).
    let producer =
        centralita_platform::bus::Producer::new(&config.common.kafka.brokers, Some(runtime.metrics.clone()))?;
    let leg_metrics = Arc::new(metrics::LegMetrics::register(&runtime.metrics));
    let (leg_events, publisher) = legs::LegEvents::start(producer, runtime.topics.name(legs::TOPIC_BASE), leg_metrics);
    runtime.spawn(publisher);
    let door = front_door::FrontDoor::new(runtime.registry.clone(), sessions, metrics, media, offers, dialer, recorder)
        .with_registrar(registrar)
        .with_legs(leg_events)
        .with_calls(carried.clone())
        .with_flood_limit(flood::FloodLimit::new(&config.service.flood));
    // The drain window for calls to end on their own; the rest of the deadline ends those left.
    let drain = drain_window(config.service.sip_drain, config.common.shutdown_timeout)?;
    let shutdown = runtime.shutdown.clone();
    let registry_stop = tokio_util::sync::CancellationToken::new();
    if let Some(carried) = &carried {
        runtime.spawn(carried.clone().run(registry_stop.clone()));
    }
    // The lease is renewed through the drain; once the front door has ended its calls the
    // registry lets go of this process's lease.
    runtime.spawn(async move {
        door.serve(requests, stopper, shutdown, drain).await;
        registry_stop.cancel();
        if let Some(carried) = carried {
            carried.retire().await;
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn configuration_contract() {
        centralita_platform::server::assert_config_contract::<super::Settings>(
            super::SERVICE,
            &["--database-url", "postgres://u@127.0.0.1/db"],
        );
    }

    #[test]
    fn the_drain_window_leaves_the_rest_of_the_shutdown_its_margin() {
        use std::time::Duration;
        let s = Duration::from_secs;
        assert_eq!(super::drain_window(None, s(270)).ok(), Some(s(135)));
        assert_eq!(super::drain_window(Some(s(240)), s(270)).ok(), Some(s(240)));
        assert_eq!(super::drain_window(Some(s(10)), s(20)).ok(), Some(s(10)));
        let refused = super::drain_window(Some(s(11)), s(20)).unwrap_err();
        assert!(refused.to_string().contains("CENTRALITA_SIP_DRAIN"), "{refused}");
    }

    #[test]
    fn roles_parse() {
        use super::Roles;
        assert_eq!("voice,digital".parse(), Ok(Roles { voice: true, digital: true }));
        assert_eq!(" digital ".parse(), Ok(Roles { voice: false, digital: true }));
        assert_eq!("voice".parse(), Ok(Roles { voice: true, digital: false }));
        assert!("voice,sms".parse::<Roles>().is_err());
    }
}

//! The `media` service (`centralita-media`): the channel adapters that turn customers'
//! interactions into contacts of sessions. Built so far: the **SIP front door** of the voice
//! role. An INVITE to a tenant's number from one of its trunks creates an inbound voice
//! contact in the number's queue (the caller's number as its identity) and rings; a CANCEL
//! ends the contact (abandoned). Not built yet: answering a call (SDP, RTP relay to an
//! agent's phone), queue treatment, the registrar for agents' phones, digest
//! authentication of trunks, in-call control, the digital channels.
//!
//! # What runs
//! - SIP on `CENTRALITA_SIP_ADDR` (UDP and TCP, one port);
//! - gRPC: health and reflection, and the tenant directory from the tenants topic;
//! - the admin port: `/livez`, `/readyz` (Kafka, the tenant set and the SIP listener),
//!   `/metrics` (the platform's and `centralita_media_*`);
//! - media is a client of sessions (`CENTRALITA_SESSIONS_ENDPOINT`), signing its own
//!   `channel` tokens with `CENTRALITA_JWT_PRIVATE_KEY_FILE`.
//!
//! # Layout
//! - `lib.rs`: [`SERVICE`], [`Settings`] / [`Config`] and [`run`];
//! - `admission`: the pure decision on an INVITE (number → tenant → trunk → status →
//!   quota);
//! - `sip`: the thin adapter over the SIP stack (`rsipstack`, pinned); nothing else names it;
//! - `front_door`: the request loop, each call's task, and the drain;
//! - `sessions`: the gRPC client of sessions' `ContactService` and media's tokens;
//! - `metrics`, `error`: the crate's metrics and its one error type.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use centralita_platform::auth::Signer;
use centralita_platform::config::{ConfigError, ServiceArgs, Validate};
use centralita_platform::server::{Listeners, Runtime};
use centralita_platform::shutdown::Shutdown;

pub mod admission;
mod error;
mod front_door;
pub mod metrics;
pub mod rtp;
mod sessions;
mod sip;

pub use error::Error;

pub const SERVICE: &str = "media";
/// The readiness check of the SIP listener.
pub const CHECK_SIP: &str = "sip";

/// Media's own settings.
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// UDP and TCP address of the SIP front door.
    #[arg(long = "sip-addr", env = "CENTRALITA_SIP_ADDR", default_value = "127.0.0.1:5060")]
    pub sip_addr: SocketAddr,
    /// gRPC endpoint of sessions, `http://host:port`.
    #[arg(long = "sessions-endpoint", env = "CENTRALITA_SESSIONS_ENDPOINT", default_value = "http://127.0.0.1:50051")]
    pub sessions_endpoint: String,
    /// PEM file with the Ed25519 private key media signs its own `channel` tokens for
    /// sessions with (one per tenant, short-lived). Without it media cannot create
    /// contacts: SIP stays off and the `sip` readiness check says why.
    #[arg(long = "jwt-private-key-file", env = "CENTRALITA_JWT_PRIVATE_KEY_FILE")]
    pub jwt_private_key_file: Option<PathBuf>,
    /// The media plane of the voice role (RTP ports, address, timeout).
    #[command(flatten)]
    pub rtp: rtp::RtpSettings,
}

impl Validate for Settings {
    fn validate(&self) -> Result<(), ConfigError> {
        match self.sessions_endpoint.parse::<http::Uri>() {
            Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => Ok(()),
            _ => Err(ConfigError::new("CENTRALITA_SESSIONS_ENDPOINT", "must be an http:// or https:// URL")),
        }
    }
}

/// Flags and `CENTRALITA_*` environment: the common ones plus [`Settings`].
pub type Config = ServiceArgs<Settings>;

/// Runs the service on `listeners` (and SIP on the configured address) until `shutdown`.
pub async fn run(config: Config, listeners: Listeners, shutdown: Shutdown) -> anyhow::Result<()> {
    let sip = sip::SipServer::bind(config.service.sip_addr).await?;
    run_with_sip(config, listeners, sip, shutdown).await
}

/// [`run`] with SIP listening on `sip_addr` (port 0 picks one); returns the SIP address
/// taken and the service's future (tests).
pub async fn start(
    config: Config,
    listeners: Listeners,
    sip_addr: SocketAddr,
    shutdown: Shutdown,
) -> anyhow::Result<(SocketAddr, impl std::future::Future<Output = anyhow::Result<()>>)> {
    let sip = sip::SipServer::bind(sip_addr).await?;
    Ok((sip.local_addr(), run_with_sip(config, listeners, sip, shutdown)))
}

async fn run_with_sip(
    config: Config,
    listeners: Listeners,
    sip: sip::SipServer,
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
    let topics = [runtime.topics.contacts()];
    runtime.with_topics(&topics);
    let metrics = Arc::new(metrics::Metrics::register(&runtime.metrics));
    runtime.readiness.register(CHECK_SIP);
    let Some(signer) = signer else {
        runtime.readiness.set(CHECK_SIP, false, "CENTRALITA_JWT_PRIVATE_KEY_FILE is not set: no contacts, SIP off");
        drop(sip);
        return runtime.serve(listeners, tonic::service::RoutesBuilder::default()).await;
    };
    let instance = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| SERVICE.to_owned());
    let sessions = Arc::new(sessions::Sessions::new(&config.service.sessions_endpoint, signer, instance)?);

    let local = sip.local_addr();
    let (requests, stopper) = sip.start();
    runtime.readiness.set(CHECK_SIP, true, format!("listening on {local} (udp, tcp)"));
    tracing::info!(sip_addr = %local, "SIP listening");
    let media = rtp::MediaPlane::new(&config.service.rtp, local.ip())?;
    let door = front_door::FrontDoor::new(runtime.registry.clone(), sessions, metrics, media);
    // Half the shutdown deadline for calls to end on their own; the rest ends those left.
    let drain = config.common.shutdown_timeout / 2;
    runtime.spawn(door.serve(requests, stopper, runtime.shutdown.clone(), drain));
    runtime.serve(listeners, tonic::service::RoutesBuilder::default()).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn configuration_contract() {
        centralita_platform::server::assert_config_contract::<super::Settings>(super::SERVICE, &[]);
    }
}

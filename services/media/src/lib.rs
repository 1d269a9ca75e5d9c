//! The `media` service (`centralita-media`). It is to own the channel adapters: voice over
//! SIP/RTP (IVR, bridging), web chat streams, and SMS, WhatsApp, social and email webhooks
//! and sends, turning each customer interaction into a contact of sessions. None of that is
//! built yet: today the crate owns no API, state or event of its own and runs only what
//! every service runs.
//!
//! # What runs today
//! - gRPC: health and reflection, and the tenant directory
//!   (`centralita.tenancy.v1.TenantService`) from the tenant set this replica consumed from
//!   the tenants topic;
//! - the admin port: `/livez`, `/readyz`, `/metrics` (the platform's metrics only);
//! - readiness: Kafka (the contacts topic is created at start-up if missing) and the tenant
//!   set. No Redis, no PostgreSQL.
//!
//! The chart already gives media a SIP Service (`<release>-media-sip`); nothing listens
//! behind it yet.
//!
//! # Layout
//! - `lib.rs`: [`SERVICE`], [`Config`] (the common flags and `CENTRALITA_*` environment;
//!   no settings of its own) and [`run`], which starts the platform [`Runtime`] with the
//!   contacts topic and no gRPC routes of its own; a unit test checks the configuration
//!   contract.
//! - `main.rs`: the thin `main`, `centralita_platform::server::main_with`.

use centralita_platform::config::{NoSettings, ServiceArgs};
use centralita_platform::server::{Listeners, Runtime};
use centralita_platform::shutdown::Shutdown;

pub const SERVICE: &str = "media";

/// Flags and `CENTRALITA_*` environment: the common ones plus this service's own.
pub type Config = ServiceArgs<NoSettings>;

/// Runs the service on `listeners` until `shutdown`.
pub async fn run(config: Config, listeners: Listeners, shutdown: Shutdown) -> anyhow::Result<()> {
    let mut runtime = Runtime::new(SERVICE, &config.common, shutdown)?;
    let topics = [runtime.topics.contacts()];
    runtime.with_topics(&topics);
    runtime.serve(listeners, tonic::service::RoutesBuilder::default()).await
}

#[cfg(test)]
mod tests {
    use centralita_platform::config::*;

    #[test]
    fn configuration_contract() {
        centralita_platform::server::assert_config_contract::<NoSettings>(super::SERVICE, &[]);
    }
}

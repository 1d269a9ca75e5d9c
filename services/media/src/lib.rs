//! The `media` service. It owns: Channel adapters: voice over SIP/RTP (IVR, bridging), webchat streams, SMS / WhatsApp / social / email webhooks and sends.
//!
//! Hot state: in-process. Durable state: Kafka events.
//!
//! # Layout
//! - [`Config`]: flags and `CENTRALITA_*` environment of this service.
//! - [`run`]: wires the service onto the platform [`Runtime`]: its topics, stores and gRPC
//!   APIs. Every API sits behind the platform's authenticator; tests call `run` on port 0.
//!
//! What is served today is the platform part: gRPC health and reflection, the tenant
//! directory (`centralita.tenancy.v1.TenantService`) from the tenant set this replica
//! consumed, the admin port, and readiness of the dependencies below.

use centralita_platform::config::{CommonConfig, ConfigError, Validate};
use centralita_platform::server::{Listeners, Runtime, ServiceConfig};
use centralita_platform::shutdown::Shutdown;

pub const SERVICE: &str = "media";

#[derive(Debug, clap::Parser)]
#[command(name = "centralita-media", version, about = "Centralita media service")]
pub struct Config {
    #[command(flatten)]
    pub common: CommonConfig,
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }
}

impl ServiceConfig for Config {
    fn common(&self) -> &CommonConfig {
        &self.common
    }
}

/// Runs the service on `listeners` until `shutdown`.
pub async fn run(config: Config, listeners: Listeners, shutdown: Shutdown) -> anyhow::Result<()> {
    let mut runtime = Runtime::new(SERVICE, &config.common, shutdown)?;
    let topics = [runtime.topics.contacts()];
    runtime.with_topics(&topics);

    runtime.serve(listeners, tonic::service::RoutesBuilder::default()).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn configuration_contract() {
        centralita_platform::server::assert_config_contract::<super::Config>(&[]);
    }
}

//! The `routing` service. It owns: The ACD: queues, routing profiles, skills and proficiency, priorities, overflow, omnichannel capacity, agent selection, offer timeouts, callbacks.
//!
//! Hot state: in-process per partition, snapshots in Redis. Durable state: Kafka events.
//!
//! # Layout
//! - [`Config`]: flags and `CENTRALITA_*` environment of this service.
//! - [`run`]: wires the service onto the platform [`Runtime`]: its topics, stores and gRPC
//!   APIs. Every API sits behind the platform's authenticator; tests call `run` on port 0.
//!
//! What is served today is the platform part: gRPC health and reflection, the tenant
//! directory (`centralita.tenancy.v1.TenantService`) from the tenant set this replica
//! consumed, the admin port, and readiness of the dependencies below.

pub mod core;

use centralita_platform::config::{RedisConfig, ServiceArgs};
use centralita_platform::server::{Listeners, Runtime};
use centralita_platform::shutdown::Shutdown;

pub const SERVICE: &str = "routing";

/// Flags and `CENTRALITA_*` environment: the common ones plus this service's own.
pub type Config = ServiceArgs<RedisConfig>;

/// Runs the service on `listeners` until `shutdown`.
pub async fn run(config: Config, listeners: Listeners, shutdown: Shutdown) -> anyhow::Result<()> {
    let mut runtime = Runtime::new(SERVICE, &config.common, shutdown)?;
    let topics = [runtime.topics.contacts(), runtime.topics.agents()];
    runtime.with_topics(&topics);
    let _redis = runtime.redis(&config.service);
    runtime.serve(listeners, tonic::service::RoutesBuilder::default()).await
}

#[cfg(test)]
mod tests {
    use centralita_platform::config::*;

    #[test]
    fn configuration_contract() {
        centralita_platform::server::assert_config_contract::<RedisConfig>(
            super::SERVICE,
            &["--redis-url", "redis://127.0.0.1:6379"],
        );
    }
}

//! The `routing` service. It owns: The ACD: queues, routing profiles, skills and proficiency, priorities, overflow, omnichannel capacity, agent selection, offer timeouts, callbacks.
//!
//! Hot state: in-process per partition, snapshots in Redis. Durable state: Kafka events.
//!
//! # Layout
//! - [`Config`]: flags and `CENTRALITA_*` environment of this service.
//! - [`run`]: wires the service onto the platform [`Runtime`]: its topics, stores and gRPC
//!   APIs. Every API sits behind the platform's authenticator; tests call `run` on port 0.
//! - [`core`]: the pure matching core, one [`core::Router`] per agent pool (its types are
//!   those of `centralita-routing-contract`, re-exported).
//! - [`engine`]: the Kafka stream processor over the routing input log, one router per
//!   partition, snapshots in Redis.
//! - [`metrics`]: routing's domain metrics (`centralita_routing_*`: inputs by kind and
//!   outcome, decisions by kind, queued contacts by channel, ready agents, owned partitions,
//!   snapshots written), recorded by the engine and registered in the runtime's registry.
//!
//! What runs: the routing [`engine`] plus health, reflection, the tenant directory and the
//! admin port. What the service shares with its clients (the routing types, their protobuf
//! form, the routing logs' topics and keys) is the `centralita-routing-contract` crate, so
//! that no client depends on this one.

pub mod core;
pub mod engine;
pub mod metrics;

use std::sync::Arc;
use std::time::Duration;

use centralita_platform::bus::Producer;
use centralita_platform::config::{parse_duration, ConfigError, RedisConfig, ServiceArgs, Validate};
use centralita_platform::server::{Listeners, Runtime};
use centralita_platform::shutdown::Shutdown;
use centralita_routing_contract::{decision_topic, input_topic};

pub const SERVICE: &str = "routing";

/// This service's own settings.
#[derive(Debug, Clone, clap::Args)]
pub struct RoutingSettings {
    #[command(flatten)]
    pub redis: RedisConfig,
    /// How often time advances in the routing log (relaxation steps, maximum waits).
    #[arg(long = "routing-tick", env = "CENTRALITA_ROUTING_TICK", default_value = "250ms", value_parser = parse_duration)]
    pub tick: Duration,
    /// How often each partition's state is snapshotted to Redis (and offsets committed).
    #[arg(long = "routing-snapshot-every", env = "CENTRALITA_ROUTING_SNAPSHOT_EVERY", default_value = "2s", value_parser = parse_duration)]
    pub snapshot_every: Duration,
}

impl Validate for RoutingSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        self.redis.validate()?;
        if !(Duration::from_millis(10)..=Duration::from_secs(10)).contains(&self.tick) {
            return Err(ConfigError::new("CENTRALITA_ROUTING_TICK", "must be between 10ms and 10s"));
        }
        if !(Duration::from_millis(100)..=Duration::from_secs(600)).contains(&self.snapshot_every) {
            return Err(ConfigError::new("CENTRALITA_ROUTING_SNAPSHOT_EVERY", "must be between 100ms and 600s"));
        }
        Ok(())
    }
}

/// Flags and `CENTRALITA_*` environment: the common ones plus this service's own.
pub type Config = ServiceArgs<RoutingSettings>;

/// Runs the service on `listeners` until `shutdown`.
pub async fn run(config: Config, listeners: Listeners, shutdown: Shutdown) -> anyhow::Result<()> {
    let mut runtime = Runtime::new(SERVICE, &config.common, shutdown)?;
    let (inputs, decisions) = (input_topic(&runtime.topics), decision_topic(&runtime.topics));
    runtime.with_topics(&[inputs.clone(), decisions.clone()]);
    let redis = runtime.redis(&config.service.redis);
    let producer = Arc::new(Producer::new(&config.common.kafka.brokers, Some(runtime.metrics.clone()))?);
    let settings = engine::EngineSettings {
        brokers: config.common.kafka.brokers.clone(),
        group: format!("{}routing", config.common.kafka.topic_prefix),
        input_topic: inputs,
        decision_topic: decisions,
        tick: config.service.tick,
        snapshot_every: config.service.snapshot_every,
        group_instance_id: config.common.kafka.group_instance_id.clone(),
        fetch_wait: config.common.kafka.fetch_wait_low_latency(),
        metrics: Some(runtime.metrics.clone()),
        domain_metrics: Arc::new(metrics::Metrics::register(&runtime.metrics)),
    };
    runtime.spawn(engine::run(settings, redis, producer, runtime.shutdown.clone()));
    runtime.serve(listeners, tonic::service::RoutesBuilder::default()).await
}

#[cfg(test)]
mod tests {

    #[test]
    fn configuration_contract() {
        centralita_platform::server::assert_config_contract::<super::RoutingSettings>(
            super::SERVICE,
            &["--redis-url", "redis://127.0.0.1:6379"],
        );
    }
}

//! The `sessions` service. It owns: contact (interaction) lifecycle, agent sign-in,
//! presence and states, offers streamed to agent frontends, transfers, holds, consults and
//! conferences.
//!
//! Hot state: Redis. Durable state: Kafka events (contacts, agents topics).
//!
//! # Layout
//! - [`Config`]: flags and `CENTRALITA_*` environment of this service.
//! - [`run`]: wires the service onto the platform [`Runtime`]: its topics, stores and gRPC
//!   APIs. Every API sits behind the platform's authenticator; tests call `run` on port 0.
//! - [`core`]: the contact core, pure: domain types and one function per command or input,
//!   each giving the record to write and its effects, or a refusal.
//! - [`wire`]: the core's types to and from protobuf (API, events, stored records).
//! - [`api`]: the gRPC adapters `ContactService` and `AgentService` (authorize, convert,
//!   load, call the core, answer); the one place refusals become statuses.
//! - [`engine`]: load, apply a core function, compare-and-set the record with its effects,
//!   carry the effects out (and sweep what a dead writer left).
//! - [`outbox`]: the stored form of effects (the internal `OutboxEntry`, built from
//!   `proto/` by this crate's build script).
//! - [`store`]: every Redis access: records, outboxes, timers, indexes, notices.
//! - [`decisions`]: routing's decisions (offer, overflow, time-out) applied to contacts.
//! - [`erasure`]: CRM's customer erasures carried out on contact records, each reported
//!   done on the customers topic.
//! - [`timers`]: offer expiry (RONA), end of after-contact work, presence lapse.
//! - [`streams`]: agents' event streams and presence, fanned out over Redis pub/sub.
//! - [`pools`]: which agent pool (router) a tenant or agent belongs to.
//! - [`metrics`]: sessions' domain metrics.

pub mod api;
pub mod core;
pub mod decisions;
pub mod engine;
pub mod erasure;
pub mod metrics;
pub mod outbox;
pub mod pools;
pub mod store;
pub mod streams;
pub mod timers;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use centralita_platform::auth::Authenticated;
use centralita_platform::bus::{Consumer, ConsumerSettings, Producer, FETCH_WAIT_DEFAULT};
use centralita_platform::cache::RedisDedupe;
use centralita_platform::config::{parse_duration, ConfigError, RedisConfig, ServiceArgs, Validate};
use centralita_platform::server::{Listeners, Runtime};
use centralita_platform::shutdown::Shutdown;
use centralita_proto::sessions::v1::agent_service_server::AgentServiceServer;
use centralita_proto::sessions::v1::contact_service_server::ContactServiceServer;
use centralita_routing_contract::{decision_topic, input_topic};

pub const SERVICE: &str = "sessions";

/// This service's own settings.
#[derive(Debug, Clone, clap::Args)]
pub struct SessionsSettings {
    #[command(flatten)]
    pub redis: RedisConfig,
    /// How long a signed-in agent that had an event stream open may be without one (the
    /// frontend's presence) before it is made away as `disconnected` and the offers it
    /// holds go back to their queues; `0s` turns disconnect detection off.
    #[arg(long = "presence-grace", env = "CENTRALITA_PRESENCE_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub presence_grace: Duration,
}

impl Validate for SessionsSettings {
    fn validate(&self) -> Result<(), ConfigError> {
        self.redis.validate()?;
        if !self.presence_grace.is_zero()
            && !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&self.presence_grace)
        {
            return Err(ConfigError::new("CENTRALITA_PRESENCE_GRACE", "must be 0s (off) or between 1s and 1h"));
        }
        Ok(())
    }
}

/// Flags and `CENTRALITA_*` environment: the common ones plus this service's own.
pub type Config = ServiceArgs<SessionsSettings>;

/// How long consumed decision and erasure ids are remembered for deduplication.
const DEDUPE_TTL: Duration = Duration::from_secs(24 * 3600);

/// Runs the service on `listeners` until `shutdown`.
pub async fn run(config: Config, listeners: Listeners, shutdown: Shutdown) -> anyhow::Result<()> {
    let mut runtime = Runtime::new(SERVICE, &config.common, shutdown)?;
    let decisions = decision_topic(&runtime.topics);
    let topics = [
        runtime.topics.contacts(),
        runtime.topics.agents(),
        input_topic(&runtime.topics),
        decisions.clone(),
        runtime.topics.customers(),
    ];
    runtime.with_topics(&topics);
    let redis = runtime.redis(&config.service.redis);
    let producer = Arc::new(Producer::new(&config.common.kafka.brokers, Some(runtime.metrics.clone()))?);
    let prefix = &config.common.kafka.topic_prefix;
    let store = store::Store::new(redis.clone(), config.service.redis.url.expose().clone(), store::Keys::new(prefix));
    // The API and the decision consumer answer once a write and its outbox are stored; the
    // side effects (events, routing inputs, stream notices) are carried out right after, in
    // order, without the caller waiting for the broker's acknowledgements.
    let engine = engine::Engine {
        store: store.clone(),
        producer,
        registry: runtime.registry.clone(),
        topics: runtime.topics.clone(),
        notices: streams::Notices::default(),
        metrics: Arc::new(metrics::Metrics::register(&runtime.metrics)),
        clock: engine::Clock::System,
        detach_effects: true,
        presence_grace: config.service.presence_grace,
    };
    let consumer = Consumer::new(
        ConsumerSettings {
            brokers: config.common.kafka.brokers.clone(),
            group_id: format!("{prefix}sessions.decisions"),
            topics: vec![decisions],
            fetch_wait: config.common.kafka.fetch_wait_low_latency(),
            group_instance_id: config.common.kafka.group_instance_id.clone(),
        },
        decisions::DecisionHandler { engine: engine.clone() },
        RedisDedupe::new(redis.clone(), DEDUPE_TTL),
        Some(runtime.metrics.clone()),
    )?;
    let sd = runtime.shutdown.clone();
    runtime.spawn(async move {
        if let Err(e) = consumer.run(sd).await {
            tracing::error!(error = %e, "routing decision consumer stopped");
        }
    });
    // Timers, the outbox sweep and erasures wait for nothing: their effects are carried out
    // inline.
    let background = engine::Engine { detach_effects: false, ..engine.clone() };
    // CRM's erasures: off the customer's path, so the default fetch wait.
    let erasures = Consumer::new(
        ConsumerSettings {
            brokers: config.common.kafka.brokers.clone(),
            group_id: format!("{prefix}sessions.erasures"),
            topics: vec![runtime.topics.customers()],
            fetch_wait: FETCH_WAIT_DEFAULT,
            // Its own static member id, as reporting's second consumer has: one id per
            // consumer of the process, whatever group it joins.
            group_instance_id: config.common.kafka.group_instance_id.as_ref().map(|id| format!("{id}-erasures")),
        },
        erasure::ErasureHandler { engine: background.clone() },
        RedisDedupe::new(redis, DEDUPE_TTL),
        Some(runtime.metrics.clone()),
    )?;
    let sd = runtime.shutdown.clone();
    runtime.spawn(async move {
        if let Err(e) = erasures.run(sd).await {
            tracing::error!(error = %e, "customer erasure consumer stopped");
        }
    });
    runtime.spawn(timers::run(background, Duration::from_millis(200), runtime.shutdown.clone()));
    runtime.spawn(streams::fan_out(engine.clone(), runtime.shutdown.clone()));
    let api = api::Api { pools: pools::Pools::new(store, runtime.registry.clone()), engine };
    runtime.with_health_name("centralita.sessions.v1.ContactService");
    runtime.with_health_name("centralita.sessions.v1.AgentService");
    let auth = runtime.authenticator.clone();
    let mut routes = tonic::service::RoutesBuilder::default();
    routes.add_service(Authenticated::new(ContactServiceServer::new(api.clone()), auth.clone()));
    routes.add_service(Authenticated::new(AgentServiceServer::new(api), auth));
    runtime.serve(listeners, routes).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_contract() {
        centralita_platform::server::assert_config_contract::<SessionsSettings>(
            SERVICE,
            &["--redis-url", "redis://127.0.0.1:6379"],
        );
    }

    #[test]
    fn presence_grace_is_off_or_between_a_second_and_an_hour() {
        let parse = |grace: &str| {
            let args = ["s", "--jwt-public-key-file", "/dev/null", "--redis-url", "redis://127.0.0.1:6379"];
            let mut args: Vec<&str> = args.to_vec();
            args.extend(["--presence-grace", grace]);
            centralita_platform::server::parse_args::<SessionsSettings>(SERVICE, args).map_err(|e| e.to_string())
        };
        assert_eq!(parse("30s").unwrap().service.presence_grace, Duration::from_secs(30));
        assert!(parse("0s").unwrap().validate().is_ok());
        for bad in ["500ms", "2h"] {
            let e = parse(bad).unwrap().validate().unwrap_err().to_string();
            assert!(e.contains("CENTRALITA_PRESENCE_GRACE"), "{bad}: {e}");
        }
    }
}

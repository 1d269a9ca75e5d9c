//! Topic names of an installation, and their creation at start-up.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;

use super::client::client_config;
use crate::error::Error;

/// Topic names of one installation: every name carries the configured prefix.
#[derive(Debug, Clone)]
pub struct Topics {
    prefix: String,
}

impl Topics {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into() }
    }
    /// Compacted, keyed by tenant id: the current configuration of every tenant.
    pub fn tenants(&self) -> String {
        self.name("tenants")
    }
    /// Contact (interaction) lifecycle events, keyed by contact id.
    pub fn contacts(&self) -> String {
        self.name("contacts")
    }
    /// Agent state events, keyed by agent id.
    pub fn agents(&self) -> String {
        self.name("agents")
    }
    /// Daily usage records for billing, keyed by tenant id.
    pub fn usage(&self) -> String {
        self.name("usage")
    }
    /// Customer lifecycle events of the CRM (erasures), keyed by customer id.
    pub fn customers(&self) -> String {
        self.name("customers")
    }
    pub fn name(&self, base: &str) -> String {
        format!("{}{base}", self.prefix)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub compacted: bool,
}

/// Creates the topics that do not exist yet; an existing topic is left as it is.
pub async fn ensure_topics(brokers: &str, replication: i32, specs: &[TopicSpec]) -> Result<(), Error> {
    let admin: AdminClient<DefaultClientContext> = client_config(brokers).create()?;
    let new: Vec<NewTopic<'_>> = specs
        .iter()
        .map(|s| {
            let t = NewTopic::new(&s.name, s.partitions, TopicReplication::Fixed(replication));
            if s.compacted {
                t.set("cleanup.policy", "compact")
            } else {
                t
            }
        })
        .collect();
    let opts = AdminOptions::new()
        .request_timeout(Some(Timeout::After(Duration::from_secs(5))))
        .operation_timeout(Some(Timeout::After(Duration::from_secs(5))));
    let results = admin.create_topics(&new, &opts).await?;
    for r in results {
        match r {
            Ok(name) => tracing::info!(topic = %name, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => return Err(Error::Unavailable(format!("kafka topic {name} ({code})"))),
        }
    }
    Ok(())
}

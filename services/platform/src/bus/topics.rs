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

/// Creates the topics that do not exist yet; an existing topic is left as it is. Event
/// topics get the broker's default retention (see [`ensure_topics_retained`]).
pub async fn ensure_topics(brokers: &str, replication: i32, specs: &[TopicSpec]) -> Result<(), Error> {
    ensure_topics_retained(brokers, replication, None, specs).await
}

/// The topic configuration of a new topic: compacted topics (the tenants' current
/// configuration, one record per tenant) keep their latest records; event topics are
/// `cleanup.policy=delete` with `retention.ms` when `retention` is given, so that no event
/// outlives it (issue 23: the topics cannot be erased per person; with the events carrying
/// references only, what they still hold — ids, agents' names, redacted erasure reasons —
/// goes with age). The policy is set explicitly: tansu deletes by age only on topics that
/// name `delete` (`policy_delete.sql` of its storage).
pub fn topic_config(spec: &TopicSpec, retention: Option<Duration>) -> Vec<(&'static str, String)> {
    if spec.compacted {
        return vec![("cleanup.policy", "compact".into())];
    }
    match retention {
        Some(r) => vec![("cleanup.policy", "delete".into()), ("retention.ms", r.as_millis().to_string())],
        None => Vec::new(),
    }
}

/// [`ensure_topics`], event topics created with `retention` (`retention.ms`). An existing
/// topic keeps its configuration: the operator changes it with the cluster's tooling (the
/// docs say how); tansu 0.6 answers only the incremental form of AlterConfigs, which
/// librdkafka's Rust binding does not offer.
pub async fn ensure_topics_retained(
    brokers: &str,
    replication: i32,
    retention: Option<Duration>,
    specs: &[TopicSpec],
) -> Result<(), Error> {
    let admin: AdminClient<DefaultClientContext> = client_config(brokers).create()?;
    let configs: Vec<Vec<(&'static str, String)>> = specs.iter().map(|s| topic_config(s, retention)).collect();
    let new: Vec<NewTopic<'_>> = specs
        .iter()
        .zip(&configs)
        .map(|(s, config)| {
            config
                .iter()
                .fold(NewTopic::new(&s.name, s.partitions, TopicReplication::Fixed(replication)), |t, (k, v)| {
                    t.set(k, v)
                })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_topics_get_the_retention_and_compacted_ones_keep_their_records() {
        let spec = |compacted| TopicSpec { name: "t".into(), partitions: 1, compacted };
        let week = Some(Duration::from_secs(7 * 86_400));
        assert_eq!(
            topic_config(&spec(false), week),
            vec![("cleanup.policy", "delete".to_owned()), ("retention.ms", "604800000".to_owned())]
        );
        assert_eq!(topic_config(&spec(true), week), vec![("cleanup.policy", "compact".to_owned())]);
        assert!(topic_config(&spec(false), None).is_empty());
    }
}

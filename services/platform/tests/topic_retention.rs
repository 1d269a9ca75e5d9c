//! Topic retention (issue 23): the event topics a service creates carry
//! `cleanup.policy=delete` and `retention.ms` from `CENTRALITA_KAFKA_RETENTION`, read back
//! from the real broker with DescribeConfigs; the compacted tenants topic keeps compaction
//! and no age limit; an existing topic is left as it was.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use centralita_platform::bus::{client_config, ensure_topics, ensure_topics_retained, TopicSpec};
use common::*;
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;

/// The configuration entries the broker reports for `topic`.
async fn configs(topic: &str) -> HashMap<String, String> {
    let admin: AdminClient<DefaultClientContext> = client_config(&brokers()).create().unwrap();
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(5)));
    let described = admin.describe_configs(&[ResourceSpecifier::Topic(topic)], &opts).await.unwrap();
    let resource = described.into_iter().next().unwrap().unwrap();
    resource.entries.into_iter().filter_map(|e| e.value.map(|v| (e.name, v))).collect()
}

#[tokio::test]
async fn event_topics_are_created_with_the_configured_retention_and_the_tenants_topic_compacted() {
    let events = unique("test.retention.events.");
    let tenants = unique("test.retention.tenants.");
    let specs = [
        TopicSpec { name: events.clone(), partitions: 2, compacted: false },
        TopicSpec { name: tenants.clone(), partitions: 1, compacted: true },
    ];
    ensure_topics_retained(&brokers(), 1, Some(Duration::from_secs(2 * 3600)), &specs).await.unwrap();
    let e = configs(&events).await;
    assert_eq!(e.get("cleanup.policy").map(String::as_str), Some("delete"), "{e:?}");
    assert_eq!(e.get("retention.ms").map(String::as_str), Some("7200000"), "{e:?}");
    let t = configs(&tenants).await;
    assert_eq!(t.get("cleanup.policy").map(String::as_str), Some("compact"), "{t:?}");
    assert!(!t.contains_key("retention.ms"), "the tenants topic keeps its latest records: {t:?}");

    // Created again with another retention: the existing topic is left as it is.
    ensure_topics_retained(&brokers(), 1, Some(Duration::from_secs(3600)), &specs).await.unwrap();
    assert_eq!(configs(&events).await.get("retention.ms").map(String::as_str), Some("7200000"));

    // Without a retention (tests, the CLI's tenants topic): nothing is set.
    let plain = unique("test.retention.plain.");
    ensure_topics(&brokers(), 1, &[TopicSpec { name: plain.clone(), partitions: 1, compacted: false }]).await.unwrap();
    assert!(!configs(&plain).await.contains_key("retention.ms"));
}

//! Keeps a [`TenantRegistry`] equal to the compacted tenants topic.
//!
//! Every replica needs every tenant, so this is not a consumer-group member: it assigns all
//! partitions of the topic from the beginning, reads up to the high watermarks it saw at
//! start (then the `tenants` readiness check passes) and keeps following new records.
//! Nothing is committed. Bad records are logged and skipped; a stale version never
//! replaces a newer one (see [`TenantRegistry::upsert`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use centralita_proto::tenancy::v1 as pb;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::bus::{client_config, Event};
use crate::error::Error;
use crate::health::Readiness;
use crate::metrics::{ConsumedLabel, Metrics, StatusLabel};
use crate::registry::TenantRegistry;
use crate::shutdown::Shutdown;
use crate::tenant::Tenant;

pub const CHECK: &str = "tenants";

#[derive(Debug, Clone)]
pub struct TenantFeed {
    pub brokers: String,
    pub topic: String,
    pub service: &'static str,
    pub registry: TenantRegistry,
    pub readiness: Readiness,
    pub metrics: Arc<Metrics>,
}

impl TenantFeed {
    /// Runs until shutdown, reconnecting with backoff.
    pub async fn run(self, shutdown: Shutdown) {
        self.readiness.register(CHECK);
        let mut backoff = Duration::from_millis(250);
        while !shutdown.is_triggered() {
            match self.follow(&shutdown).await {
                Ok(()) => return,
                Err(e) => {
                    self.readiness.set(CHECK, self.caught_up_before(), format!("tenant feed: {e}"));
                    tracing::warn!(error = %e, topic = %self.topic, "tenant feed failed; retrying");
                    tokio::select! {
                        _ = shutdown.wait() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Once caught up, the registry stays usable through a broker outage; the `kafka`
    /// check reports the outage itself.
    fn caught_up_before(&self) -> bool {
        self.readiness.report().checks.get(CHECK).is_some_and(|c| c.ok)
    }

    async fn follow(&self, shutdown: &Shutdown) -> Result<(), Error> {
        let group = format!("{}-tenant-feed-{}", self.service, uuid::Uuid::now_v7());
        let (consumer, highs) = open(&self.brokers, &self.topic, &group).await?;
        let mut pending = Pending::new(highs);
        let mut caught_up = self.caught_up_before();
        if pending.done() && !caught_up {
            self.mark_caught_up();
            caught_up = true;
        }
        loop {
            let msg = tokio::select! {
                _ = shutdown.wait() => return Ok(()),
                m = consumer.recv() => m,
            };
            let m = match msg {
                Ok(m) => m,
                Err(e) => {
                    tracing::debug!(error = %e, "tenant feed: consume error");
                    continue;
                }
            };
            self.apply(m.payload(), m.offset());
            if !caught_up && pending.read(m.partition(), m.offset()) {
                self.mark_caught_up();
                caught_up = true;
            }
        }
    }

    fn mark_caught_up(&self) {
        let n = self.registry.list().len();
        self.registry.mark_loaded();
        tracing::info!(tenants = n, topic = %self.topic, "tenant set loaded");
        self.readiness.set(CHECK, true, format!("{n} tenants loaded"));
    }

    fn apply(&self, payload: Option<&[u8]>, offset: i64) {
        let outcome = match self.decode(payload) {
            Ok(tenant) => {
                let id = tenant.id.clone();
                let status = tenant.status;
                if self.registry.upsert(tenant) {
                    tracing::info!(tenant = %id, ?status, offset, "tenant configuration applied");
                }
                "handled"
            }
            Err(e) => {
                tracing::warn!(error = %e, offset, topic = %self.topic, "skipping invalid tenant record");
                "malformed"
            }
        };
        self.metrics.bus_consumed.get_or_create(&ConsumedLabel { topic: self.topic.clone(), outcome }).inc();
        let (active, suspended) = self.registry.count_by_status();
        self.metrics.tenants_known.get_or_create(&StatusLabel { status: "active" }).set(active as i64);
        self.metrics.tenants_known.get_or_create(&StatusLabel { status: "suspended" }).set(suspended as i64);
    }

    fn decode(&self, payload: Option<&[u8]>) -> Result<Tenant, Error> {
        let event = Event::decode(payload.ok_or_else(|| Error::invalid("record", "is empty"))?)?;
        let tenant = Tenant::try_from(event.payload::<pb::Tenant>()?)?;
        if tenant.id != event.tenant {
            return Err(Error::invalid("tenant_id", "envelope and payload name different tenants"));
        }
        Ok(tenant)
    }
}

/// The partitions not yet read up to the high watermark seen at assignment.
struct Pending(BTreeMap<i32, i64>);

impl Pending {
    fn new(highs: BTreeMap<i32, i64>) -> Self {
        Pending(highs.into_iter().filter(|(_, high)| *high > 0).collect())
    }

    /// Notes that `offset` of `partition` was read; returns whether everything is read.
    fn read(&mut self, partition: i32, offset: i64) -> bool {
        if self.0.get(&partition).is_some_and(|high| offset + 1 >= *high) {
            self.0.remove(&partition);
        }
        self.done()
    }

    fn done(&self) -> bool {
        self.0.is_empty()
    }
}

/// A consumer assigned to every partition of `topic` from the beginning, and the high
/// watermark of each partition at the time of assignment.
async fn open(brokers: &str, topic: &str, group: &str) -> Result<(Arc<StreamConsumer>, BTreeMap<i32, i64>), Error> {
    let consumer: StreamConsumer = client_config(brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .create()?;
    let consumer = Arc::new(consumer);
    let (c, t) = (consumer.clone(), topic.to_owned());
    // Metadata and watermark calls block; keep them off the async workers.
    let highs: BTreeMap<i32, i64> = tokio::task::spawn_blocking(move || -> Result<_, Error> {
        let md = c.fetch_metadata(Some(&t), Duration::from_secs(3))?;
        let meta =
            md.topics().iter().find(|m| m.name() == t).ok_or_else(|| Error::Unavailable(format!("topic {t}")))?;
        if meta.error().is_some() || meta.partitions().is_empty() {
            return Err(Error::Unavailable(format!("topic {t} does not exist yet")));
        }
        let mut highs = BTreeMap::new();
        for p in meta.partitions() {
            let (_low, high) = c.fetch_watermarks(&t, p.id(), Duration::from_secs(3))?;
            highs.insert(p.id(), high);
        }
        Ok(highs)
    })
    .await
    .map_err(Error::internal)??;
    let mut tpl = TopicPartitionList::new();
    for p in highs.keys() {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    Ok((consumer, highs))
}

/// Reads the whole tenants topic once (up to its current end) into a fresh registry: how the
/// admin CLI sees the current tenant set. Invalid records are skipped with a warning.
pub async fn load_snapshot(brokers: &str, topic: &str, timeout: Duration) -> Result<TenantRegistry, Error> {
    let registry = TenantRegistry::new();
    let feed = TenantFeed {
        brokers: brokers.to_owned(),
        topic: topic.to_owned(),
        service: "cli",
        registry: registry.clone(),
        readiness: Readiness::new(),
        metrics: Arc::new(Metrics::new("cli")),
    };
    let (consumer, highs) = open(brokers, topic, &format!("cli-snapshot-{}", uuid::Uuid::now_v7())).await?;
    let mut pending = Pending::new(highs);
    let read = async {
        while !pending.done() {
            let m = consumer.recv().await?;
            feed.apply(m.payload(), m.offset());
            pending.read(m.partition(), m.offset());
        }
        Ok::<_, Error>(())
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| Error::Unavailable(format!("kafka (reading {topic} took longer than {timeout:?})")))??;
    Ok(registry)
}

#[cfg(test)]
mod tests {
    use super::Pending;

    #[test]
    fn caught_up_once_every_partition_reached_its_high_watermark() {
        let mut p = Pending::new([(0, 3), (1, 0), (2, 1)].into_iter().collect());
        assert!(!p.done(), "partition 1 is empty and needs nothing; 0 and 2 do");
        assert!(!p.read(0, 1));
        assert!(!p.read(2, 0) && !p.done());
        assert!(p.read(0, 2));
        assert!(Pending::new([(0, 0)].into_iter().collect()).done());
    }
}

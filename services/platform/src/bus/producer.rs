//! The idempotent producer, and what it writes beside the envelope (record headers).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::util::Timeout;

use super::client::client_config;
use super::event::Event;
use crate::error::Error;
use crate::metrics::{Metrics, TopicLabel};

/// Idempotent, `acks=all` producer.
#[derive(Clone)]
pub struct Producer {
    inner: FutureProducer,
    metrics: Option<Arc<Metrics>>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer").finish_non_exhaustive()
    }
}

impl Producer {
    pub fn new(brokers: &str, metrics: Option<Arc<Metrics>>) -> Result<Self, Error> {
        let inner: FutureProducer = client_config(brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "1")
            .set("message.timeout.ms", "30000")
            .create()?;
        Ok(Self { inner, metrics })
    }

    /// Publishes `event` under `key`; resolves once the broker acknowledged it.
    pub async fn publish(&self, topic: &str, key: &str, event: &Event) -> Result<(i32, i64), Error> {
        self.send(topic, None, key, event).await
    }

    /// Publishes to one partition, whatever the key hashes to (a stream processor writing
    /// into the partition it owns).
    pub async fn publish_to(&self, topic: &str, partition: i32, key: &str, event: &Event) -> Result<(i32, i64), Error> {
        self.send(topic, Some(partition), key, event).await
    }

    /// Hands `event` to the producer now (so events enqueued one after another keep their
    /// order per partition) and returns its delivery report, for callers that keep many in
    /// flight.
    pub fn enqueue(
        &self,
        topic: &str,
        key: &str,
        event: &Event,
    ) -> Result<impl Future<Output = Result<(i32, i64), Error>> + Send + 'static, Error> {
        let (value, headers) = envelope(event);
        let record = FutureRecord::to(topic).key(key).payload(&value).headers(headers);
        let delivery = self.inner.send_result(record).map_err(|(e, _)| Error::from(e))?;
        let (metrics, topic) = (self.metrics.clone(), topic.to_owned());
        Ok(async move {
            match delivery.await {
                Ok(Ok(d)) => {
                    count_published(metrics.as_deref(), topic);
                    Ok((d.partition, d.offset))
                }
                Ok(Err((e, _))) => Err(Error::from(e)),
                Err(_) => Err(Error::Unavailable("the producer was dropped".into())),
            }
        })
    }

    async fn send(&self, topic: &str, partition: Option<i32>, key: &str, event: &Event) -> Result<(i32, i64), Error> {
        let (value, headers) = envelope(event);
        let mut record = FutureRecord::to(topic).key(key).payload(&value).headers(headers);
        if let Some(p) = partition {
            record = record.partition(p);
        }
        let delivery =
            self.inner.send(record, Timeout::After(Duration::from_secs(30))).await.map_err(|(e, _)| Error::from(e))?;
        count_published(self.metrics.as_deref(), topic.to_owned());
        Ok((delivery.partition, delivery.offset))
    }

    pub fn flush(&self, timeout: Duration) -> Result<(), Error> {
        self.inner.flush(Timeout::After(timeout)).map_err(Error::from)
    }
}

/// The record value and headers of `event`: `ce_id`, `ce_type` and the trace context.
fn envelope(event: &Event) -> (Vec<u8>, OwnedHeaders) {
    let id = event.id.to_string();
    let mut headers = OwnedHeaders::new()
        .insert(Header { key: "ce_id", value: Some(id.as_str()) })
        .insert(Header { key: "ce_type", value: Some(event.type_name.as_str()) });
    for (k, v) in crate::telemetry::current_trace_headers() {
        headers = headers.insert(Header { key: &k, value: Some(v.as_str()) });
    }
    (event.encode(), headers)
}

fn count_published(metrics: Option<&Metrics>, topic: String) {
    if let Some(m) = metrics {
        m.bus_published.get_or_create(&TopicLabel { topic }).inc();
    }
}

//! The at-least-once, deduplicated consumer of one event at a time, and what every
//! consumer of the bus shares: settings, subscription, the final commit, decoding.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer as _, ConsumerContext, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Statistics};
use tracing::Instrument;

use super::client::{client_config, StaticMember};
use super::dedupe::Dedupe;
use super::event::Event;
use crate::error::Error;
use crate::metrics::{ConsumedLabel, Metrics};
use crate::shutdown::Shutdown;

/// Handles one event. Returning an error makes the consumer retry the same event later
/// (with backoff); it is never skipped.
pub trait Handler: Send + 'static {
    fn handle(&mut self, event: &Event) -> impl Future<Output = Result<(), Error>> + Send;
}

#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    pub brokers: String,
    pub group_id: String,
    pub topics: Vec<String>,
    /// Longest a fetch waits at the broker for new records: the floor of the consumer's
    /// latency when records trickle in (some brokers, tansu among them, hold a fetch that
    /// long). `KafkaConfig::fetch_wait_low_latency` for consumers on a customer's path.
    pub fetch_wait: Duration,
    /// Static membership (see `KafkaConfig::group_instance_id`).
    pub group_instance_id: Option<String>,
}

/// Fetch wait of everything else: fewer idle fetches.
pub const FETCH_WAIT_DEFAULT: Duration = Duration::from_millis(100);

/// How often librdkafka reports its statistics, the consumer lag among them.
pub const STATISTICS_INTERVAL: Duration = Duration::from_secs(10);

/// The records of each topic this group member has yet to consume, over the partitions it
/// is assigned: librdkafka's `consumer_lag` (the partition's high watermark less the
/// consumer's position), summed per topic; partitions with no lag known yet are left out.
pub fn lag_by_topic(statistics: &Statistics) -> std::collections::BTreeMap<String, i64> {
    statistics
        .topics
        .iter()
        .map(|(name, t)| {
            let lag =
                t.partitions.values().filter(|p| p.partition >= 0 && p.consumer_lag >= 0).map(|p| p.consumer_lag).sum();
            (name.clone(), lag)
        })
        .collect()
}

/// Sets `centralita_bus_consumer_lag_records` from a statistics report; for consumers
/// with a context of their own (routing's engine) as well as [`LagContext`].
pub fn record_consumer_lag(metrics: &Metrics, statistics: &Statistics) {
    for (topic, lag) in lag_by_topic(statistics) {
        metrics.consumer_lag(&topic, lag);
    }
}

/// The consumers' client context: it turns librdkafka's statistics into the lag gauge and
/// the group's state ([`crate::bus::GroupWatch`]).
#[derive(Debug, Clone, Default)]
pub struct LagContext {
    metrics: Option<Arc<Metrics>>,
    group: String,
}

impl ClientContext for LagContext {
    fn stats(&self, statistics: Statistics) {
        if let Some(m) = &self.metrics {
            record_consumer_lag(m, &statistics);
            m.consumer_group(&self.group, statistics.cgrp.as_ref());
        }
    }
}

impl ConsumerContext for LagContext {}

pub(super) type GroupConsumer = StreamConsumer<LagContext>;

/// A group member subscribed to `settings.topics`, storing offsets only when told to and
/// committing the stored ones every second; with `metrics`, its lag is reported every
/// [`STATISTICS_INTERVAL`].
pub(super) fn subscribed(settings: &ConsumerSettings, metrics: Option<Arc<Metrics>>) -> Result<GroupConsumer, Error> {
    let mut config = client_config(&settings.brokers);
    if metrics.is_some() {
        config.set("statistics.interval.ms", STATISTICS_INTERVAL.as_millis().to_string());
    }
    let consumer: GroupConsumer = config
        .set("group.id", &settings.group_id)
        .set("fetch.wait.max.ms", settings.fetch_wait.as_millis().clamp(1, 500).to_string())
        .set_static_member(settings.group_instance_id.as_deref())
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .create_with_context(LagContext { metrics, group: settings.group_id.clone() })?;
    let topics: Vec<&str> = settings.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    Ok(consumer)
}

pub(super) fn commit_stored(consumer: &GroupConsumer) -> Result<(), Error> {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => Ok(()),
        // Nothing stored since the last commit.
        Err(rdkafka::error::KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The record's headers with text values (the trace context among them).
pub(super) fn record_headers(m: &BorrowedMessage<'_>) -> Vec<(String, String)> {
    m.headers()
        .map(|h| {
            h.iter().filter_map(|h| Some((h.key.to_owned(), String::from_utf8(h.value?.to_vec()).ok()?))).collect()
        })
        .unwrap_or_default()
}

/// The record's event, or `None` (logged) for an empty or undecodable record.
pub(super) fn decode_record(m: &BorrowedMessage<'_>) -> Option<Event> {
    let why = match m.payload().map(Event::decode) {
        Some(Ok(e)) => return Some(e),
        Some(Err(e)) => e.to_string(),
        None => "empty record".to_owned(),
    };
    tracing::warn!(error = %why, topic = m.topic(), partition = m.partition(), offset = m.offset(), "skipping malformed record");
    None
}

/// A consumer-group member with at-least-once, deduplicated delivery to a [`Handler`].
pub struct Consumer<H, D> {
    consumer: GroupConsumer,
    settings: ConsumerSettings,
    handler: H,
    dedupe: D,
    metrics: Option<Arc<Metrics>>,
}

impl<H, D> std::fmt::Debug for Consumer<H, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer").field("settings", &self.settings).finish_non_exhaustive()
    }
}

/// What became of one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Handled,
    Duplicate,
    Malformed,
    /// Shutdown came while the handler was still failing: the offset was not stored.
    Interrupted,
}

impl Outcome {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Outcome::Handled => "handled",
            Outcome::Duplicate => "duplicate",
            Outcome::Malformed => "malformed",
            Outcome::Interrupted => "interrupted",
        }
    }
}

impl<H: Handler, D: Dedupe> Consumer<H, D> {
    pub fn new(
        settings: ConsumerSettings,
        handler: H,
        dedupe: D,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<Self, Error> {
        let consumer = subscribed(&settings, metrics.clone())?;
        Ok(Self { consumer, settings, handler, dedupe, metrics })
    }

    /// Consumes until `shutdown`, then commits the stored offsets synchronously.
    pub async fn run(self, shutdown: Shutdown) -> Result<(), Error> {
        let Consumer { consumer, settings, handler, dedupe, metrics } = self;
        let mut worker = Worker { consumer: &consumer, settings: &settings, handler, dedupe, metrics: metrics.clone() };
        loop {
            let msg = tokio::select! {
                _ = shutdown.wait() => break,
                msg = consumer.recv() => msg,
            };
            match msg {
                Ok(m) => {
                    let outcome = worker.process(&m, &shutdown).await;
                    if let Some(metrics) = &metrics {
                        let label = ConsumedLabel { topic: m.topic().to_owned(), outcome: outcome.as_str() };
                        metrics.bus_consumed.get_or_create(&label).inc();
                    }
                    if outcome == Outcome::Interrupted {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, group = %settings.group_id, "kafka consume error; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        commit_stored(&consumer)
    }
}

struct Worker<'a, H, D> {
    consumer: &'a GroupConsumer,
    settings: &'a ConsumerSettings,
    handler: H,
    dedupe: D,
    metrics: Option<Arc<Metrics>>,
}

impl<H: Handler, D: Dedupe> Worker<'_, H, D> {
    async fn process(&mut self, m: &BorrowedMessage<'_>, shutdown: &Shutdown) -> Outcome {
        let span = tracing::info_span!(
            "consume",
            otel.kind = "consumer",
            messaging.destination = %m.topic(),
            messaging.partition = m.partition(),
            messaging.offset = m.offset(),
            messaging.group = %self.settings.group_id,
            tenant = tracing::field::Empty,
            event_id = tracing::field::Empty,
        );
        let headers = record_headers(m);
        crate::telemetry::set_parent_from(&span, headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        async {
            let Some(event) = decode_record(m) else {
                self.store(m);
                return Outcome::Malformed;
            };
            tracing::Span::current().record("tenant", event.tenant.as_str()).record("event_id", event.id.to_string());
            if let Some(metrics) = &self.metrics {
                metrics.event_age(m.topic(), event.occurred_at);
            }
            let scope = self.settings.group_id.clone();
            let mut backoff = Duration::from_millis(100);
            loop {
                let attempt = async {
                    if self.dedupe.seen(&scope, &event).await? {
                        return Ok(Outcome::Duplicate);
                    }
                    self.handler.handle(&event).await?;
                    if let Err(e) = self.dedupe.mark(&scope, &event).await {
                        // Handled but not remembered: a redelivery will be handled again,
                        // which the handler's own idempotence absorbs.
                        tracing::warn!(error = %e, "could not record handled event id");
                    }
                    Ok::<_, Error>(Outcome::Handled)
                };
                match attempt.await {
                    Ok(outcome) => {
                        self.store(m);
                        return outcome;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "event handling failed; will retry");
                        tokio::select! {
                            _ = shutdown.wait() => return Outcome::Interrupted,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        }
        .instrument(span)
        .await
    }

    fn store(&self, m: &BorrowedMessage<'_>) {
        if let Err(e) = self.consumer.store_offset_from_message(m) {
            tracing::warn!(error = %e, "could not store offset");
        }
    }
}

#[cfg(test)]
mod lag_tests {
    use super::*;

    /// A librdkafka statistics report trimmed to what the lag reads: two assigned partitions
    /// of one topic, one whose lag is not known yet (-1), and librdkafka's internal
    /// unassigned partition (-1).
    const REPORT: &str = r#"{
      "name": "c#consumer-1", "client_id": "c", "type": "consumer", "ts": 1, "time": 1, "age": 1,
      "replyq": 0, "msg_cnt": 0, "msg_size": 0, "msg_max": 0, "msg_size_max": 0, "tx": 0, "tx_bytes": 0,
      "rx": 0, "rx_bytes": 0, "txmsgs": 0, "txmsg_bytes": 0, "rxmsgs": 0, "rxmsg_bytes": 0,
      "simple_cnt": 0, "metadata_cache_cnt": 0, "brokers": {},
      "topics": {"p.contacts": {"topic": "p.contacts", "age": 1, "metadata_age": 1,
        "batchsize": {"min":0,"max":0,"avg":0,"sum":0,"stddev":0,"p50":0,"p75":0,"p90":0,"p95":0,"p99":0,"p99_99":0,"outofrange":0,"hdrsize":0,"cnt":0},
        "batchcnt": {"min":0,"max":0,"avg":0,"sum":0,"stddev":0,"p50":0,"p75":0,"p90":0,"p95":0,"p99":0,"p99_99":0,"outofrange":0,"hdrsize":0,"cnt":0},
        "partitions": {
          "0": PART0, "1": PART1, "-1": PARTU
        }}}
    }"#;

    fn partition(id: i32, lag: i64) -> String {
        format!(
            r#"{{"partition": {id}, "broker": 1, "leader": 1, "desired": true, "unknown": false, "msgq_cnt": 0,
            "msgq_bytes": 0, "xmit_msgq_cnt": 0, "xmit_msgq_bytes": 0, "fetchq_cnt": 0, "fetchq_size": 0,
            "fetch_state": "active", "query_offset": 0, "next_offset": 0, "app_offset": 0, "stored_offset": 0,
            "committed_offset": 0, "eof_offset": 0, "lo_offset": 0, "hi_offset": 0, "ls_offset": 0,
            "consumer_lag": {lag}, "consumer_lag_stored": {lag}, "txmsgs": 0, "txbytes": 0, "rxmsgs": 0, "rxbytes": 0,
            "msgs": 0, "rx_ver_drops": 0, "msgs_inflight": 0, "next_ack_seq": 0, "next_err_seq": 0, "acked_msgid": 0}}"#
        )
    }

    #[test]
    fn lag_is_summed_over_the_partitions_whose_lag_is_known() {
        let json = REPORT
            .replace("PART0", &partition(0, 40))
            .replace("PART1", &partition(1, -1))
            .replace("PARTU", &partition(-1, 7));
        let statistics: Statistics = serde_json::from_str(&json).expect("statistics");
        assert_eq!(lag_by_topic(&statistics), [("p.contacts".to_owned(), 40)].into_iter().collect());
        let metrics = Metrics::new("reporting");
        record_consumer_lag(&metrics, &statistics);
        let text = metrics.encode();
        assert!(
            text.contains("centralita_bus_consumer_lag_records{service=\"reporting\",topic=\"p.contacts\"} 40"),
            "{text}"
        );
    }
}

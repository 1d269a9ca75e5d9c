//! The at-least-once, deduplicated consumer of one event at a time, and what every
//! consumer of the bus shares: settings, subscription, the final commit, decoding.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::types::RDKafkaErrorCode;
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

/// A group member subscribed to `settings.topics`, storing offsets only when told to and
/// committing the stored ones every second.
pub(super) fn subscribed(settings: &ConsumerSettings) -> Result<StreamConsumer, Error> {
    let consumer: StreamConsumer = client_config(&settings.brokers)
        .set("group.id", &settings.group_id)
        .set("fetch.wait.max.ms", settings.fetch_wait.as_millis().clamp(1, 500).to_string())
        .set_static_member(settings.group_instance_id.as_deref())
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .create()?;
    let topics: Vec<&str> = settings.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    Ok(consumer)
}

pub(super) fn commit_stored(consumer: &StreamConsumer) -> Result<(), Error> {
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
    consumer: StreamConsumer,
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
        let consumer = subscribed(&settings)?;
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
    consumer: &'a StreamConsumer,
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

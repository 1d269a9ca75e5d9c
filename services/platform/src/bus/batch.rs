//! The consumer that hands records to its handler in batches.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::Consumer as _;
use rdkafka::message::Message;
use tracing::Instrument;

use super::consumer::{
    commit_stored, decode_record, record_headers, subscribed, ConsumerSettings, GroupConsumer, Outcome,
};
use super::event::Event;
use crate::error::Error;
use crate::metrics::{ConsumedLabel, Metrics};
use crate::shutdown::Shutdown;

/// Handles the events of a batch, in log order per partition, all or nothing. The handler
/// deduplicates itself (a batch is redelivered whole after a failure or a crash).
pub trait BatchHandler: Send + 'static {
    fn handle_batch(&mut self, events: &[Event]) -> impl Future<Output = Result<(), Error>> + Send;
}

/// A consumer-group member that hands records to a [`BatchHandler`] in batches: up to
/// `max` records, or whatever arrived within `linger` of the first. Offsets are stored once
/// the whole batch is handled; a failing batch is retried with backoff, never skipped.
/// Malformed records are skipped (logged) and count as handled.
///
/// Tracing: the batch has one `consume_batch` span, the root of a trace of its own (a batch
/// serves many traces), linked to the trace context of each of its records; each record also
/// gets a short `consume_record` span, child of its own context, so the trace of whatever
/// published the record shows where it was consumed.
pub struct BatchConsumer<H> {
    consumer: GroupConsumer,
    settings: ConsumerSettings,
    handler: H,
    max: usize,
    linger: Duration,
    metrics: Option<Arc<Metrics>>,
}

impl<H> std::fmt::Debug for BatchConsumer<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchConsumer")
            .field("settings", &self.settings)
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl<H: BatchHandler> BatchConsumer<H> {
    pub fn new(
        settings: ConsumerSettings,
        handler: H,
        max: usize,
        linger: Duration,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<Self, Error> {
        let consumer = subscribed(&settings, metrics.clone())?;
        Ok(Self { consumer, settings, handler, max: max.max(1), linger, metrics })
    }

    /// Consumes until `shutdown`, then commits the stored offsets synchronously.
    pub async fn run(self, shutdown: Shutdown) -> Result<(), Error> {
        let BatchConsumer { consumer, settings, mut handler, max, linger, metrics } = self;
        'outer: loop {
            let first = tokio::select! {
                _ = shutdown.wait() => break,
                msg = consumer.recv() => msg,
            };
            let first = match first {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, group = %settings.group_id, "kafka consume error; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let deadline = tokio::time::Instant::now() + linger;
            let mut batch = vec![first];
            while batch.len() < max {
                match tokio::time::timeout_at(deadline, consumer.recv()).await {
                    Ok(Ok(m)) => batch.push(m),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, group = %settings.group_id, "kafka consume error within a batch");
                        break;
                    }
                    Err(_) => break,
                }
            }
            let span = tracing::info_span!("consume_batch", otel.kind = "consumer", messaging.group = %settings.group_id, records = batch.len());
            let mut events = Vec::with_capacity(batch.len());
            let mut outcomes = Vec::with_capacity(batch.len());
            // Every link before the batch span starts (a record's span following it starts it).
            let headers: Vec<_> = batch.iter().map(record_headers).collect();
            for h in &headers {
                crate::telemetry::link_from(&span, h.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            }
            for (m, headers) in batch.iter().zip(&headers) {
                let pairs = || headers.iter().map(|(k, v)| (k.as_str(), v.as_str()));
                let record = tracing::info_span!(
                    "consume_record",
                    otel.kind = "consumer",
                    messaging.destination = %m.topic(),
                    messaging.partition = m.partition(),
                    messaging.offset = m.offset(),
                    messaging.group = %settings.group_id,
                    tenant = tracing::field::Empty,
                    event_id = tracing::field::Empty,
                );
                crate::telemetry::set_parent_from(&record, pairs());
                record.follows_from(&span);
                let _in_record = record.enter();
                match decode_record(m) {
                    Some(e) => {
                        record.record("tenant", e.tenant.as_str()).record("event_id", e.id.to_string());
                        if let Some(metrics) = &metrics {
                            metrics.event_age(m.topic(), e.occurred_at);
                        }
                        events.push(e);
                        outcomes.push(Outcome::Handled);
                    }
                    None => outcomes.push(Outcome::Malformed),
                }
            }
            let mut backoff = Duration::from_millis(100);
            loop {
                match handler.handle_batch(&events).instrument(span.clone()).await {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, records = events.len(), retry_in_ms = backoff.as_millis() as u64, "batch handling failed; will retry");
                        tokio::select! {
                            _ = shutdown.wait() => break 'outer,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
            for m in &batch {
                if let Err(e) = consumer.store_offset_from_message(m) {
                    tracing::warn!(error = %e, "could not store offset");
                }
            }
            if let Some(metrics) = &metrics {
                for (m, outcome) in batch.iter().zip(&outcomes) {
                    let label = ConsumedLabel { topic: m.topic().to_owned(), outcome: outcome.as_str() };
                    metrics.bus_consumed.get_or_create(&label).inc();
                }
            }
        }
        commit_stored(&consumer)
    }
}

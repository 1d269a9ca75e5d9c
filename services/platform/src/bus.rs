//! The event bus over Kafka.
//!
//! - One envelope ([`Event`], wire form `centralita.events.v1.Envelope`): event id (UUIDv7),
//!   tenant, occurred-at, type (protobuf full name) and protobuf payload. The record key is
//!   chosen by the producer (tenant for config, contact or agent for their streams) so
//!   everything of one key stays in order on one partition. W3C trace context travels in
//!   the record headers (`traceparent`, `tracestate`), beside `ce_id` and `ce_type`.
//! - [`Producer`]: idempotent, `acks=all`.
//! - [`Consumer`]: a consumer-group member that stores a record's offset only after its
//!   handler succeeded (offsets are committed from the stored ones, and synchronously on
//!   shutdown), and skips events whose id the [`Dedupe`] store has seen: delivery is
//!   at-least-once, handling is idempotent. A handler failure is retried with backoff and
//!   never skipped; a record that cannot be decoded is logged, counted and skipped.
//! - [`ensure_topics`]: explicit topic creation at start-up (brokers such as tansu do not
//!   auto-create topics, and production clusters should not).

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use centralita_proto::events::v1 as pb;
use chrono::{DateTime, Utc};
use prost::Message as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{CommitMode, Consumer as _, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use rdkafka::ClientConfig;
use tracing::Instrument;
use uuid::Uuid;

use crate::error::Error;
use crate::metrics::{ConsumedLabel, Metrics, TopicLabel};
use crate::shutdown::Shutdown;
use crate::tenant::{from_timestamp, timestamp, TenantId};

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

/// Sets `group.instance.id` when there is one.
pub trait StaticMember {
    fn set_static_member(&mut self, id: Option<&str>) -> &mut Self;
}

impl StaticMember for ClientConfig {
    fn set_static_member(&mut self, id: Option<&str>) -> &mut Self {
        if let Some(id) = id {
            self.set("group.instance.id", id);
        }
        self
    }
}

/// librdkafka settings shared by every client.
pub fn client_config(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("socket.keepalive.enable", "true")
        .set("reconnect.backoff.ms", "100")
        .set("reconnect.backoff.max.ms", "2000")
        // A consumer subscribed to a topic another process is still creating learns of it
        // at the next metadata refresh (librdkafka's default is every 5 minutes).
        .set("topic.metadata.refresh.interval.ms", "5000")
        .set("log_level", "4");
    c
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

/// A protobuf message that travels as an event payload.
pub trait EventPayload: prost::Message + Default {
    /// Fully qualified protobuf name, written into the envelope's `type`.
    const TYPE: &'static str;
}

impl EventPayload for centralita_proto::tenancy::v1::Tenant {
    const TYPE: &'static str = "centralita.tenancy.v1.Tenant";
}

impl EventPayload for centralita_proto::routing::v1::RoutingInput {
    const TYPE: &'static str = "centralita.routing.v1.RoutingInput";
}

impl EventPayload for centralita_proto::routing::v1::RoutingDecision {
    const TYPE: &'static str = "centralita.routing.v1.RoutingDecision";
}

impl EventPayload for centralita_proto::sessions::v1::ContactEvent {
    const TYPE: &'static str = "centralita.sessions.v1.ContactEvent";
}

impl EventPayload for centralita_proto::reporting::v1::UsageRecord {
    const TYPE: &'static str = "centralita.reporting.v1.UsageRecord";
}

impl EventPayload for centralita_proto::crm::v1::CustomerErased {
    const TYPE: &'static str = "centralita.crm.v1.CustomerErased";
}

impl EventPayload for centralita_proto::sessions::v1::AgentEvent {
    const TYPE: &'static str = "centralita.sessions.v1.AgentEvent";
}

/// One event in its envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: Uuid,
    pub tenant: TenantId,
    pub occurred_at: DateTime<Utc>,
    pub type_name: String,
    pub payload: Bytes,
}

/// Largest envelope accepted from the bus.
pub const MAX_EVENT_BYTES: usize = 1 << 20;

impl Event {
    pub fn new<P: EventPayload>(tenant: TenantId, payload: &P) -> Self {
        Self::at(tenant, payload, Utc::now())
    }

    pub fn at<P: EventPayload>(tenant: TenantId, payload: &P, occurred_at: DateTime<Utc>) -> Self {
        Event {
            id: Uuid::now_v7(),
            tenant,
            occurred_at,
            type_name: P::TYPE.to_owned(),
            payload: Bytes::from(payload.encode_to_vec()),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        pb::Envelope {
            event_id: self.id.to_string(),
            tenant_id: self.tenant.to_string(),
            occurred_at: Some(timestamp(self.occurred_at)),
            r#type: self.type_name.clone(),
            payload: self.payload.to_vec(),
        }
        .encode_to_vec()
    }

    /// Decodes and validates an envelope read from the bus.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() > MAX_EVENT_BYTES {
            return Err(Error::invalid("envelope", format!("is {} bytes, more than {MAX_EVENT_BYTES}", bytes.len())));
        }
        let e = pb::Envelope::decode(bytes).map_err(|e| Error::invalid("envelope", e.to_string()))?;
        let id = Uuid::parse_str(&e.event_id).map_err(|_| Error::invalid("event_id", "is not a UUID"))?;
        let tenant = TenantId::parse(&e.tenant_id).map_err(|m| Error::invalid("tenant_id", m))?;
        let occurred_at = e
            .occurred_at
            .as_ref()
            .and_then(from_timestamp)
            .ok_or_else(|| Error::invalid("occurred_at", "is missing or out of range"))?;
        if e.r#type.is_empty() {
            return Err(Error::invalid("type", "is empty"));
        }
        Ok(Event { id, tenant, occurred_at, type_name: e.r#type, payload: Bytes::from(e.payload) })
    }

    /// The payload as `P`, refusing an event of another type.
    pub fn payload<P: EventPayload>(&self) -> Result<P, Error> {
        if self.type_name != P::TYPE {
            return Err(Error::invalid("type", format!("is `{}`, expected `{}`", self.type_name, P::TYPE)));
        }
        P::decode(self.payload.as_ref()).map_err(|e| Error::invalid("payload", e.to_string()))
    }
}

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

/// Remembers which events a consumer (its `scope`, usually the group id) has handled.
/// `seen` is asked before handling and `mark` called after, so a crash between the two
/// replays the event: handlers must be idempotent as well.
pub trait Dedupe: Send + Sync + 'static {
    fn seen(&self, scope: &str, event: &Event) -> impl Future<Output = Result<bool, Error>> + Send;
    fn mark(&self, scope: &str, event: &Event) -> impl Future<Output = Result<(), Error>> + Send;
}

/// Handled `(scope, event id)` pairs, and the order they came in (for eviction).
type Remembered = (HashSet<(String, Uuid)>, VecDeque<(String, Uuid)>);

/// In-process dedupe over the last `capacity` event ids: for consumers whose handler is
/// naturally idempotent and only needs to skip obvious replays within one process.
#[derive(Debug, Clone)]
pub struct MemoryDedupe {
    inner: Arc<Mutex<Remembered>>,
    capacity: usize,
}

impl MemoryDedupe {
    pub fn new(capacity: usize) -> Self {
        Self { inner: Arc::default(), capacity: capacity.max(1) }
    }
}

impl Dedupe for MemoryDedupe {
    async fn seen(&self, scope: &str, event: &Event) -> Result<bool, Error> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        Ok(g.0.contains(&(scope.to_owned(), event.id)))
    }

    async fn mark(&self, scope: &str, event: &Event) -> Result<(), Error> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let key = (scope.to_owned(), event.id);
        if g.0.insert(key.clone()) {
            g.1.push_back(key);
            while g.1.len() > self.capacity {
                if let Some(old) = g.1.pop_front() {
                    g.0.remove(&old);
                }
            }
        }
        Ok(())
    }
}

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
fn subscribed(settings: &ConsumerSettings) -> Result<StreamConsumer, Error> {
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

fn commit_stored(consumer: &StreamConsumer) -> Result<(), Error> {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => Ok(()),
        // Nothing stored since the last commit.
        Err(rdkafka::error::KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The record's event, or `None` (logged) for an empty or undecodable record.
fn decode_record(m: &BorrowedMessage<'_>) -> Option<Event> {
    let why = match m.payload().map(Event::decode) {
        Some(Ok(e)) => return Some(e),
        Some(Err(e)) => e.to_string(),
        None => "empty record".to_owned(),
    };
    tracing::warn!(error = %why, topic = m.topic(), partition = m.partition(), offset = m.offset(), "skipping malformed record");
    None
}

/// Handles the events of a batch, in log order per partition, all or nothing. The handler
/// deduplicates itself (a batch is redelivered whole after a failure or a crash).
pub trait BatchHandler: Send + 'static {
    fn handle_batch(&mut self, events: &[Event]) -> impl Future<Output = Result<(), Error>> + Send;
}

/// A consumer-group member that hands records to a [`BatchHandler`] in batches: up to
/// `max` records, or whatever arrived within `linger` of the first. Offsets are stored once
/// the whole batch is handled; a failing batch is retried with backoff, never skipped.
/// Malformed records are skipped (logged) and count as handled.
pub struct BatchConsumer<H> {
    consumer: StreamConsumer,
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
        let consumer = subscribed(&settings)?;
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
            let mut events = Vec::with_capacity(batch.len());
            let mut outcomes = Vec::with_capacity(batch.len());
            for m in &batch {
                match decode_record(m) {
                    Some(e) => {
                        if let Some(metrics) = &metrics {
                            metrics.event_age(m.topic(), e.occurred_at);
                        }
                        events.push(e);
                        outcomes.push(Outcome::Handled);
                    }
                    None => outcomes.push(Outcome::Malformed),
                }
            }
            let span = tracing::info_span!("consume_batch", otel.kind = "consumer", messaging.group = %settings.group_id, records = batch.len());
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
    fn as_str(self) -> &'static str {
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
        if let Some(h) = m.headers() {
            let pairs: Vec<(String, String)> =
                h.iter().filter_map(|h| Some((h.key.to_owned(), String::from_utf8(h.value?.to_vec()).ok()?))).collect();
            crate::telemetry::set_parent_from(&span, pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        }
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
mod tests {
    use super::*;
    use centralita_proto::tenancy::v1 as tpb;

    #[test]
    fn envelope_round_trip_and_validation() {
        let t = tpb::Tenant { name: "tenants/acme".into(), ..Default::default() };
        let e = Event::new(TenantId::parse("acme").expect("id"), &t);
        let back = Event::decode(&e.encode()).expect("decode");
        assert_eq!(back, e);
        assert_eq!(back.payload::<tpb::Tenant>().expect("payload").name, "tenants/acme");
        assert!(Event::decode(b"\xff\xff garbage").is_err());
        let mut bad = pb::Envelope::decode(e.encode().as_slice()).expect("decode");
        bad.tenant_id = "Not A Tenant".into();
        assert!(Event::decode(&bad.encode_to_vec()).is_err());
    }

    #[tokio::test]
    async fn memory_dedupe_is_bounded() {
        let d = MemoryDedupe::new(2);
        let t = tpb::Tenant::default();
        let id = TenantId::parse("acme").expect("id");
        let (a, b, c) = (Event::new(id.clone(), &t), Event::new(id.clone(), &t), Event::new(id, &t));
        for e in [&a, &b, &c] {
            d.mark("g", e).await.expect("mark");
        }
        assert!(!d.seen("g", &a).await.expect("seen"), "oldest evicted");
        assert!(d.seen("g", &c).await.expect("seen"));
        assert!(!d.seen("other", &c).await.expect("seen"), "scopes are separate");
    }
}

//! The routing stream processor: one [`Router`] per partition of the routing input log,
//! fed in log order, its decisions published to the decisions topic.
//!
//! Single writer: partitions are assigned by the Kafka consumer group, so exactly one
//! replica applies a pool's inputs. Takeover: a replica that gets a partition loads the
//! partition's last snapshot from Redis (router state plus the next offset to apply) and
//! replays the log from there. Offsets are committed only for what a snapshot holds, so the
//! group's committed offset and the snapshot never disagree; a crash between snapshots
//! replays the inputs since, re-emitting the same decisions with the same event ids (they
//! are derived from the input's offset), which consumers drop as duplicates.
//!
//! Time: the engine appends a `Tick` to each partition it owns every `tick` interval, so
//! timers (relaxation steps, maximum waits) are inputs in the log like everything else and
//! a replay takes the same decisions.
//!
//! Tracing: each input record is applied in a `routing.input` span, child of the trace
//! context in the record's headers (ticks, the engine's own clock, have none), and each
//! decision is taken in a `routing.decision` span with tenant, pool and contact, whose
//! context the decision's record carries to sessions. A decision about the input's own
//! contact is a child of the input's span; one about another contact (an agent became
//! ready, a tick) continues the trace of that contact's queueing, linked to the input, so
//! a contact's offer is in the contact's trace whatever input made it. Those contexts are
//! kept per partition in memory while the contact is in routing; after a takeover only the
//! contacts replayed since the snapshot have one, and the others' decisions follow the input.
//!
//! Metrics: each record's input kind and outcome and each decision are counted as they are
//! applied; the queue and agent gauges are set from the routers on every tick (a pass over
//! each pool's contacts, too much per input); see [`crate::metrics`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use centralita_platform::bus::{client_config, Event, Producer, StaticMember};
use centralita_platform::cache::RedisHandle;
use centralita_platform::error::Error;
use centralita_platform::metrics::Metrics;
use centralita_platform::shutdown::Shutdown;
use centralita_platform::telemetry;
use centralita_platform::tenant::TenantId;
use centralita_proto::routing::v1 as pb;
use centralita_routing_contract::pool_tenant;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use redis::AsyncCommands;
use uuid::Uuid;

use crate::core::{ContactId, Decision, Input, Router, Snapshot};
use crate::metrics::{self as routing_metrics, Outcome};

#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub brokers: String,
    pub group: String,
    pub input_topic: String,
    pub decision_topic: String,
    pub tick: Duration,
    pub snapshot_every: Duration,
    /// Static membership (see `KafkaConfig::group_instance_id`).
    pub group_instance_id: Option<String>,
    /// Fetch wait of the input consumer (`KafkaConfig::fetch_wait_low_latency_ms`).
    pub fetch_wait: Duration,
    /// Where the age of each input is recorded (`centralita_bus_event_age_seconds`).
    pub metrics: Option<Arc<Metrics>>,
    /// Routing's own metrics: inputs, decisions, queues, partitions and snapshots.
    pub domain_metrics: Arc<routing_metrics::Metrics>,
}

struct PartitionState {
    router: Router,
    /// Next log offset to apply; anything below is in `router` already.
    next_offset: i64,
    /// Inputs applied since the last snapshot.
    dirty: bool,
    key: String,
    /// The trace context (W3C header pairs) of each contact's queueing, while it is in
    /// routing: decisions about it that other inputs cause continue it.
    traces: HashMap<ContactId, Vec<(String, String)>>,
}

/// Contacts whose trace context a partition keeps at most (past it, the oldest are not
/// told apart: the map starts over, and their decisions follow their inputs' traces).
const MAX_TRACES: usize = 100_000;

#[derive(Default)]
struct Revocations(Mutex<Vec<i32>>);

/// The input consumer's context: revocations for the engine, librdkafka's statistics for the
/// lag gauge (`centralita_bus_consumer_lag_records`).
struct EngineContext(Arc<Revocations>, Option<Arc<Metrics>>, String);

impl ClientContext for EngineContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        if let Some(m) = &self.1 {
            centralita_platform::bus::record_consumer_lag(m, &statistics);
            m.consumer_group(&self.2, statistics.cgrp.as_ref());
        }
    }
}

impl ConsumerContext for EngineContext {
    fn pre_rebalance(&self, _consumer: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            if let Ok(mut revoked) = self.0 .0.lock() {
                revoked.extend(list.elements().iter().map(|e| e.partition()));
            }
        }
    }
}

fn snapshot_key(group: &str, topic: &str, partition: i32) -> String {
    format!("routing:snapshot:{{{group}}}:{topic}:{partition}")
}

/// Event id of the `index`th decision taken on the input at (`partition`, `offset`):
/// the same on every replay.
pub fn decision_id(topic: &str, partition: i32, offset: i64, index: usize) -> Uuid {
    let mut b = [0u8; 16];
    let h = topic.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, c| (h ^ u64::from(c)).wrapping_mul(0x100_0000_01b3));
    b[..4].copy_from_slice(&(h as u32).to_be_bytes());
    b[4..8].copy_from_slice(&partition.to_be_bytes());
    b[8..14].copy_from_slice(&offset.to_be_bytes()[2..]);
    b[14..].copy_from_slice(&(index as u16).to_be_bytes());
    // Version 8 (custom) and the RFC 4122 variant, so the id is a well-formed UUID.
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    Uuid::from_bytes(b)
}

/// Runs the engine until shutdown. Errors from the broker or Redis are retried; only a
/// configuration error ends it early.
pub async fn run(settings: EngineSettings, redis: RedisHandle, producer: Arc<Producer>, shutdown: Shutdown) {
    let revocations = Arc::new(Revocations::default());
    let mut config = client_config(&settings.brokers);
    if settings.metrics.is_some() {
        let every = centralita_platform::bus::STATISTICS_INTERVAL.as_millis().to_string();
        config.set("statistics.interval.ms", every);
    }
    let consumer: StreamConsumer<EngineContext> = match config
        .set("group.id", &settings.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("fetch.wait.max.ms", settings.fetch_wait.as_millis().to_string())
        .set_static_member(settings.group_instance_id.as_deref())
        .create_with_context(EngineContext(revocations.clone(), settings.metrics.clone(), settings.group.clone()))
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "routing engine cannot create its consumer");
            return;
        }
    };
    if let Err(e) = consumer.subscribe(&[&settings.input_topic]) {
        tracing::error!(error = %e, "routing engine cannot subscribe");
        return;
    }
    let mut parts: BTreeMap<i32, PartitionState> = BTreeMap::new();
    // Decisions handed to the producer and not yet acknowledged, in input order: they are
    // settled before any snapshot, so a snapshot never covers an unpublished decision.
    let mut in_flight: Vec<(i32, Delivery)> = Vec::new();
    let mut tick = tokio::time::interval(settings.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut snap = tokio::time::interval(settings.snapshot_every);
    snap.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if let Ok(mut revoked) = revocations.0.lock() {
            for p in revoked.drain(..) {
                parts.remove(&p);
            }
        }
        tokio::select! {
            _ = shutdown.wait() => break,
            message = consumer.recv() => {
                let message = match message {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "routing input poll failed");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                let (partition, offset) = (message.partition(), message.offset());
                let key = message.key().map(|k| String::from_utf8_lossy(k).into_owned()).unwrap_or_default();
                if let std::collections::btree_map::Entry::Vacant(slot) = parts.entry(partition) {
                    match load(&redis, &settings, partition).await {
                        Ok(state) => {
                            let from = state.next_offset;
                            slot.insert(state);
                            if from < offset {
                                // Replay from the snapshot (after a failed publish the consumer
                                // is already past it).
                                seek_back(&consumer, &settings.input_topic, partition, from);
                                continue;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, partition, "cannot load routing snapshot; retrying");
                            seek_back(&consumer, &settings.input_topic, partition, offset);
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            continue;
                        }
                    }
                }
                let Some(state) = parts.get_mut(&partition) else { continue };
                if state.key.is_empty() && key != "tick" {
                    state.key.clone_from(&key);
                }
                if offset < state.next_offset {
                    continue;
                }
                // Ticks are the engine's own clock, not a hop of anyone's contact.
                let age = settings.metrics.as_deref().filter(|_| key != "tick").map(|m| (m, settings.input_topic.as_str()));
                let input_span = if key == "tick" {
                    tracing::Span::none()
                } else {
                    let span = tracing::info_span!(
                        "routing.input",
                        otel.kind = "consumer",
                        messaging.partition = partition,
                        messaging.offset = offset,
                        pool = %state.key,
                        kind = tracing::field::Empty,
                        tenant = tracing::field::Empty,
                        contact = tracing::field::Empty,
                    );
                    let headers = record_headers(&message);
                    telemetry::set_parent_from(&span, headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                    span
                };
                let applied =
                    input_span.in_scope(|| apply(state, message.payload().unwrap_or_default(), age, &settings.domain_metrics));
                let input_trace = input_span.in_scope(telemetry::current_trace_headers);
                let mut failed = false;
                for (index, d) in applied.decisions.iter().enumerate() {
                    let tenant = decision_tenant(d);
                    let mut event = Event::new(tenant.clone(), &pb::RoutingDecision::from(d));
                    event.id = decision_id(&settings.input_topic, partition, offset, index);
                    let key = if state.key.is_empty() { "pool" } else { state.key.as_str() };
                    let contact = decision_contact(d);
                    let span = tracing::info_span!(
                        parent: &input_span,
                        "routing.decision",
                        kind = routing_metrics::decision_kind(d),
                        tenant = %tenant,
                        pool = %key,
                        contact = %contact,
                    );
                    if applied.contact.as_ref() != Some(contact) {
                        if let Some(queued) = state.traces.get(contact) {
                            telemetry::set_parent_from(&span, queued.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                            telemetry::link_from(&span, input_trace.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                        }
                    }
                    // The producer puts the current span's context in the record's headers.
                    let enqueued = span.in_scope(|| producer.enqueue(&settings.decision_topic, key, &event));
                    match enqueued {
                        Ok(delivery) => in_flight.push((partition, Box::pin(delivery))),
                        Err(e) => {
                            tracing::error!(error = %e, "cannot publish a routing decision; replaying from the snapshot");
                            failed = true;
                            break;
                        }
                    }
                }
                if failed {
                    // Forget the partition: its next record reloads the snapshot and replays
                    // from there, re-emitting the decisions with the same ids.
                    settle(&mut in_flight, &mut parts).await;
                    parts.remove(&partition);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                keep_trace(state, &applied, input_trace);
                state.next_offset = offset + 1;
                state.dirty = true;
                if in_flight.len() >= MAX_IN_FLIGHT {
                    settle(&mut in_flight, &mut parts).await;
                }
            }
            _ = tick.tick() => {
                let at = chrono::Utc::now();
                let tick = pb::RoutingInput { input: Some(pb::routing_input::Input::Tick(pb::Tick {})) };
                for partition in parts.keys() {
                    let event = Event::at(pool_tenant(), &tick, at);
                    if let Err(e) = producer.publish_to(&settings.input_topic, *partition, "tick", &event).await {
                        tracing::warn!(error = %e, partition, "cannot append a tick");
                    }
                }
                settings.domain_metrics.observe(parts.values().map(|s| &s.router));
            }
            _ = snap.tick() => {
                settle(&mut in_flight, &mut parts).await;
                if let Err(e) = checkpoint(&consumer, &redis, &settings, &mut parts).await {
                    tracing::warn!(error = %e, "routing snapshot failed; retrying");
                }
            }
        }
    }
    settle(&mut in_flight, &mut parts).await;
    if let Err(e) = checkpoint(&consumer, &redis, &settings, &mut parts).await {
        tracing::warn!(error = %e, "final routing snapshot failed; the successor replays further");
    }
}

/// A decision's delivery report.
type Delivery = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(i32, i64), Error>> + Send>>;

/// Decisions in flight before the engine waits for their acknowledgements.
const MAX_IN_FLIGHT: usize = 4096;

/// Waits for every decision in flight. A partition whose decision was not published is
/// forgotten: the next record of it reloads the snapshot and replays from there, which
/// re-emits the decisions with the same ids.
async fn settle(in_flight: &mut Vec<(i32, Delivery)>, parts: &mut BTreeMap<i32, PartitionState>) {
    let mut failed = std::collections::BTreeSet::new();
    for (partition, delivery) in in_flight.drain(..) {
        if let Err(e) = delivery.await {
            if failed.insert(partition) {
                tracing::error!(error = %e, partition, "a routing decision was not published; replaying from the snapshot");
            }
        }
    }
    for p in failed {
        parts.remove(&p);
    }
}

fn decision_tenant(d: &Decision) -> TenantId {
    let tenant = match d {
        Decision::Offer { queue, .. } | Decision::TimedOut { queue, .. } => &queue.tenant,
        Decision::Overflow { from, .. } => &from.tenant,
    };
    TenantId::parse(tenant).unwrap_or_else(|_| pool_tenant())
}

fn decision_contact(d: &Decision) -> &ContactId {
    match d {
        Decision::Offer { contact, .. } | Decision::Overflow { contact, .. } | Decision::TimedOut { contact, .. } => {
            contact
        }
    }
}

/// The contact an input is about, if any.
fn input_contact(input: &Input) -> Option<&ContactId> {
    match input {
        Input::ContactQueued(c) => Some(&c.id),
        Input::ContactWithdrawn { contact }
        | Input::OfferAccepted { contact, .. }
        | Input::OfferDeclined { contact, .. }
        | Input::OfferUndelivered { contact, .. }
        | Input::ContactReleased { contact, .. }
        | Input::BookingMoved { to: contact, .. } => Some(contact),
        Input::AgentUpserted(_) | Input::AgentReady { .. } | Input::AgentNotReady { .. } | Input::Tick => None,
    }
}

/// One record applied: the contact it is about, what it means for the trace kept for that
/// contact, and the decisions taken.
#[derive(Debug, Default)]
struct AppliedInput {
    contact: Option<ContactId>,
    /// The contact was queued (keep its trace) or left routing (forget it).
    queued: bool,
    left: bool,
    decisions: Vec<Decision>,
}

/// Keeps the trace of a contact's queueing (`trace`: the input span's), forgets it when the
/// contact leaves routing.
fn keep_trace(state: &mut PartitionState, applied: &AppliedInput, trace: HashMap<String, String>) {
    let Some(contact) = &applied.contact else { return };
    if applied.left {
        state.traces.remove(contact);
    } else if applied.queued && !trace.is_empty() {
        if state.traces.len() >= MAX_TRACES {
            state.traces.clear();
        }
        state.traces.insert(contact.clone(), trace.into_iter().collect());
    }
}

/// The record's headers with text values (the trace context among them).
fn record_headers<M: Message>(m: &M) -> Vec<(String, String)> {
    use rdkafka::message::Headers as _;
    m.headers()
        .map(|h| {
            h.iter().filter_map(|h| Some((h.key.to_owned(), String::from_utf8(h.value?.to_vec()).ok()?))).collect()
        })
        .unwrap_or_default()
}

/// Decodes and applies one log record. A record that cannot be decoded or that the core
/// refuses is logged and skipped: it changes nothing. `age` is where its age is recorded
/// (metrics, topic); `metrics` counts its outcome and the decisions taken. The input's
/// kind, tenant and contact are recorded on the current span.
fn apply(
    state: &mut PartitionState,
    payload: &[u8],
    age: Option<(&Metrics, &str)>,
    metrics: &routing_metrics::Metrics,
) -> AppliedInput {
    let event = match Event::decode(payload) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "undecodable routing input skipped");
            metrics.input(routing_metrics::UNKNOWN_KIND, Outcome::Malformed);
            return AppliedInput::default();
        }
    };
    if let Some((metrics, topic)) = age {
        metrics.event_age(topic, event.occurred_at);
    }
    let input: Result<Input, String> = event
        .payload::<pb::RoutingInput>()
        .map_err(|e| e.to_string())
        .and_then(|p| Input::try_from(p).map_err(|e| e.to_string()));
    let input = match input {
        Ok(input) => input,
        Err(e) => {
            tracing::warn!(error = %e, "invalid routing input skipped");
            metrics.input(routing_metrics::UNKNOWN_KIND, Outcome::Malformed);
            return AppliedInput::default();
        }
    };
    let kind = routing_metrics::input_kind(&input);
    let contact = input_contact(&input).cloned();
    let span = tracing::Span::current();
    span.record("kind", kind).record("tenant", event.tenant.as_str());
    if let Some(c) = &contact {
        span.record("contact", c.0.as_str());
    }
    let queued = matches!(input, Input::ContactQueued(_));
    let left =
        matches!(input, Input::ContactWithdrawn { .. } | Input::OfferAccepted { .. } | Input::ContactReleased { .. });
    tracing::trace!(?input, "routing input");
    match state.router.apply(event.occurred_at.timestamp_millis(), input) {
        Ok(decisions) => {
            tracing::trace!(?decisions, "routing input applied");
            metrics.input(kind, Outcome::Applied);
            for d in &decisions {
                metrics.decision(d);
            }
            AppliedInput { contact, queued, left, decisions }
        }
        Err(rejected) => {
            tracing::debug!(%rejected, "routing input rejected");
            metrics.input(kind, Outcome::Rejected);
            AppliedInput { contact, ..AppliedInput::default() }
        }
    }
}

fn seek_back(consumer: &StreamConsumer<EngineContext>, topic: &str, partition: i32, offset: i64) {
    if let Err(e) = consumer.seek(topic, partition, Offset::Offset(offset), Duration::from_secs(5)) {
        tracing::warn!(error = %e, partition, "seek failed");
    }
}

async fn load(redis: &RedisHandle, settings: &EngineSettings, partition: i32) -> Result<PartitionState, Error> {
    let mut conn = redis.conn()?;
    let key = snapshot_key(&settings.group, &settings.input_topic, partition);
    let stored: Option<Vec<u8>> = conn.get(&key).await?;
    let (router, next_offset) = match stored {
        Some(bytes) => {
            let (offset, snapshot): (i64, Snapshot) = serde_json::from_slice(&bytes).map_err(Error::internal)?;
            (Router::restore(snapshot), offset)
        }
        None => (Router::new(), 0),
    };
    tracing::info!(partition, next_offset, "routing partition taken over");
    Ok(PartitionState { router, next_offset, dirty: false, key: String::new(), traces: HashMap::new() })
}

/// Stores a snapshot of every changed partition, then commits exactly the offsets the
/// snapshots hold.
async fn checkpoint(
    consumer: &StreamConsumer<EngineContext>,
    redis: &RedisHandle,
    settings: &EngineSettings,
    parts: &mut BTreeMap<i32, PartitionState>,
) -> Result<(), Error> {
    let mut list = TopicPartitionList::new();
    let mut conn = redis.conn()?;
    for (partition, state) in parts.iter_mut().filter(|(_, s)| s.dirty) {
        let bytes = serde_json::to_vec(&(state.next_offset, state.router.snapshot())).map_err(Error::internal)?;
        let key = snapshot_key(&settings.group, &settings.input_topic, *partition);
        let () = conn.set(&key, bytes).await?;
        settings.domain_metrics.snapshot_written();
        list.add_partition_offset(&settings.input_topic, *partition, Offset::Offset(state.next_offset))
            .map_err(Error::from)?;
        state.dirty = false;
    }
    if list.count() > 0 {
        consumer.commit(&list, CommitMode::Sync).map_err(Error::from)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{AgentId, AgentProfile, Channel, ContactId, QueueRef, QueuedContact};

    #[test]
    fn decision_ids_are_stable_and_distinct() {
        let a = decision_id("t.routing", 0, 42, 0);
        assert_eq!(a, decision_id("t.routing", 0, 42, 0));
        assert_ne!(a, decision_id("t.routing", 0, 42, 1));
        assert_ne!(a, decision_id("t.routing", 1, 42, 0));
        assert_ne!(a, decision_id("t.routing", 0, 43, 0));
        assert_ne!(a, decision_id("u.routing", 0, 42, 0));
    }

    fn record(input: &Input) -> Vec<u8> {
        Event::new(pool_tenant(), &pb::RoutingInput::from(input)).encode()
    }

    #[test]
    fn applied_records_count_their_inputs_decisions_and_refusals() {
        let platform = Metrics::new("routing");
        let metrics = routing_metrics::Metrics::register(&platform);
        let mut state = PartitionState {
            router: Router::new(),
            next_offset: 0,
            dirty: false,
            key: String::new(),
            traces: HashMap::new(),
        };
        let sales = QueueRef::new("acme", "sales");
        let agent = AgentProfile {
            id: AgentId::from("a"),
            queues: [sales.clone()].into(),
            skills: Default::default(),
            languages: Default::default(),
            capacity: crate::core::CapacityProfile { limits: [(Channel::Chat, 1)].into(), ..Default::default() },
            phoneless_tenants: Default::default(),
        };
        let contact = |id: &str| QueuedContact {
            id: ContactId::from(id),
            queue: sales.clone(),
            channel: Channel::Chat,
            priority: 0,
            aging_per_minute: 0,
            enqueued_at: 0,
            steps: Vec::new(),
            preferred: None,
            offer_timeout_ms: 30_000,
            max_wait: None,
            excluded: Vec::new(),
        };
        let inputs = [
            Input::AgentUpserted(agent),
            Input::AgentReady { agent: AgentId::from("a") },
            Input::ContactQueued(contact("c1")),
            Input::ContactQueued(contact("c2")),
            // Not offered to b: refused.
            Input::OfferAccepted { contact: ContactId::from("c1"), agent: AgentId::from("b") },
        ];
        let decided: usize = inputs.iter().map(|i| apply(&mut state, &record(i), None, &metrics).decisions.len()).sum();
        assert_eq!(decided, 1);
        assert!(apply(&mut state, b"not an event", None, &metrics).decisions.is_empty());
        metrics.observe([&state.router]);

        let text = platform.encode();
        let expect = [
            r#"centralita_routing_inputs_total{service="routing",kind="agent_upserted",outcome="applied"} 1"#,
            r#"centralita_routing_inputs_total{service="routing",kind="contact_queued",outcome="applied"} 2"#,
            r#"centralita_routing_inputs_total{service="routing",kind="offer_accepted",outcome="rejected"} 1"#,
            r#"centralita_routing_inputs_total{service="routing",kind="unknown",outcome="malformed"} 1"#,
            r#"centralita_routing_decisions_total{service="routing",kind="offer"} 1"#,
            r#"centralita_routing_queued_contacts{service="routing",channel="chat"} 1"#,
            r#"centralita_routing_ready_agents{service="routing"} 1"#,
            r#"centralita_routing_owned_partitions{service="routing"} 1"#,
        ];
        for line in expect {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }
}

//! The event bus over Kafka.
//!
//! - One envelope ([`Event`], wire form `centralita.events.v1.Envelope`): event id (UUIDv7),
//!   tenant, occurred-at, type (protobuf full name) and protobuf payload. The record key is
//!   chosen by the producer (tenant for config, contact or agent for their streams) so
//!   everything of one key stays in order on one partition. W3C trace context travels in
//!   the record headers (`traceparent`, `tracestate`), beside `ce_id` and `ce_type`: the
//!   producer writes the current span's context, a [`Consumer`] handles each record in a
//!   span continuing it, and a [`BatchConsumer`]'s batch span links every record's context.
//! - [`Producer`]: idempotent, `acks=all`.
//! - [`Consumer`]: a consumer-group member that stores a record's offset only after its
//!   handler succeeded (offsets are committed from the stored ones, and synchronously on
//!   shutdown), and skips events whose id the [`Dedupe`] store has seen: delivery is
//!   at-least-once, handling is idempotent. A handler failure is retried with backoff and
//!   never skipped; a record that cannot be decoded is logged, counted and skipped.
//! - [`ensure_topics`]: explicit topic creation at start-up (brokers such as tansu do not
//!   auto-create topics, and production clusters should not).
//!
//! # Layout
//! - `event`: [`Event`], its envelope and [`EventPayload`], the types that travel in it.
//! - `topics`: [`Topics`], [`TopicSpec`] and [`ensure_topics`]; `client`: the settings
//!   every client starts from ([`client_config`], [`StaticMember`]).
//! - `producer`: [`Producer`].
//! - `consumer`: [`Consumer`] with its [`Handler`], and what every consumer shares
//!   ([`ConsumerSettings`], subscription, the final commit, decoding a record);
//!   `batch`: [`BatchConsumer`] with its [`BatchHandler`].
//! - `dedupe`: the [`Dedupe`] port and [`MemoryDedupe`].

mod batch;
mod client;
mod consumer;
mod dedupe;
mod event;
mod groups;
mod producer;
mod topics;

pub use batch::{BatchConsumer, BatchHandler};
pub use client::{client_config, StaticMember};
pub use consumer::{
    lag_by_topic, record_consumer_lag, Consumer, ConsumerSettings, Handler, LagContext, Outcome, FETCH_WAIT_DEFAULT,
    STATISTICS_INTERVAL,
};
pub use dedupe::{Dedupe, MemoryDedupe};
pub use event::{Event, EventPayload, MAX_EVENT_BYTES};
pub use groups::GroupWatch;
pub use producer::Producer;
pub use topics::{ensure_topics, ensure_topics_retained, topic_config, TopicSpec, Topics};

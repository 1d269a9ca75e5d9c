//! The event bus against the real broker and Redis: dedupe of replayed events, resuming from
//! the committed offset after a restart, malformed records skipped without losing others.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use centralita_platform::bus::{
    ensure_topics, Consumer, ConsumerSettings, Dedupe, Event, Handler, Producer, TopicSpec,
};
use centralita_platform::cache::{connect, RedisDedupe, RedisHandle};
use centralita_platform::metrics::Metrics;
use centralita_platform::shutdown::Shutdown;
use centralita_platform::Error;
use centralita_proto::tenancy::v1 as pb;
use common::*;

/// Records the ids it handled; fails the first `fail_first` attempts.
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<uuid::Uuid>>>,
    fail_first: Arc<Mutex<usize>>,
}

impl Handler for Recorder {
    async fn handle(&mut self, event: &Event) -> Result<(), Error> {
        {
            let mut f = self.fail_first.lock().unwrap();
            if *f > 0 {
                *f -= 1;
                return Err(Error::Unavailable("test dependency".into()));
            }
        }
        self.seen.lock().unwrap().push(event.id);
        Ok(())
    }
}

async fn topic(partitions: i32) -> String {
    let name = unique("test.bus.");
    ensure_topics(&brokers(), 1, &[TopicSpec { name: name.clone(), partitions, compacted: false }]).await.unwrap();
    name
}

fn event(tenant: &str, n: u32) -> Event {
    let payload = pb::Tenant { display_name: format!("event {n}"), ..Default::default() };
    Event::new(centralita_platform::tenant::TenantId::parse(tenant).unwrap(), &payload)
}

async fn dedupe() -> RedisDedupe {
    RedisDedupe::new(RedisHandle::connected(connect(&redis_url()).await.unwrap()), Duration::from_secs(600))
}

fn start(
    topic: &str,
    group: &str,
    handler: Recorder,
    dedupe: RedisDedupe,
    metrics: Option<Arc<Metrics>>,
) -> (Shutdown, tokio::task::JoinHandle<Result<(), Error>>) {
    spawn_consumer(topic, group, None, handler, dedupe, metrics)
}

/// A consumer of `topic` in `group` (a static member when `instance` is given), running
/// until the returned shutdown is triggered.
fn spawn_consumer<D: Dedupe + Send + Sync + 'static>(
    topic: &str,
    group: &str,
    instance: Option<&str>,
    handler: Recorder,
    dedupe: D,
    metrics: Option<Arc<Metrics>>,
) -> (Shutdown, tokio::task::JoinHandle<Result<(), Error>>) {
    let settings = ConsumerSettings {
        brokers: brokers(),
        group_id: group.into(),
        topics: vec![topic.into()],
        fetch_wait: centralita_platform::bus::FETCH_WAIT_DEFAULT,
        group_instance_id: instance.map(Into::into),
    };
    let consumer = Consumer::new(settings, handler, dedupe, metrics).unwrap();
    let shutdown = Shutdown::new();
    let task = tokio::spawn(consumer.run(shutdown.clone()));
    (shutdown, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_event_is_handled_once() {
    let topic = topic(3).await;
    let producer = Producer::new(&brokers(), None).unwrap();
    let events: Vec<Event> = (0..5).map(|n| event("acme", n)).collect();
    for e in &events {
        producer.publish(&topic, "contact-1", e).await.unwrap();
    }
    // A replay: the same events (same ids) published again, as a producer retry would.
    for e in &events[1..3] {
        producer.publish(&topic, "contact-1", e).await.unwrap();
    }
    let recorder = Recorder::default();
    let metrics = Arc::new(Metrics::new("test"));
    let (stop, task) = start(&topic, &unique("g-"), recorder.clone(), dedupe().await, Some(metrics.clone()));
    assert!(eventually(Duration::from_secs(30), async || recorder.seen.lock().unwrap().len() >= 5).await);
    // Give the duplicates time to arrive and be skipped.
    assert!(
        eventually(Duration::from_secs(10), async || metrics.encode().contains("outcome=\"duplicate\"} 2")).await,
        "{}",
        metrics.encode()
    );
    stop.trigger();
    task.await.unwrap().unwrap();
    let seen = recorder.seen.lock().unwrap().clone();
    assert_eq!(seen, events.iter().map(|e| e.id).collect::<Vec<_>>(), "each once, in order of the key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_from_the_committed_offset() {
    let topic = topic(2).await;
    let group = unique("g-");
    let producer = Producer::new(&brokers(), None).unwrap();
    let first: Vec<Event> = (0..6).map(|n| event("acme", n)).collect();
    for (i, e) in first.iter().enumerate() {
        producer.publish(&topic, &format!("k{i}"), e).await.unwrap();
    }
    let r1 = Recorder::default();
    let (stop, task) = start(&topic, &group, r1.clone(), dedupe().await, None);
    assert!(eventually(Duration::from_secs(30), async || r1.seen.lock().unwrap().len() == 6).await);
    stop.trigger();
    task.await.unwrap().unwrap();

    let second: Vec<Event> = (6..10).map(|n| event("acme", n)).collect();
    for (i, e) in second.iter().enumerate() {
        producer.publish(&topic, &format!("k{i}"), e).await.unwrap();
    }
    let r2 = Recorder::default();
    // Same group, but a dedupe store that has never seen anything: an old event delivered
    // again would show up in r2, so only the committed offsets can keep it out.
    let settings = ConsumerSettings {
        brokers: brokers(),
        group_id: group.clone(),
        topics: vec![topic.clone()],
        fetch_wait: centralita_platform::bus::FETCH_WAIT_DEFAULT,
        group_instance_id: None,
    };
    let consumer = Consumer::new(settings, r2.clone(), centralita_platform::bus::MemoryDedupe::new(100), None).unwrap();
    let stop2 = Shutdown::new();
    let task2 = tokio::spawn(consumer.run(stop2.clone()));
    assert!(eventually(Duration::from_secs(30), async || r2.seen.lock().unwrap().len() >= 4).await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop2.trigger();
    task2.await.unwrap().unwrap();
    let mut got = r2.seen.lock().unwrap().clone();
    got.sort();
    let mut want: Vec<_> = second.iter().map(|e| e.id).collect();
    want.sort();
    assert_eq!(got, want, "after restart only the new events are delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_handler_is_retried_and_malformed_records_are_skipped() {
    let topic = topic(1).await;
    // A record that is not an envelope, written with a plain producer.
    let raw: rdkafka::producer::FutureProducer = centralita_platform::bus::client_config(&brokers()).create().unwrap();
    raw.send(
        rdkafka::producer::FutureRecord::to(&topic).key("x").payload(&b"\x08\x96\x01 not an envelope"[..]),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let producer = Producer::new(&brokers(), None).unwrap();
    let good = event("acme", 1);
    producer.publish(&topic, "x", &good).await.unwrap();
    let recorder = Recorder { fail_first: Arc::new(Mutex::new(2)), ..Default::default() };
    let metrics = Arc::new(Metrics::new("test"));
    let (stop, task) = start(&topic, &unique("g-"), recorder.clone(), dedupe().await, Some(metrics.clone()));
    assert!(eventually(Duration::from_secs(30), async || recorder.seen.lock().unwrap().len() == 1).await);
    stop.trigger();
    task.await.unwrap().unwrap();
    assert_eq!(recorder.seen.lock().unwrap()[0], good.id);
    let text = metrics.encode();
    assert!(text.contains("outcome=\"malformed\"} 1"), "{text}");
    assert!(text.contains("outcome=\"handled\"} 1"), "{text}");
}

/// A static member (`group.instance.id` = `instance`) of `group` on `topic`, consuming into
/// `recorder` until the returned shutdown is triggered.
fn start_static(
    topic: &str,
    group: &str,
    instance: &str,
    recorder: Recorder,
) -> (Shutdown, tokio::task::JoinHandle<Result<(), Error>>) {
    spawn_consumer(topic, group, Some(instance), recorder, centralita_platform::bus::MemoryDedupe::new(1000), None)
}

/// A static member (`group.instance.id`) that is gone for good — a replica renamed or scaled
/// away; librdkafka sends no LeaveGroup for a static member — must not hold its group: the
/// broker expires it after the session timeout (10 s), as Kafka does, and the next member
/// takes the partitions. tansu 0.6 checked missed heartbeats only on a dynamic member's
/// requests, so a group of static members whose leader never came back stayed forming
/// forever (routing made no offers, CRM folded no contacts); `deploy/local/tansu-broker.patch`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_member_gone_for_good_is_expired_and_another_takes_over() {
    let topic = topic(1).await;
    let group = unique("g-static-");
    let producer = Producer::new(&brokers(), None).unwrap();
    let first = event("acme", 1);
    producer.publish(&topic, "k", &first).await.unwrap();
    let r1 = Recorder::default();
    let (stop, task) = start_static(&topic, &group, "replica-a", r1.clone());
    assert!(eventually(Duration::from_secs(30), async || r1.seen.lock().unwrap().len() == 1).await);
    stop.trigger();
    task.await.unwrap().unwrap();

    let second = event("acme", 2);
    producer.publish(&topic, "k", &second).await.unwrap();
    let r2 = Recorder::default();
    let started = std::time::Instant::now();
    let (stop, task) = start_static(&topic, &group, "replica-b", r2.clone());
    let took_over = eventually(Duration::from_secs(60), async || r2.seen.lock().unwrap().contains(&second.id)).await;
    let after = started.elapsed();
    stop.trigger();
    task.await.unwrap().unwrap();
    assert!(took_over, "replica-b never got the group's partition: replica-a still holds it");
    assert_eq!(*r2.seen.lock().unwrap(), vec![second.id], "only what replica-a had not committed");
    eprintln!("replica-b consumed {after:?} after it started");
}

/// Two static members share a formed group; the leader (the first to join) dies without
/// leaving. The live member must end up with every partition. tansu 0.6's formed group expired
/// the dead member on the live one's heartbeat but stayed formed: the live member rejoined as
/// an existing member, got its old assignment back, and the dead member's partitions stayed
/// assigned to nobody (a chaos run's routing, two replicas, one killed). `tansu-broker.patch`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_formed_groups_leader_that_dies_is_replaced_by_the_live_member() {
    let topic = topic(2).await;
    let group = unique("g-leader-");
    let producer = Producer::new(&brokers(), None).unwrap();
    let start = |instance: &str, r: Recorder| start_static(&topic, &group, instance, r);
    // The first member joins alone and leads; the second joins; both consume (a record on
    // each partition, keys chosen until both members have had one).
    let (ra, rb) = (Recorder::default(), Recorder::default());
    let (stop_a, task_a) = start("replica-a", ra.clone());
    assert!(
        eventually(Duration::from_secs(30), async || {
            producer.publish(&topic, &unique("k"), &event("acme", 0)).await.unwrap();
            !ra.seen.lock().unwrap().is_empty()
        })
        .await
    );
    let (stop_b, task_b) = start("replica-b", rb.clone());
    assert!(
        eventually(Duration::from_secs(60), async || {
            producer.publish(&topic, &unique("k"), &event("acme", 1)).await.unwrap();
            !rb.seen.lock().unwrap().is_empty()
        })
        .await,
        "replica-b never got a partition"
    );
    // The leader (replica-a, the first to join) dies: a static member sends no LeaveGroup.
    stop_a.trigger();
    task_a.await.unwrap().unwrap();
    let before = rb.seen.lock().unwrap().len();
    let started = std::time::Instant::now();
    // replica-b must end up consuming both partitions: 20 records on 20 keys, all of them.
    let last: Vec<Event> = (0..20).map(|n| event("acme", 100 + n)).collect();
    for (i, e) in last.iter().enumerate() {
        producer.publish(&topic, &format!("last-{i}"), e).await.unwrap();
    }
    let all = eventually(Duration::from_secs(90), async || {
        let seen = rb.seen.lock().unwrap();
        last.iter().all(|e| seen.contains(&e.id))
    })
    .await;
    let after = started.elapsed();
    stop_b.trigger();
    task_b.await.unwrap().unwrap();
    let seen = rb.seen.lock().unwrap().len();
    assert!(all, "replica-b consumed {} records after replica-a died, not all 20 of both partitions", seen - before);
    eprintln!("replica-b had both partitions' records {after:?} after replica-a died");
}

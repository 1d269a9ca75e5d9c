//! The event log survives its broker: a tansu broker on `postgres://` storage (the local
//! stack's durable mode, `CENTRALITA_BROKER_STORAGE=postgres`), killed with SIGKILL in the
//! middle of a load and started again on the same storage, has lost nothing it acknowledged,
//! and consumer groups resume from the offsets they committed before the kill; stopped and
//! started, it keeps its topics (the compacted tenants topic with its cleanup policy, and the
//! latest configuration of every tenant) and their history.
//!
//! Each test starts its own broker (never the stack's shared one) on a free port, with its
//! own schema in the broker database `tansu` that `deploy/local/stack.sh up` creates, laid
//! out by `deploy/local/tansu-postgres.sql`; the schema is dropped at the end of the test.
//!
//! The live group is killed while stable. A kill while a group is still forming is a known
//! gap of tansu 0.6 on this storage, seen while writing this test: the group came back stuck
//! in `Forming` under a leader member id from before the restart, and the rejoined static
//! member consumed one of three partitions, never the other two.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use centralita_platform::bus::{
    client_config, ensure_topics, Consumer, ConsumerSettings, Event, Handler, MemoryDedupe, Producer, TopicSpec,
};
use centralita_platform::shutdown::Shutdown;
use centralita_platform::tenant_feed::load_snapshot;
use centralita_platform::Error;
use centralita_proto::tenancy::v1 as pb;
use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

/// The broker database of the local stack (role and database `tansu`, see stack.sh).
fn broker_database_url() -> String {
    std::env::var("CENTRALITA_BROKER_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://tansu:tansu@127.0.0.1:5440/tansu".into())
}

fn tansu_bin() -> PathBuf {
    std::env::var_os("TANSU_BIN").map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").expect("HOME");
        PathBuf::from(home).join(".cache/centralita/tools/bin/tansu")
    })
}

/// One tansu process on postgres storage in a schema of its own, restartable on the same
/// port and storage.
struct Broker {
    port: u16,
    schema: String,
    log: PathBuf,
    child: Option<Child>,
}

impl Broker {
    async fn start() -> Broker {
        let schema = unique("broker_test_");
        let (client, conn) = tokio_postgres::connect(&broker_database_url(), tokio_postgres::NoTls)
            .await
            .expect("the broker database (deploy/local/stack.sh up creates role and database tansu)");
        tokio::spawn(conn);
        let ddl = std::fs::read_to_string(repo_file("deploy/local/tansu-postgres.sql")).unwrap();
        client
            .batch_execute(&format!("create schema {schema}; set search_path = {schema}; {ddl}"))
            .await
            .expect("tansu's schema");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = std::env::temp_dir().join(format!("{schema}.log"));
        let mut broker = Broker { port, schema, log, child: None };
        broker.spawn().await;
        broker
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn storage(&self) -> String {
        let url = broker_database_url();
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}sslmode=disable&options=-csearch_path%3D{}", self.schema)
    }

    async fn spawn(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let child = Command::new(tansu_bin())
            .arg("broker")
            .args(["--listener-url", &format!("tcp://{}", self.addr())])
            .args(["--advertised-listener-url", &format!("tcp://{}", self.addr())])
            .args(["--storage-engine", &self.storage()])
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", tansu_bin().display()));
        self.child = Some(child);
        let addr = self.addr();
        assert!(
            eventually(Duration::from_secs(10), async || tokio::net::TcpStream::connect(&addr).await.is_ok()).await,
            "tansu did not open {addr}; its log: {}",
            self.log.display()
        );
    }

    /// SIGKILL: no shutdown of any kind, as a crashed node.
    fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Stops the process and drops its schema.
    async fn remove(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let (client, conn) = tokio_postgres::connect(&broker_database_url(), tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        client.batch_execute(&format!("drop schema {} cascade", self.schema)).await.unwrap();
        let _ = std::fs::remove_file(&self.log);
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("broker log (schema {} left for inspection): {}", self.schema, self.log.display());
        }
    }
}

/// Records the ids it handled.
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<uuid::Uuid>>>,
}

impl Handler for Recorder {
    async fn handle(&mut self, event: &Event) -> Result<(), Error> {
        self.seen.lock().unwrap().push(event.id);
        Ok(())
    }
}

impl Recorder {
    fn ids(&self) -> HashSet<uuid::Uuid> {
        self.seen.lock().unwrap().iter().copied().collect()
    }
}

fn event(n: u32) -> Event {
    let payload = pb::Tenant { display_name: format!("event {n}"), ..Default::default() };
    Event::new(centralita_platform::tenant::TenantId::parse("acme").unwrap(), &payload)
}

fn consume(
    brokers: &str,
    topic: &str,
    group: &str,
    instance: Option<&str>,
    recorder: Recorder,
) -> (Shutdown, tokio::task::JoinHandle<Result<(), Error>>) {
    let settings = ConsumerSettings {
        brokers: brokers.into(),
        group_id: group.into(),
        topics: vec![topic.into()],
        fetch_wait: centralita_platform::bus::FETCH_WAIT_DEFAULT,
        group_instance_id: instance.map(str::to_owned),
    };
    let consumer = Consumer::new(settings, recorder, MemoryDedupe::new(100_000), None).unwrap();
    let shutdown = Shutdown::new();
    (shutdown.clone(), tokio::spawn(consumer.run(shutdown)))
}

/// Every record of `topic` from the beginning up to its current end: the event id of each
/// (from the `ce_id` header) by partition and offset.
async fn read_all(brokers: &str, topic: &str, partitions: i32) -> BTreeMap<(i32, i64), uuid::Uuid> {
    let (brokers, topic) = (brokers.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = client_config(&brokers)
            .set("group.id", unique("reader-"))
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut ends = BTreeMap::new();
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            let (_, high) = c.fetch_watermarks(&topic, p, Duration::from_secs(10)).unwrap();
            ends.insert(p, high);
            tpl.add_partition_offset(&topic, p, Offset::Beginning).unwrap();
        }
        c.assign(&tpl).unwrap();
        let mut next: BTreeMap<i32, i64> = (0..partitions).map(|p| (p, 0)).collect();
        let mut ids: BTreeMap<(i32, i64), uuid::Uuid> = BTreeMap::new();
        let end = Instant::now() + Duration::from_secs(120);
        while next.iter().any(|(p, o)| *o < ends[p]) {
            assert!(Instant::now() < end, "read {} records of {ends:?} in 2 minutes", ids.len());
            let Some(m) = c.poll(Duration::from_millis(500)) else { continue };
            let m = m.unwrap();
            let id = m.headers().and_then(|h| h.iter().find(|h| h.key == "ce_id")).and_then(|h| h.value).unwrap();
            ids.insert((m.partition(), m.offset()), std::str::from_utf8(id).unwrap().parse().unwrap());
            next.insert(m.partition(), m.offset() + 1);
        }
        ids
    })
    .await
    .unwrap()
}

/// Produces `count` events at about `rate` per second, each handed to the producer as soon
/// as it is due (many in flight), and returns the ids the broker acknowledged and how many
/// deliveries failed, with the time each event was handed over.
async fn produce(producer: &Producer, topic: &str, count: u32, rate: u32) -> (Vec<(Instant, uuid::Uuid)>, usize) {
    let start = tokio::time::Instant::now();
    let mut deliveries = tokio::task::JoinSet::new();
    for n in 0..count {
        tokio::time::sleep_until(start + Duration::from_secs(1) * n / rate).await;
        let e = event(n);
        let (id, at) = (e.id, Instant::now());
        let delivery = producer.enqueue(topic, &format!("contact-{}", n % 64), &e).unwrap();
        deliveries.spawn(async move { delivery.await.map(|_| (at, id)) });
    }
    let (mut acked, mut failed) = (Vec::new(), 0);
    while let Some(r) = deliveries.join_next().await {
        match r.unwrap() {
            Ok(a) => acked.push(a),
            Err(e) => {
                failed += 1;
                eprintln!("delivery failed: {e}");
            }
        }
    }
    (acked, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_events_and_committed_offsets_survive_a_kill_9_mid_load() {
    let mut broker = Broker::start().await;
    let brokers = broker.addr();
    let topic = unique("contacts-");
    ensure_topics(&brokers, 1, &[TopicSpec { name: topic.clone(), partitions: 3, compacted: false }]).await.unwrap();
    let producer = Producer::new(&brokers, None).unwrap();

    // Before the kill: a first batch, read and committed by group `early`, which then stops.
    let (first, failed) = produce(&producer, &topic, 300, 1000).await;
    assert_eq!((first.len(), failed), (300, 0));
    let first: HashSet<uuid::Uuid> = first.into_iter().map(|(_, id)| id).collect();
    let early_group = unique("early-");
    let early = Recorder::default();
    let (stop, task) = consume(&brokers, &topic, &early_group, None, early.clone());
    assert!(eventually(Duration::from_secs(60), async || early.ids().len() == first.len()).await);
    stop.trigger();
    task.await.unwrap().unwrap();
    assert_eq!(early.ids(), first);

    // Group `live` (a static member) consumes all along, through the kill. It has joined
    // and read the first batch before the load starts: the kill hits a stable group (a group
    // still forming is another matter, see the module's docs).
    let live = Recorder::default();
    let (live_stop, live_task) = consume(&brokers, &topic, &unique("live-"), Some("live-1"), live.clone());
    assert!(eventually(Duration::from_secs(60), async || live.ids().is_superset(&first)).await);

    // The load: 3,000 events at 300/s; the broker is killed with SIGKILL 2 s in and started
    // again on the same storage 2 s later.
    let load = {
        let (producer, topic) = (producer.clone(), topic.clone());
        tokio::spawn(async move { produce(&producer, &topic, 3000, 300).await })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    broker.kill9();
    let killed_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    broker.spawn().await;
    let (second, failed) = load.await.unwrap();
    eprintln!("load: {} acknowledged, {failed} failed", second.len());
    // A delivery may fail only if it was in flight while the broker was down; everything
    // handed over a second after the restart was acknowledged.
    let after_restart = killed_at + Duration::from_secs(3);
    let handed_after = second.iter().filter(|(at, _)| *at > after_restart).count();
    assert!(handed_after > 500, "the producer kept delivering after the restart ({handed_after} acknowledged)");
    assert!(failed <= 600, "{failed} of 3000 deliveries failed");
    let second: HashSet<uuid::Uuid> = second.into_iter().map(|(_, id)| id).collect();

    // Nothing acknowledged is missing from the log; duplicates (tansu's idempotent-producer
    // dedupe is incomplete) are counted, and consumers drop them by event id.
    let log = read_all(&brokers, &topic, 3).await;
    let distinct: HashSet<uuid::Uuid> = log.values().copied().collect();
    let missing: Vec<_> = first.union(&second).filter(|id| !distinct.contains(id)).collect();
    assert!(missing.is_empty(), "{} acknowledged events are not in the log: {missing:?}", missing.len());
    eprintln!(
        "log: {} records, {} distinct events, {} duplicates",
        log.len(),
        distinct.len(),
        log.len() - distinct.len()
    );

    // The live group rode out the kill and has every event.
    let all: HashSet<uuid::Uuid> = first.union(&second).copied().collect();
    let complete = eventually(Duration::from_secs(60), async || live.ids().is_superset(&all)).await;
    let have = live.ids();
    let not_seen: Vec<_> = log.iter().filter(|(_, id)| !have.contains(id)).map(|(at, _)| at).collect();
    assert!(
        complete,
        "the live group lacks {} acknowledged events, at (partition, offset) {not_seen:?}",
        not_seen.len()
    );
    live_stop.trigger();
    live_task.await.unwrap().unwrap();

    // Group `early`, committed before the kill, resumes from its committed offsets: with an
    // empty dedupe store, none of the first batch comes back, and all of the load arrives.
    let resumed = Recorder::default();
    let (stop, task) = consume(&brokers, &topic, &early_group, None, resumed.clone());
    assert!(eventually(Duration::from_secs(60), async || resumed.ids().is_superset(&second)).await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.trigger();
    task.await.unwrap().unwrap();
    let again: Vec<_> = resumed.ids().intersection(&first).copied().collect();
    assert!(again.is_empty(), "{} events committed before the kill were delivered again", again.len());

    broker.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_broker_keeps_the_tenants_topic_and_the_history() {
    let mut broker = Broker::start().await;
    let brokers = broker.addr();
    let tenants = unique("tenants-");
    let history = unique("contacts-");
    ensure_topics(
        &brokers,
        1,
        &[
            TopicSpec { name: tenants.clone(), partitions: 1, compacted: true },
            TopicSpec { name: history.clone(), partitions: 3, compacted: false },
        ],
    )
    .await
    .unwrap();
    let producer = Producer::new(&brokers, None).unwrap();
    let (a, b) = (unique("keep-a-"), unique("keep-b-"));
    // Tenant a twice (its quota changed), tenant b once: a compacted topic's reader must end
    // with a's latest configuration.
    for t in [tenant(&a, 10), tenant(&b, 10), tenant(&a, 25)] {
        let e = Event::new(t.id.clone(), &pb::Tenant::from(&t));
        producer.publish(&tenants, t.id.as_str(), &e).await.unwrap();
    }
    let (events, failed) = produce(&producer, &history, 200, 1000).await;
    assert_eq!(failed, 0);
    let events: HashSet<uuid::Uuid> = events.into_iter().map(|(_, id)| id).collect();

    broker.kill9();
    broker.spawn().await;

    let registry = load_snapshot(&brokers, &tenants, Duration::from_secs(30)).await.unwrap();
    let id = |s: &str| centralita_platform::tenant::TenantId::parse(s).unwrap();
    assert_eq!(registry.get(&id(&a)).expect("tenant a").quotas.api_requests_per_second, 25);
    assert_eq!(registry.get(&id(&b)).expect("tenant b").quotas.api_requests_per_second, 10);
    assert_eq!(registry.list().len(), 2);
    let log: HashSet<uuid::Uuid> = read_all(&brokers, &history, 3).await.into_values().collect();
    assert_eq!(log, events, "the history is whole after the restart");

    // The tenants topic is still compacted, and the history topic still has its partitions.
    let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        client_config(&brokers).create().unwrap();
    let described = admin
        .describe_configs(
            [&rdkafka::admin::ResourceSpecifier::Topic(&tenants)],
            &rdkafka::admin::AdminOptions::new().request_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .unwrap();
    let config = described.into_iter().next().unwrap().unwrap();
    assert_eq!(config.get("cleanup.policy").and_then(|e| e.value.as_deref()), Some("compact"));
    let md = tokio::task::spawn_blocking({
        let (brokers, history) = (brokers.clone(), history.clone());
        move || {
            let c: BaseConsumer = client_config(&brokers).create().unwrap();
            c.fetch_metadata(Some(&history), Duration::from_secs(10)).unwrap().topics()[0].partitions().len()
        }
    })
    .await
    .unwrap();
    assert_eq!(md, 3);

    broker.remove().await;
}

//! The conversation store against the local stack's PostgreSQL and Kafka-protocol broker:
//! sequences under concurrent writers, idempotent sends, the status lattice as stored,
//! tenant row-level security, and the outbox published on the conversations topic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use centralita_media::digital::model::{Kind, NewMessage, Sender, Status};
use centralita_media::digital::schema::MIGRATIONS;
use centralita_media::digital::store::{self, NewConversation, Party};
use centralita_platform::bus::{ensure_topics, Event, Producer, TopicSpec, Topics};
use centralita_platform::tenant::TenantId;
use centralita_platform::testkit::{self, unique};
use centralita_proto::media::v1 as pb;

/// A pool on a schema of this test's own, migrated like `media`: running services' relays
/// (which share the database) never take this test's outbox. Dropped by [`drop_schema`].
async fn pool() -> deadpool_postgres::Pool {
    let schema: &'static str = Box::leak(unique("media_t_").into_boxed_str());
    let pool = centralita_platform::db::pool(testkit::postgres().url.expose(), schema, 8).unwrap();
    let migrations = centralita_platform::db::Migrations { schema, steps: MIGRATIONS.steps };
    centralita_platform::db::migrate(&pool, &migrations).await.unwrap();
    pool
}

async fn drop_schema(pool: deadpool_postgres::Pool) {
    let client = pool.get().await.unwrap();
    let schema: String = client.query_one("SELECT current_schema()", &[]).await.unwrap().get(0);
    assert!(schema.starts_with("media_t_"), "{schema}");
    client.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await.unwrap();
}

fn text(sender: Sender, body: &str, request_id: &str) -> NewMessage {
    NewMessage {
        sender,
        kind: Kind::Text,
        text: body.into(),
        provider_time: None,
        request_id: request_id.into(),
        attachment: None,
    }
}

async fn conversation(pool: &deadpool_postgres::Pool, tenant: &TenantId) -> String {
    let contact = uuid::Uuid::now_v7().simple().to_string();
    let c = NewConversation {
        contact_id: contact.clone(),
        channel: "chat",
        queue: "support".into(),
        visitor: "v-1".into(),
        origin: "https://shop.example".into(),
    };
    assert!(store::create_conversation(pool, tenant, &c, "Chat started").await.unwrap());
    // Creating it again changes nothing.
    assert!(!store::create_conversation(pool, tenant, &c, "Chat started").await.unwrap());
    contact
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequences_have_no_gaps_or_repeats_under_concurrent_writers() {
    let pool = pool().await;
    let tenant = TenantId::parse(&unique("dg-a-")).unwrap();
    let contact = conversation(&pool, &tenant).await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (pool, tenant, contact) = (pool.clone(), tenant.clone(), contact.clone());
        tasks.push(tokio::spawn(async move {
            let sender = if i % 2 == 0 { Sender::Customer } else { Sender::Agent("bob".into()) };
            store::append(&pool, &tenant, &contact, &text(sender, &format!("m{i}"), "")).await.unwrap().unwrap()
        }));
    }
    let mut seqs = BTreeSet::new();
    for t in tasks {
        let (m, created) = t.await.unwrap();
        assert!(created);
        assert!(seqs.insert(m.sequence), "sequence {} given twice", m.sequence);
    }
    assert_eq!(seqs, (2..=21).collect::<BTreeSet<i64>>(), "1 is the notice; then 2..=21 without gaps");
    let all = store::messages_after(&pool, &tenant, &contact, 0, 100).await.unwrap();
    assert_eq!(all.iter().map(|m| m.sequence).collect::<Vec<_>>(), (1..=21).collect::<Vec<_>>());
    assert_eq!(all[0].sender, Sender::System);
    assert_eq!(all[0].kind, Kind::Notice);
    let page = store::messages_after(&pool, &tenant, &contact, 5, 3).await.unwrap();
    assert_eq!(page.iter().map(|m| m.sequence).collect::<Vec<_>>(), [6, 7, 8]);
    drop_schema(pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_send_is_stored_once() {
    let pool = pool().await;
    let tenant = TenantId::parse(&unique("dg-a-")).unwrap();
    let contact = conversation(&pool, &tenant).await;
    let (first, created) =
        store::append(&pool, &tenant, &contact, &text(Sender::Customer, "hola", "r-1")).await.unwrap().unwrap();
    assert!(created);
    let (again, created) =
        store::append(&pool, &tenant, &contact, &text(Sender::Customer, "hola", "r-1")).await.unwrap().unwrap();
    assert!(!created);
    assert_eq!(again, first);
    // The same key from the other party is another message.
    let (other, created) = store::append(&pool, &tenant, &contact, &text(Sender::Agent("bob".into()), "hi", "r-1"))
        .await
        .unwrap()
        .unwrap();
    assert!(created);
    assert_eq!(other.sequence, first.sequence + 1);
    let head = store::conversation(&pool, &tenant, &contact).await.unwrap().unwrap();
    assert_eq!(head.last_seq, other.sequence, "the retry took no sequence");
    drop_schema(pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_status_never_moves_back_and_read_markers_only_forward() {
    let pool = pool().await;
    let tenant = TenantId::parse(&unique("dg-a-")).unwrap();
    let contact = conversation(&pool, &tenant).await;
    let (m, _) =
        store::append(&pool, &tenant, &contact, &text(Sender::Agent("bob".into()), "hi", "")).await.unwrap().unwrap();
    assert_eq!(m.status, Status::Sent);
    let s = |r| store::report_status(&pool, &tenant, &contact, m.sequence, r, "carrier said no", None);
    assert_eq!(s(Status::Read).await.unwrap(), Some(Status::Read));
    assert_eq!(s(Status::Delivered).await.unwrap(), Some(Status::Read), "late delivered");
    assert_eq!(s(Status::Failed).await.unwrap(), Some(Status::Read), "late failure");
    assert_eq!(s(Status::Sent).await.unwrap(), Some(Status::Read));
    assert_eq!(store::report_status(&pool, &tenant, &contact, 999, Status::Read, "", None).await.unwrap(), None);

    let (m2, _) =
        store::append(&pool, &tenant, &contact, &text(Sender::Agent("bob".into()), "and?", "")).await.unwrap().unwrap();
    let (c1, _) = store::append(&pool, &tenant, &contact, &text(Sender::Customer, "ok", "")).await.unwrap().unwrap();
    // The customer got everything up to now (capped at the last sequence).
    assert_eq!(
        store::mark(&pool, &tenant, &contact, Party::Customer, 1000, Status::Delivered).await.unwrap(),
        Some(c1.sequence)
    );
    // ...read up to m2, then a stale read marker for m: the marker stays at m2.
    store::mark(&pool, &tenant, &contact, Party::Customer, m2.sequence, Status::Read).await.unwrap();
    store::mark(&pool, &tenant, &contact, Party::Customer, m.sequence, Status::Read).await.unwrap();
    let head = store::conversation(&pool, &tenant, &contact).await.unwrap().unwrap();
    assert_eq!(head.customer_read_seq, m2.sequence);
    assert_eq!(head.agent_read_seq, 0);
    let all = store::messages_after(&pool, &tenant, &contact, 0, 100).await.unwrap();
    let status_of = |seq| all.iter().find(|x| x.sequence == seq).unwrap().status;
    assert_eq!(status_of(m2.sequence), Status::Read);
    assert_eq!(status_of(c1.sequence), Status::Sent, "the customer's own message is not marked by the customer");
    assert_eq!(status_of(1), Status::Sent, "notices carry no delivery");

    assert!(store::set_typing(&pool, &tenant, &contact, Party::Customer, true).await.unwrap());
    let head = store::conversation(&pool, &tenant, &contact).await.unwrap().unwrap();
    assert!(head.customer_typing && !head.agent_typing);
    store::set_typing(&pool, &tenant, &contact, Party::Customer, false).await.unwrap();
    assert!(!store::conversation(&pool, &tenant, &contact).await.unwrap().unwrap().customer_typing);
    drop_schema(pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenant_sees_and_writes_nothing() {
    let pool = pool().await;
    let a = TenantId::parse(&unique("dg-a-")).unwrap();
    let b = TenantId::parse(&unique("dg-b-")).unwrap();
    let contact = conversation(&pool, &a).await;
    assert_eq!(store::conversation(&pool, &b, &contact).await.unwrap(), None);
    assert!(store::messages_after(&pool, &b, &contact, 0, 100).await.unwrap().is_empty());
    assert!(store::append(&pool, &b, &contact, &text(Sender::Customer, "x", "")).await.unwrap().is_none());
    assert_eq!(store::report_status(&pool, &b, &contact, 1, Status::Read, "", None).await.unwrap(), None);
    assert_eq!(store::mark(&pool, &b, &contact, Party::Agent, 5, Status::Read).await.unwrap(), None);
    assert!(!store::set_typing(&pool, &b, &contact, Party::Agent, true).await.unwrap());
    // Without a tenant set, row-level security shows no row at all.
    let client = pool.get().await.unwrap();
    let n: i64 =
        client.query_one("SELECT count(*) FROM messages WHERE contact_id = $1", &[&contact]).await.unwrap().get(0);
    assert_eq!(n, 0);
    // And A still has exactly its one notice.
    assert_eq!(store::messages_after(&pool, &a, &contact, 0, 100).await.unwrap().len(), 1);
    drop(client);
    drop_schema(pool).await;
}

/// Every event of the conversations topic about `contact`, read from the start.
fn events_of(topic: &str, contact: &str) -> Vec<pb::ConversationEvent> {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    use rdkafka::Message as _;
    let consumer: BaseConsumer = centralita_platform::bus::client_config(&testkit::brokers())
        .set("group.id", unique("dg-read-"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let meta = consumer.fetch_metadata(Some(topic), Duration::from_secs(5)).unwrap();
    let mut list = rdkafka::TopicPartitionList::new();
    let mut ends = Vec::new();
    for p in meta.topics()[0].partitions() {
        list.add_partition_offset(topic, p.id(), rdkafka::Offset::Beginning).unwrap();
        let (_, high) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(5)).unwrap();
        ends.push((p.id(), high));
    }
    consumer.assign(&list).unwrap();
    let mut seen: std::collections::BTreeMap<i32, i64> = Default::default();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while ends.iter().any(|(p, high)| seen.get(p).map_or(0, |o| o + 1) < *high) && std::time::Instant::now() < deadline
    {
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) else { continue };
        seen.insert(m.partition(), m.offset());
        if m.key() != Some(contact.as_bytes()) {
            continue;
        }
        let event = Event::decode(m.payload().unwrap_or_default()).unwrap();
        out.push(event.payload::<pb::ConversationEvent>().unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_the_conversations_topic_through_the_outbox() {
    let pool = pool().await;
    let topics = Topics::new(unique("dg-") + ".");
    let topic = topics.name(store::TOPIC_BASE);
    ensure_topics(&testkit::brokers(), 1, &[TopicSpec { name: topic.clone(), partitions: 3, compacted: false }])
        .await
        .unwrap();
    let tenant = TenantId::parse(&unique("dg-a-")).unwrap();
    let contact = conversation(&pool, &tenant).await;
    let (c, _) = store::append(&pool, &tenant, &contact, &text(Sender::Customer, "hola", "")).await.unwrap().unwrap();
    let (a, _) =
        store::append(&pool, &tenant, &contact, &text(Sender::Agent("bob".into()), "hi", "")).await.unwrap().unwrap();
    store::report_status(&pool, &tenant, &contact, a.sequence, Status::Delivered, "", None).await.unwrap();
    // Repeated: no second event.
    store::report_status(&pool, &tenant, &contact, a.sequence, Status::Delivered, "", None).await.unwrap();
    let producer = Producer::new(&testkit::brokers(), None).unwrap();
    assert_eq!(centralita_media::digital::relay_once(&pool, &producer, &topics).await.unwrap(), 4);
    let events = events_of(&topic, &contact);
    let name = format!("tenants/{tenant}/contacts/{contact}");
    assert!(events.iter().all(|e| e.contact == name));
    use pb::conversation_event::Kind as K;
    let kinds: Vec<String> = events
        .iter()
        .map(|e| match e.kind.as_ref().unwrap() {
            K::MessageReceived(m) => format!("received {} {}", m.sequence, m.text),
            K::MessageSent(m) => format!("sent {} {}", m.sequence, m.text),
            K::StatusChanged(s) => format!("status {} {}", s.sequence, s.status),
        })
        .collect();
    // References only: the text stays in media's store (issue 23).
    assert_eq!(
        kinds,
        [
            "sent 1 ".to_owned(),
            format!("received {} ", c.sequence),
            format!("sent {} ", a.sequence),
            format!("status {} {}", a.sequence, pb::DeliveryStatus::Delivered as i32),
        ]
    );
    assert!(store::pending(&pool, 10).await.unwrap().is_empty(), "published events leave the outbox");
    drop_schema(pool).await;
}

/// SMS: an inbound provider id is stored once (concurrent redeliveries included), the
/// customer's conversation with a number is found, an outbound id finds its message, and
/// another tenant sees none of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sms_ids_are_stored_once_and_stay_in_their_tenant() {
    let pool = pool().await;
    let tenant = TenantId::parse(&unique("dg-sms-a-")).unwrap();
    let other = TenantId::parse(&unique("dg-sms-b-")).unwrap();
    let contact = uuid::Uuid::now_v7().simple().to_string();
    let c = NewConversation {
        contact_id: contact.clone(),
        channel: store::SMS,
        queue: "support".into(),
        visitor: "+34600000001".into(),
        origin: "+15550001111".into(),
    };
    assert!(store::create_conversation(&pool, &tenant, &c, "SMS conversation started").await.unwrap());
    assert_eq!(
        store::latest_sms_conversation(&pool, &tenant, "+34600000001", "+15550001111").await.unwrap(),
        Some(contact.clone())
    );
    assert_eq!(store::latest_sms_conversation(&pool, &tenant, "+34600000001", "+15550002222").await.unwrap(), None);
    assert_eq!(store::latest_sms_conversation(&pool, &other, "+34600000001", "+15550001111").await.unwrap(), None);

    let sid = "SM0123456789abcdef0123456789abcdef";
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (pool, tenant, contact) = (pool.clone(), tenant.clone(), contact.clone());
        tasks.push(tokio::spawn(async move {
            store::append_inbound_sms(&pool, &tenant, &contact, sid, &text(Sender::Customer, "hola", sid))
                .await
                .unwrap()
        }));
    }
    let mut stored = 0;
    for t in tasks {
        stored += usize::from(t.await.unwrap().is_some());
    }
    assert_eq!(stored, 1, "one of eight concurrent deliveries of an id is stored");
    let all = store::messages_after(&pool, &tenant, &contact, 0, 100).await.unwrap();
    assert_eq!(all.iter().map(|m| m.sequence).collect::<Vec<_>>(), [1, 2], "no gap left by the refused ones");
    assert!(store::sms_known(&pool, &tenant, sid).await.unwrap());
    assert!(!store::sms_known(&pool, &other, sid).await.unwrap(), "another tenant does not see the id");

    let (reply, _) = store::append(&pool, &tenant, &contact, &text(Sender::Agent("bob".into()), "ok", "r-1"))
        .await
        .unwrap()
        .unwrap();
    let out = "SMfedcba9876543210fedcba9876543210";
    store::record_outbound_sms(&pool, &tenant, &contact, reply.sequence, out).await.unwrap();
    assert_eq!(store::outbound_sms(&pool, &tenant, out).await.unwrap(), Some((contact.clone(), reply.sequence)));
    assert_eq!(store::outbound_sms(&pool, &tenant, sid).await.unwrap(), None, "an inbound id is not an outbound one");
    assert_eq!(store::outbound_sms(&pool, &other, out).await.unwrap(), None);
    // Another tenant cannot claim the same conversation's messages under its name.
    assert!(store::record_outbound_sms(&pool, &other, &contact, reply.sequence, out).await.is_err());
    drop_schema(pool).await;
}

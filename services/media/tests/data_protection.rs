//! Erasure and retention of conversations against the local stack's PostgreSQL and
//! Kafka-protocol broker: CRM's `CustomerErased` deletes everything schema `media` holds
//! about the erased customer's contacts in its own tenant (and nothing of another customer
//! or another tenant), media reports `StoreErased` for store `media`, a repeated erasure
//! deletes nothing more; the sweeper deletes only conversations whose last activity is past
//! their tenant's `dataRetentionDays` with the clock moved on, again nothing on a second
//! pass; the contacts topic's ends are recorded once, in their own tenant only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use centralita_media::digital::erasure::{self, ErasureHandler};
use centralita_media::digital::model::{Kind, NewAttachment, NewMessage, Sender};
use centralita_media::digital::retention::{self, EndsHandler};
use centralita_media::digital::schema::MIGRATIONS;
use centralita_media::digital::store::{self, NewConversation};
use centralita_media::metrics::DigitalMetrics;
use centralita_platform::bus::{
    ensure_topics, Consumer, ConsumerSettings, Event, EventPayload, Handler, MemoryDedupe, Producer, TopicSpec, Topics,
};
use centralita_platform::registry::TenantRegistry;
use centralita_platform::shutdown::Shutdown;
use centralita_platform::tenant::{contact_name, TenantId, TenantManifest};
use centralita_platform::testkit::{self, unique};
use centralita_proto::crm::v1 as crm;
use centralita_proto::sessions::v1 as spb;
use centralita_proto::tenancy::v1::Channel;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;

/// A pool on a schema of this test's own, migrated like `media` (running services' relays
/// and consumers never touch it). Dropped by [`drop_schema`].
async fn pool() -> Pool {
    let schema: &'static str = Box::leak(unique("media_dp_").into_boxed_str());
    let pool = centralita_platform::db::pool(testkit::postgres().url.expose(), schema, 8).unwrap();
    let migrations = centralita_platform::db::Migrations { schema, steps: MIGRATIONS.steps };
    centralita_platform::db::migrate(&pool, &migrations).await.unwrap();
    pool
}

async fn drop_schema(pool: Pool) {
    let client = pool.get().await.unwrap();
    let schema: String = client.query_one("SELECT current_schema()", &[]).await.unwrap().get(0);
    assert!(schema.starts_with("media_dp_"), "{schema}");
    client.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await.unwrap();
}

fn msg(sender: Sender, body: &str) -> NewMessage {
    NewMessage {
        sender,
        kind: Kind::Text,
        text: body.into(),
        provider_time: None,
        request_id: String::new(),
        attachment: None,
    }
}

/// A conversation `contact` of `tenant` on `channel` from `visitor`, with a customer's
/// message and an agent's, each carrying `marker`.
async fn conversation(
    pool: &Pool,
    tenant: &TenantId,
    contact: &str,
    channel: &'static str,
    visitor: &str,
    marker: &str,
) {
    let c = NewConversation {
        contact_id: contact.into(),
        channel,
        queue: "support".into(),
        visitor: visitor.into(),
        origin: if channel == store::SMS { "+34910000000".into() } else { "https://shop.example".into() },
    };
    assert!(store::create_conversation(pool, tenant, &c, "started").await.unwrap());
    store::append(pool, tenant, contact, &msg(Sender::Customer, &format!("my number is {marker}")))
        .await
        .unwrap()
        .unwrap();
    store::append(pool, tenant, contact, &msg(Sender::Agent("bob".into()), &format!("noted, {marker}")))
        .await
        .unwrap()
        .unwrap();
}

/// An SMS conversation: one inbound SMS (with its provider id) and one outbound reply
/// whose provider id is recorded, both carrying `marker`.
async fn sms_conversation(pool: &Pool, tenant: &TenantId, contact: &str, phone: &str, marker: &str) {
    conversation(pool, tenant, contact, store::SMS, phone, marker).await;
    let sid_in = format!("SM{}", unique("in"));
    let stored = store::append_inbound_sms(pool, tenant, contact, &sid_in, &msg(Sender::Customer, marker))
        .await
        .unwrap()
        .expect("a new inbound SMS");
    assert!(store::sms_known(pool, tenant, &sid_in).await.unwrap());
    store::record_outbound_sms(pool, tenant, contact, stored.sequence - 1, &format!("SM{}", unique("out")))
        .await
        .unwrap();
}

/// An email conversation: one inbound email (its Message-ID, the subject carrying
/// `marker`, an attachment's name) and the agent's reply recorded under our id.
async fn email_conversation(pool: &Pool, tenant: &TenantId, contact: &str, address: &str, marker: &str) {
    conversation(pool, tenant, contact, store::EMAIL, address, marker).await;
    let id_in = format!("{}@customer.example", unique("in"));
    let record = store::EmailRecord {
        message_id: id_in.clone(),
        subject: format!("claim of {marker}"),
        refs: vec![id_in.clone()],
        attachments: serde_json::json!([{ "name": format!("{marker}.pdf"), "content_type": "application/pdf", "size": 3 }]),
    };
    let stored = store::append_email(pool, tenant, contact, true, &record, &msg(Sender::Customer, marker))
        .await
        .unwrap()
        .expect("a new inbound email");
    assert!(store::email_known(pool, tenant, &id_in).await.unwrap());
    let out = store::EmailRecord {
        message_id: format!("{}@acme.example", unique("out")),
        subject: format!("Re: claim of {marker}"),
        refs: vec![id_in],
        attachments: serde_json::json!([]),
    };
    store::record_outbound_email(pool, tenant, contact, stored.sequence - 1, &out).await.unwrap();
    // The email's PDF, kept as a file of the conversation: its name and bytes carry `marker`.
    let pdf = format!("%PDF-1.4\n% {marker}\n").into_bytes();
    let file = NewMessage {
        kind: Kind::Attachment,
        text: format!("{marker}.pdf"),
        attachment: Some(NewAttachment {
            name: format!("{marker}.pdf"),
            content_type: "application/pdf".into(),
            sha256: centralita_media::digital::attachments::sha256_hex(&pdf),
            data: pdf,
        }),
        ..msg(Sender::Customer, "")
    };
    let (kept, _) = store::append(pool, tenant, contact, &file).await.unwrap().unwrap();
    let id = kept.attachment.expect("a file").id;
    assert!(store::attachment(pool, tenant, contact, &id).await.unwrap().is_some());
}

/// Rows of each table of schema `media` about `contact`, as `tenant` sees them (row-level
/// security on): conversations, messages, sms_messages, email_messages, attachments, outbox.
async fn rows(pool: &Pool, tenant: &TenantId, contact: &str) -> [i64; 6] {
    let mut client = pool.get().await.unwrap();
    let tx = centralita_platform::db::begin(&mut client, tenant).await.unwrap();
    let mut out = [0; 6];
    for (i, q) in [
        "SELECT count(*) FROM conversations WHERE contact_id = $1",
        "SELECT count(*) FROM messages WHERE contact_id = $1",
        "SELECT count(*) FROM sms_messages WHERE contact_id = $1",
        "SELECT count(*) FROM email_messages WHERE contact_id = $1",
        "SELECT count(*) FROM attachments WHERE contact_id = $1",
        "SELECT count(*) FROM outbox WHERE key = $1",
    ]
    .into_iter()
    .enumerate()
    {
        out[i] = tx.query_one(q, &[&contact]).await.unwrap().get(0);
    }
    tx.commit().await.unwrap();
    out
}

/// Rows of every table of the test's schema holding `needle` anywhere, as each of
/// `tenants` sees them (row-level security on), the outbox's encoded envelopes included.
async fn found(pool: &Pool, tenants: &[&TenantId], needle: &str) -> i64 {
    let mut n = 0;
    for tenant in tenants {
        let mut client = pool.get().await.unwrap();
        let tx = centralita_platform::db::begin(&mut client, tenant).await.unwrap();
        for table in ["conversations", "messages", "sms_messages", "email_messages"] {
            let q = format!("SELECT count(*) FROM {table} t WHERE position($1 in t::text) > 0");
            n += tx.query_one(&q, &[&needle]).await.unwrap().get::<_, i64>(0);
        }
        // Files' bytes.
        let q = "SELECT count(*) FROM attachments WHERE position(convert_to($1, 'UTF8') in data) > 0";
        n += tx.query_one(q, &[&needle]).await.unwrap().get::<_, i64>(0);
        // Envelopes are protobuf: their strings are there as UTF-8 bytes.
        let q = "SELECT count(*) FROM outbox t WHERE position(convert_to($1, 'UTF8') in envelope) > 0
                 OR position($1 in t::text) > 0";
        n += tx.query_one(q, &[&needle]).await.unwrap().get::<_, i64>(0);
        tx.commit().await.unwrap();
    }
    n
}

/// Forwards every event of a topic to the test.
struct Forward(tokio::sync::mpsc::UnboundedSender<Event>);

impl Handler for Forward {
    async fn handle(&mut self, event: &Event) -> Result<(), centralita_platform::error::Error> {
        let _ = self.0.send(event.clone());
        Ok(())
    }
}

fn consumer<H: Handler>(topic: &str, group: &str, handler: H) -> Consumer<H, MemoryDedupe> {
    Consumer::new(
        ConsumerSettings {
            brokers: testkit::brokers(),
            group_id: unique(group),
            topics: vec![topic.to_owned()],
            fetch_wait: Duration::from_millis(50),
            group_instance_id: None,
        },
        handler,
        MemoryDedupe::new(100),
        None,
    )
    .unwrap()
}

async fn next_report(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Event>) -> crm::StoreErased {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let e = rx.recv().await.unwrap();
            if e.type_name == crm::StoreErased::TYPE {
                return e.payload::<crm::StoreErased>().unwrap();
            }
        }
    })
    .await
    .expect("media reported the erasure")
}

/// CRM's erasure of tenant A's customer (a web chat and an SMS conversation) through the
/// customers topic: both go with every row about them (messages, SMS provider ids,
/// unpublished events), A's other customer and tenant B's contact of the same id stay
/// whole although the erasure names B's, and media reports `StoreErased` for `media` with
/// the rows it deleted; the same erasure again deletes nothing and reports 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_erasure_deletes_its_conversations_in_its_tenant_only_and_reports_back() {
    let pool = pool().await;
    let topics = Topics::new(unique("mder-") + ".");
    let customers = topics.customers();
    ensure_topics(&testkit::brokers(), 1, &[TopicSpec { name: customers.clone(), partitions: 3, compacted: false }])
        .await
        .unwrap();
    let a = TenantId::parse(&unique("mder-a-")).unwrap();
    let b = TenantId::parse(&unique("mder-b-")).unwrap();
    let (chat, sms, mail, keep) = ("c-gdpr-chat", "c-gdpr-sms", "c-gdpr-mail", "c-keep");
    let (erased, other, of_b) = (unique("ZOE-"), unique("ANA-"), unique("BEA-"));
    conversation(&pool, &a, chat, "chat", "visitor-zoe", &erased).await;
    sms_conversation(&pool, &a, sms, &format!("+3460{}", &erased[4..10]), &erased).await;
    email_conversation(&pool, &a, mail, "zoe@customer.example", &erased).await;
    conversation(&pool, &a, keep, "chat", "visitor-ana", &other).await;
    // Tenant B's contact with the same id as A's erased chat.
    conversation(&pool, &b, chat, "chat", "visitor-bea", &of_b).await;
    let before_chat = rows(&pool, &a, chat).await;
    let before_sms = rows(&pool, &a, sms).await;
    let before_mail = rows(&pool, &a, mail).await;
    assert_eq!(before_chat, [1, 3, 0, 0, 0, 3], "notice and two messages, their events not yet published");
    assert_eq!(before_sms, [1, 4, 2, 0, 0, 4]);
    assert_eq!(before_mail, [1, 5, 0, 2, 1, 5], "with the PDF's message and its file");
    let keep_before = rows(&pool, &a, keep).await;
    let b_before = rows(&pool, &b, chat).await;
    assert!(found(&pool, &[&a], &erased).await > 0);

    let metrics = Arc::new(DigitalMetrics::default());
    let handler = ErasureHandler {
        pool: pool.clone(),
        producer: Arc::new(Producer::new(&testkit::brokers(), None).unwrap()),
        topics: topics.clone(),
        metrics: metrics.clone(),
    };
    let stop = Shutdown::new();
    let media = tokio::spawn(consumer(&customers, "mder-media-", handler).run(stop.clone()));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(consumer(&customers, "mder-reports-", Forward(tx)).run(stop.clone()));

    let erasure = crm::Erasure {
        name: "erasures/e1".into(),
        contacts: vec![
            contact_name(a.as_str(), chat),
            contact_name(a.as_str(), sms),
            contact_name(a.as_str(), mail),
            contact_name(b.as_str(), chat),
            "tenants/x/not-a-contact".into(),
        ],
        ..Default::default()
    };
    let event =
        || Event::new(a.clone(), &crm::CustomerErased { tenant: a.to_string(), erasure: Some(erasure.clone()) });
    let producer = Producer::new(&testkit::brokers(), None).unwrap();
    producer.publish(&customers, "cust-1", &event()).await.unwrap();

    let report = next_report(&mut rx).await;
    assert_eq!(
        (report.tenant.as_str(), report.erasure.as_str(), report.store.as_str()),
        (a.as_str(), "erasures/e1", "media")
    );
    let deleted: i64 = before_chat.iter().chain(before_sms.iter()).chain(before_mail.iter()).sum();
    assert_eq!(report.records_erased, deleted, "every row of the three conversations");
    assert!(report.erase_time.is_some());
    assert_eq!(rows(&pool, &a, chat).await, [0; 6]);
    assert_eq!(rows(&pool, &a, sms).await, [0; 6]);
    assert_eq!(rows(&pool, &a, mail).await, [0; 6]);
    assert_eq!(found(&pool, &[&a, &b], &erased).await, 0, "nothing of the erased customer anywhere in the schema");
    assert_eq!(rows(&pool, &a, keep).await, keep_before, "another customer of A untouched");
    assert_eq!(rows(&pool, &b, chat).await, b_before, "B's contact of the same id untouched");
    assert!(found(&pool, &[&b], &of_b).await > 0);
    assert_eq!(metrics.deleted("erasure", "messages"), 12);
    assert_eq!(metrics.deleted("erasure", "attachments"), 1);
    assert_eq!(metrics.deleted("erasure", "sms_messages"), 2);
    assert_eq!(metrics.deleted("erasure", "email_messages"), 2);

    // The CRM publishes the erasure again (its retry): nothing more is deleted, reported 0.
    producer.publish(&customers, "cust-1", &event()).await.unwrap();
    let again = next_report(&mut rx).await;
    assert_eq!((again.store.as_str(), again.records_erased), ("media", 0));
    assert_eq!(rows(&pool, &a, keep).await, keep_before);
    assert_eq!(rows(&pool, &b, chat).await, b_before);
    // B's own erasure of the same contact id deletes B's, and nothing of A's.
    let r = erasure::erase(&pool, &b, &[contact_name(b.as_str(), chat), contact_name(a.as_str(), keep)]).await.unwrap();
    assert_eq!((r.records(), r.skipped), (b_before.iter().sum::<i64>() as u64, 1));
    assert_eq!(rows(&pool, &a, keep).await, keep_before);

    stop.trigger();
    let _ = media.await;
    let _ = reader.await;
    drop_schema(pool).await;
}

fn manifest(id: &str, days: u32) -> String {
    format!(
        r#"
apiVersion: centralita.io/v1
kind: Tenant
metadata: {{ name: {id} }}
spec:
  displayName: {id}
  channels: [chat]
  serviceLevel: {{ targetPercent: 80, thresholdSeconds: 20 }}
  quotas: {{ maxConcurrentContacts: 100, apiRequestsPerSecond: 1000 }}
  businessHours: {{ timeZone: Europe/Madrid }}
  dataRetentionDays: {days}
  recording: {{ voice: none }}
  routing:
    queues:
      - {{ id: support }}
"#
    )
}

/// A contact event of sessions for `contact` of `tenant` on `channel`, ended at `end`.
fn ended(envelope: &TenantId, tenant: &TenantId, contact: &str, channel: Channel, end: DateTime<Utc>) -> Event {
    let ts = prost_types::Timestamp { seconds: end.timestamp(), nanos: 0 };
    let c = spb::Contact {
        name: contact_name(tenant.as_str(), contact),
        tenant: tenant.to_string(),
        channel: channel as i32,
        state: spb::ContactState::AfterContactWork as i32,
        end_time: Some(ts),
        ..Default::default()
    };
    Event::new(
        envelope.clone(),
        &spb::ContactEvent { kind: spb::contact_event::Kind::Ended as i32, contact: Some(c), ..Default::default() },
    )
}

async fn ended_at(pool: &Pool, tenant: &TenantId, contact: &str) -> Option<DateTime<Utc>> {
    let mut client = pool.get().await.unwrap();
    let tx = centralita_platform::db::begin(&mut client, tenant).await.unwrap();
    let row = tx.query_one("SELECT ended_at FROM conversations WHERE contact_id = $1", &[&contact]).await.unwrap();
    tx.commit().await.unwrap();
    row.get(0)
}

/// Retention with the clock moved on: tenant A keeps 30 days, B 90. At +31 days A's
/// conversation that ended now and A's open one silent since now go (every row), A's that
/// ended 10 days later stays, and so does B's of the same id and age; a second pass deletes
/// nothing; at +41 days the late one goes, at +91 B's. Ends come from sessions' events:
/// recorded the first time only, never from a voice contact's or another tenant's event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_only_conversations_past_their_tenants_limit() {
    let pool = pool().await;
    let a = TenantId::parse(&unique("mret-a-")).unwrap();
    let b = TenantId::parse(&unique("mret-b-")).unwrap();
    let registry = TenantRegistry::new();
    for (t, days) in [(&a, 30), (&b, 90)] {
        let m = TenantManifest::parse_all(&manifest(t.as_str(), days), Utc::now()).unwrap();
        registry.upsert(m.into_iter().next().unwrap());
    }
    let (done, open, late, mail) = ("c-ended", "c-open", "c-late", "c-mail");
    let marker = unique("RET-");
    conversation(&pool, &a, done, "chat", "v-1", &marker).await;
    sms_conversation(&pool, &a, open, "+34600111222", &marker).await;
    conversation(&pool, &a, late, "chat", "v-3", &marker).await;
    email_conversation(&pool, &a, mail, "v5@customer.example", &marker).await;
    conversation(&pool, &b, done, "chat", "v-4", &marker).await;

    let now = Utc::now();
    let mut ends = EndsHandler { pool: pool.clone() };
    ends.handle(&ended(&a, &a, done, Channel::Chat, now)).await.unwrap();
    ends.handle(&ended(&a, &a, mail, Channel::Email, now)).await.unwrap();
    ends.handle(&ended(&a, &a, late, Channel::Chat, now + chrono::Duration::days(10))).await.unwrap();
    // A later event (wrap-up, a redelivery) does not move the end.
    ends.handle(&ended(&a, &a, done, Channel::Chat, now + chrono::Duration::days(20))).await.unwrap();
    // A voice contact's event, and B's envelope naming A's contact, change nothing.
    ends.handle(&ended(&a, &a, open, Channel::Voice, now)).await.unwrap();
    ends.handle(&ended(&b, &a, open, Channel::Sms, now)).await.unwrap();
    ends.handle(&ended(&b, &b, done, Channel::Chat, now)).await.unwrap();
    assert_eq!(ended_at(&pool, &a, done).await.map(|t| t.timestamp()), Some(now.timestamp()));
    assert_eq!(
        ended_at(&pool, &a, late).await.map(|t| t.timestamp()),
        Some((now + chrono::Duration::days(10)).timestamp())
    );
    assert_eq!(ended_at(&pool, &a, open).await, None, "still open");

    let metrics = DigitalMetrics::default();
    let sweep = |at| retention::sweep(&pool, &registry, &metrics, at);
    assert_eq!(sweep(Utc::now()).await.unwrap().records(), 0, "nothing expired yet");
    assert_eq!(sweep(now + chrono::Duration::days(29)).await.unwrap().records(), 0, "within 30 days");
    let (done_rows, open_rows, late_rows) =
        (rows(&pool, &a, done).await, rows(&pool, &a, open).await, rows(&pool, &a, late).await);
    let b_rows = rows(&pool, &b, done).await;
    let mail_rows = rows(&pool, &a, mail).await;
    assert_eq!(mail_rows[3], 2, "the email's and the reply's records");

    let r = sweep(now + chrono::Duration::days(31)).await.unwrap();
    assert_eq!(r.conversations, 3, "A's ended chat and email, and A's silent open conversation");
    assert_eq!(r.messages as i64, done_rows[1] + open_rows[1] + mail_rows[1]);
    assert_eq!(r.sms_ids as i64, open_rows[2]);
    assert_eq!(r.email_ids as i64, mail_rows[3]);
    assert_eq!((r.attachments as i64, mail_rows[4]), (1, 1), "the email's file");
    assert_eq!(rows(&pool, &a, mail).await, [0; 6]);
    assert_eq!(rows(&pool, &a, done).await, [0; 6]);
    assert_eq!(rows(&pool, &a, open).await, [0; 6]);
    assert_eq!(rows(&pool, &a, late).await, late_rows, "ended 10 days later: 21 days ago");
    assert_eq!(rows(&pool, &b, done).await, b_rows, "B keeps 90 days");
    assert_eq!(metrics.deleted("retention", "conversations"), 3);
    assert_eq!(metrics.deleted("retention", "email_messages"), 2);
    assert_eq!(sweep(now + chrono::Duration::days(31)).await.unwrap().records(), 0, "a second pass is a no-op");

    let r = sweep(now + chrono::Duration::days(41)).await.unwrap();
    assert_eq!(r.conversations, 1);
    assert_eq!(rows(&pool, &a, late).await, [0; 6]);
    assert_eq!(rows(&pool, &b, done).await, b_rows);
    let r = sweep(now + chrono::Duration::days(91)).await.unwrap();
    assert_eq!(r.conversations, 1);
    assert_eq!(rows(&pool, &b, done).await, [0; 6]);
    assert_eq!(found(&pool, &[&a, &b], &marker).await, 0);
    assert_eq!(metrics.deleted("retention", "conversations"), 5);
    drop_schema(pool).await;
}

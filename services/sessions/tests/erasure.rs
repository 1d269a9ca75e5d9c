//! CRM's erasure reaching sessions' contact records: sessions in-process (`run` on port 0)
//! against the real Redis and Kafka-protocol broker of the local stack, contacts created
//! over gRPC with a unique phone number, email and attribute, a `CustomerErased` published
//! on the customers topic as the CRM's relay publishes it, sessions' `StoreErased` read back
//! from that topic, and the contact records read raw from Redis (HGET, decode) and searched
//! for the strings.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use centralita_platform::auth::Role;
use centralita_platform::bus::{
    Consumer, ConsumerSettings, Event, EventPayload, Handler, MemoryDedupe, Producer, Topics, FETCH_WAIT_DEFAULT,
};
use centralita_platform::config::ServiceArgs;
use centralita_platform::server::Listeners;
use centralita_platform::shutdown::Shutdown;
use centralita_platform::tenant::{parse_contact_name, TenantId};
use centralita_platform::testkit::{self, common, redis, request, token, unique, wait_ready};
use centralita_proto::crm::v1 as crm;
use centralita_proto::sessions::v1 as pb;
use centralita_proto::tenancy::v1 as tpb;
use centralita_sessions::core::{ContactId, ContactRef};
use pb::contact_service_client::ContactServiceClient;
use prost::Message as _;
use tonic::transport::Channel;

fn manifest(id: &str) -> String {
    format!(
        r#"
apiVersion: centralita.io/v1
kind: Tenant
metadata: {{ name: {id} }}
spec:
  displayName: {id}
  channels: [voice, email]
  serviceLevel: {{ targetPercent: 80, thresholdSeconds: 20 }}
  quotas: {{ maxConcurrentContacts: 100, apiRequestsPerSecond: 1000 }}
  businessHours: {{ timeZone: UTC }}
  dataRetentionDays: 30
  recording: {{ voice: none }}
  routing:
    dispositionCodes: [resolved]
    queues:
      - {{ id: support }}
"#
    )
}

/// Every event of the customers topic, as read.
#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<Event>>>);

impl Handler for Collect {
    async fn handle(&mut self, event: &Event) -> Result<(), centralita_platform::Error> {
        self.0.lock().unwrap().push(event.clone());
        Ok(())
    }
}

struct Fixture {
    topics: Topics,
    tenants: [String; 2],
    sessions: Channel,
    producer: Producer,
    redis: ::redis::aio::MultiplexedConnection,
    collected: Collect,
    shutdown: Shutdown,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Fixture {
    async fn start() -> Self {
        let (prefix, topics, tenants) =
            testkit::two_tenants("erase-", manifest, |t| vec![t.contacts(), t.customers()]).await;
        let config = ServiceArgs {
            common: common(&prefix),
            service: centralita_sessions::SessionsSettings { redis: redis(), presence_grace: Duration::from_secs(30) },
        };
        let listeners = Listeners::ephemeral().await.unwrap();
        let (grpc, admin) = (listeners.grpc_addr(), listeners.admin_addr());
        let shutdown = Shutdown::new();
        let sd = shutdown.clone();
        let mut tasks =
            vec![tokio::spawn(async move { centralita_sessions::run(config, listeners, sd).await.unwrap() })];
        assert!(wait_ready(admin).await, "sessions did not become ready");
        let sessions = Channel::from_shared(format!("http://{grpc}")).unwrap().connect().await.unwrap();
        let collected = Collect::default();
        let reader = Consumer::new(
            ConsumerSettings {
                brokers: testkit::brokers(),
                group_id: unique("erasure-reader-"),
                topics: vec![topics.customers()],
                fetch_wait: FETCH_WAIT_DEFAULT,
                group_instance_id: None,
            },
            collected.clone(),
            MemoryDedupe::new(1000),
            None,
        )
        .unwrap();
        let sd = shutdown.clone();
        tasks.push(tokio::spawn(async move { reader.run(sd).await.unwrap() }));
        let client = ::redis::Client::open(redis().url.expose().as_str()).unwrap();
        let redis = client.get_multiplexed_async_connection().await.unwrap();
        let producer = Producer::new(&testkit::brokers(), None).unwrap();
        Fixture { topics, tenants, sessions, producer, redis, collected, shutdown, tasks }
    }

    async fn stop(self) {
        self.shutdown.trigger();
        for t in self.tasks {
            t.await.unwrap();
        }
    }

    /// A contact of `tenant` created by its channel adapter, carrying `phone`, `email` and
    /// an attribute holding `name`.
    async fn contact(&self, tenant: &str, phone: &str, email: &str, name: &str) -> pb::Contact {
        let identity = |kind: crm::IdentityKind, value: &str| crm::Identity {
            kind: kind as i32,
            value: value.into(),
            network: String::new(),
        };
        let contact = pb::Contact {
            channel: tpb::Channel::Email as i32,
            queue: "support".into(),
            customer_identities: vec![
                identity(crm::IdentityKind::Phone, phone),
                identity(crm::IdentityKind::Email, email),
            ],
            attributes: [("account_holder".to_owned(), name.to_owned())].into(),
            ..Default::default()
        };
        let req = pb::CreateContactRequest { contact: Some(contact), request_id: unique("req-") };
        let ch = token(Some(tenant), Role::Channel, None);
        ContactServiceClient::new(self.sessions.clone()).create_contact(request(req, &ch)).await.unwrap().into_inner()
    }

    /// The stored record of contact `name`, raw: its version and its bytes.
    async fn raw(&mut self, name: &str) -> (u64, Vec<u8>) {
        let (tenant, id): (TenantId, String) = parse_contact_name("name", name).unwrap();
        let key = centralita_sessions::store::contact_key(&ContactRef { tenant, id: ContactId(id) });
        let (v, d): (Option<u64>, Option<Vec<u8>>) =
            ::redis::cmd("HMGET").arg(&key).arg("v").arg("d").query_async(&mut self.redis).await.unwrap();
        (v.expect("version"), d.expect("record"))
    }

    /// Publishes tenant `tenant`'s erasure naming `contacts`, as the CRM's relay does; the
    /// erasure's name.
    async fn erase(&self, tenant: &str, contacts: &[&str]) -> String {
        let name = format!("erasures/{}", unique("e"));
        self.publish_erasure(tenant, &name, contacts).await;
        name
    }

    async fn publish_erasure(&self, tenant: &str, name: &str, contacts: &[&str]) {
        let erasure = crm::Erasure {
            name: name.into(),
            customers: vec![format!("customers/{}", unique("cu"))],
            contacts: contacts.iter().map(|c| (*c).to_owned()).collect(),
            ..Default::default()
        };
        let event = crm::CustomerErased { tenant: tenant.into(), erasure: Some(erasure) };
        let event = Event::new(TenantId::parse(tenant).unwrap(), &event);
        self.producer.publish(&self.topics.customers(), "customer", &event).await.unwrap();
    }

    /// The `StoreErased` sessions published for erasure `name`, the `n`th (from 1) of them.
    async fn reported(&self, name: &str, n: usize) -> (TenantId, crm::StoreErased) {
        for _ in 0..300 {
            let found: Vec<(TenantId, crm::StoreErased)> = self
                .collected
                .0
                .lock()
                .unwrap()
                .iter()
                .filter(|e| e.type_name == crm::StoreErased::TYPE)
                .map(|e| (e.tenant.clone(), e.payload::<crm::StoreErased>().unwrap()))
                .filter(|(_, s)| s.erasure == name)
                .collect();
            if found.len() >= n {
                return found[n - 1].clone();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("sessions did not report erasure {name} done ({n})");
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Unique personal strings: a Spanish mobile number, an email address and a name.
fn person() -> (String, String, String) {
    let digits = uuid::Uuid::now_v7().as_u128() % 10_000_000;
    (format!("+3460{digits:07}"), format!("{}@example.com", unique("p")), unique("Name "))
}

#[tokio::test]
async fn an_erasure_removes_the_customers_data_from_its_tenants_contact_records_only() {
    let mut f = Fixture::start().await;
    let [a, b] = f.tenants.clone();
    let (phone, email, holder) = person();
    let erased = f.contact(&a, &phone, &email, &holder).await;
    let (other_phone, other_email, other_holder) = person();
    let kept = f.contact(&a, &other_phone, &other_email, &other_holder).await;
    let (_, record) = f.raw(&erased.name).await;
    for s in [&phone, &email, &holder] {
        assert!(contains(&record, s), "{s} is stored before the erasure");
    }

    // Tenant B's erasure naming tenant A's contact changes nothing of it.
    let (v_kept, kept_before) = f.raw(&kept.name).await;
    let foreign = f.erase(&b, &[&kept.name]).await;
    let (t, done) = f.reported(&foreign, 1).await;
    assert_eq!(
        (t.as_str(), done.tenant.as_str(), done.store.as_str(), done.records_erased),
        (b.as_str(), b.as_str(), "sessions", 0)
    );
    assert_eq!(f.raw(&kept.name).await, (v_kept, kept_before), "another tenant's erasure wrote nothing");

    // Tenant A's erasure of the customer (its contact, and one that expired from Redis).
    let gone = format!("tenants/{a}/contacts/{}", unique("gone"));
    let erasure = f.erase(&a, &[&erased.name, &gone]).await;
    let (t, done) = f.reported(&erasure, 1).await;
    assert_eq!(
        (t.as_str(), done.tenant.as_str(), done.store.as_str(), done.records_erased),
        (a.as_str(), a.as_str(), "sessions", 1)
    );
    assert!(done.erase_time.is_some());
    let (v, record) = f.raw(&erased.name).await;
    for s in [&phone, &email, &holder] {
        assert!(!contains(&record, s), "{s} is still in the contact record after the erasure");
    }
    let decoded = pb::Contact::decode(record.as_slice()).unwrap();
    assert!(decoded.customer_identities.is_empty() && decoded.attributes.is_empty());
    assert_eq!(
        (decoded.state, decoded.queue.as_str()),
        (pb::ContactState::Queued as i32, "support"),
        "the contact goes on"
    );
    let (_, kept_after) = f.raw(&kept.name).await;
    assert!(
        contains(&kept_after, &other_phone) && contains(&kept_after, &other_email),
        "other customers' contacts keep theirs"
    );

    // A redelivery (the same erasure in a new event) writes nothing and is reported again.
    f.publish_erasure(&a, &erasure, &[&erased.name, &gone]).await;
    let (_, again) = f.reported(&erasure, 2).await;
    assert_eq!(again.records_erased, 0);
    assert_eq!(f.raw(&erased.name).await, (v, record), "a replayed erasure changes nothing more");

    // The contact is still served, without the customer's data.
    let sup = token(Some(&a), Role::Supervisor, None);
    let got = ContactServiceClient::new(f.sessions.clone())
        .get_contact(request(pb::GetContactRequest { name: erased.name.clone() }, &sup))
        .await
        .unwrap()
        .into_inner();
    assert!(got.customer_identities.is_empty() && got.attributes.is_empty());
    f.stop().await;
}

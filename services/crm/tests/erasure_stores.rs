//! An erasure's audit record shows each store outside the CRM pending until its service
//! reports it erased: the CRM in-process against the local stack, `StoreErased` reports
//! published on the customers topic as sessions publishes them, the erasure read back with
//! GetErasure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use centralita_crm::Settings;
use centralita_platform::auth::Role;
use centralita_platform::bus::{Event, Producer, Topics};
use centralita_platform::config::ServiceArgs;
use centralita_platform::server::Listeners;
use centralita_platform::shutdown::Shutdown;
use centralita_platform::tenant::TenantId;
use centralita_platform::testkit::{self, request, token, unique};
use centralita_proto::crm::v1::{self as pb, customer_service_client::CustomerServiceClient};
use pb::erasure_store::State;
use tonic::transport::Channel;
use tonic::Code;

fn manifest(id: &str) -> String {
    format!(
        r#"
apiVersion: centralita.io/v1
kind: Tenant
metadata: {{ name: {id} }}
spec:
  displayName: {id}
  channels: [voice]
  serviceLevel: {{ targetPercent: 80, thresholdSeconds: 20 }}
  quotas: {{ maxConcurrentContacts: 100, apiRequestsPerSecond: 1000 }}
  businessHours: {{ timeZone: UTC }}
  dataRetentionDays: 30
  recording: {{ voice: none }}
  routing:
    queues:
      - {{ id: support }}
"#
    )
}

async fn report(topics: &Topics, tenant: &str, erasure: &str, store: &str, records: i64) {
    let done = pb::StoreErased {
        tenant: tenant.into(),
        erasure: erasure.into(),
        store: store.into(),
        records_erased: records,
        erase_time: None,
    };
    let producer = Producer::new(&testkit::brokers(), None).unwrap();
    let event = Event::new(TenantId::parse(tenant).unwrap(), &done);
    producer.publish(&topics.customers(), erasure, &event).await.unwrap();
}

async fn get(crm: &mut CustomerServiceClient<Channel>, tok: &str, name: &str) -> Result<pb::Erasure, tonic::Status> {
    crm.get_erasure(request(pb::GetErasureRequest { name: name.into() }, tok)).await.map(|r| r.into_inner())
}

fn stores(e: &pb::Erasure) -> Vec<(String, State, i64)> {
    e.stores.iter().map(|s| (s.store.clone(), s.state(), s.records_erased)).collect()
}

#[tokio::test]
async fn an_erasure_shows_each_store_pending_until_its_service_reports_it_erased() {
    let (prefix, topics, [a, b]) =
        testkit::two_tenants("crm-es-", manifest, |t| vec![t.contacts(), t.customers()]).await;
    let listeners = Listeners::ephemeral().await.unwrap();
    let (grpc, admin_addr) = (listeners.grpc_addr(), listeners.admin_addr());
    let shutdown = Shutdown::new();
    let config =
        ServiceArgs::<Settings> { common: testkit::common(&prefix), service: Settings::new(testkit::postgres()) };
    let task = tokio::spawn(centralita_crm::run(config, listeners, shutdown.clone()));
    assert!(testkit::wait_ready(admin_addr).await, "crm did not become ready");
    let mut crm =
        CustomerServiceClient::new(Channel::from_shared(format!("http://{grpc}")).unwrap().connect().await.unwrap());
    let admin = token(Some(&a), Role::TenantAdmin, None);
    let identity =
        pb::Identity { kind: pb::IdentityKind::Phone as i32, value: "+34911000111".into(), network: String::new() };
    let resolve =
        pb::ResolveCustomerRequest { identities: vec![identity], display_name: unique("Zoe "), ..Default::default() };
    let customer = crm.resolve_customer(request(resolve, &admin)).await.unwrap().into_inner().customer.unwrap();
    let erase = pb::EraseCustomerRequest { name: customer.name, reason: "ticket 7".into() };
    let erasure = crm.erase_customer(request(erase, &admin)).await.unwrap().into_inner();
    assert_eq!(
        stores(&erasure),
        vec![
            ("media".to_owned(), State::Pending, 0),
            ("recording".to_owned(), State::Pending, 0),
            ("reporting".to_owned(), State::Pending, 0),
            ("sessions".to_owned(), State::Pending, 0)
        ]
    );
    let read = get(&mut crm, &admin, &erasure.name).await.unwrap();
    assert_eq!(read, erasure, "GetErasure gives the audit record EraseCustomer answered");

    // Tenant B's report about A's erasure changes nothing, and B cannot read it.
    report(&topics, &b, &erasure.name, "sessions", 5).await;
    let b_admin = token(Some(&b), Role::TenantAdmin, None);
    assert_eq!(get(&mut crm, &b_admin, &erasure.name).await.unwrap_err().code(), Code::NotFound);

    // Sessions, recording, reporting and media report: each store is done, with when and
    // how many records.
    report(&topics, &a, &erasure.name, "sessions", 1).await;
    report(&topics, &a, &erasure.name, "recording", 0).await;
    report(&topics, &a, &erasure.name, "reporting", 2).await;
    report(&topics, &a, &erasure.name, "media", 4).await;
    let mut done = None;
    for _ in 0..300 {
        let e = get(&mut crm, &admin, &erasure.name).await.unwrap();
        if e.stores.iter().all(|s| s.state() == State::Done) {
            done = Some(e);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let done = done.expect("the erasure shows every store done");
    assert_eq!(
        stores(&done),
        vec![
            ("media".to_owned(), State::Done, 4),
            ("recording".to_owned(), State::Done, 0),
            ("reporting".to_owned(), State::Done, 2),
            ("sessions".to_owned(), State::Done, 1)
        ],
        "B's report was not counted"
    );
    let at = done.stores[3].done_time;
    assert!(at.is_some());

    // A redelivered report (sessions erased nothing more) keeps the first time and count;
    // a store first heard of is recorded beside it.
    report(&topics, &a, &erasure.name, "sessions", 0).await;
    report(&topics, &a, &erasure.name, "archive", 3).await;
    let mut last = None;
    for _ in 0..300 {
        let e = get(&mut crm, &admin, &erasure.name).await.unwrap();
        if e.stores.len() == 5 {
            last = Some(e);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let last = last.expect("the later reports are recorded");
    assert_eq!(
        stores(&last),
        vec![
            ("archive".to_owned(), State::Done, 3),
            ("media".to_owned(), State::Done, 4),
            ("recording".to_owned(), State::Done, 0),
            ("reporting".to_owned(), State::Done, 2),
            ("sessions".to_owned(), State::Done, 1)
        ]
    );
    assert_eq!(last.stores[4].done_time, at);

    // Only tenant admins read erasures, by their name.
    let sup = token(Some(&a), Role::Supervisor, None);
    assert_eq!(get(&mut crm, &sup, &erasure.name).await.unwrap_err().code(), Code::PermissionDenied);
    assert_eq!(get(&mut crm, &admin, "erasures/nope").await.unwrap_err().code(), Code::InvalidArgument);
    let unknown = format!("erasures/{}", uuid::Uuid::now_v7().simple());
    assert_eq!(get(&mut crm, &admin, &unknown).await.unwrap_err().code(), Code::NotFound);
    shutdown.trigger();
    task.await.unwrap().unwrap();
}

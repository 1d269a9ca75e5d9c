//! The CRM service end to end: in-process on ephemeral ports against the local stack's
//! PostgreSQL and Kafka-protocol broker. Contact events are hand-built and published on the
//! contacts topic as sessions publishes them (no identities, no notes: those are in the
//! contact's record, served by a stand-in of sessions' `GetContact`); everything is read
//! back over gRPC, and the database is inspected directly for row-level security and
//! erasure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fake_sessions;

use std::sync::Arc;
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
use centralita_proto::sessions::v1::{self as spb, contact_event::Kind, ContactState};
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
  channels: [voice, chat, sms, email]
  serviceLevel: {{ targetPercent: 80, thresholdSeconds: 20 }}
  quotas: {{ maxConcurrentContacts: 100, apiRequestsPerSecond: 1000 }}
  businessHours: {{ timeZone: Europe/Madrid }}
  dataRetentionDays: 30
  recording: {{ voice: all }}
  routing:
    queues:
      - {{ id: support }}
"#
    )
}

struct Service {
    grpc: Channel,
    sessions: fake_sessions::FakeSessions,
    admin: std::net::SocketAddr,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Service {
    fn crm(&self) -> CustomerServiceClient<Channel> {
        CustomerServiceClient::new(self.grpc.clone())
    }

    async fn stop(self) {
        self.shutdown.trigger();
        self.task.await.unwrap().unwrap();
    }
}

fn pool() -> deadpool_postgres::Pool {
    centralita_platform::db::pool(testkit::postgres().url.expose(), "crm", 2).unwrap()
}

async fn setup() -> (String, Topics, [String; 2]) {
    testkit::two_tenants("crm-", manifest, |t| vec![t.contacts(), t.customers()]).await
}

async fn start(prefix: &str) -> Service {
    let listeners = Listeners::ephemeral().await.unwrap();
    let (grpc, admin) = (listeners.grpc_addr(), listeners.admin_addr());
    let shutdown = Shutdown::new();
    let sessions = fake_sessions::FakeSessions::default();
    let settings = Settings {
        sessions_endpoint: Some(sessions.serve().await),
        jwt_private_key_file: Some(testkit::repo_file("deploy/local/dev-keys/jwt-ed25519.key")),
        ..Settings::new(testkit::postgres())
    };
    let config = ServiceArgs::<Settings> { common: testkit::common(prefix), service: settings };
    let task = tokio::spawn(centralita_crm::run(config, listeners, shutdown.clone()));
    assert!(testkit::wait_ready(admin).await, "crm did not become ready");
    let grpc = Channel::from_shared(format!("http://{grpc}")).unwrap().connect().await.unwrap();
    Service { grpc, sessions, admin, shutdown, task }
}

/// The body of a GET on the admin port.
async fn http_get(admin: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(admin).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf).into_owned()
}

fn phone(v: &str) -> pb::Identity {
    pb::Identity { kind: pb::IdentityKind::Phone as i32, value: v.into(), network: String::new() }
}

fn email(v: &str) -> pb::Identity {
    pb::Identity { kind: pb::IdentityKind::Email as i32, value: v.into(), network: String::new() }
}

/// An update mask of these paths.
fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask { paths: paths.iter().map(|p| (*p).to_owned()).collect() })
}

fn resolve_req(ids: Vec<pb::Identity>, name: &str) -> pb::ResolveCustomerRequest {
    pb::ResolveCustomerRequest { identities: ids, default_country_code: String::new(), display_name: name.into() }
}

async fn resolve(svc: &Service, tok: &str, ids: Vec<pb::Identity>, name: &str) -> pb::ResolveCustomerResponse {
    svc.crm().resolve_customer(request(resolve_req(ids, name), tok)).await.unwrap().into_inner()
}

async fn get(svc: &Service, tok: &str, name: &str) -> Result<pb::Customer, tonic::Status> {
    svc.crm().get_customer(request(pb::GetCustomerRequest { name: name.into() }, tok)).await.map(|r| r.into_inner())
}

async fn timeline(svc: &Service, tok: &str, customer: &str) -> Vec<pb::TimelineEntry> {
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let r = svc
            .crm()
            .list_timeline(request(
                pb::ListTimelineRequest { customer: customer.into(), page_size: 2, page_token },
                tok,
            ))
            .await
            .unwrap()
            .into_inner();
        out.extend(r.entries);
        if r.next_page_token.is_empty() {
            return out;
        }
        page_token = r.next_page_token;
    }
}

fn interactions(entries: &[pb::TimelineEntry]) -> Vec<pb::Interaction> {
    entries
        .iter()
        .filter_map(|e| match &e.entry {
            Some(pb::timeline_entry::Entry::Interaction(i)) => Some(i.clone()),
            _ => None,
        })
        .collect()
}

fn export_doc(bytes: &[u8]) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_slice(bytes).unwrap();
    v.as_object_mut().unwrap().remove("exported_at");
    v
}

#[tokio::test]
async fn identities_resolve_to_one_profile_and_tenants_are_isolated() {
    let (prefix, _topics, [a, b]) = setup().await;
    let svc = start(&prefix).await;
    let (admin_a, admin_b) = (token(Some(&a), Role::TenantAdmin, None), token(Some(&b), Role::TenantAdmin, None));

    let first =
        resolve(&svc, &admin_a, vec![phone("+44 20 7946 0958"), email("Ana.Lopez@Example.com")], "Ana López").await;
    assert!(first.created);
    let ana = first.customer.unwrap();
    assert_eq!(ana.display_name, "Ana López");
    let values: Vec<_> = ana.identities.iter().map(|i| i.value.as_str()).collect();
    assert_eq!(values, ["+442079460958", "ana.lopez@example.com"]);
    // The same person on another channel, written another way, with a new chat id: found,
    // and the new identity joins the profile.
    let chat = pb::Identity { kind: pb::IdentityKind::Chat as i32, value: "visitor-77".into(), network: String::new() };
    let again = resolve(&svc, &admin_a, vec![phone("0044 (20) 7946-0958"), chat], "").await;
    assert!(!again.created);
    assert_eq!(again.customer.as_ref().unwrap().name, ana.name);
    assert_eq!(again.customer.unwrap().identities.len(), 3);
    let national = pb::ResolveCustomerRequest {
        identities: vec![phone("020 7946 0958")],
        default_country_code: "44".into(),
        display_name: String::new(),
    };
    let r = svc.crm().resolve_customer(request(national, &admin_a)).await.unwrap().into_inner();
    assert_eq!(r.customer.unwrap().name, ana.name);
    let found = svc
        .crm()
        .find_customers(request(
            pb::FindCustomersRequest {
                identity: Some(email("ANA.LOPEZ@example.COM")),
                default_country_code: String::new(),
            },
            &admin_a,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.customers.len(), 1);

    // Tenant B: the same phone number is another customer of another company.
    let b_first = resolve(&svc, &admin_b, vec![phone("+442079460958")], "").await;
    assert!(b_first.created);
    assert_ne!(b_first.customer.unwrap().name, ana.name);

    // Tenant B cannot read, find, update, merge, export, erase or record against A's
    // customer, even with its id.
    let crm = svc.crm();
    let name = ana.name.clone();
    let codes = vec![
        get(&svc, &admin_b, &name).await.unwrap_err().code(),
        crm.clone()
            .update_customer(request(
                pb::UpdateCustomerRequest {
                    customer: Some(pb::Customer { name: name.clone(), display_name: "x".into(), ..Default::default() }),
                    update_field_mask: mask(&["display_name"]),
                    ..Default::default()
                },
                &admin_b,
            ))
            .await
            .unwrap_err()
            .code(),
        crm.clone()
            .merge_customers(request(
                pb::MergeCustomersRequest { target: name.clone(), source: name.clone(), reason: "dup".into() },
                &admin_b,
            ))
            .await
            .unwrap_err()
            .code(),
        crm.clone()
            .export_customer(request(pb::ExportCustomerRequest { name: name.clone() }, &admin_b))
            .await
            .unwrap_err()
            .code(),
        crm.clone()
            .erase_customer(request(
                pb::EraseCustomerRequest { name: name.clone(), reason: "ticket 1".into() },
                &admin_b,
            ))
            .await
            .unwrap_err()
            .code(),
        crm.clone()
            .list_timeline(request(pb::ListTimelineRequest { customer: name.clone(), ..Default::default() }, &admin_b))
            .await
            .unwrap_err()
            .code(),
        crm.clone()
            .add_note(request(
                pb::AddNoteRequest { customer: name.clone(), contact: String::new(), text: "hi".into() },
                &admin_b,
            ))
            .await
            .unwrap_err()
            .code(),
        crm.clone()
            .record_consent(request(
                pb::RecordConsentRequest {
                    customer: name.clone(),
                    consent: Some(pb::ConsentRecord {
                        channel: 3,
                        purpose: "marketing".into(),
                        granted: true,
                        source: "web".into(),
                        ..Default::default()
                    }),
                },
                &admin_b,
            ))
            .await
            .unwrap_err()
            .code(),
        crm.clone()
            .check_contact_permission(request(
                pb::CheckContactPermissionRequest {
                    customer: name.clone(),
                    channel: 3,
                    purpose: "marketing".into(),
                    ..Default::default()
                },
                &admin_b,
            ))
            .await
            .unwrap_err()
            .code(),
    ];
    assert!(codes.iter().all(|c| *c == Code::NotFound), "{codes:?}");
    let found_b = crm
        .clone()
        .find_customers(request(
            pb::FindCustomersRequest {
                identity: Some(email("ana.lopez@example.com")),
                default_country_code: String::new(),
            },
            &admin_b,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(found_b.customers.is_empty(), "B finds no customer by A's identity");
    // Roles: an agent cannot browse profiles; a BPO admin without a tenant is refused.
    let agent = token(None, Role::Agent, Some("agent-1"));
    assert_eq!(get(&svc, &agent, &name).await.unwrap_err().code(), Code::PermissionDenied);
    let bpo = token(None, Role::BpoAdmin, None);
    assert_eq!(get(&svc, &bpo, &name).await.unwrap_err().code(), Code::PermissionDenied);
    // A supervisor reads but may not export (tenant admins only).
    let sup = token(Some(&a), Role::Supervisor, None);
    assert_eq!(get(&svc, &sup, &name).await.unwrap().name, name);
    let e =
        crm.clone().export_customer(request(pb::ExportCustomerRequest { name: name.clone() }, &sup)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);

    // Row-level security at the SQL level: no tenant set, nothing visible; tenant B set,
    // A's rows invisible and A's tenant refused on insert.
    let pool = pool();
    let mut client = pool.get().await.unwrap();
    let id = name.strip_prefix("customers/").unwrap().to_owned();
    for table in ["customers", "identities"] {
        let n: i64 = client.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await.unwrap().get(0);
        assert_eq!(n, 0, "{table} without a tenant set");
    }
    let tx = centralita_crm::store::begin(&mut client, &TenantId::parse(&b).unwrap()).await.unwrap();
    let n: i64 = tx.query_one("SELECT count(*) FROM customers WHERE id = $1", &[&id]).await.unwrap().get(0);
    assert_eq!(n, 0);
    let n: i64 = tx.query_one("SELECT count(*) FROM customers", &[]).await.unwrap().get(0);
    assert_eq!(n, 1, "B sees its own customer only");
    let err = tx.execute("INSERT INTO customers (tenant, id) VALUES ($1, 'x')", &[&a]).await.unwrap_err();
    let message = err.as_db_error().map(|e| e.message().to_owned()).unwrap_or_default();
    assert!(message.contains("row-level security"), "{err:?}");
    drop(tx);
    let tx = centralita_crm::store::begin(&mut client, &TenantId::parse(&a).unwrap()).await.unwrap();
    let n: i64 = tx.query_one("SELECT count(*) FROM identities WHERE customer_id = $1", &[&id]).await.unwrap().get(0);
    assert_eq!(n, 3);
    drop(tx);
    svc.stop().await;
}

#[tokio::test]
// Its update names its paths in the deprecated `update_mask`, as an older client does.
#[allow(deprecated)]
async fn malformed_identities_and_oversized_inputs_are_refused_by_field() {
    let (prefix, _topics, [a, _]) = setup().await;
    let svc = start(&prefix).await;
    let admin = token(Some(&a), Role::TenantAdmin, None);
    let crm = svc.crm();
    let bad = |status: tonic::Status, field: &str| {
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(field), "`{}` does not name {field}", status.message());
    };
    let r = crm
        .clone()
        .resolve_customer(request(resolve_req(vec![email("ok@example.com"), phone("555-CALL-NOW")], ""), &admin))
        .await;
    bad(r.unwrap_err(), "identities[1]");
    let r = crm.clone().resolve_customer(request(resolve_req(vec![phone("020 7946 0958")], ""), &admin)).await;
    bad(r.unwrap_err(), "international");
    let r = crm.clone().resolve_customer(request(resolve_req(vec![email("ana@@example.com")], ""), &admin)).await;
    bad(r.unwrap_err(), "identities[0]");
    let r = crm.clone().resolve_customer(request(resolve_req(vec![], ""), &admin)).await;
    bad(r.unwrap_err(), "identities");
    let many: Vec<_> = (0..21).map(|i| email(&format!("a{i}@example.com"))).collect();
    let r = crm.clone().resolve_customer(request(resolve_req(many, ""), &admin)).await;
    bad(r.unwrap_err(), "at most 20");
    let r = crm
        .clone()
        .resolve_customer(request(resolve_req(vec![email("ok@example.com")], &"x".repeat(201)), &admin))
        .await;
    bad(r.unwrap_err(), "display_name");
    let huge = pb::Identity { kind: 3, value: "v".repeat(100_000), network: String::new() };
    let r = crm.clone().resolve_customer(request(resolve_req(vec![huge], ""), &admin)).await;
    bad(r.unwrap_err(), "identities[0]");

    let c = resolve(&svc, &admin, vec![email("ok@example.com")], "").await.customer.unwrap();
    let r = crm
        .clone()
        .add_note(request(
            pb::AddNoteRequest { customer: c.name.clone(), contact: String::new(), text: "n".repeat(4097) },
            &admin,
        ))
        .await;
    bad(r.unwrap_err(), "text");
    let attrs = (0..51).map(|i| (format!("k{i}"), "v".into())).collect();
    let r = crm
        .clone()
        .update_customer(request(
            pb::UpdateCustomerRequest {
                customer: Some(pb::Customer {
                    name: c.name.clone(),
                    attributes: attrs,
                    tags: vec!["Not A Tag".into()],
                    ..Default::default()
                }),
                update_mask: vec!["attributes".into(), "tags".into(), "identities".into()],
                ..Default::default()
            },
            &admin,
        ))
        .await;
    let e = r.unwrap_err();
    bad(e.clone(), "customer.attributes");
    bad(e.clone(), "customer.tags[0]");
    bad(e, "update_mask");
    let r =
        crm.clone().get_customer(request(pb::GetCustomerRequest { name: "customers/../../etc".into() }, &admin)).await;
    bad(r.unwrap_err(), "name");
    let future = prost_types::Timestamp { seconds: chrono::Utc::now().timestamp() + 86_400, nanos: 0 };
    let r = crm
        .clone()
        .record_consent(request(
            pb::RecordConsentRequest {
                customer: c.name.clone(),
                consent: Some(pb::ConsentRecord {
                    channel: 0,
                    purpose: "Marketing!".into(),
                    effective_time: Some(future),
                    ..Default::default()
                }),
            },
            &admin,
        ))
        .await;
    let e = r.unwrap_err();
    for f in ["consent.channel", "consent.purpose", "consent.source", "consent.effective_time"] {
        bad(e.clone(), f);
    }
    let r = crm
        .clone()
        .record_answer(request(
            pb::RecordAnswerRequest {
                customer: c.name.clone(),
                contact: String::new(),
                question: String::new(),
                answer: "a".repeat(2001),
            },
            &admin,
        ))
        .await;
    let e = r.unwrap_err();
    bad(e.clone(), "question");
    bad(e, "answer");
    let r = crm
        .clone()
        .get_screen_pop(request(pb::GetScreenPopRequest { contact: "contacts/x".into(), interaction_count: 0 }, &admin))
        .await;
    bad(r.unwrap_err(), "contact");
    svc.stop().await;
}

#[tokio::test]
async fn updates_change_only_the_fields_their_mask_names() {
    let (prefix, _topics, [a, b]) = setup().await;
    let svc = start(&prefix).await;
    let (admin_a, admin_b) = (token(Some(&a), Role::TenantAdmin, None), token(Some(&b), Role::TenantAdmin, None));
    let crm = svc.crm();
    let name = resolve(&svc, &admin_a, vec![email("mask@example.com")], "Ana").await.customer.unwrap().name;
    let update = |customer: pb::Customer, update_field_mask: Option<prost_types::FieldMask>, tok: &str| {
        let mut crm = crm.clone();
        let req = pb::UpdateCustomerRequest {
            customer: Some(pb::Customer { name: name.clone(), ..customer }),
            update_field_mask,
            ..Default::default()
        };
        let req = request(req, tok);
        async move { crm.update_customer(req).await.map(|r| r.into_inner()) }
    };
    let invalid_mask = |e: tonic::Status| {
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("update_field_mask"), "{}", e.message());
    };
    let everything = pb::Customer {
        display_name: "Ana López".into(),
        preferred_language: "es".into(),
        value_tier: pb::ValueTier::Vip as i32,
        attributes: [("plan".to_owned(), "gold".to_owned())].into(),
        tags: vec!["web".into()],
        ..Default::default()
    };
    let vip = pb::ValueTier::Vip as i32;

    // `*` alone: every field an update may change.
    let c = update(everything.clone(), mask(&["*"]), &admin_a).await.unwrap();
    assert_eq!((c.display_name.as_str(), c.preferred_language.as_str(), c.value_tier), ("Ana López", "es", vip));
    assert_eq!((&c.attributes, &c.tags), (&everything.attributes, &everything.tags));

    // Only the fields the mask names change, whatever else the customer carries.
    let blank = pb::Customer { display_name: "Ana L.".into(), tags: vec!["phone".into()], ..Default::default() };
    let c = update(blank.clone(), mask(&["display_name"]), &admin_a).await.unwrap();
    assert_eq!((c.display_name.as_str(), c.preferred_language.as_str(), c.value_tier), ("Ana L.", "es", vip));
    assert_eq!((&c.attributes, &c.tags), (&everything.attributes, &everything.tags));
    let c = update(blank.clone(), mask(&["tags", "attributes"]), &admin_a).await.unwrap();
    assert_eq!((c.display_name.as_str(), c.preferred_language.as_str(), c.value_tier), ("Ana L.", "es", vip));
    assert!(c.attributes.is_empty());
    assert_eq!(c.tags, ["phone"]);

    // A path that is not a field an update may change (output only, nested, unknown, `*`
    // beside others): INVALID_ARGUMENT on the mask, and nothing changes.
    for paths in [&["identities"][..], &["display_name", "create_time"], &["attributes.plan"], &["*", "tags"]] {
        invalid_mask(update(everything.clone(), mask(paths), &admin_a).await.unwrap_err());
    }
    let unchanged = get(&svc, &admin_a, &name).await.unwrap();
    assert_eq!((unchanged.display_name.as_str(), unchanged.tags.as_slice()), ("Ana L.", &["phone".to_owned()][..]));

    // An empty or absent mask changes no field, as before: the call changes identities
    // only, and must change some.
    for empty in [None, mask(&[])] {
        invalid_mask(update(everything.clone(), empty, &admin_a).await.unwrap_err());
    }
    let req = pb::UpdateCustomerRequest {
        customer: Some(pb::Customer { name: name.clone(), ..everything.clone() }),
        add_identities: vec![phone("+34 600 000 001")],
        ..Default::default()
    };
    let c = crm.clone().update_customer(request(req, &admin_a)).await.unwrap().into_inner();
    assert_eq!((c.display_name.as_str(), c.identities.len()), ("Ana L.", 2));

    // An older client's deprecated list still works, alone or beside a FieldMask of the
    // same paths; a FieldMask naming other paths is refused.
    #[allow(deprecated)]
    let old = pb::UpdateCustomerRequest {
        customer: Some(pb::Customer { name: name.clone(), preferred_language: "en".into(), ..Default::default() }),
        update_mask: vec!["preferred_language".into()],
        ..Default::default()
    };
    let c = crm.clone().update_customer(request(old.clone(), &admin_a)).await.unwrap().into_inner();
    assert_eq!((c.preferred_language.as_str(), c.display_name.as_str()), ("en", "Ana L."));
    let same = pb::UpdateCustomerRequest { update_field_mask: mask(&["preferred_language"]), ..old.clone() };
    crm.clone().update_customer(request(same, &admin_a)).await.unwrap();
    let other = pb::UpdateCustomerRequest { update_field_mask: mask(&["display_name"]), ..old };
    invalid_mask(crm.clone().update_customer(request(other, &admin_a)).await.unwrap_err());

    // Tenant B cannot update A's customer through a mask, not even `*`: NOT_FOUND, and A's
    // customer is as it was.
    let before = get(&svc, &admin_a, &name).await.unwrap();
    for paths in [&["display_name"][..], &["*"]] {
        let taken = pb::Customer { display_name: "taken".into(), ..everything.clone() };
        let e = update(taken, mask(paths), &admin_b).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
    }
    assert_eq!(get(&svc, &admin_a, &name).await.unwrap(), before);
    svc.stop().await;
}

/// What a reader sees of each profile: the profile, its timeline and its export.
async fn snapshot(
    svc: &Service,
    admin: &str,
    names: &[&String],
) -> Vec<(pb::Customer, Vec<pb::TimelineEntry>, serde_json::Value)> {
    let mut out = Vec::new();
    for p in names {
        let c = get(svc, admin, p).await.unwrap();
        let t = timeline(svc, admin, p).await;
        let e =
            svc.crm().export_customer(request(pb::ExportCustomerRequest { name: (*p).clone() }, admin)).await.unwrap();
        out.push((c, t, export_doc(&e.into_inner().json)));
    }
    out
}

#[tokio::test]
async fn merge_and_undo_round_trip_and_consent() {
    let (prefix, _topics, [a, _]) = setup().await;
    let svc = start(&prefix).await;
    let admin = token(Some(&a), Role::TenantAdmin, None);
    let crm = svc.crm();
    let p1 = resolve(&svc, &admin, vec![phone("+34 612 345 678")], "Ana").await.customer.unwrap().name;
    let p2 = resolve(&svc, &admin, vec![email("ana@example.es")], "").await.customer.unwrap().name;
    let update = |name: &str, attrs: &[(&str, &str)], tags: &[&str], tier: pb::ValueTier| pb::UpdateCustomerRequest {
        customer: Some(pb::Customer {
            name: name.into(),
            attributes: attrs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
            tags: tags.iter().map(|t| (*t).into()).collect(),
            value_tier: tier as i32,
            ..Default::default()
        }),
        update_field_mask: mask(&["attributes", "tags", "value_tier"]),
        ..Default::default()
    };
    crm.clone()
        .update_customer(request(update(&p1, &[("plan", "basic")], &["loyal"], pb::ValueTier::Standard), &admin))
        .await
        .unwrap();
    crm.clone()
        .update_customer(request(
            update(&p2, &[("plan", "gold"), ("city", "Madrid")], &["web"], pb::ValueTier::Vip),
            &admin,
        ))
        .await
        .unwrap();
    for (p, text) in [(&p1, "called about a refund"), (&p2, "wrote about delivery")] {
        crm.clone()
            .add_note(request(
                pb::AddNoteRequest { customer: p.clone(), contact: String::new(), text: text.into() },
                &admin,
            ))
            .await
            .unwrap();
    }
    crm.clone()
        .record_answer(request(
            pb::RecordAnswerRequest {
                customer: p2.clone(),
                contact: String::new(),
                question: "Was your issue solved?".into(),
                answer: "yes".into(),
            },
            &admin,
        ))
        .await
        .unwrap();

    // A contact that carries both identities finds two profiles: the older wins, the
    // other is reported for merging.
    let both = resolve(&svc, &admin, vec![phone("+34612345678"), email("ana@example.es")], "").await;
    assert_eq!((both.customer.unwrap().name, both.duplicate_customers.clone()), (p1.clone(), vec![p2.clone()]));

    let before = snapshot(&svc, &admin, &[&p1, &p2]).await;

    let m = crm
        .clone()
        .merge_customers(request(
            pb::MergeCustomersRequest {
                target: p1.clone(),
                source: p2.clone(),
                reason: "same person: phone and email confirmed".into(),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    let merged = get(&svc, &admin, &p1).await.unwrap();
    assert_eq!(merged.merged_customers, vec![p2.clone()]);
    assert_eq!(merged.identities.len(), 2);
    assert_eq!(merged.attributes.get("plan").map(String::as_str), Some("basic"), "the target's value wins");
    assert_eq!(merged.attributes.get("city").map(String::as_str), Some("Madrid"), "the source fills gaps");
    assert_eq!(merged.tags, vec!["loyal".to_owned(), "web".to_owned()]);
    assert_eq!(merged.value_tier, pb::ValueTier::Vip as i32);
    assert_eq!(get(&svc, &admin, &p2).await.unwrap().name, p1, "the source answers with the merged profile");
    assert_eq!(timeline(&svc, &admin, &p1).await.len(), 3, "two notes and an answer");
    let again = crm
        .clone()
        .merge_customers(request(
            pb::MergeCustomersRequest { target: p1.clone(), source: p2.clone(), reason: "again".into() },
            &admin,
        ))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    let dup = resolve(&svc, &admin, vec![phone("+34612345678"), email("ana@example.es")], "").await;
    assert!(dup.duplicate_customers.is_empty(), "merged profiles are one customer");

    let undone = crm
        .clone()
        .undo_merge(request(pb::UndoMergeRequest { name: m.name.clone() }, &admin))
        .await
        .unwrap()
        .into_inner();
    assert!(undone.undo_time.is_some());
    let after = snapshot(&svc, &admin, &[&p1, &p2]).await;
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(b.0, a.0, "profile restored");
        assert_eq!(b.1, a.1, "timeline restored");
        let strip = |mut v: serde_json::Value| {
            v.as_object_mut().unwrap().remove("merges");
            v
        };
        assert_eq!(strip(b.2.clone()), strip(a.2.clone()), "export restored");
    }
    let twice = crm.clone().undo_merge(request(pb::UndoMergeRequest { name: m.name }, &admin)).await.unwrap_err();
    assert_eq!(twice.code(), Code::FailedPrecondition);

    // Consent: the ledger entry in force decides; do-not-contact overrides everything.
    let check = |by: pb::CheckContactPermissionRequest| {
        let crm = crm.clone();
        let admin = admin.clone();
        async move { crm.clone().check_contact_permission(request(by, &admin)).await.unwrap().into_inner() }
    };
    let sms_marketing = |customer: &str| pb::CheckContactPermissionRequest {
        customer: customer.into(),
        channel: centralita_proto::tenancy::v1::Channel::Sms as i32,
        purpose: "marketing".into(),
        ..Default::default()
    };
    let r = check(sms_marketing(&p1)).await;
    assert!(!r.allowed && r.reason.contains("no consent"), "{r:?}");
    let consent = |granted: bool, secs_ago: i64| pb::RecordConsentRequest {
        customer: p1.clone(),
        consent: Some(pb::ConsentRecord {
            channel: centralita_proto::tenancy::v1::Channel::Sms as i32,
            purpose: "marketing".into(),
            granted,
            effective_time: Some(prost_types::Timestamp {
                seconds: chrono::Utc::now().timestamp() - secs_ago,
                nanos: 0,
            }),
            source: "web-form".into(),
            evidence: "form submission 881".into(),
            ..Default::default()
        }),
    };
    crm.clone().record_consent(request(consent(true, 3600), &admin)).await.unwrap();
    let r = check(sms_marketing(&p1)).await;
    assert!(r.allowed, "{r:?}");
    assert_eq!(r.consent.unwrap().evidence, "form submission 881");
    let by_identity = pb::CheckContactPermissionRequest {
        customer: String::new(),
        identity: Some(phone("0034 612 345 678")),
        ..sms_marketing("")
    };
    assert!(check(by_identity.clone()).await.allowed);
    let email_channel = pb::CheckContactPermissionRequest {
        channel: centralita_proto::tenancy::v1::Channel::Email as i32,
        ..sms_marketing(&p1)
    };
    assert!(!check(email_channel).await.allowed, "consent is per channel");
    // Withdrawn later: not allowed. A grant recorded now but effective before the
    // withdrawal does not override it.
    crm.clone().record_consent(request(consent(false, 60), &admin)).await.unwrap();
    crm.clone().record_consent(request(consent(true, 1800), &admin)).await.unwrap();
    let r = check(sms_marketing(&p1)).await;
    assert!(!r.allowed && r.reason.contains("withdrawn"), "{r:?}");
    crm.clone().record_consent(request(consent(true, 0), &admin)).await.unwrap();
    assert!(check(sms_marketing(&p1)).await.allowed);
    crm.clone()
        .set_do_not_contact(request(
            pb::SetDoNotContactRequest {
                customer: p1.clone(),
                do_not_contact: true,
                reason: "asked on the phone".into(),
            },
            &admin,
        ))
        .await
        .unwrap();
    let r = check(sms_marketing(&p1)).await;
    assert!(!r.allowed && r.reason.contains("do not contact"), "{r:?}");
    crm.clone()
        .set_do_not_contact(request(
            pb::SetDoNotContactRequest { customer: p1.clone(), do_not_contact: false, reason: String::new() },
            &admin,
        ))
        .await
        .unwrap();
    assert!(check(sms_marketing(&p1)).await.allowed);
    let unknown = pb::CheckContactPermissionRequest {
        customer: String::new(),
        identity: Some(phone("+15550000000")),
        ..sms_marketing("")
    };
    assert!(!check(unknown).await.allowed);
    svc.stop().await;
}

fn ts(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: ms / 1000, nanos: ((ms % 1000) * 1_000_000) as i32 }
}

/// One contact's events as sessions publishes them; `contact` is sessions' record of it
/// (identities and wrap-up notes included), which [`Script::record`] gives the stand-in.
struct Script {
    tenant: String,
    contact: spb::Contact,
    events: Vec<Event>,
    at: i64,
}

impl Script {
    fn new(tenant: &str, id: &str, channel: i32, identities: Vec<pb::Identity>, at: i64) -> Self {
        let contact = spb::Contact {
            name: format!("tenants/{tenant}/contacts/{id}"),
            tenant: tenant.into(),
            channel,
            direction: spb::Direction::Inbound as i32,
            queue: "support".into(),
            customer_identities: identities,
            create_time: Some(ts(at)),
            enqueue_time: Some(ts(at)),
            ..Default::default()
        };
        let mut s = Script { tenant: tenant.into(), contact, events: Vec::new(), at };
        s.push(Kind::Queued, ContactState::Queued, "", "");
        s
    }

    fn push(&mut self, kind: Kind, state: ContactState, agent: &str, notes: &str) -> &mut Self {
        self.at += 1000;
        self.contact.state = state as i32;
        if !agent.is_empty() {
            self.contact.agent_id = agent.into();
        }
        match kind {
            Kind::Accepted => self.contact.connect_time = Some(ts(self.at)),
            Kind::Ended | Kind::Abandoned => self.contact.end_time = Some(ts(self.at)),
            Kind::WrappedUp => self.contact.disposition = "resolved".into(),
            _ => {}
        }
        if kind == Kind::WrappedUp {
            self.contact.wrap_up_notes = notes.into();
        }
        // As sessions publishes it: references only.
        let on_topic = spb::Contact {
            customer_identities: Vec::new(),
            attributes: Default::default(),
            wrap_up_notes: String::new(),
            ..self.contact.clone()
        };
        let e = spb::ContactEvent {
            kind: kind as i32,
            contact: Some(on_topic),
            agent_id: agent.into(),
            customer_identified: !self.contact.customer_identities.is_empty(),
            has_notes: kind == Kind::WrappedUp && !notes.is_empty(),
            ..Default::default()
        };
        let at = chrono::DateTime::from_timestamp_millis(self.at).unwrap();
        self.events.push(Event::at(TenantId::parse(&self.tenant).unwrap(), &e, at));
        self
    }

    /// Puts sessions' record of the contact (as it is after the last event) in `sessions`.
    fn record(&self, sessions: &fake_sessions::FakeSessions) -> &Self {
        sessions.put(&self.contact);
        self
    }
}

async fn publish(topics: &Topics, events: &[Event]) {
    let producer = Producer::new(&testkit::brokers(), None).unwrap();
    for e in events {
        let key = e.payload::<spb::ContactEvent>().unwrap().contact.unwrap().name;
        producer.publish(&topics.contacts(), &key, e).await.unwrap();
    }
}

/// Polls `f` until it returns `Some` (up to 30 s).
async fn until<T, F, Fut>(mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..300 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("condition not reached in 30 s");
}

async fn find(svc: &Service, tok: &str, id: pb::Identity) -> Vec<pb::Customer> {
    svc.crm()
        .find_customers(request(
            pb::FindCustomersRequest { identity: Some(id), default_country_code: String::new() },
            tok,
        ))
        .await
        .unwrap()
        .into_inner()
        .customers
}

/// Interactions of the customer carrying `id`, once their states are `states` (newest
/// first).
async fn interactions_of(svc: &Service, tok: &str, id: pb::Identity, states: &[&str]) -> Vec<pb::Interaction> {
    until(|| async {
        let c = find(svc, tok, id.clone()).await;
        let c = c.first()?;
        let i = interactions(&timeline(svc, tok, &c.name).await);
        (i.iter().map(|i| i.state.as_str()).collect::<Vec<_>>() == states).then_some(i)
    })
    .await
}

#[tokio::test]
async fn timeline_from_events_screen_pop_and_replay() {
    let (prefix, topics, [a, b]) = setup().await;
    let svc = start(&prefix).await;
    let admin = token(Some(&a), Role::TenantAdmin, None);
    let t0 = chrono::Utc::now().timestamp_millis() - 3_600_000;
    let ana = phone("+34 600 111 222");
    let (voice, chat) =
        (centralita_proto::tenancy::v1::Channel::Voice as i32, centralita_proto::tenancy::v1::Channel::Chat as i32);
    let mut c1 = Script::new(&a, "c1", voice, vec![ana.clone()], t0);
    c1.push(Kind::Offered, ContactState::Offered, "agent-1", "")
        .push(Kind::Accepted, ContactState::Connected, "agent-1", "")
        .push(Kind::Ended, ContactState::AfterContactWork, "", "")
        .push(Kind::WrappedUp, ContactState::Closed, "", "refund issued");
    let mut c2 = Script::new(&a, "c2", chat, vec![email("ana@example.es"), phone("+34600111222")], t0 + 60_000);
    c2.push(Kind::Abandoned, ContactState::Abandoned, "", "");
    let mut c3 = Script::new(&a, "c3", voice, vec![ana.clone()], t0 + 120_000);
    c3.push(Kind::Offered, ContactState::Offered, "agent-2", "");
    let mut other = Script::new(&b, "c9", voice, vec![ana.clone()], t0);
    other.push(Kind::Offered, ContactState::Offered, "agent-1", "");
    for s in [&c1, &c2, &c3, &other] {
        s.record(&svc.sessions);
    }
    let mut events: Vec<Event> = [&c1, &c2, &c3, &other].iter().flat_map(|s| s.events.clone()).collect();
    let raw = format!("{events:?}");
    assert!(!raw.contains("600 111 222") && !raw.contains("refund issued"), "the events carry references only");
    // Redeliveries: the first half again.
    events.extend(events.clone().into_iter().take(events.len() / 2));
    publish(&topics, &events).await;

    let single = interactions_of(&svc, &admin, ana.clone(), &["offered", "abandoned", "closed"]).await;
    let contacts: Vec<_> = single.iter().map(|i| i.contact.rsplit('/').next().unwrap().to_owned()).collect();
    assert_eq!(contacts, ["c3", "c2", "c1"], "newest first");
    let c1i = &single[2];
    assert_eq!(
        (c1i.state.as_str(), c1i.agents.clone(), c1i.disposition.as_str(), c1i.wrap_up_notes.as_str()),
        ("closed", vec!["agent-1".to_owned()], "resolved", "refund issued")
    );
    assert_eq!(single[1].state, "abandoned");
    let customer = find(&svc, &admin, ana.clone()).await.remove(0);
    assert_eq!(customer.identities.len(), 2, "the chat's email joined the profile");
    // The identities and notes came from sessions' records, read with the CRM's own token
    // of each contact's tenant (the stand-in refuses another tenant's, as sessions does).
    let reads = svc.sessions.reads.lock().unwrap().clone();
    assert!(reads.iter().all(|(subject, _)| subject == "service:crm"), "{reads:?}");
    assert!(svc.sessions.reads_of(&format!("tenants/{b}/contacts/c9")) >= 1, "B's contact read with B's token");
    let pop_b_customer = find(&svc, &token(Some(&b), Role::TenantAdmin, None), ana.clone()).await;
    assert_eq!(pop_b_customer.len(), 1, "B's contact resolved in B");

    // Screen-pop: only the agent holding the contact, only while it holds it.
    let agent2 = token(None, Role::Agent, Some("agent-2"));
    let c3_name = format!("tenants/{a}/contacts/c3");
    let pop = svc
        .crm()
        .get_screen_pop(request(pb::GetScreenPopRequest { contact: c3_name.clone(), interaction_count: 5 }, &agent2))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pop.customer.unwrap().name, customer.name);
    let earlier: Vec<_> = pop.interactions.iter().map(|i| i.contact.rsplit('/').next().unwrap()).collect();
    assert_eq!(earlier, ["c2", "c1"]);
    assert_eq!(pop.contact.unwrap().state, "offered");
    let agent1 = token(None, Role::Agent, Some("agent-1"));
    for (tok, contact) in [
        (&agent1, c3_name.clone()),
        (&agent1, format!("tenants/{a}/contacts/c1")),
        (&token(Some(&b), Role::Agent, Some("agent-2")), c3_name.clone()),
        (&token(Some(&a), Role::Supervisor, None), c3_name.clone()),
        (&agent2, format!("tenants/{a}/contacts/nope")),
    ] {
        let e = svc
            .crm()
            .get_screen_pop(request(pb::GetScreenPopRequest { contact: contact.clone(), interaction_count: 0 }, tok))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{contact}");
    }
    // Tenant B's contact from the same number is B's customer, not A's.
    let pop_b = svc
        .crm()
        .get_screen_pop(request(
            pb::GetScreenPopRequest { contact: format!("tenants/{b}/contacts/c9"), interaction_count: 0 },
            &agent1,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(pop_b.customer.as_ref().unwrap().name, customer.name);
    assert!(pop_b.interactions.is_empty());
    // The agent holding c3 writes a note and records an answer about its customer.
    let note = svc
        .crm()
        .add_note(request(
            pb::AddNoteRequest { customer: String::new(), contact: c3_name.clone(), text: "prefers mornings".into() },
            &agent2,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((note.author.as_str(), note.contact.as_str()), ("agent-2", c3_name.as_str()));
    let denied = svc
        .crm()
        .record_answer(request(
            pb::RecordAnswerRequest {
                customer: String::new(),
                contact: c3_name.clone(),
                question: "q".into(),
                answer: "a".into(),
            },
            &agent1,
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    // Replay: a new consumer group reads the whole topic again into a wiped tenant; the
    // timeline equals the single pass.
    let pool = pool();
    {
        let mut client = pool.get().await.unwrap();
        let tx = centralita_crm::store::begin(&mut client, &TenantId::parse(&a).unwrap()).await.unwrap();
        for table in
            ["applied_events", "interactions", "notes", "answers", "consents", "identities", "merges", "customers"]
        {
            tx.execute(&format!("DELETE FROM {table}"), &[]).await.unwrap();
        }
        tx.commit().await.unwrap();
    }
    assert!(find(&svc, &admin, ana.clone()).await.is_empty());
    let (tx, _rx) = tokio::sync::watch::channel(0);
    let replay = centralita_crm::events::consumer(
        &testkit::brokers(),
        unique("crm-replay-"),
        topics.contacts(),
        None,
        centralita_crm::events::ContactEvents {
            pool: pool.clone(),
            applied: Arc::new(tx),
            metrics: Default::default(),
            sessions: Some(Arc::new(
                centralita_crm::sessions::ContactReader::new(
                    &svc.sessions.serve().await,
                    None,
                    centralita_platform::auth::Signer::from_file(
                        &testkit::repo_file("deploy/local/dev-keys/jwt-ed25519.key"),
                        "centralita",
                        "centralita-api",
                    )
                    .unwrap(),
                )
                .unwrap(),
            )),
        },
        None,
    )
    .unwrap();
    let stop = Shutdown::new();
    let replay = tokio::spawn(replay.run(stop.clone()));
    let replayed = interactions_of(&svc, &admin, ana.clone(), &["offered", "abandoned", "closed"]).await;
    stop.trigger();
    replay.await.unwrap().unwrap();
    assert_eq!(replayed, single, "replayed timeline equals the single pass");
    svc.stop().await;
}

/// Every row of every table of the `crm` schema as text, under the given tenant scopes.
async fn all_rows(scopes: &[&str]) -> String {
    let pool = pool();
    let mut client = pool.get().await.unwrap();
    let tables: Vec<String> = client
        .query("SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'crm'", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(tables.len() >= 12, "{tables:?}");
    let mut out = String::new();
    for scope in scopes {
        let tx = centralita_crm::store::begin(&mut client, &TenantId::parse(scope).unwrap()).await.unwrap();
        for t in &tables {
            for r in tx.query(&format!("SELECT t::text FROM crm.{t} t"), &[]).await.unwrap() {
                out.push_str(r.get::<_, &str>(0));
                out.push('\n');
            }
        }
        tx.commit().await.unwrap();
    }
    out
}

#[derive(Clone, Default)]
struct Collect(Arc<std::sync::Mutex<Vec<Event>>>);

impl centralita_platform::bus::Handler for Collect {
    async fn handle(&mut self, event: &Event) -> Result<(), centralita_platform::error::Error> {
        self.0.lock().unwrap().push(event.clone());
        Ok(())
    }
}

#[tokio::test]
async fn erasure_leaves_no_personal_data_and_is_announced() {
    let (prefix, topics, [a, b]) = setup().await;
    let svc = start(&prefix).await;
    let admin = token(Some(&a), Role::TenantAdmin, None);
    let crm = svc.crm();
    // Personal data, each piece unique to this run so a scan can look for it.
    let mark = unique("");
    let (name, mail, handle) = (format!("Zoe Q{mark}"), format!("zoe.{mark}@example.org"), format!("zoe_{mark}"));
    let number = format!("+1415{:07}", u64::from_str_radix(&mark[6..], 16).unwrap() % 10_000_000);
    let note_text = format!("note {mark}: lives at 3 Elm St");
    let evidence = format!("recording {mark}");
    let t0 = chrono::Utc::now().timestamp_millis() - 600_000;
    let mut c = Script::new(&a, &format!("e{mark}"), 1, vec![phone(&number)], t0);
    c.push(Kind::Offered, ContactState::Offered, "agent-9", "")
        .push(Kind::Accepted, ContactState::Connected, "agent-9", "")
        .push(Kind::Ended, ContactState::AfterContactWork, "", "")
        .push(Kind::WrappedUp, ContactState::Closed, "", &format!("wrap {mark}"));
    c.record(&svc.sessions);
    publish(&topics, &c.events).await;
    let zoe = until(|| async { find(&svc, &admin, phone(&number)).await.into_iter().next() }).await;
    interactions_of(&svc, &admin, phone(&number), &["closed"]).await;
    // A second profile with more data, merged into the first.
    let social = pb::Identity {
        kind: pb::IdentityKind::Social as i32,
        value: format!("@{handle}"),
        network: "instagram".into(),
    };
    let other = resolve(&svc, &admin, vec![email(&mail), social], &name).await.customer.unwrap();
    crm.clone()
        .update_customer(request(
            pb::UpdateCustomerRequest {
                customer: Some(pb::Customer {
                    name: other.name.clone(),
                    attributes: [("address".to_owned(), format!("Elm {mark}"))].into(),
                    ..Default::default()
                }),
                update_field_mask: mask(&["attributes"]),
                ..Default::default()
            },
            &admin,
        ))
        .await
        .unwrap();
    crm.clone()
        .add_note(request(
            pb::AddNoteRequest { customer: zoe.name.clone(), contact: String::new(), text: note_text.clone() },
            &admin,
        ))
        .await
        .unwrap();
    crm.clone()
        .record_answer(request(
            pb::RecordAnswerRequest {
                customer: other.name.clone(),
                contact: String::new(),
                question: format!("q {mark}?"),
                answer: format!("a {mark}"),
            },
            &admin,
        ))
        .await
        .unwrap();
    crm.clone()
        .record_consent(request(
            pb::RecordConsentRequest {
                customer: other.name.clone(),
                consent: Some(pb::ConsentRecord {
                    channel: centralita_proto::tenancy::v1::Channel::Email as i32,
                    purpose: "marketing".into(),
                    granted: true,
                    source: "web-form".into(),
                    evidence: evidence.clone(),
                    ..Default::default()
                }),
            },
            &admin,
        ))
        .await
        .unwrap();
    crm.clone()
        .merge_customers(request(
            pb::MergeCustomersRequest {
                target: zoe.name.clone(),
                source: other.name.clone(),
                reason: format!("dup {mark}"),
            },
            &admin,
        ))
        .await
        .unwrap();
    // Tenant B has its own customer with the same phone number: untouched by A's erasure.
    let b_admin = token(Some(&b), Role::TenantAdmin, None);
    let b_zoe = resolve(&svc, &b_admin, vec![phone(&number)], "").await.customer.unwrap();

    let export = crm
        .clone()
        .export_customer(request(pb::ExportCustomerRequest { name: zoe.name.clone() }, &admin))
        .await
        .unwrap()
        .into_inner();
    let doc: serde_json::Value = serde_json::from_slice(&export.json).unwrap();
    assert_eq!(doc["schema"], "centralita.crm.export.v1");
    for (key, n) in [
        ("profiles", 2),
        ("identities", 3),
        ("notes", 1),
        ("answers", 1),
        ("consents", 1),
        ("interactions", 1),
        ("merges", 1),
    ] {
        assert_eq!(doc[key].as_array().map(Vec::len), Some(n), "{key} in the export");
    }
    let before = all_rows(&[&a]).await;
    for piece in [&name, &mail, &number, &note_text, &evidence] {
        assert!(before.contains(piece.as_str()), "{piece} is stored before the erasure");
    }

    let erasure = crm
        .clone()
        .erase_customer(request(
            pb::EraseCustomerRequest { name: zoe.name.clone(), reason: "GDPR art. 17, ticket 4411".into() },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(erasure.customers.len(), 2);
    assert_eq!(erasure.contacts, vec![c.contact.name.clone()]);
    assert_eq!(erasure.deleted_rows.get("customers"), Some(&2));
    assert_eq!(erasure.deleted_rows.get("identities"), Some(&3));

    assert_eq!(get(&svc, &admin, &zoe.name).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(get(&svc, &admin, &other.name).await.unwrap_err().code(), Code::NotFound);
    assert!(find(&svc, &admin, phone(&number)).await.is_empty());
    let after = all_rows(&[&a, &b, "bpo"]).await;
    let pieces = [
        name.clone(),
        mail.clone(),
        handle.clone(),
        number.clone(),
        note_text.clone(),
        evidence.clone(),
        format!("wrap {mark}"),
        format!("Elm {mark}"),
        format!("q {mark}"),
        format!("dup {mark}"),
    ];
    for piece in &pieces {
        let hits: Vec<_> = after.lines().filter(|l| l.contains(piece.as_str())).collect();
        // B's own customer keeps its own copy of the number (a different company's record).
        let outside_b = hits.iter().filter(|l| !l.contains(b.as_str())).count();
        assert_eq!(outside_b, 0, "`{piece}` survived the erasure: {hits:?}");
    }
    assert!(after.contains("GDPR art. 17, ticket 4411"), "the audit record stays");
    assert_eq!(get(&svc, &b_admin, &b_zoe.name).await.unwrap().identities.len(), 1);

    // The erasure event, with ids only.
    let collect = Collect::default();
    let consumer = centralita_platform::bus::Consumer::new(
        centralita_platform::bus::ConsumerSettings {
            brokers: testkit::brokers(),
            group_id: unique("erasure-reader-"),
            topics: vec![topics.customers()],
            fetch_wait: centralita_platform::bus::FETCH_WAIT_DEFAULT,
            group_instance_id: None,
        },
        collect.clone(),
        centralita_platform::bus::MemoryDedupe::new(100),
        None,
    )
    .unwrap();
    let stop = Shutdown::new();
    let task = tokio::spawn(consumer.run(stop.clone()));
    let events = until(|| async {
        let got = collect.0.lock().unwrap().clone();
        (!got.is_empty()).then_some(got)
    })
    .await;
    stop.trigger();
    task.await.unwrap().unwrap();
    let erased: pb::CustomerErased = events[0].payload().unwrap();
    assert_eq!((erased.tenant.as_str(), erased.erasure.as_ref()), (a.as_str(), Some(&erasure)));
    let raw = format!("{erased:?}");
    assert!(pieces.iter().all(|p| !raw.contains(p.as_str())), "the event carries no personal data");

    // A replay of the erased contact's events does not bring the customer back.
    publish(&topics, &c.events).await;
    let mut probe = Script::new(&a, "probe", 1, vec![phone("+34911222333")], t0);
    probe.push(Kind::Abandoned, ContactState::Abandoned, "", "");
    probe.record(&svc.sessions);
    publish(&topics, &probe.events).await;
    interactions_of(&svc, &admin, phone("+34911222333"), &["abandoned"]).await;
    assert!(find(&svc, &admin, phone(&number)).await.is_empty(), "replayed events did not resurrect the customer");

    // Replaying into empty stores (issue 23): sessions' record of the contact was erased
    // (its consumer does so on CustomerErased), the CRM's tenant is wiped to nothing —
    // not even the erased-contacts list or the applied event ids — and the contacts topic is
    // read again from the beginning by a new group. Nothing brings the person back: the
    // events carry no identities and sessions has none left to give. An old-format event
    // with the identities in clear is not read either.
    svc.sessions.erase(&c.contact.name);
    let mut legacy = Script::new(&a, &format!("old{mark}"), 1, vec![phone(&number)], t0);
    legacy.push(Kind::Abandoned, ContactState::Abandoned, "", "");
    let legacy_event = spb::ContactEvent {
        kind: Kind::Abandoned as i32,
        contact: Some(legacy.contact.clone()),
        notes: format!("wrap {mark}"),
        ..Default::default()
    };
    let at = chrono::DateTime::from_timestamp_millis(t0).unwrap();
    publish(&topics, &[Event::at(TenantId::parse(&a).unwrap(), &legacy_event, at)]).await;
    // The service's own group has handled it (asked sessions, which has no record) before
    // the wipe, so the replay below meets it afresh.
    until(|| async { (svc.sessions.reads_of(&legacy.contact.name) >= 1).then_some(()) }).await;
    {
        let mut client = pool().get().await.unwrap();
        let tx = centralita_crm::store::begin(&mut client, &TenantId::parse(&a).unwrap()).await.unwrap();
        for table in [
            "applied_events",
            "erased_contacts",
            "interactions",
            "notes",
            "answers",
            "consents",
            "identities",
            "merges",
            "customers",
        ] {
            tx.execute(&format!("DELETE FROM {table}"), &[]).await.unwrap();
        }
        tx.commit().await.unwrap();
    }
    let read_before = svc.sessions.reads_of(&c.contact.name);
    let (tx, _rx) = tokio::sync::watch::channel(0);
    let replay = centralita_crm::events::consumer(
        &testkit::brokers(),
        unique("crm-erased-replay-"),
        topics.contacts(),
        None,
        centralita_crm::events::ContactEvents {
            pool: pool(),
            applied: Arc::new(tx),
            metrics: Default::default(),
            sessions: Some(Arc::new(
                centralita_crm::sessions::ContactReader::new(
                    &svc.sessions.serve().await,
                    None,
                    centralita_platform::auth::Signer::from_file(
                        &testkit::repo_file("deploy/local/dev-keys/jwt-ed25519.key"),
                        "centralita",
                        "centralita-api",
                    )
                    .unwrap(),
                )
                .unwrap(),
            )),
        },
        None,
    )
    .unwrap();
    let stop = Shutdown::new();
    let replaying = tokio::spawn(replay.run(stop.clone()));
    // Through when the probe is linked again and sessions was asked about each of the erased
    // contact's five events (published twice, applied once) and about the old-format one (by
    // both groups).
    interactions_of(&svc, &admin, phone("+34911222333"), &["abandoned"]).await;
    let legacy_name = legacy.contact.name.clone();
    until(|| async {
        (svc.sessions.reads_of(&c.contact.name) >= read_before + 5 && svc.sessions.reads_of(&legacy_name) >= 2)
            .then_some(())
    })
    .await;
    stop.trigger();
    replaying.await.unwrap().unwrap();
    assert!(find(&svc, &admin, phone(&number)).await.is_empty(), "a replay into empty stores recreated the person");
    let rows = all_rows(&[&a]).await;
    for piece in [&number, &format!("wrap {mark}")] {
        assert!(!rows.contains(piece.as_str()), "`{piece}` came back with the replay");
    }
    svc.stop().await;
}

async fn timeline_page(
    svc: &Service,
    tok: &str,
    customer: &str,
    page_token: &str,
) -> Result<pb::ListTimelineResponse, tonic::Status> {
    let req = pb::ListTimelineRequest { customer: customer.into(), page_size: 2, page_token: page_token.into() };
    svc.crm().list_timeline(request(req, tok)).await.map(|r| r.into_inner())
}

#[tokio::test]
async fn timeline_page_tokens_are_opaque_and_the_domain_metrics_move() {
    let (prefix, _topics, [a, _]) = setup().await;
    let svc = start(&prefix).await;
    let admin = token(Some(&a), Role::TenantAdmin, None);
    let created = resolve(&svc, &admin, vec![phone("+34 612 000 111")], "Eva").await;
    assert!(created.created);
    let eva = created.customer.unwrap().name;
    let leo = resolve(&svc, &admin, vec![phone("+34 612 000 222")], "Leo").await.customer.unwrap().name;
    assert!(!resolve(&svc, &admin, vec![phone("+34 612 000 222")], "").await.created);
    for text in ["one", "two", "three"] {
        let note = pb::AddNoteRequest { customer: eva.clone(), text: text.into(), ..Default::default() };
        svc.crm().add_note(request(note, &admin)).await.unwrap();
    }
    let first = timeline_page(&svc, &admin, &eva, "").await.unwrap();
    assert_eq!(first.entries.len(), 2);
    let next = first.next_page_token;
    assert!(!next.is_empty() && next.bytes().all(|b| b.is_ascii_hexdigit()), "{next}");
    let second = timeline_page(&svc, &admin, &eva, &next).await.unwrap();
    assert_eq!((second.entries.len(), second.next_page_token.as_str()), (1, ""));
    // A token this API did not return, or one of another customer's timeline, is refused.
    for (customer, bad) in [(&eva, "o2"), (&eva, "not a token"), (&leo, next.as_str())] {
        let err = timeline_page(&svc, &admin, customer, bad).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad}");
        assert!(err.message().contains("page_token"), "{}", err.message());
    }

    let consent = pb::ConsentRecord {
        channel: 3,
        purpose: "marketing".into(),
        granted: true,
        source: "web".into(),
        ..Default::default()
    };
    let req = pb::RecordConsentRequest { customer: eva.clone(), consent: Some(consent) };
    svc.crm().record_consent(request(req, &admin)).await.unwrap();
    svc.crm().export_customer(request(pb::ExportCustomerRequest { name: eva.clone() }, &admin)).await.unwrap();
    let erase = pb::EraseCustomerRequest { name: leo.clone(), reason: "customer asked".into() };
    svc.crm().erase_customer(request(erase, &admin)).await.unwrap();
    let text = http_get(svc.admin, "/metrics").await;
    for sample in [
        "centralita_crm_customers_resolved_total{service=\"crm\",source=\"api\",outcome=\"created\"} 2",
        "centralita_crm_customers_resolved_total{service=\"crm\",source=\"api\",outcome=\"found\"} 1",
        "centralita_crm_timeline_entries_written_total{service=\"crm\",kind=\"note\"} 3",
        "centralita_crm_timeline_entries_written_total{service=\"crm\",kind=\"consent\"} 1",
        "centralita_crm_consent_changes_total{service=\"crm\",change=\"granted\"} 1",
        "centralita_crm_gdpr_requests_total{service=\"crm\",kind=\"export\"} 1",
        "centralita_crm_gdpr_requests_total{service=\"crm\",kind=\"erasure\"} 1",
        "centralita_crm_erased_rows_total{service=\"crm\",table=\"customers\"} 1",
    ] {
        assert!(text.lines().any(|l| l == sample), "no `{sample}` in\n{text}");
    }
    svc.stop().await;
}

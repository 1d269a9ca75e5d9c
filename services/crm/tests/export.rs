//! The subject access export never passes for complete when a store was not reached: the
//! CRM in-process against the local stack with sessions' endpoint pointing at a closed port
//! and media's and recording's not set. The CRM's own record is still exported whole; each
//! other store says why it is missing. (The export reaching the real services is
//! `deploy/local/e2e/test_subject_access.py`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use centralita_crm::store::{self, InteractionRow};
use centralita_crm::Settings;
use centralita_platform::auth::Role;
use centralita_platform::config::ServiceArgs;
use centralita_platform::server::Listeners;
use centralita_platform::shutdown::Shutdown;
use centralita_platform::tenant::TenantId;
use centralita_platform::testkit::{self, request, token, unique};
use centralita_proto::crm::v1::{self as pb, customer_service_client::CustomerServiceClient};
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

#[tokio::test]
async fn an_export_says_which_stores_it_could_not_reach_and_stays_in_its_tenant() {
    let (prefix, _topics, [a, b]) =
        testkit::two_tenants("crm-sar-", manifest, |t| vec![t.contacts(), t.customers()]).await;
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let listeners = Listeners::ephemeral().await.unwrap();
    let (grpc, admin_addr) = (listeners.grpc_addr(), listeners.admin_addr());
    let shutdown = Shutdown::new();
    let mut settings = Settings::new(testkit::postgres());
    settings.sessions_endpoint = Some(format!("http://{closed}"));
    let config = ServiceArgs::<Settings> { common: testkit::common(&prefix), service: settings };
    let task = tokio::spawn(centralita_crm::run(config, listeners, shutdown.clone()));
    assert!(testkit::wait_ready(admin_addr).await, "crm did not become ready");
    let mut crm =
        CustomerServiceClient::new(Channel::from_shared(format!("http://{grpc}")).unwrap().connect().await.unwrap());
    let admin = token(Some(&a), Role::TenantAdmin, None);
    let digits = uuid::Uuid::now_v7().as_u128().to_string();
    let phone = format!("+3491{}", &digits[digits.len() - 7..]);
    let identity = pb::Identity { kind: pb::IdentityKind::Phone as i32, value: phone.clone(), network: String::new() };
    let resolve =
        pb::ResolveCustomerRequest { identities: vec![identity], display_name: "Ivo".into(), ..Default::default() };
    let customer = crm.resolve_customer(request(resolve, &admin)).await.unwrap().into_inner().customer.unwrap();
    // One contact linked to the customer, as the contact-event consumer links it.
    let contact = unique("c");
    let pool = centralita_platform::db::pool(testkit::postgres().url.expose(), "crm", 2).unwrap();
    let mut client = pool.get().await.unwrap();
    let tx = store::begin(&mut client, &TenantId::parse(&a).unwrap()).await.unwrap();
    let mut row = InteractionRow::new(contact.clone(), chrono::Utc::now());
    row.customer_id = customer.name.strip_prefix("customers/").map(str::to_owned);
    store::write_interaction(&tx, &a, &row).await.unwrap();
    tx.commit().await.unwrap();

    let export = pb::ExportCustomerRequest { name: customer.name.clone() };
    let json = crm.export_customer(request(export.clone(), &admin)).await.unwrap().into_inner().json;
    let doc: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(doc["complete"], false);
    let others = &doc["other_stores"];
    assert_eq!(others["sessions"]["state"], "unavailable", "{others}");
    assert_eq!(others["sessions"]["code"], "Unavailable", "{others}");
    assert_eq!(others["media"]["state"], "not_configured");
    assert_eq!(others["recording"]["state"], "not_configured");
    // The CRM's own record is whole: the identity and the linked contact.
    assert_eq!(doc["identities"][0]["value"], phone.as_str());
    let linked = format!("tenants/{a}/contacts/{contact}");
    assert_eq!(doc["interactions"][0]["contact"], linked.as_str());

    // Tenant B's admin does not find A's customer; a supervisor of A may not export.
    let b_admin = token(Some(&b), Role::TenantAdmin, None);
    assert_eq!(crm.export_customer(request(export.clone(), &b_admin)).await.unwrap_err().code(), Code::NotFound);
    let sup = token(Some(&a), Role::Supervisor, None);
    assert_eq!(crm.export_customer(request(export, &sup)).await.unwrap_err().code(), Code::PermissionDenied);
    shutdown.trigger();
    task.await.unwrap().unwrap();
}

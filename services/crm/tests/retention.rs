//! The CRM's retention sweeper against the local PostgreSQL, with the sweeper's clock moved
//! forward instead of waiting: records older than their tenant's `dataRetentionDays` go one
//! by one while their customer stays; a customer with no activity within the limit goes
//! with everything about them; a recent consent keeps its customer; erasure reasons are
//! cleared, the erasure records kept; tenant B (a longer limit) is untouched; a second pass
//! deletes nothing. Then the service itself: its sweeper runs on its interval and counts
//! what it deleted in `/metrics`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use centralita_crm::retention::{self, Report};
use centralita_crm::store::{self, AnswerRow, ConsentRow, InteractionRow};
use centralita_crm::Settings;
use centralita_platform::config::ServiceArgs;
use centralita_platform::identity::{Identity, Kind};
use centralita_platform::registry::TenantRegistry;
use centralita_platform::server::Listeners;
use centralita_platform::shutdown::Shutdown;
use centralita_platform::tenant::{TenantId, TenantManifest};
use centralita_platform::testkit::{self, unique};
use chrono::{DateTime, Utc};

fn manifest(id: &str, days: u32) -> String {
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
  dataRetentionDays: {days}
  recording: {{ voice: none }}
  routing:
    queues:
      - {{ id: support }}
"#
    )
}

async fn pool() -> deadpool_postgres::Pool {
    let pool = centralita_platform::db::pool(testkit::postgres().url.expose(), "crm", 2).unwrap();
    centralita_platform::db::migrate(&pool, &centralita_crm::MIGRATIONS).await.unwrap();
    pool
}

fn days(n: i64) -> chrono::Duration {
    chrono::Duration::days(n)
}

/// Writes through the store as the API and the contact-event consumer do, then dates rows
/// back as if written earlier.
struct Tenant<'a> {
    pool: &'a deadpool_postgres::Pool,
    id: TenantId,
}

impl Tenant<'_> {
    async fn sql(&self, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> u64 {
        let mut client = self.pool.get().await.unwrap();
        let tx = store::begin(&mut client, &self.id).await.unwrap();
        let n = tx.execute(sql, params).await.unwrap();
        tx.commit().await.unwrap();
        n
    }

    async fn count(&self, sql: &str, params: &[&(dyn tokio_postgres::types::ToSql + Sync)]) -> i64 {
        let mut client = self.pool.get().await.unwrap();
        let tx = store::begin(&mut client, &self.id).await.unwrap();
        tx.query_one(sql, params).await.unwrap().get(0)
    }

    /// A customer with a phone, created (and last updated) at `at`.
    async fn customer(&self, phone: &str, at: DateTime<Utc>) -> String {
        let mut client = self.pool.get().await.unwrap();
        let tx = store::begin(&mut client, &self.id).await.unwrap();
        let ids = [Identity { kind: Kind::Phone, value: phone.to_owned() }];
        let root = store::resolve(&tx, self.id.as_str(), &ids, "Ret Person").await.unwrap().root;
        tx.commit().await.unwrap();
        self.sql("UPDATE customers SET created_at = $2, updated_at = $2 WHERE id = $1", &[&root, &at]).await;
        root
    }

    async fn interaction(&self, customer: &str, at: DateTime<Utc>) -> String {
        let contact = unique("c-");
        let mut row = InteractionRow::new(contact.clone(), at);
        row.customer_id = Some(customer.into());
        row.channel = 1;
        row.connected_at = Some(at + chrono::Duration::seconds(5));
        row.ended_at = Some(at + chrono::Duration::seconds(65));
        row.wrap_up_notes = "called back about the invoice".into();
        let mut client = self.pool.get().await.unwrap();
        let tx = store::begin(&mut client, &self.id).await.unwrap();
        store::write_interaction(&tx, self.id.as_str(), &row).await.unwrap();
        tx.commit().await.unwrap();
        contact
    }

    async fn note(&self, customer: &str, at: DateTime<Utc>) {
        let mut client = self.pool.get().await.unwrap();
        let tx = store::begin(&mut client, &self.id).await.unwrap();
        let n = store::add_note(&tx, self.id.as_str(), customer, "", "agents/ana", "prefers mornings").await.unwrap();
        tx.commit().await.unwrap();
        self.sql("UPDATE notes SET created_at = $2 WHERE id = $1", &[&n.id, &at]).await;
    }

    async fn answer(&self, customer: &str, at: DateTime<Utc>) {
        let a = AnswerRow {
            id: store::new_id(),
            customer_id: customer.into(),
            contact: String::new(),
            question: "satisfied?".into(),
            answer: "yes".into(),
            asked_by: "agents/ana".into(),
            asked_at: at,
        };
        let mut client = self.pool.get().await.unwrap();
        let tx = store::begin(&mut client, &self.id).await.unwrap();
        store::add_answer(&tx, self.id.as_str(), &a).await.unwrap();
        tx.commit().await.unwrap();
        self.sql("UPDATE answers SET asked_at = $2 WHERE id = $1", &[&a.id, &at]).await;
    }

    async fn consent(&self, customer: &str, at: DateTime<Utc>) {
        let c = ConsentRow {
            id: store::new_id(),
            customer_id: customer.into(),
            channel: 3,
            purpose: "marketing".into(),
            granted: false,
            effective_at: at,
            source: "sms STOP".into(),
            evidence: "SM0001".into(),
            recorded_by: "channels/media".into(),
            recorded_at: at,
        };
        let mut client = self.pool.get().await.unwrap();
        let tx = store::begin(&mut client, &self.id).await.unwrap();
        store::add_consent(&tx, self.id.as_str(), &c).await.unwrap();
        tx.commit().await.unwrap();
        self.sql("UPDATE consents SET recorded_at = $2 WHERE id = $1", &[&c.id, &at]).await;
    }

    async fn merge(&self, target: &str, source: &str, at: DateTime<Utc>) {
        let mut client = self.pool.get().await.unwrap();
        let tx = store::begin(&mut client, &self.id).await.unwrap();
        let m = store::merge(&tx, self.id.as_str(), target, source, "same person", "agents/sup").await.unwrap();
        tx.commit().await.unwrap();
        self.sql("UPDATE merges SET merged_at = $2 WHERE id = $1", &[&m.id, &at]).await;
    }

    /// An erasure of a fresh customer made at `at`; its id.
    async fn erasure(&self, at: DateTime<Utc>) -> String {
        let x = self.customer(&phone(), at).await;
        let mut client = self.pool.get().await.unwrap();
        let tx = store::begin(&mut client, &self.id).await.unwrap();
        let e = store::erase(&tx, self.id.as_str(), &[x], "admins/root", "ticket 9").await.unwrap();
        tx.commit().await.unwrap();
        self.sql("UPDATE erasures SET erased_at = $2 WHERE id = $1", &[&e.id, &at]).await;
        e.id
    }

    async fn contacts(&self, contact: &str) -> i64 {
        self.count("SELECT count(*) FROM interactions WHERE contact_id = $1", &[&contact]).await
    }

    async fn reason(&self, erasure: &str) -> Option<String> {
        let mut client = self.pool.get().await.unwrap();
        let tx = store::begin(&mut client, &self.id).await.unwrap();
        store::erasure(&tx, self.id.as_str(), erasure).await.unwrap().map(|e| e.reason)
    }

    async fn rows_of(&self, customers: &[&str]) -> Vec<i64> {
        let ids: Vec<String> = customers.iter().map(|c| (*c).to_owned()).collect();
        let mut out = Vec::new();
        for (table, column) in [
            ("customers", "id"),
            ("identities", "customer_id"),
            ("interactions", "customer_id"),
            ("notes", "customer_id"),
            ("answers", "customer_id"),
            ("consents", "customer_id"),
        ] {
            out.push(self.count(&format!("SELECT count(*) FROM {table} WHERE {column} = ANY($1)"), &[&ids]).await);
        }
        out.push(self.count("SELECT count(*) FROM merges WHERE target = ANY($1) OR source = ANY($1)", &[&ids]).await);
        out
    }
}

/// A phone number of its own for each run (identities are unique per tenant).
fn phone() -> String {
    let digits: String = uuid::Uuid::now_v7().as_u128().to_string().chars().rev().take(8).collect();
    format!("+346{digits}")
}

#[tokio::test]
async fn expired_records_and_inactive_customers_go_recent_ones_and_tenant_b_stay() {
    let pool = pool().await;
    let (a, b) = (unique("crm-ret-a-"), unique("crm-ret-b-"));
    let registry = TenantRegistry::new();
    for (t, limit) in [(&a, 30), (&b, 365)] {
        registry.upsert(TenantManifest::parse_all(&manifest(t, limit), Utc::now()).unwrap().remove(0));
    }
    let now = Utc::now();
    // The sweep runs as if 20 days from now: A's cutoff is 10 days ago, B's 345 days ago.
    let at = now + days(20);
    let (old, fresh) = (now - days(20), now);
    let ta = Tenant { pool: &pool, id: TenantId::parse(&a).unwrap() };
    let tb = Tenant { pool: &pool, id: TenantId::parse(&b).unwrap() };

    // K: a customer of today with old and recent records.
    let k = ta.customer(&phone(), fresh).await;
    let k_old = ta.interaction(&k, old).await;
    let k_new = ta.interaction(&k, fresh).await;
    ta.note(&k, old).await;
    ta.note(&k, fresh).await;
    ta.answer(&k, old).await;
    ta.answer(&k, fresh).await;
    // G (with G2 merged into it): nothing since long ago.
    let g = ta.customer(&phone(), now - days(40)).await;
    let g2 = ta.customer(&phone(), now - days(40)).await;
    ta.merge(&g, &g2, old).await;
    ta.interaction(&g, old).await;
    ta.interaction(&g2, old).await;
    ta.note(&g, old).await;
    ta.answer(&g2, old).await;
    ta.consent(&g, old).await;
    // C: an old profile whose only recent activity is a consent entry (an SMS STOP).
    let c = ta.customer(&phone(), now - days(40)).await;
    ta.interaction(&c, old).await;
    ta.consent(&c, fresh).await;
    // Erasure records: one old, one recent.
    let (e_old, e_new) = (ta.erasure(old).await, ta.erasure(fresh).await);
    // Tenant B: the same old customer as G, under a 365-day limit.
    let bg = tb.customer(&phone(), now - days(40)).await;
    let bg2 = tb.customer(&phone(), now - days(40)).await;
    tb.merge(&bg, &bg2, old).await;
    tb.interaction(&bg, old).await;
    tb.note(&bg, old).await;
    tb.answer(&bg2, old).await;
    tb.consent(&bg, old).await;
    let b_erasure = tb.erasure(old).await;
    let b_before = tb.rows_of(&[&bg, &bg2]).await;
    assert_eq!(b_before, vec![2, 2, 1, 1, 1, 1, 1]);

    let platform = centralita_platform::metrics::Metrics::new("crm");
    let metrics = centralita_crm::metrics::Metrics::register(&platform);
    // As of today nothing is past A's 30 days (the old profiles have records of 20 days
    // ago): a sweep now deletes nothing.
    let today = retention::sweep(&pool, &registry, &metrics, now).await.unwrap();
    assert_eq!(today.total(), 0, "{today:?}");

    let first = retention::sweep(&pool, &registry, &metrics, at).await.unwrap();
    // K keeps its recent records and itself; its old ones are gone.
    //                              customers identities interactions notes answers consents merges
    assert_eq!(ta.rows_of(&[&k]).await, vec![1, 1, 1, 1, 1, 0, 0]);
    assert_eq!((ta.contacts(&k_old).await, ta.contacts(&k_new).await), (0, 1));
    // G and G2 are gone with everything about them, merges and consents included.
    assert_eq!(ta.rows_of(&[&g, &g2]).await, vec![0, 0, 0, 0, 0, 0, 0]);
    // C stays (its consent entry is recent); its old interaction went.
    assert_eq!(ta.rows_of(&[&c]).await, vec![1, 1, 0, 0, 0, 1, 0]);
    // Erasure records stay; the old one's reason is cleared.
    assert_eq!(ta.reason(&e_old).await.as_deref(), Some(""));
    assert_eq!(ta.reason(&e_new).await.as_deref(), Some("ticket 9"));
    let expected: Report = Report(
        [
            ("answers", 2),
            ("consents", 1),
            ("customers", 2),
            ("erasure_reasons", 1),
            ("identities", 2),
            ("interactions", 4),
            ("merges", 1),
            ("notes", 2),
        ]
        .into_iter()
        .map(|(t, n)| (t.to_owned(), n))
        .collect(),
    );
    assert_eq!(first, expected, "A's expired rows, and nothing of B");
    // Tenant B, under its longer limit, is untouched, its erasure reason too.
    assert_eq!(tb.rows_of(&[&bg, &bg2]).await, b_before);
    assert_eq!(tb.reason(&b_erasure).await.as_deref(), Some("ticket 9"));

    // A second pass at the same time deletes nothing.
    let second = retention::sweep(&pool, &registry, &metrics, at).await.unwrap();
    assert_eq!(second.total(), 0, "{second:?}");

    // The counts reached the metrics.
    let text = platform.encode();
    let sample = |table: &str| {
        let want = format!("centralita_crm_retention_deleted_total{{service=\"crm\",table=\"{table}\"}} ");
        text.lines().find_map(|l| l.strip_prefix(want.as_str())).map(str::to_owned)
    };
    assert_eq!(sample("customers").as_deref(), Some("2"), "{text}");
    assert_eq!(sample("interactions").as_deref(), Some("4"), "{text}");
    assert_eq!(sample("erasure_reasons").as_deref(), Some("1"), "{text}");

    // Under B's own limit, the same rows go too once they are past it.
    let much_later = retention::sweep(&pool, &registry, &metrics, now + days(400)).await.unwrap();
    assert!(much_later.of("customers") >= 2, "{much_later:?}");
    assert_eq!(tb.rows_of(&[&bg, &bg2]).await, vec![0, 0, 0, 0, 0, 0, 0]);
}

/// The service runs its sweeper on `CENTRALITA_CRM_SWEEP_INTERVAL` with the tenants it
/// learns from the tenants topic: an old customer of A goes, B's (a longer limit) stays,
/// and `/metrics` counts it.
#[tokio::test]
async fn the_service_sweeps_on_its_interval_and_counts_it() {
    let (prefix, _topics, [a, b]) = testkit::two_tenants(
        "crm-rs-",
        |t| manifest(t, if t.contains("crm-rs-a-") { 30 } else { 365 }),
        |t| vec![t.contacts(), t.customers()],
    )
    .await;
    let pool = pool().await;
    let ta = Tenant { pool: &pool, id: TenantId::parse(&a).unwrap() };
    let tb = Tenant { pool: &pool, id: TenantId::parse(&b).unwrap() };
    let long_ago = Utc::now() - days(90);
    let ga = ta.customer(&phone(), long_ago).await;
    ta.interaction(&ga, long_ago).await;
    let gb = tb.customer(&phone(), long_ago).await;
    tb.interaction(&gb, long_ago).await;

    let listeners = Listeners::ephemeral().await.unwrap();
    let admin = listeners.admin_addr();
    let shutdown = Shutdown::new();
    let mut settings = Settings::new(testkit::postgres());
    settings.sweep_interval = Duration::from_secs(1);
    let config = ServiceArgs::<Settings> { common: testkit::common(&prefix), service: settings };
    let task = tokio::spawn(centralita_crm::run(config, listeners, shutdown.clone()));
    assert!(testkit::wait_ready(admin).await, "crm did not become ready");
    let mut gone = false;
    for _ in 0..150 {
        if ta.rows_of(&[&ga]).await == vec![0, 0, 0, 0, 0, 0, 0] {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "A's customer of 90 days ago was not swept");
    assert_eq!(tb.rows_of(&[&gb]).await, vec![1, 1, 1, 0, 0, 0, 0], "B's is within its 365 days");
    let body = reqwest_free_get(admin, "/metrics").await;
    let line = body
        .lines()
        .find(|l| l.starts_with("centralita_crm_retention_deleted_total{") && l.contains("table=\"customers\""))
        .unwrap_or_default()
        .to_owned();
    let n: u64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0);
    assert!(n >= 1, "{line:?}");
    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap().unwrap();
}

/// A plain HTTP/1.0 GET on the admin port.
async fn reqwest_free_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

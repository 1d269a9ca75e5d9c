//! Email against the local stack's PostgreSQL: the SMTP listener spoken to by a raw SMTP
//! client (unknown recipients refused before DATA, recipient, size, line and idle limits,
//! forbidden attachments, malformed mail, sessions unavailable → 451 with nothing stored, a
//! known Message-ID → 250 with nothing new), the Message-ID store per tenant, and replies
//! through a relay (a bare SMTP sink in this test) with RFC 5322 threading headers; a relay
//! that is down makes a reply retry and end `failed` with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use centralita_media::digital::contacts::Contacts;
use centralita_media::digital::email::{Email, EmailSettings};
use centralita_media::digital::follow::Hub;
use centralita_media::digital::model::{Kind, NewMessage, Sender, Status};
use centralita_media::digital::schema::MIGRATIONS;
use centralita_media::digital::smtp::{self, SmtpLimits};
use centralita_media::digital::store::{self, EmailRecord, NewConversation};
use centralita_media::digital::Digital;
use centralita_media::metrics::DigitalMetrics;
use centralita_platform::auth::Signer;
use centralita_platform::registry::TenantRegistry;
use centralita_platform::shutdown::Shutdown;
use centralita_platform::tenant::{TenantId, TenantManifest};
use centralita_platform::testkit::{self, unique};
use deadpool_postgres::Pool;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

async fn pool() -> Pool {
    let schema: &'static str = Box::leak(unique("media_em_").into_boxed_str());
    let pool = centralita_platform::db::pool(testkit::postgres().url.expose(), schema, 8).unwrap();
    let migrations = centralita_platform::db::Migrations { schema, steps: MIGRATIONS.steps };
    centralita_platform::db::migrate(&pool, &migrations).await.unwrap();
    pool
}

async fn drop_schema(pool: Pool) {
    let client = pool.get().await.unwrap();
    let schema: String = client.query_one("SELECT current_schema()", &[]).await.unwrap().get(0);
    assert!(schema.starts_with("media_em_"), "{schema}");
    client.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await.unwrap();
}

fn manifest(id: &str, domain: &str, relay_port: u16) -> String {
    format!(
        r#"
apiVersion: centralita.io/v1
kind: Tenant
metadata: {{ name: {id} }}
spec:
  displayName: {id}
  channels: [email]
  serviceLevel: {{ targetPercent: 80, thresholdSeconds: 20 }}
  quotas: {{ maxConcurrentContacts: 100, apiRequestsPerSecond: 1000 }}
  businessHours: {{ timeZone: UTC }}
  dataRetentionDays: 30
  recording: {{ voice: none }}
  routing:
    queues:
      - {{ id: support }}
      - {{ id: sales }}
  email:
    addresses:
      - {{ address: help@{domain}, queue: support }}
      - {{ address: sales@{domain}, queue: sales }}
    fromAddress: help@{domain}
    relay: {{ host: 127.0.0.1, port: {relay_port}, tls: none }}
"#
    )
}

/// A port nothing listens on.
async fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

/// The digital role's state on `pool`, with sessions unreachable (a closed port).
async fn digital(pool: &Pool) -> Arc<Digital> {
    let key = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/local/dev-keys/jwt-ed25519.key");
    let signer = Signer::from_file(&key, "centralita", "centralita").unwrap();
    let sessions = format!("http://127.0.0.1:{}", closed_port().await);
    Arc::new(Digital {
        pool: pool.clone(),
        hub: Hub::default(),
        contacts: Contacts::new(&sessions, &sessions, None, signer).unwrap(),
        metrics: Arc::new(DigitalMetrics::default()),
        outbox: Arc::new(tokio::sync::Notify::new()),
    })
}

fn email(digital: Arc<Digital>, registry: &TenantRegistry) -> Arc<Email> {
    let settings = EmailSettings {
        secrets_dir: None,
        attempts: 2,
        backoff: Duration::from_millis(20),
        timeout: Duration::from_secs(5),
    };
    Arc::new(Email::new(digital, registry.clone(), settings))
}

struct Client {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Client {
    async fn connect(port: u16) -> (Self, String) {
        let (r, w) = TcpStream::connect(("127.0.0.1", port)).await.unwrap().into_split();
        let mut c = Client { reader: BufReader::new(r), writer: w };
        let greeting = c.reply().await;
        (c, greeting)
    }

    /// One reply (the last line of a multi-line one); empty when the server closed.
    async fn reply(&mut self) -> String {
        loop {
            let mut line = String::new();
            let n =
                tokio::time::timeout(Duration::from_secs(10), self.reader.read_line(&mut line)).await.unwrap().unwrap();
            if n == 0 {
                return String::new();
            }
            if line.as_bytes().get(3) != Some(&b'-') {
                return line.trim_end().to_owned();
            }
        }
    }

    async fn send(&mut self, text: &str) {
        self.writer.write_all(text.as_bytes()).await.unwrap();
    }

    async fn cmd(&mut self, line: &str) -> String {
        self.send(&format!("{line}\r\n")).await;
        self.reply().await
    }

    /// A whole transaction to `to`; the answer to its end of DATA.
    async fn mail(&mut self, from: &str, to: &str, message: &str) -> String {
        let r = self.cmd(&format!("MAIL FROM:<{from}>")).await;
        assert!(r.starts_with("250"), "MAIL FROM:<{from}>: {r}");
        let rcpt = self.cmd(&format!("RCPT TO:<{to}>")).await;
        assert!(rcpt.starts_with("250"), "{rcpt}");
        assert!(self.cmd("DATA").await.starts_with("354"));
        self.send(message).await;
        self.cmd(".").await
    }
}

fn plain(id: &str, subject: &str) -> String {
    format!(
        "From: Ana <ana@customer.example>\r\nTo: help@a.example\r\nSubject: {subject}\r\nMessage-ID: <{id}>\r\n\r\nHello.\r\n"
    )
}

async fn count(pool: &Pool, tenant: &TenantId, table: &str) -> i64 {
    let mut client = pool.get().await.unwrap();
    let tx = centralita_platform::db::begin(&mut client, tenant).await.unwrap();
    let n = tx.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await.unwrap().get(0);
    tx.commit().await.unwrap();
    n
}

/// An email conversation of `tenant` with one inbound email `id` (References `refs`).
async fn email_conversation(pool: &Pool, tenant: &TenantId, id: &str, refs: &[&str], subject: &str) -> String {
    let contact = uuid::Uuid::now_v7().simple().to_string();
    let c = NewConversation {
        contact_id: contact.clone(),
        channel: store::EMAIL,
        queue: "support".into(),
        visitor: "ana@customer.example".into(),
        origin: "help@a.example".into(),
    };
    assert!(store::create_conversation(pool, tenant, &c, "Email conversation started").await.unwrap());
    let record = EmailRecord {
        message_id: id.into(),
        subject: subject.into(),
        refs: refs.iter().map(|s| s.to_string()).collect(),
        attachments: serde_json::json!([]),
    };
    let m = NewMessage {
        sender: Sender::Customer,
        kind: Kind::Text,
        text: "Hello.".into(),
        provider_time: None,
        request_id: String::new(),
        attachment: None,
    };
    assert!(store::append_email(pool, tenant, &contact, true, &record, &m).await.unwrap().is_some());
    assert!(store::append_email(pool, tenant, &contact, true, &record, &m).await.unwrap().is_none(), "once");
    contact
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_refuses_before_storing_and_keeps_its_limits() {
    let pool = pool().await;
    let a = TenantId::parse(&unique("em-a-")).unwrap();
    let b = TenantId::parse(&unique("em-b-")).unwrap();
    let registry = TenantRegistry::new();
    for (t, domain) in [(&a, "a.example"), (&b, "b.example")] {
        let relay = closed_port().await;
        registry.upsert(
            TenantManifest::parse_all(&manifest(t.as_str(), domain, relay), chrono::Utc::now()).unwrap().remove(0),
        );
    }
    let d = digital(&pool).await;
    let metrics = d.metrics.clone();
    let email = email(d, &registry);
    // A's message already stored under its Message-ID.
    let known = email_conversation(&pool, &a, "known-1@customer.example", &["known-1@customer.example"], "Old").await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let limits = SmtpLimits {
        max_message_bytes: 2048,
        max_recipients: 2,
        idle: Duration::from_millis(1500),
        ..SmtpLimits::default()
    };
    let stop = Shutdown::new();
    tokio::spawn(smtp::serve(listener, email, limits, "mx.test".into(), stop.clone()));

    let (mut c, greeting) = Client::connect(port).await;
    assert!(greeting.starts_with("220 mx.test"), "{greeting}");
    assert!(c.cmd("EHLO customer.example").await.starts_with("250"));
    assert!(c.cmd("MAIL FROM:<ana@customer.example>").await.starts_with("250"));
    // Unknown recipients, before any DATA.
    for unknown in ["nobody@a.example", "help@c.example", "no-domain"] {
        let r = c.cmd(&format!("RCPT TO:<{unknown}>")).await;
        assert!(r.starts_with("550 5.1.1"), "{unknown}: {r}");
    }
    assert!(c.cmd("DATA").await.starts_with("503"), "no recipient: no DATA");
    assert!(c.cmd("RCPT TO:<HELP@a.example>").await.starts_with("250"));
    assert!(c.cmd("RCPT TO:<help@b.example>").await.starts_with("250"));
    assert!(c.cmd("RCPT TO:<sales@a.example>").await.starts_with("452 4.5.3"), "a third recipient");
    // Too big: the whole DATA is read, then 552.
    assert!(c.cmd("DATA").await.starts_with("354"));
    c.send(&plain("big-1@customer.example", "big")).await;
    for _ in 0..40 {
        c.send(&format!("{}\r\n", "x".repeat(100))).await;
    }
    assert!(c.cmd(".").await.starts_with("552 5.3.4"));
    // An executable attached: the whole message refused.
    let exe = "From: ana@customer.example\r\nSubject: invoice\r\nMessage-ID: <exe-1@customer.example>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"invoice.pdf.exe\"\r\n\r\nTVqQ\r\n--b--\r\n";
    let r = c.mail("ana@customer.example", "help@a.example", exe).await;
    assert!(r.starts_with("554 5.7.1") && r.contains("invoice.pdf.exe"), "{r}");
    // No sender address anywhere.
    let r = c.mail("bounce", "help@a.example", "Subject: who\r\n\r\nanonymous\r\n").await;
    assert!(r.starts_with("554 5.6.0"), "{r}");
    // Dot-stuffed lines are unstuffed, and a known Message-ID is a redelivery: 250, nothing new.
    let before = count(&pool, &a, "messages").await;
    let r = c.mail("ana@customer.example", "help@a.example", &plain("known-1@customer.example", "again")).await;
    assert!(r.starts_with("250"), "{r}");
    assert_eq!(count(&pool, &a, "messages").await, before);
    // A new message while sessions is unreachable: 451 (the sender retries), nothing stored.
    let r = c.mail("ana@customer.example", "help@a.example", &plain("new-1@customer.example", "new")).await;
    assert!(r.starts_with("451 4.3.0"), "{r}");
    assert_eq!(count(&pool, &a, "messages").await, before);
    assert_eq!(count(&pool, &a, "email_messages").await, 1);
    assert_eq!(count(&pool, &a, "conversations").await, 1);
    assert!(c.cmd("QUIT").await.starts_with("221"));

    // Tenant B sees nothing of A's.
    assert_eq!(count(&pool, &b, "email_messages").await, 0);
    assert!(!store::email_known(&pool, &b, "known-1@customer.example").await.unwrap());
    assert_eq!(
        store::email_thread(&pool, &a, &["nope@x.example".into(), "known-1@customer.example".into()]).await.unwrap(),
        Some(known)
    );
    assert_eq!(store::email_thread(&pool, &b, &["known-1@customer.example".into()]).await.unwrap(), None);

    // A line over the limit closes the connection.
    let (mut c, _) = Client::connect(port).await;
    let r = c.cmd(&format!("EHLO {}", "h".repeat(5000))).await;
    assert!(r.starts_with("500 5.5.2"), "{r}");
    assert_eq!(c.reply().await, "", "closed");
    // A silent client is dropped after the idle limit.
    let (mut c, _) = Client::connect(port).await;
    let started = std::time::Instant::now();
    let r = c.reply().await;
    assert!(r.starts_with("421 4.4.2"), "{r}");
    assert!(started.elapsed() >= Duration::from_millis(1400), "{:?}", started.elapsed());

    for (outcome, n) in [
        ("unknown_recipient", 3),
        ("too_many_recipients", 1),
        ("too_large", 1),
        ("forbidden_attachment", 1),
        ("malformed", 1),
        ("duplicate", 1),
        ("unavailable", 1),
        ("line_too_long", 1),
        ("timeout", 1),
    ] {
        assert_eq!(metrics.smtp_count(outcome), n, "{outcome}");
    }
    stop.trigger();
    drop_schema(pool).await;
}

/// A bare SMTP server taking every message; each message's DATA to the test.
async fn sink() -> (u16, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let (r, mut w) = s.into_split();
                let mut r = BufReader::new(r);
                w.write_all(b"220 sink\r\n").await.unwrap();
                let (mut data, mut in_data) = (String::new(), false);
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    if in_data {
                        if line == ".\r\n" {
                            in_data = false;
                            tx.send(std::mem::take(&mut data)).unwrap();
                            w.write_all(b"250 queued\r\n").await.unwrap();
                        } else {
                            data.push_str(&line);
                        }
                        continue;
                    }
                    let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
                    let answer: &[u8] = match verb.as_str() {
                        "EHLO" => b"250-sink\r\n250 8BITMIME\r\n",
                        "DATA" => {
                            in_data = true;
                            b"354 go on\r\n"
                        }
                        "QUIT" => {
                            let _ = w.write_all(b"221 bye\r\n").await;
                            return;
                        }
                        _ => b"250 OK\r\n",
                    };
                    w.write_all(answer).await.unwrap();
                }
            });
        }
    });
    (port, rx)
}

fn header<'a>(data: &'a str, name: &str) -> Option<&'a str> {
    data.lines().find_map(|l| l.strip_prefix(&format!("{name}: ")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_carry_rfc_5322_threading_and_a_relay_down_ends_failed() {
    let pool = pool().await;
    let a = TenantId::parse(&unique("em-r-")).unwrap();
    let down = TenantId::parse(&unique("em-d-")).unwrap();
    let (port, mut received) = sink().await;
    let registry = TenantRegistry::new();
    registry.upsert(
        TenantManifest::parse_all(&manifest(a.as_str(), "a.example", port), chrono::Utc::now()).unwrap().remove(0),
    );
    let dead = closed_port().await;
    registry.upsert(
        TenantManifest::parse_all(&manifest(down.as_str(), "d.example", dead), chrono::Utc::now()).unwrap().remove(0),
    );
    let d = digital(&pool).await;
    let email = email(d.clone(), &registry);

    let contact = email_conversation(
        &pool,
        &a,
        "c1@customer.example",
        &["c0@customer.example", "c1@customer.example"],
        "Claim 42",
    )
    .await;
    let reply = NewMessage {
        sender: Sender::Agent("bob".into()),
        kind: Kind::Text,
        text: "We are on it.".into(),
        provider_time: None,
        request_id: "r1".into(),
        attachment: None,
    };
    let stored = d.append(&a, &contact, &reply).await.unwrap();
    email.clone().send(a.clone(), contact.clone(), stored.clone()).await;
    let data = tokio::time::timeout(Duration::from_secs(10), received.recv()).await.unwrap().unwrap();
    assert_eq!(header(&data, "From"), Some("help@a.example"), "{data}");
    assert_eq!(header(&data, "To"), Some("ana@customer.example"), "{data}");
    assert_eq!(header(&data, "Subject"), Some("Re: Claim 42"), "{data}");
    assert_eq!(header(&data, "In-Reply-To"), Some("<c1@customer.example>"), "{data}");
    assert_eq!(header(&data, "References"), Some("<c0@customer.example> <c1@customer.example>"), "{data}");
    let id = header(&data, "Message-ID").expect("ours").trim_start_matches('<').trim_end_matches('>').to_owned();
    assert!(id.ends_with("@a.example"), "{id}");
    assert!(data.contains("We are on it."), "{data}");
    // The customer's answer to it finds the conversation; another tenant's lookup does not.
    assert_eq!(store::email_thread(&pool, &a, std::slice::from_ref(&id)).await.unwrap(), Some(contact.clone()));
    assert_eq!(store::email_thread(&pool, &down, std::slice::from_ref(&id)).await.unwrap(), None);
    let messages = store::messages_after(&pool, &a, &contact, 0, 10).await.unwrap();
    assert_eq!(messages.last().map(|m| m.status), Some(Status::Sent));

    // The relay down: retried, then failed with the reason.
    let other = email_conversation(&pool, &down, "d1@customer.example", &["d1@customer.example"], "Help").await;
    let stored = d.append(&down, &other, &reply).await.unwrap();
    let started = std::time::Instant::now();
    email.clone().send(down.clone(), other.clone(), stored.clone()).await;
    assert!(started.elapsed() >= Duration::from_millis(20), "one backoff between the two attempts");
    let m = store::messages_after(&pool, &down, &other, stored.sequence - 1, 1).await.unwrap().remove(0);
    assert_eq!(m.status, Status::Failed);
    assert!(
        m.failure_reason.contains("after 2 attempts") && m.failure_reason.contains(&dead.to_string()),
        "{}",
        m.failure_reason
    );
    assert!(received.try_recv().is_err(), "nothing reached the sink for the dead relay's tenant");
    drop_schema(pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_are_turned_away_and_a_slot_frees_on_close() {
    let pool = pool().await;
    let registry = TenantRegistry::new();
    let d = digital(&pool).await;
    let metrics = d.metrics.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let limits = SmtpLimits { max_connections: 1, ..SmtpLimits::default() };
    let stop = Shutdown::new();
    tokio::spawn(smtp::serve(listener, email(d, &registry), limits, "mx.test".into(), stop.clone()));
    let (mut first, greeting) = Client::connect(port).await;
    assert!(greeting.starts_with("220"), "{greeting}");
    let (_, busy) = Client::connect(port).await;
    assert!(busy.starts_with("421 4.7.0"), "{busy}");
    assert_eq!(metrics.smtp_count("busy"), 1);
    assert!(first.cmd("QUIT").await.starts_with("221"));
    drop(first);
    let mut again = String::new();
    for _ in 0..50 {
        again = Client::connect(port).await.1;
        if again.starts_with("220") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(again.starts_with("220"), "the slot was never freed: {again}");
    stop.trigger();
    drop_schema(pool).await;
}

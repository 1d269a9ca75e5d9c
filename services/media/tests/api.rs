//! The digital role in process, on ephemeral ports, against the local stack's PostgreSQL
//! and broker, with a stand-in for sessions (a `ContactService` serving contacts from a map
//! the test sets: sessions itself is another service crate). Covered: the web chat start
//! over raw HTTP (origin, widget key, visitor token), and `ConversationService`'s rules:
//! the holder and the tenant's supervisors only, every RPC refused across tenants, resume
//! of the stream from a sequence.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use centralita_media::Config;
use centralita_platform::auth::Role;
use centralita_platform::server::{parse_args, Listeners};
use centralita_platform::shutdown::Shutdown;
use centralita_platform::testkit::{self, request, token};
use centralita_proto::media::v1 as pb;
use centralita_proto::sessions::v1 as spb;
use pb::conversation_service_client::ConversationServiceClient;
use spb::contact_service_server::{ContactService, ContactServiceServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

/// The contacts media created, by name; the test moves them through their states.
#[derive(Debug, Clone, Default)]
struct FakeSessions {
    contacts: Arc<Mutex<HashMap<String, spb::Contact>>>,
}

impl FakeSessions {
    fn set(&self, name: &str, state: spb::ContactState, agent: &str) {
        let mut map = self.contacts.lock().unwrap();
        let c = map.get_mut(name).expect("a contact created through media");
        c.state = state as i32;
        c.agent_id = agent.into();
    }
}

type R<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl ContactService for FakeSessions {
    async fn create_contact(&self, r: Request<spb::CreateContactRequest>) -> R<spb::Contact> {
        // The contact is of the tenant of media's token, as in sessions.
        let tenant = centralita_platform::auth::caller(&r)?.own_tenant().map_err(Status::from)?.to_string();
        let req = r.into_inner();
        let mut c = req.contact.unwrap();
        assert_eq!(c.channel, centralita_proto::tenancy::v1::Channel::Chat as i32);
        let id = uuid::Uuid::now_v7().simple().to_string();
        c.name = format!("tenants/{tenant}/contacts/{id}");
        c.tenant = tenant;
        c.state = spb::ContactState::Queued as i32;
        self.contacts.lock().unwrap().insert(c.name.clone(), c.clone());
        Ok(Response::new(c))
    }
    async fn get_contact(&self, r: Request<spb::GetContactRequest>) -> R<spb::Contact> {
        let name = r.into_inner().name;
        self.contacts.lock().unwrap().get(&name).cloned().map(Response::new).ok_or_else(|| Status::not_found(name))
    }
    async fn list_contacts(&self, _: Request<spb::ListContactsRequest>) -> R<spb::ListContactsResponse> {
        Err(Status::unimplemented("fake"))
    }
    async fn accept_contact(&self, _: Request<spb::AcceptContactRequest>) -> R<spb::Contact> {
        Err(Status::unimplemented("fake"))
    }
    async fn reject_contact(&self, _: Request<spb::RejectContactRequest>) -> R<spb::Contact> {
        Err(Status::unimplemented("fake"))
    }
    async fn hold_contact(&self, _: Request<spb::HoldContactRequest>) -> R<spb::Contact> {
        Err(Status::unimplemented("fake"))
    }
    async fn resume_contact(&self, _: Request<spb::ResumeContactRequest>) -> R<spb::Contact> {
        Err(Status::unimplemented("fake"))
    }
    async fn pause_recording(&self, _: Request<spb::PauseRecordingRequest>) -> R<spb::Contact> {
        Err(Status::unimplemented("fake"))
    }
    async fn resume_recording(&self, _: Request<spb::ResumeRecordingRequest>) -> R<spb::Contact> {
        Err(Status::unimplemented("fake"))
    }
    async fn transfer_contact(&self, _: Request<spb::TransferContactRequest>) -> R<spb::Contact> {
        Err(Status::unimplemented("fake"))
    }
    async fn consult_contact(&self, _: Request<spb::ConsultContactRequest>) -> R<spb::Contact> {
        Err(Status::unimplemented("fake"))
    }
    async fn complete_consult(&self, _: Request<spb::CompleteConsultRequest>) -> R<spb::Contact> {
        Err(Status::unimplemented("fake"))
    }
    async fn monitor_contact(&self, _: Request<spb::MonitorContactRequest>) -> R<spb::Contact> {
        Err(Status::unimplemented("fake"))
    }
    async fn stop_monitoring(&self, _: Request<spb::StopMonitoringRequest>) -> R<spb::Contact> {
        Err(Status::unimplemented("fake"))
    }
    async fn end_contact(&self, _: Request<spb::EndContactRequest>) -> R<spb::Contact> {
        Err(Status::unimplemented("fake"))
    }
    async fn wrap_up_contact(&self, _: Request<spb::WrapUpContactRequest>) -> R<spb::Contact> {
        Err(Status::unimplemented("fake"))
    }
    async fn list_queue_stats(&self, _: Request<spb::ListQueueStatsRequest>) -> R<spb::ListQueueStatsResponse> {
        Err(Status::unimplemented("fake"))
    }
    async fn list_transfer_targets(
        &self,
        _: Request<spb::ListTransferTargetsRequest>,
    ) -> R<spb::ListTransferTargetsResponse> {
        Err(Status::unimplemented("fake"))
    }
    async fn get_queue_position(&self, _: Request<spb::GetQueuePositionRequest>) -> R<spb::QueuePosition> {
        Err(Status::unimplemented("fake"))
    }
}

fn manifest(id: &str) -> String {
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
  businessHours: {{ timeZone: UTC }}
  dataRetentionDays: 30
  recording: {{ voice: none }}
  routing:
    queues:
      - {{ id: support }}
  webchat:
    widgetKey: key_{key}
    allowedOrigins: ["https://{id}.example"]
    queue: support
"#,
        key = id.replace('-', "_")
    )
}

/// The fake sessions, served with media's authenticator in front (so it reads media's
/// channel token as sessions would).
async fn fake_sessions(fake: FakeSessions) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let verifier = centralita_platform::auth::Verifier::from_file(
        &testkit::repo_file("deploy/local/dev-keys/jwt-ed25519.pub"),
        "centralita",
        "centralita-api",
    )
    .unwrap();
    let interceptor = move |mut r: Request<()>| {
        let header = r.metadata().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let caller = verifier
            .verify(header.strip_prefix("Bearer ").unwrap_or_default())
            .map_err(|_| Status::unauthenticated("bad token"))?;
        assert!(caller.has_role(Role::Channel), "media calls sessions as a channel");
        r.extensions_mut().insert(caller);
        Ok(r)
    };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ContactServiceServer::with_interceptor(fake, interceptor))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr
}

struct Media {
    grpc: Channel,
    webchat: SocketAddr,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn start(prefix: &str, sessions: SocketAddr) -> Media {
    let key = testkit::repo_file("deploy/local/dev-keys/jwt-ed25519.key");
    let mut config: Config = parse_args(
        "media",
        [
            "media".to_owned(),
            "--jwt-public-key-file".into(),
            "/dev/null".into(),
            "--sessions-endpoint".into(),
            format!("http://{sessions}"),
            "--jwt-private-key-file".into(),
            key.display().to_string(),
            "--database-url".into(),
            testkit::postgres().url.expose().clone(),
        ],
    )
    .unwrap();
    config.common = testkit::common(prefix);
    let listeners = Listeners::ephemeral().await.unwrap();
    let admin = listeners.admin_addr();
    let grpc = listeners.grpc_addr();
    let shutdown = Shutdown::new();
    let (webchat, serve) =
        centralita_media::start_digital(config, listeners, "127.0.0.1:0".parse().unwrap(), shutdown.clone())
            .await
            .unwrap();
    let task = tokio::spawn(serve);
    assert!(testkit::wait_ready(admin).await, "media did not become ready");
    let grpc = Channel::from_shared(format!("http://{grpc}")).unwrap().connect().await.unwrap();
    Media { grpc, webchat, shutdown, task }
}

/// One HTTP/1.1 request over a fresh connection; (status, body).
async fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

fn json_field(body: &str, field: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    v[field].as_str().unwrap_or_else(|| panic!("no {field} in {body}")).to_owned()
}

async fn start_chat(media: &Media, tenant: &str) -> (String, String) {
    let key = format!("key_{}", tenant.replace('-', "_"));
    let (status, body) = http(
        media.webchat,
        "POST",
        &format!("/v1/tenants/{tenant}/webchat/chats"),
        &[("Origin", &format!("https://{tenant}.example")), ("Content-Type", "application/json")],
        &format!(r#"{{"widgetKey":"{key}"}}"#),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    (json_field(&body, "contact"), json_field(&body, "visitorToken"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_holder_and_the_tenants_supervisors_use_a_conversation() {
    let (prefix, _topics, [a, b]) =
        testkit::two_tenants("media-dg-", manifest, |t| vec![t.contacts(), t.name("conversations")]).await;
    let fake = FakeSessions::default();
    let sessions = fake_sessions(fake.clone()).await;
    let media = start(&prefix, sessions).await;

    // Media learns the tenants from the topic; until then the widget is unknown (404).
    let mut started = None;
    for _ in 0..100 {
        let key = format!("key_{}", a.replace('-', "_"));
        let (status, _) = http(
            media.webchat,
            "POST",
            &format!("/v1/tenants/{a}/webchat/chats"),
            &[("Origin", &format!("https://{a}.example"))],
            &format!(r#"{{"widgetKey":"{key}x"}}"#),
        )
        .await;
        if status == 401 {
            started = Some(());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(started.is_some(), "media never knew the tenant");
    // Wrong origin: refused before anything is created.
    let (status, _) = http(
        media.webchat,
        "POST",
        &format!("/v1/tenants/{a}/webchat/chats"),
        &[("Origin", &format!("https://{b}.example"))],
        &format!(r#"{{"widgetKey":"key_{}"}}"#, a.replace('-', "_")),
    )
    .await;
    assert_eq!(status, 403);
    assert!(fake.contacts.lock().unwrap().is_empty());

    let (contact, visitor) = start_chat(&media, &a).await;
    assert!(contact.starts_with(&format!("tenants/{a}/contacts/")), "{contact}");
    let (contact_b, _) = start_chat(&media, &b).await;
    // The visitor's HTTP send; and a visitor token of A on B's path is refused.
    let (status, body) = http(
        media.webchat,
        "POST",
        &format!("/v1/tenants/{a}/webchat/messages"),
        &[("Authorization", &format!("Bearer {visitor}")), ("Content-Type", "application/json")],
        r#"{"text":"hola","requestId":"c1"}"#,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = http(
        media.webchat,
        "GET",
        &format!("/v1/tenants/{b}/webchat/messages"),
        &[("Authorization", &format!("Bearer {visitor}"))],
        "",
    )
    .await;
    assert_eq!(status, 401);
    // A visitor token is no API token: the gRPC API refuses it.
    let mut conv = ConversationServiceClient::new(media.grpc.clone());
    let list = |parent: &str| pb::ListMessagesRequest { parent: parent.into(), ..Default::default() };
    let denied = conv.list_messages(request(list(&contact), &visitor)).await.unwrap_err();
    assert_eq!(denied.code(), Code::Unauthenticated);

    let bob = token(Some(&a), Role::Agent, Some("bob"));
    let sup_a = token(Some(&a), Role::Supervisor, None);
    // Queued: nobody holds it, so bob may not; the supervisor may.
    assert_eq!(conv.list_messages(request(list(&contact), &bob)).await.unwrap_err().code(), Code::PermissionDenied);
    let messages = conv.list_messages(request(list(&contact), &sup_a)).await.unwrap().into_inner().messages;
    assert_eq!(
        messages.iter().map(|m| (m.sequence, m.text.as_str())).collect::<Vec<_>>(),
        [(1, "Chat started"), (2, "hola")]
    );
    fake.set(&contact, spb::ContactState::Connected, "bob");

    let send = |text: &str| pb::SendMessageRequest { parent: contact.clone(), text: text.into(), ..Default::default() };
    let sent = conv.send_message(request(send("¿en qué te ayudo?"), &bob)).await.unwrap().into_inner();
    assert_eq!((sent.sequence, sent.agent_id.as_str()), (3, "bob"));
    let invalid = conv.send_message(request(send(&"x".repeat(5000)), &bob)).await.unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument);

    // The stream from a sequence: what follows it, then what is written after.
    let mut stream = conv
        .stream_messages(request(pb::StreamMessagesRequest { parent: contact.clone(), after_sequence: 1 }, &bob))
        .await
        .unwrap()
        .into_inner();
    let mut seqs = Vec::new();
    while seqs.len() < 2 {
        let ev = tokio::time::timeout(Duration::from_secs(10), stream.next()).await.unwrap().unwrap().unwrap();
        if let Some(pb::stream_messages_response::Event::Message(m)) = ev.event {
            seqs.push(m.sequence);
        }
    }
    conv.send_message(request(send("sigo aquí"), &sup_a)).await.unwrap();
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), stream.next()).await.unwrap().unwrap().unwrap();
        if let Some(pb::stream_messages_response::Event::Message(m)) = ev.event {
            seqs.push(m.sequence);
            break;
        }
    }
    assert_eq!(seqs, [2, 3, 4]);

    // Every RPC, for everyone who is not the holder or a supervisor of the tenant.
    let outsiders = [
        ("B's supervisor", token(Some(&b), Role::Supervisor, None)),
        ("B's tenant admin", token(Some(&b), Role::TenantAdmin, None)),
        ("B's agent named like the holder", token(Some(&b), Role::Agent, Some("bob"))),
        ("another agent of A", token(Some(&a), Role::Agent, Some("alice"))),
        ("A's channel", token(Some(&a), Role::Channel, None)),
    ];
    for (who, t) in &outsiders {
        let codes = [
            conv.list_messages(request(list(&contact), t)).await.err().map(|s| s.code()),
            conv.stream_messages(request(pb::StreamMessagesRequest { parent: contact.clone(), after_sequence: 0 }, t))
                .await
                .err()
                .map(|s| s.code()),
            conv.send_message(request(send("no"), t)).await.err().map(|s| s.code()),
            conv.send_typing(request(pb::SendTypingRequest { parent: contact.clone(), active: true }, t))
                .await
                .err()
                .map(|s| s.code()),
            conv.mark_read(request(pb::MarkReadRequest { parent: contact.clone(), sequence: 1 }, t))
                .await
                .err()
                .map(|s| s.code()),
        ];
        assert_eq!(codes, [Some(Code::PermissionDenied); 5], "{who}");
    }
    // And A's supervisor never reaches B's conversation.
    assert_eq!(conv.list_messages(request(list(&contact_b), &sup_a)).await.unwrap_err().code(), Code::PermissionDenied);
    // Once ended, bob no longer holds it.
    fake.set(&contact, spb::ContactState::Closed, "bob");
    assert_eq!(conv.send_message(request(send("¿hola?"), &bob)).await.unwrap_err().code(), Code::PermissionDenied);
    let bad = conv.list_messages(request(list("tenants/x"), &sup_a)).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);

    media.shutdown.trigger();
    media.task.await.unwrap().unwrap();
}

/// Two replicas of the digital role on one database: an agent's stream on one sees what is
/// written through the other at once (PostgreSQL NOTIFY), not at its next look (every 2 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_on_one_replica_sees_writes_through_another_at_once() {
    let (prefix, _topics, [a, _b]) =
        testkit::two_tenants("media-dg2-", manifest, |t| vec![t.contacts(), t.name("conversations")]).await;
    let fake = FakeSessions::default();
    let sessions = fake_sessions(fake.clone()).await;
    let one = start(&prefix, sessions).await;
    let two = start(&prefix, sessions).await;
    let mut contact = None;
    for _ in 0..100 {
        let key = format!("key_{}", a.replace('-', "_"));
        let (status, body) = http(
            one.webchat,
            "POST",
            &format!("/v1/tenants/{a}/webchat/chats"),
            &[("Origin", &format!("https://{a}.example"))],
            &format!(r#"{{"widgetKey":"{key}"}}"#),
        )
        .await;
        if status == 201 {
            contact = Some(json_field(&body, "contact"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let contact = contact.expect("media never knew the tenant");
    // Replica two must know the tenant too before it authenticates calls of it.
    let sup = token(Some(&a), Role::Supervisor, None);
    let mut via_two = ConversationServiceClient::new(two.grpc.clone());
    let list = pb::ListMessagesRequest { parent: contact.clone(), ..Default::default() };
    for _ in 0..100 {
        if via_two.list_messages(request(list.clone(), &sup)).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut via_one = ConversationServiceClient::new(one.grpc.clone());
    let mut stream = via_one
        .stream_messages(request(pb::StreamMessagesRequest { parent: contact.clone(), after_sequence: 1 }, &sup))
        .await
        .unwrap()
        .into_inner();
    for i in 0..5 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let sent = std::time::Instant::now();
        let text = format!("n{i}");
        let req = pb::SendMessageRequest { parent: contact.clone(), text: text.clone(), ..Default::default() };
        via_two.send_message(request(req, &sup)).await.unwrap();
        let got = loop {
            let ev = tokio::time::timeout(Duration::from_secs(5), stream.next()).await.unwrap().unwrap().unwrap();
            if let Some(pb::stream_messages_response::Event::Message(m)) = ev.event {
                break m;
            }
        };
        assert_eq!(got.text, text);
        assert!(sent.elapsed() < Duration::from_millis(700), "message {i} took {:?}", sent.elapsed());
    }
    for m in [one, two] {
        m.shutdown.trigger();
        m.task.await.unwrap().unwrap();
    }
}

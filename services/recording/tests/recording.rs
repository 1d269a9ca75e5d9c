//! The recording service end to end, in-process on ephemeral ports against the local
//! stack's PostgreSQL and Kafka-protocol broker (for the tenant feed): a call ingested as
//! the media service would, read back over gRPC and the signed HTTP URL, held, swept; and
//! every RPC and the HTTP endpoint refused across tenants.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use centralita_platform::auth::Role;
use centralita_platform::server::Listeners;
use centralita_platform::shutdown::Shutdown;
use centralita_platform::tenant::TenantId;
use centralita_platform::testkit::{self, request, token};
use centralita_proto::recording::v1::{self as pb, recording_service_client::RecordingServiceClient};
use centralita_recording::playback::{Grant, UrlSigner};
use tonic::transport::Channel;
use tonic::Code;

const ROOT_KEY: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
const URL_KEY: &[u8] = b"a test url signing key of some length";

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
  businessHours: {{ timeZone: Europe/Madrid }}
  dataRetentionDays: 30
  recording: {{ voice: all, allowPause: true }}
  routing:
    queues:
      - {{ id: support }}
"#
    )
}

struct Service {
    grpc: Channel,
    playback: SocketAddr,
    dir: std::path::PathBuf,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Service {
    fn client(&self) -> RecordingServiceClient<Channel> {
        RecordingServiceClient::new(self.grpc.clone())
    }
}

async fn start(prefix: &str) -> Service {
    let dir = std::env::temp_dir().join(testkit::unique("recording-test-"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("keys.yaml"), format!("current: 1\nroots: {{1: \"{ROOT_KEY}\"}}\n")).unwrap();
    std::fs::write(dir.join("url.key"), URL_KEY).unwrap();
    let listeners = Listeners::ephemeral().await.unwrap();
    let (grpc, admin) = (listeners.grpc_addr(), listeners.admin_addr());
    let shutdown = Shutdown::new();
    let args = [
        "recording".to_owned(),
        "--jwt-public-key-file".into(),
        testkit::repo_file("deploy/local/dev-keys/jwt-ed25519.pub").display().to_string(),
        "--database-url".into(),
        testkit::postgres().url.expose().clone(),
        "--store-url".into(),
        format!("file://{}", dir.join("objects").display()),
        "--spool-dir".into(),
        dir.join("spool").display().to_string(),
        "--keys-file".into(),
        dir.join("keys.yaml").display().to_string(),
        "--playback-url-key-file".into(),
        dir.join("url.key").display().to_string(),
    ];
    let mut config =
        centralita_platform::server::parse_args::<centralita_recording::Settings>("recording", args).unwrap();
    config.common = testkit::common(prefix);
    let (playback, fut) =
        centralita_recording::start(config, listeners, ([127, 0, 0, 1], 0).into(), shutdown.clone()).await.unwrap();
    let task = tokio::spawn(fut);
    assert!(testkit::wait_ready(admin).await, "recording did not become ready");
    let grpc = Channel::from_shared(format!("http://{grpc}")).unwrap().connect().await.unwrap();
    Service { grpc, playback, dir, shutdown, task }
}

fn pool() -> deadpool_postgres::Pool {
    centralita_platform::db::pool(testkit::postgres().url.expose(), "recording", 2).unwrap()
}

fn d(frames: u64) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds: (frames / 8000) as i64, nanos: ((frames % 8000) * 125_000) as i32 })
}

fn audio(leg: pb::Leg, offset: u64, payload: Vec<u8>) -> pb::IngestCallRequest {
    pb::IngestCallRequest {
        event: Some(pb::ingest_call_request::Event::Audio(pb::AudioChunk {
            leg: leg as i32,
            offset: d(offset),
            payload,
        })),
    }
}

fn header(tenant: &str, contact: &str) -> pb::IngestCallRequest {
    pb::IngestCallRequest {
        event: Some(pb::ingest_call_request::Event::Header(pb::CallHeader {
            tenant: tenant.into(),
            contact_id: contact.into(),
            queue: "support".into(),
            agent_ids: vec!["agent-7".into()],
            start_time: Some(prost_types::Timestamp { seconds: chrono::Utc::now().timestamp() - 10, nanos: 0 }),
            codec: pb::AudioCodec::Pcmu as i32,
        })),
    }
}

/// A 3-second call: the customer a loud square wave, the agent a quieter one, a pause from
/// 1.0 s to 1.5 s; 20 ms chunks, the agent's a little behind the customer's.
fn call(tenant: &str, contact: &str) -> Vec<pb::IngestCallRequest> {
    use pb::ingest_call_request::Event;
    let mut m = vec![header(tenant, contact)];
    for i in 0..150u64 {
        let at = i * 160;
        if at == 8000 {
            m.push(pb::IngestCallRequest { event: Some(Event::Pause(pb::RecordingPause { offset: d(8000) })) });
        }
        if at == 12000 {
            m.push(pb::IngestCallRequest { event: Some(Event::Resume(pb::RecordingResume { offset: d(12000) })) });
        }
        m.push(audio(pb::Leg::Customer, at, [0x80u8, 0x00].repeat(80)));
        if i > 0 {
            m.push(audio(pb::Leg::Agent, at - 160, [0xa0u8, 0x20].repeat(80)));
        }
    }
    m.push(audio(pb::Leg::Agent, 149 * 160, [0xa0u8, 0x20].repeat(80)));
    m.push(pb::IngestCallRequest { event: Some(Event::End(pb::CallEnd { offset: d(24000) })) });
    m
}

async fn ingest(s: &Service, tok: &str, messages: Vec<pb::IngestCallRequest>) -> Result<pb::Recording, tonic::Status> {
    s.client().ingest_call(request(tokio_stream::iter(messages), tok)).await.map(|r| r.into_inner())
}

async fn stream_wav(s: &Service, tok: &str, name: &str) -> Result<Vec<u8>, tonic::Status> {
    let mut st = s
        .client()
        .stream_recording_audio(request(pb::StreamRecordingAudioRequest { name: name.into() }, tok))
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(m) = st.message().await? {
        out.extend(m.data);
    }
    Ok(out)
}

/// A raw HTTP/1.1 GET: status, headers (lower-case names) and body.
async fn http_get(addr: SocketAddr, path: &str, range: Option<&str>) -> (u16, String, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let range = range.map(|r| format!("Range: {r}\r\n")).unwrap_or_default();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n{range}Connection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&buf[..split]).to_lowercase();
    let status = head[9..12].parse().unwrap();
    (status, head, buf[split + 4..].to_vec())
}

fn path_of(url: &str) -> String {
    url.split_once("://").unwrap().1.split_once('/').map(|(_, p)| format!("/{p}")).unwrap()
}

fn stereo(wav: &[u8]) -> Vec<(i16, i16)> {
    wav[44..].chunks_exact(4).map(|f| (i16::from_le_bytes([f[0], f[1]]), i16::from_le_bytes([f[2], f[3]]))).collect()
}

#[tokio::test]
async fn a_call_is_recorded_played_back_held_and_swept_and_no_tenant_reaches_another() {
    let (prefix, _topics, [a, b]) = testkit::two_tenants("rec-", manifest, |t| vec![t.contacts()]).await;
    let s = start(&prefix).await;
    let channel_a = token(Some(&a), Role::Channel, None);
    let channel_b = token(Some(&b), Role::Channel, None);
    let sup_a = token(Some(&a), Role::Supervisor, None);
    let sup_b = token(Some(&b), Role::Supervisor, None);
    let admin_a = token(Some(&a), Role::TenantAdmin, None);
    let admin_b = token(Some(&b), Role::TenantAdmin, None);
    let agent_a = token(Some(&a), Role::Agent, Some("agent-7"));

    // Ingest: only a channel token of the header's tenant.
    let e = ingest(&s, &channel_b, call(&a, "c-1")).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = ingest(&s, &sup_a, call(&a, "c-1")).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = ingest(&s, &channel_a, call(&a, "c-1")[1..].to_vec()).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    let rec = ingest(&s, &channel_a, call(&a, "c-1")).await.unwrap();
    assert_eq!(rec.state, pb::RecordingState::Complete as i32);
    assert_eq!(rec.duration, d(24000));
    assert_eq!(rec.contact_id, "c-1");
    assert_eq!(rec.agent_ids, ["agent-7"]);
    assert_eq!(rec.paused_spans, [pb::PausedSpan { start_offset: d(8000), end_offset: d(12000) }]);
    assert_eq!(rec.wav_size_bytes, 44 + 24000 * 4);

    // A bad message mid-call: a clear error, and what came before is kept.
    let mut broken = call(&a, "c-2");
    broken.truncate(40);
    broken.push(audio(pb::Leg::Unspecified, 0, vec![0xff; 10]));
    let e = ingest(&s, &channel_a, broken).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("audio.leg"), "{e:?}");

    // Read: the tenant's supervisors; another tenant sees nothing; agents are refused.
    let got =
        s.client().get_recording(request(pb::GetRecordingRequest { name: rec.name.clone() }, &sup_a)).await.unwrap();
    assert_eq!(got.get_ref().name, rec.name);
    let e = s
        .client()
        .get_recording(request(pb::GetRecordingRequest { name: rec.name.clone() }, &sup_b))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let e = s
        .client()
        .get_recording(request(pb::GetRecordingRequest { name: rec.name.clone() }, &agent_a))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let list = |tok: String| {
        let mut c = s.client();
        async move {
            c.list_recordings(request(
                pb::ListRecordingsRequest { contact_id: "c-1".into(), ..Default::default() },
                &tok,
            ))
            .await
            .map(|r| r.into_inner().recordings.len())
        }
    };
    assert_eq!(list(sup_a.clone()).await.unwrap(), 1);
    assert_eq!(list(sup_b.clone()).await.unwrap(), 0);
    assert_eq!(list(agent_a.clone()).await.unwrap_err().code(), Code::PermissionDenied);

    // Playback over gRPC: left = customer, right = agent, the pause silent.
    let wav = stream_wav(&s, &sup_a, &rec.name).await.unwrap();
    assert_eq!(wav.len() as i64, rec.wav_size_bytes);
    assert_eq!(&wav[..4], b"RIFF");
    let f = stereo(&wav);
    assert_eq!(f.len(), 24000);
    assert_eq!(f[100], (32124, 7932));
    assert_eq!(f[101], (-32124, -7932));
    assert!(f[8000..12000].iter().all(|x| *x == (0, 0)));
    assert!(f[12000..].iter().all(|x| x.0.unsigned_abs() == 32124));
    assert_eq!(stream_wav(&s, &sup_b, &rec.name).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(stream_wav(&s, &agent_a, &rec.name).await.unwrap_err().code(), Code::PermissionDenied);

    // The signed URL: whole, ranged, altered, another tenant's path, expired.
    let url = s
        .client()
        .create_playback_url(request(pb::CreatePlaybackUrlRequest { name: rec.name.clone() }, &sup_a))
        .await
        .unwrap()
        .into_inner()
        .url;
    let e = s
        .client()
        .create_playback_url(request(pb::CreatePlaybackUrlRequest { name: rec.name.clone() }, &sup_b))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let path = path_of(&url);
    let (status, _, body) = http_get(s.playback, &path, None).await;
    assert_eq!(status, 200);
    assert_eq!(body, wav);
    let (status, head, body) = http_get(s.playback, &path, Some("bytes=40000-40099")).await;
    assert_eq!(status, 206);
    assert!(head.contains(&format!("content-range: bytes 40000-40099/{}", wav.len())), "{head}");
    assert_eq!(body, wav[40000..40100]);
    let (status, _, body) = http_get(s.playback, &path, Some("bytes=-10")).await;
    assert_eq!((status, body.as_slice()), (206, &wav[wav.len() - 10..]));
    assert_eq!(http_get(s.playback, &path, Some("bytes=999999-")).await.0, 416);
    let id = rec.name.strip_prefix("recordings/").unwrap();
    assert_eq!(http_get(s.playback, &path.replace(&a, &b), None).await.0, 403);
    assert_eq!(http_get(s.playback, &path.replace(id, &"0".repeat(32)), None).await.0, 403);
    let exp = path.split("exp=").nth(1).unwrap().split('&').next().unwrap();
    let later = (exp.parse::<i64>().unwrap() + 3600).to_string();
    assert_eq!(http_get(s.playback, &path.replace(&format!("exp={exp}"), &format!("exp={later}")), None).await.0, 403);
    let signer = UrlSigner::new(URL_KEY.to_vec(), String::new());
    let grant = |tenant: &str, expires: i64| Grant {
        tenant: tenant.into(),
        recording: id.into(),
        subject: "tester".into(),
        expires,
    };
    let now = chrono::Utc::now().timestamp();
    assert_eq!(http_get(s.playback, &signer.path(&grant(&a, now - 1)), None).await.0, 403, "expired");
    assert_eq!(http_get(s.playback, &signer.path(&grant(&a, now + 60)), None).await.0, 200, "same key, valid");
    // A validly signed URL naming the other tenant finds nothing there.
    assert_eq!(http_get(s.playback, &signer.path(&grant(&b, now + 60)), None).await.0, 404);

    // Every playback was audited: two streams refused never reached the audit.
    let pool = pool();
    let audited = |tenant: String, action: &'static str| {
        let pool = pool.clone();
        async move {
            let mut c = pool.get().await.unwrap();
            let tx = centralita_recording::store::begin(&mut c, &TenantId::parse(&tenant).unwrap()).await.unwrap();
            let n: i64 = tx.query_one("SELECT count(*) FROM audit WHERE action = $1", &[&action]).await.unwrap().get(0);
            n
        }
    };
    assert_eq!(audited(a.clone(), "playback").await, 1);
    assert_eq!(audited(a.clone(), "url_issued").await, 1);
    assert_eq!(audited(a.clone(), "download").await, 4, "whole, two ranges, the re-signed one; not the 416");
    assert_eq!(audited(b.clone(), "download").await, 0);

    // Legal hold: tenant admins only, with a reason, never across tenants.
    let hold = |tok: String, name: String, reason: &'static str| {
        let mut c = s.client();
        async move { c.set_legal_hold(request(pb::SetLegalHoldRequest { name, reason: reason.into() }, &tok)).await }
    };
    assert_eq!(hold(sup_a.clone(), rec.name.clone(), "case 1").await.unwrap_err().code(), Code::PermissionDenied);
    assert_eq!(hold(admin_b.clone(), rec.name.clone(), "case 1").await.unwrap_err().code(), Code::NotFound);
    assert_eq!(hold(admin_a.clone(), rec.name.clone(), " ").await.unwrap_err().code(), Code::InvalidArgument);
    let held = hold(admin_a.clone(), rec.name.clone(), "case 1").await.unwrap().into_inner();
    assert!(held.legal_hold);
    assert_eq!(held.legal_hold_reason, "case 1");
    let e = s
        .client()
        .clear_legal_hold(request(pb::ClearLegalHoldRequest { name: rec.name.clone(), reason: "x".into() }, &admin_b))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    // Retention (30 days), the clock moved 31 days on: the held recording stays, the
    // interrupted one goes with its key and object; then the hold is lifted and it goes too.
    let other = s
        .client()
        .list_recordings(request(pb::ListRecordingsRequest { contact_id: "c-2".into(), ..Default::default() }, &sup_a))
        .await
        .unwrap()
        .into_inner()
        .recordings;
    assert_eq!(other.len(), 1);
    assert_eq!(other[0].state, pb::RecordingState::Interrupted as i32);
    let objects =
        centralita_recording::objects::Objects::from_url(&format!("file://{}", s.dir.join("objects").display()))
            .unwrap();
    let registry = centralita_platform::registry::TenantRegistry::new();
    for t in [&a, &b] {
        let m = centralita_platform::tenant::TenantManifest::parse_all(&manifest(t), chrono::Utc::now()).unwrap();
        registry.upsert(m.into_iter().next().unwrap());
    }
    let metrics = centralita_recording::metrics::Metrics::default();
    let later = chrono::Utc::now() + chrono::Duration::days(31);
    let sweep = |now| centralita_recording::retention::sweep(&pool, &objects, &registry, &metrics, now);
    assert_eq!(sweep(chrono::Utc::now()).await.unwrap(), 0, "nothing expired yet");
    assert_eq!(sweep(later).await.unwrap(), 1);
    let ta = TenantId::parse(&a).unwrap();
    let other_id = other[0].name.strip_prefix("recordings/").unwrap();
    assert!(centralita_recording::store::data_key(&pool, &ta, other_id).await.unwrap().is_none(), "key shredded");
    assert!(objects.size(&centralita_recording::ingest::object_key(&ta, other_id)).await.is_err(), "object gone");
    assert!(stream_wav(&s, &sup_a, &held.name).await.is_ok(), "held recording kept");
    s.client()
        .clear_legal_hold(request(
            pb::ClearLegalHoldRequest { name: rec.name.clone(), reason: "case closed".into() },
            &admin_a,
        ))
        .await
        .unwrap();
    assert_eq!(sweep(later).await.unwrap(), 1);
    assert_eq!(stream_wav(&s, &sup_a, &rec.name).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(audited(a.clone(), "retention_delete").await, 2);
    assert_eq!(audited(a.clone(), "hold_set").await, 1);
    assert_eq!(audited(a.clone(), "hold_cleared").await, 1);

    s.shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(10), s.task).await.unwrap().unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&s.dir);
}

/// A process that dies mid-call leaves an encrypted spool; the next start finishes it: the
/// complete segments kept, the last re-sealed as last, uploaded, `interrupted`, the open
/// pause closed at the end, the object decrypting to exactly the audio that was synced.
#[tokio::test]
async fn a_recording_cut_by_a_crash_is_finished_at_start_up() {
    use centralita_recording::capture::Input;
    use centralita_recording::crypto::Opener;
    use centralita_recording::ingest::{Header, Recorder};
    let pool = pool();
    centralita_platform::db::migrate(&pool, &centralita_recording::MIGRATIONS).await.unwrap();
    let dir = std::env::temp_dir().join(testkit::unique("recording-crash-"));
    let keys =
        centralita_recording::keys::Keyring::parse(&format!("current: 1\nroots: {{1: \"{ROOT_KEY}\"}}\n")).unwrap();
    let objects =
        centralita_recording::objects::Objects::from_url(&format!("file://{}", dir.join("objects").display())).unwrap();
    let recorder = Recorder {
        pool: pool.clone(),
        keys: std::sync::Arc::new(keys),
        objects: objects.clone(),
        spool: dir.join("spool"),
        metrics: std::sync::Arc::new(centralita_recording::metrics::Metrics::default()),
    };
    let tenant = TenantId::parse(&testkit::unique("crash-")).unwrap();
    let header = Header {
        tenant: tenant.clone(),
        contact_id: "c-9".into(),
        queue: "support".into(),
        agent_ids: vec![],
        start: chrono::Utc::now(),
        law: centralita_recording::g711::Law::Mu,
    };
    let mut session = recorder.start(&header).await.unwrap();
    let id = session.id.clone();
    session.push(Input::Pause { offset: 12000 }).await.unwrap().unwrap();
    for i in 0..150u64 {
        let chunk = Input::Audio {
            leg: centralita_recording::capture::Leg::Customer,
            offset: i * 160,
            payload: vec![0x80; 160],
        };
        session.push(chunk).await.unwrap().unwrap();
    }
    // 3 s received, 2 s out of the alignment window, one 1-second segment sealed and synced.
    drop(session); // the process dies: no end, no upload
    assert_eq!(recorder.recover().await.unwrap(), 1);
    let row = centralita_recording::store::get(&pool, &tenant, &id).await.unwrap().unwrap();
    assert_eq!((row.state.as_str(), row.frames), ("interrupted", 8000));
    assert_eq!(row.paused_spans, [(8000, Some(8000))], "the pause began after what survived");
    let (version, wrapped) = centralita_recording::store::data_key(&pool, &tenant, &id).await.unwrap().unwrap();
    let key = recorder.keys.unwrap(tenant.as_str(), &id, version, &wrapped).unwrap();
    let size = objects.size(&row.object_key).await.unwrap();
    let obj = objects.range(&row.object_key, 0..size).await.unwrap();
    let plain = Opener::new(&key, tenant.as_str(), &id, &obj).unwrap().open_all(&obj).unwrap();
    assert_eq!(plain.len(), 32000);
    assert!(plain.chunks_exact(4).all(|f| f == [0x7c, 0x7d, 0, 0]), "customer left at +32124, agent silent");
    assert_eq!(recorder.recover().await.unwrap(), 0, "nothing left to finish");
    assert!(!dir.join("spool").join(tenant.as_str()).join(format!("{id}.crec")).exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Forwards every event of a topic to the test.
struct Forward(tokio::sync::mpsc::UnboundedSender<centralita_platform::bus::Event>);

impl centralita_platform::bus::Handler for Forward {
    async fn handle(
        &mut self,
        event: &centralita_platform::bus::Event,
    ) -> Result<(), centralita_platform::error::Error> {
        let _ = self.0.send(event.clone());
        Ok(())
    }
}

/// CRM's `CustomerErased`: the recordings of the erased customer's contacts go (key, row,
/// object), one on legal hold stays, another tenant's contact of the same id is untouched
/// even when the erasure names it, and recording reports its store done.
#[tokio::test]
async fn a_customer_erasure_deletes_the_contacts_recordings_and_reports_back() {
    use centralita_platform::bus::{Consumer, ConsumerSettings, Event, EventPayload, MemoryDedupe, Producer};
    use centralita_proto::crm::v1 as crm;
    let (prefix, topics, [a, b]) =
        testkit::two_tenants("recer-", manifest, |t| vec![t.contacts(), t.customers()]).await;
    let s = start(&prefix).await;
    let (channel_a, channel_b) = (token(Some(&a), Role::Channel, None), token(Some(&b), Role::Channel, None));
    let sup_a = token(Some(&a), Role::Supervisor, None);
    let sup_b = token(Some(&b), Role::Supervisor, None);
    let admin_a = token(Some(&a), Role::TenantAdmin, None);
    let erased_a = ingest(&s, &channel_a, call(&a, "c-gdpr")).await.unwrap();
    let held_a = ingest(&s, &channel_a, call(&a, "c-gdpr")).await.unwrap();
    let other_contact = ingest(&s, &channel_a, call(&a, "c-keep")).await.unwrap();
    let same_id_b = ingest(&s, &channel_b, call(&b, "c-gdpr")).await.unwrap();
    s.client()
        .set_legal_hold(request(
            pb::SetLegalHoldRequest { name: held_a.name.clone(), reason: "dispute 7".into() },
            &admin_a,
        ))
        .await
        .unwrap();

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let reports = Consumer::new(
        ConsumerSettings {
            brokers: testkit::brokers(),
            group_id: testkit::unique("recer-reports-"),
            topics: vec![topics.customers()],
            fetch_wait: Duration::from_millis(50),
            group_instance_id: None,
        },
        Forward(tx),
        MemoryDedupe::new(100),
        None,
    )
    .unwrap();
    let stop = Shutdown::new();
    let reader = tokio::spawn(reports.run(stop.clone()));

    let erasure = crm::Erasure {
        name: "erasures/e1".into(),
        contacts: vec![
            centralita_platform::tenant::contact_name(&a, "c-gdpr"),
            centralita_platform::tenant::contact_name(&b, "c-gdpr"),
        ],
        ..Default::default()
    };
    let event =
        Event::new(TenantId::parse(&a).unwrap(), &crm::CustomerErased { tenant: a.clone(), erasure: Some(erasure) });
    Producer::new(&testkit::brokers(), None).unwrap().publish(&topics.customers(), "c1", &event).await.unwrap();

    let report = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let e = rx.recv().await.unwrap();
            if e.type_name == crm::StoreErased::TYPE {
                return e.payload::<crm::StoreErased>().unwrap();
            }
        }
    })
    .await
    .expect("recording reported the erasure");
    assert_eq!(
        (report.tenant.as_str(), report.erasure.as_str(), report.store.as_str()),
        (a.as_str(), "erasures/e1", "recording")
    );
    assert_eq!(report.records_erased, 1);
    let get = |name: String, tok: String| {
        let mut c = s.client();
        async move {
            c.get_recording(request(pb::GetRecordingRequest { name }, &tok)).await.map(|_| ()).map_err(|e| e.code())
        }
    };
    assert_eq!(get(erased_a.name.clone(), sup_a.clone()).await, Err(Code::NotFound));
    assert_eq!(get(held_a.name.clone(), sup_a.clone()).await, Ok(()), "on legal hold");
    assert_eq!(get(other_contact.name.clone(), sup_a.clone()).await, Ok(()), "another contact");
    assert_eq!(get(same_id_b.name.clone(), sup_b.clone()).await, Ok(()), "another tenant's contact");
    let ta = TenantId::parse(&a).unwrap();
    let id = erased_a.name.strip_prefix("recordings/").unwrap();
    assert!(centralita_recording::store::data_key(&pool(), &ta, id).await.unwrap().is_none(), "key shredded");
    let objects =
        centralita_recording::objects::Objects::from_url(&format!("file://{}", s.dir.join("objects").display()))
            .unwrap();
    assert!(objects.size(&centralita_recording::ingest::object_key(&ta, id)).await.is_err(), "object gone");

    stop.trigger();
    let _ = reader.await;
    s.shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(10), s.task).await.unwrap().unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&s.dir);
}

/// Rotating a tenant's key: a recording wrapped under version 1 is re-wrapped under version
/// 2 by the sweeper's pass, its object untouched, and then plays back with a keyring that no
/// longer holds version 1 at all.
#[tokio::test]
async fn a_key_rotation_rewraps_data_keys_without_touching_audio() {
    use centralita_recording::capture::{Input, Leg};
    use centralita_recording::crypto::Opener;
    use centralita_recording::ingest::{Header, Recorder};
    use centralita_recording::keys::Keyring;
    const K2: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";
    let pool = pool();
    centralita_platform::db::migrate(&pool, &centralita_recording::MIGRATIONS).await.unwrap();
    let dir = std::env::temp_dir().join(testkit::unique("recording-rotate-"));
    let objects =
        centralita_recording::objects::Objects::from_url(&format!("file://{}", dir.join("objects").display())).unwrap();
    let v1 = Keyring::parse(&format!("current: 1\nroots: {{1: \"{ROOT_KEY}\"}}\n")).unwrap();
    let both = Keyring::parse(&format!("current: 2\nroots: {{1: \"{ROOT_KEY}\", 2: \"{K2}\"}}\n")).unwrap();
    let v2 = Keyring::parse(&format!("current: 2\nroots: {{2: \"{K2}\"}}\n")).unwrap();
    let recorder = Recorder {
        pool: pool.clone(),
        keys: std::sync::Arc::new(v1.clone()),
        objects: objects.clone(),
        spool: dir.join("spool"),
        metrics: std::sync::Arc::new(centralita_recording::metrics::Metrics::default()),
    };
    let tenant = TenantId::parse(&testkit::unique("rotate-")).unwrap();
    let header = Header {
        tenant: tenant.clone(),
        contact_id: "c-r".into(),
        queue: "support".into(),
        agent_ids: vec![],
        start: chrono::Utc::now(),
        law: centralita_recording::g711::Law::Mu,
    };
    let mut session = recorder.start(&header).await.unwrap();
    session.push(Input::Audio { leg: Leg::Agent, offset: 0, payload: vec![0x80; 800] }).await.unwrap().unwrap();
    session.push(Input::End { offset: 800 }).await.unwrap().unwrap();
    let row = session.finish().await.unwrap();
    let before = objects.range(&row.object_key, 0..objects.size(&row.object_key).await.unwrap()).await.unwrap();
    let data_key = |ring: Keyring| {
        let (pool, tenant, id) = (pool.clone(), tenant.clone(), row.id.clone());
        async move {
            let (version, wrapped) = centralita_recording::store::data_key(&pool, &tenant, &id).await.unwrap().unwrap();
            (version, ring.unwrap(tenant.as_str(), &id, version, &wrapped).ok())
        }
    };
    assert_eq!(data_key(v1.clone()).await.0, 1);
    assert!(data_key(v2.clone()).await.1.is_none(), "version 2 cannot open a version 1 key");

    let rewrap = centralita_recording::retention::rewrap;
    assert_eq!(rewrap(&pool, &v1, std::slice::from_ref(&tenant)).await.unwrap(), 0, "already current");
    assert_eq!(rewrap(&pool, &both, std::slice::from_ref(&tenant)).await.unwrap(), 1);
    assert_eq!(rewrap(&pool, &both, std::slice::from_ref(&tenant)).await.unwrap(), 0, "done once");
    let (version, key) = data_key(v2).await;
    assert_eq!(version, 2);
    let after = objects.range(&row.object_key, 0..objects.size(&row.object_key).await.unwrap()).await.unwrap();
    assert_eq!(before, after, "the audio object is untouched");
    let plain = Opener::new(&key.unwrap(), tenant.as_str(), &row.id, &after).unwrap().open_all(&after).unwrap();
    assert_eq!(plain.len(), 800 * 4);
    assert!(data_key(v1).await.1.is_none(), "the old version no longer opens it");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Tenant `…a-…` keeps transcripts and lets agents hear their own contacts, tenant `…b-…`
/// does neither.
fn transcripts_manifest(id: &str) -> String {
    let on = if id.contains("a-") { ", chatTranscripts: true, agentsHearOwn: true" } else { "" };
    manifest(id).replace(
        "recording: { voice: all, allowPause: true }",
        &format!("recording: {{ voice: all, allowPause: true{on} }}"),
    )
}

fn transcript(tenant: &str, contact: &str) -> pb::IngestTranscriptRequest {
    use pb::transcript_message::Sender;
    let now = chrono::Utc::now().timestamp();
    let at = |s: i64| Some(prost_types::Timestamp { seconds: now - 60 + s, nanos: 0 });
    let line = |sequence, sender: Sender, agent: &str, text: &str| pb::TranscriptMessage {
        sequence,
        sender: sender as i32,
        agent_id: agent.into(),
        text: text.into(),
        time: at(sequence),
    };
    pb::IngestTranscriptRequest {
        tenant: tenant.into(),
        contact_id: contact.into(),
        queue: "support".into(),
        channel: centralita_proto::tenancy::v1::Channel::Chat as i32,
        agent_ids: vec!["agent-7".into()],
        start_time: at(0),
        end_time: at(30),
        messages: vec![
            line(1, Sender::Customer, "", "Hola, mi pedido no llega"),
            line(2, Sender::System, "", "agent-7 joined"),
            line(3, Sender::Agent, "agent-7", "¿Me da el número de pedido?"),
            line(5, Sender::Customer, "", "Es el 4471 ✓"),
        ],
        paused_messages: 1,
    }
}

/// A closed chat's transcript: stored once per contact (a repeat returns the same), read
/// back decrypted by the tenant's supervisors and by the agent who handled it (the tenant
/// lets agents hear their own), audited, listed with the contact's recordings, held, swept
/// and erased like one; refused to other agents, roles and tenants, to a tenant that keeps
/// none, for voice, with bad messages; no audio of it, no transcript of a call.
#[tokio::test]
async fn a_transcript_is_stored_once_read_back_and_kept_to_its_tenant() {
    let (prefix, _topics, [a, b]) = testkit::two_tenants("rectr-", transcripts_manifest, |t| vec![t.contacts()]).await;
    let s = start(&prefix).await;
    let (channel_a, channel_b) = (token(Some(&a), Role::Channel, None), token(Some(&b), Role::Channel, None));
    let (sup_a, sup_b) = (token(Some(&a), Role::Supervisor, None), token(Some(&b), Role::Supervisor, None));
    let admin_a = token(Some(&a), Role::TenantAdmin, None);
    let store = |req: pb::IngestTranscriptRequest, tok: String| {
        let mut c = s.client();
        async move { c.ingest_transcript(request(req, &tok)).await.map(|r| r.into_inner()) }
    };
    let read = |name: String, tok: String| {
        let mut c = s.client();
        async move { c.get_transcript(request(pb::GetTranscriptRequest { name }, &tok)).await.map(|r| r.into_inner()) }
    };

    let stored = store(transcript(&a, "chat-1"), channel_a.clone()).await.unwrap();
    assert_eq!(stored.kind, pb::RecordingKind::Transcript as i32);
    assert_eq!(stored.channel, centralita_proto::tenancy::v1::Channel::Chat as i32);
    assert_eq!((stored.message_count, stored.paused_messages, stored.wav_size_bytes), (4, 1, 0));
    assert_eq!(stored.state, pb::RecordingState::Complete as i32);
    let mut changed = transcript(&a, "chat-1");
    changed.messages.truncate(1);
    let again = store(changed, channel_a.clone()).await.unwrap();
    assert_eq!((again.name.as_str(), again.message_count), (stored.name.as_str(), 4), "one transcript per contact");

    let t = read(stored.name.clone(), sup_a.clone()).await.unwrap();
    assert_eq!((t.recording.as_str(), t.contact_id.as_str(), t.paused_messages), (stored.name.as_str(), "chat-1", 1));
    let texts: Vec<_> = t.messages.iter().map(|m| (m.sequence, m.agent_id.as_str(), m.text.as_str())).collect();
    assert_eq!(
        texts,
        [
            (1, "", "Hola, mi pedido no llega"),
            (2, "", "agent-7 joined"),
            (3, "agent-7", "¿Me da el número de pedido?"),
            (5, "", "Es el 4471 ✓")
        ]
    );
    read(stored.name.clone(), admin_a.clone()).await.unwrap();

    // The object on disk is sealed: none of the text is in it.
    let files: Vec<_> = std::fs::read_dir(objects_dir(&s, &a)).unwrap().map(|f| f.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "the repeat left no second object: {files:?}");
    let bytes = std::fs::read(&files[0]).unwrap();
    assert!(!bytes.windows(6).any(|w| w == b"pedido"), "clear text in the stored object");

    // Refused: other roles, another tenant (as NOT_FOUND), a tenant keeping no transcripts,
    // voice, bad messages; no audio of a transcript; no transcript of a call.
    let code = |r: Result<pb::Transcript, tonic::Status>| r.unwrap_err().code();
    assert_eq!(code(read(stored.name.clone(), sup_b.clone()).await), Code::NotFound);
    // The agent who handled it reads it; another agent does not learn it exists; in a
    // tenant that does not let agents hear their own, no agent may.
    let agent_7 = token(Some(&a), Role::Agent, Some("agent-7"));
    assert_eq!(read(stored.name.clone(), agent_7.clone()).await.unwrap().messages.len(), 4);
    let other_agent = token(Some(&a), Role::Agent, Some("agent-8"));
    assert_eq!(code(read(stored.name.clone(), other_agent.clone()).await), Code::NotFound);
    let list = |tok: String| {
        let mut c = s.client();
        async move {
            let req = pb::ListRecordingsRequest { contact_id: "chat-1".into(), ..Default::default() };
            c.list_recordings(request(req, &tok)).await.map(|r| r.into_inner().recordings.len())
        }
    };
    assert_eq!(list(agent_7.clone()).await.unwrap(), 1);
    assert_eq!(list(other_agent.clone()).await.unwrap(), 0, "another agent's contact is not listed");
    let get =
        s.client().get_recording(request(pb::GetRecordingRequest { name: stored.name.clone() }, &other_agent)).await;
    assert_eq!(get.unwrap_err().code(), Code::NotFound);
    let agent_b = token(Some(&b), Role::Agent, Some("agent-7"));
    assert_eq!(list(agent_b).await.unwrap_err().code(), Code::PermissionDenied);
    assert_eq!(code(read(stored.name.clone(), channel_a.clone()).await), Code::PermissionDenied);
    assert_eq!(code(read("recordings/nope".into(), sup_a.clone()).await), Code::InvalidArgument);
    let refused = |r: Result<pb::Recording, tonic::Status>| r.unwrap_err().code();
    assert_eq!(refused(store(transcript(&a, "chat-2"), channel_b.clone()).await), Code::PermissionDenied);
    assert_eq!(refused(store(transcript(&a, "chat-2"), sup_a.clone()).await), Code::PermissionDenied);
    assert_eq!(refused(store(transcript(&b, "chat-2"), channel_b.clone()).await), Code::FailedPrecondition);
    let mut voice = transcript(&a, "chat-2");
    voice.channel = centralita_proto::tenancy::v1::Channel::Voice as i32;
    assert_eq!(refused(store(voice, channel_a.clone()).await), Code::InvalidArgument);
    let mut unordered = transcript(&a, "chat-2");
    unordered.messages[1].sequence = 1;
    assert_eq!(refused(store(unordered, channel_a.clone()).await), Code::InvalidArgument);
    let mut anonymous = transcript(&a, "chat-2");
    anonymous.messages[2].agent_id.clear();
    assert_eq!(refused(store(anonymous, channel_a.clone()).await), Code::InvalidArgument);
    let mut no_time = transcript(&a, "chat-2");
    no_time.messages[0].time = None;
    assert_eq!(refused(store(no_time, channel_a.clone()).await), Code::InvalidArgument);
    let no_audio = stream_wav(&s, &sup_a, &stored.name).await.unwrap_err();
    assert_eq!(no_audio.code(), Code::FailedPrecondition);
    let url = s
        .client()
        .create_playback_url(request(pb::CreatePlaybackUrlRequest { name: stored.name.clone() }, &sup_a))
        .await;
    assert_eq!(url.unwrap_err().code(), Code::FailedPrecondition);
    let call = ingest(&s, &channel_a, call(&a, "chat-1")).await.unwrap();
    assert_eq!(code(read(call.name.clone(), sup_a.clone()).await), Code::FailedPrecondition);

    // Listed with the contact's recordings; held and swept like one.
    let listed = s
        .client()
        .list_recordings(request(
            pb::ListRecordingsRequest { contact_id: "chat-1".into(), ..Default::default() },
            &sup_a,
        ))
        .await
        .unwrap()
        .into_inner();
    let kinds: Vec<_> = listed.recordings.iter().map(|r| (r.name.as_str(), r.kind)).collect();
    assert!(kinds.contains(&(stored.name.as_str(), pb::RecordingKind::Transcript as i32)), "{kinds:?}");
    assert!(kinds.contains(&(call.name.as_str(), pb::RecordingKind::Call as i32)), "{kinds:?}");
    s.client()
        .set_legal_hold(request(
            pb::SetLegalHoldRequest { name: stored.name.clone(), reason: "claim 9".into() },
            &admin_a,
        ))
        .await
        .unwrap();
    let pool = pool();
    let registry = centralita_platform::registry::TenantRegistry::new();
    for id in [&a, &b] {
        registry.upsert(
            centralita_platform::tenant::TenantManifest::parse_all(&transcripts_manifest(id), chrono::Utc::now())
                .unwrap()
                .remove(0),
        );
    }
    let objects =
        centralita_recording::objects::Objects::from_url(&format!("file://{}", s.dir.join("objects").display()))
            .unwrap();
    let metrics = centralita_recording::metrics::Metrics::default();
    let later = chrono::Utc::now() + chrono::Duration::days(31);
    assert_eq!(
        centralita_recording::retention::sweep(&pool, &objects, &registry, &metrics, later).await.unwrap(),
        1,
        "the call; the held transcript stays"
    );
    read(stored.name.clone(), sup_a.clone()).await.unwrap();
    s.client()
        .clear_legal_hold(request(
            pb::ClearLegalHoldRequest { name: stored.name.clone(), reason: "settled".into() },
            &admin_a,
        ))
        .await
        .unwrap();
    assert_eq!(centralita_recording::retention::sweep(&pool, &objects, &registry, &metrics, later).await.unwrap(), 1);
    assert_eq!(code(read(stored.name.clone(), sup_a.clone()).await), Code::NotFound);
    assert!(std::fs::read_dir(objects_dir(&s, &a)).unwrap().next().is_none(), "the object went too");

    // Erased with the customer: the erasure of a contact reaches its transcript.
    let erased = store(transcript(&a, "chat-3"), channel_a.clone()).await.unwrap();
    let tenant = TenantId::parse(&a).unwrap();
    let names = [centralita_platform::tenant::contact_name(&a, "chat-3")];
    let report =
        centralita_recording::erasure::erase(&pool, &objects, &metrics, &tenant, "erasures/t1", &names).await.unwrap();
    assert_eq!(report.erased, 1);
    assert_eq!(code(read(erased.name.clone(), sup_a.clone()).await), Code::NotFound);

    let audited: i64 = {
        let mut client = pool.get().await.unwrap();
        let tx = centralita_platform::db::begin(&mut client, &tenant).await.unwrap();
        let n = tx.query_one("SELECT count(*) FROM audit WHERE action = 'transcript_read'", &[]).await.unwrap().get(0);
        tx.commit().await.unwrap();
        n
    };
    assert_eq!(audited, 4, "the supervisor's, the admin's, the agent's and the read under hold; refused reads are not");
    s.shutdown.trigger();
    let _ = s.task.await;
}

fn objects_dir(s: &Service, tenant: &str) -> std::path::PathBuf {
    s.dir.join("objects").join("transcripts").join(tenant)
}

//! Recording on S3: a real S3 API server on loopback (PyPI `moto[server]`, installed by
//! `deploy/local/install.sh` from `deploy/local/requirements.txt`), started by this test on
//! a port of its own and stopped by its pid. The object store's contract (multipart upload,
//! size, ranges, delete) holds on S3 as on local disk, and the service records a call into
//! S3 and plays it back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use centralita_platform::auth::Role;
use centralita_platform::server::Listeners;
use centralita_platform::shutdown::Shutdown;
use centralita_platform::testkit::{self, request, token};
use centralita_proto::recording::v1::{self as pb, recording_service_client::RecordingServiceClient};
use centralita_recording::objects::Objects;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ROOT_KEY: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

/// moto's S3 server, killed (by its pid) when dropped.
struct Moto {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn moto() -> Moto {
    let venv = testkit::env("CENTRALITA_VENV", &format!("{}/.cache/centralita/venv", testkit::env("HOME", "/root")));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(format!("{venv}/bin/moto_server"))
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server (pip install -r deploy/local/requirements.txt into $CENTRALITA_VENV)");
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let moto = Moto { child, addr };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return moto;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("moto_server did not listen on {addr}");
}

/// Creates a bucket (moto takes unsigned requests).
async fn create_bucket(addr: SocketAddr, bucket: &str) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("PUT /{bucket} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    assert!(buf.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf));
}

fn s3(addr: SocketAddr, bucket: &str) -> Objects {
    let builder = object_store::aws::AmazonS3Builder::new()
        .with_endpoint(format!("http://{addr}"))
        .with_region("us-east-1")
        .with_access_key_id("test")
        .with_secret_access_key("test")
        .with_allow_http(true);
    Objects::s3(&format!("s3://{bucket}"), builder).unwrap()
}

/// The same body on every store: a 12 MiB file goes up in parts and reads back by ranges.
async fn contract(objects: &Objects) {
    let dir = std::env::temp_dir().join(testkit::unique("objects-"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("big");
    let data: Vec<u8> = (0..12 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &data).unwrap();
    let key = format!("recordings/t/{}.crec", testkit::unique("o"));
    assert_eq!(objects.put_file(&key, &path).await.unwrap(), data.len() as u64);
    assert_eq!(objects.size(&key).await.unwrap(), data.len() as u64);
    let r = 5 * 1024 * 1024 - 10..5 * 1024 * 1024 + 10;
    assert_eq!(objects.range(&key, r.start as u64..r.end as u64).await.unwrap(), data[r]);
    objects.delete(&key).await.unwrap();
    assert!(objects.size(&key).await.is_err());
    objects.delete(&key).await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

fn manifest(id: &str) -> String {
    format!(
        "apiVersion: centralita.io/v1\nkind: Tenant\nmetadata: {{ name: {id} }}\nspec:\n  displayName: {id}\n  \
         channels: [voice]\n  serviceLevel: {{ targetPercent: 80, thresholdSeconds: 20 }}\n  \
         quotas: {{ maxConcurrentContacts: 100, apiRequestsPerSecond: 1000 }}\n  \
         businessHours: {{ timeZone: Europe/Madrid }}\n  dataRetentionDays: 30\n  recording: {{ voice: all }}\n  \
         routing:\n    queues:\n      - {{ id: support }}\n"
    )
}

#[tokio::test]
async fn recordings_live_in_s3_as_on_local_disk() {
    let moto = moto().await;
    let bucket = testkit::unique("rec-");
    create_bucket(moto.addr, &bucket).await;
    contract(&s3(moto.addr, &bucket)).await;
    let local = std::env::temp_dir().join(testkit::unique("objects-fs-"));
    contract(&Objects::from_url(&format!("file://{}", local.display())).unwrap()).await;
    let _ = std::fs::remove_dir_all(&local);

    // The service on `s3://bucket`, configured by the standard AWS_* environment. This is
    // the only test of this binary, so setting the environment races nothing.
    for (k, v) in [
        ("AWS_ENDPOINT", format!("http://{}", moto.addr)),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_ALLOW_HTTP", "true".into()),
    ] {
        std::env::set_var(k, v);
    }
    let (prefix, _topics, [a, _b]) = testkit::two_tenants("recs3-", manifest, |t| vec![t.contacts()]).await;
    let dir = std::env::temp_dir().join(testkit::unique("recording-s3-"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("keys.yaml"), format!("current: 1\nroots: {{1: \"{ROOT_KEY}\"}}\n")).unwrap();
    let args = [
        "recording".to_owned(),
        "--jwt-public-key-file".into(),
        testkit::repo_file("deploy/local/dev-keys/jwt-ed25519.pub").display().to_string(),
        "--database-url".into(),
        testkit::postgres().url.expose().clone(),
        "--store-url".into(),
        format!("s3://{bucket}"),
        "--spool-dir".into(),
        dir.join("spool").display().to_string(),
        "--keys-file".into(),
        dir.join("keys.yaml").display().to_string(),
    ];
    let mut config =
        centralita_platform::server::parse_args::<centralita_recording::Settings>("recording", args).unwrap();
    config.common = testkit::common(&prefix);
    let listeners = Listeners::ephemeral().await.unwrap();
    let (grpc, admin) = (listeners.grpc_addr(), listeners.admin_addr());
    let shutdown = Shutdown::new();
    let (_, fut) =
        centralita_recording::start(config, listeners, ([127, 0, 0, 1], 0).into(), shutdown.clone()).await.unwrap();
    let task = tokio::spawn(fut);
    assert!(testkit::wait_ready(admin).await);
    let mut client = RecordingServiceClient::connect(format!("http://{grpc}")).await.unwrap();
    let d = |f: u64| Some(prost_types::Duration { seconds: (f / 8000) as i64, nanos: ((f % 8000) * 125_000) as i32 });
    use pb::ingest_call_request::Event;
    let mut msgs = vec![pb::IngestCallRequest {
        event: Some(Event::Header(pb::CallHeader {
            tenant: a.clone(),
            contact_id: "c-s3".into(),
            queue: "support".into(),
            agent_ids: vec![],
            start_time: Some(prost_types::Timestamp { seconds: chrono::Utc::now().timestamp(), nanos: 0 }),
            codec: pb::AudioCodec::Pcma as i32,
        })),
    }];
    for i in 0..100u64 {
        msgs.push(pb::IngestCallRequest {
            event: Some(Event::Audio(pb::AudioChunk {
                leg: pb::Leg::Agent as i32,
                offset: d(i * 160),
                payload: vec![0xaa; 160],
            })),
        });
    }
    msgs.push(pb::IngestCallRequest { event: Some(Event::End(pb::CallEnd { offset: d(16000) })) });
    let channel = token(Some(&a), Role::Channel, None);
    let rec = client.ingest_call(request(tokio_stream::iter(msgs), &channel)).await.unwrap().into_inner();
    let objects = s3(moto.addr, &bucket);
    let id = rec.name.strip_prefix("recordings/").unwrap();
    let key = format!("recordings/{a}/{id}.crec");
    assert_eq!(objects.size(&key).await.unwrap(), 16 + 64000 + 2 * 16, "two sealed one-second segments in S3");
    let sup = token(Some(&a), Role::Supervisor, None);
    let mut st = client
        .stream_recording_audio(request(pb::StreamRecordingAudioRequest { name: rec.name.clone() }, &sup))
        .await
        .unwrap()
        .into_inner();
    let mut wav = Vec::new();
    while let Some(m) = st.message().await.unwrap() {
        wav.extend(m.data);
    }
    assert_eq!(wav.len(), 44 + 64000);
    assert!(wav[44..].chunks_exact(4).all(|f| f == [0, 0, 0, 0x7e]), "A-law 0xaa = +32256 on the right only");

    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

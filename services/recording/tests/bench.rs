//! Recording's benchmark (ignored in normal runs; `loadtest/BENCHMARKS.md` has the command
//! and the figures): in one run, the machine's raw disk write speed, the encryption alone,
//! the spool path (seal, write, sync each segment) and concurrent calls through the real
//! gRPC service into local disk, with the bytes stored per call-hour.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::time::{Duration, Instant};

use centralita_platform::auth::Role;
use centralita_platform::server::Listeners;
use centralita_platform::shutdown::Shutdown;
use centralita_platform::testkit::{self, request, token};
use centralita_proto::recording::v1::{self as pb, recording_service_client::RecordingServiceClient};
use centralita_recording::crypto::{DataKey, Sealer, SEGMENT};

const ROOT_KEY: &str = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
const MIB: f64 = 1024.0 * 1024.0;

fn manifest(id: &str) -> String {
    format!(
        "apiVersion: centralita.io/v1\nkind: Tenant\nmetadata: {{ name: {id} }}\nspec:\n  displayName: {id}\n  \
         channels: [voice]\n  serviceLevel: {{ targetPercent: 80, thresholdSeconds: 20 }}\n  \
         quotas: {{ maxConcurrentContacts: 10000, apiRequestsPerSecond: 100000 }}\n  \
         businessHours: {{ timeZone: Europe/Madrid }}\n  dataRetentionDays: 30\n  recording: {{ voice: all }}\n  \
         routing:\n    queues:\n      - {{ id: support }}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --release -- --ignored --nocapture"]
async fn recording_throughput() {
    let dir = std::env::temp_dir().join(testkit::unique("recording-bench-"));
    std::fs::create_dir_all(&dir).unwrap();
    let total = 256 * 1024 * 1024usize;
    let block: Vec<u8> = (0..SEGMENT).map(|i| (i * 31) as u8).collect();

    // 1. Raw disk: the same bytes written in 32 000-byte writes, synced every segment.
    let t = Instant::now();
    let mut f = std::fs::File::create(dir.join("raw")).unwrap();
    for _ in 0..total / SEGMENT {
        f.write_all(&block).unwrap();
        f.sync_data().unwrap();
    }
    let raw_synced = total as f64 / MIB / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let mut f = std::fs::File::create(dir.join("raw2")).unwrap();
    for _ in 0..total / SEGMENT {
        f.write_all(&block).unwrap();
    }
    f.sync_all().unwrap();
    let raw_once = total as f64 / MIB / t.elapsed().as_secs_f64();

    // 2. Encryption alone (AES-256-GCM STREAM segments, in memory).
    let key = DataKey::generate().unwrap();
    let mut sealer = Sealer::new(&key, "bench", "0190aaaabbbbccccddddeeeeffff0000", SEGMENT).unwrap();
    let mut out = Vec::with_capacity(2 * SEGMENT);
    let t = Instant::now();
    for _ in 0..total / SEGMENT {
        sealer.push(&block, &mut out).unwrap();
        out.clear();
    }
    let seal = total as f64 / MIB / t.elapsed().as_secs_f64();

    // 3. The spool path: sealed, written and synced a segment at a time.
    let mut sealer = Sealer::new(&key, "bench", "0190aaaabbbbccccddddeeeeffff0000", SEGMENT).unwrap();
    let mut f = std::fs::File::create(dir.join("spool")).unwrap();
    let t = Instant::now();
    for _ in 0..total / SEGMENT {
        sealer.push(&block, &mut out).unwrap();
        f.write_all(&out).unwrap();
        f.sync_data().unwrap();
        out.clear();
    }
    let spool = total as f64 / MIB / t.elapsed().as_secs_f64();
    println!("disk raw, sync per 32 KB segment: {raw_synced:.1} MiB/s");
    println!("disk raw, one sync at the end:    {raw_once:.1} MiB/s");
    println!("encryption alone:                 {seal:.1} MiB/s");
    println!("spool path (seal+write+sync):     {spool:.1} MiB/s");
    println!("one call is 31.25 KiB/s of PCM: the spool path keeps up with {:.0} calls", spool * 1024.0 / 31.25);

    // 4. Concurrent calls through the service (gRPC in, local disk out), as fast as sent.
    let (prefix, _topics, [a, _b]) = testkit::two_tenants("recbench-", manifest, |t| vec![t.contacts()]).await;
    std::fs::write(dir.join("keys.yaml"), format!("current: 1\nroots: {{1: \"{ROOT_KEY}\"}}\n")).unwrap();
    let args = [
        "recording".to_owned(),
        "--jwt-public-key-file".into(),
        testkit::repo_file("deploy/local/dev-keys/jwt-ed25519.pub").display().to_string(),
        "--database-url".into(),
        testkit::postgres().url.expose().clone(),
        "--store-url".into(),
        format!("file://{}", dir.join("objects").display()),
        "--spool-dir".into(),
        dir.join("spool-dir").display().to_string(),
        "--keys-file".into(),
        dir.join("keys.yaml").display().to_string(),
    ];
    let mut config =
        centralita_platform::server::parse_args::<centralita_recording::Settings>("recording", args).unwrap();
    config.common = testkit::common(&prefix);
    config.service.postgres.pool_size = 32;
    let listeners = Listeners::ephemeral().await.unwrap();
    let (grpc, admin) = (listeners.grpc_addr(), listeners.admin_addr());
    let shutdown = Shutdown::new();
    let (_, fut) =
        centralita_recording::start(config, listeners, ([127, 0, 0, 1], 0).into(), shutdown.clone()).await.unwrap();
    let task = tokio::spawn(fut);
    assert!(testkit::wait_ready(admin).await);
    let channel = token(Some(&a), Role::Channel, None);
    let seconds = 60u64;
    for calls in [50usize, 200] {
        let t = Instant::now();
        let mut handles = Vec::new();
        for c in 0..calls {
            let (tenant, channel) = (a.clone(), channel.clone());
            handles.push(tokio::spawn(async move {
                let mut client = RecordingServiceClient::connect(format!("http://{grpc}")).await.unwrap();
                let d = |f: u64| {
                    Some(prost_types::Duration { seconds: (f / 8000) as i64, nanos: ((f % 8000) * 125_000) as i32 })
                };
                use pb::ingest_call_request::Event;
                let header = pb::IngestCallRequest {
                    event: Some(Event::Header(pb::CallHeader {
                        tenant,
                        contact_id: format!("bench-{c}"),
                        queue: "support".into(),
                        agent_ids: vec![],
                        start_time: Some(prost_types::Timestamp { seconds: chrono::Utc::now().timestamp(), nanos: 0 }),
                        codec: pb::AudioCodec::Pcmu as i32,
                    })),
                };
                let audio = (0..seconds * 50).flat_map(move |i| {
                    [pb::Leg::Customer, pb::Leg::Agent].map(|leg| pb::IngestCallRequest {
                        event: Some(Event::Audio(pb::AudioChunk {
                            leg: leg as i32,
                            offset: d(i * 160),
                            payload: vec![0x80; 160],
                        })),
                    })
                });
                let end = pb::IngestCallRequest { event: Some(Event::End(pb::CallEnd { offset: d(seconds * 8000) })) };
                let msgs = std::iter::once(header).chain(audio).chain(std::iter::once(end));
                let rec = client.ingest_call(request(tokio_stream::iter(msgs), &channel)).await.unwrap().into_inner();
                assert_eq!(rec.duration.unwrap().seconds as u64, seconds);
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
        let wall = t.elapsed().as_secs_f64();
        let audio = (calls as u64 * seconds) as f64;
        println!(
            "{calls} concurrent calls of {seconds} s (20 ms chunks per leg): {wall:.1} s wall, {:.0} call-seconds per second \
             (= calls sustained at real time)",
            audio / wall
        );
    }
    let per_hour = 16 + 3600 * (SEGMENT as u64 + 16);
    println!("stored per call-hour: {per_hour} bytes ({:.1} MB)", per_hour as f64 / 1e6);
    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(20), task).await.unwrap().unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

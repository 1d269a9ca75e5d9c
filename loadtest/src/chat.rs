//! `chat`: customer message → agent stream latency and messages per second through the real
//! digital role (media's web chat front door and `ConversationService`) and sessions.
//!
//! 1. A tenant with a web chat widget is published; the run waits until media knows it.
//! 2. `--chats` chats are started as a customer's browser starts them (`POST …/chats` with
//!    the widget key): each a contact in sessions and a conversation in PostgreSQL.
//! 3. A supervisor of the tenant opens `StreamMessages` on every conversation (what an
//!    agent's console does for the chats it holds; a supervisor may follow any).
//! 4. For each `--rates` step (messages per second over all chats, open loop for
//!    `--seconds`) customers send with `POST …/messages` (their visitor tokens), spread over
//!    the chats (under the widget's per-conversation limit of 5/s); each text carries its
//!    send time, read back when the message arrives on the supervisor's stream. Reported per
//!    step: messages sent, refused, received, received per second, and send→stream
//!    latency p50/p99/p99.9/max. A step whose received rate falls under 95 % of the offered
//!    one, or whose p99 passes a second, ends the run (the knee).

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use centralita_platform::auth::Role;
use centralita_platform::bus::Topics;
use centralita_proto::media::v1::{self as pb, conversation_service_client::ConversationServiceClient};
use hdrhistogram::Histogram;
use tokio_stream::StreamExt;
use tonic::transport::Endpoint;

use crate::{histogram, publish_tenants, req, tenant_yaml, Auth};

#[derive(Debug, clap::Args)]
pub struct ChatArgs {
    /// media's web chat front door.
    #[arg(long, default_value = "http://127.0.0.1:8480")]
    webchat: String,
    /// media's gRPC endpoint (ConversationService).
    #[arg(long, default_value = "http://127.0.0.1:50053")]
    media: String,
    #[command(flatten)]
    pub stack: crate::StackArgs,
    /// Conversations open at once.
    #[arg(long, default_value_t = 400)]
    chats: u32,
    /// Offered messages per second, one step each.
    #[arg(long, value_delimiter = ',', default_value = "100,200,400,800")]
    rates: Vec<f64>,
    /// Length of each step.
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    #[arg(long)]
    json: Option<PathBuf>,
}

const ORIGIN: &str = "https://shop.loadtest.example";

struct Chat {
    contact: String,
    token: String,
}

#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    refused: AtomicU64,
    received: AtomicU64,
}

pub async fn run(args: ChatArgs) -> anyhow::Result<()> {
    if args.chats == 0 || args.rates.is_empty() || args.rates.iter().any(|r| !(r.is_finite() && *r > 0.0)) {
        bail!("need at least one chat and positive rates");
    }
    if args.rates.iter().any(|r| r / f64::from(args.chats) > 4.0) {
        bail!("--rates over --chats must stay under 4 messages per second per chat (the widget allows 5)");
    }
    let auth = Auth::from_file(&args.stack.private_key_file)?;
    let run = &uuid::Uuid::now_v7().simple().to_string()[24..];
    let tenant = format!("chat{run}");
    let key = format!("wk_{run}_loadtest000");
    let mut yaml = tenant_yaml(
        &tenant,
        "Chat bench",
        &["chat"],
        "    queues:\n      - { id: support, offerTimeoutSeconds: 600, afterContactWorkSeconds: 60 }",
    );
    yaml.push_str(&format!(
        "  webchat:\n    widgetKey: {key}\n    allowedOrigins: [\"{ORIGIN}\"]\n    queue: support\n"
    ));
    let topics = Topics::new(&args.stack.topic_prefix);
    publish_tenants(&args.stack.brokers, &topics, &[yaml]).await?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;
    let base = format!("{}/v1/tenants/{tenant}/webchat", args.webchat.trim_end_matches('/'));

    // media knows the tenant once a chat starts (sessions must know it too).
    let start = |http: reqwest::Client, base: String, key: String| async move {
        let r = http
            .post(format!("{base}/chats"))
            .header("origin", ORIGIN)
            .json(&serde_json::json!({ "widgetKey": key }))
            .send()
            .await?;
        let status = r.status();
        let body: serde_json::Value = r.json().await.unwrap_or_default();
        if status != reqwest::StatusCode::CREATED {
            bail!("start chat: {status} {body}");
        }
        Ok::<_, anyhow::Error>(Chat {
            contact: body["contact"].as_str().unwrap_or_default().to_owned(),
            token: body["visitorToken"].as_str().unwrap_or_default().to_owned(),
        })
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut said = false;
    let first = loop {
        match start(http.clone(), base.clone(), key.clone()).await {
            Ok(c) => break c,
            Err(e) if Instant::now() < deadline => {
                if !std::mem::replace(&mut said, true) {
                    eprintln!("[chat] waiting for the tenant to reach media and sessions ({e})");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e).context("the tenant never became usable"),
        }
    };
    let mut chats = vec![first];
    let started = Instant::now();
    let mut pending = tokio::task::JoinSet::new();
    for _ in 1..args.chats {
        pending.spawn(start(http.clone(), base.clone(), key.clone()));
        if pending.len() >= 32 {
            chats.push(pending.join_next().await.expect("a task")??);
        }
    }
    while let Some(c) = pending.join_next().await {
        chats.push(c??);
    }
    eprintln!(
        "[chat] {} chats started in {:.1} s ({:.0}/s)",
        chats.len(),
        started.elapsed().as_secs_f64(),
        chats.len() as f64 / started.elapsed().as_secs_f64()
    );

    // The supervisor's streams, one per conversation.
    let media = Endpoint::from_shared(args.media.clone())?.connect().await.context("media is not reachable")?;
    let supervisor = auth.token(Some(&tenant), Role::Supervisor, None)?;
    let epoch = Instant::now();
    let latencies = Arc::new(Mutex::new(histogram()));
    let counts = Arc::new(Counts::default());
    let mut streams = Vec::new();
    for c in &chats {
        let mut client = ConversationServiceClient::new(media.clone());
        let mut stream = client
            .stream_messages(req(
                pb::StreamMessagesRequest { parent: c.contact.clone(), after_sequence: 1 },
                &supervisor,
            )?)
            .await?
            .into_inner();
        let (latencies, counts) = (latencies.clone(), counts.clone());
        streams.push(tokio::spawn(async move {
            while let Some(Ok(ev)) = stream.next().await {
                if let Some(pb::stream_messages_response::Event::Message(m)) = ev.event {
                    if let Some(sent) = m.text.strip_prefix("t=").and_then(|t| t.parse::<u64>().ok()) {
                        let now = epoch.elapsed().as_micros() as u64;
                        let _ =
                            latencies.lock().unwrap_or_else(|p| p.into_inner()).record(now.saturating_sub(sent).max(1));
                        counts.received.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let chats = Arc::new(chats);
    let mut steps = Vec::new();
    for &rate in &args.rates {
        latencies.lock().unwrap_or_else(|p| p.into_inner()).reset();
        let before = (counts.sent.load(Ordering::Relaxed), counts.received.load(Ordering::Relaxed));
        let refused_before = counts.refused.load(Ordering::Relaxed);
        let interval = Duration::from_secs_f64(1.0 / rate);
        let total = (rate * args.seconds as f64) as u64;
        let t0 = Instant::now();
        let mut senders = tokio::task::JoinSet::new();
        for i in 0..total {
            let due = t0 + interval * i as u32;
            tokio::time::sleep_until(due.into()).await;
            let chat = &chats[(i % chats.len() as u64) as usize];
            let text = format!("t={}", epoch.elapsed().as_micros());
            let request = http
                .post(format!("{base}/messages"))
                .bearer_auth(&chat.token)
                .json(&serde_json::json!({ "text": text }));
            let counts = counts.clone();
            senders.spawn(async move {
                match request.send().await {
                    Ok(r) if r.status() == reqwest::StatusCode::CREATED => counts.sent.fetch_add(1, Ordering::Relaxed),
                    _ => counts.refused.fetch_add(1, Ordering::Relaxed),
                };
            });
            while senders.try_join_next().is_some() {}
        }
        while senders.join_next().await.is_some() {}
        // The stragglers: up to 5 s for what was sent to arrive.
        let wanted = counts.sent.load(Ordering::Relaxed) - before.0;
        let drain = Instant::now() + Duration::from_secs(5);
        while counts.received.load(Ordering::Relaxed) - before.1 < wanted && Instant::now() < drain {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let elapsed = t0.elapsed().as_secs_f64();
        let received = counts.received.load(Ordering::Relaxed) - before.1;
        let h = latencies.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let step = StepResult {
            rate,
            sent: wanted,
            refused: counts.refused.load(Ordering::Relaxed) - refused_before,
            received,
            received_per_second: received as f64 / elapsed,
            latency: h,
        };
        eprintln!("{}", step.line());
        let knee = step.received_per_second < 0.95 * rate || step.latency.value_at_quantile(0.99) > 1_000_000;
        steps.push(step);
        if knee {
            eprintln!("[chat] past the knee: stopping");
            break;
        }
    }
    for s in streams {
        s.abort();
    }
    if let Some(path) = &args.json {
        let out: Vec<_> = steps.iter().map(StepResult::json).collect();
        let doc = serde_json::json!({ "chats": args.chats, "seconds": args.seconds, "steps": out });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)?;
    }
    Ok(())
}

struct StepResult {
    rate: f64,
    sent: u64,
    refused: u64,
    received: u64,
    received_per_second: f64,
    latency: Histogram<u64>,
}

impl StepResult {
    fn ms(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }

    fn line(&self) -> String {
        format!(
            "rate {:>6.0}/s  sent {:>6}  refused {:>4}  received {:>6} ({:>7.1}/s)  send→stream ms p50 {:>6.2}  p99 {:>7.2}  p99.9 {:>7.2}  max {:>7.2}",
            self.rate,
            self.sent,
            self.refused,
            self.received,
            self.received_per_second,
            self.ms(0.5),
            self.ms(0.99),
            self.ms(0.999),
            self.latency.max() as f64 / 1000.0
        )
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "rate": self.rate, "sent": self.sent, "refused": self.refused, "received": self.received,
            "received_per_second": self.received_per_second,
            "p50_ms": self.ms(0.5), "p99_ms": self.ms(0.99), "p999_ms": self.ms(0.999),
            "max_ms": self.latency.max() as f64 / 1000.0,
        })
    }
}

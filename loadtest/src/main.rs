//! `centralita-loadtest`: drives the real services over their public gRPC APIs.
//!
//! `acd` measures the ACD (sessions + routing) the way a busy floor loads it: it publishes
//! `--tenants` tenants, signs in `--agents` agents (some shared between two tenants, chat 2
//! and exclusive voice), keeps one agent-event stream open per agent, and creates contacts
//! open-loop at each rate of `--rates` for `--step-seconds`. Latency is enqueue→offer: from
//! just before `CreateContact` is sent to the offer arriving on the agent's stream (both
//! clocks are this process's wall clock). Agents accept at once, hold for `--handle-ms`,
//! end and wrap up, so capacity frees up the way it does in production.
//!
//! The knee is the highest rate whose p99 stays under `--target-p99-ms` with no errors and
//! every created contact offered.
//!
//! # Layout
//! - this file: the command line, the shared helpers (tokens, requests, histograms,
//!   tenants published on the tenants topic) and the `acd` benchmark.
//! - `simulate`: a contact-center floor from a scenario file (`scenario`), its results
//!   next to Erlang C and the reporting service's figures.
//! - `pool`: `pool-erlang-c`, one Erlang C comparison over several `simulate --segment` runs.
//! - `scenario`: the scenario files' format and validation.
//! - `hops`: where an ACD step's time goes, hop by hop (the services' event ages).
//! - `reporting`: how fast contact events become visible in the reporting service.
//! - `crm`: profile lookups per second and screen-pop latency of the CRM service.
//! - `kafka`: the raw capacity of the Kafka-protocol broker.
//! - `voice`: the voice benchmark's RTP generator and counter, the raw UDP relay it is
//!   compared with, and its tenant and agents (`loadtest/voice-bench.sh`).

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

mod chat;
mod crm;
mod hops;
mod kafka;
mod pool;
mod reporting;
mod scenario;
mod simulate;
mod voice;

use anyhow::{bail, Context};
use centralita_platform::auth::{Role, Signer, TokenRequest};
use centralita_platform::bus::{ensure_topics, Event, Producer, TopicSpec, Topics};
use centralita_platform::tenant::{TenantId, TenantManifest};
use centralita_proto::sessions::v1 as pb;
use centralita_proto::tenancy::v1 as tpb;
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use pb::agent_service_client::AgentServiceClient;
use pb::contact_service_client::ContactServiceClient;
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint};

#[derive(Debug, Parser)]
#[command(name = "centralita-loadtest", about = "Drives the Centralita services over gRPC and measures them")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Enqueue→offer latency and throughput of the ACD at stepped arrival rates.
    Acd(AcdArgs),
    /// Event→visible latency and event throughput of the reporting service.
    Reporting(reporting::ReportingArgs),
    /// A contact-center floor from a scenario file (loadtest/scenarios/), with service
    /// level, ASA and occupancy against Erlang C, a conservation check and a ramp mode.
    Simulate(simulate::SimulateArgs),
    /// One Erlang C comparison over several `simulate --segment` results.
    PoolErlangC(pool::PoolArgs),
    /// Raw produce and consume rate of the Kafka-protocol broker with the platform's client.
    Kafka(kafka::KafkaArgs),
    /// Profile lookups per second and screen-pop latency of the CRM service.
    Crm(crm::CrmArgs),
    /// The voice benchmark's audio at both ends of every call: sends G.711 at 50 packets/s
    /// each way, counts what arrives, measures transit and its variation (voice-bench.sh).
    VoiceRtp(voice::RtpArgs),
    /// A raw UDP relay (two sockets per call, no SIP): the machine's limit for voice-rtp.
    UdpRelay(voice::RelayArgs),
    /// The voice benchmark's tenant (numbers, a queue, a fixed phone per agent) and its
    /// agents signed in.
    VoiceAgents(voice::AgentsArgs),
    /// Customer message → agent stream latency and messages per second through media's web
    /// chat and ConversationService (chat-bench.sh).
    Chat(chat::ChatArgs),
}

/// Where the services under test publish and who may call them: every subcommand's.
#[derive(Debug, Clone, clap::Args)]
pub struct StackArgs {
    #[arg(long, env = "CENTRALITA_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Topic prefix of the services under test (tenants are published there).
    #[arg(long, env = "CENTRALITA_KAFKA_TOPIC_PREFIX", default_value = "centralita.")]
    pub topic_prefix: String,
    /// Ed25519 key the services' public key verifies (tokens are minted with it).
    #[arg(long, env = "CENTRALITA_JWT_PRIVATE_KEY_FILE")]
    pub private_key_file: PathBuf,
}

#[derive(Debug, clap::Args)]
struct AcdArgs {
    /// The sessions service's gRPC endpoint.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    sessions: String,
    #[command(flatten)]
    pub stack: StackArgs,
    #[arg(long, default_value_t = 50)]
    tenants: usize,
    #[arg(long, default_value_t = 2000)]
    agents: usize,
    /// Arrival rates to step through, contacts per second.
    #[arg(long, value_delimiter = ',', default_value = "100,200")]
    rates: Vec<f64>,
    #[arg(long, default_value_t = 20)]
    step_seconds: u64,
    /// How long an agent keeps a contact before ending it.
    #[arg(long, default_value_t = 2000)]
    handle_ms: u64,
    #[arg(long, default_value_t = 25.0)]
    target_p99_ms: f64,
    /// HTTP/2 connections to spread the agent streams over.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Where to write the JSON result (stdout when absent).
    #[arg(long)]
    json: Option<PathBuf>,
    /// The services' metrics URLs (`http://127.0.0.1:<admin>/metrics`), scraped around
    /// each step for its hop-by-hop event ages.
    #[arg(long, value_delimiter = ',')]
    metrics: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Acd(args) => acd(args).await,
        Command::Reporting(args) => {
            let auth = Auth::from_file(&args.stack.private_key_file)?;
            reporting::run(args, auth).await
        }
        Command::Kafka(args) => kafka::run(args).await,
        Command::Chat(args) => chat::run(args).await,
        Command::Crm(args) => {
            let auth = Auth::from_file(&args.stack.private_key_file)?;
            crm::run(args, auth).await
        }
        Command::PoolErlangC(args) => pool::run(args),
        // Their own runtimes (one thread for the generator, the relay's workers), off this one.
        Command::VoiceRtp(args) => off_runtime(move || voice::rtp(args)),
        Command::UdpRelay(args) => off_runtime(move || voice::relay(args)),
        Command::VoiceAgents(args) => {
            let auth = Auth::from_file(&args.stack_key())?;
            voice::agents(args, auth).await
        }
        Command::Simulate(args) => {
            let auth = Auth::from_file(&args.stack.private_key_file)?;
            simulate::run(args, auth).await
        }
    }
}

/// Runs `f` on a thread of its own (it builds its own runtime) and waits for it.
fn off_runtime(f: impl FnOnce() -> anyhow::Result<()> + Send + 'static) -> anyhow::Result<()> {
    std::thread::spawn(f).join().map_err(|_| anyhow::anyhow!("the benchmark thread panicked"))?
}

fn unix_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 10 minutes, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant histogram bounds are valid")
}

/// What one rate step measured.
#[derive(Debug)]
struct Step {
    rate: f64,
    hops: Vec<hops::Hop>,
    enqueue_to_offer: Histogram<u64>,
    create_call: Histogram<u64>,
    created: u64,
    offered: u64,
    errors: BTreeMap<String, u64>,
}

#[derive(Debug, Default)]
struct Shared {
    steps: Vec<Step>,
    offered_names: HashSet<String>,
    duplicate_offers: u64,
}

type Stats = Arc<Mutex<Shared>>;

fn lock(stats: &Stats) -> std::sync::MutexGuard<'_, Shared> {
    stats.lock().unwrap_or_else(|p| p.into_inner())
}

fn count_error(stats: &Stats, step: usize, what: &str, status: &tonic::Status) {
    let mut s = lock(stats);
    if let Some(step) = s.steps.get_mut(step) {
        *step.errors.entry(format!("{what}: {:?}", status.code())).or_default() += 1;
    }
}

struct Auth {
    signer: Signer,
}

impl Auth {
    fn from_file(path: &std::path::Path) -> anyhow::Result<Self> {
        Ok(Self { signer: Signer::from_file(path, "centralita", "centralita-api").map_err(anyhow::Error::msg)? })
    }

    fn token(&self, tenant: Option<&str>, role: Role, agent: Option<&str>) -> anyhow::Result<String> {
        let tenant = tenant.map(TenantId::parse).transpose().map_err(anyhow::Error::msg)?;
        Ok(self.signer.mint(&TokenRequest {
            subject: "loadtest".into(),
            tenant,
            roles: vec![role],
            agent_id: agent.map(Into::into),
            ttl: Duration::from_secs(6 * 3600),
        })?)
    }
}

fn req<T>(msg: T, token: &str) -> anyhow::Result<tonic::Request<T>> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert("authorization", format!("Bearer {token}").parse()?);
    Ok(r)
}

/// A load-test tenant manifest: open around the clock, quotas out of the way. `routing`
/// is the body of `spec.routing`, each line indented by four spaces.
fn tenant_yaml(id: &str, display: &str, channels: &[&str], routing: &str) -> String {
    format!(
        "apiVersion: centralita.io/v1\nkind: Tenant\nmetadata: {{ name: {id} }}\nspec:\n  displayName: {display} {id}\n  \
         channels: [{}]\n  serviceLevel: {{ targetPercent: 80, thresholdSeconds: 20 }}\n  \
         quotas: {{ maxConcurrentContacts: 1000000, apiRequestsPerSecond: 1000000 }}\n  \
         businessHours: {{ timeZone: UTC }}\n  dataRetentionDays: 30\n  recording: {{ voice: none }}\n  routing:\n{routing}\n",
        channels.join(", ")
    )
}

/// Publishes tenant manifests on the tenants topic, as the CLI and the operator do.
async fn publish_tenants(brokers: &str, topics: &Topics, manifests: &[String]) -> anyhow::Result<()> {
    ensure_topics(brokers, 1, &[TopicSpec { name: topics.tenants(), partitions: 1, compacted: true }])
        .await
        .context("the broker is not reachable")?;
    let producer = Producer::new(brokers, None)?;
    for yaml in manifests {
        for t in TenantManifest::parse_all(yaml, chrono::Utc::now())? {
            producer
                .publish(&topics.tenants(), t.id.as_str(), &Event::new(t.id.clone(), &tpb::Tenant::from(&t)))
                .await?;
        }
    }
    Ok(())
}

async fn acd(args: AcdArgs) -> anyhow::Result<()> {
    if args.rates.is_empty() || args.rates.iter().any(|r| !(r.is_finite() && *r > 0.0 && *r <= 100_000.0)) {
        bail!("--rates must be positive numbers up to 100000");
    }
    if args.tenants == 0 || args.agents < args.tenants || args.connections == 0 {
        bail!("need at least one tenant, one agent per tenant and one connection");
    }
    let auth = Auth::from_file(&args.stack.private_key_file)?;
    let run = &uuid::Uuid::now_v7().simple().to_string()[24..];
    let tenants: Vec<String> = (0..args.tenants).map(|i| format!("lt{run}-{i:02}")).collect();

    let mut channels = Vec::new();
    for _ in 0..args.connections {
        let endpoint = Endpoint::from_shared(args.sessions.clone())?.connect_timeout(Duration::from_secs(3));
        channels.push(
            endpoint
                .connect()
                .await
                .with_context(|| format!("the sessions service at {} is not reachable", args.sessions))?,
        );
    }
    let admin = auth.token(None, Role::BpoAdmin, None)?;

    // Tenants, through the tenants topic as the CLI and the operator publish them.
    let topics = Topics::new(args.stack.topic_prefix.clone());
    let routing = "    dispositionCodes: [resolved]\n    queues:\n      - { id: support, offerTimeoutSeconds: 30, afterContactWorkSeconds: 60 }";
    let manifests: Vec<String> =
        tenants.iter().map(|id| tenant_yaml(id, "Load test", &["voice", "chat"], routing)).collect();
    publish_tenants(&args.stack.brokers, &topics, &manifests).await?;
    let mut tenancy = tpb::tenant_service_client::TenantServiceClient::new(channels[0].clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in &tenants {
        while tenancy.get_tenant(req(tpb::GetTenantRequest { name: format!("tenants/{id}") }, &admin)?).await.is_err() {
            if Instant::now() > deadline {
                bail!("sessions did not see tenant {id} within 60 s (is it consuming {}?)", topics.tenants());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    eprintln!("[acd] {} tenants published and seen by sessions", tenants.len());

    // Agents: home tenant i % T, every tenth shared with the next tenant.
    let stats: Stats = Arc::default();
    let mut setup = tokio::task::JoinSet::new();
    let started = Instant::now();
    for i in 0..args.agents {
        let id = format!("lt{run}-a{i}");
        let mut queues =
            vec![pb::QueueAssignment { tenant: tenants[i % tenants.len()].clone(), queue: "support".into() }];
        if i % 10 == 0 && tenants.len() > 1 {
            queues.push(pb::QueueAssignment {
                tenant: tenants[(i + 1) % tenants.len()].clone(),
                queue: "support".into(),
            });
        }
        let agent = pb::Agent {
            name: format!("agents/{id}"),
            display_name: id.clone(),
            queues,
            capacity: vec![
                pb::ChannelCapacity { channel: tpb::Channel::Chat as i32, max_contacts: 2, exclusive: false },
                pb::ChannelCapacity { channel: tpb::Channel::Voice as i32, max_contacts: 1, exclusive: true },
            ],
            ..Default::default()
        };
        let channel = channels[i % channels.len()].clone();
        let (admin, token) = (admin.clone(), auth.token(None, Role::Agent, Some(&id))?);
        let (stats, handle) = (stats.clone(), Duration::from_millis(args.handle_ms));
        setup.spawn(async move {
            let mut agents = AgentServiceClient::new(channel.clone());
            agents.upsert_agent(req(pb::UpsertAgentRequest { agent: Some(agent) }, &admin)?).await?;
            agents.sign_in(req(pb::SignInRequest { name: format!("agents/{id}"), available: true }, &token)?).await?;
            let stream = agents
                .stream_agent_events(req(pb::StreamAgentEventsRequest { name: format!("agents/{id}") }, &token)?)
                .await?
                .into_inner();
            tokio::spawn(agent_loop(stream, ContactServiceClient::new(channel), token, stats, handle));
            anyhow::Ok(())
        });
        if setup.len() >= 64 {
            if let Some(r) = setup.join_next().await {
                r??;
            }
        }
    }
    while let Some(r) = setup.join_next().await {
        r??;
    }
    eprintln!("[acd] {} agents signed in with open streams in {:.1} s", args.agents, started.elapsed().as_secs_f64());

    let channel_tokens: Vec<String> =
        tenants.iter().map(|t| auth.token(Some(t), Role::Channel, None)).collect::<anyhow::Result<_>>()?;
    for (step, &rate) in args.rates.iter().enumerate() {
        let ages_before = hops::scrape(&args.metrics).await?;
        lock(&stats).steps.push(Step {
            rate,
            hops: Vec::new(),
            enqueue_to_offer: histogram(),
            create_call: histogram(),
            created: 0,
            offered: 0,
            errors: BTreeMap::new(),
        });
        eprintln!("[acd] step {}: {rate} contacts/s for {} s", step + 1, args.step_seconds);
        let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let end = Instant::now() + Duration::from_secs(args.step_seconds);
        let mut n: u64 = 0;
        let mut inflight = tokio::task::JoinSet::new();
        while Instant::now() < end {
            ticker.tick().await;
            n += 1;
            let t = (n as usize) % tenants.len();
            let mut client = ContactServiceClient::new(channels[(n as usize) % channels.len()].clone());
            let token = channel_tokens[t].clone();
            let stats = stats.clone();
            let channel = if n % 10 < 3 { tpb::Channel::Voice } else { tpb::Channel::Chat };
            inflight.spawn(async move {
                let t0 = unix_micros();
                let contact = pb::Contact {
                    channel: channel as i32,
                    queue: "support".into(),
                    attributes: [("t0".to_owned(), t0.to_string()), ("step".to_owned(), step.to_string())].into(),
                    ..Default::default()
                };
                let sent = Instant::now();
                let r = req(pb::CreateContactRequest { contact: Some(contact), request_id: String::new() }, &token)
                    .map_err(|e| tonic::Status::internal(e.to_string()));
                let result = match r {
                    Ok(r) => client.create_contact(r).await,
                    Err(status) => Err(status),
                };
                let took = sent.elapsed().as_micros() as u64;
                match result {
                    Ok(_) => {
                        let mut s = lock(&stats);
                        if let Some(st) = s.steps.get_mut(step) {
                            st.created += 1;
                            let _ = st.create_call.record(took.max(1));
                        }
                    }
                    Err(status) => count_error(&stats, step, "CreateContact", &status),
                }
            });
            while let Some(r) = inflight.try_join_next() {
                r?;
            }
        }
        while let Some(r) = inflight.join_next().await {
            r?;
        }
        // Let the last offers of the step arrive.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let step_hops = hops::between(&ages_before, &hops::scrape(&args.metrics).await?, &args.stack.topic_prefix);
        lock(&stats).steps[step].hops = step_hops;
        print_step(&lock(&stats).steps[step], args.step_seconds);
    }

    let s = lock(&stats);
    let ok = |st: &Step| {
        st.errors.is_empty()
            && st.offered == st.created
            && st.enqueue_to_offer.value_at_quantile(0.99) as f64 / 1000.0 <= args.target_p99_ms
    };
    let knee = s
        .steps
        .iter()
        .filter(|st| ok(st))
        .map(|st| st.rate)
        .fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r))));
    let result = serde_json::json!({
        "benchmark": "acd enqueue→offer",
        "tenants": args.tenants,
        "agents": args.agents,
        "handle_ms": args.handle_ms,
        "step_seconds": args.step_seconds,
        "target_p99_ms": args.target_p99_ms,
        "knee_contacts_per_second": knee,
        "duplicate_offers": s.duplicate_offers,
        "steps": s.steps.iter().map(|st| serde_json::json!({
            "rate": st.rate,
            "created": st.created,
            "offered": st.offered,
            "achieved_per_second": st.created as f64 / args.step_seconds as f64,
            "enqueue_to_offer_ms": quantiles(&st.enqueue_to_offer),
            "create_call_ms": quantiles(&st.create_call),
            "event_age_by_hop": st.hops,
            "errors": st.errors,
            "within_target": ok(st),
        })).collect::<Vec<_>>(),
    });
    match knee {
        Some(k) => {
            eprintln!("[acd] knee: {k} contacts/s (p99 ≤ {} ms, no errors, every contact offered)", args.target_p99_ms)
        }
        None => eprintln!(
            "[acd] no step met the target (p99 ≤ {} ms, no errors, every contact offered)",
            args.target_p99_ms
        ),
    }
    let text = serde_json::to_string_pretty(&result)?;
    match &args.json {
        Some(path) => std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?,
        None => println!("{text}"),
    }
    if s.duplicate_offers > 0 {
        bail!("{} contacts were offered twice", s.duplicate_offers);
    }
    Ok(())
}

fn quantiles(h: &Histogram<u64>) -> serde_json::Value {
    let ms = |q: f64| (h.value_at_quantile(q) as f64 / 10.0).round() / 100.0;
    serde_json::json!({
        "count": h.len(),
        "p50": ms(0.5),
        "p90": ms(0.9),
        "p99": ms(0.99),
        "p99_9": ms(0.999),
        "max": (h.max() as f64 / 10.0).round() / 100.0,
    })
}

fn print_step(st: &Step, seconds: u64) {
    let q = |h: &Histogram<u64>, p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    eprintln!(
        "[acd]   {:>7.1}/s offered, {:>7.1}/s created, {} offered of {} created; enqueue→offer ms p50 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}; create call p99 {:.2} ms; errors {:?}",
        st.rate,
        st.created as f64 / seconds as f64,
        st.offered,
        st.created,
        q(&st.enqueue_to_offer, 0.5),
        q(&st.enqueue_to_offer, 0.99),
        q(&st.enqueue_to_offer, 0.999),
        st.enqueue_to_offer.max() as f64 / 1000.0,
        q(&st.create_call, 0.99),
        st.errors,
    );
    for h in &st.hops {
        let ms = |v: Option<f64>| v.map_or_else(|| "> 5000".to_owned(), |v| format!("{v:.1}"));
        eprintln!(
            "[acd]     {} consuming {}: {} events, age at handling p50 {} ms p99 {} ms",
            h.service,
            h.topic,
            h.events,
            ms(h.p50_ms),
            ms(h.p99_ms)
        );
    }
}

/// One agent: records each offer's enqueue→offer latency, accepts, handles, ends and wraps up.
async fn agent_loop(
    mut stream: tonic::Streaming<pb::AgentStreamEvent>,
    contacts: ContactServiceClient<Channel>,
    token: String,
    stats: Stats,
    handle: Duration,
) {
    while let Some(Ok(event)) = stream.next().await {
        let Some(pb::agent_stream_event::Event::Offer(c)) = event.event else { continue };
        let now = unix_micros();
        let t0 = c.attributes.get("t0").and_then(|v| v.parse::<u64>().ok());
        let step = c.attributes.get("step").and_then(|v| v.parse::<usize>().ok());
        {
            let mut s = lock(&stats);
            if !s.offered_names.insert(c.name.clone()) {
                s.duplicate_offers += 1;
            } else if let (Some(t0), Some(step)) = (t0, step) {
                if let Some(st) = s.steps.get_mut(step) {
                    st.offered += 1;
                    let _ = st.enqueue_to_offer.record(now.saturating_sub(t0).max(1));
                }
            }
        }
        let (mut contacts, token, stats) = (contacts.clone(), token.clone(), stats.clone());
        tokio::spawn(async move {
            let step = step.unwrap_or(usize::MAX);
            let name = c.name.clone();
            let calls: anyhow::Result<()> = async {
                let accept = pb::AcceptContactRequest { name: name.clone(), offer_id: c.offer_id.clone() };
                if let Err(s) = contacts.accept_contact(req(accept, &token)?).await {
                    count_error(&stats, step, "AcceptContact", &s);
                    return Ok(());
                }
                tokio::time::sleep(handle).await;
                if let Err(s) = contacts
                    .end_contact(req(pb::EndContactRequest { name: name.clone(), ..Default::default() }, &token)?)
                    .await
                {
                    count_error(&stats, step, "EndContact", &s);
                    return Ok(());
                }
                let wrap = pb::WrapUpContactRequest {
                    name: name.clone(),
                    disposition: "resolved".into(),
                    notes: String::new(),
                };
                if let Err(s) = contacts.wrap_up_contact(req(wrap, &token)?).await {
                    count_error(&stats, step, "WrapUpContact", &s);
                }
                Ok(())
            }
            .await;
            if let Err(e) = calls {
                eprintln!("[acd] agent call failed: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_test_tenants_are_valid_manifests() {
        let routing = "    dispositionCodes: [resolved]\n    queues:\n      - { id: support, offerTimeoutSeconds: 30 }";
        let t = TenantManifest::parse_all(
            &tenant_yaml("lt-1", "Load test", &["voice", "chat"], routing),
            chrono::Utc::now(),
        )
        .expect("valid")
        .remove(0);
        assert_eq!((t.id.as_str(), t.display_name.as_str(), t.routing.queues.len()), ("lt-1", "Load test lt-1", 1));
    }
}

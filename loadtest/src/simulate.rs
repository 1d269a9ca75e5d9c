//! `simulate`: a contact-center floor driven through the public gRPC APIs from a scenario.
//!
//! Customers arrive open-loop (Poisson per queue, the channel drawn from the queue's mix)
//! and are created with `CreateContact` by a channel token; simulated agents sign in, keep
//! their event stream open, and on each offer think, then accept (or reject, or let it ring
//! out), handle for a drawn time, end, do their after-contact work and wrap up. Customers
//! with patience hang up if still queued. Tenants are published on the tenants topic the
//! way the CLI and the operator publish them (setup only).
//!
//! Measured: enqueue→offer and every API call (HDR histograms), throughput achieved vs
//! offered, errors by RPC and status; service level, ASA and occupancy per queue (in
//! simulated time); a conservation check (every created contact ends in a terminal state,
//! no contact accepted twice, no agent ever above its capacity); and, with `erlangC`, the
//! same figures read back from the reporting service next to Erlang C.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use centralita_platform::auth::Role;
use centralita_platform::bus::Topics;
use centralita_proto::reporting::v1 as rpb;
use centralita_proto::sessions::v1 as pb;
use centralita_proto::tenancy::v1 as tpb;
use hdrhistogram::Histogram;
use pb::agent_service_client::AgentServiceClient;
use pb::contact_service_client::ContactServiceClient;
use rpb::reporting_service_client::ReportingServiceClient;
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint};

use crate::pool::{replica_intervals, Replica};
use crate::scenario::{self, Distribution, Scenario, Shape};
use crate::{histogram, publish_tenants, quantiles, req, tenant_yaml, unix_micros, Auth};

#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// The scenario file (see loadtest/scenarios/).
    #[arg(long)]
    scenario: PathBuf,
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    sessions: String,
    #[arg(long, default_value = "http://127.0.0.1:50056")]
    reporting: String,
    #[command(flatten)]
    pub stack: crate::StackArgs,
    /// Where to write the JSON result (stdout when absent).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 5)]
    progress_seconds: u64,
    /// This run is one segment of a pooled Erlang C comparison (`pool-erlang-c` judges the
    /// service level and ASA over all segments); every other check still applies.
    #[arg(long)]
    segment: bool,
    /// Overrides the scenario's seed (segments of a pooled run need different draws).
    #[arg(long)]
    seed: Option<u64>,
}

/// A small deterministic generator (xorshift64*), so a seed reproduces a run's draws.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        ((x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64) / ((1u64 << 53) as f64)
    }

    fn exp(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.next_f64()).ln()
    }

    fn draw(&mut self, d: &Distribution) -> f64 {
        match d.distribution {
            Shape::Exponential => self.exp(d.mean_seconds),
            Shape::Fixed => d.mean_seconds,
        }
    }

    fn pick<'a>(&mut self, shares: &'a BTreeMap<String, f64>) -> &'a str {
        let mut u = self.next_f64();
        for (k, v) in shares {
            if u < *v {
                return k;
            }
            u -= v;
        }
        shares.keys().next_back().map_or("voice", String::as_str)
    }
}

fn channel_of(name: &str) -> tpb::Channel {
    match name {
        "chat" => tpb::Channel::Chat,
        "sms" => tpb::Channel::Sms,
        "email" => tpb::Channel::Email,
        "social" => tpb::Channel::Social,
        "task" => tpb::Channel::Task,
        _ => tpb::Channel::Voice,
    }
}

/// What the simulator knows of one contact (real instants).
#[derive(Debug, Clone)]
struct ContactRec {
    tenant: String,
    queue: String,
    created: Instant,
    step: usize,
    offered: Option<Instant>,
    accepted: Option<Instant>,
    /// When the offer that was accepted reached the agent: the end of the customer's wait
    /// (plus the agent's simulated think time). The accept call's own latency is left out:
    /// at time scale 15 each real millisecond would count as 15 simulated ones.
    answered_offer: Option<Instant>,
    think_sim: f64,
    handle_sim: f64,
    accepts: u32,
    abandoned: bool,
}

impl ContactRec {
    fn new(tenant: String, queue: String, created: Instant, step: usize) -> Self {
        Self {
            tenant,
            queue,
            created,
            step,
            offered: None,
            accepted: None,
            answered_offer: None,
            think_sim: 0.0,
            handle_sim: 0.0,
            accepts: 0,
            abandoned: false,
        }
    }

    /// Wait until answered, simulated seconds.
    fn wait_sim(&self, scale: f64) -> Option<f64> {
        self.answered_offer.map(|o| o.saturating_duration_since(self.created).as_secs_f64() * scale + self.think_sim)
    }
}

#[derive(Debug, Default)]
struct StepStats {
    multiplier: f64,
    offered_rate: f64,
    started: Option<Instant>,
    ended: Option<Instant>,
    created: u64,
    enqueue_to_offer: Option<Histogram<u64>>,
    errors: BTreeMap<String, u64>,
}

#[derive(Debug, Default)]
struct State {
    contacts: HashMap<String, ContactRec>,
    /// Per agent: (channel → held now), and busy intervals (real).
    held: HashMap<String, BTreeMap<String, u32>>,
    busy_since: HashMap<String, Instant>,
    busy: HashMap<String, Vec<(Instant, Instant)>>,
    away: HashMap<String, Vec<(Instant, Instant)>>,
    capacity_violations: Vec<String>,
    calls: BTreeMap<&'static str, Option<Histogram<u64>>>,
    errors: BTreeMap<String, u64>,
    steps: Vec<StepStats>,
    step: usize,
    offers: u64,
    rejects: u64,
    /// Agent calls refused because the customer's side overtook them (hung up, offer
    /// expired): no error, a race a real agent meets too.
    offers_gone: u64,
    ignored: u64,
}

type Shared = Arc<Mutex<State>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

fn record_call(s: &Shared, rpc: &'static str, took: Duration, result: Result<(), &tonic::Status>) {
    let mut st = lock(s);
    let h = st.calls.entry(rpc).or_insert_with(|| Some(histogram()));
    if let Some(h) = h {
        let _ = h.record((took.as_micros() as u64).max(1));
    }
    if let Err(status) = result {
        let key = format!("{rpc}: {:?}", status.code());
        *st.errors.entry(key.clone()).or_default() += 1;
        let step = st.step;
        if let Some(step) = st.steps.get_mut(step) {
            *step.errors.entry(key).or_default() += 1;
        }
    }
}

/// Records an agent's call on an offer or contact; one the customer's side overtook (the
/// offer gone, the conversation already over: FAILED_PRECONDITION, NOT_FOUND) is counted
/// apart, not as an error. Returns whether the call succeeded.
fn answered_offer(shared: &Shared, rpc: &'static str, started: Instant, result: Result<(), tonic::Status>) -> bool {
    match result {
        Ok(()) => {
            record_call(shared, rpc, started.elapsed(), Ok(()));
            true
        }
        Err(s) if matches!(s.code(), tonic::Code::FailedPrecondition | tonic::Code::NotFound) => {
            record_call(shared, rpc, started.elapsed(), Ok(()));
            lock(shared).offers_gone += 1;
            false
        }
        Err(s) => {
            record_call(shared, rpc, started.elapsed(), Err(&s));
            false
        }
    }
}

/// Runs an RPC, timing it and counting its error.
macro_rules! call {
    ($shared:expr, $name:literal, $fut:expr) => {{
        let t = Instant::now();
        let r = $fut.await;
        record_call($shared, $name, t.elapsed(), r.as_ref().map(|_| ()));
        r
    }};
}

/// The manifest of a scenario tenant: its queues with T in real seconds.
fn scenario_tenant_yaml(id: &str, sc: &Scenario, t: &scenario::TenantSpec) -> String {
    let mut channels: Vec<&str> = t.queues.iter().flat_map(|q| q.channels.keys().map(String::as_str)).collect();
    channels.sort_unstable();
    channels.dedup();
    let queues: Vec<String> = t
        .queues
        .iter()
        .map(|q| {
            let threshold = (q.service_level_seconds / sc.time_scale).round().max(1.0) as i64;
            format!("      - {{ id: {}, serviceLevelSeconds: {threshold}, offerTimeoutSeconds: 30, afterContactWorkSeconds: 600 }}", q.id)
        })
        .collect();
    let routing =
        format!("    awayReasons: [break]\n    dispositionCodes: [resolved]\n    queues:\n{}", queues.join("\n"));
    tenant_yaml(id, "Simulation", &channels, &routing)
}

struct Setup {
    sc: Scenario,
    run: String,
    channels: Vec<Channel>,
    auth: Auth,
    shared: Shared,
    started: Instant,
    /// Set once every contact has been answered (or abandoned) after the last arrival:
    /// agents then end and wrap up at once. Nothing measured depends on handle times from
    /// then on, and the drain takes seconds instead of the longest handle time.
    hurry: tokio::sync::watch::Sender<bool>,
}

impl Setup {
    /// Sleeps `d`, or less once the drain hurries the agents.
    async fn pause(&self, d: Duration) {
        let mut hurry = self.hurry.subscribe();
        if *hurry.borrow_and_update() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(d) => {}
            _ = hurry.changed() => {}
        }
    }

    fn tenant_id(&self, stem: &str) -> String {
        format!("{stem}-{}", self.run)
    }

    fn scale(&self, simulated_seconds: f64) -> Duration {
        Duration::from_secs_f64((simulated_seconds / self.sc.time_scale).max(0.0))
    }
}

pub async fn run(args: SimulateArgs, auth: Auth) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(&args.scenario).with_context(|| format!("reading {}", args.scenario.display()))?;
    let mut sc =
        scenario::parse(&text).map_err(|e| anyhow::anyhow!("scenario {} is invalid:\n{e}", args.scenario.display()))?;
    if let Some(seed) = args.seed {
        sc.seed = seed;
    }
    let mut channels = Vec::new();
    for _ in 0..8 {
        let endpoint = Endpoint::from_shared(args.sessions.clone())?.connect_timeout(Duration::from_secs(3));
        channels.push(endpoint.connect().await.with_context(|| {
            format!(
                "the sessions service at {} is not reachable (is the platform up? deploy/local/run.sh)",
                args.sessions
            )
        })?);
    }
    let reporting = Endpoint::from_shared(args.reporting.clone())?
        .connect_timeout(Duration::from_secs(3))
        .connect()
        .await
        .with_context(|| format!("the reporting service at {} is not reachable", args.reporting))?;
    let run = uuid::Uuid::now_v7().simple().to_string()[24..].to_owned();
    let setup = Arc::new(Setup {
        sc,
        run,
        channels,
        auth,
        shared: Arc::default(),
        started: Instant::now(),
        hurry: tokio::sync::watch::Sender::new(false),
    });
    let sc = &setup.sc;
    eprintln!("[sim] scenario `{}` ({}): time scale {}x, run {}", sc.name, sc.description, sc.time_scale, setup.run);

    // Tenants, through the tenants topic (as the CLI and the operator publish them).
    let topics = Topics::new(args.stack.topic_prefix.clone());
    let manifests: Vec<String> =
        sc.tenants.iter().map(|t| scenario_tenant_yaml(&setup.tenant_id(&t.id), sc, t)).collect();
    publish_tenants(&args.stack.brokers, &topics, &manifests).await?;
    let mut reports = ReportingServiceClient::new(reporting);
    let deadline = Instant::now() + Duration::from_secs(60);
    for t in &sc.tenants {
        let id = setup.tenant_id(&t.id);
        let sup = setup.auth.token(Some(&id), Role::Supervisor, None)?;
        let mut contacts = ContactServiceClient::new(setup.channels[0].clone());
        loop {
            let a = contacts.list_queue_stats(req(pb::ListQueueStatsRequest::default(), &sup)?).await;
            let b = reports.get_realtime_metrics(req(rpb::GetRealtimeMetricsRequest::default(), &sup)?).await;
            if a.is_ok() && b.is_ok() {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "sessions or reporting did not see tenant {id} within 60 s (are they consuming {}?)",
                    topics.tenants()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // Agents.
    let admin = setup.auth.token(None, Role::BpoAdmin, None)?;
    let mut n = 0usize;
    let mut rng = Rng(sc.seed.max(1));
    let mut agent_ids = Vec::new();
    for t in &sc.tenants {
        let tenant = setup.tenant_id(&t.id);
        for (g, group) in t.agents.iter().enumerate() {
            for i in 0..group.count {
                let id = format!("sim{}-{}-g{g}-{i}", setup.run, t.id);
                let agent = pb::Agent {
                    name: format!("agents/{id}"),
                    display_name: id.clone(),
                    queues: group
                        .queues
                        .iter()
                        .map(|q| pb::QueueAssignment { tenant: tenant.clone(), queue: q.clone() })
                        .collect(),
                    capacity: group
                        .capacity
                        .iter()
                        .map(|(c, m)| pb::ChannelCapacity {
                            channel: channel_of(c) as i32,
                            max_contacts: *m,
                            exclusive: c == "voice",
                        })
                        .collect(),
                    ..Default::default()
                };
                let channel = setup.channels[n % setup.channels.len()].clone();
                n += 1;
                let token = setup.auth.token(None, Role::Agent, Some(&id))?;
                let mut agents = AgentServiceClient::new(channel.clone());
                agents.upsert_agent(req(pb::UpsertAgentRequest { agent: Some(agent) }, &admin)?).await?;
                agents
                    .sign_in(req(pb::SignInRequest { name: format!("agents/{id}"), available: true }, &token)?)
                    .await?;
                let stream = agents
                    .stream_agent_events(req(pb::StreamAgentEventsRequest { name: format!("agents/{id}") }, &token)?)
                    .await?
                    .into_inner();
                let behaviour = group.clone();
                let agent_rng = Rng(rng.0 ^ (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                rng.next_f64();
                tokio::spawn(agent_loop(setup.clone(), id.clone(), channel, token, stream, behaviour, agent_rng));
                agent_ids.push(id);
            }
        }
    }
    eprintln!("[sim] {} agents signed in with open streams", agent_ids.len());

    // Arrivals: the plain run is one step at 1x; a ramp steps through its multipliers.
    let steps: Vec<(f64, Duration)> = match &sc.ramp {
        Some(r) => r.multipliers.iter().map(|m| (*m, Duration::from_secs_f64(r.step_seconds))).collect(),
        None => vec![(1.0, setup.scale(sc.duration_seconds))],
    };
    let base_rate: f64 =
        sc.tenants.iter().flat_map(|t| &t.queues).map(|q| q.arrivals_per_second).sum::<f64>() * sc.time_scale;
    let arrivals_started = Instant::now();
    let progress = tokio::spawn(progress_loop(setup.clone(), args.progress_seconds.max(1)));
    for (step, (multiplier, length)) in steps.iter().enumerate() {
        {
            let mut st = lock(&setup.shared);
            st.steps.push(StepStats {
                multiplier: *multiplier,
                offered_rate: base_rate * multiplier,
                started: Some(Instant::now()),
                enqueue_to_offer: Some(histogram()),
                ..StepStats::default()
            });
            st.step = step;
        }
        if sc.ramp.is_some() {
            eprintln!("[sim] ramp step {}: {:.1} contacts/s (x{multiplier})", step + 1, base_rate * multiplier);
        }
        let end = Instant::now() + *length;
        let mut queues = tokio::task::JoinSet::new();
        for (ti, t) in sc.tenants.iter().enumerate() {
            for (qi, _) in t.queues.iter().enumerate() {
                let q_rng = Rng(sc.seed.wrapping_add(1 + (ti * 1000 + qi) as u64 + step as u64 * 7919).max(1));
                queues.spawn(arrivals(setup.clone(), ti, qi, *multiplier, end, step, q_rng));
            }
        }
        while let Some(r) = queues.join_next().await {
            r??;
        }
        lock(&setup.shared).steps[step].ended = Some(Instant::now());
    }
    let arrivals_ended = Instant::now();
    eprintln!(
        "[sim] arrivals done after {:.1} s; draining",
        arrivals_ended.duration_since(arrivals_started).as_secs_f64()
    );

    // Drain: every contact answered, or abandoned; then the agents finish at once (see
    // `Setup::hurry`) and every contact is wrapped up.
    let drain_deadline = Instant::now() + Duration::from_secs_f64(sc.drain_seconds);
    loop {
        let (unanswered, busy) = {
            let st = lock(&setup.shared);
            (st.contacts.values().filter(|c| !c.abandoned && c.accepted.is_none()).count(), st.busy_since.len())
        };
        if unanswered == 0 {
            setup.hurry.send_replace(true);
        }
        if unanswered + busy == 0 || Instant::now() > drain_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Wrap-ups and hang-ups land within a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    progress.abort();

    let report = conclude(&setup, &mut reports, &agent_ids, arrivals_started, arrivals_ended, args.segment).await?;
    let text = serde_json::to_string_pretty(&report.json)?;
    match &args.json {
        Some(path) => std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?,
        None => println!("{text}"),
    }
    if !report.problems.is_empty() {
        bail!("the run found {} problem(s):\n  {}", report.problems.len(), report.problems.join("\n  "));
    }
    Ok(())
}

async fn arrivals(
    setup: Arc<Setup>,
    ti: usize,
    qi: usize,
    multiplier: f64,
    end: Instant,
    step: usize,
    mut rng: Rng,
) -> anyhow::Result<()> {
    let sc = &setup.sc;
    let t = &sc.tenants[ti];
    let q = &t.queues[qi];
    let tenant = setup.tenant_id(&t.id);
    let token = setup.auth.token(Some(&tenant), Role::Channel, None)?;
    let rate = q.arrivals_per_second * sc.time_scale * multiplier;
    let mut next = Instant::now() + Duration::from_secs_f64(rng.exp(1.0 / rate));
    let mut n = 0u64;
    while next < end {
        tokio::time::sleep_until(next.into()).await;
        n += 1;
        let channel = channel_of(rng.pick(&q.channels));
        let handle = setup.scale(rng.draw(&q.handle));
        let patience = q.patience.map(|p| setup.scale(rng.draw(&p)));
        let client = ContactServiceClient::new(setup.channels[(n as usize) % setup.channels.len()].clone());
        let (setup2, token, tenant, queue) = (setup.clone(), token.clone(), tenant.clone(), q.id.clone());
        // Customers live on their own (a patient one may outlast the arrivals).
        tokio::spawn(
            async move { customer(setup2, client, token, tenant, queue, channel, handle, patience, step).await },
        );
        next += Duration::from_secs_f64(rng.exp(1.0 / rate));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn customer(
    setup: Arc<Setup>,
    mut client: ContactServiceClient<Channel>,
    token: String,
    tenant: String,
    queue: String,
    channel: tpb::Channel,
    handle: Duration,
    patience: Option<Duration>,
    step: usize,
) {
    let shared = &setup.shared;
    let created = Instant::now();
    let contact = pb::Contact {
        channel: channel as i32,
        queue: queue.clone(),
        attributes: [
            ("t0".to_owned(), unix_micros().to_string()),
            ("handle_us".to_owned(), handle.as_micros().to_string()),
        ]
        .into(),
        ..Default::default()
    };
    let Ok(r) = req(pb::CreateContactRequest { contact: Some(contact), request_id: String::new() }, &token) else {
        return;
    };
    let Ok(c) = call!(shared, "CreateContact", client.create_contact(r)) else { return };
    let name = c.into_inner().name;
    {
        let mut st = lock(shared);
        if let Some(s) = st.steps.get_mut(step) {
            s.created += 1;
        }
        let rec = st.contacts.entry(name.clone()).or_insert_with(|| ContactRec::new(tenant, queue, created, step));
        rec.created = created;
        rec.step = step;
        rec.handle_sim = handle.as_secs_f64() * setup.sc.time_scale;
    }
    let Some(patience) = patience else { return };
    tokio::time::sleep(patience).await;
    let still_waiting = lock(shared).contacts.get(&name).is_some_and(|c| c.accepted.is_none());
    if !still_waiting {
        return;
    }
    let Ok(r) = req(pb::EndContactRequest { name: name.clone() }, &token) else { return };
    // Refused (FAILED_PRECONDITION) when an agent took it meanwhile: that is no error.
    let t = Instant::now();
    let result = client.end_contact(r).await;
    match result {
        Ok(c) => {
            record_call(shared, "EndContact (customer)", t.elapsed(), Ok(()));
            if c.into_inner().state == pb::ContactState::Abandoned as i32 {
                if let Some(rec) = lock(shared).contacts.get_mut(&name) {
                    rec.abandoned = true;
                }
            }
        }
        Err(s) if s.code() == tonic::Code::FailedPrecondition => {
            record_call(shared, "EndContact (customer)", t.elapsed(), Ok(()));
        }
        Err(s) => record_call(shared, "EndContact (customer)", t.elapsed(), Err(&s)),
    }
}

async fn agent_loop(
    setup: Arc<Setup>,
    id: String,
    channel: Channel,
    token: String,
    mut stream: tonic::Streaming<pb::AgentStreamEvent>,
    behaviour: scenario::AgentGroup,
    mut rng: Rng,
) {
    let shared = setup.shared.clone();
    let mut seen_offers: HashSet<String> = HashSet::new();
    while let Some(Ok(event)) = stream.next().await {
        match event.event {
            Some(pb::agent_stream_event::Event::Offer(c)) => {
                if !seen_offers.insert(c.offer_id.clone()) {
                    continue; // re-sent on reconnect
                }
                let now = Instant::now();
                let t0 = c.attributes.get("t0").and_then(|v| v.parse::<u64>().ok());
                let handle =
                    c.attributes.get("handle_us").and_then(|v| v.parse::<u64>().ok()).map(Duration::from_micros);
                {
                    let mut st = lock(&shared);
                    st.offers += 1;
                    let step = st.step;
                    let first = st.contacts.get(&c.name).is_none_or(|r| r.offered.is_none());
                    if first {
                        if let (Some(t0), Some(s)) = (t0, st.steps.get_mut(step)) {
                            if let Some(h) = s.enqueue_to_offer.as_mut() {
                                let _ = h.record(unix_micros().saturating_sub(t0).max(1));
                            }
                        }
                        // The offer may beat the CreateContact response: the record is made here.
                        let rec = st
                            .contacts
                            .entry(c.name.clone())
                            .or_insert_with(|| ContactRec::new(c.tenant.clone(), c.queue.clone(), now, step));
                        rec.offered = Some(now);
                    }
                }
                let u = rng.next_f64();
                let think = setup.scale(behaviour.think_seconds);
                if u < behaviour.ignore_probability {
                    lock(&shared).ignored += 1;
                    continue;
                }
                let reject = u < behaviour.ignore_probability + behaviour.reject_probability;
                let wrap = setup.scale(behaviour.wrap_up_seconds);
                let behaviour_think = behaviour.think_seconds;
                let capacity = behaviour.capacity.clone();
                let (setup, id, token, channel_name) = (
                    setup.clone(),
                    id.clone(),
                    token.clone(),
                    tpb::Channel::try_from(c.channel)
                        .map(|c| c.as_str_name().trim_start_matches("CHANNEL_").to_ascii_lowercase())
                        .unwrap_or_default(),
                );
                let client = ContactServiceClient::new(channel.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(think).await;
                    let timing =
                        Timing { offer_at: now, think_sim: behaviour_think, handle: handle.unwrap_or_default(), wrap };
                    work(setup, client, id, token, c, channel_name, capacity, reject, timing).await;
                });
            }
            // Let an offer ring out: the agent is made away (not responding); it comes back.
            Some(pb::agent_stream_event::Event::Agent(a))
                if a.state == pb::AgentState::Away as i32 && a.away_reason == "not_responding" =>
            {
                let (shared, token, name) = (shared.clone(), token.clone(), a.name.clone());
                let mut agents = AgentServiceClient::new(channel.clone());
                let id = id.clone();
                tokio::spawn(async move {
                    let since = Instant::now();
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if let Ok(r) = req(
                        pb::SetAgentStateRequest {
                            name,
                            state: pb::AgentState::Available as i32,
                            away_reason: String::new(),
                        },
                        &token,
                    ) {
                        let _ = call!(&shared, "SetAgentState", agents.set_agent_state(r));
                    }
                    lock(&shared).away.entry(id).or_default().push((since, Instant::now()));
                });
            }
            _ => {}
        }
    }
    // The stream ended or failed while the run still needed this agent: the floor is one
    // agent short from here, which the results must show.
    *lock(&shared).errors.entry("StreamAgentEvents: ended".to_owned()).or_default() += 1;
}

/// When an offer arrived and how long the agent thinks (simulated), talks and wraps up.
struct Timing {
    offer_at: Instant,
    think_sim: f64,
    handle: Duration,
    wrap: Duration,
}

#[allow(clippy::too_many_arguments)]
async fn work(
    setup: Arc<Setup>,
    mut client: ContactServiceClient<Channel>,
    id: String,
    token: String,
    c: pb::Contact,
    channel: String,
    capacity: BTreeMap<String, u32>,
    reject: bool,
    timing: Timing,
) {
    let Timing { offer_at, think_sim, handle, wrap } = timing;
    let shared = &setup.shared;
    if reject {
        if let Ok(r) = req(pb::RejectContactRequest { name: c.name.clone(), offer_id: c.offer_id.clone() }, &token) {
            let t = Instant::now();
            let result = client.reject_contact(r).await;
            answered_offer(shared, "RejectContact", t, result.map(|_| ()));
            lock(shared).rejects += 1;
        }
        return;
    }
    let Ok(r) = req(pb::AcceptContactRequest { name: c.name.clone(), offer_id: c.offer_id.clone() }, &token) else {
        return;
    };
    let t = Instant::now();
    let result = client.accept_contact(r).await;
    if !answered_offer(shared, "AcceptContact", t, result.map(|_| ())) {
        return;
    }
    let now = Instant::now();
    {
        let mut st = lock(shared);
        if let Some(rec) = st.contacts.get_mut(&c.name) {
            rec.accepted.get_or_insert(now);
            rec.answered_offer.get_or_insert(offer_at);
            rec.think_sim = think_sim;
            rec.accepts += 1;
        }
        let held = st.held.entry(id.clone()).or_default();
        *held.entry(channel.clone()).or_default() += 1;
        let total: u32 = held.values().sum();
        let over_channel = held.get(&channel).copied().unwrap_or(0) > capacity.get(&channel).copied().unwrap_or(0);
        let voice_not_alone = held.get("voice").copied().unwrap_or(0) > 0 && total > 1;
        if over_channel || voice_not_alone {
            let v = format!("agent {id} held {held:?} (capacity {capacity:?})");
            st.capacity_violations.push(v);
        }
        st.busy_since.entry(id.clone()).or_insert(now);
    }
    setup.pause(handle).await;
    if let Ok(r) = req(pb::EndContactRequest { name: c.name.clone() }, &token) {
        // Refused only when the customer hung up first (the conversation is over already).
        let t = Instant::now();
        let result = client.end_contact(r).await;
        answered_offer(shared, "EndContact", t, result.map(|_| ()));
    }
    setup.pause(wrap).await;
    // The capacity is counted free from the moment the wrap-up is sent: the platform frees it
    // when it processes the call and may offer the next contact before our response arrives.
    // An offer that came before this point and overlapped would still count as a violation.
    {
        let mut st = lock(shared);
        let released = Instant::now();
        let idle = {
            let held = st.held.entry(id.clone()).or_default();
            if let Some(n) = held.get_mut(&channel) {
                *n = n.saturating_sub(1);
            }
            held.values().all(|n| *n == 0)
        };
        if idle {
            if let Some(since) = st.busy_since.remove(&id) {
                st.busy.entry(id).or_default().push((since, released));
            }
        }
    }
    let wrap_up =
        pb::WrapUpContactRequest { name: c.name.clone(), disposition: "resolved".into(), notes: String::new() };
    if let Ok(r) = req(wrap_up, &token) {
        let t = Instant::now();
        let result = client.wrap_up_contact(r).await;
        answered_offer(shared, "WrapUpContact", t, result.map(|_| ()));
    }
}

async fn progress_loop(setup: Arc<Setup>, every: u64) {
    let mut tick = tokio::time::interval(Duration::from_secs(every));
    tick.tick().await;
    loop {
        tick.tick().await;
        let st = lock(&setup.shared);
        let created = st.contacts.len();
        let answered = st.contacts.values().filter(|c| c.accepted.is_some()).count();
        let abandoned = st.contacts.values().filter(|c| c.abandoned).count();
        let waiting = created - answered - abandoned;
        let errors: u64 = st.errors.values().sum();
        eprintln!(
            "[sim] {:>6.0} s real ({:>7.0} s simulated): {created} created, {answered} answered, {abandoned} abandoned, {waiting} waiting, {} busy agents, {errors} errors",
            setup.started.elapsed().as_secs_f64(),
            setup.started.elapsed().as_secs_f64() * setup.sc.time_scale,
            st.busy_since.len()
        );
    }
}

struct Report {
    json: serde_json::Value,
    problems: Vec<String>,
}

/// Mean and 95 % half-width by batch means over consecutive batches (autocorrelation-safe
/// where a plain binomial interval would be too narrow).
fn batch_means(values: &[f64], batches: usize) -> Option<(f64, f64)> {
    if values.len() < batches * 5 || batches < 2 {
        return None;
    }
    let size = values.len() / batches;
    let means: Vec<f64> =
        (0..batches).map(|b| values[b * size..(b + 1) * size].iter().sum::<f64>() / size as f64).collect();
    let mean = means.iter().sum::<f64>() / batches as f64;
    let var = means.iter().map(|m| (m - mean).powi(2)).sum::<f64>() / (batches - 1) as f64;
    // Student t, 97.5 % quantile, for batches - 1 degrees of freedom (10 batches: 2.262).
    let t = match batches - 1 {
        1 => 12.706,
        2..=4 => 2.776,
        5..=9 => 2.262,
        _ => 2.0,
    };
    Some((mean, t * (var / batches as f64).sqrt()))
}

async fn conclude(
    setup: &Arc<Setup>,
    reports: &mut ReportingServiceClient<Channel>,
    agent_ids: &[String],
    arrivals_started: Instant,
    arrivals_ended: Instant,
    segment: bool,
) -> anyhow::Result<Report> {
    let sc = &setup.sc;
    let mut problems = Vec::new();

    // Conservation: every created contact is in a terminal state (read back with GetContact).
    let names: Vec<(String, String)> =
        lock(&setup.shared).contacts.iter().map(|(n, c)| (n.clone(), c.tenant.clone())).collect();
    let mut states: BTreeMap<String, u64> = BTreeMap::new();
    let mut stuck = Vec::new();
    let mut checks = tokio::task::JoinSet::new();
    for (i, (name, tenant)) in names.into_iter().enumerate() {
        let mut client = ContactServiceClient::new(setup.channels[i % setup.channels.len()].clone());
        let token = setup.auth.token(Some(&tenant), Role::Supervisor, None)?;
        checks.spawn(async move {
            let r = client.get_contact(req(pb::GetContactRequest { name: name.clone() }, &token)?).await;
            anyhow::Ok((name, r.map(|c| c.into_inner().state)))
        });
        if checks.len() >= 64 {
            if let Some(r) = checks.join_next().await {
                let (name, state) = r??;
                tally(&mut states, &mut stuck, name, state);
            }
        }
    }
    while let Some(r) = checks.join_next().await {
        let (name, state) = r??;
        tally(&mut states, &mut stuck, name, state);
    }
    // The floor is quiet now: take the state (anything still running writes to a fresh one).
    let st = std::mem::take(&mut *lock(&setup.shared));
    if !stuck.is_empty() {
        problems.push(format!(
            "{} contacts not in a terminal state after the drain: {}",
            stuck.len(),
            stuck.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    let twice: Vec<&String> = st.contacts.iter().filter(|(_, c)| c.accepts > 1).map(|(n, _)| n).collect();
    if !twice.is_empty() {
        problems.push(format!("{} contacts accepted more than once", twice.len()));
    }
    if !st.capacity_violations.is_empty() {
        problems.push(format!(
            "agents above capacity {} times, e.g. {}",
            st.capacity_violations.len(),
            st.capacity_violations[0]
        ));
    }

    // Queue figures from the simulator, in simulated time, over contacts that arrived
    // after the warm-up and before arrivals stopped.
    let scale = sc.time_scale;
    let warm = arrivals_started + Duration::from_secs_f64(sc.warmup_seconds / scale);
    let mut per_queue = serde_json::Map::new();
    let mut erlang = serde_json::Value::Null;
    // Replicas of a tenant are measured together.
    for t in sc.tenants.iter().filter(|t| t.id == t.group) {
        let members: Vec<&scenario::TenantSpec> = sc.tenants.iter().filter(|m| m.group == t.group).collect();
        let tenants: HashSet<String> = members.iter().map(|m| setup.tenant_id(&m.id)).collect();
        let replicas = members.len();
        for q in &t.queues {
            let mine: Vec<&ContactRec> = st
                .contacts
                .values()
                .filter(|c| {
                    tenants.contains(&c.tenant) && c.queue == q.id && c.created >= warm && c.created < arrivals_ended
                })
                .collect();
            let mut ordered: Vec<&ContactRec> = mine.iter().copied().filter(|c| c.accepted.is_some()).collect();
            ordered.sort_by_key(|c| c.created);
            let waits: Vec<f64> = ordered.iter().filter_map(|c| c.wait_sim(scale)).collect();
            let within: Vec<f64> = waits.iter().map(|w| f64::from(u8::from(*w <= q.service_level_seconds))).collect();
            let answered = waits.len();
            let abandoned = mine.iter().filter(|c| c.abandoned).count();
            let sl = (answered > 0).then(|| 100.0 * within.iter().sum::<f64>() / answered as f64);
            let asa = (answered > 0).then(|| waits.iter().sum::<f64>() / answered as f64);
            // 95 % intervals: from the replicas' means when there are replicas (independent
            // by construction), else by batch means over time.
            // Each replica's sums over the measured window: the intervals below, and the
            // record that lets segments run on fresh brokers be pooled (`pool-erlang-c`).
            let replica_sums: Vec<Replica> = tenants
                .iter()
                .map(|tid| {
                    let arrived: Vec<&ContactRec> = mine.iter().copied().filter(|c| &c.tenant == tid).collect();
                    let waits: Vec<f64> = arrived.iter().filter_map(|c| c.wait_sim(scale)).collect();
                    Replica {
                        arrived: arrived.len() as u64,
                        answered: waits.len() as u64,
                        answered_within_threshold: waits.iter().filter(|w| **w <= q.service_level_seconds).count()
                            as u64,
                        wait_seconds_sum: waits.iter().sum(),
                        handle_seconds_sum: arrived.iter().map(|c| c.handle_sim).sum(),
                    }
                })
                .collect();
            let (sl_ci, asa_ci) = if replicas >= 2 {
                replica_intervals(&replica_sums)
            } else {
                (batch_means(&within, 10).map(|(_, h)| 100.0 * h), batch_means(&waits, 10).map(|(_, h)| h))
            };
            let key = format!("{}/{}", t.group, q.id);
            let n_agents = scenario::agents_on(t, &q.id);
            // Occupancy of the agents serving this queue over the measured window.
            let window = (warm, arrivals_ended);
            let prefixes: Vec<String> = members.iter().map(|m| format!("sim{}-{}-", setup.run, m.id)).collect();
            let ids: Vec<&String> =
                agent_ids.iter().filter(|a| prefixes.iter().any(|p| a.starts_with(p.as_str()))).collect();
            let overlap = |(a, b): (Instant, Instant)| {
                let s = a.max(window.0);
                let e = b.min(window.1);
                e.checked_duration_since(s).unwrap_or_default().as_secs_f64()
            };
            let busy: f64 =
                ids.iter().flat_map(|a| st.busy.get(*a).into_iter().flatten()).map(|iv| overlap(*iv)).sum::<f64>()
                    + ids.iter().filter_map(|a| st.busy_since.get(*a)).map(|s| overlap((*s, window.1))).sum::<f64>();
            let away: f64 = ids.iter().flat_map(|a| st.away.get(*a).into_iter().flatten()).map(|iv| overlap(*iv)).sum();
            let span = window.1.checked_duration_since(window.0).unwrap_or_default().as_secs_f64();
            let available = ids.len() as f64 * span - away;
            let occupancy = (available > 0.0).then(|| 100.0 * busy / available);
            per_queue.insert(
                key.clone(),
                serde_json::json!({
                    "arrived": mine.len(), "answered": answered, "abandoned": abandoned,
                    "service_level_percent": sl, "service_level_ci95_points": sl_ci,
                    "asa_seconds": asa, "asa_ci95_seconds": asa_ci,
                    "occupancy_percent": occupancy, "agents": n_agents, "replicas": replicas,
                }),
            );
            if let Some(check) = sc.erlang_c.as_ref().filter(|e| e.tenant == t.group && e.queue == q.id) {
                let expected = centralita_reporting_erlang(
                    q.arrivals_per_second,
                    q.handle.mean_seconds,
                    q.service_level_seconds,
                    n_agents,
                );
                // Erlang C at the load this run actually drew (arrivals counted, handle times
                // averaged over the measured window): the Poisson count and the drawn handle
                // times vary from run to run, and that variation is not the platform's.
                let window_sim = span * scale;
                let lambda_hat = mine.len() as f64 / (replicas as f64 * window_sim).max(f64::MIN_POSITIVE);
                let aht_hat = mine.iter().map(|c| c.handle_sim).sum::<f64>() / mine.len().max(1) as f64;
                let realized = centralita_reporting_erlang(lambda_hat, aht_hat, q.service_level_seconds, n_agents);
                // The reporting service's figures for the same tenants (all contacts of the run).
                let ts = |i: Instant| {
                    let ago = Instant::now().duration_since(i).as_secs() as i64;
                    Some(prost_types::Timestamp { seconds: chrono::Utc::now().timestamp() - ago, nanos: 0 })
                };
                let query = rpb::QueryHistoryRequest {
                    tenant: String::new(),
                    start_time: ts(arrivals_started).map(|mut t| {
                        t.seconds -= 60;
                        t
                    }),
                    end_time: ts(Instant::now()).map(|mut t| {
                        t.seconds += 60;
                        t
                    }),
                    granularity: rpb::Granularity::Month as i32,
                    group_by: vec![rpb::Dimension::Queue as i32],
                    queue: q.id.clone(),
                    service_level_definition: "answered".into(),
                };
                let (mut rep_answered, mut rep_within, mut rep_wait) = (0u64, 0u64, 0.0f64);
                let (mut handling, mut idle, mut handling_window, mut idle_window) = (0i64, 0i64, 0i64, 0i64);
                for tenant in &tenants {
                    let sup = setup.auth.token(Some(tenant), Role::Supervisor, None)?;
                    let mut query = query.clone();
                    for _ in 0..60 {
                        let h = reports.query_history(req(query.clone(), &sup)?).await?.into_inner();
                        let f =
                            h.rows.iter().filter_map(|r| r.figures.as_ref()).fold((0u64, 0u64, 0.0f64), |acc, f| {
                                (
                                    acc.0 + f.answered,
                                    acc.1 + f.answered_within_threshold,
                                    acc.2 + f.asa_seconds.unwrap_or(0.0) * f.answered as f64,
                                )
                            });
                        let expected_answered = st
                            .contacts
                            .values()
                            .filter(|c| &c.tenant == tenant && c.queue == q.id && c.accepted.is_some())
                            .count();
                        if f.0 as usize >= expected_answered {
                            rep_answered += f.0;
                            rep_within += f.1;
                            rep_wait += f.2;
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    query.group_by = vec![rpb::Dimension::Agent as i32];
                    query.queue.clear();
                    let h = reports.query_history(req(query.clone(), &sup)?).await?.into_inner();
                    for t in h.rows.iter().filter_map(|r| r.agent_time) {
                        handling += t.handling_ms;
                        idle += t.idle_ms;
                    }
                    // The same agents over the simulator's measured window (after warm-up,
                    // until the last arrival), which the reporting service clips spans to.
                    query.start_time = ts(window.0);
                    query.end_time = ts(window.1);
                    let h = reports.query_history(req(query, &sup)?).await?.into_inner();
                    for t in h.rows.iter().filter_map(|r| r.agent_time) {
                        handling_window += t.handling_ms;
                        idle_window += t.idle_ms;
                    }
                }
                let rep_sl = (rep_answered > 0).then(|| 100.0 * rep_within as f64 / rep_answered as f64);
                let rep_asa = (rep_answered > 0).then(|| rep_wait / rep_answered as f64 * scale);
                let occupancy_of = |handling: i64, idle: i64| {
                    (handling + idle > 0).then(|| 100.0 * handling as f64 / (handling + idle) as f64)
                };
                let rep_occ = occupancy_of(handling, idle);
                let rep_occ_window = occupancy_of(handling_window, idle_window);
                if let (Some(r), Some(o)) = (rep_occ_window, occupancy) {
                    if (r - o).abs() > check.service_level_points {
                        problems.push(format!(
                            "{key}: reporting says occupancy {r:.1} % over the measured window; the simulator {o:.1} %"
                        ));
                    }
                }
                let sim_answered_all = st
                    .contacts
                    .values()
                    .filter(|c| tenants.contains(&c.tenant) && c.queue == q.id && c.accepted.is_some())
                    .count();
                let sim_all: Vec<f64> = st
                    .contacts
                    .values()
                    .filter(|c| tenants.contains(&c.tenant) && c.queue == q.id)
                    .filter_map(|c| c.wait_sim(scale))
                    .collect();
                let sim_sl_all = 100.0 * sim_all.iter().filter(|w| **w <= q.service_level_seconds).count() as f64
                    / sim_all.len().max(1) as f64;
                let sim_asa_all = sim_all.iter().sum::<f64>() / sim_all.len().max(1) as f64;
                let sl_ok = sl.is_some_and(|v| (v - realized.1).abs() <= check.service_level_points);
                let asa_ok = asa.is_some_and(|v| (v - realized.2).abs() <= realized.2 * check.asa_percent / 100.0);
                if segment {
                    eprintln!("[sim] a segment: the Erlang C verdict is left to pool-erlang-c");
                }
                if !sl_ok && !segment {
                    problems.push(format!(
                        "{key}: service level {:.1} % is not within {} points of Erlang C's {:.1} % at the drawn load",
                        sl.unwrap_or(f64::NAN),
                        check.service_level_points,
                        realized.1
                    ));
                }
                if !asa_ok && !segment {
                    problems.push(format!(
                        "{key}: ASA {:.2} s is not within {} % of Erlang C's {:.2} s at the drawn load",
                        asa.unwrap_or(f64::NAN),
                        check.asa_percent,
                        realized.2
                    ));
                }
                let rep_sl_ok = rep_sl.is_some_and(|v| (v - sim_sl_all).abs() <= check.service_level_points);
                if !rep_sl_ok || rep_answered as usize != sim_answered_all {
                    problems.push(format!(
                        "{key}: reporting says {rep_answered} answered, SL {:.1} %; the simulator {sim_answered_all} answered, SL {sim_sl_all:.1} %",
                        rep_sl.unwrap_or(f64::NAN)
                    ));
                }
                erlang = serde_json::json!({
                    "queue": key, "agents": n_agents, "replicas": replicas,
                    "load_erlangs": q.arrivals_per_second * q.handle.mean_seconds,
                    "erlang_c": { "service_level_percent": expected.1, "asa_seconds": expected.2, "occupancy_percent": expected.3, "p_wait": expected.0 },
                    "erlang_c_at_drawn_load": { "arrivals_per_second": lambda_hat, "aht_seconds": aht_hat, "load_erlangs": lambda_hat * aht_hat,
                        "service_level_percent": realized.1, "asa_seconds": realized.2, "occupancy_percent": realized.3 },
                    "simulator_steady_state": { "contacts": answered, "service_level_percent": sl, "service_level_ci95_points": sl_ci, "asa_seconds": asa, "asa_ci95_seconds": asa_ci, "occupancy_percent": occupancy },
                    "simulator_all_contacts": { "contacts": sim_answered_all, "service_level_percent": sim_sl_all, "asa_seconds": sim_asa_all },
                    "reporting_service_all_contacts": { "contacts": rep_answered, "service_level_percent": rep_sl, "asa_seconds": rep_asa, "occupancy_percent": rep_occ },
                    "reporting_service_measured_window": { "occupancy_percent": rep_occ_window },
                    "within_tolerance": sl_ok && asa_ok,
                    "segment": {
                        "window_simulated_seconds": window_sim,
                        "service_level_seconds": q.service_level_seconds,
                        "tolerance": { "service_level_points": check.service_level_points, "asa_percent": check.asa_percent },
                        "replica_figures": replica_sums,
                    },
                });
                eprintln!(
                    "[sim] Erlang C {key} (N = {n_agents}, A = {:.1}): SL {:.1} % / ASA {:.2} s / occupancy {:.1} %",
                    q.arrivals_per_second * q.handle.mean_seconds,
                    expected.1,
                    expected.2,
                    expected.3
                );
                eprintln!(
                    "[sim] Erlang C at the drawn load (λ {lambda_hat:.4}/s, AHT {aht_hat:.1} s, A = {:.2}): SL {:.1} % / ASA {:.2} s / occupancy {:.1} %",
                    lambda_hat * aht_hat, realized.1, realized.2, realized.3
                );
                eprintln!(
                    "[sim]   simulator ({answered} contacts after warm-up): SL {:.1} % (±{:.1}) / ASA {:.2} s (±{:.2}) / occupancy {:.1} %",
                    sl.unwrap_or(f64::NAN), sl_ci.unwrap_or(f64::NAN), asa.unwrap_or(f64::NAN), asa_ci.unwrap_or(f64::NAN), occupancy.unwrap_or(f64::NAN)
                );
                eprintln!(
                    "[sim]   reporting ({rep_answered} contacts, whole run): SL {:.1} % / ASA {:.2} s / occupancy {:.1} %; simulator, whole run: SL {sim_sl_all:.1} % / ASA {sim_asa_all:.2} s",
                    rep_sl.unwrap_or(f64::NAN), rep_asa.unwrap_or(f64::NAN), rep_occ.unwrap_or(f64::NAN)
                );
                eprintln!(
                    "[sim]   reporting, agents over the measured window: occupancy {:.1} %",
                    rep_occ_window.unwrap_or(f64::NAN)
                );
            }
        }
    }

    // Steps (one, or the ramp's) and the knee.
    let mut steps_json = Vec::new();
    let mut knee = None;
    for s in &st.steps {
        let h = s.enqueue_to_offer.as_ref();
        let secs = match (s.started, s.ended) {
            (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
            _ => 0.0,
        };
        let p99 = h.map(|h| h.value_at_quantile(0.99) as f64 / 1000.0).unwrap_or(f64::NAN);
        let ok = s.errors.is_empty() && p99 <= sc.target_p99_ms;
        if ok {
            knee = Some(knee.map_or(s.offered_rate, |k: f64| k.max(s.offered_rate)));
        }
        steps_json.push(serde_json::json!({
            "multiplier": s.multiplier, "offered_per_second": s.offered_rate,
            "achieved_per_second": if secs > 0.0 { s.created as f64 / secs } else { 0.0 },
            "created": s.created,
            "enqueue_to_offer_ms": h.map(quantiles),
            "errors": s.errors, "within_target": ok,
        }));
        eprintln!(
            "[sim] step x{}: {:.1}/s offered, {:.1}/s achieved; enqueue→offer p50 {:.1} ms p99 {:.1} ms p99.9 {:.1} ms; errors {:?}",
            s.multiplier,
            s.offered_rate,
            if secs > 0.0 { s.created as f64 / secs } else { 0.0 },
            h.map(|h| h.value_at_quantile(0.5) as f64 / 1000.0).unwrap_or(f64::NAN),
            p99,
            h.map(|h| h.value_at_quantile(0.999) as f64 / 1000.0).unwrap_or(f64::NAN),
            s.errors
        );
    }
    if sc.ramp.is_some() {
        match knee {
            Some(k) => {
                eprintln!("[sim] knee: {k:.1} contacts/s (p99 enqueue→offer ≤ {} ms, no errors)", sc.target_p99_ms)
            }
            None => eprintln!("[sim] no step met p99 ≤ {} ms with no errors", sc.target_p99_ms),
        }
    }
    let calls: serde_json::Map<String, serde_json::Value> =
        st.calls.iter().filter_map(|(k, h)| h.as_ref().map(|h| ((*k).to_owned(), quantiles(h)))).collect();
    eprintln!(
        "[sim] {} contacts created; final states {states:?}; {} offers ({} rejected, {} left to ring out); errors {:?}; {} problem(s)",
        st.contacts.len(), st.offers, st.rejects, st.ignored, st.errors, problems.len()
    );
    Ok(Report {
        json: serde_json::json!({
            "scenario": sc.name, "run": setup.run, "seed": sc.seed, "time_scale": sc.time_scale,
            "contacts_created": st.contacts.len(), "final_states": states,
            "offers": st.offers, "rejected": st.rejects, "rang_out": st.ignored, "offers_gone": st.offers_gone,
            "queues": per_queue, "erlang_c": erlang, "steps": steps_json, "knee_contacts_per_second": knee,
            "api_calls_ms": calls, "errors": st.errors,
            "conservation": { "not_terminal": stuck.len(), "accepted_twice": twice.len(), "capacity_violations": st.capacity_violations.len() },
            "problems": problems,
        }),
        problems,
    })
}

fn tally(states: &mut BTreeMap<String, u64>, stuck: &mut Vec<String>, name: String, state: Result<i32, tonic::Status>) {
    match state {
        Ok(s) => {
            let label =
                pb::ContactState::try_from(s).map(|s| s.as_str_name().to_owned()).unwrap_or_else(|_| s.to_string());
            let terminal = [
                pb::ContactState::Closed as i32,
                pb::ContactState::Abandoned as i32,
                pb::ContactState::TimedOut as i32,
            ];
            if !terminal.contains(&s) {
                stuck.push(format!("{name} ({label})"));
            }
            *states.entry(label).or_default() += 1;
        }
        Err(e) => {
            stuck.push(format!("{name} (GetContact: {:?})", e.code()));
        }
    }
}

/// Erlang C (P_wait, SL %, ASA s, occupancy %) of the reporting service's implementation.
pub(crate) fn centralita_reporting_erlang(lambda: f64, aht: f64, t: f64, n: u32) -> (f64, f64, f64, f64) {
    match centralita_reporting::erlang::expected(lambda, aht, t, n) {
        Ok(e) => (e.p_wait, e.service_level * 100.0, e.asa_seconds, e.occupancy * 100.0),
        Err(_) => (f64::NAN, f64::NAN, f64::NAN, f64::NAN),
    }
}

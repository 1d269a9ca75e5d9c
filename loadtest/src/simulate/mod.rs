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
//!
//! # Layout
//! - this module: the arguments, the setup (tenants, agents) and the run's phases
//!   (arrivals step by step, the drain, the results).
//! - `draw`: the seeded random draws.
//! - `state`: what the simulator records while the floor runs.
//! - `floor`: customers and agents as tasks talking to the sessions API.
//! - `report`: conservation checks, queue figures, Erlang C and the reporting service's
//!   figures, the ramp's knee.
//! - `chaos`: chaos mode (services killed -9 and restarted while the floor runs) and the
//!   full conservation check (the contacts topic read back, reporting's totals).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use centralita_platform::auth::Role;
use centralita_platform::bus::Topics;
use centralita_proto::reporting::v1 as rpb;
use centralita_proto::sessions::v1 as pb;
use pb::agent_service_client::AgentServiceClient;
use pb::contact_service_client::ContactServiceClient;
use rpb::reporting_service_client::ReportingServiceClient;
use tonic::transport::{Channel, Endpoint};

use crate::scenario::{self, Scenario};
use crate::{histogram, publish_tenants, req, tenant_yaml, Auth};

mod chaos;
mod draw;
mod floor;
mod report;
mod state;

use draw::{channel_of, Rng};
use floor::{agent_loop, arrivals, progress_loop};
pub(crate) use report::centralita_reporting_erlang;
use report::conclude;
use state::{lock, Shared, StepStats};

#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// The scenario file (see loadtest/scenarios/).
    #[arg(long)]
    scenario: PathBuf,
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    sessions: String,
    #[arg(long, default_value = "http://127.0.0.1:50056")]
    reporting: String,
    /// The CRM service: with the full check, customers carry phone numbers and every
    /// customer's timeline must hold each of their contacts once, terminal.
    #[arg(long)]
    crm: Option<String>,
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
    /// Overrides the scenario's length: arrivals for this many real seconds (the chaos runs
    /// of loadtest/chaos.sh use one scenario for every length).
    #[arg(long)]
    real_seconds: Option<f64>,
    #[command(flatten)]
    chaos: chaos::ChaosArgs,
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
    /// Set once the drain is over: agents stop trying to reopen their streams.
    over: std::sync::atomic::AtomicBool,
    /// Customers carry a phone identity (the full check reads CRM's timelines by it).
    identities: bool,
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
    args.chaos.validate()?;
    if let Some(real) = args.real_seconds {
        if !(real.is_finite() && real > 0.0 && real <= 7.0 * 86_400.0) || sc.ramp.is_some() {
            bail!("--real-seconds must be above 0 and at most a week, and the scenario must not be a ramp");
        }
        sc.duration_seconds = real * sc.time_scale;
        sc.warmup_seconds = sc.warmup_seconds.min(sc.duration_seconds / 2.0);
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
        over: std::sync::atomic::AtomicBool::new(false),
        identities: args.chaos.full_check() && args.crm.is_some(),
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
    let wall_started = chrono::Utc::now();
    let progress = tokio::spawn(progress_loop(setup.clone(), args.progress_seconds.max(1)));
    let (chaos_stop, chaos_stopped) = tokio::sync::watch::channel(false);
    if let Some(every) = args.chaos.chaos_every {
        eprintln!(
            "[chaos] every {every} s one of {} is killed with SIGKILL and restarted {} s later",
            args.chaos.chaos_services.join(", "),
            args.chaos.chaos_down_seconds
        );
        if let Some(at) = args.chaos.chaos_broker_at {
            eprintln!("[chaos] the broker is killed and restarted once, at the first turn from {at} s");
        }
    }
    let chaos_task = tokio::spawn(chaos::run(args.chaos.clone(), sc.seed, arrivals_started, chaos_stopped));
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
    // Chaos stops with the arrivals; a restart under way is finished first.
    chaos_stop.send_replace(true);
    let kills = chaos_task.await.unwrap_or_default();
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
            (
                st.contacts.values().filter(|c| !c.abandoned && c.accepted.is_none()).count(),
                st.busy_since.len() + st.wrapping,
            )
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
    setup.over.store(true, std::sync::atomic::Ordering::Relaxed);
    progress.abort();

    let crm = match (&args.crm, setup.identities) {
        (Some(url), true) => Some(
            Endpoint::from_shared(url.clone())?
                .connect_timeout(Duration::from_secs(3))
                .connect()
                .await
                .with_context(|| format!("the CRM service at {url} is not reachable"))?,
        ),
        _ => None,
    };
    let full = report::FullCheck {
        on: args.chaos.full_check(),
        crm,
        kills,
        brokers: args.stack.brokers.clone(),
        topics: topics.clone(),
        wall_started,
    };
    let report =
        conclude(&setup, &mut reports, &agent_ids, arrivals_started, arrivals_ended, args.segment, full).await?;
    let text = serde_json::to_string_pretty(&report.json)?;
    match &args.json {
        Some(path) => std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?,
        None => println!("{text}"),
    }
    eprintln!(
        "[sim] verdict: {}",
        if report.problems.is_empty() {
            "PASS".to_owned()
        } else {
            format!("FAIL ({} problems)", report.problems.len())
        }
    );
    if !report.problems.is_empty() {
        bail!("the run found {} problem(s):\n  {}", report.problems.len(), report.problems.join("\n  "));
    }
    Ok(())
}

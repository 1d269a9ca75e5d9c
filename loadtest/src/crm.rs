//! `crm`: profile lookups per second and screen-pop latency of the CRM service.
//!
//! 1. Seed: `--customers` profiles created through `ResolveCustomer` (one phone number
//!    each), `--workers` calls in flight; the create rate is reported too.
//! 2. History: for `--held` of those customers, four real contacts through the sessions
//!    service (`CreateContact` with the customer's phone number, by the channel role), so the
//!    CRM resolves each customer by reading sessions' record, as in production (events carry
//!    no identities since issue 23): three that end in the queue (`EndContact`: abandoned)
//!    and one held now — offered to one of 50 agents by an OFFERED event published as sessions
//!    publishes it (no routing runs here). The run waits until the CRM shows the last one held.
//! 3. Lookups: `--workers` loops of `FindCustomers` by a random seeded phone number (written
//!    nationally, so normalisation is on the path) for `--seconds`: calls per second and
//!    latency.
//! 4. Screen-pop: the same with `GetScreenPop` of a random held contact by the agent holding
//!    it (profile + last 5 interactions + notes): calls per second, p50/p99/p99.9.
//! 5. Resolution: `--resolution-workers` loops that create a contact for a random seeded
//!    customer through sessions and poll its CRM timeline (`ListTimeline`, every 10 ms) until the
//!    contact is on it — sessions' outbox, the contacts topic, the CRM's consumer reading the
//!    identities back from sessions and resolving them — then end it; per second and latency.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use centralita_platform::auth::Role;
use centralita_platform::bus::{Event, Producer, Topics};
use centralita_platform::tenant::TenantId;
use centralita_proto::crm::v1::{self as pb, customer_service_client::CustomerServiceClient};
use centralita_proto::sessions::v1::{
    self as spb, contact_event::Kind, contact_service_client::ContactServiceClient, ContactState,
};
use centralita_proto::tenancy::v1 as tpb;
use hdrhistogram::Histogram;
use tonic::transport::Endpoint;

use crate::{histogram, publish_tenants, req, tenant_yaml, Auth};

#[derive(Debug, clap::Args)]
pub struct CrmArgs {
    /// The CRM service's gRPC endpoint.
    #[arg(long, default_value = "http://127.0.0.1:50054")]
    crm: String,
    /// The sessions service's gRPC endpoint (the CRM must read contacts from the same one).
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    sessions: String,
    #[command(flatten)]
    pub stack: crate::StackArgs,
    /// Profiles to create before measuring.
    #[arg(long, default_value_t = 10_000)]
    customers: u32,
    /// Customers with a contact held by an agent now (screen-pop targets).
    #[arg(long, default_value_t = 500)]
    held: u32,
    /// Calls in flight.
    #[arg(long, default_value_t = 16)]
    workers: u32,
    /// Contacts in flight in the resolution phase, each polling its customer's timeline
    /// every 10 ms (more would measure the polling rather than the resolution).
    #[arg(long, default_value_t = 4)]
    resolution_workers: u32,
    /// Length of each measured phase.
    #[arg(long, default_value_t = 15)]
    seconds: u64,
    #[arg(long)]
    json: Option<PathBuf>,
}

const AGENTS: u32 = 50;

fn number(i: u32) -> String {
    format!("+1555{i:07}")
}

/// The OFFERED event sessions publishes when routing offers `contact` to `agent`: the
/// contact without identities or attributes, `customer_identified` set.
fn offered(tenant: &TenantId, contact: &spb::Contact, agent: &str) -> Event {
    let contact = spb::Contact {
        state: ContactState::Offered as i32,
        agent_id: agent.into(),
        customer_identities: Vec::new(),
        attributes: Default::default(),
        ..contact.clone()
    };
    let e = spb::ContactEvent {
        kind: Kind::Offered as i32,
        contact: Some(contact),
        agent_id: agent.into(),
        customer_identified: true,
        ..Default::default()
    };
    Event::new(tenant.clone(), &e)
}

/// A contact of customer `i` through sessions (voice, queue `support`).
async fn create_contact(
    sessions: &mut ContactServiceClient<tonic::transport::Channel>,
    channel: &str,
    i: u32,
    request_id: String,
) -> anyhow::Result<spb::Contact> {
    let contact = spb::Contact {
        channel: tpb::Channel::Voice as i32,
        queue: "support".into(),
        customer_identities: vec![pb::Identity {
            kind: pb::IdentityKind::Phone as i32,
            value: number(i),
            network: String::new(),
        }],
        ..Default::default()
    };
    let r = spb::CreateContactRequest { contact: Some(contact), request_id };
    Ok(sessions.create_contact(req(r, channel)?).await?.into_inner())
}

async fn end_contact(
    sessions: &mut ContactServiceClient<tonic::transport::Channel>,
    channel: &str,
    name: &str,
) -> anyhow::Result<()> {
    sessions.end_contact(req(spb::EndContactRequest { name: name.into(), ..Default::default() }, channel)?).await?;
    Ok(())
}

/// A small deterministic generator (xorshift), one per worker.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u32) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % u64::from(n.max(1))) as u32
    }
}

struct Phase {
    calls: u64,
    errors: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
}

impl Phase {
    fn summary(&self, what: &str) -> serde_json::Value {
        let q = |p: f64| self.latency.value_at_quantile(p) as f64 / 1000.0;
        let rate = self.calls as f64 / self.elapsed.as_secs_f64();
        eprintln!(
            "[crm] {what}: {} calls in {:.1} s = {rate:.0}/s, p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, errors {}",
            self.calls,
            self.elapsed.as_secs_f64(),
            q(0.5),
            q(0.99),
            q(0.999),
            self.errors
        );
        serde_json::json!({
            "calls": self.calls, "errors": self.errors, "seconds": self.elapsed.as_secs_f64(), "per_second": rate,
            "latency_ms": { "p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "p999": q(0.999), "max": self.latency.max() as f64 / 1000.0 },
        })
    }
}

/// Runs `call(seed, shared counter)` on `workers` tasks and adds up what they measured.
async fn measure<F, Fut>(workers: u32, call: F) -> anyhow::Result<Phase>
where
    F: Fn(u64, Arc<std::sync::atomic::AtomicU64>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(Histogram<u64>, u64, u64)>> + Send + 'static,
{
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..workers {
        let seed = u64::from(w).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        tasks.push(tokio::spawn(call(seed, next.clone())));
    }
    let mut phase = Phase { calls: 0, errors: 0, elapsed: Duration::ZERO, latency: histogram() };
    for t in tasks {
        let (h, calls, errors) = t.await??;
        phase.latency.add(&h)?;
        phase.calls += calls;
        phase.errors += errors;
    }
    phase.elapsed = started.elapsed();
    Ok(phase)
}

pub async fn run(args: CrmArgs, auth: Auth) -> anyhow::Result<()> {
    if args.customers == 0
        || args.held == 0
        || args.held > args.customers
        || args.workers == 0
        || args.resolution_workers == 0
        || args.seconds == 0
    {
        bail!("need --customers ≥ --held ≥ 1, --workers ≥ 1, --resolution-workers ≥ 1 and --seconds ≥ 1");
    }
    let channel = Endpoint::from_shared(args.crm.clone())?
        .connect_timeout(Duration::from_secs(3))
        .connect()
        .await
        .with_context(|| format!("the CRM service at {} is not reachable", args.crm))?;
    let client = CustomerServiceClient::new(channel);
    let sessions = ContactServiceClient::new(
        Endpoint::from_shared(args.sessions.clone())?
            .connect_timeout(Duration::from_secs(3))
            .connect()
            .await
            .with_context(|| format!("the sessions service at {} is not reachable", args.sessions))?,
    );
    let run = &uuid::Uuid::now_v7().simple().to_string()[24..];
    let id = format!("lc{run}");
    let tenant = TenantId::parse(&id).map_err(anyhow::Error::msg)?;
    let topics = Topics::new(args.stack.topic_prefix.clone());
    publish_tenants(
        &args.stack.brokers,
        &topics,
        &[tenant_yaml(&id, "CRM load", &["voice"], "    queues: [{ id: support }]")],
    )
    .await?;
    let admin = Arc::new(auth.token(Some(&id), Role::TenantAdmin, None)?);
    let channel_token = Arc::new(auth.token(Some(&id), Role::Channel, None)?);
    let agents: Arc<Vec<String>> = Arc::new(
        (0..AGENTS)
            .map(|a| auth.token(Some(&id), Role::Agent, Some(&format!("agent-{a}"))))
            .collect::<Result<_, _>>()?,
    );
    let probe = pb::FindCustomersRequest {
        identity: Some(pb::Identity { kind: pb::IdentityKind::Phone as i32, value: number(0), network: String::new() }),
        default_country_code: String::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let stats = spb::ListQueueStatsRequest::default();
    while client.clone().find_customers(req(probe.clone(), &admin)?).await.is_err()
        || sessions.clone().list_queue_stats(req(stats.clone(), &admin)?).await.is_err()
    {
        if Instant::now() > deadline {
            bail!("the CRM or sessions did not see tenant {id} within 60 s (are they consuming {}?)", topics.tenants());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // 1. Seed profiles.
    let customers = u64::from(args.customers);
    let names = Arc::new(std::sync::Mutex::new(vec![String::new(); args.customers as usize]));
    let seed = {
        let (client, admin, names) = (client.clone(), admin.clone(), names.clone());
        measure(args.workers, move |_, next| {
            let (mut client, admin, names) = (client.clone(), admin.clone(), names.clone());
            async move {
                let (mut h, mut calls, mut errors) = (histogram(), 0, 0);
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= customers {
                        return Ok((h, calls, errors));
                    }
                    let r = pb::ResolveCustomerRequest {
                        identities: vec![pb::Identity {
                            kind: pb::IdentityKind::Phone as i32,
                            value: number(i as u32),
                            network: String::new(),
                        }],
                        default_country_code: String::new(),
                        display_name: format!("Customer {i}"),
                    };
                    let t = Instant::now();
                    match client.resolve_customer(req(r, &admin)?).await {
                        Ok(r) => {
                            h.record(t.elapsed().as_micros() as u64)?;
                            let name = r.into_inner().customer.map(|c| c.name).unwrap_or_default();
                            names.lock().unwrap_or_else(|p| p.into_inner())[i as usize] = name;
                        }
                        Err(_) => errors += 1,
                    }
                    calls += 1;
                }
            }
        })
        .await?
    };
    let seed_json = seed.summary("create profiles (ResolveCustomer)");

    let names: Arc<Vec<String>> = Arc::new(std::mem::take(&mut *names.lock().unwrap_or_else(|p| p.into_inner())));

    // 2. History and held contacts: real contacts through sessions, so the CRM resolves each
    //    customer from sessions' record; three end in the queue, one is held.
    let held_contacts = Arc::new(std::sync::Mutex::new(vec![spb::Contact::default(); args.held as usize]));
    let history = {
        let (sessions, channel, held, held_contacts, run) =
            (sessions.clone(), channel_token.clone(), u64::from(args.held), held_contacts.clone(), run.to_owned());
        measure(args.workers, move |_, next| {
            let (mut sessions, channel, held_contacts, run) =
                (sessions.clone(), channel.clone(), held_contacts.clone(), run.clone());
            async move {
                let (mut h, mut calls, mut errors) = (histogram(), 0, 0);
                loop {
                    let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if k >= held {
                        return Ok((h, calls, errors));
                    }
                    let t = Instant::now();
                    let made = async {
                        for past in 0..3 {
                            let c =
                                create_contact(&mut sessions, &channel, k as u32, format!("{run}-h{k}-{past}")).await?;
                            end_contact(&mut sessions, &channel, &c.name).await?;
                        }
                        create_contact(&mut sessions, &channel, k as u32, format!("{run}-now{k}")).await
                    };
                    match made.await {
                        Ok(c) => {
                            h.record(t.elapsed().as_micros() as u64)?;
                            held_contacts.lock().unwrap_or_else(|p| p.into_inner())[k as usize] = c;
                        }
                        Err(_) => errors += 1,
                    }
                    calls += 1;
                }
            }
        })
        .await?
    };
    let history_json = history.summary("history (3 contacts ended and 1 held per customer, through sessions)");
    if history.errors > 0 {
        bail!("{} customers' contacts could not be made through sessions", history.errors);
    }
    let held_contacts: Arc<Vec<spb::Contact>> =
        Arc::new(std::mem::take(&mut *held_contacts.lock().unwrap_or_else(|p| p.into_inner())));
    // The held contacts are offered once the CRM has each customer's four contacts (sessions
    // publishes a contact's QUEUED event from its outbox: an OFFERED one ahead of it would be
    // folded first).
    let deadline = Instant::now() + Duration::from_secs(300);
    for k in 0..args.held as usize {
        let r = pb::ListTimelineRequest { customer: names[k].clone(), page_size: 10, page_token: String::new() };
        loop {
            let entries = client.clone().list_timeline(req(r.clone(), &admin)?).await.map(|t| t.into_inner().entries);
            if entries.is_ok_and(|e| {
                e.iter().filter(|e| matches!(e.entry, Some(pb::timeline_entry::Entry::Interaction(_)))).count() == 4
            }) {
                break;
            }
            if Instant::now() > deadline {
                bail!("the CRM did not link customer {k}'s four contacts within 300 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let producer = Producer::new(&args.stack.brokers, None)?;
    let mut deliveries = Vec::new();
    for (k, c) in held_contacts.iter().enumerate() {
        let agent = format!("agent-{}", k as u32 % AGENTS);
        deliveries.push(producer.enqueue(&topics.contacts(), &c.name, &offered(&tenant, c, &agent))?);
    }
    for d in deliveries {
        d.await?;
    }
    let last = args.held - 1;
    let last_pop = pb::GetScreenPopRequest { contact: held_contacts[last as usize].name.clone(), interaction_count: 5 };
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let token = &agents[(last % AGENTS) as usize];
        if let Ok(p) = client.clone().get_screen_pop(req(last_pop.clone(), token)?).await {
            if p.get_ref().interactions.len() == 3 && p.get_ref().customer.is_some() {
                break;
            }
        }
        if Instant::now() > deadline {
            bail!("the CRM did not show the held contacts within 300 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // 3. Lookups by identity.
    let duration = Duration::from_secs(args.seconds);
    let lookups = {
        let (client, admin, n) = (client.clone(), admin.clone(), args.customers);
        measure(args.workers, move |seed, _| {
            let (mut client, admin) = (client.clone(), admin.clone());
            async move {
                let (mut h, mut calls, mut errors, mut rng) = (histogram(), 0, 0, Rng(seed));
                let end = Instant::now() + duration;
                while Instant::now() < end {
                    let i = rng.below(n);
                    let written = format!("001 (555) {:03}-{:04}", i / 10_000, i % 10_000);
                    let r = pb::FindCustomersRequest {
                        identity: Some(pb::Identity {
                            kind: pb::IdentityKind::Phone as i32,
                            value: written,
                            network: String::new(),
                        }),
                        default_country_code: String::new(),
                    };
                    let t = Instant::now();
                    match client.find_customers(req(r, &admin)?).await {
                        Ok(r) if r.get_ref().customers.len() == 1 => h.record(t.elapsed().as_micros() as u64)?,
                        _ => errors += 1,
                    }
                    calls += 1;
                }
                Ok((h, calls, errors))
            }
        })
        .await?
    };
    let lookups_json = lookups.summary("profile lookups (FindCustomers by phone)");

    // 4. Screen-pops by the holding agent.
    let pops = {
        let (client, agents, held, held_contacts) = (client.clone(), agents.clone(), args.held, held_contacts.clone());
        measure(args.workers, move |seed, _| {
            let (mut client, agents, held_contacts) = (client.clone(), agents.clone(), held_contacts.clone());
            async move {
                let (mut h, mut calls, mut errors, mut rng) = (histogram(), 0, 0, Rng(seed));
                let end = Instant::now() + duration;
                while Instant::now() < end {
                    let k = rng.below(held);
                    let r = pb::GetScreenPopRequest {
                        contact: held_contacts[k as usize].name.clone(),
                        interaction_count: 5,
                    };
                    let t = Instant::now();
                    match client.get_screen_pop(req(r, &agents[(k % AGENTS) as usize])?).await {
                        Ok(p) if p.get_ref().interactions.len() == 3 && p.get_ref().customer.is_some() => {
                            h.record(t.elapsed().as_micros() as u64)?
                        }
                        _ => errors += 1,
                    }
                    calls += 1;
                }
                Ok((h, calls, errors))
            }
        })
        .await?
    };
    let pops_json = pops.summary("screen-pops (GetScreenPop, 3 earlier interactions)");

    // 5. Resolution: a new contact through sessions until it is on its customer's timeline.
    let resolution = {
        let (client, sessions, admin, channel, names, run) =
            (client.clone(), sessions.clone(), admin.clone(), channel_token.clone(), names.clone(), run.to_owned());
        measure(args.resolution_workers, move |seed, _| {
            let (mut client, mut sessions, admin, channel, names, run) =
                (client.clone(), sessions.clone(), admin.clone(), channel.clone(), names.clone(), run.clone());
            async move {
                let (mut h, mut calls, mut errors, mut rng) = (histogram(), 0, 0, Rng(seed));
                let end = Instant::now() + duration;
                while Instant::now() < end {
                    let i = rng.below(names.len() as u32);
                    let t = Instant::now();
                    let Ok(c) = create_contact(&mut sessions, &channel, i, format!("{run}-r{seed}-{calls}")).await else {
                        errors += 1;
                        calls += 1;
                        continue;
                    };
                    let r = pb::ListTimelineRequest {
                        customer: names[i as usize].clone(),
                        page_size: 5,
                        page_token: String::new(),
                    };
                    let visible = loop {
                        let on_it = client.list_timeline(req(r.clone(), &admin)?).await.is_ok_and(|t| {
                            t.get_ref()
                                .entries
                                .iter()
                                .any(|e| matches!(&e.entry, Some(pb::timeline_entry::Entry::Interaction(x)) if x.contact == c.name))
                        });
                        if on_it {
                            break true;
                        }
                        if t.elapsed() > Duration::from_secs(10) {
                            break false;
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    };
                    if visible {
                        h.record(t.elapsed().as_micros() as u64)?;
                    } else {
                        errors += 1;
                    }
                    calls += 1;
                    let _ = end_contact(&mut sessions, &channel, &c.name).await;
                }
                Ok((h, calls, errors))
            }
        })
        .await?
    };
    let resolution_json = resolution.summary("resolution (CreateContact through sessions → on the CRM timeline)");
    let result = serde_json::json!({
        "customers": args.customers, "held": args.held, "workers": args.workers,
        "resolution_workers": args.resolution_workers,
        "create": seed_json, "history": history_json, "lookup": lookups_json, "screen_pop": pops_json,
        "resolution": resolution_json,
    });
    match &args.json {
        Some(path) => std::fs::write(path, serde_json::to_vec_pretty(&result)?)?,
        None => println!("{}", serde_json::to_string_pretty(&result)?),
    }
    let failed = seed.errors + lookups.errors + pops.errors + resolution.errors;
    if failed > 0 {
        bail!("{failed} calls failed");
    }
    Ok(())
}

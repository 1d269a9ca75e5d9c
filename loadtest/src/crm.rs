//! `crm`: profile lookups per second and screen-pop latency of the CRM service.
//!
//! 1. Seed: `--customers` profiles created through `ResolveCustomer` (one phone number
//!    each), `--workers` calls in flight; the create rate is reported too.
//! 2. History: for `--held` of those customers, three earlier contacts (closed) and one
//!    contact offered now to one of 50 agents, published on the contacts topic as sessions
//!    publishes them; the run waits until the CRM shows the last one held.
//! 3. Lookups: `--workers` loops of `FindCustomers` by a random seeded phone number (written
//!    nationally, so normalisation is on the path) for `--seconds`: calls per second and
//!    latency.
//! 4. Screen-pop: the same with `GetScreenPop` of a random held contact by the agent holding
//!    it (profile + last 5 interactions + notes): calls per second, p50/p99/p99.9.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use centralita_platform::auth::Role;
use centralita_platform::bus::{Event, Producer, Topics};
use centralita_platform::tenant::TenantId;
use centralita_proto::crm::v1::{self as pb, customer_service_client::CustomerServiceClient};
use centralita_proto::sessions::v1::{self as spb, contact_event::Kind, ContactState};
use centralita_proto::tenancy::v1 as tpb;
use hdrhistogram::Histogram;
use tonic::transport::Endpoint;

use crate::{histogram, publish_tenants, req, tenant_yaml, Auth};

#[derive(Debug, clap::Args)]
pub struct CrmArgs {
    /// The CRM service's gRPC endpoint.
    #[arg(long, default_value = "http://127.0.0.1:50054")]
    crm: String,
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

fn ts(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: ms / 1000, nanos: ((ms % 1000) * 1_000_000) as i32 }
}

/// A contact's event as sessions publishes it.
fn event(tenant: &TenantId, id: &str, customer: u32, kind: Kind, state: ContactState, agent: &str, at: i64) -> Event {
    let contact = spb::Contact {
        name: format!("tenants/{tenant}/contacts/{id}"),
        tenant: tenant.as_str().into(),
        channel: tpb::Channel::Voice as i32,
        direction: spb::Direction::Inbound as i32,
        queue: "support".into(),
        state: state as i32,
        agent_id: agent.into(),
        customer_identities: vec![pb::Identity {
            kind: pb::IdentityKind::Phone as i32,
            value: number(customer),
            network: String::new(),
        }],
        create_time: Some(ts(at)),
        enqueue_time: Some(ts(at)),
        disposition: if kind == Kind::WrappedUp { "resolved".into() } else { String::new() },
        ..Default::default()
    };
    let e =
        spb::ContactEvent { kind: kind as i32, contact: Some(contact), agent_id: agent.into(), ..Default::default() };
    Event::at(tenant.clone(), &e, chrono::DateTime::from_timestamp_millis(at).unwrap_or_default())
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
    if args.customers == 0 || args.held == 0 || args.held > args.customers || args.workers == 0 || args.seconds == 0 {
        bail!("need --customers ≥ --held ≥ 1, --workers ≥ 1 and --seconds ≥ 1");
    }
    let channel = Endpoint::from_shared(args.crm.clone())?
        .connect_timeout(Duration::from_secs(3))
        .connect()
        .await
        .with_context(|| format!("the CRM service at {} is not reachable", args.crm))?;
    let client = CustomerServiceClient::new(channel);
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
    while client.clone().find_customers(req(probe.clone(), &admin)?).await.is_err() {
        if Instant::now() > deadline {
            bail!("the CRM did not see tenant {id} within 60 s (is it consuming {}?)", topics.tenants());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // 1. Seed profiles.
    let customers = u64::from(args.customers);
    let seed = {
        let (client, admin) = (client.clone(), admin.clone());
        measure(args.workers, move |_, next| {
            let (mut client, admin) = (client.clone(), admin.clone());
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
                        Ok(_) => h.record(t.elapsed().as_micros() as u64)?,
                        Err(_) => errors += 1,
                    }
                    calls += 1;
                }
            }
        })
        .await?
    };
    let seed_json = seed.summary("create profiles (ResolveCustomer)");

    // 2. History and held contacts, through the contacts topic.
    let producer = Producer::new(&args.stack.brokers, None)?;
    let now = chrono::Utc::now().timestamp_millis();
    let mut deliveries = Vec::new();
    for k in 0..args.held {
        let agent = format!("agent-{}", k % AGENTS);
        for past in 0..3u32 {
            let c = format!("h{k}-{past}");
            let at = now - 86_400_000 * i64::from(3 - past);
            for (kind, state, who, dt) in [
                (Kind::Queued, ContactState::Queued, "", 0),
                (Kind::Offered, ContactState::Offered, agent.as_str(), 1_000),
                (Kind::Accepted, ContactState::Connected, agent.as_str(), 2_000),
                (Kind::WrappedUp, ContactState::Closed, "", 200_000),
            ] {
                let e = event(&tenant, &c, k, kind, state, who, at + dt);
                deliveries.push(producer.enqueue(&topics.contacts(), &format!("tenants/{id}/contacts/{c}"), &e)?);
            }
        }
        let c = format!("now{k}");
        for (kind, state, who) in
            [(Kind::Queued, ContactState::Queued, ""), (Kind::Offered, ContactState::Offered, agent.as_str())]
        {
            let e = event(&tenant, &c, k, kind, state, who, now);
            deliveries.push(producer.enqueue(&topics.contacts(), &format!("tenants/{id}/contacts/{c}"), &e)?);
        }
    }
    for d in deliveries {
        d.await?;
    }
    let last = args.held - 1;
    let last_pop =
        pb::GetScreenPopRequest { contact: format!("tenants/{id}/contacts/now{last}"), interaction_count: 5 };
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let token = &agents[(last % AGENTS) as usize];
        if let Ok(p) = client.clone().get_screen_pop(req(last_pop.clone(), token)?).await {
            if p.get_ref().interactions.len() == 3 {
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
        let (client, agents, held, tenant) = (client.clone(), agents.clone(), args.held, id.clone());
        measure(args.workers, move |seed, _| {
            let (mut client, agents, tenant) = (client.clone(), agents.clone(), tenant.clone());
            async move {
                let (mut h, mut calls, mut errors, mut rng) = (histogram(), 0, 0, Rng(seed));
                let end = Instant::now() + duration;
                while Instant::now() < end {
                    let k = rng.below(held);
                    let r = pb::GetScreenPopRequest {
                        contact: format!("tenants/{tenant}/contacts/now{k}"),
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
    let result = serde_json::json!({
        "customers": args.customers, "held": args.held, "workers": args.workers,
        "create": seed_json, "lookup": lookups_json, "screen_pop": pops_json,
    });
    match &args.json {
        Some(path) => std::fs::write(path, serde_json::to_vec_pretty(&result)?)?,
        None => println!("{}", serde_json::to_string_pretty(&result)?),
    }
    if seed.errors + lookups.errors + pops.errors > 0 {
        bail!("{} calls failed", seed.errors + lookups.errors + pops.errors);
    }
    Ok(())
}

//! Throughput of the pure routing matching core (`centralita_routing::core::Router`).
//!
//! Scenario: one agent pool of 10,000 agents over 50 tenants (100 queues, some agents
//! shared across tenants) with a realistic mix of skills (proficiency 1-5), languages and
//! per-channel capacity, and 5,000 contacts waiting in it (mixed channels, priorities,
//! aging, some with skill/language requirements that relax over time). All data comes from
//! a seeded splitmix64, so every run routes exactly the same decisions.
//!
//! Benchmarks (the router is cloned outside the timed section):
//! - `agent_ready_sweep`: the 10,000 agents become ready one by one, each `AgentReady`
//!   filling the agent's spare capacity with the best waiting contacts. Throughput is in
//!   Offer decisions.
//! - `contact_enqueue`: with every agent ready (the state after the sweep), 1,000 new
//!   contacts are queued, each offered to the longest-available eligible agent. Throughput
//!   is in Offer decisions.

use std::collections::{BTreeMap, BTreeSet};
use std::hint::black_box;
use std::time::Duration;

use centralita_routing::core::Router;
use centralita_routing_contract::{
    AgentId, AgentProfile, CapacityProfile, Channel, ContactId, Decision, Input, MaxWait, Millis, QueueRef,
    QueuedContact, Requirement, Step,
};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

const SEED: u64 = 0x00C0_FFEE_D00D_2024;
const TENANTS: usize = 50;
const AGENTS: usize = 10_000;
const WAITING_CONTACTS: usize = 5_000;
const NEW_CONTACTS: usize = 1_000;
/// Contacts arrive every 60 ms from t=0; agents become ready after all have arrived.
const ARRIVAL_GAP_MS: Millis = 60;
const READY_AT: Millis = WAITING_CONTACTS as Millis * ARRIVAL_GAP_MS + 1_000;

const SKILLS: [&str; 8] = ["billing", "tech_support", "returns", "retention", "vip", "onboarding", "fraud", "shipping"];
const LANGUAGES: [&str; 5] = ["en", "es", "pt", "fr", "de"];

/// splitmix64: tiny, seedable, good enough for test data.
#[derive(Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-ish in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `pct`%.
    fn chance(&mut self, pct: usize) -> bool {
        self.below(100) < pct
    }
}

fn tenant(t: usize) -> String {
    format!("tenant-{t:02}")
}

fn support(t: usize) -> QueueRef {
    QueueRef::new(tenant(t), "support")
}

fn sales(t: usize) -> QueueRef {
    QueueRef::new(tenant(t), "sales")
}

/// The main language of a tenant's customers and agents.
fn tenant_language(t: usize) -> &'static str {
    match t {
        0..=29 => "en",
        30..=39 => "es",
        40..=44 => "pt",
        _ => "fr",
    }
}

fn capacity(limits: &[(Channel, u32)], exclusive: &[Channel], max_total: u32) -> CapacityProfile {
    CapacityProfile {
        limits: limits.iter().copied().collect(),
        exclusive: exclusive.iter().copied().collect(),
        max_total,
    }
}

fn agent_id(i: usize) -> AgentId {
    AgentId(format!("agent-{i:05}"))
}

fn agent_profile(i: usize, rng: &mut SplitMix64) -> AgentProfile {
    let home = i % TENANTS;
    let mut queues = BTreeSet::from([support(home)]);
    if rng.chance(50) {
        queues.insert(sales(home));
    }
    if rng.chance(10) {
        // BPO agent shared with another tenant.
        queues.insert(support(rng.below(TENANTS)));
    }
    let mut skills = BTreeMap::new();
    for _ in 0..1 + rng.below(4) {
        skills.insert(SKILLS[rng.below(SKILLS.len())].to_owned(), 1 + rng.below(5) as u8);
    }
    let mut languages = BTreeSet::from([tenant_language(home).to_owned()]);
    if rng.chance(30) {
        languages.insert(LANGUAGES[rng.below(LANGUAGES.len())].to_owned());
    }
    let capacity = match rng.below(100) {
        // Voice only: one call at a time.
        0..=29 => capacity(&[(Channel::Voice, 1)], &[Channel::Voice], 1),
        // Blended: voice exclusive, or up to 3 chats and 2 emails (3 at once).
        30..=74 => capacity(&[(Channel::Voice, 1), (Channel::Chat, 3), (Channel::Email, 2)], &[Channel::Voice], 3),
        // Digital: chat, email, SMS and social (4 at once).
        _ => capacity(&[(Channel::Chat, 3), (Channel::Email, 2), (Channel::Sms, 2), (Channel::Social, 2)], &[], 4),
    };
    AgentProfile { id: agent_id(i), queues, skills, languages, capacity, phoneless_tenants: Default::default() }
}

fn contact(id: String, enqueued_at: Millis, rng: &mut SplitMix64) -> QueuedContact {
    let t = rng.below(TENANTS);
    let queue = if rng.chance(70) { support(t) } else { sales(t) };
    let channel = match rng.below(100) {
        0..=39 => Channel::Voice,
        40..=74 => Channel::Chat,
        75..=89 => Channel::Email,
        90..=94 => Channel::Sms,
        _ => Channel::Social,
    };
    let priority = rng.below(6) as i64 + if rng.chance(10) { 10 } else { 0 };
    let aging_per_minute = rng.below(6) as i64;
    let steps = match rng.below(100) {
        // No requirements.
        0..=49 => Vec::new(),
        // A skill at proficiency 3-4 in the tenant's language, relaxing to any proficiency.
        50..=84 => {
            let name = SKILLS[rng.below(SKILLS.len())].to_owned();
            let strict = vec![
                Requirement::Skill { name: name.clone(), min_proficiency: 3 + rng.below(2) as u8 },
                Requirement::Language(tenant_language(t).to_owned()),
            ];
            let relaxed = vec![Requirement::Skill { name, min_proficiency: 1 }];
            vec![
                Step { after_ms: 0, requirements: strict },
                Step { after_ms: 30_000 + rng.below(570_000) as i64, requirements: relaxed },
            ]
        }
        // A language only (sometimes not the tenant's main one).
        _ => {
            let l = if rng.chance(70) { tenant_language(t) } else { LANGUAGES[rng.below(LANGUAGES.len())] };
            vec![Step { after_ms: 0, requirements: vec![Requirement::Language(l.to_owned())] }]
        }
    };
    let max_wait = rng.chance(30).then(|| MaxWait { after_ms: 1_800_000, overflow_to: Some(support(t)) });
    QueuedContact {
        id: ContactId(id),
        queue,
        channel,
        priority,
        aging_per_minute,
        enqueued_at,
        steps,
        preferred: None,
        offer_timeout_ms: 20_000,
        max_wait,
        excluded: Vec::new(),
    }
}

fn apply(router: &mut Router, at: Millis, input: Input) -> Vec<Decision> {
    match router.apply(at, input) {
        Ok(decisions) => decisions,
        Err(e) => panic!("input rejected at {at}: {e}"),
    }
}

/// 10,000 agents, none ready, and 5,000 contacts waiting for them.
fn waiting_pool() -> Router {
    let mut rng = SplitMix64(SEED);
    let mut router = Router::new();
    for i in 0..AGENTS {
        let decisions = apply(&mut router, 0, Input::AgentUpserted(agent_profile(i, &mut rng)));
        assert!(decisions.is_empty(), "no agent is ready yet");
    }
    for j in 0..WAITING_CONTACTS {
        let at = j as Millis * ARRIVAL_GAP_MS;
        let c = contact(format!("contact-{j:05}"), at, &mut rng);
        let decisions = apply(&mut router, at, Input::ContactQueued(c));
        assert!(decisions.is_empty(), "no agent is ready yet: the contact waits");
    }
    assert_eq!(router.waiting(), WAITING_CONTACTS);
    router
}

fn ready_inputs() -> Vec<(Millis, Input)> {
    (0..AGENTS).map(|i| (READY_AT + i as Millis, Input::AgentReady { agent: agent_id(i) })).collect()
}

fn new_contacts(from: Millis) -> Vec<(Millis, Input)> {
    let mut rng = SplitMix64(SEED ^ 0xA5A5_A5A5);
    (0..NEW_CONTACTS)
        .map(|j| {
            let at = from + j as Millis * ARRIVAL_GAP_MS;
            (at, Input::ContactQueued(contact(format!("new-{j:05}"), at, &mut rng)))
        })
        .collect()
}

/// Applies every input in order and returns how many Offer decisions they produced.
fn run(router: &mut Router, inputs: Vec<(Millis, Input)>) -> usize {
    let mut offers = 0;
    for (at, input) in inputs {
        offers += apply(router, at, input).iter().filter(|d| matches!(d, Decision::Offer { .. })).count();
    }
    offers
}

fn matching(c: &mut Criterion) {
    let waiting = waiting_pool();
    let readies = ready_inputs();

    // One untimed pass: checks the sweep really matches, and yields the all-ready state.
    let mut available = waiting.clone();
    let sweep_offers = run(&mut available, readies.clone());
    assert!(sweep_offers > 0, "the ready sweep must produce offers");
    let enqueues = new_contacts(READY_AT + AGENTS as Millis + 1_000);
    let enqueue_offers = run(&mut available.clone(), enqueues.clone());
    assert!(enqueue_offers > 0, "queued contacts must be offered");
    eprintln!(
        "setup: {AGENTS} agents, {WAITING_CONTACTS} waiting contacts; ready sweep: {} inputs -> {sweep_offers} offers \
         ({} contacts left waiting); enqueue: {} inputs -> {enqueue_offers} offers",
        readies.len(),
        available.waiting(),
        enqueues.len(),
    );

    let mut group = c.benchmark_group("routing_matching");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));

    group.throughput(Throughput::Elements(sweep_offers as u64));
    group.bench_function("agent_ready_sweep/10k_agents_5k_waiting", |b| {
        b.iter_batched(
            || (waiting.clone(), readies.clone()),
            |(mut router, inputs)| {
                let offers = run(&mut router, inputs);
                assert_eq!(offers, sweep_offers);
                // Returned so that dropping the router is not timed.
                (black_box(router), offers)
            },
            BatchSize::LargeInput,
        )
    });

    group.throughput(Throughput::Elements(enqueue_offers as u64));
    group.bench_function("contact_enqueue/1k_into_10k_ready_agents", |b| {
        b.iter_batched(
            || (available.clone(), enqueues.clone()),
            |(mut router, inputs)| {
                let offers = run(&mut router, inputs);
                assert_eq!(offers, enqueue_offers);
                (black_box(router), offers)
            },
            BatchSize::LargeInput,
        )
    });

    group.finish();
}

criterion_group!(benches, matching);
criterion_main!(benches);

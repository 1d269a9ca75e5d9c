//! Timer-driven behaviour — an offer nobody answers (RONA), after-contact work running out,
//! an agent's presence lapsing, a phone's registration expiring — through the engine and the real Redis and Kafka-protocol
//! broker of the local stack, with the engine's clock moved by hand: nothing sleeps.
//!
//! (Not paused tokio time: the timers live in Redis on wall-clock milliseconds shared by
//! every replica, and a paused tokio clock would auto-advance through the Redis client's
//! own response timeouts while a command is in flight. The engine's `Clock::Manual` moves
//! exactly when the test says.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use centralita_platform::bus::{ensure_topics, Producer, TopicSpec, Topics};
use centralita_platform::cache::{connect, RedisHandle};
use centralita_platform::registry::TenantRegistry;
use centralita_platform::tenant::TenantManifest;
use centralita_platform::testkit::{brokers, redis, unique};
use centralita_routing_contract::input_topic;
use centralita_sessions::core::agent::StateCommand;
use centralita_sessions::core::{self, AgentId, AgentState, ContactRef, ContactState, OfferId};
use centralita_sessions::engine::{Clock, Engine};
use centralita_sessions::store::{Keys, Store};
use centralita_sessions::timers::fire_due;

const T0: i64 = 1_900_000_000_000;

struct Fixture {
    engine: Engine,
    clock: Arc<AtomicI64>,
    tenant: centralita_platform::tenant::TenantId,
}

impl Fixture {
    async fn new() -> Self {
        let prefix = format!("{}.", unique("timers"));
        let topics = Topics::new(prefix.clone());
        let specs: Vec<TopicSpec> = [topics.contacts(), topics.agents(), input_topic(&topics)]
            .into_iter()
            .map(|name| TopicSpec { name, partitions: 1, compacted: false })
            .collect();
        ensure_topics(&brokers(), 1, &specs).await.unwrap();
        let id = unique("tim");
        let yaml = format!(
            r#"
apiVersion: centralita.io/v1
kind: Tenant
metadata: {{ name: {id} }}
spec:
  displayName: {id}
  channels: [voice]
  serviceLevel: {{ targetPercent: 80, thresholdSeconds: 20 }}
  quotas: {{ maxConcurrentContacts: 100, apiRequestsPerSecond: 1000 }}
  businessHours: {{ timeZone: UTC }}
  dataRetentionDays: 30
  recording: {{ voice: none }}
  voice:
    registrar: {{ domain: {id}.example.com, credentialsSecret: {id}-phones }}
  routing:
    dispositionCodes: [resolved]
    queues:
      - {{ id: support, offerTimeoutSeconds: 15, afterContactWorkSeconds: 30 }}
"#
        );
        let tenant = TenantManifest::parse_all(&yaml, chrono::Utc::now()).unwrap().remove(0);
        let registry = TenantRegistry::new();
        let tenant_id = tenant.id.clone();
        registry.upsert(tenant);
        let url = redis().url.expose().clone();
        let handle = RedisHandle::connected(connect(&url).await.unwrap());
        let clock = Arc::new(AtomicI64::new(T0));
        let engine = Engine {
            store: Store::new(handle, url, Keys::new(&prefix)),
            producer: Arc::new(Producer::new(&brokers(), None).unwrap()),
            registry,
            topics,
            notices: Default::default(),
            metrics: Arc::new(centralita_sessions::metrics::Metrics::default()),
            clock: Clock::Manual(clock.clone()),
            detach_effects: false,
            presence_grace: std::time::Duration::from_secs(30),
        };
        Fixture { engine, clock, tenant: tenant_id }
    }

    fn advance(&self, ms: i64) {
        self.clock.fetch_add(ms, Ordering::SeqCst);
    }

    fn now(&self) -> i64 {
        self.clock.load(Ordering::SeqCst)
    }

    /// Media's report of the agent's phone with the tenant: registered until `until`, or gone.
    async fn report_phone(&self, agent: &AgentId, until: Option<i64>) {
        let now = self.now();
        let reach = |t: &str, a: &str, registered: bool| self.engine.reaches(t, a, registered);
        self.engine.change_agent(agent, |a| Ok(core::agent::phone(a, &self.tenant, until, now, &reach))).await.unwrap();
    }

    /// A signed-in, available agent.
    async fn agent(&self) -> AgentId {
        let id = AgentId(unique("ag"));
        self.engine.store.index_agent(&id).await.unwrap();
        let now = self.now();
        let tenant = self.tenant.to_string();
        let profile_in = core::Agent {
            id: id.clone(),
            display_name: "Ana".into(),
            queues: vec![centralita_routing_contract::QueueRef::new(tenant, "support")],
            skills: Default::default(),
            languages: Vec::new(),
            capacity: vec![core::ChannelCapacity { channel: core::Channel::Voice, max_contacts: 1, exclusive: false }],
            max_total_contacts: 0,
            state: AgentState::Offline,
            away_reason: String::new(),
            contacts: Vec::new(),
            state_time: None,
            agent_pool: String::new(),
            phones: Default::default(),
        };
        let all = |_: &str, _: &str, _: bool| true;
        self.engine.update_agent(&id, |cur| core::agent::upsert(cur, &profile_in, "default", now, &all)).await.unwrap();
        let sign_in = StateCommand::SignIn { available: true };
        self.engine
            .change_agent(&id, |a| core::agent::set_state(a, sign_in, AgentState::Available, "", |_| false, now))
            .await
            .unwrap();
        id
    }

    /// A contact offered to `agent`, expiring 15 s from now.
    async fn offered(&self, agent: &AgentId) -> (ContactRef, OfferId) {
        let now = self.now();
        let t = self.engine.registry.get(&self.tenant).unwrap();
        let q = t.routing.queues["support"].clone();
        let id = core::ContactId(unique("c"));
        let c = core::Contact::queued(
            self.tenant.clone(),
            id,
            core::Channel::Voice,
            "support".into(),
            "default".into(),
            now,
        );
        let key = c.key();
        self.engine.store.index_open(&key, now).await.unwrap();
        self.engine.create(core::contact::create(c, &q, now)).await.unwrap();
        let offer = OfferId(unique("o"));
        let o = offer.clone();
        self.engine.transition(&key, |c| core::contact::offer(c, agent, o.clone(), now + 15_000)).await.unwrap();
        (key, offer)
    }

    async fn contact(&self, c: &ContactRef) -> core::Contact {
        self.engine.store.contact(c).await.unwrap().unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_offer_goes_back_and_the_agent_is_made_away() {
    let f = Fixture::new().await;
    let agent = f.agent().await;
    let (c, _) = f.offered(&agent).await;
    f.advance(14_999);
    fire_due(&f.engine).await.unwrap();
    assert_eq!(f.contact(&c).await.state, ContactState::Offered, "not due yet");
    f.advance(1);
    assert!(fire_due(&f.engine).await.unwrap() >= 1);
    let after = f.contact(&c).await;
    assert_eq!((after.state, after.agent), (ContactState::Queued, None));
    let a = f.engine.store.agent(&agent).await.unwrap().unwrap();
    assert_eq!((a.state, a.away_reason.as_str()), (AgentState::Away, "not_responding"));
    assert!(a.contacts.is_empty(), "{a:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answered_offer_is_not_timed_out() {
    let f = Fixture::new().await;
    let agent = f.agent().await;
    let (c, offer) = f.offered(&agent).await;
    f.advance(5_000);
    let now = f.now();
    f.engine.transition(&c, |r| core::contact::accept(r, &agent, &offer, now)).await.unwrap();
    f.advance(60_000);
    fire_due(&f.engine).await.unwrap();
    assert_eq!(f.contact(&c).await.state, ContactState::Connected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_contact_work_runs_out_and_closes_the_contact() {
    let f = Fixture::new().await;
    let agent = f.agent().await;
    let (c, offer) = f.offered(&agent).await;
    let now = f.now();
    f.engine.transition(&c, |r| core::contact::accept(r, &agent, &offer, now)).await.unwrap();
    f.engine.transition(&c, |r| core::contact::end(r, 30_000, now)).await.unwrap();
    f.advance(29_000);
    fire_due(&f.engine).await.unwrap();
    assert_eq!(f.contact(&c).await.state, ContactState::AfterContactWork);
    f.advance(1_000);
    fire_due(&f.engine).await.unwrap();
    let closed = f.contact(&c).await;
    assert_eq!((closed.state, closed.disposition.as_str()), (ContactState::Closed, ""));
    let a = f.engine.store.agent(&agent).await.unwrap().unwrap();
    assert!(a.contacts.is_empty(), "the agent is free again: {a:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lapsed_presence_makes_the_agent_away_and_its_offer_goes_back() {
    let f = Fixture::new().await;
    let agent = f.agent().await;
    let (c, _) = f.offered(&agent).await;
    let member = core::Timer::Presence { agent: agent.clone() }.member();
    f.engine.store.schedule(&member, f.now() + 5_000).await.unwrap();
    f.advance(3_000);
    fire_due(&f.engine).await.unwrap();
    assert_eq!(f.engine.store.agent(&agent).await.unwrap().unwrap().state, AgentState::Available);
    // A stream refreshing the presence pushes the timer ahead (to T0 + 8 s).
    f.engine.store.schedule(&member, f.now() + 5_000).await.unwrap();
    f.advance(4_000);
    fire_due(&f.engine).await.unwrap();
    assert_eq!(f.engine.store.agent(&agent).await.unwrap().unwrap().state, AgentState::Available, "refreshed");
    f.advance(1_000);
    fire_due(&f.engine).await.unwrap();
    let a = f.engine.store.agent(&agent).await.unwrap().unwrap();
    assert_eq!((a.state, a.away_reason.as_str()), (AgentState::Away, "disconnected"));
    // Its offer (due at T0 + 15 s) went back at once.
    assert_eq!(f.contact(&c).await.state, ContactState::Queued, "its offer went back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_registration_lapses_at_its_expiry_unless_refreshed() {
    let f = Fixture::new().await;
    let agent = f.agent().await;
    let reach = |t: &str, a: &str, registered: bool| f.engine.reaches(t, a, registered);
    let report = |until: Option<i64>| f.report_phone(&agent, until);
    let phones = || async { f.engine.store.agent(&agent).await.unwrap().unwrap().phones };
    let tenant = f.tenant.to_string();
    // The tenant has a registrar: without a registration its calls do not reach the agent.
    let before = f.engine.store.agent(&agent).await.unwrap().unwrap();
    assert_eq!(core::agent::phoneless(&before, f.now(), &reach), [tenant.clone()].into());
    report(Some(f.now() + 60_000)).await;
    let a = f.engine.store.agent(&agent).await.unwrap().unwrap();
    assert!(core::agent::phoneless(&a, f.now(), &reach).is_empty());
    f.advance(30_000);
    assert_eq!(fire_due(&f.engine).await.unwrap(), 0, "not due yet");
    // Refreshed at 30 s for another 60 s: the timer moves to 90 s.
    report(Some(f.now() + 60_000)).await;
    f.advance(30_000);
    fire_due(&f.engine).await.unwrap();
    assert_eq!(phones().await.get(&tenant), Some(&(T0 + 90_000)), "refreshed, still registered");
    f.advance(30_000);
    assert_eq!(fire_due(&f.engine).await.unwrap(), 1);
    assert!(phones().await.is_empty(), "lapsed at its expiry");
    let member = core::Timer::Phone { tenant: f.tenant.clone(), agent: agent.clone() }.member();
    assert_eq!(f.engine.store.timer_due(&member).await.unwrap(), None);
    // An unregister cancels the timer at once.
    report(Some(f.now() + 60_000)).await;
    report(None).await;
    assert!(phones().await.is_empty());
    assert_eq!(f.engine.store.timer_due(&member).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_for_something_gone_is_dropped() {
    let f = Fixture::new().await;
    let gone = core::Timer::AfterContactWork { tenant: f.tenant.clone(), contact: core::ContactId("nope".into()) };
    f.engine.store.schedule(&gone.member(), f.now()).await.unwrap();
    f.engine.store.schedule("garbage|x", f.now()).await.unwrap();
    assert_eq!(fire_due(&f.engine).await.unwrap(), 2);
    assert_eq!(f.engine.store.timer_due(&gone.member()).await.unwrap(), None);
    assert_eq!(f.engine.store.timer_due("garbage|x").await.unwrap(), None);
}
